/*
 * fabnet-ft's core: the state the signal handlers read, the crash and
 * watchdog handler, failures, parts of scenarios (sub) and the verdict lines.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ft.h"

static struct shared_tally local_tally;
struct shared_tally *g_tally = &local_tally;
int g_forked; /* ranks are children of one fabnet-ft */
volatile int g_rank = -1;
const char *volatile g_scen = "setup";
const char *volatile g_step = "start";
int g_verbose;
unsigned g_watchdog_s = 130;

static void sig_write(const char *s)
{
	size_t n = strlen(s);

	while (n) {
		ssize_t w = write(1, s, n);
		if (w <= 0)
			return;
		s += w;
		n -= (size_t)w;
	}
}

const char *volatile g_phase;
#define NSIGS 6
static const int crash_sigs[NSIGS] = {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL, SIGALRM};
static struct sigaction prev_action[NSIGS]; /* chained to (libfabric installs its own) */

static void crash_handler(int sig, siginfo_t *info, void *uctx)
{
	char num[8];
	int i = 0;
	const char *name = sig == SIGSEGV ? "SIGSEGV" : sig == SIGBUS ? "SIGBUS" :
			   sig == SIGABRT ? "SIGABRT" : sig == SIGFPE ? "SIGFPE" :
			   sig == SIGILL ? "SIGILL" : sig == SIGALRM ? "watchdog" : NULL;

	if (!name) {
		int v = sig;
		char tmp[8];
		int k = 0;
		do {
			tmp[k++] = (char)('0' + v % 10);
			v /= 10;
		} while (v && k < 7);
		while (k)
			num[i++] = tmp[--k];
		num[i] = '\0';
		name = num;
	}
	/* Rank 0 reports for both when forked: rank 0 then sees rank 1 vanish and
	 * fails the scenario itself. */
	if (g_rank == 0 || !g_forked) {
		sig_write("FAIL ");
		sig_write(g_scen);
		sig_write(g_rank == 1 ? ": rank 1: " : ": rank 0: ");
	} else {
		sig_write("# rank 1: ");
	}
	if (g_phase) {
		sig_write("[");
		sig_write(g_phase);
		sig_write("] ");
	}
	if (sig == SIGALRM)
		sig_write("watchdog: a plugin call has not returned (hung) during ");
	else {
		sig_write("crashed with ");
		sig_write(name);
		sig_write(" during ");
	}
	sig_write(g_step);
	sig_write("\n");
	if (g_rank == 0 || !g_forked) {
		g_tally->failed++;
		g_tally->crashed = 1;
		g_tally->reported++;
	}
	/* let a previously installed handler (libfabric's backtrace) run too */
	for (int k = 0; k < NSIGS; k++) {
		const struct sigaction *pa = &prev_action[k];
		if (crash_sigs[k] != sig || sig == SIGALRM)
			continue;
		if (pa->sa_flags & SA_SIGINFO) {
			if (pa->sa_sigaction)
				pa->sa_sigaction(sig, info, uctx);
		} else if (pa->sa_handler != SIG_DFL && pa->sa_handler != SIG_IGN) {
			pa->sa_handler(sig);
		}
	}
	_exit(sig == SIGALRM ? 4 : 3);
}

/* chain: 1 to remember the handlers in place now (after the plugin loaded
 * libfabric) and call them after ours. */
void install_handlers(int chain)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = crash_handler;
	sa.sa_flags = SA_RESETHAND | SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	for (int k = 0; k < NSIGS; k++) {
		struct sigaction old;
		sigaction(crash_sigs[k], &sa, &old);
		if (chain && !((old.sa_flags & SA_SIGINFO) && old.sa_sigaction == crash_handler))
			prev_action[k] = old;
	}
	signal(SIGPIPE, SIG_IGN);
}

void wd_kick(void)
{
	alarm(g_watchdog_s);
}

void vnote(const char *fmt, ...)
{
	va_list ap;
	char buf[1024];

	if (!g_verbose)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fprintf(stderr, "# rank %d [%s] %s\n", g_rank, g_scen, buf);
}

int fail(struct ft *ft, const char *fmt, ...)
{
	va_list ap;

	if (ft->why[0])
		return -1; /* keep the first reason */
	if (ft->phase)
		snprintf(ft->why, sizeof(ft->why), "[%s] ", ft->phase);
	va_start(ap, fmt);
	vsnprintf(ft->why + strlen(ft->why), sizeof(ft->why) - strlen(ft->why), fmt, ap);
	va_end(ap);
	vnote("fail: %s", ft->why);
	return -1;
}

/* Runs one part of a scenario as its own unit: both ranks exchange verdicts
 * at its end, so a failed part is reported and the next part still runs.
 * Failures accumulate in ft->subfail. Returns 1 if both ranks passed. */
int sub(struct ft *ft, const char *name, int (*fn)(struct ft *, const void *),
	const void *arg)
{
	int ok;

	ft->subs++;
	begin_unit(ft);
	ft->phase = name;
	g_phase = name;
	vnote("part: %s", name);
	wd_kick();
	ok = fn(ft, arg) == 0 && !ft->why[0];
	if (!ok && !ft->why[0])
		fail(ft, "failed without a reason (harness bug)");
	ok = ft_finish(ft, ok);
	if (!ok) {
		size_t l = strlen(ft->subfail);
		const char *w0 = ft->why[0] ? ft->why : "";
		const char *w1 = ft->peer_ok ? "" : ft->peer_why;
		/* the same text on both ranks: rank 0's words first */
		const char *r0 = ft->rank == 0 ? w0 : w1, *r1 = ft->rank == 0 ? w1 : w0;
		int w;
		if (r0[0] && !strcmp(r0, r1))
			w = snprintf(ft->subfail + l, sizeof(ft->subfail) - l, "%sboth ranks: %.400s",
				     l ? " || " : "", r0);
		else
			w = snprintf(ft->subfail + l, sizeof(ft->subfail) - l,
				     "%s%s%.400s%s%s%.400s", l ? " || " : "",
				     r0[0] ? "rank 0: " : "", r0, r0[0] && r1[0] ? "; " : "",
				     r1[0] ? "rank 1: " : "", r1);
		(void)w;
	}
	ft->why[0] = '\0'; /* recorded in subfail */
	ft->phase = NULL;
	g_phase = NULL;
	return ok;
}

/* Rank 0 prints the verdict. subfail: the failed parts (same text on both
 * ranks); why0/why1: each rank's own reason outside the parts. */
void report(int rank, const char *name, int ok, const char *why0, const char *why1,
	    const char *subfail)
{
	int any = 0;

	if (rank != 0)
		return;
	if (strcmp(name, "setup"))
		g_tally->reported++;
	else
		g_tally->setup_failed = 1;
	if (ok) {
		printf("PASS %s\n", name);
		g_tally->passed++;
		fflush(stdout);
		return;
	}
	printf("FAIL %s:", name);
	if (subfail && *subfail) {
		printf(" %s", subfail);
		any = 1;
	}
	if (why0 && *why0 && !(subfail && !strcmp(why0, subfail))) {
		printf("%s rank 0: %s", any ? ";" : "", why0);
		any = 1;
	}
	if (why1 && *why1 && !(subfail && !strcmp(why1, subfail))) {
		printf("%s rank 1: %s", any ? ";" : "", why1);
		any = 1;
	}
	if (!any)
		printf(" (no reason given)");
	printf("\n");
	g_tally->failed++;
	fflush(stdout);
}
