/*
 * fabnet-hostile: forged input against the send side and the connection
 * (CTS, REVOKE, CONNECT, CONNECT_ACK), and a flood of garbage.
 */
#include "hostile.h"

/* ---- the send side and the connection ----------------------------------------------- */

/* A CTS that must be dropped: the send comm's state does not change, and a
 * genuine transfer still works. */
static void cts_case(const char *name, int which)
{
	struct fabnet_cts_slot before[FABNET_NSLOTS];
	struct fabnet_cts_entry e[2];
	uint32_t seq = sc->seq, src = sc->peer_id;
	uint8_t n = 1;
	size_t len;
	struct posted p;
	size_t sizes[1] = {3000};

	begin(name);
	canary_reset();
	memset(e, 0, sizeof(e));
	e[0].addr = (uint64_t)(uintptr_t)entry(0);
	e[0].key = ((struct fabnet_rmr *)rmh)->mr[0]->key;
	e[0].size = 1 << 20;
	e[0].tag = TAG0;
	e[0].flags = FABNET_CTS_EAGER_OK;
	/* the index of the sender's next send with the tag: one it would take */
	e[0].tagseq = fabnet_tag_count_of(&sc->tags, TAG0) & FABNET_TAGSEQ_MASK;
	e[1] = e[0];
	switch (which) {
	case 0: seq -= FABNET_NSLOTS + 1; break;    /* 32 behind the newest: stale */
	case 1: seq -= 1; break;                    /* the newest again (a repeat) */
	case 2: seq += 0x80000000u; break;          /* far away */
	case 3: src = (uint32_t)sc->peer_id + 1; break; /* from a comm that is not the peer */
	case 4: src |= 0x10000u; break;             /* a peer id wider than 16 bits */
	case 5: break;                              /* right in all but the token */
	}
	memcpy(before, sc->u.send.cts, sizeof(before));
	len = fabnet_msg_encode_cts(mbuf, MSGBUF, sc->id, src, seq, n, e);
	if (which == 5) {
		fabnet_msg_set_token(mbuf, sc->token ^ 0x8000000000000000ull);
		inject_raw(mbuf, len);
	} else {
		inject_msg(mbuf, len);
	}
	if (memcmp(before, sc->u.send.cts, sizeof(before))) {
		bad("the send comm took the forged CTS (seq %u, from comm %u) into its window", seq,
		    src);
		goto out;
	}
	if (sc->state != FABNET_READY) {
		bad("the forged CTS failed the send comm (state %d)", sc->state);
		goto out;
	}
	if (post_recv(&p, 1, sizes) == 0)
		genuine_complete(&p, 0);
out:
	report(name);
}

/* The CPU copies inline (eager) data: a small send from accelerator memory
 * would be a memcpy from a device pointer, a crash on a real GPU. Host
 * memory registered as NCCL_PTR_CUDA stands in for it: the send must go by
 * RMA write (the NIC reads device memory), and its bytes must arrive. */
static void send_from_accel_case(const char *name)
{
	struct fabnet_rmr *mr = smh;
	size_t sizes[1] = {100};
	uint64_t key;
	void *sreq = NULL;
	int saved = mr->type, done = 0, got = -1, nwrites = -1;
	int64_t deadline = now_ms() + 5000;
	ncclResult_t res = ncclSuccess;
	enum outcome o = PENDING;
	struct posted p;

	begin(name);
	forged = 0;
	canary_reset();
	if (post_recv(&p, 1, sizes))
		goto out;
	key = mix64(seed ^ ((uint64_t)p.seq << 8));
	pat_fill(sbuf, sizes[0], key);
	mr->type = NCCL_PTR_CUDA;
	while (!sreq && res == ncclSuccess && now_ms() < deadline)
		res = fabnet_api_isend(sc, sbuf, sizes[0], TAG0, smh, &sreq);
	if (!sreq) {
		bad("isend of 100 bytes from accelerator-typed memory returned %d, no request",
		    (int)res);
		goto out;
	}
	pthread_mutex_lock(&dev->lock);
	nwrites = (int)((struct fabnet_req *)sreq)->u.send.nwrites;
	pthread_mutex_unlock(&dev->lock);
	while (!done && res == ncclSuccess && now_ms() < deadline)
		res = fabnet_api_test(sreq, &done, &got);
	while (o == PENDING && now_ms() < deadline)
		o = poll_recv(&p, 1, &got, &res);
	if (nwrites < 1)
		bad("a 100-byte send from accelerator-typed memory went inline (copied by the CPU, "
		    "a fault on a device pointer), not by RMA write");
	else if (!done || o != COMPLETED)
		bad("the send from accelerator-typed memory did not complete (send %s, receive "
		    "%s)", done ? "done" : "pending", outcome_name(o));
	else
		for (size_t i = 0; i < sizes[0] && !why[0]; i++)
			if (entry(0)[i] != pat_byte(i, key))
				bad("byte %zu of the send from accelerator-typed memory arrived as 0x%02x, "
				    "not 0x%02x", i, entry(0)[i], pat_byte(i, key));
out:
	mr->type = saved;
	report(name);
}

/* REVOKE withdraws a receive the sender has not finished: from anyone but
 * the connection's peer (no token) it must change nothing; from the peer it
 * marks the send window's slot (the control: the injection reaches it). */
static void revoke_case(const char *name)
{
	struct fabnet_cts_slot *s = &sc->u.send.cts[sc->seq % FABNET_NSLOTS];
	size_t len;

	begin(name);
	len = fabnet_msg_encode_revoke(mbuf, MSGBUF, sc->id, sc->peer_id, sc->seq, 0);
	fabnet_msg_set_token(mbuf, sc->token ^ 4);
	inject_raw(mbuf, len);
	if (s->revoked) {
		bad("a REVOKE without the connection's token withdrew receive %u", sc->seq);
		s->revoked = 0;
		goto out;
	}
	inject_msg(mbuf, len);
	if (!s->revoked || s->seq != sc->seq) {
		bad("control: the peer's REVOKE of receive %u did not reach the send comm", sc->seq);
		goto out;
	}
	s->revoked = 0; /* undo the control's effect: the genuine receive of this seq comes */
	genuine_one(3000);
out:
	report(name);
}

static void connect_case(const char *name, int which)
{
	struct fabnet_proc proc = {0x1234, 4242};
	unsigned pending_before = lc->u.listen.npending;
	uint16_t peer_before = sc->peer_id;
	void *comm = NULL;
	size_t len = 0;

	begin(name);
	switch (which) {
	case 0: /* CONNECT with a wrong nonce */
		len = fabnet_msg_encode_connect(mbuf, MSGBUF, lc->id, 4242, lc->u.listen.nonce ^ 1,
						&proc, dev->addr, (uint8_t)dev->addrlen, 0);
		break;
	case 1: /* CONNECT addressed to a comm that is not a listener */
		len = fabnet_msg_encode_connect(mbuf, MSGBUF, rc->id, 4242, lc->u.listen.nonce,
						&proc, dev->addr, (uint8_t)dev->addrlen, 0);
		break;
	case 2: /* CONNECT_ACK for the connected send comm */
		len = fabnet_msg_encode_ack(mbuf, MSGBUF, sc->id, 777, sc->u.send.nonce, &proc);
		break;
	}
	inject_msg(mbuf, len);
	progress(3);
	if (lc->u.listen.npending != pending_before) {
		bad("the listener queued the forged CONNECT (%u pending)", lc->u.listen.npending);
		goto out;
	}
	if (fabnet_api_accept(lc, &comm) != ncclSuccess || comm) {
		bad("accept returned a comm for a forged CONNECT");
		if (comm)
			fabnet_api_close(comm, 3);
		goto out;
	}
	if (sc->peer_id != peer_before || sc->state != FABNET_READY) {
		bad("the forged CONNECT_ACK changed the send comm (peer %u, state %d)", sc->peer_id,
		    sc->state);
		goto out;
	}
	genuine_one(70000);
out:
	report(name);
}

/* A peer whose CONNECT names a process of this host that is not alive (a
 * forged or a wrong pid) must not have its comm failed at the first liveness
 * check as "exited": only keepalives can tell then. */
static void dead_pid_case(const char *name)
{
	struct fabnet_proc proc = *fabnet_self_proc();
	struct fabnet_comm *r = NULL;
	int64_t deadline = now_ms() + 5000;
	pid_t child = fork();
	size_t len;

	begin(name);
	forged = 0;
	if (child == 0)
		_exit(0);
	if (child < 0 || waitpid(child, NULL, 0) != child) {
		bad("harness: no exited process to name");
		goto out;
	}
	proc.pid = (uint32_t)child; /* exited and reaped */
	len = fabnet_msg_encode_connect(mbuf, MSGBUF, lc->id, 4000, lc->u.listen.nonce, &proc,
					dev->addr, (uint8_t)dev->addrlen, 0);
	inject_msg(mbuf, len);
	while (!r && now_ms() < deadline)
		if (fabnet_api_accept(lc, (void **)&r) != ncclSuccess)
			break;
	if (!r) {
		bad("accept returned no comm for the CONNECT (%s)", firstlog);
		goto out;
	}
	pthread_mutex_lock(&dev->lock);
	r->checked.tv_sec = 0;
	fabnet_proto_check_peer_now(r);
	pthread_mutex_unlock(&dev->lock);
	if (r->state == FABNET_FAILED)
		bad("the comm failed at its first liveness check: its peer named process %d, which "
		    "had exited (%s)", (int)child, firstlog);
out:
	if (r)
		fabnet_api_close(r, 3);
	report(name);
}

/* A CTS forged for a comm that is still connecting (its ACK not yet in) must
 * neither lock the genuine ACK out nor stay in the window for a send to
 * write to: the ACK, which carries the listener's nonce, decides the peer. */
static void cts_before_ack_case(const char *name, void *handle)
{
	struct fabnet_proto_dev *pd = dev->proto;
	struct fabnet_cts_entry e = {.addr = (uint64_t)(uintptr_t)sbuf, .key = 1, .size = 4096};
	struct fabnet_comm *s = NULL, *r = NULL, *connecting;
	int64_t deadline;
	size_t len;

	begin(name);
	forged = 1;
	if (fabnet_api_connect(0, handle, (void **)&s) != ncclSuccess || s || !pd->connecting) {
		bad("connect did not leave a comm connecting (returned %p)", (void *)s);
		goto out;
	}
	connecting = pd->connecting;
	len = fabnet_msg_encode_cts(mbuf, MSGBUF, connecting->id, 999, 0, 1, &e);
	inject_msg(mbuf, len);
	deadline = now_ms() + 5000;
	while (!s || !r) {
		if ((!s && fabnet_api_connect(0, handle, (void **)&s) != ncclSuccess) ||
		    (!r && fabnet_api_accept(lc, (void **)&r) != ncclSuccess)) {
			bad("connect or accept failed after the forged CTS (%s)", firstlog);
			goto out;
		}
		if (now_ms() > deadline) {
			bad("not connected 5 s after a forged CTS came before the ACK (send comm "
			    "%s, peer id %u)", s ? "ready" : "connecting", connecting->peer_id);
			goto out;
		}
	}
	if (s->peer_id != r->id)
		bad("the send comm's peer is comm %u, not the accepting comm %u", s->peer_id, r->id);
	else if (s->u.send.cts[0].valid)
		bad("the forged CTS (from comm 999) is still in the send comm's window");
out:
	if (s)
		fabnet_api_close(s, 2);
	if (r)
		fabnet_api_close(r, 3);
	report(name);
}

/* A peer (or anything else on the network) sending garbage as fast as it can
 * must not turn into as many WARN lines: they would drown the job's log and
 * slow the progress loop that writes them. */
static void flood_case(const char *name, int n)
{
	int logged;

	begin(name);
	for (int i = 0; i < n; i++) {
		memset(mbuf, 0, 64);
		mbuf[0] = (uint8_t)(0x5a ^ i); /* not the message magic */
		inject_msg(mbuf, 32 + (size_t)(i % 32));
	}
	pthread_mutex_lock(&log_lock);
	logged = nlog;
	pthread_mutex_unlock(&log_lock);
	if (logged > FABNET_DROP_LOG_BURST + 1)
		bad("%d malformed messages gave %d log lines (at most %d a second expected)", n,
		    logged, FABNET_DROP_LOG_BURST);
	else if (!logged)
		bad("%d malformed messages were dropped without a single log line", n);
	else
		genuine_one(3000);
	report(name);
}

void hostile_conn_cases(void *handle)
{
	cts_case("CTS 32 receives behind the newest, with an entry to take", 0);
	cts_case("CTS repeating the newest, with an entry to take", 1);
	cts_case("CTS far outside the window (seq + 2^31)", 2);
	cts_case("CTS from a comm that is not the peer", 3);
	cts_case("CTS from the peer id + 65536", 4);
	cts_case("CTS right in every field but the connection's token", 5);
	revoke_case("REVOKE right in every field but the connection's token");
	send_from_accel_case("a small send from accelerator memory goes by RMA write, not inline");
	connect_case("CONNECT with a wrong nonce", 0);
	connect_case("CONNECT to a comm that is not a listener", 1);
	connect_case("CONNECT_ACK for a connected send comm", 2);
	dead_pid_case("CONNECT naming a process of this host that has exited");
	cts_before_ack_case("CTS forged for a comm still connecting, before its ACK", handle);
	sleep(1); /* a log window of its own */
	flood_case("a flood of 1000 malformed messages", 1000);
}
