/*
 * The exported NCCL tables, ncclNetPlugin_v6 .. ncclNetPlugin_v12. Each entry
 * converts one version's argument types to the internal interface (plugin.h)
 * and back; nothing else lives here. These seven symbols are the only ones
 * the shared object exports.
 */
#include <config.h>

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "api/plugin.h"
#include "core/log.h"

#define EXPORT __attribute__((visibility("default")))
#define LISTEN_KIND 1
#define SEND_KIND 2
#define RECV_KIND 3

/* ---- shared by every version ------------------------------------------------ */
static ncclResult_t init_plain(ncclDebugLogger_t logger) { return fabnet_api_init(logger); }
static ncclResult_t init_prof(ncclDebugLogger_t logger, ncclProfilerCallback_t prof)
{
	return fabnet_api_init(logger);
}
static ncclResult_t devices(int *ndev) { return fabnet_api_devices(ndev); }
static ncclResult_t listen_plain(int dev, void *handle, void **comm)
{
	return fabnet_api_listen(dev, handle, comm);
}
static ncclResult_t connect_plain(int dev, void *handle, void **comm)
{
	return fabnet_api_connect(dev, handle, comm);
}
static ncclResult_t accept_plain(void *l, void **comm) { return fabnet_api_accept(l, comm); }
static ncclResult_t connect_dev(int dev, void *handle, void **comm, ncclNetDeviceHandle_t **dc)
{
	return fabnet_api_connect(dev, handle, comm);
}
static ncclResult_t accept_dev(void *l, void **comm, ncclNetDeviceHandle_t **dc)
{
	return fabnet_api_accept(l, comm);
}
static ncclResult_t reg_mr_int(void *comm, void *data, int size, int type, void **mh)
{
	if (size < 0)
		return ncclInvalidArgument;
	return fabnet_api_reg_mr(comm, data, (size_t)size, type, mh);
}
static ncclResult_t reg_mr(void *comm, void *data, size_t size, int type, void **mh)
{
	return fabnet_api_reg_mr(comm, data, size, type, mh);
}
static ncclResult_t reg_mr_dmabuf(void *comm, void *data, size_t size, int type, uint64_t off,
				  int fd, void **mh)
{
	return fabnet_api_reg_mr_dmabuf(comm, data, size, type, off, fd, mh);
}
static ncclResult_t dereg_mr(void *comm, void *mh) { return fabnet_api_dereg_mr(comm, mh); }
static ncclResult_t isend_int(void *comm, void *data, int size, int tag, void *mh, void **req)
{
	if (size < 0)
		return ncclInvalidArgument;
	return fabnet_api_isend(comm, data, (size_t)size, tag, mh, req);
}
static ncclResult_t isend(void *comm, void *data, size_t size, int tag, void *mh, void **req)
{
	return fabnet_api_isend(comm, data, size, tag, mh, req);
}
static ncclResult_t isend_prof(void *comm, void *data, size_t size, int tag, void *mh,
			       void *phandle, void **req)
{
	return fabnet_api_isend(comm, data, size, tag, mh, req);
}
static ncclResult_t irecv_int(void *comm, int n, void **data, int *sizes, int *tags, void **mh,
			      void **req)
{
	size_t sz[8];

	if (n < 1 || n > 8 || !sizes)
		return fabnet_api_irecv(comm, n, data, NULL, tags, mh, req);
	for (int i = 0; i < n; i++) {
		if (sizes[i] < 0)
			return ncclInvalidArgument;
		sz[i] = (size_t)sizes[i];
	}
	return fabnet_api_irecv(comm, n, data, sz, tags, mh, req);
}
static ncclResult_t irecv(void *comm, int n, void **data, size_t *sizes, int *tags, void **mh,
			  void **req)
{
	return fabnet_api_irecv(comm, n, data, sizes, tags, mh, req);
}
static ncclResult_t irecv_prof(void *comm, int n, void **data, size_t *sizes, int *tags,
			       void **mh, void **phandles, void **req)
{
	return fabnet_api_irecv(comm, n, data, sizes, tags, mh, req);
}
static ncclResult_t iflush(void *comm, int n, void **data, int *sizes, void **mh, void **req)
{
	return fabnet_api_iflush(comm, n, data, sizes, mh, req);
}
static ncclResult_t test(void *req, int *done, int *sizes) { return fabnet_api_test(req, done, sizes); }
static ncclResult_t close_send(void *comm) { return fabnet_api_close(comm, SEND_KIND); }
static ncclResult_t close_recv(void *comm) { return fabnet_api_close(comm, RECV_KIND); }
static ncclResult_t close_listen(void *comm) { return fabnet_api_close(comm, LISTEN_KIND); }

/* Properties: filled from the internal struct, field by field per version. */
#define FILL_PROPS_COMMON(out, p)              \
	do {                                   \
		(out)->name = (p).name;        \
		(out)->pciPath = (p).pci_path; \
		(out)->guid = (p).guid;        \
		(out)->ptrSupport = (p).ptr_support; \
		(out)->speed = (p).speed;      \
		(out)->port = (p).port;        \
		(out)->latency = (p).latency;  \
		(out)->maxComms = (p).max_comms; \
		(out)->maxRecvs = (p).max_recvs; \
	} while (0)

static ncclResult_t props_v6(int dev, ncclNetProperties_v6_t *out)
{
	struct fabnet_props p;
	ncclResult_t res = out ? fabnet_api_get_properties(dev, &p) : ncclInvalidArgument;

	if (res == ncclSuccess)
		FILL_PROPS_COMMON(out, p);
	return res;
}

static ncclResult_t props_v7(int dev, ncclNetProperties_v7_t *out)
{
	struct fabnet_props p;
	ncclResult_t res = out ? fabnet_api_get_properties(dev, &p) : ncclInvalidArgument;

	if (res == ncclSuccess) {
		FILL_PROPS_COMMON(out, p);
		out->netDeviceType = NCCL_NET_DEVICE_HOST;
		out->netDeviceVersion = 0;
	}
	return res;
}

static ncclResult_t props_v8(int dev, ncclNetProperties_v8_t *out)
{
	struct fabnet_props p;
	ncclResult_t res = out ? fabnet_api_get_properties(dev, &p) : ncclInvalidArgument;

	if (res == ncclSuccess) {
		FILL_PROPS_COMMON(out, p);
		out->regIsGlobal = p.reg_is_global;
		out->netDeviceType = NCCL_NET_DEVICE_HOST;
		out->netDeviceVersion = 0;
	}
	return res;
}

/* v9 and v10 share a layout; v11 adds maxMultiRequestSize; v12 widens vProps. */
#define FILL_PROPS_V9(out, p, dev)                         \
	do {                                               \
		FILL_PROPS_COMMON(out, p);                 \
		(out)->regIsGlobal = (p).reg_is_global;    \
		(out)->forceFlush = (p).force_flush;       \
		(out)->netDeviceType = NCCL_NET_DEVICE_HOST; \
		(out)->netDeviceVersion = 0;               \
		(out)->vProps.ndevs = 1;                   \
		(out)->vProps.devs[0] = (dev);             \
		(out)->maxP2pBytes = (p).max_p2p_bytes;    \
		(out)->maxCollBytes = (p).max_coll_bytes;  \
	} while (0)

static ncclResult_t props_v9(int dev, ncclNetProperties_v9_t *out)
{
	struct fabnet_props p;
	ncclResult_t res = out ? fabnet_api_get_properties(dev, &p) : ncclInvalidArgument;

	if (res == ncclSuccess) {
		memset(out, 0, sizeof(*out));
		FILL_PROPS_V9(out, p, dev);
	}
	return res;
}

static ncclResult_t props_v11(int dev, ncclNetProperties_v11_t *out)
{
	struct fabnet_props p;
	ncclResult_t res = out ? fabnet_api_get_properties(dev, &p) : ncclInvalidArgument;

	if (res == ncclSuccess) {
		memset(out, 0, sizeof(*out));
		FILL_PROPS_V9(out, p, dev);
		out->maxMultiRequestSize = p.max_multi_request;
	}
	return res;
}

static ncclResult_t props_v12(int dev, ncclNetProperties_v12_t *out)
{
	struct fabnet_props p;
	ncclResult_t res = out ? fabnet_api_get_properties(dev, &p) : ncclInvalidArgument;

	if (res == ncclSuccess) {
		memset(out, 0, sizeof(*out));
		FILL_PROPS_V9(out, p, dev);
		out->maxMultiRequestSize = p.max_multi_request;
		out->railId = -1;  /* NCCL_NET_ID_UNDEF: rails come with topology support */
		out->planeId = -1;
	}
	return res;
}

/* ---- v10: per-connection config (traffic class: not used by libfabric RDM) - */
static ncclResult_t connect_v10(int dev, ncclNetCommConfig_v10_t *cfg, void *handle,
				void **comm, ncclNetDeviceHandle_t **dc)
{
	return fabnet_api_connect(dev, handle, comm);
}

/* ---- v11 / v12: a context per NCCL communicator --------------------------- */
#define CTX_MAGIC 0x464e4358u /* "FNCX" */
struct fabnet_ctx {
	uint32_t magic;
	uint64_t comm_id;
	ncclNetAttr_v11_t attr;
};

static ncclResult_t init_ctx(void **ctx, uint64_t comm_id, ncclNetCommConfig_v11_t *config,
			     ncclDebugLogger_t logger, ncclProfilerCallback_t prof)
{
	struct fabnet_ctx *c;
	ncclResult_t res;

	if (!ctx)
		return ncclInvalidArgument;
	*ctx = NULL;
	res = fabnet_api_init(logger);
	if (res)
		return res;
	c = calloc(1, sizeof(*c));
	if (!c) {
		fabnet_api_fini();
		return ncclSystemError;
	}
	c->magic = CTX_MAGIC;
	c->comm_id = comm_id;
	*ctx = c;
	return ncclSuccess;
}

static struct fabnet_ctx *as_ctx(void *p)
{
	struct fabnet_ctx *c = p;
	return c && c->magic == CTX_MAGIC ? c : NULL;
}

static ncclResult_t finalize_ctx(void *ctx)
{
	struct fabnet_ctx *c = as_ctx(ctx);

	if (!c) {
		FN_WARN("fabnet: finalize: %p is not a fabnet context", ctx);
		return ncclInvalidArgument;
	}
	c->magic = 0;
	free(c);
	return fabnet_api_fini();
}

static ncclResult_t listen_ctx(void *ctx, int dev, void *handle, void **comm)
{
	return as_ctx(ctx) ? fabnet_api_listen(dev, handle, comm) : ncclInvalidArgument;
}

static ncclResult_t connect_ctx(void *ctx, int dev, void *handle, void **comm,
				ncclNetDeviceHandle_t **dc)
{
	return as_ctx(ctx) ? fabnet_api_connect(dev, handle, comm) : ncclInvalidArgument;
}

static ncclResult_t set_net_attr(void *ctx, ncclNetAttr_v11_t *attr)
{
	struct fabnet_ctx *c = as_ctx(ctx);

	if (!c || !attr)
		return ncclInvalidArgument;
	c->attr = *attr; /* hints only: the scheduler has no use for them yet */
	return ncclSuccess;
}

/* ---- the tables ------------------------------------------------------------- */
EXPORT const ncclNet_v6_t ncclNetPlugin_v6 = {
	.name = FABNET_PLUGIN_NAME, .init = init_plain, .devices = devices,
	.getProperties = props_v6, .listen = listen_plain, .connect = connect_plain,
	.accept = accept_plain, .regMr = reg_mr_int, .regMrDmaBuf = reg_mr_dmabuf,
	.deregMr = dereg_mr, .isend = isend_int, .irecv = irecv_int, .iflush = iflush,
	.test = test, .closeSend = close_send, .closeRecv = close_recv,
	.closeListen = close_listen,
};

EXPORT const ncclNet_v7_t ncclNetPlugin_v7 = {
	.name = FABNET_PLUGIN_NAME, .init = init_plain, .devices = devices,
	.getProperties = props_v7, .listen = listen_plain, .connect = connect_dev,
	.accept = accept_dev, .regMr = reg_mr_int, .regMrDmaBuf = reg_mr_dmabuf,
	.deregMr = dereg_mr, .isend = isend_int, .irecv = irecv_int, .iflush = iflush,
	.test = test, .closeSend = close_send, .closeRecv = close_recv,
	.closeListen = close_listen, .getDeviceMr = NULL, .irecvConsumed = NULL,
};

EXPORT const ncclNet_v8_t ncclNetPlugin_v8 = {
	.name = FABNET_PLUGIN_NAME, .init = init_plain, .devices = devices,
	.getProperties = props_v8, .listen = listen_plain, .connect = connect_dev,
	.accept = accept_dev, .regMr = reg_mr, .regMrDmaBuf = reg_mr_dmabuf,
	.deregMr = dereg_mr, .isend = isend_int, .irecv = irecv_int, .iflush = iflush,
	.test = test, .closeSend = close_send, .closeRecv = close_recv,
	.closeListen = close_listen, .getDeviceMr = NULL, .irecvConsumed = NULL,
};

EXPORT const ncclNet_v9_t ncclNetPlugin_v9 = {
	.name = FABNET_PLUGIN_NAME, .init = init_plain, .devices = devices,
	.getProperties = props_v9, .listen = listen_plain, .connect = connect_dev,
	.accept = accept_dev, .regMr = reg_mr, .regMrDmaBuf = reg_mr_dmabuf,
	.deregMr = dereg_mr, .isend = isend, .irecv = irecv, .iflush = iflush,
	.test = test, .closeSend = close_send, .closeRecv = close_recv,
	.closeListen = close_listen, .getDeviceMr = NULL, .irecvConsumed = NULL,
	.makeVDevice = NULL,
};

EXPORT const ncclNet_v10_t ncclNetPlugin_v10 = {
	.name = FABNET_PLUGIN_NAME, .init = init_prof, .devices = devices,
	.getProperties = props_v9, .listen = listen_plain, .connect = connect_v10,
	.accept = accept_dev, .regMr = reg_mr, .regMrDmaBuf = reg_mr_dmabuf,
	.deregMr = dereg_mr, .isend = isend_prof, .irecv = irecv_prof, .iflush = iflush,
	.test = test, .closeSend = close_send, .closeRecv = close_recv,
	.closeListen = close_listen, .getDeviceMr = NULL, .irecvConsumed = NULL,
	.makeVDevice = NULL,
};

EXPORT const ncclNet_v11_t ncclNetPlugin_v11 = {
	.name = FABNET_PLUGIN_NAME, .init = init_ctx, .devices = devices,
	.getProperties = props_v11, .listen = listen_ctx, .connect = connect_ctx,
	.accept = accept_dev, .regMr = reg_mr, .regMrDmaBuf = reg_mr_dmabuf,
	.deregMr = dereg_mr, .isend = isend_prof, .irecv = irecv_prof, .iflush = iflush,
	.test = test, .closeSend = close_send, .closeRecv = close_recv,
	.closeListen = close_listen, .getDeviceMr = NULL, .irecvConsumed = NULL,
	.makeVDevice = NULL, .finalize = finalize_ctx, .setNetAttr = set_net_attr,
};

EXPORT const ncclNet_v12_t ncclNetPlugin_v12 = {
	.name = FABNET_PLUGIN_NAME, .init = init_ctx, .devices = devices,
	.getProperties = props_v12, .listen = listen_ctx, .connect = connect_ctx,
	.accept = accept_dev, .regMr = reg_mr, .regMrDmaBuf = reg_mr_dmabuf,
	.deregMr = dereg_mr, .isend = isend_prof, .irecv = irecv_prof, .iflush = iflush,
	.test = test, .closeSend = close_send, .closeRecv = close_recv,
	.closeListen = close_listen, .getDeviceMr = NULL, .irecvConsumed = NULL,
	.makeVDevice = NULL, .finalize = finalize_ctx, .setNetAttr = set_net_attr,
};
