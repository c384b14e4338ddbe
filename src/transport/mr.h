/* Memory registration on a device, following the provider's mr_mode:
 * FI_MR_PROV_KEY or keys we choose, FI_MR_VIRT_ADDR or offsets, FI_MR_ENDPOINT
 * binding, FI_MR_LOCAL descriptors. */
#ifndef FABNET_TRANSPORT_MR_H
#define FABNET_TRANSPORT_MR_H

#include <stddef.h>
#include <stdint.h>

#include "transport/device.h"

#define FABNET_MR_MAGIC 0x464e4d52u /* "FNMR" */

struct fabnet_mr {
	uint32_t magic;
	int type;          /* NCCL_PTR_HOST, ... */
	struct fabnet_dev *dev;
	struct fid_mr *mr;
	void *desc;        /* fi_mr_desc(), for FI_MR_LOCAL */
	uint64_t key;      /* what the peer needs to write here */
	uintptr_t base;
	size_t len;
	int dmabuf;        /* registered with FI_MR_DMABUF */
	uint64_t dmabuf_word; /* the first word of its struct fi_mr_dmabuf */
	uint64_t own_key;  /* from dev->keys, 0 when the provider chose the key */
	struct fabnet_regcache_entry *entry; /* NULL: not shared through the cache */
};

/* Keys are quarantined until 4096 other keys were freed after them and 10 s
 * passed: longer than any transfer a stale peer could still be in. */
#define FABNET_KEY_QUARANTINE_COUNT 4096
#define FABNET_KEY_QUARANTINE_NS (10ull * 1000 * 1000 * 1000)

/* Registration through the device's cache (regIsGlobal): a range inside a
 * live registration of the same kind is a hit and takes a reference; a miss
 * registers the page-aligned range. Release with fabnet_mr_put. */
int fabnet_mr_get(struct fabnet_dev *dev, void *buf, size_t len, int type, int dmabuf_fd,
		  uint64_t dmabuf_offset, struct fabnet_mr **out);
void fabnet_mr_put(struct fabnet_mr *mr);
/* regcache_fini callback: deregisters what the cache still held. */
void fabnet_mr_release_cached(void *payload, void *arg);

/* Registers [buf, buf+len) for local and remote access: by address when
 * dmabuf_fd < 0, else as a static dma-buf region (fd, offset) mapped at buf.
 * type (NCCL_PTR_*) picks the libfabric interface. The fd is neither kept nor
 * closed. Returns 0 or a negative FI_E* code (logged with the reason). */
int fabnet_mr_reg(struct fabnet_dev *dev, void *buf, size_t len, int type, int dmabuf_fd,
		  uint64_t dmabuf_offset, struct fabnet_mr **out);
/* Host memory only fabnet itself touches (bounce buffers, the flush sink):
 * registered with the local access bits of `access` alone (FI_SEND, FI_RECV,
 * FI_READ, FI_WRITE), so no peer can read or write it with its key. */
int fabnet_mr_reg_local(struct fabnet_dev *dev, void *buf, size_t len, uint64_t access,
			struct fabnet_mr **out);
/* The same without the warning, for capability probes. */
int fabnet_mr_reg_quiet(struct fabnet_dev *dev, void *buf, size_t len, int type, int dmabuf_fd,
			uint64_t dmabuf_offset, struct fabnet_mr **out);
void fabnet_mr_dereg(struct fabnet_mr *mr);
/* The address a peer puts in its write to reach ptr: virtual, or an offset
 * from where the provider placed the region's address 0 (for a dma-buf region
 * on some libfabric versions not its first byte: see mr.c). */
uint64_t fabnet_mr_remote_addr(const struct fabnet_mr *mr, const void *ptr);
/* True when [ptr, ptr+len) lies inside the registration. */
int fabnet_mr_covers(const struct fabnet_mr *mr, const void *ptr, size_t len);

#endif
