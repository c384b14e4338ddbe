/*
 * Probing what a device can register. NCCL_PTR_HOST always works.
 * NCCL_PTR_CUDA needs FI_HMEM from the provider, a CUDA driver loadable at
 * run time, and a real registration of device memory that succeeds.
 * NCCL_PTR_DMABUF needs FI_MR_DMABUF in the headers we were built with
 * (libfabric 1.20+) and a real dma-buf registration that the provider accepts:
 * we hand it a memfd, which the utility providers import as base_addr + offset
 * and which stands in for any exporter. A bit we cannot prove is not advertised.
 */
#include <config.h>

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <rdma/fi_errno.h>

#include "core/config.h"
#include "core/log.h"
#include "nccl_net_abi.h"
#include "transport/accel.h"
#include "transport/hmem.h"
#include "transport/mr.h"

#define PROBE_BYTES (2u << 20)

const char *fabnet_built_libfabric(void)
{
#define STR2(x) #x
#define STR(x) STR2(x)
	return STR(FI_MAJOR_VERSION) "." STR(FI_MINOR_VERSION);
}

static void probe_cuda(struct fabnet_dev *dev)
{
	const char *why = NULL;
	struct fabnet_mr *mr;
	void *p;

	if (!dev->hmem) {
		snprintf(dev->why_no_cuda, sizeof(dev->why_no_cuda),
			 fabnet_config()->hmem ? "provider %s offers no FI_HMEM on %s"
					       : "FI_HMEM not requested (FABNET_HMEM=0) for %s on %s",
			 dev->prov_name, dev->name);
		return;
	}
#if !HAVE_DECL_FI_HMEM_CUDA
	snprintf(dev->why_no_cuda, sizeof(dev->why_no_cuda),
		 "FI_HMEM_CUDA not declared by libfabric %s", fabnet_built_libfabric());
	return;
#endif
	if (fabnet_cuda_probe_alloc(PROBE_BYTES, &p, &why)) {
		snprintf(dev->why_no_cuda, sizeof(dev->why_no_cuda), "%s", why);
		return;
	}
	if (fabnet_mr_reg_quiet(dev, p, PROBE_BYTES, NCCL_PTR_CUDA, -1, 0, &mr) == 0) {
		fabnet_mr_dereg(mr);
		dev->ptr_support |= NCCL_PTR_CUDA;
	} else {
		snprintf(dev->why_no_cuda, sizeof(dev->why_no_cuda),
			 "provider %s refused to register CUDA device memory", dev->prov_name);
	}
	fabnet_cuda_probe_free(p);
}

#if HAVE_DECL_FI_MR_DMABUF && HAVE_STRUCT_FI_MR_ATTR_DMABUF
static void probe_read_done(struct fabnet_op *op, int err, const struct fi_cq_data_entry *e)
{
	*(int *)op->owner = err ? -1 : 1;
}

/* A loopback fi_read of 64 bytes from the region, checked byte for byte. */
static int rma_reaches(struct fabnet_dev *dev, struct fabnet_mr *mr, uint8_t *region)
{
	uint8_t sink[64];
	struct fabnet_mr *sink_mr = NULL;
	struct fabnet_op op;
	struct timespec start, now;
	fi_addr_t self;
	int state = 0;

	for (int i = 0; i < 64; i++)
		region[i] = (uint8_t)(i * 37 + 11);
	memset(sink, 0, sizeof(sink));
	if (fabnet_dev_peer(dev, dev->addr, dev->addrlen, &self))
		return 0;
	if (dev->local_mr &&
	    fabnet_mr_reg_quiet(dev, sink, sizeof(sink), NCCL_PTR_HOST, -1, 0, &sink_mr))
		return 0;
	memset(&op, 0, sizeof(op));
	op.kind = FABNET_OP_READ;
	op.cb = probe_read_done;
	op.owner = &state;
	op.buf = sink;
	op.len = sizeof(sink);
	op.desc = sink_mr ? sink_mr->desc : NULL;
	op.peer = self;
	op.raddr = fabnet_mr_remote_addr(mr, region);
	op.rkey = mr->key;
	if (fabnet_dev_post(dev, &op) == 0) {
		clock_gettime(CLOCK_MONOTONIC, &start);
		do {
			fabnet_dev_progress(dev);
			clock_gettime(CLOCK_MONOTONIC, &now);
		} while (!state && (now.tv_sec - start.tv_sec) < 2);
		if (!state)
			fabnet_dev_unqueue(dev, &op);
	}
	if (sink_mr)
		fabnet_mr_dereg(sink_mr);
	return state == 1 && !memcmp(sink, region, sizeof(sink));
}
#endif

static void probe_dmabuf(struct fabnet_dev *dev)
{
#if !HAVE_DECL_FI_MR_DMABUF || !HAVE_STRUCT_FI_MR_ATTR_DMABUF
	snprintf(dev->why_no_dmabuf, sizeof(dev->why_no_dmabuf),
		 "FI_MR_DMABUF not declared: built against libfabric %s (needs 1.20 or later)",
		 fabnet_built_libfabric());
#else
	struct fabnet_mr *mr;
	void *p;
	int fd, rc;

	if (!fabnet_config()->dmabuf) {
		snprintf(dev->why_no_dmabuf, sizeof(dev->why_no_dmabuf),
			 "off unless FABNET_DMABUF=1 (not yet proven across processes here)");
		return;
	}
	fd = memfd_create("fabnet-dmabuf-probe", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, PROBE_BYTES)) {
		snprintf(dev->why_no_dmabuf, sizeof(dev->why_no_dmabuf),
			 "could not create a memfd for the probe");
		if (fd >= 0)
			close(fd);
		return;
	}
	p = mmap(NULL, PROBE_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		snprintf(dev->why_no_dmabuf, sizeof(dev->why_no_dmabuf), "mmap of the probe failed");
		close(fd);
		return;
	}
	rc = fabnet_mr_reg_quiet(dev, p, PROBE_BYTES, NCCL_PTR_HOST, fd, 0, &mr);
	if (rc == 0) {
		/* Accepting the registration is not enough: RMA must reach it. */
		int ok = rma_reaches(dev, mr, p);
		fabnet_mr_dereg(mr);
		if (ok)
			dev->ptr_support |= NCCL_PTR_DMABUF;
		else
			snprintf(dev->why_no_dmabuf, sizeof(dev->why_no_dmabuf),
				 "provider %s accepted a dma-buf registration but an RMA read of it "
				 "did not return the bytes", dev->prov_name);
	} else {
		snprintf(dev->why_no_dmabuf, sizeof(dev->why_no_dmabuf),
			 "provider %s refused a dma-buf registration: %s", dev->prov_name,
			 fi_strerror(-rc));
	}
	munmap(p, PROBE_BYTES);
	close(fd);
#endif
}

void fabnet_hmem_probe(struct fabnet_dev *dev)
{
	if (dev->probed)
		return;
	dev->probed = 1;
	dev->ptr_support = NCCL_PTR_HOST;
	if (fabnet_dev_open(dev)) {
		snprintf(dev->why_no_cuda, sizeof(dev->why_no_cuda), "the device did not open");
		snprintf(dev->why_no_dmabuf, sizeof(dev->why_no_dmabuf), "the device did not open");
		return;
	}
	probe_cuda(dev);
	probe_dmabuf(dev);
	if (!(dev->ptr_support & NCCL_PTR_CUDA))
		FN_INFO(NCCL_INIT | NCCL_NET, "fabnet: %s: no NCCL_PTR_CUDA: %s", dev->name,
			dev->why_no_cuda);
	else
		FN_INFO(NCCL_INIT | NCCL_NET, "fabnet: %s: NCCL_PTR_CUDA: device memory registers",
			dev->name);
	if (!(dev->ptr_support & NCCL_PTR_DMABUF))
		FN_INFO(NCCL_INIT | NCCL_NET, "fabnet: %s: no NCCL_PTR_DMABUF: %s", dev->name,
			dev->why_no_dmabuf);
	else
		FN_INFO(NCCL_INIT | NCCL_NET, "fabnet: %s: NCCL_PTR_DMABUF: the provider imports "
			"dma-bufs as static (pinned) regions", dev->name);
}
