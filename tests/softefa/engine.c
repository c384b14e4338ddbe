/* softefa: the device thread. It takes posted WRs off the send queues,
 * gathers their bytes, puts packets on the wire (a Unix datagram socket per
 * device) in an order picked at random within a seeded window, waits for the
 * receiver's acknowledgement, retries on RNR as the QP's rnr_retry allows,
 * gives up on a dead peer after the timeout, and releases send completions in
 * random order within the same window: reliable, unordered, like SRD. */
#include "engine.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_US 1000ull
#define NS_PER_MS 1000000ull
#define ABSENT_RETRY_NS (2 * NS_PER_MS)	/* how often to look for a peer that is not there */
#define BLOCKED_RETRY_NS (50 * NS_PER_US)

/* ---- peers ---------------------------------------------------------------- */
struct sefa_peer *sefa_peer_get(struct sefa_dev *dev, const uint8_t *gid, uint32_t slot)
{
	struct sefa_engine *e = dev->eng;
	uint32_t h = (gid[12] ^ gid[13] * 7u ^ gid[15] * 31u ^ slot * 131u) & 63u;
	struct sefa_peer *p;
	char path[sizeof(p->addr.sun_path)];

	for (p = e->peers[h]; p; p = p->next)
		if (p->slot == slot && !memcmp(p->gid, gid, 16))
			return p;
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	memcpy(p->gid, gid, 16);
	p->slot = slot;
	p->memfd = -1;
	p->addr.sun_family = AF_UNIX;
	sefa_peer_paths(gid, slot, path, sizeof(path), NULL, 0);
	memcpy(p->addr.sun_path, path, sizeof(path));
	p->next = e->peers[h];
	e->peers[h] = p;
	return p;
}

struct sefa_shm *sefa_peer_shm(struct sefa_dev *dev, struct sefa_peer *peer)
{
	char path[192];

	if (peer->shm)
		return peer->shm;
	if (peer->slot == dev->slot && !memcmp(peer->gid, dev->gid, 16))
		return dev->shm;
	sefa_peer_paths(peer->gid, peer->slot, NULL, 0, path, sizeof(path));
	if (sefa_shm_map_peer(path, &peer->shm))
		peer->shm = NULL;
	return peer->shm;
}

bool sefa_peer_alive(struct sefa_dev *dev, struct sefa_peer *peer)
{
	struct sefa_shm *shm = sefa_peer_shm(dev, peer);

	return shm && atomic_load(&shm->alive) && sefa_sock_has_owner(&peer->addr);
}

/* Our /proc/self/mem goes along: the peer may do RDMA into us too. */
int sefa_send_hello(struct sefa_dev *dev, struct sefa_peer *peer, uint8_t type)
{
	struct sefa_pkt p = { .magic = SEFA_PKT_MAGIC, .type = type, .src_slot = dev->slot };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = { &p, sizeof(p) };
	struct msghdr m = { .msg_name = &peer->addr, .msg_namelen = sizeof(peer->addr), .msg_iov = &iov,
			    .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);

	memcpy(p.src_gid, dev->gid, 16);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &dev->memfd, sizeof(int));
	if (sendmsg(dev->sock, &m, MSG_DONTWAIT) < 0)
		return errno;
	return 0;
}

static void wake(struct sefa_dev *dev, struct sefa_peer *peer)
{
	struct sefa_shm *shm = sefa_peer_shm(dev, peer);
	struct sefa_pkt p = { .magic = SEFA_PKT_MAGIC, .type = PKT_WAKE };

	if (shm && atomic_load(&shm->sleeping))
		sendto(dev->sock, &p, sizeof(p), MSG_DONTWAIT, (struct sockaddr *)&peer->addr, sizeof(peer->addr));
}

int sefa_peer_send(struct sefa_dev *dev, struct sefa_peer *peer, const void *buf, size_t len)
{
	int err;

	if (!peer->out) {
		char path[192];

		sefa_ring_path(path, sizeof(path), dev->gid, dev->slot, peer->gid, peer->slot);
		peer->out = sefa_ring_create(path);
		if (!peer->out)
			return EAGAIN;
	}
	if (!peer->announced) {
		struct sefa_pkt a = { .magic = SEFA_PKT_MAGIC, .type = PKT_RING, .src_slot = dev->slot };

		memcpy(a.src_gid, dev->gid, 16);
		a.seq = sefa_ring_incarnation(peer->out);
		if (sendto(dev->sock, &a, sizeof(a), MSG_DONTWAIT, (struct sockaddr *)&peer->addr,
			   sizeof(peer->addr)) < 0)
			return errno == EAGAIN || errno == ENOBUFS ? EAGAIN : ECONNREFUSED;
		peer->announced = true;
	}
	err = sefa_ring_push(peer->out, buf, len, NULL, 0);
	if (err == EMSGSIZE)
		SEFA_ERR("a packet of %zu bytes does not fit the ring (SOFTEFA_RING_KB)", len);
	if (!err)
		wake(dev, peer);
	return err;
}

/* ---- the op table ------------------------------------------------------------ */
static int op_register(struct sefa_engine *e, struct sefa_op *op)
{
	uint32_t slot;

	if (!e->n_free) {
		uint32_t ncap = e->ops_cap ? e->ops_cap * 2 : 256;
		struct sefa_op **ops = realloc(e->ops, ncap * sizeof(*ops));
		uint32_t *fs = realloc(e->free_slots, ncap * sizeof(*fs));

		if (ops)
			e->ops = ops;
		if (fs)
			e->free_slots = fs;
		if (!ops || !fs)
			return ENOMEM;
		for (uint32_t i = ncap; i > e->ops_cap; i--) {
			e->ops[i - 1] = NULL;
			e->free_slots[e->n_free++] = i - 1;
		}
		e->ops_cap = ncap;
	}
	slot = e->free_slots[--e->n_free];
	e->ops[slot] = op;
	op->seq = ((uint64_t)++e->seq_gen << 32) | slot;
	return 0;
}

struct sefa_op *sefa_op_by_seq(struct sefa_engine *e, uint64_t seq)
{
	uint32_t slot = (uint32_t)seq;

	if (slot >= e->ops_cap || !e->ops[slot] || e->ops[slot]->seq != seq)
		return NULL;
	return e->ops[slot];
}

static void op_free(struct sefa_engine *e, struct sefa_op *op)
{
	uint32_t slot = (uint32_t)op->seq;

	if (slot < e->ops_cap && e->ops[slot] == op) {
		e->ops[slot] = NULL;
		e->free_slots[e->n_free++] = slot;
	}
	free(op->pkt);
	free(op);
}

static int txq_push(struct sefa_engine *e, struct sefa_op *op)
{
	if (e->txq_n == e->txq_cap) {
		uint32_t ncap = e->txq_cap ? e->txq_cap * 2 : 256;
		struct sefa_op **q = realloc(e->txq, ncap * sizeof(*q));

		if (!q)
			return ENOMEM;
		e->txq = q;
		e->txq_cap = ncap;
	}
	e->txq[e->txq_n++] = op;
	op->state = OP_QUEUED;
	return 0;
}

static void arm(struct sefa_engine *e, uint64_t t)
{
	if (t < e->next_timer)
		e->next_timer = t;
}

/* ---- completions ----------------------------------------------------------------- */
static void cwin_flush(struct sefa_dev *dev)
{
	struct sefa_engine *e = dev->eng;

	while (e->cwin_n) {
		uint32_t i = (uint32_t)(sefa_rand(&e->rng) % e->cwin_n);

		sefa_cq_push(e->cwin[i].cq, &e->cwin[i].cqe);
		e->cwin[i] = e->cwin[--e->cwin_n];
	}
}

void sefa_op_complete(struct sefa_dev *dev, struct sefa_op *op, uint32_t status)
{
	struct sefa_engine *e = dev->eng;
	struct sefa_pending_cqe *p;
	uint8_t opc = op->w.opcode;

	if (status != SEFA_ST_OK)
		SEFA_DBG("QP[%u] wr_id %#llx completes with status %u", op->qp->qpn,
			 (unsigned long long)op->w.wr_id, status);
	if (e->cwin_n == e->cwin_cap) {
		uint32_t ncap = e->cwin_cap ? e->cwin_cap * 2 : 64;
		struct sefa_pending_cqe *w = realloc(e->cwin, ncap * sizeof(*w));

		if (!w) {
			cwin_flush(dev);	/* no room to hold it back: release in order */
		} else {
			e->cwin = w;
			e->cwin_cap = ncap;
		}
	}
	p = &e->cwin[e->cwin_n++];
	memset(p, 0, sizeof(*p));
	p->cq = op->qp->scq;
	p->cqe.wr_id = op->w.wr_id;
	p->cqe.status = status;
	/* rdma-core's efa provider reports RDMA read completions as IBV_WC_SEND */
	p->cqe.opcode = (opc == IBV_WR_RDMA_WRITE || opc == IBV_WR_RDMA_WRITE_WITH_IMM) ? IBV_WC_RDMA_WRITE
											 : IBV_WC_SEND;
	p->cqe.is_send = true;
	p->cqe.qp_num = op->qp->qpn;
	p->cqe.qp = op->qp;
	op_free(e, op);
	if (e->cwin_n >= (uint32_t)sefa_cfg.reorder)
		cwin_flush(dev);
}

/* ---- preparing an op: check and gather the local bytes --------------------------- */
static uint32_t gather(struct sefa_dev *dev, struct sefa_op *op)
{
	const struct sefa_wqe *w = &op->w;
	size_t len = 0, off = 0;

	if (w->is_inline)
		len = w->inline_len;
	else
		for (uint32_t i = 0; i < w->num_sge; i++)
			len += w->sge[i].length;
	if (len > sefa_cfg.prof.mtu)
		return SEFA_ST_LOCAL_BAD_LENGTH;
	op->pkt_len = sizeof(struct sefa_pkt) + len;
	op->pkt = calloc(1, op->pkt_len);
	if (!op->pkt)
		return SEFA_ST_LOCAL_QP_INTERNAL;
	if (w->is_inline)
		memcpy(op->pkt->data, w->inline_data, len);
	for (uint32_t i = 0; !w->is_inline && i < w->num_sge; i++) {
		void *src;
		uint32_t st = sefa_mr_translate(dev, w->sge[i].lkey, w->sge[i].addr, w->sge[i].length, 0, &src);

		if (st)
			return st;
		memcpy(op->pkt->data + off, src, w->sge[i].length);
		off += w->sge[i].length;
	}
	op->pkt->type = PKT_SEND;
	op->pkt->len = (uint32_t)len;
	return SEFA_ST_OK;
}

static void fill_header(struct sefa_dev *dev, struct sefa_op *op, uint8_t type)
{
	struct sefa_pkt *p = op->pkt;

	p->magic = SEFA_PKT_MAGIC;
	p->type = type;
	p->has_imm = op->w.has_imm;
	p->imm = op->w.imm;
	memcpy(p->src_gid, dev->gid, 16);
	p->src_slot = dev->slot;
	p->src_qpn = op->qp->qpn;
	p->dst_qpn = op->w.dqpn;
	p->qkey = op->w.dqkey;
	p->seq = op->seq;
}

static uint32_t dest_slot(uint32_t qpn)
{
	return sefa_cfg.shared_host ? qpn >> SEFA_QPN_BITS_SHARED : 0;
}

static void prepare(struct sefa_dev *dev, struct sefa_qp *qp, const struct sefa_wqe *w)
{
	struct sefa_engine *e = dev->eng;
	struct sefa_op *op = calloc(1, sizeof(*op));
	uint32_t st = SEFA_ST_OK;

	if (!op || op_register(e, op)) {
		SEFA_ERR("out of memory: QP[%u] loses a WR", qp->qpn);
		free(op);
		return;
	}
	op->w = *w;
	op->qp = qp;
	op->deadline = sefa_now_ns() + (uint64_t)sefa_cfg.timeout_ms * NS_PER_MS;
	if (!w->has_addr)
		st = SEFA_ST_LOCAL_INVALID_AH;
	else if (!(op->peer = sefa_peer_get(dev, w->dgid, dest_slot(w->dqpn))))
		st = SEFA_ST_LOCAL_QP_INTERNAL;
	else if (w->opcode == IBV_WR_SEND || w->opcode == IBV_WR_SEND_WITH_IMM)
		st = gather(dev, op);
	if (st == SEFA_ST_OK && op->pkt)
		fill_header(dev, op, PKT_SEND);
	if (st == SEFA_ST_OK && txq_push(e, op))
		st = SEFA_ST_LOCAL_QP_INTERNAL;
	if (st != SEFA_ST_OK)
		sefa_op_complete(dev, op, st);
}

static int fetch_posted(struct sefa_dev *dev)
{
	int n = 0;

	for (struct sefa_qp *qp = dev->qps; qp; qp = qp->next) {
		uint32_t head = atomic_load(&qp->sq_head);
		uint32_t tail = atomic_load(&qp->sq_tail);

		for (; tail != head; tail++, n++)
			prepare(dev, qp, &qp->sq[tail & (qp->sq_cnt - 1)]);
		atomic_store(&qp->sq_tail, tail);
	}
	return n;
}

/* ---- putting ops on the wire ---------------------------------------------------------- */
static void absent(struct sefa_dev *dev, struct sefa_op *op, uint64_t now)
{
	if (now >= op->deadline) {
		sefa_op_complete(dev, op, op->peer->responsive ? SEFA_ST_LOCAL_UNRESP_REMOTE
							       : SEFA_ST_LOCAL_UNREACH_REMOTE);
		return;
	}
	op->state = OP_RETRY;
	op->retry_at = now + ABSENT_RETRY_NS;
	arm(dev->eng, op->retry_at);
}

/* Returns false when the peer's queue is full and transmission must pause. */
static bool transmit_one(struct sefa_dev *dev, struct sefa_op *op, uint64_t now)
{
	int err;

	if (!op->pkt) {	/* RDMA read or write */
		int st = sefa_rdma_exec(dev, op->peer, &op->w, &op->byte_len);

		if (st == SEFA_RDMA_ABSENT) {
			absent(dev, op, now);
			return true;
		}
		if (st == SEFA_RDMA_WAIT) {	/* the target's memory fd is on its way */
			if (now >= op->deadline) {
				absent(dev, op, now);
				return true;
			}
			op->state = OP_RETRY;
			op->retry_at = now + 100 * NS_PER_US;
			arm(dev->eng, op->retry_at);
			return true;
		}
		op->peer->responsive = true;
		if (st != SEFA_ST_OK || op->w.opcode != IBV_WR_RDMA_WRITE_WITH_IMM) {
			sefa_op_complete(dev, op, (uint32_t)st);
			return true;
		}
		/* the data is in place: now the immediate, which consumes a receive */
		op->pkt_len = sizeof(struct sefa_pkt);
		op->pkt = calloc(1, op->pkt_len);
		if (!op->pkt) {
			sefa_op_complete(dev, op, SEFA_ST_LOCAL_QP_INTERNAL);
			return true;
		}
		fill_header(dev, op, PKT_WRITE_IMM);
		op->pkt->len = op->byte_len;
	}
	err = sefa_peer_send(dev, op->peer, op->pkt, op->pkt_len);
	SEFA_DBG("tx QP[%u] seq %#llx to QP[%u]: %s", op->qp->qpn, (unsigned long long)op->seq, op->w.dqpn,
		 err ? strerror(err) : "ok");
	if (!err) {
		op->state = OP_WAIT_ACK;
		arm(dev->eng, op->deadline);
		return true;
	}
	if (err == EAGAIN)
		return false;
	if (err == EMSGSIZE) {
		sefa_op_complete(dev, op, SEFA_ST_LOCAL_QP_INTERNAL);
		return true;
	}
	absent(dev, op, now);
	return true;
}

static int transmit(struct sefa_dev *dev)
{
	struct sefa_engine *e = dev->eng;
	uint64_t now = sefa_now_ns();
	int n = 0;

	e->tx_blocked = false;
	while (e->txq_n && !dev->vanished) {
		uint32_t w = e->txq_n < (uint32_t)sefa_cfg.reorder ? e->txq_n : (uint32_t)sefa_cfg.reorder;
		uint32_t i = (uint32_t)(sefa_rand(&e->rng) % w);
		struct sefa_op *op = e->txq[i];

		if (sefa_cfg.fault_delay_us)
			usleep((useconds_t)sefa_cfg.fault_delay_us);
		if (!transmit_one(dev, op, now)) {
			e->tx_blocked = true;
			break;
		}
		/* keep the rest in order: the window slides over the queue */
		memmove(&e->txq[i], &e->txq[i + 1], (e->txq_n - i - 1) * sizeof(*e->txq));
		e->txq_n--;
		n++;
	}
	return n;
}

void sefa_op_on_ack(struct sefa_dev *dev, struct sefa_op *op, uint32_t status)
{
	SEFA_DBG("ack QP[%u] seq %#llx status %u", op->qp->qpn, (unsigned long long)op->seq, status);
	op->peer->responsive = true;
	if (status != SEFA_ST_REMOTE_RNR) {
		sefa_op_complete(dev, op, status);
		return;
	}
	op->rnr_tries++;
	if (op->qp->rnr_retry != 7 && op->rnr_tries > op->qp->rnr_retry) {
		sefa_op_complete(dev, op, SEFA_ST_REMOTE_RNR);
		return;
	}
	op->state = OP_RETRY;
	op->retry_at = sefa_now_ns() + (uint64_t)sefa_cfg.rnr_delay_us * NS_PER_US;
	op->deadline = op->retry_at + (uint64_t)sefa_cfg.timeout_ms * NS_PER_MS;
	arm(dev->eng, op->retry_at);
}

/* Retries that are due go back on the wire; ops whose peer stopped answering fail. */
static int run_timers(struct sefa_dev *dev)
{
	struct sefa_engine *e = dev->eng;
	uint64_t now = sefa_now_ns(), next = UINT64_MAX;
	int n = 0;

	if (now < e->next_timer)
		return 0;
	for (uint32_t i = 0; i < e->ops_cap; i++) {
		struct sefa_op *op = e->ops[i];

		if (!op || op->state == OP_QUEUED)
			continue;
		if (op->state == OP_RETRY && now >= op->retry_at) {
			if (txq_push(e, op) == 0)
				n++;
			continue;
		}
		if (op->state == OP_WAIT_ACK && now >= op->deadline) {
			if (sefa_peer_alive(dev, op->peer) && !dev->vanished) {
				/* alive and only slow (a loaded machine): keep waiting */
				op->deadline = now + (uint64_t)sefa_cfg.timeout_ms * NS_PER_MS;
			} else {
				sefa_op_complete(dev, op, op->peer->responsive ? SEFA_ST_LOCAL_UNRESP_REMOTE
									       : SEFA_ST_LOCAL_UNREACH_REMOTE);
				n++;
				continue;
			}
		}
		if (op->state == OP_RETRY && op->retry_at < next)
			next = op->retry_at;
		if (op->state == OP_WAIT_ACK && op->deadline < next)
			next = op->deadline;
	}
	e->next_timer = next;
	return n;
}

/* ---- the thread ------------------------------------------------------------------------ */
static bool sq_pending(struct sefa_dev *dev)
{
	for (struct sefa_qp *qp = dev->qps; qp; qp = qp->next)
		if (atomic_load(&qp->sq_head) != atomic_load(&qp->sq_tail))
			return true;
	return false;
}

static int64_t wait_ns(struct sefa_dev *dev)
{
	struct sefa_engine *e = dev->eng;
	uint64_t now = sefa_now_ns();

	if (e->tx_blocked || e->ack_backlog)
		return (int64_t)BLOCKED_RETRY_NS;
	if (e->next_timer == UINT64_MAX)
		return -1;
	return e->next_timer > now ? (int64_t)(e->next_timer - now) : 0;
}

/* One round of device work; the caller holds dev->lock. */
static int engine_step(struct sefa_dev *dev)
{
	int work = fetch_posted(dev);

	work += transmit(dev);
	work += sefa_engine_receive(dev);
	work += run_timers(dev);
	cwin_flush(dev);
	return work;
}

static void *engine_main(void *arg)
{
	struct sefa_dev *dev = arg;
	struct pollfd pfd[2] = { { .fd = dev->sock, .events = POLLIN }, { .fd = dev->evfd, .events = POLLIN } };

	while (!atomic_load(&dev->stop)) {
		struct timespec ts, *tsp = NULL;
		int64_t wait;
		bool pending;

		pthread_mutex_lock(&dev->lock);
		pending = engine_step(dev) > 0;
		wait = wait_ns(dev);
		atomic_store(&dev->sleeping, true);
		atomic_store(&dev->shm->sleeping, 1);
		pending = pending || sq_pending(dev) || sefa_rings_pending(dev);
		pthread_mutex_unlock(&dev->lock);
		if (!pending && wait != 0) {
			if (wait > 0) {
				ts.tv_sec = wait / 1000000000;
				ts.tv_nsec = wait % 1000000000;
				tsp = &ts;
			}
			ppoll(pfd, 2, tsp, NULL);
		}
		atomic_store(&dev->shm->sleeping, 0);
		atomic_store(&dev->sleeping, false);
		if (pfd[1].revents & POLLIN) {
			uint64_t v;

			if (read(dev->evfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
				SEFA_ERR("doorbell read: %s", strerror(errno));
		}
		pfd[0].revents = pfd[1].revents = 0;
	}
	return NULL;
}

/* An application thread that posts or polls lends the device its CPU when
 * the device thread is not busy: with few cores a sleeping device thread
 * would otherwise wait for the spinning poller's time slice to end. */
bool sefa_engine_assist(struct sefa_dev *dev)
{
	if (pthread_mutex_trylock(&dev->lock))
		return false;
	engine_step(dev);
	pthread_mutex_unlock(&dev->lock);
	return true;
}

void sefa_engine_kick(struct sefa_dev *dev)
{
	uint64_t one = 1;

	if (atomic_load(&dev->sleeping) && write(dev->evfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		SEFA_ERR("doorbell write: %s", strerror(errno));
}

int sefa_engine_start(struct sefa_dev *dev)
{
	struct sefa_engine *e = calloc(1, sizeof(*e));
	int err;

	if (!e)
		return ENOMEM;
	e->rng = sefa_cfg.seed ^ ((uint64_t)dev->index << 48) ^ ((uint64_t)dev->slot << 40);
	e->next_timer = UINT64_MAX;
	e->rxbuf_len = sizeof(struct sefa_pkt) + 64;
	e->rxbuf = malloc(e->rxbuf_len);
	dev->eng = e;
	dev->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (!e->rxbuf || dev->evfd < 0) {
		err = dev->evfd < 0 ? errno : ENOMEM;
		goto fail;
	}
	err = pthread_create(&dev->thread, NULL, engine_main, dev);
	if (!err)
		return 0;
fail:
	SEFA_ERR("cannot start the device thread: %s", strerror(err));
	if (dev->evfd >= 0)
		close(dev->evfd);
	dev->evfd = -1;
	free(e->rxbuf);
	free(e);
	dev->eng = NULL;
	return err;
}

void sefa_engine_stop(struct sefa_dev *dev)
{
	struct sefa_engine *e = dev->eng;
	uint64_t one = 1;

	if (!e)
		return;
	atomic_store(&dev->stop, true);
	if (write(dev->evfd, &one, sizeof(one)) < 0)
		SEFA_ERR("doorbell write: %s", strerror(errno));
	pthread_join(dev->thread, NULL);
	for (uint32_t i = 0; i < e->ops_cap; i++)
		if (e->ops[i])
			op_free(e, e->ops[i]);
	for (int h = 0; h < 64; h++)
		while (e->peers[h]) {
			struct sefa_peer *p = e->peers[h];

			e->peers[h] = p->next;
			sefa_shm_unmap(p->shm);
			sefa_ring_close(p->out, true);
			if (p->memfd >= 0)
				close(p->memfd);
			free(p->acks);
			free(p);
		}
	close(dev->evfd);
	free(e->txq);
	free(e->ops);
	free(e->free_slots);
	free(e->cwin);
	free(e->ack_peers);
	for (uint32_t i = 0; i < e->n_in; i++)
		sefa_ring_close(e->in[i], false);
	free(e->in);
	free(e->rxbuf);
	free(e);
	dev->eng = NULL;
}

/* A QP is going away (dev->lock held): its WRs vanish without completions. */
void sefa_engine_forget_qp(struct sefa_dev *dev, struct sefa_qp *qp)
{
	struct sefa_engine *e = dev->eng;
	uint32_t w = 0;

	for (uint32_t i = 0; i < e->txq_n; i++)
		if (e->txq[i]->qp != qp)
			e->txq[w++] = e->txq[i];
	e->txq_n = w;
	for (uint32_t i = 0; i < e->ops_cap; i++)
		if (e->ops[i] && e->ops[i]->qp == qp)
			op_free(e, e->ops[i]);
	for (uint32_t i = 0; i < e->cwin_n;)
		if (e->cwin[i].cqe.qp == qp)
			e->cwin[i] = e->cwin[--e->cwin_n];
		else
			i++;
}
