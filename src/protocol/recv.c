/*
 * Receives: irecv takes what came early (early.c) and posts a CTS for the
 * rest; an EAGER, an EARLY, a FIN and the writes' immediate data complete
 * its entries, in whatever order they come. Every field a peer sends is
 * checked against the receive it names before anything is written.
 */
#include <config.h>

#include <string.h>

#include "core/config.h"
#include "core/log.h"
#include "protocol/internal.h"

/* ---- irecv ------------------------------------------------------------------ */
static void entry_fail(struct fabnet_req *r, struct fabnet_recv_entry *e, const char *why);

/* Each entry's index among the comm's entries with its tag, and the store
 * slot of the early message that pairs with it (-1: none came). Counts
 * nothing yet: irecv may still return without a request. */
static int number_entries(struct fabnet_comm *c, int n, const int *tags, uint32_t *tagseq,
			  int *have)
{
	for (int i = 0; i < n; i++) {
		struct fabnet_tag_count *t = fabnet_tag_get(&c->tags, tags[i]);
		uint32_t before = 0;
		if (!t) {
			FN_WARN("fabnet: irecv on comm %u (%s): out of memory counting tag %d",
				c->id, c->dev->name, tags[i]);
			return -1;
		}
		for (int j = 0; j < i; j++)
			before += tags[j] == tags[i];
		tagseq[i] = t->n + before;
		have[i] = fabnet_early_find(c, tags[i], tagseq[i]);
	}
	return 0;
}

/* The peer's CLOSE named how many sends of each tag it made (tags it did
 * not name: none): an entry at or past that count never gets its data. */
static int orphaned(struct fabnet_comm *c, int32_t tag, uint32_t tagseq)
{
	struct fabnet_tag_count *t = fabnet_tag_find(&c->tags, tag);

	if (!t || !t->named)
		return !c->u.recv.peer_tags_partial;
	return !fabnet_before(tagseq, t->final);
}

int fabnet_recv_entry_orphaned(struct fabnet_comm *c, const struct fabnet_recv_entry *e)
{
	return c->u.recv.peer_tags_final && orphaned(c, e->tag, e->tagseq);
}

/* What the CTS says of each buffer; refuses one it cannot describe. */
static ncclResult_t cts_entries(struct fabnet_comm *comm, int n, void **data,
				const uint64_t *sizes, const int *tags, struct fabnet_rmr **mrs,
				struct fabnet_cts_entry *e,
				struct fabnet_cts_rail (*extra)[FABNET_MAX_RAILS - 1])
{
	struct fabnet_dev *dev = comm->dev;

	for (int i = 0; i < n; i++) {
		struct fabnet_rmr *mr = mrs ? mrs[i] : NULL;
		memset(&e[i], 0, sizeof(e[i]));
		memset(extra[i], 0, sizeof(extra[i]));
		if (!mr && sizes[i] > comm->eager_max) {
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
		if (!mr)
			e[i].flags |= FABNET_CTS_NO_RMA;
	}
	return ncclSuccess;
}

/* Entry idx of r takes the early message in store slot i. */
static void take_early(struct fabnet_comm *c, int i, struct fabnet_req *r, int idx)
{
	struct fabnet_recv_entry *e = &r->u.recv.e[idx];

	if (c->u.recv.store[i].size > e->size) {
		fabnet_early_drop(c, i);
		entry_fail(r, e, "the sender sent more bytes than the buffer holds");
	} else if (fabnet_early_deliver(c, i, r, idx)) {
		entry_fail(r, e, "the loopback write of its early message into accelerator memory "
			   "could not be posted");
	}
}

/* A receive whose CTS can wait for the sender's RTS: each entry still to
 * come is at most the eager size, in host memory, so its send (no larger)
 * goes early when the sender holds a credit, and asks for the CTS (RTS)
 * when it cannot (no credit, or accelerator memory). Not when an RTS for
 * one of them came already (it is consumed here), nor once more RTSs came
 * than a comm keeps. */
static int may_withhold(struct fabnet_comm *c, int n, const uint64_t *sizes,
			struct fabnet_rmr **mrs, const int *tags, const uint32_t *tagseq,
			const int *have)
{
	int claimed = 0;

	if (!c->credits_max || c->u.recv.no_withhold)
		return 0;
	for (int i = 0; i < n; i++)
		if (have[i] < 0 && (sizes[i] > c->eager_max ||
				    (mrs && mrs[i] && mrs[i]->type != NCCL_PTR_HOST)))
			return 0;
	for (int i = 0; i < n; i++)
		for (int j = 0; have[i] < 0 && j < c->u.recv.nrts; j++)
			if (c->u.recv.rts[j].tag == tags[i] && c->u.recv.rts[j].tagseq == tagseq[i]) {
				c->u.recv.rts[j] = c->u.recv.rts[--c->u.recv.nrts];
				claimed = 1;
				break;
			}
	return !claimed;
}

/* Claims the receive's slot and sends its CTS, with the credits owed. */
static int post_cts(struct fabnet_comm *comm, struct fabnet_req *r, void *buf,
		    const struct fabnet_cts_entry *e,
		    struct fabnet_cts_rail (*extra)[FABNET_MAX_RAILS - 1])
{
	struct fabnet_dev *dev = comm->dev;
	uint32_t slot = comm->seq % FABNET_NSLOTS;
	uint16_t owed = 0;
	size_t len;

	r->seq = comm->seq;
	/* Claim the slot first: the sender's data may arrive before our own CTS
	 * completion is reported. Every entry goes in the CTS, those that came
	 * early too: the sender counts them as sent (they carry indices it has
	 * passed), and the CTS sequence stays without gaps. */
	comm->u.recv.slot[slot] = r;
	len = fabnet_msg_encode_cts_rails(buf, dev->buf_size, comm->peer_id, comm->id, r->seq,
					  (uint8_t)r->u.recv.n, e, (uint8_t)(comm->nrails - 1),
					  (const struct fabnet_cts_rail(*)[FABNET_MAX_RAILS - 1])extra);
	if (len && comm->credits) {
		fabnet_msg_set_credits(buf, comm->credits); /* what early messages we took */
		owed = comm->credits;
		comm->credits = 0;
	}
	if (!len || fabnet_post_msg(r, 0, buf, len)) {
		comm->credits = (uint16_t)(comm->credits + owed);
		comm->u.recv.slot[slot] = NULL;
		return -1;
	}
	return 0;
}

ncclResult_t fabnet_proto_irecv(struct fabnet_comm *comm, int n, void **data,
				const uint64_t *sizes, const int *tags, struct fabnet_rmr **mrs,
				struct fabnet_req **out)
{
	struct fabnet_dev *dev = comm->dev;
	struct fabnet_cts_entry e[FABNET_MAX_RECVS];
	struct fabnet_cts_rail extra[FABNET_MAX_RECVS][FABNET_MAX_RAILS - 1];
	struct fabnet_req *r;
	uint32_t slot = comm->seq % FABNET_NSLOTS;
	uint32_t tagseq[FABNET_MAX_RECVS];
	int have[FABNET_MAX_RECVS], all_have = 1, accel_have = 0, withhold;
	ncclResult_t res;
	void *buf;

	*out = NULL;
	res = fabnet_comm_usable(comm, "irecv");
	if (res)
		return res;
	res = cts_entries(comm, n, data, sizes, tags, mrs, e, extra);
	if (res)
		return res;
	/* Progress only when short of something: it frees bounce buffers. */
	if (comm->u.recv.slot[slot]) {
		fabnet_dev_progress(dev);
		return ncclSuccess; /* 32 receives in flight: retry later */
	}
	if (number_entries(comm, n, tags, tagseq, have))
		return ncclInternalError;
	for (int i = 0; i < n; i++) {
		e[i].tagseq = tagseq[i];
		if (have[i] >= 0 && mrs && mrs[i] && mrs[i]->type != NCCL_PTR_HOST && sizes[i])
			accel_have = 1;
		if (have[i] < 0)
			all_have = 0;
	}
	if (comm->peer_closed) {
		for (int i = 0; i < n; i++)
			if (have[i] < 0 && orphaned(comm, tags[i], tagseq[i])) {
				FN_WARN("fabnet: irecv on comm %u (%s): the peer closed its side without "
					"sending a message with tag %d number %u", comm->id, dev->name,
					tags[i], tagseq[i]);
				return ncclRemoteError;
			}
	}
	withhold = !(all_have && !accel_have) &&
		   may_withhold(comm, n, sizes, mrs, tags, tagseq, have);
	/* Everything came early, into host memory: no CTS, no sequence. A CTS
	 * withheld is sent when the sender asks (RTS). */
	buf = (all_have && !accel_have) || withhold ? NULL : fabnet_dev_txbuf_get(dev);
	if (!buf && !(all_have && !accel_have) && !withhold) {
		fabnet_dev_progress(dev);
		return ncclSuccess;
	}
	r = fabnet_req_new(comm, FABNET_REQ_RECV);
	if (!r) {
		if (buf)
			fabnet_dev_txbuf_put(dev, buf);
		return ncclSuccess;
	}
	r->u.recv.n = n;
	for (int i = 0; i < n; i++) {
		struct fabnet_tag_count *t = fabnet_tag_find(&comm->tags, tags[i]);
		memset(&r->u.recv.e[i], 0, sizeof(r->u.recv.e[i]));
		r->u.recv.e[i].data = data[i];
		r->u.recv.e[i].size = sizes[i];
		r->u.recv.e[i].mr = mrs ? mrs[i] : NULL;
		r->u.recv.e[i].tag = tags[i];
		r->u.recv.e[i].tagseq = tagseq[i];
		t->n++;
	}
	if (!buf && !withhold) {
		r->u.recv.noslot = 1;
		for (int i = 0; i < n; i++)
			take_early(comm, have[i], r, i); /* host memory: a copy */
		*out = r;
		return ncclSuccess;
	}
	if (withhold) {
		r->seq = comm->seq;
		r->u.recv.withheld = 1;
		comm->u.recv.slot[slot] = r;
	} else if (post_cts(comm, r, buf, e, extra)) {
		for (int i = 0; i < n; i++)
			fabnet_tag_find(&comm->tags, tags[i])->n--;
		fabnet_dev_txbuf_put(dev, buf);
		fabnet_req_free(r);
		return ncclSystemError;
	}
	comm->seq++;
	for (int i = 0; i < n; i++)
		if (have[i] >= 0)
			take_early(comm, have[i], r, i);
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
		if (fabnet_drop_log_ok(dev))
			FN_WARN("fabnet: %s for comm %u on %s claims to come from comm %u, not its peer "
				"%u: dropped", what, comm_id, dev->name, src_id, c->peer_id);
		return NULL;
	}
	r = c->u.recv.slot[seq % FABNET_NSLOTS];
	if (!r || (r->seq & mask) != (seq & mask)) {
		if (fabnet_drop_log_ok(dev))
			FN_WARN("fabnet: %s for comm %u on %s names receive %u, which is not posted "
				"(stale or forged): dropped", what, comm_id, dev->name, seq);
		return NULL;
	}
	if (idx >= r->u.recv.n) {
		if (fabnet_drop_log_ok(dev))
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
		if (fabnet_drop_log_ok(dev))
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

void fabnet_recv_on_eager(struct fabnet_dev *dev, const struct fabnet_msg *m)
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

/* The posted entry (tag, tagseq) of a recv comm, or NULL. */
static struct fabnet_req *posted_entry(struct fabnet_comm *c, int32_t tag, uint32_t tagseq,
				       int *idx)
{
	for (int s = 0; s < FABNET_NSLOTS; s++) {
		struct fabnet_req *r = c->u.recv.slot[s];
		for (int i = 0; r && i < r->u.recv.n; i++)
			if (r->u.recv.e[i].tag == tag && r->u.recv.e[i].tagseq == tagseq) {
				*idx = i;
				return r;
			}
	}
	return NULL;
}

/* An early message no genuine sender sends (it keeps to its credits and
 * numbers each send once): dropped, as other forged input is, and its
 * credit given back (a genuine one would be lost, and the sender would
 * wait for CTSs from then on; forged ones cannot raise it past its count). */
static void early_refuse(struct fabnet_comm *c, const char *why)
{
	if (fabnet_drop_log_ok(c->dev))
		FN_WARN("fabnet: dropped an EARLY message for comm %u on %s: %s (forged, or the "
			"peer runs another fabnet)", c->id, c->dev->name, why);
	fabnet_early_owe(c, 1);
}

/* EARLY (tag, index): into its posted entry when there is one, else into
 * the store until the irecv that pairs with it (early.c). */
void fabnet_recv_on_early(struct fabnet_dev *dev, const struct fabnet_msg *m)
{
	struct fabnet_comm *c = fabnet_proto_lookup(dev, m->dst_id);
	int32_t tag = m->u.early.tag;
	uint32_t k = m->seq, posted;
	struct fabnet_recv_entry *e;
	struct fabnet_req *r;
	int idx = 0, i;

	if (!c || c->kind != FABNET_RECV || c->closing || c->state != FABNET_READY ||
	    c->peer_id != m->src_id) {
		FN_INFO(NCCL_NET, "fabnet: EARLY for unknown, closed or failed comm %u on %s dropped",
			m->dst_id, dev->name);
		return;
	}
	if (!c->credits_max)
		return early_refuse(c, "an early message on a comm that agreed to none");
	if (m->u.early.size > c->eager_max)
		return early_refuse(c, "an early message larger than the eager limit");
	posted = fabnet_tag_count_of(&c->tags, tag);
	if (!fabnet_before(k, posted)) {
		/* Not posted yet: every send from `posted` on came early, each under a
		 * credit it still holds, so none lies credits_max or more ahead. */
		if (k - posted >= c->credits_max)
			return early_refuse(c, "an index further ahead than its credits allow");
		if (fabnet_early_find(c, tag, k) >= 0)
			return early_refuse(c, "an index sent twice");
		if (fabnet_early_store(c, tag, k, m->u.early.payload, m->u.early.size) < 0)
			early_refuse(c, "more early messages than its credits (or out of memory)");
		return;
	}
	r = posted_entry(c, tag, k, &idx);
	e = r ? &r->u.recv.e[idx] : NULL;
	if (!r || e->gone) {
		/* Its receive was withdrawn (deregMr) and is gone: nothing to write. */
		FN_INFO(NCCL_NET, "fabnet: EARLY tag %d number %u for comm %u on %s: its receive is "
			"gone (withdrawn): dropped", tag, k, c->id, dev->name);
		fabnet_early_owe(c, 1);
		return;
	}
	if (e->done) {
		if (fabnet_drop_log_ok(dev))
			FN_WARN("fabnet: EARLY tag %d number %u for comm %u on %s repeats a completed "
				"buffer: dropped", tag, k, c->id, dev->name);
		fabnet_early_owe(c, 1);
		return;
	}
	if (e->fin_seen || e->writes_seen) {
		entry_fail(r, e, "the sender mixed an early message with RMA writes");
		fabnet_early_owe(c, 1);
		return;
	}
	if (m->u.early.size > e->size) {
		entry_fail(r, e, "the sender sent more bytes than the buffer holds");
		fabnet_early_owe(c, 1);
		return;
	}
	if (!e->mr || e->mr->type == NCCL_PTR_HOST || !m->u.early.size) {
		if (m->u.early.size)
			memcpy(e->data, m->u.early.payload, m->u.early.size);
		e->got = m->u.early.size;
		entry_done(r, e);
		fabnet_early_owe(c, 1);
		return;
	}
	/* Accelerator memory: through a slot, written by the NIC. */
	i = fabnet_early_store(c, tag, k, m->u.early.payload, m->u.early.size);
	if (i < 0)
		return early_refuse(c, "more early messages than its credits (or out of memory)");
	if (fabnet_early_deliver(c, i, r, idx))
		entry_fail(r, e, "the loopback write of its early message into accelerator memory "
			   "could not be posted");
}

/* The CTS of a receive withheld until its sender asked; 0, or -1 when it
 * could not go (test() tries again: rts_wanted). */
int fabnet_recv_send_withheld(struct fabnet_req *r)
{
	struct fabnet_comm *c = r->comm;
	struct fabnet_cts_entry e[FABNET_MAX_RECVS];
	struct fabnet_cts_rail extra[FABNET_MAX_RECVS][FABNET_MAX_RAILS - 1];
	void *data[FABNET_MAX_RECVS] = {0};
	uint64_t sizes[FABNET_MAX_RECVS] = {0};
	int tags[FABNET_MAX_RECVS] = {0}, n = r->u.recv.n;
	struct fabnet_rmr *mrs[FABNET_MAX_RECVS] = {0};
	uint16_t owed = c->credits;
	void *buf;
	size_t len;

	for (int i = 0; i < n; i++) {
		data[i] = r->u.recv.e[i].data;
		sizes[i] = r->u.recv.e[i].size;
		tags[i] = r->u.recv.e[i].tag;
		mrs[i] = r->u.recv.e[i].mr;
	}
	if (cts_entries(c, n, data, sizes, tags, mrs, e, extra))
		return -1; /* a buffer deregistered meanwhile: deregMr fails the receive */
	for (int i = 0; i < n; i++)
		e[i].tagseq = r->u.recv.e[i].tagseq;
	buf = fabnet_dev_txbuf_get(c->dev);
	if (!buf) {
		r->u.recv.rts_wanted = 1;
		return -1;
	}
	len = fabnet_msg_encode_cts_rails(buf, c->dev->buf_size, c->peer_id, c->id, r->seq,
					  (uint8_t)n, e, (uint8_t)(c->nrails - 1),
					  (const struct fabnet_cts_rail(*)[FABNET_MAX_RAILS - 1])extra);
	if (len && owed)
		fabnet_msg_set_credits(buf, owed);
	if (!len || fabnet_post_msg(r, 0, buf, len)) {
		fabnet_dev_txbuf_put(c->dev, buf);
		r->u.recv.rts_wanted = 1;
		return -1;
	}
	c->credits = (uint16_t)(c->credits - owed);
	r->u.recv.withheld = 0;
	r->u.recv.rts_wanted = 0;
	return 0;
}

/* RTS (tag, index): the sender's send cannot go early; the receive it pairs
 * with sends its CTS now, or, not posted yet, will not withhold it. */
void fabnet_recv_on_rts(struct fabnet_dev *dev, const struct fabnet_msg *m)
{
	struct fabnet_comm *c = fabnet_proto_lookup(dev, m->dst_id);
	struct fabnet_req *r;
	int idx = 0;

	if (!c || c->kind != FABNET_RECV || c->closing || c->state != FABNET_READY ||
	    c->peer_id != m->src_id)
		return;
	if (fabnet_before(m->seq, fabnet_tag_count_of(&c->tags, m->u.rts.tag))) {
		r = posted_entry(c, m->u.rts.tag, m->seq, &idx);
		if (r && r->u.recv.withheld)
			fabnet_recv_send_withheld(r);
		return; /* posted with its CTS, or done: nothing to do */
	}
	if (c->u.recv.nrts == FABNET_RTS_KEPT) {
		/* More than we keep (a forger, or many senders ahead): withhold no
		 * more CTSs on this comm, so nothing waits on an RTS we dropped. */
		c->u.recv.no_withhold = 1;
		return;
	}
	c->u.recv.rts[c->u.recv.nrts].tag = m->u.rts.tag;
	c->u.recv.rts[c->u.recv.nrts].tagseq = m->seq;
	c->u.recv.nrts++;
}

void fabnet_recv_on_fin(struct fabnet_dev *dev, const struct fabnet_msg *m)
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
		if (fabnet_drop_log_ok(dev))
			FN_WARN("fabnet: dropped immediate data 0x%llx on %s: %s",
				(unsigned long long)data, dev->name, why);
		return;
	}
	r = recv_target(dev, imm.comm_id, 0, 0, imm.seq, 8, imm.idx, "RMA write");
	if (!r)
		return;
	if (imm.gen != (r->comm->token & FABNET_IMM_GEN_MASK)) {
		if (fabnet_drop_log_ok(dev))
			FN_WARN("fabnet: dropped an RMA write's immediate data 0x%llx on %s: "
				"generation %u, comm %u is generation %u (meant for an earlier comm "
				"under this id)", (unsigned long long)data, dev->name, imm.gen,
				imm.comm_id, (unsigned)(r->comm->token & FABNET_IMM_GEN_MASK));
		return;
	}
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

void fabnet_recv_on_revoked(struct fabnet_dev *dev, const struct fabnet_msg *m)
{
	struct fabnet_comm *c = fabnet_proto_lookup(dev, m->dst_id);
	struct fabnet_req *r;

	if (!c || c->kind != FABNET_RECV || c->peer_id != m->src_id)
		return;
	r = c->u.recv.slot[m->seq % FABNET_NSLOTS];
	if (r && r->seq == m->seq && r->u.recv.revoke == FABNET_REVOKE_SENT)
		r->u.recv.revoke = FABNET_REVOKE_DONE;
}

void fabnet_recv_forget(struct fabnet_req *r, const struct fabnet_rmr *rmr)
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
