#!/usr/bin/env python3
"""Generates the synthetic hwloc topologies of tests/topology/ (hwloc 2 XML).

The machines are made up: they have the shape of the instances fabnet is for
(accelerators behind PCIe switches together with EFA NICs), with a few CPUs
each, and PCI ids chosen to exercise the classification, not copied from any
real machine. Run it from anywhere; it rewrites the .xml files next to it:

    python3 tests/topology/gen.py

  p4d.xml      2 packages, 4 switches; each switch: 2 NVIDIA 10de:20b0 GPUs
               (3D controller, 0x0302) and 1 EFA 1d0f:efa0. Decoys the
               classification must skip: an ENA NIC (1d0f:ec20), a VGA BMC
               (1a03:2000), NVMe drives and NVSwitches (10de:1af1, 0x0680).
  p5.xml       2 packages, 8 NVIDIA 10de:2330 GPUs, 32 EFA 1d0f:efa1. Each
               host bridge holds a two-level switch tree: a top switch whose
               two ports lead to sub-switches, each with 1 GPU and 4 NICs
               behind their own downstream ports. The top switch is shared
               by 2 GPUs and 8 NICs; the closest switch, by 1 GPU and 4 NICs.
  split.xml    4 GPUs behind 2 switches on package 0 (one switch also holds
               a ConnectX NIC 15b3:101d that is not EFA), 2 EFA NICs only on
               package 1: no accelerator shares anything with a NIC.
  fallback.xml one accelerator per fallback level: GPU 0 under a switch whose
               NIC hangs off the same host bridge, GPU 1 under another host
               bridge of the same NUMA node, GPU 2 on NUMA node 1 of package
               1 whose NIC is on NUMA node 2 of the same package (two dies).
               GPUs 0 and 1 are AMD (1002:74a1, 0x0380), GPU 2 an NVIDIA VGA
               (10de:2236, 0x0300).
  gaudi.xml    8 Habana 1da3:1000 processing accelerators (0x1200), 4 EFA
               1d0f:efa2: per switch, one port leads to a sub-switch holding
               2 accelerators, another to the NIC.
"""

import os
import sys

PUS_PER_PACKAGE = 4


def hexset(bits):
    """hwloc's bitmap format: 0x-prefixed 32-bit words, most significant first."""
    words = []
    v = bits
    while True:
        words.append(v & 0xFFFFFFFF)
        v >>= 32
        if v == 0:
            break
    return ",".join("0x%08x" % w for w in reversed(words))


def mask(first, count):
    return ((1 << count) - 1) << first


# ---- PCI tree description --------------------------------------------------
# A host bridge is ("host", first_bus, children); below it:
#   ("bridge", children)  one PCI-to-PCI bridge with the children on its bus
#   ("switch", children)  a switch: an upstream-port bridge whose bus holds one
#                         downstream-port bridge per child, each child behind
#                         its own port
#   ("dev", cls, vendor, device, osdev_name_or_None, osdev_type)

SWITCH_ID = (0x1000, 0xC030)  # made-up PCIe switch ids
PORT_ID = (0x1000, 0xC031)


def gpu(vendor, device, cls=0x0302):
    return ("dev", cls, vendor, device, None, None)


def efa(device):
    return ("dev", 0x0200, 0x1D0F, device, "rdmap", 3)  # name filled in from the bus id


def other(cls, vendor, device, name=None, ostype=None):
    return ("dev", cls, vendor, device, name, ostype)


def switch(*children):
    return ("switch", list(children))


def bridge(*children):
    return ("bridge", list(children))


class Writer:
    def __init__(self):
        self.lines = []
        self.gp = 1

    def gp_index(self):
        self.gp += 1
        return self.gp

    def out(self, depth, text):
        self.lines.append("  " * depth + text)

    # Emits node as device number devnum on bus; returns the last bus used.
    def node(self, node, depth, bus, devnum, next_bus, bdepth, speed):
        busid = "0000:%02x:%02x.0" % (bus, devnum)
        kind = node[0]
        if kind == "dev":
            _, cls, vendor, device, name, ostype = node
            attrs = 'type="PCIDev" gp_index="%d" pci_busid="%s" pci_type="%04x [%04x:%04x] [%04x:0000] 00" ' \
                    'pci_link_speed="%s"' % (self.gp_index(), busid, cls, vendor, device, vendor, speed)
            if name == "rdmap":
                name = "rdmap%ds%d" % (bus, devnum)
            if name is None:
                self.out(depth, "<object %s/>" % attrs)
            else:
                self.out(depth, "<object %s>" % attrs)
                self.out(depth + 1, '<object type="OSDev" gp_index="%d" name="%s" osdev_type="%d"/>'
                         % (self.gp_index(), name, ostype))
                self.out(depth, "</object>")
            return next_bus[0] - 1
        children = node[1]
        if kind == "switch":
            # upstream port, then one downstream port per child
            children = [("port", [c]) for c in children]
            ids = SWITCH_ID
        elif kind == "port":
            ids = PORT_ID
        else:
            ids = SWITCH_ID
        secondary = next_bus[0]
        next_bus[0] += 1
        start = len(self.lines)
        self.lines.append(None)  # placeholder: the subordinate bus is known at the end
        for i, child in enumerate(children):
            self.node(child, depth + 1, secondary, i, next_bus, bdepth + 1, speed)
        subordinate = next_bus[0] - 1
        self.lines[start] = "  " * depth + (
            '<object type="Bridge" gp_index="%d" bridge_type="1-1" depth="%d" bridge_pci="0000:[%02x-%02x]" '
            'pci_busid="%s" pci_type="0604 [%04x:%04x] [0000:0000] 00" pci_link_speed="%s">'
            % (self.gp_index(), bdepth, secondary, subordinate, busid, ids[0], ids[1], speed))
        self.out(depth, "</object>")
        return subordinate

    def host_bridge(self, hb, depth, speed):
        _, first_bus, children = hb
        next_bus = [first_bus + 1]
        start = len(self.lines)
        self.lines.append(None)  # placeholder, as in node()
        for i, child in enumerate(children):
            self.node(child, depth + 1, first_bus, i, next_bus, 1, speed)
        self.lines[start] = "  " * depth + (
            '<object type="Bridge" gp_index="%d" bridge_type="0-1" depth="0" bridge_pci="0000:[%02x-%02x]">'
            % (self.gp_index(), first_bus, next_bus[0] - 1))
        self.out(depth, "</object>")


def cores(w, depth, first_pu, count, nodeset):
    for pu in range(first_pu, first_pu + count):
        sets = 'cpuset="%s" complete_cpuset="%s" nodeset="%s" complete_nodeset="%s"' % (
            hexset(1 << pu), hexset(1 << pu), nodeset, nodeset)
        w.out(depth, '<object type="Core" os_index="%d" %s gp_index="%d">' % (pu, sets, w.gp_index()))
        w.out(depth + 1, '<object type="PU" os_index="%d" %s gp_index="%d"/>' % (pu, sets, w.gp_index()))
        w.out(depth, "</object>")


def numa(w, depth, node, cpus):
    nodeset = hexset(1 << node)
    w.out(depth, '<object type="NUMANode" os_index="%d" cpuset="%s" complete_cpuset="%s" nodeset="%s" '
          'complete_nodeset="%s" gp_index="%d" local_memory="68719476736"/>'
          % (node, cpus, cpus, nodeset, nodeset, w.gp_index()))


def machine(packages, speed):
    """packages: list of lists of domains; a domain is (numa_node, [host bridges]).
    A package with one domain holds its NUMA node, cores and host bridges
    directly; with several, each domain is a Die."""
    w = Writer()
    npus = PUS_PER_PACKAGE * len(packages)
    nnodes = sum(len(p) for p in packages)
    allcpu, allnode = hexset(mask(0, npus)), hexset(mask(0, nnodes))
    w.out(0, '<?xml version="1.0" encoding="UTF-8"?>')
    w.out(0, '<!DOCTYPE topology SYSTEM "hwloc2.dtd">')
    w.out(0, '<topology version="2.0">')
    w.out(1, '<object type="Machine" os_index="0" cpuset="%s" complete_cpuset="%s" allowed_cpuset="%s" '
          'nodeset="%s" complete_nodeset="%s" allowed_nodeset="%s" gp_index="1">'
          % (allcpu, allcpu, allcpu, allnode, allnode, allnode))
    w.out(2, '<info name="Architecture" value="x86_64"/>')
    pu = 0
    for p, domains in enumerate(packages):
        pkg_nodes = hexset(sum(1 << d[0] for d in domains))
        pkg_cpus = hexset(mask(pu, PUS_PER_PACKAGE))
        w.out(2, '<object type="Package" os_index="%d" cpuset="%s" complete_cpuset="%s" nodeset="%s" '
              'complete_nodeset="%s" gp_index="%d">' % (p, pkg_cpus, pkg_cpus, pkg_nodes, pkg_nodes, w.gp_index()))
        w.out(3, '<info name="CPUVendor" value="GenuineIntel"/>')
        w.out(3, '<info name="CPUFamilyNumber" value="6"/>')
        w.out(3, '<info name="CPUModelNumber" value="85"/>')
        per = PUS_PER_PACKAGE // len(domains)
        for d, (node, hbs) in enumerate(domains):
            cpus = hexset(mask(pu, per))
            depth = 3
            if len(domains) > 1:
                w.out(3, '<object type="Die" os_index="%d" cpuset="%s" complete_cpuset="%s" nodeset="%s" '
                      'complete_nodeset="%s" gp_index="%d">'
                      % (p * 2 + d, cpus, cpus, hexset(1 << node), hexset(1 << node), w.gp_index()))
                depth = 4
            numa(w, depth, node, cpus)
            cores(w, depth, pu, per, hexset(1 << node))
            for hb in hbs:
                w.host_bridge(hb, depth, speed)
            if len(domains) > 1:
                w.out(3, "</object>")
            pu += per
        w.out(2, "</object>")
    w.out(1, "</object>")
    w.out(0, "</topology>")
    return "\n".join(w.lines) + "\n"


def p4d():
    def sw(i, base):
        return ("host", base, [bridge(efa(0xEFA0), gpu(0x10DE, 0x20B0), gpu(0x10DE, 0x20B0),
                                      other(0x0108, 0x1D0F, 0xCD01, "nvme%dn1" % i, 0))])
    hbs = [sw(i, base) for i, base in enumerate((0x10, 0x20, 0x90, 0xA0))]
    pkg0_misc = ("host", 0x00, [other(0x0300, 0x1A03, 0x2000),
                                other(0x0200, 0x1D0F, 0xEC20, "ens5", 2)])
    pkg1_misc = ("host", 0xC0, [other(0x0680, 0x10DE, 0x1AF1), other(0x0680, 0x10DE, 0x1AF1)])
    return machine([[(0, [pkg0_misc, hbs[0], hbs[1]])], [(1, [hbs[2], hbs[3], pkg1_misc])]],
                   "31.507692")


def p5():
    def half():
        return switch(gpu(0x10DE, 0x2330), *[efa(0xEFA1) for _ in range(4)])

    def hb(base):
        return ("host", base, [bridge(switch(half(), half()))])  # root port, top switch
    return machine([[(0, [hb(0x10), hb(0x30)])], [(1, [hb(0x90), hb(0xB0)])]], "63.015385")


def split():
    s0 = ("host", 0x10, [bridge(gpu(0x10DE, 0x20B0), gpu(0x10DE, 0x20B0),
                                other(0x0200, 0x15B3, 0x101D, "mlx5_0", 3))])
    s1 = ("host", 0x20, [bridge(gpu(0x10DE, 0x20B0), gpu(0x10DE, 0x20B0))])
    nics = ("host", 0x90, [bridge(efa(0xEFA0), efa(0xEFA0))])
    return machine([[(0, [s0, s1])], [(1, [nics])]], "31.507692")


def fallback():
    hb0 = ("host", 0x10, [bridge(gpu(0x1002, 0x74A1, 0x0380)), efa(0xEFA0)])
    hb1 = ("host", 0x20, [bridge(gpu(0x1002, 0x74A1, 0x0380))])
    hb2 = ("host", 0x90, [bridge(gpu(0x10DE, 0x2236, 0x0300))])
    hb3 = ("host", 0xA0, [bridge(efa(0xEFA1))])
    return machine([[(0, [hb0, hb1])], [(1, [hb2]), (2, [hb3])]], "31.507692")


def gaudi():
    def hb(base):
        acc = ("dev", 0x1200, 0x1DA3, 0x1000, None, None)
        return ("host", base, [switch(switch(acc, acc), efa(0xEFA2))])
    return machine([[(0, [hb(0x10), hb(0x20)])], [(1, [hb(0x90), hb(0xA0)])]], "31.507692")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    for name, fn in (("p4d", p4d), ("p5", p5), ("split", split), ("fallback", fallback),
                     ("gaudi", gaudi)):
        path = os.path.join(here, name + ".xml")
        with open(path, "w") as f:
            f.write(fn())
        print("wrote", path, file=sys.stderr)


if __name__ == "__main__":
    main()
