/*
 * plugin_loader.c: dlopen an NCCL net plugin and drive any table version
 * v6..v12 through one API. See plugin_loader.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "plugin_loader.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ---- logging -------------------------------------------------------------- */

enum { LOG_WARN_ONLY = 0, LOG_INFO_ON = 1, LOG_TRACE_ON = 2 };

static int log_level(void)
{
	const char *d = getenv("NCCL_DEBUG");

	if (!d || !*d)
		return -1; /* unset: WARN still printed */
	if (!strcasecmp(d, "TRACE"))
		return LOG_TRACE_ON;
	if (!strcasecmp(d, "INFO"))
		return LOG_INFO_ON;
	return LOG_WARN_ONLY;
}

static void log_emit(const char *what, const char *file, int line, const char *fmt, va_list ap)
	__attribute__((format(printf, 4, 0)));

static void log_emit(const char *what, const char *file, int line, const char *fmt, va_list ap)
{
	char host[64], msg[2048], out[2400];
	size_t n;

	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	{
		char *dot = strchr(host, '.');
		if (dot)
			*dot = '\0';
	}
	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n && msg[n - 1] == '\n')
		msg[--n] = '\0';
	if (file)
		snprintf(out, sizeof(out), "%s:%d:%ld [-] %s:%d NCCL %s %s\n", host, (int)getpid(),
			 (long)syscall(SYS_gettid), file, line, what, msg);
	else
		snprintf(out, sizeof(out), "%s:%d:%ld [-] NCCL %s %s\n", host, (int)getpid(),
			 (long)syscall(SYS_gettid), what, msg);
	/* one write per line so that ranks sharing stderr do not interleave */
	fputs(out, stderr);
	fflush(stderr);
}

void pl_logger(ncclDebugLogLevel level, unsigned long flags, const char *file, int line,
	       const char *fmt, ...)
{
	int lvl = log_level();
	const char *what;
	va_list ap;

	(void)flags;
	switch (level) {
	case NCCL_LOG_WARN:
		what = "WARN";
		break;
	case NCCL_LOG_ABORT:
		what = "ABORT";
		break;
	case NCCL_LOG_INFO:
		if (lvl < LOG_INFO_ON)
			return;
		what = "INFO";
		file = NULL;
		break;
	case NCCL_LOG_TRACE:
		if (lvl < LOG_TRACE_ON)
			return;
		what = "TRACE";
		break;
	case NCCL_LOG_VERSION:
		if (lvl < 0)
			return;
		what = "VERSION";
		file = NULL;
		break;
	default:
		return;
	}
	va_start(ap, fmt);
	log_emit(what, file, line, fmt, ap);
	va_end(ap);
}

void pl_warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit("WARN", NULL, 0, fmt, ap);
	va_end(ap);
}

void pl_info(const char *fmt, ...)
{
	va_list ap;

	if (log_level() < LOG_INFO_ON)
		return;
	va_start(ap, fmt);
	log_emit("INFO", NULL, 0, fmt, ap);
	va_end(ap);
}

const char *pl_result_str(ncclResult_t r)
{
	switch (r) {
	case ncclSuccess: return "ncclSuccess";
	case ncclUnhandledCudaError: return "ncclUnhandledCudaError";
	case ncclSystemError: return "ncclSystemError";
	case ncclInternalError: return "ncclInternalError";
	case ncclInvalidArgument: return "ncclInvalidArgument";
	case ncclInvalidUsage: return "ncclInvalidUsage";
	case ncclRemoteError: return "ncclRemoteError";
	case ncclInProgress: return "ncclInProgress";
	default: return "unknown ncclResult_t";
	}
}

/* The profiler callback handed to v10+ init: NCCL passes one even when no
 * profiler plugin is loaded; it then records nothing. */
static ncclResult_t pl_profiler(void **eHandle, int type, void *pHandle, int64_t pluginId,
				void *extData)
{
	(void)type;
	(void)pHandle;
	(void)pluginId;
	(void)extData;
	if (eHandle)
		*eHandle = NULL;
	return ncclSuccess;
}

/* ---- loading -------------------------------------------------------------- */

static int env_version(void)
{
	const char *v = getenv("FABNET_ABI_VERSION");
	char *end;
	long x;

	if (!v || !*v)
		return 0;
	errno = 0;
	x = strtol(v, &end, 10);
	if (errno || *end || x < PL_MIN_VERSION || x > PL_MAX_VERSION)
		return -1;
	return (int)x;
}

int pl_open(struct pl_net *net, const char *path, int version)
{
	memset(net, 0, sizeof(*net));
	if (!path || !*path) {
		snprintf(net->err, sizeof(net->err), "no plugin path given");
		return -1;
	}
	snprintf(net->path, sizeof(net->path), "%s", path);
	if (version == 0)
		version = env_version();
	if (version < 0 || (version && (version < PL_MIN_VERSION || version > PL_MAX_VERSION))) {
		snprintf(net->err, sizeof(net->err), "ABI version must be %d..%d (FABNET_ABI_VERSION=%s)",
			 PL_MIN_VERSION, PL_MAX_VERSION, getenv("FABNET_ABI_VERSION") ?
			 getenv("FABNET_ABI_VERSION") : "");
		return -1;
	}
	dlerror();
	net->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!net->dl) {
		const char *e = dlerror();
		snprintf(net->err, sizeof(net->err), "dlopen(%s): %s", path, e ? e : "failed");
		return -1;
	}
	for (int v = version ? version : PL_MAX_VERSION; v >= PL_MIN_VERSION; v--) {
		snprintf(net->symbol, sizeof(net->symbol), "ncclNetPlugin_v%d", v);
		dlerror();
		net->table = dlsym(net->dl, net->symbol);
		if (net->table) {
			net->version = v;
			break;
		}
		if (version)
			break;
	}
	if (!net->table) {
		if (version)
			snprintf(net->err, sizeof(net->err), "%s does not export ncclNetPlugin_v%d", path,
				 version);
		else
			snprintf(net->err, sizeof(net->err),
				 "%s exports none of ncclNetPlugin_v%d..v%d", path, PL_MAX_VERSION,
				 PL_MIN_VERSION);
		dlclose(net->dl);
		net->dl = NULL;
		return -1;
	}
	/* name is the first field of every version's table */
	net->name = ((const ncclNet_v6_t *)net->table)->name;
	if (!net->name)
		net->name = "(null)";
	return 0;
}

void pl_close(struct pl_net *net)
{
	if (net->dl)
		dlclose(net->dl);
	net->dl = NULL;
	net->table = NULL;
}

int pl_has_version(const char *path, int version)
{
	char sym[32];
	void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	int found;

	if (!dl)
		return 0;
	snprintf(sym, sizeof(sym), "ncclNetPlugin_v%d", version);
	found = dlsym(dl, sym) != NULL;
	dlclose(dl);
	return found;
}

/* ---- dispatch ------------------------------------------------------------- */

#define T6 ((const ncclNet_v6_t *)net->table)
#define T7 ((const ncclNet_v7_t *)net->table)
#define T8 ((const ncclNet_v8_t *)net->table)
#define T9 ((const ncclNet_v9_t *)net->table)
#define T10 ((const ncclNet_v10_t *)net->table)
#define T11 ((const ncclNet_v11_t *)net->table)
#define T12 ((const ncclNet_v12_t *)net->table)

/* Calls the same-named member on whichever table is loaded, for members whose
 * signature is identical in every version. */
#define PL_SAME(member, ...)                                                    \
	do {                                                                    \
		switch (net->version) {                                         \
		case 6: return T6->member ? T6->member(__VA_ARGS__) : ncclInternalError; \
		case 7: return T7->member ? T7->member(__VA_ARGS__) : ncclInternalError; \
		case 8: return T8->member ? T8->member(__VA_ARGS__) : ncclInternalError; \
		case 9: return T9->member ? T9->member(__VA_ARGS__) : ncclInternalError; \
		case 10: return T10->member ? T10->member(__VA_ARGS__) : ncclInternalError; \
		case 11: return T11->member ? T11->member(__VA_ARGS__) : ncclInternalError; \
		case 12: return T12->member ? T12->member(__VA_ARGS__) : ncclInternalError; \
		default: return ncclInternalError;                              \
		}                                                               \
	} while (0)

ncclResult_t pl_init(struct pl_net *net)
{
	ncclNetCommConfig_v11_t config = {.trafficClass = NCCL_NET_TRAFFIC_CLASS_UNDEF};
	ncclResult_t r;

	if (!net->table)
		return ncclInternalError;
	if (!net->comm_id) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		net->comm_id = ((uint64_t)getpid() << 32) ^ (uint64_t)ts.tv_nsec ^ 0x9e3779b97f4a7c15ull;
	}
	switch (net->version) {
	case 6: r = T6->init(pl_logger); break;
	case 7: r = T7->init(pl_logger); break;
	case 8: r = T8->init(pl_logger); break;
	case 9: r = T9->init(pl_logger); break;
	case 10: r = T10->init(pl_logger, pl_profiler); break;
	case 11: r = T11->init(&net->ctx, net->comm_id, &config, pl_logger, pl_profiler); break;
	case 12: r = T12->init(&net->ctx, net->comm_id, &config, pl_logger, pl_profiler); break;
	default: return ncclInternalError;
	}
	if (r == ncclSuccess)
		net->initialized = 1;
	return r;
}

ncclResult_t pl_finalize(struct pl_net *net)
{
	ncclResult_t r = ncclSuccess;

	if (!net->table || !net->initialized)
		return ncclSuccess;
	if (net->version == 11 && T11->finalize)
		r = T11->finalize(net->ctx);
	else if (net->version == 12 && T12->finalize)
		r = T12->finalize(net->ctx);
	net->initialized = 0;
	net->ctx = NULL;
	return r;
}

ncclResult_t pl_devices(struct pl_net *net, int *ndev)
{
	PL_SAME(devices, ndev);
}

static void copy_str(char *dst, size_t len, const char *src)
{
	snprintf(dst, len, "%s", src ? src : "");
}

/* Fields every version shares. */
#define PL_COPY_COMMON(p, q)                                           \
	do {                                                           \
		copy_str((p)->name, sizeof((p)->name), (q).name);      \
		copy_str((p)->pciPath, sizeof((p)->pciPath), (q).pciPath); \
		(p)->guid = (q).guid;                                  \
		(p)->ptrSupport = (q).ptrSupport;                      \
		(p)->speed = (q).speed;                                \
		(p)->port = (q).port;                                  \
		(p)->latency = (q).latency;                            \
		(p)->maxComms = (q).maxComms;                          \
		(p)->maxRecvs = (q).maxRecvs;                          \
	} while (0)
#define PL_COPY_V7(p, q)                                               \
	do {                                                           \
		(p)->netDeviceType = (int)(q).netDeviceType;           \
		(p)->netDeviceVersion = (q).netDeviceVersion;          \
	} while (0)
#define PL_COPY_V9(p, q)                                               \
	do {                                                           \
		(p)->regIsGlobal = (q).regIsGlobal;                    \
		(p)->forceFlush = (q).forceFlush;                      \
		(p)->vndevs = (q).vProps.ndevs;                        \
		for (int i_ = 0; i_ < NCCL_NET_MAX_DEVS_PER_NIC_V9; i_++) \
			(p)->vdevs[i_] = (q).vProps.devs[i_];          \
		(p)->maxP2pBytes = (q).maxP2pBytes;                    \
		(p)->maxCollBytes = (q).maxCollBytes;                  \
	} while (0)

ncclResult_t pl_get_properties(struct pl_net *net, int dev, struct pl_props *p)
{
	ncclResult_t r;

	memset(p, 0, sizeof(*p));
	p->maxP2pBytes = INT_MAX;
	p->maxCollBytes = INT_MAX;
	p->maxMultiRequestSize = 1;
	p->railId = -1;
	p->planeId = -1;
	switch (net->version) {
	case 6: {
		ncclNetProperties_v6_t q;
		memset(&q, 0, sizeof(q));
		if ((r = T6->getProperties(dev, &q)) != ncclSuccess)
			return r;
		PL_COPY_COMMON(p, q);
		return ncclSuccess;
	}
	case 7: {
		ncclNetProperties_v7_t q;
		memset(&q, 0, sizeof(q));
		if ((r = T7->getProperties(dev, &q)) != ncclSuccess)
			return r;
		PL_COPY_COMMON(p, q);
		PL_COPY_V7(p, q);
		return ncclSuccess;
	}
	case 8: {
		ncclNetProperties_v8_t q;
		memset(&q, 0, sizeof(q));
		if ((r = T8->getProperties(dev, &q)) != ncclSuccess)
			return r;
		PL_COPY_COMMON(p, q);
		PL_COPY_V7(p, q);
		p->regIsGlobal = q.regIsGlobal;
		return ncclSuccess;
	}
	case 9: {
		ncclNetProperties_v9_t q;
		memset(&q, 0, sizeof(q));
		if ((r = T9->getProperties(dev, &q)) != ncclSuccess)
			return r;
		PL_COPY_COMMON(p, q);
		PL_COPY_V7(p, q);
		PL_COPY_V9(p, q);
		return ncclSuccess;
	}
	case 10: {
		ncclNetProperties_v10_t q;
		memset(&q, 0, sizeof(q));
		if ((r = T10->getProperties(dev, &q)) != ncclSuccess)
			return r;
		PL_COPY_COMMON(p, q);
		PL_COPY_V7(p, q);
		PL_COPY_V9(p, q);
		return ncclSuccess;
	}
	case 11: {
		ncclNetProperties_v11_t q;
		memset(&q, 0, sizeof(q));
		if ((r = T11->getProperties(dev, &q)) != ncclSuccess)
			return r;
		PL_COPY_COMMON(p, q);
		PL_COPY_V7(p, q);
		PL_COPY_V9(p, q);
		p->maxMultiRequestSize = q.maxMultiRequestSize;
		return ncclSuccess;
	}
	case 12: {
		ncclNetProperties_v12_t q;
		memset(&q, 0, sizeof(q));
		if ((r = T12->getProperties(dev, &q)) != ncclSuccess)
			return r;
		PL_COPY_COMMON(p, q);
		PL_COPY_V7(p, q);
		p->regIsGlobal = q.regIsGlobal;
		p->forceFlush = q.forceFlush;
		p->vndevs = q.vProps.ndevs;
		for (int i = 0; i < NCCL_NET_MAX_DEVS_PER_NIC_V12; i++)
			p->vdevs[i] = q.vProps.devs[i];
		p->maxP2pBytes = q.maxP2pBytes;
		p->maxCollBytes = q.maxCollBytes;
		p->maxMultiRequestSize = q.maxMultiRequestSize;
		p->railId = q.railId;
		p->planeId = q.planeId;
		return ncclSuccess;
	}
	default:
		return ncclInternalError;
	}
}

ncclResult_t pl_listen(struct pl_net *net, int dev, void *handle, void **listen_comm)
{
	switch (net->version) {
	case 6: return T6->listen(dev, handle, listen_comm);
	case 7: return T7->listen(dev, handle, listen_comm);
	case 8: return T8->listen(dev, handle, listen_comm);
	case 9: return T9->listen(dev, handle, listen_comm);
	case 10: return T10->listen(dev, handle, listen_comm);
	case 11: return T11->listen(net->ctx, dev, handle, listen_comm);
	case 12: return T12->listen(net->ctx, dev, handle, listen_comm);
	default: return ncclInternalError;
	}
}

ncclResult_t pl_connect(struct pl_net *net, int dev, void *handle, void **send_comm)
{
	/* NCCL hands v7+ plugins a pointer to a NULL device handle pointer. */
	ncclNetDeviceHandle_t *dev_handle = NULL;
	ncclNetCommConfig_v10_t config = {.trafficClass = NCCL_NET_TRAFFIC_CLASS_UNDEF};

	switch (net->version) {
	case 6: return T6->connect(dev, handle, send_comm);
	case 7: return T7->connect(dev, handle, send_comm, &dev_handle);
	case 8: return T8->connect(dev, handle, send_comm, &dev_handle);
	case 9: return T9->connect(dev, handle, send_comm, &dev_handle);
	case 10: return T10->connect(dev, &config, handle, send_comm, &dev_handle);
	case 11: return T11->connect(net->ctx, dev, handle, send_comm, &dev_handle);
	case 12: return T12->connect(net->ctx, dev, handle, send_comm, &dev_handle);
	default: return ncclInternalError;
	}
}

ncclResult_t pl_accept(struct pl_net *net, void *listen_comm, void **recv_comm)
{
	ncclNetDeviceHandle_t *dev_handle = NULL;

	switch (net->version) {
	case 6: return T6->accept(listen_comm, recv_comm);
	case 7: return T7->accept(listen_comm, recv_comm, &dev_handle);
	case 8: return T8->accept(listen_comm, recv_comm, &dev_handle);
	case 9: return T9->accept(listen_comm, recv_comm, &dev_handle);
	case 10: return T10->accept(listen_comm, recv_comm, &dev_handle);
	case 11: return T11->accept(listen_comm, recv_comm, &dev_handle);
	case 12: return T12->accept(listen_comm, recv_comm, &dev_handle);
	default: return ncclInternalError;
	}
}

ncclResult_t pl_reg_mr(struct pl_net *net, void *comm, void *data, size_t size, int type,
		       void **mhandle)
{
	switch (net->version) {
	case 6:
		if (size > INT_MAX)
			return ncclInvalidArgument;
		return T6->regMr(comm, data, (int)size, type, mhandle);
	case 7:
		if (size > INT_MAX)
			return ncclInvalidArgument;
		return T7->regMr(comm, data, (int)size, type, mhandle);
	case 8: return T8->regMr(comm, data, size, type, mhandle);
	case 9: return T9->regMr(comm, data, size, type, mhandle);
	case 10: return T10->regMr(comm, data, size, type, mhandle);
	case 11: return T11->regMr(comm, data, size, type, mhandle);
	case 12: return T12->regMr(comm, data, size, type, mhandle);
	default: return ncclInternalError;
	}
}

ncclResult_t pl_reg_mr_dmabuf(struct pl_net *net, void *comm, void *data, size_t size, int type,
			      uint64_t offset, int fd, void **mhandle)
{
	PL_SAME(regMrDmaBuf, comm, data, size, type, offset, fd, mhandle);
}

ncclResult_t pl_dereg_mr(struct pl_net *net, void *comm, void *mhandle)
{
	PL_SAME(deregMr, comm, mhandle);
}

ncclResult_t pl_isend(struct pl_net *net, void *send_comm, void *data, size_t size, int tag,
		      void *mhandle, void **request)
{
	/* NCCL passes a pointer to its per-step profiler handle slot (v10+). */
	void *phandle_slot = NULL;

	switch (net->version) {
	case 6:
		if (size > INT_MAX)
			return ncclInvalidArgument;
		return T6->isend(send_comm, data, (int)size, tag, mhandle, request);
	case 7:
		if (size > INT_MAX)
			return ncclInvalidArgument;
		return T7->isend(send_comm, data, (int)size, tag, mhandle, request);
	case 8:
		if (size > INT_MAX)
			return ncclInvalidArgument;
		return T8->isend(send_comm, data, (int)size, tag, mhandle, request);
	case 9: return T9->isend(send_comm, data, size, tag, mhandle, request);
	case 10: return T10->isend(send_comm, data, size, tag, mhandle, &phandle_slot, request);
	case 11: return T11->isend(send_comm, data, size, tag, mhandle, &phandle_slot, request);
	case 12: return T12->isend(send_comm, data, size, tag, mhandle, &phandle_slot, request);
	default: return ncclInternalError;
	}
}

ncclResult_t pl_irecv(struct pl_net *net, void *recv_comm, int n, void **data,
		      const size_t *sizes, const int *tags, void **mhandles, void **request)
{
	int isizes[PL_MAX_GROUP], itags[PL_MAX_GROUP];
	size_t ssizes[PL_MAX_GROUP];
	void *phandles[PL_MAX_GROUP];

	if (n < 0 || n > PL_MAX_GROUP)
		return ncclInvalidArgument;
	for (int i = 0; i < n; i++) {
		if (net->version <= 8 && sizes[i] > INT_MAX)
			return ncclInvalidArgument;
		isizes[i] = (int)sizes[i];
		ssizes[i] = sizes[i];
		itags[i] = tags[i];
		phandles[i] = NULL;
	}
	switch (net->version) {
	case 6: return T6->irecv(recv_comm, n, data, isizes, itags, mhandles, request);
	case 7: return T7->irecv(recv_comm, n, data, isizes, itags, mhandles, request);
	case 8: return T8->irecv(recv_comm, n, data, isizes, itags, mhandles, request);
	case 9: return T9->irecv(recv_comm, n, data, ssizes, itags, mhandles, request);
	case 10:
		return T10->irecv(recv_comm, n, data, ssizes, itags, mhandles, phandles, request);
	case 11:
		return T11->irecv(recv_comm, n, data, ssizes, itags, mhandles, phandles, request);
	case 12:
		return T12->irecv(recv_comm, n, data, ssizes, itags, mhandles, phandles, request);
	default: return ncclInternalError;
	}
}

ncclResult_t pl_iflush(struct pl_net *net, void *recv_comm, int n, void **data, int *sizes,
		       void **mhandles, void **request)
{
	if (n < 0 || n > PL_MAX_GROUP)
		return ncclInvalidArgument;
	PL_SAME(iflush, recv_comm, n, data, sizes, mhandles, request);
}

ncclResult_t pl_test(struct pl_net *net, void *request, int *done, int *sizes)
{
	PL_SAME(test, request, done, sizes);
}

ncclResult_t pl_close_send(struct pl_net *net, void *send_comm)
{
	PL_SAME(closeSend, send_comm);
}

ncclResult_t pl_close_recv(struct pl_net *net, void *recv_comm)
{
	PL_SAME(closeRecv, recv_comm);
}

ncclResult_t pl_close_listen(struct pl_net *net, void *listen_comm)
{
	PL_SAME(closeListen, listen_comm);
}

int pl_parse_size(const char *s, size_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	if (!s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -1;
	switch (*end) {
	case '\0': break;
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	default: return -1;
	}
	if (*end == 'i' || *end == 'B' || *end == 'b') /* accept 64MiB, 64MB */
		end += (*end == 'i' && (end[1] == 'B' || end[1] == 'b')) ? 2 : 1;
	if (*end != '\0')
		return -1;
	if (shift && v > (SIZE_MAX >> shift))
		return -1;
	*out = (size_t)(v << shift);
	return 0;
}
