#include <config.h>

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#ifdef HAVE_HWLOC
#include <hwloc.h>
#endif

#include "core/topo.h"

static void set_err(struct fabnet_topo *t, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void set_err(struct fabnet_topo *t, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(t->err, sizeof(t->err), fmt, ap);
	va_end(ap);
}

static void copy_str(char *dst, size_t len, const char *src)
{
	snprintf(dst, len, "%s", src ? src : "");
}

/* ---- results: rails and groups -------------------------------------------- */

static void free_results(struct fabnet_topo *t)
{
	for (int i = 0; i < t->naccels; i++) {
		free(t->accels[i].rails);
		t->accels[i].rails = NULL;
		t->accels[i].nrails = 0;
		t->accels[i].group = -1;
	}
	for (int g = 0; g < t->ngroups; g++) {
		free(t->groups[g].nics);
		free(t->groups[g].accels);
	}
	free(t->groups);
	t->groups = NULL;
	t->ngroups = 0;
}

/* Lowest common ancestor of two PCI nodes, or -1 when they share none. */
static int lca(const struct fabnet_topo *t, int a, int b)
{
	while (a >= 0 && b >= 0 && t->pci[a].depth > t->pci[b].depth)
		a = t->pci[a].parent;
	while (a >= 0 && b >= 0 && t->pci[b].depth > t->pci[a].depth)
		b = t->pci[b].parent;
	while (a >= 0 && b >= 0 && a != b) {
		a = t->pci[a].parent;
		b = t->pci[b].parent;
	}
	return a >= 0 && a == b ? a : -1;
}

/* How far NIC-device n is from accelerator-device a; *depth is the depth of
 * the shared switch at FABNET_TOPO_SWITCH. */
static enum fabnet_topo_level relation(const struct fabnet_topo *t, int a, int n, int *depth)
{
	const struct fabnet_topo_pci *pa = &t->pci[a], *pn = &t->pci[n];
	int c = lca(t, a, n);

	*depth = -1;
	if (c >= 0 && !t->pci[c].host_bridge) {
		*depth = t->pci[c].depth;
		return FABNET_TOPO_SWITCH;
	}
	if (c >= 0)
		return FABNET_TOPO_HOSTBRIDGE;
	if (pa->numa_mask & pn->numa_mask)
		return FABNET_TOPO_NUMA;
	if (pa->package >= 0 && pa->package == pn->package)
		return FABNET_TOPO_PACKAGE;
	return FABNET_TOPO_SYSTEM;
}

static int uf_find(int *parent, int i)
{
	while (parent[i] != i) {
		parent[i] = parent[parent[i]];
		i = parent[i];
	}
	return i;
}

static void uf_union(int *parent, int a, int b)
{
	a = uf_find(parent, a);
	b = uf_find(parent, b);
	if (a != b)
		parent[a > b ? a : b] = a < b ? a : b;
}

static int compute_rails(struct fabnet_topo *t)
{
	for (int i = 0; i < t->naccels; i++) {
		struct fabnet_topo_accel *acc = &t->accels[i];
		enum fabnet_topo_level best = FABNET_TOPO_NONE;
		int best_depth = -1, d;

		for (int n = 0; n < t->nnics; n++) {
			enum fabnet_topo_level l = relation(t, acc->pci, t->nics[n].pci, &d);

			if (l < best || (l == best && d > best_depth)) {
				best = l;
				best_depth = d;
			}
		}
		acc->level = best;
		acc->switch_depth = best == FABNET_TOPO_SWITCH ? best_depth : -1;
		acc->nrails = 0;
		acc->group = -1;
		if (best == FABNET_TOPO_NONE)
			continue;
		acc->rails = malloc(sizeof(int) * (size_t)t->nnics);
		if (!acc->rails)
			return -1;
		for (int n = 0; n < t->nnics; n++)
			if (relation(t, acc->pci, t->nics[n].pci, &d) == best && d == best_depth)
				acc->rails[acc->nrails++] = n;
	}
	return 0;
}

static int compute_groups(struct fabnet_topo *t)
{
	int n = t->nnics, rc = -1;
	int *parent = malloc(sizeof(int) * (size_t)(n ? n : 1));
	int *group_of = malloc(sizeof(int) * (size_t)(n ? n : 1)); /* by union-find root */

	if (!parent || !group_of)
		goto out;
	for (int i = 0; i < n; i++) {
		parent[i] = i;
		group_of[i] = -1;
	}
	for (int a = 0; a < t->naccels; a++)
		for (int r = 1; r < t->accels[a].nrails; r++)
			uf_union(parent, t->accels[a].rails[0], t->accels[a].rails[r]);

	/* Number the groups: first by the first accelerator served, then the
	 * NICs that serve none. */
	t->ngroups = 0;
	for (int a = 0; a < t->naccels; a++) {
		int root;

		if (t->accels[a].nrails == 0)
			continue;
		root = uf_find(parent, t->accels[a].rails[0]);
		if (group_of[root] < 0)
			group_of[root] = t->ngroups++;
		t->accels[a].group = group_of[root];
	}
	for (int i = 0; i < n; i++) {
		int root = uf_find(parent, i);

		if (group_of[root] < 0)
			group_of[root] = t->ngroups++;
	}
	if (t->ngroups == 0) {
		rc = 0;
		goto out;
	}
	t->groups = calloc((size_t)t->ngroups, sizeof(*t->groups));
	if (!t->groups)
		goto out;
	for (int g = 0; g < t->ngroups; g++) {
		t->groups[g].level = FABNET_TOPO_NONE;
		t->groups[g].nics = malloc(sizeof(int) * (size_t)n);
		t->groups[g].accels = malloc(sizeof(int) * (size_t)(t->naccels ? t->naccels : 1));
		if (!t->groups[g].nics || !t->groups[g].accels)
			goto out;
	}
	for (int i = 0; i < n; i++) {
		struct fabnet_topo_group *g = &t->groups[group_of[uf_find(parent, i)]];

		g->nics[g->nnics++] = i;
	}
	for (int a = 0; a < t->naccels; a++) {
		struct fabnet_topo_group *g;

		if (t->accels[a].group < 0)
			continue;
		g = &t->groups[t->accels[a].group];
		if (g->naccels == 0 || t->accels[a].level > g->level)
			g->level = t->accels[a].level;
		g->accels[g->naccels++] = a;
	}
	rc = 0;
out:
	free(parent);
	free(group_of);
	return rc;
}

static int compute(struct fabnet_topo *t)
{
	free_results(t);
	if (compute_rails(t) == 0 && compute_groups(t) == 0)
		return 0;
	free_results(t);
	set_err(t, "out of memory computing the NIC groups");
	return -1;
}

/* ---- the public calls ------------------------------------------------------ */

void fabnet_topo_init(struct fabnet_topo *t)
{
	memset(t, 0, sizeof(*t));
}

void fabnet_topo_fini(struct fabnet_topo *t)
{
	free_results(t);
	for (int i = 0; i < t->ncpus; i++)
		free(t->cpus[i].affinity);
	free(t->cpus);
	free(t->accels);
	free(t->nics);
	free(t->pci);
	fabnet_topo_init(t);
}

const char *fabnet_topo_error(const struct fabnet_topo *t)
{
	return t->err;
}

const char *fabnet_topo_level_name(enum fabnet_topo_level level)
{
	switch (level) {
	case FABNET_TOPO_SWITCH:
		return "switch";
	case FABNET_TOPO_HOSTBRIDGE:
		return "host bridge";
	case FABNET_TOPO_NUMA:
		return "numa";
	case FABNET_TOPO_PACKAGE:
		return "package";
	case FABNET_TOPO_SYSTEM:
		return "system";
	case FABNET_TOPO_NONE:
		return "none";
	}
	return "?";
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Reads 1..maxdigits hex digits; returns the position after them, or NULL. */
static const char *parse_hex(const char *s, int maxdigits, uint32_t *out)
{
	uint32_t v = 0;
	int n = 0;

	while (n < maxdigits && hexval(s[n]) >= 0) {
		v = v * 16 + (uint32_t)hexval(s[n]);
		n++;
	}
	if (n == 0 || hexval(s[n]) >= 0)
		return NULL;
	*out = v;
	return s + n;
}

int fabnet_topo_parse_busid(const char *s, uint32_t *domain, uint8_t *bus, uint8_t *dev,
			    uint8_t *func)
{
	uint32_t v[4];
	const char *p;
	int nfields = 0;

	if (!s)
		return -1;
	/* Count the colons: "dddd:bb:dd.f" has two, "bb:dd.f" one. */
	for (p = s; *p; p++)
		nfields += *p == ':';
	if (nfields < 1 || nfields > 2)
		return -1;
	p = s;
	v[0] = 0;
	if (nfields == 2 && (!(p = parse_hex(p, 8, &v[0])) || *p++ != ':'))
		return -1;
	if (!(p = parse_hex(p, 2, &v[1])) || *p++ != ':')
		return -1;
	if (!(p = parse_hex(p, 2, &v[2])) || *p++ != '.')
		return -1;
	if (!(p = parse_hex(p, 1, &v[3])) || *p != '\0')
		return -1;
	if (v[2] > 0x1f || v[3] > 7)
		return -1;
	*domain = v[0];
	*bus = (uint8_t)v[1];
	*dev = (uint8_t)v[2];
	*func = (uint8_t)v[3];
	return 0;
}

/* Index in pci[] of the non-host node at that address, or -1. */
static int find_pci(const struct fabnet_topo *t, uint32_t domain, uint8_t bus, uint8_t dev,
		    uint8_t func)
{
	for (int i = 0; i < t->npci; i++) {
		const struct fabnet_topo_pci *p = &t->pci[i];

		if (!p->host_bridge && p->domain == domain && p->bus == bus && p->dev == dev &&
		    p->func == func)
			return i;
	}
	return -1;
}

static int find_pci_str(const struct fabnet_topo *t, const char *busid)
{
	uint32_t domain;
	uint8_t bus, dev, func;

	if (fabnet_topo_parse_busid(busid, &domain, &bus, &dev, &func) != 0)
		return -1;
	return find_pci(t, domain, bus, dev, func);
}

int fabnet_topo_find_accel(const struct fabnet_topo *t, const char *busid)
{
	int p = find_pci_str(t, busid);

	for (int i = 0; p >= 0 && i < t->naccels; i++)
		if (t->accels[i].pci == p)
			return i;
	return -1;
}

int fabnet_topo_find_nic(const struct fabnet_topo *t, const char *busid)
{
	int p = find_pci_str(t, busid);

	for (int i = 0; p >= 0 && i < t->nnics; i++)
		if (t->nics[i].pci == p)
			return i;
	return -1;
}

static void name_nic(struct fabnet_topo *t, struct fabnet_topo_nic *nic, const char *name)
{
	const struct fabnet_topo_pci *p = &t->pci[nic->pci];

	if (name && *name)
		copy_str(nic->name, sizeof(nic->name), name);
	else if (p->osdev[0])
		copy_str(nic->name, sizeof(nic->name), p->osdev);
	else
		copy_str(nic->name, sizeof(nic->name), p->busid);
}

static int append_nic(struct fabnet_topo *t, int pci, int efa, const char *name)
{
	struct fabnet_topo_nic *nic;

	if (t->nnics == t->nics_cap) {
		int cap = t->nics_cap ? 2 * t->nics_cap : 8;
		struct fabnet_topo_nic *n = realloc(t->nics, sizeof(*n) * (size_t)cap);

		if (!n) {
			set_err(t, "out of memory adding a NIC");
			return -1;
		}
		t->nics = n;
		t->nics_cap = cap;
	}
	nic = &t->nics[t->nnics];
	memset(nic, 0, sizeof(*nic));
	nic->pci = pci;
	nic->efa = efa;
	name_nic(t, nic, name);
	return t->nnics++;
}

int fabnet_topo_add_nic_pci(struct fabnet_topo *t, uint32_t domain, uint8_t bus, uint8_t dev,
			    uint8_t func, const char *name)
{
	int p = find_pci(t, domain, bus, dev, func), nic;

	if (p < 0) {
		set_err(t, "no PCI device %04x:%02x:%02x.%x in the topology", domain, bus, dev,
			func);
		return -1;
	}
	if (t->pci[p].bridge) {
		set_err(t, "%s is a PCI bridge, not a NIC", t->pci[p].busid);
		return -1;
	}
	for (int i = 0; i < t->naccels; i++) {
		if (t->accels[i].pci == p) {
			set_err(t, "%s is an accelerator, not a NIC", t->pci[p].busid);
			return -1;
		}
	}
	for (int i = 0; i < t->nnics; i++) {
		if (t->nics[i].pci == p) {
			if (name && *name)
				name_nic(t, &t->nics[i], name);
			return i;
		}
	}
	nic = append_nic(t, p, 0, name);
	if (nic < 0)
		return -1;
	if (compute(t) != 0) {
		t->nnics--;
		compute(t); /* back to the previous state, if memory allows */
		set_err(t, "out of memory adding a NIC");
		return -1;
	}
	return nic;
}

int fabnet_topo_add_nic_busid(struct fabnet_topo *t, const char *busid, const char *name)
{
	uint32_t domain;
	uint8_t bus, dev, func;

	if (fabnet_topo_parse_busid(busid, &domain, &bus, &dev, &func) != 0) {
		set_err(t, "'%s' is not a PCI bus id (dddd:bb:dd.f)", busid ? busid : "(null)");
		return -1;
	}
	return fabnet_topo_add_nic_pci(t, domain, bus, dev, func, name);
}

int fabnet_topo_set_nic_speed(struct fabnet_topo *t, int nic, uint64_t mbps)
{
	if (nic < 0 || nic >= t->nnics)
		return -1;
	t->nics[nic].speed_mbps = mbps;
	return 0;
}

const struct fabnet_topo_pci *fabnet_topo_accel_pci(const struct fabnet_topo *t, int accel)
{
	if (accel < 0 || accel >= t->naccels)
		return NULL;
	return &t->pci[t->accels[accel].pci];
}

const struct fabnet_topo_pci *fabnet_topo_nic_pci(const struct fabnet_topo *t, int nic)
{
	if (nic < 0 || nic >= t->nnics)
		return NULL;
	return &t->pci[t->nics[nic].pci];
}

const char *fabnet_topo_nic_name(const struct fabnet_topo *t, int nic)
{
	if (nic < 0 || nic >= t->nnics)
		return NULL;
	return t->nics[nic].name;
}

int fabnet_topo_rails_for(const struct fabnet_topo *t, int accel, int *nic_indices, int max)
{
	const struct fabnet_topo_accel *a;

	if (accel < 0 || accel >= t->naccels || max < 0 || (max > 0 && !nic_indices))
		return -1;
	a = &t->accels[accel];
	for (int i = 0; i < a->nrails && i < max; i++)
		nic_indices[i] = a->rails[i];
	return a->nrails;
}

enum fabnet_topo_level fabnet_topo_accel_level(const struct fabnet_topo *t, int accel)
{
	if (accel < 0 || accel >= t->naccels)
		return FABNET_TOPO_NONE;
	return t->accels[accel].level;
}

int fabnet_topo_groups(const struct fabnet_topo *t, const struct fabnet_topo_group **groups)
{
	if (groups)
		*groups = t->groups;
	return t->ngroups;
}

#ifdef HAVE_HWLOC

/* ---- loading (hwloc) ------------------------------------------------------ */

#define VENDOR_NVIDIA 0x10de
#define VENDOR_AMD 0x1002
#define VENDOR_AMAZON 0x1d0f

static int is_accel(const struct fabnet_topo_pci *p)
{
	if (p->bridge)
		return 0;
	if ((p->class_id >> 8) == 0x03)
		return p->vendor_id == VENDOR_NVIDIA || p->vendor_id == VENDOR_AMD;
	return (p->class_id >> 8) == 0x12;
}

static int is_efa(const struct fabnet_topo_pci *p)
{
	return !p->bridge && p->vendor_id == VENDOR_AMAZON && (p->device_id & 0xfff0) == 0xefa0;
}

static int busid_cmp(const struct fabnet_topo_pci *a, const struct fabnet_topo_pci *b)
{
	if (a->domain != b->domain)
		return a->domain < b->domain ? -1 : 1;
	if (a->bus != b->bus)
		return a->bus < b->bus ? -1 : 1;
	if (a->dev != b->dev)
		return a->dev < b->dev ? -1 : 1;
	if (a->func != b->func)
		return a->func < b->func ? -1 : 1;
	return 0;
}

/* Insertion sort of pci[] indices by bus id: lists are short. */
static void sort_by_busid(const struct fabnet_topo_pci *pci, int *idx, int n)
{
	for (int i = 1; i < n; i++) {
		int v = idx[i], j = i;

		while (j > 0 && busid_cmp(&pci[idx[j - 1]], &pci[v]) > 0) {
			idx[j] = idx[j - 1];
			j--;
		}
		idx[j] = v;
	}
}

/* Builds the accelerator and NIC lists from pci[] and computes the results. */
static int classify(struct fabnet_topo *t)
{
	int *idx = malloc(sizeof(int) * (size_t)(t->npci ? t->npci : 1));
	int n = 0;

	if (!idx)
		goto oom;
	for (int i = 0; i < t->npci; i++)
		if (is_accel(&t->pci[i]))
			idx[n++] = i;
	sort_by_busid(t->pci, idx, n);
	t->accels = calloc((size_t)(n ? n : 1), sizeof(*t->accels));
	if (!t->accels)
		goto oom;
	t->naccels = n;
	for (int i = 0; i < n; i++) {
		t->accels[i].pci = idx[i];
		t->accels[i].group = -1;
		t->accels[i].level = FABNET_TOPO_NONE;
		t->accels[i].switch_depth = -1;
	}
	n = 0;
	for (int i = 0; i < t->npci; i++)
		if (is_efa(&t->pci[i]))
			idx[n++] = i;
	sort_by_busid(t->pci, idx, n);
	for (int i = 0; i < n; i++)
		if (append_nic(t, idx[i], 1, NULL) < 0)
			goto oom;
	free(idx);
	return compute(t);
oom:
	free(idx);
	set_err(t, "out of memory reading the topology");
	return -1;
}

static void fill_pcidev(struct fabnet_topo_pci *p, const struct hwloc_pcidev_attr_s *a)
{
	p->domain = a->domain;
	p->bus = a->bus;
	p->dev = a->dev;
	p->func = a->func;
	p->class_id = a->class_id;
	p->vendor_id = a->vendor_id;
	p->device_id = a->device_id;
	p->subvendor_id = a->subvendor_id;
	p->subdevice_id = a->subdevice_id;
	p->revision = a->revision;
	p->link_speed = a->linkspeed;
	snprintf(p->busid, sizeof(p->busid), "%04x:%02x:%02x.%x", (unsigned)a->domain, a->bus,
		 a->dev, a->func);
}

/* The first OS device name below obj, preferring OpenFabrics (rdmap16s27),
 * then network interfaces (eth0), then anything. */
static void fill_osdev(struct fabnet_topo_pci *p, hwloc_obj_t obj)
{
	static const hwloc_obj_osdev_type_t pref[] = {HWLOC_OBJ_OSDEV_OPENFABRICS,
						      HWLOC_OBJ_OSDEV_NETWORK};
	hwloc_obj_t c, any = NULL;

	for (size_t k = 0; k < sizeof(pref) / sizeof(pref[0]); k++) {
		for (c = obj->io_first_child; c; c = c->next_sibling) {
			if (c->type != HWLOC_OBJ_OS_DEVICE || !c->name)
				continue;
			if (!any)
				any = c;
			if (c->attr->osdev.type == pref[k]) {
				copy_str(p->osdev, sizeof(p->osdev), c->name);
				return;
			}
		}
	}
	if (any)
		copy_str(p->osdev, sizeof(p->osdev), any->name);
}

static void fill_locality(struct fabnet_topo_pci *p, hwloc_topology_t topo, hwloc_obj_t obj)
{
	hwloc_obj_t local = hwloc_get_non_io_ancestor_obj(topo, obj), o;
	int i;

	p->numa = -1;
	p->package = -1;
	p->numa_mask = 0;
	if (!local)
		return;
	if (local->nodeset) {
		p->numa = hwloc_bitmap_first(local->nodeset);
		hwloc_bitmap_foreach_begin(i, local->nodeset)
		{
			if (i < 64)
				p->numa_mask |= 1ull << i;
		}
		hwloc_bitmap_foreach_end();
	}
	for (o = local; o; o = o->parent) {
		if (o->type == HWLOC_OBJ_PACKAGE) {
			p->package = (int)o->logical_index;
			break;
		}
	}
}

/* NCCL's affinity format: 32-bit hex words, most significant first, comma
 * separated, no 0x. */
static char *affinity_string(hwloc_const_bitmap_t set)
{
	char *s = NULL, *r, *w;

	if (!set || hwloc_bitmap_asprintf(&s, set) < 0 || !s)
		return NULL;
	for (r = w = s; *r; r++) {
		if (r[0] == '0' && r[1] == 'x') {
			r++;
			continue;
		}
		*w++ = *r;
	}
	*w = '\0';
	return s;
}

static void fill_cpu(struct fabnet_topo_cpu *c, hwloc_topology_t topo, hwloc_obj_t node)
{
	hwloc_obj_t root = hwloc_get_root_obj(topo), o;
	const char *arch = root ? hwloc_obj_get_info_by_name(root, "Architecture") : NULL;
	const char *v;

	c->numa = (int)node->os_index;
	c->affinity = affinity_string(node->cpuset);
	c->family = -1;
	c->model = -1;
	if (arch && (!strcmp(arch, "aarch64") || !strcmp(arch, "arm64")))
		arch = "arm64";
	else if (arch && !strncmp(arch, "ppc64", 5))
		arch = "ppc64";
	copy_str(c->arch, sizeof(c->arch), arch);
	for (o = node->parent; o && o->type != HWLOC_OBJ_PACKAGE; o = o->parent)
		;
	if (!o) /* a NUMA node above the packages: take the first package's */
		o = hwloc_get_obj_inside_cpuset_by_type(topo, node->cpuset, HWLOC_OBJ_PACKAGE, 0);
	if (!o)
		return;
	copy_str(c->vendor, sizeof(c->vendor), hwloc_obj_get_info_by_name(o, "CPUVendor"));
	if ((v = hwloc_obj_get_info_by_name(o, "CPUFamilyNumber")))
		c->family = atoi(v);
	if ((v = hwloc_obj_get_info_by_name(o, "CPUModelNumber")))
		c->model = atoi(v);
}

/* Index in pci[] of obj's parent when that is a bridge or PCI device (pass
 * 1 stored index + 1 in userdata), else -1: the parent is a CPU object. */
static int pci_parent(hwloc_obj_t obj)
{
	hwloc_obj_t p = obj->parent;

	if (!p || !p->userdata || (p->type != HWLOC_OBJ_BRIDGE && p->type != HWLOC_OBJ_PCI_DEVICE))
		return -1;
	return (int)(intptr_t)p->userdata - 1;
}

static int read_hwloc(struct fabnet_topo *t, hwloc_topology_t topo)
{
	hwloc_obj_t obj;
	int n = 0, i;

	for (obj = NULL; (obj = hwloc_get_next_bridge(topo, obj));)
		n++;
	for (obj = NULL; (obj = hwloc_get_next_pcidev(topo, obj));)
		n++;
	t->pci = calloc((size_t)(n ? n : 1), sizeof(*t->pci));
	if (!t->pci)
		return -1;
	/* Pass 1: the nodes, each remembering its index in the hwloc object. */
	i = 0;
	for (obj = NULL; (obj = hwloc_get_next_bridge(topo, obj)); i++) {
		struct fabnet_topo_pci *p = &t->pci[i];

		p->bridge = 1;
		p->host_bridge = obj->attr->bridge.upstream_type == HWLOC_OBJ_BRIDGE_HOST;
		if (obj->attr->bridge.upstream_type == HWLOC_OBJ_BRIDGE_PCI)
			fill_pcidev(p, &obj->attr->bridge.upstream.pci);
		fill_locality(p, topo, obj);
		obj->userdata = (void *)(intptr_t)(i + 1);
	}
	for (obj = NULL; (obj = hwloc_get_next_pcidev(topo, obj)); i++) {
		struct fabnet_topo_pci *p = &t->pci[i];

		fill_pcidev(p, &obj->attr->pcidev);
		fill_osdev(p, obj);
		fill_locality(p, topo, obj);
		obj->userdata = (void *)(intptr_t)(i + 1);
	}
	t->npci = i;
	/* Pass 2: parents, then depths. */
	i = 0;
	for (obj = NULL; (obj = hwloc_get_next_bridge(topo, obj)); i++)
		t->pci[i].parent = pci_parent(obj);
	for (obj = NULL; (obj = hwloc_get_next_pcidev(topo, obj)); i++)
		t->pci[i].parent = pci_parent(obj);
	for (i = 0; i < t->npci; i++) {
		int d = 0;

		for (int p = t->pci[i].parent; p >= 0; p = t->pci[p].parent)
			d++;
		t->pci[i].depth = d;
	}

	n = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE);
	if (n > 0) {
		t->cpus = calloc((size_t)n, sizeof(*t->cpus));
		if (!t->cpus)
			return -1;
		for (obj = NULL; (obj = hwloc_get_next_obj_by_type(topo, HWLOC_OBJ_NUMANODE, obj));)
			if (t->ncpus < n)
				fill_cpu(&t->cpus[t->ncpus++], topo, obj);
	}
	return 0;
}

int fabnet_topo_load(struct fabnet_topo *t, const char *xml_path)
{
	hwloc_topology_t topo;
	int rc;

	fabnet_topo_fini(t);
	if (hwloc_topology_init(&topo) != 0) {
		set_err(t, "hwloc_topology_init failed: %s", strerror(errno));
		return -1;
	}
	if (hwloc_topology_set_io_types_filter(topo, HWLOC_TYPE_FILTER_KEEP_ALL) != 0) {
		set_err(t, "hwloc cannot keep the PCI devices: %s", strerror(errno));
		goto fail;
	}
	if (xml_path) {
		FILE *f = fopen(xml_path, "r");

		if (!f) {
			set_err(t, "cannot open topology file '%s': %s", xml_path, strerror(errno));
			goto fail;
		}
		fclose(f);
		errno = 0;
		if (hwloc_topology_set_xml(topo, xml_path) != 0) {
			set_err(t, "hwloc cannot read topology file '%s': %s", xml_path,
				errno ? strerror(errno) : "invalid");
			goto fail;
		}
	}
	errno = 0;
	if (hwloc_topology_load(topo) != 0) {
		set_err(t, "hwloc cannot load the topology%s%s%s: %s", xml_path ? " from '" : "",
			xml_path ? xml_path : "", xml_path ? "'" : "",
			errno ? strerror(errno) : "invalid");
		goto fail;
	}
	rc = read_hwloc(t, topo);
	hwloc_topology_destroy(topo);
	if (rc != 0) {
		fabnet_topo_fini(t);
		set_err(t, "out of memory reading the topology");
		return -1;
	}
	if (classify(t) != 0) {
		char err[sizeof(t->err)];

		memcpy(err, t->err, sizeof(err));
		fabnet_topo_fini(t);
		memcpy(t->err, err, sizeof(err));
		return -1;
	}
	t->loaded = 1;
	return 0;
fail:
	hwloc_topology_destroy(topo);
	return -1;
}

#else /* !HAVE_HWLOC */

int fabnet_topo_load(struct fabnet_topo *t, const char *xml_path)
{
	(void)xml_path;
	fabnet_topo_fini(t);
	set_err(t, "built without hwloc");
	return -1;
}

#endif

/* ---- the NCCL topology XML -------------------------------------------------- */

static void put_escaped(FILE *f, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '&':
			fputs("&amp;", f);
			break;
		case '<':
			fputs("&lt;", f);
			break;
		case '>':
			fputs("&gt;", f);
			break;
		case '"':
			fputs("&quot;", f);
			break;
		default:
			fputc(*s, f);
		}
	}
}

static int node_numa(const struct fabnet_topo_pci *p)
{
	return p->numa >= 0 ? p->numa : 0;
}

static int nic_of_pci(const struct fabnet_topo *t, int pci)
{
	for (int i = 0; i < t->nnics; i++)
		if (t->nics[i].pci == pci)
			return i;
	return -1;
}

static void write_pci(const struct fabnet_topo *t, FILE *f, const uint8_t *keep, int node,
		      int indent)
{
	const struct fabnet_topo_pci *p = &t->pci[node];
	int nic = nic_of_pci(t, node), children = 0;

	for (int c = 0; c < t->npci; c++)
		children += keep[c] && t->pci[c].parent == node;
	fprintf(f,
		"%*s<pci busid=\"%s\" class=\"0x%04x00\" vendor=\"0x%04x\" device=\"0x%04x\" "
		"subsystem_vendor=\"0x%04x\" subsystem_device=\"0x%04x\"%s>\n",
		indent, "", p->busid, p->class_id, p->vendor_id, p->device_id, p->subvendor_id,
		p->subdevice_id, children || nic >= 0 ? "" : "/");
	if (!children && nic < 0)
		return;
	if (nic >= 0) {
		fprintf(f, "%*s<nic>\n%*s<net name=\"", indent + 2, "", indent + 4, "");
		put_escaped(f, t->nics[nic].name);
		fprintf(f, "\" dev=\"%d\"", nic);
		if (t->nics[nic].speed_mbps)
			fprintf(f, " speed=\"%llu\"", (unsigned long long)t->nics[nic].speed_mbps);
		fprintf(f, "/>\n%*s</nic>\n", indent + 2, "");
	}
	for (int c = 0; c < t->npci; c++)
		if (keep[c] && t->pci[c].parent == node)
			write_pci(t, f, keep, c, indent + 2);
	fprintf(f, "%*s</pci>\n", indent, "");
}

static void write_cpu_open(const struct fabnet_topo *t, FILE *f, int numa)
{
	const struct fabnet_topo_cpu *c = NULL;

	for (int i = 0; i < t->ncpus; i++)
		if (t->cpus[i].numa == numa)
			c = &t->cpus[i];
	fprintf(f, "  <cpu numaid=\"%d\"", numa);
	if (c && c->affinity)
		fprintf(f, " affinity=\"%s\"", c->affinity);
	if (c && c->arch[0]) {
		fputs(" arch=\"", f);
		put_escaped(f, c->arch);
		fputc('"', f);
	}
	if (c && c->vendor[0]) {
		fputs(" vendor=\"", f);
		put_escaped(f, c->vendor);
		fputc('"', f);
	}
	if (c && c->family >= 0)
		fprintf(f, " familyid=\"%d\"", c->family);
	if (c && c->model >= 0)
		fprintf(f, " modelid=\"%d\"", c->model);
	fputs(">\n", f);
}

int fabnet_topo_write_nccl_xml(const struct fabnet_topo *t, FILE *f)
{
	uint8_t *keep = calloc((size_t)(t->npci ? t->npci : 1), 1);
	int prev = -1;

	if (!keep)
		return -1;
	/* Keep the accelerators, the NICs and the non-host bridges above them. */
	for (int i = 0; i < t->naccels + t->nnics; i++) {
		int p = i < t->naccels ? t->accels[i].pci : t->nics[i - t->naccels].pci;

		for (; p >= 0 && !t->pci[p].host_bridge && !keep[p]; p = t->pci[p].parent)
			keep[p] = 1;
	}
	fputs("<system version=\"1\">\n", f);
	/* One <cpu> per NUMA node, in increasing order. */
	for (;;) {
		int numa = -1;

		for (int i = 0; i < t->npci; i++) {
			int n = node_numa(&t->pci[i]);

			if (keep[i] && n > prev && (numa < 0 || n < numa))
				numa = n;
		}
		if (numa < 0)
			break;
		write_cpu_open(t, f, numa);
		for (int i = 0; i < t->npci; i++) {
			int parent = t->pci[i].parent;

			if (keep[i] && node_numa(&t->pci[i]) == numa &&
			    (parent < 0 || t->pci[parent].host_bridge))
				write_pci(t, f, keep, i, 4);
		}
		fputs("  </cpu>\n", f);
		prev = numa;
	}
	fputs("</system>\n", f);
	free(keep);
	return ferror(f) ? -1 : 0;
}
