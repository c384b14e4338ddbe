/*
 * Rail groups (src/transport/rails.c): which of our devices NCCL sees as one
 * device, from FABNET_RAIL_GROUPS or from the PCI topology of the synthetic
 * machines in tests/topology/. The devices are plain structs here: grouping
 * only reads their names and PCI paths and never opens them.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/topo.h"
#include "transport/rails.h"
#include "unit.h"

#define MAXDEV 40

struct fixture {
	struct fabnet_dev devs[MAXDEV];
	char paths[MAXDEV][128];
	int primaries[MAXDEV];
	int ndevs;
	struct fabnet_config cfg;
};

static void fixture_named(struct fixture *f, int n)
{
	memset(f, 0, sizeof(*f));
	f->ndevs = n;
	for (int i = 0; i < n; i++)
		snprintf(f->devs[i].name, sizeof(f->devs[i].name), "eth%d", i);
	f->cfg.rails = 4;
}

/* "1+2 4 0" style: each NCCL device's rails by device index. */
static void describe(const struct fixture *f, int ngroups, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = '\0';
	for (int g = 0; g < ngroups && off < len; g++) {
		const struct fabnet_dev *p = &f->devs[f->primaries[g]];
		for (int k = 0; k < p->nrails && off < len; k++)
			off += (size_t)snprintf(buf + off, len - off, "%s%d", k ? "+" : (g ? " " : ""),
						(int)(p->rails[k] - f->devs));
	}
}

static void expect_groups(struct fixture *f, const char *want)
{
	char got[512];
	int n = fabnet_rails_plan(f->devs, f->ndevs, &f->cfg, f->primaries);

	describe(f, n, got, sizeof(got));
	UNIT_ASSERT_MSG(!strcmp(got, want), "groups \"%s\", expected \"%s\"", got, want);
	/* every device belongs to exactly one group and knows its primary */
	for (int g = 0; g < n; g++) {
		struct fabnet_dev *p = &f->devs[f->primaries[g]];
		for (int k = 0; k < p->nrails; k++) {
			UNIT_ASSERT_MSG(p->rails[k]->primary == p && p->rails[k]->rail == k,
					"%s: primary or rail index wrong", p->rails[k]->name);
		}
	}
}

static void the_setting_groups_devices_by_name(void)
{
	struct fixture f;

	fixture_named(&f, 6);
	snprintf(f.cfg.rail_groups, sizeof(f.cfg.rail_groups), "eth1,eth2;eth4");
	expect_groups(&f, "1+2 4 0 3 5");
}

static void the_setting_ignores_unknown_and_repeated_names(void)
{
	struct fixture f;

	fixture_named(&f, 4);
	snprintf(f.cfg.rail_groups, sizeof(f.cfg.rail_groups), "eth3,nope,eth3,eth0;;eth3,eth2;");
	expect_groups(&f, "3+0 2 1");
}

static void groups_larger_than_fabnet_rails_are_cut(void)
{
	struct fixture f;

	fixture_named(&f, 6);
	f.cfg.rails = 2;
	snprintf(f.cfg.rail_groups, sizeof(f.cfg.rail_groups), "eth0,eth1,eth2,eth3,eth4");
	expect_groups(&f, "0+1 2+3 4 5");
}

static void fabnet_rails_1_keeps_every_device_alone(void)
{
	struct fixture f;

	fixture_named(&f, 3);
	f.cfg.rails = 1;
	snprintf(f.cfg.rail_groups, sizeof(f.cfg.rail_groups), "eth0,eth1,eth2");
	expect_groups(&f, "0 1 2");
}

#ifdef HAVE_HWLOC
static void topo_path(char *buf, size_t len, const char *name)
{
	const char *src = getenv("FABNET_SRCDIR");

	snprintf(buf, len, "%s/tests/topology/%s", src && *src ? src : ".", name);
}

/* One device per NIC of the synthetic machine, in reverse bus order (the
 * grouping must not depend on the order libfabric lists them), plus one
 * device that is not in the topology at all. */
static int fixture_from_topology(struct fixture *f, const char *xml)
{
	struct fabnet_topo t;
	int n;

	memset(f, 0, sizeof(*f));
	f->cfg.rails = 4;
	topo_path(f->cfg.topo_file, sizeof(f->cfg.topo_file), xml);
	fabnet_topo_init(&t);
	if (fabnet_topo_load(&t, f->cfg.topo_file)) {
		UNIT_ASSERT_MSG(0, "cannot load %s: %s", f->cfg.topo_file, fabnet_topo_error(&t));
		return -1;
	}
	n = fabnet_topo_nnics(&t);
	for (int i = 0; i < n && i < MAXDEV - 1; i++) {
		int nic = n - 1 - i;
		snprintf(f->devs[i].name, sizeof(f->devs[i].name), "%s", fabnet_topo_nic_name(&t, nic));
		snprintf(f->paths[i], sizeof(f->paths[i]), "/sys/devices/pci0000:00/%s",
			 fabnet_topo_nic_pci(&t, nic)->busid);
		f->devs[i].pci_path = f->paths[i];
	}
	snprintf(f->devs[n].name, sizeof(f->devs[n].name), "elsewhere0");
	f->ndevs = n + 1;
	fabnet_topo_fini(&t);
	return 0;
}

static void p5_gives_8_devices_of_the_4_nics_beside_each_gpu(void)
{
	struct fixture f;
	struct fabnet_topo t;
	const struct fabnet_topo_group *groups;
	int n, ng;

	if (fixture_from_topology(&f, "p5.xml"))
		return;
	n = fabnet_rails_plan(f.devs, f.ndevs, &f.cfg, f.primaries);
	CU_ASSERT_EQUAL(n, 9); /* 8 groups, then the device outside the topology */
	fabnet_topo_init(&t);
	CU_ASSERT_EQUAL_FATAL(fabnet_topo_load(&t, f.cfg.topo_file), 0);
	ng = fabnet_topo_groups(&t, &groups);
	CU_ASSERT_EQUAL(ng, 8);
	for (int g = 0; g < 8 && g < n && g < ng; g++) {
		struct fabnet_dev *p = &f.devs[f.primaries[g]];
		UNIT_ASSERT_MSG(p->nrails == 4, "device %d has %d rails", g, p->nrails);
		for (int k = 0; k < p->nrails; k++) {
			/* the rails are the NICs of topology group g, in NIC order */
			const char *busid = fabnet_topo_nic_pci(&t, groups[g].nics[k])->busid;
			UNIT_ASSERT_MSG(strstr(p->rails[k]->pci_path, busid) != NULL,
					"device %d rail %d is %s, expected %s", g, k,
					p->rails[k]->pci_path, busid);
		}
	}
	CU_ASSERT_EQUAL(f.devs[f.primaries[8]].nrails, 1);
	CU_ASSERT_STRING_EQUAL(f.devs[f.primaries[8]].name, "elsewhere0");
	fabnet_topo_fini(&t);
}

static void p5_with_fabnet_rails_2_gives_16_devices(void)
{
	struct fixture f;
	int n;

	if (fixture_from_topology(&f, "p5.xml"))
		return;
	f.cfg.rails = 2;
	n = fabnet_rails_plan(f.devs, f.ndevs, &f.cfg, f.primaries);
	CU_ASSERT_EQUAL(n, 17);
	for (int g = 0; g < 16 && g < n; g++)
		UNIT_ASSERT_MSG(f.devs[f.primaries[g]].nrails == 2, "device %d has %d rails", g,
				f.devs[f.primaries[g]].nrails);
}

static void p4d_keeps_one_nic_per_device(void)
{
	struct fixture f;
	int n;

	if (fixture_from_topology(&f, "p4d.xml"))
		return;
	n = fabnet_rails_plan(f.devs, f.ndevs, &f.cfg, f.primaries);
	CU_ASSERT_EQUAL(n, f.ndevs);
	for (int g = 0; g < n; g++)
		CU_ASSERT_EQUAL(f.devs[f.primaries[g]].nrails, 1);
}

static void the_setting_wins_over_the_topology(void)
{
	struct fixture f;
	char want[64];

	if (fixture_from_topology(&f, "p5.xml"))
		return;
	snprintf(f.cfg.rail_groups, sizeof(f.cfg.rail_groups), "%s,%s", f.devs[5].name,
		 f.devs[30].name);
	snprintf(want, sizeof(want), "5+30 0 1 2");
	{
		char got[512];
		int n = fabnet_rails_plan(f.devs, f.ndevs, &f.cfg, f.primaries);
		describe(&f, n, got, sizeof(got));
		CU_ASSERT_EQUAL(n, f.ndevs - 1);
		UNIT_ASSERT_MSG(!strncmp(got, want, strlen(want)), "groups \"%s\"", got);
	}
}
#endif

void register_rails_tests(void)
{
	CU_pSuite s = CU_add_suite("rails", NULL, NULL);

	UNIT_ADD(s, the_setting_groups_devices_by_name);
	UNIT_ADD(s, the_setting_ignores_unknown_and_repeated_names);
	UNIT_ADD(s, groups_larger_than_fabnet_rails_are_cut);
	UNIT_ADD(s, fabnet_rails_1_keeps_every_device_alone);
#ifdef HAVE_HWLOC
	UNIT_ADD(s, p5_gives_8_devices_of_the_4_nics_beside_each_gpu);
	UNIT_ADD(s, p5_with_fabnet_rails_2_gives_16_devices);
	UNIT_ADD(s, p4d_keeps_one_nic_per_device);
	UNIT_ADD(s, the_setting_wins_over_the_topology);
#endif
}
