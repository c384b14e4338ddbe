/*
 * No silent fallback: when fabnet is loaded but cannot serve, init must fail
 * (so that NCCL's own fallback shows in NCCL's log) and fabnet must say so at
 * WARN, once, with the reason and the doctor command.
 *
 * Each scenario runs in a fresh process (the plugin's state is per process),
 * loads the plugin through tools/plugin_loader exactly as NCCL does, with the
 * newest table and with v6, and captures what the plugin logs.
 *
 * usage: fabnet-nofallback [PLUGIN]   (default: $FABNET_PLUGIN)
 * Exit 0 when every check passed.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../tools/plugin_loader.h"

struct scenario {
	const char *name;
	const char *env[3];     /* NAME=VALUE, set in the child */
	ncclResult_t expect;    /* what init must return */
	const char *reason;     /* the WARN line must name this */
};

static const struct scenario scenarios[] = {
	{"FABNET_PROVIDER names a provider libfabric lacks",
	 {"FABNET_PROVIDER=no-such-provider"}, ncclSystemError, "no-such-provider"},
	{"FI_PROVIDER names a provider libfabric lacks",
	 {"FI_PROVIDER=no-such-provider"}, ncclSystemError, "no-such-provider"},
	{"FABNET_IFACE matches no domain of the provider",
	 {"FABNET_PROVIDER=tcp", "FABNET_IFACE=no-such-nic0"}, ncclSystemError, "no-such-nic0"},
	{"a fabnet setting does not parse",
	 {"FABNET_EAGER_MAX=lots"}, ncclInvalidArgument, "FABNET_EAGER_MAX"},
	{"control: a usable provider (shm)",
	 {"FABNET_PROVIDER=shm"}, ncclSuccess, NULL},
};

/* Variables a scenario may set: cleared first so the caller's cannot leak in. */
static const char *const cleared[] = {"FABNET_PROVIDER", "FI_PROVIDER", "FABNET_IFACE",
				      "FABNET_EAGER_MAX", "FABNET_ABI_VERSION", NULL};

static int pass, failed;

static void check(int ok, const char *scen, int version, const char *what, const char *detail)
{
	printf("%s v%d %s: %s%s%s\n", ok ? "PASS" : "FAIL", version, scen, what,
	       ok || !detail ? "" : ": ", ok || !detail ? "" : detail);
	if (ok)
		pass++;
	else
		failed++;
}

/* Child: init through the loader, report "result ndev" on fd out. */
static void child(const char *plugin, int version, const struct scenario *s, int out)
{
	struct pl_net net;
	ncclResult_t r;
	int ndev = -1;

	alarm(60); /* a hang is a failure, not a stuck test */
	for (int i = 0; cleared[i]; i++)
		unsetenv(cleared[i]);
	for (int i = 0; i < 3 && s->env[i]; i++)
		putenv((char *)s->env[i]);
	if (pl_open(&net, plugin, version)) {
		dprintf(out, "open %s\n", net.err);
		_exit(3);
	}
	r = pl_init(&net);
	if (r == ncclSuccess) {
		pl_devices(&net, &ndev);
		pl_finalize(&net);
	}
	dprintf(out, "%d %d\n", (int)r, ndev);
	_exit(0);
}

/* Reads fds until both close. */
static void collect(int fd_out, int fd_err, char *out, size_t outlen, char *err, size_t errlen)
{
	size_t no = 0, ne = 0;
	struct pollfd p[2] = {{fd_out, POLLIN, 0}, {fd_err, POLLIN, 0}};

	while (p[0].fd >= 0 || p[1].fd >= 0) {
		if (poll(p, 2, 90000) <= 0)
			break;
		for (int i = 0; i < 2; i++) {
			char *buf = i ? err : out;
			size_t *used = i ? &ne : &no, cap = i ? errlen : outlen;
			ssize_t n;
			if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP)))
				continue;
			n = read(p[i].fd, buf + *used, cap - 1 - *used);
			if (n <= 0) {
				close(p[i].fd);
				p[i].fd = -1;
				continue;
			}
			*used += (size_t)n;
			buf[*used] = '\0';
		}
	}
	out[no] = '\0';
	err[ne] = '\0';
}

static int count_lines(const char *text, const char *a, const char *b, char *first,
		       size_t firstlen)
{
	int n = 0;

	for (const char *l = text; *l;) {
		size_t len = strcspn(l, "\n");
		char line[4096];
		snprintf(line, sizeof(line), "%.*s", (int)len, l);
		if (strstr(line, a) && (!b || strstr(line, b))) {
			if (!n++)
				snprintf(first, firstlen, "%s", line);
		}
		l += len + (l[len] == '\n');
	}
	return n;
}

static void run(const char *plugin, int version, const struct scenario *s)
{
	int po[2], pe[2], st = 0, r = -1, ndev = -1;
	char out[1024], err[65536], line[4096] = "", detail[8192];
	pid_t pid;

	if (pipe(po) || pipe(pe)) {
		check(0, s->name, version, "pipe", strerror(errno));
		return;
	}
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		close(po[0]);
		close(pe[0]);
		dup2(pe[1], 2);
		child(plugin, version, s, po[1]);
	}
	close(po[1]);
	close(pe[1]);
	collect(po[0], pe[0], out, sizeof(out), err, sizeof(err));
	waitpid(pid, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st) || sscanf(out, "%d %d", &r, &ndev) != 2) {
		snprintf(detail, sizeof(detail), "status %d, output '%s', log '%.300s'", st, out, err);
		check(0, s->name, version, "init ran to completion", detail);
		return;
	}
	snprintf(detail, sizeof(detail), "%s, want %s", pl_result_str((ncclResult_t)r),
		 pl_result_str(s->expect));
	check(r == (int)s->expect, s->name, version, "init's result", detail);
	if (s->expect == ncclSuccess) {
		snprintf(detail, sizeof(detail), "%d", ndev);
		check(ndev >= 1, s->name, version, "at least one device", detail);
		int warns = count_lines(err, " NCCL WARN ", NULL, line, sizeof(line));
		check(warns == 0, s->name, version, "no WARN line", line);
		return;
	}
	int n = count_lines(err, " NCCL WARN ", "NOT serving this job", line, sizeof(line));
	snprintf(detail, sizeof(detail), "%d such lines in: %.2000s", n, err);
	check(n == 1, s->name, version, "one WARN line says fabnet is not serving", detail);
	check(n && strstr(line, s->reason), s->name, version, "the WARN line names the reason",
	      line);
	check(n && strstr(line, "fabnet-info --doctor"), s->name, version,
	      "the WARN line names the doctor command", line);
}

int main(int argc, char **argv)
{
	const char *plugin = argc > 1 ? argv[1] : getenv("FABNET_PLUGIN");
	static const int versions[] = {PL_MAX_VERSION, 6};

	if (!plugin || !*plugin) {
		fprintf(stderr, "usage: fabnet-nofallback PLUGIN (or set FABNET_PLUGIN)\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (size_t v = 0; v < sizeof(versions) / sizeof(versions[0]); v++)
		for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++)
			run(plugin, versions[v], &scenarios[i]);
	printf("%d passed, %d failed\n", pass, failed);
	return failed ? 1 : 0;
}
