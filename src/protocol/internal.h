/*
 * What the protocol layer's modules share and nothing above them sees. The
 * modules call downward only, in this order (each may use those before it):
 *
 *   req.c       requests: the per-comm pool, the list of sends waiting for a
 *               write op or for room on a rail
 *   tags.c      per-tag counts of sends and receive entries
 *   comm.c      comms: ids, lifetime, posting, control ops, failure, liveness
 *   sched.c     write scheduling: stripes over rails, chunks, write completions
 *   early.c     the receiver's store of early messages, credits, and the
 *               loopback write of a stored message into accelerator memory
 *   send.c      isend (after its CTS, or early) and the CTS that lets a send go
 *   recv.c      irecv, and the EAGER, EARLY, FIN and immediate data that complete it
 *   flush.c     iflush
 *   test.c      test: when a request is finished
 *   conn.c      listen, connect, accept, close and their messages
 *   reg.c       registrations, and what a deregistration makes requests forget
 *   dispatch.c  the device's protocol state, and where each message goes
 */
#ifndef FABNET_PROTOCOL_INTERNAL_H
#define FABNET_PROTOCOL_INTERNAL_H

#include "protocol/proto.h"

#define PD(dev) ((struct fabnet_proto_dev *)(dev)->proto)

/* Rail k of a device group (0 is the group's primary). */
static inline struct fabnet_dev *fabnet_rail(struct fabnet_dev *dev, int k)
{
	return k ? dev->rails[k] : dev;
}

/* ---- req.c ----------------------------------------------------------------- */
/* NULL when the comm has FABNET_NREQS sends and receives out (iflush has
 * FABNET_FLUSH_REQS more of its own). */
struct fabnet_req *fabnet_req_new(struct fabnet_comm *comm, uint8_t kind);
void fabnet_req_free(struct fabnet_req *r);
/* The provider still holds one of r's operations. */
int fabnet_req_ops_pending(const struct fabnet_req *r);
/* Frees an abandoned request (one NCCL was told is over) once nothing of it
 * is with the provider any more. */
void fabnet_req_release_abandoned(struct fabnet_req *r);
void fabnet_stall_add(struct fabnet_proto_dev *pd, struct fabnet_req *r);
void fabnet_stall_remove(struct fabnet_proto_dev *pd, struct fabnet_req *r);
/* Takes the comm's sends off the list (a failed comm's fail: their writes never go). */
void fabnet_proto_drop_stalled(struct fabnet_comm *comm);

/* ---- tags.c ---------------------------------------------------------------- */
struct fabnet_tag_count *fabnet_tag_find(struct fabnet_tags *t, int32_t tag);
/* Creates the count at 0; NULL past FABNET_CLOSE_MAX_TAGS tags or out of memory. */
struct fabnet_tag_count *fabnet_tag_get(struct fabnet_tags *t, int32_t tag);
uint32_t fabnet_tag_count_of(struct fabnet_tags *t, int32_t tag);
void fabnet_tags_free(struct fabnet_tags *t);
/* a before b, counting modulo 2^32 (sequences, per-tag indices) */
static inline int fabnet_before(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) < 0;
}
/* The same for the 24-bit per-tag index a CTS entry carries. */
static inline int fabnet_before24(uint32_t a, uint32_t b)
{
	return ((b - a) & FABNET_TAGSEQ_MASK) - 1 < (FABNET_TAGSEQ_MASK >> 1);
}

/* ---- comm.c ---------------------------------------------------------------- */
struct fabnet_comm *fabnet_proto_lookup(struct fabnet_dev *dev, uint32_t id);
int fabnet_proto_post(struct fabnet_comm *comm, struct fabnet_op *op);
/* The same on another rail of the comm's group. */
int fabnet_proto_post_on(struct fabnet_comm *comm, struct fabnet_dev *rail, struct fabnet_op *op);
/* The provider gave back one of the comm's ops (a closed comm goes with its last). */
void fabnet_proto_op_done(struct fabnet_comm *comm);
/* The comm is dead: its requests fail with ncclRemoteError, logged once with why. */
void fabnet_proto_fail_comm(struct fabnet_comm *comm, const char *why);
/* While a request waits on the peer: send a keepalive every peer_timeout / 4;
 * one the provider fails to deliver, or cannot deliver within peer_timeout,
 * fails the comm. Liveness comes from the reliable provider's own delivery
 * report, so a peer that is alive but idle is never declared dead. */
void fabnet_proto_check_peer_now(struct fabnet_comm *comm);
/* test() spins on this: only one call in 32 looks at the clock. */
static inline void fabnet_proto_check_peer(struct fabnet_comm *comm)
{
	if (comm->checked.tv_sec && (++comm->polls & 31))
		return;
	fabnet_proto_check_peer_now(comm);
}
/* Whether a WARN about dropped peer input (malformed, forged, stale) may be
 * logged now: a burst of FABNET_DROP_LOG_BURST per second and device, then a
 * count of those left out, so a flood cannot drown the log (or the job). */
#define FABNET_DROP_LOG_BURST 10
int fabnet_drop_log_ok(struct fabnet_dev *dev);
const struct fabnet_proc *fabnet_self_proc(void);
/* The peer's process, from its CONNECT or CONNECT_ACK. */
void fabnet_comm_set_peer_proc(struct fabnet_comm *c, const struct fabnet_proc *proc);
/* Milliseconds on the monotonic clock. */
uint64_t fabnet_now_ms(void);
uint64_t fabnet_elapsed_ms(const struct timespec *since);
/* What a loop waiting on the peer (deregMr, close) does between two looks:
 * gives the device lock up for a moment. Called with it held. */
void fabnet_proto_wait_pause(struct fabnet_dev *dev);
/* 64 random bits, never 0 (nonces, connection tokens). */
uint64_t fabnet_random64(void);
struct fabnet_comm *fabnet_comm_new(struct fabnet_dev *dev, uint8_t kind);
void fabnet_comm_free(struct fabnet_comm *c);
/* ncclSuccess, or the error an operation on comm must return now. */
ncclResult_t fabnet_comm_usable(struct fabnet_comm *comm, const char *call);
/* A control message (CONNECT, ACK, CLOSE, PING) in op, from a bounce buffer.
 * best_effort: its failure does not fail the comm. */
int fabnet_ctl_send(struct fabnet_comm *c, struct fabnet_op *op, void *buf, size_t len,
		    int best_effort);
/* The comm an operation posted by this layer belongs to. */
/* The comm an op belongs to; NULL for a loose one. */
struct fabnet_comm *fabnet_op_comm(const struct fabnet_op *op);
/* A control message no comm owns (the CLOSE answering a PING for a comm we
 * no longer have): buf is a tx buffer, given back when the send completes. */
int fabnet_ctl_send_loose(struct fabnet_dev *dev, fi_addr_t peer, void *buf, size_t len);
/* A peer that left a REVOKE unanswered for the peer timeout is "silent":
 * alive (its keepalives are delivered) but not calling into the plugin, as
 * an idle NCCL peer while this side aborts. Waiting on it once per buffer
 * would turn an abort over N comms into N timeouts, so deregMr and close
 * wait on it no more until it is heard from (any message of its comms). */
int fabnet_peer_silent(const struct fabnet_proto_dev *pd, fi_addr_t peer);
void fabnet_peer_mark_silent(struct fabnet_proto_dev *pd, fi_addr_t peer);
void fabnet_peer_heard(struct fabnet_proto_dev *pd, fi_addr_t peer);
/* REVOKE (confirm 0) or REVOKED (1) of receive seq to the comm's peer. */
void fabnet_comm_send_revoke(struct fabnet_comm *c, int confirm, uint32_t seq);
/* A request's own message (CTS, EAGER or FIN) from bounce buffer buf of
 * rail k to the peer's rail k. */
int fabnet_post_msg(struct fabnet_req *r, int k, void *buf, size_t len);

/* Our own address on rail k, for loopback operations (flush reads, early
 * messages written into accelerator memory). Returns 0 or -1. */
int fabnet_proto_self(struct fabnet_dev *dev, int k);

/* ---- early.c --------------------------------------------------------------- */
/* The store slot holding (tag, tagseq), or -1. */
int fabnet_early_find(struct fabnet_comm *c, int32_t tag, uint32_t tagseq);
/* A free slot with room for an eager message (its bytes allocated), or -1. */
int fabnet_early_alloc(struct fabnet_comm *c);
/* Keeps an early message (size <= eager_max) in a free slot: its index, or -1. */
int fabnet_early_store(struct fabnet_comm *c, int32_t tag, uint32_t tagseq, const void *data,
		       uint64_t size);
/* Puts slot i's bytes into entry idx of r: a copy for host memory, a
 * loopback write for accelerator memory (the entry completes with its
 * immediate data). Gives the slot back (after the write) and owes the
 * sender its credit. Returns 0, or -1 when the write could not be posted. */
int fabnet_early_deliver(struct fabnet_comm *c, int i, struct fabnet_req *r, int idx);
/* Gives slot i back without delivering it (its message is refused). */
void fabnet_early_drop(struct fabnet_comm *c, int i);
/* The receiver took n early messages: their credits go back with the next
 * CTS, or in a CREDIT message once half of them are owed. */
void fabnet_early_owe(struct fabnet_comm *c, unsigned n);

/* ---- sched.c --------------------------------------------------------------- */
/* Cuts a rendezvous send into stripes over its first nr rails. */
void fabnet_sched_plan(struct fabnet_comm *comm, struct fabnet_req *r, int nr);
/* Posts what it can of a rendezvous send's writes. */
void fabnet_sched_advance(struct fabnet_req *r);
/* Takes back r's writes still waiting in a retry queue (its buffer is gone). */
void fabnet_sched_cancel_queued(struct fabnet_req *r);
/* A send posts no more writes (its comm is closing, its buffer is gone). */
void fabnet_proto_send_stop(struct fabnet_req *r);

/* ---- send.c, recv.c: incoming messages and deregistration ------------------ */
void fabnet_send_on_cts(struct fabnet_dev *dev, const struct fabnet_msg *m);
void fabnet_send_forget(struct fabnet_req *r, const struct fabnet_rmr *rmr);
void fabnet_send_on_revoke(struct fabnet_dev *dev, const struct fabnet_msg *m);
void fabnet_send_on_credit(struct fabnet_dev *dev, const struct fabnet_msg *m);
void fabnet_recv_on_eager(struct fabnet_dev *dev, const struct fabnet_msg *m);
void fabnet_recv_on_early(struct fabnet_dev *dev, const struct fabnet_msg *m);
void fabnet_recv_on_rts(struct fabnet_dev *dev, const struct fabnet_msg *m);
/* Sends a withheld receive's CTS (its sender asked); 0 or -1 (retried by test). */
int fabnet_recv_send_withheld(struct fabnet_req *r);
/* A not yet complete entry the peer's CLOSE says it never sent. */
int fabnet_recv_entry_orphaned(struct fabnet_comm *c, const struct fabnet_recv_entry *e);
void fabnet_recv_on_fin(struct fabnet_dev *dev, const struct fabnet_msg *m);
void fabnet_recv_forget(struct fabnet_req *r, const struct fabnet_rmr *rmr);
void fabnet_recv_on_revoked(struct fabnet_dev *dev, const struct fabnet_msg *m);

/* ---- conn.c ---------------------------------------------------------------- */
void fabnet_conn_on_connect(struct fabnet_dev *dev, const struct fabnet_msg *m);
void fabnet_conn_on_ack(struct fabnet_dev *dev, const struct fabnet_msg *m);
void fabnet_conn_on_close(struct fabnet_dev *dev, const struct fabnet_msg *m);
void fabnet_conn_on_ping(struct fabnet_dev *dev, const struct fabnet_msg *m);

#endif
