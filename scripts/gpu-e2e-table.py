#!/usr/bin/env python3
"""The side-by-side table of scripts/gpu-e2e.sh: NCCL's Socket transport and
fabnet, per operation and size, from the CSV rows tests/gpu/nccl-e2e wrote.

usage: gpu-e2e-table.py [--machine TEXT] CONFIG=FILE.csv [CONFIG=FILE.csv ...]

The first CONFIG is the baseline; each later one gets its busbw ratio to it.
A CONFIG that ran several rounds (labels CONFIG#1, CONFIG#2, ...) is reported
as the median of its rounds, and the rounds are counted in the header. A size
whose check found wrong elements is marked, never averaged away.
"""
import csv
import statistics
import sys

FIELDS = ["label", "op", "bytes", "elements", "root", "iters", "time_us", "algbw", "busbw",
          "wrong"]
OPS = ["all_reduce", "all_gather", "reduce_scatter", "broadcast", "sendrecv"]


def human(n):
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return "%d %siB" % (n >> shift, unit)
    return "%d B" % n


def load(path):
    """{(op, bytes): {"algbw": [...], "busbw": [...], "wrong": int}}, rounds"""
    rows, rounds = {}, set()
    with open(path, newline="") as f:
        for rec in csv.reader(f):
            if not rec or rec[0].startswith("#"):
                continue
            if len(rec) != len(FIELDS):
                raise ValueError("%s: a row with %d fields, not %d: %r"
                                 % (path, len(rec), len(FIELDS), rec))
            r = dict(zip(FIELDS, rec))
            rounds.add(r["label"])
            cell = rows.setdefault((r["op"], int(r["bytes"])),
                                   {"algbw": [], "busbw": [], "wrong": 0})
            cell["algbw"].append(float(r["algbw"]))
            cell["busbw"].append(float(r["busbw"]))
            cell["wrong"] += int(r["wrong"])
    return rows, len(rounds)


def cell_text(cell, key):
    if cell is None:
        return "–"
    text = "%.2f" % statistics.median(cell[key])
    return text + (" **WRONG**" if cell["wrong"] else "")


def table(configs, machine):
    names = [name for name, _ in configs]
    data = {name: load(path) for name, path in configs}
    base = names[0]
    out = []
    if machine:
        out.append("Machine: %s." % machine)
    out.append("Rounds (median reported): " +
               ", ".join("%s %d" % (n, data[n][1]) for n in names) +
               ". algbw and busbw in GB/s (10^9 bytes/s), nccl-tests' definitions.")
    out.append("")
    head = ["op", "size"]
    for n in names:
        head += ["%s algbw" % n, "%s busbw" % n]
    head += ["%s / %s busbw" % (n, base) for n in names[1:]]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    keys = set()
    for n in names:
        keys |= set(data[n][0])
    order = {op: i for i, op in enumerate(OPS)}
    for op, size in sorted(keys, key=lambda k: (order.get(k[0], len(OPS)), k[0], k[1])):
        row = [op, human(size)]
        for n in names:
            cell = data[n][0].get((op, size))
            row += [cell_text(cell, "algbw"), cell_text(cell, "busbw")]
        b = data[base][0].get((op, size))
        for n in names[1:]:
            c = data[n][0].get((op, size))
            if b and c and statistics.median(b["busbw"]) > 0:
                row.append("%.2f" % (statistics.median(c["busbw"]) /
                                     statistics.median(b["busbw"])))
            else:
                row.append("–")
        out.append("| " + " | ".join(row) + " |")
    return "\n".join(out) + "\n"


def main(argv):
    machine, configs = "", []
    args = argv[1:]
    while args:
        a = args.pop(0)
        if a == "--machine" and args:
            machine = args.pop(0)
        elif "=" in a and not a.startswith("-"):
            name, path = a.split("=", 1)
            configs.append((name, path))
        else:
            sys.stderr.write(__doc__)
            return 1
    if not configs:
        sys.stderr.write(__doc__)
        return 1
    try:
        sys.stdout.write(table(configs, machine))
    except (OSError, ValueError) as e:
        sys.stderr.write("gpu-e2e-table: %s\n" % e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
