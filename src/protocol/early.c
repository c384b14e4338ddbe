/*
 * Sender-initiated eager, the receiver's half: the store of early messages.
 *
 * A send of at most the eager size from host memory goes at once when its
 * CTS is not there (an EARLY message naming its tag and its index among the
 * comm's sends with that tag), under a credit: the sender holds credits_max
 * of them (both sides' FABNET_EAGER_CREDITS, the smaller, agreed at connect
 * time) and spends one per early message. An early message whose receive is
 * posted goes straight into it; one that comes first waits here, in one of
 * credits_max slots, until the irecv that pairs with it. Its credit goes
 * back once it has left the store: piggybacked on the next CTS, or in a
 * CREDIT message once half of them are owed. So the store never overflows,
 * and a sender out of credits falls back to waiting for its CTS.
 *
 * The CPU copies only into host memory. For a receive buffer in accelerator
 * memory the NIC does it: an RMA write from the slot into the buffer's own
 * registration, to our own address, whose immediate data completes the
 * entry as a rendezvous write would (accelerator-agnostic, like the flush).
 */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "protocol/internal.h"

int fabnet_early_find(struct fabnet_comm *c, int32_t tag, uint32_t tagseq)
{
	struct fabnet_early_slot *st = c->u.recv.store;

	if (!c->u.recv.nstored)
		return -1;
	for (int i = 0; i < c->credits_max; i++)
		if (st[i].used && !st[i].writing && st[i].tag == tag && st[i].tagseq == tagseq)
			return i;
	return -1;
}

int fabnet_early_alloc(struct fabnet_comm *c)
{
	struct fabnet_early_slot *st = c->u.recv.store;
	struct fabnet_dev *dev = c->dev;

	/* On first use: thousands of comms that never see an early message
	 * (the receiver always ahead) do not each pay for a store. */
	if (!st && c->credits_max) {
		st = c->u.recv.store = calloc(c->credits_max, sizeof(*st));
		if (!st)
			return -1;
	}
	for (int i = 0; st && i < c->credits_max; i++) {
		if (st[i].used)
			continue;
		if (!st[i].data) {
			st[i].data = malloc(c->eager_max ? c->eager_max : 1);
			if (!st[i].data)
				return -1;
			if (dev->local_mr && fabnet_mr_reg_local(dev, st[i].data, c->eager_max ? c->eager_max : 1,
							       FI_WRITE, &st[i].mr)) {
				free(st[i].data);
				st[i].data = NULL;
				return -1;
			}
		}
		st[i].comm = c;
		return i;
	}
	return -1;
}

int fabnet_early_store(struct fabnet_comm *c, int32_t tag, uint32_t tagseq, const void *data,
		       uint64_t size)
{
	int i = fabnet_early_alloc(c);
	struct fabnet_early_slot *s;

	if (i < 0)
		return -1;
	s = &c->u.recv.store[i];
	s->used = 1;
	s->tag = tag;
	s->tagseq = tagseq;
	s->size = size;
	memcpy(s->data, data, size);
	c->u.recv.nstored++;
	return i;
}

static void slot_release(struct fabnet_comm *c, struct fabnet_early_slot *s)
{
	s->used = 0;
	s->writing = 0;
	c->u.recv.nstored--;
	fabnet_early_owe(c, 1);
}

static void early_written(struct fabnet_op *op, int err, const struct fi_cq_data_entry *e)
{
	struct fabnet_early_slot *s = (struct fabnet_early_slot *)((uint8_t *)op -
		offsetof(struct fabnet_early_slot, op));
	struct fabnet_comm *c = s->comm;

	(void)e;
	if (err && err != FI_ECANCELED && !c->closing)
		FN_WARN("fabnet: the loopback write of an early message into accelerator memory on "
			"comm %u (%s) failed: %s. Set FABNET_EAGER_CREDITS=0 to send small messages "
			"only after their CTS.", c->id, c->dev->name, fi_strerror(err));
	/* A failed write leaves its entry waiting for immediate data that does
	 * not come: the comm fails, and with it the receive. */
	if (err && !c->closing)
		fabnet_proto_fail_comm(c, "a loopback write of an early message failed");
	slot_release(c, s);
	fabnet_proto_op_done(c);
}

void fabnet_early_drop(struct fabnet_comm *c, int i)
{
	slot_release(c, &c->u.recv.store[i]);
}

int fabnet_early_deliver(struct fabnet_comm *c, int i, struct fabnet_req *r, int idx)
{
	struct fabnet_early_slot *s = &c->u.recv.store[i];
	struct fabnet_recv_entry *e = &r->u.recv.e[idx];
	struct fabnet_dev *dev = c->dev;
	struct fabnet_op *op = &s->op;

	e->got = s->size;
	if (!s->size || !e->mr || e->mr->type == NCCL_PTR_HOST) {
		if (s->size)
			memcpy(e->data, s->data, s->size);
		e->done = 1;
		r->u.recv.ndone++;
		slot_release(c, s);
		return 0;
	}
	if (fabnet_proto_self(dev, 0))
		return -1;
	/* Completed by its immediate data, as a rendezvous of one write. */
	e->fin_seen = 1;
	e->writes_expected = 1;
	memset(op, 0, sizeof(*op));
	op->kind = FABNET_OP_WRITE;
	op->cb = early_written;
	op->owner = c;
	op->buf = s->data;
	op->len = s->size;
	op->desc = s->mr ? s->mr->desc : NULL;
	op->peer = PD(dev)->self[0];
	op->raddr = fabnet_mr_remote_addr(e->mr->mr[0], e->data);
	op->rkey = e->mr->mr[0]->key;
	op->imm = fabnet_imm_pack(c->id, (uint8_t)r->seq, (uint8_t)idx,
				  (uint8_t)(c->token & FABNET_IMM_GEN_MASK));
	s->writing = 1;
	s->target = e->mr;
	if (fabnet_proto_post(c, op)) {
		e->fin_seen = 0;
		e->writes_expected = 0;
		slot_release(c, s);
		return -1;
	}
	return 0;
}

void fabnet_early_owe(struct fabnet_comm *c, unsigned n)
{
	unsigned half = c->credits_max > 1 ? c->credits_max / 2u : 1u;
	struct fabnet_op *op = &c->u.recv.credit_op;
	void *buf;
	size_t len;

	c->credits = (uint16_t)(c->credits + n);
	if (c->credits < half || c->closing || c->state != FABNET_READY || op->posted ||
	    op->queued)
		return;
	buf = fabnet_dev_txbuf_get(c->dev);
	if (!buf)
		return; /* they go with the next CTS, or the next credit given back */
	len = fabnet_msg_encode_credit(buf, c->dev->buf_size, c->peer_id, c->id, c->credits);
	if (len)
		fabnet_msg_set_token(buf, c->peer_token);
	if (!len || fabnet_ctl_send(c, op, buf, len, 1)) {
		fabnet_dev_txbuf_put(c->dev, buf);
		return;
	}
	c->credits = 0;
}
