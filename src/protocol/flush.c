/*
 * GPUDirect flush: a small loopback read from the received buffer, which the
 * NIC orders behind the writes that filled it (or the CUDA driver's call).
 */
#include <config.h>

#include <string.h>

#include "core/config.h"
#include "core/log.h"
#include "protocol/internal.h"
#include "transport/accel.h"

/* ---- flush ------------------------------------------------------------------- */
/* Rail k reads from itself: its own address in its AV, and a sink registered
 * in its domain where the provider wants local registrations. */
static int flush_setup(struct fabnet_dev *dev, struct fabnet_proto_dev *pd, int k)
{
	struct fabnet_dev *rd = fabnet_rail(dev, k);

	if (pd->flush_ready & (1u << k))
		return 0;
	if (fabnet_proto_self(dev, k))
		return -1;
	if (rd->local_mr && fabnet_mr_reg_local(rd, pd->flush_sink, sizeof(pd->flush_sink),
						FI_READ, &pd->flush_mr[k]))
		return -1;
	pd->flush_ready |= 1u << k;
	return 0;
}

static void flush_done(struct fabnet_op *op, int err, const struct fi_cq_data_entry *e)
{
	struct fabnet_req *r = op->owner;

	if (r->msg_pending)
		r->msg_pending--;
	if (err) {
		if (err != FI_ECANCELED && !r->comm->closing)
			FN_WARN("fabnet: flush read on comm %u (%s) failed: %s", r->comm->id,
				r->comm->dev->name, fi_strerror(err));
		r->failed = ncclSystemError;
	}
	fabnet_req_release_abandoned(r);
	fabnet_proto_op_done(r->comm);
}

ncclResult_t fabnet_proto_iflush(struct fabnet_comm *comm, int n, void **data, const int *sizes,
				 struct fabnet_rmr **mrs, struct fabnet_req **out)
{
	struct fabnet_dev *dev = comm->dev;
	struct fabnet_proto_dev *pd = PD(dev);
	int mode = fabnet_config()->gdr_flush, last = -1, nr;
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
	/* Every rail of the comm: a receive's stripes may have come in on any of
	 * them, and a read is ordered only behind writes through its own NIC (as
	 * net_ib flushes on every device of a merged NIC). */
	nr = comm->nrails < mrs[last]->nrails ? comm->nrails : mrs[last]->nrails;
	for (int k = 0; k < nr; k++)
		if (flush_setup(dev, pd, k)) {
			FN_WARN("fabnet: iflush on %s: could not set up the loopback read on rail %d "
				"(%s)", dev->name, k, fabnet_rail(dev, k)->name);
			return ncclSystemError;
		}
	r = fabnet_req_new(comm, FABNET_REQ_FLUSH);
	if (!r) {
		/* Never NULL here: NCCL would read it as "nothing to flush". */
		FN_WARN("fabnet: iflush on comm %u (%s): all %d flush requests are in use (NCCL "
			"tests each flush before the next); failing rather than skipping the flush",
			comm->id, dev->name, FABNET_FLUSH_REQS);
		return ncclInternalError;
	}
	for (int k = 0; k < nr; k++) {
		struct fabnet_op *op = k ? &r->u.flush.rail_op[k - 1] : &r->msg_op;
		memset(op, 0, sizeof(*op));
		op->kind = FABNET_OP_READ;
		op->cb = flush_done;
		op->owner = r;
		op->buf = pd->flush_sink;
		op->len = sizes[last] < 4 ? (size_t)sizes[last] : 4;
		op->desc = pd->flush_mr[k] ? pd->flush_mr[k]->desc : NULL;
		op->peer = pd->self[k];
		op->raddr = fabnet_mr_remote_addr(mrs[last]->mr[k], data[last]);
		op->rkey = mrs[last]->mr[k]->key;
		if (fabnet_proto_post_on(comm, fabnet_rail(dev, k), op)) {
			if (!r->msg_pending) {
				fabnet_req_free(r);
				return ncclSystemError;
			}
			r->failed = ncclSystemError; /* the reads posted still return */
			break;
		}
		r->msg_pending++;
	}
	if (nr > 1 && !comm->flush_rails_logged) {
		comm->flush_rails_logged = 1;
		FN_INFO(NCCL_NET, "fabnet: recv comm %u on %s flushes with a read on each of its %d "
			"rails", comm->id, dev->name, nr);
	}
	*out = r;
	return ncclSuccess;
}
