/*
 * fabnet's one internal plugin interface. Every exported NCCL table
 * (ncclNetPlugin_v6 .. v12, in nccl_abi.c) is a thin adapter over these
 * functions: argument widths and versions are converted there, and every
 * check of what NCCL hands us happens here.
 */
#ifndef FABNET_API_PLUGIN_H
#define FABNET_API_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#include "nccl_net_abi.h"

#define FABNET_PLUGIN_NAME "fabnet"

struct fabnet_props {
	char *name;
	char *pci_path;
	uint64_t guid;
	int ptr_support;
	int reg_is_global;
	int force_flush;
	int speed;
	int port;
	float latency;
	int max_comms;
	int max_recvs;
	size_t max_p2p_bytes;
	size_t max_coll_bytes;
	int max_multi_request;
};

/* init is reference counted: each call needs one fini (v11/v12 finalize). */
ncclResult_t fabnet_api_init(ncclDebugLogger_t logger);
ncclResult_t fabnet_api_fini(void);
ncclResult_t fabnet_api_devices(int *ndev);
ncclResult_t fabnet_api_get_properties(int dev, struct fabnet_props *props);
ncclResult_t fabnet_api_listen(int dev, void *handle, void **listen_comm);
ncclResult_t fabnet_api_connect(int dev, void *handle, void **send_comm);
ncclResult_t fabnet_api_accept(void *listen_comm, void **recv_comm);
ncclResult_t fabnet_api_reg_mr(void *comm, void *data, size_t size, int type, void **mhandle);
ncclResult_t fabnet_api_reg_mr_dmabuf(void *comm, void *data, size_t size, int type,
				      uint64_t offset, int fd, void **mhandle);
ncclResult_t fabnet_api_dereg_mr(void *comm, void *mhandle);
ncclResult_t fabnet_api_isend(void *send_comm, void *data, size_t size, int tag, void *mhandle,
			      void **request);
ncclResult_t fabnet_api_irecv(void *recv_comm, int n, void **data, const size_t *sizes,
			      const int *tags, void **mhandles, void **request);
ncclResult_t fabnet_api_iflush(void *recv_comm, int n, void **data, const int *sizes,
			       void **mhandles, void **request);
ncclResult_t fabnet_api_test(void *request, int *done, int *sizes);
/* kind: 1 listen, 2 send, 3 recv (what the caller believes it closes). */
ncclResult_t fabnet_api_close(void *comm, int kind);

#endif
