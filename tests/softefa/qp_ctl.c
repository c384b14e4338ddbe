/* softefa: creating, modifying, querying and destroying QPs. */
#include "sefa.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static uint32_t pow2_at_least(uint32_t x)
{
	uint32_t p = 1;

	while (p < x)
		p <<= 1;
	return p;
}

static int check_attr(struct ibv_qp_init_attr_ex *attr, struct efadv_qp_init_attr *efa)
{
	const struct sefa_profile *p = &sefa_cfg.prof;
	uint64_t ops = IBV_QP_EX_WITH_SEND | IBV_QP_EX_WITH_SEND_WITH_IMM;
	uint16_t flags = 0;

	if (p->device_caps & EFADV_DEVICE_ATTR_CAPS_RDMA_READ)
		ops |= IBV_QP_EX_WITH_RDMA_READ;
	if (p->device_caps & EFADV_DEVICE_ATTR_CAPS_RDMA_WRITE)
		ops |= IBV_QP_EX_WITH_RDMA_WRITE | IBV_QP_EX_WITH_RDMA_WRITE_WITH_IMM;
	if (p->device_caps & EFADV_DEVICE_ATTR_CAPS_UNSOLICITED_WRITE_RECV)
		flags |= EFADV_QP_FLAGS_UNSOLICITED_WRITE_RECV;
	if (attr->qp_type != IBV_QPT_DRIVER || efa->driver_qp_type != EFADV_QP_DRIVER_TYPE_SRD) {
		SEFA_INFO("create_qp: only SRD driver QPs are emulated (UD is not)");
		return EOPNOTSUPP;
	}
	if (efa->flags & ~flags) {
		SEFA_INFO("create_qp: EFA flags %#x, profile %s supports %#x", efa->flags, p->name, flags);
		return EOPNOTSUPP;
	}
	if (attr->comp_mask & ~(uint32_t)(IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_SEND_OPS_FLAGS))
		return EOPNOTSUPP;
	if (!(attr->comp_mask & IBV_QP_INIT_ATTR_PD) || !attr->pd)
		return EINVAL;
	if ((attr->comp_mask & IBV_QP_INIT_ATTR_SEND_OPS_FLAGS) && (attr->send_ops_flags & ~ops)) {
		SEFA_INFO("create_qp: send_ops_flags %#llx, profile %s supports %#llx",
			  (unsigned long long)attr->send_ops_flags, p->name, (unsigned long long)ops);
		return EOPNOTSUPP;
	}
	if (!attr->send_cq || !attr->recv_cq || attr->srq)
		return EINVAL;
	if (attr->cap.max_send_sge > p->max_sq_sge || attr->cap.max_recv_sge > p->max_rq_sge ||
	    attr->cap.max_send_wr > p->max_sq_wr || attr->cap.max_recv_wr > p->max_rq_wr ||
	    attr->cap.max_inline_data > p->inline_buf_size) {
		SEFA_INFO("create_qp: caps over the device limits (wr %u/%u sge %u/%u inline %u)",
			  attr->cap.max_send_wr, attr->cap.max_recv_wr, attr->cap.max_send_sge,
			  attr->cap.max_recv_sge, attr->cap.max_inline_data);
		return EINVAL;
	}
	return 0;
}

static int alloc_qpn(struct sefa_dev *dev, struct sefa_qp *qp)
{
	uint32_t limit = sefa_cfg.shared_host ? (1u << SEFA_QPN_BITS_SHARED) : SEFA_SHM_QP;

	for (uint32_t i = 1; i < limit; i++)
		if (!dev->qp_by_idx[i]) {
			qp->qpn = dev->qpn_base | i;
			__atomic_store_n(&dev->qp_by_idx[i], qp, __ATOMIC_RELEASE);
			return 0;
		}
	return ENOMEM;
}

static void shm_qp_update(struct sefa_dev *dev, struct sefa_qp *qp, bool present)
{
	struct sefa_shm_qp *e = &dev->shm->qp[qp->qpn & (SEFA_SHM_QP - 1)];

	sefa_shm_lock(dev->shm);
	if (present) {
		e->qkey = qp->qkey;
		e->state = (uint32_t)atomic_load(&qp->state);
		e->pd = qp->pd->pdn;
		e->qpn = qp->qpn;
	} else {
		memset(e, 0, sizeof(*e));
	}
	sefa_shm_unlock(dev->shm);
}

static struct sefa_qp *qp_alloc(struct ibv_qp_init_attr_ex *attr)
{
	struct sefa_qp *qp = calloc(1, sizeof(*qp));
	uint32_t rsge = attr->cap.max_recv_sge ? attr->cap.max_recv_sge : 1;

	if (!qp)
		return NULL;
	qp->sq_cnt = pow2_at_least(attr->cap.max_send_wr ? attr->cap.max_send_wr : 1);
	qp->rq_cnt = pow2_at_least(rsge * (attr->cap.max_recv_wr ? attr->cap.max_recv_wr : 1)) / rsge;
	if (!qp->rq_cnt)
		qp->rq_cnt = 1;
	qp->rq_cnt = pow2_at_least(qp->rq_cnt);
	qp->sq = calloc(qp->sq_cnt, sizeof(*qp->sq));
	qp->rq = calloc(qp->rq_cnt, sizeof(*qp->rq));
	if (!qp->sq || !qp->rq) {
		free(qp->sq);
		free(qp->rq);
		free(qp);
		return NULL;
	}
	return qp;
}

static struct ibv_qp *create_qp(struct ibv_context *ctx, struct ibv_qp_init_attr_ex *attr,
				struct efadv_qp_init_attr *efa)
{
	struct sefa_dev *dev = sefa_dev_of(ctx);
	struct sefa_qp *qp;
	int err = check_attr(attr, efa);

	if (err || !(qp = qp_alloc(attr))) {
		errno = err ? err : ENOMEM;
		return NULL;
	}
	qp->dev = dev;
	qp->pd = (struct sefa_pd *)attr->pd;
	qp->scq = (struct sefa_cq *)attr->send_cq;
	qp->rcq = (struct sefa_cq *)attr->recv_cq;
	qp->is_srd = true;
	qp->unsolicited_write_recv = efa->flags & EFADV_QP_FLAGS_UNSOLICITED_WRITE_RECV;
	qp->sq_sig_all = attr->sq_sig_all;
	qp->send_ops = (attr->comp_mask & IBV_QP_INIT_ATTR_SEND_OPS_FLAGS) ? attr->send_ops_flags : 0;
	qp->max_inline = attr->cap.max_inline_data;
	qp->max_send_sge = attr->cap.max_send_sge;
	qp->max_recv_sge = attr->cap.max_recv_sge;
	qp->rnr_retry = 7;	/* SRD default: retry for ever */
	atomic_store(&qp->state, IBV_QPS_RESET);
	pthread_mutex_init(&qp->sq_lock, NULL);
	pthread_mutex_init(&qp->rq_lock, NULL);
	attr->cap.max_send_wr = qp->sq_cnt;
	attr->cap.max_recv_wr = qp->rq_cnt;
	qp->qpx.qp_base.context = ctx;
	qp->qpx.qp_base.qp_context = attr->qp_context;
	qp->qpx.qp_base.pd = attr->pd;
	qp->qpx.qp_base.send_cq = attr->send_cq;
	qp->qpx.qp_base.recv_cq = attr->recv_cq;
	qp->qpx.qp_base.qp_type = attr->qp_type;
	qp->qpx.qp_base.state = IBV_QPS_RESET;
	sefa_qp_fill_ops(qp);
	pthread_mutex_lock(&dev->lock);
	err = alloc_qpn(dev, qp);
	if (!err) {
		qp->qpx.qp_base.qp_num = qp->qpn;
		qp->qpx.qp_base.handle = qp->qpn;
		qp->next = dev->qps;
		dev->qps = qp;
		shm_qp_update(dev, qp, true);
	}
	pthread_mutex_unlock(&dev->lock);
	if (err) {
		free(qp->sq);
		free(qp->rq);
		free(qp);
		errno = err;
		return NULL;
	}
	return &qp->qpx.qp_base;
}

struct ibv_qp *sefa_efadv_create_qp_ex(struct ibv_context *ctx, struct ibv_qp_init_attr_ex *attr,
				       struct efadv_qp_init_attr *efa_attr, uint32_t inlen)
{
	struct efadv_qp_init_attr local = { 0 };

	if (!sefa_is_dev(ctx)) {
		errno = EOPNOTSUPP;
		return NULL;
	}
	if (inlen < offsetof(struct efadv_qp_init_attr, driver_qp_type) + sizeof(efa_attr->driver_qp_type) ||
	    efa_attr->comp_mask) {
		errno = EINVAL;
		return NULL;
	}
	memcpy(&local, efa_attr, inlen < sizeof(local) ? inlen : sizeof(local));
	return create_qp(ctx, attr, &local);
}

struct ibv_qp *sefa_efadv_create_driver_qp(struct ibv_pd *pd, struct ibv_qp_init_attr *attr,
					   uint32_t driver_qp_type)
{
	struct ibv_qp_init_attr_ex ex = { 0 };
	struct efadv_qp_init_attr efa = { .driver_qp_type = driver_qp_type };
	struct ibv_qp *qp;

	memcpy(&ex, attr, sizeof(*attr));
	ex.comp_mask = IBV_QP_INIT_ATTR_PD;
	ex.pd = pd;
	qp = create_qp(pd->context, &ex, &efa);
	if (qp)
		memcpy(attr, &ex, sizeof(*attr));
	return qp;
}

struct ibv_qp *sefa_create_qp_ex(struct ibv_context *ctx, struct ibv_qp_init_attr_ex *attr)
{
	(void)ctx;
	(void)attr;
	SEFA_INFO("create_qp_ex: UD QPs are not emulated");
	errno = EOPNOTSUPP;
	return NULL;
}

SEFA_EXPORT struct ibv_qp *ibv_create_qp(struct ibv_pd *pd, struct ibv_qp_init_attr *attr)
{
	(void)pd;
	(void)attr;
	SEFA_INFO("create_qp: UD QPs are not emulated");
	errno = EOPNOTSUPP;
	return NULL;
}

SEFA_EXPORT struct ibv_qp_ex *ibv_qp_to_qp_ex(struct ibv_qp *qp)
{
	return &((struct sefa_qp *)qp)->qpx;
}

static bool transition_ok(int from, int to)
{
	if (to == IBV_QPS_RESET || to == IBV_QPS_ERR)
		return true;
	return (from == IBV_QPS_RESET && to == IBV_QPS_INIT) || (from == IBV_QPS_INIT && to == IBV_QPS_INIT) ||
	       (from == IBV_QPS_INIT && to == IBV_QPS_RTR) || (from == IBV_QPS_RTR && to == IBV_QPS_RTS) ||
	       (from == IBV_QPS_RTS && to == IBV_QPS_RTS) || (from == IBV_QPS_RTS && to == IBV_QPS_SQD) ||
	       (from == IBV_QPS_SQD && to == IBV_QPS_RTS);
}

SEFA_EXPORT int ibv_modify_qp(struct ibv_qp *ibqp, struct ibv_qp_attr *attr, int mask)
{
	struct sefa_qp *qp = (struct sefa_qp *)ibqp;
	int from = atomic_load(&qp->state);
	int to = (mask & IBV_QP_STATE) ? (int)attr->qp_state : from;

	if (!transition_ok(from, to) ||
	    (mask & ~(IBV_QP_STATE | IBV_QP_CUR_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_QKEY |
		      IBV_QP_SQ_PSN | IBV_QP_RNR_RETRY))) {
		SEFA_INFO("modify_qp[%u]: %d -> %d with mask %#x refused", qp->qpn, from, to, mask);
		return EINVAL;
	}
	if ((mask & IBV_QP_RNR_RETRY) &&
	    (!(sefa_cfg.prof.device_caps & EFADV_DEVICE_ATTR_CAPS_RNR_RETRY) || attr->rnr_retry > 7))
		return EINVAL;
	if ((mask & IBV_QP_PORT) && attr->port_num != 1)
		return EINVAL;
	pthread_mutex_lock(&qp->dev->lock);
	if (mask & IBV_QP_QKEY)
		qp->qkey = attr->qkey;
	if (mask & IBV_QP_RNR_RETRY)
		qp->rnr_retry = attr->rnr_retry;
	if (to == IBV_QPS_RESET) {
		atomic_store(&qp->sq_posted, atomic_load(&qp->sq_completed));
		qp->rq_tail = qp->rq_head;
	}
	atomic_store(&qp->state, to);
	ibqp->state = (enum ibv_qp_state)to;
	shm_qp_update(qp->dev, qp, true);
	pthread_mutex_unlock(&qp->dev->lock);
	return 0;
}

SEFA_EXPORT int ibv_query_qp(struct ibv_qp *ibqp, struct ibv_qp_attr *attr, int mask,
			     struct ibv_qp_init_attr *init)
{
	struct sefa_qp *qp = (struct sefa_qp *)ibqp;

	(void)mask;
	memset(attr, 0, sizeof(*attr));
	memset(init, 0, sizeof(*init));
	attr->qp_state = (enum ibv_qp_state)atomic_load(&qp->state);
	attr->qkey = qp->qkey;
	attr->port_num = 1;
	attr->rnr_retry = (uint8_t)qp->rnr_retry;
	attr->cap.max_send_wr = qp->sq_cnt;
	attr->cap.max_recv_wr = qp->rq_cnt;
	attr->cap.max_send_sge = qp->max_send_sge;
	attr->cap.max_recv_sge = qp->max_recv_sge;
	attr->cap.max_inline_data = qp->max_inline;
	init->qp_type = ibqp->qp_type;
	init->send_cq = ibqp->send_cq;
	init->recv_cq = ibqp->recv_cq;
	init->qp_context = ibqp->qp_context;
	init->cap = attr->cap;
	return 0;
}

SEFA_EXPORT int ibv_query_qp_data_in_order(struct ibv_qp *qp, enum ibv_wr_opcode op, uint32_t flags)
{
	int caps = 0;

	(void)op;
	if (flags & ~(uint32_t)IBV_QUERY_QP_DATA_IN_ORDER_RETURN_CAPS)
		return 0;
	if (sefa_is_dev(qp->context) && sefa_cfg.prof.in_order_128)
		caps |= IBV_QUERY_QP_DATA_IN_ORDER_ALIGNED_128_BYTES;
	return flags ? caps : 0;
}

struct sefa_qp *sefa_qp_find(struct sefa_dev *dev, uint32_t qpn)
{
	struct sefa_qp *qp;

	if ((qpn & ~(uint32_t)(SEFA_SHM_QP - 1)) != 0 && !sefa_cfg.shared_host)
		return NULL;
	if (sefa_cfg.shared_host && (qpn >> SEFA_QPN_BITS_SHARED) != dev->slot)
		return NULL;
	qp = __atomic_load_n(&dev->qp_by_idx[qpn & (SEFA_SHM_QP - 1)], __ATOMIC_ACQUIRE);
	return qp && qp->qpn == qpn ? qp : NULL;
}

SEFA_EXPORT int ibv_destroy_qp(struct ibv_qp *ibqp)
{
	struct sefa_qp *qp = (struct sefa_qp *)ibqp;
	struct sefa_dev *dev = qp->dev;

	pthread_mutex_lock(&dev->lock);
	for (struct sefa_qp **p = &dev->qps; *p; p = &(*p)->next)
		if (*p == qp) {
			*p = qp->next;
			break;
		}
	__atomic_store_n(&dev->qp_by_idx[qp->qpn & (SEFA_SHM_QP - 1)], NULL, __ATOMIC_RELEASE);
	shm_qp_update(dev, qp, false);
	sefa_engine_forget_qp(dev, qp);
	sefa_cq_purge_qp(qp->scq, qp->qpn);
	if (qp->rcq != qp->scq)
		sefa_cq_purge_qp(qp->rcq, qp->qpn);
	pthread_mutex_unlock(&dev->lock);
	pthread_mutex_destroy(&qp->sq_lock);
	pthread_mutex_destroy(&qp->rq_lock);
	free(qp->sq);
	free(qp->rq);
	free(qp);
	return 0;
}
