/*
 * Write scheduling for rendezvous sends (proto.h, "Rails"): stripes over the
 * rails both sides have, chunks of FABNET_CHUNK_SIZE, at most
 * FABNET_RAIL_INFLIGHT bytes out per rail, and what a write's completion
 * lets go next.
 */
#include <config.h>

#include <stdio.h>
#include <string.h>

#include <rdma/fi_errno.h>

#include "core/config.h"
#include "core/log.h"
#include "protocol/internal.h"

static void write_done(struct fabnet_op *op, int err, const struct fi_cq_data_entry *e);

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
void fabnet_sched_advance(struct fabnet_req *r)
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
			struct fabnet_dev *rd = fabnet_rail(dev, k);
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
				fabnet_stall_add(pd, r);
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
			op->imm = fabnet_imm_pack(comm->peer_id, (uint8_t)r->seq, r->u.send.idx,
						  (uint8_t)comm->peer_token);
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
		fabnet_stall_add(pd, r);
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
		fabnet_sched_advance(r);
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
	if (r->u.send.revoked && r->u.send.writes_done == r->u.send.writes_posted) {
		r->u.send.revoked = 0; /* the last write into the withdrawn receive is done */
		if (!comm->closing && comm->state == FABNET_READY)
			fabnet_comm_send_revoke(comm, 1, r->seq);
	}
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
	fabnet_sched_advance(r);
	unstall(pd);
	fabnet_req_release_abandoned(r);
	fabnet_proto_op_done(comm);
}

/* Writes of r that wait in a rail's retry queue (the provider said EAGAIN)
 * are taken back: once its buffer is deregistered and freed, re-posting one
 * would have the provider read freed memory. Accounted as failed writes; the
 * comm's zombie reaping is left to the caller. */
void fabnet_sched_cancel_queued(struct fabnet_req *r)
{
	struct fabnet_comm *comm = r->comm;
	struct fabnet_dev *dev = comm->dev;
	struct fabnet_proto_dev *pd = PD(dev);

	for (int k = 0; k < (dev->nrails > 1 ? dev->nrails : 1); k++) {
		struct fabnet_dev *rd = fabnet_rail(dev, k);
		for (struct fabnet_op *op = rd->retry_head, *next; op; op = next) {
			next = op->next;
			if (op->cb != write_done || op->owner != r)
				continue;
			fabnet_dev_unqueue(rd, op);
			rd->rail_bytes -= op->len;
			fabnet_pool_put(&pd->wops, op);
			r->u.send.writes_done++;
			r->failed = ncclRemoteError;
			if (comm->ops_inflight)
				comm->ops_inflight--;
		}
	}
	fabnet_req_release_abandoned(r);
}

/* Cuts a rendezvous send into stripes over the first nr rails (proto.h):
 * one per rail when it is at least two minimum stripes long, else one on the
 * next rail in turn. Stripe boundaries fall on FABNET_STRIPE_ALIGN bytes. */
void fabnet_sched_plan(struct fabnet_comm *comm, struct fabnet_req *r, int nr)
{
	const struct fabnet_config *cfg = fabnet_config();
	uint64_t size = r->u.send.size, chunk = cfg->chunk_size, stripe = size;
	unsigned ns = 1;

	for (int k = 0; k < nr; k++) {
		size_t mw = fabnet_rail(comm->dev, k)->max_write;
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
