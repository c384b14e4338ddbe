/*
 * flush: iflush after receives as NCCL calls it, on the ranks and in fresh
 * processes with FABNET_GDR_FLUSH=always and 0 (read at init); arguments NCCL
 * never passes must fail, not crash or succeed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ft.h"

/* What iflush on host memory should do under this FABNET_GDR_FLUSH value:
 * 1 = a real request, 0 = a NULL request. */
static int flush_expect_request(const char *mode)
{
	return mode && !strcmp(mode, "always");
}

/* iflush on received buffers, as NCCL calls it after a receive completes. */
static int flush_check(struct ft *ft, void *comm, int n, void **data, const int *got, void **mh,
		       int expect_req, const char *what)
{
	int sizes[MAX_GROUP], any = 0;
	void *req = (void *)&req; /* must be overwritten */
	ncclResult_t r;

	for (int i = 0; i < n; i++) {
		sizes[i] = got[i];
		any |= got[i] > 0;
	}
	g_step = "iflush";
	r = pl_iflush(ft->net, comm, n, data, sizes, mh, &req);
	if (r != ncclSuccess)
		return fail(ft, "%s: iflush(n=%d) returned %d (%s)", what, n, (int)r, pl_result_str(r));
	if (!expect_req || !any) {
		if (req && expect_req) {
			/* nothing was received: a request is allowed, it must complete */
		} else if (req) {
			return fail(ft, "%s: iflush on host memory returned a request (%p); with "
				    "FABNET_GDR_FLUSH=%s it must be NULL", what, req,
				    getenv("FABNET_GDR_FLUSH") ? getenv("FABNET_GDR_FLUSH") : "(unset)");
		}
	} else if (!req) {
		return fail(ft, "%s: iflush returned a NULL request although FABNET_GDR_FLUSH=always "
			    "asks for a loopback read after host receives too", what);
	}
	if (req) {
		ncclResult_t tr;
		int done_sizes[MAX_GROUP];
		if (h_wait(ft, req, done_sizes, ft->op_timeout_ms, &tr))
			return -1;
		if (tr != ncclSuccess)
			return fail(ft, "%s: test() on the flush request returned %d (%s)", what, (int)tr,
				    pl_result_str(tr));
	}
	return 0;
}

/* iflush with arguments NCCL never passes must fail, not crash or succeed. */
static int flush_bogus(struct ft *ft, void *comm, void *data, void *mh)
{
	static uint8_t fake_mh[256]; /* zeros: not a handle */
	void *d1[MAX_GROUP + 1], *m1[MAX_GROUP + 1], *fm[1] = {fake_mh};
	int s1[MAX_GROUP + 1];
	struct {
		const char *what;
		void *comm;
		int n;
		void **data;
		int *sizes;
		void **mh;
	} c[] = {
		{"n = 0", comm, 0, d1, s1, m1},
		{"n = 9 (more than maxRecvs)", comm, MAX_GROUP + 1, d1, s1, m1},
		{"data = NULL", comm, 1, NULL, s1, m1},
		{"sizes = NULL", comm, 1, d1, NULL, m1},
		{"an mhandle that is not one", comm, 1, d1, s1, fm},
		{"recvComm = NULL", NULL, 1, d1, s1, m1},
	};

	for (int i = 0; i <= MAX_GROUP; i++) {
		d1[i] = data;
		m1[i] = mh;
		s1[i] = 4;
	}
	for (size_t k = 0; k < sizeof(c) / sizeof(c[0]); k++) {
		void *req = NULL;
		ncclResult_t r;
		g_step = "iflush (bogus arguments)";
		r = pl_iflush(ft->net, c[k].comm, c[k].n, c[k].data, c[k].sizes, c[k].mh, &req);
		if (r == ncclSuccess) {
			if (req) {
				int done = 0;
				for (int t = 0; t < 1000 && !done; t++)
					if (pl_test(ft->net, req, &done, NULL) != ncclSuccess)
						break;
			}
			return fail(ft, "iflush with %s returned ncclSuccess%s instead of an error",
				    c[k].what, req ? " and a request" : "");
		}
		vnote("iflush with %s: %d (%s)", c[k].what, (int)r, pl_result_str(r));
	}
	return 0;
}

/* flush_inrank's rounds: one message of each size, then a group of 3. */
static const size_t flush_one[] = {1, 4096, 100000, 4 * MiB + 3};
static const size_t flush_grp[] = {0, 5000, 70000};
#define FLUSH_ROUNDS (sizeof(flush_one) / sizeof(flush_one[0]) + 1)

/* Rank 0's side of one flush_inrank round: the receive of n buffers, verified,
 * iflush, verified again; the first round also tries bogus arguments. */
static int flush_recv_round(struct ft *ft, void *comm, size_t k, int n, struct fbuf *b,
			    const size_t *sz, int expect_req, const char *what)
{
	struct xop op[1];

	memset(op, 0, sizeof(op));
	op[0] = (struct xop){.kind = OP_RECV, .comm = comm, .n = n, .label = (int)k};
	for (int j = 0; j < n; j++) {
		op[0].data[j] = b[j].p;
		op[0].size[j] = sz[j];
		op[0].tag[j] = 40 + j;
		op[0].mh[j] = b[j].mh;
	}
	if (run_ops(ft, op, 1))
		return -1;
	for (int j = 0; j < n; j++)
		if (check_recv(ft, what, &b[j], sz[j], 4000u + k * 8 + (size_t)j, op[0].got[j]))
			return -1;
	if (flush_check(ft, comm, n, op[0].data, op[0].got, op[0].mh, expect_req, what))
		return -1;
	for (int j = 0; j < n; j++) /* the flush must not disturb the data */
		if (check_recv(ft, "after iflush", &b[j], sz[j], 4000u + k * 8 + (size_t)j,
			       op[0].got[j]))
			return -1;
	if (k == 0 && flush_bogus(ft, comm, b[0].p, b[0].mh))
		return -1;
	return 0;
}

/* Round k of flush_inrank: one message of flush_one[k] bytes or, last, a group of 3. */
static int flush_round(struct ft *ft, void *comm, size_t k, int expect_req)
{
	int n = k + 1 < FLUSH_ROUNDS ? 1 : 3, rc = -1;
	struct fbuf b[3];
	struct xop op[3];
	size_t sz[3];
	char what[96];

	memset(b, 0, sizeof(b));
	memset(op, 0, sizeof(op));
	for (int j = 0; j < n; j++)
		sz[j] = n == 1 ? flush_one[k] : flush_grp[j];
	if (n == 1)
		snprintf(what, sizeof(what), "%zu bytes", sz[0]);
	else
		snprintf(what, sizeof(what), "group of 3 (%zu, %zu, %zu bytes)", sz[0], sz[1], sz[2]);
	for (int j = 0; j < n; j++) {
		if (fbuf_alloc(ft, comm, ft->rank == 0 ? sz[j] + CANARY_PAD : sz[j], &b[j]))
			goto out;
		if (ft->rank == 0)
			canary_fill(b[j].p, 0, b[j].cap);
		else
			pat_fill(b[j].p, sz[j], pat_key(ft->seed, sz[j], 4000u + k * 8 + (size_t)j));
	}
	if (ft->rank == 0) {
		if (flush_recv_round(ft, comm, k, n, b, sz, expect_req, what))
			goto out;
	} else {
		for (int j = 0; j < n; j++)
			op[j] = (struct xop){.kind = OP_SEND, .comm = comm, .n = 1, .data = {b[j].p},
					     .size = {sz[j]}, .tag = {40 + j}, .mh = {b[j].mh},
					     .label = j};
		if (run_ops(ft, op, n))
			goto out;
	}
	rc = 0;
out:
	for (int j = 0; j < n; j++)
		fbuf_free(ft, &b[j], 1);
	return rc;
}

/* Transfers on the ranks, iflush after each receive. */
static int flush_inrank(struct ft *ft, const void *arg)
{
	const char *mode = getenv("FABNET_GDR_FLUSH");
	int expect_req = flush_expect_request(mode);
	struct pair p;
	int rc = -1;

	(void)arg;
	if (pairs_open(ft, &p, 1, 1))
		return -1;
	for (size_t k = 0; k < FLUSH_ROUNDS; k++)
		if (flush_round(ft, p.comm, k, expect_req))
			goto out;
	if (ft->rank == 0)
		printf("# flush: FABNET_GDR_FLUSH=%s here: iflush on host memory returned %s\n",
		       mode ? mode : "(unset)", expect_req ? "real requests" : "NULL requests");
	rc = 0;
out:
	pairs_close(ft, &p, 1);
	return rc;
}

static int flush_in_helper(struct ft *ft, const void *arg)
{
	const char *mode = arg;
	char env[64];
	const char *extra[2] = {env, NULL};

	if (ft->rank != 0)
		return 0;
	snprintf(env, sizeof(env), "FABNET_GDR_FLUSH=%s", mode);
	return helper_run(ft, "flush", mode, extra, 120000);
}

int scen_flush(struct ft *ft)
{
	sub(ft, "iflush in this process (FABNET_GDR_FLUSH from the environment)", flush_inrank,
	    NULL);
	sub(ft, "FABNET_GDR_FLUSH=always (fresh process)", flush_in_helper, "always");
	sub(ft, "FABNET_GDR_FLUSH=0 (fresh process)", flush_in_helper, "0");
	return 0;
}

/* iflush while NCCL_NET_MAX_REQUESTS receives are posted on the comm: the
 * flush must still get a request (a NULL one reads as "nothing to flush"),
 * then the receives complete with their data. */
static int flush_with_requests_taken(struct ft *ft, void *s, void *r)
{
	enum { N = NCCL_NET_MAX_REQUESTS, SZ = 3000 };
	struct fbuf rb[N], sb[N];
	void *rreq[N], *sreq[N], *freq = NULL;
	int rc = -1, fsz[1] = {4}, got[1];
	ncclResult_t res;

	memset(rb, 0, sizeof(rb));
	memset(sb, 0, sizeof(sb));
	for (int i = 0; i < N; i++) {
		size_t sz = SZ;
		int tag = 70;
		void *data;
		rreq[i] = sreq[i] = NULL;
		if (h_buf(ft, r, SZ + CANARY_PAD, &rb[i]) || h_buf(ft, s, SZ, &sb[i]))
			goto out;
		canary_fill(rb[i].p, 0, rb[i].cap);
		pat_fill(sb[i].p, SZ, pat_key(ft->seed, SZ, 7000u + (uint64_t)i));
		data = rb[i].p;
		if (h_irecv(ft, r, 1, &data, &sz, &tag, &rb[i].mh, &rreq[i], ft->op_timeout_ms))
			goto out;
	}
	g_step = "iflush";
	CALL(ft, pl_iflush(ft->net, r, 1, (void **)&rb[0].p, fsz, &rb[0].mh, &freq),
	     "iflush with every receive request of the comm in use");
	if (!freq) {
		fail(ft, "iflush with %d receives posted returned a NULL request: NCCL reads that "
		     "as 'no flush needed' and the flush is skipped", N);
		goto out;
	}
	if (h_wait(ft, freq, got, ft->op_timeout_ms, &res))
		goto out;
	if (res != ncclSuccess) {
		fail(ft, "the flush with every request in use ended with %d", (int)res);
		goto out;
	}
	for (int i = 0; i < N; i++) {
		int64_t deadline = now_ms() + ft->op_timeout_ms;
		while (!sreq[i]) {
			g_step = "isend";
			CALL(ft, pl_isend(ft->net, s, sb[i].p, SZ, 70, sb[i].mh, &sreq[i]), "isend");
			if (now_ms() > deadline) {
				fail(ft, "isend %d kept returning NULL", i);
				goto out;
			}
		}
	}
	for (int i = 0; i < N; i++) {
		int sz[1];
		if (h_wait(ft, sreq[i], sz, ft->op_timeout_ms, &res) || res != ncclSuccess ||
		    h_wait(ft, rreq[i], got, ft->op_timeout_ms, &res) || res != ncclSuccess) {
			fail(ft, "transfer %d after the flush failed (%d)", i, (int)res);
			goto out;
		}
		if (check_recv(ft, "after a flush with every request in use", &rb[i], SZ,
			       7000u + (uint64_t)i, got[0]))
			goto out;
	}
	rc = 0;
out:
	for (int i = 0; i < N; i++) {
		fbuf_free(ft, &rb[i], 1);
		fbuf_free(ft, &sb[i], 1);
	}
	return rc;
}

/* --helper flush --part MODE: FABNET_GDR_FLUSH=MODE is in our environment. */
int helper_flush(struct ft *ft, struct ctl *up, const char *part)
{
	static const size_t one[] = {1, 4096, MiB, 8 * MiB + 5};
	static const size_t grp[] = {3000, 0, 200000};
	const char *mode = getenv("FABNET_GDR_FLUSH");
	int expect_req = flush_expect_request(mode);
	uint8_t handle[NCCL_NET_HANDLE_MAXSIZE];
	void *l = NULL, *s = NULL, *r = NULL;
	int rc = -1, flushes = 0;

	(void)part; /* the mode is in the environment */
	if (h_init(ft) || h_loopback(ft, &l, &s, &r, handle))
		goto out;
	for (size_t k = 0; k <= sizeof(one) / sizeof(one[0]); k++) {
		int n = k < sizeof(one) / sizeof(one[0]) ? 1 : 3, got[MAX_GROUP];
		const size_t *sz = n == 1 ? &one[k] : grp;
		struct fbuf rb[MAX_GROUP];
		void *data[MAX_GROUP], *mh[MAX_GROUP];
		char what[64];
		int bad;

		memset(rb, 0, sizeof(rb));
		if (n == 1)
			snprintf(what, sizeof(what), "%zu bytes", sz[0]);
		else
			snprintf(what, sizeof(what), "a group of %d", n);
		bad = h_transfer(ft, s, r, n, sz, 5000u + k * 8, rb, got);
		for (int j = 0; j < n; j++) {
			data[j] = rb[j].p;
			mh[j] = rb[j].mh;
		}
		if (!bad)
			bad = flush_check(ft, r, n, data, got, mh, expect_req, what);
		for (int j = 0; !bad && j < n; j++)
			bad = check_recv(ft, "after iflush", &rb[j], sz[j], 5000u + k * 8 + (size_t)j,
					 got[j]);
		if (!bad && k == 0)
			bad = flush_bogus(ft, r, rb[0].p, rb[0].mh);
		for (int j = 0; j < n; j++)
			fbuf_free(ft, &rb[j], 1);
		if (bad)
			goto out;
		flushes++;
	}
	if (expect_req && flush_with_requests_taken(ft, s, r))
		goto out;
	hnote(up, "# flush: FABNET_GDR_FLUSH=%s (fresh process, one comm pair to itself): %d "
	      "receives, iflush returned %s", mode ? mode : "(unset)", flushes,
	      expect_req ? "real requests that test() completed" : "NULL requests");
	rc = 0;
out:
	g_step = "close";
	if (s && pl_close_send(ft->net, s) != ncclSuccess && !rc)
		rc = fail(ft, "closeSend failed");
	if (r && pl_close_recv(ft->net, r) != ncclSuccess && !rc)
		rc = fail(ft, "closeRecv failed");
	if (l && pl_close_listen(ft->net, l) != ncclSuccess && !rc)
		rc = fail(ft, "closeListen failed");
	return rc;
}
