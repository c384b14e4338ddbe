/*
 * fabnet-hostile: comms of their own, failed, closed and deregistered under
 * requests (the stalled send, the lost CLOSE, the given-up writes, waits on
 * a silent peer).
 */
#include "hostile.h"

/* Writes the provider never completes (shm to a peer whose comm closed) hold
 * a deregMr of their buffer for the peer timeout; they must not hold every
 * later deregMr and the close as well, the timeout each time, with the
 * proxy thread and every other comm of the device waiting. A send stalled on
 * a full rail stands in for them: it is made to look as if the provider held
 * one of its writes. */
static void given_up_writes_case(const char *name, void *handle)
{
	struct fabnet_comm *s = NULL, *r = NULL;
	size_t size = 256 * 1024, saved = dev->rail_bytes;
	void *rreq = NULL, *sreq = NULL, *mh1 = NULL, *mh2 = NULL;
	uint8_t *b1 = sbuf, *b2 = sbuf + 512 * 1024;
	struct fabnet_req *sr;
	int64_t t0, t1, t2;

	begin(name);
	forged = 0;
	if (connect_extra(handle, &s, &r))
		goto out;
	if (fabnet_api_reg_mr(s, b1, size, NCCL_PTR_HOST, &mh1) != ncclSuccess ||
	    fabnet_api_reg_mr(s, b2, 4096, NCCL_PTR_HOST, &mh2) != ncclSuccess) {
		bad("harness: regMr failed");
		goto out;
	}
	if (post_stalled_send(s, r, b1, mh1, size, &rreq, &sreq))
		goto out;
	sr = sreq;
	pthread_mutex_lock(&dev->lock);
	sr->u.send.writes_posted = sr->u.send.writes_done + 1; /* "the provider holds one" */
	pthread_mutex_unlock(&dev->lock);
	t0 = now_ms();
	fabnet_api_dereg_mr(s, mh1); /* waits the peer timeout, then gives them up */
	mh1 = NULL;
	t1 = now_ms();
	fabnet_api_dereg_mr(s, mh2);
	mh2 = NULL;
	t2 = now_ms();
	if (t1 - t0 < (int64_t)fabnet_config()->peer_timeout_ms / 2)
		bad("harness: the first deregMr did not wait for the write (%" PRId64 " ms)", t1 - t0);
	else if (t2 - t1 > (int64_t)fabnet_config()->peer_timeout_ms / 2)
		bad("a deregMr of another buffer waited %" PRId64 " ms for the write the first one "
		    "gave up on", t2 - t1);
	pthread_mutex_lock(&dev->lock);
	sr->u.send.writes_posted = sr->u.send.writes_done; /* back to the truth */
	pthread_mutex_unlock(&dev->lock);
out:
	dev->rail_bytes = saved;
	if (mh1)
		fabnet_api_dereg_mr(s, mh1);
	if (mh2)
		fabnet_api_dereg_mr(s, mh2);
	if (s)
		fabnet_api_close(s, 2);
	if (r)
		fabnet_api_close(r, 3);
	report(name);
}

/* The peer's comm is gone without its CLOSE reaching us (lost, or the peer
 * freed it some other way): our keepalives are still delivered, to the
 * peer's endpoint, so delivery alone would keep the comm looking alive for
 * good. The peer answers a PING for a comm it no longer has with a CLOSE. */
static void stale_ping_case(const char *name, void *handle)
{
	struct fabnet_comm *s = NULL, *r = NULL;
	void *sreq = NULL;
	ncclResult_t res = ncclSuccess;
	int64_t deadline;

	begin(name);
	forged = 0;
	if (connect_extra(handle, &s, &r))
		goto out;
	pthread_mutex_lock(&dev->lock);
	fabnet_comm_free(r); /* gone, and no CLOSE sent */
	r = NULL;
	s->ping_sent.tv_sec = 0; /* a keepalive is due now */
	s->checked.tv_sec = 0;
	fabnet_proto_check_peer_now(s);
	pthread_mutex_unlock(&dev->lock);
	if (!s->ping_pending) {
		bad("harness: no keepalive went out");
		goto out;
	}
	deadline = now_ms() + 3000;
	while (res == ncclSuccess && now_ms() < deadline) {
		progress(2);
		res = fabnet_api_isend(s, sbuf, 100, TAG0, smh, &sreq);
		if (sreq) {
			bad("an isend on the comm got a request: something answered with a CTS");
			goto out;
		}
	}
	if (res == ncclSuccess)
		bad("3 s after a keepalive to a comm the peer no longer has, the send comm still "
		    "takes sends (it waits for a CTS that cannot come)");
out:
	if (s)
		fabnet_api_close(s, 2);
	report(name);
}

/* A rendezvous send waiting for room on its rail when its comm fails must
 * end, with an error: its writes will never be posted. */
static void stalled_send_case(const char *name, void *handle)
{
	struct fabnet_comm *s = NULL, *r = NULL;
	size_t size = 256 * 1024, saved = dev->rail_bytes;
	void *rreq = NULL, *sreq = NULL;
	int done = 0, got = -1;
	ncclResult_t res = ncclSuccess;
	int64_t deadline;

	begin(name);
	forged = 0;
	if (connect_extra(handle, &s, &r))
		goto out;
	if (post_stalled_send(s, r, sbuf, smh, size, &rreq, &sreq))
		goto out;
	fabnet_proto_fail_comm(s, "failed by fabnet-hostile, its send waiting for a rail");
	deadline = now_ms() + 3000;
	while (!done && now_ms() < deadline) {
		res = fabnet_api_test(sreq, &done, &got);
		usleep(100);
	}
	if (!done)
		bad("the waiting send of a failed comm did not complete within 3 s");
	else if (res != ncclRemoteError)
		bad("the waiting send of a failed comm completed with %d, not ncclRemoteError",
		    (int)res);
out:
	dev->rail_bytes = saved;
	if (r)
		fabnet_proto_fail_comm(r, "closed by fabnet-hostile with its receive posted");
	if (s)
		fabnet_api_close(s, 2);
	if (r)
		fabnet_api_close(r, 3);
	report(name);
}

/* Another pair on the same device, driven by a thread of its own the way
 * NCCL's proxy threads of other communicators drive theirs: round trips of
 * an eager-sized message, the longest one timed. */
struct bystander {
	struct fabnet_comm *s, *r;
	void *smh, *rmh;
	uint8_t sbuf[256], rbuf[256];
	int stop, measuring, rounds; /* shared with the thread: __atomic */
	int failed;                  /* the thread's until it is joined */
	int64_t longest_ms;          /* of the round trips begun while measuring */
};

static int bystander_round(struct bystander *b)
{
	void *data = b->rbuf, *rreq = NULL, *sreq = NULL;
	size_t size = sizeof(b->rbuf);
	int tag = TAG0, rdone = 0, sdone = 0, got;
	int64_t deadline = now_ms() + CASE_TIMEOUT_MS;

	while (!rreq && now_ms() < deadline)
		if (fabnet_api_irecv(b->r, 1, &data, &size, &tag, &b->rmh, &rreq) != ncclSuccess)
			return -1;
	while (!sreq && now_ms() < deadline)
		if (fabnet_api_isend(b->s, b->sbuf, sizeof(b->sbuf), tag, b->smh, &sreq) != ncclSuccess)
			return -1;
	while ((!rdone || !sdone) && now_ms() < deadline) {
		if ((!rdone && fabnet_api_test(rreq, &rdone, &got) != ncclSuccess) ||
		    (!sdone && fabnet_api_test(sreq, &sdone, &got) != ncclSuccess))
			return -1;
	}
	return rdone && sdone && !memcmp(b->rbuf, b->sbuf, sizeof(b->rbuf)) ? 0 : -1;
}

static void *bystander_main(void *arg)
{
	struct bystander *b = arg;

	for (int n = 0; !__atomic_load_n(&b->stop, __ATOMIC_ACQUIRE); n++) {
		int measuring = __atomic_load_n(&b->measuring, __ATOMIC_ACQUIRE);
		int64_t t0 = now_ms();
		memset(b->sbuf, (uint8_t)(n * 7 + 1), sizeof(b->sbuf));
		if (bystander_round(b)) {
			b->failed = 1;
			break;
		}
		if (measuring && now_ms() - t0 > b->longest_ms)
			b->longest_ms = now_ms() - t0;
		__atomic_store_n(&b->rounds, n + 1, __ATOMIC_RELEASE);
	}
	return NULL;
}

/* A deregMr, or a close, waiting on its peer (here a sender that never
 * answers the REVOKE of a receive posted into the buffer, until a keepalive
 * finds its comm gone) must not take the device from its other comms: NCCL
 * runs other communicators' proxy threads on the same device meanwhile, and
 * an abort over many comms would otherwise stop all of them for as long. */
static void waiting_teardown_case(const char *name, void *handle, int close_first)
{
	struct fabnet_comm *s = NULL, *r = NULL;
	struct bystander *b = calloc(1, sizeof(*b));
	void *mh = NULL, *rreq = NULL, *data = rbuf;
	size_t size = 65536;
	int tag = TAG0, started = 0;
	int64_t t0, waited, deadline = now_ms() + 5000;
	pthread_t th;

	begin(name);
	forged = 0;
	if (!b || connect_extra(handle, &s, &r) || connect_extra(handle, &b->s, &b->r))
		goto out;
	if (fabnet_api_reg_mr(r, rbuf, size, NCCL_PTR_HOST, &mh) != ncclSuccess ||
	    fabnet_api_reg_mr(b->s, b->sbuf, sizeof(b->sbuf), NCCL_PTR_HOST, &b->smh) != ncclSuccess ||
	    fabnet_api_reg_mr(b->r, b->rbuf, sizeof(b->rbuf), NCCL_PTR_HOST, &b->rmh) != ncclSuccess) {
		bad("harness: regMr failed");
		goto out;
	}
	while (!rreq && now_ms() < deadline)
		if (fabnet_api_irecv(r, 1, &data, &size, &tag, &mh, &rreq) != ncclSuccess)
			break;
	if (!rreq) {
		bad("harness: could not post the receive");
		goto out;
	}
	progress(5); /* its CTS is with the sender, which will never write */
	pthread_mutex_lock(&dev->lock);
	r->peer_token ^= 0x5a5a00; /* what r sends the sender from now on is dropped there */
	clock_gettime(CLOCK_MONOTONIC, &r->ping_sent); /* no keepalive for a while */
	r->checked = r->ping_sent;
	pthread_mutex_unlock(&dev->lock);
	if (pthread_create(&th, NULL, bystander_main, b)) {
		bad("harness: pthread_create failed");
		goto out;
	}
	started = 1;
	while (__atomic_load_n(&b->rounds, __ATOMIC_ACQUIRE) < 10 && now_ms() < deadline)
		usleep(1000);
	__atomic_store_n(&b->measuring, 1, __ATOMIC_RELEASE);
	t0 = now_ms();
	if (close_first) {
		fabnet_api_close(r, 3); /* waits for the sender's writes or its end */
		r = NULL;
		fabnet_api_dereg_mr(s, mh);
	} else {
		fabnet_api_dereg_mr(r, mh); /* waits for the sender's REVOKED or its end */
	}
	mh = NULL;
	waited = now_ms() - t0;
	__atomic_store_n(&b->stop, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	started = 0;
	if (b->failed)
		bad("a transfer on another comm of the device failed (%s)", firstlog);
	else if (waited < 300)
		bad("harness: the %s did not wait on the sender (%" PRId64 " ms)",
		    close_first ? "close" : "deregMr", waited);
	else if (b->longest_ms > waited / 2)
		bad("while a %s waited %" PRId64 " ms on its peer, a round trip on another comm of "
		    "the device took %" PRId64 " ms (%d round trips): the wait held the device",
		    close_first ? "close" : "deregMr", waited, b->longest_ms, b->rounds);
	else if (verbose)
		printf("  %s waited %" PRId64 " ms; another comm meanwhile: longest round trip %"
		       PRId64 " ms\n", close_first ? "close" : "deregMr", waited, b->longest_ms);
out:
	if (started) {
		__atomic_store_n(&b->stop, 1, __ATOMIC_RELEASE);
		pthread_join(th, NULL);
	}
	if (mh)
		fabnet_api_dereg_mr(r, mh);
	if (b) {
		if (b->smh)
			fabnet_api_dereg_mr(b->s, b->smh);
		if (b->rmh)
			fabnet_api_dereg_mr(b->r, b->rmh);
		if (b->s)
			fabnet_api_close(b->s, 2);
		if (b->r)
			fabnet_api_close(b->r, 3);
		free(b);
	}
	if (s)
		fabnet_api_close(s, 2);
	if (r)
		fabnet_api_close(r, 3);
	report(name);
}

void hostile_teardown_cases(void *handle)
{
	stalled_send_case("a send waiting for a full rail when its comm fails", handle);
	stale_ping_case("a keepalive to a comm the peer no longer has, its CLOSE lost", handle);
	given_up_writes_case("writes a deregMr gave up on hold no later deregMr", handle);
	waiting_teardown_case("a deregMr waiting on its sender leaves the device to other comms",
			      handle, 0);
	waiting_teardown_case("a close waiting on its sender leaves the device to other comms",
			      handle, 1);
}
