/*
 * Receives: irecv posts a CTS; an EAGER, a FIN and the writes' immediate
 * data complete its entries, in whatever order they come. Every field a peer
 * sends is checked against the receive it names before anything is written.
 */
#include <config.h>

#include <string.h>

#include "core/config.h"
#include "core/log.h"
#include "protocol/internal.h"

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
	res = fabnet_comm_usable(comm, "irecv");
	if (res)
		return res;
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
	r = fabnet_req_new(comm, FABNET_REQ_RECV);
	if (!r) {
		fabnet_dev_txbuf_put(dev, buf);
		return ncclSuccess;
	}
	r->seq = comm->seq;
	r->u.recv.n = n;
	for (int i = 0; i < n; i++) {
		memset(&r->u.recv.e[i], 0, sizeof(r->u.recv.e[i]));
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
	if (!len || fabnet_post_msg(r, 0, buf, len)) {
		comm->u.recv.slot[slot] = NULL;
		fabnet_dev_txbuf_put(dev, buf);
		fabnet_req_free(r);
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
