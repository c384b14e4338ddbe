#include <config.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rdma/fi_errno.h>

#include "core/log.h"
#include "nccl_net_abi.h"
#include "transport/accel.h"
#include "transport/mr.h"

#define ACCESS_USER (FI_SEND | FI_RECV | FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE)

static int mr_reg(struct fabnet_dev *dev, void *buf, size_t len, int type, int dmabuf_fd,
		  uint64_t dmabuf_offset, uint64_t access, int quiet, struct fabnet_mr **out)
{
	struct fi_mr_attr attr;
	struct iovec iov = {.iov_base = buf, .iov_len = len};
	struct fabnet_mr *m;
	uint64_t flags = 0;
	int rc;
#if HAVE_DECL_FI_MR_DMABUF && HAVE_STRUCT_FI_MR_ATTR_DMABUF
	struct fi_mr_dmabuf dmabuf;
#endif

	*out = NULL;
	if (!dev->domain)
		return -FI_EINVAL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -FI_ENOMEM;
	m->dev = dev;
	memset(&attr, 0, sizeof(attr));
	attr.mr_iov = &iov;
	attr.iov_count = 1;
	attr.access = access;
	/* Keys we choose are never handed out twice on a domain (a 64-bit counter),
	 * so a peer holding an old key cannot reach a newer registration. */
	if (!dev->prov_key) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		if (fabnet_keypool_alloc(&dev->keys, (uint64_t)ts.tv_sec * 1000000000ull +
					 (uint64_t)ts.tv_nsec, &m->own_key)) {
			FN_WARN("fabnet: no memory-region key is free on %s (%zu in use, %zu in "
				"quarantine). Deregister buffers you no longer use.", dev->name,
				dev->keys.in_use, dev->keys.quarantined);
			free(m);
			return -FI_ENOSPC;
		}
		attr.requested_key = m->own_key;
	}
	attr.iface = FI_HMEM_SYSTEM;
#if HAVE_DECL_FI_HMEM_CUDA
	if (type == NCCL_PTR_CUDA) {
		int ordinal = fabnet_cuda_device_of(buf);
		attr.iface = FI_HMEM_CUDA;
		attr.device.cuda = ordinal < 0 ? 0 : ordinal;
	}
#endif
	if (dmabuf_fd >= 0) {
#if HAVE_DECL_FI_MR_DMABUF && HAVE_STRUCT_FI_MR_ATTR_DMABUF
		memset(&dmabuf, 0, sizeof(dmabuf)); /* padding too: see dmabuf_word */
		dmabuf.fd = dmabuf_fd;
		dmabuf.offset = dmabuf_offset;
		dmabuf.len = len;
		dmabuf.base_addr = (char *)buf - dmabuf_offset; /* start of the mapping */
		attr.dmabuf = &dmabuf;
		flags |= FI_MR_DMABUF;
		/* libfabric 1.20 to 2.1 (at least): without FI_MR_VIRT_ADDR, the
		 * utility providers' MR map (tcp, sockets, rxd, ...) takes the
		 * region's address 0 from attr->mr_iov[0].iov_base, which for a
		 * dma-buf is the first word of struct fi_mr_dmabuf (the fd and
		 * padding), not base_addr + offset. Remember that word: the probe
		 * finds out which origin the provider really uses. */
		{
			uintptr_t word;
			memcpy(&word, &dmabuf, sizeof(word));
			m->dmabuf_word = word;
		}
		m->dmabuf = 1;
#else
		fabnet_mr_dereg(m);
		return -FI_ENOSYS;
#endif
	}
	rc = fi_mr_regattr(dev->domain, &attr, flags, &m->mr);
	if (rc) {
		if (!quiet)
			FN_WARN("fabnet: fi_mr_regattr of %zu bytes at %p (%s%s) on %s failed: %s (%d). "
				"Raise the locked-memory limit (ulimit -l), register less, or check "
				"that the provider supports this memory.", len, buf,
				type == NCCL_PTR_CUDA ? "CUDA" : "host",
				dmabuf_fd >= 0 ? ", dma-buf" : "", dev->name, fi_strerror(-rc), rc);
		fabnet_mr_dereg(m);
		return rc;
	}
	if (dev->mr_endpoint) {
		rc = fi_mr_bind(m->mr, &dev->ep->fid, 0);
		if (!rc)
			rc = fi_mr_enable(m->mr);
		if (rc) {
			FN_WARN("fabnet: binding a memory region to the endpoint on %s failed: %s (%d)",
				dev->name, fi_strerror(-rc), rc);
			fabnet_mr_dereg(m);
			return rc;
		}
	}
	m->magic = FABNET_MR_MAGIC;
	m->type = type;
	m->dev = dev;
	m->desc = fi_mr_desc(m->mr);
	m->key = fi_mr_key(m->mr);
	m->base = (uintptr_t)buf;
	m->len = len;
	*out = m;
	return 0;
}

void fabnet_mr_dereg(struct fabnet_mr *m)
{
	struct timespec ts;

	if (!m)
		return;
	if (m->mr)
		fi_close(&m->mr->fid);
	if (m->own_key) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		fabnet_keypool_free(&m->dev->keys, m->own_key,
				    (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec);
	}
	m->magic = 0;
	free(m);
}

/* dma-buf registrations are cached under their own type: an address-based
 * lookup must not return one, and they are only shared when page-aligned. */
#define DMABUF_TYPE_TAG 0x100

int fabnet_mr_get(struct fabnet_dev *dev, void *buf, size_t len, int type, int dmabuf_fd,
		  uint64_t dmabuf_offset, struct fabnet_mr **out)
{
	size_t page = dev->cache.page_size;
	uintptr_t start, end;
	struct fabnet_regcache_entry *e;
	struct fabnet_mr *m;
	int ctype = type | (dmabuf_fd >= 0 ? DMABUF_TYPE_TAG : 0);
	int rc;

	*out = NULL;
	if (fabnet_regcache_align((uintptr_t)buf, len, page, &start, &end))
		return -FI_EINVAL;
	e = fabnet_regcache_lookup(&dev->cache, (uintptr_t)buf, len, ctype);
	if (e) {
		fabnet_regcache_ref(e);
		*out = e->payload;
		return 0;
	}
	if (dmabuf_fd >= 0) {
		/* The fd's offset names exactly these bytes: register them as given. */
		rc = fabnet_mr_reg(dev, buf, len, type, dmabuf_fd, dmabuf_offset, &m);
		if (rc)
			return rc;
		if (start != (uintptr_t)buf || end != (uintptr_t)buf + len) {
			*out = m; /* not shareable: no entry */
			return 0;
		}
	} else {
		rc = fabnet_mr_reg(dev, (void *)start, end - start, type, -1, 0, &m);
		if (rc)
			return rc;
	}
	if (fabnet_regcache_insert(&dev->cache, start, end, ctype, m, &m->entry)) {
		m->entry = NULL; /* still usable, just not shared */
	}
	*out = m;
	return 0;
}

void fabnet_mr_put(struct fabnet_mr *m)
{
	void *payload = NULL;

	if (!m->entry) {
		fabnet_mr_dereg(m);
		return;
	}
	if (fabnet_regcache_unref(&m->dev->cache, m->entry, &payload) == 0)
		fabnet_mr_dereg(payload);
}

void fabnet_mr_release_cached(void *payload, void *arg)
{
	fabnet_mr_dereg(payload);
}

int fabnet_mr_reg(struct fabnet_dev *dev, void *buf, size_t len, int type, int dmabuf_fd,
		  uint64_t dmabuf_offset, struct fabnet_mr **out)
{
	return mr_reg(dev, buf, len, type, dmabuf_fd, dmabuf_offset, ACCESS_USER, 0, out);
}

int fabnet_mr_reg_local(struct fabnet_dev *dev, void *buf, size_t len, uint64_t access,
			struct fabnet_mr **out)
{
	return mr_reg(dev, buf, len, NCCL_PTR_HOST, -1, 0,
		      access & (FI_SEND | FI_RECV | FI_READ | FI_WRITE), 0, out);
}

int fabnet_mr_reg_quiet(struct fabnet_dev *dev, void *buf, size_t len, int type, int dmabuf_fd,
			uint64_t dmabuf_offset, struct fabnet_mr **out)
{
	return mr_reg(dev, buf, len, type, dmabuf_fd, dmabuf_offset, ACCESS_USER, 1, out);
}

uint64_t fabnet_mr_remote_addr(const struct fabnet_mr *m, const void *ptr)
{
	if (m->dev->virt_addr)
		return (uint64_t)(uintptr_t)ptr;
	/* The provider adds the origin back and checks the result against
	 * [base, base + len): unsigned wrap-around is intended. */
	if (m->dmabuf && m->dev->dmabuf_raddr_word)
		return (uint64_t)(uintptr_t)ptr - m->dmabuf_word;
	return (uint64_t)((uintptr_t)ptr - m->base);
}

int fabnet_mr_covers(const struct fabnet_mr *m, const void *ptr, size_t len)
{
	uintptr_t p = (uintptr_t)ptr;
	return p >= m->base && len <= m->len && p - m->base <= m->len - len;
}
