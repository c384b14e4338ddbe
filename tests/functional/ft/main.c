/*
 * fabnet-ft: functional tests of an NCCL net plugin, driven through the ABI
 * exactly as NCCL's proxy drives it (tools/plugin_loader.h).
 *
 *   fabnet-ft --plugin PATH [--abi N] [--dev D] [--scenario NAME[,NAME..]|all]
 *       forks rank 0 (listener, receives) and rank 1 (connects, sends)
 *   fabnet-ft --plugin PATH --rank R --ctl SOCKPATH [...]
 *       runs one rank; the other is started separately with the same options
 *       (netns.sh puts the two ranks in two network namespaces this way)
 *
 * The ranks talk over a unix socket (tools/ctl.h): listen handles, barriers
 * and, after every scenario, each rank's verdict. Rank 0 prints one line per
 * scenario, "PASS name" or "FAIL name: reason", and "N passed, M failed" at the
 * end; the exit status is non-zero when anything failed.
 *
 * Every received byte is checked against a pattern derived from (seed, size,
 * iteration), and the bytes of each receive buffer past the sent size must
 * still hold the canary written before the receive was posted.
 *
 * Scenarios: --list names them; "all" is every one but soak (a long run of
 * random traffic with flat memory, run by run-suite.sh once, on tcp). flush
 * and peer-death also run parts in fresh processes (fabnet-ft --helper ROLE,
 * started by rank 0) because the settings they need are read at init.
 *
 * Environment: FABNET_FT_TIMEOUT  seconds without progress before an
 *                                 operation fails (default 60)
 *              FABNET_FT_VERBOSE=1 progress notes on stderr
 *              FABNET_ABI_VERSION  as --abi
 *              FABNET_FT_SOAK_SCALE  multiplies the soak's 100,000 messages
 *                                 and 2 GiB (default 1)
 *              FABNET_FT_PD_WAIT_S  peer-death: seconds to keep waiting
 *                                 past the bound before calling it a hang
 *
 * This file holds the table of scenarios and the options; the harness is in
 * ft.h (ft_*.c), each scenario in its scen_*.c.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ft.h"

const struct scenario ft_scenarios[] = {
	{"sizes", scen_sizes, 1},
	{"larger-recv", scen_larger_recv, 1},
	{"outstanding", scen_outstanding, 1},
	{"grouped", scen_grouped, 1},
	{"many-comms", scen_many_comms, 1},
	{"reuse", scen_reuse, 1},
	{"close", scen_close, 1},
	{"garbage-handle", scen_garbage_handle, 1},
	{"abi", scen_abi, 1},
	{"dmabuf", scen_dmabuf, 1},
	{"flush", scen_flush, 1},
	{"peer-death", scen_peer_death, 1},
	{"threads", scen_threads, 1},
	{"nccl-patterns", scen_nccl, 1},
	{"nccl-proxy", scen_proxy, 1},
	{"soak", scen_soak, 0},
};
const int ft_nscenarios = (int)(sizeof(ft_scenarios) / sizeof(ft_scenarios[0]));
_Static_assert(sizeof(ft_scenarios) / sizeof(ft_scenarios[0]) <= FT_MAX_SCENARIOS,
	       "the ranks compare their selection of scenarios as a 32-bit mask");

/* What `fabnet-ft --helper ROLE` runs (ft_helper.c starts them). */
static const struct helper_role helper_roles[] = {
	{"flush", helper_flush, 1},
	{"survivor", helper_survivor, 1},
	{"victim", helper_victim, 0}, /* killed, or its exit status says */
	{"proxy-flush", helper_proxy_flush, 1},
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: fabnet-ft --plugin PATH [--abi N] [--dev D] [--scenario NAME[,NAME..]|all]\n"
		"                 [--seed S] [--verbose] [--rank R --ctl SOCKPATH] [--list]\n"
		"  Forks rank 0 (listener/receiver) and rank 1 (sender) unless --rank is given;\n"
		"  with --rank, run the other rank separately with the same options.\n"
		"  --abi N      use ncclNetPlugin_vN (6..12); default FABNET_ABI_VERSION or newest\n"
		"  --scenario all runs every scenario but soak (name it to run it)\n"
		"  env FABNET_FT_TIMEOUT=S  seconds without progress before failing (60)\n");
}

/* Reads the command line into o. Returns -1 to go on, or the exit status
 * (--list, --help, a bad option). */
static int parse_opts(int argc, char **argv, struct opts *o)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV()                                                                 \
	do {                                                                    \
		if (!v) {                                                       \
			fprintf(stderr, "fabnet-ft: %s needs a value\n", a);    \
			return 2;                                               \
		}                                                               \
		i++;                                                            \
	} while (0)
		if (!strcmp(a, "--plugin")) {
			NEEDV();
			o->plugin = v;
		} else if (!strcmp(a, "--abi")) {
			NEEDV();
			o->abi = atoi(v);
			if (o->abi < PL_MIN_VERSION || o->abi > PL_MAX_VERSION) {
				fprintf(stderr, "fabnet-ft: --abi must be %d..%d\n", PL_MIN_VERSION,
					PL_MAX_VERSION);
				return 2;
			}
		} else if (!strcmp(a, "--dev")) {
			NEEDV();
			o->dev = atoi(v);
		} else if (!strcmp(a, "--scenario")) {
			NEEDV();
			o->scenario = v;
		} else if (!strcmp(a, "--rank")) {
			NEEDV();
			o->rank = atoi(v);
		} else if (!strcmp(a, "--ctl")) {
			NEEDV();
			o->ctl_path = v;
		} else if (!strcmp(a, "--seed")) {
			NEEDV();
			o->seed = strtoull(v, NULL, 0);
		} else if (!strcmp(a, "--helper")) {
			NEEDV();
			o->helper = v;
		} else if (!strcmp(a, "--part")) {
			NEEDV();
			o->part = v;
		} else if (!strcmp(a, "--helper-fd")) {
			NEEDV();
			o->helper_fd = atoi(v);
		} else if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) {
			g_verbose = 1;
		} else if (!strcmp(a, "--list")) {
			for (int k = 0; k < ft_nscenarios; k++)
				printf("%s%s\n", ft_scenarios[k].name,
				       ft_scenarios[k].in_all ? "" : " (not in all)");
			return 0;
		} else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "fabnet-ft: unknown option %s\n", a);
			usage(stderr);
			return 2;
		}
#undef NEEDV
	}
	return -1;
}

int main(int argc, char **argv)
{
	struct opts o = {.plugin = NULL, .abi = 0, .dev = 0, .scenario = "all", .rank = -1,
			 .ctl_path = NULL, .seed = 0xfab17e57ull, .helper = NULL, .part = "",
			 .helper_fd = -1};
	int sel[FT_MAX_SCENARIOS], rc;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if ((rc = parse_opts(argc, argv, &o)) >= 0)
		return rc;
	if (getenv("FABNET_FT_VERBOSE") && atoi(getenv("FABNET_FT_VERBOSE")) > 0)
		g_verbose = 1;
	if (!o.plugin) {
		usage(stderr);
		return 2;
	}
	if (o.helper) {
		if (o.helper_fd < 0) {
			fprintf(stderr, "fabnet-ft: --helper needs --helper-fd\n");
			return 2;
		}
		return helper_main(&o, helper_roles,
				   (int)(sizeof(helper_roles) / sizeof(helper_roles[0])));
	}
	if (select_scenarios(o.scenario, sel))
		return 2;
	if (o.rank >= 0) {
		if (o.rank > 1 || !o.ctl_path) {
			fprintf(stderr, "fabnet-ft: --rank takes 0 or 1 and needs --ctl SOCKPATH\n");
			return 2;
		}
		return run_rank(&o);
	}
	return run_forked(&o);
}
