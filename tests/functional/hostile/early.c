/*
 * fabnet-hostile: sender-initiated eager. A small send goes before its CTS
 * (EARLY, under a credit) and waits in the receiver's store for its irecv;
 * into accelerator memory the NIC copies it. Forged EARLY messages (beyond
 * the credits, without the token, larger than a receive) change nothing
 * but what a peer could: the store stays empty, the receives untouched.
 */
#include "hostile.h"

/* Sends size pattern bytes (key) with TAG0 while no receive is posted: the
 * send must go at once, early, and complete on its own. */
static void *send_before_recv(size_t size, uint64_t key)
{
	int64_t deadline = now_ms() + 2000;
	void *sreq = NULL;
	int done = 0, got = -1;
	ncclResult_t res = ncclSuccess;

	pat_fill(sbuf, size, key);
	while (!sreq && res == ncclSuccess && now_ms() < deadline)
		res = fabnet_api_isend(sc, sbuf, size, TAG0, smh, &sreq);
	if (!sreq) {
		bad("isend of %zu bytes with no receive posted returned %d and no request: small "
		    "sends wait for their CTS (no sender-initiated eager)", size, (int)res);
		return NULL;
	}
	if (!((struct fabnet_req *)sreq)->u.send.early)
		bad("the %zu-byte send went with a CTS, not early", size);
	while (!done && res == ncclSuccess && now_ms() < deadline)
		res = fabnet_api_test(sreq, &done, &got);
	if (!done || res != ncclSuccess)
		bad("the early send did not complete before its receive was posted (test %d, done "
		    "%d)", (int)res, done);
	progress(5); /* the EARLY reaches the receive comm */
	return sreq;
}

/* The receive posted after the early send: its bytes and nothing else. */
static void check_received(struct posted *p, size_t size, uint64_t key, const char *what)
{
	int64_t deadline = now_ms() + 5000;
	ncclResult_t res = ncclSuccess;
	enum outcome o = PENDING;
	int got = -1;

	while (o == PENDING && now_ms() < deadline)
		o = poll_recv(p, 1, &got, &res);
	if (o != COMPLETED) {
		bad("%s: the receive %s (%d)", what, outcome_name(o), (int)res);
		return;
	}
	if (got != (int)size) {
		bad("%s: the receive reported %d bytes, %zu were sent", what, got, size);
		return;
	}
	for (size_t i = 0; i < size; i++)
		if (entry(0)[i] != pat_byte(i, key)) {
			bad("%s: byte %zu arrived as 0x%02x, not 0x%02x", what, i, entry(0)[i],
			    pat_byte(i, key));
			return;
		}
	canary_intact(0, size, what);
}

static void early_host_case(const char *name)
{
	uint64_t key = mix64(seed ^ 0xea51);
	size_t size = 100;
	struct posted p;

	begin(name);
	canary_reset();
	if (!send_before_recv(size, key) || why[0])
		goto out;
	if (rc->u.recv.nstored != 1) {
		bad("the receive comm holds %u early messages, not 1", rc->u.recv.nstored);
		goto out;
	}
	if (post_recv(&p, 1, &size))
		goto out;
	if (!((struct fabnet_req *)p.req)->u.recv.noslot)
		bad("the irecv whose message came early posted a CTS (a message the transfer "
		    "does not need)");
	check_received(&p, size, key, "early send into host memory");
	if (!why[0] && rc->u.recv.nstored)
		bad("the store still holds %u messages after the irecv took its own",
		    rc->u.recv.nstored);
out:
	report(name);
}

/* Host memory registered as NCCL_PTR_CUDA stands in for a device buffer:
 * the CPU must not copy into it (a fault on a real GPU); the NIC does, with
 * a loopback write completed by its immediate data. */
static void early_accel_case(const char *name)
{
	struct fabnet_rmr *mr = rmh;
	uint64_t key = mix64(seed ^ 0xacce1);
	size_t size = 1000;
	int saved = mr->type;
	struct posted p;

	begin(name);
	canary_reset();
	if (!send_before_recv(size, key) || why[0])
		goto out;
	mr->type = NCCL_PTR_CUDA;
	if (post_recv(&p, 1, &size))
		goto out;
	pthread_mutex_lock(&dev->lock);
	if (((struct fabnet_req *)p.req)->u.recv.noslot ||
	    (!((struct fabnet_req *)p.req)->u.recv.e[0].fin_seen &&
	     !((struct fabnet_req *)p.req)->u.recv.e[0].done))
		bad("the early message for accelerator memory was not handed to the NIC");
	else if (((struct fabnet_req *)p.req)->u.recv.e[0].done &&
		 !((struct fabnet_req *)p.req)->u.recv.e[0].writes_seen)
		bad("the early message for accelerator memory was copied by the CPU");
	pthread_mutex_unlock(&dev->lock);
	if (!why[0])
		check_received(&p, size, key, "early send into accelerator memory");
out:
	mr->type = saved;
	report(name);
}

/* A group of 2 whose first entry's message came early: the irecv takes it
 * from the store and posts a CTS for the second, which comes after it. */
static void early_half_group_case(const char *name)
{
	uint64_t key = mix64(seed ^ 0x6a1f);
	size_t sizes[2] = {200, 5000};
	int64_t deadline;
	void *sreq = NULL;
	ncclResult_t res = ncclSuccess;
	enum outcome o = PENDING;
	int got[2] = {-1, -1}, done = 0;
	struct posted p;

	begin(name);
	canary_reset();
	if (!send_before_recv(sizes[0], key) || why[0])
		goto out;
	if (post_recv(&p, 2, sizes))
		goto out;
	if (((struct fabnet_req *)p.req)->u.recv.noslot) {
		bad("a group with an entry still to come took no sequence");
		goto out;
	}
	pat_fill(sbuf + 4096, sizes[1], key ^ 1);
	deadline = now_ms() + 5000;
	while (!sreq && res == ncclSuccess && now_ms() < deadline)
		res = fabnet_api_isend(sc, sbuf + 4096, sizes[1], TAG0 + 1, smh, &sreq);
	while (sreq && !done && res == ncclSuccess && now_ms() < deadline)
		res = fabnet_api_test(sreq, &done, got);
	while (o == PENDING && now_ms() < deadline)
		o = poll_recv(&p, 1, got, &res);
	if (!done || o != COMPLETED) {
		bad("the second entry's send %s, the group %s (%d)", done ? "completed" : "did not "
		    "complete", outcome_name(o), (int)res);
		goto out;
	}
	for (size_t i = 0; i < sizes[0] && !why[0]; i++)
		if (entry(0)[i] != pat_byte(i, key))
			bad("entry 0 (early) byte %zu is 0x%02x, not 0x%02x", i, entry(0)[i],
			    pat_byte(i, key));
	for (size_t i = 0; i < sizes[1] && !why[0]; i++)
		if (entry(1)[i] != pat_byte(i, key ^ 1))
			bad("entry 1 (after the CTS) byte %zu is 0x%02x, not 0x%02x", i, entry(1)[i],
			    pat_byte(i, key ^ 1));
	if (!why[0])
		genuine_one(3000); /* the sequence goes on */
out:
	report(name);
}

/* A forged EARLY for TAG0, index k, of size bytes; token: the genuine one
 * or a wrong one. Nothing may be stored, and the next genuine transfer
 * gets its own bytes. */
static void forged_early_case(const char *name, int which)
{
	uint32_t posted = fabnet_tag_count_of(&rc->tags, TAG0), k = posted;
	size_t size = 64, len;

	begin(name);
	canary_reset();
	if (which == 0)
		k = posted + rc->credits_max; /* beyond what the credits allow */
	len = fabnet_msg_encode_early(mbuf, MSGBUF, rc->id, rc->peer_id, TAG0, k, size);
	memset(mbuf + FABNET_MSG_HDR_SIZE + FABNET_EAGER_FIXED, 0xEE, size);
	if (which == 1) {
		fabnet_msg_set_token(mbuf, rc->token ^ 0x40);
		inject_raw(mbuf, len);
	} else {
		inject_msg(mbuf, len);
	}
	if (rc->u.recv.nstored) {
		bad("the receive comm kept the forged EARLY (index %u, %u posted, %u credits)", k,
		    posted, rc->credits_max);
		goto out;
	}
	if (rc->state != FABNET_READY) {
		bad("the forged EARLY failed the receive comm (state %d)", rc->state);
		goto out;
	}
	genuine_one(3000);
out:
	report(name);
}

/* A forged EARLY for the posted entry, one byte larger than it: the
 * receive fails, and not a byte beyond it changes. */
static void early_too_big_case(const char *name)
{
	size_t size = 100, len;
	struct posted p;
	struct fabnet_req *r;
	ncclResult_t res;
	enum outcome o;
	int got;

	begin(name);
	canary_reset();
	if (post_recv(&p, 1, &size))
		goto out;
	r = p.req;
	len = fabnet_msg_encode_early(mbuf, MSGBUF, rc->id, rc->peer_id, TAG0,
				      r->u.recv.e[0].tagseq, size + 1);
	memset(mbuf + FABNET_MSG_HDR_SIZE + FABNET_EAGER_FIXED, 0xEE, size + 1);
	inject_msg(mbuf, len);
	o = poll_recv(&p, 20, &got, &res);
	if (canary_intact(0, 0, "after the forged EARLY"))
		goto out;
	if (o != FAILED) {
		bad("an EARLY larger than its posted receive left the receive %s", outcome_name(o));
		if (o == PENDING)
			genuine_complete(&p, 1);
		goto out;
	}
	consume(&p);
out:
	report(name);
}

/* An early message larger than the receive posted after it: the receive
 * fails (the sender could not know the size), and no byte is written. */
static void early_larger_than_recv_case(const char *name)
{
	size_t size = 100;
	struct posted p;
	ncclResult_t res = ncclSuccess;
	enum outcome o = PENDING;
	int64_t deadline;
	int got = -1;

	begin(name);
	canary_reset();
	if (!send_before_recv(300, mix64(seed ^ 0xb16)) || why[0])
		goto out;
	if (post_recv(&p, 1, &size))
		goto out;
	deadline = now_ms() + 5000;
	while (o == PENDING && now_ms() < deadline)
		o = poll_recv(&p, 1, &got, &res);
	if (o != FAILED)
		bad("a receive of %zu bytes took an early message of 300: it %s", size,
		    outcome_name(o));
	else if (!canary_intact(0, 0, "after the refused early message") && rc->u.recv.nstored)
		bad("the refused early message stayed in the store");
	if (!why[0])
		genuine_one(3000);
out:
	report(name);
}

/* A receive of at most the eager size into host memory withholds its CTS:
 * its send goes early. A sender without credits asks for it (RTS), and the
 * transfer completes through the CTS. */
static void withheld_cts_case(const char *name)
{
	uint64_t key = mix64(seed ^ 0x575);
	size_t size = 100;
	int64_t deadline = now_ms() + 5000;
	uint16_t credits;
	void *sreq = NULL;
	ncclResult_t res = ncclSuccess;
	int done = 0, got = -1;
	struct posted p;

	begin(name);
	canary_reset();
	if (post_recv(&p, 1, &size))
		goto out;
	if (!((struct fabnet_req *)p.req)->u.recv.withheld) {
		bad("a %zu-byte receive into host memory sent its CTS", size);
		goto out;
	}
	pthread_mutex_lock(&dev->lock);
	credits = sc->credits;
	sc->credits = 0; /* as if all were spent */
	pthread_mutex_unlock(&dev->lock);
	pat_fill(sbuf, size, key);
	while (!sreq && res == ncclSuccess && now_ms() < deadline)
		res = fabnet_api_isend(sc, sbuf, size, TAG0, smh, &sreq);
	pthread_mutex_lock(&dev->lock);
	sc->credits = credits;
	pthread_mutex_unlock(&dev->lock);
	if (!sreq) {
		bad("a send without credits into a withheld receive got no request (%d): its RTS "
		    "brought no CTS", (int)res);
		goto out;
	}
	if (((struct fabnet_req *)sreq)->u.send.early)
		bad("the send without credits went early");
	while (!done && res == ncclSuccess && now_ms() < deadline)
		res = fabnet_api_test(sreq, &done, &got);
	if (!why[0])
		check_received(&p, size, key, "send after an RTS");
out:
	report(name);
}

/* More RTSs for receives not posted than a comm keeps (forged, with the
 * token): the comm withholds no more CTSs, and transfers go on. */
static void rts_flood_case(const char *name)
{
	uint32_t posted = fabnet_tag_count_of(&rc->tags, TAG0);
	size_t size = 100, len;
	struct posted p;

	begin(name);
	canary_reset();
	for (uint32_t i = 0; i <= FABNET_RTS_KEPT; i++) {
		len = fabnet_msg_encode_rts(mbuf, MSGBUF, rc->id, rc->peer_id, TAG0 + 7, posted + i);
		inject_msg(mbuf, len);
	}
	if (!rc->u.recv.no_withhold) {
		bad("%d RTSs for receives to come left the comm withholding CTSs",
		    FABNET_RTS_KEPT + 1);
		goto out;
	}
	if (post_recv(&p, 1, &size))
		goto out;
	if (((struct fabnet_req *)p.req)->u.recv.withheld)
		bad("the comm withheld a CTS after the RTS flood");
	else
		genuine_complete(&p, 0);
out:
	report(name);
}

void hostile_early_cases(void)
{
	early_host_case("a small send with no receive posted goes early and waits for its irecv");
	early_accel_case("an early message for accelerator memory is written by the NIC");
	early_half_group_case("a group of 2 whose first message came early");
	early_larger_than_recv_case("an early message larger than the receive posted for it");
	forged_early_case("EARLY further ahead than the credits allow", 0);
	forged_early_case("EARLY right in every field but the connection's token", 1);
	early_too_big_case("EARLY with more bytes than its posted receive holds");
	withheld_cts_case("a small receive withholds its CTS until a sender without credits asks");
	rts_flood_case("RTSs for more receives to come than a comm keeps");
}
