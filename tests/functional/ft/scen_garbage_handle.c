/*
 * garbage-handle: connect() with a handle that no listener produced (random
 * bytes, zeros, a valid handle with a byte flipped) must fail, and promptly.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ft.h"

/* connect() with a handle that no listener produced must fail, and promptly. */
static int garbage_connect(struct ft *ft, uint8_t *h, const char *what)
{
	int64_t deadline = now_ms() + 10000;
	void *comm = NULL;

	for (;;) {
		ncclResult_t r;
		g_step = what;
		r = pl_connect(ft->net, ft->dev, h, &comm);
		if (r != ncclSuccess) {
			vnote("%s: connect returned %d (%s)", what, (int)r, pl_result_str(r));
			return 0;
		}
		if (comm) {
			g_step = "closeSend";
			pl_close_send(ft->net, comm);
			return fail(ft, "connect with %s succeeded and returned a comm", what);
		}
		if (now_ms() > deadline)
			return fail(ft, "connect with %s still returns ncclSuccess with a NULL comm "
				    "after 10 s instead of an error", what);
		wd_kick();
		usleep(1000);
	}
}

int scen_garbage_handle(struct ft *ft)
{
	uint8_t h[NCCL_NET_HANDLE_MAXSIZE], valid[NCCL_NET_HANDLE_MAXSIZE];
	static const int flips[] = {0, 9, 13};
	void *lcomm = NULL;
	int rc = 0;

	if (ft->rank == 0)
		return 0; /* sender side only */
	for (size_t i = 0; i < sizeof(h); i += 8) {
		uint64_t w = mix64(ft->seed ^ 0xbad ^ i);
		memcpy(h + i, &w, 8);
	}
	if (garbage_connect(ft, h, "a handle of random bytes"))
		return -1;
	memset(h, 0, sizeof(h));
	if (garbage_connect(ft, h, "a handle of zeros"))
		return -1;
	/* A valid handle from a listen comm of our own, then one byte flipped. */
	g_step = "listen";
	CALL(ft, pl_listen(ft->net, ft->dev, valid, &lcomm), "listen");
	if (!lcomm)
		return fail(ft, "listen returned a NULL listen comm");
	for (size_t k = 0; k < sizeof(flips) / sizeof(flips[0]) && !rc; k++) {
		char what[64];
		memcpy(h, valid, sizeof(h));
		h[flips[k]] ^= 0x5a;
		snprintf(what, sizeof(what), "a valid handle with byte %d flipped", flips[k]);
		rc = garbage_connect(ft, h, what);
	}
	g_step = "closeListen";
	if (pl_close_listen(ft->net, lcomm) != ncclSuccess && !rc)
		rc = fail(ft, "closeListen failed");
	return rc;
}
