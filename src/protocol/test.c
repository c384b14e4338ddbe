/*
 * test(): when a request is finished, and what it reports.
 */
#include <config.h>

#include "core/log.h"
#include "protocol/internal.h"

/* ---- test ---------------------------------------------------------------------- */
/* The peer closed without sending what one of the receive's entries waits for. */
static int orphaned(struct fabnet_comm *c, struct fabnet_req *r)
{
	for (int i = 0; i < r->u.recv.n; i++)
		if (!r->u.recv.e[i].done && fabnet_recv_entry_orphaned(c, &r->u.recv.e[i]))
			return 1;
	return 0;
}

static int req_finished(struct fabnet_req *r)
{
	struct fabnet_comm *c = r->comm;

	/* A failed comm's requests end now, even if the provider still holds one
	 * of their operations (a write to a dead peer may never complete). */
	if (c->state == FABNET_FAILED && fabnet_req_ops_pending(r)) {
		if (!r->failed)
			r->failed = ncclRemoteError;
		return 1;
	}
	if (r->kind == FABNET_REQ_RECV && r->u.recv.rts_wanted)
		fabnet_recv_send_withheld(r);
	if (r->msg_pending)
		return 0;
	if (r->kind == FABNET_REQ_FLUSH)
		return 1;
	if (r->kind == FABNET_REQ_SEND && c->state == FABNET_FAILED && !r->failed &&
	    r->u.send.writes_posted < r->u.send.nwrites)
		r->failed = ncclRemoteError; /* what is left will never be posted */
	if (r->kind == FABNET_REQ_SEND)
		return r->u.send.writes_done == r->u.send.writes_posted &&
		       (r->failed || r->u.send.writes_posted == r->u.send.nwrites);
	if (r->u.recv.ndone == r->u.recv.n)
		return 1;
	if (!r->failed && (c->state == FABNET_FAILED || (c->peer_closed && orphaned(c, r)))) {
		FN_WARN("fabnet: receive seq %u on comm %u (%s) cannot complete: the peer %s", r->seq,
			c->id, c->dev->name, c->state == FABNET_FAILED ? "failed" : "closed");
		r->failed = ncclRemoteError;
	}
	return r->failed != 0;
}

ncclResult_t fabnet_proto_test(struct fabnet_req *r, int *done, uint64_t *sizes)
{
	struct fabnet_comm *c = r->comm;
	ncclResult_t res;
	int rc;

	*done = 0;
	rc = fabnet_dev_progress(c->dev);
	if (rc)
		fabnet_proto_fail_comm(c, "the completion queue failed");
	if (!req_finished(r)) {
		fabnet_proto_check_peer(c);
		if (c->state == FABNET_FAILED && req_finished(r))
			goto finished;
		return ncclSuccess;
	}
finished:
	*done = 1;
	res = r->failed;
	if (sizes) {
		if (r->kind == FABNET_REQ_SEND)
			sizes[0] = r->u.send.size;
		else if (r->kind == FABNET_REQ_RECV)
			for (int i = 0; i < r->u.recv.n; i++)
				sizes[i] = r->u.recv.e[i].got;
	}
	if (r->kind == FABNET_REQ_RECV && !r->u.recv.noslot)
		c->u.recv.slot[r->seq % FABNET_NSLOTS] = NULL;
	if (fabnet_req_ops_pending(r))
		r->abandoned = 1;
	else
		fabnet_req_free(r);
	return res;
}
