/* softefa: completion queues. The device thread pushes completions; the
 * application polls them through the extended CQ API (start/next/end_poll),
 * the efadv extensions (source GID, unsolicited) or ibv_poll_cq. A queue slot
 * of the QP is given back only when its completion has been polled, as on
 * real EFA, so a full send queue is the application's own doing. */
#include "sefa.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define to_cq(x) ((struct sefa_cq *)(x))

/* CQ locks this thread holds between start_poll and end_poll: libfabric posts
 * sends from completion handlers, and a post must not then lend its CPU to
 * the device, which would push completions into a CQ this thread has locked. */
static __thread int polls_open;

bool sefa_thread_polls(void)
{
	return polls_open > 0;
}

static void consume(struct sefa_cq *cq)
{
	struct sefa_cqe *c = cq->cur;

	if (!c)
		return;
	if (c->qp && c->is_send)
		atomic_fetch_add(&c->qp->sq_completed, 1);
	else if (c->qp && !c->unsolicited)
		atomic_fetch_add(&c->qp->rq_completed, 1);
	cq->head++;
	cq->cur = NULL;
}

static int load_next(struct sefa_cq *cq)
{
	if (cq->head == cq->tail)
		return ENOENT;
	cq->cur = &cq->ring[cq->head & (cq->cap - 1)];
	cq->cqx.wr_id = cq->cur->unsolicited ? 0 : cq->cur->wr_id;
	cq->cqx.status = sefa_status_to_ibv(cq->cur->status);
	return 0;
}

static int start_poll(struct ibv_cq_ex *cqx, struct ibv_poll_cq_attr *attr)
{
	struct sefa_cq *cq = to_cq(cqx);
	int err;

	if (attr->comp_mask)
		return EINVAL;
	pthread_mutex_lock(&cq->lock);
	err = load_next(cq);
	if (!err) {
		polls_open++;
		return 0;
	}
	pthread_mutex_unlock(&cq->lock);
	if (polls_open || !sefa_engine_assist(cq->dev))
		return ENOENT;
	pthread_mutex_lock(&cq->lock);
	err = load_next(cq);
	if (err)
		pthread_mutex_unlock(&cq->lock);
	else
		polls_open++;
	return err;
}

static int next_poll(struct ibv_cq_ex *cqx)
{
	struct sefa_cq *cq = to_cq(cqx);

	consume(cq);
	return load_next(cq);
}

static void end_poll(struct ibv_cq_ex *cqx)
{
	struct sefa_cq *cq = to_cq(cqx);

	consume(cq);
	polls_open--;
	pthread_mutex_unlock(&cq->lock);
}

static enum ibv_wc_opcode read_opcode(struct ibv_cq_ex *cqx)
{
	return to_cq(cqx)->cur->opcode;
}

static uint32_t read_vendor_err(struct ibv_cq_ex *cqx)
{
	return to_cq(cqx)->cur->status;
}

static unsigned int read_wc_flags(struct ibv_cq_ex *cqx)
{
	return to_cq(cqx)->cur->has_imm ? IBV_WC_WITH_IMM : 0;
}

static uint32_t read_byte_len(struct ibv_cq_ex *cqx)
{
	struct sefa_cqe *c = to_cq(cqx)->cur;

	return c->is_send ? 0 : c->byte_len;
}

static __be32 read_imm_data(struct ibv_cq_ex *cqx)
{
	return htobe32(to_cq(cqx)->cur->imm);
}

static uint32_t read_qp_num(struct ibv_cq_ex *cqx)
{
	return to_cq(cqx)->cur->qp_num;
}

static uint32_t read_src_qp(struct ibv_cq_ex *cqx)
{
	return to_cq(cqx)->cur->src_qp;
}

static uint32_t read_slid(struct ibv_cq_ex *cqx)
{
	return to_cq(cqx)->cur->slid;
}

static uint8_t read_zero8(struct ibv_cq_ex *cqx)
{
	(void)cqx;
	return 0;
}

static int wc_read_sgid(struct efadv_cq *dv, union ibv_gid *sgid)
{
	struct sefa_cq *cq = (struct sefa_cq *)((char *)dv - offsetof(struct sefa_cq, dv));

	if (cq->cur->slid != SEFA_AH_UNKNOWN)
		return -ENOENT;	/* the GID is given only when the AH is unknown */
	memcpy(sgid->raw, cq->cur->sgid, 16);
	return 0;
}

static bool wc_is_unsolicited(struct efadv_cq *dv)
{
	struct sefa_cq *cq = (struct sefa_cq *)((char *)dv - offsetof(struct sefa_cq, dv));

	return cq->cur->unsolicited;
}

static struct ibv_cq_ex *create_cq(struct ibv_context *ctx, struct ibv_cq_init_attr_ex *attr,
				   struct efadv_cq_init_attr *efa_attr)
{
	struct sefa_dev *dev = sefa_dev_of(ctx);
	struct sefa_cq *cq;
	uint32_t size = 1;

	if (attr->comp_mask || (attr->wc_flags & ~(uint64_t)IBV_WC_STANDARD_FLAGS) || attr->channel ||
	    !attr->cqe || attr->cqe > sefa_cfg.prof.max_cqe) {
		SEFA_INFO("create_cq: unsupported attributes (cqe %u, wc_flags %#llx, channel %p)", attr->cqe,
			  (unsigned long long)attr->wc_flags, (void *)attr->channel);
		errno = attr->cqe > sefa_cfg.prof.max_cqe || !attr->cqe ? EINVAL : EOPNOTSUPP;
		return NULL;
	}
	while (size < attr->cqe)
		size <<= 1;
	cq = calloc(1, sizeof(*cq));
	if (cq)
		cq->ring = calloc(size, sizeof(*cq->ring));
	if (!cq || !cq->ring) {
		free(cq);
		errno = ENOMEM;
		return NULL;
	}
	attr->cqe = size;
	cq->cap = cq->size = size;
	cq->dev = dev;
	pthread_mutex_init(&cq->lock, NULL);
	cq->cqx.context = ctx;
	cq->cqx.cqe = (int)size;
	cq->cqx.cq_context = attr->cq_context;
	cq->cqx.start_poll = start_poll;
	cq->cqx.next_poll = next_poll;
	cq->cqx.end_poll = end_poll;
	cq->cqx.read_opcode = read_opcode;
	cq->cqx.read_vendor_err = read_vendor_err;
	cq->cqx.read_wc_flags = read_wc_flags;
	if (attr->wc_flags & IBV_WC_EX_WITH_BYTE_LEN)
		cq->cqx.read_byte_len = read_byte_len;
	if (attr->wc_flags & IBV_WC_EX_WITH_IMM)
		cq->cqx.read_imm_data = read_imm_data;
	if (attr->wc_flags & IBV_WC_EX_WITH_QP_NUM)
		cq->cqx.read_qp_num = read_qp_num;
	if (attr->wc_flags & IBV_WC_EX_WITH_SRC_QP)
		cq->cqx.read_src_qp = read_src_qp;
	if (attr->wc_flags & IBV_WC_EX_WITH_SLID)
		cq->cqx.read_slid = read_slid;
	if (attr->wc_flags & IBV_WC_EX_WITH_SL)
		cq->cqx.read_sl = read_zero8;
	if (attr->wc_flags & IBV_WC_EX_WITH_DLID_PATH_BITS)
		cq->cqx.read_dlid_path_bits = read_zero8;
	if (efa_attr && (efa_attr->wc_flags & EFADV_WC_EX_WITH_SGID))
		cq->dv.wc_read_sgid = wc_read_sgid;
	if (efa_attr && (efa_attr->wc_flags & EFADV_WC_EX_WITH_IS_UNSOLICITED))
		cq->dv.wc_is_unsolicited = wc_is_unsolicited;
	pthread_mutex_lock(&dev->lock);
	cq->next = dev->cqs;
	dev->cqs = cq;
	pthread_mutex_unlock(&dev->lock);
	return &cq->cqx;
}

struct ibv_cq_ex *sefa_create_cq_ex(struct ibv_context *ctx, struct ibv_cq_init_attr_ex *attr)
{
	return create_cq(ctx, attr, NULL);
}

struct ibv_cq_ex *sefa_efadv_create_cq(struct ibv_context *ctx, struct ibv_cq_init_attr_ex *attr,
				       struct efadv_cq_init_attr *efa_attr, uint32_t inlen)
{
	uint64_t supported = 0;

	if (!sefa_is_dev(ctx)) {
		errno = EOPNOTSUPP;
		return NULL;
	}
	if (inlen < offsetof(struct efadv_cq_init_attr, wc_flags) + sizeof(efa_attr->wc_flags) ||
	    efa_attr->comp_mask) {
		errno = EINVAL;
		return NULL;
	}
	if (sefa_cfg.prof.device_caps & EFADV_DEVICE_ATTR_CAPS_CQ_WITH_SGID)
		supported |= EFADV_WC_EX_WITH_SGID;
	if (sefa_cfg.prof.device_caps & EFADV_DEVICE_ATTR_CAPS_UNSOLICITED_WRITE_RECV)
		supported |= EFADV_WC_EX_WITH_IS_UNSOLICITED;
	if (efa_attr->wc_flags & ~supported) {
		SEFA_INFO("efadv_create_cq: wc_flags %#llx not supported by profile %s",
			  (unsigned long long)efa_attr->wc_flags, sefa_cfg.prof.name);
		errno = EOPNOTSUPP;
		return NULL;
	}
	return create_cq(ctx, attr, efa_attr);
}

struct efadv_cq *sefa_efadv_cq_from_ibv_cq_ex(struct ibv_cq_ex *cqx)
{
	return &to_cq(cqx)->dv;
}

SEFA_EXPORT struct ibv_cq *ibv_create_cq(struct ibv_context *ctx, int cqe, void *cq_context,
					 struct ibv_comp_channel *channel, int comp_vector)
{
	struct ibv_cq_init_attr_ex attr = {
		.cqe = (uint32_t)cqe, .cq_context = cq_context, .channel = channel,
		.comp_vector = (uint32_t)comp_vector, .wc_flags = IBV_WC_STANDARD_FLAGS,
	};
	struct ibv_cq_ex *cqx = create_cq(ctx, &attr, NULL);

	return cqx ? ibv_cq_ex_to_cq(cqx) : NULL;
}

SEFA_EXPORT int ibv_destroy_cq(struct ibv_cq *ibcq)
{
	struct sefa_cq *cq = (struct sefa_cq *)ibcq;
	struct sefa_dev *dev = cq->dev;

	pthread_mutex_lock(&dev->lock);
	for (struct sefa_qp *qp = dev->qps; qp; qp = qp->next)
		if (qp->scq == cq || qp->rcq == cq) {
			pthread_mutex_unlock(&dev->lock);
			return EBUSY;
		}
	for (struct sefa_cq **p = &dev->cqs; *p; p = &(*p)->next)
		if (*p == cq) {
			*p = cq->next;
			break;
		}
	pthread_mutex_unlock(&dev->lock);
	pthread_mutex_destroy(&cq->lock);
	free(cq->ring);
	free(cq);
	return 0;
}

/* Called by the device thread with dev->lock held. */
void sefa_cq_push(struct sefa_cq *cq, const struct sefa_cqe *cqe)
{
	pthread_mutex_lock(&cq->lock);
	if (cq->tail - cq->head == cq->size && !cq->warned_overrun) {
		/* real EFA would overrun and lose completions; keep going, say so */
		SEFA_ERR("CQ of %u entries is full: a real EFA CQ would overrun here", cq->size);
		cq->warned_overrun = true;
	}
	if (cq->tail - cq->head == cq->cap) {
		uint32_t ncap = cq->cap * 2, n = cq->tail - cq->head;
		struct sefa_cqe *r = calloc(ncap, sizeof(*r));

		if (!r) {
			SEFA_ERR("out of memory growing a CQ: a completion is lost");
			pthread_mutex_unlock(&cq->lock);
			return;
		}
		for (uint32_t i = 0; i < n; i++)
			r[i] = cq->ring[(cq->head + i) & (cq->cap - 1)];
		free(cq->ring);
		cq->ring = r;
		cq->cap = ncap;
		cq->head = 0;
		cq->tail = n;
	}
	cq->ring[cq->tail & (cq->cap - 1)] = *cqe;
	cq->tail++;
	pthread_mutex_unlock(&cq->lock);
}

/* Drops the completions of a QP being destroyed (dev->lock held). */
void sefa_cq_purge_qp(struct sefa_cq *cq, uint32_t qpn)
{
	uint32_t w;

	pthread_mutex_lock(&cq->lock);
	w = cq->head;
	for (uint32_t r = cq->head; r != cq->tail; r++) {
		struct sefa_cqe *c = &cq->ring[r & (cq->cap - 1)];

		if (c->qp_num == qpn)
			continue;
		cq->ring[w & (cq->cap - 1)] = *c;
		w++;
	}
	cq->tail = w;
	pthread_mutex_unlock(&cq->lock);
}

int sefa_poll_cq(struct ibv_cq *ibcq, int n, struct ibv_wc *wc)
{
	struct sefa_cq *cq = (struct sefa_cq *)ibcq;
	int i;

	pthread_mutex_lock(&cq->lock);
	if (cq->head == cq->tail && !polls_open) {
		pthread_mutex_unlock(&cq->lock);
		sefa_engine_assist(cq->dev);
		pthread_mutex_lock(&cq->lock);
	}
	for (i = 0; i < n && !load_next(cq); i++) {
		struct sefa_cqe *c = cq->cur;

		memset(&wc[i], 0, sizeof(wc[i]));
		wc[i].wr_id = cq->cqx.wr_id;
		wc[i].status = cq->cqx.status;
		wc[i].vendor_err = c->status;
		wc[i].opcode = c->opcode;
		wc[i].byte_len = c->is_send ? 0 : c->byte_len;
		wc[i].qp_num = c->qp_num;
		wc[i].src_qp = c->src_qp;
		wc[i].slid = c->slid;
		if (c->has_imm) {
			wc[i].wc_flags = IBV_WC_WITH_IMM;
			wc[i].imm_data = htobe32(c->imm);
		}
		consume(cq);
	}
	pthread_mutex_unlock(&cq->lock);
	return i;
}
