/*
 * The accelerator / NIC topology (src/core/topo.h) on the synthetic machines
 * of tests/topology/ (see gen.py there): which NICs each accelerator gets,
 * how NICs group into NCCL devices, the fallbacks when no NIC shares a
 * switch, the extra-NIC API and the failures of loading. The XML files are
 * found under $FABNET_SRCDIR/tests/topology (make check sets it), else under
 * tests/topology relative to the working directory.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/topo.h"
#include "unit.h"

/* ---- what needs no hwloc ---------------------------------------------------- */

static void parse_busid_accepts_full_and_short_forms(void)
{
	static const struct {
		const char *s;
		uint32_t domain;
		unsigned bus, dev, func;
	} ok[] = {
		{"0000:10:1b.0", 0, 0x10, 0x1b, 0}, {"0001:a1:00.7", 1, 0xa1, 0, 7},
		{"10:1b.0", 0, 0x10, 0x1b, 0},      {"0000:A1:1F.3", 0, 0xa1, 0x1f, 3},
		{"1:2:3.4", 1, 2, 3, 4},            {"0001ffff:ff:1f.7", 0x1ffff, 0xff, 0x1f, 7},
	};
	struct unit_loop loop = UNIT_LOOP_INIT;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		uint32_t domain = 99;
		uint8_t bus = 0, dev = 0, func = 0;
		int rc = fabnet_topo_parse_busid(ok[i].s, &domain, &bus, &dev, &func);

		UNIT_LOOP_CHECK(&loop,
				rc == 0 && domain == ok[i].domain && bus == ok[i].bus &&
					dev == ok[i].dev && func == ok[i].func,
				"'%s': rc %d -> %x:%x:%x.%x", ok[i].s, rc, domain, bus, dev, func);
	}
	UNIT_LOOP_ASSERT_ALL_PASSED(&loop);
}

static void parse_busid_rejects_malformed_ids(void)
{
	static const char *bad[] = {
		"",          "zz",           "0000:10:1b",    "0000:10:1b.8",  "0000:10:20.0",
		"0000:100:00.0", "0000:10:1b.0x", "a:b:c:d.0", "0000:10.1b.0", "0000::1b.0",
		":10:1b.0",  "0000:10:1b.",  " 0000:10:1b.0", "0000:10:1b.0 ", "123456789:10:1b.0",
		"0000:-1:1b.0",
	};
	struct unit_loop loop = UNIT_LOOP_INIT;
	uint32_t domain;
	uint8_t bus, dev, func;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		UNIT_LOOP_CHECK(&loop, fabnet_topo_parse_busid(bad[i], &domain, &bus, &dev, &func) == -1,
				"'%s' was accepted", bad[i]);
	UNIT_LOOP_CHECK(&loop, fabnet_topo_parse_busid(NULL, &domain, &bus, &dev, &func) == -1,
			"NULL was accepted");
	UNIT_LOOP_ASSERT_ALL_PASSED(&loop);
}

static void an_empty_topology_answers_every_call(void)
{
	struct fabnet_topo t;
	const struct fabnet_topo_group *g = (const void *)&t;
	int rails[4];
	char *buf = NULL;
	size_t len = 0;
	FILE *f;

	fabnet_topo_init(&t);
	CU_ASSERT_EQUAL(fabnet_topo_naccels(&t), 0);
	CU_ASSERT_EQUAL(fabnet_topo_nnics(&t), 0);
	CU_ASSERT_EQUAL(fabnet_topo_rails_for(&t, 0, rails, 4), -1);
	CU_ASSERT_EQUAL(fabnet_topo_accel_level(&t, 0), FABNET_TOPO_NONE);
	CU_ASSERT_EQUAL(fabnet_topo_groups(&t, &g), 0);
	CU_ASSERT_PTR_NULL(g);
	CU_ASSERT_PTR_NULL(fabnet_topo_accel_pci(&t, 0));
	CU_ASSERT_PTR_NULL(fabnet_topo_nic_pci(&t, 0));
	CU_ASSERT_PTR_NULL(fabnet_topo_nic_name(&t, 0));
	CU_ASSERT_EQUAL(fabnet_topo_find_accel(&t, "0000:10:1b.0"), -1);
	CU_ASSERT_EQUAL(fabnet_topo_find_nic(&t, "0000:10:1b.0"), -1);
	CU_ASSERT_EQUAL(fabnet_topo_add_nic_busid(&t, "0000:10:1b.0", "x"), -1);
	CU_ASSERT_NOT_EQUAL(fabnet_topo_error(&t)[0], '\0');
	CU_ASSERT_EQUAL(fabnet_topo_set_nic_speed(&t, 0, 100000), -1);
	f = open_memstream(&buf, &len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	CU_ASSERT_EQUAL(fabnet_topo_write_nccl_xml(&t, f), 0);
	fclose(f);
	CU_ASSERT_STRING_EQUAL(buf, "<system version=\"1\">\n</system>\n");
	free(buf);
	fabnet_topo_fini(&t);
	fabnet_topo_fini(&t); /* fini of an empty topology is harmless */
}

static void level_names_are_distinct(void)
{
	CU_ASSERT_STRING_EQUAL(fabnet_topo_level_name(FABNET_TOPO_SWITCH), "switch");
	CU_ASSERT_STRING_EQUAL(fabnet_topo_level_name(FABNET_TOPO_HOSTBRIDGE), "host bridge");
	CU_ASSERT_STRING_EQUAL(fabnet_topo_level_name(FABNET_TOPO_NUMA), "numa");
	CU_ASSERT_STRING_EQUAL(fabnet_topo_level_name(FABNET_TOPO_PACKAGE), "package");
	CU_ASSERT_STRING_EQUAL(fabnet_topo_level_name(FABNET_TOPO_SYSTEM), "system");
	CU_ASSERT_STRING_EQUAL(fabnet_topo_level_name(FABNET_TOPO_NONE), "none");
	CU_ASSERT_STRING_EQUAL(fabnet_topo_level_name((enum fabnet_topo_level)42), "?");
}

#ifndef HAVE_HWLOC

static void load_fails_without_hwloc(void)
{
	struct fabnet_topo t;

	fabnet_topo_init(&t);
	CU_ASSERT_EQUAL(fabnet_topo_load(&t, NULL), -1);
	CU_ASSERT_STRING_EQUAL(fabnet_topo_error(&t), "built without hwloc");
	CU_ASSERT_EQUAL(fabnet_topo_naccels(&t), 0);
	fabnet_topo_fini(&t);
}

#else /* HAVE_HWLOC */

/* ---- helpers ---------------------------------------------------------------- */

static void topo_path(char *buf, size_t len, const char *name)
{
	const char *src = getenv("FABNET_SRCDIR");

	if (src && *src)
		snprintf(buf, len, "%s/tests/topology/%s", src, name);
	else
		snprintf(buf, len, "tests/topology/%s", name);
}

/* Loads tests/topology/<name>; returns 0, or -1 after recording a failure. */
static int load(struct fabnet_topo *t, const char *name)
{
	char path[4096];
	int rc;

	topo_path(path, sizeof(path), name);
	fabnet_topo_init(t);
	rc = fabnet_topo_load(t, path);
	UNIT_ASSERT_MSG(rc == 0, "cannot load %s: %s", path, fabnet_topo_error(t));
	return rc;
}

/* The bus ids of accelerator a's rails, space separated, in rail order. */
static const char *rails_str(const struct fabnet_topo *t, int a, char *buf, size_t len)
{
	int rails[64], n = fabnet_topo_rails_for(t, a, rails, 64);
	size_t off = 0;

	buf[0] = '\0';
	for (int i = 0; i < n && i < 64; i++)
		off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? " " : "",
					fabnet_topo_nic_pci(t, rails[i])->busid);
	return buf;
}

/* The first n accelerators: expected[a] = {its bus id, its rails' bus ids},
 * each found at level. */
static void check_rails(const struct fabnet_topo *t, const char *const expected[][2], int n,
			enum fabnet_topo_level level)
{
	struct unit_loop loop = UNIT_LOOP_INIT;
	char buf[1024];

	UNIT_ASSERT_MSG(fabnet_topo_naccels(t) >= n, "%d accelerators, expected at least %d",
			fabnet_topo_naccels(t), n);
	for (int a = 0; a < n && a < fabnet_topo_naccels(t); a++) {
		const char *busid = fabnet_topo_accel_pci(t, a)->busid;

		UNIT_LOOP_CHECK(&loop, strcmp(busid, expected[a][0]) == 0,
				"accelerator %d is %s, expected %s", a, busid, expected[a][0]);
		UNIT_LOOP_CHECK(&loop, strcmp(rails_str(t, a, buf, sizeof(buf)), expected[a][1]) == 0,
				"rails of %s: '%s', expected '%s'", busid, buf, expected[a][1]);
		UNIT_LOOP_CHECK(&loop, fabnet_topo_accel_level(t, a) == level,
				"level of %s: %s, expected %s", busid,
				fabnet_topo_level_name(fabnet_topo_accel_level(t, a)),
				fabnet_topo_level_name(level));
	}
	UNIT_LOOP_ASSERT_ALL_PASSED(&loop);
}

/* One group: its NIC indices and accelerator indices as "0 1 2" strings. */
static void check_group(const struct fabnet_topo_group *g, int index, const char *nics,
			const char *accels, enum fabnet_topo_level level)
{
	char n[512] = "", a[512] = "";
	size_t off = 0;

	for (int i = 0; i < g->nnics; i++)
		off += (size_t)snprintf(n + off, sizeof(n) - off, "%s%d", i ? " " : "", g->nics[i]);
	off = 0;
	for (int i = 0; i < g->naccels; i++)
		off += (size_t)snprintf(a + off, sizeof(a) - off, "%s%d", i ? " " : "", g->accels[i]);
	UNIT_ASSERT_MSG(strcmp(n, nics) == 0, "group %d NICs '%s', expected '%s'", index, n, nics);
	UNIT_ASSERT_MSG(strcmp(a, accels) == 0, "group %d accelerators '%s', expected '%s'", index,
			a, accels);
	UNIT_ASSERT_MSG(g->level == level, "group %d level %s, expected %s", index,
			fabnet_topo_level_name(g->level), fabnet_topo_level_name(level));
}

/*
 * What must hold on any topology: rails are valid ascending NIC indices;
 * groups partition the NICs; each accelerator with rails is served by
 * exactly the group named in it, which holds all its rails and whose level
 * is at least as far as the accelerator's; a group with no accelerator is a
 * single NIC at level NONE.
 */
static void check_invariants(const struct fabnet_topo *t, const char *what)
{
	struct unit_loop loop = UNIT_LOOP_INIT;
	const struct fabnet_topo_group *g;
	int ng = fabnet_topo_groups(t, &g), nn = fabnet_topo_nnics(t);
	int *seen = calloc((size_t)nn + 1, sizeof(int)), *group_of = calloc((size_t)nn + 1, sizeof(int));

	CU_ASSERT_PTR_NOT_NULL_FATAL(seen);
	CU_ASSERT_PTR_NOT_NULL_FATAL(group_of);
	for (int i = 0; i < ng; i++) {
		UNIT_LOOP_CHECK(&loop, g[i].nnics > 0, "%s: group %d is empty", what, i);
		UNIT_LOOP_CHECK(&loop, g[i].naccels > 0 || (g[i].nnics == 1 && g[i].level == FABNET_TOPO_NONE),
				"%s: group %d serves nothing but has %d NICs, level %s", what, i,
				g[i].nnics, fabnet_topo_level_name(g[i].level));
		for (int k = 0; k < g[i].nnics; k++) {
			int n = g[i].nics[k];

			UNIT_LOOP_CHECK(&loop, n >= 0 && n < nn && (k == 0 || n > g[i].nics[k - 1]),
					"%s: group %d NIC %d out of order or range", what, i, n);
			if (n >= 0 && n < nn) {
				seen[n]++;
				group_of[n] = i;
			}
		}
		for (int k = 0; k < g[i].naccels; k++) {
			int a = g[i].accels[k];

			UNIT_LOOP_CHECK(&loop, a >= 0 && a < fabnet_topo_naccels(t) &&
						       t->accels[a].group == i,
					"%s: group %d claims accelerator %d", what, i, a);
		}
	}
	for (int n = 0; n < nn; n++)
		UNIT_LOOP_CHECK(&loop, seen[n] == 1, "%s: NIC %d is in %d groups", what, n, seen[n]);
	for (int a = 0; a < fabnet_topo_naccels(t); a++) {
		int rails[256], nr = fabnet_topo_rails_for(t, a, rails, 256);
		enum fabnet_topo_level l = fabnet_topo_accel_level(t, a);

		UNIT_LOOP_CHECK(&loop, (nr == 0) == (l == FABNET_TOPO_NONE) && (nr > 0 || nn == 0),
				"%s: accelerator %d has %d rails at level %s", what, a, nr,
				fabnet_topo_level_name(l));
		for (int k = 0; k < nr && k < 256; k++) {
			int ok = rails[k] >= 0 && rails[k] < nn && (k == 0 || rails[k] > rails[k - 1]);

			UNIT_LOOP_CHECK(&loop, ok, "%s: accelerator %d rail %d is NIC %d", what, a, k,
					rails[k]);
			if (ok)
				UNIT_LOOP_CHECK(&loop, group_of[rails[k]] == t->accels[a].group &&
							       g[t->accels[a].group].level >= l,
						"%s: accelerator %d's NIC %d is in group %d, not %d",
						what, a, rails[k], group_of[rails[k]], t->accels[a].group);
		}
	}
	if (nn > 0 || ng > 0)
		UNIT_LOOP_ASSERT_ALL_PASSED(&loop);
	free(seen);
	free(group_of);
}

/* ---- p4d: 2 GPUs and 1 NIC per switch ------------------------------------------ */

static const char *const p4d_rails[][2] = {
	{"0000:11:01.0", "0000:11:00.0"}, {"0000:11:02.0", "0000:11:00.0"},
	{"0000:21:01.0", "0000:21:00.0"}, {"0000:21:02.0", "0000:21:00.0"},
	{"0000:91:01.0", "0000:91:00.0"}, {"0000:91:02.0", "0000:91:00.0"},
	{"0000:a1:01.0", "0000:a1:00.0"}, {"0000:a1:02.0", "0000:a1:00.0"},
};

static void p4d_finds_8_gpus_and_4_efa_nics_and_skips_the_decoys(void)
{
	static const char *const nics[] = {"0000:11:00.0", "0000:21:00.0", "0000:91:00.0",
					   "0000:a1:00.0"};
	static const char *const names[] = {"rdmap17s0", "rdmap33s0", "rdmap145s0", "rdmap161s0"};
	struct fabnet_topo t;

	if (load(&t, "p4d.xml") != 0)
		return;
	CU_ASSERT_EQUAL(fabnet_topo_naccels(&t), 8);
	CU_ASSERT_EQUAL(fabnet_topo_nnics(&t), 4);
	for (int a = 0; a < fabnet_topo_naccels(&t); a++) {
		const struct fabnet_topo_pci *p = fabnet_topo_accel_pci(&t, a);

		CU_ASSERT_EQUAL(p->vendor_id, 0x10de);
		CU_ASSERT_EQUAL(p->device_id, 0x20b0);
		CU_ASSERT_EQUAL(p->class_id, 0x0302);
		CU_ASSERT_EQUAL(p->numa, a < 4 ? 0 : 1);
		CU_ASSERT_EQUAL(p->package, a < 4 ? 0 : 1);
	}
	for (int n = 0; n < 4 && n < fabnet_topo_nnics(&t); n++) {
		CU_ASSERT_STRING_EQUAL(fabnet_topo_nic_pci(&t, n)->busid, nics[n]);
		CU_ASSERT_STRING_EQUAL(fabnet_topo_nic_name(&t, n), names[n]);
		CU_ASSERT_EQUAL(fabnet_topo_find_nic(&t, nics[n]), n);
		CU_ASSERT_EQUAL(t.nics[n].efa, 1);
	}
	/* A VGA BMC, an ENA NIC (Amazon, not EFA), NVMe drives, NVSwitches. */
	CU_ASSERT_EQUAL(fabnet_topo_find_accel(&t, "0000:00:00.0"), -1);
	CU_ASSERT_EQUAL(fabnet_topo_find_nic(&t, "0000:00:01.0"), -1);
	CU_ASSERT_EQUAL(fabnet_topo_find_accel(&t, "0000:11:03.0"), -1);
	CU_ASSERT_EQUAL(fabnet_topo_find_accel(&t, "0000:c0:00.0"), -1);
	CU_ASSERT_EQUAL(fabnet_topo_find_accel(&t, "0000:c0:01.0"), -1);
	CU_ASSERT_EQUAL(fabnet_topo_find_accel(&t, "a1:02.0"), 7);
	check_invariants(&t, "p4d");
	fabnet_topo_fini(&t);
}

static void p4d_gpu_pairs_share_the_nic_of_their_switch(void)
{
	struct fabnet_topo t;

	if (load(&t, "p4d.xml") != 0)
		return;
	check_rails(&t, p4d_rails, 8, FABNET_TOPO_SWITCH);
	for (int a = 0; a < fabnet_topo_naccels(&t); a++)
		CU_ASSERT_EQUAL(t.accels[a].switch_depth, 1);
	fabnet_topo_fini(&t);
}

static void p4d_makes_4_groups_of_one_nic_serving_two_gpus(void)
{
	const struct fabnet_topo_group *g;
	struct fabnet_topo t;

	if (load(&t, "p4d.xml") != 0)
		return;
	CU_ASSERT_EQUAL_FATAL(fabnet_topo_groups(&t, &g), 4);
	check_group(&g[0], 0, "0", "0 1", FABNET_TOPO_SWITCH);
	check_group(&g[1], 1, "1", "2 3", FABNET_TOPO_SWITCH);
	check_group(&g[2], 2, "2", "4 5", FABNET_TOPO_SWITCH);
	check_group(&g[3], 3, "3", "6 7", FABNET_TOPO_SWITCH);
	fabnet_topo_fini(&t);
}

/* ---- p5: 1 GPU and 4 NICs per sub-switch, 2 sub-switches per top switch -------- */

static void p5_gives_each_gpu_the_4_nics_of_its_own_switch(void)
{
	/* gen.py numbers the buses depth first: a GPU on bus b has its NICs on
	 * buses b+1 .. b+4. */
	static const unsigned gpu_bus[8] = {0x15, 0x1c, 0x35, 0x3c, 0x95, 0x9c, 0xb5, 0xbc};
	char gpus[8][16], rails[8][64];
	const char *expected[8][2];
	struct fabnet_topo t;

	for (int a = 0; a < 8; a++) {
		unsigned b = gpu_bus[a];

		snprintf(gpus[a], sizeof(gpus[a]), "0000:%02x:00.0", b);
		snprintf(rails[a], sizeof(rails[a]),
			 "0000:%02x:00.0 0000:%02x:00.0 0000:%02x:00.0 0000:%02x:00.0", b + 1, b + 2,
			 b + 3, b + 4);
		expected[a][0] = gpus[a];
		expected[a][1] = rails[a];
	}
	if (load(&t, "p5.xml") != 0)
		return;
	CU_ASSERT_EQUAL(fabnet_topo_naccels(&t), 8);
	CU_ASSERT_EQUAL(fabnet_topo_nnics(&t), 32);
	for (int a = 0; a < fabnet_topo_naccels(&t); a++)
		CU_ASSERT_EQUAL(fabnet_topo_accel_pci(&t, a)->device_id, 0x2330);
	for (int n = 0; n < fabnet_topo_nnics(&t); n++)
		CU_ASSERT_EQUAL(fabnet_topo_nic_pci(&t, n)->device_id, 0xefa1);
	/* The top switch holds 2 GPUs and 8 NICs; the deeper sub-switch wins. */
	check_rails(&t, expected, 8, FABNET_TOPO_SWITCH);
	for (int a = 0; a < fabnet_topo_naccels(&t); a++)
		CU_ASSERT_EQUAL(t.accels[a].switch_depth, 4);
	check_invariants(&t, "p5");
	fabnet_topo_fini(&t);
}

static void p5_makes_8_disjoint_groups_of_4_nics(void)
{
	const struct fabnet_topo_group *g;
	struct fabnet_topo t;

	if (load(&t, "p5.xml") != 0)
		return;
	CU_ASSERT_EQUAL_FATAL(fabnet_topo_groups(&t, &g), 8);
	for (int i = 0; i < 8; i++) {
		char nics[64], accel[16];

		snprintf(nics, sizeof(nics), "%d %d %d %d", 4 * i, 4 * i + 1, 4 * i + 2, 4 * i + 3);
		snprintf(accel, sizeof(accel), "%d", i);
		check_group(&g[i], i, nics, accel, FABNET_TOPO_SWITCH);
		CU_ASSERT_EQUAL(t.accels[i].group, i);
	}
	fabnet_topo_fini(&t);
}

static void rails_for_copies_at_most_max_and_returns_the_total(void)
{
	struct fabnet_topo t;
	int rails[4] = {-7, -7, -7, -7};

	if (load(&t, "p5.xml") != 0)
		return;
	CU_ASSERT_EQUAL(fabnet_topo_rails_for(&t, 1, rails, 2), 4);
	CU_ASSERT_EQUAL(rails[0], 4);
	CU_ASSERT_EQUAL(rails[1], 5);
	CU_ASSERT_EQUAL(rails[2], -7);
	CU_ASSERT_EQUAL(fabnet_topo_rails_for(&t, 1, NULL, 0), 4);
	CU_ASSERT_EQUAL(fabnet_topo_rails_for(&t, 1, NULL, 3), -1);
	CU_ASSERT_EQUAL(fabnet_topo_rails_for(&t, 1, rails, -1), -1);
	CU_ASSERT_EQUAL(fabnet_topo_rails_for(&t, -1, rails, 4), -1);
	CU_ASSERT_EQUAL(fabnet_topo_rails_for(&t, 8, rails, 4), -1);
	fabnet_topo_fini(&t);
}

/* ---- Gaudi: processing accelerators behind a nested switch ------------------------ */

static void gaudi_accelerators_share_the_nic_of_their_top_switch(void)
{
	static const char *const expected[][2] = {
		{"0000:14:00.0", "0000:16:00.0"}, {"0000:15:00.0", "0000:16:00.0"},
		{"0000:24:00.0", "0000:26:00.0"}, {"0000:25:00.0", "0000:26:00.0"},
		{"0000:94:00.0", "0000:96:00.0"}, {"0000:95:00.0", "0000:96:00.0"},
		{"0000:a4:00.0", "0000:a6:00.0"}, {"0000:a5:00.0", "0000:a6:00.0"},
	};
	const struct fabnet_topo_group *g;
	struct fabnet_topo t;

	if (load(&t, "gaudi.xml") != 0)
		return;
	CU_ASSERT_EQUAL(fabnet_topo_nnics(&t), 4);
	for (int a = 0; a < fabnet_topo_naccels(&t); a++) {
		CU_ASSERT_EQUAL(fabnet_topo_accel_pci(&t, a)->vendor_id, 0x1da3);
		CU_ASSERT_EQUAL(fabnet_topo_accel_pci(&t, a)->class_id, 0x1200);
	}
	for (int n = 0; n < fabnet_topo_nnics(&t); n++)
		CU_ASSERT_EQUAL(fabnet_topo_nic_pci(&t, n)->device_id, 0xefa2);
	check_rails(&t, expected, 8, FABNET_TOPO_SWITCH);
	CU_ASSERT_EQUAL_FATAL(fabnet_topo_groups(&t, &g), 4);
	for (int i = 0; i < 4; i++) {
		char nic[16], accels[16];

		snprintf(nic, sizeof(nic), "%d", i);
		snprintf(accels, sizeof(accels), "%d %d", 2 * i, 2 * i + 1);
		check_group(&g[i], i, nic, accels, FABNET_TOPO_SWITCH);
	}
	check_invariants(&t, "gaudi");
	fabnet_topo_fini(&t);
}

/* ---- fallbacks -------------------------------------------------------------------- */

static void split_gpus_fall_back_to_every_nic_and_say_so(void)
{
	static const char *const expected[][2] = {
		{"0000:11:00.0", "0000:91:00.0 0000:91:01.0"},
		{"0000:11:01.0", "0000:91:00.0 0000:91:01.0"},
		{"0000:21:00.0", "0000:91:00.0 0000:91:01.0"},
		{"0000:21:01.0", "0000:91:00.0 0000:91:01.0"},
	};
	const struct fabnet_topo_group *g;
	struct fabnet_topo t;

	if (load(&t, "split.xml") != 0)
		return;
	CU_ASSERT_EQUAL(fabnet_topo_nnics(&t), 2); /* the ConnectX is not EFA */
	check_rails(&t, expected, 4, FABNET_TOPO_SYSTEM);
	CU_ASSERT_EQUAL_FATAL(fabnet_topo_groups(&t, &g), 1);
	check_group(&g[0], 0, "0 1", "0 1 2 3", FABNET_TOPO_SYSTEM);
	check_invariants(&t, "split");
	fabnet_topo_fini(&t);
}

static void split_a_nic_added_under_a_gpu_switch_becomes_the_rail(void)
{
	static const char *const expected[][2] = {
		{"0000:11:00.0", "0000:11:02.0"},
		{"0000:11:01.0", "0000:11:02.0"},
		{"0000:21:00.0", "0000:11:02.0"},
		{"0000:21:01.0", "0000:11:02.0"},
	};
	const struct fabnet_topo_group *g;
	struct fabnet_topo t;

	if (load(&t, "split.xml") != 0)
		return;
	CU_ASSERT_EQUAL(fabnet_topo_add_nic_busid(&t, "0000:11:02.0", "mlx5_0-tcp"), 2);
	CU_ASSERT_EQUAL(fabnet_topo_nnics(&t), 3);
	CU_ASSERT_STRING_EQUAL(fabnet_topo_nic_name(&t, 2), "mlx5_0-tcp");
	CU_ASSERT_EQUAL(t.nics[2].efa, 0);
	/* GPUs 0 and 1 share its switch; GPUs 2 and 3 its NUMA node. */
	check_rails(&t, expected, 2, FABNET_TOPO_SWITCH);
	CU_ASSERT_EQUAL(fabnet_topo_accel_level(&t, 2), FABNET_TOPO_NUMA);
	CU_ASSERT_EQUAL(fabnet_topo_accel_level(&t, 3), FABNET_TOPO_NUMA);
	CU_ASSERT_EQUAL(fabnet_topo_rails_for(&t, 2, NULL, 0), 1);
	CU_ASSERT_EQUAL(fabnet_topo_rails_for(&t, 3, NULL, 0), 1);
	/* The EFA NICs now serve nobody: singletons after the served group. */
	CU_ASSERT_EQUAL_FATAL(fabnet_topo_groups(&t, &g), 3);
	check_group(&g[0], 0, "2", "0 1 2 3", FABNET_TOPO_NUMA);
	check_group(&g[1], 1, "0", "", FABNET_TOPO_NONE);
	check_group(&g[2], 2, "1", "", FABNET_TOPO_NONE);
	check_invariants(&t, "split + ConnectX");
	fabnet_topo_fini(&t);
}

static void fallback_walks_host_bridge_then_numa_then_package(void)
{
	const struct fabnet_topo_group *g;
	struct fabnet_topo t;
	char buf[256];

	if (load(&t, "fallback.xml") != 0)
		return;
	CU_ASSERT_EQUAL_FATAL(fabnet_topo_naccels(&t), 3);
	CU_ASSERT_EQUAL_FATAL(fabnet_topo_nnics(&t), 2);
	CU_ASSERT_EQUAL(fabnet_topo_accel_pci(&t, 0)->vendor_id, 0x1002);
	CU_ASSERT_EQUAL(fabnet_topo_accel_pci(&t, 0)->class_id, 0x0380);
	CU_ASSERT_EQUAL(fabnet_topo_accel_pci(&t, 2)->class_id, 0x0300);
	/* GPU 0: its NIC hangs off the same host bridge, not its switch. */
	CU_ASSERT_EQUAL(fabnet_topo_accel_level(&t, 0), FABNET_TOPO_HOSTBRIDGE);
	CU_ASSERT_STRING_EQUAL(rails_str(&t, 0, buf, sizeof(buf)), "0000:10:01.0");
	/* GPU 1: another host bridge of NUMA node 0. */
	CU_ASSERT_EQUAL(fabnet_topo_accel_level(&t, 1), FABNET_TOPO_NUMA);
	CU_ASSERT_STRING_EQUAL(rails_str(&t, 1, buf, sizeof(buf)), "0000:10:01.0");
	/* GPU 2: NUMA node 1; its NIC is on NUMA node 2 of the same package. */
	CU_ASSERT_EQUAL(fabnet_topo_accel_pci(&t, 2)->numa, 1);
	CU_ASSERT_EQUAL(fabnet_topo_nic_pci(&t, 1)->numa, 2);
	CU_ASSERT_EQUAL(fabnet_topo_accel_level(&t, 2), FABNET_TOPO_PACKAGE);
	CU_ASSERT_STRING_EQUAL(rails_str(&t, 2, buf, sizeof(buf)), "0000:a1:00.0");
	for (int a = 0; a < 3; a++)
		CU_ASSERT_EQUAL(t.accels[a].switch_depth, -1);
	CU_ASSERT_EQUAL_FATAL(fabnet_topo_groups(&t, &g), 2);
	check_group(&g[0], 0, "0", "0 1", FABNET_TOPO_NUMA);
	check_group(&g[1], 1, "1", "2", FABNET_TOPO_PACKAGE);
	check_invariants(&t, "fallback");
	fabnet_topo_fini(&t);
}

/* ---- the extra-NIC API ------------------------------------------------------------- */

static void an_added_nic_that_serves_no_gpu_becomes_a_singleton_group(void)
{
	const struct fabnet_topo_group *g;
	struct fabnet_topo t;

	if (load(&t, "p4d.xml") != 0)
		return;
	/* The ENA NIC, as libfabric's tcp provider would report it. */
	CU_ASSERT_EQUAL(fabnet_topo_add_nic_busid(&t, "0000:00:01.0", NULL), 4);
	CU_ASSERT_EQUAL(fabnet_topo_nnics(&t), 5);
	CU_ASSERT_STRING_EQUAL(fabnet_topo_nic_name(&t, 4), "ens5"); /* its OS device */
	CU_ASSERT_EQUAL(fabnet_topo_find_nic(&t, "00:01.0"), 4);
	check_rails(&t, p4d_rails, 8, FABNET_TOPO_SWITCH); /* unchanged */
	CU_ASSERT_EQUAL_FATAL(fabnet_topo_groups(&t, &g), 5);
	check_group(&g[0], 0, "0", "0 1", FABNET_TOPO_SWITCH);
	check_group(&g[3], 3, "3", "6 7", FABNET_TOPO_SWITCH);
	check_group(&g[4], 4, "4", "", FABNET_TOPO_NONE);
	/* A device without an OS device is named by its bus id. */
	CU_ASSERT_EQUAL(fabnet_topo_add_nic_pci(&t, 0, 0xc0, 0, 0, ""), 5);
	CU_ASSERT_STRING_EQUAL(fabnet_topo_nic_name(&t, 5), "0000:c0:00.0");
	CU_ASSERT_EQUAL(fabnet_topo_groups(&t, NULL), 6);
	check_invariants(&t, "p4d + ENA + NVSwitch");
	fabnet_topo_fini(&t);
}

static void adding_an_existing_nic_keeps_its_index_and_may_rename_it(void)
{
	struct fabnet_topo t;

	if (load(&t, "p4d.xml") != 0)
		return;
	CU_ASSERT_EQUAL(fabnet_topo_add_nic_busid(&t, "A1:00.0", NULL), 3);
	CU_ASSERT_STRING_EQUAL(fabnet_topo_nic_name(&t, 3), "rdmap161s0");
	CU_ASSERT_EQUAL(fabnet_topo_add_nic_pci(&t, 0, 0xa1, 0, 0, "rdmap161s0-rdm"), 3);
	CU_ASSERT_STRING_EQUAL(fabnet_topo_nic_name(&t, 3), "rdmap161s0-rdm");
	CU_ASSERT_EQUAL(t.nics[3].efa, 1);
	CU_ASSERT_EQUAL(fabnet_topo_nnics(&t), 4);
	CU_ASSERT_EQUAL(fabnet_topo_groups(&t, NULL), 4);
	fabnet_topo_fini(&t);
}

static void adding_what_is_not_a_nic_fails_and_changes_nothing(void)
{
	static const char *const bad[] = {
		"zz",           /* malformed */
		"0000:77:00.0", /* not in the topology */
		"0001:11:00.0", /* another domain */
		"0000:10:00.0", /* a switch */
		"0000:11:01.0", /* a GPU */
	};
	struct fabnet_topo t;

	if (load(&t, "p4d.xml") != 0)
		return;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		t.err[0] = '\0';
		UNIT_ASSERT_MSG(fabnet_topo_add_nic_busid(&t, bad[i], "x") == -1, "'%s' was added",
				bad[i]);
		UNIT_ASSERT_MSG(fabnet_topo_error(&t)[0] != '\0', "no error for '%s'", bad[i]);
	}
	CU_ASSERT_EQUAL(fabnet_topo_add_nic_busid(&t, NULL, "x"), -1);
	CU_ASSERT_EQUAL(fabnet_topo_nnics(&t), 4);
	CU_ASSERT_EQUAL(fabnet_topo_naccels(&t), 8);
	CU_ASSERT_EQUAL(fabnet_topo_groups(&t, NULL), 4);
	check_rails(&t, p4d_rails, 8, FABNET_TOPO_SWITCH);
	fabnet_topo_fini(&t);
}

/* ---- loading --------------------------------------------------------------------- */

static void load_fails_on_a_missing_file(void)
{
	struct fabnet_topo t;

	fabnet_topo_init(&t);
	CU_ASSERT_EQUAL(fabnet_topo_load(&t, "/nonexistent/fabnet/topo.xml"), -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(fabnet_topo_error(&t), "/nonexistent/fabnet/topo.xml"));
	CU_ASSERT_EQUAL(fabnet_topo_naccels(&t), 0);
	CU_ASSERT_EQUAL(fabnet_topo_nnics(&t), 0);
	fabnet_topo_fini(&t);
}

/* Writes len bytes of data to a new temporary file; returns its path in buf. */
static int temp_file(char *buf, size_t buflen, const void *data, size_t len)
{
	int fd;

	snprintf(buf, buflen, "%s/fabnet-topo-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	fd = mkstemp(buf);
	if (fd < 0)
		return -1;
	if (len && write(fd, data, len) != (ssize_t)len) {
		close(fd);
		unlink(buf);
		return -1;
	}
	close(fd);
	return 0;
}

static void load_fails_on_malformed_xml_and_leaves_the_topology_usable(void)
{
	static const char *const bad[] = {
		"",
		"garbage <<< not xml",
		"<?xml version=\"1.0\"?>\n<foo/>\n",
		("<?xml version=\"1.0\"?>\n<topology version=\"2.0\">"
		 "<object type=\"Machine\" cpuset=\"zz\"/></topology>\n"),
	};
	char good[4096], path[4096], *content = NULL;
	struct unit_loop loop = UNIT_LOOP_INIT;
	struct fabnet_topo t;
	long size = 0;
	FILE *f;

	/* A truncated copy of a good file, too. */
	topo_path(good, sizeof(good), "p4d.xml");
	f = fopen(good, "r");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0) {
		content = malloc((size_t)size);
		if (content && fread(content, 1, (size_t)size, f) != (size_t)size)
			size = 0;
	}
	fclose(f);
	CU_ASSERT_FATAL(content != NULL && size > 100);

	fabnet_topo_init(&t);
	for (size_t i = 0; i <= sizeof(bad) / sizeof(bad[0]); i++) {
		const char *data = i < sizeof(bad) / sizeof(bad[0]) ? bad[i] : content;
		size_t len = i < sizeof(bad) / sizeof(bad[0]) ? strlen(bad[i]) : (size_t)size / 2;
		int rc;

		if (temp_file(path, sizeof(path), data, len) != 0) {
			UNIT_LOOP_CHECK(&loop, 0, "cannot write a temporary file");
			continue;
		}
		rc = fabnet_topo_load(&t, path);
		unlink(path);
		UNIT_LOOP_CHECK(&loop, rc == -1, "case %zu loaded", i);
		UNIT_LOOP_CHECK(&loop, fabnet_topo_error(&t)[0] != '\0', "case %zu: no error", i);
		UNIT_LOOP_CHECK(&loop, fabnet_topo_naccels(&t) == 0 && fabnet_topo_nnics(&t) == 0 &&
					       fabnet_topo_groups(&t, NULL) == 0,
				"case %zu: the topology is not empty", i);
	}
	UNIT_LOOP_ASSERT_ALL_PASSED(&loop);
	free(content);
	/* The same struct loads a good file afterwards. */
	CU_ASSERT_EQUAL(fabnet_topo_load(&t, good), 0);
	CU_ASSERT_EQUAL(fabnet_topo_naccels(&t), 8);
	CU_ASSERT_STRING_EQUAL(fabnet_topo_error(&t), "");
	fabnet_topo_fini(&t);
}

static void a_second_load_replaces_the_first(void)
{
	char path[4096];
	struct fabnet_topo t;

	if (load(&t, "p5.xml") != 0)
		return;
	CU_ASSERT_EQUAL(fabnet_topo_add_nic_busid(&t, "0000:15:00.0", NULL), -1); /* a GPU */
	topo_path(path, sizeof(path), "p4d.xml");
	CU_ASSERT_EQUAL_FATAL(fabnet_topo_load(&t, path), 0);
	CU_ASSERT_EQUAL(fabnet_topo_naccels(&t), 8);
	CU_ASSERT_EQUAL(fabnet_topo_nnics(&t), 4);
	CU_ASSERT_EQUAL(fabnet_topo_groups(&t, NULL), 4);
	CU_ASSERT_STRING_EQUAL(fabnet_topo_error(&t), "");
	check_rails(&t, p4d_rails, 8, FABNET_TOPO_SWITCH);
	fabnet_topo_fini(&t);
}

/*
 * hwloc's libpciaccess plugin ("pci") leaves about 1 KB that LeakSanitizer
 * reports once hwloc unloads the plugin. Unless the caller chose components,
 * this test uses the PCI discovery of hwloc's Linux backend (same result from
 * sysfs), so that the suite stays clean under ASan.
 */
static void the_real_machine_loads(void)
{
	struct fabnet_topo t;
	int rc, set_env = getenv("HWLOC_COMPONENTS") == NULL;

	if (set_env)
		setenv("HWLOC_COMPONENTS", "-pci", 1);
	fabnet_topo_init(&t);
	rc = fabnet_topo_load(&t, NULL);
	if (set_env)
		unsetenv("HWLOC_COMPONENTS");
	UNIT_ASSERT_MSG(rc == 0, "cannot load this machine: %s", fabnet_topo_error(&t));
	if (rc == 0)
		check_invariants(&t, "this machine");
	fabnet_topo_fini(&t);
}

/* ---- NCCL's topology XML ------------------------------------------------------------ */

static int count(const char *s, const char *what)
{
	int n = 0;

	for (const char *p = s; (p = strstr(p, what)); p += strlen(what))
		n++;
	return n;
}

static void nccl_xml_nests_gpus_and_nics_under_their_switch_and_cpu(void)
{
	struct fabnet_topo t;
	char *buf = NULL;
	size_t len = 0;
	const char *sw, *gpu, *nic, *cpu1;
	FILE *f;

	if (load(&t, "p4d.xml") != 0)
		return;
	CU_ASSERT_EQUAL(fabnet_topo_set_nic_speed(&t, 0, 100000), 0);
	CU_ASSERT_EQUAL(fabnet_topo_set_nic_speed(&t, 4, 100000), -1);
	CU_ASSERT_EQUAL(fabnet_topo_add_nic_busid(&t, "0000:00:01.0", "ens5 \"<&>\""), 4);
	f = open_memstream(&buf, &len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	CU_ASSERT_EQUAL(fabnet_topo_write_nccl_xml(&t, f), 0);
	fclose(f);
	CU_ASSERT_PTR_NOT_NULL_FATAL(buf);

	CU_ASSERT_EQUAL(strncmp(buf, "<system version=\"1\">\n", 21), 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "</system>\n"));
	CU_ASSERT_EQUAL(count(buf, "<cpu "), 2);
	CU_ASSERT_EQUAL(count(buf, "</cpu>"), 2);
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "<cpu numaid=\"0\" affinity=\"0000000f\" arch=\"x86_64\" "
					   "vendor=\"GenuineIntel\" familyid=\"6\" modelid=\"85\">"));
	CU_ASSERT_EQUAL(count(buf, "class=\"0x030200\" vendor=\"0x10de\" device=\"0x20b0\""), 8);
	CU_ASSERT_EQUAL(count(buf, "<net "), 5);
	CU_ASSERT_EQUAL(count(buf, "<nic>"), 5);
	CU_ASSERT_EQUAL(count(buf, "class=\"0x060400\""), 4); /* the switches, no host bridge */
	CU_ASSERT_EQUAL(count(buf, "<pci "), 4 + 8 + 5);
	CU_ASSERT_EQUAL(count(buf, "<pci ") - count(buf, "\"/>\n") + count(buf, "<net "),
			count(buf, "</pci>"));
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "<net name=\"rdmap17s0\" dev=\"0\" speed=\"100000\"/>"));
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "<net name=\"rdmap161s0\" dev=\"3\"/>"));
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "<net name=\"ens5 &quot;&lt;&amp;&gt;&quot;\" dev=\"4\"/>"));
	/* GPU 11:01.0 and NIC 11:00.0 are inside switch 10:00.0, itself in cpu 0. */
	sw = strstr(buf, "<pci busid=\"0000:10:00.0\"");
	gpu = strstr(buf, "<pci busid=\"0000:11:01.0\"");
	nic = strstr(buf, "<pci busid=\"0000:11:00.0\"");
	cpu1 = strstr(buf, "<cpu numaid=\"1\"");
	CU_ASSERT_FATAL(sw && gpu && nic && cpu1);
	CU_ASSERT(sw < gpu && sw < nic && gpu < cpu1 && nic < cpu1);
	CU_ASSERT(strstr(sw, "\n    </pci>") > gpu); /* the switch's own closing tag */
	CU_ASSERT(strstr(buf, "<pci busid=\"0000:a1:02.0\"") > cpu1);
	free(buf);
	fabnet_topo_fini(&t);
}

static void invariants_hold_for_every_synthetic_topology(void)
{
	static const char *const names[] = {"p4d.xml", "p5.xml", "split.xml", "fallback.xml",
					    "gaudi.xml"};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		struct fabnet_topo t;

		if (load(&t, names[i]) != 0)
			continue;
		check_invariants(&t, names[i]);
		fabnet_topo_fini(&t);
	}
}

#endif /* HAVE_HWLOC */

void register_topo_tests(void)
{
	CU_pSuite s = CU_add_suite("topo", NULL, NULL);

	UNIT_ADD(s, parse_busid_accepts_full_and_short_forms);
	UNIT_ADD(s, parse_busid_rejects_malformed_ids);
	UNIT_ADD(s, an_empty_topology_answers_every_call);
	UNIT_ADD(s, level_names_are_distinct);
#ifndef HAVE_HWLOC
	UNIT_ADD(s, load_fails_without_hwloc);
#else
	UNIT_ADD(s, p4d_finds_8_gpus_and_4_efa_nics_and_skips_the_decoys);
	UNIT_ADD(s, p4d_gpu_pairs_share_the_nic_of_their_switch);
	UNIT_ADD(s, p4d_makes_4_groups_of_one_nic_serving_two_gpus);
	UNIT_ADD(s, p5_gives_each_gpu_the_4_nics_of_its_own_switch);
	UNIT_ADD(s, p5_makes_8_disjoint_groups_of_4_nics);
	UNIT_ADD(s, rails_for_copies_at_most_max_and_returns_the_total);
	UNIT_ADD(s, gaudi_accelerators_share_the_nic_of_their_top_switch);
	UNIT_ADD(s, split_gpus_fall_back_to_every_nic_and_say_so);
	UNIT_ADD(s, split_a_nic_added_under_a_gpu_switch_becomes_the_rail);
	UNIT_ADD(s, fallback_walks_host_bridge_then_numa_then_package);
	UNIT_ADD(s, an_added_nic_that_serves_no_gpu_becomes_a_singleton_group);
	UNIT_ADD(s, adding_an_existing_nic_keeps_its_index_and_may_rename_it);
	UNIT_ADD(s, adding_what_is_not_a_nic_fails_and_changes_nothing);
	UNIT_ADD(s, load_fails_on_a_missing_file);
	UNIT_ADD(s, load_fails_on_malformed_xml_and_leaves_the_topology_usable);
	UNIT_ADD(s, a_second_load_replaces_the_first);
	UNIT_ADD(s, the_real_machine_loads);
	UNIT_ADD(s, nccl_xml_nests_gpus_and_nics_under_their_switch_and_cpu);
	UNIT_ADD(s, invariants_hold_for_every_synthetic_topology);
#endif
}
