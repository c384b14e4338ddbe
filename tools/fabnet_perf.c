/*
 * fabnet-perf: bandwidth and latency of an NCCL net plugin between processes,
 * through the plugin ABI only (tools/plugin_loader.h), so it measures any
 * plugin the way NCCL would drive it. `fabnet-perf --help` lists the options.
 *
 * Modes (--mode, a comma list):
 *   lat    8-byte ping-pong between ranks 0 and 1: half the round trip
 *   uni    rank 0 streams to rank 1, --window messages in flight
 *   bidir  ranks 0 and 1 stream to each other at the same time
 *   ring   an all-reduce of floats over all ranks in a ring, NCCL style:
 *          the buffer in N chunks, N-1 reduce-scatter steps then N-1
 *          all-gather steps, each chunk cut into --slice messages with
 *          --window of them in flight per direction; the CPU sums
 *   comms  --comms connections from rank 1 to rank 0 at once: set-up time,
 *          host memory per connection, then one verified message on each
 *
 * Launch: fork N local ranks (-n N, default 2); or start each rank yourself
 * with --rank R --nranks N --ctl ADDR; or under mpirun, which gives rank and
 * size in the environment (OMPI_COMM_WORLD_RANK/SIZE, PMI_RANK/SIZE,
 * SLURM_PROCID/NTASKS). MPI is never linked: the ranks exchange connection
 * handles over tools/group.c, rank 0 listening on ADDR (HOST:PORT for TCP,
 * or a unix socket path; under mpirun on one host a path is made up from the
 * job's id when --ctl is not given).
 *
 * Every number comes from verified transfers: warm-up messages are each
 * checked against a pattern (received into a buffer filled with a canary),
 * and the last timed message of each size; --check all checks every message,
 * with a pattern that depends on the sender's rank and the message's index.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <config.h>

#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include "group.h"
#include "plugin_loader.h"

#define MEM_CAP (1024ull * 1024 * 1024) /* receive (and --check all send) slots, per rank */
#define OP_TIMEOUT_MS 60000
#define MAX_RANKS 256

enum {
	M_LAT = 1,
	M_UNI = 2,
	M_BIDIR = 4,
	M_RING = 8,
	M_COMMS = 16,
};

static const struct {
	const char *name;
	int bit;
} mode_names[] = {
	{"lat", M_LAT}, {"uni", M_UNI}, {"bidir", M_BIDIR}, {"ring", M_RING}, {"comms", M_COMMS},
};

/* One row of the table. */
struct rec {
	const char *mode;
	size_t size;
	int iters, window, ranks;
	double us;           /* per iteration */
	double algbw, busbw; /* GB/s */
	int bad;
};

struct lat_res {
	int n, bad;
	double med, min, max, p99; /* one way, us */
};

struct comms_res {
	int n, bad;
	double setup_ms, xfer_ms, close_ms;
	/* per comm: [0] sender (rank 1), [1] receiver (rank 0) */
	double rss[2], heap[2];
};

struct perf {
	struct pl_net net;
	struct pl_props props;
	struct grp g;
	int rank, nranks, dev;
	unsigned modes;
	size_t min_bytes, max_bytes, slice;
	int factor, iters, warmup, window, lat_iters, iters_given, ncomms;
	int check_all, progress, tty;
	int yield; /* more ranks than CPUs: give the CPU away when idle */
	uint64_t seed;
	/* rank 0 <-> rank 1 (lat, uni, bidir): to the peer, from the peer */
	void *pair_s, *pair_r;
	/* ring: to the right neighbour, from the left one */
	void *ring_s, *ring_r;
	/* pair buffers: send slots, receive slots */
	uint8_t *sbuf, *rbuf;
	size_t sbuf_len, rbuf_len;
	void *sbuf_mh, *rbuf_mh;
	/* small buffers for acks and ping-pong, registered on the pair comms */
	uint8_t small_s[64], small_r[64];
	void *small_s_mh, *small_r_mh;
	/* results, rank 0 */
	struct rec *recs;
	int nrecs, caprecs;
	struct lat_res lat;
	struct comms_res cr;
	int failures;
};

static int g_rank = -1;

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* A no-progress timer for the loops the benchmark times: it reads the clock
 * once in 1024 idle passes, not on every poll (raw fabtests' loops read no
 * clock; one read per poll was several percent of an 8-byte message's cost).
 * expired() is true once a pass after STALL_POLLS idle ones finds the
 * timeout passed since the first idle look. */
#define STALL_POLLS 1024
struct stall {
	double since; /* 0: no idle look yet since the last progress */
	unsigned idle;
};

static void stall_moved(struct stall *s)
{
	s->since = 0;
	s->idle = 0;
}

static int stall_expired(struct stall *s, double timeout_us)
{
	double now;

	if (++s->idle % STALL_POLLS)
		return 0;
	now = now_us();
	if (s->since == 0)
		s->since = now;
	return now - s->since > timeout_us;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	char buf[1024];

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (g_rank >= 0)
		fprintf(stderr, "fabnet-perf: rank %d: %s\n", g_rank, buf);
	else
		fprintf(stderr, "fabnet-perf: %s\n", buf);
	fflush(stderr);
	exit(1);
}

#define CHECK(expr, what)                                                               \
	do {                                                                            \
		ncclResult_t r_ = (expr);                                               \
		if (r_ != ncclSuccess)                                                  \
			die("%s returned %d (%s)", (what), (int)r_, pl_result_str(r_)); \
	} while (0)

static void grp_or_die(struct perf *p, int rc)
{
	if (rc)
		die("control channel: %s", p->g.err);
}

static void barrier(struct perf *p)
{
	grp_or_die(p, grp_barrier(&p->g));
}

/* Every rank contributes v; returns the sum (or max) over ranks, on every rank. */
static double reduce_d(struct perf *p, double v, int max)
{
	double all[MAX_RANKS], r = 0;

	grp_or_die(p, grp_allgather(&p->g, &v, all, sizeof(v)));
	for (int i = 0; i < p->nranks; i++)
		r = max ? (i == 0 || all[i] > r ? all[i] : r) : r + all[i];
	return r;
}

/* ---- progress line --------------------------------------------------------- */
static void progress(struct perf *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void progress(struct perf *p, const char *fmt, ...)
{
	va_list ap;

	if (p->rank != 0 || !p->progress)
		return;
	fputs(p->tty ? "\r\033[K" : "", stderr);
	fputs("fabnet-perf: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs(p->tty ? "" : "\n", stderr);
	fflush(stderr);
}

static void progress_end(struct perf *p)
{
	if (p->rank == 0 && p->progress && p->tty) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
	}
}

/* ---- data patterns ----------------------------------------------------------- */
static uint64_t mix64(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void pat_fill(uint8_t *b, size_t len, uint64_t key)
{
	size_t k = 0;

	for (; k + 8 <= len; k += 8) {
		uint64_t w = mix64(key + k / 8);
		memcpy(b + k, &w, 8);
	}
	if (k < len) {
		uint64_t w = mix64(key + k / 8);
		memcpy(b + k, &w, len - k);
	}
}

/* Returns the first bad offset, or -1. */
static long long pat_check(const uint8_t *b, size_t len, uint64_t key)
{
	for (size_t k = 0; k < len; k += 8) {
		uint64_t w = mix64(key + k / 8);
		size_t n = len - k < 8 ? len - k : 8;
		if (memcmp(b + k, &w, n)) {
			for (size_t j = 0; j < n; j++)
				if (b[k + j] != ((const uint8_t *)&w)[j])
					return (long long)(k + j);
		}
	}
	return -1;
}

/* The pattern of message `iter` of this size from rank src. Without --check
 * all every message of a size carries the same pattern (iter 0), so the
 * sender fills its buffer once and the timed loop copies nothing. */
static uint64_t key_of(const struct perf *p, size_t size, int src, int iter)
{
	return mix64(p->seed ^ ((uint64_t)size * 0x100000001b3ull) ^ ((uint64_t)src << 48) ^
		     ((uint64_t)(uint32_t)iter << 16));
}

/* ---- request helpers ------------------------------------------------------ */
/* Busy polling ranks that outnumber the CPUs starve the one that has work for
 * a whole scheduler slice (milliseconds); yielding when idle hands it over. */
static void idle(const struct perf *p)
{
	if (p->yield)
		sched_yield();
}

static void wait_req(struct perf *p, void *req, int *got, const char *what)
{
	struct stall stall = {0, 0};
	int done = 0, sizes[1] = {-1};

	for (;;) {
		CHECK(pl_test(&p->net, req, &done, sizes), "test");
		if (done)
			break;
		if (stall_expired(&stall, OP_TIMEOUT_MS * 1000.0))
			die("%s did not complete within %d s", what, OP_TIMEOUT_MS / 1000);
		idle(p);
	}
	if (got)
		*got = sizes[0];
}

static void *try_send(struct perf *p, void *comm, void *buf, size_t size, void *mh)
{
	void *req = NULL;

	CHECK(pl_isend(&p->net, comm, buf, size, 0, mh, &req), "isend");
	return req;
}

static void *try_recv(struct perf *p, void *comm, void *buf, size_t size, void *mh)
{
	void *req = NULL;
	int tag = 0;

	CHECK(pl_irecv(&p->net, comm, 1, &buf, &size, &tag, &mh, &req), "irecv");
	return req;
}

static void *post_send(struct perf *p, void *comm, void *buf, size_t size, void *mh)
{
	struct stall stall = {0, 0};
	void *req;

	while (!(req = try_send(p, comm, buf, size, mh)))
		if (stall_expired(&stall, OP_TIMEOUT_MS * 1000.0))
			die("isend kept returning a NULL request for %d s", OP_TIMEOUT_MS / 1000);
	return req;
}

static void *post_recv(struct perf *p, void *comm, void *buf, size_t size, void *mh)
{
	struct stall stall = {0, 0};
	void *req;

	while (!(req = try_recv(p, comm, buf, size, mh)))
		if (stall_expired(&stall, OP_TIMEOUT_MS * 1000.0))
			die("irecv kept returning a NULL request for %d s", OP_TIMEOUT_MS / 1000);
	return req;
}

static void *map_or_die(size_t len)
{
	void *m = mmap(NULL, len ? len : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);

	if (m == MAP_FAILED)
		die("mmap %zu bytes: %s", len, strerror(errno));
	memset(m, 0xcd, len); /* fault the pages in before anything is timed */
	return m;
}

/* ---- connections ----------------------------------------------------------- */
/* Connects to handle and accepts one connection on lcomm, both at once: two
 * ranks connecting to each other must not wait for each other's accept. */
static void connect_accept(struct perf *p, const uint8_t *handle, void *lcomm, void **scomm,
			   void **rcomm)
{
	uint8_t h[NCCL_NET_HANDLE_MAXSIZE];
	double deadline = now_us() + OP_TIMEOUT_MS * 1000.0;

	memcpy(h, handle, sizeof(h)); /* the plugin may keep state in it */
	*scomm = *rcomm = NULL;
	while (!*scomm || !*rcomm) {
		if (!*scomm)
			CHECK(pl_connect(&p->net, p->dev, h, scomm), "connect");
		if (!*rcomm)
			CHECK(pl_accept(&p->net, lcomm, rcomm), "accept");
		if (now_us() > deadline)
			die("connect/accept not done within %d s", OP_TIMEOUT_MS / 1000);
	}
}

/*
 * Every rank listens once and the handles go round. The pair (ranks 0 and 1)
 * and the ring (right and left neighbours) connect in separate phases with a
 * barrier between them, because an accepted comm does not say who connected:
 * in each phase a rank accepts exactly one connection. With two ranks the
 * ring is the pair.
 */
static void setup_comms(struct perf *p)
{
	uint8_t mine[NCCL_NET_HANDLE_MAXSIZE], *all;
	void *lcomm = NULL;
	int pair = (p->modes & (M_LAT | M_UNI | M_BIDIR)) || (p->modes & M_RING && p->nranks == 2);
	int ring = (p->modes & M_RING) && p->nranks > 2;

	all = malloc(sizeof(mine) * (size_t)p->nranks);
	if (!all)
		die("out of memory");
	memset(mine, 0, sizeof(mine));
	CHECK(pl_listen(&p->net, p->dev, mine, &lcomm), "listen");
	grp_or_die(p, grp_allgather(&p->g, mine, all, sizeof(mine)));
	if (pair && p->rank < 2) {
		connect_accept(p, all + (size_t)(1 - p->rank) * sizeof(mine), lcomm, &p->pair_s,
			       &p->pair_r);
		CHECK(pl_reg_mr(&p->net, p->pair_s, p->small_s, sizeof(p->small_s), NCCL_PTR_HOST,
				&p->small_s_mh), "regMr");
		CHECK(pl_reg_mr(&p->net, p->pair_r, p->small_r, sizeof(p->small_r), NCCL_PTR_HOST,
				&p->small_r_mh), "regMr");
	}
	barrier(p);
	if (ring) {
		int right = (p->rank + 1) % p->nranks;
		connect_accept(p, all + (size_t)right * sizeof(mine), lcomm, &p->ring_s, &p->ring_r);
		barrier(p);
	} else if (p->modes & M_RING) {
		p->ring_s = p->pair_s;
		p->ring_r = p->pair_r;
	}
	CHECK(pl_close_listen(&p->net, lcomm), "closeListen");
	free(all);
}

/* ---- sizes and windows ------------------------------------------------------ */
static int slots_for(const struct perf *p, size_t size)
{
	size_t w = (size_t)p->window;

	if (size && (w + 1) * size > MEM_CAP)
		w = MEM_CAP / size > 1 ? MEM_CAP / size - 1 : 1;
	return (int)w;
}

static int iters_for(const struct perf *p, size_t size)
{
	/* Without --iters, large sizes move about 1 GiB each. */
	if (!p->iters_given && size) {
		size_t cap = (1024ull * 1024 * 1024) / size;
		if (cap < 5)
			cap = 5;
		if ((size_t)p->iters > cap)
			return (int)cap;
	}
	return p->iters;
}

static size_t next_size(const struct perf *p, size_t size)
{
	size_t n = size ? size * (size_t)p->factor : 1;

	return n > p->max_bytes || n <= size ? p->max_bytes : n; /* end exactly on --max-bytes */
}

static void add_rec(struct perf *p, const char *mode, size_t size, int iters, int window,
		    double us, double bus_factor, int bad)
{
	struct rec *r;

	if (p->nrecs == p->caprecs) {
		p->caprecs = p->caprecs ? p->caprecs * 2 : 64;
		p->recs = realloc(p->recs, sizeof(*p->recs) * (size_t)p->caprecs);
		if (!p->recs)
			die("out of memory");
	}
	r = &p->recs[p->nrecs++];
	r->mode = mode;
	r->size = size;
	r->iters = iters;
	r->window = window;
	r->ranks = !strcmp(mode, "ring") ? p->nranks : 2;
	r->us = us;
	r->algbw = us > 0 ? (double)size / us / 1e3 : 0;
	r->busbw = r->algbw * bus_factor;
	r->bad = bad;
	if (bad) {
		printf(" %-6s %12zu %8d %7d %12s %12s %12s %7d  CORRUPTED\n", mode, size, iters,
		       window, "-", "-", "-", bad);
		p->failures++;
	} else {
		printf(" %-6s %12zu %8d %7d %12.2f %12.3f %12.3f %7d\n", mode, size, iters, window,
		       us, r->algbw, r->busbw, 0);
	}
	fflush(stdout);
}

static void table_header(struct perf *p)
{
	static int done;

	if (p->rank != 0 || done)
		return;
	done = 1;
	printf("#\n# %-6s %12s %8s %7s %12s %12s %12s %7s\n", "mode", "size(B)", "iters", "window",
	       "time(us)", "algbw(GB/s)", "busbw(GB/s)", "#wrong");
	fflush(stdout);
}

/* ---- uni and bidir: streams between ranks 0 and 1 --------------------------- */
struct flow {
	int send;
	void *comm, *mh;
	uint8_t *base;
	size_t size;
	int window, nslots; /* nslots: sender buffers (1, or window with --check all) */
	int n, posted, completed;
	int check_each;     /* receiver: canary and check every message */
	int last_slot;      /* receiver: the last message into slot `window` */
	int iter0;          /* pattern index of message 0 (--check all) */
	int src;            /* the sending rank */
	void **reqs;
	int bad;
};

static uint64_t flow_key(const struct perf *p, const struct flow *f, int i)
{
	return key_of(p, f->size, f->src, p->check_all ? f->iter0 + i : 0);
}

/* Posts what the window allows and tests the oldest request. */
static int flow_step(struct perf *p, struct flow *f)
{
	int moved = 0;

	while (f->posted < f->n && f->posted - f->completed < f->window) {
		void *req;
		int i = f->posted;
		if (f->send) {
			uint8_t *buf = f->base + (size_t)(i % f->nslots) * f->size;
			if (f->nslots > 1)
				pat_fill(buf, f->size, flow_key(p, f, i));
			req = try_send(p, f->comm, buf, f->size, f->mh);
		} else {
			int slot = (f->last_slot && i == f->n - 1) ? f->window : i % f->window;
			uint8_t *buf = f->base + (size_t)slot * f->size;
			if (f->check_each)
				memset(buf, 0x5a, f->size);
			req = try_recv(p, f->comm, buf, f->size, f->mh);
		}
		if (!req)
			break;
		f->reqs[i % f->window] = req;
		f->posted++;
		moved = 1;
	}
	if (f->completed < f->posted) {
		int done = 0, got[1] = {-1}, i = f->completed;
		CHECK(pl_test(&p->net, f->reqs[i % f->window], &done, got), "test");
		if (done) {
			if (got[0] != (int)f->size) {
				fprintf(stderr, "fabnet-perf: rank %d: message %d of %zu bytes: test() "
					"reported %d bytes\n", p->rank, i, f->size, got[0]);
				f->bad++;
			}
			if (!f->send && f->check_each) {
				int slot = (f->last_slot && i == f->n - 1) ? f->window : i % f->window;
				long long off = pat_check(f->base + (size_t)slot * f->size, f->size,
							  flow_key(p, f, i));
				if (off >= 0) {
					fprintf(stderr, "fabnet-perf: rank %d: message %d of %zu bytes "
						"from rank %d corrupted at offset %lld\n", p->rank, i,
						f->size, f->src, off);
					f->bad++;
				}
			}
			f->completed++;
			moved = 1;
		}
	}
	return moved;
}

/*
 * Runs the flows to completion. With ack, a receiver tells the sender when
 * its last message landed (a 1-byte message back), so the sender's clock
 * covers delivery, not just local completion. The ack is posted only after
 * the data on the same comm, because messages match in posting order.
 */
static void run_flows(struct perf *p, struct flow *fl, int nf, int ack)
{
	struct flow *fs = NULL, *fr = NULL;
	void *ack_s = NULL, *ack_r = NULL;
	int ack_s_done = 0, ack_r_done = 0;
	struct stall stall = {0, 0};

	for (int i = 0; i < nf; i++) {
		if (fl[i].send)
			fs = &fl[i];
		else
			fr = &fl[i];
	}
	if (!ack || !fs)
		ack_r_done = 1;
	if (!ack || !fr)
		ack_s_done = 1;
	for (;;) {
		int moved = 0, all = 1;
		for (int i = 0; i < nf; i++) {
			moved |= flow_step(p, &fl[i]);
			all &= fl[i].completed == fl[i].n;
		}
		if (!ack_r_done && !ack_r && (!fr || fr->posted == fr->n))
			ack_r = try_recv(p, p->pair_r, p->small_r, sizeof(p->small_r), p->small_r_mh);
		if (!ack_s_done && !ack_s && fr && fr->completed == fr->n &&
		    (!fs || fs->posted == fs->n))
			ack_s = try_send(p, p->pair_s, p->small_s, 1, p->small_s_mh);
		if (ack_r && !ack_r_done) {
			int done = 0;
			CHECK(pl_test(&p->net, ack_r, &done, NULL), "test");
			ack_r_done = done;
			moved |= done;
		}
		if (ack_s && !ack_s_done) {
			int done = 0;
			CHECK(pl_test(&p->net, ack_s, &done, NULL), "test");
			ack_s_done = done;
			moved |= done;
		}
		if (all && ack_r_done && ack_s_done)
			break;
		if (moved) {
			stall_moved(&stall);
		} else {
			idle(p);
			if (stall_expired(&stall, OP_TIMEOUT_MS * 1000.0))
				die("%zu-byte transfers: no progress for %d s", fl[0].size,
				    OP_TIMEOUT_MS / 1000);
		}
	}
}

static void alloc_pair_buffers(struct perf *p)
{
	int send = p->rank == 0 || (p->modes & M_BIDIR);
	int recv = p->rank == 1 || (p->modes & M_BIDIR);
	size_t slen = 0, rlen = 0;

	for (size_t s = p->min_bytes;; s = next_size(p, s)) {
		size_t w = (size_t)slots_for(p, s);
		if ((p->check_all ? w : 1) * s > slen)
			slen = (p->check_all ? w : 1) * s;
		if ((w + 1) * s > rlen)
			rlen = (w + 1) * s;
		if (s >= p->max_bytes)
			break;
	}
	if (send) {
		p->sbuf_len = slen ? slen : 1;
		p->sbuf = map_or_die(p->sbuf_len);
		CHECK(pl_reg_mr(&p->net, p->pair_s, p->sbuf, p->sbuf_len, NCCL_PTR_HOST, &p->sbuf_mh),
		      "regMr");
	}
	if (recv) {
		p->rbuf_len = rlen ? rlen : 1;
		p->rbuf = map_or_die(p->rbuf_len);
		CHECK(pl_reg_mr(&p->net, p->pair_r, p->rbuf, p->rbuf_len, NCCL_PTR_HOST, &p->rbuf_mh),
		      "regMr");
	}
}

static void free_pair_buffers(struct perf *p)
{
	if (p->sbuf) {
		pl_dereg_mr(&p->net, p->pair_s, p->sbuf_mh);
		munmap(p->sbuf, p->sbuf_len);
	}
	if (p->rbuf) {
		pl_dereg_mr(&p->net, p->pair_r, p->rbuf_mh);
		munmap(p->rbuf, p->rbuf_len);
	}
	p->sbuf = p->rbuf = NULL;
}

/* One size of uni or bidir: warm-up (every message verified), timed run,
 * the last timed message verified. */
static void run_stream(struct perf *p, int bidir, size_t size)
{
	int window = slots_for(p, size), iters = iters_for(p, size), nf = 0;
	struct flow fl[2], *fr = NULL;
	void *reqs[2][1024 + 1];
	double us = 0, t0;
	int bad = 0;

	memset(fl, 0, sizeof(fl));
	if (p->rank < 2) {
		int sends = bidir || p->rank == 0, recvs = bidir || p->rank == 1;
		if (sends) {
			struct flow *f = &fl[nf];
			f->send = 1;
			f->comm = p->pair_s;
			f->mh = p->sbuf_mh;
			f->base = p->sbuf;
			f->nslots = p->check_all ? window : 1;
			f->src = p->rank;
			f->reqs = reqs[nf++];
			if (!p->check_all)
				pat_fill(p->sbuf, size, key_of(p, size, p->rank, 0));
		}
		if (recvs) {
			fr = &fl[nf];
			fr->comm = p->pair_r;
			fr->mh = p->rbuf_mh;
			fr->base = p->rbuf;
			fr->src = 1 - p->rank;
			fr->reqs = reqs[nf++];
		}
		for (int i = 0; i < nf; i++) {
			fl[i].size = size;
			fl[i].window = window;
		}
	}
	barrier(p);
	if (p->rank < 2 && p->warmup > 0) {
		for (int i = 0; i < nf; i++) {
			fl[i].n = p->warmup;
			fl[i].posted = fl[i].completed = 0;
			fl[i].check_each = 1;
			fl[i].iter0 = 0;
		}
		run_flows(p, fl, nf, 0);
	}
	if (fr && !p->check_all)
		memset(p->rbuf + (size_t)window * size, 0x5a, size); /* the last message's slot */
	barrier(p);
	if (p->rank < 2) {
		for (int i = 0; i < nf; i++) {
			fl[i].n = iters;
			fl[i].posted = fl[i].completed = 0;
			fl[i].check_each = p->check_all;
			fl[i].last_slot = !p->check_all;
			fl[i].iter0 = p->warmup;
		}
		t0 = now_us();
		run_flows(p, fl, nf, 1);
		us = now_us() - t0;
		if (fr && !p->check_all) {
			long long off = pat_check(p->rbuf + (size_t)window * size, size,
						  key_of(p, size, fr->src, 0));
			if (off >= 0) {
				fprintf(stderr, "fabnet-perf: rank %d: the last timed message of %zu "
					"bytes is corrupted at offset %lld\n", p->rank, size, off);
				bad++;
			}
		}
		for (int i = 0; i < nf; i++)
			bad += fl[i].bad;
	}
	bad = (int)reduce_d(p, bad, 0);
	us = reduce_d(p, us, 1);
	if (p->rank == 0)
		add_rec(p, bidir ? "bidir" : "uni", size, iters, window, us / iters, bidir ? 2 : 1, bad);
}

/* ---- lat: 8-byte ping-pong -------------------------------------------------- */
static int pingpong(struct perf *p, int n, int base, double *rtt)
{
	void *req_r = NULL, *req_s;
	uint64_t v;
	int got, bad = 0;

	if (p->rank == 1)
		req_r = post_recv(p, p->pair_r, p->small_r, 8, p->small_r_mh);
	for (int i = 0; i < n; i++) {
		uint64_t ping = (uint64_t)(base + i) * 2 + 1, pong = ping + 1;
		if (p->rank == 0) {
			double t0;
			req_r = post_recv(p, p->pair_r, p->small_r, 8, p->small_r_mh);
			memcpy(p->small_s, &ping, 8);
			t0 = now_us();
			req_s = post_send(p, p->pair_s, p->small_s, 8, p->small_s_mh);
			wait_req(p, req_s, NULL, "ping");
			wait_req(p, req_r, &got, "pong");
			if (rtt)
				rtt[i] = now_us() - t0;
			memcpy(&v, p->small_r, 8);
			if (got != 8 || v != pong)
				bad++;
		} else {
			wait_req(p, req_r, &got, "ping");
			memcpy(&v, p->small_r, 8);
			if (got != 8 || v != ping)
				bad++;
			if (i + 1 < n)
				req_r = post_recv(p, p->pair_r, p->small_r, 8, p->small_r_mh);
			memcpy(p->small_s, &pong, 8);
			req_s = post_send(p, p->pair_s, p->small_s, 8, p->small_s_mh);
			wait_req(p, req_s, NULL, "pong");
		}
	}
	return bad;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void run_lat(struct perf *p)
{
	int n = p->lat_iters, warm = n / 10 + 1, bad = 0;
	double *rtt = NULL;

	progress(p, "lat: %d round trips", n);
	if (p->rank == 0 && !(rtt = calloc((size_t)n, sizeof(double))))
		die("out of memory");
	barrier(p);
	if (p->rank < 2)
		bad = pingpong(p, warm, 0, NULL);
	barrier(p);
	if (p->rank < 2)
		bad += pingpong(p, n, warm, rtt);
	bad = (int)reduce_d(p, bad, 0);
	if (p->rank == 0) {
		qsort(rtt, (size_t)n, sizeof(double), cmp_double);
		p->lat.n = n;
		p->lat.bad = bad;
		p->lat.med = rtt[n / 2] / 2;
		p->lat.min = rtt[0] / 2;
		p->lat.max = rtt[n - 1] / 2;
		p->lat.p99 = rtt[(size_t)((n - 1) * 0.99)] / 2;
		progress_end(p);
		if (bad) {
			printf("# latency: %d of %d ping-pong messages CORRUPTED: no result\n", bad, n);
			p->failures++;
		} else {
			printf("# latency (8-byte ping-pong, half round trip): median %.2f us, "
			       "min %.2f us, p99 %.2f us, max %.2f us over %d round trips\n",
			       p->lat.med, p->lat.min, p->lat.p99, p->lat.max, n);
		}
		fflush(stdout);
	}
	free(rtt);
}

/* ---- ring all-reduce -------------------------------------------------------- */
struct ring {
	float *in[2], *out, *stage;
	void *in_mh[2], *out_mh, *stage_mh;
	size_t max_count, slice_elems;
	int window;
	void **sreq, **rreq;
};

/* Input of rank r in iteration parity par: small integers, so float sums are
 * exact and the expected result is known without communication. */
static float ring_val(int r, size_t i, int par)
{
	return (float)((r * 7 + (int)(i % 4099) * 13 + par * 5) & 63);
}

static size_t ring_count(const struct perf *p, size_t size)
{
	size_t c = size / sizeof(float);

	c -= c % (size_t)p->nranks; /* whole chunks, as nccl-tests does */
	return c < (size_t)p->nranks ? (size_t)p->nranks : c;
}

static int ring_check(const struct perf *p, const struct ring *R, size_t count, int par)
{
	for (size_t i = 0; i < count; i++) {
		float want = 0;
		for (int r = 0; r < p->nranks; r++)
			want += ring_val(r, i, par);
		if (R->out[i] != want) {
			fprintf(stderr, "fabnet-perf: rank %d: all-reduce of %zu floats: element %zu "
				"is %g, not %g\n", p->rank, count, i, (double)R->out[i], (double)want);
			return 1;
		}
	}
	return 0;
}

static void ring_alloc(struct perf *p, struct ring *R)
{
	size_t bytes;

	memset(R, 0, sizeof(*R));
	R->max_count = ring_count(p, p->max_bytes);
	bytes = R->max_count * sizeof(float);
	R->slice_elems = p->slice / sizeof(float);
	if (R->slice_elems < 1)
		R->slice_elems = 1;
	R->window = p->window;
	for (int k = 0; k < 2; k++) {
		R->in[k] = map_or_die(bytes);
		for (size_t i = 0; i < R->max_count; i++)
			R->in[k][i] = ring_val(p->rank, i, k);
		CHECK(pl_reg_mr(&p->net, p->ring_s, R->in[k], bytes, NCCL_PTR_HOST, &R->in_mh[k]),
		      "regMr");
	}
	R->out = map_or_die(bytes);
	CHECK(pl_reg_mr(&p->net, p->ring_s, R->out, bytes, NCCL_PTR_HOST, &R->out_mh), "regMr");
	R->stage = map_or_die(R->slice_elems * sizeof(float) * (size_t)R->window);
	CHECK(pl_reg_mr(&p->net, p->ring_r, R->stage, R->slice_elems * sizeof(float) *
			(size_t)R->window, NCCL_PTR_HOST, &R->stage_mh), "regMr");
	R->sreq = calloc((size_t)R->window, sizeof(void *));
	R->rreq = calloc((size_t)R->window, sizeof(void *));
	if (!R->sreq || !R->rreq)
		die("out of memory");
}

static void ring_free(struct perf *p, struct ring *R)
{
	size_t bytes = R->max_count * sizeof(float);

	for (int k = 0; k < 2; k++) {
		pl_dereg_mr(&p->net, p->ring_s, R->in_mh[k]);
		munmap(R->in[k], bytes);
	}
	pl_dereg_mr(&p->net, p->ring_s, R->out_mh);
	munmap(R->out, bytes);
	pl_dereg_mr(&p->net, p->ring_r, R->stage_mh);
	munmap(R->stage, R->slice_elems * sizeof(float) * (size_t)R->window);
	free(R->sreq);
	free(R->rreq);
}

/*
 * One out-of-place all-reduce of count floats (input in[par], result out).
 * Step u = 0 .. 2N-3 sends chunk (r - u) and receives chunk (r - u - 1), mod
 * N: the first N-1 steps add the received slice to the input (reduce-scatter),
 * the rest copy it (all-gather). Message k is slice k % S of step k / S, in
 * the same order on both ends of a link. Send k (step >= 1) forwards what
 * receive k - S produced; a received slice is written into out only when the
 * send that last read that part of out (k - (N-1) S) has completed.
 */
static int ring_iter(struct perf *p, struct ring *R, size_t count, int par)
{
	int N = p->nranks, r = p->rank, W = R->window;
	size_t chunk = count / (size_t)N, se = R->slice_elems;
	long S = (long)((chunk + se - 1) / se), total = 2 * (long)(N - 1) * S;
	long ks = 0, kd = 0, kr = 0, kp = 0, lag = (long)(N - 1) * S;
	struct stall stall = {0, 0};
	int bad = 0;

#define RING_OFF(u, c, j) ((size_t)(c) * chunk + (size_t)(j) * se)
#define RING_LEN(j) ((size_t)(j) * se + se > chunk ? chunk - (size_t)(j) * se : se)
	while (kd < total || kp < total) {
		int moved = 0;
		while (ks < total && ks - kd < W && (ks < S || kp > ks - S)) {
			long u = ks / S, j = ks % S;
			int c = (int)(((r - u) % N + N) % N);
			size_t off = RING_OFF(u, c, j), len = RING_LEN(j);
			void *req = u == 0 ?
				try_send(p, p->ring_s, R->in[par] + off, len * sizeof(float), R->in_mh[par]) :
				try_send(p, p->ring_s, R->out + off, len * sizeof(float), R->out_mh);
			if (!req)
				break;
			R->sreq[ks % W] = req;
			ks++;
			moved = 1;
		}
		while (kr < total && kr - kp < W) {
			long j = kr % S;
			void *req = try_recv(p, p->ring_r, R->stage + (size_t)(kr % W) * se,
					     RING_LEN(j) * sizeof(float), R->stage_mh);
			if (!req)
				break;
			R->rreq[kr % W] = req;
			kr++;
			moved = 1;
		}
		if (kd < ks) {
			int done = 0;
			CHECK(pl_test(&p->net, R->sreq[kd % W], &done, NULL), "test");
			if (done) {
				kd++;
				moved = 1;
			}
		}
		if (kp < kr && (kp < lag || kd > kp - lag)) {
			int done = 0, got[1] = {-1};
			CHECK(pl_test(&p->net, R->rreq[kp % W], &done, got), "test");
			if (done) {
				long u = kp / S, j = kp % S;
				int c = (int)(((r - u - 1) % N + N) % N);
				size_t off = RING_OFF(u, c, j), len = RING_LEN(j);
				const float *st = R->stage + (size_t)(kp % W) * se;
				if (got[0] != (int)(len * sizeof(float))) {
					fprintf(stderr, "fabnet-perf: rank %d: ring message %ld: %d bytes, "
						"not %zu\n", r, kp, got[0], len * sizeof(float));
					bad++;
				}
				if (u < N - 1) {
					const float *in = R->in[par] + off;
					float *o = R->out + off;
					for (size_t e = 0; e < len; e++)
						o[e] = in[e] + st[e];
				} else {
					memcpy(R->out + off, st, len * sizeof(float));
				}
				kp++;
				moved = 1;
			}
		}
		if (moved) {
			stall_moved(&stall);
		} else {
			idle(p);
			if (stall_expired(&stall, OP_TIMEOUT_MS * 1000.0))
				die("ring all-reduce of %zu floats: no progress for %d s (sent "
				    "%ld/%ld, received %ld/%ld)", count, OP_TIMEOUT_MS / 1000, kd,
				    total, kp, total);
		}
	}
#undef RING_OFF
#undef RING_LEN
	return bad;
}

static void run_ring_size(struct perf *p, struct ring *R, size_t size)
{
	size_t count = ring_count(p, size), bytes = count * sizeof(float);
	int iters = iters_for(p, bytes), it = 0, bad = 0;
	double t0, us;

	barrier(p);
	for (int w = 0; w < p->warmup; w++, it++) {
		memset(R->out, 0xff, bytes); /* NaN: a slice that never landed cannot pass */
		bad += ring_iter(p, R, count, it & 1);
		bad += ring_check(p, R, count, it & 1);
	}
	barrier(p);
	t0 = now_us();
	for (int i = 0; i < iters; i++, it++) {
		bad += ring_iter(p, R, count, it & 1);
		if (p->check_all)
			bad += ring_check(p, R, count, it & 1);
	}
	us = now_us() - t0;
	if (!p->check_all)
		bad += ring_check(p, R, count, (it - 1) & 1);
	bad = (int)reduce_d(p, bad, 0);
	us = reduce_d(p, us, 1);
	if (p->rank == 0)
		add_rec(p, "ring", bytes, iters, R->window, us / iters,
			2.0 * (p->nranks - 1) / p->nranks, bad);
}

/* ---- comms: many connections at once ---------------------------------------- */
static double rss_bytes(void)
{
	long pages = 0, rss = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f) {
		if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
			rss = 0;
		fclose(f);
	}
	return (double)rss * (double)sysconf(_SC_PAGESIZE);
}

static double heap_bytes(void)
{
	struct mallinfo2 mi = mallinfo2();

	return (double)(mi.uordblks + mi.hblkhd); /* in use: arena and mmapped blocks */
}

static void run_comms(struct perf *p)
{
	int n = p->ncomms, role = p->rank; /* 0: accepts (receives), 1: connects (sends) */
	uint8_t mine[NCCL_NET_HANDLE_MAXSIZE], *all, *hs = NULL, *bufs = NULL, *seen = NULL;
	void *lcomm = NULL, **comms = NULL, **mhs = NULL, **reqs = NULL;
	double rss0 = 0, heap0 = 0, t0, setup = 0, xfer = 0, closet = 0, rssd = 0, heapd = 0;
	int bad = 0;

	all = malloc(sizeof(mine) * (size_t)p->nranks);
	if (!all)
		die("out of memory");
	memset(mine, 0, sizeof(mine));
	if (role < 2) {
		comms = calloc((size_t)n, sizeof(void *));
		mhs = calloc((size_t)n, sizeof(void *));
		reqs = calloc((size_t)n, sizeof(void *));
		hs = malloc((size_t)n * sizeof(mine));
		seen = calloc((size_t)n, 1);
		bufs = map_or_die((size_t)n * 64);
		if (!comms || !mhs || !reqs || !hs || !seen)
			die("out of memory");
		/* Rank 1 listens too, only so that both devices are open before the
		 * baseline: the figure is per connection, not the endpoint's. */
		CHECK(pl_listen(&p->net, p->dev, mine, &lcomm), "listen");
	}
	grp_or_die(p, grp_allgather(&p->g, mine, all, sizeof(mine)));
	for (int i = 0; role == 1 && i < n; i++)
		memcpy(hs + (size_t)i * sizeof(mine), all, sizeof(mine));
	progress(p, "comms: connecting %d comms", n);
	barrier(p);
	rss0 = rss_bytes();
	heap0 = heap_bytes();
	t0 = now_us();
	if (role < 2) {
		int ready = 0;
		double deadline = now_us() + OP_TIMEOUT_MS * 1000.0;
		/* Every pending connect (or accept) is driven in each pass, as NCCL's
		 * proxy would for many peers at once. */
		while (ready < n) {
			for (int i = 0; i < n; i++) {
				if (comms[i])
					continue;
				if (role == 1)
					CHECK(pl_connect(&p->net, p->dev, hs + (size_t)i * sizeof(mine),
							 &comms[i]), "connect");
				else
					CHECK(pl_accept(&p->net, lcomm, &comms[i]), "accept");
				if (comms[i]) {
					ready++;
					deadline = now_us() + OP_TIMEOUT_MS * 1000.0;
				} else if (role == 0) {
					break; /* nothing queued: poll again from the start */
				}
			}
			if (now_us() > deadline)
				die("comms: %d of %d connections after %d s without progress", ready, n,
				    OP_TIMEOUT_MS / 1000);
		}
		setup = (now_us() - t0) / 1e3;
		rssd = rss_bytes() - rss0;
		heapd = heap_bytes() - heap0;
	}
	barrier(p);
	setup = reduce_d(p, setup, 1);
	/* one message on each connection, its own content, all in flight */
	t0 = now_us();
	if (role < 2) {
		int posted = 0, done = 0;
		double deadline = now_us() + OP_TIMEOUT_MS * 1000.0;
		for (int i = 0; i < n; i++) {
			uint8_t *b = bufs + (size_t)i * 64;
			if (role == 1) {
				/* An accepted comm does not say which connect it answers: the
				 * message names its connection, the rest is that one's pattern. */
				uint64_t idx = (uint64_t)i;
				pat_fill(b, 64, key_of(p, 64, 1, i));
				memcpy(b, &idx, sizeof(idx));
			} else
				memset(b, 0x5a, 64);
			CHECK(pl_reg_mr(&p->net, comms[i], b, 64, NCCL_PTR_HOST, &mhs[i]), "regMr");
		}
		while (done < n) {
			int moved = 0;
			for (int i = 0; i < n; i++) {
				uint8_t *b = bufs + (size_t)i * 64;
				if (!reqs[i]) {
					reqs[i] = role == 1 ? try_send(p, comms[i], b, 64, mhs[i]) :
							      try_recv(p, comms[i], b, 64, mhs[i]);
					if (reqs[i]) {
						posted++;
						moved = 1;
					}
				} else if (reqs[i] && reqs[i] != (void *)1) {
					int d = 0, got[1] = {-1};
					CHECK(pl_test(&p->net, reqs[i], &d, got), "test");
					if (d) {
						uint64_t idx = UINT64_MAX;
						memcpy(&idx, b, sizeof(idx));
						if (got[0] != 64 || (role == 0 &&
						    (idx >= (uint64_t)n || seen[idx] ||
						     pat_check(b + 8, 56, key_of(p, 64, 1, (int)idx) + 1) >= 0))) {
							if (bad < 5)
								fprintf(stderr, "fabnet-perf: comms: the message on "
									"accepted comm %d is wrong (%d bytes, "
									"index %llu)\n", i, got[0],
									(unsigned long long)idx);
							bad++;
						} else if (role == 0) {
							seen[idx] = 1;
						}
						reqs[i] = (void *)1; /* done */
						done++;
						moved = 1;
					}
				}
			}
			if (moved)
				deadline = now_us() + OP_TIMEOUT_MS * 1000.0;
			else if (now_us() > deadline)
				die("comms: %d of %d messages after %d s without progress", done, n,
				    OP_TIMEOUT_MS / 1000);
		}
		xfer = (now_us() - t0) / 1e3;
	}
	barrier(p);
	xfer = reduce_d(p, xfer, 1);
	t0 = now_us();
	if (role < 2) {
		for (int i = 0; i < n; i++) {
			pl_dereg_mr(&p->net, comms[i], mhs[i]);
			if (role == 1)
				CHECK(pl_close_send(&p->net, comms[i]), "closeSend");
			else
				CHECK(pl_close_recv(&p->net, comms[i]), "closeRecv");
		}
		CHECK(pl_close_listen(&p->net, lcomm), "closeListen");
		closet = (now_us() - t0) / 1e3;
	}
	barrier(p);
	closet = reduce_d(p, closet, 1);
	bad = (int)reduce_d(p, bad, 0);
	{
		/* per-comm figures of both sides reach rank 0 */
		double v[4] = {rssd / n, heapd / n, 0, 0}, allv[MAX_RANKS * 4];
		grp_or_die(p, grp_allgather(&p->g, v, allv, sizeof(v)));
		if (p->rank == 0) {
			p->cr.n = n;
			p->cr.bad = bad;
			p->cr.setup_ms = setup;
			p->cr.xfer_ms = xfer;
			p->cr.close_ms = closet;
			p->cr.rss[0] = allv[4];
			p->cr.heap[0] = allv[5];
			p->cr.rss[1] = allv[0];
			p->cr.heap[1] = allv[1];
			progress_end(p);
			printf("# comms: %d connections (rank 1 -> rank 0) set up in %.1f ms (%.1f us "
			       "each); one 64-byte message on each in %.1f ms: %s; closed in %.1f ms\n",
			       n, setup, setup * 1e3 / n, xfer, bad ? "CORRUPTED" : "all verified", closet);
			printf("# comms: host memory per connection: sender RSS %.0f B, malloc %.0f B; "
			       "receiver RSS %.0f B, malloc %.0f B\n", p->cr.rss[0], p->cr.heap[0],
			       p->cr.rss[1], p->cr.heap[1]);
			fflush(stdout);
			if (bad)
				p->failures++;
		}
	}
	if (bufs)
		munmap(bufs, (size_t)n * 64);
	free(comms);
	free(mhs);
	free(reqs);
	free(hs);
	free(seen);
	free(all);
}

/* ---- output files ----------------------------------------------------------- */
static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; s && *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", *s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

static void write_csv(struct perf *p, const char *path)
{
	FILE *f = fopen(path, "w");

	if (!f)
		die("%s: %s", path, strerror(errno));
	fprintf(f, "mode,size,iters,window,ranks,time_us,algbw_GBps,busbw_GBps,wrong\n");
	for (int i = 0; i < p->nrecs; i++) {
		struct rec *r = &p->recs[i];
		fprintf(f, "%s,%zu,%d,%d,%d,%.3f,%.6g,%.6g,%d\n", r->mode, r->size, r->iters,
			r->window, r->ranks, r->us, r->algbw, r->busbw, r->bad);
	}
	if (p->lat.n)
		fprintf(f, "lat,8,%d,1,2,%.3f,,,%d\n", p->lat.n, p->lat.med, p->lat.bad);
	if (p->cr.n)
		fprintf(f, "comms,64,%d,%d,2,%.3f,,,%d\n", 1, p->cr.n, p->cr.setup_ms * 1e3 / p->cr.n,
			p->cr.bad);
	if (fclose(f))
		die("%s: %s", path, strerror(errno));
}

static void write_json(struct perf *p, const char *path, const char *plugin)
{
	FILE *f = fopen(path, "w");
	const char *prov = getenv("FABNET_PROVIDER");

	if (!f)
		die("%s: %s", path, strerror(errno));
	fprintf(f, "{\n  \"tool\": \"fabnet-perf\",\n  \"plugin\": ");
	json_str(f, plugin);
	fprintf(f, ",\n  \"abi\": ");
	json_str(f, p->net.symbol);
	fprintf(f, ",\n  \"device\": {\"index\": %d, \"name\": ", p->dev);
	json_str(f, p->props.name);
	fprintf(f, ", \"speed_mbps\": %d},\n  \"provider\": ", p->props.speed);
	if (prov)
		json_str(f, prov);
	else
		fputs("null", f);
	fprintf(f, ",\n  \"ranks\": %d, \"window\": %d, \"warmup\": %d, \"slice\": %zu,"
		" \"check\": \"%s\",\n  \"ok\": %s,\n  \"results\": [", p->nranks, p->window,
		p->warmup, p->slice, p->check_all ? "all" : "last", p->failures ? "false" : "true");
	for (int i = 0; i < p->nrecs; i++) {
		struct rec *r = &p->recs[i];
		fprintf(f, "%s\n    {\"mode\": \"%s\", \"size\": %zu, \"iters\": %d, \"window\": %d, "
			"\"ranks\": %d, \"time_us\": %.3f, \"algbw_GBps\": %.6g, \"busbw_GBps\": %.6g, "
			"\"wrong\": %d}", i ? "," : "", r->mode, r->size, r->iters, r->window, r->ranks,
			r->us, r->algbw, r->busbw, r->bad);
	}
	fprintf(f, "%s]", p->nrecs ? "\n  " : "");
	if (p->lat.n)
		fprintf(f, ",\n  \"latency\": {\"size\": 8, \"round_trips\": %d, \"median_us\": %.3f, "
			"\"min_us\": %.3f, \"p99_us\": %.3f, \"max_us\": %.3f, \"wrong\": %d}", p->lat.n,
			p->lat.med, p->lat.min, p->lat.p99, p->lat.max, p->lat.bad);
	if (p->cr.n)
		fprintf(f, ",\n  \"comms\": {\"count\": %d, \"setup_ms\": %.3f, \"setup_us_per_comm\": "
			"%.3f, \"xfer_ms\": %.3f, \"close_ms\": %.3f, \"sender_rss_per_comm\": %.0f, "
			"\"sender_malloc_per_comm\": %.0f, \"receiver_rss_per_comm\": %.0f, "
			"\"receiver_malloc_per_comm\": %.0f, \"wrong\": %d}", p->cr.n, p->cr.setup_ms,
			p->cr.setup_ms * 1e3 / p->cr.n, p->cr.xfer_ms, p->cr.close_ms, p->cr.rss[0],
			p->cr.heap[0], p->cr.rss[1], p->cr.heap[1], p->cr.bad);
	fprintf(f, "\n}\n");
	if (fclose(f))
		die("%s: %s", path, strerror(errno));
}

static void fmt_size(char *b, size_t n, double s)
{
	if (s >= 1 << 30)
		snprintf(b, n, "%gG", s / (1 << 30));
	else if (s >= 1 << 20)
		snprintf(b, n, "%gM", s / (1 << 20));
	else if (s >= 1 << 10)
		snprintf(b, n, "%gK", s / (1 << 10));
	else
		snprintf(b, n, "%g", s);
}

/* Bus bandwidth against size (log2 axis), one line per mode: plain SVG. */
static void write_plot(struct perf *p, const char *path)
{
	static const char *modes[] = {"uni", "bidir", "ring"};
	static const char *colors[] = {"#1f77b4", "#d62728", "#2ca02c"};
	const double W = 720, H = 440, L = 70, R = 140, T = 40, B = 60;
	double xmin = 1e300, xmax = 0, ymax = 0;
	FILE *f;

	for (int i = 0; i < p->nrecs; i++) {
		struct rec *r = &p->recs[i];
		double x = log2((double)(r->size ? r->size : 1));
		xmin = x < xmin ? x : xmin;
		xmax = x > xmax ? x : xmax;
		ymax = r->busbw > ymax ? r->busbw : ymax;
	}
	if (!p->nrecs)
		xmin = 0, xmax = 1;
	if (xmax <= xmin)
		xmax = xmin + 1;
	/* a round top for the y axis: 1, 2 or 5 times a power of ten */
	{
		double step = pow(10, floor(log10(ymax > 0 ? ymax : 1)));
		double top = step;
		while (top < ymax)
			top += step;
		ymax = top > 0 ? top : 1;
	}
	f = fopen(path, "w");
	if (!f)
		die("%s: %s", path, strerror(errno));
#define PX(x) (L + ((x) - xmin) / (xmax - xmin) * (W - L - R))
#define PY(y) (H - B - (y) / ymax * (H - T - B))
	fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
		"font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
	fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
	fprintf(f, "<text x=\"%.0f\" y=\"22\" font-size=\"15\">fabnet-perf: bus bandwidth, %s, "
		"%d ranks</text>\n", L, getenv("FABNET_PROVIDER") ? getenv("FABNET_PROVIDER") :
		p->props.name, p->nranks);
	for (int k = 0; k <= 5; k++) {
		double y = ymax * k / 5;
		fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
			"<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", L, W - R, PY(y),
			PY(y), L - 6, PY(y) + 4, y);
	}
	for (double x = ceil(xmin); x <= xmax; x += (xmax - xmin > 12 ? 2 : 1)) {
		char lab[32];
		fmt_size(lab, sizeof(lab), pow(2, x));
		fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>"
			"<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", PX(x), PX(x),
			(double)T, H - B, PX(x), H - B + 16, lab);
	}
	fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">message size (bytes)</text>\n",
		(L + W - R) / 2, H - 18);
	fprintf(f, "<text transform=\"translate(18 %.0f) rotate(-90)\" text-anchor=\"middle\">"
		"busbw (GB/s)</text>\n", (T + H - B) / 2);
	fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" "
		"stroke=\"black\"/>\n", L, T, W - L - R, H - T - B);
	for (int m = 0, ly = 0; m < 3; m++) {
		int any = 0;
		for (int i = 0; i < p->nrecs; i++) {
			struct rec *r = &p->recs[i];
			if (strcmp(r->mode, modes[m]) || r->bad)
				continue;
			if (!any)
				fprintf(f, "<polyline fill=\"none\" stroke-width=\"2\" stroke=\"%s\" "
					"points=\"", colors[m]);
			fprintf(f, "%s%.1f,%.1f", any ? " " : "",
				PX(log2((double)(r->size ? r->size : 1))), PY(r->busbw));
			any = 1;
		}
		if (any) {
			fprintf(f, "\"/>\n");
			fprintf(f, "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%d\" y2=\"%d\" stroke=\"%s\" "
				"stroke-width=\"3\"/><text x=\"%.0f\" y=\"%d\">%s%s</text>\n", W - R + 10,
				W - R + 30, (int)T + 10 + ly * 18, (int)T + 10 + ly * 18, colors[m],
				W - R + 36, (int)T + 14 + ly * 18, modes[m],
				strcmp(modes[m], "ring") ? "" : " (all-reduce)");
			ly++;
		}
	}
	fprintf(f, "</svg>\n");
#undef PX
#undef PY
	if (fclose(f))
		die("%s: %s", path, strerror(errno));
}

/* ---- the run ---------------------------------------------------------------- */
static void run(struct perf *p, const char *plugin, const char *csv, const char *json,
		const char *plot)
{
	int ndev = 0;

	CHECK(pl_init(&p->net), "init");
	CHECK(pl_devices(&p->net, &ndev), "devices");
	if (p->dev >= ndev)
		die("device %d requested, the plugin reports %d", p->dev, ndev);
	CHECK(pl_get_properties(&p->net, p->dev, &p->props), "getProperties");
	if (p->max_bytes > p->props.maxP2pBytes) {
		if (p->rank == 0)
			fprintf(stderr, "fabnet-perf: --max-bytes lowered to maxP2pBytes %zu\n",
				p->props.maxP2pBytes);
		p->max_bytes = p->props.maxP2pBytes;
		if (p->min_bytes > p->max_bytes)
			p->min_bytes = p->max_bytes;
	}
	setup_comms(p);
	if (p->rank == 0) {
		printf("# %d ranks; dev %d: %s, %d Mbps reported; window %d, warm-up %d, iters %d%s;"
		       " check %s\n", p->nranks, p->dev, p->props.name, p->props.speed, p->window,
		       p->warmup, p->iters, p->iters_given ? "" : " (fewer for large sizes)",
		       p->check_all ? "all (every message)" : "warm-up and the last timed message");
		printf("# uni: algbw = busbw; bidir: algbw per direction, busbw both directions;"
		       " ring: busbw = algbw * 2(N-1)/N\n");
		fflush(stdout);
	}
	if (p->modes & M_LAT)
		run_lat(p);
	if (p->modes & (M_UNI | M_BIDIR)) {
		if (p->rank < 2)
			alloc_pair_buffers(p);
		table_header(p);
		for (int b = 0; b < 2; b++) {
			if (!(p->modes & (b ? M_BIDIR : M_UNI)))
				continue;
			for (size_t s = p->min_bytes;; s = next_size(p, s)) {
				progress(p, "%s: %zu bytes", b ? "bidir" : "uni", s);
				run_stream(p, b, s);
				if (s >= p->max_bytes)
					break;
			}
		}
		progress_end(p);
		barrier(p);
		if (p->rank < 2)
			free_pair_buffers(p);
	}
	if (p->modes & M_RING) {
		struct ring R;
		ring_alloc(p, &R);
		table_header(p);
		for (size_t s = p->min_bytes;; s = next_size(p, s)) {
			progress(p, "ring: %zu bytes over %d ranks", s, p->nranks);
			run_ring_size(p, &R, s);
			if (s >= p->max_bytes)
				break;
		}
		progress_end(p);
		barrier(p);
		ring_free(p, &R);
	}
	if (p->modes & M_COMMS)
		run_comms(p);
	barrier(p);
	if (p->pair_s) {
		pl_dereg_mr(&p->net, p->pair_s, p->small_s_mh);
		pl_dereg_mr(&p->net, p->pair_r, p->small_r_mh);
	}
	barrier(p);
	if (p->ring_s && p->ring_s != p->pair_s) {
		pl_close_send(&p->net, p->ring_s);
		pl_close_recv(&p->net, p->ring_r);
	}
	if (p->pair_s) {
		pl_close_send(&p->net, p->pair_s);
		pl_close_recv(&p->net, p->pair_r);
	}
	pl_finalize(&p->net);
	p->failures = (int)reduce_d(p, p->failures, 0);
	if (p->rank == 0) {
		if (csv)
			write_csv(p, csv);
		if (json)
			write_json(p, json, plugin);
		if (plot)
			write_plot(p, plot);
	}
	if (p->failures)
		die("%d results had corrupted or mis-sized transfers", p->failures);
}

static char tmp_dir[64], tmp_sock[128];

/* The forking rank removes the control socket's directory on any exit. */
static void remove_tmp(void)
{
	if (tmp_sock[0])
		unlink(tmp_sock);
	if (tmp_dir[0])
		rmdir(tmp_dir);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: fabnet-perf [options]\n"
		"  -m, --mode LIST      lat,uni,bidir,ring,comms or all (default lat,uni)\n"
		"  -b, --min-bytes N    smallest size (8); sizes take K, M, G suffixes\n"
		"  -e, --max-bytes N    largest size (64M)\n"
		"  -f, --factor F       size multiplier (2)\n"
		"  --iters N            timed iterations per size (100; fewer for sizes over\n"
		"                       10 MiB unless given: about 1 GiB per size)\n"
		"  --warmup N           verified warm-up iterations per size (5)\n"
		"  --window N           messages in flight per direction (8)\n"
		"  --lat-iters N        ping-pong round trips (1000)\n"
		"  --slice N            ring: bytes per message (512K)\n"
		"  --comms N            comms: connections (4096)\n"
		"  --check all|last     verify every message, or warm-up and the last (last)\n"
		"  --csv FILE, --json FILE, --plot FILE.svg   results (rank 0 writes them)\n"
		"  --progress           a progress line on stderr (default: when it is a tty)\n"
		"  --plugin PATH        a path, or a name the dynamic linker finds as NCCL would\n"
		"                       (./.libs/libnccl-net-fabnet.so in a build directory, else\n"
		"                       libnccl-net-fabnet.so)   --abi N (6..12)\n"
		"  -d, --dev D          device index (0)\n"
		"  -p, --provider P     sets FABNET_PROVIDER for fabnet\n"
		"  --version            fabnet's version, then exit\n"
		"launch:\n"
		"  -n, --nranks N       fork N local ranks (2); with --rank: the job's size\n"
		"  --rank R --ctl ADDR  run one rank started by hand; ADDR is HOST:PORT (TCP, rank 0\n"
		"                       listens on PORT) or a unix socket path (one host)\n"
		"  under mpirun (OMPI_COMM_WORLD_RANK/SIZE, PMI_RANK/SIZE or SLURM_PROCID/NTASKS\n"
		"  set): rank and size come from there; --ctl HOST:PORT names rank 0's host (on\n"
		"  one host it may be left out)\n");
}

/* The build directory's plugin when run from one (make check, scripts), else
 * the installed plugin by name: the dynamic linker then searches for it as it
 * does for NCCL's dlopen (LD_LIBRARY_PATH, the cache, the system dirs). */
static const char *default_plugin(void)
{
	static const char built[] = "./.libs/libnccl-net-fabnet.so";

	return access(built, F_OK) == 0 ? built : "libnccl-net-fabnet.so";
}

/* Rank and size from a launcher's environment, if any. */
static int env_rank(int *rank, int *size, const char **job)
{
	static const char *vars[][3] = {
		{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE"},
		{"PMI_RANK", "PMI_SIZE", "MPI_LOCALNRANKS"},
		{"SLURM_PROCID", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE"},
	};

	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
		const char *r = getenv(vars[i][0]), *s = getenv(vars[i][1]), *l = getenv(vars[i][2]);
		if (r && s) {
			*rank = atoi(r);
			*size = atoi(s);
			/* one host when every rank is local: then a socket path will do */
			*job = l && atoi(l) == *size ? "local" : NULL;
			return 1;
		}
	}
	return 0;
}

/* A job-wide name for the default control socket under mpirun on one host. */
static void mpi_ctl_path(char *buf, size_t n)
{
	const char *id = getenv("PMIX_NAMESPACE");
	char clean[64];
	size_t k = 0;

	if (!id)
		id = getenv("OMPI_MCA_ess_base_jobid");
	if (!id)
		id = getenv("SLURM_JOB_ID");
	if (id) {
		for (; *id && k + 1 < sizeof(clean); id++)
			clean[k++] = (*id >= 'a' && *id <= 'z') || (*id >= 'A' && *id <= 'Z') ||
				     (*id >= '0' && *id <= '9') ? *id : '_';
		clean[k] = '\0';
	} else {
		/* the local launcher daemon is every rank's parent */
		snprintf(clean, sizeof(clean), "ppid%d", (int)getppid());
	}
	snprintf(buf, n, "/tmp/fabnet-perf-%s.sock", clean);
}

static int parse_modes(const char *s, unsigned *out)
{
	char buf[256], *save = NULL, *t;

	if (strlen(s) >= sizeof(buf))
		return -1;
	strcpy(buf, s);
	*out = 0;
	for (t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		size_t i;
		if (!strcmp(t, "all")) {
			*out |= M_LAT | M_UNI | M_BIDIR | M_RING | M_COMMS;
			continue;
		}
		for (i = 0; i < sizeof(mode_names) / sizeof(mode_names[0]); i++)
			if (!strcmp(t, mode_names[i].name))
				break;
		if (i == sizeof(mode_names) / sizeof(mode_names[0]))
			return -1;
		*out |= (unsigned)mode_names[i].bit;
	}
	return *out ? 0 : -1;
}

int main(int argc, char **argv)
{
	static struct perf p;
	const char *plugin = default_plugin(), *ctl = NULL;
	const char *csv = NULL, *json = NULL, *plot = NULL, *job = NULL;
	int abi = 0, rank = -1, nranks = 0, under_launcher = 0, progress_flag = 0;
	char dir[] = "/tmp/fabnet-perf.XXXXXX", path[128];
	pid_t *children = NULL;

	p.min_bytes = 8;
	p.max_bytes = 64ull << 20;
	p.factor = 2;
	p.iters = 100;
	p.warmup = 5;
	p.window = 8;
	p.lat_iters = 1000;
	p.slice = 512 * 1024;
	p.ncomms = 4096;
	p.modes = M_LAT | M_UNI;
	p.seed = 0x5eedfab1ull;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		int ok = 1;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		}
		if (!strcmp(a, "--version")) {
			printf("fabnet-perf (fabnet) %s\n", PACKAGE_VERSION);
			return 0;
		}
		if (!strcmp(a, "--progress")) {
			progress_flag = 1;
			continue;
		}
		if (!v) {
			fprintf(stderr, "fabnet-perf: %s needs a value\n", a);
			usage(stderr);
			return 2;
		}
		i++;
		if (!strcmp(a, "--plugin"))
			plugin = v;
		else if (!strcmp(a, "--abi"))
			abi = atoi(v);
		else if (!strcmp(a, "--dev") || !strcmp(a, "-d"))
			p.dev = atoi(v);
		else if (!strcmp(a, "--provider") || !strcmp(a, "-p"))
			setenv("FABNET_PROVIDER", v, 1);
		else if (!strcmp(a, "--mode") || !strcmp(a, "-m"))
			ok = !parse_modes(v, &p.modes);
		else if (!strcmp(a, "--min-bytes") || !strcmp(a, "-b"))
			ok = !pl_parse_size(v, &p.min_bytes);
		else if (!strcmp(a, "--max-bytes") || !strcmp(a, "-e"))
			ok = !pl_parse_size(v, &p.max_bytes);
		else if (!strcmp(a, "--factor") || !strcmp(a, "-f"))
			p.factor = atoi(v);
		else if (!strcmp(a, "--iters")) {
			p.iters = atoi(v);
			p.iters_given = 1;
		} else if (!strcmp(a, "--warmup"))
			p.warmup = atoi(v);
		else if (!strcmp(a, "--window"))
			p.window = atoi(v);
		else if (!strcmp(a, "--lat-iters"))
			p.lat_iters = atoi(v);
		else if (!strcmp(a, "--slice"))
			ok = !pl_parse_size(v, &p.slice);
		else if (!strcmp(a, "--comms"))
			p.ncomms = atoi(v);
		else if (!strcmp(a, "--check"))
			ok = !strcmp(v, "all") ? (p.check_all = 1) : !strcmp(v, "last");
		else if (!strcmp(a, "--csv"))
			csv = v;
		else if (!strcmp(a, "--json"))
			json = v;
		else if (!strcmp(a, "--plot"))
			plot = v;
		else if (!strcmp(a, "--rank"))
			rank = atoi(v);
		else if (!strcmp(a, "--nranks") || !strcmp(a, "-n"))
			nranks = atoi(v);
		else if (!strcmp(a, "--ctl"))
			ctl = v;
		else
			ok = 0;
		if (!ok) {
			fprintf(stderr, "fabnet-perf: bad option or value: %s %s\n", a, v);
			usage(stderr);
			return 2;
		}
	}
	if (rank < 0 && env_rank(&rank, &nranks, &job)) {
		under_launcher = 1;
		if (!ctl && job) {
			mpi_ctl_path(path, sizeof(path));
			ctl = path;
		}
		if (!ctl) {
			fprintf(stderr, "fabnet-perf: under a launcher across hosts, give --ctl "
				"HOST:PORT (rank 0's host and a free port)\n");
			return 2;
		}
	}
	if (!nranks)
		nranks = 2;
	if (p.iters < 1 || p.warmup < 0 || p.window < 1 || p.window > 1024 || p.lat_iters < 1 ||
	    p.min_bytes > p.max_bytes || p.factor < 2 || p.slice < sizeof(float) || p.ncomms < 1 ||
	    p.ncomms > 60000 || nranks < 2 || nranks > MAX_RANKS ||
	    (abi && (abi < PL_MIN_VERSION || abi > PL_MAX_VERSION)) ||
	    (rank >= 0 && (rank >= nranks || !ctl))) {
		fprintf(stderr, "fabnet-perf: inconsistent options (need 2 <= ranks <= %d, a window "
			"of 1..1024, --min-bytes <= --max-bytes, --ctl with --rank)\n", MAX_RANKS);
		usage(stderr);
		return 2;
	}
	p.nranks = nranks;
	p.tty = isatty(2);
	p.yield = nranks > sysconf(_SC_NPROCESSORS_ONLN);
	p.progress = progress_flag || p.tty;
	if (rank < 0) {
		/* Fork the other ranks; this process is rank 0 and prints. */
		if (!mkdtemp(dir))
			die("mkdtemp: %s", strerror(errno));
		snprintf(path, sizeof(path), "%s/ctl.sock", dir);
		ctl = path;
		snprintf(tmp_dir, sizeof(tmp_dir), "%s", dir);
		snprintf(tmp_sock, sizeof(tmp_sock), "%s", path);
		atexit(remove_tmp);
		fflush(stdout);
		fflush(stderr);
		children = calloc((size_t)nranks, sizeof(pid_t));
		if (!children)
			die("out of memory");
		rank = 0;
		for (int r = 1; r < nranks; r++) {
			pid_t c = fork();
			if (c < 0)
				die("fork: %s", strerror(errno));
			if (c == 0) {
				prctl(PR_SET_PDEATHSIG, SIGKILL);
				tmp_dir[0] = tmp_sock[0] = '\0'; /* rank 0 cleans up */
				free(children);
				children = NULL;
				rank = r;
				break;
			}
			children[r] = c;
		}
	}
	p.rank = g_rank = rank;
	if (grp_open(&p.g, ctl, rank, nranks, OP_TIMEOUT_MS))
		die("control channel: %s", p.g.err);
	if (pl_open(&p.net, plugin, abi))
		die("%s", p.net.err);
	if (rank == 0) {
		printf("# fabnet-perf: %s (%s \"%s\"), %s%s\n", plugin, p.net.symbol, p.net.name,
		       under_launcher ? "launched by mpirun/srun, control " : "control ", ctl);
		fflush(stdout);
	}
	run(&p, plugin, csv, json, plot);
	grp_close(&p.g);
	if (children) {
		int failed = 0;
		for (int r = 1; r < nranks; r++) {
			int status = 0;
			if (waitpid(children[r], &status, 0) != children[r] ||
			    !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
				fprintf(stderr, "fabnet-perf: rank %d failed (status 0x%x)\n", r, status);
				failed = 1;
			}
		}
		free(children);
		if (failed)
			return 1;
	}
	return 0;
}
