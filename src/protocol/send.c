/*
 * Sends: isend takes the CTS of its sequence, matches its tag among the
 * group's entries and goes eager or rendezvous; the CTS handler keeps what
 * the receiver offers until a send takes it.
 */
#include <config.h>

#include <string.h>

#include "core/config.h"
#include "core/log.h"
#include "core/match.h"
#include "protocol/internal.h"

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
	res = fabnet_comm_usable(comm, "isend");
	if (res)
		return res;
	if (cts->revoked && cts->seq == comm->seq) {
		FN_WARN("fabnet: isend on comm %u (%s): the receiver withdrew receive %u (its "
			"buffer was deregistered, as NCCL does when it aborts)", comm->id, dev->name,
			comm->seq);
		return ncclRemoteError;
	}
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
	/* Inline data is copied by the CPU on both sides: only from host memory
	 * (or an unregistered buffer) and into a buffer the CTS says takes it. */
	eager = size <= comm->eager_max && (size == 0 || ((e->flags & FABNET_CTS_EAGER_OK) &&
							  (!mr || mr->type == NCCL_PTR_HOST)));
	if (size > e->size) {
		FN_WARN("fabnet: isend of %llu bytes (tag %d) on comm %u (%s) but the receiver "
			"posted %llu bytes: refusing to truncate.", (unsigned long long)size, tag,
			comm->id, dev->name, (unsigned long long)e->size);
		return ncclInvalidUsage;
	}
	if (!eager) {
		if (e->flags & FABNET_CTS_NO_RMA) {
			FN_WARN("fabnet: isend of %llu bytes (tag %d) on comm %u (%s) from %s memory "
				"into a receive buffer the peer posted without registration: only "
				"host memory can go inline. Register the receive buffer (regMr).",
				(unsigned long long)size, tag, comm->id, dev->name,
				mr && mr->type != NCCL_PTR_HOST ? "accelerator" : "registered");
			return ncclInvalidUsage;
		}
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
	buf = fabnet_dev_txbuf_get(fabnet_rail(dev, k));
	if (!buf)
		return ncclSuccess;
	r = fabnet_req_new(comm, FABNET_REQ_SEND);
	if (!r) {
		fabnet_dev_txbuf_put(fabnet_rail(dev, k), buf);
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
		fabnet_sched_plan(comm, r, nr);
		len = fabnet_msg_encode_fin(buf, dev->buf_size, comm->peer_id, comm->id, r->seq,
					    (uint8_t)idx, 0, r->u.send.nwrites, size);
	}
	if (!len || fabnet_post_msg(r, k, buf, len)) {
		fabnet_dev_txbuf_put(fabnet_rail(dev, k), buf);
		fabnet_req_free(r);
		return ncclSystemError;
	}
	cts->taken |= 1u << idx;
	if (cts->taken == (1u << cts->n) - 1) {
		cts->valid = 0;
		comm->seq++;
	}
	if (!eager)
		fabnet_sched_advance(r);
	*out = r;
	return ncclSuccess;
}

void fabnet_send_on_cts(struct fabnet_dev *dev, const struct fabnet_msg *m)
{
	struct fabnet_comm *c = fabnet_proto_lookup(dev, m->dst_id);
	struct fabnet_cts_slot *s;

	if (!c || c->kind != FABNET_SEND || c->closing || c->state == FABNET_FAILED)
		return;
	if (c->peer_id && c->peer_id != m->src_id) {
		if (fabnet_drop_log_ok(dev))
			FN_WARN("fabnet: CTS for comm %u on %s from comm %u, not its peer %u: dropped",
				c->id, dev->name, m->src_id, c->peer_id);
		return;
	}
	if (m->src_id > FABNET_MAX_COMMS || m->seq - c->seq >= FABNET_NSLOTS) {
		if (fabnet_drop_log_ok(dev))
			FN_WARN("fabnet: CTS seq %u for comm %u on %s is outside the window [%u, %u): "
				"dropped", m->seq, c->id, dev->name, c->seq, c->seq + FABNET_NSLOTS);
		return;
	}
	s = &c->u.send.cts[m->seq % FABNET_NSLOTS];
	if (s->revoked && s->seq == m->seq)
		return; /* withdrawn before its CTS came (messages pass each other on EFA) */
	s->revoked = 0;
	if (s->valid) {
		fabnet_proto_fail_comm(c, "the receiver reused a receive slot still in use");
		return;
	}
	/* The ACK may still be on its way: the CTS is kept, and dropped when the
	 * ACK (which proves itself with the listener's nonce) names another peer.
	 * A CTS alone must not choose the peer: a forger would lock the genuine
	 * ACK out and receive our writes. */
	s->src = (uint16_t)m->src_id;
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

/* The receiver withdraws receive seq before deregistering its buffers: sends
 * not started for it fail, sends under way post no more writes, and REVOKED
 * goes back once no write of ours into it is left (sched.c, write_done). */
void fabnet_send_on_revoke(struct fabnet_dev *dev, const struct fabnet_msg *m)
{
	struct fabnet_comm *c = fabnet_proto_lookup(dev, m->dst_id);
	struct fabnet_cts_slot *s;
	int waiting = 0;

	if (!c || c->kind != FABNET_SEND || c->closing || c->state != FABNET_READY ||
	    c->peer_id != m->src_id || m->seq - c->seq + FABNET_NSLOTS > 2 * FABNET_NSLOTS)
		return; /* not ours, or far outside the window: nothing of ours can be there */
	s = &c->u.send.cts[m->seq % FABNET_NSLOTS];
	if (!s->valid || s->seq == m->seq) {
		s->revoked = 1;
		s->seq = m->seq;
	}
	for (uint32_t i = 0; i < c->reqs.allocated; i++) {
		struct fabnet_req *r;
		if (!c->reqs.in_use[i])
			continue;
		r = fabnet_pool_at(&c->reqs, i);
		if (r->kind != FABNET_REQ_SEND || r->seq != m->seq)
			continue;
		if (r->u.send.writes_done < r->u.send.nwrites && !r->failed)
			r->failed = ncclRemoteError;
		if (r->u.send.stalled)
			fabnet_stall_remove(PD(dev), r);
		fabnet_proto_send_stop(r); /* writes queued for a retry still go, and count */
		if (r->u.send.writes_posted != r->u.send.writes_done) {
			r->u.send.revoked = 1;
			waiting++;
		}
	}
	FN_INFO(NCCL_NET, "fabnet: the receiver withdrew receive %u of comm %u on %s (%d sends "
		"with writes out)", m->seq, c->id, dev->name, waiting);
	if (!waiting)
		fabnet_comm_send_revoke(c, 1, m->seq);
}

void fabnet_send_forget(struct fabnet_req *r, const struct fabnet_rmr *rmr)
{
	if (r->u.send.mr != rmr)
		return;
	if (r->u.send.writes_posted < r->u.send.nwrites && !r->failed)
		r->failed = ncclRemoteError;
	if (r->u.send.stalled)
		fabnet_stall_remove(PD(r->comm->dev), r);
	fabnet_proto_send_stop(r);
	r->u.send.mr = NULL;
	r->u.send.data = NULL;
	r->u.send.draining = FABNET_DRAIN_WAIT; /* deregMr waits for the writes out */
	fabnet_sched_cancel_queued(r); /* may free r, if NCCL already let it go */
}
