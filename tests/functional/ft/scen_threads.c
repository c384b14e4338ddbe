/*
 * threads: NCCL drives comms from several proxy threads. TH_THREADS threads
 * per rank, each with its own TH_COMMS comm pairs (half of them it receives
 * on, half it sends on), connect/accept, register, then isend/irecv/test
 * interleaved across its comms with every byte verified, then close, all
 * concurrently on one device. The threads share nothing but an abort flag and a progress
 * counter (atomics), so a TSan build reports only the plugin's races.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ft.h"

#define TH_THREADS 4
#define TH_COMMS 4
#define TH_MSGS (1000 / TH_COMMS) /* per comm: 1000 per thread */
#define TH_WIN 4                  /* outstanding per comm */
#define TH_MAX (512u * 1024)
#define TH_PAD 256

struct th_slot {
	uint8_t *p;
	void *mh;
	void *req;
	int busy;
	int msg;
};

struct th_comm {
	int pair;
	int recv;              /* this rank receives on it */
	void *lcomm, *comm;
	uint8_t handle[NCCL_NET_HANDLE_MAXSIZE];
	int next, ndone;
	int pend;              /* slot whose post returned NULL, or -1 */
	struct th_slot s[TH_WIN];
};

struct th_ctx {
	struct ft *ft;
	int idx;
	int phase;             /* 0: connect + transfer, 1: deregister + close */
	struct th_comm c[TH_COMMS];
	char why[REASON_MAX];
	pthread_t tid;
	int started;
};

static int th_abort;
static unsigned long th_progress;
static int th_finished;

static int th_fail(struct th_ctx *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int th_fail(struct th_ctx *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!t->why[0]) {
		n = snprintf(t->why, sizeof(t->why), "thread %d: ", t->idx);
		va_start(ap, fmt);
		vsnprintf(t->why + n, sizeof(t->why) - (size_t)n, fmt, ap);
		va_end(ap);
	}
	__atomic_store_n(&th_abort, 1, __ATOMIC_SEQ_CST);
	return -1;
}

static size_t th_size(uint64_t seed, int pair, int i)
{
	uint64_t r = mix64(seed ^ 0x7417ull ^ ((uint64_t)pair << 40) ^ (uint64_t)i);
	unsigned pct = (unsigned)(r % 100);

	r >>= 8;
	if (pct < 70)
		return (size_t)(r % 8193);                 /* eager */
	if (pct < 97)
		return 8193 + (size_t)(r % (128 * 1024));  /* rendezvous */
	return 128 * 1024 + (size_t)(r % (TH_MAX - 128 * 1024 + 1));
}

static uint64_t th_key(uint64_t seed, int pair, int i, size_t size)
{
	return pat_key(seed ^ 0x7417ull, size, ((uint64_t)pair << 32) | (uint64_t)i);
}

static int th_tag(int pair, int i)
{
	return (pair * 1000 + i) & 0xffff;
}

/* Connect and accept, interleaved over the thread's comms; then the listen
 * comms are closed and TH_WIN buffers registered per comm. */
static int th_connect(struct th_ctx *t)
{
	struct ft *ft = t->ft;
	int64_t deadline = now_ms() + ft->op_timeout_ms;
	ncclResult_t r;

	for (;;) {
		int left = 0;
		for (int j = 0; j < TH_COMMS; j++) {
			struct th_comm *c = &t->c[j];
			if (c->comm)
				continue;
			if (c->recv)
				r = pl_accept(ft->net, c->lcomm, &c->comm);
			else
				r = pl_connect(ft->net, ft->dev, c->handle, &c->comm);
			if (r != ncclSuccess)
				return th_fail(t, "%s (pair %d) returned %d (%s)",
					       c->recv ? "accept" : "connect", c->pair, (int)r,
					       pl_result_str(r));
			if (!c->comm)
				left++;
		}
		if (!left)
			break;
		if (__atomic_load_n(&th_abort, __ATOMIC_SEQ_CST))
			return -1;
		if (now_ms() > deadline)
			return th_fail(t, "connect/accept did not finish within %d s",
				       ft->op_timeout_ms / 1000);
		sched_yield();
	}
	for (int j = 0; j < TH_COMMS; j++) {
		struct th_comm *c = &t->c[j];
		if (c->lcomm) {
			r = pl_close_listen(ft->net, c->lcomm);
			c->lcomm = NULL;
			if (r != ncclSuccess)
				return th_fail(t, "closeListen returned %d (%s)", (int)r,
					       pl_result_str(r));
		}
		for (int s = 0; s < TH_WIN; s++) {
			void *p = mmap(NULL, TH_MAX + TH_PAD, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (p == MAP_FAILED)
				return th_fail(t, "mmap: %s", strerror(errno));
			c->s[s].p = p;
			r = pl_reg_mr(ft->net, c->comm, p, TH_MAX + TH_PAD, NCCL_PTR_HOST, &c->s[s].mh);
			if (r != ncclSuccess)
				return th_fail(t, "regMr returned %d (%s)", (int)r, pl_result_str(r));
		}
		__atomic_fetch_add(&th_progress, 1, __ATOMIC_SEQ_CST);
	}
	return 0;
}

/* Posts the comm's next messages, in order, into free slots (a post that
 * returned NULL is retried first). Sets *progress when one was posted. */
static int th_post(struct th_ctx *t, struct th_comm *c, int *progress)
{
	struct ft *ft = t->ft;
	ncclResult_t r;

	while (c->next < TH_MSGS) {
		int s = c->pend, i = c->next;
		size_t size = th_size(ft->seed, c->pair, i);
		int tag = th_tag(c->pair, i);
		struct th_slot *sl;
		if (s < 0) {
			for (int k = 0; k < TH_WIN && s < 0; k++)
				if (!c->s[k].busy)
					s = k;
			if (s < 0)
				break;
			if (c->recv)
				canary_fill(c->s[s].p, size, size + TH_PAD);
			else
				pat_fill(c->s[s].p, size, th_key(ft->seed, c->pair, i, size));
		}
		sl = &c->s[s];
		sl->req = NULL;
		if (c->recv) {
			size_t cap = size + (size_t)(i % 3) * 10;
			void *data = sl->p, *mh = sl->mh;
			r = pl_irecv(ft->net, c->comm, 1, &data, &cap, &tag, &mh, &sl->req);
		} else {
			r = pl_isend(ft->net, c->comm, sl->p, size, tag, sl->mh, &sl->req);
		}
		if (r != ncclSuccess)
			return th_fail(t, "%s #%d (pair %d, %zu bytes) returned %d (%s)",
				       c->recv ? "irecv" : "isend", i, c->pair, size, (int)r,
				       pl_result_str(r));
		if (!sl->req) {
			c->pend = s;
			break;
		}
		c->pend = -1;
		sl->busy = 1;
		sl->msg = i;
		c->next++;
		*progress = 1;
	}
	return 0;
}

/* Tests the comm's busy slots; a completed receive is verified. Adds the
 * completions to *done and sets *progress. */
static int th_test(struct th_ctx *t, struct th_comm *c, int *done, int *progress)
{
	struct ft *ft = t->ft;
	ncclResult_t r;

	for (int s = 0; s < TH_WIN; s++) {
		struct th_slot *sl = &c->s[s];
		int d = 0, got = -12345;
		size_t size;
		char why[400];
		if (!sl->busy)
			continue;
		r = pl_test(ft->net, sl->req, &d, &got);
		if (r != ncclSuccess)
			return th_fail(t, "test() on %s #%d (pair %d) returned %d (%s)",
				       c->recv ? "irecv" : "isend", sl->msg, c->pair, (int)r,
				       pl_result_str(r));
		if (!d)
			continue;
		size = th_size(ft->seed, c->pair, sl->msg);
		if (got != (int)size)
			return th_fail(t, "test() on %s #%d (pair %d) reported %d bytes, "
				       "%zu were sent", c->recv ? "irecv" : "isend",
				       sl->msg, c->pair, got, size);
		if (c->recv &&
		    (pat_check(sl->p, size, th_key(ft->seed, c->pair, sl->msg, size), why,
			       sizeof(why)) ||
		     canary_check(sl->p, size, size + TH_PAD, why, sizeof(why))))
			return th_fail(t, "message #%d on pair %d (%zu bytes): %s", sl->msg,
				       c->pair, size, why);
		sl->busy = 0;
		sl->req = NULL;
		c->ndone++;
		(*done)++;
		*progress = 1;
	}
	return 0;
}

static int th_transfer(struct th_ctx *t)
{
	struct ft *ft = t->ft;
	int64_t deadline;
	int total = TH_COMMS * TH_MSGS, done = 0;

	if (th_connect(t))
		return -1;
	deadline = now_ms() + ft->op_timeout_ms;
	while (done < total) {
		int progress = 0;
		for (int j = 0; j < TH_COMMS; j++)
			if (th_post(t, &t->c[j], &progress) || th_test(t, &t->c[j], &done, &progress))
				return -1;
		if (progress) {
			deadline = now_ms() + ft->op_timeout_ms;
			__atomic_fetch_add(&th_progress, 1, __ATOMIC_SEQ_CST);
			continue;
		}
		if (__atomic_load_n(&th_abort, __ATOMIC_SEQ_CST))
			return -1;
		if (now_ms() > deadline) {
			int j0 = 0;
			for (int j = 0; j < TH_COMMS; j++)
				if (t->c[j].ndone < TH_MSGS) {
					j0 = j;
					break;
				}
			return th_fail(t, "no progress for %d s: %d of %d messages done; pair %d (%s): "
				       "%d posted, %d done", ft->op_timeout_ms / 1000, done, total,
				       t->c[j0].pair, t->c[j0].recv ? "receiving" : "sending",
				       t->c[j0].next, t->c[j0].ndone);
		}
		sched_yield();
	}
	return 0;
}

static int th_close(struct th_ctx *t)
{
	struct ft *ft = t->ft;
	int rc = 0;

	for (int j = 0; j < TH_COMMS; j++) {
		struct th_comm *c = &t->c[j];
		ncclResult_t r;
		for (int s = 0; s < TH_WIN; s++) {
			if (c->s[s].mh) {
				r = pl_dereg_mr(ft->net, c->comm, c->s[s].mh);
				if (r != ncclSuccess && !rc)
					rc = th_fail(t, "deregMr returned %d (%s)", (int)r, pl_result_str(r));
			}
			if (c->s[s].p)
				munmap(c->s[s].p, TH_MAX + TH_PAD);
			memset(&c->s[s], 0, sizeof(c->s[s]));
		}
		if (c->comm) {
			r = c->recv ? pl_close_recv(ft->net, c->comm) : pl_close_send(ft->net, c->comm);
			if (r != ncclSuccess && !rc)
				rc = th_fail(t, "%s returned %d (%s)", c->recv ? "closeRecv" : "closeSend",
					     (int)r, pl_result_str(r));
			c->comm = NULL;
		}
		if (c->lcomm) {
			pl_close_listen(ft->net, c->lcomm);
			c->lcomm = NULL;
		}
	}
	return rc;
}

static void *th_main(void *arg)
{
	struct th_ctx *t = arg;

	if (t->phase == 0)
		th_transfer(t);
	else
		th_close(t);
	__atomic_fetch_add(&th_finished, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

/* Runs every thread through one phase; the main thread keeps the watchdog
 * and the control channel. Returns -1 if a thread failed. */
static int th_phase(struct ft *ft, struct th_ctx *t, int phase)
{
	unsigned long seen = (unsigned long)-1;
	int64_t last = now_ms();
	int rc = 0;

	__atomic_store_n(&th_finished, 0, __ATOMIC_SEQ_CST);
	for (int i = 0; i < TH_THREADS; i++) {
		t[i].phase = phase;
		if (pthread_create(&t[i].tid, NULL, th_main, &t[i])) {
			__atomic_store_n(&th_abort, 1, __ATOMIC_SEQ_CST);
			rc = fail(ft, "pthread_create failed");
			break;
		}
		t[i].started = 1;
	}
	g_step = phase ? "threads closing" : "threads transferring";
	for (;;) {
		int started = 0;
		unsigned long pr = __atomic_load_n(&th_progress, __ATOMIC_SEQ_CST);
		for (int i = 0; i < TH_THREADS; i++)
			started += t[i].started;
		if (__atomic_load_n(&th_finished, __ATOMIC_SEQ_CST) >= started)
			break;
		if (pr != seen) {
			seen = pr;
			last = now_ms();
			wd_kick();
		}
		if (!__atomic_load_n(&th_abort, __ATOMIC_SEQ_CST) && phase == 0 && peer_failed(ft))
			__atomic_store_n(&th_abort, 1, __ATOMIC_SEQ_CST);
		if (now_ms() - last > ft->op_timeout_ms + 10000)
			__atomic_store_n(&th_abort, 1, __ATOMIC_SEQ_CST); /* the threads time out first */
		usleep(20000);
	}
	for (int i = 0; i < TH_THREADS; i++) {
		if (!t[i].started)
			continue;
		pthread_join(t[i].tid, NULL);
		t[i].started = 0;
		if (t[i].why[0] && !ft->why[0])
			rc = fail(ft, "%s", t[i].why);
		else if (t[i].why[0])
			rc = -1;
	}
	return rc;
}

int scen_threads(struct ft *ft)
{
	struct th_ctx *t = calloc(TH_THREADS, sizeof(*t));
	enum { NPAIRS = TH_THREADS * TH_COMMS };
	uint8_t *mine = calloc(NPAIRS, NCCL_NET_HANDLE_MAXSIZE);
	uint8_t *theirs = calloc(NPAIRS, NCCL_NET_HANDLE_MAXSIZE);
	int rc = -1, msgs = 0;
	size_t bytes = 0;
	int64_t t0;

	if (!t || !mine || !theirs) {
		fail(ft, "out of memory");
		goto out;
	}
	__atomic_store_n(&th_abort, 0, __ATOMIC_SEQ_CST);
	/* pair k belongs to thread k / TH_COMMS; rank 0 receives on even j */
	for (int i = 0; i < TH_THREADS; i++) {
		t[i].ft = ft;
		t[i].idx = i;
		for (int j = 0; j < TH_COMMS; j++) {
			struct th_comm *c = &t[i].c[j];
			c->pair = i * TH_COMMS + j;
			c->recv = (j % 2 == 0) == (ft->rank == 0);
			c->pend = -1;
			for (int m = 0; m < TH_MSGS; m++) {
				msgs++;
				bytes += th_size(ft->seed, c->pair, m);
			}
			if (c->recv) {
				ncclResult_t r;
				g_step = "listen";
				r = pl_listen(ft->net, ft->dev, c->handle, &c->lcomm);
				if (r != ncclSuccess || !c->lcomm) {
					fail(ft, "listen returned %d (%s)", (int)r, pl_result_str(r));
					goto out;
				}
				memcpy(mine + (size_t)c->pair * NCCL_NET_HANDLE_MAXSIZE, c->handle,
				       NCCL_NET_HANDLE_MAXSIZE);
			}
		}
	}
	if (ft_send(ft, mine, NPAIRS * NCCL_NET_HANDLE_MAXSIZE) ||
	    ft_recv(ft, theirs, NPAIRS * NCCL_NET_HANDLE_MAXSIZE))
		goto out;
	for (int i = 0; i < TH_THREADS; i++)
		for (int j = 0; j < TH_COMMS; j++) {
			struct th_comm *c = &t[i].c[j];
			if (!c->recv)
				memcpy(c->handle, theirs + (size_t)c->pair * NCCL_NET_HANDLE_MAXSIZE,
				       NCCL_NET_HANDLE_MAXSIZE);
		}
	t0 = now_ms();
	if (th_phase(ft, t, 0))
		goto close;
	if (ft->rank == 0)
		printf("# threads: %d threads x %d comms per rank, %d messages (%.1f MiB, both "
		       "directions) in %.2f s\n", TH_THREADS, TH_COMMS, msgs,
		       (double)bytes / MiB, (double)(now_ms() - t0) / 1000.0);
	/* both ranks are done transferring before anyone closes */
	if (ft_sync(ft))
		goto close;
	rc = 0;
close:
	__atomic_store_n(&th_abort, 0, __ATOMIC_SEQ_CST);
	if (th_phase(ft, t, 1))
		rc = -1;
out:
	if (t)
		for (int i = 0; i < TH_THREADS; i++)
			for (int j = 0; j < TH_COMMS; j++)
				if (t[i].c[j].lcomm)
					pl_close_listen(ft->net, t[i].c[j].lcomm);
	free(t);
	free(mine);
	free(theirs);
	return rc;
}
