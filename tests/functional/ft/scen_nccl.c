/*
 * nccl-patterns: what NCCL's proxy does that the other scenarios do not.
 *
 *  - Shared comms (maxRecvs > 1): each of the sender's subs sends with its
 *    own tag and runs at its own pace, so one sub issues step s+1 while
 *    another has not sent step s. A send that finds no free entry with its tag
 *    in the receiver's current group gets a NULL request and is retried, as
 *    with net_ib (src/transport/net.cc only ever retries a NULL isend).
 *  - Teardown: NCCL deregisters and frees every buffer of a connection, then
 *    closes the comms (net.cc's recvFree/sendFree), with receives still posted
 *    when the job aborts, while other connections on the same device carry on.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ft.h"

#define SKEW_SUBS 4   /* senders sharing one comm, one tag each */
#define SKEW_STEPS 24 /* steps each sub sends */
#define SKEW_WINDOW 8 /* NCCL_STEPS: steps in flight per sub */

/* Sizes per sub: eager, eager, rendezvous, rendezvous striped if it can be. */
static const size_t skew_size[SKEW_SUBS] = {100, 3000, 200000, MiB + 7};

static uint64_t skew_iter(int step, int sub)
{
	return 90000u + (uint64_t)step * 8 + (uint64_t)sub;
}

/* Rank 0: one grouped receive of SKEW_SUBS buffers per step, SKEW_WINDOW
 * groups in flight, each verified when it completes. */
static int skew_receiver(struct ft *ft, void *comm, struct fbuf (*b)[SKEW_SUBS])
{
	void *req[SKEW_STEPS] = {0};
	int posted = 0, done = 0;
	int64_t deadline = now_ms() + ft->op_timeout_ms;

	while (done < SKEW_STEPS) {
		if (posted < SKEW_STEPS && posted - done < SKEW_WINDOW) {
			void *data[SKEW_SUBS], *mh[SKEW_SUBS];
			size_t sz[SKEW_SUBS];
			int tags[SKEW_SUBS];
			for (int j = 0; j < SKEW_SUBS; j++) {
				data[j] = b[posted][j].p;
				mh[j] = b[posted][j].mh;
				sz[j] = skew_size[j];
				tags[j] = 10 + j;
			}
			g_step = "irecv";
			CALL(ft, pl_irecv(ft->net, comm, SKEW_SUBS, data, sz, tags, mh, &req[posted]),
			     "irecv (group of 4)");
			if (req[posted])
				posted++;
		}
		if (done < posted) {
			int got[SKEW_SUBS], fin = 0;
			g_step = "test";
			CALL(ft, pl_test(ft->net, req[done], &fin, got), "test (grouped irecv)");
			if (fin) {
				for (int j = 0; j < SKEW_SUBS; j++) {
					char what[80];
					snprintf(what, sizeof(what), "step %d, sub %d", done, j);
					if (check_recv(ft, what, &b[done][j], skew_size[j],
						       skew_iter(done, j), got[j]))
						return -1;
				}
				done++;
				deadline = now_ms() + ft->op_timeout_ms;
			}
		}
		if (now_ms() > deadline)
			return fail(ft, "grouped receives: step %d of %d did not complete in %d s",
				    done, SKEW_STEPS, ft->op_timeout_ms / 1000);
		wd_kick();
	}
	return 0;
}

/* Rank 1: sub j gets a turn on every (2j+1)-th pass only, so sub 0 runs ahead
 * of the others by up to SKEW_WINDOW steps. Returns how often a sub was ahead
 * of the receiver's group (a NULL request while its CTS had arrived). */
static int skew_sender(struct ft *ft, void *comm, struct fbuf (*b)[SKEW_SUBS], int *ahead)
{
	void *req[SKEW_SUBS][SKEW_STEPS];
	int posted[SKEW_SUBS] = {0}, done[SKEW_SUBS] = {0}, left = SKEW_SUBS * SKEW_STEPS;
	int64_t deadline = now_ms() + ft->op_timeout_ms;

	memset(req, 0, sizeof(req));
	*ahead = 0;
	for (unsigned pass = 0; left; pass++) {
		for (int j = 0; j < SKEW_SUBS; j++) {
			int s = posted[j];
			if (pass % (unsigned)(2 * j + 1))
				continue;
			if (s < SKEW_STEPS && s - done[j] < SKEW_WINDOW) {
				g_step = "isend";
				CALL(ft, pl_isend(ft->net, comm, b[s][j].p, skew_size[j], 10 + j,
						  b[s][j].mh, &req[j][s]), "isend (one sub of a shared comm)");
				if (req[j][s])
					posted[j]++;
				else if (s > posted[SKEW_SUBS - 1])
					(*ahead)++;
			}
			if (done[j] < posted[j]) {
				int fin = 0, sz[1];
				g_step = "test";
				CALL(ft, pl_test(ft->net, req[j][done[j]], &fin, sz), "test (isend)");
				if (fin) {
					if (sz[0] != (int)skew_size[j])
						return fail(ft, "sub %d step %d: test() reported %d bytes "
							    "sent, not %zu", j, done[j], sz[0], skew_size[j]);
					done[j]++;
					left--;
					deadline = now_ms() + ft->op_timeout_ms;
				}
			}
		}
		if (now_ms() > deadline)
			return fail(ft, "shared comm: sends stuck at steps %d/%d/%d/%d", done[0], done[1],
				    done[2], done[3]);
		wd_kick();
	}
	return 0;
}

static int skewed_senders(struct ft *ft, const void *arg)
{
	struct fbuf (*b)[SKEW_SUBS] = calloc(SKEW_STEPS, sizeof(*b));
	struct pair p;
	int rc = -1, ahead = 0;

	(void)arg;
	if (!b)
		return fail(ft, "out of memory");
	if (pairs_open(ft, &p, 1, 1))
		goto out;
	for (int s = 0; s < SKEW_STEPS; s++)
		for (int j = 0; j < SKEW_SUBS; j++) {
			size_t cap = ft->rank == 0 ? skew_size[j] + CANARY_PAD : skew_size[j];
			if (fbuf_alloc(ft, p.comm, cap, &b[s][j]))
				goto out;
			if (ft->rank == 0)
				canary_fill(b[s][j].p, 0, cap);
			else
				pat_fill(b[s][j].p, skew_size[j],
					 pat_key(ft->seed, skew_size[j], skew_iter(s, j)));
		}
	if (ft->rank == 0 ? skew_receiver(ft, p.comm, b) : skew_sender(ft, p.comm, b, &ahead))
		goto out;
	if (ft->rank == 1)
		vnote("shared comm: a sub was ahead of the receiver's group %d times", ahead);
	rc = 0;
out:
	for (int s = 0; s < SKEW_STEPS; s++)
		for (int j = 0; j < SKEW_SUBS; j++)
			fbuf_free(ft, &b[s][j], 1);
	free(b);
	if (pairs_close(ft, &p, 1))
		rc = -1;
	return rc;
}

/* Posts until the plugin hands out a send request. */
static int post_send(struct ft *ft, void *comm, struct fbuf *b, size_t size, int tag, void **req)
{
	int64_t deadline = now_ms() + ft->op_timeout_ms;

	*req = NULL;
	while (!*req) {
		g_step = "isend";
		CALL(ft, pl_isend(ft->net, comm, b->p, size, tag, b->mh, req), "isend");
		if (now_ms() > deadline)
			return fail(ft, "isend kept returning a NULL request for %d s",
				    ft->op_timeout_ms / 1000);
		wd_kick();
	}
	return 0;
}

/* Rank 1 sits in a control sync (as an idle NCCL peer would, not calling
 * into the plugin) while rank 0 deregisters A's buffer and then C's, each
 * with a receive posted, and closes D with a receive posted: the first
 * deregMr may wait the peer timeout for the withdrawal to be confirmed; the
 * second deregMr and the close must not wait on that sender again. */
static int dereg_second_silent(struct ft *ft, struct fbuf *a, struct fbuf *c, void **dcomm)
{
	const char *env = getenv("FABNET_PEER_TIMEOUT_MS");
	int64_t timeout = env ? atoll(env) : 10000, t0 = now_ms(), t1, t2, t3;

	if (fbuf_free(ft, a, 1)) /* deregMr, then munmap: the receive stays posted */
		return -1;
	t1 = now_ms();
	if (fbuf_free(ft, c, 1))
		return -1;
	t2 = now_ms();
	if (close_comm(ft, *dcomm))
		return -1;
	*dcomm = NULL;
	t3 = now_ms();
	vnote("deregMr with a receive posted, the sender idle: %lld ms; then another: %lld ms; "
	      "a close with one posted: %lld ms", (long long)(t1 - t0), (long long)(t2 - t1),
	      (long long)(t3 - t2));
	if (t1 - t0 < timeout / 2)
		return 0; /* the sender answered: nothing here to wait on twice */
	if (t2 - t1 >= timeout / 2 || t3 - t2 >= timeout / 2)
		return fail(ft, "a second deregMr (%lld ms) or a close (%lld ms) waited on the sender "
			    "that left the first one's withdrawal unanswered for %lld ms: an abort "
			    "over N comms would take N peer timeouts", (long long)(t2 - t1),
			    (long long)(t3 - t2), (long long)(t1 - t0));
	return 0;
}

/* Rank 0 posts a receive on comm A into a buffer of its own pages, one on
 * comm B and one on comm C, then deregisters and unmaps A's buffer (and C's)
 * as NCCL's teardown does; rank 1 then sends into it (inline data, so the
 * bytes reach rank 0's bounce buffers) and then on B. Rank 0's progress while
 * it waits for B meets A's message: it must drop it, not copy it into the
 * unmapped pages (nor read the freed registration). Then A closes at once and
 * B still works. No control message passes while the sends are under way:
 * the ranks progress on their own, as NCCL's proxies do. */
static int dereg_then_close(struct ft *ft, const void *arg)
{
	enum { ASZ = 2000, BSZ = 70000 };
	struct msg m = {.comm = 1, .size = BSZ, .cap = BSZ, .tag = 4, .iter = 91000};
	struct pair p[4];
	struct fbuf a, b, c, d;
	void *areq = NULL, *breq = NULL, *creq = NULL, *dreq = NULL;
	ncclResult_t res;
	int rc = -1, got[1];

	(void)arg;
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	memset(&c, 0, sizeof(c));
	memset(&d, 0, sizeof(d));
	if (pairs_open(ft, p, 4, 1))
		return -1;
	if (ft->rank == 0) {
		void *data[1];
		size_t sz[1] = {MiB};
		int tags[1] = {3};
		if (fbuf_alloc(ft, p[0].comm, MiB, &a) || /* its own mapping: freed is unmapped */
		    fbuf_alloc(ft, p[1].comm, BSZ + CANARY_PAD, &b) ||
		    fbuf_alloc(ft, p[2].comm, MiB, &c) || fbuf_alloc(ft, p[3].comm, MiB, &d))
			goto out;
		canary_fill(b.p, 0, b.cap);
		data[0] = a.p;
		if (h_irecv(ft, p[0].comm, 1, data, sz, tags, &a.mh, &areq, ft->op_timeout_ms))
			goto out;
		data[0] = c.p;
		tags[0] = 5;
		if (h_irecv(ft, p[2].comm, 1, data, sz, tags, &c.mh, &creq, ft->op_timeout_ms))
			goto out;
		data[0] = d.p;
		tags[0] = 6;
		if (h_irecv(ft, p[3].comm, 1, data, sz, tags, &d.mh, &dreq, ft->op_timeout_ms))
			goto out;
		data[0] = b.p;
		sz[0] = BSZ;
		tags[0] = m.tag;
		if (h_irecv(ft, p[1].comm, 1, data, sz, tags, &b.mh, &breq, ft->op_timeout_ms))
			goto out;
		if (dereg_second_silent(ft, &a, &c, &p[3].comm))
			goto out;
	} else {
		if (fbuf_alloc(ft, p[0].comm, ASZ, &a) || fbuf_alloc(ft, p[1].comm, BSZ, &b))
			goto out;
		pat_fill(a.p, ASZ, pat_key(ft->seed, ASZ, 1));
		pat_fill(b.p, BSZ, pat_key(ft->seed, BSZ, m.iter));
	}
	if (ft_sync(ft)) /* A's buffer is gone on rank 0 */
		goto out;
	if (ft->rank == 1) {
		int64_t deadline = now_ms() + ft->op_timeout_ms;
		/* The receiver withdrew the receive before its buffer went (REVOKE):
		 * the isend may fail at once, or go and end with an error. */
		res = ncclSuccess;
		while (!areq && res == ncclSuccess && now_ms() < deadline) {
			g_step = "isend";
			res = pl_isend(ft->net, p[0].comm, a.p, ASZ, 3, a.mh, &areq);
			wd_kick();
		}
		if (areq && h_wait(ft, areq, got, ft->op_timeout_ms, &res))
			goto out;
		if (!areq && res == ncclSuccess) {
			fail(ft, "isend into the withdrawn receive kept returning a NULL request");
			goto out;
		}
		vnote("the send into the deregistered buffer ended with %d", (int)res);
		if (post_send(ft, p[1].comm, &b, BSZ, m.tag, &breq))
			goto out;
	}
	if (h_wait(ft, breq, got, ft->op_timeout_ms, &res))
		goto out;
	if (res != ncclSuccess) {
		fail(ft, "the transfer on comm B, after A's buffer went, ended with %d (%s)",
		     (int)res, pl_result_str(res));
		goto out;
	}
	if (ft->rank == 0 && check_recv(ft, "comm B, after A's buffer went", &b, BSZ, m.iter, got[0]))
		goto out;
	if (ft_sync(ft))
		goto out;
	if (ft->rank == 0) {
		int64_t t0 = now_ms();
		if (close_comm(ft, p[0].comm))
			goto out;
		p[0].comm = NULL;
		if (now_ms() - t0 > 5000) {
			fail(ft, "closeRecv of a comm whose only receive lost its buffer took %lld ms",
			     (long long)(now_ms() - t0));
			goto out;
		}
	}
	if (ft_sync(ft))
		goto out;
	m.iter++;
	if (transfer_simple(ft, p, &m, 1, "comm B, after A closed on the receiver"))
		goto out;
	rc = 0;
out:
	fbuf_free(ft, &a, 1);
	fbuf_free(ft, &b, 1);
	fbuf_free(ft, &c, 1);
	fbuf_free(ft, &d, 1);
	if (pairs_close(ft, p, 4))
		rc = -1;
	return rc;
}

/* NCCL aborts in the middle of traffic: rank 1 deregisters and frees its
 * send buffer and closes the comm while a large send is under way. Its CLOSE
 * must tell rank 0 that the send never finished, so rank 0's receive ends
 * (with an error) instead of waiting for writes that will never come. */
static int close_mid_send(struct ft *ft, const void *arg)
{
	enum { SZ = 128 * MiB, TAG = 7 };
	struct pair p[1];
	struct fbuf b;
	void *req = NULL;
	ncclResult_t res = ncclSuccess;
	int rc = -1, got[1] = {-1};

	(void)arg;
	memset(&b, 0, sizeof(b));
	if (pairs_open(ft, p, 1, 1))
		return -1;
	if (fbuf_alloc(ft, p[0].comm, SZ, &b))
		goto out;
	if (ft->rank == 0) {
		void *data[1] = {b.p};
		size_t sz[1] = {SZ};
		int tags[1] = {TAG};
		if (h_irecv(ft, p[0].comm, 1, data, sz, tags, &b.mh, &req, ft->op_timeout_ms))
			goto out;
	}
	if (ft_sync(ft)) /* the receive is posted */
		goto out;
	if (ft->rank == 1) {
		int done = 0;
		int64_t t0;
		if (post_send(ft, p[0].comm, &b, SZ, TAG, &req))
			goto out;
		for (int i = 0; i < 3 && !done; i++)
			if (pl_test(ft->net, req, &done, NULL) != ncclSuccess)
				break;
		vnote("closing with the %d MiB send %s", SZ / MiB, done ? "done" : "under way");
		if (fbuf_free(ft, &b, 1))
			goto out;
		t0 = now_ms();
		if (close_comm(ft, p[0].comm))
			goto out;
		p[0].comm = NULL;
		if (now_ms() - t0 > 5000) {
			fail(ft, "closeSend with a send under way took %lld ms",
			     (long long)(now_ms() - t0));
			goto out;
		}
	} else {
		if (h_wait(ft, req, got, 8000, &res)) {
			fail(ft, "the receive did not end within 8 s of the sender closing its comm in "
				 "the middle of the send");
			goto out;
		}
		vnote("the receive ended with %d, %d bytes", (int)res, got[0]);
		if (res == ncclSuccess && got[0] != SZ) {
			fail(ft, "the receive succeeded with %d of %d bytes", got[0], SZ);
			goto out;
		}
	}
	rc = 0;
out:
	fbuf_free(ft, &b, 1);
	if (ft_sync(ft))
		rc = -1;
	if (pairs_close(ft, p, 1))
		rc = -1;
	return rc;
}

int scen_nccl(struct ft *ft)
{
	sub(ft, "shared comm, 4 senders out of step, grouped receives", skewed_senders, NULL);
	sub(ft, "deregMr and free before close, data still arriving", dereg_then_close, NULL);
	sub(ft, "deregMr, free and closeSend in the middle of a send", close_mid_send, NULL);
	return 0;
}
