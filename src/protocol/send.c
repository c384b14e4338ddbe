/*
 * Sends: isend takes the CTS of its sequence, matches its tag among the
 * group's entries and goes eager or rendezvous; the CTS handler keeps what
 * the receiver offers until a send takes it.
 */
#include <config.h>

#include <string.h>

#include "core/config.h"
#include "core/log.h"
#include "protocol/internal.h"

/* The CTS entry that pairs with the send (tag, tagseq): the slot, or -1. */
static int find_cts(struct fabnet_comm *comm, int32_t tag, uint32_t tagseq, int *idx)
{
	uint32_t k = tagseq & FABNET_TAGSEQ_MASK, start = comm->u.send.cts_hint;
	uint32_t v = comm->u.send.cts_valid;

	/* From the slot after the last one taken: in order, the next send's
	 * entry is mostly there, and a scan of every slot on each poll of a
	 * waiting isend was a measurable part of a small send. */
	v = start ? v >> start | v << (FABNET_NSLOTS - start) : v;
	for (; v; v &= v - 1) {
		int sl = (int)((__builtin_ctz(v) + start) % FABNET_NSLOTS);
		struct fabnet_cts_slot *s = &comm->u.send.cts[sl];
		for (int i = 0; i < s->n; i++)
			if (!(s->taken & (1u << i)) && s->e[i].tag == tag && s->e[i].tagseq == k) {
				*idx = i;
				return sl;
			}
	}
	return -1;
}

/* Before its CTS: a small send from host memory, under a credit (early.c). */
static int may_go_early(const struct fabnet_comm *comm, uint64_t size, const struct fabnet_rmr *mr)
{
	return comm->credits && size <= comm->eager_max && (!mr || mr->type == NCCL_PTR_HOST) &&
	       comm->state == FABNET_READY && !comm->peer_closed;
}

static ncclResult_t send_early(struct fabnet_comm *comm, void *data, uint64_t size,
			       struct fabnet_tag_count *t, int32_t tag, struct fabnet_rmr *mr,
			       struct fabnet_req **out)
{
	struct fabnet_dev *dev = comm->dev;
	int k = comm->nrails > 1 ? (int)(comm->rr % comm->nrails) : 0;
	struct fabnet_req *r;
	void *buf = fabnet_dev_txbuf_get(fabnet_rail(dev, k));
	size_t len;

	if (!buf)
		return ncclSuccess;
	r = fabnet_req_new(comm, FABNET_REQ_SEND);
	if (!r) {
		fabnet_dev_txbuf_put(fabnet_rail(dev, k), buf);
		return ncclSuccess;
	}
	r->u.send.data = data;
	r->u.send.size = size;
	r->u.send.mr = mr;
	r->u.send.tag = tag;
	r->u.send.tagseq = t->n;
	r->u.send.early = 1;
	len = fabnet_msg_encode_early(buf, dev->buf_size, comm->peer_id, comm->id, tag, t->n, size);
	if (len && size)
		memcpy((uint8_t *)buf + FABNET_MSG_HDR_SIZE + FABNET_EAGER_FIXED, data, size);
	if (!len || fabnet_post_msg(r, k, buf, len)) {
		fabnet_dev_txbuf_put(fabnet_rail(dev, k), buf);
		fabnet_req_free(r);
		return ncclSystemError;
	}
	comm->rr++;
	comm->credits--;
	t->n++;
	*out = r;
	return ncclSuccess;
}

/* Why a send may not go with CTS entry e (ncclSuccess: it may). */
static ncclResult_t refused(struct fabnet_comm *comm, const struct fabnet_cts_entry *e, int eager,
			    void *data, uint64_t size, int tag, const struct fabnet_rmr *mr)
{
	struct fabnet_dev *dev = comm->dev;

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
	return ncclSuccess;
}

/* A small send that cannot go early (accelerator memory, or no credit
 * left) asks for its CTS, once: a receive whose entries are all small and
 * in host memory sends its CTS only when asked (recv.c, may_withhold). */
static void ask_for_cts(struct fabnet_comm *comm, struct fabnet_tag_count *t)
{
	struct fabnet_dev *dev = comm->dev;
	void *buf;
	size_t len;

	if (t->rts_sent && t->rts_for == t->n)
		return;
	buf = fabnet_dev_txbuf_get(dev);
	if (!buf)
		return; /* the next isend asks */
	len = fabnet_msg_encode_rts(buf, dev->buf_size, comm->peer_id, comm->id, t->tag, t->n);
	if (len)
		fabnet_msg_set_token(buf, comm->peer_token);
	if (!len || fabnet_ctl_send_loose(dev, comm->peer, buf, len)) {
		fabnet_dev_txbuf_put(dev, buf);
		return;
	}
	t->rts_sent = 1;
	t->rts_for = t->n;
}

/* A send with the CTS entry idx of slot sl: inline into the posted buffer
 * (small, host memory both sides) or by RMA writes and a FIN. */
static ncclResult_t send_with_cts(struct fabnet_comm *comm, int sl, int idx, void *data,
				  uint64_t size, struct fabnet_tag_count *t, int tag,
				  struct fabnet_rmr *mr, struct fabnet_req **out)
{
	struct fabnet_dev *dev = comm->dev;
	struct fabnet_cts_slot *cts = &comm->u.send.cts[sl];
	struct fabnet_cts_entry *e = &cts->e[idx];
	struct fabnet_req *r;
	ncclResult_t res;
	int eager, nr, k;
	void *buf;
	size_t len;

	/* Inline data is copied by the CPU on both sides: only from host memory
	 * (or an unregistered buffer) and into a buffer the CTS says takes it. */
	eager = size <= comm->eager_max && (size == 0 || ((e->flags & FABNET_CTS_EAGER_OK) &&
							  (!mr || mr->type == NCCL_PTR_HOST)));
	res = refused(comm, e, eager, data, size, tag, mr);
	if (res)
		return res;
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
	r->u.send.tag = tag;
	r->u.send.tagseq = t->n;
	if (eager) {
		comm->rr++;
		len = fabnet_msg_encode_eager(buf, dev->buf_size, comm->peer_id, comm->id, r->seq,
					      (uint8_t)idx, 0, size);
		if (size)
			memcpy((uint8_t *)buf + FABNET_MSG_HDR_SIZE + FABNET_EAGER_FIXED, data, size);
	} else {
		const struct fabnet_cts_rail *extra = comm->u.send.cts_rails ?
			comm->u.send.cts_rails + ((size_t)sl * FABNET_MAX_RECVS + (size_t)idx) *
						 comm->u.send.cts_rails_max : NULL;
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
	t->n++;
	cts->taken |= 1u << idx;
	if (cts->taken == (1u << cts->n) - 1) {
		cts->valid = 0;
		comm->u.send.cts_valid &= ~(1u << sl);
		comm->u.send.cts_hint = (uint8_t)((sl + 1) % FABNET_NSLOTS);
	}
	if (!eager)
		fabnet_sched_advance(r);
	*out = r;
	return ncclSuccess;
}

/* The k-th send with a tag pairs with the receiver's k-th entry with it
 * (tags.c): with that entry's CTS when it is here, else early when small,
 * else later (a NULL request; NCCL retries). */
ncclResult_t fabnet_proto_isend(struct fabnet_comm *comm, void *data, uint64_t size, int tag,
				struct fabnet_rmr *mr, struct fabnet_req **out)
{
	struct fabnet_dev *dev = comm->dev;
	struct fabnet_tag_count *t;
	ncclResult_t res;
	int sl, idx = 0;

	*out = NULL;
	res = fabnet_comm_usable(comm, "isend");
	if (res)
		return res;
	t = fabnet_tag_get(&comm->tags, tag);
	if (!t) {
		FN_WARN("fabnet: isend on comm %u (%s): out of memory counting tag %d", comm->id,
			dev->name, tag);
		return ncclInternalError;
	}
	sl = find_cts(comm, tag, t->n, &idx);
	if (sl < 0 && !may_go_early(comm, size, mr)) {
		fabnet_dev_progress(dev); /* the CTS may be in the completion queue */
		res = fabnet_comm_usable(comm, "isend");
		if (res)
			return res;
		sl = find_cts(comm, tag, t->n, &idx);
	}
	if (sl >= 0) {
		struct fabnet_cts_slot *cts = &comm->u.send.cts[sl];
		if (cts->revoked) {
			FN_WARN("fabnet: isend on comm %u (%s): the receiver withdrew receive %u (its "
				"buffer was deregistered, as NCCL does when it aborts)", comm->id,
				dev->name, cts->seq);
			t->n++; /* this send is over: the next pairs with the next entry */
			cts->taken |= 1u << idx;
			if (cts->taken == (1u << cts->n) - 1) {
				cts->valid = 0;
				comm->u.send.cts_valid &= ~(1u << sl);
			}
			return ncclRemoteError;
		}
		return send_with_cts(comm, sl, idx, data, size, t, tag, mr, out);
	}
	if (may_go_early(comm, size, mr))
		return send_early(comm, data, size, t, tag, mr, out);
	if (size <= comm->eager_max && comm->credits_max && !comm->peer_closed)
		ask_for_cts(comm, t); /* its receive may have withheld the CTS */
	if (comm->peer_closed) {
		FN_WARN("fabnet: isend on comm %u (%s): the peer closed its side before posting a "
			"receive for it", comm->id, dev->name);
		return ncclRemoteError;
	}
	fabnet_proto_check_peer(comm); /* the receiver has not posted yet */
	return comm->state == FABNET_FAILED ? ncclRemoteError : ncclSuccess;
}

/* Whether the sends of a tag already passed the entry's index: it was sent
 * early, before its CTS came. */
static int already_sent(struct fabnet_comm *c, const struct fabnet_cts_entry *e)
{
	return fabnet_before24(e->tagseq, fabnet_tag_count_of(&c->tags, e->tag) & FABNET_TAGSEQ_MASK);
}

/* A genuine CTS comes once, and none 32 or more behind the newest with an
 * entry to take (its receive ended before the newest was posted, so all its
 * entries were sent); returns why not, or NULL. */
static const char *cts_order(struct fabnet_comm *c, uint32_t seq, int open)
{
	int32_t d = (int32_t)(seq - c->seq); /* c->seq: one past the newest */
	uint32_t back;

	if (d >= 0) {
		if (d >= (1 << 24))
			return "far ahead of every receive seen";
		if (!open)
			return NULL;
		c->u.send.cts_seen = (uint32_t)d + 1 >= 64 ? 0 : c->u.send.cts_seen << (d + 1);
		c->u.send.cts_seen |= 1;
		c->seq = seq + 1;
		return NULL;
	}
	back = (uint32_t)(-(d + 1));
	if (back < 64 && (c->u.send.cts_seen >> back) & 1)
		return "a repeat";
	if (open && back >= FABNET_NSLOTS)
		return "32 or more behind the newest";
	if (back < 64)
		c->u.send.cts_seen |= 1ull << back;
	return NULL;
}

void fabnet_send_on_cts(struct fabnet_dev *dev, const struct fabnet_msg *m)
{
	struct fabnet_comm *c = fabnet_proto_lookup(dev, m->dst_id);
	struct fabnet_cts_slot *s;
	uint32_t taken = 0, sl;
	const char *why;
	int revoked;

	if (!c || c->kind != FABNET_SEND || c->closing || c->state == FABNET_FAILED)
		return;
	if (c->peer_id && c->peer_id != m->src_id) {
		if (fabnet_drop_log_ok(dev))
			FN_WARN("fabnet: CTS for comm %u on %s from comm %u, not its peer %u: dropped",
				c->id, dev->name, m->src_id, c->peer_id);
		return;
	}
	if (m->src_id > FABNET_MAX_COMMS)
		return;
	for (int i = 0; i < m->u.cts.n; i++)
		if (already_sent(c, &m->u.cts.e[i]))
			taken |= 1u << i;
	why = cts_order(c, m->seq, taken != (1u << m->u.cts.n) - 1);
	if (why) {
		if (fabnet_drop_log_ok(dev))
			FN_WARN("fabnet: CTS seq %u for comm %u on %s is %s: dropped", m->seq, c->id,
				dev->name, why);
		return;
	}
	if (m->u.cts.credits && c->peer_id) {
		unsigned got = c->credits + (unsigned)m->u.cts.credits;
		c->credits = (uint16_t)(got > c->credits_max ? c->credits_max : got);
	}
	if (taken == (1u << m->u.cts.n) - 1)
		return; /* all sent early: nothing to keep */
	sl = m->seq % FABNET_NSLOTS;
	s = &c->u.send.cts[sl];
	/* Withdrawn before its CTS came (messages pass each other on EFA): kept,
	 * so that the sends it pairs with fail rather than wait, until a later
	 * receive takes the slot. */
	revoked = s->revoked && s->seq == m->seq;
	if (s->valid && !s->revoked) {
		if (fabnet_drop_log_ok(dev))
			FN_WARN("fabnet: CTS seq %u for comm %u on %s: receive %u still holds its slot "
				"(forged, or the receiver reused a slot in use): dropped", m->seq,
				c->id, dev->name, s->seq);
		return;
	}
	s->revoked = (uint8_t)revoked;
	/* The ACK may still be on its way: the CTS is kept, and dropped when the
	 * ACK (which proves itself with the listener's nonce) names another peer.
	 * A CTS alone must not choose the peer: a forger would lock the genuine
	 * ACK out and receive our writes. */
	s->src = (uint16_t)m->src_id;
	s->valid = 1;
	s->n = m->u.cts.n;
	s->seq = m->seq;
	s->taken = taken;
	memcpy(s->e, m->u.cts.e, sizeof(s->e[0]) * s->n);
	s->nextra = m->u.cts.nextra < c->u.send.cts_rails_max ? m->u.cts.nextra
							       : c->u.send.cts_rails_max;
	for (int i = 0; i < s->n && s->nextra; i++)
		memcpy(c->u.send.cts_rails + ((size_t)sl * FABNET_MAX_RECVS + (size_t)i) *
					      c->u.send.cts_rails_max,
		       m->u.cts.rail[i], sizeof(m->u.cts.rail[i][0]) * s->nextra);
	c->u.send.cts_valid |= 1u << sl;
}

void fabnet_send_on_credit(struct fabnet_dev *dev, const struct fabnet_msg *m)
{
	struct fabnet_comm *c = fabnet_proto_lookup(dev, m->dst_id);
	unsigned got;

	if (!c || c->kind != FABNET_SEND || c->state != FABNET_READY || c->peer_id != m->src_id)
		return;
	got = c->credits + m->seq;
	if (got > c->credits_max) {
		if (fabnet_drop_log_ok(dev))
			FN_WARN("fabnet: send comm %u on %s: the receiver gave back more early credits "
				"than it was given (%u, at most %u): keeping %u", c->id, dev->name, got,
				c->credits_max, c->credits_max);
		got = c->credits_max;
	}
	c->credits = (uint16_t)got;
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
	    c->peer_id != m->src_id)
		return; /* not ours: nothing of ours can be there */
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
