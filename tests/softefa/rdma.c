/* softefa: one-sided RDMA read and write. The initiator's device thread does
 * what the target NIC would: under the target's segment lock it checks that
 * the target QP exists with the given qkey, that the target has an AH for the
 * initiator (EFA requires one for RDMA), and that the rkey is valid, belongs
 * to the QP's PD, covers the range and grants the access; then it moves the
 * bytes through the target's /proc/self/mem at the target MR's host address,
 * which for a dma-buf MR is the target device's mapping of the buffer. */
#include "engine.h"

#include <errno.h>
#include <string.h>
#include <sys/uio.h>

static uint32_t check_local(struct sefa_dev *dev, const struct sefa_wqe *w, bool read, struct iovec *iov,
			    size_t *total)
{
	*total = 0;
	if (w->num_sge > sefa_cfg.prof.max_sge_rd)
		return SEFA_ST_LOCAL_BAD_LENGTH;
	for (uint32_t i = 0; i < w->num_sge; i++) {
		void *host;
		uint32_t st = sefa_mr_translate(dev, w->sge[i].lkey, w->sge[i].addr, w->sge[i].length,
						read ? IBV_ACCESS_LOCAL_WRITE : 0, &host);

		if (st)
			return st;
		iov[i].iov_base = host;
		iov[i].iov_len = w->sge[i].length;
		*total += w->sge[i].length;
	}
	return *total > sefa_cfg.prof.max_rdma_size ? SEFA_ST_LOCAL_BAD_LENGTH : SEFA_ST_OK;
}

static bool has_ah_for(const struct sefa_shm *shm, const uint8_t *gid)
{
	for (int i = 1; i < SEFA_SHM_AH; i++)
		if (shm->ah_refs[i] && !memcmp(shm->ah_gid[i], gid, 16))
			return true;
	return false;
}

/* The target's checks; the caller holds the target's segment lock. */
static uint32_t check_remote(struct sefa_dev *dev, const struct sefa_shm *shm, const struct sefa_wqe *w,
			     bool read, size_t len, struct iovec *riov)
{
	const struct sefa_shm_qp *q = &shm->qp[w->dqpn & (SEFA_SHM_QP - 1)];
	const struct sefa_shm_mr *m = &shm->mr[SEFA_KEY_IDX(w->rkey)];
	uint32_t need = read ? IBV_ACCESS_REMOTE_READ : IBV_ACCESS_REMOTE_WRITE;

	if (q->qpn != w->dqpn || q->qkey != w->dqkey ||
	    (q->state != IBV_QPS_RTR && q->state != IBV_QPS_RTS && q->state != IBV_QPS_SQD))
		return SEFA_ST_REMOTE_BAD_DEST_QPN;
	if (!has_ah_for(shm, dev->gid))
		return SEFA_ST_REMOTE_UNKNOWN_PEER;
	if (SEFA_KEY_SLOT(w->rkey) != shm->slot || m->key != w->rkey || m->pd != q->pd)
		return SEFA_ST_REMOTE_BAD_ADDRESS;
	if (w->raddr < m->iova || len > m->length || w->raddr - m->iova > m->length - len)
		return SEFA_ST_REMOTE_BAD_ADDRESS;
	if ((m->access & need) != need)
		return SEFA_ST_REMOTE_BAD_ADDRESS;
	riov->iov_base = (void *)(uintptr_t)(m->host_va + (w->raddr - m->iova));
	riov->iov_len = len;
	return SEFA_ST_OK;
}

/* The target's memory, reached through its /proc/self/mem (see engine.h). */
static int target_memfd(struct sefa_dev *dev, struct sefa_peer *peer)
{
	uint64_t now;

	if (peer->slot == dev->slot && !memcmp(peer->gid, dev->gid, 16))
		return dev->memfd;
	if (peer->memfd >= 0)
		return peer->memfd;
	now = sefa_now_ns();
	if (now - peer->hello_at > 5000000ull) {
		int err = sefa_send_hello(dev, peer, PKT_HELLO);

		if (err && err != EAGAIN && err != ENOBUFS)
			return SEFA_RDMA_ABSENT;
		peer->hello_at = now;
	}
	return SEFA_RDMA_WAIT;
}

int sefa_rdma_exec(struct sefa_dev *dev, struct sefa_peer *peer, const struct sefa_wqe *w, uint32_t *byte_len)
{
	bool read = w->opcode == IBV_WR_RDMA_READ;
	struct iovec liov[SEFA_MAX_SGE], riov;
	struct sefa_shm *shm;
	size_t total;
	ssize_t n = 0;
	uint32_t st = check_local(dev, w, read, liov, &total);
	int fd, err = 0;

	if (st)
		return (int)st;
	shm = sefa_peer_shm(dev, peer);
	if (!shm)
		return SEFA_RDMA_ABSENT;
	fd = target_memfd(dev, peer);
	if (fd < 0)
		return fd;
	if (sefa_shm_lock(shm))
		return SEFA_RDMA_ABSENT;
	if (!atomic_load(&shm->alive)) {
		sefa_shm_unlock(shm);
		return SEFA_RDMA_ABSENT;
	}
	st = check_remote(dev, shm, w, read, total, &riov);
	if (!st && total) {
		off_t at = (off_t)(uintptr_t)riov.iov_base;

		n = read ? preadv(fd, liov, (int)w->num_sge, at) : pwritev(fd, liov, (int)w->num_sge, at);
		err = errno;
	}
	sefa_shm_unlock(shm);
	if (st)
		return (int)st;
	if (total && (n < 0 || (size_t)n != total)) {
		if (!sefa_peer_alive(dev, peer))
			return SEFA_RDMA_ABSENT;	/* it died meanwhile */
		/* a registered range the target has unmapped: real EFA pins pages, this cannot happen there */
		SEFA_ERR("RDMA %s of %zu bytes at %#llx moved %zd: %s", read ? "read" : "write", total,
			 (unsigned long long)w->raddr, n, n < 0 ? strerror(err) : "short");
		return SEFA_ST_REMOTE_BAD_ADDRESS;
	}
	*byte_len = (uint32_t)total;
	return SEFA_ST_OK;
}
