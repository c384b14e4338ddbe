/*
 * Helper processes. Some parts need a plugin initialised with other settings
 * (FABNET_GDR_FLUSH, FABNET_PEER_TIMEOUT_MS are read once, at init) or a peer
 * that can be killed. They run in fresh processes: fabnet-ft executes itself
 * with --helper ROLE, fd 3 one end of a socketpair to its parent, and reports
 * over it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../../tools/proc.h"
#include "ft.h"

struct hmsg_hdr {
	uint32_t kind;
	uint32_t len;
};

int hput(struct ctl *c, uint32_t kind, const void *p, uint32_t len)
{
	struct hmsg_hdr h = {kind, len};

	if (ctl_send(c, &h, sizeof(h)) || (len && ctl_send(c, p, len)))
		return -1;
	return 0;
}

int hnote(struct ctl *c, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return hput(c, HM_NOTE, buf, (uint32_t)strlen(buf) + 1);
}

/* Receives one message of at most cap bytes (a NUL is added after it). */
int hget(struct ctl *c, uint32_t *kind, void *p, uint32_t cap, uint32_t *len,
	 int timeout_ms)
{
	struct hmsg_hdr h;

	if (ctl_recv_timeout(c, &h, sizeof(h), timeout_ms))
		return -1;
	if (h.len >= cap) {
		snprintf(c->err, sizeof(c->err), "helper message of %u bytes, at most %u expected",
			 h.len, cap - 1);
		return -1;
	}
	if (h.len && ctl_recv_timeout(c, p, h.len, timeout_ms))
		return -1;
	((char *)p)[h.len] = '\0';
	*kind = h.kind;
	if (len)
		*len = h.len;
	return 0;
}

/* Waits for the token `want` from a helper, calling poll(arg) meanwhile
 * (poll returns non-zero to stop). Returns 0 when the token arrived. */
int hwait_token(struct ft *ft, struct ctl *c, const char *want, int timeout_ms,
		int (*poll)(struct ft *, void *), void *arg)
{
	int64_t deadline = now_ms() + timeout_ms;
	char buf[256];

	for (;;) {
		uint32_t kind;
		int r = ctl_readable(c);
		if (r < 0)
			return fail(ft, "waiting for \"%s\": the other process is gone (%s)", want,
				    c->err);
		if (r > 0) {
			if (hget(c, &kind, buf, sizeof(buf), NULL, 5000))
				return fail(ft, "waiting for \"%s\": %s", want, c->err);
			if (kind == HM_TOKEN && !strcmp(buf, want))
				return 0;
			if (kind == HM_TOKEN && !strncmp(buf, "fail:", 5))
				return fail(ft, "the other process failed: %s", buf + 5);
			return fail(ft, "waiting for \"%s\", got message %u \"%s\"", want, kind, buf);
		}
		if (poll && poll(ft, arg))
			return -1;
		if (now_ms() > deadline)
			return fail(ft, "no \"%s\" from the other process within %d ms", want,
				    timeout_ms);
		usleep(poll ? 200 : 1000);
	}
}

static char g_self_exe[4096];

/* The helper's command line: our own options, then --helper role --part part
 * --helper-fd 3; the numbers' text lives in the struct too. */
struct helper_args {
	const char *argv[24];
	char devs[16], seeds[32], abis[16];
};

static void helper_argv(const struct ft *ft, const char *role, const char *part,
			struct helper_args *a)
{
	int ac = 0;

	snprintf(a->devs, sizeof(a->devs), "%d", ft->dev);
	snprintf(a->seeds, sizeof(a->seeds), "%" PRIu64, ft->seed);
	snprintf(a->abis, sizeof(a->abis), "%d", ft->abi);
	a->argv[ac++] = g_self_exe;
	a->argv[ac++] = "--plugin";
	a->argv[ac++] = ft->plugin;
	a->argv[ac++] = "--dev";
	a->argv[ac++] = a->devs;
	a->argv[ac++] = "--seed";
	a->argv[ac++] = a->seeds;
	if (ft->abi) {
		a->argv[ac++] = "--abi";
		a->argv[ac++] = a->abis;
	}
	a->argv[ac++] = "--helper";
	a->argv[ac++] = role;
	a->argv[ac++] = "--part";
	a->argv[ac++] = part;
	a->argv[ac++] = "--helper-fd";
	a->argv[ac++] = "3";
	if (g_verbose)
		a->argv[ac++] = "--verbose";
	a->argv[ac] = NULL;
}

/* Our environment with env_extra (NAME=VALUE, NULL-terminated) replacing or
 * adding entries; calloc'ed (the strings are not copied), NULL when out of
 * memory. */
static char **helper_envp(const char *const *env_extra)
{
	extern char **environ;
	size_t nenv = 0, nextra = 0, k = 0;
	char **envp;

	while (environ[nenv])
		nenv++;
	while (env_extra && env_extra[nextra])
		nextra++;
	envp = calloc(nenv + nextra + 1, sizeof(*envp));
	if (!envp)
		return NULL;
	for (size_t i = 0; i < nenv; i++) {
		int replaced = 0;
		for (size_t j = 0; j < nextra; j++) {
			size_t nl = strcspn(env_extra[j], "=");
			if (!strncmp(environ[i], env_extra[j], nl) && environ[i][nl] == '=')
				replaced = 1;
		}
		if (!replaced)
			envp[k++] = environ[i];
	}
	for (size_t j = 0; j < nextra; j++)
		envp[k++] = (char *)env_extra[j];
	envp[k] = NULL;
	return envp;
}

/* In the child: fd 3 is the channel, err_fd (>= 0) stderr, nothing else is
 * inherited. Only async-signal-safe calls from here to execve. */
static void helper_exec(int chan_fd, int err_fd, const char *const *argv, char **envp)
{
	alarm(0);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (err_fd >= 0 && err_fd != 2)
		dup2(err_fd, 2);
	if (chan_fd == 3)
		fcntl(3, F_SETFD, 0);
	else
		dup2(chan_fd, 3);
#ifdef SYS_close_range
	syscall(SYS_close_range, 4u, ~0u, 0u);
#else
	for (int fd = 4; fd < 1024; fd++)
		close(fd);
#endif
	execve(g_self_exe, (char *const *)argv, envp);
	_exit(127);
}

/* Starts `fabnet-ft --helper role --part part` with env_extra (NAME=VALUE
 * entries, NULL-terminated) added to our environment; err_fd >= 0 becomes its
 * stderr. Returns 0, -1 (failed, reason set) or 1 (HS_NEWPIDNS not permitted
 * here). */
int helper_spawn(struct ft *ft, const char *role, const char *part,
		 const char *const *env_extra, int err_fd, int flags, struct helper *h)
{
	struct helper_args args;
	char **envp;
	int sv[2];
	pid_t pid;

	memset(h, 0, sizeof(*h));
	h->pid = -1;
	h->ch.fd = -1;
	if (!g_self_exe[0]) {
		ssize_t n = readlink("/proc/self/exe", g_self_exe, sizeof(g_self_exe) - 1);
		if (n <= 0)
			return fail(ft, "readlink(/proc/self/exe): %s", strerror(errno));
		g_self_exe[n] = '\0';
	}
	helper_argv(ft, role, part, &args);
	envp = helper_envp(env_extra);
	if (!envp)
		return fail(ft, "out of memory");
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
		free(envp);
		return fail(ft, "socketpair: %s", strerror(errno));
	}
	fflush(stdout);
	fflush(stderr);
	if (flags & HS_NEWPIDNS) /* a fork whose child is pid 1 of a new namespace */
		pid = (pid_t)syscall(SYS_clone, (unsigned long)(CLONE_NEWPID | SIGCHLD), NULL, NULL,
				     NULL, NULL);
	else
		pid = fork();
	if (pid < 0) {
		int e = errno;
		free(envp);
		close(sv[0]);
		close(sv[1]);
		if ((flags & HS_NEWPIDNS) && (e == EPERM || e == EINVAL || e == ENOSPC))
			return 1;
		return fail(ft, "fork: %s", strerror(e));
	}
	if (pid == 0)
		helper_exec(sv[1], err_fd, args.argv, envp);
	free(envp);
	close(sv[1]);
	h->pid = pid;
	h->ch.fd = sv[0];
	h->ch.rank = 0;
	h->ch.timeout_ms = 30000;
	vnote("started helper %s/%s, pid %d", role, part, (int)pid);
	return 0;
}

/* Waits up to timeout_ms for the helper to exit. Returns 0 and its status, or
 * -1 (still running). */
int helper_reap(struct helper *h, int timeout_ms, int *status)
{
	int64_t deadline = now_ms() + timeout_ms;

	if (h->pid <= 0)
		return 0;
	for (;;) {
		pid_t r = waitpid(h->pid, status, WNOHANG);
		if (r == h->pid) {
			h->pid = -1;
			return 0;
		}
		if (r < 0 && errno != EINTR) {
			h->pid = -1;
			*status = 0;
			return 0;
		}
		if (now_ms() > deadline)
			return -1;
		usleep(2000);
	}
}

void helper_kill(struct helper *h)
{
	int st;

	if (h->pid > 0) {
		kill(h->pid, SIGKILL);
		if (helper_reap(h, 10000, &st))
			h->pid = -1;
	}
	if (h->ch.fd >= 0)
		close(h->ch.fd);
	h->ch.fd = -1;
}

/* Runs a helper to its verdict: notes it sends are printed by rank 0. */
int helper_run(struct ft *ft, const char *role, const char *part,
	       const char *const *env_extra, int timeout_ms)
{
	struct helper h;
	char buf[2048], how[128];
	int64_t deadline = now_ms() + timeout_ms;
	int got_result = 0, ok = 0, st = 0;

	if (helper_spawn(ft, role, part, env_extra, -1, 0, &h))
		return -1;
	g_step = "waiting for a helper process";
	while (!got_result) {
		uint32_t kind, len;
		int r = ctl_readable(&h.ch);
		wd_kick();
		if (r < 0 || (r > 0 && hget(&h.ch, &kind, buf, sizeof(buf), &len, 10000))) {
			break; /* gone: its exit status says why */
		} else if (r > 0) {
			if (kind == HM_NOTE) {
				if (ft->rank == 0)
					printf("%s\n", buf);
			} else if (kind == HM_RESULT && len >= 4) {
				int32_t v;
				memcpy(&v, buf, 4);
				ok = v;
				got_result = 1;
				if (!ok)
					fail(ft, "%s", buf + 4);
			}
			continue;
		}
		if (now_ms() > deadline) {
			helper_kill(&h);
			return fail(ft, "the %s helper (%s) gave no verdict within %d s: killed",
				    role, part, timeout_ms / 1000);
		}
		if (peer_failed(ft)) {
			helper_kill(&h);
			return -1;
		}
		usleep(2000);
	}
	if (helper_reap(&h, 20000, &st)) {
		helper_kill(&h);
		return fail(ft, "the %s helper (%s) %s but did not exit within 20 s: killed", role,
			    part, got_result ? "gave its verdict" : "closed its channel");
	}
	close(h.ch.fd);
	describe_status(st, how, sizeof(how));
	if (!got_result)
		return fail(ft, "the %s helper (%s) %s without a verdict", role, part, how);
	if (!ok)
		return -1;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return fail(ft, "the %s helper (%s) passed but then %s", role, part, how);
	return 0;
}

/* Entry point of --helper: a fresh process, o->helper_fd its channel to the
 * parent; the role comes from the table in main.c. */
int helper_main(const struct opts *o, const struct helper_role *roles, int nroles)
{
	const struct helper_role *role = NULL;
	struct ft ft;
	struct ctl up;
	char msg[4 + REASON_MAX];
	int32_t ok;
	int rc;

	memset(&ft, 0, sizeof(ft));
	memset(&up, 0, sizeof(up));
	up.fd = o->helper_fd;
	up.timeout_ms = 30000;
	ft.plugin = o->plugin;
	ft.dev = o->dev;
	ft.abi = o->abi;
	ft.seed = o->seed;
	ft.net = &ft.base;
	ft.rank = -1;
	ft.op_timeout_ms = 30000;
	g_scen = o->helper;
	signal(SIGPIPE, SIG_IGN);
	alarm(100); /* default action: the parent sees SIGALRM and reports a hang */
	for (int i = 0; i < nroles && !role; i++)
		if (!strcmp(o->helper, roles[i].name))
			role = &roles[i];
	if (role && !role->verdict) { /* its exit status is its verdict */
		rc = role->fn(&ft, &up, o->part);
		g_step = "finalize";
		pl_finalize(&ft.base);
		return rc ? 1 : 0;
	}
	if (role)
		rc = role->fn(&ft, &up, o->part);
	else
		rc = fail(&ft, "unknown helper role %s", o->helper);
	if (rc && !ft.why[0])
		fail(&ft, "failed without a reason (harness bug)");
	ok = rc == 0;
	memcpy(msg, &ok, 4);
	snprintf(msg + 4, sizeof(msg) - 4, "%s", ok ? "" : ft.why);
	hput(&up, HM_RESULT, msg, (uint32_t)(4 + strlen(msg + 4) + 1));
	g_step = "finalize";
	pl_finalize(&ft.base);
	return ok ? 0 : 1;
}
