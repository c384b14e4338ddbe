/*
 * Loads an NCCL net plugin the way NCCL does (dlopen with RTLD_NOW|RTLD_LOCAL,
 * then the newest ncclNetPlugin_v<N> symbol found, v12 down to v6) and puts one
 * API in front of whichever table version was found. The pl_* wrappers
 * convert argument types for each version (int or size_t sizes, the v10
 * connect config, the v11+ per-communicator context, the v7+ device comm out
 * pointers, the v10+ profiler handles), so callers never look at the table.
 *
 * Used by fabnet-perf and fabnet-ft; it depends only on include/nccl_net_abi.h.
 */
#ifndef FABNET_TOOLS_PLUGIN_LOADER_H
#define FABNET_TOOLS_PLUGIN_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "nccl_net_abi.h"

#define PL_MIN_VERSION 6
#define PL_MAX_VERSION 12
/* Largest n accepted by pl_irecv / pl_iflush (NCCL groups at most 8). */
#define PL_MAX_GROUP 32

/* Device properties, the union of every version's fields. Fields a version
 * lacks keep the defaults written by pl_get_properties (see there). */
struct pl_props {
	char name[256];
	char pciPath[512];
	uint64_t guid;
	int ptrSupport;
	int regIsGlobal;      /* v8+; 0 before */
	int forceFlush;       /* v9+; 0 before */
	int speed;            /* Mbps */
	int port;
	float latency;        /* us */
	int maxComms;
	int maxRecvs;
	int netDeviceType;    /* v7+ */
	int netDeviceVersion; /* v7+ */
	int vndevs;           /* v9+: vProps.ndevs; 0 before */
	int vdevs[NCCL_NET_MAX_DEVS_PER_NIC_V12];
	size_t maxP2pBytes;   /* v9+; before: INT_MAX (the int size limit) */
	size_t maxCollBytes;  /* v9+; before: INT_MAX */
	int maxMultiRequestSize; /* v11+; 1 before */
	int railId;           /* v12; -1 before */
	int planeId;          /* v12; -1 before */
};

struct pl_net {
	void *dl;           /* dlopen handle */
	int version;        /* 6..12: the table in use */
	const char *name;   /* the table's name field */
	const void *table;  /* ncclNet_v<version>_t */
	void *ctx;          /* v11+: the context init returned */
	int initialized;
	uint64_t comm_id;   /* v11+: commId handed to init */
	char path[4096];
	char symbol[32];
	char err[512];      /* why pl_open failed */
};

/* Opens the plugin at path. version: 6..12 forces that table; 0 takes
 * FABNET_ABI_VERSION from the environment if set, else the newest exported.
 * Returns 0, or -1 with net->err set. Does not call init. */
int pl_open(struct pl_net *net, const char *path, int version);
/* dlclose()s the plugin (call pl_finalize first for v11+). */
void pl_close(struct pl_net *net);
/* Returns 1 if path exports ncclNetPlugin_v<version> (dlopen/dlsym only). */
int pl_has_version(const char *path, int version);

/* The logger handed to init: NCCL-style lines on stderr. WARN and ABORT are
 * always printed, INFO when NCCL_DEBUG=INFO (or TRACE), TRACE when
 * NCCL_DEBUG=TRACE, VERSION when NCCL_DEBUG is set at all. */
void pl_logger(ncclDebugLogLevel level, unsigned long flags, const char *file, int line,
	       const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* The tools' own diagnostics through the same format. */
void pl_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void pl_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

const char *pl_result_str(ncclResult_t r);

/* ---- the uniform API ------------------------------------------------------ */
ncclResult_t pl_init(struct pl_net *net);
/* v11+: finalize(ctx); earlier versions have nothing to call. */
ncclResult_t pl_finalize(struct pl_net *net);
ncclResult_t pl_devices(struct pl_net *net, int *ndev);
ncclResult_t pl_get_properties(struct pl_net *net, int dev, struct pl_props *props);
/* handle: NCCL_NET_HANDLE_MAXSIZE bytes. */
ncclResult_t pl_listen(struct pl_net *net, int dev, void *handle, void **listen_comm);
/* Both return ncclSuccess with a NULL comm until the connection is ready:
 * call again with the same handle buffer (plugins may keep state in it). */
ncclResult_t pl_connect(struct pl_net *net, int dev, void *handle, void **send_comm);
ncclResult_t pl_accept(struct pl_net *net, void *listen_comm, void **recv_comm);
ncclResult_t pl_reg_mr(struct pl_net *net, void *comm, void *data, size_t size, int type,
		       void **mhandle);
/* regMrDmaBuf: the same signature in every version v6..v12. NCCL closes fd
 * right after the call returns. */
ncclResult_t pl_reg_mr_dmabuf(struct pl_net *net, void *comm, void *data, size_t size, int type,
			      uint64_t offset, int fd, void **mhandle);
ncclResult_t pl_dereg_mr(struct pl_net *net, void *comm, void *mhandle);
/* request is NULL on success when the plugin wants the call retried later. */
ncclResult_t pl_isend(struct pl_net *net, void *send_comm, void *data, size_t size, int tag,
		      void *mhandle, void **request);
ncclResult_t pl_irecv(struct pl_net *net, void *recv_comm, int n, void **data,
		      const size_t *sizes, const int *tags, void **mhandles, void **request);
ncclResult_t pl_iflush(struct pl_net *net, void *recv_comm, int n, void **data, int *sizes,
		       void **mhandles, void **request);
/* sizes: one int per buffer of the request (1 for a send). */
ncclResult_t pl_test(struct pl_net *net, void *request, int *done, int *sizes);
ncclResult_t pl_close_send(struct pl_net *net, void *send_comm);
ncclResult_t pl_close_recv(struct pl_net *net, void *recv_comm);
ncclResult_t pl_close_listen(struct pl_net *net, void *listen_comm);

/* Parses a byte count with an optional K/M/G suffix (powers of 1024).
 * Returns 0 or -1. Shared by the tools' option parsers. */
int pl_parse_size(const char *s, size_t *out);

#endif
