/*
 * fabnet-doctor-probe: the parts of `fabnet-info --doctor` that must run in a
 * fresh process which, like NCCL, has not loaded libfabric: a plugin's
 * dependencies resolve here exactly as they would under NCCL.
 *
 *   fabnet-doctor-probe load           NCCL's net plugin loader, replayed for
 *                                      NCCL_NET_PLUGIN (src/plugin/net.cc and
 *                                      plugin_open.cc of NCCL 2.30)
 *   fabnet-doctor-probe selftest LIB   loads LIB through tools/plugin_loader,
 *                                      connects each device to itself and moves
 *                                      verified buffers (eager and rendezvous)
 *
 * Output: one tab-separated record per line on stdout, read by doctor_nccl.c;
 * the plugin's log goes to stderr. Exit 0 when the mode's work succeeded.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <link.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pattern.h"
#include "plugin_loader.h"

#define NCCL_MAX_NAME 255       /* MAX_STR_LEN in NCCL's plugin code */
#define NCCL_MAX_LIST (16 - 2)  /* NCCL_NET_MAX_PLUGINS less its two internal nets */

/* Tabs and newlines would break the record format. */
static const char *clean(const char *s, char *buf, size_t len)
{
	size_t i = 0;

	for (; s && *s && i + 1 < len; s++)
		buf[i++] = (*s == '\t' || *s == '\n') ? ' ' : *s;
	buf[i] = '\0';
	return buf;
}

/* ---- load: NCCL's loader ---------------------------------------------------------- */

static void report_tables(int entry, void *h, const char *path)
{
	char b1[4096], b2[512];

	for (int v = 12; v >= 6; v--) { /* NCCL 2.30 looks for v12 down to v6 */
		char sym[32];
		const char *const *table;
		snprintf(sym, sizeof(sym), "ncclNetPlugin_v%d", v);
		table = dlsym(h, sym);
		if (table) { /* name is the first field of every version's table */
			printf("table\t%d\t%s\t%d\t%s\n", entry, clean(path, b1, sizeof(b1)), v,
			       clean(*table ? *table : "(null)", b2, sizeof(b2)));
			return;
		}
	}
	printf("table\t%d\t%s\t0\t\n", entry, clean(path, b1, sizeof(b1)));
}

/* One entry of NCCL_NET_PLUGIN: the name as given, then libnccl-net-NAME.so
 * unless the name is a path or already looks like "lib*.so". */
static void load_entry(int entry, const char *name)
{
	char cands[2][NCCL_MAX_NAME + 1];
	size_t len = strlen(name);
	int ncand = 0;

	snprintf(cands[ncand++], sizeof(cands[0]), "%s", name);
	if (!strchr(name, '/') &&
	    (strncmp(name, "lib", 3) || len < 3 || strcmp(name + len - 3, ".so")))
		snprintf(cands[ncand++], sizeof(cands[0]), "libnccl-net-%s.so", name);
	for (int i = 0; i < ncand; i++) {
		/* NCCL opens the program itself for any prefix of STATIC_PLUGIN */
		int self = !strncasecmp(cands[i], "STATIC_PLUGIN", strlen(cands[i]));
		char b1[4096], b2[1024];
		void *h;
		dlerror();
		h = dlopen(self ? NULL : cands[i], RTLD_NOW | RTLD_LOCAL);
		if (h) {
			struct link_map *lm = NULL;
			const char *path = self ? "(the program itself: STATIC_PLUGIN)" : cands[i];
			if (!self && dlinfo(h, RTLD_DI_LINKMAP, &lm) == 0 && lm && lm->l_name[0])
				path = lm->l_name;
			printf("try\t%d\t%s\tloaded\t%s\n", entry, clean(cands[i], b2, sizeof(b2)),
			       clean(path, b1, sizeof(b1)));
			report_tables(entry, h, path);
			/* kept loaded, as NCCL keeps the plugin it uses; unloading would
			 * also hide the libraries' names from leak checkers */
			return;
		}
		const char *e = dlerror();
		int enoent = e && strstr(e, cands[i]) && strstr(e, "No such file or directory");
		printf("try\t%d\t%s\t%s\t%s\n", entry, clean(cands[i], b2, sizeof(b2)),
		       enoent ? "enoent" : "error", clean(e ? e : "dlopen failed", b1, sizeof(b1)));
	}
}

static int mode_load(void)
{
	const char *env = getenv("NCCL_NET_PLUGIN");
	char *list, *save = NULL;
	int n = 0;

	if (!env) {
		printf("list\tunset\tlibnccl-net.so\n");
		load_entry(0, "libnccl-net.so");
		return 0;
	}
	if (!strcasecmp(env, "none")) {
		printf("list\tnone\t\n");
		return 0;
	}
	printf("list\tset\t%s\n", env);
	list = strdup(env);
	for (char *name = list ? strtok_r(list, ",", &save) : NULL; name;
	     name = strtok_r(NULL, ",", &save)) {
		if (n >= NCCL_MAX_LIST) {
			printf("ignored\t%s\tlist too long\n", name);
			continue;
		}
		if (strlen(name) + 1 > NCCL_MAX_NAME) {
			printf("ignored\t%.60s...\tname too long\n", name);
			continue;
		}
		load_entry(n++, name);
	}
	free(list);
	return 0;
}

/* ---- selftest ----------------------------------------------------------------------- */

#define STEP(s) (printf("step\t%s\n", (s)), fflush(stdout))
#define PAD 64

/* The first failure of the device under test (or of the whole run). */
static char fail_step[32], fail_msg[1100];

static int fail(const char *step, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(const char *step, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (!fail_step[0]) {
		snprintf(fail_step, sizeof(fail_step), "%s", step);
		clean(msg, fail_msg, sizeof(fail_msg));
	}
	printf("fail\t%s\t%s\n", step, fail_msg);
	fflush(stdout);
	return -1;
}

#define CALL(step, expr)                                                                  \
	do {                                                                              \
		ncclResult_t r_ = (expr);                                                 \
		if (r_ != ncclSuccess)                                                    \
			return fail(step, "%s returned %s", step, pl_result_str(r_));     \
	} while (0)

struct pair {
	void *l, *s, *r;
};

static int connect_self(struct pl_net *net, int dev, struct pair *p, int64_t deadline)
{
	static char handle[NCCL_NET_HANDLE_MAXSIZE];

	memset(p, 0, sizeof(*p));
	STEP("listen");
	CALL("listen", pl_listen(net, dev, handle, &p->l));
	if (!p->l)
		return fail("listen", "listen returned no comm");
	STEP("connect");
	while (!p->s || !p->r) {
		if (!p->s)
			CALL("connect", pl_connect(net, dev, handle, &p->s));
		if (!p->r)
			CALL("accept", pl_accept(net, p->l, &p->r));
		if (now_ms() > deadline)
			return fail(p->s ? "accept" : "connect", "device %d did not connect to itself "
				    "in time", dev);
		sched_yield();
	}
	return 0;
}

/* One message of size bytes from p->s to p->r, every byte checked. */
static int move_one(struct pl_net *net, struct pair *p, size_t size, uint64_t key,
		    int64_t deadline)
{
	char *sb = malloc(size), *rb = malloc(size + PAD), why[256];
	void *smh = NULL, *rmh = NULL, *sreq = NULL, *rreq = NULL, *rdata;
	size_t rsize = size + PAD;
	int tag = (int)(size & 0x7fff), sdone = 0, rdone = 0, got = -1, one, rc = -1;

	if (!sb || !rb) {
		rc = fail("alloc", "out of memory for %zu bytes", size);
		goto out;
	}
	pat_fill(sb, size, key);
	canary_fill(rb, 0, size + PAD);
	STEP("regMr");
	if (pl_reg_mr(net, p->s, sb, size, NCCL_PTR_HOST, &smh) != ncclSuccess ||
	    pl_reg_mr(net, p->r, rb, size + PAD, NCCL_PTR_HOST, &rmh) != ncclSuccess) {
		rc = fail("regMr", "registering %zu bytes of host memory failed", size);
		goto out;
	}
	rdata = rb;
	STEP("transfer");
	while (!sdone || !rdone) {
		if (!rreq && pl_irecv(net, p->r, 1, &rdata, &rsize, &tag, &rmh, &rreq)) {
			rc = fail("irecv", "irecv failed");
			goto out;
		}
		if (!sreq && pl_isend(net, p->s, sb, size, tag, smh, &sreq)) {
			rc = fail("isend", "isend failed");
			goto out;
		}
		if (sreq && !sdone && pl_test(net, sreq, &sdone, &one)) {
			rc = fail("test", "test on the send failed");
			goto out;
		}
		if (rreq && !rdone && pl_test(net, rreq, &rdone, &got)) {
			rc = fail("test", "test on the receive failed");
			goto out;
		}
		if (now_ms() > deadline) {
			rc = fail("transfer", "%zu bytes did not arrive in time (send %s, receive %s)",
				  size, sdone ? "done" : "pending", rdone ? "done" : "pending");
			goto out;
		}
	}
	STEP("verify");
	if (got != (int)size)
		rc = fail("verify", "the receive reported %d bytes, %zu were sent", got, size);
	else if (pat_check(rb, size, key, why, sizeof(why)))
		rc = fail("verify", "%zu bytes arrived damaged: %s", size, why);
	else if (canary_check(rb, size, size + PAD, why, sizeof(why)))
		rc = fail("verify", "bytes past the %zu sent were written: %s", size, why);
	else
		rc = 0;
out:
	if (smh)
		pl_dereg_mr(net, p->s, smh);
	if (rmh)
		pl_dereg_mr(net, p->r, rmh);
	free(sb);
	free(rb);
	return rc;
}

static int loaded_lib(struct dl_phdr_info *info, size_t size, void *arg)
{
	static const char *const watch[] = {"libfabric.so", "libibverbs.so", "libefa.so", NULL};
	const char *base = strrchr(info->dlpi_name, '/');
	char b[4096];

	(void)size;
	(void)arg;
	base = base ? base + 1 : info->dlpi_name;
	for (int i = 0; watch[i]; i++) {
		if (strncmp(base, watch[i], strlen(watch[i])))
			continue;
		unsigned ver = 0;
		void *h = dlopen(info->dlpi_name, RTLD_LAZY | RTLD_NOLOAD);
		uint32_t (*fi_version_fn)(void) = NULL;
		if (h && i == 0)
			*(void **)&fi_version_fn = dlsym(h, "fi_version");
		if (fi_version_fn)
			ver = fi_version_fn();
		printf("lib\t%s\t%s\t%u.%u\n", watch[i], clean(info->dlpi_name, b, sizeof(b)),
		       ver >> 16, ver & 0xffff);
		if (h)
			dlclose(h);
	}
	return 0;
}

static int selftest_dev(struct pl_net *net, int dev, int64_t deadline, size_t *moved)
{
	static const size_t sizes[] = {4096, (1u << 20) + 291}; /* eager, and rendezvous */
	struct pl_props props;
	struct pair p;
	char b[600];
	int rc = 0;

	STEP("getProperties");
	CALL("getProperties", pl_get_properties(net, dev, &props));
	printf("dev\t%d\t%s\t%d\t%d\n", dev, clean(props.name, b, sizeof(b)), props.speed,
	       props.ptrSupport);
	if (connect_self(net, dev, &p, deadline))
		rc = -1;
	for (size_t i = 0; !rc && i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		rc = move_one(net, &p, sizes[i], pat_key(0xd0c7, sizes[i], (uint64_t)dev), deadline);
		if (!rc)
			*moved += sizes[i];
	}
	STEP("close");
	if (p.s)
		pl_close_send(net, p.s);
	if (p.r)
		pl_close_recv(net, p.r);
	if (p.l)
		pl_close_listen(net, p.l);
	return rc;
}

static int mode_selftest(const char *lib, int timeout_ms)
{
	struct pl_net net;
	int64_t t0 = now_ms(), deadline = t0 + timeout_ms;
	size_t moved = 0;
	int ndev = 0, tested = 0, rc = 0;
	char b[4096];

	/* the plugin's INFO lines say which provider it chose and why */
	setenv("NCCL_DEBUG", "INFO", 1);
	STEP("load");
	if (pl_open(&net, lib, 0))
		return fail("load", "%s", net.err);
	printf("plugin\t%s\t%d\t%s\n", clean(net.path, b, sizeof(b)), net.version, net.name);
	STEP("init");
	ncclResult_t r = pl_init(&net);
	dl_iterate_phdr(loaded_lib, NULL);
	if (r != ncclSuccess) {
		fail("init", "init returned %s", pl_result_str(r));
		return 1;
	}
	if (pl_devices(&net, &ndev) != ncclSuccess || ndev <= 0) {
		fail("devices", "the plugin reports %d devices", ndev);
		rc = -1;
	}
	/* every device, also after one failed: the doctor says which work */
	for (int d = 0; ndev > 0 && d < ndev && d < 8 && now_ms() < deadline; d++, tested++) {
		int64_t dl = now_ms() + 10000 < deadline ? now_ms() + 10000 : deadline;
		fail_step[0] = fail_msg[0] = '\0';
		if (selftest_dev(&net, d, dl, &moved)) {
			printf("devresult\t%d\tfail\t%s\t%s\n", d, fail_step, fail_msg);
			rc = -1;
		} else {
			printf("devresult\t%d\tok\t\t\n", d);
		}
	}
	pl_finalize(&net);
	/* no pl_close: the process ends here (see load_entry) */
	printf("%s\t%d\t%d\t%zu\t%lld\n", rc ? "done" : "ok", tested, ndev, moved,
	       (long long)(now_ms() - t0));
	return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 2 && !strcmp(argv[1], "load"))
		return mode_load();
	if ((argc == 3 || argc == 4) && !strcmp(argv[1], "selftest"))
		return mode_selftest(argv[2], argc == 4 ? atoi(argv[3]) : 20000);
	fprintf(stderr, "usage: fabnet-doctor-probe load | selftest LIBRARY [TIMEOUT_MS]\n"
			"(run by fabnet-info --doctor)\n");
	return 2;
}
