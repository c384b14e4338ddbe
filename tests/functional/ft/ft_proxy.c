/*
 * nccl-proxy's engine: a channel is one connection (a comm pair end) with its
 * buffers and steps; proxy_run progresses them all from one loop, as NCCL's
 * proxy thread does (net.cc's sendProxyProgress / recvProxyProgress).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ft_proxy.h"

const char *const proto_name[NPROTO] = {"Simple", "LL", "LL128"};
/* init.cc's default buffer sizes over NCCL_STEPS */
const size_t step_size[NPROTO] = {
	(1u << 22) / NCCL_STEPS,      /* DEFAULT_BUFFSIZE: 512 KiB */
	8 * 512 * 16,                 /* LL lines per thread x threads x 16-byte line: 64 KiB */
	120 * 640 * sizeof(uint64_t), /* LL128 elements per thread x threads: 600 KiB */
};

static int quick(void)
{
	const char *q = getenv("FABNET_FT_QUICK");
	return q && atoi(q) > 0;
}

int op_steps(const struct pop *op)
{
	int n = quick() ? op->nsteps / 2 : op->nsteps;
	n -= n % op->slice;
	return n < op->slice ? op->slice : n;
}

static uint64_t step_key(const struct ft *ft, const struct chan *ch, int j, int s)
{
	return mix64(ft->seed ^ ch->salt ^ ((uint64_t)ch->id << 48) ^ ((uint64_t)j << 40) ^
		     ((uint64_t)ch->op << 32) ^ (uint64_t)s);
}

/* Bytes of one message: Simple any size up to its slots (often full), LL
 * 16-byte lines up to 4 KiB, LL128 128-byte lines; LL and LL128 sometimes 0. */
static size_t msg_size(const struct pop *op, uint64_t key)
{
	size_t max = step_size[op->proto] * (size_t)op->slice;
	uint64_t r = key >> 8;

	if (op->proto == P_SIMPLE)
		return key % 3 == 0 ? max : 1 + r % max;
	if (key % 16 == 0)
		return 0;
	if (op->proto == P_LL)
		return 16 * (1 + r % 256);
	return 128 * (1 + r % (max / 128));
}

static uint8_t *slot_ptr(const struct chan *ch, const struct psub *sb, int s)
{
	const struct pop *op = &ch->ops[ch->op];
	int slot = (ch->base + s) % NCCL_STEPS;

	return sb->buf[op->proto].p + (size_t)slot * step_size[op->proto];
}

/* A plugin call of the loop that took long blocked the proxy thread. */
static int slow(struct ft *ft, struct chan *ch, const char *what, int64_t t0)
{
	int64_t dt = now_ms() - t0;

	if (dt > ch->max_call_ms)
		ch->max_call_ms = dt;
	if (dt > CALL_MAX_MS)
		return fail(ft, "channel %d: %s took %lld ms: the proxy thread is blocked meanwhile",
			    ch->id, what, (long long)dt);
	return 0;
}

int in_flight(const struct chan *ch)
{
	int n = ch->recv ? ch->posted - ch->done : 0;

	for (int j = 0; !ch->recv && j < ch->nsubs; j++)
		n += ch->sub[j].posted - ch->sub[j].done;
	return n;
}

/* NCCL's teardown of a connection: deregMr, free, close; timed. */
int chan_teardown(struct ft *ft, struct chan *ch)
{
	int inflight = in_flight(ch), rc = 0;
	int64_t t0;
	ncclResult_t r = ncclSuccess;

	if (ch->state == CH_CLOSED)
		return 0;
	for (int j = 0; j < ch->nsubs; j++)
		for (int p = 0; p < NPROTO; p++)
			if (fbuf_free(ft, &ch->sub[j].buf[p], 1))
				rc = -1;
	t0 = now_ms();
	if (ch->comm) {
		g_step = ch->recv ? "closeRecv" : "closeSend";
		r = ch->recv ? pl_close_recv(ft->net, ch->comm) : pl_close_send(ft->net, ch->comm);
		if (r != ncclSuccess)
			rc = fail(ft, "channel %d: %s with %d steps in flight returned %d (%s)", ch->id,
				  g_step, inflight, (int)r, pl_result_str(r));
		if (slow(ft, ch, ch->recv ? "closeRecv" : "closeSend", t0))
			rc = -1;
	}
	if (ch->lcomm) {
		int64_t t1 = now_ms();
		g_step = "closeListen";
		r = pl_close_listen(ft->net, ch->lcomm);
		if (r != ncclSuccess)
			rc = fail(ft, "channel %d: closeListen returned %d (%s)", ch->id, (int)r,
				  pl_result_str(r));
		if (slow(ft, ch, "closeListen", t1))
			rc = -1;
	}
	vnote("channel %d: torn down (%s, %d steps in flight) in %lld ms", ch->id,
	      ch->state == CH_DONE ? "done" : "mid-traffic", inflight, (long long)(now_ms() - t0));
	ch->comm = ch->lcomm = NULL;
	ch->state = CH_CLOSED;
	wd_kick();
	return rc;
}

/* An error from the plugin fails the part; on a channel being aborted, one
 * after the peer tore its end down is what NCCL would see before aborting. */
static int chan_err(struct ft *ft, struct chan *ch, ncclResult_t r, const char *what)
{
	if (ch->abortable && ch->state == CH_RUN) {
		vnote("channel %d: %s returned %d (%s): the peer aborted it; tearing down", ch->id,
		      what, (int)r, pl_result_str(r));
		ch->errors_after_abort++;
		return chan_teardown(ft, ch) ? -1 : 1;
	}
	return fail(ft, "channel %d, op %d (%s): %s returned %d (%s)", ch->id, ch->op,
		    ch->ops ? proto_name[ch->ops[ch->op].proto] : "-", what, (int)r,
		    pl_result_str(r));
}

static void op_begin(struct chan *ch)
{
	const struct pop *op = &ch->ops[ch->op];

	ch->base = (ch->step + op->chunk - 1) / op->chunk * op->chunk;
	ch->posted = ch->received = ch->done = 0;
	ch->canaried = 0;
	for (int j = 0; j < ch->nsubs; j++)
		ch->sub[j].posted = ch->sub[j].done = ch->sub[j].filled = 0;
}

static void op_end(struct chan *ch)
{
	ch->step = ch->base + op_steps(&ch->ops[ch->op]);
	if (++ch->op == ch->nops)
		ch->state = CH_DONE;
	else
		op_begin(ch);
}

/* Buffers of every protocol the ops use, registered once the comm exists;
 * with gdr, Simple and LL128 in "device memory" (a dma-buf), LL on the host
 * (net.cc maps the LL buffer in host memory even with GDR). */
static int chan_alloc(struct ft *ft, struct chan *ch)
{
	int used[NPROTO] = {0};

	for (int k = 0; k < ch->nops; k++)
		used[ch->ops[k].proto] = 1;
	for (int j = 0; j < ch->nsubs; j++)
		for (int p = 0; p < NPROTO; p++) {
			int rc;
			if (!used[p])
				continue;
			ft->dmabuf = ch->gdr && p != P_LL;
			ft->dmabuf_off = 0;
			rc = fbuf_alloc(ft, ch->comm, step_size[p] * NCCL_STEPS, &ch->sub[j].buf[p]);
			ft->dmabuf = 0;
			if (rc)
				return -1;
		}
	return 0;
}

static int chan_connect(struct ft *ft, struct chan *ch)
{
	void *c = NULL;
	int64_t t0 = now_ms();
	ncclResult_t r;

	g_step = ch->recv ? "accept" : "connect";
	r = ch->recv ? pl_accept(ft->net, ch->lcomm, &c) : pl_connect(ft->net, ft->dev, ch->handle, &c);
	if (slow(ft, ch, g_step, t0))
		return -1;
	if (r != ncclSuccess)
		return fail(ft, "channel %d: %s returned %d (%s) after %d NULL comms", ch->id, g_step,
			    (int)r, pl_result_str(r), ch->conn_nulls);
	if (!c) {
		ch->conn_nulls++; /* not ready: the loop calls again */
		return 0;
	}
	ch->comm = c;
	if (ch->recv && !ch->keep_listen) {
		g_step = "closeListen";
		CALL(ft, pl_close_listen(ft->net, ch->lcomm), "closeListen after accept");
		ch->lcomm = NULL;
	}
	if (chan_alloc(ft, ch))
		return -1;
	ch->state = CH_RUN;
	op_begin(ch);
	vnote("channel %d: %s after %d NULL comms", ch->id, ch->recv ? "accepted" : "connected",
	      ch->conn_nulls);
	return 1;
}

/* ---- the sending end ---------------------------------------------------------- */

static int send_post(struct ft *ft, struct chan *ch, int j)
{
	const struct pop *op = &ch->ops[ch->op];
	struct psub *sb = &ch->sub[j];
	int s = sb->posted, slot = (ch->base + s) % NCCL_STEPS;
	uint64_t key = step_key(ft, ch, j, s);
	size_t size = msg_size(op, key);
	uint8_t *p = slot_ptr(ch, sb, s);
	void *req = NULL;
	int64_t t0;
	ncclResult_t r;

	if (!sb->filled) { /* the slot is free: the "GPU" writes the step */
		pat_fill(p, size, pat_key(ft->seed, size, key));
		sb->filled = 1;
	}
	g_step = "isend";
	t0 = now_ms();
	r = pl_isend(ft->net, ch->comm, p, size, sb->tag, sb->buf[op->proto].mh, &req);
	if (slow(ft, ch, "isend", t0))
		return -1;
	if (r != ncclSuccess)
		return chan_err(ft, ch, r, "isend");
	if (!req) {
		sb->nulls++;
		return 0;
	}
	sb->filled = 0;
	sb->req[slot] = req;
	sb->sent[slot] = size;
	sb->posted += op->slice;
	return 1;
}

static int send_test(struct ft *ft, struct chan *ch, int j)
{
	const struct pop *op = &ch->ops[ch->op];
	struct psub *sb = &ch->sub[j];
	int slot = (ch->base + sb->done) % NCCL_STEPS, done = 0, size = SIZE_UNSET;
	int64_t t0 = now_ms();
	ncclResult_t r;

	g_step = "test";
	r = pl_test(ft->net, sb->req[slot], &done, &size);
	if (slow(ft, ch, "test (isend)", t0))
		return -1;
	if (r != ncclSuccess)
		return chan_err(ft, ch, r, "test (isend)");
	if (!done)
		return 0;
	if (size != (int)sb->sent[slot])
		return fail(ft, "channel %d sub %d, %s step %d: test() reported %d bytes sent, not %zu",
			    ch->id, j, proto_name[op->proto], sb->done, size, sb->sent[slot]);
	sb->req[slot] = NULL;
	sb->done += op->slice;
	if (j == 0)
		ch->total += op->slice;
	return 1;
}

/* Each sub in turn (on its pace): post the next step if its slot is free,
 * else test the oldest send. */
static int send_progress(struct ft *ft, struct chan *ch, unsigned pass)
{
	const struct pop *op = &ch->ops[ch->op];
	int n = op_steps(op), progress = 0, finished = 0;

	for (int j = 0; j < ch->nsubs; j++) {
		struct psub *sb = &ch->sub[j];
		int r = 0;
		if (sb->done == n) {
			finished++;
			continue;
		}
		if (pass % (unsigned)(sb->pace ? sb->pace : 1))
			continue;
		if (sb->posted < n && sb->posted < sb->done + ch->depth)
			r = send_post(ft, ch, j);
		if (r == 0 && sb->done < sb->posted)
			r = send_test(ft, ch, j);
		if (r < 0)
			return -1;
		if (ch->state != CH_RUN)
			return 1; /* torn down after the peer's abort */
		progress |= r;
	}
	if (finished == ch->nsubs) {
		op_end(ch);
		progress = 1;
	}
	return progress;
}

/* ---- the receiving end -------------------------------------------------------- */

static int recv_post(struct ft *ft, struct chan *ch)
{
	const struct pop *op = &ch->ops[ch->op];
	size_t cap = step_size[op->proto] * (size_t)op->slice, sz[MAX_GROUP];
	void *data[MAX_GROUP], *mh[MAX_GROUP], *req;
	int tags[MAX_GROUP], slot = (ch->base + ch->posted) % NCCL_STEPS;
	int64_t t0;
	ncclResult_t r;

	for (int j = 0; j < ch->nsubs; j++) {
		data[j] = slot_ptr(ch, &ch->sub[j], ch->posted);
		if (!ch->canaried)
			canary_fill(data[j], 0, cap);
		sz[j] = cap;
		tags[j] = ch->sub[j].tag;
		mh[j] = ch->sub[j].buf[op->proto].mh;
	}
	ch->canaried = 1;
	req = ch->nsubs == 1 && op->proto != P_SIMPLE && ft->net->version >= 9 ? OPTIONAL_RECV
									      : NULL;
	g_step = "irecv";
	t0 = now_ms();
	r = pl_irecv(ft->net, ch->comm, ch->nsubs, data, sz, tags, mh, &req);
	if (slow(ft, ch, "irecv", t0))
		return -1;
	if (r != ncclSuccess)
		return chan_err(ft, ch, r, "irecv");
	if (req == OPTIONAL_RECV)
		return fail(ft, "channel %d: irecv left NCCL_NET_OPTIONAL_RECV_COMPLETION in *request "
			    "(neither a request nor NULL)", ch->id);
	if (!req) {
		ch->post_nulls++;
		return 0;
	}
	ch->canaried = 0;
	ch->rreq[slot] = req;
	ch->posted += op->slice;
	return 1;
}

static int recv_flush(struct ft *ft, struct chan *ch, int slot, int *sizes)
{
	void *data[MAX_GROUP], *mh[MAX_GROUP];
	int64_t t0 = now_ms();
	ncclResult_t r;

	for (int j = 0; j < ch->nsubs; j++) {
		data[j] = slot_ptr(ch, &ch->sub[j], ch->received);
		mh[j] = ch->sub[j].buf[P_SIMPLE].mh;
	}
	g_step = "iflush";
	ch->freq[slot] = NULL;
	r = pl_iflush(ft->net, ch->comm, ch->nsubs, data, sizes, mh, &ch->freq[slot]);
	if (slow(ft, ch, "iflush", t0))
		return -1;
	if (r != ncclSuccess)
		return chan_err(ft, ch, r, "iflush");
	if (ch->freq[slot])
		ch->flush_reqs++;
	else
		ch->flush_nulls++; /* nothing to flush */
	return 0;
}

/* The oldest receive: sizes as sent, nothing past the group's entries. */
static int recv_test(struct ft *ft, struct chan *ch)
{
	const struct pop *op = &ch->ops[ch->op];
	int s = ch->received, slot = (ch->base + s) % NCCL_STEPS, done = 0, total = 0;
	int sizes[PROXY_MAX_SUBS];
	int64_t t0 = now_ms();
	ncclResult_t r;

	for (int i = 0; i < PROXY_MAX_SUBS; i++)
		sizes[i] = SIZE_UNSET;
	g_step = "test";
	r = pl_test(ft->net, ch->rreq[slot], &done, sizes);
	if (slow(ft, ch, "test (irecv)", t0))
		return -1;
	if (r != ncclSuccess)
		return chan_err(ft, ch, r, "test (irecv)");
	if (!done)
		return 0;
	for (int j = 0; j < ch->nsubs; j++) {
		size_t want = msg_size(op, step_key(ft, ch, j, s));
		if (sizes[j] != (int)want)
			return fail(ft, "channel %d sub %d (tag %d), %s step %d: test() reported %d "
				    "bytes received, %zu were sent", ch->id, j, ch->sub[j].tag,
				    proto_name[op->proto], s, sizes[j], want);
		ch->got[slot][j] = sizes[j];
		total += sizes[j];
	}
	for (int i = ch->nsubs; i < PROXY_MAX_SUBS; i++)
		if (sizes[i] != SIZE_UNSET)
			return fail(ft, "channel %d: test() of a receive of %d wrote sizes[%d] = %d",
				    ch->id, ch->nsubs, i, sizes[i]);
	ch->rreq[slot] = NULL;
	ch->freq[slot] = NULL;
	if (total > 0 && op->proto == P_SIMPLE && ch->gdr && recv_flush(ft, ch, slot, sizes))
		return -1;
	ch->received += op->slice;
	return 1;
}

/* The oldest received step: its flush done, the data counts; verify it. */
static int recv_finish(struct ft *ft, struct chan *ch)
{
	const struct pop *op = &ch->ops[ch->op];
	int s = ch->done, slot = (ch->base + s) % NCCL_STEPS;

	if (ch->freq[slot]) {
		int done = 0;
		int64_t t0 = now_ms();
		ncclResult_t r;
		g_step = "test (flush)";
		r = pl_test(ft->net, ch->freq[slot], &done, NULL);
		if (slow(ft, ch, "test (flush)", t0))
			return -1;
		if (r != ncclSuccess)
			return chan_err(ft, ch, r, "test (flush)");
		if (!done)
			return 0;
		ch->freq[slot] = NULL;
	}
	for (int j = 0; j < ch->nsubs; j++) {
		uint64_t key = step_key(ft, ch, j, s);
		struct fbuf view = {.p = slot_ptr(ch, &ch->sub[j], s),
				    .cap = step_size[op->proto] * (size_t)op->slice};
		char what[120];
		snprintf(what, sizeof(what), "channel %d sub %d (tag %d), op %d %s step %d", ch->id,
			 j, ch->sub[j].tag, ch->op, proto_name[op->proto], s);
		if (check_recv(ft, what, &view, msg_size(op, key), key, ch->got[slot][j]))
			return -1;
	}
	ch->done += op->slice;
	ch->total += op->slice;
	return 1;
}

/* As recvProxyProgress: post the next group if its slots are free, else test
 * the oldest receive, else finish (flush, consume) the oldest received. */
static int recv_progress(struct ft *ft, struct chan *ch)
{
	const struct pop *op = &ch->ops[ch->op];
	int n = op_steps(op), r = 0;

	if (ch->posted < n && ch->posted < ch->done + ch->depth)
		r = recv_post(ft, ch);
	if (r == 0 && ch->state == CH_RUN && ch->received < ch->posted)
		r = recv_test(ft, ch);
	if (r == 0 && ch->state == CH_RUN && ch->done < ch->received)
		r = recv_finish(ft, ch);
	if (r >= 0 && ch->state == CH_RUN && ch->done == n) {
		op_end(ch);
		r = 1;
	}
	return r;
}

/* ---- the proxy loop ----------------------------------------------------------- */

static int chan_progress(struct ft *ft, struct chan *ch, unsigned pass)
{
	switch (ch->state) {
	case CH_CONNECT:
		return chan_connect(ft, ch);
	case CH_RUN:
		return ch->recv ? recv_progress(ft, ch) : send_progress(ft, ch, pass);
	default:
		return 0;
	}
}

static int proxy_stuck(struct ft *ft, struct proxy *px)
{
	char d[600];
	size_t l = 0;

	d[0] = '\0';
	for (int i = 0; i < px->nch && l < sizeof(d) - 1; i++) {
		const struct chan *ch = &px->ch[i];
		static const char *const st[] = {"waiting", "connecting", "running", "done", "closed"};
		l += (size_t)snprintf(d + l, sizeof(d) - l, "%s[ch %d %s op %d/%d posted %d done %d]",
				      i ? " " : "", ch->id, st[ch->state], ch->op, ch->nops,
				      ch->recv ? ch->posted : ch->sub[0].posted,
				      ch->recv ? ch->done : ch->sub[0].done);
	}
	return fail(ft, "proxy loop: no progress for %d s: %s", ft->op_timeout_ms / 1000, d);
}

/* One thread, every channel in turn, no call that waits. */
static int proxy_run(struct ft *ft, struct proxy *px)
{
	int64_t deadline = now_ms() + ft->op_timeout_ms;

	for (px->pass = 0;; px->pass++) {
		int progress = 0, live = 0;
		for (int i = 0; i < px->nch; i++) {
			int r = chan_progress(ft, &px->ch[i], px->pass);
			if (r < 0)
				return -1;
			progress |= r;
			live |= px->ch[i].state < CH_DONE;
		}
		if (px->hook) {
			int r = px->hook(ft, px);
			if (r < 0)
				return -1;
			progress |= r;
		}
		if (!live)
			return 0;
		if (progress) {
			deadline = now_ms() + ft->op_timeout_ms;
			wd_kick();
			continue;
		}
		if (ft->rank >= 0 && peer_failed(ft))
			return -1;
		if (now_ms() > deadline)
			return proxy_stuck(ft, px);
		sched_yield();
	}
}

/* ---- parts ---------------------------------------------------------------------- */

void chan_setup(struct chan *ch, int id, int recv, int nsubs, const struct pop *ops,
		       int nops, uint64_t salt)
{
	memset(ch, 0, sizeof(*ch));
	ch->id = id;
	ch->recv = recv;
	ch->salt = salt << 56;
	ch->nsubs = nsubs;
	ch->depth = nsubs > 1 ? (SHARED_STEPS / nsubs < NCCL_STEPS ? SHARED_STEPS / nsubs
								    : NCCL_STEPS)
			      : NCCL_STEPS;
	ch->ops = ops;
	ch->nops = nops;
	ch->state = CH_CONNECT;
	for (int j = 0; j < nsubs; j++) {
		ch->sub[j].tag = j; /* NCCL's tag: the peer's rank */
		ch->sub[j].pace = 1;
	}
}

/* Rank 0 listens for every channel; the handles go to rank 1. */
static int chans_listen(struct ft *ft, struct chan *ch, int n)
{
	uint8_t all[MAXCH * NCCL_NET_HANDLE_MAXSIZE];

	if (ft->rank == 1) {
		if (ft_recv(ft, all, (uint32_t)n * NCCL_NET_HANDLE_MAXSIZE))
			return -1;
		for (int i = 0; i < n; i++)
			memcpy(ch[i].handle, all + (size_t)i * NCCL_NET_HANDLE_MAXSIZE,
			       NCCL_NET_HANDLE_MAXSIZE);
		return 0;
	}
	for (int i = 0; i < n; i++) {
		g_step = "listen";
		CALL(ft, pl_listen(ft->net, ft->dev, ch[i].handle, &ch[i].lcomm), "listen");
		memcpy(all + (size_t)i * NCCL_NET_HANDLE_MAXSIZE, ch[i].handle,
		       NCCL_NET_HANDLE_MAXSIZE);
	}
	return ft_send(ft, all, (uint32_t)n * NCCL_NET_HANDLE_MAXSIZE);
}

/* Connects in the loop, runs every channel's ops, tears down the NCCL way. */
int run_chans(struct ft *ft, struct chan *ch, int n, int (*hook)(struct ft *, struct proxy *))
{
	struct proxy px = {.ch = ch, .nch = n, .hook = hook};
	int rc = 0, nulls = 0, flushes = 0, fnull = 0;
	int64_t maxcall = 0;

	if ((ft->rank >= 0 && chans_listen(ft, ch, n)) || proxy_run(ft, &px))
		rc = -1;
	for (int i = 0; i < n; i++) {
		if (chan_teardown(ft, &ch[i]))
			rc = -1;
		nulls += ch[i].post_nulls;
		for (int j = 0; j < ch[i].nsubs; j++)
			nulls += ch[i].sub[j].nulls;
		flushes += ch[i].flush_reqs;
		fnull += ch[i].flush_nulls;
		if (ch[i].max_call_ms > maxcall)
			maxcall = ch[i].max_call_ms;
	}
	vnote("%u passes, %d NULL posts, %d flush requests, %d NULL flushes, longest call %lld ms",
	      px.pass, nulls, flushes, fnull, (long long)maxcall);
	return rc;
}

struct chan *chans_new(struct ft *ft, int n)
{
	struct chan *ch = calloc((size_t)n, sizeof(*ch));

	if (!ch)
		fail(ft, "out of memory");
	return ch;
}
