/*
 * The PCI topology of accelerators and NICs, read through hwloc: which NICs
 * each accelerator should use (its "rails") and how NICs group into NCCL
 * devices. A pure module: no libfabric, no logging; failures come back as -1
 * with a message in fabnet_topo_error().
 *
 * Load: fabnet_topo_load(t, NULL) reads this machine, fabnet_topo_load(t, path)
 * an hwloc XML export (lstopo --of xml, or tests/topology/). hwloc is used
 * only while loading: everything needed is copied into t and the hwloc
 * topology is destroyed, so nothing below depends on hwloc. Without hwloc
 * (configure --without-hwloc) loading fails with "built without hwloc" and t
 * stays an empty topology that every other call accepts.
 *
 * Accelerators (indices 0..naccels-1, ordered by PCI bus id):
 *	class 0x03xx (display: 0x0300 VGA, 0x0302 3D, 0x0380 other) from NVIDIA
 *	(0x10de) or AMD (0x1002), and class 0x12xx (processing accelerators,
 *	e.g. Habana 0x1da3) from any vendor.
 * NICs (indices 0..nnics-1): EFA devices, vendor 0x1d0f (Amazon) with a device
 *	id 0xefaX, ordered by bus id; then, in the order added, the devices the
 *	caller marks with fabnet_topo_add_nic_busid() (a NIC libfabric reports
 *	that is not EFA, e.g. the Ethernet NIC under tcp). Adding a NIC never
 *	renumbers the NICs already there.
 *
 * Rails: for each accelerator, the NICs at the closest level below, the
 * first level where any NIC is found:
 *	FABNET_TOPO_SWITCH      NICs sharing a PCI bridge below the host bridge
 *	                        (a PCIe switch) with the accelerator; when several
 *	                        switches are shared (nested switches), only the
 *	                        NICs of the deepest one: in p5-like trees a top
 *	                        switch shared by 2 GPUs and 8 NICs loses to the
 *	                        sub-switch holding 1 GPU and its 4 NICs
 *	FABNET_TOPO_HOSTBRIDGE  NICs under the same host bridge (root complex)
 *	FABNET_TOPO_NUMA        NICs whose hwloc locality shares a NUMA node
 *	FABNET_TOPO_PACKAGE     NICs in the same package (socket)
 *	FABNET_TOPO_SYSTEM      every NIC of the machine
 *	FABNET_TOPO_NONE        the machine has no NIC
 * A level other than FABNET_TOPO_SWITCH is a fallback: the accelerator has no
 * NIC of its own, and its rails are shared with others at that distance.
 *
 * Groups (NCCL devices): the rail sets of all accelerators, with sets that
 * overlap merged, so that every NIC belongs to exactly one group (p4d: 4
 * groups of 1 NIC, each serving 2 GPUs; p5: 8 groups of 4 NICs, each serving
 * 1 GPU). Overlaps only arise from fallbacks (two accelerators falling back
 * to different but intersecting sets). NICs that serve no accelerator become
 * groups of their own, with level FABNET_TOPO_NONE. Groups that serve
 * accelerators come first, ordered by the first accelerator they serve; the
 * singletons follow in NIC order.
 *
 * Every result is recomputed by load and by each NIC added; pointers and
 * strings returned stay valid until the next load, add or fini. Not
 * thread-safe; no global state.
 */
#ifndef FABNET_CORE_TOPO_H
#define FABNET_CORE_TOPO_H

#include <stdint.h>
#include <stdio.h>

/* "dddd:bb:dd.f" with a domain of up to 8 hex digits, and the NUL. */
#define FABNET_TOPO_BUSID_LEN 20
#define FABNET_TOPO_NAME_LEN 64

enum fabnet_topo_level {
	FABNET_TOPO_SWITCH = 0,
	FABNET_TOPO_HOSTBRIDGE = 1,
	FABNET_TOPO_NUMA = 2,
	FABNET_TOPO_PACKAGE = 3,
	FABNET_TOPO_SYSTEM = 4,
	FABNET_TOPO_NONE = 5,
};

/* One node of the PCI tree: a host bridge, a PCI-to-PCI bridge or a device. */
struct fabnet_topo_pci {
	char busid[FABNET_TOPO_BUSID_LEN]; /* lowercase; "" for a host bridge */
	uint32_t domain;
	uint8_t bus, dev, func;
	uint8_t revision;
	uint16_t class_id; /* class and subclass, e.g. 0x0302: no programming interface */
	uint16_t vendor_id, device_id, subvendor_id, subdevice_id;
	float link_speed;  /* GB/s as hwloc reports it, 0 when unknown */
	int host_bridge;   /* 1 for a host bridge, which has no bus id */
	int bridge;        /* 1 for any bridge, host bridges included */
	int parent;        /* index in pci[] of the parent bridge, -1 at the top */
	int depth;         /* number of bridges above it */
	int numa;          /* lowest NUMA node (os index) of its locality, -1 unknown */
	uint64_t numa_mask;/* NUMA nodes 0..63 of its locality */
	int package;       /* logical index of its package, -1 unknown */
	char osdev[FABNET_TOPO_NAME_LEN]; /* first OS device name ("rdmap16s27"), or "" */
};

struct fabnet_topo_nic {
	int pci;           /* index in pci[] */
	int efa;           /* 1: found as EFA; 0: added by the caller */
	char name[FABNET_TOPO_NAME_LEN]; /* the caller's name, else the OS device's, else the bus id */
	uint64_t speed_mbps; /* 0: unknown (fabnet_topo_set_nic_speed) */
};

struct fabnet_topo_accel {
	int pci;           /* index in pci[] */
	enum fabnet_topo_level level; /* how its rails were found */
	int switch_depth;  /* depth of the shared switch at FABNET_TOPO_SWITCH, else -1 */
	int nrails;
	int *rails;        /* NIC indices, ascending */
	int group;         /* the group that holds its rails, -1 when it has none */
};

struct fabnet_topo_group {
	int nnics;
	int *nics;         /* NIC indices, ascending */
	int naccels;
	int *accels;       /* the accelerators it serves, ascending */
	/* The farthest level among the accelerators it serves (SWITCH when all
	 * have a NIC of their own), FABNET_TOPO_NONE when it serves none. */
	enum fabnet_topo_level level;
};

/* Per NUMA node: what NCCL's <cpu> element says about it. */
struct fabnet_topo_cpu {
	int numa;          /* os index */
	char *affinity;    /* its CPUs in NCCL's format ("0000ffff,ffffffff"), or NULL */
	char arch[16];     /* "x86_64", "arm64", ... or "" */
	char vendor[32];   /* "GenuineIntel", ... or "" */
	int family, model; /* -1 when unknown */
};

struct fabnet_topo {
	int loaded;        /* 1 after a successful fabnet_topo_load() */
	int npci;
	struct fabnet_topo_pci *pci;
	int naccels;
	struct fabnet_topo_accel *accels;
	int nnics, nics_cap;
	struct fabnet_topo_nic *nics;
	int ngroups;
	struct fabnet_topo_group *groups;
	int ncpus;
	struct fabnet_topo_cpu *cpus;
	char err[256];
};

/* Zeroes t: an empty topology (no accelerator, no NIC). */
void fabnet_topo_init(struct fabnet_topo *t);
/* Frees everything; t is left empty (fabnet_topo_init state). */
void fabnet_topo_fini(struct fabnet_topo *t);

/* Loads this machine (xml_path NULL; hwloc honours HWLOC_XMLFILE then) or an
 * hwloc XML file into t, which must have been initialised (fabnet_topo_init)
 * and may hold an earlier load: it is freed first. Returns 0, or -1 with
 * fabnet_topo_error() set and t left empty. */
int fabnet_topo_load(struct fabnet_topo *t, const char *xml_path);
/* The message of the last failure, "" when none. */
const char *fabnet_topo_error(const struct fabnet_topo *t);

/* Parses "dddd:bb:dd.f" or "bb:dd.f" (domain 0), hex digits of any case.
 * Returns 0, or -1 when s is not a bus id. */
int fabnet_topo_parse_busid(const char *s, uint32_t *domain, uint8_t *bus, uint8_t *dev,
			    uint8_t *func);

/* Marks the PCI device at busid as a NIC named name (NULL: its OS device's
 * name, else its bus id), for NICs that are not EFA. Returns the NIC's index:
 * the existing one, renamed when name is given, if the device already is a
 * NIC; or -1 with the error set when busid is malformed, not in the topology,
 * a bridge or an accelerator. */
int fabnet_topo_add_nic_busid(struct fabnet_topo *t, const char *busid, const char *name);
/* The same with the address split as libfabric's struct fi_pci_attr has it. */
int fabnet_topo_add_nic_pci(struct fabnet_topo *t, uint32_t domain, uint8_t bus, uint8_t dev,
			    uint8_t func, const char *name);
/* Sets a NIC's speed for the NCCL XML. Returns 0, or -1 for a bad index. */
int fabnet_topo_set_nic_speed(struct fabnet_topo *t, int nic, uint64_t mbps);

static inline int fabnet_topo_naccels(const struct fabnet_topo *t)
{
	return t->naccels;
}
static inline int fabnet_topo_nnics(const struct fabnet_topo *t)
{
	return t->nnics;
}
/* The PCI node of an accelerator or NIC, or NULL for a bad index. */
const struct fabnet_topo_pci *fabnet_topo_accel_pci(const struct fabnet_topo *t, int accel);
const struct fabnet_topo_pci *fabnet_topo_nic_pci(const struct fabnet_topo *t, int nic);
/* A NIC's name, or NULL for a bad index. */
const char *fabnet_topo_nic_name(const struct fabnet_topo *t, int nic);
/* Index of the accelerator or NIC at busid (any form parse_busid takes), or -1. */
int fabnet_topo_find_accel(const struct fabnet_topo *t, const char *busid);
int fabnet_topo_find_nic(const struct fabnet_topo *t, const char *busid);

/* Writes up to max NIC indices of accelerator accel's rails into nic_indices
 * (ascending) and returns how many rails it has, which may exceed max;
 * -1 for a bad index. nic_indices may be NULL when max is 0. */
int fabnet_topo_rails_for(const struct fabnet_topo *t, int accel, int *nic_indices, int max);
/* How accel's rails were found; FABNET_TOPO_NONE for a bad index. */
enum fabnet_topo_level fabnet_topo_accel_level(const struct fabnet_topo *t, int accel);
/* Sets *groups to the array of groups and returns how many there are. */
int fabnet_topo_groups(const struct fabnet_topo *t, const struct fabnet_topo_group **groups);
/* "switch", "host bridge", "numa", "package", "system", "none", or "?". */
const char *fabnet_topo_level_name(enum fabnet_topo_level level);

/*
 * Writes a minimal NCCL topology file (for NCCL_TOPO_FILE):
 *
 *   <system version="1">
 *     <cpu numaid="0" affinity="..." arch="x86_64" vendor="GenuineIntel" familyid="6" modelid="85">
 *       <pci busid="0000:10:00.0" class="0x060400" vendor="0x1000" device="0xc030" ...>
 *         <pci busid="0000:11:01.0" class="0x030200" vendor="0x10de" device="0x20b0" .../>
 *         <pci busid="0000:11:00.0" class="0x020000" vendor="0x1d0f" device="0xefa0" ...>
 *           <nic>
 *             <net name="rdmap17s0" dev="0" speed="100000"/>
 *           </nic>
 *         </pci>
 *       </pci>
 *     </cpu>
 *   </system>
 *
 * One <cpu> per NUMA node holding an accelerator or a NIC; below it, the PCI
 * bridges on the way to them (host bridges are the <cpu> itself, as in NCCL)
 * and the accelerators and NICs, each with class (24 bits, programming
 * interface 00), vendor, device and subsystem ids. A NIC carries one <net>
 * with its name, dev = its NIC index here, and speed (Mbps) when known. A
 * device whose NUMA node is unknown goes under numaid 0. Everything else
 * (link_speed, link_width, GPU attributes, the net's port, guid, gdr, ...) is
 * left out: NCCL completes missing attributes from sysfs and from the plugin
 * when it loads the file on the machine. Returns 0, or -1 on a write error.
 */
int fabnet_topo_write_nccl_xml(const struct fabnet_topo *t, FILE *f);

#endif
