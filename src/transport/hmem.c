/*
 * Probing what a device can register. NCCL_PTR_HOST always works.
 * NCCL_PTR_CUDA needs FI_HMEM from the provider, a CUDA driver loadable at
 * run time, and a real registration of device memory that succeeds.
 * NCCL_PTR_DMABUF needs FI_MR_DMABUF in the headers we were built with
 * (libfabric 1.20+) and a real dma-buf registration that the provider accepts
 * and an RMA read of it returns: with an accelerator runtime and FI_HMEM, the
 * accelerator's own dma-buf of device memory (what NCCL will hand us; EFA's
 * kernel imports nothing else); without one, a memfd, which the utility
 * providers import as base_addr + offset and which stands in for an
 * exporter where the provider accepts it. A bit we cannot prove is not
 * advertised.
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
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
	if (dev->efa.cuda_api_permitted == 1) {
		snprintf(dev->why_no_cuda, sizeof(dev->why_no_cuda), "%s", dev->efa.why_cuda_api);
		return;
	}
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
/* On the heap: a read still owned by the provider when we give up must not
 * complete into a dead stack frame, so it is then leaked on purpose. */
struct probe_read {
	struct fabnet_op op;
	int state; /* 0: in flight, 1: done, -1: failed */
	uint8_t sink[64];
};

static void probe_read_done(struct fabnet_op *op, int err, const struct fi_cq_data_entry *e)
{
	((struct probe_read *)op->owner)->state = err ? -1 : 1;
}

/* A loopback fi_read of 64 bytes from the region, checked byte for byte. A
 * fresh pattern each time, so bytes of an earlier attempt cannot pass. */
static int rma_reaches(struct fabnet_dev *dev, struct fabnet_mr *mr, uint8_t *region,
		       uint8_t salt, int on_device)
{
	struct probe_read *r;
	struct fabnet_mr *sink_mr = NULL;
	struct timespec start, now;
	uint8_t pattern[64];
	fi_addr_t self;
	int ok;

	for (int i = 0; i < 64; i++)
		pattern[i] = (uint8_t)(i * 37 + 11 + salt * 101);
	if (on_device ? fabnet_cuda_copy_to_device(region, pattern, sizeof(pattern)) != 0
		      : (memcpy(region, pattern, sizeof(pattern)), 0))
		return 0;
	if (fabnet_dev_peer(dev, dev->addr, dev->addrlen, &self))
		return 0;
	r = calloc(1, sizeof(*r));
	if (!r)
		return 0;
	if (dev->local_mr &&
	    fabnet_mr_reg_quiet(dev, r->sink, sizeof(r->sink), NCCL_PTR_HOST, -1, 0, &sink_mr)) {
		free(r);
		return 0;
	}
	r->op.kind = FABNET_OP_READ;
	r->op.best_effort = 1; /* a refused address is an answer, not an error */
	r->op.cb = probe_read_done;
	r->op.owner = r;
	r->op.buf = r->sink;
	r->op.len = sizeof(r->sink);
	r->op.desc = sink_mr ? sink_mr->desc : NULL;
	r->op.peer = self;
	r->op.raddr = fabnet_mr_remote_addr(mr, region);
	r->op.rkey = mr->key;
	if (fabnet_dev_post(dev, &r->op) == 0) {
		clock_gettime(CLOCK_MONOTONIC, &start);
		do {
			fabnet_dev_progress(dev);
			clock_gettime(CLOCK_MONOTONIC, &now);
		} while (!r->state && (now.tv_sec - start.tv_sec) < 2);
		if (!r->state)
			fabnet_dev_unqueue(dev, &r->op);
	}
	ok = r->state == 1 && !memcmp(r->sink, pattern, sizeof(r->sink));
	if (r->op.posted) {
		FN_INFO(NCCL_INIT | NCCL_NET, "fabnet: %s: the dma-buf probe read did not complete "
			"in 2 s; its 64-byte buffer stays with the provider", dev->name);
		return 0;
	}
	if (sink_mr)
		fabnet_mr_dereg(sink_mr);
	free(r);
	return ok;
}

/* Which address reaches a dma-buf region. Under FI_MR_VIRT_ADDR it is the
 * virtual address. Otherwise it is, as documented, the offset from the first
 * registered byte; but libfabric's utility MR map (tcp, sockets, rxd, ...)
 * in 1.20 to 2.1 counts it from the first word of struct fi_mr_dmabuf (see
 * mr.c). Try the likely origin for the running version first: a wrong guess
 * fails the read, and tcp then reconnects, but rxd keeps retrying it and
 * blocks the second attempt. Sets dev->dmabuf_raddr_word; 1 when a read of
 * the region returned its bytes. */
static int dmabuf_reaches(struct fabnet_dev *dev, struct fabnet_mr *mr, uint8_t *region, int on_device)
{
	uint32_t v = fi_version();
	int word_first = FI_VERSION_GE(v, FI_VERSION(1, 20)) && FI_VERSION_LT(v, FI_VERSION(2, 2));

	for (int i = 0; i < 2; i++) {
		int word = i == 0 ? word_first : !word_first;
		if (word && dev->virt_addr)
			continue;
		dev->dmabuf_raddr_word = word;
		if (rma_reaches(dev, mr, region, (uint8_t)(i + 1), on_device)) {
			if (word)
				FN_INFO(NCCL_INIT | NCCL_NET, "fabnet: %s: provider %s counts dma-buf "
					"offsets from the fd word of struct fi_mr_dmabuf (libfabric %u.%u "
					"utility MR map); remote addresses follow it", dev->name,
					dev->prov_name, FI_MAJOR(v), FI_MINOR(v));
			return 1;
		}
	}
	dev->dmabuf_raddr_word = 0;
	return 0;
}
#endif

#if HAVE_DECL_FI_MR_DMABUF && HAVE_STRUCT_FI_MR_ATTR_DMABUF
/* A registration the provider took, then read back over RMA. */
static void dmabuf_check(struct fabnet_dev *dev, struct fabnet_mr *mr, void *p, int on_device,
			 const char *what)
{
	int ok = dmabuf_reaches(dev, mr, p, on_device);

	fabnet_mr_dereg(mr);
	if (ok)
		dev->ptr_support |= NCCL_PTR_DMABUF;
	else
		snprintf(dev->why_no_dmabuf, sizeof(dev->why_no_dmabuf),
			 "provider %s accepted %s but an RMA read of it did not return the bytes",
			 dev->prov_name, what);
}

/* The accelerator's own dma-buf of device memory: what NCCL will register. */
static void probe_dmabuf_accel(struct fabnet_dev *dev)
{
	const char *why = NULL;
	struct fabnet_mr *mr;
	void *p;
	int fd, rc;

	if (fabnet_cuda_probe_alloc(PROBE_BYTES, &p, &why)) {
		snprintf(dev->why_no_dmabuf, sizeof(dev->why_no_dmabuf), "%s", why);
		return;
	}
	if (fabnet_cuda_dmabuf_fd(p, PROBE_BYTES, &fd, &why)) {
		snprintf(dev->why_no_dmabuf, sizeof(dev->why_no_dmabuf), "%s", why);
		fabnet_cuda_probe_free(p);
		return;
	}
	rc = fabnet_mr_reg_quiet(dev, p, PROBE_BYTES, NCCL_PTR_CUDA, fd, 0, &mr);
	close(fd); /* as NCCL does: the registration must not need the fd */
	if (rc == 0)
		dmabuf_check(dev, mr, p, 1, "the accelerator's dma-buf");
	else
		snprintf(dev->why_no_dmabuf, sizeof(dev->why_no_dmabuf),
			 "provider %s refused the accelerator's dma-buf of device memory: %s",
			 dev->prov_name, fi_strerror(-rc));
	fabnet_cuda_probe_free(p);
}

/* Without an accelerator runtime: a memfd stands in for an exporter, where
 * the provider takes one (the utility providers map it; EFA's kernel driver
 * imports only real dma-bufs and refuses it). */
static void probe_dmabuf_memfd(struct fabnet_dev *dev, const char *no_accel)
{
	struct fabnet_mr *mr;
	void *p;
	int fd = memfd_create("fabnet-dmabuf-probe", MFD_CLOEXEC), rc;

	if (fd < 0 || ftruncate(fd, PROBE_BYTES)) {
		snprintf(dev->why_no_dmabuf, sizeof(dev->why_no_dmabuf),
			 "could not create a memfd for the probe: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	p = mmap(NULL, PROBE_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		snprintf(dev->why_no_dmabuf, sizeof(dev->why_no_dmabuf),
			 "mmap of the probe memfd failed: %s", strerror(errno));
		close(fd);
		return;
	}
	rc = fabnet_mr_reg_quiet(dev, p, PROBE_BYTES, NCCL_PTR_HOST, fd, 0, &mr);
	close(fd);
	if (rc == 0)
		dmabuf_check(dev, mr, p, 0, "a memfd as a dma-buf");
	else
		snprintf(dev->why_no_dmabuf, sizeof(dev->why_no_dmabuf),
			 "provider %s refused a memfd standing in for a dma-buf (%s)%s; no accelerator "
			 "runtime to probe with its own dma-buf: %s", dev->prov_name, fi_strerror(-rc),
			 dev->efa.is_efa ? ": EFA imports only real dma-bufs" : "", no_accel);
	munmap(p, PROBE_BYTES);
}
#endif

static void probe_dmabuf(struct fabnet_dev *dev)
{
#if !HAVE_DECL_FI_MR_DMABUF || !HAVE_STRUCT_FI_MR_ATTR_DMABUF
	snprintf(dev->why_no_dmabuf, sizeof(dev->why_no_dmabuf),
		 "FI_MR_DMABUF not declared: built against libfabric %s (needs 1.20 or later)",
		 fabnet_built_libfabric());
#else
	const char *no_accel = "";

	if (!fabnet_config()->dmabuf) {
		snprintf(dev->why_no_dmabuf, sizeof(dev->why_no_dmabuf),
			 "disabled by FABNET_DMABUF=0");
		return;
	}
	if (fabnet_cuda_load(&no_accel) == 0) {
		if (dev->hmem)
			probe_dmabuf_accel(dev);
		else
			snprintf(dev->why_no_dmabuf, sizeof(dev->why_no_dmabuf),
				 "an accelerator runtime is present but provider %s offers no FI_HMEM on "
				 "%s: its dma-bufs cannot be registered", dev->prov_name, dev->name);
		return;
	}
	probe_dmabuf_memfd(dev, no_accel ? no_accel : "");
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
