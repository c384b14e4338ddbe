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
 * Environment: FABNET_FT_TIMEOUT  seconds without progress before an
 *                                 operation fails (default 60)
 *              FABNET_FT_VERBOSE=1 progress notes on stderr
 *              FABNET_ABI_VERSION  as --abi
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include "../../tools/ctl.h"
#include "../../tools/plugin_loader.h"

#define MiB (1024u * 1024u)
#define CANARY_PAD 4096
#define MAX_GROUP 8
#define MAX_PAIRS 64

/* ---- small utilities -------------------------------------------------------- */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t mix64(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* The key of the pattern carried by one message. */
static uint64_t pat_key(uint64_t seed, size_t size, uint64_t iter)
{
	return mix64(seed ^ mix64((uint64_t)size * 0x100000001b3ull ^ mix64(iter + 0x51)));
}

static void pat_fill(void *buf, size_t len, uint64_t key)
{
	uint8_t *p = buf;
	size_t k = 0;

	for (; k + 8 <= len; k += 8) {
		uint64_t w = mix64(key + k / 8);
		memcpy(p + k, &w, 8);
	}
	if (k < len) {
		uint64_t w = mix64(key + k / 8);
		memcpy(p + k, &w, len - k);
	}
}

static uint8_t pat_byte(size_t off, uint64_t key)
{
	uint64_t w = mix64(key + off / 8);
	uint8_t b[8];

	memcpy(b, &w, 8);
	return b[off % 8];
}

/* Returns 0, or -1 and describes the damage in why. */
static int pat_check(const void *buf, size_t len, uint64_t key, char *why, size_t whylen)
{
	const uint8_t *p = buf;
	size_t first = SIZE_MAX, last = 0, bad = 0;

	for (size_t k = 0; k < len; k += 8) {
		uint64_t w = mix64(key + k / 8);
		size_t n = len - k < 8 ? len - k : 8;

		if (memcmp(p + k, &w, n) == 0)
			continue;
		for (size_t j = 0; j < n; j++) {
			if (p[k + j] != pat_byte(k + j, key)) {
				if (first == SIZE_MAX)
					first = k + j;
				last = k + j;
				bad++;
			}
		}
	}
	if (first == SIZE_MAX)
		return 0;
	snprintf(why, whylen, "data corrupted: %zu of %zu bytes wrong, first at offset %zu "
		 "(got 0x%02x, want 0x%02x), last at %zu", bad, len, first, p[first],
		 pat_byte(first, key), last);
	return -1;
}

static uint8_t canary_byte(size_t off)
{
	return (uint8_t)(0xA5 ^ (off * 0x3B) ^ (off >> 8));
}

static void canary_fill(void *buf, size_t from, size_t to)
{
	uint8_t *p = buf;

	for (size_t i = from; i < to; i++)
		p[i] = canary_byte(i);
}

static int canary_check(const void *buf, size_t from, size_t to, char *why, size_t whylen)
{
	const uint8_t *p = buf;

	for (size_t i = from; i < to; i++) {
		if (p[i] != canary_byte(i)) {
			size_t last = i, bad = 0;
			for (size_t j = i; j < to; j++)
				if (p[j] != canary_byte(j)) {
					last = j;
					bad++;
				}
			snprintf(why, whylen, "wrote past the received size: %zu bytes changed in "
				 "[%zu, %zu) beyond the %zu bytes sent, first at %zu, last at %zu",
				 bad, from, to, from, i, last);
			return -1;
		}
	}
	return 0;
}

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
	int mapped;
};

static int fbuf_alloc(struct ft *ft, void *comm, size_t cap, struct fbuf *b)
{
	memset(b, 0, sizeof(*b));
	if (cap == 0)
		cap = 64;
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
	if (b->mapped)
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

/* ---- driver ------------------------------------------------------------------- */

struct scenario {
	const char *name;
	int (*fn)(struct ft *);
};

static const struct scenario scenarios[] = {
	{"sizes", scen_sizes},
	{"larger-recv", scen_larger_recv},
	{"outstanding", scen_outstanding},
	{"grouped", scen_grouped},
	{"many-comms", scen_many_comms},
	{"reuse", scen_reuse},
	{"close", scen_close},
	{"garbage-handle", scen_garbage_handle},
	{"abi", scen_abi},
};
#define NSCEN ((int)(sizeof(scenarios) / sizeof(scenarios[0])))

/* Marks the scenarios named in spec ("all" or a comma-separated list). */
static int select_scenarios(const char *spec, int *sel)
{
	char buf[512], *save = NULL;

	memset(sel, 0, sizeof(int) * NSCEN);
	if (!strcmp(spec, "all")) {
		for (int i = 0; i < NSCEN; i++)
			sel[i] = 1;
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
			fprintf(stderr, " all\n");
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
		"  env FABNET_FT_TIMEOUT=S  seconds without progress before failing (60)\n");
}

int main(int argc, char **argv)
{
	struct opts o = {.plugin = NULL, .abi = 0, .dev = 0, .scenario = "all", .rank = -1,
			 .ctl_path = NULL, .seed = 0xfab17e57ull};

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
		} else if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) {
			g_verbose = 1;
		} else if (!strcmp(a, "--list")) {
			for (int k = 0; k < NSCEN; k++)
				printf("%s\n", scenarios[k].name);
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
