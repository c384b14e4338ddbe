#!/usr/bin/env python3
"""Instructions fabnet executes per 8-byte ping-pong, from callgrind output.

  scripts/callgrind-msg.py ROUND_TRIPS OBJECT_SUBSTRING callgrind.out.PID...

Reads callgrind files (Ir only; string compression as callgrind writes it),
keeps the functions whose object path contains OBJECT_SUBSTRING (the plugin:
libnccl-net-fabnet), and prints, per process and for both together:
  - the object's own instructions (exclusive cost) per round trip, all of them;
  - the same with the polls that found nothing taken out: functions that run
    on every test() call (the poll path) are charged only the calls a round
    trip needs at least (each side: isend, irecv, one test of each), at their
    mean cost per call; everything else (message handling) is kept whole;
  - the top functions.
Calls and costs include the warm-up and set-up, which are small against
ROUND_TRIPS >= 10000.
"""
import collections
import re
import sys

# Functions on the poll path: called once per test()/isend()/irecv() whether
# or not anything arrived. Minimal calls per round trip and process: isend and
# irecv each progress once; one successful test() of the send and of the recv.
POLL_MIN_CALLS = {
	"fabnet_api_test": 2, "fabnet_proto_test": 2, "req_finished": 2,
	"fabnet_proto_check_peer": 0, "fabnet_dev_progress": 4, "drain_retry": 4,
}


def parse(path):
	names = {"ob": {}, "fn": {}}
	excl = collections.Counter()
	calls = collections.Counter()
	ob = fn = None
	cob = cfn = None
	pending_call = False

	def name(kind, val):
		m = re.match(r"\((\d+)\)(?: (.*))?$", val)
		if not m:
			return val
		if m.group(2) is not None:
			names[kind][m.group(1)] = m.group(2)
		return names[kind].get(m.group(1), val)

	for line in open(path, errors="replace"):
		line = line.rstrip("\n")
		if not line:
			continue
		key, _, val = line.partition("=")
		if key == "ob":
			ob = name("ob", val)
		elif key == "fn":
			fn = name("fn", val)
			cob = None
		elif key == "cob":
			cob = name("ob", val)
		elif key == "cfn":
			cfn = name("fn", val)
		elif key == "calls":
			calls[(cob or ob, cfn)] += int(val.split()[0])
			pending_call = True
		elif line[0] in "0123456789+-*":
			parts = line.split()
			cost = int(parts[1]) if len(parts) > 1 else 0
			if pending_call:  # inclusive cost of the call: not ours
				pending_call = False
				cob = None
			else:
				excl[(ob, fn)] += cost
	return excl, calls


def main():
	if len(sys.argv) < 4:
		print(__doc__)
		return 2
	rts = int(sys.argv[1])
	obj = sys.argv[2]
	tot_all = tot_msg = 0.0
	merged = collections.Counter()
	merged_calls = collections.Counter()
	for path in sys.argv[3:]:
		excl, calls = parse(path)
		mine = {fn: c for (ob, fn), c in excl.items() if ob and obj in ob}
		ncalls = {fn: n for (ob, fn), n in calls.items() if ob and obj in ob}
		all_ir = sum(mine.values())
		msg_ir = 0.0
		for fn, c in mine.items():
			base = fn.split(".")[0]
			if base in POLL_MIN_CALLS and ncalls.get(fn):
				msg_ir += c / ncalls[fn] * POLL_MIN_CALLS[base] * rts
			else:
				msg_ir += c
			merged[fn] += c
			merged_calls[fn] += ncalls.get(fn, 0)
		print("%s: %.0f Ir per round trip in %s (all polls), %.0f without idle polls; "
		      "test() called %.1f times per round trip" % (path, all_ir / rts, obj,
		      msg_ir / rts, ncalls.get("fabnet_api_test", 0) / rts))
		tot_all += all_ir
		tot_msg += msg_ir
	n = len(sys.argv) - 3
	print("both processes: %.0f Ir per round trip (all polls), %.0f without idle polls;"
	      " per 8-byte message (a round trip is 2 messages, each sent by one side and"
	      " received by the other): %.0f" % (tot_all / rts, tot_msg / rts, tot_msg / rts / 2))
	print("top functions of %s (both processes, all polls), own Ir:" % obj)
	print("  %8s %8s %8s  %s" % ("per RT", "calls/RT", "per call", "function"))
	for fn, c in merged.most_common(20):
		nc = merged_calls[fn]
		print("  %8.0f %8.1f %8s  %s" % (c / rts, nc / rts, "%.0f" % (c / nc) if nc else "-", fn))
	return 0


sys.exit(main())
