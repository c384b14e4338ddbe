/*
 * soak: at least SOAK_MIN_MSGS messages and SOAK_MIN_BYTES bytes of seeded
 * random sizes (mostly 0..64 KiB, some up to 4 MiB) over SOAK_COMMS comms,
 * received in groups of 1..8, every byte compared with its pattern and every
 * posted buffer's tail with its canary; no message may be lost. The RSS must
 * stay flat: it may not grow by more than 16 MiB between 10% and 100%.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "../../../tools/proc.h"
#include "ft.h"

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

#define SOAK_ALIGN(x) (((x) + 63) & ~(size_t)63)

/* Room in the ring for group g's buffers, each followed by its canary. 0, or
 * -1 when the ring is full. */
static int soak_recv_alloc(struct soak_comm *c, struct soak_rop *op, const struct soak_grp *g)
{
	size_t need = 0, o;
	long off;

	for (int j = 0; j < g->n; j++)
		need += SOAK_ALIGN(c->e[g->first + (uint32_t)j].cap + SOAK_TAIL);
	off = ring_alloc(&c->ring, need);
	if (off < 0)
		return -1;
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
	return 0;
}

/* Posts the next groups while the window and the ring have room. */
static int soak_recv_post(struct ft *ft, struct soak_comm *c, void *comm)
{
	ncclResult_t r;

	while (c->rcount < SOAK_RWIN && c->next_grp < c->ng) {
		struct soak_rop *op = &c->r[(c->rhead + c->rcount) % SOAK_RWIN];
		const struct soak_grp *g = &c->g[c->next_grp];
		void *data[MAX_GROUP], *mh[MAX_GROUP];
		size_t sizes[MAX_GROUP], o;
		int tags[MAX_GROUP];
		if (!op->allocated && soak_recv_alloc(c, op, g))
			break;
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
	return 0;
}

/* A completed group: the sizes test() reported, every byte, every canary. */
static int soak_recv_verify(struct ft *ft, struct soak_comm *c, const struct soak_rop *op,
			    const int *got)
{
	const struct soak_grp *g = &c->g[op->grp];
	size_t o = op->off;

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
	return 0;
}

/* Receiver: post the next groups, test those in flight, verify. Returns the
 * number of messages completed, or -1. */
static int soak_recv_step(struct ft *ft, struct soak_comm *c, void *comm)
{
	int completed = 0;
	ncclResult_t r;

	if (soak_recv_post(ft, c, comm))
		return -1;
	for (unsigned k = 0; k < c->rcount; k++) {
		struct soak_rop *op = &c->r[(c->rhead + k) % SOAK_RWIN];
		const struct soak_grp *g = &c->g[op->grp];
		int done = 0, got[MAX_GROUP];
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
		if (soak_recv_verify(ft, c, op, got))
			return -1;
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

/* One arena per comm, resident from the start and registered on its comm. */
static int soak_arenas(struct ft *ft, struct soak_comm *sc, struct pair *p)
{
	for (int i = 0; i < SOAK_COMMS; i++) {
		struct soak_ring *rg = &sc[i].ring;
		ncclResult_t r;
		rg->cap = SOAK_ARENA;
		rg->base = mmap(NULL, rg->cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
				-1, 0);
		if (rg->base == MAP_FAILED) {
			rg->base = NULL;
			return fail(ft, "mmap: %s", strerror(errno));
		}
		memset(rg->base, 0, rg->cap); /* resident from the start: RSS is then flat */
		g_step = "regMr";
		r = pl_reg_mr(ft->net, p[i].comm, rg->base, rg->cap, NCCL_PTR_HOST, &rg->mh);
		if (r != ncclSuccess)
			return fail(ft, "regMr of a %u MiB arena returned %d (%s)", SOAK_ARENA / MiB,
				    (int)r, pl_result_str(r));
	}
	return 0;
}

/* Moves all msgs messages (rank 0 receives, rank 1 sends), noting the RSS at
 * 10%, 50% and 100%. *t0: when the traffic started. */
static int soak_traffic(struct ft *ft, struct soak_comm *sc, struct pair *p, uint64_t msgs,
			size_t rss[3], int64_t *t0)
{
	static const int pct[3] = {10, 50, 100};
	uint64_t done = 0;
	int next_mark = 0;
	int64_t last;

	*t0 = last = now_ms();
	while (done < msgs) {
		int progress = 0;
		for (int i = 0; i < SOAK_COMMS; i++) {
			int n = ft->rank == 0 ? soak_recv_step(ft, &sc[i], p[i].comm)
					      : soak_send_step(ft, &sc[i], p[i].comm);
			if (n < 0)
				return -1;
			if (n) {
				progress = 1;
				done += (uint64_t)n;
				sc[i].done += (uint32_t)n;
			}
		}
		while (next_mark < 3 && done * 100 >= msgs * (uint64_t)pct[next_mark]) {
			rss[next_mark] = rss_bytes();
			if (ft->rank == 0)
				printf("# soak: %3d%%: %" PRIu64 " messages in %.1f s, RSS %.1f MiB\n",
				       pct[next_mark], done, (double)(now_ms() - *t0) / 1000.0,
				       (double)rss[next_mark] / MiB);
			next_mark++;
		}
		if (progress) {
			last = now_ms();
			wd_kick();
			continue;
		}
		if (peer_failed(ft))
			return -1;
		if (now_ms() - last > ft->op_timeout_ms) {
			int worst = 0;
			for (int i = 1; i < SOAK_COMMS; i++)
				if (sc[i].done < sc[worst].done)
					worst = i;
			return fail(ft, "no progress for %d s after %" PRIu64 " of %" PRIu64 " messages; "
				    "comm %d: %u of %u done, %s", ft->op_timeout_ms / 1000, done, msgs,
				    worst, sc[worst].done, sc[worst].ne,
				    ft->rank == 0 ? "receiving" : "sending");
		}
	}
	return 0;
}

/* Rank 0 prints the rates and both ranks' RSS; each rank's RSS must be flat. */
static int soak_verdict(struct ft *ft, uint64_t msgs, uint64_t bytes, int64_t t0,
			const size_t rss[3])
{
	double secs = (double)(now_ms() - t0) / 1000.0;
	uint64_t mine[3] = {rss[0], rss[1], rss[2]}, peer_rss[3] = {0, 0, 0};

	if (ft->rank == 1) {
		if (ft_send(ft, mine, sizeof(mine)))
			return -1;
	} else {
		if (ft_recv(ft, peer_rss, sizeof(peer_rss)))
			return -1;
		printf("# soak: %" PRIu64 " messages, %" PRIu64 " bytes (%.2f GiB) in %.1f s: "
		       "%.0f MB/s, %.0f messages/s, no corruption, no loss\n", msgs, bytes,
		       (double)bytes / (1024.0 * MiB), secs, (double)bytes / 1e6 / secs,
		       (double)msgs / secs);
		printf("# soak: RSS at 10%%/50%%/100%%: rank 0 (receiver) %.1f/%.1f/%.1f MiB, "
		       "rank 1 (sender) %.1f/%.1f/%.1f MiB\n", (double)rss[0] / MiB,
		       (double)rss[1] / MiB, (double)rss[2] / MiB, (double)peer_rss[0] / MiB,
		       (double)peer_rss[1] / MiB, (double)peer_rss[2] / MiB);
	}
	if (rss[2] > rss[0] + SOAK_RSS_SLACK)
		return fail(ft, "RSS grew by %.1f MiB between 10%% and 100%% of the run (%.1f -> "
			    "%.1f MiB): memory is not flat", (double)(rss[2] - rss[0]) / MiB,
			    (double)rss[0] / MiB, (double)rss[2] / MiB);
	return 0;
}

int scen_soak(struct ft *ft)
{
	struct soak_comm *sc = calloc(SOAK_COMMS, sizeof(*sc));
	struct pair *p = calloc(SOAK_COMMS, sizeof(*p));
	uint64_t msgs = 0, bytes = 0;
	size_t rss[3] = {0, 0, 0};
	int rc = -1, opened = 0;
	int64_t t0 = 0;

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
	if (pairs_open(ft, p, SOAK_COMMS, 1) || soak_arenas(ft, sc, p) || ft_sync(ft))
		goto out;
	if (soak_traffic(ft, sc, p, msgs, rss, &t0) || soak_verdict(ft, msgs, bytes, t0, rss))
		goto out;
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
