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
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include <rdma/fabric.h>
#include <rdma/fi_domain.h>

#include "../../tools/ctl.h"
#include "../../tools/pattern.h"
#include "../../tools/plugin_loader.h"

#define MiB (1024u * 1024u)
#define CANARY_PAD 4096
#define MAX_GROUP 8
#define MAX_PAIRS 64



/* ---- global state (also read by the signal handlers) ------------------------ */

struct shared_tally {
	volatile int passed;
	volatile int failed;
	volatile int crashed; /* a rank died inside a scenario and counted it */
	volatile int reported; /* scenario verdicts printed (crashes included) */
	volatile int setup_failed;
};

static struct shared_tally local_tally;
static struct shared_tally *g_tally = &local_tally;
static int g_forked;               /* ranks are children of one fabnet-ft */
static volatile int g_rank = -1;
static const char *volatile g_scen = "setup";
static const char *volatile g_step = "start";
static int g_verbose;
static unsigned g_watchdog_s = 130;

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

static const char *volatile g_phase;
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
static void install_handlers(int chain)
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

static void wd_kick(void)
{
	alarm(g_watchdog_s);
}

static void vnote(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void vnote(const char *fmt, ...)
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

/* ---- the test context ------------------------------------------------------- */

struct qmsg {
	struct qmsg *next;
	uint16_t kind;
	uint16_t scen;
	uint32_t len;
	uint8_t data[];
};

enum { MSG_DATA = 1, MSG_RESULT = 2 };
#define CTL_MAGIC 0xfab7e570u
#define REASON_MAX 900

struct ft {
	struct pl_net base;   /* the table chosen by --abi / newest */
	struct pl_net *net;   /* the table in use (abi swaps it) */
	struct pl_props props;
	int rank;
	int dev;
	struct ctl ctl;
	const char *plugin;
	int abi;
	uint64_t seed;
	int op_timeout_ms;

	/* the scenario in progress */
	uint16_t scen;
	const char *scen_name;
	char why[REASON_MAX];  /* our failure */
	const char *phase;     /* part of the scenario, prefixed to failures */
	int subs;              /* parts run with sub() in this scenario */
	char subfail[2 * REASON_MAX]; /* their failures */
	struct qmsg *q;        /* DATA messages received ahead */
	int peer_done, peer_ok;
	char peer_why[REASON_MAX];
	int peer_gone;
	char gone_why[300];
	int64_t last_peer_poll;

	/* fbuf_alloc registers through regMrDmaBuf with a memfd when set */
	int dmabuf;
	size_t dmabuf_off;   /* page-aligned offset of the buffer in its memfd */
};

static int fail(struct ft *ft, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct ft *ft, const char *fmt, ...)
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

#define CALL(ft, expr, what)                                                            \
	do {                                                                            \
		ncclResult_t r_ = (expr);                                               \
		if (r_ != ncclSuccess)                                                  \
			return fail((ft), "%s returned %d (%s)", (what), (int)r_,       \
				    pl_result_str(r_));                                 \
	} while (0)

/* ---- control messages ---------------------------------------------------------- */

struct ctl_hdr {
	uint32_t magic;
	uint16_t kind;
	uint16_t scen;
	uint32_t len;
};

static int ctl_put(struct ft *ft, uint16_t kind, const void *buf, uint32_t len)
{
	struct ctl_hdr h = {CTL_MAGIC, kind, ft->scen, len};

	if (ft->peer_gone)
		return -1;
	if (ctl_send(&ft->ctl, &h, sizeof(h)) || (len && ctl_send(&ft->ctl, buf, len))) {
		ft->peer_gone = 1;
		snprintf(ft->gone_why, sizeof(ft->gone_why), "%s", ft->ctl.err);
		return -1;
	}
	return 0;
}

/* The peer's verdict on the current unit; frees m. */
static void take_result(struct ft *ft, struct qmsg *m)
{
	int32_t ok = 0;

	if (m->len >= 4)
		memcpy(&ok, m->data, 4);
	ft->peer_done = 1;
	ft->peer_ok = ok;
	snprintf(ft->peer_why, sizeof(ft->peer_why), "%s",
		 m->len > 4 ? (const char *)m->data + 4 : "");
	free(m);
}

/* Drops queued messages of earlier units; takes a queued verdict on this one. */
static void absorb_queue(struct ft *ft)
{
	struct qmsg **pp = &ft->q;

	while (*pp) {
		struct qmsg *m = *pp;
		if (m->scen < ft->scen) {
			*pp = m->next;
			free(m);
		} else if (m->scen == ft->scen && m->kind == MSG_RESULT) {
			*pp = m->next;
			take_result(ft, m);
		} else {
			pp = &m->next;
		}
	}
}

/* Starts a unit of work whose verdicts the ranks exchange (a scenario or a
 * part of one): messages are tagged with its number, so a rank that gave up
 * early never confuses the other. */
static void begin_unit(struct ft *ft)
{
	ft->scen++;
	ft->why[0] = '\0';
	ft->peer_done = ft->peer_ok = 0;
	ft->peer_why[0] = '\0';
	absorb_queue(ft);
}

/* Reads one message if one arrives within wait_ms. 1: got one, 0: none, -1: gone. */
static int ctl_pump(struct ft *ft, int wait_ms)
{
	struct ctl_hdr h;
	struct qmsg *m;
	int64_t until = now_ms() + wait_ms;

	if (ft->peer_gone)
		return -1;
	for (;;) {
		int r = ctl_readable(&ft->ctl);
		if (r < 0)
			goto gone;
		if (r > 0)
			break;
		if (now_ms() >= until)
			return 0;
		usleep(wait_ms > 50 ? 2000 : 200);
	}
	if (ctl_recv(&ft->ctl, &h, sizeof(h)))
		goto gone;
	if (h.magic != CTL_MAGIC || h.len > (64u << 20)) {
		snprintf(ft->ctl.err, sizeof(ft->ctl.err), "control stream out of step "
			 "(bad header)");
		goto gone;
	}
	m = malloc(sizeof(*m) + h.len + 1);
	if (!m)
		goto gone;
	m->next = NULL;
	m->kind = h.kind;
	m->scen = h.scen;
	m->len = h.len;
	if (h.len && ctl_recv(&ft->ctl, m->data, h.len)) {
		free(m);
		goto gone;
	}
	m->data[h.len] = '\0';
	if (m->scen < ft->scen) { /* left over from an aborted scenario */
		free(m);
		return 1;
	}
	if (m->kind == MSG_RESULT && m->scen == ft->scen) {
		take_result(ft, m);
		return 1;
	}
	/* append */
	{
		struct qmsg **pp = &ft->q;
		while (*pp)
			pp = &(*pp)->next;
		*pp = m;
	}
	return 1;
gone:
	ft->peer_gone = 1;
	snprintf(ft->gone_why, sizeof(ft->gone_why), "%s", ft->ctl.err);
	return -1;
}

/* Non-blocking: has the peer given up on this scenario (or died)? */
static int peer_failed(struct ft *ft)
{
	int64_t t = now_ms();

	if (t - ft->last_peer_poll >= 20) {
		ft->last_peer_poll = t;
		while (ctl_pump(ft, 0) > 0)
			;
	}
	if (ft->peer_gone)
		return fail(ft, "the peer rank is gone: %s", ft->gone_why);
	if (ft->peer_done && !ft->peer_ok)
		return fail(ft, "stopped: the peer rank failed");
	return 0;
}

static int ft_send(struct ft *ft, const void *buf, uint32_t len)
{
	if (ctl_put(ft, MSG_DATA, buf, len))
		return fail(ft, "control channel: %s", ft->gone_why);
	return 0;
}

static int ft_recv(struct ft *ft, void *buf, uint32_t len)
{
	int64_t deadline = now_ms() + ft->op_timeout_ms;

	for (;;) {
		struct qmsg **pp;
		for (pp = &ft->q; *pp; pp = &(*pp)->next) {
			struct qmsg *m = *pp;
			if (m->kind != MSG_DATA || m->scen != ft->scen)
				continue;
			*pp = m->next;
			if (m->len != len) {
				uint32_t got = m->len;
				free(m);
				return fail(ft, "control message of %u bytes where %u were expected "
					    "(ranks out of step)", got, len);
			}
			memcpy(buf, m->data, len);
			free(m);
			wd_kick();
			return 0;
		}
		if (ft->peer_done)
			return fail(ft, ft->peer_ok ? "the peer rank ended the scenario early" :
				    "stopped: the peer rank failed");
		if (ft->peer_gone)
			return fail(ft, "the peer rank is gone: %s", ft->gone_why);
		if (now_ms() > deadline)
			return fail(ft, "no control message from the peer rank within %d s",
				    ft->op_timeout_ms / 1000);
		ctl_pump(ft, 100);
	}
}

static int ft_sync(struct ft *ft)
{
	uint8_t t = 0x5c, in = 0;

	if (ft_send(ft, &t, 1) || ft_recv(ft, &in, 1))
		return -1;
	return 0;
}

/* Sends our verdict, waits for the peer's. Returns 1 if both passed. */
static int ft_finish(struct ft *ft, int ok)
{
	char buf[4 + REASON_MAX];
	int32_t v = ok;
	int64_t deadline;

	memcpy(buf, &v, 4);
	snprintf(buf + 4, sizeof(buf) - 4, "%s", ok ? "" : ft->why);
	alarm(0);
	g_step = "waiting for the peer's verdict";
	ctl_put(ft, MSG_RESULT, buf, (uint32_t)(4 + strlen(buf + 4) + 1));
	deadline = now_ms() + 3 * (int64_t)ft->op_timeout_ms + 60000;
	absorb_queue(ft);
	while (!ft->peer_done && !ft->peer_gone && now_ms() < deadline)
		ctl_pump(ft, 200);
	if (!ft->peer_done && !ft->peer_gone) {
		ft->peer_ok = 0;
		snprintf(ft->peer_why, sizeof(ft->peer_why), "no verdict from the peer rank "
			 "within %d s", (int)((3 * (int64_t)ft->op_timeout_ms + 60000) / 1000));
	} else if (!ft->peer_done) {
		ft->peer_ok = 0;
		snprintf(ft->peer_why, sizeof(ft->peer_why), "exited or crashed (see its "
			 "message above)");
	}
	{ /* drop messages of this unit that nobody read */
		struct qmsg **pp = &ft->q;
		while (*pp) {
			struct qmsg *m = *pp;
			if (m->scen <= ft->scen) {
				*pp = m->next;
				free(m);
			} else {
				pp = &m->next;
			}
		}
	}
	return ok && ft->peer_ok;
}

/* Runs one part of a scenario as its own unit: both ranks exchange verdicts
 * at its end, so a failed part is reported and the next part still runs.
 * Failures accumulate in ft->subfail. Returns 1 if both ranks passed. */
static int sub(struct ft *ft, const char *name, int (*fn)(struct ft *, const void *),
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

/* ---- buffers and requests --------------------------------------------------------- */

struct fbuf {
	uint8_t *p;
	size_t cap;
	void *mh;
	void *comm;
	int mapped;     /* 1: anonymous mmap; 2: memfd mapping at map */
	uint8_t *map;   /* mapped == 2: the whole memfd */
	size_t maplen;
};

static size_t page_size(void)
{
	long ps = sysconf(_SC_PAGESIZE);

	return ps > 0 ? (size_t)ps : 4096;
}

/* A buffer backed by a memfd (a stand-in for a dma-buf exporter), registered
 * with regMrDmaBuf(type NCCL_PTR_HOST, offset). The fd is closed right after
 * the call, as NCCL does: the registration must not depend on it. */
static int fbuf_alloc_dmabuf(struct ft *ft, void *comm, size_t cap, struct fbuf *b)
{
	size_t off = ft->dmabuf_off, ps = page_size();
	size_t len = (off + cap + ps - 1) / ps * ps;
	ncclResult_t r;
	void *m;
	int fd;

	fd = memfd_create("fabnet-ft-dmabuf", MFD_CLOEXEC);
	if (fd < 0)
		return fail(ft, "memfd_create: %s", strerror(errno));
	if (ftruncate(fd, (off_t)len)) {
		close(fd);
		return fail(ft, "ftruncate of the memfd to %zu bytes: %s", len, strerror(errno));
	}
	m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		close(fd);
		return fail(ft, "mmap(MAP_SHARED) of the memfd (%zu bytes): %s", len, strerror(errno));
	}
	b->map = m;
	b->maplen = len;
	b->mapped = 2;
	b->p = (uint8_t *)m + off;
	b->cap = cap;
	b->comm = comm;
	g_step = "regMrDmaBuf";
	r = pl_reg_mr_dmabuf(ft->net, comm, b->p, cap, NCCL_PTR_HOST, off, fd, &b->mh);
	close(fd); /* as NCCL: right after the call */
	vnote("regMrDmaBuf(%p, %zu bytes, offset %zu, fd %d): memfd mapped at %p (%zu bytes)",
	      (void *)b->p, cap, off, fd, (void *)m, len);
	if (r != ncclSuccess) {
		munmap(m, len);
		memset(b, 0, sizeof(*b));
		return fail(ft, "regMrDmaBuf(%zu bytes, NCCL_PTR_HOST, offset %zu) returned %d (%s)",
			    cap, off, (int)r, pl_result_str(r));
	}
	if (!b->mh) {
		munmap(m, len);
		memset(b, 0, sizeof(*b));
		return fail(ft, "regMrDmaBuf(%zu bytes) returned ncclSuccess and a NULL mhandle", cap);
	}
	return 0;
}

static int fbuf_alloc(struct ft *ft, void *comm, size_t cap, struct fbuf *b)
{
	memset(b, 0, sizeof(*b));
	if (cap == 0)
		cap = 64;
	if (ft->dmabuf)
		return fbuf_alloc_dmabuf(ft, comm, cap, b);
	if (cap >= MiB) {
		void *p = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return fail(ft, "mmap %zu bytes: %s", cap, strerror(errno));
		b->p = p;
		b->mapped = 1;
	} else {
		b->p = malloc(cap);
		if (!b->p)
			return fail(ft, "malloc %zu bytes failed", cap);
	}
	b->cap = cap;
	b->comm = comm;
	g_step = "regMr";
	{
		ncclResult_t r = pl_reg_mr(ft->net, comm, b->p, cap, NCCL_PTR_HOST, &b->mh);
		if (r != ncclSuccess) {
			if (b->mapped)
				munmap(b->p, cap);
			else
				free(b->p);
			b->p = NULL;
			return fail(ft, "regMr(%zu bytes, NCCL_PTR_HOST) returned %d (%s)", cap, (int)r,
				    pl_result_str(r));
		}
	}
	return 0;
}

/* Deregisters (unless dereg is 0) and frees. Returns -1 if deregMr failed. */
static int fbuf_free(struct ft *ft, struct fbuf *b, int dereg)
{
	int rc = 0;

	if (!b->p)
		return 0;
	if (dereg && b->mh) {
		ncclResult_t r;
		g_step = "deregMr";
		r = pl_dereg_mr(ft->net, b->comm, b->mh);
		if (r != ncclSuccess)
			rc = fail(ft, "deregMr returned %d (%s)", (int)r, pl_result_str(r));
	}
	if (b->mapped == 2)
		munmap(b->map, b->maplen);
	else if (b->mapped)
		munmap(b->p, b->cap);
	else
		free(b->p);
	memset(b, 0, sizeof(*b));
	return rc;
}

enum { OP_SEND = 1, OP_RECV = 2 };

struct xop {
	int kind;
	void *comm;
	int n;
	void *data[MAX_GROUP];
	size_t size[MAX_GROUP]; /* send: bytes to send; recv: buffer sizes posted */
	int tag[MAX_GROUP];
	void *mh[MAX_GROUP];
	void *req;
	int posted, done;
	int got[MAX_GROUP];     /* sizes reported by test() */
	int prev;               /* previous op on the same comm, or -1 */
	int label;              /* for messages */
};

static int op_post(struct ft *ft, struct xop *op)
{
	ncclResult_t r;

	if (op->kind == OP_SEND) {
		g_step = "isend";
		r = pl_isend(ft->net, op->comm, op->data[0], op->size[0], op->tag[0], op->mh[0],
			     &op->req);
		if (r != ncclSuccess)
			return fail(ft, "isend #%d (%zu bytes, tag %d) returned %d (%s)", op->label,
				    op->size[0], op->tag[0], (int)r, pl_result_str(r));
	} else {
		g_step = "irecv";
		r = pl_irecv(ft->net, op->comm, op->n, op->data, op->size, op->tag, op->mh, &op->req);
		if (r != ncclSuccess)
			return fail(ft, "irecv #%d (n=%d, first size %zu) returned %d (%s)", op->label,
				    op->n, op->size[0], (int)r, pl_result_str(r));
	}
	if (op->req)
		op->posted = 1;
	return 0;
}

static int op_test(struct ft *ft, struct xop *op)
{
	int done = 0, sizes[MAX_GROUP];
	ncclResult_t r;

	for (int i = 0; i < MAX_GROUP; i++)
		sizes[i] = -12345;
	g_step = "test";
	r = pl_test(ft->net, op->req, &done, sizes);
	if (r != ncclSuccess)
		return fail(ft, "test() on %s #%d returned %d (%s)",
			    op->kind == OP_SEND ? "isend" : "irecv", op->label, (int)r,
			    pl_result_str(r));
	if (done) {
		op->done = 1;
		op->req = NULL;
		for (int i = 0; i < op->n; i++)
			op->got[i] = sizes[i];
	}
	return 0;
}

/* Posts ops in list order per comm (an op waits until the previous one on its
 * comm is posted), retrying posts that return a NULL request, and tests every
 * posted request until all are complete. Fails after op_timeout_ms without
 * any progress. */
static int run_ops(struct ft *ft, struct xop *ops, int nops)
{
	int left = nops;
	int64_t deadline = now_ms() + ft->op_timeout_ms;

	for (int i = 0; i < nops; i++) {
		ops[i].prev = -1;
		for (int j = i - 1; j >= 0; j--)
			if (ops[j].comm == ops[i].comm) {
				ops[i].prev = j;
				break;
			}
		if (ops[i].kind == OP_SEND)
			ops[i].n = 1;
	}
	while (left) {
		int progress = 0;

		for (int i = 0; i < nops; i++) {
			struct xop *op = &ops[i];
			if (op->posted || (op->prev >= 0 && !ops[op->prev].posted))
				continue;
			if (op_post(ft, op))
				return -1;
			progress |= op->posted;
		}
		for (int i = 0; i < nops; i++) {
			struct xop *op = &ops[i];
			if (!op->posted || op->done)
				continue;
			if (op_test(ft, op))
				return -1;
			if (op->done) {
				left--;
				progress = 1;
			}
		}
		if (progress) {
			deadline = now_ms() + ft->op_timeout_ms;
			wd_kick();
			continue;
		}
		if (peer_failed(ft))
			return -1;
		if (now_ms() > deadline) {
			int unposted = 0, pending = 0, first = -1;
			for (int i = 0; i < nops; i++) {
				if (!ops[i].posted)
					unposted++;
				else if (!ops[i].done)
					pending++;
				if (first < 0 && !ops[i].done)
					first = i;
			}
			return fail(ft, "no progress for %d s: %d of %d %s still to post (request "
				    "NULL), %d posted but never complete; first stuck: #%d (%s, "
				    "%zu bytes)", ft->op_timeout_ms / 1000, unposted, nops,
				    ops[0].kind == OP_SEND ? "isends" : "irecvs", pending,
				    ops[first].label, ops[first].posted ? "posted" : "not posted",
				    ops[first].size[0]);
		}
		sched_yield();
	}
	return 0;
}

/* ---- connection set-up ---------------------------------------------------------- */

struct pair {
	void *lcomm;   /* rank 0: listen comm */
	void *comm;    /* rank 0: recv comm; rank 1: send comm */
	uint8_t handle[NCCL_NET_HANDLE_MAXSIZE];
};

/* Connects/accepts until every comm is non-NULL, interleaved, as NCCL does. */
static int connect_all(struct ft *ft, struct pair *p, int n, int close_listen)
{
	int64_t deadline = now_ms() + ft->op_timeout_ms;
	int left = n;
	ncclResult_t r;

	while (left) {
		int progress = 0;
		for (int i = 0; i < n; i++) {
			if (p[i].comm)
				continue;
			if (ft->rank == 0) {
				g_step = "accept";
				r = pl_accept(ft->net, p[i].lcomm, &p[i].comm);
				if (r != ncclSuccess)
					return fail(ft, "accept (comm %d of %d) returned %d (%s)", i, n,
						    (int)r, pl_result_str(r));
			} else {
				g_step = "connect";
				r = pl_connect(ft->net, ft->dev, p[i].handle, &p[i].comm);
				if (r != ncclSuccess)
					return fail(ft, "connect (comm %d of %d) returned %d (%s)", i,
						    n, (int)r, pl_result_str(r));
			}
			if (p[i].comm) {
				left--;
				progress = 1;
			}
		}
		if (progress) {
			deadline = now_ms() + ft->op_timeout_ms;
			wd_kick();
			continue;
		}
		if (peer_failed(ft))
			return -1;
		if (now_ms() > deadline)
			return fail(ft, "%s still NULL after %d s for %d of %d comms",
				    ft->rank == 0 ? "accept" : "connect", ft->op_timeout_ms / 1000,
				    left, n);
		sched_yield();
	}
	if (close_listen && ft->rank == 0)
		for (int i = 0; i < n; i++) {
			g_step = "closeListen";
			CALL(ft, pl_close_listen(ft->net, p[i].lcomm), "closeListen");
			p[i].lcomm = NULL;
		}
	return 0;
}

/* n listens on rank 0, handles to rank 1, connect/accept. */
static int pairs_open(struct ft *ft, struct pair *p, int n, int close_listen)
{
	memset(p, 0, sizeof(*p) * (size_t)n);
	if (ft->rank == 0) {
		uint8_t *all = calloc((size_t)n, NCCL_NET_HANDLE_MAXSIZE);
		if (!all)
			return fail(ft, "out of memory");
		for (int i = 0; i < n; i++) {
			ncclResult_t r;
			g_step = "listen";
			r = pl_listen(ft->net, ft->dev, p[i].handle, &p[i].lcomm);
			if (r != ncclSuccess || !p[i].lcomm) {
				free(all);
				return fail(ft, "listen (comm %d of %d) returned %d (%s)%s", i, n,
					    (int)r, pl_result_str(r),
					    r == ncclSuccess ? " with a NULL listen comm" : "");
			}
			memcpy(all + (size_t)i * NCCL_NET_HANDLE_MAXSIZE, p[i].handle,
			       NCCL_NET_HANDLE_MAXSIZE);
		}
		if (ft_send(ft, all, (uint32_t)n * NCCL_NET_HANDLE_MAXSIZE)) {
			free(all);
			return -1;
		}
		free(all);
	} else {
		uint8_t *all = calloc((size_t)n, NCCL_NET_HANDLE_MAXSIZE);
		if (!all)
			return fail(ft, "out of memory");
		if (ft_recv(ft, all, (uint32_t)n * NCCL_NET_HANDLE_MAXSIZE)) {
			free(all);
			return -1;
		}
		for (int i = 0; i < n; i++)
			memcpy(p[i].handle, all + (size_t)i * NCCL_NET_HANDLE_MAXSIZE,
			       NCCL_NET_HANDLE_MAXSIZE);
		free(all);
	}
	return connect_all(ft, p, n, close_listen);
}

static int close_comm(struct ft *ft, void *comm)
{
	if (!comm)
		return 0;
	if (ft->rank == 0) {
		g_step = "closeRecv";
		CALL(ft, pl_close_recv(ft->net, comm), "closeRecv");
	} else {
		g_step = "closeSend";
		CALL(ft, pl_close_send(ft->net, comm), "closeSend");
	}
	return 0;
}

static int pairs_close(struct ft *ft, struct pair *p, int n)
{
	int rc = 0;

	for (int i = 0; i < n; i++) {
		rc |= close_comm(ft, p[i].comm);
		p[i].comm = NULL;
		if (p[i].lcomm) {
			ncclResult_t r;
			g_step = "closeListen";
			r = pl_close_listen(ft->net, p[i].lcomm);
			if (r != ncclSuccess)
				rc = fail(ft, "closeListen returned %d (%s)", (int)r, pl_result_str(r));
			p[i].lcomm = NULL;
		}
	}
	return rc ? -1 : 0;
}

/* ---- messages: one description shared by both ranks --------------------------- */

struct msg {
	int comm;          /* index into the pairs */
	size_t size;       /* bytes sent */
	size_t cap;        /* receive buffer size posted (>= size) */
	int tag;
	uint64_t iter;     /* pattern iteration */
};

/* Rank-side state of a batch of messages. */
struct batch {
	struct fbuf *bufs;
	struct xop *ops;
	int nbufs, nops;
};

static void batch_free(struct ft *ft, struct batch *b)
{
	for (int i = 0; i < b->nbufs; i++)
		fbuf_free(ft, &b->bufs[i], 1);
	free(b->bufs);
	free(b->ops);
	memset(b, 0, sizeof(*b));
}

/* Checks one received buffer: reported size, data, canary. */
static int check_recv(struct ft *ft, const char *what, const struct fbuf *buf, size_t sent,
		      uint64_t iter, int reported)
{
	char why[400];

	if (reported != (int)sent)
		return fail(ft, "%s: test() reported %d bytes received, %zu were sent", what,
			    reported, sent);
	if (pat_check(buf->p, sent, pat_key(ft->seed, sent, iter), why, sizeof(why)))
		return fail(ft, "%s (%zu bytes): %s", what, sent, why);
	if (canary_check(buf->p, sent, buf->cap, why, sizeof(why)))
		return fail(ft, "%s: %s", what, why);
	return 0;
}

/*
 * Transfers the messages: groups[g] lists message indices received together by
 * one irecv (n = group size) on rank 0; on rank 1 every message is one isend,
 * issued in send_order. Each message has its own buffer, registered on its comm.
 * Then rank 0 verifies everything and rank 1 checks the sizes test() reported.
 */
static int transfer(struct ft *ft, struct pair *pairs, const struct msg *m, int nmsg,
		    const int *group_start, int ngroups, const int *send_order, const char *what)
{
	struct batch b;
	int rc = -1;

	memset(&b, 0, sizeof(b));
	b.bufs = calloc((size_t)nmsg, sizeof(*b.bufs));
	b.ops = calloc((size_t)nmsg, sizeof(*b.ops));
	if (!b.bufs || !b.ops) {
		fail(ft, "out of memory");
		goto out;
	}
	b.nbufs = nmsg;
	for (int i = 0; i < nmsg; i++) {
		void *comm = pairs[m[i].comm].comm;
		if (ft->rank == 0) {
			if (fbuf_alloc(ft, comm, m[i].cap + CANARY_PAD, &b.bufs[i]))
				goto out;
			canary_fill(b.bufs[i].p, 0, b.bufs[i].cap);
		} else {
			if (fbuf_alloc(ft, comm, m[i].size, &b.bufs[i]))
				goto out;
			pat_fill(b.bufs[i].p, m[i].size, pat_key(ft->seed, m[i].size, m[i].iter));
		}
	}
	if (ft->rank == 0) {
		b.nops = ngroups;
		for (int g = 0; g < ngroups; g++) {
			struct xop *op = &b.ops[g];
			int first = group_start[g], last = g + 1 < ngroups ? group_start[g + 1] : nmsg;
			op->kind = OP_RECV;
			op->comm = pairs[m[first].comm].comm;
			op->n = last - first;
			op->label = g;
			for (int j = 0; j < op->n; j++) {
				op->data[j] = b.bufs[first + j].p;
				op->size[j] = m[first + j].cap;
				op->tag[j] = m[first + j].tag;
				op->mh[j] = b.bufs[first + j].mh;
			}
		}
	} else {
		b.nops = nmsg;
		for (int k = 0; k < nmsg; k++) {
			int i = send_order ? send_order[k] : k;
			struct xop *op = &b.ops[k];
			op->kind = OP_SEND;
			op->comm = pairs[m[i].comm].comm;
			op->n = 1;
			op->label = i;
			op->data[0] = b.bufs[i].p;
			op->size[0] = m[i].size;
			op->tag[0] = m[i].tag;
			op->mh[0] = b.bufs[i].mh;
		}
	}
	vnote("%s: %d messages, %d ops", what, nmsg, b.nops);
	if (run_ops(ft, b.ops, b.nops))
		goto out;
	if (ft->rank == 0) {
		for (int g = 0; g < ngroups; g++) {
			int first = group_start[g];
			for (int j = 0; j < b.ops[g].n; j++) {
				int i = first + j;
				char lbl[160];
				snprintf(lbl, sizeof(lbl), "%s: message %d (comm %d, tag %d, recv %d of %d)",
					 what, i, m[i].comm, m[i].tag, j, b.ops[g].n);
				if (check_recv(ft, lbl, &b.bufs[i], m[i].size, m[i].iter,
					       b.ops[g].got[j]))
					goto out;
			}
		}
	} else {
		for (int k = 0; k < nmsg; k++) {
			int i = send_order ? send_order[k] : k;
			char why[400];
			if (b.ops[k].got[0] != (int)m[i].size) {
				fail(ft, "%s: test() on the isend of message %d reported %d bytes, not "
				     "%zu", what, i, b.ops[k].got[0], m[i].size);
				goto out;
			}
			if (pat_check(b.bufs[i].p, m[i].size, pat_key(ft->seed, m[i].size, m[i].iter),
				      why, sizeof(why))) {
				fail(ft, "%s: the send buffer of message %d changed: %s", what, i, why);
				goto out;
			}
		}
	}
	rc = 0;
out:
	batch_free(ft, &b);
	return rc;
}

/* One message per group (n = 1), sent in order. */
static int transfer_simple(struct ft *ft, struct pair *pairs, const struct msg *m, int nmsg,
			   const char *what)
{
	int *starts = malloc(sizeof(int) * (size_t)(nmsg ? nmsg : 1));
	int rc;

	if (!starts)
		return fail(ft, "out of memory");
	for (int i = 0; i < nmsg; i++)
		starts[i] = i;
	rc = transfer(ft, pairs, m, nmsg, starts, nmsg, NULL, what);
	free(starts);
	return rc;
}

/* ---- scenarios ------------------------------------------------------------------ */

static int scen_sizes(struct ft *ft)
{
	static const size_t sizes[] = {0, 1, 7, 4095, 4096, 65537, MiB, 64 * MiB + 3};
	struct pair p;
	int rc = -1;

	if (pairs_open(ft, &p, 1, 1))
		goto out;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct msg m = {.comm = 0, .size = sizes[i], .cap = sizes[i], .tag = 1, .iter = i};
		char what[64];
		if (sizes[i] > ft->props.maxP2pBytes) {
			vnote("skipping %zu bytes: maxP2pBytes is %zu", sizes[i], ft->props.maxP2pBytes);
			continue;
		}
		snprintf(what, sizeof(what), "%zu-byte message", sizes[i]);
		if (transfer_simple(ft, &p, &m, 1, what))
			goto out;
	}
	rc = 0;
out:
	pairs_close(ft, &p, 1);
	return rc;
}

static int scen_larger_recv(struct ft *ft)
{
	static const struct { size_t cap, size; } c[] = {
		{MiB, 1000}, {64 * 1024, 65536 - 5}, {8192, 0}, {4096, 1},
		{MiB, MiB - 1}, {4 * MiB, 70000}, {200000, 131072},
	};
	struct msg m[sizeof(c) / sizeof(c[0])];
	struct pair p;
	int rc = -1;

	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++)
		m[i] = (struct msg){.comm = 0, .size = c[i].size, .cap = c[i].cap, .tag = 2,
				    .iter = 100 + i};
	if (pairs_open(ft, &p, 1, 1))
		goto out;
	/* one at a time, then all at once */
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		char what[96];
		snprintf(what, sizeof(what), "send %zu into %zu", c[i].size, c[i].cap);
		if (transfer_simple(ft, &p, &m[i], 1, what))
			goto out;
	}
	if (transfer_simple(ft, &p, m, (int)(sizeof(c) / sizeof(c[0])), "all outstanding"))
		goto out;
	rc = 0;
out:
	pairs_close(ft, &p, 1);
	return rc;
}

static int scen_outstanding(struct ft *ft)
{
	static const size_t mix[] = {0, 1, 512, 4096, 8192, 8193, 65536, 300000, MiB + 17,
				     2 * MiB, 33, 100000};
	struct msg m[NCCL_NET_MAX_REQUESTS];
	struct pair p;
	int rc = -1;

	if (pairs_open(ft, &p, 1, 1))
		goto out;
	for (int round = 0; round < 3; round++) {
		char what[64];
		for (int i = 0; i < NCCL_NET_MAX_REQUESTS; i++) {
			size_t s = mix[(size_t)(i * 5 + round) % (sizeof(mix) / sizeof(mix[0]))];
			m[i] = (struct msg){.comm = 0, .size = s, .cap = s, .tag = 1000 + i,
					    .iter = (uint64_t)(round * 100 + i)};
		}
		snprintf(what, sizeof(what), "round %d of 32 outstanding", round);
		if (transfer_simple(ft, &p, m, NCCL_NET_MAX_REQUESTS, what))
			goto out;
	}
	rc = 0;
out:
	pairs_close(ft, &p, 1);
	return rc;
}

static void shuffle(int *v, int n, uint64_t seed)
{
	for (int i = 0; i < n; i++)
		v[i] = i;
	for (int i = n - 1; i > 0; i--) {
		int j = (int)(mix64(seed + (uint64_t)i) % (uint64_t)(i + 1));
		int t = v[i];
		v[i] = v[j];
		v[j] = t;
	}
}

static int scen_grouped(struct ft *ft)
{
	static const size_t gsz[] = {0, 5, 70000, 4096, 0, 200000, 13, MiB, 65537, 1};
	static const int ns[] = {2, 3, 8};
	struct pair p;
	int rc = -1, ran = 0;

	if (pairs_open(ft, &p, 1, 1))
		goto out;
	for (size_t k = 0; k < sizeof(ns) / sizeof(ns[0]); k++) {
		int n = ns[k];
		if (n > ft->props.maxRecvs) {
			vnote("skipping n=%d: maxRecvs is %d", n, ft->props.maxRecvs);
			if (ft->rank == 0)
				printf("# grouped: n=%d skipped, the device reports maxRecvs=%d\n", n,
				       ft->props.maxRecvs);
			continue;
		}
		for (int round = 0; round < 4; round++) {
			struct msg m[MAX_GROUP];
			int start = 0, order[MAX_GROUP];
			char what[64];

			for (int j = 0; j < n; j++) {
				size_t s = gsz[(size_t)(j + round * 3 + n) % (sizeof(gsz) / sizeof(gsz[0]))];
				m[j] = (struct msg){.comm = 0, .size = s,
						    .cap = s + ((j + round) % 2 ? 0 : 1000),
						    .tag = 7 + 13 * j + round, .iter = 1000u + (uint64_t)(round * 16 + j)};
			}
			shuffle(order, n, ft->seed ^ (uint64_t)(n * 100 + round));
			snprintf(what, sizeof(what), "n=%d round %d", n, round);
			if (transfer(ft, &p, m, n, &start, 1, order, what))
				goto out;
		}
		ran++;
	}
	if (!ran) {
		fail(ft, "the device reports maxRecvs=%d: no grouped receive could run",
		     ft->props.maxRecvs);
		goto out;
	}
	rc = 0;
out:
	pairs_close(ft, &p, 1);
	return rc;
}

static int scen_many_comms(struct ft *ft)
{
	static const size_t msz[] = {0, 1, 100, 4096, 9000, 65537, 150000};
	int npairs = MAX_PAIRS, rounds = 3, nmsg;
	struct pair *p = calloc(MAX_PAIRS, sizeof(*p));
	struct msg *m = calloc((size_t)MAX_PAIRS * 3, sizeof(*m));
	int rc = -1, opened = 0;

	if (!p || !m) {
		fail(ft, "out of memory");
		goto out;
	}
	if (ft->props.maxComms > 0 && ft->props.maxComms < npairs) {
		fail(ft, "the device reports maxComms=%d, fewer than %d", ft->props.maxComms, npairs);
		goto out;
	}
	opened = 1;
	if (pairs_open(ft, p, npairs, 0))
		goto out;
	nmsg = 0;
	for (int r = 0; r < rounds; r++)
		for (int k = 0; k < npairs; k++) {
			int c = ft->rank == 0 ? k : npairs - 1 - k;
			m[nmsg++] = (struct msg){
				.comm = c, .tag = 3,
				.size = msz[(size_t)(c + r * 5) % (sizeof(msz) / sizeof(msz[0]))],
				.iter = (uint64_t)(r * 1000 + c)};
		}
	for (int i = 0; i < nmsg; i++)
		m[i].cap = m[i].size;
	/* The sender walks the comms in the opposite order: message i on rank 0
	 * and message i on rank 1 are different messages, but each comm sees the
	 * same sequence on both sides. */
	if (transfer_simple(ft, p, m, nmsg, "interleaved traffic on 64 comms"))
		goto out;
	if (ft_sync(ft))
		goto out;
	if (transfer_simple(ft, p, m, nmsg, "second pass"))
		goto out;
	rc = 0;
out:
	if (opened && pairs_close(ft, p, npairs))
		rc = -1;
	free(p);
	free(m);
	return rc;
}

static int scen_reuse(struct ft *ft)
{
	enum { K = 4, CYCLES = 20 };
	struct pair p[K];
	uint8_t handle[NCCL_NET_HANDLE_MAXSIZE];
	void *lcomm = NULL;
	int rc = -1;

	memset(p, 0, sizeof(p));
	ft->phase = "several comms from one listen comm";
	/* Part 1: one listen comm, K connections made one after the other with
	 * (a fresh copy of) the same handle. */
	g_step = "listen";
	if (ft->rank == 0) {
		ncclResult_t r = pl_listen(ft->net, ft->dev, handle, &lcomm);
		if (r != ncclSuccess || !lcomm) {
			fail(ft, "listen returned %d (%s)", (int)r, pl_result_str(r));
			goto out;
		}
		if (ft_send(ft, handle, sizeof(handle)))
			goto out;
	} else if (ft_recv(ft, handle, sizeof(handle))) {
		goto out;
	}
	for (int k = 0; k < K; k++) {
		p[k].lcomm = lcomm;
		memcpy(p[k].handle, handle, sizeof(handle));
		if (connect_all(ft, &p[k], 1, 0))
			goto out;
		p[k].lcomm = NULL;
		if (ft_sync(ft))
			goto out;
	}
	{
		struct msg m[2 * K];
		for (int k = 0; k < K; k++) {
			m[k] = (struct msg){.comm = k, .size = 1000u * (unsigned)(k + 1) + (unsigned)k,
					    .tag = 4, .iter = (uint64_t)k};
			m[K + k] = (struct msg){.comm = k, .size = 300000 + (size_t)k, .tag = 4,
						.iter = (uint64_t)(K + k)};
		}
		for (int i = 0; i < 2 * K; i++)
			m[i].cap = m[i].size;
		if (transfer_simple(ft, p, m, 2 * K, "K comms from one listen comm"))
			goto out;
	}
	if (pairs_close(ft, p, K))
		goto out;
	if (lcomm) {
		g_step = "closeListen";
		ncclResult_t r = pl_close_listen(ft->net, lcomm);
		lcomm = NULL;
		if (r != ncclSuccess) {
			fail(ft, "closeListen returned %d (%s)", (int)r, pl_result_str(r));
			goto out;
		}
	}
	/* Part 2: whole lifecycles, repeated. */
	ft->phase = "listen/connect/accept/transfer/close cycles";
	for (int c = 0; c < CYCLES; c++) {
		struct msg m[2] = {
			{.comm = 0, .size = (size_t)(c * 4099) % 70000 + (size_t)c, .tag = 5,
			 .iter = 500u + (uint64_t)c},
			{.comm = 0, .size = (size_t)c * 37, .tag = 5, .iter = 600u + (uint64_t)c},
		};
		char what[48];
		m[0].cap = m[0].size;
		m[1].cap = m[1].size + 10;
		snprintf(what, sizeof(what), "cycle %d", c);
		if (pairs_open(ft, p, 1, c % 2))
			goto out;
		if (transfer_simple(ft, p, m, 2, what))
			goto out;
		if (pairs_close(ft, p, 1))
			goto out;
	}
	rc = 0;
out:
	pairs_close(ft, p, K);
	if (lcomm)
		pl_close_listen(ft->net, lcomm);
	return rc;
}

/* close: every close path, each as its own part. */
static int close_order(struct ft *ft, const void *arg)
{
	int send_first = *(const int *)arg;
	struct pair p;
	struct msg m = {.comm = 0, .size = 5000, .cap = 5000, .tag = 6, .iter = 7};

	if (pairs_open(ft, &p, 1, 0) || transfer_simple(ft, &p, &m, 1, "transfer before close")) {
		pairs_close(ft, &p, 1);
		return -1;
	}
	/* the first closer closes, then the other */
	if ((ft->rank == 1) == send_first) {
		if (close_comm(ft, p.comm))
			return -1;
		p.comm = NULL;
		if (ft_sync(ft))
			return -1;
	} else {
		if (ft_sync(ft))
			return -1;
		if (close_comm(ft, p.comm))
			return -1;
		p.comm = NULL;
	}
	return pairs_close(ft, &p, 1); /* the listen comm, last */
}

static int close_listen_first(struct ft *ft, const void *arg)
{
	struct pair p;
	struct msg m = {.comm = 0, .size = 20000, .cap = 20000, .tag = 6, .iter = 8};

	(void)arg;
	/* pairs_open closes the listen comm right after accept */
	if (pairs_open(ft, &p, 1, 1) || transfer_simple(ft, &p, &m, 1, "transfer after closeListen")) {
		pairs_close(ft, &p, 1);
		return -1;
	}
	return pairs_close(ft, &p, 1);
}

static int close_listen_unused(struct ft *ft, const void *arg)
{
	uint8_t h[NCCL_NET_HANDLE_MAXSIZE];
	void *l = NULL;

	(void)arg;
	for (int i = 0; i < 3; i++) {
		g_step = "listen";
		CALL(ft, pl_listen(ft->net, ft->dev, h, &l), "listen");
		if (!l)
			return fail(ft, "listen returned a NULL listen comm");
		g_step = "closeListen";
		CALL(ft, pl_close_listen(ft->net, l), "closeListen of an unused listen comm");
	}
	return 0;
}

static int dereg_after_close(struct ft *ft, const void *arg)
{
	struct pair p;
	struct fbuf b;

	(void)arg;
	if (pairs_open(ft, &p, 1, 1))
		return -1;
	if (fbuf_alloc(ft, p.comm, 65536, &b)) {
		pairs_close(ft, &p, 1);
		return -1;
	}
	if (pairs_close(ft, &p, 1)) {
		fbuf_free(ft, &b, 0);
		return -1;
	}
	return fbuf_free(ft, &b, 1); /* deregMr(closed comm, mhandle) */
}

/*
 * Closing with requests outstanding. Rank 0 posts three irecvs (1000 B, 8 MiB,
 * 4 KiB); rank 1 sends the first. in_flight = 0: nothing else is sent, so
 * rank 0 closes with two irecvs pending and no data moving. in_flight = 1:
 * rank 1 also posts the 8 MiB isend and both ranks close at once while it
 * moves. Then deregMr of every buffer, after the close.
 */
static int close_outstanding(struct ft *ft, const void *arg)
{
	int in_flight = *(const int *)arg;
	struct pair p;
	struct fbuf b[3];
	size_t sz[3] = {1000, 8 * MiB, 4096};
	struct xop op[3];
	int rc = -1;
	uint8_t note = 0;

	memset(b, 0, sizeof(b));
	memset(op, 0, sizeof(op));
	memset(&p, 0, sizeof(p));
	if (pairs_open(ft, &p, 1, 1))
		goto out;
	for (int i = 0; i < 3; i++) {
		if (fbuf_alloc(ft, p.comm, ft->rank == 0 ? sz[i] + CANARY_PAD : sz[i], &b[i]))
			goto out;
		if (ft->rank == 0)
			canary_fill(b[i].p, 0, b[i].cap);
		else
			pat_fill(b[i].p, sz[i], pat_key(ft->seed, sz[i], 900u + (unsigned)i));
		op[i] = (struct xop){.kind = ft->rank == 0 ? OP_RECV : OP_SEND, .comm = p.comm,
				     .n = 1, .data = {b[i].p}, .size = {sz[i]}, .tag = {8},
				     .mh = {b[i].mh}, .label = i};
	}
	if (ft->rank == 0) {
		/* post all three, complete only the first */
		int64_t deadline = now_ms() + ft->op_timeout_ms;
		for (int i = 0; i < 3; i++)
			while (!op[i].posted) {
				if (op_post(ft, &op[i]) || peer_failed(ft))
					goto out;
				if (now_ms() > deadline) {
					fail(ft, "irecv %d kept returning a NULL request", i);
					goto out;
				}
			}
		if (ft_send(ft, &note, 1) || run_ops(ft, op, 1))
			goto out;
		if (check_recv(ft, "first message", &b[0], sz[0], 900, op[0].got[0]))
			goto out;
		if (in_flight) {
			/* keep progressing (not waiting for) the rest until the sender
			 * says its large isend is posted */
			while (!ft->q && !ft->peer_done && !ft->peer_gone) {
				for (int i = 1; i < 3; i++)
					if (!op[i].done && op_test(ft, &op[i]))
						goto out;
				ctl_pump(ft, 0);
				sched_yield();
				if (now_ms() > deadline) {
					fail(ft, "the sender never reported its large isend posted");
					goto out;
				}
			}
		}
		if (ft_recv(ft, &note, 1))
			goto out;
		vnote("closing the recv comm with %d receives outstanding",
		      !op[1].done + !op[2].done);
	} else {
		if (ft_recv(ft, &note, 1) || run_ops(ft, op, 1))
			goto out;
		if (in_flight) {
			int64_t deadline = now_ms() + ft->op_timeout_ms;
			while (!op[1].posted) {
				if (op_post(ft, &op[1]) || peer_failed(ft))
					goto out;
				if (now_ms() > deadline) {
					fail(ft, "isend of the 8 MiB message kept returning a NULL "
					     "request although the receiver had posted it");
					goto out;
				}
			}
			vnote("closing the send comm with the 8 MiB isend outstanding");
		}
		if (ft_send(ft, &note, 1))
			goto out;
	}
	/* both ranks close now, concurrently */
	if (close_comm(ft, p.comm))
		goto out;
	p.comm = NULL;
	for (int i = 0; i < 3; i++) /* deregMr after the comm is closed */
		if (fbuf_free(ft, &b[i], 1))
			goto out;
	rc = 0;
out:
	pairs_close(ft, &p, 1);
	for (int i = 0; i < 3; i++)
		fbuf_free(ft, &b[i], 0);
	return rc;
}

/* A fresh connection and transfer between the same two processes. */
static int still_works(struct ft *ft, const void *arg)
{
	struct pair q;
	struct msg m[2] = {{.comm = 0, .size = 4096, .cap = 4096, .tag = 9, .iter = 901},
			   {.comm = 0, .size = 300000, .cap = 300000, .tag = 9, .iter = 902}};

	(void)arg;
	if (pairs_open(ft, &q, 1, 1) || transfer_simple(ft, &q, m, 2, "new comm")) {
		pairs_close(ft, &q, 1);
		return -1;
	}
	return pairs_close(ft, &q, 1);
}

static int scen_close(struct ft *ft)
{
	static const int yes = 1, no = 0;

	sub(ft, "closeSend before closeRecv", close_order, &yes);
	sub(ft, "closeRecv before closeSend", close_order, &no);
	sub(ft, "closeListen before the comms", close_listen_first, NULL);
	sub(ft, "closeListen without accept", close_listen_unused, NULL);
	sub(ft, "deregMr after close", dereg_after_close, NULL);
	sub(ft, "close with irecvs outstanding, nothing in flight", close_outstanding, &no);
	sub(ft, "new connection after closing with irecvs outstanding", still_works, NULL);
	sub(ft, "close with an 8 MiB isend in flight and irecvs outstanding",
	    close_outstanding, &yes);
	sub(ft, "new connection after closing with an isend in flight", still_works, NULL);
	return 0;
}

/* connect() with a handle that no listener produced must fail, and promptly. */
static int garbage_connect(struct ft *ft, uint8_t *h, const char *what)
{
	int64_t deadline = now_ms() + 10000;
	void *comm = NULL;

	for (;;) {
		ncclResult_t r;
		g_step = what;
		r = pl_connect(ft->net, ft->dev, h, &comm);
		if (r != ncclSuccess) {
			vnote("%s: connect returned %d (%s)", what, (int)r, pl_result_str(r));
			return 0;
		}
		if (comm) {
			g_step = "closeSend";
			pl_close_send(ft->net, comm);
			return fail(ft, "connect with %s succeeded and returned a comm", what);
		}
		if (now_ms() > deadline)
			return fail(ft, "connect with %s still returns ncclSuccess with a NULL comm "
				    "after 10 s instead of an error", what);
		wd_kick();
		usleep(1000);
	}
}

static int scen_garbage_handle(struct ft *ft)
{
	uint8_t h[NCCL_NET_HANDLE_MAXSIZE], valid[NCCL_NET_HANDLE_MAXSIZE];
	static const int flips[] = {0, 9, 13};
	void *lcomm = NULL;
	int rc = 0;

	if (ft->rank == 0)
		return 0; /* sender side only */
	for (size_t i = 0; i < sizeof(h); i += 8) {
		uint64_t w = mix64(ft->seed ^ 0xbad ^ i);
		memcpy(h + i, &w, 8);
	}
	if (garbage_connect(ft, h, "a handle of random bytes"))
		return -1;
	memset(h, 0, sizeof(h));
	if (garbage_connect(ft, h, "a handle of zeros"))
		return -1;
	/* A valid handle from a listen comm of our own, then one byte flipped. */
	g_step = "listen";
	CALL(ft, pl_listen(ft->net, ft->dev, valid, &lcomm), "listen");
	if (!lcomm)
		return fail(ft, "listen returned a NULL listen comm");
	for (size_t k = 0; k < sizeof(flips) / sizeof(flips[0]) && !rc; k++) {
		char what[64];
		memcpy(h, valid, sizeof(h));
		h[flips[k]] ^= 0x5a;
		snprintf(what, sizeof(what), "a valid handle with byte %d flipped", flips[k]);
		rc = garbage_connect(ft, h, what);
	}
	g_step = "closeListen";
	if (pl_close_listen(ft->net, lcomm) != ncclSuccess && !rc)
		rc = fail(ft, "closeListen failed");
	return rc;
}

/* One ABI version: load its table, init, properties, connect, transfer, close,
 * finalize. ft->net points at it meanwhile. */
static int abi_version(struct ft *ft, const void *arg)
{
	int v = *(const int *)arg;
	struct pl_net *saved = ft->net;
	struct pl_props saved_props = ft->props;
	struct pl_net *n = calloc(1, sizeof(*n));
	struct pair p;
	int ndev = 0, rc = -1;
	ncclResult_t r;

	memset(&p, 0, sizeof(p));
	if (!n)
		return fail(ft, "out of memory");
	g_step = "dlopen/dlsym";
	if (pl_open(n, ft->plugin, v)) {
		fail(ft, "%s", n->err);
		free(n);
		return -1;
	}
	ft->net = n;
	g_step = "init";
	if ((r = pl_init(n)) != ncclSuccess) {
		fail(ft, "init returned %d (%s)", (int)r, pl_result_str(r));
		goto out;
	}
	g_step = "devices";
	if ((r = pl_devices(n, &ndev)) != ncclSuccess || ndev <= ft->dev) {
		fail(ft, "devices() returned %d (%s) and %d devices", (int)r, pl_result_str(r), ndev);
		goto out;
	}
	g_step = "getProperties";
	if ((r = pl_get_properties(n, ft->dev, &ft->props)) != ncclSuccess) {
		fail(ft, "getProperties returned %d (%s)", (int)r, pl_result_str(r));
		goto out;
	}
	if (!ft->props.name[0] || ft->props.maxRecvs < 1 || ft->props.maxComms < 1 ||
	    !(ft->props.ptrSupport & NCCL_PTR_HOST) || ft->props.speed <= 0) {
		fail(ft, "implausible properties: name \"%s\", maxRecvs %d, maxComms %d, "
		     "ptrSupport 0x%x, speed %d", ft->props.name, ft->props.maxRecvs,
		     ft->props.maxComms, (unsigned)ft->props.ptrSupport, ft->props.speed);
		goto out;
	}
	if (strcmp(ft->props.name, saved_props.name) || ft->props.speed != saved_props.speed ||
	    ft->props.maxRecvs != saved_props.maxRecvs || ft->props.guid != saved_props.guid) {
		fail(ft, "properties differ from v%d's: name %s/%s, speed %d/%d, maxRecvs %d/%d",
		     ft->base.version, ft->props.name, saved_props.name, ft->props.speed,
		     saved_props.speed, ft->props.maxRecvs, saved_props.maxRecvs);
		goto out;
	}
	if (pairs_open(ft, &p, 1, 1))
		goto out;
	{
		struct msg m[3] = {
			{.comm = 0, .size = 1, .cap = 1, .tag = 10, .iter = (uint64_t)v},
			{.comm = 0, .size = 100000, .cap = 100000, .tag = 10, .iter = 100u + (uint64_t)v},
			{.comm = 0, .size = 0, .cap = 64, .tag = 10, .iter = 200u + (uint64_t)v},
		};
		if (transfer_simple(ft, &p, m, 3, "transfer"))
			goto out;
	}
	if (ft->props.maxRecvs >= 2) {
		struct msg g[2] = {
			{.comm = 0, .size = 3000, .cap = 4000, .tag = 21, .iter = 300},
			{.comm = 0, .size = 70000, .cap = 70000, .tag = 22, .iter = 301},
		};
		int start = 0, order[2] = {1, 0};
		if (transfer(ft, &p, g, 2, &start, 1, order, "grouped n=2"))
			goto out;
	}
	if (pairs_close(ft, &p, 1))
		goto out;
	g_step = "finalize";
	if ((r = pl_finalize(n)) != ncclSuccess) {
		fail(ft, "finalize returned %d (%s)", (int)r, pl_result_str(r));
		goto out;
	}
	rc = 0;
out:
	pairs_close(ft, &p, 1);
	pl_finalize(n); /* no-op once finalized */
	pl_close(n);
	free(n);
	ft->net = saved;
	ft->props = saved_props;
	return rc;
}

static int scen_abi(struct ft *ft)
{
	static const int versions[] = {6, 7, 8, 9, 10, 11, 12};
	static const char *names[] = {"v6", "v7", "v8", "v9", "v10", "v11", "v12"};

	for (int i = 0; i < (int)(sizeof(versions) / sizeof(versions[0])); i++)
		sub(ft, names[i], abi_version, &versions[i]);
	return 0;
}

/* ---- dmabuf ------------------------------------------------------------------- */

/* The version of the libfabric the plugin runs on: the library is already
 * loaded as the plugin's dependency, so RTLD_NOLOAD finds that very copy.
 * Returns FI_VERSION(major, minor), or 0 when it cannot be found. */
static uint32_t libfabric_runtime_version(void)
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

static int scen_dmabuf(struct ft *ft)
{
	static const size_t sizes[] = {1, 4096, MiB, 8 * MiB + 5};
	static const size_t offset_sizes[] = {1, 4096, MiB, 8 * MiB + 5};
	uint32_t v = libfabric_runtime_version();
	unsigned maj = v >> 16, min = v & 0xffff;
	int advertised = (ft->props.ptrSupport & NCCL_PTR_DMABUF) != 0;
	const char *prov = getenv("FABNET_PROVIDER");
	const char *env_dmabuf = getenv("FABNET_DMABUF");
	int disabled = env_dmabuf && !strcmp(env_dmabuf, "0");
	struct pair p;
	struct msg all[4];
	int rc = -1, saved_timeout = 0;

	/* fabnet-ft is built with the headers the plugin was built with */
#ifdef FI_MR_DMABUF
	const int built_dmabuf = 1;
#else
	const int built_dmabuf = 0;
#endif
	/* tcp and shm import a memfd dma-buf under libfabric 1.20+ (proven on
	 * 2.1): there the dma-buf path must be the one used, not the fallback */
	int must = built_dmabuf && v >= ((1u << 16) | 20) && !disabled && prov &&
		   (!strcmp(prov, "tcp") || !strcmp(prov, "shm"));

	if (ft->rank == 0) {
		char ver[32];
		if (v)
			snprintf(ver, sizeof(ver), "%u.%u", maj, min);
		else
			snprintf(ver, sizeof(ver), "unknown");
		printf("# dmabuf: %s (libfabric %s, built %d.%d, provider %s, ptrSupport 0x%x)\n",
		       advertised ? "advertised: regMrDmaBuf registers with FI_MR_DMABUF"
				  : "not advertised: regMrDmaBuf registers by address (fallback)",
		       ver, FI_MAJOR_VERSION, FI_MINOR_VERSION, prov ? prov : "(automatic)",
		       (unsigned)ft->props.ptrSupport);
	}
	if (must && !advertised)
		return fail(ft, "libfabric %u.%u (built %d.%d) with provider %s does not advertise "
			    "NCCL_PTR_DMABUF (ptrSupport 0x%x), so regMrDmaBuf would fall back to "
			    "registering by address; run fabnet-info for the reason",
			    maj, min, FI_MAJOR_VERSION, FI_MINOR_VERSION, prov,
			    (unsigned)ft->props.ptrSupport);
	if (advertised && !built_dmabuf)
		return fail(ft, "getProperties advertises NCCL_PTR_DMABUF (ptrSupport 0x%x) but the "
			    "plugin was built against libfabric %d.%d, which has no FI_MR_DMABUF",
			    (unsigned)ft->props.ptrSupport, FI_MAJOR_VERSION, FI_MINOR_VERSION);
	if (advertised && v && v < ((1u << 16) | 20))
		return fail(ft, "getProperties advertises NCCL_PTR_DMABUF (ptrSupport 0x%x) under "
			    "libfabric %u.%u, which has no FI_MR_DMABUF (1.20+)",
			    (unsigned)ft->props.ptrSupport, maj, min);
	if (advertised && disabled)
		return fail(ft, "getProperties advertises NCCL_PTR_DMABUF although FABNET_DMABUF=0");
	if (pairs_open(ft, &p, 1, 1))
		goto out;
	/* at most 8 MiB at a time: 20 s without progress is a hang */
	saved_timeout = ft->op_timeout_ms;
	if (ft->op_timeout_ms > 20000)
		ft->op_timeout_ms = 20000;
	ft->dmabuf = 1;
	ft->dmabuf_off = 0;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct msg m = {.comm = 0, .size = sizes[i], .cap = sizes[i], .tag = 31,
				.iter = 3000 + i};
		char what[96];
		snprintf(what, sizeof(what), "%zu bytes, memfd offset 0", sizes[i]);
		if (transfer_simple(ft, &p, &m, 1, what))
			goto out;
	}
	/* a buffer that starts 3 pages into a larger memfd */
	ft->dmabuf_off = 3 * page_size();
	for (size_t i = 0; i < sizeof(offset_sizes) / sizeof(offset_sizes[0]); i++) {
		struct msg m = {.comm = 0, .size = offset_sizes[i], .cap = offset_sizes[i], .tag = 32,
				.iter = 3100 + i};
		char what[96];
		snprintf(what, sizeof(what), "%zu bytes, memfd offset %zu", offset_sizes[i],
			 ft->dmabuf_off);
		if (transfer_simple(ft, &p, &m, 1, what))
			goto out;
	}
	/* several dma-buf registrations live at once, all outstanding */
	ft->dmabuf_off = page_size();
	for (int i = 0; i < 4; i++)
		all[i] = (struct msg){.comm = 0, .size = sizes[i] + (size_t)i * 3, .tag = 33,
				      .iter = 3200u + (uint64_t)i};
	for (int i = 0; i < 4; i++)
		all[i].cap = all[i].size + 100;
	if (transfer_simple(ft, &p, all, 4, "4 outstanding, memfd offset 1 page"))
		goto out;
	rc = 0;
out:
	ft->dmabuf = 0;
	ft->dmabuf_off = 0;
	if (saved_timeout)
		ft->op_timeout_ms = saved_timeout;
	pairs_close(ft, &p, 1);
	return rc;
}

/* ---- helper processes ------------------------------------------------------------
 * Some parts need a plugin initialised with other settings (FABNET_GDR_FLUSH,
 * FABNET_PEER_TIMEOUT_MS are read once, at init) or a peer that can be killed.
 * They run in fresh processes: fabnet-ft executes itself with --helper ROLE,
 * fd 3 one end of a socketpair to its parent, and reports over it. */

enum { HM_NOTE = 1, HM_RESULT, HM_TOKEN, HM_HANDLE };

struct hmsg_hdr {
	uint32_t kind;
	uint32_t len;
};

struct helper {
	pid_t pid;
	struct ctl ch;
};

static int hput(struct ctl *c, uint32_t kind, const void *p, uint32_t len)
{
	struct hmsg_hdr h = {kind, len};

	if (ctl_send(c, &h, sizeof(h)) || (len && ctl_send(c, p, len)))
		return -1;
	return 0;
}

static int hnote(struct ctl *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int hnote(struct ctl *c, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return hput(c, HM_NOTE, buf, (uint32_t)strlen(buf) + 1);
}

/* Receives one message of at most cap bytes (a NUL is added after it). */
static int hget(struct ctl *c, uint32_t *kind, void *p, uint32_t cap, uint32_t *len,
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
static int hwait_token(struct ft *ft, struct ctl *c, const char *want, int timeout_ms,
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

/* Starts `fabnet-ft --helper role --part part` with env_extra (NAME=VALUE
 * entries, NULL-terminated) added to our environment; err_fd >= 0 becomes its
 * stderr. */
#define HS_NEWPIDNS 1 /* in a new pid namespace, as if on another node */

/* Returns 0, -1 (failed, reason set) or 1 (HS_NEWPIDNS not permitted here). */
static int helper_spawn(struct ft *ft, const char *role, const char *part,
			const char *const *env_extra, int err_fd, int flags, struct helper *h)
{
	extern char **environ;
	char devs[16], seeds[32], abis[16];
	const char *argv[24];
	char **envp;
	size_t nenv = 0, nextra = 0, k = 0;
	int ac = 0, sv[2];
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
	snprintf(devs, sizeof(devs), "%d", ft->dev);
	snprintf(seeds, sizeof(seeds), "%" PRIu64, ft->seed);
	snprintf(abis, sizeof(abis), "%d", ft->abi);
	argv[ac++] = g_self_exe;
	argv[ac++] = "--plugin";
	argv[ac++] = ft->plugin;
	argv[ac++] = "--dev";
	argv[ac++] = devs;
	argv[ac++] = "--seed";
	argv[ac++] = seeds;
	if (ft->abi) {
		argv[ac++] = "--abi";
		argv[ac++] = abis;
	}
	argv[ac++] = "--helper";
	argv[ac++] = role;
	argv[ac++] = "--part";
	argv[ac++] = part;
	argv[ac++] = "--helper-fd";
	argv[ac++] = "3";
	if (g_verbose)
		argv[ac++] = "--verbose";
	argv[ac] = NULL;
	while (environ[nenv])
		nenv++;
	while (env_extra && env_extra[nextra])
		nextra++;
	envp = calloc(nenv + nextra + 1, sizeof(*envp));
	if (!envp)
		return fail(ft, "out of memory");
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
	if (pid == 0) {
		/* only async-signal-safe calls from here to execve */
		alarm(0);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (err_fd >= 0 && err_fd != 2)
			dup2(err_fd, 2);
		if (sv[1] == 3)
			fcntl(3, F_SETFD, 0);
		else
			dup2(sv[1], 3);
#ifdef SYS_close_range
		syscall(SYS_close_range, 4u, ~0u, 0u);
#else
		for (int fd = 4; fd < 1024; fd++)
			close(fd);
#endif
		execve(g_self_exe, (char *const *)argv, envp);
		_exit(127);
	}
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
static int helper_reap(struct helper *h, int timeout_ms, int *status)
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

static void helper_kill(struct helper *h)
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

static void describe_status(int st, char *buf, size_t len)
{
	if (WIFEXITED(st))
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, len, "was killed by signal %d (%s)%s", WTERMSIG(st),
			 strsignal(WTERMSIG(st)),
			 WTERMSIG(st) == SIGALRM ? ": its watchdog fired, a plugin call hung" : "");
	else
		snprintf(buf, len, "ended with status 0x%x", st);
}

/* Runs a helper to its verdict: notes it sends are printed by rank 0. */
static int helper_run(struct ft *ft, const char *role, const char *part,
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

/* ---- plugin calls in helper processes (one process, no control channel) ---- */

static int h_init(struct ft *ft)
{
	ncclResult_t r;
	int ndev = 0;

	g_step = "dlopen";
	if (pl_open(&ft->base, ft->plugin, ft->abi))
		return fail(ft, "%s", ft->base.err);
	g_step = "init";
	CALL(ft, pl_init(&ft->base), "init");
	CALL(ft, pl_devices(&ft->base, &ndev), "devices");
	if (ndev <= ft->dev)
		return fail(ft, "device %d requested, the plugin reports %d", ft->dev, ndev);
	r = pl_get_properties(&ft->base, ft->dev, &ft->props);
	if (r != ncclSuccess)
		return fail(ft, "getProperties returned %d (%s)", (int)r, pl_result_str(r));
	return 0;
}

/* A buffer of its own pages, registered. */
static int h_buf(struct ft *ft, void *comm, size_t cap, struct fbuf *b)
{
	return fbuf_alloc(ft, comm, cap, b);
}

/* Posts until the plugin hands out a request (NULL means "retry"). */
static int h_irecv(struct ft *ft, void *comm, int n, void **data, const size_t *sizes,
		   const int *tags, void **mh, void **req, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;

	*req = NULL;
	for (;;) {
		g_step = "irecv";
		CALL(ft, pl_irecv(ft->net, comm, n, data, sizes, tags, mh, req), "irecv");
		if (*req)
			return 0;
		if (now_ms() > deadline)
			return fail(ft, "irecv kept returning a NULL request for %d ms", timeout_ms);
		usleep(100);
	}
}

/* Tests until done; returns the result test() gave (ncclSuccess or an error),
 * or -1 through fail() on a hang. */
static int h_wait(struct ft *ft, void *req, int *sizes, int timeout_ms, ncclResult_t *res)
{
	int64_t deadline = now_ms() + timeout_ms;
	int done = 0;

	for (;;) {
		g_step = "test";
		*res = pl_test(ft->net, req, &done, sizes);
		if (*res != ncclSuccess || done)
			return 0;
		if (now_ms() > deadline)
			return fail(ft, "test() did not complete the request within %d ms", timeout_ms);
		sched_yield();
	}
}

/* ---- flush --------------------------------------------------------------------- */

/* What iflush on host memory should do under this FABNET_GDR_FLUSH value:
 * 1 = a real request, 0 = a NULL request. */
static int flush_expect_request(const char *mode)
{
	return mode && !strcmp(mode, "always");
}

/* iflush on received buffers, as NCCL calls it after a receive completes. */
static int flush_check(struct ft *ft, void *comm, int n, void **data, const int *got, void **mh,
		       int expect_req, const char *what)
{
	int sizes[MAX_GROUP], any = 0;
	void *req = (void *)&req; /* must be overwritten */
	ncclResult_t r;

	for (int i = 0; i < n; i++) {
		sizes[i] = got[i];
		any |= got[i] > 0;
	}
	g_step = "iflush";
	r = pl_iflush(ft->net, comm, n, data, sizes, mh, &req);
	if (r != ncclSuccess)
		return fail(ft, "%s: iflush(n=%d) returned %d (%s)", what, n, (int)r, pl_result_str(r));
	if (!expect_req || !any) {
		if (req && expect_req) {
			/* nothing was received: a request is allowed, it must complete */
		} else if (req) {
			return fail(ft, "%s: iflush on host memory returned a request (%p); with "
				    "FABNET_GDR_FLUSH=%s it must be NULL", what, req,
				    getenv("FABNET_GDR_FLUSH") ? getenv("FABNET_GDR_FLUSH") : "(unset)");
		}
	} else if (!req) {
		return fail(ft, "%s: iflush returned a NULL request although FABNET_GDR_FLUSH=always "
			    "asks for a loopback read after host receives too", what);
	}
	if (req) {
		ncclResult_t tr;
		int done_sizes[MAX_GROUP];
		if (h_wait(ft, req, done_sizes, ft->op_timeout_ms, &tr))
			return -1;
		if (tr != ncclSuccess)
			return fail(ft, "%s: test() on the flush request returned %d (%s)", what, (int)tr,
				    pl_result_str(tr));
	}
	return 0;
}

/* iflush with arguments NCCL never passes must fail, not crash or succeed. */
static int flush_bogus(struct ft *ft, void *comm, void *data, void *mh)
{
	static uint8_t fake_mh[256]; /* zeros: not a handle */
	void *d1[MAX_GROUP + 1], *m1[MAX_GROUP + 1], *fm[1] = {fake_mh};
	int s1[MAX_GROUP + 1];
	struct {
		const char *what;
		void *comm;
		int n;
		void **data;
		int *sizes;
		void **mh;
	} c[] = {
		{"n = 0", comm, 0, d1, s1, m1},
		{"n = 9 (more than maxRecvs)", comm, MAX_GROUP + 1, d1, s1, m1},
		{"data = NULL", comm, 1, NULL, s1, m1},
		{"sizes = NULL", comm, 1, d1, NULL, m1},
		{"an mhandle that is not one", comm, 1, d1, s1, fm},
		{"recvComm = NULL", NULL, 1, d1, s1, m1},
	};

	for (int i = 0; i <= MAX_GROUP; i++) {
		d1[i] = data;
		m1[i] = mh;
		s1[i] = 4;
	}
	for (size_t k = 0; k < sizeof(c) / sizeof(c[0]); k++) {
		void *req = NULL;
		ncclResult_t r;
		g_step = "iflush (bogus arguments)";
		r = pl_iflush(ft->net, c[k].comm, c[k].n, c[k].data, c[k].sizes, c[k].mh, &req);
		if (r == ncclSuccess) {
			if (req) {
				int done = 0;
				for (int t = 0; t < 1000 && !done; t++)
					if (pl_test(ft->net, req, &done, NULL) != ncclSuccess)
						break;
			}
			return fail(ft, "iflush with %s returned ncclSuccess%s instead of an error",
				    c[k].what, req ? " and a request" : "");
		}
		vnote("iflush with %s: %d (%s)", c[k].what, (int)r, pl_result_str(r));
	}
	return 0;
}

/* Transfers on the ranks, iflush after each receive. */
static int flush_inrank(struct ft *ft, const void *arg)
{
	static const size_t one[] = {1, 4096, 100000, 4 * MiB + 3};
	static const size_t grp[] = {0, 5000, 70000};
	const char *mode = getenv("FABNET_GDR_FLUSH");
	int expect_req = flush_expect_request(mode);
	struct pair p;
	int rc = -1;

	(void)arg;
	if (pairs_open(ft, &p, 1, 1))
		return -1;
	for (size_t k = 0; k <= sizeof(one) / sizeof(one[0]); k++) {
		int n = k < sizeof(one) / sizeof(one[0]) ? 1 : 3;
		struct fbuf b[3];
		struct xop op[3];
		size_t sz[3];
		char what[96];
		int ok = 0;

		memset(b, 0, sizeof(b));
		memset(op, 0, sizeof(op));
		for (int j = 0; j < n; j++)
			sz[j] = n == 1 ? one[k] : grp[j];
		if (n == 1)
			snprintf(what, sizeof(what), "%zu bytes", sz[0]);
		else
			snprintf(what, sizeof(what), "group of 3 (%zu, %zu, %zu bytes)", sz[0], sz[1],
				 sz[2]);
		for (int j = 0; j < n; j++) {
			if (fbuf_alloc(ft, p.comm, ft->rank == 0 ? sz[j] + CANARY_PAD : sz[j], &b[j]))
				goto next;
			if (ft->rank == 0)
				canary_fill(b[j].p, 0, b[j].cap);
			else
				pat_fill(b[j].p, sz[j], pat_key(ft->seed, sz[j], 4000u + k * 8 + (size_t)j));
		}
		if (ft->rank == 0) {
			op[0] = (struct xop){.kind = OP_RECV, .comm = p.comm, .n = n, .label = (int)k};
			for (int j = 0; j < n; j++) {
				op[0].data[j] = b[j].p;
				op[0].size[j] = sz[j];
				op[0].tag[j] = 40 + j;
				op[0].mh[j] = b[j].mh;
			}
			if (run_ops(ft, op, 1))
				goto next;
			for (int j = 0; j < n; j++)
				if (check_recv(ft, what, &b[j], sz[j], 4000u + k * 8 + (size_t)j,
					       op[0].got[j]))
					goto next;
			if (flush_check(ft, p.comm, n, op[0].data, op[0].got, op[0].mh, expect_req, what))
				goto next;
			for (int j = 0; j < n; j++) /* the flush must not disturb the data */
				if (check_recv(ft, "after iflush", &b[j], sz[j], 4000u + k * 8 + (size_t)j,
					       op[0].got[j]))
					goto next;
			if (k == 0 && flush_bogus(ft, p.comm, b[0].p, b[0].mh))
				goto next;
		} else {
			for (int j = 0; j < n; j++)
				op[j] = (struct xop){.kind = OP_SEND, .comm = p.comm, .n = 1,
						     .data = {b[j].p}, .size = {sz[j]}, .tag = {40 + j},
						     .mh = {b[j].mh}, .label = j};
			if (run_ops(ft, op, n))
				goto next;
		}
		ok = 1;
next:
		for (int j = 0; j < n; j++)
			fbuf_free(ft, &b[j], 1);
		if (!ok)
			goto out;
	}
	if (ft->rank == 0)
		printf("# flush: FABNET_GDR_FLUSH=%s here: iflush on host memory returned %s\n",
		       mode ? mode : "(unset)", expect_req ? "real requests" : "NULL requests");
	rc = 0;
out:
	pairs_close(ft, &p, 1);
	return rc;
}

static int flush_in_helper(struct ft *ft, const void *arg)
{
	const char *mode = arg;
	char env[64];
	const char *extra[2] = {env, NULL};

	if (ft->rank != 0)
		return 0;
	snprintf(env, sizeof(env), "FABNET_GDR_FLUSH=%s", mode);
	return helper_run(ft, "flush", mode, extra, 120000);
}

static int scen_flush(struct ft *ft)
{
	sub(ft, "iflush in this process (FABNET_GDR_FLUSH from the environment)", flush_inrank,
	    NULL);
	sub(ft, "FABNET_GDR_FLUSH=always (fresh process)", flush_in_helper, "always");
	sub(ft, "FABNET_GDR_FLUSH=0 (fresh process)", flush_in_helper, "0");
	return 0;
}

/* One process, connected to itself: listen, then connect and accept in turn. */
static int h_loopback(struct ft *ft, void **lcomm, void **scomm, void **rcomm, uint8_t *handle)
{
	int64_t deadline = now_ms() + ft->op_timeout_ms;

	*lcomm = *scomm = *rcomm = NULL;
	g_step = "listen";
	CALL(ft, pl_listen(ft->net, ft->dev, handle, lcomm), "listen");
	if (!*lcomm)
		return fail(ft, "listen returned a NULL listen comm");
	while (!*scomm || !*rcomm) {
		if (!*scomm) {
			g_step = "connect";
			CALL(ft, pl_connect(ft->net, ft->dev, handle, scomm), "connect (to ourselves)");
		}
		if (!*rcomm) {
			g_step = "accept";
			CALL(ft, pl_accept(ft->net, *lcomm, rcomm), "accept (from ourselves)");
		}
		if (now_ms() > deadline)
			return fail(ft, "connecting a process to itself: %s still NULL after %d s",
				    !*scomm ? "connect" : "accept", ft->op_timeout_ms / 1000);
		sched_yield();
	}
	return 0;
}

/* Sends n buffers to a group receive of n in the same process; verifies. */
static int h_transfer(struct ft *ft, void *scomm, void *rcomm, int n, const size_t *sz,
		      uint64_t iter0, struct fbuf *rb, int *got)
{
	struct fbuf sb[MAX_GROUP];
	void *rreq = NULL, *sreq[MAX_GROUP], *rdata[MAX_GROUP], *rmh[MAX_GROUP];
	size_t rsz[MAX_GROUP];
	int tags[MAX_GROUP], sdone[MAX_GROUP], rdone = 0, rc = -1;
	int64_t deadline;

	memset(sb, 0, sizeof(sb));
	for (int j = 0; j < n; j++) {
		sreq[j] = NULL;
		sdone[j] = 0;
		if (h_buf(ft, rcomm, sz[j] + CANARY_PAD, &rb[j]) || h_buf(ft, scomm, sz[j], &sb[j]))
			goto out;
		canary_fill(rb[j].p, 0, rb[j].cap);
		pat_fill(sb[j].p, sz[j], pat_key(ft->seed, sz[j], iter0 + (uint64_t)j));
		rdata[j] = rb[j].p;
		rmh[j] = rb[j].mh;
		rsz[j] = sz[j] + (j % 2 ? 100 : 0);
		tags[j] = 50 + j;
	}
	if (h_irecv(ft, rcomm, n, rdata, rsz, tags, rmh, &rreq, ft->op_timeout_ms))
		goto out;
	deadline = now_ms() + ft->op_timeout_ms;
	for (;;) {
		int left = !rdone, sizes[MAX_GROUP];
		for (int j = n - 1; j >= 0; j--) { /* sends in reverse order */
			int done = 0;
			if (sdone[j])
				continue;
			left++;
			if (!sreq[j]) {
				g_step = "isend";
				CALL(ft, pl_isend(ft->net, scomm, sb[j].p, sz[j], tags[j], sb[j].mh,
						  &sreq[j]), "isend");
				if (!sreq[j])
					continue;
			}
			g_step = "test";
			CALL(ft, pl_test(ft->net, sreq[j], &done, sizes), "test (isend)");
			if (done) {
				if (sizes[0] != (int)sz[j]) {
					fail(ft, "test() on an isend reported %d bytes, not %zu", sizes[0],
					     sz[j]);
					goto out;
				}
				sdone[j] = 1;
			}
		}
		if (!rdone) {
			int done = 0;
			g_step = "test";
			CALL(ft, pl_test(ft->net, rreq, &done, got), "test (irecv)");
			rdone = done;
		}
		if (!left)
			break;
		if (now_ms() > deadline) {
			fail(ft, "a transfer within one process did not complete in %d s",
			     ft->op_timeout_ms / 1000);
			goto out;
		}
		sched_yield();
	}
	for (int j = 0; j < n; j++) {
		char what[64];
		snprintf(what, sizeof(what), "%zu bytes (buffer %d of %d)", sz[j], j, n);
		if (check_recv(ft, what, &rb[j], sz[j], iter0 + (uint64_t)j, got[j]))
			goto out;
	}
	rc = 0;
out:
	for (int j = 0; j < n; j++)
		fbuf_free(ft, &sb[j], 1);
	return rc;
}

/* --helper flush --part MODE: FABNET_GDR_FLUSH=MODE is in our environment. */
static int helper_flush(struct ft *ft, struct ctl *up)
{
	static const size_t one[] = {1, 4096, MiB, 8 * MiB + 5};
	static const size_t grp[] = {3000, 0, 200000};
	const char *mode = getenv("FABNET_GDR_FLUSH");
	int expect_req = flush_expect_request(mode);
	uint8_t handle[NCCL_NET_HANDLE_MAXSIZE];
	void *l = NULL, *s = NULL, *r = NULL;
	int rc = -1, flushes = 0;

	if (h_init(ft) || h_loopback(ft, &l, &s, &r, handle))
		goto out;
	for (size_t k = 0; k <= sizeof(one) / sizeof(one[0]); k++) {
		int n = k < sizeof(one) / sizeof(one[0]) ? 1 : 3, got[MAX_GROUP];
		const size_t *sz = n == 1 ? &one[k] : grp;
		struct fbuf rb[MAX_GROUP];
		void *data[MAX_GROUP], *mh[MAX_GROUP];
		char what[64];
		int bad;

		memset(rb, 0, sizeof(rb));
		if (n == 1)
			snprintf(what, sizeof(what), "%zu bytes", sz[0]);
		else
			snprintf(what, sizeof(what), "a group of %d", n);
		bad = h_transfer(ft, s, r, n, sz, 5000u + k * 8, rb, got);
		for (int j = 0; j < n; j++) {
			data[j] = rb[j].p;
			mh[j] = rb[j].mh;
		}
		if (!bad)
			bad = flush_check(ft, r, n, data, got, mh, expect_req, what);
		for (int j = 0; !bad && j < n; j++)
			bad = check_recv(ft, "after iflush", &rb[j], sz[j], 5000u + k * 8 + (size_t)j,
					 got[j]);
		if (!bad && k == 0)
			bad = flush_bogus(ft, r, rb[0].p, rb[0].mh);
		for (int j = 0; j < n; j++)
			fbuf_free(ft, &rb[j], 1);
		if (bad)
			goto out;
		flushes++;
	}
	hnote(up, "# flush: FABNET_GDR_FLUSH=%s (fresh process, one comm pair to itself): %d "
	      "receives, iflush returned %s", mode ? mode : "(unset)", flushes,
	      expect_req ? "real requests that test() completed" : "NULL requests");
	rc = 0;
out:
	g_step = "close";
	if (s && pl_close_send(ft->net, s) != ncclSuccess && !rc)
		rc = fail(ft, "closeSend failed");
	if (r && pl_close_recv(ft->net, r) != ncclSuccess && !rc)
		rc = fail(ft, "closeRecv failed");
	if (l && pl_close_listen(ft->net, l) != ncclSuccess && !rc)
		rc = fail(ft, "closeListen failed");
	return rc;
}

/* ---- peer-death ------------------------------------------------------------------
 * Each part runs in a fresh pair of processes started by rank 0, both with
 * FABNET_PEER_TIMEOUT_MS=2000: the survivor (--helper survivor) starts the
 * victim (--helper victim), connects to it, and kills it (SIGKILL) or lets it
 * close early; the survivor checks that its pending request fails in time and
 * that its log names the comm. Parts:
 *   idle    the sender is killed while the survivor's irecv waits, no data sent
 *   send    the sender is killed in the middle of a 64 MiB send
 *   recv    the receiver is killed while the survivor sends 64 MiB
 *   close   the sender calls closeSend without sending, an irecv is posted
 *   alive   the sender is alive but makes no plugin call for 2.5x the timeout
 *           while an irecv waits, then sends: no false alarm, the data arrives */

#define PD_TIMEOUT_MS 2000
#define PD_BOUND_MS 6000     /* FABNET_PEER_TIMEOUT_MS plus slack */
#define PD_CLOSE_BOUND_MS 2000
#define PD_BIG (64 * MiB)
#define PD_ALIVE_MS (5 * PD_TIMEOUT_MS / 2) /* an alive peer stays away this long */

struct logcap {
	int fd;       /* our stderr goes here */
	int saved;    /* the original stderr */
	off_t mark;   /* where the part of interest starts */
};

static int logcap_start(struct logcap *lc)
{
	char path[] = "/tmp/fabnet-ft-log.XXXXXX";

	lc->fd = mkstemp(path);
	if (lc->fd < 0)
		return -1;
	unlink(path);
	fflush(stderr);
	lc->saved = dup(2);
	dup2(lc->fd, 2);
	lc->mark = 0;
	return 0;
}

static char *logcap_since_mark(struct logcap *lc)
{
	off_t end;
	char *buf;
	ssize_t n;

	fflush(stderr);
	end = lseek(lc->fd, 0, SEEK_END);
	if (end < lc->mark)
		end = lc->mark;
	buf = malloc((size_t)(end - lc->mark) + 1);
	if (!buf)
		return NULL;
	n = pread(lc->fd, buf, (size_t)(end - lc->mark), lc->mark);
	buf[n > 0 ? n : 0] = '\0';
	return buf;
}

/* Copies everything captured to the original stderr. */
static void logcap_stop(struct logcap *lc)
{
	char buf[8192];
	off_t off = 0;
	ssize_t n;

	fflush(stderr);
	while ((n = pread(lc->fd, buf, sizeof(buf), off)) > 0) {
		if (write(lc->saved, buf, (size_t)n) < 0)
			break;
		off += n;
	}
	dup2(lc->saved, 2);
	close(lc->saved);
	close(lc->fd);
}

/* A line of log that contains every one of the words (NULL-terminated). */
static int log_has_line(const char *log, const char *const *words, char *line, size_t linelen)
{
	const char *s = log;

	while (s && *s) {
		const char *e = strchr(s, '\n');
		size_t len = e ? (size_t)(e - s) : strlen(s);
		char tmp[2048];
		int all = 1;
		snprintf(tmp, sizeof(tmp), "%.*s", (int)(len < sizeof(tmp) - 1 ? len : sizeof(tmp) - 1), s);
		for (int i = 0; words[i]; i++)
			if (!strstr(tmp, words[i]))
				all = 0;
		if (all) {
			snprintf(line, linelen, "%s", tmp);
			return 1;
		}
		s = e ? e + 1 : NULL;
	}
	return 0;
}

/* A process killed with SIGKILL leaves its libfabric shm region behind
 * (/dev/shm/PID:N:M); a later process that gets the same pid then cannot open
 * shm ("shm file in use"). Remove what our dead victim left. */
static void shm_leftovers_remove(pid_t pid)
{
	char prefix[32], path[300];
	struct dirent *d;
	DIR *dir;
	size_t n;

	if (pid <= 0 || !(dir = opendir("/dev/shm")))
		return;
	n = (size_t)snprintf(prefix, sizeof(prefix), "%d:", (int)pid);
	while ((d = readdir(dir)) != NULL)
		if (!strncmp(d->d_name, prefix, n)) {
			snprintf(path, sizeof(path), "/dev/shm/%s", d->d_name);
			unlink(path);
		}
	closedir(dir);
}

/* Connects the survivor and the victim over the plugin: `listener` listens and
 * passes its handle over the channel. */
static int pd_connect(struct ft *ft, struct ctl *ch, int listener, void **lcomm, void **comm)
{
	uint8_t handle[NCCL_NET_HANDLE_MAXSIZE];
	int64_t deadline = now_ms() + ft->op_timeout_ms;

	*lcomm = *comm = NULL;
	if (listener) {
		g_step = "listen";
		CALL(ft, pl_listen(ft->net, ft->dev, handle, lcomm), "listen");
		if (!*lcomm)
			return fail(ft, "listen returned a NULL listen comm");
		if (hput(ch, HM_HANDLE, handle, sizeof(handle)))
			return fail(ft, "channel: %s", ch->err);
	} else {
		uint32_t kind, len;
		uint8_t buf[NCCL_NET_HANDLE_MAXSIZE + 1];
		if (hget(ch, &kind, buf, sizeof(buf), &len, ft->op_timeout_ms) || kind != HM_HANDLE ||
		    len != sizeof(handle))
			return fail(ft, "no handle from the other process: %s", ch->err);
		memcpy(handle, buf, sizeof(handle));
	}
	while (!*comm) {
		if (listener) {
			g_step = "accept";
			CALL(ft, pl_accept(ft->net, *lcomm, comm), "accept");
		} else {
			g_step = "connect";
			CALL(ft, pl_connect(ft->net, ft->dev, handle, comm), "connect");
		}
		if (now_ms() > deadline)
			return fail(ft, "%s still NULL after %d s", listener ? "accept" : "connect",
				    ft->op_timeout_ms / 1000);
		usleep(200);
	}
	if (listener) {
		g_step = "closeListen";
		CALL(ft, pl_close_listen(ft->net, *lcomm), "closeListen");
		*lcomm = NULL;
	}
	return 0;
}

/* FABNET_FT_PD_WAIT_S: how much longer than the bound to wait for an error
 * before calling it a hang (to measure how late a late error comes). */
static int64_t pd_extra_wait_ms(void)
{
	const char *e = getenv("FABNET_FT_PD_WAIT_S");

	return e && atoi(e) > 0 ? (int64_t)atoi(e) * 1000 : 0;
}

/* Test a pending request (progress) while waiting for a token. */
struct pd_poll {
	void *req;
	int done;
	ncclResult_t res;
};

static int pd_poll_fn(struct ft *ft, void *arg)
{
	struct pd_poll *pp = arg;
	int sizes[MAX_GROUP];

	if (!pp->req || pp->done)
		return 0;
	g_step = "test";
	pp->res = pl_test(ft->net, pp->req, &pp->done, sizes);
	if (pp->res != ncclSuccess)
		pp->done = 1;
	return 0;
}

/* --helper victim --part P: the process that dies or closes early. */
static int helper_victim(struct ft *ft, struct ctl *ch, const char *part)
{
	int sender = strcmp(part, "recv") != 0;
	void *lcomm = NULL, *comm = NULL, *req = NULL;
	struct fbuf b;
	struct pd_poll pp;

	memset(&b, 0, sizeof(b));
	memset(&pp, 0, sizeof(pp));
	if (h_init(ft) || pd_connect(ft, ch, !sender, &lcomm, &comm))
		goto failed;
	if (sender) {
		if (hwait_token(ft, ch, "posted", ft->op_timeout_ms, NULL, NULL))
			goto failed;
		if (!strcmp(part, "close")) {
			g_step = "closeSend";
			CALL(ft, pl_close_send(ft->net, comm), "closeSend");
			hput(ch, HM_TOKEN, "closed", 7);
			/* wait for the survivor to finish, then exit normally */
			hwait_token(ft, ch, "bye", 60000, NULL, NULL);
			return 0;
		}
		if (!strcmp(part, "alive")) {
			int64_t deadline;
			int done = 0, got = -1;
			usleep(PD_ALIVE_MS * 1000); /* alive, but no plugin call */
			if (fbuf_alloc(ft, comm, MiB, &b))
				goto failed;
			pat_fill(b.p, MiB, pat_key(ft->seed, MiB, 79));
			deadline = now_ms() + ft->op_timeout_ms;
			while (!req) {
				g_step = "isend";
				CALL(ft, pl_isend(ft->net, comm, b.p, MiB, 1, b.mh, &req), "isend");
				if (now_ms() > deadline)
					return fail(ft, "isend kept returning NULL after the pause");
			}
			while (!done) {
				g_step = "test";
				CALL(ft, pl_test(ft->net, req, &done, &got), "test (isend after the pause)");
				if (now_ms() > deadline)
					return fail(ft, "the isend after the pause did not complete");
			}
			hput(ch, HM_TOKEN, "sent", 5);
			hwait_token(ft, ch, "bye", 60000, NULL, NULL);
			g_step = "closeSend";
			CALL(ft, pl_close_send(ft->net, comm), "closeSend");
			fbuf_free(ft, &b, 1);
			return 0;
		}
		if (!strcmp(part, "send")) {
			int64_t deadline = now_ms() + ft->op_timeout_ms;
			if (fbuf_alloc(ft, comm, PD_BIG, &b))
				goto failed;
			pat_fill(b.p, PD_BIG, pat_key(ft->seed, PD_BIG, 77));
			while (!req) {
				g_step = "isend";
				CALL(ft, pl_isend(ft->net, comm, b.p, PD_BIG, 1, b.mh, &req), "isend");
				if (now_ms() > deadline)
					return fail(ft, "isend of 64 MiB kept returning NULL");
			}
			pp.req = req;
			for (int i = 0; i < 50; i++) { /* move some of it */
				pd_poll_fn(ft, &pp);
				usleep(1000);
			}
			if (pp.done)
				return fail(ft, "the 64 MiB isend completed (%d) although the victim "
					    "was set up to be slow (FABNET_MAX_WRITE=4096, "
					    "FABNET_WRITES_IN_FLIGHT=1)", (int)pp.res);
		}
		hput(ch, HM_TOKEN, "ready", 6);
	} else { /* receiver */
		size_t sz = PD_BIG;
		int tag = 1;
		if (fbuf_alloc(ft, comm, PD_BIG, &b) ||
		    h_irecv(ft, comm, 1, (void **)&b.p, &sz, &tag, &b.mh, &req, ft->op_timeout_ms))
			goto failed;
		hput(ch, HM_TOKEN, "posted", 7);
		pp.req = req;
		if (hwait_token(ft, ch, "sending", ft->op_timeout_ms, pd_poll_fn, &pp))
			goto failed;
		/* from now on no progress: the send cannot finish */
		hput(ch, HM_TOKEN, "ready", 6);
	}
	/* wait to be killed, making no progress */
	hwait_token(ft, ch, "never", 120000, NULL, NULL);
	return -1;
failed:
	{
		char msg[REASON_MAX + 8];
		snprintf(msg, sizeof(msg), "fail:%s", ft->why);
		hput(ch, HM_TOKEN, msg, (uint32_t)strlen(msg) + 1);
	}
	return -1;
}

/* The survivor's side of "alive": its irecv waits while the peer makes no
 * plugin call for PD_ALIVE_MS; it must neither fail nor complete wrongly. */
static int pd_alive(struct ft *ft, struct ctl *up, struct helper *v, void *comm, struct fbuf *b)
{
	size_t sz = MiB;
	int tag = 1, done = 0, got = -1, sent = 0;
	void *req = NULL;
	int64_t t0, deadline;
	char why[400], buf[64];

	if (fbuf_alloc(ft, comm, MiB + CANARY_PAD, b))
		return -1;
	canary_fill(b->p, 0, b->cap);
	if (h_irecv(ft, comm, 1, (void **)&b->p, &sz, &tag, &b->mh, &req, ft->op_timeout_ms))
		return -1;
	if (hput(&v->ch, HM_TOKEN, "posted", 7))
		return fail(ft, "channel to the peer: %s", v->ch.err);
	t0 = now_ms();
	deadline = t0 + PD_ALIVE_MS + ft->op_timeout_ms;
	while (!done || !sent) {
		if (!done) {
			ncclResult_t r;
			g_step = "test";
			r = pl_test(ft->net, req, &done, &got);
			if (r != ncclSuccess)
				return fail(ft, "test() returned %d (%s) %.1f s into the peer's %.1f s of "
					    "silence: an alive peer was declared dead", (int)r,
					    pl_result_str(r), (double)(now_ms() - t0) / 1000.0,
					    PD_ALIVE_MS / 1000.0);
		}
		if (!sent && ctl_readable(&v->ch) != 0) {
			uint32_t kind;
			if (hget(&v->ch, &kind, buf, sizeof(buf), NULL, 5000))
				return fail(ft, "the peer is gone: %s", v->ch.err);
			if (kind != HM_TOKEN || strcmp(buf, "sent"))
				return fail(ft, "the peer: %s", buf);
			sent = 1;
		}
		if (now_ms() > deadline)
			return fail(ft, "the receive did not complete %.1f s after the peer's pause",
				    (double)(now_ms() - t0 - PD_ALIVE_MS) / 1000.0);
		usleep(500);
	}
	if (got != (int)MiB)
		return fail(ft, "test() reported %d bytes, %u were sent", got, MiB);
	if (pat_check(b->p, MiB, pat_key(ft->seed, MiB, 79), why, sizeof(why)) ||
	    canary_check(b->p, MiB, b->cap, why, sizeof(why)))
		return fail(ft, "after the pause: %s", why);
	hnote(up, "# peer-death alive: the irecv waited %.1f s on a peer silent for %.1f s "
	      "(FABNET_PEER_TIMEOUT_MS=%d), then completed with the right bytes",
	      (double)(now_ms() - t0) / 1000.0, PD_ALIVE_MS / 1000.0, PD_TIMEOUT_MS);
	return 0;
}

/* --helper survivor --part P */
static int helper_survivor(struct ft *ft, struct ctl *up, const char *part)
{
	int receiver = strcmp(part, "recv") != 0;
	const char *vextra[3] = {NULL, NULL, NULL};
	struct helper v;
	struct logcap lc;
	void *lcomm = NULL, *comm = NULL, *req = NULL;
	struct fbuf b;
	struct pd_poll pp;
	int64_t t_event = 0, t_err = 0, t_close = 0;
	int rc = -1, captured = 0, st = 0, send_completed = 0;
	ncclResult_t res = ncclSuccess;
	char line[2048];

	memset(&b, 0, sizeof(b));
	memset(&pp, 0, sizeof(pp));
	memset(&v, 0, sizeof(v));
	memset(&lc, 0, sizeof(lc));
	lc.fd = lc.saved = -1;
	v.pid = -1;
	v.ch.fd = -1;
	if (!strcmp(part, "send")) { /* a slow sender: its transfer is surely cut */
		vextra[0] = "FABNET_MAX_WRITE=4096";
		vextra[1] = "FABNET_WRITES_IN_FLIGHT=1";
	}
	if (strcmp(part, "idle") && strcmp(part, "send") && strcmp(part, "recv") &&
	    strcmp(part, "close") && strcmp(part, "alive") && strcmp(part, "idle-remote"))
		return fail(ft, "unknown peer-death part \"%s\"", part);
	if (!strcmp(part, "idle-remote")) {
		const char *prov = getenv("FABNET_PROVIDER") ? getenv("FABNET_PROVIDER") :
				   getenv("FI_PROVIDER");
		if (prov && !strcmp(prov, "shm")) {
			hnote(up, "# peer-death %s: skipped on shm (its peers share a host, where the "
			      "plugin checks the peer's pid)", part);
			return 0;
		}
	}
	/* the victim first: it must not inherit our endpoint */
	{
		int remote = !strcmp(part, "idle-remote");
		int r = helper_spawn(ft, "victim", remote ? "idle" : part, vextra, -1,
				     remote ? HS_NEWPIDNS : 0, &v);
		if (r < 0)
			return -1;
		if (r > 0) {
			hnote(up, "# peer-death %s: skipped: no permission to create a pid namespace "
			      "(run as root)", part);
			return 0;
		}
	}
	if (logcap_start(&lc) == 0)
		captured = 1;
	if (h_init(ft) || pd_connect(ft, &v.ch, receiver, &lcomm, &comm))
		goto out;
	if (!strcmp(part, "alive")) {
		if (pd_alive(ft, up, &v, comm, &b))
			goto out;
		g_step = "closeRecv";
		res = pl_close_recv(ft->net, comm);
		comm = NULL;
		if (res != ncclSuccess) {
			fail(ft, "closeRecv returned %d (%s)", (int)res, pl_result_str(res));
			goto out;
		}
		rc = 0;
		goto out;
	}
	if (receiver) {
		size_t sz = !strcmp(part, "close") ? MiB : PD_BIG;
		int tag = 1;
		if (fbuf_alloc(ft, comm, sz, &b) ||
		    h_irecv(ft, comm, 1, (void **)&b.p, &sz, &tag, &b.mh, &req, ft->op_timeout_ms))
			goto out;
		if (hput(&v.ch, HM_TOKEN, "posted", 7)) {
			fail(ft, "channel to the victim: %s", v.ch.err);
			goto out;
		}
		pp.req = req;
		if (hwait_token(ft, &v.ch, !strcmp(part, "close") ? "closed" : "ready",
				ft->op_timeout_ms, pd_poll_fn, &pp))
			goto out;
		if (pp.done && !strcmp(part, "close")) {
			/* already failed: fine, as long as it is the right error */
		} else if (pp.done) {
			fail(ft, "the irecv completed (%d, %s) before the victim was killed",
			     (int)pp.res, pl_result_str(pp.res));
			goto out;
		}
	} else {
		int64_t deadline = now_ms() + ft->op_timeout_ms;
		if (fbuf_alloc(ft, comm, PD_BIG, &b))
			goto out;
		pat_fill(b.p, PD_BIG, pat_key(ft->seed, PD_BIG, 78));
		if (hwait_token(ft, &v.ch, "posted", ft->op_timeout_ms, NULL, NULL))
			goto out;
		while (!req) {
			g_step = "isend";
			res = pl_isend(ft->net, comm, b.p, PD_BIG, 1, b.mh, &req);
			if (res != ncclSuccess) {
				fail(ft, "isend of 64 MiB returned %d (%s) before the receiver died",
				     (int)res, pl_result_str(res));
				goto out;
			}
			if (now_ms() > deadline) {
				fail(ft, "isend of 64 MiB kept returning NULL although the receiver "
				     "posted its irecv");
				goto out;
			}
		}
		pp.req = req;
		for (int i = 0; i < 20; i++) {
			pd_poll_fn(ft, &pp);
			usleep(1000);
		}
		if (hput(&v.ch, HM_TOKEN, "sending", 8) ||
		    hwait_token(ft, &v.ch, "ready", ft->op_timeout_ms, pd_poll_fn, &pp))
			goto out;
	}
	/* the event: SIGKILL, or the victim's closeSend has returned (the log is
	 * read from the start of the part: a quick provider may report the event
	 * while we still wait for the victim's word) */
	if (strcmp(part, "close")) {
		pid_t vpid = v.pid;
		kill(v.pid, SIGKILL);
		if (helper_reap(&v, 5000, &st)) {
			fail(ft, "the victim did not die within 5 s of SIGKILL");
			goto out;
		}
		shm_leftovers_remove(vpid);
	}
	t_event = now_ms();
	/* wait for the request to fail */
	for (;;) {
		int64_t limit = !strcmp(part, "close") ? PD_CLOSE_BOUND_MS : PD_BOUND_MS;
		if (!pp.done)
			pd_poll_fn(ft, &pp);
		if (pp.done && pp.res == ncclSuccess && !receiver) {
			/* the whole send left before the receiver died (providers that
			 * write without the target's help): the comm must still fail */
			void *r2 = NULL;
			send_completed = 1;
			g_step = "isend";
			res = pl_isend(ft->net, comm, b.p, 4096, 2, b.mh, &r2);
			if (res != ncclSuccess) {
				t_err = now_ms();
				break;
			}
			if (r2) {
				fail(ft, "isend after the receiver died returned a request: nothing can "
				     "have answered it");
				goto out;
			}
		} else if (pp.done) {
			res = pp.res;
			t_err = now_ms();
			if (res == ncclSuccess) {
				fail(ft, "test() completed the %s successfully after the peer %s",
				     receiver ? "irecv" : "isend",
				     strcmp(part, "close") ? "was killed" : "closed without sending");
				goto out;
			}
			break;
		}
		if (now_ms() - t_event > limit + 9000 + pd_extra_wait_ms()) {
			fail(ft, "no error %.1f s after the peer %s (the bound is %.1f s): test() on "
			     "the %s still reports it in progress (hang)",
			     (double)(now_ms() - t_event) / 1000.0,
			     strcmp(part, "close") ? "was killed" : "closed", (double)limit / 1000.0,
			     receiver ? "irecv" : "isend");
			goto out;
		}
		usleep(500);
	}
	{
		double secs = (double)(t_err - t_event) / 1000.0;
		int64_t limit = !strcmp(part, "close") ? PD_CLOSE_BOUND_MS : PD_BOUND_MS;
		hnote(up, "# peer-death %s: %s returned %d (%s) %.2f s after the peer %s%s", part,
		      send_completed ? "a new isend" : "test()", (int)res, pl_result_str(res), secs,
		      strcmp(part, "close") ? "was killed" : "closed",
		      send_completed ? " (the 64 MiB send had completed before the death)" : "");
		if (t_err - t_event > limit) {
			fail(ft, "the error came %.2f s after the peer %s, more than %.1f s "
			     "(FABNET_PEER_TIMEOUT_MS=%d)", secs,
			     strcmp(part, "close") ? "was killed" : "closed", (double)limit / 1000.0,
			     PD_TIMEOUT_MS);
			goto out;
		}
		if (!strcmp(part, "close") && res != ncclRemoteError) {
			fail(ft, "test() returned %d (%s), not ncclRemoteError, after the peer closed",
			     (int)res, pl_result_str(res));
			goto out;
		}
	}
	/* close must return, promptly */
	g_step = receiver ? "closeRecv" : "closeSend";
	{
		int64_t t0 = now_ms();
		res = receiver ? pl_close_recv(ft->net, comm) : pl_close_send(ft->net, comm);
		t_close = now_ms() - t0;
		comm = NULL;
		if (res != ncclSuccess) {
			fail(ft, "%s after the peer's death returned %d (%s)", g_step, (int)res,
			     pl_result_str(res));
			goto out;
		}
		if (t_close > PD_BOUND_MS) {
			fail(ft, "%s took %.2f s", g_step, (double)t_close / 1000.0);
			goto out;
		}
	}
	if (fbuf_free(ft, &b, 1))
		goto out;
	/* the log names the comm */
	if (captured) {
		char *log = logcap_since_mark(&lc);
		static const char *const died[] = {"comm ", "peer comm ", " at ", "failed", NULL};
		static const char *const closed[] = {"on comm ", "closed", NULL};
		const char *const *words = strcmp(part, "close") ? died : closed;
		if (!log || !log_has_line(log, words, line, sizeof(line))) {
			fail(ft, "no log line names the comm (expected a line with %s); the log "
			     "was:\n%.4000s", strcmp(part, "close") ?
			     "\"comm N ... peer comm M at ADDR ... failed\"" : "\"on comm N ... closed\"",
			     log ? log : "(none)");
			free(log);
			goto out;
		}
		free(log);
		hnote(up, "# peer-death %s: log: %s", part, line);
	}
	rc = 0;
out:
	if (comm && receiver)
		pl_close_recv(ft->net, comm);
	else if (comm)
		pl_close_send(ft->net, comm);
	if (lcomm)
		pl_close_listen(ft->net, lcomm);
	fbuf_free(ft, &b, 1);
	if (v.pid > 0 && (!strcmp(part, "close") || !strcmp(part, "alive")) && rc == 0) {
		hput(&v.ch, HM_TOKEN, "bye", 4);
		if (helper_reap(&v, 15000, &st)) {
			rc = fail(ft, "the peer (%s) did not exit", part);
		} else if (!WIFEXITED(st) || WEXITSTATUS(st)) {
			char d[128];
			describe_status(st, d, sizeof(d));
			rc = fail(ft, "the peer (%s) %s", part, d);
		}
	}
	helper_kill(&v);
	if (captured)
		logcap_stop(&lc);
	return rc;
}

static int pd_part(struct ft *ft, const void *arg)
{
	static const char *const extra[] = {"FABNET_PEER_TIMEOUT_MS=2000", NULL};

	const char *prov = getenv("FABNET_PROVIDER");

	if (ft->rank != 0)
		return 0;
	/* sockets completes sends to a dead remote peer as if delivered, and udp
	 * (rxd) completes them only when the peer's software answers, so a dead
	 * remote peer looks alive or merely silent: no keepalive can tell. On the
	 * same host the process check still works (the other parts). */
	if (!strcmp((const char *)arg, "idle-remote") && prov &&
	    (!strcmp(prov, "sockets") || !strcmp(prov, "udp"))) {
		printf("# SKIP peer-death idle-remote on %s: the provider cannot report a dead "
		       "remote peer\n", prov);
		return 0;
	}
	return helper_run(ft, "survivor", arg, extra, 120000);
}

static int scen_peer_death(struct ft *ft)
{
	sub(ft, "sender killed while an irecv waits (nothing sent)", pd_part, "idle");
	sub(ft, "the same, the sender's pid hidden in a pid namespace (as on another node)",
	    pd_part, "idle-remote");
	sub(ft, "sender killed during a 64 MiB transfer", pd_part, "send");
	sub(ft, "receiver killed while 64 MiB are sent", pd_part, "recv");
	sub(ft, "sender closes early with an irecv posted", pd_part, "close");
	sub(ft, "sender alive but silent for 2.5x the timeout: no false alarm", pd_part, "alive");
	return 0;
}

/* Entry point of --helper: a fresh process, fd its channel to the parent. */
static int helper_main(const char *plugin, int dev, int abi, uint64_t seed, const char *role,
		       const char *part, int fd)
{
	struct ft ft;
	struct ctl up;
	char msg[4 + REASON_MAX];
	int32_t ok;
	int rc;

	memset(&ft, 0, sizeof(ft));
	memset(&up, 0, sizeof(up));
	up.fd = fd;
	up.timeout_ms = 30000;
	ft.plugin = plugin;
	ft.dev = dev;
	ft.abi = abi;
	ft.seed = seed;
	ft.net = &ft.base;
	ft.rank = -1;
	ft.op_timeout_ms = 30000;
	g_scen = role;
	signal(SIGPIPE, SIG_IGN);
	alarm(100); /* default action: the parent sees SIGALRM and reports a hang */
	if (!strcmp(role, "flush"))
		rc = helper_flush(&ft, &up);
	else if (!strcmp(role, "survivor"))
		rc = helper_survivor(&ft, &up, part);
	else if (!strcmp(role, "victim")) {
		rc = helper_victim(&ft, &up, part);
		g_step = "finalize";
		pl_finalize(&ft.base);
		return rc ? 1 : 0;
	}
	else
		rc = fail(&ft, "unknown helper role %s", role);
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

/* ---- threads ----------------------------------------------------------------------
 * NCCL drives comms from several proxy threads. TH_THREADS threads per rank,
 * each with its own TH_COMMS comm pairs (half of them it receives on, half it
 * sends on), connect/accept, register, then isend/irecv/test interleaved
 * across its comms with every byte verified, then close, all concurrently on
 * one device. The threads share nothing but an abort flag and a progress
 * counter (atomics), so a TSan build reports only the plugin's races. */

#define TH_THREADS 4
#define TH_COMMS 4
#define TH_MSGS (1000 / TH_COMMS) /* per comm: 1000 per thread */
#define TH_WIN 4                  /* outstanding per comm */
#define TH_MAX (512u * 1024)
#define TH_PAD 256

struct th_slot {
	uint8_t *p;
	void *mh;
	void *req;
	int busy;
	int msg;
};

struct th_comm {
	int pair;
	int recv;              /* this rank receives on it */
	void *lcomm, *comm;
	uint8_t handle[NCCL_NET_HANDLE_MAXSIZE];
	int next, ndone;
	int pend;              /* slot whose post returned NULL, or -1 */
	struct th_slot s[TH_WIN];
};

struct th_ctx {
	struct ft *ft;
	int idx;
	int phase;             /* 0: connect + transfer, 1: deregister + close */
	struct th_comm c[TH_COMMS];
	char why[REASON_MAX];
	pthread_t tid;
	int started;
};

static int th_abort;
static unsigned long th_progress;
static int th_finished;

static int th_fail(struct th_ctx *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int th_fail(struct th_ctx *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!t->why[0]) {
		n = snprintf(t->why, sizeof(t->why), "thread %d: ", t->idx);
		va_start(ap, fmt);
		vsnprintf(t->why + n, sizeof(t->why) - (size_t)n, fmt, ap);
		va_end(ap);
	}
	__atomic_store_n(&th_abort, 1, __ATOMIC_SEQ_CST);
	return -1;
}

static size_t th_size(uint64_t seed, int pair, int i)
{
	uint64_t r = mix64(seed ^ 0x7417ull ^ ((uint64_t)pair << 40) ^ (uint64_t)i);
	unsigned pct = (unsigned)(r % 100);

	r >>= 8;
	if (pct < 70)
		return (size_t)(r % 8193);                 /* eager */
	if (pct < 97)
		return 8193 + (size_t)(r % (128 * 1024));  /* rendezvous */
	return 128 * 1024 + (size_t)(r % (TH_MAX - 128 * 1024 + 1));
}

static uint64_t th_key(uint64_t seed, int pair, int i, size_t size)
{
	return pat_key(seed ^ 0x7417ull, size, ((uint64_t)pair << 32) | (uint64_t)i);
}

static int th_tag(int pair, int i)
{
	return (pair * 1000 + i) & 0xffff;
}

static int th_transfer(struct th_ctx *t)
{
	struct ft *ft = t->ft;
	int64_t deadline = now_ms() + ft->op_timeout_ms;
	int total = TH_COMMS * TH_MSGS, done = 0;
	ncclResult_t r;

	/* connect and accept, interleaved over our comms */
	for (;;) {
		int left = 0;
		for (int j = 0; j < TH_COMMS; j++) {
			struct th_comm *c = &t->c[j];
			if (c->comm)
				continue;
			if (c->recv)
				r = pl_accept(ft->net, c->lcomm, &c->comm);
			else
				r = pl_connect(ft->net, ft->dev, c->handle, &c->comm);
			if (r != ncclSuccess)
				return th_fail(t, "%s (pair %d) returned %d (%s)",
					       c->recv ? "accept" : "connect", c->pair, (int)r,
					       pl_result_str(r));
			if (!c->comm)
				left++;
		}
		if (!left)
			break;
		if (__atomic_load_n(&th_abort, __ATOMIC_SEQ_CST))
			return -1;
		if (now_ms() > deadline)
			return th_fail(t, "connect/accept did not finish within %d s",
				       ft->op_timeout_ms / 1000);
		sched_yield();
	}
	for (int j = 0; j < TH_COMMS; j++) {
		struct th_comm *c = &t->c[j];
		if (c->lcomm) {
			r = pl_close_listen(ft->net, c->lcomm);
			c->lcomm = NULL;
			if (r != ncclSuccess)
				return th_fail(t, "closeListen returned %d (%s)", (int)r,
					       pl_result_str(r));
		}
		for (int s = 0; s < TH_WIN; s++) {
			void *p = mmap(NULL, TH_MAX + TH_PAD, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (p == MAP_FAILED)
				return th_fail(t, "mmap: %s", strerror(errno));
			c->s[s].p = p;
			r = pl_reg_mr(ft->net, c->comm, p, TH_MAX + TH_PAD, NCCL_PTR_HOST, &c->s[s].mh);
			if (r != ncclSuccess)
				return th_fail(t, "regMr returned %d (%s)", (int)r, pl_result_str(r));
		}
		__atomic_fetch_add(&th_progress, 1, __ATOMIC_SEQ_CST);
	}
	deadline = now_ms() + ft->op_timeout_ms;
	while (done < total) {
		int progress = 0;
		for (int j = 0; j < TH_COMMS; j++) {
			struct th_comm *c = &t->c[j];
			/* post, in order */
			while (c->next < TH_MSGS) {
				int s = c->pend, i = c->next;
				size_t size = th_size(ft->seed, c->pair, i);
				int tag = th_tag(c->pair, i);
				struct th_slot *sl;
				if (s < 0) {
					for (int k = 0; k < TH_WIN && s < 0; k++)
						if (!c->s[k].busy)
							s = k;
					if (s < 0)
						break;
					if (c->recv)
						canary_fill(c->s[s].p, size, size + TH_PAD);
					else
						pat_fill(c->s[s].p, size, th_key(ft->seed, c->pair, i, size));
				}
				sl = &c->s[s];
				sl->req = NULL;
				if (c->recv) {
					size_t cap = size + (size_t)(i % 3) * 10;
					void *data = sl->p, *mh = sl->mh;
					r = pl_irecv(ft->net, c->comm, 1, &data, &cap, &tag, &mh, &sl->req);
				} else {
					r = pl_isend(ft->net, c->comm, sl->p, size, tag, sl->mh, &sl->req);
				}
				if (r != ncclSuccess)
					return th_fail(t, "%s #%d (pair %d, %zu bytes) returned %d (%s)",
						       c->recv ? "irecv" : "isend", i, c->pair, size, (int)r,
						       pl_result_str(r));
				if (!sl->req) {
					c->pend = s;
					break;
				}
				c->pend = -1;
				sl->busy = 1;
				sl->msg = i;
				c->next++;
				progress = 1;
			}
			/* test */
			for (int s = 0; s < TH_WIN; s++) {
				struct th_slot *sl = &c->s[s];
				int d = 0, got = -12345;
				size_t size;
				char why[400];
				if (!sl->busy)
					continue;
				r = pl_test(ft->net, sl->req, &d, &got);
				if (r != ncclSuccess)
					return th_fail(t, "test() on %s #%d (pair %d) returned %d (%s)",
						       c->recv ? "irecv" : "isend", sl->msg, c->pair, (int)r,
						       pl_result_str(r));
				if (!d)
					continue;
				size = th_size(ft->seed, c->pair, sl->msg);
				if (got != (int)size)
					return th_fail(t, "test() on %s #%d (pair %d) reported %d bytes, "
						       "%zu were sent", c->recv ? "irecv" : "isend",
						       sl->msg, c->pair, got, size);
				if (c->recv &&
				    (pat_check(sl->p, size, th_key(ft->seed, c->pair, sl->msg, size), why,
					       sizeof(why)) ||
				     canary_check(sl->p, size, size + TH_PAD, why, sizeof(why))))
					return th_fail(t, "message #%d on pair %d (%zu bytes): %s", sl->msg,
						       c->pair, size, why);
				sl->busy = 0;
				sl->req = NULL;
				c->ndone++;
				done++;
				progress = 1;
			}
		}
		if (progress) {
			deadline = now_ms() + ft->op_timeout_ms;
			__atomic_fetch_add(&th_progress, 1, __ATOMIC_SEQ_CST);
			continue;
		}
		if (__atomic_load_n(&th_abort, __ATOMIC_SEQ_CST))
			return -1;
		if (now_ms() > deadline) {
			int j0 = 0;
			for (int j = 0; j < TH_COMMS; j++)
				if (t->c[j].ndone < TH_MSGS) {
					j0 = j;
					break;
				}
			return th_fail(t, "no progress for %d s: %d of %d messages done; pair %d (%s): "
				       "%d posted, %d done", ft->op_timeout_ms / 1000, done, total,
				       t->c[j0].pair, t->c[j0].recv ? "receiving" : "sending",
				       t->c[j0].next, t->c[j0].ndone);
		}
		sched_yield();
	}
	return 0;
}

static int th_close(struct th_ctx *t)
{
	struct ft *ft = t->ft;
	int rc = 0;

	for (int j = 0; j < TH_COMMS; j++) {
		struct th_comm *c = &t->c[j];
		ncclResult_t r;
		for (int s = 0; s < TH_WIN; s++) {
			if (c->s[s].mh) {
				r = pl_dereg_mr(ft->net, c->comm, c->s[s].mh);
				if (r != ncclSuccess && !rc)
					rc = th_fail(t, "deregMr returned %d (%s)", (int)r, pl_result_str(r));
			}
			if (c->s[s].p)
				munmap(c->s[s].p, TH_MAX + TH_PAD);
			memset(&c->s[s], 0, sizeof(c->s[s]));
		}
		if (c->comm) {
			r = c->recv ? pl_close_recv(ft->net, c->comm) : pl_close_send(ft->net, c->comm);
			if (r != ncclSuccess && !rc)
				rc = th_fail(t, "%s returned %d (%s)", c->recv ? "closeRecv" : "closeSend",
					     (int)r, pl_result_str(r));
			c->comm = NULL;
		}
		if (c->lcomm) {
			pl_close_listen(ft->net, c->lcomm);
			c->lcomm = NULL;
		}
	}
	return rc;
}

static void *th_main(void *arg)
{
	struct th_ctx *t = arg;

	if (t->phase == 0)
		th_transfer(t);
	else
		th_close(t);
	__atomic_fetch_add(&th_finished, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

/* Runs every thread through one phase; the main thread keeps the watchdog
 * and the control channel. Returns -1 if a thread failed. */
static int th_phase(struct ft *ft, struct th_ctx *t, int phase)
{
	unsigned long seen = (unsigned long)-1;
	int64_t last = now_ms();
	int rc = 0;

	__atomic_store_n(&th_finished, 0, __ATOMIC_SEQ_CST);
	for (int i = 0; i < TH_THREADS; i++) {
		t[i].phase = phase;
		if (pthread_create(&t[i].tid, NULL, th_main, &t[i])) {
			__atomic_store_n(&th_abort, 1, __ATOMIC_SEQ_CST);
			rc = fail(ft, "pthread_create failed");
			break;
		}
		t[i].started = 1;
	}
	g_step = phase ? "threads closing" : "threads transferring";
	for (;;) {
		int started = 0;
		unsigned long pr = __atomic_load_n(&th_progress, __ATOMIC_SEQ_CST);
		for (int i = 0; i < TH_THREADS; i++)
			started += t[i].started;
		if (__atomic_load_n(&th_finished, __ATOMIC_SEQ_CST) >= started)
			break;
		if (pr != seen) {
			seen = pr;
			last = now_ms();
			wd_kick();
		}
		if (!__atomic_load_n(&th_abort, __ATOMIC_SEQ_CST) && phase == 0 && peer_failed(ft))
			__atomic_store_n(&th_abort, 1, __ATOMIC_SEQ_CST);
		if (now_ms() - last > ft->op_timeout_ms + 10000)
			__atomic_store_n(&th_abort, 1, __ATOMIC_SEQ_CST); /* the threads time out first */
		usleep(20000);
	}
	for (int i = 0; i < TH_THREADS; i++) {
		if (!t[i].started)
			continue;
		pthread_join(t[i].tid, NULL);
		t[i].started = 0;
		if (t[i].why[0] && !ft->why[0])
			rc = fail(ft, "%s", t[i].why);
		else if (t[i].why[0])
			rc = -1;
	}
	return rc;
}

static int scen_threads(struct ft *ft)
{
	struct th_ctx *t = calloc(TH_THREADS, sizeof(*t));
	enum { NPAIRS = TH_THREADS * TH_COMMS };
	uint8_t *mine = calloc(NPAIRS, NCCL_NET_HANDLE_MAXSIZE);
	uint8_t *theirs = calloc(NPAIRS, NCCL_NET_HANDLE_MAXSIZE);
	int rc = -1, msgs = 0;
	size_t bytes = 0;
	int64_t t0;

	if (!t || !mine || !theirs) {
		fail(ft, "out of memory");
		goto out;
	}
	__atomic_store_n(&th_abort, 0, __ATOMIC_SEQ_CST);
	/* pair k belongs to thread k / TH_COMMS; rank 0 receives on even j */
	for (int i = 0; i < TH_THREADS; i++) {
		t[i].ft = ft;
		t[i].idx = i;
		for (int j = 0; j < TH_COMMS; j++) {
			struct th_comm *c = &t[i].c[j];
			c->pair = i * TH_COMMS + j;
			c->recv = (j % 2 == 0) == (ft->rank == 0);
			c->pend = -1;
			for (int m = 0; m < TH_MSGS; m++) {
				msgs++;
				bytes += th_size(ft->seed, c->pair, m);
			}
			if (c->recv) {
				ncclResult_t r;
				g_step = "listen";
				r = pl_listen(ft->net, ft->dev, c->handle, &c->lcomm);
				if (r != ncclSuccess || !c->lcomm) {
					fail(ft, "listen returned %d (%s)", (int)r, pl_result_str(r));
					goto out;
				}
				memcpy(mine + (size_t)c->pair * NCCL_NET_HANDLE_MAXSIZE, c->handle,
				       NCCL_NET_HANDLE_MAXSIZE);
			}
		}
	}
	if (ft_send(ft, mine, NPAIRS * NCCL_NET_HANDLE_MAXSIZE) ||
	    ft_recv(ft, theirs, NPAIRS * NCCL_NET_HANDLE_MAXSIZE))
		goto out;
	for (int i = 0; i < TH_THREADS; i++)
		for (int j = 0; j < TH_COMMS; j++) {
			struct th_comm *c = &t[i].c[j];
			if (!c->recv)
				memcpy(c->handle, theirs + (size_t)c->pair * NCCL_NET_HANDLE_MAXSIZE,
				       NCCL_NET_HANDLE_MAXSIZE);
		}
	t0 = now_ms();
	if (th_phase(ft, t, 0))
		goto close;
	if (ft->rank == 0)
		printf("# threads: %d threads x %d comms per rank, %d messages (%.1f MiB, both "
		       "directions) in %.2f s\n", TH_THREADS, TH_COMMS, msgs,
		       (double)bytes / MiB, (double)(now_ms() - t0) / 1000.0);
	/* both ranks are done transferring before anyone closes */
	if (ft_sync(ft))
		goto close;
	rc = 0;
close:
	__atomic_store_n(&th_abort, 0, __ATOMIC_SEQ_CST);
	if (th_phase(ft, t, 1))
		rc = -1;
out:
	if (t)
		for (int i = 0; i < TH_THREADS; i++)
			for (int j = 0; j < TH_COMMS; j++)
				if (t[i].c[j].lcomm)
					pl_close_listen(ft->net, t[i].c[j].lcomm);
	free(t);
	free(mine);
	free(theirs);
	return rc;
}

/* ---- soak --------------------------------------------------------------------------
 * At least SOAK_MIN_MSGS messages and SOAK_MIN_BYTES bytes of seeded random
 * sizes (mostly 0..64 KiB, some up to 4 MiB) over SOAK_COMMS comms, received
 * in groups of 1..8, every byte compared with its pattern and every posted
 * buffer's tail with its canary; no message may be lost. The RSS must stay
 * flat: it may not grow by more than 16 MiB between 10% and 100%. */

#define SOAK_COMMS 16
#define SOAK_MIN_MSGS 100000u
#define SOAK_MIN_BYTES (2ull << 30)
#define SOAK_ARENA (12u * MiB)
#define SOAK_GROUP_BYTES (5u * MiB)
#define SOAK_RWIN 8    /* receive groups in flight per comm */
#define SOAK_SWIN 24   /* sends in flight per comm */
#define SOAK_TAIL 64   /* canary bytes checked after each receive buffer */
#define SOAK_RSS_SLACK (16u * MiB)

struct soak_ent {
	uint32_t size, cap;
	int32_t tag;
	uint64_t id;   /* global message number: the pattern's iteration */
};

struct soak_grp {
	uint32_t first;
	uint8_t n;
	uint8_t order[MAX_GROUP]; /* the sender's order */
};

struct soak_ring {
	uint8_t *base;
	void *mh;
	size_t cap, start, end;
	int live;
};

struct soak_rop {
	uint32_t grp;
	size_t off, len;
	int allocated, posted;
	void *req;
};

struct soak_sop {
	uint32_t ent;
	size_t off, len;
	int allocated, posted;
	void *req;
};

struct soak_comm {
	struct soak_ent *e;
	uint32_t ne, cape;
	struct soak_grp *g;
	uint32_t ng, capg;
	struct soak_ring ring;
	struct soak_rop r[SOAK_RWIN];
	unsigned rhead, rcount;   /* posted (or being posted) groups */
	uint32_t next_grp;
	struct soak_sop s[SOAK_SWIN];
	unsigned shead, scount;
	uint32_t sgrp, sj;        /* next send: group, position in its order */
	uint32_t done;            /* messages completed */
};

static long ring_alloc(struct soak_ring *r, size_t need)
{
	size_t off;

	if (r->live == 0)
		r->start = r->end = 0;
	if (r->end >= r->start) {
		if (r->cap - r->end >= need)
			off = r->end;
		else if (need < r->start)
			off = 0;
		else
			return -1;
	} else {
		if (r->start - r->end > need)
			off = r->end;
		else
			return -1;
	}
	r->end = off + need;
	r->live++;
	return (long)off;
}

/* Frees the oldest allocation; next_off: the offset of the next oldest. */
static void ring_free_oldest(struct soak_ring *r, size_t next_off)
{
	r->live--;
	r->start = r->live ? next_off : 0;
	if (!r->live)
		r->end = 0;
}

static uint64_t soak_rand(uint64_t *s)
{
	*s += 0x9e3779b97f4a7c15ull;
	return mix64(*s);
}

static uint32_t soak_size(uint64_t *rs)
{
	uint64_t r = soak_rand(rs);
	unsigned pct = (unsigned)(r % 1000);

	r >>= 10;
	if (pct < 960) {
		unsigned b = 6 + (unsigned)(r % 11);
		r >>= 4;
		return (uint32_t)(r % ((1u << b) + 1));         /* 0 .. 64 KiB */
	}
	if (pct < 996)
		return 65536 + (uint32_t)(r % (448 * 1024));    /* 64 KiB .. 512 KiB */
	return 512 * 1024 + (uint32_t)(r % (3584 * 1024 + 1)); /* .. 4 MiB */
}

static void *grow(void *p, uint32_t *cap, size_t elem, uint32_t need)
{
	if (need <= *cap)
		return p;
	while (*cap < need)
		*cap = *cap ? *cap * 2 : 1024;
	return realloc(p, (size_t)*cap * elem);
}

/* The same schedule on both ranks: groups dealt round-robin to the comms. */
static int soak_schedule(struct ft *ft, struct soak_comm *sc, uint64_t *msgs, uint64_t *bytes)
{
	uint64_t rs = ft->seed ^ 0x50a4ull, id = 0;
	uint64_t min_msgs = SOAK_MIN_MSGS, min_bytes = SOAK_MIN_BYTES;
	const char *env = getenv("FABNET_FT_SOAK_SCALE");

	if (env && atof(env) > 0) { /* a longer (or, for debugging, shorter) soak */
		min_msgs = (uint64_t)((double)min_msgs * atof(env));
		min_bytes = (uint64_t)((double)min_bytes * atof(env));
	}
	*msgs = *bytes = 0;
	for (uint32_t gi = 0; *msgs < min_msgs || *bytes < min_bytes; gi++) {
		struct soak_comm *c = &sc[gi % SOAK_COMMS];
		uint64_t r = soak_rand(&rs);
		int n = r % 10 < 6 ? 1 : 2 + (int)((r >> 8) % 7);
		size_t gbytes = 0;
		struct soak_grp *g;
		int perm[MAX_GROUP];

		c->g = grow(c->g, &c->capg, sizeof(*c->g), c->ng + 1);
		c->e = grow(c->e, &c->cape, sizeof(*c->e), c->ne + (uint32_t)n);
		if (!c->g || !c->e)
			return fail(ft, "out of memory");
		g = &c->g[c->ng++];
		g->first = c->ne;
		g->n = (uint8_t)n;
		shuffle(perm, n, soak_rand(&rs));
		for (int j = 0; j < n; j++) {
			struct soak_ent *e = &c->e[c->ne++];
			uint64_t x = soak_rand(&rs);
			e->size = soak_size(&rs);
			if (gbytes + e->size > SOAK_GROUP_BYTES)
				e->size %= 65537;
			gbytes += e->size;
			e->cap = e->size + (x % 4 == 0 ? (uint32_t)((x >> 8) % 5000) : 0);
			e->tag = (int32_t)((gi * 8u + (uint32_t)j) & 0x3fffffff);
			e->id = id++;
			g->order[j] = (uint8_t)perm[j];
			*bytes += e->size;
		}
		*msgs += (uint64_t)n;
	}
	return 0;
}

static size_t rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long size = 0, res = 0;

	if (!f)
		return 0;
	if (fscanf(f, "%lu %lu", &size, &res) != 2)
		res = 0;
	fclose(f);
	return res * page_size();
}

#define SOAK_ALIGN(x) (((x) + 63) & ~(size_t)63)

/* Receiver: post the next groups, test those in flight, verify. Returns the
 * number of messages completed, or -1. */
static int soak_recv_step(struct ft *ft, struct soak_comm *c, void *comm)
{
	int completed = 0;
	ncclResult_t r;

	while (c->rcount < SOAK_RWIN && c->next_grp < c->ng) {
		struct soak_rop *op = &c->r[(c->rhead + c->rcount) % SOAK_RWIN];
		const struct soak_grp *g = &c->g[c->next_grp];
		void *data[MAX_GROUP], *mh[MAX_GROUP];
		size_t sizes[MAX_GROUP], o;
		int tags[MAX_GROUP];
		if (!op->allocated) {
			size_t need = 0;
			long off;
			for (int j = 0; j < g->n; j++)
				need += SOAK_ALIGN(c->e[g->first + (uint32_t)j].cap + SOAK_TAIL);
			off = ring_alloc(&c->ring, need);
			if (off < 0)
				break;
			op->grp = c->next_grp;
			op->off = (size_t)off;
			op->len = need;
			op->allocated = 1;
			op->req = NULL;
			o = op->off;
			for (int j = 0; j < g->n; j++) {
				const struct soak_ent *e = &c->e[g->first + (uint32_t)j];
				canary_fill(c->ring.base + o, e->size, (size_t)e->cap + SOAK_TAIL);
				o += SOAK_ALIGN(e->cap + SOAK_TAIL);
			}
		}
		o = op->off;
		for (int j = 0; j < g->n; j++) {
			const struct soak_ent *e = &c->e[g->first + (uint32_t)j];
			data[j] = c->ring.base + o;
			mh[j] = c->ring.mh;
			sizes[j] = e->cap;
			tags[j] = e->tag;
			o += SOAK_ALIGN(e->cap + SOAK_TAIL);
		}
		g_step = "irecv";
		r = pl_irecv(ft->net, comm, g->n, data, sizes, tags, mh, &op->req);
		if (r != ncclSuccess)
			return fail(ft, "irecv of group %u (n=%d) returned %d (%s)", c->next_grp, g->n,
				    (int)r, pl_result_str(r));
		if (!op->req)
			break;
		op->posted = 1;
		c->rcount++;
		c->next_grp++;
	}
	for (unsigned k = 0; k < c->rcount; k++) {
		struct soak_rop *op = &c->r[(c->rhead + k) % SOAK_RWIN];
		const struct soak_grp *g = &c->g[op->grp];
		int done = 0, got[MAX_GROUP];
		size_t o = op->off;
		if (!op->req)
			continue;
		g_step = "test";
		r = pl_test(ft->net, op->req, &done, got);
		if (r != ncclSuccess)
			return fail(ft, "test() on the irecv of group %u (n=%d) returned %d (%s)",
				    op->grp, g->n, (int)r, pl_result_str(r));
		if (!done)
			continue;
		op->req = NULL;
		for (int j = 0; j < g->n; j++) {
			const struct soak_ent *e = &c->e[g->first + (uint32_t)j];
			uint8_t *p = c->ring.base + o;
			char why[400];
			if (got[j] != (int)e->size)
				return fail(ft, "message %" PRIu64 " (group %u, %d of %d): test() reported "
					    "%d bytes, %u were sent", e->id, op->grp, j, g->n, got[j],
					    e->size);
			if (pat_check(p, e->size, pat_key(ft->seed, e->size, e->id), why, sizeof(why)) ||
			    canary_check(p, e->size, (size_t)e->cap + SOAK_TAIL, why, sizeof(why)))
				return fail(ft, "message %" PRIu64 " (group %u, %d of %d, %u bytes into a "
					    "%u-byte buffer): %s", e->id, op->grp, j, g->n, e->size,
					    e->cap, why);
			o += SOAK_ALIGN(e->cap + SOAK_TAIL);
		}
		completed += g->n;
		op->posted = 0;
	}
	/* release finished groups in order */
	while (c->rcount && !c->r[c->rhead].req && c->r[c->rhead].posted == 0 &&
	       c->r[c->rhead].allocated) {
		struct soak_rop *op = &c->r[c->rhead];
		op->allocated = 0;
		c->rhead = (c->rhead + 1) % SOAK_RWIN;
		c->rcount--;
		/* the new head is the oldest allocation left, posted or not */
		ring_free_oldest(&c->ring, c->r[c->rhead].allocated ? c->r[c->rhead].off : 0);
	}
	return completed;
}

static int soak_send_step(struct ft *ft, struct soak_comm *c, void *comm)
{
	int completed = 0;
	ncclResult_t r;

	while (c->scount < SOAK_SWIN && c->sgrp < c->ng) {
		struct soak_sop *op = &c->s[(c->shead + c->scount) % SOAK_SWIN];
		const struct soak_grp *g = &c->g[c->sgrp];
		uint32_t ei = g->first + g->order[c->sj];
		const struct soak_ent *e = &c->e[ei];
		if (!op->allocated) {
			long off = ring_alloc(&c->ring, SOAK_ALIGN(e->size ? e->size : 1));
			if (off < 0)
				break;
			op->off = (size_t)off;
			op->len = SOAK_ALIGN(e->size ? e->size : 1);
			op->allocated = 1;
			op->ent = ei;
			op->req = NULL;
			pat_fill(c->ring.base + op->off, e->size, pat_key(ft->seed, e->size, e->id));
		}
		g_step = "isend";
		r = pl_isend(ft->net, comm, c->ring.base + op->off, e->size, e->tag, c->ring.mh,
			     &op->req);
		if (r != ncclSuccess)
			return fail(ft, "isend of message %" PRIu64 " (%u bytes, tag %d) returned %d (%s)",
				    e->id, e->size, e->tag, (int)r, pl_result_str(r));
		if (!op->req)
			break;
		op->posted = 1;
		c->scount++;
		if (++c->sj == g->n) {
			c->sj = 0;
			c->sgrp++;
		}
	}
	for (unsigned k = 0; k < c->scount; k++) {
		struct soak_sop *op = &c->s[(c->shead + k) % SOAK_SWIN];
		const struct soak_ent *e = &c->e[op->ent];
		int done = 0, got = -1;
		if (!op->req)
			continue;
		g_step = "test";
		r = pl_test(ft->net, op->req, &done, &got);
		if (r != ncclSuccess)
			return fail(ft, "test() on the isend of message %" PRIu64 " returned %d (%s)",
				    e->id, (int)r, pl_result_str(r));
		if (!done)
			continue;
		if (got != (int)e->size)
			return fail(ft, "test() on the isend of message %" PRIu64 " reported %d bytes, "
				    "not %u", e->id, got, e->size);
		op->req = NULL;
		op->posted = 0;
		completed++;
	}
	while (c->scount && !c->s[c->shead].req && !c->s[c->shead].posted &&
	       c->s[c->shead].allocated) {
		c->s[c->shead].allocated = 0;
		c->shead = (c->shead + 1) % SOAK_SWIN;
		c->scount--;
		ring_free_oldest(&c->ring, c->s[c->shead].allocated ? c->s[c->shead].off : 0);
	}
	return completed;
}

static int scen_soak(struct ft *ft)
{
	struct soak_comm *sc = calloc(SOAK_COMMS, sizeof(*sc));
	struct pair *p = calloc(SOAK_COMMS, sizeof(*p));
	uint64_t msgs = 0, bytes = 0, done = 0;
	size_t rss[3] = {0, 0, 0};
	uint64_t peer_rss[3] = {0, 0, 0};
	static const int pct[3] = {10, 50, 100};
	int next_mark = 0, rc = -1, opened = 0;
	int64_t t0, last, tmark[3] = {0, 0, 0};

	if (!sc || !p) {
		fail(ft, "out of memory");
		goto out;
	}
	if (soak_schedule(ft, sc, &msgs, &bytes))
		goto out;
	if (ft->rank == 0)
		printf("# soak: %" PRIu64 " messages, %.2f GiB over %d comms, groups of 1..%d\n", msgs,
		       (double)bytes / (1024.0 * MiB), SOAK_COMMS, MAX_GROUP);
	opened = 1;
	if (pairs_open(ft, p, SOAK_COMMS, 1))
		goto out;
	for (int i = 0; i < SOAK_COMMS; i++) {
		struct soak_ring *rg = &sc[i].ring;
		ncclResult_t r;
		rg->cap = SOAK_ARENA;
		rg->base = mmap(NULL, rg->cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
				-1, 0);
		if (rg->base == MAP_FAILED) {
			rg->base = NULL;
			fail(ft, "mmap: %s", strerror(errno));
			goto out;
		}
		memset(rg->base, 0, rg->cap); /* resident from the start: RSS is then flat */
		g_step = "regMr";
		r = pl_reg_mr(ft->net, p[i].comm, rg->base, rg->cap, NCCL_PTR_HOST, &rg->mh);
		if (r != ncclSuccess) {
			fail(ft, "regMr of a %u MiB arena returned %d (%s)", SOAK_ARENA / MiB, (int)r,
			     pl_result_str(r));
			goto out;
		}
	}
	if (ft_sync(ft))
		goto out;
	t0 = last = now_ms();
	while (done < msgs) {
		int progress = 0;
		for (int i = 0; i < SOAK_COMMS; i++) {
			int n = ft->rank == 0 ? soak_recv_step(ft, &sc[i], p[i].comm)
					      : soak_send_step(ft, &sc[i], p[i].comm);
			if (n < 0)
				goto out;
			if (n) {
				progress = 1;
				done += (uint64_t)n;
				sc[i].done += (uint32_t)n;
			}
		}
		while (next_mark < 3 && done * 100 >= msgs * (uint64_t)pct[next_mark]) {
			rss[next_mark] = rss_bytes();
			tmark[next_mark] = now_ms();
			if (ft->rank == 0)
				printf("# soak: %3d%%: %" PRIu64 " messages in %.1f s, RSS %.1f MiB\n",
				       pct[next_mark], done, (double)(tmark[next_mark] - t0) / 1000.0,
				       (double)rss[next_mark] / MiB);
			next_mark++;
		}
		if (progress) {
			last = now_ms();
			wd_kick();
			continue;
		}
		if (peer_failed(ft))
			goto out;
		if (now_ms() - last > ft->op_timeout_ms) {
			int worst = 0;
			for (int i = 1; i < SOAK_COMMS; i++)
				if (sc[i].done < sc[worst].done)
					worst = i;
			fail(ft, "no progress for %d s after %" PRIu64 " of %" PRIu64 " messages; comm "
			     "%d: %u of %u done, %s", ft->op_timeout_ms / 1000, done, msgs, worst,
			     sc[worst].done, sc[worst].ne,
			     ft->rank == 0 ? "receiving" : "sending");
			goto out;
		}
	}
	{
		double secs = (double)(now_ms() - t0) / 1000.0;
		uint64_t mine[3] = {rss[0], rss[1], rss[2]};
		if (ft->rank == 1) {
			if (ft_send(ft, mine, sizeof(mine)))
				goto out;
		} else {
			if (ft_recv(ft, peer_rss, sizeof(peer_rss)))
				goto out;
			printf("# soak: %" PRIu64 " messages, %" PRIu64 " bytes (%.2f GiB) in %.1f s: "
			       "%.0f MB/s, %.0f messages/s, no corruption, no loss\n", msgs, bytes,
			       (double)bytes / (1024.0 * MiB), secs, (double)bytes / 1e6 / secs,
			       (double)msgs / secs);
			printf("# soak: RSS at 10%%/50%%/100%%: rank 0 (receiver) %.1f/%.1f/%.1f MiB, "
			       "rank 1 (sender) %.1f/%.1f/%.1f MiB\n", (double)rss[0] / MiB,
			       (double)rss[1] / MiB, (double)rss[2] / MiB, (double)peer_rss[0] / MiB,
			       (double)peer_rss[1] / MiB, (double)peer_rss[2] / MiB);
		}
		if (rss[2] > rss[0] + SOAK_RSS_SLACK) {
			fail(ft, "RSS grew by %.1f MiB between 10%% and 100%% of the run (%.1f -> %.1f "
			     "MiB): memory is not flat", (double)(rss[2] - rss[0]) / MiB,
			     (double)rss[0] / MiB, (double)rss[2] / MiB);
			goto out;
		}
	}
	rc = 0;
out:
	if (sc)
		for (int i = 0; i < SOAK_COMMS; i++) {
			if (sc[i].ring.mh && p)
				pl_dereg_mr(ft->net, p[i].comm, sc[i].ring.mh);
			if (sc[i].ring.base)
				munmap(sc[i].ring.base, sc[i].ring.cap);
			free(sc[i].e);
			free(sc[i].g);
		}
	if (opened && pairs_close(ft, p, SOAK_COMMS))
		rc = -1;
	free(sc);
	free(p);
	return rc;
}

/* ---- driver ------------------------------------------------------------------- */

struct scenario {
	const char *name;
	int (*fn)(struct ft *);
	int in_all;   /* run by --scenario all */
};

static const struct scenario scenarios[] = {
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
	{"soak", scen_soak, 0},
};
#define NSCEN ((int)(sizeof(scenarios) / sizeof(scenarios[0])))

/* Marks the scenarios named in spec ("all" or a comma-separated list). */
static int select_scenarios(const char *spec, int *sel)
{
	char buf[512], *save = NULL;

	memset(sel, 0, sizeof(int) * NSCEN);
	if (!strcmp(spec, "all")) {
		for (int i = 0; i < NSCEN; i++)
			sel[i] = scenarios[i].in_all;
		return 0;
	}
	snprintf(buf, sizeof(buf), "%s", spec);
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		int found = 0;
		for (int i = 0; i < NSCEN; i++)
			if (!strcmp(t, scenarios[i].name)) {
				sel[i] = found = 1;
			}
		if (!found) {
			fprintf(stderr, "fabnet-ft: unknown scenario \"%s\"; known:", t);
			for (int i = 0; i < NSCEN; i++)
				fprintf(stderr, " %s", scenarios[i].name);
			fprintf(stderr, " all (all but soak)\n");
			return -1;
		}
	}
	return 0;
}

struct opts {
	const char *plugin;
	int abi;
	int dev;
	const char *scenario;
	int rank;
	const char *ctl_path;
	uint64_t seed;
	const char *helper;  /* --helper ROLE: a helper process (see helper_spawn) */
	const char *part;
	int helper_fd;
};

/* Rank 0 prints the verdict. subfail: the failed parts (same text on both
 * ranks); why0/why1: each rank's own reason outside the parts. */
static void report(int rank, const char *name, int ok, const char *why0, const char *why1,
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

/* Runs one rank. Returns its exit status. */
static int run_rank(const struct opts *o)
{
	struct ft ft;
	int sel[NSCEN], failed = 0;
	uint32_t mine[3], theirs[3];
	char init_why[REASON_MAX] = "";
	int ndev = 0;

	memset(&ft, 0, sizeof(ft));
	g_rank = o->rank;
	ft.rank = o->rank;
	ft.dev = o->dev;
	ft.plugin = o->plugin;
	ft.abi = o->abi;
	ft.seed = o->seed;
	ft.net = &ft.base;
	{
		const char *t = getenv("FABNET_FT_TIMEOUT");
		long s = t ? strtol(t, NULL, 10) : 0;
		ft.op_timeout_ms = (int)((s > 0 && s < 100000 ? s : 60) * 1000);
		g_watchdog_s = (unsigned)(2 * ft.op_timeout_ms / 1000 + 10);
	}
	install_handlers(0);
	if (select_scenarios(o->scenario, sel))
		return 2;
	g_step = "control channel";
	if (ctl_open(&ft.ctl, o->ctl_path, o->rank, 120000)) {
		fprintf(stderr, "fabnet-ft rank %d: control channel: %s\n", o->rank, ft.ctl.err);
		if (o->rank == 0) {
			printf("FAIL setup: rank 0: control channel: %s\n", ft.ctl.err);
			g_tally->failed++;
			if (!g_forked)
				printf("%d passed, %d failed\n", g_tally->passed, g_tally->failed);
		}
		return 1;
	}
	/* same scenarios and seed on both ranks? */
	mine[0] = 0;
	for (int i = 0; i < NSCEN; i++)
		mine[0] |= (uint32_t)sel[i] << i;
	mine[1] = (uint32_t)o->seed;
	mine[2] = (uint32_t)o->dev;
	if (ctl_send(&ft.ctl, mine, sizeof(mine)) || ctl_recv(&ft.ctl, theirs, sizeof(theirs))) {
		fprintf(stderr, "fabnet-ft rank %d: control channel: %s\n", o->rank, ft.ctl.err);
		return 1;
	}
	if (memcmp(mine, theirs, sizeof(mine)))
		fprintf(stderr, "fabnet-ft rank %d: warning: the ranks were started with different "
			"--scenario/--seed/--dev options\n", o->rank);

	/* load and init */
	g_scen = "setup";
	wd_kick();
	g_step = "dlopen";
	if (pl_open(&ft.base, o->plugin, o->abi)) {
		snprintf(init_why, sizeof(init_why), "%s", ft.base.err);
	} else {
		ncclResult_t r;
		g_step = "init";
		r = pl_init(&ft.base);
		install_handlers(1); /* ours first, then libfabric's backtrace */
		if (r != ncclSuccess)
			snprintf(init_why, sizeof(init_why), "init (%s) returned %d (%s)",
				 ft.base.symbol, (int)r, pl_result_str(r));
		else if ((r = pl_devices(&ft.base, &ndev)) != ncclSuccess)
			snprintf(init_why, sizeof(init_why), "devices returned %d (%s)", (int)r,
				 pl_result_str(r));
		else if (ndev <= o->dev)
			snprintf(init_why, sizeof(init_why), "device %d requested, the plugin "
				 "reports %d", o->dev, ndev);
		else if ((r = pl_get_properties(&ft.base, o->dev, &ft.props)) != ncclSuccess)
			snprintf(init_why, sizeof(init_why), "getProperties(%d) returned %d (%s)",
				 o->dev, (int)r, pl_result_str(r));
		else if (!(ft.props.ptrSupport & NCCL_PTR_HOST))
			snprintf(init_why, sizeof(init_why), "device %d does not support host "
				 "memory (ptrSupport 0x%x)", o->dev, (unsigned)ft.props.ptrSupport);
	}
	alarm(0);
	/* agree on setup */
	{
		int32_t ok = !init_why[0], pok = 0;
		char pwhy[REASON_MAX] = "";
		uint32_t len = (uint32_t)strlen(init_why) + 1;
		if (ctl_send(&ft.ctl, &ok, 4) || ctl_send(&ft.ctl, &len, 4) ||
		    ctl_send(&ft.ctl, init_why, len) || ctl_recv(&ft.ctl, &pok, 4) ||
		    ctl_recv(&ft.ctl, &len, 4) || len > sizeof(pwhy) ||
		    ctl_recv(&ft.ctl, pwhy, len)) {
			fprintf(stderr, "fabnet-ft rank %d: control channel: %s\n", o->rank,
				ft.ctl.err);
			return 1;
		}
		if (!ok || !pok) {
			report(o->rank, "setup", 0, init_why, pwhy, NULL);
			if (o->rank == 0 && !g_forked)
				printf("%d passed, %d failed\n", g_tally->passed, g_tally->failed);
			return 1;
		}
	}
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

	for (int i = 0; i < NSCEN; i++) {
		int ok;
		int64_t t0;
		if (!sel[i])
			continue;
		ft.scen_name = scenarios[i].name;
		g_scen = scenarios[i].name;
		g_step = "start";
		g_phase = NULL;
		ft.phase = NULL;
		ft.subs = 0;
		ft.subfail[0] = '\0';
		begin_unit(&ft);
		if (ft.peer_gone) {
			report(o->rank, scenarios[i].name, 0, "not run: the peer rank is gone", "",
			       NULL);
			failed = 1;
			continue;
		}
		vnote("begin");
		t0 = now_ms();
		wd_kick();
		ok = scenarios[i].fn(&ft) == 0 && !ft.why[0];
		if (ft.subs) {
			/* the parts exchanged verdicts; one more exchange ends the scenario */
			char keep[REASON_MAX];
			snprintf(keep, sizeof(keep), "%s", ft.why);
			begin_unit(&ft);
			snprintf(ft.why, sizeof(ft.why), "%s", keep);
			if (ft.subfail[0])
				ok = 0;
		}
		if (!ok && !ft.why[0] && !ft.subfail[0])
			fail(&ft, "failed without a reason (harness bug)");
		ok = ft_finish(&ft, ok);
		vnote("end: %s in %.2f s", ok ? "ok" : "failed", (double)(now_ms() - t0) / 1000.0);
		if (!ok)
			failed = 1;
		report(o->rank, scenarios[i].name, ok, ft.why,
		       ft.peer_ok || (ft.subfail[0] && ft.peer_gone) ? "" : ft.peer_why, ft.subfail);
	}
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

/* Forks both ranks and waits for them. */
static int run_forked(struct opts *o)
{
	char dir[] = "/tmp/fabnet-ft.XXXXXX";
	char path[128];
	int status[2] = {0, 0}, done[2] = {0, 0}, rc = 0;
	int64_t grace_deadline = 0;

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
	unlink(path);
	rmdir(dir);
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
		int sel[NSCEN], k = 0;
		select_scenarios(o->scenario, sel);
		for (int i = 0; i < NSCEN; i++) {
			if (!sel[i])
				continue;
			if (k++ < g_tally->reported)
				continue;
			printf("FAIL %s: not run (rank 0 exited early)\n", scenarios[i].name);
			g_tally->failed++;
		}
	}
	printf("%d passed, %d failed\n", g_tally->passed, g_tally->failed);
	fflush(stdout);
	return rc || g_tally->failed ? 1 : 0;
}

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

int main(int argc, char **argv)
{
	struct opts o = {.plugin = NULL, .abi = 0, .dev = 0, .scenario = "all", .rank = -1,
			 .ctl_path = NULL, .seed = 0xfab17e57ull, .helper = NULL, .part = "",
			 .helper_fd = -1};

	setvbuf(stdout, NULL, _IOLBF, 0);
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
			o.plugin = v;
		} else if (!strcmp(a, "--abi")) {
			NEEDV();
			o.abi = atoi(v);
			if (o.abi < PL_MIN_VERSION || o.abi > PL_MAX_VERSION) {
				fprintf(stderr, "fabnet-ft: --abi must be %d..%d\n", PL_MIN_VERSION,
					PL_MAX_VERSION);
				return 2;
			}
		} else if (!strcmp(a, "--dev")) {
			NEEDV();
			o.dev = atoi(v);
		} else if (!strcmp(a, "--scenario")) {
			NEEDV();
			o.scenario = v;
		} else if (!strcmp(a, "--rank")) {
			NEEDV();
			o.rank = atoi(v);
		} else if (!strcmp(a, "--ctl")) {
			NEEDV();
			o.ctl_path = v;
		} else if (!strcmp(a, "--seed")) {
			NEEDV();
			o.seed = strtoull(v, NULL, 0);
		} else if (!strcmp(a, "--helper")) {
			NEEDV();
			o.helper = v;
		} else if (!strcmp(a, "--part")) {
			NEEDV();
			o.part = v;
		} else if (!strcmp(a, "--helper-fd")) {
			NEEDV();
			o.helper_fd = atoi(v);
		} else if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) {
			g_verbose = 1;
		} else if (!strcmp(a, "--list")) {
			for (int k = 0; k < NSCEN; k++)
				printf("%s%s\n", scenarios[k].name,
				       scenarios[k].in_all ? "" : " (not in all)");
			return 0;
		} else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "fabnet-ft: unknown option %s\n", a);
			usage(stderr);
			return 2;
		}
	}
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
		return helper_main(o.plugin, o.dev, o.abi, o.seed, o.helper, o.part, o.helper_fd);
	}
	{
		int sel[NSCEN];
		if (select_scenarios(o.scenario, sel))
			return 2;
	}
	if (o.rank >= 0) {
		if (o.rank > 1 || !o.ctl_path) {
			fprintf(stderr, "fabnet-ft: --rank takes 0 or 1 and needs --ctl SOCKPATH\n");
			return 2;
		}
		return run_rank(&o);
	}
	return run_forked(&o);
}
