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
	fabnet_req_release_abandoned(r);
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
	r = fabnet_req_new(comm, FABNET_REQ_FLUSH);
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
		fabnet_req_free(r);
		return ncclSystemError;
	}
	r->msg_pending = 1;
	*out = r;
	return ncclSuccess;
}
