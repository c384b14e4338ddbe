/*
 * Rail groups: the NICs next to one accelerator become one NCCL device, so
 * that every transfer can stripe across all of them (protocol/proto.h).
 *
 * Where the groups come from, first match wins:
 *   1. FABNET_RAIL_GROUPS="a,b;c,d": domain names, groups separated by ';'.
 *   2. The PCI topology (core/topo.c, hwloc; FABNET_TOPO_FILE for an XML
 *      export): the NICs that share the closest PCIe switch with an
 *      accelerator form a group (p5: 4 NICs per GPU; p4d: 1 NIC per 2 GPUs).
 *      Used only when the topology shows accelerators and places our NICs.
 *   3. Otherwise each device alone.
 * A group never exceeds FABNET_RAILS (1 turns rails off); a larger one is cut
 * into consecutive groups of that size. Devices not placed in any group stay
 * alone, after the groups.
 *
 * Why our own groups rather than NCCL's makeVDevice: NCCL merges devices only
 * when told to (NCCL_NET_MERGE_LEVEL) and then drives each physical device
 * with its own requests; one fabnet device per group stripes every message
 * across the NICs at once, with one CTS and one completion per message.
 */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/topo.h"
#include "transport/rails.h"

struct plan {
	struct fabnet_dev *devs;
	int ndevs;
	int *used;       /* per device: already in a group */
	int max;
	int ngroups;
	int *primaries;
};

static void add_group(struct plan *p, const int *idx, int n, const char *from)
{
	struct fabnet_dev *g[FABNET_MAX_RAILS];

	for (int start = 0; start < n; start += p->max) {
		int m = n - start < p->max ? n - start : p->max;
		char names[256] = "";
		for (int i = 0; i < m; i++) {
			g[i] = &p->devs[idx[start + i]];
			p->used[idx[start + i]] = 1;
			if (strlen(names) + strlen(g[i]->name) + 2 < sizeof(names)) {
				if (i)
					strcat(names, "+");
				strcat(names, g[i]->name);
			}
		}
		fabnet_dev_group(g, m);
		p->primaries[p->ngroups++] = idx[start];
		if (m > 1)
			FN_INFO(NCCL_INIT | NCCL_NET, "fabnet: device %d = %d rails (%s), from %s",
				p->ngroups - 1, m, names, from);
	}
}

static int find_dev(const struct plan *p, const char *name, size_t len)
{
	for (int i = 0; i < p->ndevs; i++)
		if (strlen(p->devs[i].name) == len && !strncmp(p->devs[i].name, name, len))
			return i;
	return -1;
}

static void from_setting(struct plan *p, const char *spec)
{
	const char *s = spec;

	while (*s) {
		int idx[64], n = 0;
		const char *end = s + strcspn(s, ";");
		while (s < end) {
			size_t len = strcspn(s, ",;");
			if (s + len > end)
				len = (size_t)(end - s);
			if (len) {
				int d = find_dev(p, s, len);
				if (d < 0)
					FN_WARN("fabnet: FABNET_RAIL_GROUPS names '%.*s', which is not a "
						"device here (run fabnet-info for the names): ignored",
						(int)len, s);
				else if (p->used[d])
					FN_WARN("fabnet: FABNET_RAIL_GROUPS names %s twice: ignored",
						p->devs[d].name);
				else if (n < 64)
					idx[n++] = d, p->used[d] = 1;
			}
			s += len;
			if (*s == ',')
				s++;
		}
		if (n)
			add_group(p, idx, n, "FABNET_RAIL_GROUPS");
		s = *end ? end + 1 : end;
	}
}

static const char *basename_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	return slash ? slash + 1 : path;
}

static void from_topology(struct plan *p, const char *xml)
{
	struct fabnet_topo t;
	const struct fabnet_topo_group *groups;
	int *dev_of_nic = NULL, ng, placed = 0;

	fabnet_topo_init(&t);
	if (fabnet_topo_load(&t, xml && *xml ? xml : NULL)) {
		FN_INFO(NCCL_INIT | NCCL_NET, "fabnet: no topology (%s): one device per NIC",
			fabnet_topo_error(&t));
		goto out;
	}
	if (fabnet_topo_naccels(&t) == 0)
		goto out; /* nothing to group NICs around */
	for (int i = 0; i < p->ndevs; i++) {
		if (p->used[i] || !p->devs[i].pci_path)
			continue;
		int nic = fabnet_topo_find_nic(&t, basename_of(p->devs[i].pci_path));
		if (nic < 0)
			nic = fabnet_topo_add_nic_busid(&t, basename_of(p->devs[i].pci_path),
							p->devs[i].name);
		if (nic >= 0)
			placed++;
	}
	if (!placed)
		goto out;
	dev_of_nic = malloc(sizeof(int) * (size_t)fabnet_topo_nnics(&t));
	if (!dev_of_nic)
		goto out;
	for (int n = 0; n < fabnet_topo_nnics(&t); n++) {
		dev_of_nic[n] = -1;
		for (int i = 0; i < p->ndevs; i++)
			if (!p->used[i] && p->devs[i].pci_path &&
			    !strcmp(basename_of(p->devs[i].pci_path), fabnet_topo_nic_pci(&t, n)->busid))
				dev_of_nic[n] = i;
	}
	ng = fabnet_topo_groups(&t, &groups);
	for (int g = 0; g < ng; g++) {
		int idx[64], n = 0;
		if (groups[g].level == FABNET_TOPO_NONE)
			continue; /* serves no accelerator: stays alone */
		for (int j = 0; j < groups[g].nnics && n < 64; j++) {
			int d = dev_of_nic[groups[g].nics[j]];
			if (d >= 0 && !p->used[d])
				idx[n++] = d;
		}
		if (n)
			add_group(p, idx, n, "the PCI topology");
	}
out:
	free(dev_of_nic);
	fabnet_topo_fini(&t);
}

int fabnet_rails_plan(struct fabnet_dev *devs, int ndevs, const struct fabnet_config *cfg,
		      int *primaries)
{
	struct plan p = {devs, ndevs, calloc((size_t)ndevs, sizeof(int)), (int)cfg->rails, 0,
			 primaries};

	if (!p.used)
		p.max = 1;
	if (p.max > FABNET_MAX_RAILS)
		p.max = FABNET_MAX_RAILS;
	if (p.max > 1 && p.used) {
		if (cfg->rail_groups[0])
			from_setting(&p, cfg->rail_groups);
		else
			from_topology(&p, cfg->topo_file);
	}
	for (int i = 0; i < ndevs; i++)
		if (!p.used || !p.used[i]) {
			struct fabnet_dev *g = &devs[i];
			fabnet_dev_group(&g, 1);
			primaries[p.ngroups++] = i;
		}
	free(p.used);
	return p.ngroups;
}
