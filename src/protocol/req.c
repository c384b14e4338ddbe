/*
 * Requests: each comm's pool of them, and the device's list of rendezvous
 * sends waiting for a write op or for room on one of their rails.
 */
#include <config.h>

#include <stddef.h>
#include <string.h>

#include "protocol/internal.h"

struct fabnet_req *fabnet_req_new(struct fabnet_comm *comm, uint8_t kind)
{
	struct fabnet_req *r;

	if (kind != FABNET_REQ_FLUSH && fabnet_pool_used(&comm->reqs) >= FABNET_NREQS)
		return NULL;
	r = fabnet_pool_get(&comm->reqs);

	if (!r)
		return NULL;
	/* Only what the kind uses: the union is sized for 8 grouped receives,
	 * and zeroing all of it for every 8-byte send was a measurable part of
	 * the small-message path (docs/performance.md). irecv clears each entry
	 * it fills; msg_op is cleared by whoever posts it (post_msg, iflush). */
	memset(r, 0, offsetof(struct fabnet_req, msg_op));
	if (kind == FABNET_REQ_SEND)
		memset(&r->u.send, 0, sizeof(r->u.send));
	else if (kind == FABNET_REQ_RECV)
		memset(&r->u.recv, 0, offsetof(struct fabnet_req, u.recv.e) -
				      offsetof(struct fabnet_req, u.recv));
	else
		memset(&r->u.flush, 0, sizeof(r->u.flush));
	r->magic = FABNET_REQ_MAGIC;
	r->kind = kind;
	r->comm = comm;
	return r;
}

void fabnet_req_free(struct fabnet_req *r)
{
	/* A send reported finished (its comm failed) may still wait for a rail:
	 * it must not be advanced once its slot is reused. */
	if (r->kind == FABNET_REQ_SEND && r->u.send.stalled)
		fabnet_stall_remove(PD(r->comm->dev), r);
	r->magic = 0;
	fabnet_pool_put(&r->comm->reqs, r);
}

int fabnet_req_ops_pending(const struct fabnet_req *r)
{
	return r->msg_pending ||
	       (r->kind == FABNET_REQ_SEND && r->u.send.writes_done != r->u.send.writes_posted);
}

/* A request NCCL was told has failed (its peer is gone) while the provider
 * still held one of its operations goes back to the pool when that returns. */
void fabnet_req_release_abandoned(struct fabnet_req *r)
{
	if (r->abandoned && !fabnet_req_ops_pending(r))
		fabnet_req_free(r);
}

/* ---- sends: write scheduling ---------------------------------------------- */
void fabnet_stall_add(struct fabnet_proto_dev *pd, struct fabnet_req *r)
{
	if (r->u.send.stalled)
		return;
	r->u.send.stalled = 1;
	r->u.send.stall_next = NULL;
	if (pd->stall_tail)
		pd->stall_tail->u.send.stall_next = r;
	else
		pd->stall_head = r;
	pd->stall_tail = r;
}

/* Takes r off the stall list. */
void fabnet_stall_remove(struct fabnet_proto_dev *pd, struct fabnet_req *r)
{
	struct fabnet_req **pp = &pd->stall_head, *prev = NULL;

	while (*pp && *pp != r) {
		prev = *pp;
		pp = &(*pp)->u.send.stall_next;
	}
	if (*pp) {
		*pp = r->u.send.stall_next;
		if (pd->stall_tail == r)
			pd->stall_tail = prev;
	}
	r->u.send.stalled = 0;
	r->u.send.stall_next = NULL;
}

void fabnet_proto_drop_stalled(struct fabnet_comm *comm)
{
	struct fabnet_proto_dev *pd = PD(comm->dev);
	struct fabnet_req **pp = &pd->stall_head, *prev = NULL;

	while (*pp) {
		struct fabnet_req *r = *pp;
		if (r->comm == comm) {
			*pp = r->u.send.stall_next;
			r->u.send.stalled = 0;
			r->u.send.stall_next = NULL;
			if (comm->state == FABNET_FAILED && !r->failed)
				r->failed = ncclRemoteError; /* its writes never will be posted */
			continue;
		}
		prev = r;
		pp = &r->u.send.stall_next;
	}
	pd->stall_tail = prev;
}
