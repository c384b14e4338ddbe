/*
 * Transfers: irecv / isend / test and the CTS, EAGER, FIN and immediate-data
 * handlers. See proto.h for the protocol; the checks here are what keeps a
 * confused or hostile peer from completing, or writing into, the wrong thing.
 */
#include <config.h>

#include <stdio.h>
#include <string.h>

#include <rdma/fi_domain.h>
#include <rdma/fi_errno.h>

#include "core/config.h"
#include "core/log.h"
#include "core/match.h"
#include "protocol/proto.h"
#include "transport/accel.h"

#define PD(dev) ((struct fabnet_proto_dev *)(dev)->proto)

static struct fabnet_req *req_new(struct fabnet_comm *comm, uint8_t kind)
{
	struct fabnet_req *r;

	if (kind != FABNET_REQ_FLUSH && fabnet_pool_used(&comm->reqs) >= FABNET_NREQS)
		return NULL;
	r = fabnet_pool_get(&comm->reqs);

	if (!r)
		return NULL;
	memset(r, 0, sizeof(*r));
	r->magic = FABNET_REQ_MAGIC;
	r->kind = kind;
	r->comm = comm;
	return r;
}

static void unstall_one(struct fabnet_proto_dev *pd, struct fabnet_req *r);

static void req_free(struct fabnet_req *r)
{
	/* A send reported finished (its comm failed) may still wait for a rail:
	 * it must not be advanced once its slot is reused. */
	if (r->kind == FABNET_REQ_SEND && r->u.send.stalled)
		unstall_one(PD(r->comm->dev), r);
	r->magic = 0;
	fabnet_pool_put(&r->comm->reqs, r);
}

static int req_ops_pending(const struct fabnet_req *r)
{
	return r->msg_pending ||
	       (r->kind == FABNET_REQ_SEND && r->u.send.writes_done != r->u.send.writes_posted);
}

/* A request NCCL was told has failed (its peer is gone) while the provider
 * still held one of its operations goes back to the pool when that returns. */
static void req_release_abandoned(struct fabnet_req *r)
{
	if (r->abandoned && !req_ops_pending(r))
		req_free(r);
}

void fabnet_proto_fail_comm(struct fabnet_comm *comm, const char *why)
{
	char raw[FABNET_ADDR_MAX], peer[128] = "unknown address";
	size_t rawlen = sizeof(raw), plen = sizeof(peer);

	if (comm->state == FABNET_FAILED)
		return;
	if (fi_av_lookup(comm->dev->av, comm->peer, raw, &rawlen) == 0 && rawlen <= sizeof(raw))
		fi_av_straddr(comm->dev->av, raw, peer, &plen);
	FN_WARN("fabnet: %s comm %u on %s, peer comm %u at %s, failed: %s. Requests on it "
		"return ncclRemoteError; check the peer process and its log.",
		comm->kind == FABNET_SEND ? "send" : "recv", comm->id, comm->dev->name,
		comm->peer_id, peer, why);
	comm->state = FABNET_FAILED;
	fabnet_proto_drop_stalled(comm); /* their writes will never be posted */
}

/* ---- sends: write scheduling ---------------------------------------------- */
static void stall(struct fabnet_proto_dev *pd, struct fabnet_req *r)
{
	if (r->u.send.stalled)
		return;
	r->u.send.stalled = 1;
	r->u.send.stall_next = NULL;
	if (pd->stall_tail)
		pd->stall_tail->u.send.stall_next = r;
	else
		pd->stall_head = r;
	pd->stall_tail = r;
}

/* Takes r off the stall list. */
static void unstall_one(struct fabnet_proto_dev *pd, struct fabnet_req *r)
{
	struct fabnet_req **pp = &pd->stall_head, *prev = NULL;

	while (*pp && *pp != r) {
		prev = *pp;
		pp = &(*pp)->u.send.stall_next;
	}
	if (*pp) {
		*pp = r->u.send.stall_next;
		if (pd->stall_tail == r)
			pd->stall_tail = prev;
	}
	r->u.send.stalled = 0;
	r->u.send.stall_next = NULL;
}

void fabnet_proto_drop_stalled(struct fabnet_comm *comm)
{
	struct fabnet_proto_dev *pd = PD(comm->dev);
	struct fabnet_req **pp = &pd->stall_head, *prev = NULL;

	while (*pp) {
		struct fabnet_req *r = *pp;
		if (r->comm == comm) {
			*pp = r->u.send.stall_next;
			r->u.send.stalled = 0;
			r->u.send.stall_next = NULL;
			if (comm->state == FABNET_FAILED && !r->failed)
				r->failed = ncclRemoteError; /* its writes never will be posted */
			continue;
		}
		prev = r;
		pp = &r->u.send.stall_next;
	}
	pd->stall_tail = prev;
}

static void write_done(struct fabnet_op *op, int err, const struct fi_cq_data_entry *e);

static struct fabnet_dev *rail_dev(struct fabnet_dev *dev, int k)
{
	return k ? dev->rails[k] : dev;
}

static uint64_t stripe_end(const struct fabnet_req *r, int s)
{
	uint64_t end = (uint64_t)(s + 1) * r->u.send.stripe;

	return end < r->u.send.size ? end : r->u.send.size;
}

void fabnet_proto_send_stop(struct fabnet_req *r)
{
	for (int s = 0; s < r->u.send.nstripes; s++)
		r->u.send.next[s] = stripe_end(r, s);
}

/* Posts the next chunks of a rendezvous send: one chunk per stripe in turn,
 * so that every rail is fed; at most writes_in_flight per stripe for this
 * send, and none on a rail that already has FABNET_RAIL_INFLIGHT bytes out
 * (the send waits on the stall list until a write completes). */
static void send_advance(struct fabnet_req *r)
{
	struct fabnet_comm *comm = r->comm;
	struct fabnet_dev *dev = comm->dev;
	struct fabnet_proto_dev *pd = PD(dev);
	const struct fabnet_config *cfg = fabnet_config();
	unsigned wif = cfg->writes_in_flight * r->u.send.nstripes;
	int blocked = 0, posted = 1;

	while (posted && !r->failed && !comm->closing && comm->state != FABNET_FAILED) {
		posted = 0;
		for (int s = 0; s < r->u.send.nstripes; s++) {
			uint64_t end = stripe_end(r, s), off = r->u.send.next[s];
			int k = (r->u.send.first_rail + s) % r->u.send.nrails;
			struct fabnet_dev *rd = rail_dev(dev, k);
			struct fabnet_op *op;

			if (off >= end)
				continue;
			if (rd->rail_bytes && rd->rail_bytes + r->u.send.chunk > cfg->rail_inflight) {
				blocked = 1;
				continue;
			}
			if (r->u.send.writes_posted - r->u.send.writes_done >= wif)
				return; /* our own write completions advance us */
			op = fabnet_pool_get(&pd->wops);
			if (!op) {
				stall(pd, r);
				return;
			}
			memset(op, 0, sizeof(*op));
			op->kind = FABNET_OP_WRITE;
			op->cb = write_done;
			op->owner = r;
			op->buf = r->u.send.data + off;
			op->len = end - off < r->u.send.chunk ? (size_t)(end - off) : r->u.send.chunk;
			op->desc = r->u.send.mr ? r->u.send.mr->mr[k]->desc : NULL;
			op->peer = comm->rail_peer[k];
			op->raddr = r->u.send.raddr[k] + off;
			op->rkey = r->u.send.rkey[k];
			op->imm = fabnet_imm_pack(comm->peer_id, (uint8_t)r->seq, r->u.send.idx);
			int rc = fabnet_proto_post_on(comm, rd, op);
			if (rc) {
				char why[256];
				fabnet_pool_put(&pd->wops, op);
				snprintf(why, sizeof(why), "posting an RMA write of send seq %u on %s "
					 "failed: %s (the receiver closed or died, or the link is down)",
					 r->seq, rd->name, fi_strerror(-rc));
				fabnet_proto_fail_comm(comm, why);
				r->failed = ncclRemoteError;
				return;
			}
			rd->rail_bytes += op->len;
			r->u.send.next[s] += op->len;
			r->u.send.writes_posted++;
			posted = 1;
		}
	}
	if (blocked)
		stall(pd, r);
}

/* Gives every waiting send one chance: those still short of a write op or of
 * room on their rails go back on the list. */
static void unstall(struct fabnet_proto_dev *pd)
{
	struct fabnet_req *r = pd->stall_head;

	if (!r || !pd->wops.nfree)
		return;
	pd->stall_head = pd->stall_tail = NULL;
	while (r) {
		struct fabnet_req *next = r->u.send.stall_next;
		r->u.send.stalled = 0;
		r->u.send.stall_next = NULL;
		send_advance(r);
		r = next;
	}
}

static void write_done(struct fabnet_op *op, int err, const struct fi_cq_data_entry *e)
{
	struct fabnet_req *r = op->owner;
	struct fabnet_comm *comm = r->comm;
	struct fabnet_proto_dev *pd = PD(comm->dev);

	op->dev->rail_bytes -= op->len;
	fabnet_pool_put(&pd->wops, op);
	r->u.send.writes_done++;
	/* We cancel writes only when closing: a provider that cancels them itself
	 * (tcp, when the connection drops) reports a failure like any other. */
	if (err && !comm->closing) {
		char why[160];
		snprintf(why, sizeof(why), "an RMA write of send seq %u failed: %s (the receiver "
			 "closed, died, or deregistered its buffer)", r->seq, fi_strerror(err));
		fabnet_proto_fail_comm(comm, why);
		r->failed = ncclRemoteError;
	} else if (err) {
		r->failed = ncclRemoteError;
	}
	send_advance(r);
	unstall(pd);
	req_release_abandoned(r);
	fabnet_proto_op_done(comm);
}

static void msg_sent(struct fabnet_op *op, int err, const struct fi_cq_data_entry *e)
{
	struct fabnet_req *r = op->owner;
	struct fabnet_comm *comm = r->comm;

	fabnet_dev_txbuf_put(op->dev, op->buf);
	op->buf = NULL;
	r->msg_pending = 0;
	if (err) {
		if (!comm->closing) {
			char why[160];
			snprintf(why, sizeof(why), "the %s of seq %u was not delivered: %s",
				 r->kind == FABNET_REQ_RECV ? "CTS" : "send message", r->seq,
				 fi_strerror(err));
			fabnet_proto_fail_comm(comm, why);
		}
		r->failed = ncclRemoteError;
	}
	req_release_abandoned(r);
	fabnet_proto_op_done(comm);
}

/* Sends buf (a bounce buffer of rail k) to the peer's rail k. */
static int post_msg(struct fabnet_req *r, int k, void *buf, size_t len)
{
	struct fabnet_comm *comm = r->comm;
	struct fabnet_dev *rd = rail_dev(comm->dev, k);
	struct fabnet_op *op = &r->msg_op;

	memset(op, 0, sizeof(*op));
	op->kind = FABNET_OP_SEND;
	op->cb = msg_sent;
	op->owner = r;
	op->buf = buf;
	op->len = len;
	op->desc = fabnet_dev_txbuf_desc(rd);
	op->peer = k ? comm->rail_peer[k] : comm->peer;
	if (fabnet_proto_post_on(comm, rd, op))
		return -1;
	r->msg_pending = 1;
	return 0;
}

/* ---- isend ------------------------------------------------------------------ */
static ncclResult_t comm_usable(struct fabnet_comm *comm, const char *call)
{
	if (comm->state == FABNET_FAILED) {
		FN_WARN("fabnet: %s on failed comm %u (%s)", call, comm->id, comm->dev->name);
		return ncclRemoteError;
	}
	if (comm->peer_closed && comm->seq >= comm->peer_final_seq) {
		FN_WARN("fabnet: %s on comm %u (%s): the peer closed its side after %u operations",
			call, comm->id, comm->dev->name, comm->peer_final_seq);
		return ncclRemoteError;
	}
	return ncclSuccess;
}

/* Cuts a rendezvous send into stripes over the first nr rails (proto.h):
 * one per rail when it is at least two minimum stripes long, else one on the
 * next rail in turn. Stripe boundaries fall on FABNET_STRIPE_ALIGN bytes. */
static void plan_stripes(struct fabnet_comm *comm, struct fabnet_req *r, int nr)
{
	const struct fabnet_config *cfg = fabnet_config();
	uint64_t size = r->u.send.size, chunk = cfg->chunk_size, stripe = size;
	unsigned ns = 1;

	for (int k = 0; k < nr; k++) {
		size_t mw = rail_dev(comm->dev, k)->max_write;
		if (!chunk || mw < chunk)
			chunk = mw;
	}
	if (nr > 1 && size >= 2 * cfg->min_stripe) {
		uint64_t align = cfg->stripe_align;
		ns = (unsigned)(size / cfg->min_stripe < (uint64_t)nr ? size / cfg->min_stripe : (uint64_t)nr);
		stripe = (size + ns - 1) / ns;
		stripe = (stripe + align - 1) / align * align;
		ns = (unsigned)((size + stripe - 1) / stripe);
	}
	r->u.send.nrails = (uint8_t)nr;
	r->u.send.nstripes = (uint8_t)ns;
	r->u.send.stripe = stripe;
	r->u.send.chunk = chunk;
	r->u.send.first_rail = (uint8_t)(comm->rr++ % (uint32_t)nr);
	r->u.send.nwrites = 0;
	for (unsigned s = 0; s < ns; s++) {
		uint64_t len = stripe_end(r, (int)s) - (uint64_t)s * stripe;
		r->u.send.next[s] = (uint64_t)s * stripe;
		r->u.send.nwrites += (uint32_t)((len + chunk - 1) / chunk);
	}
}

ncclResult_t fabnet_proto_isend(struct fabnet_comm *comm, void *data, uint64_t size, int tag,
				struct fabnet_rmr *mr, struct fabnet_req **out)
{
	struct fabnet_dev *dev = comm->dev;
	struct fabnet_cts_slot *cts = &comm->u.send.cts[comm->seq % FABNET_NSLOTS];
	struct fabnet_cts_entry *e;
	struct fabnet_req *r;
	int32_t tags[FABNET_MAX_RECVS];
	ncclResult_t res;
	int idx, eager, nr, k;
	void *buf;
	size_t len;

	*out = NULL;
	if (!cts->valid || cts->seq != comm->seq)
		fabnet_dev_progress(dev); /* the CTS may be in the completion queue */
	res = comm_usable(comm, "isend");
	if (res)
		return res;
	if (!cts->valid || cts->seq != comm->seq) {
		fabnet_proto_check_peer(comm); /* the receiver has not posted yet */
		return comm->state == FABNET_FAILED ? ncclRemoteError : ncclSuccess;
	}
	for (int i = 0; i < cts->n; i++)
		tags[i] = cts->e[i].tag;
	idx = fabnet_match_tag(cts->n, tags, cts->taken, tag);
	if (idx < 0) {
		/* Shared comms: each of NCCL's senders on this comm has its own tag and
		 * runs at its own pace, so this one may be a step ahead of the group the
		 * receiver posted (its tag already taken there, or not in it). It waits
		 * for a later group, as with net_ib: a NULL request, and NCCL retries. */
		return ncclSuccess;
	}
	e = &cts->e[idx];
	eager = size <= dev->eager_max && (size == 0 || (e->flags & FABNET_CTS_EAGER_OK));
	if (size > e->size) {
		FN_WARN("fabnet: isend of %llu bytes (tag %d) on comm %u (%s) but the receiver "
			"posted %llu bytes: refusing to truncate.", (unsigned long long)size, tag,
			comm->id, dev->name, (unsigned long long)e->size);
		return ncclInvalidUsage;
	}
	if (!eager) {
		if (!mr && dev->local_mr) {
			FN_WARN("fabnet: isend of %llu bytes needs a registered buffer (provider %s "
				"requires FI_MR_LOCAL): pass the mhandle from regMr",
				(unsigned long long)size, dev->prov_name);
			return ncclInvalidArgument;
		}
		if (mr && (mr->dev != dev || !fabnet_mr_covers(mr->mr[0], data, size))) {
			FN_WARN("fabnet: isend buffer %p+%llu lies outside its registration (or was "
				"registered through a comm on another device)", data,
				(unsigned long long)size);
			return ncclInvalidArgument;
		}
	}
	/* Small messages take the rails in turn; control stays on the first. */
	nr = comm->nrails < 1 + cts->nextra ? comm->nrails : 1 + cts->nextra;
	k = eager && nr > 1 ? (int)(comm->rr % nr) : 0;
	buf = fabnet_dev_txbuf_get(rail_dev(dev, k));
	if (!buf)
		return ncclSuccess;
	r = req_new(comm, FABNET_REQ_SEND);
	if (!r) {
		fabnet_dev_txbuf_put(rail_dev(dev, k), buf);
		return ncclSuccess;
	}
	r->seq = cts->seq;
	r->u.send.data = data;
	r->u.send.size = size;
	r->u.send.mr = mr;
	r->u.send.idx = (uint8_t)idx;
	if (eager) {
		comm->rr++;
		len = fabnet_msg_encode_eager(buf, dev->buf_size, comm->peer_id, comm->id, r->seq,
					      (uint8_t)idx, 0, size);
		if (size)
			memcpy((uint8_t *)buf + FABNET_MSG_HDR_SIZE + FABNET_EAGER_FIXED, data, size);
	} else {
		const struct fabnet_cts_rail *extra = comm->u.send.cts_rails ?
			comm->u.send.cts_rails + ((size_t)(cts->seq % FABNET_NSLOTS) * FABNET_MAX_RECVS +
						  (size_t)idx) * comm->u.send.cts_rails_max : NULL;
		r->u.send.raddr[0] = e->addr;
		r->u.send.rkey[0] = e->key;
		for (int i = 1; i < nr; i++) {
			r->u.send.raddr[i] = extra[i - 1].addr;
			r->u.send.rkey[i] = extra[i - 1].key;
		}
		plan_stripes(comm, r, nr);
		len = fabnet_msg_encode_fin(buf, dev->buf_size, comm->peer_id, comm->id, r->seq,
					    (uint8_t)idx, 0, r->u.send.nwrites, size);
	}
	if (!len || post_msg(r, k, buf, len)) {
		fabnet_dev_txbuf_put(rail_dev(dev, k), buf);
		req_free(r);
		return ncclSystemError;
	}
	cts->taken |= 1u << idx;
	if (cts->taken == (1u << cts->n) - 1) {
		cts->valid = 0;
		comm->seq++;
	}
	if (!eager)
		send_advance(r);
	*out = r;
	return ncclSuccess;
}

/* ---- irecv ------------------------------------------------------------------ */
ncclResult_t fabnet_proto_irecv(struct fabnet_comm *comm, int n, void **data,
				const uint64_t *sizes, const int *tags, struct fabnet_rmr **mrs,
				struct fabnet_req **out)
{
	struct fabnet_dev *dev = comm->dev;
	struct fabnet_cts_entry e[FABNET_MAX_RECVS];
	struct fabnet_cts_rail extra[FABNET_MAX_RECVS][FABNET_MAX_RAILS - 1];
	struct fabnet_req *r;
	uint32_t slot = comm->seq % FABNET_NSLOTS;
	ncclResult_t res;
	void *buf;
	size_t len;

	*out = NULL;
	res = comm_usable(comm, "irecv");
	if (res)
		return res;
	for (int i = 0; i < n; i++) {
		struct fabnet_rmr *mr = mrs ? mrs[i] : NULL;
		memset(&e[i], 0, sizeof(e[i]));
		memset(extra[i], 0, sizeof(extra[i]));
		if (!mr && sizes[i] > dev->eager_max) {
			FN_WARN("fabnet: irecv of %llu bytes without a registered buffer: pass the "
				"mhandle from regMr", (unsigned long long)sizes[i]);
			return ncclInvalidArgument;
		}
		if (mr && (mr->dev != dev || mr->nrails < comm->nrails ||
			   (sizes[i] && !fabnet_mr_covers(mr->mr[0], data[i], sizes[i])))) {
			FN_WARN("fabnet: irecv buffer %p+%llu lies outside its registration (or was "
				"registered through a comm on another device)", data[i],
				(unsigned long long)sizes[i]);
			return ncclInvalidArgument;
		}
		e[i].addr = mr ? fabnet_mr_remote_addr(mr->mr[0], data[i]) : 0;
		e[i].key = mr ? mr->mr[0]->key : 0;
		for (int k = 1; mr && k < comm->nrails; k++) {
			extra[i][k - 1].addr = fabnet_mr_remote_addr(mr->mr[k], data[i]);
			extra[i][k - 1].key = mr->mr[k]->key;
		}
		e[i].size = sizes[i];
		e[i].tag = tags[i];
		e[i].flags = !mr || mr->type == NCCL_PTR_HOST ? FABNET_CTS_EAGER_OK : 0;
	}
	/* Progress only when short of something: it frees bounce buffers. */
	if (comm->u.recv.slot[slot]) {
		fabnet_dev_progress(dev);
		return ncclSuccess; /* 32 receives in flight: retry later */
	}
	buf = fabnet_dev_txbuf_get(dev);
	if (!buf) {
		fabnet_dev_progress(dev);
		return ncclSuccess;
	}
	r = req_new(comm, FABNET_REQ_RECV);
	if (!r) {
		fabnet_dev_txbuf_put(dev, buf);
		return ncclSuccess;
	}
	r->seq = comm->seq;
	r->u.recv.n = n;
	for (int i = 0; i < n; i++) {
		r->u.recv.e[i].data = data[i];
		r->u.recv.e[i].size = sizes[i];
		r->u.recv.e[i].mr = mrs ? mrs[i] : NULL;
		r->u.recv.e[i].tag = tags[i];
	}
	len = fabnet_msg_encode_cts_rails(buf, dev->buf_size, comm->peer_id, comm->id, r->seq,
					  (uint8_t)n, e, (uint8_t)(comm->nrails - 1),
					  (const struct fabnet_cts_rail(*)[FABNET_MAX_RAILS - 1])extra);
	/* Claim the slot first: the sender's data may arrive before our own CTS
	 * completion is reported. */
	comm->u.recv.slot[slot] = r;
	if (!len || post_msg(r, 0, buf, len)) {
		comm->u.recv.slot[slot] = NULL;
		fabnet_dev_txbuf_put(dev, buf);
		req_free(r);
		return ncclSystemError;
	}
	comm->seq++;
	*out = r;
	return ncclSuccess;
}

/* ---- incoming data ------------------------------------------------------------ */
static struct fabnet_req *recv_target(struct fabnet_dev *dev, uint32_t comm_id, uint32_t src_id,
				      int check_src, uint32_t seq, int seq_bits, uint8_t idx,
				      const char *what)
{
	struct fabnet_comm *c = fabnet_proto_lookup(dev, comm_id);
	struct fabnet_req *r;
	uint32_t mask = seq_bits >= 32 ? 0xffffffffu : (1u << seq_bits) - 1;

	if (!c || c->kind != FABNET_RECV || c->closing) {
		FN_INFO(NCCL_NET, "fabnet: %s for unknown or closed comm %u on %s dropped", what,
			comm_id, dev->name);
		return NULL;
	}
	if (check_src && c->peer_id != src_id) {
		FN_WARN("fabnet: %s for comm %u on %s claims to come from comm %u, not its peer "
			"%u: dropped", what, comm_id, dev->name, src_id, c->peer_id);
		return NULL;
	}
	r = c->u.recv.slot[seq % FABNET_NSLOTS];
	if (!r || (r->seq & mask) != (seq & mask)) {
		FN_WARN("fabnet: %s for comm %u on %s names receive %u, which is not posted "
			"(stale or forged): dropped", what, comm_id, dev->name, seq);
		return NULL;
	}
	if (idx >= r->u.recv.n) {
		FN_WARN("fabnet: %s for comm %u on %s names buffer %u of a group of %d: dropped",
			what, comm_id, dev->name, idx, r->u.recv.n);
		return NULL;
	}
	if (r->u.recv.e[idx].gone) {
		FN_INFO(NCCL_NET, "fabnet: %s for comm %u on %s names a buffer deregistered while "
			"its receive was posted (teardown): dropped", what, comm_id, dev->name);
		return NULL;
	}
	if (r->u.recv.e[idx].done) {
		FN_WARN("fabnet: %s for comm %u on %s repeats a completed buffer: dropped", what,
			comm_id, dev->name);
		return NULL;
	}
	return r;
}

static void entry_done(struct fabnet_req *r, struct fabnet_recv_entry *e)
{
	e->done = 1;
	r->u.recv.ndone++;
}

static void entry_fail(struct fabnet_req *r, struct fabnet_recv_entry *e, const char *why)
{
	FN_WARN("fabnet: receive seq %u on comm %u (%s) failed: %s", r->seq, r->comm->id,
		r->comm->dev->name, why);
	r->failed = ncclRemoteError;
	entry_done(r, e);
}

static void on_cts(struct fabnet_dev *dev, const struct fabnet_msg *m)
{
	struct fabnet_comm *c = fabnet_proto_lookup(dev, m->dst_id);
	struct fabnet_cts_slot *s;

	if (!c || c->kind != FABNET_SEND || c->closing || c->state == FABNET_FAILED)
		return;
	if (c->peer_id && c->peer_id != m->src_id) {
		FN_WARN("fabnet: CTS for comm %u on %s from comm %u, not its peer %u: dropped",
			c->id, dev->name, m->src_id, c->peer_id);
		return;
	}
	if (m->src_id > FABNET_MAX_COMMS || m->seq - c->seq >= FABNET_NSLOTS) {
		FN_WARN("fabnet: CTS seq %u for comm %u on %s is outside the window [%u, %u): "
			"dropped", m->seq, c->id, dev->name, c->seq, c->seq + FABNET_NSLOTS);
		return;
	}
	s = &c->u.send.cts[m->seq % FABNET_NSLOTS];
	if (s->valid) {
		fabnet_proto_fail_comm(c, "the receiver reused a receive slot still in use");
		return;
	}
	/* The ACK may still be on its way: the first CTS tells us the peer. */
	if (!c->peer_id)
		c->peer_id = (uint16_t)m->src_id;
	s->valid = 1;
	s->n = m->u.cts.n;
	s->seq = m->seq;
	s->taken = 0;
	memcpy(s->e, m->u.cts.e, sizeof(s->e[0]) * s->n);
	s->nextra = m->u.cts.nextra < c->u.send.cts_rails_max ? m->u.cts.nextra
							       : c->u.send.cts_rails_max;
	for (int i = 0; i < s->n && s->nextra; i++)
		memcpy(c->u.send.cts_rails + ((size_t)(m->seq % FABNET_NSLOTS) * FABNET_MAX_RECVS +
					      (size_t)i) * c->u.send.cts_rails_max,
		       m->u.cts.rail[i], sizeof(m->u.cts.rail[i][0]) * s->nextra);
}

static void on_eager(struct fabnet_dev *dev, const struct fabnet_msg *m)
{
	struct fabnet_req *r = recv_target(dev, m->dst_id, m->src_id, 1, m->seq, 32,
					   m->u.eager.idx, "EAGER");
	struct fabnet_recv_entry *e;

	if (!r)
		return;
	e = &r->u.recv.e[m->u.eager.idx];
	if (e->fin_seen || e->writes_seen) {
		entry_fail(r, e, "the sender mixed an eager message with RMA writes");
		return;
	}
	if (m->u.eager.size > e->size) {
		entry_fail(r, e, "the sender sent more bytes than the buffer holds");
		return;
	}
	if (m->u.eager.size && e->mr && e->mr->type != NCCL_PTR_HOST) {
		/* The CTS did not allow inline data: the buffer may be device memory. */
		entry_fail(r, e, "the sender sent inline data to a buffer that takes RMA only");
		return;
	}
	if (m->u.eager.size)
		memcpy(e->data, m->u.eager.payload, m->u.eager.size);
	e->got = m->u.eager.size;
	entry_done(r, e);
}

static void on_fin(struct fabnet_dev *dev, const struct fabnet_msg *m)
{
	struct fabnet_req *r = recv_target(dev, m->dst_id, m->src_id, 1, m->seq, 32, m->u.fin.idx,
					   "FIN");
	struct fabnet_recv_entry *e;

	if (!r)
		return;
	e = &r->u.recv.e[m->u.fin.idx];
	if (e->fin_seen) {
		entry_fail(r, e, "duplicate FIN");
		return;
	}
	if (m->u.fin.flags & FABNET_FIN_ERROR) {
		entry_fail(r, e, "the sender reported an error for this buffer");
		return;
	}
	if (m->u.fin.size > e->size) {
		entry_fail(r, e, "the sender claims more bytes than the buffer holds");
		return;
	}
	e->fin_seen = 1;
	e->got = m->u.fin.size;
	e->writes_expected = m->u.fin.nwrites;
	if (e->writes_seen > e->writes_expected)
		entry_fail(r, e, "more writes landed than the sender announced");
	else if (e->writes_seen == e->writes_expected)
		entry_done(r, e);
}

void fabnet_proto_on_imm(struct fabnet_dev *dev, uint64_t data)
{
	struct fabnet_imm imm;
	const char *why = fabnet_imm_unpack(data, &imm);
	struct fabnet_req *r;
	struct fabnet_recv_entry *e;

	if (why) {
		FN_WARN("fabnet: dropped immediate data 0x%llx on %s: %s",
			(unsigned long long)data, dev->name, why);
		return;
	}
	r = recv_target(dev, imm.comm_id, 0, 0, imm.seq, 8, imm.idx, "RMA write");
	if (!r)
		return;
	e = &r->u.recv.e[imm.idx];
	if (!e->mr) {
		entry_fail(r, e, "an RMA write landed in a buffer posted without registration");
		return;
	}
	e->writes_seen++;
	if (e->fin_seen) {
		if (e->writes_seen > e->writes_expected)
			entry_fail(r, e, "more writes landed than the sender announced");
		else if (e->writes_seen == e->writes_expected)
			entry_done(r, e);
	}
}

void fabnet_proto_xfer_msg(struct fabnet_dev *dev, const struct fabnet_msg *m)
{
	switch (m->type) {
	case FABNET_MSG_CTS:
		on_cts(dev, m);
		break;
	case FABNET_MSG_EAGER:
		on_eager(dev, m);
		break;
	case FABNET_MSG_FIN:
		on_fin(dev, m);
		break;
	default:
		break;
	}
}

/* ---- flush ------------------------------------------------------------------- */
static int flush_setup(struct fabnet_dev *dev, struct fabnet_proto_dev *pd)
{
	if (pd->flush_ready)
		return 0;
	if (fabnet_dev_peer(dev, dev->addr, dev->addrlen, &pd->self))
		return -1;
	if (dev->local_mr && fabnet_mr_reg(dev, pd->flush_sink, sizeof(pd->flush_sink),
					   NCCL_PTR_HOST, -1, 0, &pd->flush_mr))
		return -1;
	pd->flush_ready = 1;
	return 0;
}

static void flush_done(struct fabnet_op *op, int err, const struct fi_cq_data_entry *e)
{
	struct fabnet_req *r = op->owner;

	r->msg_pending = 0;
	if (err) {
		if (err != FI_ECANCELED && !r->comm->closing)
			FN_WARN("fabnet: flush read on comm %u (%s) failed: %s", r->comm->id,
				r->comm->dev->name, fi_strerror(err));
		r->failed = ncclSystemError;
	}
	req_release_abandoned(r);
	fabnet_proto_op_done(r->comm);
}

ncclResult_t fabnet_proto_iflush(struct fabnet_comm *comm, int n, void **data, const int *sizes,
				 struct fabnet_rmr **mrs, struct fabnet_req **out)
{
	struct fabnet_dev *dev = comm->dev;
	struct fabnet_proto_dev *pd = PD(dev);
	int mode = fabnet_config()->gdr_flush, last = -1;
	struct fabnet_op *op;
	struct fabnet_req *r;

	*out = NULL;
	if (mode == FABNET_FLUSH_OFF)
		return ncclSuccess;
	for (int i = 0; i < n; i++)
		if (mrs[i] && sizes[i] > 0 && (mrs[i]->type != NCCL_PTR_HOST || mode == FABNET_FLUSH_ALWAYS))
			last = i;
	if (last < 0)
		return ncclSuccess; /* host memory is coherent: nothing to flush */
	if (mode == FABNET_FLUSH_CUDA && !pd->cuda_flush_failed) {
		if (fabnet_cuda_flush_rdma_writes() == 0)
			return ncclSuccess;
		pd->cuda_flush_failed = 1;
		FN_WARN("fabnet: FABNET_GDR_FLUSH=cuda but cuFlushGPUDirectRDMAWrites is unavailable; "
			"flushing with a loopback read instead");
	}
	if (flush_setup(dev, pd)) {
		FN_WARN("fabnet: iflush on %s: could not set up the loopback read", dev->name);
		return ncclSystemError;
	}
	r = req_new(comm, FABNET_REQ_FLUSH);
	if (!r) {
		/* Never NULL here: NCCL would read it as "nothing to flush". */
		FN_WARN("fabnet: iflush on comm %u (%s): all %d flush requests are in use (NCCL "
			"tests each flush before the next); failing rather than skipping the flush",
			comm->id, dev->name, FABNET_FLUSH_REQS);
		return ncclInternalError;
	}
	op = &r->msg_op;
	memset(op, 0, sizeof(*op));
	op->kind = FABNET_OP_READ;
	op->cb = flush_done;
	op->owner = r;
	op->buf = pd->flush_sink;
	op->len = sizes[last] < 4 ? (size_t)sizes[last] : 4;
	op->desc = pd->flush_mr ? pd->flush_mr->desc : NULL;
	op->peer = pd->self;
	op->raddr = fabnet_mr_remote_addr(mrs[last]->mr[0], data[last]);
	op->rkey = mrs[last]->mr[0]->key;
	if (fabnet_proto_post(comm, op)) {
		req_free(r);
		return ncclSystemError;
	}
	r->msg_pending = 1;
	*out = r;
	return ncclSuccess;
}

/* ---- deregistration ------------------------------------------------------------ */
/* NCCL deregisters and frees its buffers, then closes their comms, and does so
 * with requests in flight on abort. Whatever still names rmr forgets it: a
 * receive entry is marked gone (a late EAGER or write for it is dropped, close
 * does not wait for it), a send posts no more writes from the buffer and
 * fails. Writes the provider already holds are its own: see docs/memory.md. */
static void forget_in_recv(struct fabnet_req *r, const struct fabnet_rmr *rmr)
{
	for (int i = 0; i < r->u.recv.n; i++) {
		struct fabnet_recv_entry *e = &r->u.recv.e[i];
		if (e->mr != rmr)
			continue;
		e->mr = NULL;
		e->data = NULL;
		e->gone = 1;
		if (!e->done) {
			r->failed = ncclRemoteError;
			entry_done(r, e);
		}
	}
}

static void forget_in_send(struct fabnet_req *r, const struct fabnet_rmr *rmr)
{
	if (r->u.send.mr != rmr)
		return;
	if (r->u.send.writes_posted < r->u.send.nwrites && !r->failed)
		r->failed = ncclRemoteError;
	if (r->u.send.stalled)
		unstall_one(PD(r->comm->dev), r);
	fabnet_proto_send_stop(r);
	r->u.send.mr = NULL;
	r->u.send.data = NULL;
}

void fabnet_proto_forget_mr(struct fabnet_rmr *rmr)
{
	struct fabnet_proto_dev *pd = PD(rmr->dev);

	for (uint32_t id = 1; id < pd->cap; id++) {
		struct fabnet_comm *c = pd->table[id];
		if (!c || c->kind == FABNET_LISTEN)
			continue;
		for (uint32_t i = 0; i < c->reqs.allocated; i++) {
			struct fabnet_req *r;
			if (!c->reqs.in_use[i])
				continue;
			r = fabnet_pool_at(&c->reqs, i);
			if (r->kind == FABNET_REQ_RECV)
				forget_in_recv(r, rmr);
			else if (r->kind == FABNET_REQ_SEND)
				forget_in_send(r, rmr);
		}
	}
}

/* ---- test ---------------------------------------------------------------------- */
static int req_finished(struct fabnet_req *r)
{
	struct fabnet_comm *c = r->comm;

	/* A failed comm's requests end now, even if the provider still holds one
	 * of their operations (a write to a dead peer may never complete). */
	if (c->state == FABNET_FAILED && req_ops_pending(r)) {
		if (!r->failed)
			r->failed = ncclRemoteError;
		return 1;
	}
	if (r->msg_pending)
		return 0;
	if (r->kind == FABNET_REQ_FLUSH)
		return 1;
	if (r->kind == FABNET_REQ_SEND && c->state == FABNET_FAILED && !r->failed &&
	    r->u.send.writes_posted < r->u.send.nwrites)
		r->failed = ncclRemoteError; /* what is left will never be posted */
	if (r->kind == FABNET_REQ_SEND)
		return r->u.send.writes_done == r->u.send.writes_posted &&
		       (r->failed || r->u.send.writes_posted == r->u.send.nwrites);
	if (r->u.recv.ndone == r->u.recv.n)
		return 1;
	if (!r->failed && (c->state == FABNET_FAILED ||
			   (c->peer_closed && r->seq >= c->peer_final_seq))) {
		FN_WARN("fabnet: receive seq %u on comm %u (%s) cannot complete: the peer %s", r->seq,
			c->id, c->dev->name, c->state == FABNET_FAILED ? "failed" : "closed");
		r->failed = ncclRemoteError;
	}
	return r->failed != 0;
}

ncclResult_t fabnet_proto_test(struct fabnet_req *r, int *done, uint64_t *sizes)
{
	struct fabnet_comm *c = r->comm;
	ncclResult_t res;
	int rc;

	*done = 0;
	rc = fabnet_dev_progress(c->dev);
	if (rc)
		fabnet_proto_fail_comm(c, "the completion queue failed");
	if (!req_finished(r)) {
		fabnet_proto_check_peer(c);
		if (c->state == FABNET_FAILED && req_finished(r))
			goto finished;
		return ncclSuccess;
	}
finished:
	*done = 1;
	res = r->failed;
	if (sizes) {
		if (r->kind == FABNET_REQ_SEND)
			sizes[0] = r->u.send.size;
		else if (r->kind == FABNET_REQ_RECV)
			for (int i = 0; i < r->u.recv.n; i++)
				sizes[i] = r->u.recv.e[i].got;
	}
	if (r->kind == FABNET_REQ_RECV)
		c->u.recv.slot[r->seq % FABNET_NSLOTS] = NULL;
	if (req_ops_pending(r))
		r->abandoned = 1;
	else
		req_free(r);
	return res;
}
