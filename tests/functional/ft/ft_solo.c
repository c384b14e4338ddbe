/*
 * Plugin calls in one process without a control channel (the helper
 * processes): init, posting until a request comes back, waiting, a process
 * connected to itself.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ft.h"

int h_init(struct ft *ft)
{
	ncclResult_t r;
	int ndev = 0;

	g_step = "dlopen";
	if (pl_open(&ft->base, ft->plugin, ft->abi))
		return fail(ft, "%s", ft->base.err);
	g_step = "init";
	CALL(ft, pl_init(&ft->base), "init");
	CALL(ft, pl_devices(&ft->base, &ndev), "devices");
	if (ndev <= ft->dev)
		return fail(ft, "device %d requested, the plugin reports %d", ft->dev, ndev);
	r = pl_get_properties(&ft->base, ft->dev, &ft->props);
	if (r != ncclSuccess)
		return fail(ft, "getProperties returned %d (%s)", (int)r, pl_result_str(r));
	return 0;
}

/* A buffer of its own pages, registered. */
int h_buf(struct ft *ft, void *comm, size_t cap, struct fbuf *b)
{
	return fbuf_alloc(ft, comm, cap, b);
}

/* Posts until the plugin hands out a request (NULL means "retry"). */
int h_irecv(struct ft *ft, void *comm, int n, void **data, const size_t *sizes,
	    const int *tags, void **mh, void **req, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;

	*req = NULL;
	for (;;) {
		g_step = "irecv";
		CALL(ft, pl_irecv(ft->net, comm, n, data, sizes, tags, mh, req), "irecv");
		if (*req)
			return 0;
		if (now_ms() > deadline)
			return fail(ft, "irecv kept returning a NULL request for %d ms", timeout_ms);
		usleep(100);
	}
}

/* Tests until done; returns the result test() gave (ncclSuccess or an error),
 * or -1 through fail() on a hang. */
int h_wait(struct ft *ft, void *req, int *sizes, int timeout_ms, ncclResult_t *res)
{
	int64_t deadline = now_ms() + timeout_ms;
	int done = 0;

	for (;;) {
		g_step = "test";
		*res = pl_test(ft->net, req, &done, sizes);
		if (*res != ncclSuccess || done)
			return 0;
		if (now_ms() > deadline)
			return fail(ft, "test() did not complete the request within %d ms", timeout_ms);
		sched_yield();
	}
}

/* One process, connected to itself: listen, then connect and accept in turn. */
int h_loopback(struct ft *ft, void **lcomm, void **scomm, void **rcomm, uint8_t *handle)
{
	int64_t deadline = now_ms() + ft->op_timeout_ms;

	*lcomm = *scomm = *rcomm = NULL;
	g_step = "listen";
	CALL(ft, pl_listen(ft->net, ft->dev, handle, lcomm), "listen");
	if (!*lcomm)
		return fail(ft, "listen returned a NULL listen comm");
	while (!*scomm || !*rcomm) {
		if (!*scomm) {
			g_step = "connect";
			CALL(ft, pl_connect(ft->net, ft->dev, handle, scomm), "connect (to ourselves)");
		}
		if (!*rcomm) {
			g_step = "accept";
			CALL(ft, pl_accept(ft->net, *lcomm, rcomm), "accept (from ourselves)");
		}
		if (now_ms() > deadline)
			return fail(ft, "connecting a process to itself: %s still NULL after %d s",
				    !*scomm ? "connect" : "accept", ft->op_timeout_ms / 1000);
		sched_yield();
	}
	return 0;
}

/* Sends n buffers to a group receive of n in the same process; verifies. */
int h_transfer(struct ft *ft, void *scomm, void *rcomm, int n, const size_t *sz,
	       uint64_t iter0, struct fbuf *rb, int *got)
{
	struct fbuf sb[MAX_GROUP];
	void *rreq = NULL, *sreq[MAX_GROUP], *rdata[MAX_GROUP], *rmh[MAX_GROUP];
	size_t rsz[MAX_GROUP] = {0};
	int tags[MAX_GROUP] = {0}, sdone[MAX_GROUP], rdone = 0, rc = -1;
	int64_t deadline;

	memset(sb, 0, sizeof(sb));
	for (int j = 0; j < n; j++) {
		sreq[j] = NULL;
		sdone[j] = 0;
		if (h_buf(ft, rcomm, sz[j] + CANARY_PAD, &rb[j]) || h_buf(ft, scomm, sz[j], &sb[j]))
			goto out;
		canary_fill(rb[j].p, 0, rb[j].cap);
		pat_fill(sb[j].p, sz[j], pat_key(ft->seed, sz[j], iter0 + (uint64_t)j));
		rdata[j] = rb[j].p;
		rmh[j] = rb[j].mh;
		rsz[j] = sz[j] + (j % 2 ? 100 : 0);
		tags[j] = 50 + j;
	}
	if (h_irecv(ft, rcomm, n, rdata, rsz, tags, rmh, &rreq, ft->op_timeout_ms))
		goto out;
	deadline = now_ms() + ft->op_timeout_ms;
	for (;;) {
		int left = !rdone, sizes[MAX_GROUP];
		for (int j = n - 1; j >= 0; j--) { /* sends in reverse order */
			int done = 0;
			if (sdone[j])
				continue;
			left++;
			if (!sreq[j]) {
				g_step = "isend";
				CALL(ft, pl_isend(ft->net, scomm, sb[j].p, sz[j], tags[j], sb[j].mh,
						  &sreq[j]), "isend");
				if (!sreq[j])
					continue;
			}
			g_step = "test";
			CALL(ft, pl_test(ft->net, sreq[j], &done, sizes), "test (isend)");
			if (done) {
				if (sizes[0] != (int)sz[j]) {
					fail(ft, "test() on an isend reported %d bytes, not %zu", sizes[0],
					     sz[j]);
					goto out;
				}
				sdone[j] = 1;
			}
		}
		if (!rdone) {
			int done = 0;
			g_step = "test";
			CALL(ft, pl_test(ft->net, rreq, &done, got), "test (irecv)");
			rdone = done;
		}
		if (!left)
			break;
		if (now_ms() > deadline) {
			fail(ft, "a transfer within one process did not complete in %d s",
			     ft->op_timeout_ms / 1000);
			goto out;
		}
		sched_yield();
	}
	for (int j = 0; j < n; j++) {
		char what[64];
		snprintf(what, sizeof(what), "%zu bytes (buffer %d of %d)", sz[j], j, n);
		if (check_recv(ft, what, &rb[j], sz[j], iter0 + (uint64_t)j, got[j]))
			goto out;
	}
	rc = 0;
out:
	for (int j = 0; j < n; j++)
		fbuf_free(ft, &sb[j], 1);
	return rc;
}
