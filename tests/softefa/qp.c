/* softefa: SRD queue pairs. The checks at creation and posting follow
 * rdma-core's efa provider: driver QP of type SRD only, send ops within the
 * device's capabilities, queue and SGE limits, signaled WRs only, and a send
 * queue that is full (ENOMEM from wr_complete) while posted WRs outnumber
 * polled completions by the queue depth. */
#include "sefa.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define to_qp(x) ((struct sefa_qp *)(x))

/* ---- the extended send API ------------------------------------------------ */
static void wr_start(struct ibv_qp_ex *qpx)
{
	struct sefa_qp *qp = to_qp(qpx);

	pthread_mutex_lock(&qp->sq_lock);
	qp->sess_err = 0;
	qp->sess_pending = 0;
	qp->sess_head = atomic_load(&qp->sq_head);
	qp->cur = NULL;
}

static struct sefa_wqe *wr_common(struct sefa_qp *qp, uint8_t opcode)
{
	struct sefa_wqe *w;
	int state = atomic_load(&qp->state);

	if (qp->sess_err)
		return NULL;
	if (state != IBV_QPS_RTS && state != IBV_QPS_SQD) {
		SEFA_INFO("SQ[%u] is in invalid state %d", qp->qpn, state);
		qp->sess_err = EINVAL;
	} else if (!(qp->qpx.wr_flags & IBV_SEND_SIGNALED) && !qp->sq_sig_all) {
		SEFA_INFO("SQ[%u] non-signaled WRs are not supported", qp->qpn);
		qp->sess_err = EINVAL;
	} else if (qp->qpx.wr_flags & ~(unsigned)(IBV_SEND_SIGNALED | IBV_SEND_INLINE)) {
		SEFA_INFO("SQ[%u] unsupported wr_flags %#x", qp->qpn, qp->qpx.wr_flags);
		qp->sess_err = EINVAL;
	} else if (atomic_load(&qp->sq_posted) - atomic_load(&qp->sq_completed) == qp->sq_cnt) {
		SEFA_INFO("SQ[%u] is full (%u WRs not completed)", qp->qpn, qp->sq_cnt);
		qp->sess_err = ENOMEM;
	}
	if (qp->sess_err)
		return NULL;
	w = &qp->sq[(qp->sess_head + qp->sess_pending) & (qp->sq_cnt - 1)];
	memset(w, 0, sizeof(*w));
	w->wr_id = qp->qpx.wr_id;
	w->opcode = opcode;
	qp->sess_pending++;
	atomic_fetch_add(&qp->sq_posted, 1);
	qp->cur = w;
	return w;
}

static void wr_send(struct ibv_qp_ex *qpx)
{
	wr_common(to_qp(qpx), IBV_WR_SEND);
}

static void wr_send_imm(struct ibv_qp_ex *qpx, __be32 imm)
{
	struct sefa_wqe *w = wr_common(to_qp(qpx), IBV_WR_SEND_WITH_IMM);

	if (w) {
		w->has_imm = true;
		w->imm = be32toh(imm);
	}
}

static void set_rdma(struct sefa_wqe *w, uint32_t rkey, uint64_t raddr)
{
	if (w) {
		w->rkey = rkey;
		w->raddr = raddr;
	}
}

static void wr_rdma_read(struct ibv_qp_ex *qpx, uint32_t rkey, uint64_t raddr)
{
	set_rdma(wr_common(to_qp(qpx), IBV_WR_RDMA_READ), rkey, raddr);
}

static void wr_rdma_write(struct ibv_qp_ex *qpx, uint32_t rkey, uint64_t raddr)
{
	set_rdma(wr_common(to_qp(qpx), IBV_WR_RDMA_WRITE), rkey, raddr);
}

static void wr_rdma_write_imm(struct ibv_qp_ex *qpx, uint32_t rkey, uint64_t raddr, __be32 imm)
{
	struct sefa_wqe *w = wr_common(to_qp(qpx), IBV_WR_RDMA_WRITE_WITH_IMM);

	set_rdma(w, rkey, raddr);
	if (w) {
		w->has_imm = true;
		w->imm = be32toh(imm);
	}
}

static bool is_rdma(uint8_t op)
{
	return op == IBV_WR_RDMA_READ || op == IBV_WR_RDMA_WRITE || op == IBV_WR_RDMA_WRITE_WITH_IMM;
}

static void wr_set_sge_list(struct ibv_qp_ex *qpx, size_t n, const struct ibv_sge *sg)
{
	struct sefa_qp *qp = to_qp(qpx);
	struct sefa_wqe *w = qp->cur;
	size_t max;

	if (qp->sess_err || !w)
		return;
	max = is_rdma(w->opcode) ? sefa_cfg.prof.max_sge_rd : qp->max_send_sge;
	if (n > max || n > SEFA_MAX_SGE) {
		SEFA_INFO("SQ[%u] num_sge %zu > max %zu", qp->qpn, n, max);
		qp->sess_err = EINVAL;
		return;
	}
	memcpy(w->sge, sg, n * sizeof(*sg));
	w->num_sge = (uint32_t)n;
	w->is_inline = false;
}

static void wr_set_sge(struct ibv_qp_ex *qpx, uint32_t lkey, uint64_t addr, uint32_t len)
{
	struct ibv_sge sge = { .addr = addr, .length = len, .lkey = lkey };

	wr_set_sge_list(qpx, 1, &sge);
}

static void wr_set_inline_data_list(struct ibv_qp_ex *qpx, size_t n, const struct ibv_data_buf *bufs)
{
	struct sefa_qp *qp = to_qp(qpx);
	struct sefa_wqe *w = qp->cur;
	size_t total = 0;

	if (qp->sess_err || !w)
		return;
	for (size_t i = 0; i < n; i++)
		total += bufs[i].length;
	if (total > qp->max_inline || total > SEFA_MAX_INLINE) {
		SEFA_INFO("SQ[%u] inline length %zu > %u", qp->qpn, total, qp->max_inline);
		qp->sess_err = EINVAL;
		return;
	}
	total = 0;
	for (size_t i = 0; i < n; i++) {
		memcpy(w->inline_data + total, bufs[i].addr, bufs[i].length);
		total += bufs[i].length;
	}
	w->inline_len = (uint32_t)total;
	w->is_inline = true;
}

static void wr_set_inline_data(struct ibv_qp_ex *qpx, void *addr, size_t len)
{
	struct ibv_data_buf b = { .addr = addr, .length = len };

	wr_set_inline_data_list(qpx, 1, &b);
}

static void wr_set_ud_addr(struct ibv_qp_ex *qpx, struct ibv_ah *ibah, uint32_t qpn, uint32_t qkey)
{
	struct sefa_qp *qp = to_qp(qpx);
	struct sefa_ah *ah = (struct sefa_ah *)ibah;
	struct sefa_wqe *w = qp->cur;

	if (qp->sess_err || !w)
		return;
	memcpy(w->dgid, ah->gid, 16);
	w->ahn = ah->ahn;
	w->dqpn = qpn;
	w->dqkey = qkey;
	w->has_addr = true;
}

static void rollback(struct sefa_qp *qp)
{
	atomic_fetch_sub(&qp->sq_posted, qp->sess_pending);
	qp->sess_pending = 0;
	qp->cur = NULL;
}

static int wr_complete(struct ibv_qp_ex *qpx)
{
	struct sefa_qp *qp = to_qp(qpx);
	int err = qp->sess_err;

	if (err)
		rollback(qp);
	else
		atomic_store(&qp->sq_head, qp->sess_head + qp->sess_pending);
	qp->cur = NULL;
	pthread_mutex_unlock(&qp->sq_lock);
	if (!err && (sefa_thread_polls() || !sefa_engine_assist(qp->dev)))
		sefa_engine_kick(qp->dev);
	return err;
}

static void wr_abort(struct ibv_qp_ex *qpx)
{
	struct sefa_qp *qp = to_qp(qpx);

	rollback(qp);
	pthread_mutex_unlock(&qp->sq_lock);
}

void sefa_qp_fill_ops(struct sefa_qp *qp)
{
	struct ibv_qp_ex *x = &qp->qpx;

	x->wr_start = wr_start;
	x->wr_complete = wr_complete;
	x->wr_abort = wr_abort;
	if (qp->send_ops & IBV_QP_EX_WITH_SEND)
		x->wr_send = wr_send;
	if (qp->send_ops & IBV_QP_EX_WITH_SEND_WITH_IMM)
		x->wr_send_imm = wr_send_imm;
	if (qp->send_ops & IBV_QP_EX_WITH_RDMA_READ)
		x->wr_rdma_read = wr_rdma_read;
	if (qp->send_ops & IBV_QP_EX_WITH_RDMA_WRITE)
		x->wr_rdma_write = wr_rdma_write;
	if (qp->send_ops & IBV_QP_EX_WITH_RDMA_WRITE_WITH_IMM)
		x->wr_rdma_write_imm = wr_rdma_write_imm;
	x->wr_set_sge = wr_set_sge;
	x->wr_set_sge_list = wr_set_sge_list;
	x->wr_set_inline_data = wr_set_inline_data;
	x->wr_set_inline_data_list = wr_set_inline_data_list;
	x->wr_set_ud_addr = wr_set_ud_addr;
}

/* ---- legacy post_send (send and send-with-imm only, as on EFA) and post_recv */
int sefa_post_send(struct ibv_qp *ibqp, struct ibv_send_wr *wr, struct ibv_send_wr **bad)
{
	struct ibv_qp_ex *qpx = &to_qp(ibqp)->qpx;
	int err = 0;

	wr_start(qpx);
	for (; wr && !err; wr = wr->next) {
		qpx->wr_id = wr->wr_id;
		qpx->wr_flags = (unsigned)wr->send_flags;
		if (wr->opcode == IBV_WR_SEND)
			wr_send(qpx);
		else if (wr->opcode == IBV_WR_SEND_WITH_IMM)
			wr_send_imm(qpx, wr->imm_data);
		else
			to_qp(ibqp)->sess_err = EINVAL;
		if (wr->send_flags & IBV_SEND_INLINE) {
			struct ibv_data_buf b[SEFA_MAX_SGE];

			for (int i = 0; i < wr->num_sge && i < SEFA_MAX_SGE; i++)
				b[i] = (struct ibv_data_buf){ (void *)(uintptr_t)wr->sg_list[i].addr,
							      wr->sg_list[i].length };
			wr_set_inline_data_list(qpx, (size_t)wr->num_sge, b);
		} else {
			wr_set_sge_list(qpx, (size_t)wr->num_sge, wr->sg_list);
		}
		wr_set_ud_addr(qpx, wr->wr.ud.ah, wr->wr.ud.remote_qpn, wr->wr.ud.remote_qkey);
		err = to_qp(ibqp)->sess_err;
		if (err && bad)
			*bad = wr;
	}
	return wr_complete(qpx) ? err : 0;
}

int sefa_post_recv(struct ibv_qp *ibqp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad)
{
	struct sefa_qp *qp = to_qp(ibqp);
	int err = 0;

	pthread_mutex_lock(&qp->rq_lock);
	for (; wr; wr = wr->next) {
		int state = atomic_load(&qp->state);
		struct sefa_rwqe *r;

		if (state == IBV_QPS_RESET || state == IBV_QPS_ERR)
			err = EINVAL;
		else if (wr->num_sge < 0 || (uint32_t)wr->num_sge > qp->max_recv_sge)
			err = EINVAL;
		else if (atomic_load(&qp->rq_posted) - atomic_load(&qp->rq_completed) == qp->rq_cnt)
			err = ENOMEM;
		if (err) {
			SEFA_INFO("RQ[%u] post_recv refused: %s", qp->qpn, strerror(err));
			*bad = wr;
			break;
		}
		r = &qp->rq[qp->rq_head & (qp->rq_cnt - 1)];
		r->wr_id = wr->wr_id;
		r->num_sge = (uint32_t)wr->num_sge;
		for (int i = 0; i < wr->num_sge; i++) {
			r->sge[i] = wr->sg_list[i];
			if (r->sge[i].length > UINT16_MAX)	/* EFA receive buffers have 16-bit lengths */
				r->sge[i].length = UINT16_MAX;
		}
		qp->rq_head++;
		atomic_fetch_add(&qp->rq_posted, 1);
	}
	pthread_mutex_unlock(&qp->rq_lock);
	return err;
}

int sefa_rq_pop(struct sefa_qp *qp, struct sefa_rwqe *out)
{
	int err = ENOENT;

	pthread_mutex_lock(&qp->rq_lock);
	if (qp->rq_tail != qp->rq_head) {
		*out = qp->rq[qp->rq_tail & (qp->rq_cnt - 1)];
		qp->rq_tail++;
		err = 0;
	}
	pthread_mutex_unlock(&qp->rq_lock);
	return err;
}
