/*
 * Would NCCL load fabnet (nccl-loads-plugin), and does the plugin carry
 * verified bytes here (selftest)? Both are answered by fabnet-doctor-probe in
 * a fresh process (see doctor_probe.c); this file runs it and explains what it
 * printed.
 */
#include <config.h>

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <unistd.h>

#include "doctor.h"

#define PROBE_NAME "fabnet-doctor-probe"
#define PLUGIN_FILE "libnccl-net-fabnet.so"
#define SELFTEST_MS 20000

/* The directory this program lives in, with a trailing slash, or "". */
static void exe_dir(char *out, size_t len)
{
	char path[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
	char *slash;

	out[0] = '\0';
	if (n <= 0)
		return;
	path[n] = '\0';
	slash = strrchr(path, '/');
	if (slash) {
		slash[1] = '\0';
		snprintf(out, len, "%s", path);
	}
}

/* FABNET_DOCTOR_PROBE, else next to this program (a build tree), else where
 * `make install` puts it. */
static void find_probe(struct doc_ctx *c)
{
	const char *env = getenv("FABNET_DOCTOR_PROBE");
	char dir[PATH_MAX], path[PATH_MAX + 32];

	if (c->probe[0])
		return;
	if (env && *env) {
		snprintf(c->probe, sizeof(c->probe), "%s", env);
		return;
	}
	exe_dir(dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s%s", dir, PROBE_NAME);
	if (access(path, X_OK) == 0) {
		snprintf(c->probe, sizeof(c->probe), "%s", path);
		return;
	}
	snprintf(path, sizeof(path), "%s/%s", FABNET_PKGLIBEXECDIR, PROBE_NAME);
	if (access(path, X_OK) == 0)
		snprintf(c->probe, sizeof(c->probe), "%s", path);
}

/* Splits line (modified) into at most max tab-separated fields. */
static int fields(char *line, char **f, int max)
{
	int n = 0;

	while (n < max) {
		f[n++] = line;
		line = strchr(line, '\t');
		if (!line)
			break;
		*line++ = '\0';
	}
	return n;
}

/* Calls fn for every line of b (the buffer is modified). */
static void each_line(struct doc_buf *b, void (*fn)(char *line, void *arg), void *arg)
{
	char *s = b->s, *save = NULL;

	if (!s)
		return;
	for (char *l = strtok_r(s, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
		fn(l, arg);
}

static const char *status_text(int status, int timed_out, char *buf, size_t len)
{
	if (timed_out)
		snprintf(buf, len, "did not finish in time and was killed");
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "died of signal %d", WTERMSIG(status));
	else
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
	return buf;
}

static const char *fabnet_lib_here(char *out, size_t len);

/* ---- nccl-loads-plugin ------------------------------------------------------------- */

struct load_result {
	char list_kind[8];      /* unset, none, set */
	char list[1024];
	struct doc_buf tries;   /* one line per dlopen NCCL would try */
	int first_entry;        /* first entry with a table: what NCCL inits first */
	char first_path[4096], first_name[256];
	int first_version;
	int fabnet_entry;
	char fabnet_path[4096];
	int fabnet_version;
	int load_errors;        /* dlopen failures other than "not found" */
	char load_error[1024];
	int unsupported;
};

static void on_load_line(char *line, void *arg)
{
	struct load_result *r = arg;
	char *f[6];
	int n = fields(line, f, 6);

	if (!strcmp(f[0], "list") && n >= 3) {
		snprintf(r->list_kind, sizeof(r->list_kind), "%s", f[1]);
		snprintf(r->list, sizeof(r->list), "%s", f[2]);
	} else if (!strcmp(f[0], "try") && n >= 5) {
		if (!strcmp(f[3], "loaded"))
			doc_buf_printf(&r->tries, "\n%s: loads (%s)", f[2], f[4]);
		else if (!strcmp(f[3], "enoent"))
			doc_buf_printf(&r->tries, "\n%s: not found", f[2]);
		else {
			doc_buf_printf(&r->tries, "\n%s: does not load: %s", f[2], f[4]);
			if (!r->load_errors++)
				snprintf(r->load_error, sizeof(r->load_error), "%s", f[4]);
		}
	} else if (!strcmp(f[0], "table") && n >= 5) {
		int entry = atoi(f[1]), version = atoi(f[3]);
		if (!version) {
			doc_buf_printf(&r->tries, "\n%s exports no ncclNetPlugin_v6..v12: NCCL calls "
				       "it unsupported and goes on", f[2]);
			r->unsupported++;
			return;
		}
		doc_buf_printf(&r->tries, "\n%s: ncclNetPlugin_v%d, named '%s'", f[2], version, f[4]);
		if (r->first_entry < 0) {
			r->first_entry = entry;
			r->first_version = version;
			snprintf(r->first_path, sizeof(r->first_path), "%s", f[2]);
			snprintf(r->first_name, sizeof(r->first_name), "%s", f[4]);
		}
		if (r->fabnet_entry < 0 && !strcasecmp(f[4], "fabnet")) {
			r->fabnet_entry = entry;
			r->fabnet_version = version;
			snprintf(r->fabnet_path, sizeof(r->fabnet_path), "%s", f[2]);
		}
	} else if (!strcmp(f[0], "ignored") && n >= 3) {
		doc_buf_printf(&r->tries, "\n%s: ignored by NCCL (%s)", f[1], f[2]);
	}
}

/* What NCCL would use when no plugin serves it. */
static void nccl_instead(const struct load_result *r, struct doc_buf *out)
{
	DIR *d = opendir("/sys/class/infiniband");
	int nib = 0;

	if (d) {
		for (struct dirent *e; (e = readdir(d));)
			nib += e->d_name[0] != '.';
		closedir(d);
	}
	if (r->first_entry >= 0)
		doc_buf_printf(out, "NCCL would initialise %s (named '%s') instead", r->first_path,
			       r->first_name);
	else
		doc_buf_printf(out, "NCCL would use its internal %s",
			       nib ? "IB transport (RDMA devices in /sys/class/infiniband), else "
				     "sockets"
				   : "socket transport (TCP through the kernel: no RDMA device here)");
}

static void explain_no_fabnet(struct doc_ctx *c, const struct load_result *r, const char *tries)
{
	struct doc_buf instead = {0}, what = {0}, fix = {0};

	nccl_instead(r, &instead);
	if (!strcmp(r->list_kind, "none")) {
		doc_addf(c, "nccl-loads-plugin", DOC_ERROR,
			 "NCCL loads no external network plugin at all",
			 "set NCCL_NET_PLUGIN=fabnet",
			 "NCCL_NET_PLUGIN=none: %s", doc_buf_str(&instead));
		doc_buf_free(&instead);
		return;
	}
	doc_buf_printf(&what, "NCCL_NET_PLUGIN=%s: NCCL would not load fabnet; %s. NCCL would "
		       "try:%s", !strcmp(r->list_kind, "unset") ? "(unset, so libnccl-net.so)"
		       : r->list, doc_buf_str(&instead), tries);
	char here[PATH_MAX + 64];
	const char *lib = fabnet_lib_here(here, sizeof(here));
	if (r->load_errors && strstr(r->load_error, "libfabric") && strstr(r->load_error, "version"))
		doc_buf_printf(&fix, "the library path holds a libfabric older than the one fabnet "
			       "was built against, and LD_LIBRARY_PATH overrides the plugin's RUNPATH: "
			       "take that directory off LD_LIBRARY_PATH, or rebuild fabnet against "
			       "that libfabric (%s)", r->load_error);
	else if (r->load_errors)
		doc_buf_printf(&fix, "make the library load: %s (a dependency missing from "
			       "LD_LIBRARY_PATH?)", r->load_error);
	else if (!strcmp(r->list_kind, "unset"))
		doc_buf_printf(&fix, "export NCCL_NET_PLUGIN=fabnet, with the directory of "
			       PLUGIN_FILE " on LD_LIBRARY_PATH (or install the libnccl-net.so "
			       "link)");
	else
		doc_buf_printf(&fix, "put the directory of " PLUGIN_FILE " on LD_LIBRARY_PATH, or "
			       "give NCCL_NET_PLUGIN its full path");
	if (lib && !r->load_errors)
		doc_buf_printf(&fix, "; fabnet's is %s", lib);
	doc_add(c, "nccl-loads-plugin", DOC_ERROR, doc_buf_str(&what),
		"NCCL falls back to another transport without a warning: the job runs, slower, "
		"and nothing says fabnet was not used", doc_buf_str(&fix));
	doc_buf_free(&instead);
	doc_buf_free(&what);
	doc_buf_free(&fix);
}

void doc_check_nccl_loads(struct doc_ctx *c)
{
	struct load_result r;
	struct doc_buf out = {0};
	char *argv[] = {c->probe, "load", NULL}, st[64];
	int timed_out, status;

	find_probe(c);
	if (!c->probe[0]) {
		doc_add(c, "nccl-loads-plugin", DOC_ERROR, "the doctor's probe program "
			PROBE_NAME " is missing, so NCCL's loader cannot be replayed",
			"it runs NCCL's dlopen sequence in a process without libfabric, as NCCL's is",
			"reinstall fabnet's tools (or set FABNET_DOCTOR_PROBE to its path)");
		return;
	}
	memset(&r, 0, sizeof(r));
	r.first_entry = r.fabnet_entry = -1;
	status = doc_run(argv, 15000, &out, NULL, &timed_out);
	if (status < 0 || timed_out || !WIFEXITED(status) || WEXITSTATUS(status)) {
		doc_addf(c, "nccl-loads-plugin", DOC_ERROR,
			 "a plugin that crashes or hangs while NCCL loads it takes the job down",
			 "run `" PROBE_NAME " load` by hand to see where it stops",
			 "replaying NCCL's loader: %s %s: %s", c->probe,
			 status_text(status, timed_out, st, sizeof(st)), doc_buf_str(&out));
		doc_buf_free(&out);
		return;
	}
	each_line(&out, on_load_line, &r);
	const char *tries = doc_buf_str(&r.tries);
	if (r.fabnet_entry < 0) {
		explain_no_fabnet(c, &r, tries);
	} else if (r.first_entry != r.fabnet_entry) {
		snprintf(c->nccl_lib, sizeof(c->nccl_lib), "%s", r.fabnet_path);
		doc_addf(c, "nccl-loads-plugin", DOC_WARN,
			 "NCCL initialises the plugins of NCCL_NET_PLUGIN in order and keeps the "
			 "first that initialises: fabnet runs only if that one fails",
			 "put fabnet first in NCCL_NET_PLUGIN (or alone)",
			 "NCCL_NET_PLUGIN=%s: NCCL tries %s (named '%s') before fabnet (%s).%s",
			 r.list, r.first_path, r.first_name, r.fabnet_path, tries);
	} else {
		snprintf(c->nccl_lib, sizeof(c->nccl_lib), "%s", r.fabnet_path);
		doc_addf(c, "nccl-loads-plugin", DOC_OK, NULL, NULL,
			 "NCCL_NET_PLUGIN=%s: NCCL would load %s (ncclNetPlugin_v%d, named "
			 "'fabnet').%s", !strcmp(r.list_kind, "unset") ? "(unset)" : r.list,
			 r.fabnet_path, r.fabnet_version, tries);
	}
	doc_buf_free(&r.tries);
	doc_buf_free(&out);
}

/* ---- selftest ------------------------------------------------------------------------ */

struct selftest_result {
	char step[32];                 /* the last step the probe began */
	char fail_step[32], fail_msg[1024]; /* its first failure outside a device */
	char plugin[4096];
	int version;
	char names[8][256];            /* NCCL device names, by index */
	struct doc_buf passed, failed; /* per device */
	struct doc_buf good_ifaces;    /* the passing devices' rails, for FABNET_IFACE */
	int npassed, nfailed;
	char dev_fail_step[32];        /* the first failing device's step */
	int ok, done, tested, ndev;
	size_t moved;
	long long ms;
	char provider[256];            /* from the plugin's "using provider" line */
	struct doc_buf warns;          /* the plugin's WARN lines */
	int nwarn;
	struct doc_ctx *c;
};

static void on_lib(struct selftest_result *r, char **f)
{
	if (!strcmp(f[1], "libfabric.so")) {
		if (!r->c->nfabric++) {
			snprintf(r->c->plugin_fabric, sizeof(r->c->plugin_fabric), "%s", f[2]);
			snprintf(r->c->plugin_fabric_ver, sizeof(r->c->plugin_fabric_ver), "%s", f[3]);
		}
	} else if (!strcmp(f[1], "libibverbs.so")) {
		r->c->nverbs++;
	}
}

static void on_devresult(struct selftest_result *r, char **f, int n)
{
	int d = atoi(f[1]);
	const char *name = d >= 0 && d < 8 && r->names[d][0] ? r->names[d] : "?";

	if (!strcmp(f[2], "ok")) {
		doc_buf_printf(&r->passed, "%s%d (%s)", r->npassed++ ? ", " : "", d, name);
		/* "eth0+eth1" is one device of two rails: FABNET_IFACE lists each */
		for (const char *p = name; *p;) {
			size_t len = strcspn(p, "+");
			doc_buf_printf(&r->good_ifaces, "%s%.*s", r->good_ifaces.len ? "," : "",
				       (int)len, p);
			p += len + (p[len] == '+');
		}
	} else {
		doc_buf_printf(&r->failed, "\ndevice %d (%s): %s: %s", d, name, n > 3 ? f[3] : "?",
			       n > 4 ? f[4] : "");
		if (!r->nfailed++)
			snprintf(r->dev_fail_step, sizeof(r->dev_fail_step), "%s", n > 3 ? f[3] : "");
	}
}

static void on_selftest_line(char *line, void *arg)
{
	struct selftest_result *r = arg;
	char *f[6];
	int n = fields(line, f, 6);

	if (!strcmp(f[0], "step") && n >= 2) {
		snprintf(r->step, sizeof(r->step), "%s", f[1]);
	} else if (!strcmp(f[0], "fail") && n >= 3 && !r->fail_step[0]) {
		snprintf(r->fail_step, sizeof(r->fail_step), "%s", f[1]);
		snprintf(r->fail_msg, sizeof(r->fail_msg), "%s", f[2]);
	} else if (!strcmp(f[0], "plugin") && n >= 3) {
		snprintf(r->plugin, sizeof(r->plugin), "%s", f[1]);
		r->version = atoi(f[2]);
	} else if (!strcmp(f[0], "lib") && n >= 4) {
		on_lib(r, f);
	} else if (!strcmp(f[0], "dev") && n >= 3) {
		int d = atoi(f[1]);
		if (d >= 0 && d < 8)
			snprintf(r->names[d], sizeof(r->names[d]), "%s", f[2]);
	} else if (!strcmp(f[0], "devresult") && n >= 3) {
		on_devresult(r, f, n);
	} else if ((!strcmp(f[0], "ok") || !strcmp(f[0], "done")) && n >= 5) {
		r->ok = !strcmp(f[0], "ok");
		r->done = 1;
		r->tested = atoi(f[1]);
		r->ndev = atoi(f[2]);
		r->moved = (size_t)strtoull(f[3], NULL, 10);
		r->ms = atoll(f[4]);
	}
}

static void on_selftest_log(char *line, void *arg)
{
	struct selftest_result *r = arg;
	const char *p = strstr(line, "fabnet: using provider ");
	const char *w = strstr(line, " NCCL WARN ");
	size_t len;

	if (p)
		snprintf(r->provider, sizeof(r->provider), "%s", p + strlen("fabnet: using provider "));
	if (w && r->nwarn++ < 4) {
		w += strlen(" NCCL WARN ");
		for (len = strlen(w); len && w[len - 1] == ' '; len--)
			;
		doc_buf_printf(&r->warns, "\nplugin: %.*s", (int)len, w);
	}
}

/* fabnet's plugin beside this program (a build tree) or where `make install`
 * put it, or NULL. */
static const char *fabnet_lib_here(char *out, size_t len)
{
	char dir[PATH_MAX], a[PATH_MAX + 64], b[PATH_MAX + 64];
	const char *tries[] = {a, b, NULL};

	exe_dir(dir, sizeof(dir));
	snprintf(a, sizeof(a), "%s.libs/" PLUGIN_FILE, dir);
	snprintf(b, sizeof(b), "%s/" PLUGIN_FILE, FABNET_LIBDIR);
	for (int i = 0; tries[i]; i++)
		if (access(tries[i], R_OK) == 0) {
			snprintf(out, len, "%s", tries[i]);
			return out;
		}
	return NULL;
}

/* The library to test: NCCL's choice, else fabnet's build tree or install. */
static void selftest_library(const struct doc_ctx *c, char *out, size_t len)
{
	if (c->nccl_lib[0])
		snprintf(out, len, "%s", c->nccl_lib);
	else if (!fabnet_lib_here(out, len))
		snprintf(out, len, PLUGIN_FILE); /* let the dynamic loader search */
}

static const char *fix_for_step(const char *step, const struct selftest_result *r,
				struct doc_buf *fix)
{
	if (!strcmp(step, "load"))
		doc_buf_printf(fix, "make the library load (see nccl-loads-plugin), then run the "
			       "doctor again");
	else if (!strcmp(step, "init") || !strcmp(step, "devices"))
		doc_buf_printf(fix, "see the plugin's warning and the providers finding");
	else if (r->npassed && (!strcmp(step, "listen") || !strcmp(step, "connect") ||
				!strcmp(step, "accept")))
		doc_buf_printf(fix, "keep fabnet to the devices that work: FABNET_IFACE=%s (or "
			       "give the others an address the provider can bind)",
			       doc_buf_str(&r->good_ifaces));
	else if (!strcmp(step, "listen") || !strcmp(step, "connect") || !strcmp(step, "accept"))
		doc_buf_printf(fix, "the provider cannot reach its own address: check FABNET_IFACE, "
			       "firewall rules and the providers finding; FABNET_DEBUG=INFO shows "
			       "more");
	else if (!strcmp(step, "regMr"))
		doc_buf_printf(fix, "registration failed: see memlock and efa-device");
	else
		doc_buf_printf(fix, "the provider lost or damaged data on loopback: rerun with "
			       "FABNET_DEBUG=TRACE and report it with the output");
	return doc_buf_str(fix);
}

static void selftest_finding(struct doc_ctx *c, struct selftest_result *r, const char *lib,
			     const char *how)
{
	struct doc_buf fix = {0};
	const char *why = "fabnet could not move a buffer to itself here, so it cannot carry a "
			  "job (NCCL would fall back, or fail when it uses a broken device)";

	if (r->ok && r->done) {
		doc_addf(c, "selftest", DOC_OK, NULL, NULL,
			 "moved verified buffers (4 KiB eager, 1 MiB + 291 B rendezvous) from each "
			 "of %d NCCL device%s to itself through %s (ncclNetPlugin_v%d) in %lld ms: "
			 "%s%s%s%s",
			 r->tested, r->tested == 1 ? "" : "s", r->plugin, r->version, r->ms,
			 doc_buf_str(&r->passed), r->provider[0] ? "; provider " : "", r->provider,
			 c->nccl_lib[0] ? "" : " (NCCL would not load this library: see "
					       "nccl-loads-plugin)");
	} else if (r->nfailed) {
		doc_addf(c, "selftest", DOC_ERROR, why, fix_for_step(r->dev_fail_step, r, &fix),
			 "%d of %d NCCL devices failed to move a buffer to themselves through %s:%s%s"
			 "%s%s", r->nfailed, r->tested, lib, doc_buf_str(&r->failed),
			 r->npassed ? "\npassed: " : "", doc_buf_str(&r->passed),
			 doc_buf_str(&r->warns));
	} else if (r->fail_step[0]) {
		doc_addf(c, "selftest", DOC_ERROR, why, fix_for_step(r->fail_step, r, &fix),
			 "failed at step %s through %s: %s%s", r->fail_step, lib, r->fail_msg,
			 doc_buf_str(&r->warns));
	} else {
		doc_addf(c, "selftest", DOC_ERROR, why,
			 fix_for_step(r->step[0] ? r->step : "load", r, &fix),
			 "%s, through %s%s", how, lib, doc_buf_str(&r->warns));
	}
	doc_buf_free(&fix);
}

void doc_start_selftest(struct doc_ctx *c)
{
	char ms[16];
	char *argv[] = {c->probe, "selftest", c->selftest_lib, ms, NULL};

	find_probe(c);
	if (c->no_selftest || !c->probe[0])
		return;
	selftest_library(c, c->selftest_lib, sizeof(c->selftest_lib));
	snprintf(ms, sizeof(ms), "%d", SELFTEST_MS);
	doc_spawn(argv, SELFTEST_MS + 10000, 0, &c->selftest);
}

void doc_check_selftest(struct doc_ctx *c)
{
	struct selftest_result r;
	struct doc_buf out = {0}, err = {0};
	char how[160], st[64];
	int timed_out, status;

	if (c->no_selftest) {
		doc_add(c, "selftest", DOC_INFO, "not run (--no-selftest)",
			"only the live self-test proves that fabnet moves bytes here",
			"run the doctor without --no-selftest");
		return;
	}
	if (!c->probe[0]) {
		doc_add(c, "selftest", DOC_ERROR, "the doctor's probe program " PROBE_NAME
			" is missing", "the self-test runs in it", "reinstall fabnet's tools");
		return;
	}
	memset(&r, 0, sizeof(r));
	r.c = c;
	status = doc_collect(&c->selftest, &out, &err, &timed_out);
	each_line(&out, on_selftest_line, &r);
	each_line(&err, on_selftest_log, &r);
	if (status != 0)
		r.ok = 0;
	snprintf(how, sizeof(how), "the self-test %s at step %s",
		 status_text(status, timed_out, st, sizeof(st)), r.step[0] ? r.step : "start");
	selftest_finding(c, &r, c->selftest_lib, how);
	doc_buf_free(&r.passed);
	doc_buf_free(&r.failed);
	doc_buf_free(&r.good_ifaces);
	doc_buf_free(&r.warns);
	doc_buf_free(&out);
	doc_buf_free(&err);
}
