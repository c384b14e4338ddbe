/* softefa: memory registration. Every MR has a device address range (iova,
 * length) and the host address through which the device reaches it: the
 * user's pages for ibv_reg_mr, the device's own mapping of the dma-buf's
 * pages for ibv_reg_dmabuf_mr (never the user's virtual address). The table
 * is mirrored in the shared segment so that initiators of RDMA can check it. */
#include "sefa.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#undef ibv_reg_mr
#undef ibv_reg_mr_iova

#define SUPPORTED_ACCESS (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ | \
			  IBV_ACCESS_RELAXED_ORDERING)

static int check_access(unsigned int access)
{
	unsigned int optional = access & IBV_ACCESS_OPTIONAL_RANGE;

	if ((access & ~optional) & ~(unsigned)SUPPORTED_ACCESS) {
		SEFA_INFO("reg_mr: access %#x has flags EFA does not support", access);
		return EOPNOTSUPP;
	}
	/* verbs rule: remote write needs local write */
	if ((access & IBV_ACCESS_REMOTE_WRITE) && !(access & IBV_ACCESS_LOCAL_WRITE)) {
		SEFA_INFO("reg_mr: REMOTE_WRITE without LOCAL_WRITE");
		return EINVAL;
	}
	return 0;
}

/* Enters an MR in the local and shared tables; the caller holds dev->lock. */
static int publish(struct sefa_dev *dev, struct sefa_mr *mr, struct sefa_pd *pd)
{
	uint32_t idx = 0, key;
	struct sefa_shm_mr *e;

	for (uint32_t n = 1; n < SEFA_SHM_MR && !idx; n++) {
		uint32_t i = (dev->mr_hint + n - 1) % (SEFA_SHM_MR - 1) + 1;

		if (!dev->mr_by_idx[i])
			idx = i;
	}
	if (!idx)
		return ENOMEM;
	dev->mr_hint = idx;
	dev->mr_gen[idx] = (uint16_t)((dev->mr_gen[idx] + 1) & 0x3ff);
	key = (dev->slot << 26) | ((uint32_t)dev->mr_gen[idx] << 16) | idx;
	mr->idx = idx;
	mr->key = key;
	mr->ibmr.lkey = mr->ibmr.rkey = key;
	mr->ibmr.handle = key;
	dev->mr_by_idx[idx] = mr;
	sefa_shm_lock(dev->shm);
	e = &dev->shm->mr[idx];
	e->access = mr->access;
	e->pd = pd->pdn;
	e->iova = mr->iova;
	e->length = mr->length;
	e->host_va = mr->host_va;
	e->key = key;
	sefa_shm_unlock(dev->shm);
	return 0;
}

static struct ibv_mr *reg_common(struct ibv_pd *ibpd, struct sefa_mr *mr)
{
	struct sefa_dev *dev = sefa_dev_of(ibpd->context);
	int err;

	if (mr->length > sefa_cfg.prof.max_mr_size) {
		err = EINVAL;
		goto fail;
	}
	mr->dev = dev;
	mr->ibmr.context = ibpd->context;
	mr->ibmr.pd = ibpd;
	pthread_mutex_lock(&dev->lock);
	err = publish(dev, mr, (struct sefa_pd *)ibpd);
	pthread_mutex_unlock(&dev->lock);
	if (!err)
		return &mr->ibmr;
fail:
	if (mr->map)
		munmap(mr->map, mr->map_len);
	free(mr);
	errno = err;
	return NULL;
}

SEFA_EXPORT struct ibv_mr *ibv_reg_mr_iova2(struct ibv_pd *pd, void *addr, size_t length, uint64_t iova,
					    unsigned int access)
{
	struct sefa_mr *mr;
	int err = check_access(access);

	if (!err && (!addr || !length))
		err = EINVAL;
	if (err || !(mr = calloc(1, sizeof(*mr)))) {
		errno = err ? err : ENOMEM;
		return NULL;
	}
	mr->iova = iova;
	mr->length = length;
	mr->host_va = (uint64_t)(uintptr_t)addr;
	mr->access = access & SUPPORTED_ACCESS;
	mr->ibmr.addr = addr;
	mr->ibmr.length = length;
	return reg_common(pd, mr);
}

SEFA_EXPORT struct ibv_mr *ibv_reg_mr(struct ibv_pd *pd, void *addr, size_t length, int access)
{
	return ibv_reg_mr_iova2(pd, addr, length, (uint64_t)(uintptr_t)addr, (unsigned)access);
}

SEFA_EXPORT struct ibv_mr *ibv_reg_mr_iova(struct ibv_pd *pd, void *addr, size_t length, uint64_t iova,
					   int access)
{
	return ibv_reg_mr_iova2(pd, addr, length, iova, (unsigned)access);
}

/* What the kernel's dma_buf_get() would accept: a dma-buf file, or a memfd
 * when a test asks the device to treat it as an exporter's buffer. */
static int check_dmabuf_fd(int fd)
{
	char link[64], target[256];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, target, sizeof(target) - 1);
	if (n < 0)
		return EBADF;
	target[n] = 0;
	if (!strncmp(target, "/dmabuf:", 8) || !strncmp(target, "anon_inode:dmabuf", 17))
		return 0;
	if (sefa_cfg.accept_memfd && !strncmp(target, "/memfd:", 7))
		return 0;
	SEFA_INFO("reg_dmabuf_mr: fd %d (%s) is not a dma-buf", fd, target);
	return EINVAL;
}

SEFA_EXPORT struct ibv_mr *ibv_reg_dmabuf_mr(struct ibv_pd *pd, uint64_t offset, size_t length,
					     uint64_t iova, int fd, int access)
{
	long pg = sysconf(_SC_PAGESIZE);
	uint64_t start = offset & ~(uint64_t)(pg - 1);
	struct sefa_mr *mr;
	int err = check_access((unsigned)access);

	if (!err && !length)
		err = EINVAL;
	if (!err)
		err = check_dmabuf_fd(fd);
	if (err || !(mr = calloc(1, sizeof(*mr)))) {
		errno = err ? err : ENOMEM;
		return NULL;
	}
	/* the device's own view of the buffer: the user's mapping is never used */
	mr->map_len = (size_t)(offset - start) + length;
	mr->map = mmap(NULL, mr->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)start);
	if (mr->map == MAP_FAILED) {
		err = errno;
		SEFA_INFO("reg_dmabuf_mr: cannot map fd %d at offset %#llx: %s", fd,
			  (unsigned long long)offset, strerror(err));
		free(mr);
		errno = err;
		return NULL;
	}
	mr->iova = iova;
	mr->length = length;
	mr->host_va = (uint64_t)(uintptr_t)mr->map + (offset - start);
	mr->access = (unsigned)access & SUPPORTED_ACCESS;
	mr->ibmr.addr = (void *)(uintptr_t)offset;	/* as rdma-core reports it */
	mr->ibmr.length = length;
	return reg_common(pd, mr);
}

SEFA_EXPORT int ibv_dereg_mr(struct ibv_mr *ibmr)
{
	struct sefa_mr *mr = (struct sefa_mr *)ibmr;
	struct sefa_dev *dev = mr->dev;

	pthread_mutex_lock(&dev->lock);
	sefa_shm_lock(dev->shm);
	memset(&dev->shm->mr[mr->idx], 0, sizeof(dev->shm->mr[mr->idx]));
	sefa_shm_unlock(dev->shm);
	dev->mr_by_idx[mr->idx] = NULL;
	pthread_mutex_unlock(&dev->lock);
	if (mr->map)
		munmap(mr->map, mr->map_len);
	free(mr);
	return 0;
}

/* Device-side access to local memory through an lkey: the caller (the device
 * thread) holds dev->lock, so the MR cannot go away meanwhile. */
int sefa_mr_translate(struct sefa_dev *dev, uint32_t lkey, uint64_t addr, uint64_t len,
		      uint32_t need_access, void **host)
{
	struct sefa_mr *mr = SEFA_KEY_SLOT(lkey) == dev->slot ? dev->mr_by_idx[SEFA_KEY_IDX(lkey)] : NULL;

	if (!mr || mr->key != lkey)
		return SEFA_ST_LOCAL_INVALID_LKEY;
	if (addr < mr->iova || len > mr->length || addr - mr->iova > mr->length - len)
		return SEFA_ST_LOCAL_INVALID_LKEY;	/* "does not match IOVA" */
	if ((mr->access & need_access) != need_access)
		return SEFA_ST_LOCAL_INVALID_LKEY;
	*host = (void *)(uintptr_t)(mr->host_va + (addr - mr->iova));
	return SEFA_ST_OK;
}

int sefa_efadv_query_mr(struct ibv_mr *ibmr, struct efadv_mr_attr *attr, uint32_t inlen)
{
	if (!sefa_is_dev(ibmr->context))
		return EOPNOTSUPP;
	if (inlen < offsetof(struct efadv_mr_attr, rdma_recv_ic_id) + sizeof(attr->rdma_recv_ic_id))
		return EINVAL;
	memset(attr, 0, inlen);
	/* one interconnect (id 0) reaches all memory of a soft device */
	attr->ic_id_validity = EFADV_MR_ATTR_VALIDITY_RECV_IC_ID | EFADV_MR_ATTR_VALIDITY_RDMA_READ_IC_ID;
	if (sefa_cfg.prof.device_caps & EFADV_DEVICE_ATTR_CAPS_RDMA_WRITE)
		attr->ic_id_validity |= EFADV_MR_ATTR_VALIDITY_RDMA_RECV_IC_ID;
	return 0;
}
