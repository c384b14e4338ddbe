/*
 * Connections: listen / connect / accept, close, and their messages.
 *
 * Connection set-up over a connectionless RDM endpoint:
 *   listen():  allocates a listener id and a random nonce; the handle carries
 *              the device's endpoint address, the id and the nonce.
 *   connect(): inserts the listener's address, sends CONNECT(listener id,
 *              nonce, our comm id, our address) and returns NULL until the
 *              CONNECT_ACK names the receiver's comm id.
 *   accept():  takes a queued CONNECT, creates the receiving comm, inserts the
 *              sender's address and sends CONNECT_ACK.
 * The sender may see a CTS before the ACK (no ordering): it is kept.
 *
 * Closing: close() sends CLOSE(number of operations this side started) so the
 * peer fails only the requests that can no longer complete; requests still in
 * flight are abandoned (their completions are swallowed) and the comm's memory
 * is freed once the provider has returned every operation it owned.
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rdma/fi_errno.h>

#include "core/config.h"
#include "core/log.h"
#include "protocol/internal.h"

/* ---- listen ---------------------------------------------------------------- */
/* Both sides take eager messages only up to the smaller limit: a sender with
 * a larger one (FABNET_EAGER_MAX, or an MTU-bound efa-direct endpoint on one
 * side only) would overrun the receiver's bounce buffers. 0: an older peer
 * that does not say; our own limit then. */
static void agree_eager(struct fabnet_comm *c, uint32_t peer)
{
	uint32_t own = (uint32_t)c->dev->eager_max;

	c->eager_max = peer && peer < own ? peer : own;
	if (peer && peer != own)
		FN_INFO(NCCL_INIT | NCCL_NET, "fabnet: %s comm %u on %s: eager messages up to %u "
			"bytes (ours %u, the peer's %u; FABNET_EAGER_MAX)",
			c->kind == FABNET_SEND ? "send" : "recv", c->id, c->dev->name, c->eager_max,
			own, peer);
}

ncclResult_t fabnet_proto_listen(struct fabnet_dev *dev, void *handle, struct fabnet_comm **out)
{
	struct fabnet_handle h;
	struct fabnet_comm *c;

	*out = NULL;
	c = fabnet_comm_new(dev, FABNET_LISTEN);
	if (!c)
		return ncclSystemError;
	c->state = FABNET_READY;
	c->u.listen.nonce = fabnet_random64();
	memset(&h, 0, sizeof(h));
	h.listen_id = c->id;
	h.nonce = c->u.listen.nonce;
	h.addrlen = (uint8_t)dev->addrlen;
	memcpy(h.addr, dev->addr, dev->addrlen);
	if (dev->addrlen > FABNET_ADDR_MAX || fabnet_handle_encode(&h, handle, FABNET_HANDLE_SIZE)) {
		FN_WARN("fabnet: the endpoint address of %s (%zu bytes) does not fit a handle",
			dev->name, dev->addrlen);
		fabnet_comm_free(c);
		return ncclInternalError;
	}
	*out = c;
	return ncclSuccess;
}

void fabnet_conn_on_connect(struct fabnet_dev *dev, const struct fabnet_msg *m)
{
	struct fabnet_comm *l = fabnet_proto_lookup(dev, m->dst_id);
	struct fabnet_pending_conn *p;

	if (!l || l->kind != FABNET_LISTEN || l->closing || l->u.listen.nonce != m->u.connect.nonce) {
		FN_INFO(NCCL_NET, "fabnet: CONNECT for listener %u on %s ignored: no such listener "
			"(closed, or a stale handle)", m->dst_id, dev->name);
		return;
	}
	for (unsigned i = 0; i < l->u.listen.npending; i++)
		if (l->u.listen.pending[i].src_id == m->src_id &&
		    l->u.listen.pending[i].addrlen == m->u.connect.addrlen &&
		    !memcmp(l->u.listen.pending[i].addr, m->u.connect.addr, m->u.connect.addrlen))
			return; /* duplicate */
	if (l->u.listen.npending == l->u.listen.cap) {
		unsigned cap = l->u.listen.cap ? l->u.listen.cap * 2 : 4;
		p = realloc(l->u.listen.pending, cap * sizeof(*p));
		if (!p) {
			FN_WARN("fabnet: out of memory queueing a connection on %s", dev->name);
			return;
		}
		l->u.listen.pending = p;
		l->u.listen.cap = cap;
	}
	p = &l->u.listen.pending[l->u.listen.npending++];
	p->src_id = m->src_id;
	p->token = m->token;
	p->eager_max = m->seq;
	p->credits = m->u.connect.credits;
	p->proc = m->u.connect.proc;
	p->addrlen = m->u.connect.addrlen;
	memcpy(p->addr, m->u.connect.addr, p->addrlen);
}

void fabnet_conn_on_ack(struct fabnet_dev *dev, const struct fabnet_msg *m)
{
	struct fabnet_comm *c = fabnet_proto_lookup(dev, m->dst_id);

	if (!c || c->kind != FABNET_SEND || c->closing || c->state != FABNET_CONNECTING ||
	    c->u.send.nonce != m->u.ack.nonce || m->src_id > FABNET_MAX_COMMS ||
	    (c->peer_id && c->peer_id != m->src_id)) {
		FN_INFO(NCCL_NET, "fabnet: CONNECT_ACK for comm %u on %s ignored (stale or "
			"not connecting)", m->dst_id, dev->name);
		return;
	}
	c->peer_id = (uint16_t)m->src_id;
	c->peer_token = m->token;
	fabnet_comm_set_peer_proc(c, &m->u.ack.proc);
	fabnet_peer_heard(PD(dev), c->peer);
	agree_eager(c, m->seq);
	/* The ACK names the count both sides agreed on (the receiver's store). */
	c->credits_max = m->u.ack.credits < fabnet_config()->eager_credits ?
		m->u.ack.credits : (uint16_t)fabnet_config()->eager_credits;
	c->credits = c->credits_max;
	for (int i = 0; i < FABNET_NSLOTS; i++) {
		struct fabnet_cts_slot *s = &c->u.send.cts[i];
		if (s->valid && s->src != c->peer_id) {
			if (fabnet_drop_log_ok(dev))
				FN_WARN("fabnet: send comm %u on %s: dropped a CTS (seq %u) that came before "
					"the CONNECT_ACK from comm %u, not from the peer %u (forged or stale)",
					c->id, dev->name, s->seq, s->src, c->peer_id);
			s->valid = 0;
		}
	}
	c->rail_peer[0] = c->peer;
	c->nrails = 1;
	/* Use the rails both sides have; rail k talks to the receiver's rail k. */
	for (int k = 1; k < c->dev->nrails && k <= m->u.ack.nextra; k++) {
		const uint8_t *a = m->u.ack.addrs + (size_t)(k - 1) * m->u.ack.addrlen;
		if (fabnet_dev_peer(c->dev->rails[k], a, m->u.ack.addrlen, &c->rail_peer[k])) {
			FN_WARN("fabnet: send comm %u on %s: the receiver's rail %d address is not "
				"usable on %s; striping over %d rail%s", c->id, c->dev->name, k,
				c->dev->rails[k]->name, k, k > 1 ? "s" : "");
			break;
		}
		c->nrails = (uint8_t)(k + 1);
	}
	if (c->dev->nrails > 1 || m->u.ack.nextra)
		FN_INFO(NCCL_NET, "fabnet: send comm %u on %s uses %d rail%s (ours %d, the "
			"receiver's %d)", c->id, c->dev->name, c->nrails, c->nrails > 1 ? "s" : "",
			c->dev->nrails > 1 ? c->dev->nrails : 1, 1 + m->u.ack.nextra);
	c->state = FABNET_READY;
}

void fabnet_conn_on_close(struct fabnet_dev *dev, const struct fabnet_msg *m)
{
	struct fabnet_comm *c = fabnet_proto_lookup(dev, m->dst_id);

	/* The first CLOSE says how far the peer got; one answering a PING later
	 * (below) knows nothing of that and must not move it. */
	if (!c || c->kind == FABNET_LISTEN || c->closing || c->peer_id != m->src_id ||
	    c->peer_closed)
		return;
	c->peer_closed = 1;
	c->peer_final_seq = m->seq;
	if (c->kind == FABNET_RECV) {
		/* Per tag, how many sends can still arrive; tags not named: none,
		 * unless the list is partial (then: not known). */
		for (uint32_t i = 0; i < c->tags.cap; i++)
			c->tags.t[i].named = 0;
		for (uint32_t i = 0; i < m->u.close.ntags; i++) {
			struct fabnet_tag_count *t;
			int32_t tag;
			uint32_t count;
			fabnet_msg_close_tag(m, i, &tag, &count);
			t = fabnet_tag_get(&c->tags, tag);
			if (t) {
				t->final = count;
				t->named = 1;
			}
		}
		c->u.recv.peer_tags_final = 1;
		c->u.recv.peer_tags_partial = m->seq == FABNET_CLOSE_PARTIAL;
	}
	FN_INFO(NCCL_NET, "fabnet: peer of comm %u on %s closed after %u operations", c->id,
		dev->name, m->seq);
}

/* A PING's delivery is its answer while our comm lives. One for a comm we no
 * longer have (closed, with our CLOSE lost or never sent; or its id issued
 * again since) would be delivered just the same, and its sender would wait on
 * its receives for good: answer it with a CLOSE of 0 operations, in its own
 * token, to its endpoint. Only to an endpoint already in our address vector
 * (a peer we had; a forged PING cannot make us insert addresses or reach
 * anyone new) and at most PINGBACK_PER_S a second per device. */
#define PINGBACK_PER_S 20

static int pingback_ok(struct fabnet_proto_dev *pd)
{
	uint64_t ms = fabnet_now_ms();

	if (ms - pd->pingback_window_ms >= 1000) {
		pd->pingback_window_ms = ms;
		pd->pingbacks = 0;
	}
	return pd->pingbacks++ < PINGBACK_PER_S;
}

void fabnet_conn_on_ping(struct fabnet_dev *dev, const struct fabnet_msg *m)
{
	struct fabnet_comm *c = fabnet_proto_lookup(dev, m->dst_id);
	fi_addr_t peer;
	void *buf;
	size_t len;

	if (c && c->kind != FABNET_LISTEN && !c->closing && m->token == c->token)
		return; /* alive; the token check already drops one from a stranger */
	if (m->src_id == 0 || m->src_id > FABNET_MAX_COMMS ||
	    !fabnet_dev_peer_known(dev, m->u.ping.addr, m->u.ping.addrlen, &peer) ||
	    !pingback_ok(PD(dev)))
		return;
	buf = fabnet_dev_txbuf_get(dev);
	if (!buf)
		return;
	len = fabnet_msg_encode_close(buf, dev->buf_size, m->src_id, m->dst_id, 0);
	if (len)
		fabnet_msg_set_token(buf, m->u.ping.token);
	FN_INFO(NCCL_NET, "fabnet: PING from comm %u for comm %u on %s, which we no longer have: "
		"answered with a CLOSE", m->src_id, m->dst_id, dev->name);
	if (!len || fabnet_ctl_send_loose(dev, peer, buf, len))
		fabnet_dev_txbuf_put(dev, buf);
}

/* ---- connect ----------------------------------------------------------------- */
static struct fabnet_comm *find_connecting(struct fabnet_proto_dev *pd, const void *handle,
					   struct fabnet_comm ***link)
{
	struct fabnet_comm **pp = &pd->connecting;

	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->u.send.handle_ptr == handle &&
		    !memcmp((*pp)->u.send.handle, handle, FABNET_HANDLE_SIZE)) {
			*link = pp;
			return *pp;
		}
	return NULL;
}

ncclResult_t fabnet_proto_connect(struct fabnet_dev *dev, const void *handle,
				  struct fabnet_comm **out)
{
	struct fabnet_proto_dev *pd = PD(dev);
	struct fabnet_handle h;
	struct fabnet_comm *c, **link;
	const char *why;
	void *buf;
	size_t len;
	unsigned timeout = fabnet_config()->connect_timeout_ms;

	*out = NULL;
	c = find_connecting(pd, handle, &link);
	if (c) {
		if (c->state == FABNET_READY) {
			*link = c->next;
			c->next = NULL;
			*out = c;
			return ncclSuccess;
		}
		if (c->state == FABNET_FAILED || fabnet_elapsed_ms(&c->u.send.started) > timeout) {
			if (c->state != FABNET_FAILED)
				FN_WARN("fabnet: connect on %s: no answer from listener %u within %u ms "
					"(FABNET_CONNECT_TIMEOUT_MS). Did the peer call accept(), and "
					"can it reach this node with provider %s?", dev->name,
					c->u.send.listen_id, timeout, dev->prov_name);
			*link = c->next;
			c->next = NULL;
			c->closing = 1;
			if (c->ops_inflight) {
				c->next = pd->zombies;
				pd->zombies = c;
			} else {
				fabnet_comm_free(c);
			}
			return ncclRemoteError;
		}
		return ncclSuccess;
	}

	why = fabnet_handle_decode(handle, FABNET_HANDLE_SIZE, &h);
	if (why) {
		FN_WARN("fabnet: connect on %s: invalid connection handle: %s. Pass connect() the "
			"handle that listen() filled in on the peer.", dev->name, why);
		return ncclInvalidArgument;
	}
	buf = fabnet_dev_txbuf_get(dev);
	if (!buf)
		return ncclSuccess; /* try again on the next call */
	c = fabnet_comm_new(dev, FABNET_SEND);
	if (!c) {
		fabnet_dev_txbuf_put(dev, buf);
		return ncclSystemError;
	}
	c->state = FABNET_CONNECTING;
	c->u.send.nonce = h.nonce;
	c->u.send.listen_id = h.listen_id;
	memcpy(c->u.send.handle, handle, FABNET_HANDLE_SIZE);
	c->u.send.handle_ptr = handle;
	clock_gettime(CLOCK_MONOTONIC, &c->u.send.started);
	if (fabnet_dev_peer(dev, h.addr, h.addrlen, &c->peer)) {
		FN_WARN("fabnet: connect on %s: the listener's address in the handle is not usable "
			"with provider %s", dev->name, dev->prov_name);
		fabnet_dev_txbuf_put(dev, buf);
		fabnet_comm_free(c);
		return ncclInvalidArgument;
	}
	len = fabnet_msg_encode_connect(buf, dev->buf_size, h.listen_id, c->id, h.nonce,
					fabnet_self_proc(), dev->addr, (uint8_t)dev->addrlen,
					(uint32_t)dev->eager_max);
	if (len) {
		fabnet_msg_set_token(buf, c->token); /* what the receiver must send us */
		fabnet_msg_set_credits(buf, (uint16_t)fabnet_config()->eager_credits);
	}
	if (!len || fabnet_ctl_send(c, &c->u.send.conn_op, buf, len, 0)) {
		fabnet_dev_txbuf_put(dev, buf);
		fabnet_comm_free(c);
		return ncclSystemError;
	}
	c->next = pd->connecting;
	pd->connecting = c;
	return ncclSuccess;
}

/* ---- accept ------------------------------------------------------------------- */
ncclResult_t fabnet_proto_accept(struct fabnet_comm *l, struct fabnet_comm **out)
{
	struct fabnet_dev *dev = l->dev;
	struct fabnet_pending_conn p;
	struct fabnet_comm *c;
	void *buf;
	size_t len;

	*out = NULL;
	/* The comm is handed out only once its CONNECT_ACK is with the provider:
	 * an ACK left on the retry list would wait for the next call into the
	 * plugin, which the application may not make before its peer connects. */
	if (l->u.listen.accepting) {
		c = l->u.listen.accepting;
		if (c->u.recv.ack_op.queued)
			return ncclSuccess;
		l->u.listen.accepting = NULL;
		if (c->state == FABNET_FAILED) {
			fabnet_proto_close(c);
			return ncclRemoteError;
		}
		*out = c;
		return ncclSuccess;
	}
	if (l->u.listen.npending == 0)
		return ncclSuccess;
	buf = fabnet_dev_txbuf_get(dev);
	if (!buf)
		return ncclSuccess;
	p = l->u.listen.pending[0];
	c = fabnet_comm_new(dev, FABNET_RECV);
	if (!c) {
		fabnet_dev_txbuf_put(dev, buf);
		return ncclSystemError;
	}
	memmove(&l->u.listen.pending[0], &l->u.listen.pending[1],
		(l->u.listen.npending - 1) * sizeof(p));
	l->u.listen.npending--;
	if (p.src_id > FABNET_MAX_COMMS || fabnet_dev_peer(dev, p.addr, p.addrlen, &c->peer)) {
		FN_WARN("fabnet: accept on %s: the connecting peer's address is not usable",
			dev->name);
		fabnet_dev_txbuf_put(dev, buf);
		fabnet_comm_free(c);
		return ncclRemoteError;
	}
	c->peer_id = (uint16_t)p.src_id;
	c->peer_token = p.token;
	fabnet_comm_set_peer_proc(c, &p.proc);
	fabnet_peer_heard(PD(dev), c->peer); /* a new connection: it calls into its plugin */
	agree_eager(c, p.eager_max);
	c->credits_max = p.credits < fabnet_config()->eager_credits ?
		p.credits : (uint16_t)fabnet_config()->eager_credits;
	c->state = FABNET_READY;
	{
		/* Our other rails' addresses, for a sender that has rails too. */
		uint8_t addrs[(FABNET_MAX_RAILS - 1) * FABNET_ADDR_MAX];
		uint8_t nextra = 0, alen = dev->nrails > 1 ? (uint8_t)dev->rails[1]->addrlen : 0;
		for (int k = 1; k < dev->nrails && dev->rails[k]->addrlen == alen; k++)
			memcpy(addrs + (size_t)nextra++ * alen, dev->rails[k]->addr, alen);
		c->nrails = (uint8_t)(1 + nextra);
		len = fabnet_msg_encode_ack_rails(buf, dev->buf_size, c->peer_id, c->id,
						  l->u.listen.nonce, fabnet_self_proc(), nextra, alen, addrs,
						  (uint32_t)dev->eager_max);
		if (len) {
			fabnet_msg_set_token(buf, c->token); /* what the sender must send us */
			fabnet_msg_set_credits(buf, c->credits_max);
		}
	}
	if (!len || fabnet_ctl_send(c, &c->u.recv.ack_op, buf, len, 0)) {
		fabnet_dev_txbuf_put(dev, buf);
		fabnet_comm_free(c);
		return ncclSystemError;
	}
	if (c->u.recv.ack_op.queued) {
		l->u.listen.accepting = c;
		return ncclSuccess;
	}
	*out = c;
	return ncclSuccess;
}

/* ---- close ----------------------------------------------------------------
 * NCCL frees its buffers right after close, so nothing may touch them after:
 *  - a send comm waits for its RMA writes (they read the send buffers), then
 *    sends CLOSE, which tells the receiver that no write of ours is coming;
 *  - a recv comm with receives outstanding waits for the writes announced to
 *    land, and for the sender's CLOSE (or the sender's death), because some
 *    providers (shm) keep copying into a buffer after its MR is closed.
 * Waiting is bounded by FABNET_PEER_TIMEOUT_MS and by the peer checks, and
 * gives the device lock up between looks: the device's other comms go on. */
static int user_ops_busy(struct fabnet_comm *c)
{
	for (uint32_t i = 0; i < c->reqs.capacity; i++) {
		struct fabnet_req *r;
		if (!c->reqs.in_use[i])
			continue;
		r = fabnet_pool_at(&c->reqs, i);
		if (r->kind == FABNET_REQ_SEND && r->u.send.writes_posted != r->u.send.writes_done &&
		    r->u.send.draining != FABNET_DRAIN_GIVEN_UP)
			return 1; /* (deregMr waited for those already) */
		if (r->kind == FABNET_REQ_FLUSH && r->msg_pending)
			return 1;
		if (r->kind == FABNET_REQ_RECV && !c->peer_closed && c->state == FABNET_READY &&
		    !fabnet_peer_silent(PD(c->dev), c->peer))
			for (int k = 0; k < r->u.recv.n; k++)
				if (!r->u.recv.e[k].done && r->u.recv.e[k].mr)
					return 1; /* the sender may be writing there */
	}
	return 0;
}

#define CLOSE_FLUSH_MS 1000

static void wait_user_ops(struct fabnet_comm *c)
{
	unsigned timeout = fabnet_config()->peer_timeout_ms;
	struct timespec start;

	if (!user_ops_busy(c))
		return;
	fabnet_proto_drop_stalled(c); /* writes not yet posted never will be */
	for (uint32_t i = 0; i < c->reqs.capacity; i++) {
		struct fabnet_req *r = c->reqs.in_use[i] ? fabnet_pool_at(&c->reqs, i) : NULL;
		if (r && r->kind == FABNET_REQ_SEND)
			fabnet_proto_send_stop(r); /* post no more chunks */
	}
	clock_gettime(CLOCK_MONOTONIC, &start);
	while (user_ops_busy(c) && fabnet_elapsed_ms(&start) < timeout) {
		if (fabnet_dev_progress(c->dev))
			break;
		fabnet_proto_check_peer(c);
		fabnet_proto_wait_pause(c->dev);
	}
	if (user_ops_busy(c))
		FN_WARN("fabnet: closing comm %u on %s with RMA operations still in flight after "
			"%u ms: keep their buffers allocated until the process exits", c->id,
			c->dev->name, timeout);
}

/* What CLOSE tells the peer, so it fails only what can no longer complete.
 * A receiver counts the receives it posted. A sender names, per tag, how
 * many of its sends the receiver can still complete: those it made, less
 * any that stopped short of its writes (its buffer deregistered, or this
 * close) and all after it; the receiver fails its entries from there on
 * instead of waiting for what never comes. */
/* Names tag t in the CLOSE (once), if there is room. */
static void close_name(struct fabnet_tag_count *t, int32_t *tags, uint32_t *counts,
		       uint32_t *n, uint32_t max)
{
	if (!t || t->named || *n == max)
		return;
	t->named = 1; /* on a send comm: "in the list" */
	tags[*n] = t->tag;
	counts[*n] = t->n;
	(*n)++;
}

static size_t encode_close(struct fabnet_comm *c, void *buf, size_t buflen)
{
	int32_t tags[FABNET_CLOSE_MAX_TAGS];
	uint32_t counts[FABNET_CLOSE_MAX_TAGS];
	uint32_t n = 0, max = (uint32_t)((buflen - FABNET_MSG_HDR_SIZE) / FABNET_CLOSE_TAG_SIZE);

	if (c->kind != FABNET_SEND)
		return fabnet_msg_encode_close(buf, buflen, c->peer_id, c->id, c->seq);
	if (max > FABNET_CLOSE_MAX_TAGS)
		max = FABNET_CLOSE_MAX_TAGS;
	for (uint32_t i = 0; i < c->tags.cap; i++)
		c->tags.t[i].named = 0;
	/* First the tags the receiver waits on (CTS entries not taken), then the
	 * rest while there is room: a list that leaves some out says so. */
	for (uint32_t v = c->u.send.cts_valid; v; v &= v - 1) {
		struct fabnet_cts_slot *sl = &c->u.send.cts[__builtin_ctz(v)];
		for (int i = 0; i < sl->n; i++)
			if (!(sl->taken & (1u << i)))
				close_name(fabnet_tag_find(&c->tags, sl->e[i].tag), tags, counts, &n, max);
	}
	for (uint32_t i = 0; i < c->tags.cap; i++)
		if (c->tags.t[i].used)
			close_name(&c->tags.t[i], tags, counts, &n, max);
	/* A send that stopped short of its writes, and all after it, will not
	 * complete: the count stops before it. */
	for (uint32_t i = 0; i < c->reqs.allocated; i++) {
		struct fabnet_req *r;
		if (!c->reqs.in_use[i])
			continue;
		r = fabnet_pool_at(&c->reqs, i);
		if (r->kind != FABNET_REQ_SEND || r->abandoned ||
		    !(r->failed || r->u.send.writes_done < r->u.send.nwrites))
			continue;
		for (uint32_t k = 0; k < n; k++)
			if (tags[k] == r->u.send.tag && fabnet_before(r->u.send.tagseq, counts[k]))
				counts[k] = r->u.send.tagseq;
	}
	return fabnet_msg_encode_close_tags(buf, buflen, c->peer_id, c->id,
					    n < c->tags.n ? FABNET_CLOSE_PARTIAL : 0, n, tags, counts);
}

ncclResult_t fabnet_proto_close(struct fabnet_comm *c)
{
	struct fabnet_dev *dev = c->dev;
	struct fabnet_proto_dev *pd = PD(dev);

	if (c->kind == FABNET_LISTEN) {
		if (c->u.listen.accepting)
			fabnet_proto_close(c->u.listen.accepting);
		fabnet_comm_free(c);
		return ncclSuccess;
	}
	if (c->kind == FABNET_SEND && c->state == FABNET_CONNECTING) {
		struct fabnet_comm **link;
		if (find_connecting(pd, c->u.send.handle_ptr, &link) == c)
			*link = c->next;
		c->next = NULL;
	}
	if (c->state == FABNET_READY)
		wait_user_ops(c);
	/* Tell the peer how far we got, so it fails only what cannot complete;
	 * also when this side failed (a write hit a freed buffer, say): the peer
	 * may well be alive, and would otherwise wait on its receives for good. */
	if ((c->state == FABNET_READY || (c->state == FABNET_FAILED && c->peer_id)) &&
	    !c->peer_closed) {
		void *buf = fabnet_dev_txbuf_get(dev);
		if (buf) {
			size_t len = encode_close(c, buf, dev->buf_size);
			if (len)
				fabnet_msg_set_token(buf, c->peer_token);
			/* The CLOSE op lives in a request-independent slot: reuse ack/conn op. */
			struct fabnet_op *op = c->kind == FABNET_SEND ? &c->u.send.conn_op
								      : &c->u.recv.ack_op;
			if (op->posted || op->queued || !len || fabnet_ctl_send(c, op, buf, len, 1)) {
				fabnet_dev_txbuf_put(dev, buf);
			} else if (op->queued) {
				/* Queued behind a busy provider: give it a moment to go out,
				 * or the cancel below would drop it and leave the peer to
				 * find out by keepalive. */
				struct timespec start;
				clock_gettime(CLOCK_MONOTONIC, &start);
				while (op->queued && fabnet_elapsed_ms(&start) < CLOSE_FLUSH_MS &&
				       !fabnet_dev_progress(dev))
					fabnet_proto_wait_pause(dev);
			}
			if (dev->delivery_needs_peer) {
				/* rxd delivers only while we progress: see it through. */
				struct timespec start;
				clock_gettime(CLOCK_MONOTONIC, &start);
				while ((op->queued || op->posted) && fabnet_elapsed_ms(&start) < CLOSE_FLUSH_MS &&
				       !fabnet_dev_progress(dev))
					fabnet_proto_wait_pause(dev);
			}
		}
	}
	c->closing = 1;
	c->ops_inflight++; /* hold the comm while cancelling below */
	fabnet_proto_drop_stalled(c);
	/* Posts the provider never took can simply be forgotten, on every rail. */
	for (int k = 0; k < (dev->nrails > 1 ? dev->nrails : 1); k++) {
		struct fabnet_dev *rd = k ? dev->rails[k] : dev;
		for (struct fabnet_op *op = rd->retry_head, *next; op; op = next) {
			next = op->next;
			if (op->kind == FABNET_OP_RECV)
				continue;
			if (fabnet_op_comm(op) == c) {
				fabnet_dev_unqueue(rd, op);
				op->cb(op, FI_ECANCELED, NULL);
			}
		}
	}
	c->ops_inflight--;
	if (c->ops_inflight == 0) {
		fabnet_comm_free(c);
	} else {
		c->next = pd->zombies;
		pd->zombies = c;
	}
	return ncclSuccess;
}
