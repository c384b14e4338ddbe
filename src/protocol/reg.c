/*
 * Registrations NCCL holds: one buffer on every rail of a device. Each rail
 * is its own libfabric domain with its own keys, so the buffer is registered
 * once per rail, each time through that rail's cache (regIsGlobal holds for
 * the set as for each part). The receiver advertises every rail's key in its
 * CTS; a sender uses the descriptor of the rail each write goes out on.
 */
#include <config.h>

#include <stdlib.h>
#include <time.h>

#include "core/config.h"
#include "core/log.h"
#include "protocol/internal.h"

int fabnet_proto_reg(struct fabnet_dev *dev, void *data, size_t size, int type, int fd,
		     uint64_t offset, struct fabnet_rmr **out)
{
	int n = dev->nrails > 1 ? dev->nrails : 1;
	struct fabnet_rmr *rmr = calloc(1, sizeof(*rmr));
	int rc = 0;

	*out = NULL;
	if (!rmr)
		return -FI_ENOMEM;
	rmr->magic = FABNET_RMR_MAGIC;
	rmr->type = type;
	rmr->dev = dev;
	for (int k = 0; k < n; k++) {
		struct fabnet_dev *rd = k ? dev->rails[k] : dev;
		rc = fabnet_mr_get(rd, data, size, type, fd, offset, &rmr->mr[k]);
		if (rc) {
			if (k)
				FN_WARN("fabnet: registering %p+%zu on rail %d (%s) of %s failed after "
					"it succeeded on the rails before it", data, size, k, rd->name,
					dev->name);
			break;
		}
		rmr->nrails = k + 1;
	}
	if (rc) {
		fabnet_proto_dereg(rmr);
		return rc;
	}
	*out = rmr;
	return 0;
}

/* A receive posted into rmr may still be written by the sender, and the
 * providers take a write into a region whose registration is gone badly:
 * shm and udp stall every later transfer between the two processes, 1.17's
 * tcp;ofi_rxm drops their connection, libfabric's efa aborts the receiving
 * process where it emulates RMA. So before the registration goes, each such
 * receive is withdrawn (REVOKE) and the sender confirms (REVOKED) once no
 * write of its into it is left. */
enum revoke_pass {
	REVOKE_SEND,    /* send the REVOKEs not yet sent */
	REVOKE_COUNT,   /* count those still waiting for their REVOKED */
	REVOKE_GIVE_UP, /* the timeout passed: their senders are silent */
};

/* How many receives into rmr wait for a REVOKED; those whose sender is
 * silent are withdrawn but not waited for (*unawaited counts them). */
static int revokes_pending(struct fabnet_proto_dev *pd, const struct fabnet_rmr *rmr,
			   enum revoke_pass pass, int *unawaited)
{
	int n = 0;

	for (uint32_t id = 1; id < pd->cap; id++) {
		struct fabnet_comm *c = pd->table[id];
		if (!c || c->kind != FABNET_RECV || c->closing || c->state != FABNET_READY ||
		    c->peer_closed)
			continue;
		for (uint32_t i = 0; i < c->reqs.allocated; i++) {
			struct fabnet_req *r;
			int open = 0;
			if (!c->reqs.in_use[i])
				continue;
			r = fabnet_pool_at(&c->reqs, i);
			if (r->kind != FABNET_REQ_RECV || r->u.recv.revoke == FABNET_REVOKE_DONE)
				continue;
			for (int k = 0; k < r->u.recv.n; k++)
				open |= r->u.recv.e[k].mr == rmr && !r->u.recv.e[k].done;
			if (!open)
				continue;
			if (pass == REVOKE_SEND && r->u.recv.revoke == FABNET_REVOKE_NONE) {
				r->u.recv.revoke = FABNET_REVOKE_SENT;
				fabnet_comm_send_revoke(c, 0, r->seq);
			}
			if (r->u.recv.revoke != FABNET_REVOKE_SENT)
				continue;
			if (pass == REVOKE_GIVE_UP)
				fabnet_peer_mark_silent(pd, c->peer);
			else if (fabnet_peer_silent(pd, c->peer))
				*unawaited += pass == REVOKE_SEND;
			else
				n++;
		}
	}
	return n;
}

static void check_recv_peers(struct fabnet_proto_dev *pd)
{
	for (uint32_t id = 1; id < pd->cap; id++) {
		struct fabnet_comm *c = pd->table[id];
		if (c && c->kind == FABNET_RECV && c->state == FABNET_READY && !c->closing)
			fabnet_proto_check_peer(c);
	}
}

static void revoke_receives(struct fabnet_rmr *rmr)
{
	struct fabnet_proto_dev *pd = PD(rmr->dev);
	unsigned timeout = fabnet_config()->peer_timeout_ms;
	struct timespec start;
	int n, unawaited = 0;

	n = revokes_pending(pd, rmr, REVOKE_SEND, &unawaited);
	if (unawaited)
		FN_WARN("fabnet: deregMr on %s: %d receive%s posted into the buffer withdrawn "
			"without waiting: the sender left an earlier withdrawal unanswered for %u ms "
			"(FABNET_PEER_TIMEOUT_MS) and has not been heard from since; a write of its "
			"may still land there", rmr->dev->name, unawaited, unawaited > 1 ? "s" : "",
			timeout);
	if (!n)
		return;
	clock_gettime(CLOCK_MONOTONIC, &start);
	while ((n = revokes_pending(pd, rmr, REVOKE_COUNT, &unawaited)) &&
	       fabnet_elapsed_ms(&start) < timeout) {
		if (fabnet_dev_progress(rmr->dev))
			break;
		check_recv_peers(pd);
		fabnet_proto_wait_pause(rmr->dev);
	}
	if (!n)
		return;
	revokes_pending(pd, rmr, REVOKE_GIVE_UP, &unawaited);
	FN_WARN("fabnet: deregMr on %s: %d receive%s posted into the buffer not withdrawn by "
		"the sender within %u ms (FABNET_PEER_TIMEOUT_MS); a write of its may still "
		"land there. Until that sender is heard from again, deregMr and close do not "
		"wait on it", rmr->dev->name, n, n > 1 ? "s" : "", timeout);
}

/* NCCL deregisters and frees its buffers, then closes their comms, and does so
 * with requests in flight on abort. Whatever still names rmr forgets it: a
 * receive entry is marked gone (a late EAGER or write for it is dropped, close
 * does not wait for it), a send posts no more writes from the buffer and
 * fails. Writes the provider already holds are its own: see docs/memory.md. */
static void forget_mr(struct fabnet_rmr *rmr)
{
	struct fabnet_proto_dev *pd = PD(rmr->dev);

	for (uint32_t id = 1; id < pd->cap; id++) {
		struct fabnet_comm *c = pd->table[id];
		if (!c || c->kind == FABNET_LISTEN)
			continue;
		for (uint32_t i = 0; i < c->reqs.allocated; i++) {
			struct fabnet_req *r;
			if (!c->reqs.in_use[i])
				continue;
			r = fabnet_pool_at(&c->reqs, i);
			if (r->kind == FABNET_REQ_RECV)
				fabnet_recv_forget(r, rmr);
			else if (r->kind == FABNET_REQ_SEND)
				fabnet_send_forget(r, rmr);
		}
		if (c->closing && c->ops_inflight == 0) {
			c->ops_inflight++; /* a zombie whose last ops were taken back goes now */
			fabnet_proto_op_done(c);
		}
	}
}

/* A send whose buffer is being deregistered still has writes with the
 * provider: they read the buffer, which NCCL frees as soon as deregMr
 * returns (tcp then fails the whole connection on EFAULT, shm copies from
 * freed pages). */
static int writes_draining(struct fabnet_proto_dev *pd, int give_up)
{
	int n = 0;

	for (uint32_t id = 1; id < pd->cap; id++) {
		struct fabnet_comm *c = pd->table[id];
		if (!c || c->kind != FABNET_SEND)
			continue;
		for (uint32_t i = 0; i < c->reqs.allocated; i++) {
			struct fabnet_req *r;
			if (!c->reqs.in_use[i])
				continue;
			r = fabnet_pool_at(&c->reqs, i);
			if (r->kind != FABNET_REQ_SEND || r->u.send.draining != FABNET_DRAIN_WAIT)
				continue;
			if (r->u.send.writes_done == r->u.send.writes_posted)
				r->u.send.draining = FABNET_DRAIN_NONE;
			else if (give_up)
				r->u.send.draining = FABNET_DRAIN_GIVEN_UP;
			else
				n++;
		}
	}
	return n;
}

/* Early messages the NIC still copies into rmr's buffer (early.c): our own
 * loopback writes, which a REVOKED from the sender does not cover. */
static int loopbacks_into(struct fabnet_proto_dev *pd, const struct fabnet_rmr *rmr)
{
	int n = 0;

	for (uint32_t id = 1; id < pd->cap; id++) {
		struct fabnet_comm *c = pd->table[id];
		if (!c || c->kind != FABNET_RECV || !c->u.recv.store)
			continue;
		for (unsigned i = 0; i < c->credits_max; i++)
			n += c->u.recv.store[i].writing && c->u.recv.store[i].target == rmr;
	}
	return n;
}

static void wait_writes(struct fabnet_dev *dev, const struct fabnet_rmr *rmr)
{
	unsigned timeout = fabnet_config()->peer_timeout_ms;
	struct timespec start;

	clock_gettime(CLOCK_MONOTONIC, &start);
	while ((writes_draining(PD(dev), 0) || loopbacks_into(PD(dev), rmr)) &&
	       fabnet_elapsed_ms(&start) < timeout) {
		if (fabnet_dev_progress(dev))
			break;
		fabnet_proto_wait_pause(dev);
	}
	/* Those still out are given up on: a later deregMr or close would only
	 * wait for them again, the timeout each time, with the calling thread
	 * (NCCL's proxy or its abort) held meanwhile. */
	if (writes_draining(PD(dev), 1))
		FN_WARN("fabnet: deregMr on %s: RMA writes from the buffer still in flight after %u "
			"ms (FABNET_PEER_TIMEOUT_MS); the provider may still read it", dev->name,
			timeout);
}

void fabnet_proto_dereg(struct fabnet_rmr *rmr)
{
	if (rmr->dev->proto) {
		revoke_receives(rmr);
		forget_mr(rmr);
		if (writes_draining(PD(rmr->dev), 0) || loopbacks_into(PD(rmr->dev), rmr))
			wait_writes(rmr->dev, rmr);
	}
	for (int k = 0; k < rmr->nrails; k++)
		fabnet_mr_put(rmr->mr[k]);
	rmr->magic = 0;
	free(rmr);
}
