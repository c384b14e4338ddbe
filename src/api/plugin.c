/*
 * The internal plugin interface: global state (devices, reference count),
 * validation of everything NCCL hands us, and the device lock around each
 * call into the protocol layer.
 */
#include <config.h>

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rdma/fi_errno.h>

#include "api/plugin.h"
#include "core/config.h"
#include "core/log.h"
#include "protocol/proto.h"
#include "transport/fabric.h"
#include "transport/hmem.h"
#include "transport/mr.h"
#include "transport/rails.h"

/* NCCL's devices are rail groups of our devices (transport/rails.c). */
struct nccl_dev {
	struct fabnet_dev *primary;
	char name[256];   /* "eth1" or "eth1+eth2+..." */
	int speed_mbps;   /* the rails' total */
};

static pthread_mutex_t global_lock = PTHREAD_MUTEX_INITIALIZER;
static int init_refs;
static int nfabdevs;
static struct fabnet_dev *fabdevs;
static int ndevs;
static struct nccl_dev *devs;

static int build_nccl_devs(void)
{
	int *primaries = calloc((size_t)nfabdevs, sizeof(int));

	devs = calloc((size_t)nfabdevs, sizeof(*devs));
	if (!primaries || !devs) {
		free(primaries);
		free(devs);
		devs = NULL;
		return -1;
	}
	ndevs = fabnet_rails_plan(fabdevs, nfabdevs, fabnet_config(), primaries);
	for (int i = 0; i < ndevs; i++) {
		struct fabnet_dev *p = &fabdevs[primaries[i]];
		devs[i].primary = p;
		for (int k = 0; k < p->nrails; k++) {
			size_t used = strlen(devs[i].name);
			snprintf(devs[i].name + used, sizeof(devs[i].name) - used, "%s%s", k ? "+" : "",
				 p->rails[k]->name);
			devs[i].speed_mbps += p->rails[k]->speed_mbps;
		}
	}
	free(primaries);
	return 0;
}

/* fabnet is loaded but cannot serve: say so loudly, once per failed init, so
 * that NCCL's fallback (logged by NCCL at INFO only) is never silent. */
static void not_serving(const char *reason)
{
	FN_WARN("fabnet: NOT serving this job: %s. init fails, so NCCL falls back to another "
		"network (its log says which: NCCL_DEBUG=INFO). Run `fabnet-info --doctor` for "
		"the cause and what to do.", reason);
}

ncclResult_t fabnet_api_init(ncclDebugLogger_t logger)
{
	ncclResult_t res = ncclSuccess;
	char why[512];

	pthread_mutex_lock(&global_lock);
	if (logger)
		fabnet_log_set_logger(logger);
	if (init_refs++ > 0 && devs)
		goto out;
	if (fabnet_config_load_err(why, sizeof(why))) {
		not_serving(why);
		res = ncclInvalidArgument;
		init_refs--;
		goto out;
	}
	if (!devs) {
		int n;
		why[0] = '\0';
		n = fabnet_fabric_discover_why(fabnet_config(), &fabdevs, why, sizeof(why));
		if (n <= 0) {
			if (!why[0])
				snprintf(why, sizeof(why), "no usable network device (%s)",
					 n ? fi_strerror(-n) : "none found");
			not_serving(why);
			res = ncclSystemError;
			init_refs--;
			goto out;
		}
		nfabdevs = n;
		if (build_nccl_devs()) {
			fabnet_fabric_free(fabdevs, nfabdevs);
			fabdevs = NULL;
			nfabdevs = 0;
			not_serving("out of memory building the NCCL device table");
			res = ncclSystemError;
			init_refs--;
			goto out;
		}
	}
out:
	pthread_mutex_unlock(&global_lock);
	return res;
}

ncclResult_t fabnet_api_fini(void)
{
	pthread_mutex_lock(&global_lock);
	if (init_refs > 0 && --init_refs == 0 && devs) {
		for (int i = 0; i < ndevs; i++)
			fabnet_proto_dev_fini(devs[i].primary);
		fabnet_fabric_free(fabdevs, nfabdevs);
		free(devs);
		fabdevs = NULL;
		devs = NULL;
		nfabdevs = ndevs = 0;
	}
	pthread_mutex_unlock(&global_lock);
	return ncclSuccess;
}

static struct fabnet_dev *get_dev(int dev, const char *call)
{
	if (!devs) {
		FN_WARN("fabnet: %s called before init", call);
		return NULL;
	}
	if (dev < 0 || dev >= ndevs) {
		FN_WARN("fabnet: %s: device %d does not exist (%d devices)", call, dev, ndevs);
		return NULL;
	}
	return devs[dev].primary;
}

ncclResult_t fabnet_api_devices(int *ndev)
{
	if (!ndev)
		return ncclInvalidArgument;
	*ndev = ndevs;
	return ncclSuccess;
}

/* The memory kinds a rail group takes: only what every rail can register
 * (each rail probed once). Called with the primary's lock held. */
static int group_ptr_support(struct fabnet_dev *d)
{
	int support = ~0;

	for (int k = 0; k < d->nrails; k++) {
		fabnet_hmem_probe(d->rails[k]);
		support &= d->rails[k]->ptr_support;
	}
	return support;
}

ncclResult_t fabnet_api_get_properties(int dev, struct fabnet_props *p)
{
	struct fabnet_dev *d = get_dev(dev, "getProperties");

	if (!d || !p)
		return ncclInvalidArgument;
	pthread_mutex_lock(&d->lock);
	memset(p, 0, sizeof(*p));
	p->ptr_support = group_ptr_support(d);
	pthread_mutex_unlock(&d->lock);
	p->name = devs[dev].name;
	p->pci_path = d->pci_path;
	p->guid = d->guid;
	p->reg_is_global = 1; /* registrations belong to the device, not to a comm */
	p->force_flush = 0;
	p->speed = devs[dev].speed_mbps;
	p->port = 1;
	p->latency = 0;
	p->max_comms = FABNET_MAX_COMMS;
	p->max_recvs = FABNET_MAX_RECVS;
	/* test() reports sizes as int. */
	p->max_p2p_bytes = INT_MAX;
	p->max_coll_bytes = INT_MAX;
	p->max_multi_request = 1;
	return ncclSuccess;
}

static ncclResult_t open_dev(struct fabnet_dev *d)
{
	int rc = fabnet_proto_dev_init(d);

	if (rc) {
		FN_WARN("fabnet: device %s could not be opened: %s", d->name, fi_strerror(-rc));
		return ncclSystemError;
	}
	return ncclSuccess;
}

ncclResult_t fabnet_api_listen(int dev, void *handle, void **listen_comm)
{
	struct fabnet_dev *d = get_dev(dev, "listen");
	struct fabnet_comm *c = NULL;
	ncclResult_t res;

	if (!d || !handle || !listen_comm)
		return ncclInvalidArgument;
	*listen_comm = NULL;
	pthread_mutex_lock(&d->lock);
	res = open_dev(d);
	if (!res)
		res = fabnet_proto_listen(d, handle, &c);
	pthread_mutex_unlock(&d->lock);
	*listen_comm = c;
	return res;
}

ncclResult_t fabnet_api_connect(int dev, void *handle, void **send_comm)
{
	struct fabnet_dev *d = get_dev(dev, "connect");
	struct fabnet_comm *c = NULL;
	ncclResult_t res;

	if (!d || !handle || !send_comm) {
		FN_WARN("fabnet: connect: invalid arguments (device %d, handle %p)", dev, handle);
		return ncclInvalidArgument;
	}
	*send_comm = NULL;
	pthread_mutex_lock(&d->lock);
	res = open_dev(d);
	if (!res) {
		fabnet_dev_progress(d);
		res = fabnet_proto_connect(d, handle, &c);
	}
	pthread_mutex_unlock(&d->lock);
	*send_comm = c;
	return res;
}

static struct fabnet_comm *as_comm(void *p, int kind, const char *call)
{
	struct fabnet_comm *c = p;

	if (!c || c->magic != FABNET_COMM_MAGIC || c->closing) {
		FN_WARN("fabnet: %s: %p is not a live fabnet comm", call, p);
		return NULL;
	}
	if (kind && c->kind != kind) {
		FN_WARN("fabnet: %s: comm %u is a %s comm", call, c->id,
			c->kind == FABNET_LISTEN ? "listen" : c->kind == FABNET_SEND ? "send" : "recv");
		return NULL;
	}
	return c;
}

ncclResult_t fabnet_api_accept(void *listen_comm, void **recv_comm)
{
	struct fabnet_comm *l = as_comm(listen_comm, FABNET_LISTEN, "accept");
	struct fabnet_comm *c = NULL;
	ncclResult_t res;

	if (!l || !recv_comm)
		return ncclInvalidArgument;
	*recv_comm = NULL;
	pthread_mutex_lock(&l->dev->lock);
	fabnet_dev_progress(l->dev);
	res = fabnet_proto_accept(l, &c);
	pthread_mutex_unlock(&l->dev->lock);
	*recv_comm = c;
	return res;
}

/* Host and accelerator memory, by address or by dma-buf, share one path. */
static ncclResult_t reg_common(void *comm, void *data, size_t size, int type, int fd,
			       uint64_t offset, void **mhandle, const char *call)
{
	struct fabnet_comm *c = as_comm(comm, 0, call);
	struct fabnet_rmr *rmr = NULL;
	struct fabnet_dev *d;
	int rc, support, dmabuf = 0;

	if (!c || !mhandle || !data || size == 0) {
		FN_WARN("fabnet: %s: invalid arguments (buffer %p, %zu bytes)", call, data, size);
		return ncclInvalidArgument;
	}
	*mhandle = NULL;
	d = c->dev;
	pthread_mutex_lock(&d->lock);
	support = group_ptr_support(d);
	if (type != NCCL_PTR_HOST && !(type == NCCL_PTR_CUDA && (support & NCCL_PTR_CUDA))) {
		pthread_mutex_unlock(&d->lock);
		FN_WARN("fabnet: %s: memory of type %d cannot be registered on %s: %s", call, type,
			d->name, type == NCCL_PTR_CUDA ? d->why_no_cuda : "unknown pointer type");
		return ncclInvalidArgument;
	}
	if (fd >= 0 && !(support & NCCL_PTR_DMABUF)) {
		/* every dma-buf NCCL hands us is accounted for in the log */
		FN_INFO(NCCL_NET, "fabnet: %s on %s: %zu bytes of %s memory at %p registered by "
			"address instead of dma-buf: %s", call, d->name, size,
			type == NCCL_PTR_CUDA ? "CUDA" : "host", data, d->why_no_dmabuf);
		fd = -1;
	} else if (fd >= 0) {
		dmabuf = 1;
	}
	rc = fabnet_proto_reg(d, data, size, type, fd, offset, &rmr);
	pthread_mutex_unlock(&d->lock);
	if (rc)
		return ncclSystemError;
	if (dmabuf)
		FN_INFO(NCCL_NET, "fabnet: %s on %s: %zu bytes of %s memory at %p registered as a "
			"dma-buf (fd %d, offset %llu)", call, d->name, size,
			type == NCCL_PTR_CUDA ? "CUDA" : "host", data, fd, (unsigned long long)offset);
	*mhandle = rmr;
	return ncclSuccess;
}

ncclResult_t fabnet_api_reg_mr(void *comm, void *data, size_t size, int type, void **mhandle)
{
	return reg_common(comm, data, size, type, -1, 0, mhandle, "regMr");
}

ncclResult_t fabnet_api_reg_mr_dmabuf(void *comm, void *data, size_t size, int type,
				      uint64_t offset, int fd, void **mhandle)
{
	if (fd < 0) {
		FN_WARN("fabnet: regMrDmaBuf: invalid file descriptor %d", fd);
		return ncclInvalidArgument;
	}
	return reg_common(comm, data, size, type, fd, offset, mhandle, "regMrDmaBuf");
}

static struct fabnet_rmr *as_mr(void *p)
{
	struct fabnet_rmr *m = p;
	return m && m->magic == FABNET_RMR_MAGIC ? m : NULL;
}

ncclResult_t fabnet_api_dereg_mr(void *comm, void *mhandle)
{
	struct fabnet_rmr *m = as_mr(mhandle);
	struct fabnet_dev *d;

	if (!m) {
		FN_WARN("fabnet: deregMr: %p is not a fabnet memory handle", mhandle);
		return ncclInvalidArgument;
	}
	d = m->dev;
	pthread_mutex_lock(&d->lock);
	fabnet_proto_dereg(m);
	pthread_mutex_unlock(&d->lock);
	return ncclSuccess;
}

ncclResult_t fabnet_api_isend(void *send_comm, void *data, size_t size, int tag, void *mhandle,
			      void **request)
{
	struct fabnet_comm *c = as_comm(send_comm, FABNET_SEND, "isend");
	struct fabnet_req *r = NULL;
	struct fabnet_rmr *mr = as_mr(mhandle);
	ncclResult_t res;

	if (!c || !request || (size && !data) || (mhandle && !mr))
		return ncclInvalidArgument;
	if (size > INT_MAX) {
		FN_WARN("fabnet: isend of %zu bytes exceeds maxP2pBytes (%d)", size, INT_MAX);
		return ncclInvalidArgument;
	}
	*request = NULL;
	pthread_mutex_lock(&c->dev->lock);
	res = c->state == FABNET_CONNECTING ? ncclInternalError
					    : fabnet_proto_isend(c, data, size, tag, mr, &r);
	pthread_mutex_unlock(&c->dev->lock);
	*request = r;
	return res;
}

ncclResult_t fabnet_api_irecv(void *recv_comm, int n, void **data, const size_t *sizes,
			      const int *tags, void **mhandles, void **request)
{
	struct fabnet_comm *c = as_comm(recv_comm, FABNET_RECV, "irecv");
	struct fabnet_rmr *mrs[FABNET_MAX_RECVS];
	uint64_t sz[FABNET_MAX_RECVS];
	struct fabnet_req *r = NULL;
	ncclResult_t res;

	if (!c || !request || n < 1 || n > FABNET_MAX_RECVS || !data || !sizes || !tags) {
		FN_WARN("fabnet: irecv: invalid arguments (n = %d, at most %d)", n,
			FABNET_MAX_RECVS);
		return ncclInvalidArgument;
	}
	*request = NULL;
	for (int i = 0; i < n; i++) {
		mrs[i] = mhandles ? as_mr(mhandles[i]) : NULL;
		if (mhandles && mhandles[i] && !mrs[i])
			return ncclInvalidArgument;
		if (sizes[i] && !data[i])
			return ncclInvalidArgument;
		sz[i] = sizes[i];
	}
	pthread_mutex_lock(&c->dev->lock);
	res = fabnet_proto_irecv(c, n, data, sz, tags, mrs, &r);
	pthread_mutex_unlock(&c->dev->lock);
	*request = r;
	return res;
}

ncclResult_t fabnet_api_iflush(void *recv_comm, int n, void **data, const int *sizes,
			       void **mhandles, void **request)
{
	struct fabnet_comm *c = as_comm(recv_comm, FABNET_RECV, "iflush");
	struct fabnet_rmr *mrs[FABNET_MAX_RECVS];
	struct fabnet_req *r = NULL;
	ncclResult_t res;

	if (!c || !request || n < 1 || n > FABNET_MAX_RECVS || !data || !sizes) {
		FN_WARN("fabnet: iflush: invalid arguments (n = %d)", n);
		return ncclInvalidArgument;
	}
	*request = NULL;
	for (int i = 0; i < n; i++) {
		mrs[i] = mhandles ? as_mr(mhandles[i]) : NULL;
		if (mhandles && mhandles[i] && !mrs[i])
			return ncclInvalidArgument;
	}
	pthread_mutex_lock(&c->dev->lock);
	res = fabnet_proto_iflush(c, n, data, sizes, mrs, &r);
	pthread_mutex_unlock(&c->dev->lock);
	*request = r;
	return res;
}

ncclResult_t fabnet_api_test(void *request, int *done, int *sizes)
{
	struct fabnet_req *r = request;
	uint64_t sz[FABNET_MAX_RECVS];
	struct fabnet_dev *d;
	ncclResult_t res;
	int n;

	if (!r || r->magic != FABNET_REQ_MAGIC || !done) {
		FN_WARN("fabnet: test: %p is not a live fabnet request", request);
		return ncclInvalidArgument;
	}
	d = r->comm->dev;
	n = r->kind == FABNET_REQ_RECV ? r->u.recv.n : r->kind == FABNET_REQ_SEND ? 1 : 0;
	pthread_mutex_lock(&d->lock);
	res = fabnet_proto_test(r, done, sz);
	pthread_mutex_unlock(&d->lock);
	if (*done && sizes)
		for (int i = 0; i < n; i++)
			sizes[i] = (int)sz[i];
	return res;
}

ncclResult_t fabnet_api_close(void *comm, int kind)
{
	static const char *const names[] = {"", "closeListen", "closeSend", "closeRecv"};
	struct fabnet_comm *c = as_comm(comm, kind, names[kind]);
	struct fabnet_dev *d;
	ncclResult_t res;

	if (!c)
		return ncclInvalidArgument;
	d = c->dev;
	pthread_mutex_lock(&d->lock);
	res = fabnet_proto_close(c);
	pthread_mutex_unlock(&d->lock);
	return res;
}
