/*
 * Running the ranks: one rank through the selected scenarios (setup agreed
 * with the peer, a verdict exchanged after each), or both ranks forked from one
 * fabnet-ft with a shared tally, so that crashes and early exits are counted.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ft.h"

/* Marks the scenarios named in spec ("all" or a comma-separated list). */
int select_scenarios(const char *spec, int *sel)
{
	char buf[512], *save = NULL;

	memset(sel, 0, sizeof(int) * ft_nscenarios);
	if (!strcmp(spec, "all")) {
		for (int i = 0; i < ft_nscenarios; i++)
			sel[i] = ft_scenarios[i].in_all;
		return 0;
	}
	snprintf(buf, sizeof(buf), "%s", spec);
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		int found = 0;
		for (int i = 0; i < ft_nscenarios; i++)
			if (!strcmp(t, ft_scenarios[i].name)) {
				sel[i] = found = 1;
			}
		if (!found) {
			fprintf(stderr, "fabnet-ft: unknown scenario \"%s\"; known:", t);
			for (int i = 0; i < ft_nscenarios; i++)
				fprintf(stderr, " %s", ft_scenarios[i].name);
			fprintf(stderr, " all (all but soak)\n");
			return -1;
		}
	}
	return 0;
}

/* The rank's context from the options; FABNET_FT_TIMEOUT sets the bounds. */
static void rank_context(struct ft *ft, const struct opts *o)
{
	const char *t = getenv("FABNET_FT_TIMEOUT");
	long s = t ? strtol(t, NULL, 10) : 0;

	memset(ft, 0, sizeof(*ft));
	g_rank = o->rank;
	ft->rank = o->rank;
	ft->dev = o->dev;
	ft->plugin = o->plugin;
	ft->abi = o->abi;
	ft->seed = o->seed;
	ft->net = &ft->base;
	ft->op_timeout_ms = (int)((s > 0 && s < 100000 ? s : 60) * 1000);
	g_watchdog_s = (unsigned)(2 * ft->op_timeout_ms / 1000 + 10);
}

/* Opens the control channel and compares the options with the peer's.
 * Returns 0, or the rank's exit status. */
static int rank_connect(struct ft *ft, const struct opts *o, const int *sel)
{
	uint32_t mine[3], theirs[3];

	g_step = "control channel";
	if (ctl_open(&ft->ctl, o->ctl_path, o->rank, 120000)) {
		fprintf(stderr, "fabnet-ft rank %d: control channel: %s\n", o->rank, ft->ctl.err);
		if (o->rank == 0) {
			printf("FAIL setup: rank 0: control channel: %s\n", ft->ctl.err);
			g_tally->failed++;
			if (!g_forked)
				printf("%d passed, %d failed\n", g_tally->passed, g_tally->failed);
		}
		return 1;
	}
	/* same scenarios and seed on both ranks? */
	mine[0] = 0;
	for (int i = 0; i < ft_nscenarios; i++)
		mine[0] |= (uint32_t)sel[i] << i;
	mine[1] = (uint32_t)o->seed;
	mine[2] = (uint32_t)o->dev;
	if (ctl_send(&ft->ctl, mine, sizeof(mine)) || ctl_recv(&ft->ctl, theirs, sizeof(theirs))) {
		fprintf(stderr, "fabnet-ft rank %d: control channel: %s\n", o->rank, ft->ctl.err);
		return 1;
	}
	if (memcmp(mine, theirs, sizeof(mine)))
		fprintf(stderr, "fabnet-ft rank %d: warning: the ranks were started with different "
			"--scenario/--seed/--dev options\n", o->rank);
	return 0;
}

/* FABNET_FT_RANK1_ENV="NAME=VALUE ...": settings only the sending rank gets,
 * before it loads the plugin, so the two sides can disagree (as two nodes
 * configured differently, or two kinds of endpoint, do). */
static void rank1_env(const struct opts *o)
{
	const char *spec = getenv("FABNET_FT_RANK1_ENV");
	char buf[512], *save = NULL;

	if (o->rank != 1 || !spec || strlen(spec) >= sizeof(buf))
		return;
	strcpy(buf, spec);
	for (char *kv = strtok_r(buf, " ", &save); kv; kv = strtok_r(NULL, " ", &save)) {
		char *eq = strchr(kv, '=');
		if (!eq)
			continue;
		*eq = '\0';
		setenv(kv, eq + 1, 1);
		vnote("rank 1: %s=%s", kv, eq + 1);
	}
}

/* Loads and initialises the plugin; why (REASON_MAX bytes) says what failed. */
static void rank_load_plugin(struct ft *ft, const struct opts *o, char *why, int *ndev)
{
	ncclResult_t r;

	rank1_env(o);
	g_scen = "setup";
	wd_kick();
	g_step = "dlopen";
	if (pl_open(&ft->base, o->plugin, o->abi)) {
		snprintf(why, REASON_MAX, "%s", ft->base.err);
		return;
	}
	g_step = "init";
	r = pl_init(&ft->base);
	install_handlers(1); /* ours first, then libfabric's backtrace */
	if (r != ncclSuccess)
		snprintf(why, REASON_MAX, "init (%s) returned %d (%s)", ft->base.symbol, (int)r,
			 pl_result_str(r));
	else if ((r = pl_devices(&ft->base, ndev)) != ncclSuccess)
		snprintf(why, REASON_MAX, "devices returned %d (%s)", (int)r, pl_result_str(r));
	else if (*ndev <= o->dev)
		snprintf(why, REASON_MAX, "device %d requested, the plugin reports %d", o->dev,
			 *ndev);
	else if ((r = pl_get_properties(&ft->base, o->dev, &ft->props)) != ncclSuccess)
		snprintf(why, REASON_MAX, "getProperties(%d) returned %d (%s)", o->dev, (int)r,
			 pl_result_str(r));
	else if (!(ft->props.ptrSupport & NCCL_PTR_HOST))
		snprintf(why, REASON_MAX, "device %d does not support host memory (ptrSupport "
			 "0x%x)", o->dev, (unsigned)ft->props.ptrSupport);
}

/* Both ranks say whether their setup worked. Returns 0 if both did, or the
 * rank's exit status (rank 0 has reported "FAIL setup"). */
static int rank_agree_setup(struct ft *ft, const struct opts *o, const char *init_why)
{
	int32_t ok = !init_why[0], pok = 0;
	char pwhy[REASON_MAX] = "";
	uint32_t len = (uint32_t)strlen(init_why) + 1;

	if (ctl_send(&ft->ctl, &ok, 4) || ctl_send(&ft->ctl, &len, 4) ||
	    ctl_send(&ft->ctl, init_why, len) || ctl_recv(&ft->ctl, &pok, 4) ||
	    ctl_recv(&ft->ctl, &len, 4) || len > sizeof(pwhy) || ctl_recv(&ft->ctl, pwhy, len)) {
		fprintf(stderr, "fabnet-ft rank %d: control channel: %s\n", o->rank, ft->ctl.err);
		return 1;
	}
	if (!ok || !pok) {
		report(o->rank, "setup", 0, init_why, pwhy, NULL);
		if (o->rank == 0 && !g_forked)
			printf("%d passed, %d failed\n", g_tally->passed, g_tally->failed);
		return 1;
	}
	return 0;
}

/* Runs scenario i on this rank and reports it. Returns 1 if both ranks passed. */
static int rank_run_scenario(struct ft *ft, const struct opts *o, int i)
{
	const struct scenario *sc = &ft_scenarios[i];
	int ok;
	int64_t t0;

	ft->scen_name = sc->name;
	g_scen = sc->name;
	g_step = "start";
	g_phase = NULL;
	ft->phase = NULL;
	ft->subs = 0;
	ft->subfail[0] = '\0';
	begin_unit(ft);
	if (ft->peer_gone) {
		report(o->rank, sc->name, 0, "not run: the peer rank is gone", "", NULL);
		return 0;
	}
	vnote("begin");
	t0 = now_ms();
	wd_kick();
	ok = sc->fn(ft) == 0 && !ft->why[0];
	if (ft->subs) {
		/* the parts exchanged verdicts; one more exchange ends the scenario */
		char keep[REASON_MAX];
		snprintf(keep, sizeof(keep), "%s", ft->why);
		begin_unit(ft);
		snprintf(ft->why, sizeof(ft->why), "%s", keep);
		if (ft->subfail[0])
			ok = 0;
	}
	if (!ok && !ft->why[0] && !ft->subfail[0])
		fail(ft, "failed without a reason (harness bug)");
	ok = ft_finish(ft, ok);
	vnote("end: %s in %.2f s", ok ? "ok" : "failed", (double)(now_ms() - t0) / 1000.0);
	report(o->rank, sc->name, ok, ft->why,
	       ft->peer_ok || (ft->subfail[0] && ft->peer_gone) ? "" : ft->peer_why, ft->subfail);
	return ok;
}

/* Runs one rank. Returns its exit status. */
int run_rank(const struct opts *o)
{
	struct ft ft;
	int sel[FT_MAX_SCENARIOS], failed = 0, rc;
	char init_why[REASON_MAX] = "";
	int ndev = 0;

	rank_context(&ft, o);
	install_handlers(0);
	if (select_scenarios(o->scenario, sel))
		return 2;
	if ((rc = rank_connect(&ft, o, sel)) != 0)
		return rc;
	rank_load_plugin(&ft, o, init_why, &ndev);
	alarm(0);
	if ((rc = rank_agree_setup(&ft, o, init_why)) != 0)
		return rc;
	if (o->rank == 0) {
		printf("# plugin %s: %s \"%s\", %d device(s); dev %d: %s, pci %s, %d Mbps, "
		       "latency %.1f us, maxComms %d, maxRecvs %d, regIsGlobal %d, "
		       "maxP2pBytes %zu\n",
		       o->plugin, ft.base.symbol, ft.base.name, ndev, o->dev, ft.props.name,
		       ft.props.pciPath[0] ? ft.props.pciPath : "-", ft.props.speed,
		       (double)ft.props.latency, ft.props.maxComms, ft.props.maxRecvs,
		       ft.props.regIsGlobal, ft.props.maxP2pBytes);
		fflush(stdout);
	}
	for (int i = 0; i < ft_nscenarios; i++)
		if (sel[i] && !rank_run_scenario(&ft, o, i))
			failed = 1;
	g_scen = "teardown";
	g_step = "finalize";
	wd_kick();
	pl_finalize(&ft.base);
	alarm(0);
	if (o->rank == 0 && !g_forked) {
		printf("%d passed, %d failed\n", g_tally->passed, g_tally->failed);
		fflush(stdout);
	}
	ctl_close(&ft.ctl);
	/* The plugin stays loaded: NCCL never unloads it either. */
	return failed ? 1 : 0;
}

static pid_t g_children[2] = {-1, -1};

static char g_tmp_dir[64], g_tmp_sock[128];

static void forward_signal(int sig)
{
	for (int i = 0; i < 2; i++)
		if (g_children[i] > 0)
			kill(g_children[i], SIGKILL);
	unlink(g_tmp_sock);
	rmdir(g_tmp_dir);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Waits for both ranks; a rank still running 120 s after the other exited is
 * killed. */
static void wait_ranks(int status[2])
{
	int done[2] = {0, 0};
	int64_t grace_deadline = 0;

	while (!done[0] || !done[1]) {
		int st;
		pid_t pid = waitpid(-1, &st, grace_deadline ? WNOHANG : 0);
		if (pid < 0 && errno == EINTR)
			continue;
		if (pid < 0)
			break;
		if (pid == 0) {
			if (now_ms() > grace_deadline) {
				for (int r = 0; r < 2; r++)
					if (!done[r]) {
						fprintf(stderr, "fabnet-ft: rank %d still running %d s after "
							"rank %d exited: killing it\n", r, 120, 1 - r);
						kill(g_children[r], SIGKILL);
					}
				grace_deadline = INT64_MAX; /* wait for the kill */
			}
			usleep(50000);
			continue;
		}
		for (int r = 0; r < 2; r++)
			if (pid == g_children[r]) {
				done[r] = 1;
				status[r] = st;
				g_children[r] = -1;
			}
		if (!grace_deadline)
			grace_deadline = now_ms() + 120000;
	}
}

/* The final tally: a rank that died, scenarios that never got a verdict, and
 * "N passed, M failed". Returns the exit status. */
static int forked_summary(const struct opts *o, const int status[2])
{
	int rc = 0;

	for (int r = 0; r < 2; r++) {
		if (WIFEXITED(status[r]) && WEXITSTATUS(status[r]) == 0)
			continue;
		rc = 1;
		if (WIFSIGNALED(status[r]))
			fprintf(stderr, "fabnet-ft: rank %d was killed by signal %d\n", r,
				WTERMSIG(status[r]));
		else if (WIFEXITED(status[r]) && WEXITSTATUS(status[r]) > 1)
			fprintf(stderr, "fabnet-ft: rank %d exited with status %d\n", r,
				WEXITSTATUS(status[r]));
	}
	if (rc && g_tally->failed == 0) {
		/* a rank died without a scenario to blame */
		printf("FAIL ranks: a rank exited abnormally (see stderr)\n");
		g_tally->failed++;
	}
	if (!g_tally->setup_failed) {
		/* scenarios that never got a verdict: rank 0 died before them */
		int sel[FT_MAX_SCENARIOS], k = 0;
		select_scenarios(o->scenario, sel);
		for (int i = 0; i < ft_nscenarios; i++) {
			if (!sel[i])
				continue;
			if (k++ < g_tally->reported)
				continue;
			printf("FAIL %s: not run (rank 0 exited early)\n", ft_scenarios[i].name);
			g_tally->failed++;
		}
	}
	printf("%d passed, %d failed\n", g_tally->passed, g_tally->failed);
	fflush(stdout);
	return rc || g_tally->failed ? 1 : 0;
}

/* Forks both ranks and waits for them. */
int run_forked(struct opts *o)
{
	char dir[] = "/tmp/fabnet-ft.XXXXXX";
	char path[128];
	int status[2] = {0, 0};

	g_tally = mmap(NULL, sizeof(*g_tally), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		       -1, 0);
	if (g_tally == MAP_FAILED) {
		perror("mmap");
		return 2;
	}
	memset((void *)g_tally, 0, sizeof(*g_tally));
	g_forked = 1;
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 2;
	}
	snprintf(path, sizeof(path), "%s/ctl.sock", dir);
	o->ctl_path = path;
	snprintf(g_tmp_dir, sizeof(g_tmp_dir), "%s", dir);
	snprintf(g_tmp_sock, sizeof(g_tmp_sock), "%s", path);
	fflush(stdout);
	fflush(stderr);
	signal(SIGTERM, forward_signal);
	signal(SIGINT, forward_signal);
	for (int r = 0; r < 2; r++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			if (r == 1)
				kill(g_children[0], SIGKILL);
			rmdir(dir);
			return 2;
		}
		if (pid == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			signal(SIGTERM, SIG_DFL);
			signal(SIGINT, SIG_DFL);
			o->rank = r;
			fflush(stdout);
			_exit(run_rank(o));
		}
		g_children[r] = pid;
	}
	wait_ranks(status);
	unlink(path);
	rmdir(dir);
	return forked_summary(o, status);
}

/* The version of the libfabric the plugin runs on: the library is already
 * loaded as the plugin's dependency, so RTLD_NOLOAD finds that very copy.
 * Returns FI_VERSION(major, minor), or 0 when it cannot be found. */
uint32_t ft_libfabric_version(void)
{
	void *h = dlopen("libfabric.so.1", RTLD_LAZY | RTLD_NOLOAD);
	uint32_t (*fv)(void);
	uint32_t v = 0;

	if (!h)
		return 0;
	*(void **)&fv = dlsym(h, "fi_version");
	if (fv)
		v = fv();
	dlclose(h);
	return v;
}
