/* softefa: what the device thread does with arriving packets. A send or the
 * immediate of an RDMA write takes the oldest posted receive of the target QP
 * (or none, for an unsolicited write receive), is scattered into it and
 * acknowledged; without a posted receive it is NACKed with RNR; a QP that does
 * not exist, is not ready or has another qkey answers "bad destination QPN". */
#include "engine.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void ack_queue(struct sefa_dev *dev, const struct sefa_pkt *p, uint32_t status)
{
	struct sefa_engine *e = dev->eng;
	struct sefa_peer *peer = sefa_peer_get(dev, p->src_gid, p->src_slot);

	if (peer && peer->n_acks == peer->acks_cap) {
		uint32_t ncap = peer->acks_cap ? peer->acks_cap * 2 : 64;
		struct sefa_ack *a = realloc(peer->acks, ncap * sizeof(*a));

		if (a) {
			peer->acks = a;
			peer->acks_cap = ncap;
		}
	}
	if (peer && !peer->ack_queued && e->n_ack_peers == e->ack_peers_cap) {
		uint32_t ncap = e->ack_peers_cap ? e->ack_peers_cap * 2 : 16;
		struct sefa_peer **a = realloc(e->ack_peers, ncap * sizeof(*a));

		if (a) {
			e->ack_peers = a;
			e->ack_peers_cap = ncap;
		}
	}
	if (!peer || peer->n_acks == peer->acks_cap ||
	    (!peer->ack_queued && e->n_ack_peers == e->ack_peers_cap)) {
		SEFA_ERR("out of memory: an acknowledgement is lost");
		return;
	}
	if (!peer->ack_queued) {
		e->ack_peers[e->n_ack_peers++] = peer;
		peer->ack_queued = true;
	}
	peer->acks[peer->n_acks].seq = p->seq;
	peer->acks[peer->n_acks].status = status;
	peer->n_acks++;
	e->ack_backlog++;
}

/* Sends the queued acknowledgements, up to SEFA_MAX_ACKS per datagram; what a
 * full receive queue refuses stays queued for the next round. */
void sefa_ack_flush(struct sefa_dev *dev)
{
	struct sefa_engine *e = dev->eng;
	uint8_t buf[sizeof(struct sefa_pkt) + SEFA_MAX_ACKS * sizeof(struct sefa_ack)];
	struct sefa_pkt *p = (struct sefa_pkt *)buf;
	uint32_t keep = 0;

	memset(p, 0, sizeof(*p));
	p->magic = SEFA_PKT_MAGIC;
	p->type = PKT_ACKS;
	memcpy(p->src_gid, dev->gid, 16);
	p->src_slot = dev->slot;
	for (uint32_t i = 0; i < e->n_ack_peers; i++) {
		struct sefa_peer *peer = e->ack_peers[i];
		uint32_t sent = 0;

		while (sent < peer->n_acks) {
			uint32_t n = peer->n_acks - sent < SEFA_MAX_ACKS ? peer->n_acks - sent : SEFA_MAX_ACKS;
			size_t len = sizeof(*p) + n * sizeof(struct sefa_ack);
			int r;

			p->n_acks = (uint16_t)n;
			memcpy(p->data, peer->acks + sent, n * sizeof(struct sefa_ack));
			r = sefa_peer_send(dev, peer, p, len);
			if (r == EAGAIN)
				break;
			/* a peer that is gone needs no acknowledgement */
			sent += n;
		}
		memmove(peer->acks, peer->acks + sent, (peer->n_acks - sent) * sizeof(struct sefa_ack));
		peer->n_acks -= sent;
		e->ack_backlog -= sent;
		if (peer->n_acks)
			e->ack_peers[keep++] = peer;
		else
			peer->ack_queued = false;
	}
	e->n_ack_peers = keep;
}

static uint32_t scatter(struct sefa_dev *dev, const struct sefa_rwqe *r, const struct sefa_pkt *p)
{
	size_t cap = 0, off = 0;

	for (uint32_t i = 0; i < r->num_sge; i++)
		cap += r->sge[i].length;
	if (p->len > cap)
		return SEFA_ST_LOCAL_BAD_LENGTH;
	for (uint32_t i = 0; i < r->num_sge && off < p->len; i++) {
		size_t chunk = p->len - off < r->sge[i].length ? p->len - off : r->sge[i].length;
		void *dst;
		uint32_t st = sefa_mr_translate(dev, r->sge[i].lkey, r->sge[i].addr, chunk,
						IBV_ACCESS_LOCAL_WRITE, &dst);

		if (st)
			return st;
		memcpy(dst, p->data + off, chunk);
		off += chunk;
	}
	return SEFA_ST_OK;
}

static uint32_t sender_status(uint32_t recv_status)
{
	if (recv_status == SEFA_ST_LOCAL_BAD_LENGTH)
		return SEFA_ST_REMOTE_BAD_LENGTH;
	return recv_status == SEFA_ST_OK ? SEFA_ST_OK : SEFA_ST_REMOTE_BAD_STATUS;
}

static void deliver(struct sefa_dev *dev, struct sefa_qp *qp, const struct sefa_pkt *p)
{
	struct sefa_cqe c = { 0 };
	struct sefa_rwqe r = { 0 };
	bool is_write = p->type == PKT_WRITE_IMM;
	uint32_t st = SEFA_ST_OK;

	if (sefa_cfg.fault_rnr_every && ++dev->eng->rnr_count % sefa_cfg.fault_rnr_every == 0) {
		ack_queue(dev, p, SEFA_ST_REMOTE_RNR);
		return;
	}
	c.unsolicited = is_write && qp->unsolicited_write_recv;
	if (!c.unsolicited && sefa_rq_pop(qp, &r)) {
		ack_queue(dev, p, SEFA_ST_REMOTE_RNR);
		return;
	}
	if (!is_write)
		st = scatter(dev, &r, p);
	c.wr_id = r.wr_id;
	c.status = st;
	c.opcode = is_write ? IBV_WC_RECV_RDMA_WITH_IMM : IBV_WC_RECV;
	c.has_imm = p->has_imm;
	c.imm = p->imm;
	c.byte_len = p->len;
	c.qp_num = qp->qpn;
	c.src_qp = p->src_qpn;
	c.slid = (uint16_t)sefa_ah_lookup(dev, p->src_gid);
	memcpy(c.sgid, p->src_gid, 16);
	c.qp = qp;
	sefa_cq_push(qp->rcq, &c);
	ack_queue(dev, p, sender_status(st));
}

static void handle_data(struct sefa_dev *dev, const struct sefa_pkt *p, size_t len)
{
	struct sefa_qp *qp;
	int state;

	if (p->type == PKT_SEND && len != sizeof(*p) + p->len) {
		SEFA_ERR("dropping a malformed packet (%zu bytes, says %u)", len, p->len);
		return;
	}
	qp = sefa_qp_find(dev, p->dst_qpn);
	state = qp ? atomic_load(&qp->state) : IBV_QPS_RESET;
	if (!qp || (state != IBV_QPS_RTR && state != IBV_QPS_RTS && state != IBV_QPS_SQD) ||
	    qp->qkey != p->qkey) {
		SEFA_DBG("packet for QP[%u] qkey %u: no such QP here", p->dst_qpn, p->qkey);
		ack_queue(dev, p, SEFA_ST_REMOTE_BAD_DEST_QPN);
		return;
	}
	deliver(dev, qp, p);
}

static void handle_acks(struct sefa_dev *dev, const struct sefa_pkt *p, size_t len)
{
	const struct sefa_ack *a = (const struct sefa_ack *)p->data;

	if (len != sizeof(*p) + (size_t)p->n_acks * sizeof(*a)) {
		SEFA_ERR("dropping malformed acknowledgements");
		return;
	}
	for (uint32_t i = 0; i < p->n_acks; i++) {
		struct sefa_op *op = sefa_op_by_seq(dev->eng, a[i].seq);

		if (op && op->state == OP_WAIT_ACK)
			sefa_op_on_ack(dev, op, a[i].status);
	}
}

static void vanish(struct sefa_dev *dev)
{
	SEFA_ERR("device %s vanishes (SOFTEFA_FAULT_VANISH_AFTER=%ld)", dev->ibdev->name,
		 sefa_cfg.fault_vanish_after);
	dev->vanished = true;
	atomic_store(&dev->shm->alive, 0);
}

static void handle_record(void *arg, const void *rec, size_t len)
{
	struct sefa_dev *dev = arg;
	const struct sefa_pkt *p = rec;

	if (dev->vanished)
		return;
	if (sefa_cfg.fault_vanish_after && ++dev->rx_packets >= sefa_cfg.fault_vanish_after) {
		vanish(dev);
		return;
	}
	if (len < sizeof(*p) || p->magic != SEFA_PKT_MAGIC) {
		SEFA_ERR("dropping a record that is not a softefa packet");
		return;
	}
	if (p->type == PKT_ACKS)
		handle_acks(dev, p, len);
	else if (p->type == PKT_SEND || p->type == PKT_WRITE_IMM)
		handle_data(dev, p, len);
}

/* A sender announces its ring to us: map it (again, if the sender is new). */
static void map_ring(struct sefa_dev *dev, const struct sefa_pkt *p)
{
	struct sefa_engine *e = dev->eng;
	char path[192];
	struct sefa_ring *r;
	uint32_t i;

	sefa_ring_path(path, sizeof(path), p->src_gid, p->src_slot, dev->gid, dev->slot);
	for (i = 0; i < e->n_in; i++)
		if (!strcmp(e->in[i]->path, path))
			break;
	if (i < e->n_in && sefa_ring_incarnation(e->in[i]) == p->seq)
		return;
	r = sefa_ring_open(path);
	if (!r) {
		SEFA_ERR("cannot map the ring %s a peer announced", path);
		return;
	}
	memcpy(r->src_gid, p->src_gid, 16);
	r->src_slot = p->src_slot;
	if (i < e->n_in) {
		sefa_ring_close(e->in[i], false);
		e->in[i] = r;
		return;
	}
	if (e->n_in == e->in_cap) {
		uint32_t ncap = e->in_cap ? e->in_cap * 2 : 16;
		struct sefa_ring **a = realloc(e->in, ncap * sizeof(*a));

		if (!a) {
			SEFA_ERR("out of memory: a peer's ring is ignored");
			sefa_ring_close(r, false);
			return;
		}
		e->in = a;
		e->in_cap = ncap;
	}
	e->in[e->n_in++] = r;
}

static ssize_t recv_datagram(struct sefa_dev *dev, int *fd)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = { dev->eng->rxbuf, dev->eng->rxbuf_len };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			    .msg_controllen = sizeof(ctl.buf) };
	ssize_t len = recvmsg(dev->sock, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); len >= 0 && c; c = CMSG_NXTHDR(&m, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
			memcpy(fd, CMSG_DATA(c), sizeof(int));
	return len;
}

/* A peer's memory fd arrived; answer a first hello with ours. */
static void hello(struct sefa_dev *dev, const struct sefa_pkt *p, int fd)
{
	struct sefa_peer *peer = sefa_peer_get(dev, p->src_gid, p->src_slot);

	if (!peer) {
		if (fd >= 0)
			close(fd);
		return;
	}
	if (fd >= 0) {
		if (peer->memfd >= 0)
			close(peer->memfd);
		peer->memfd = fd;
	}
	if (p->type == PKT_HELLO)
		sefa_send_hello(dev, peer, PKT_HELLO_REPLY);
}

bool sefa_rings_pending(struct sefa_dev *dev)
{
	for (uint32_t i = 0; i < dev->eng->n_in; i++)
		if (!sefa_ring_empty(dev->eng->in[i]))
			return true;
	return false;
}

/* Maps announced rings, then answers what they carry (a batch per ring). */
int sefa_engine_receive(struct sefa_dev *dev)
{
	struct sefa_engine *e = dev->eng;
	int n = 0;

	for (;;) {
		int fd = -1;
		ssize_t len = recv_datagram(dev, &fd);
		const struct sefa_pkt *p = (const struct sefa_pkt *)e->rxbuf;

		if (len < 0)
			break;
		if ((size_t)len < sizeof(*p) || p->magic != SEFA_PKT_MAGIC) {
			if (fd >= 0)
				close(fd);
			continue;
		}
		if (p->type == PKT_RING)
			map_ring(dev, p);
		else if (p->type == PKT_HELLO || p->type == PKT_HELLO_REPLY)
			hello(dev, p, fd), fd = -1;
		if (fd >= 0)
			close(fd);
	}
	/* while many acknowledgements wait for room, stop taking new packets */
	for (uint32_t i = 0; i < e->n_in && e->ack_backlog < 4096; i++)
		n += sefa_ring_drain(e->in[i], 64, handle_record, dev);
	sefa_ack_flush(dev);
	return n;
}
