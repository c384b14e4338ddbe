/*
 * A device's protocol state, and where each message that arrives on it goes.
 */
#include <config.h>

#include <stdlib.h>

#include <rdma/fi_errno.h>

#include "core/config.h"
#include "core/log.h"
#include "protocol/internal.h"

/* ---- device --------------------------------------------------------------- */
/* Opens the group's other rails; one that fails leaves the group with the
 * rails before it (the job runs on fewer NICs, and says so). */
static void open_rails(struct fabnet_dev *dev, struct fabnet_proto_dev *pd)
{
	for (int i = 1; i < dev->nrails; i++) {
		struct fabnet_dev *r = dev->rails[i];
		int rc = fabnet_dev_open(r);
		if (rc) {
			FN_WARN("fabnet: rail %d (%s) of device %s could not be opened (%s): using "
				"%d rail%s", i, r->name, dev->name, fi_strerror(-rc), i, i > 1 ? "s" : "");
			for (int j = i; j < dev->nrails; j++)
				dev->rails[j]->primary = NULL;
			dev->nrails = i;
			break;
		}
		r->proto = pd;
		r->up.on_msg = fabnet_proto_on_msg;
		r->up.on_imm = fabnet_proto_on_imm;
	}
}

int fabnet_proto_dev_init(struct fabnet_dev *dev)
{
	struct fabnet_proto_dev *pd;
	int rc;

	if (dev->proto)
		return 0;
	rc = fabnet_dev_open(dev);
	if (rc)
		return rc;
	pd = calloc(1, sizeof(*pd));
	if (!pd)
		return -FI_ENOMEM;
	pd->next_fresh = 1;
	pd->free_ids = malloc(sizeof(uint16_t) * (FABNET_MAX_COMMS + 1));
	pd->id_gen = calloc(FABNET_MAX_COMMS + 1, 1);
	if (!pd->free_ids || !pd->id_gen ||
	    fabnet_pool_init(&pd->wops, sizeof(struct fabnet_op),
			     fabnet_config()->tx_buffers * fabnet_config()->writes_in_flight, NULL)) {
		free(pd->free_ids);
		free(pd->id_gen);
		free(pd);
		return -FI_ENOMEM;
	}
	dev->proto = pd;
	dev->up.on_msg = fabnet_proto_on_msg;
	dev->up.on_imm = fabnet_proto_on_imm;
	open_rails(dev, pd);
	return 0;
}

void fabnet_proto_dev_fini(struct fabnet_dev *dev)
{
	struct fabnet_proto_dev *pd = PD(dev);

	if (!pd)
		return;
	/* Closing the endpoint cancels what is posted; then every comm can go. */
	for (int k = 0; k < FABNET_MAX_RAILS; k++)
		if (pd->flush_mr[k])
			fabnet_mr_dereg(pd->flush_mr[k]);
	/* early.c's store registrations, while their domain is open */
	for (uint32_t i = 0; i < pd->cap; i++) {
		struct fabnet_comm *c = pd->table[i];
		if (!c || c->kind != FABNET_RECV || !c->u.recv.store)
			continue;
		for (unsigned k = 0; k < c->credits_max; k++)
			if (c->u.recv.store[k].mr) {
				fabnet_mr_dereg(c->u.recv.store[k].mr);
				c->u.recv.store[k].mr = NULL;
			}
	}
	fabnet_dev_close(dev);
	for (int i = 1; i < dev->nrails; i++) {
		fabnet_dev_close(dev->rails[i]);
		dev->rails[i]->proto = NULL;
	}
	for (uint32_t i = 0; i < pd->cap; i++)
		if (pd->table[i])
			fabnet_comm_free(pd->table[i]);
	free(pd->table);
	free(pd->free_ids);
	free(pd->id_gen);
	fabnet_pool_fini(&pd->wops);
	free(pd);
	dev->proto = NULL;
}

/* Every message after the handshake carries the destination comm's token;
 * ids alone are small integers anyone can guess. CONNECT is checked against
 * the listener's nonce and CONNECT_ACK against the nonce of the handle the
 * sender used, both by their handlers. A message for no comm at all is left
 * to its handler, which says why it drops it. */
static int token_ok(struct fabnet_dev *dev, const struct fabnet_msg *m)
{
	struct fabnet_comm *c;

	if (m->type == FABNET_MSG_CONNECT || m->type == FABNET_MSG_CONNECT_ACK)
		return 1;
	c = fabnet_proto_lookup(dev, m->dst_id);
	if (c && c->kind != FABNET_LISTEN && m->token == c->token) {
		if (PD(dev)->nsilent)
			fabnet_peer_heard(PD(dev), c->peer); /* it calls into its plugin again */
		return 1;
	}
	if (!c || c->kind == FABNET_LISTEN || m->type == FABNET_MSG_PING)
		return 1; /* PING: fabnet_conn_on_ping tells a stale one from a live one */
	if (fabnet_drop_log_ok(dev))
		FN_WARN("fabnet: dropped a message (type %u) for comm %u on %s from comm %u: it "
			"lacks the connection's token (forged, or meant for an earlier comm under "
			"this id)", m->type, m->dst_id, dev->name, m->src_id);
	return 0;
}

void fabnet_proto_on_msg(struct fabnet_dev *dev, const void *buf, size_t len)
{
	struct fabnet_msg m;
	const char *why = fabnet_msg_decode(buf, len, &m);

	if (why) {
		if (fabnet_drop_log_ok(dev))
			FN_WARN("fabnet: dropped a malformed message (%zu bytes) on %s: %s. A peer runs "
				"another fabnet version, or something else writes to this endpoint.",
				len, dev->name, why);
		return;
	}
	if (!token_ok(dev, &m))
		return;
	switch (m.type) {
	case FABNET_MSG_CONNECT:
		fabnet_conn_on_connect(dev, &m);
		break;
	case FABNET_MSG_CONNECT_ACK:
		fabnet_conn_on_ack(dev, &m);
		break;
	case FABNET_MSG_CLOSE:
		fabnet_conn_on_close(dev, &m);
		break;
	case FABNET_MSG_PING:
		fabnet_conn_on_ping(dev, &m);
		break;
	case FABNET_MSG_CTS:
		fabnet_send_on_cts(dev, &m);
		break;
	case FABNET_MSG_EAGER:
		fabnet_recv_on_eager(dev, &m);
		break;
	case FABNET_MSG_FIN:
		fabnet_recv_on_fin(dev, &m);
		break;
	case FABNET_MSG_REVOKE:
		fabnet_send_on_revoke(dev, &m);
		break;
	case FABNET_MSG_REVOKED:
		fabnet_recv_on_revoked(dev, &m);
		break;
	case FABNET_MSG_EARLY:
		fabnet_recv_on_early(dev, &m);
		break;
	case FABNET_MSG_CREDIT:
		fabnet_send_on_credit(dev, &m);
		break;
	case FABNET_MSG_RTS:
		fabnet_recv_on_rts(dev, &m);
		break;
	default:
		break;
	}
}
