/* Operations, comm pairs and batches of verified messages between the ranks. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ft.h"

int op_post(struct ft *ft, struct xop *op)
{
	ncclResult_t r;

	if (op->kind == OP_SEND) {
		g_step = "isend";
		r = pl_isend(ft->net, op->comm, op->data[0], op->size[0], op->tag[0], op->mh[0],
			     &op->req);
		if (r != ncclSuccess)
			return fail(ft, "isend #%d (%zu bytes, tag %d) returned %d (%s)", op->label,
				    op->size[0], op->tag[0], (int)r, pl_result_str(r));
	} else {
		g_step = "irecv";
		r = pl_irecv(ft->net, op->comm, op->n, op->data, op->size, op->tag, op->mh, &op->req);
		if (r != ncclSuccess)
			return fail(ft, "irecv #%d (n=%d, first size %zu) returned %d (%s)", op->label,
				    op->n, op->size[0], (int)r, pl_result_str(r));
	}
	if (op->req)
		op->posted = 1;
	return 0;
}

int op_test(struct ft *ft, struct xop *op)
{
	int done = 0, sizes[MAX_GROUP];
	ncclResult_t r;

	for (int i = 0; i < MAX_GROUP; i++)
		sizes[i] = -12345;
	g_step = "test";
	r = pl_test(ft->net, op->req, &done, sizes);
	if (r != ncclSuccess)
		return fail(ft, "test() on %s #%d returned %d (%s)",
			    op->kind == OP_SEND ? "isend" : "irecv", op->label, (int)r,
			    pl_result_str(r));
	if (done) {
		op->done = 1;
		op->req = NULL;
		for (int i = 0; i < op->n; i++)
			op->got[i] = sizes[i];
	}
	return 0;
}

/* Posts ops in list order per comm (an op waits until the previous one on its
 * comm is posted), retrying posts that return a NULL request, and tests every
 * posted request until all are complete. Fails after op_timeout_ms without
 * any progress. */
int run_ops(struct ft *ft, struct xop *ops, int nops)
{
	int left = nops;
	int64_t deadline = now_ms() + ft->op_timeout_ms;

	for (int i = 0; i < nops; i++) {
		ops[i].prev = -1;
		for (int j = i - 1; j >= 0; j--)
			if (ops[j].comm == ops[i].comm) {
				ops[i].prev = j;
				break;
			}
		if (ops[i].kind == OP_SEND)
			ops[i].n = 1;
	}
	while (left) {
		int progress = 0;

		for (int i = 0; i < nops; i++) {
			struct xop *op = &ops[i];
			if (op->posted || (op->prev >= 0 && !ops[op->prev].posted))
				continue;
			if (op_post(ft, op))
				return -1;
			progress |= op->posted;
		}
		for (int i = 0; i < nops; i++) {
			struct xop *op = &ops[i];
			if (!op->posted || op->done)
				continue;
			if (op_test(ft, op))
				return -1;
			if (op->done) {
				left--;
				progress = 1;
			}
		}
		if (progress) {
			deadline = now_ms() + ft->op_timeout_ms;
			wd_kick();
			continue;
		}
		if (peer_failed(ft))
			return -1;
		if (now_ms() > deadline) {
			int unposted = 0, pending = 0, first = -1;
			for (int i = 0; i < nops; i++) {
				if (!ops[i].posted)
					unposted++;
				else if (!ops[i].done)
					pending++;
				if (first < 0 && !ops[i].done)
					first = i;
			}
			return fail(ft, "no progress for %d s: %d of %d %s still to post (request "
				    "NULL), %d posted but never complete; first stuck: #%d (%s, "
				    "%zu bytes)", ft->op_timeout_ms / 1000, unposted, nops,
				    ops[0].kind == OP_SEND ? "isends" : "irecvs", pending,
				    ops[first].label, ops[first].posted ? "posted" : "not posted",
				    ops[first].size[0]);
		}
		sched_yield();
	}
	return 0;
}

/* ---- connection set-up ---------------------------------------------------------- */

/* Connects/accepts until every comm is non-NULL, interleaved, as NCCL does. */
int connect_all(struct ft *ft, struct pair *p, int n, int close_listen)
{
	int64_t deadline = now_ms() + ft->op_timeout_ms;
	int left = n;
	ncclResult_t r;

	while (left) {
		int progress = 0;
		for (int i = 0; i < n; i++) {
			if (p[i].comm)
				continue;
			if (ft->rank == 0) {
				g_step = "accept";
				r = pl_accept(ft->net, p[i].lcomm, &p[i].comm);
				if (r != ncclSuccess)
					return fail(ft, "accept (comm %d of %d) returned %d (%s)", i, n,
						    (int)r, pl_result_str(r));
			} else {
				g_step = "connect";
				r = pl_connect(ft->net, ft->dev, p[i].handle, &p[i].comm);
				if (r != ncclSuccess)
					return fail(ft, "connect (comm %d of %d) returned %d (%s)", i,
						    n, (int)r, pl_result_str(r));
			}
			if (p[i].comm) {
				left--;
				progress = 1;
			}
		}
		if (progress) {
			deadline = now_ms() + ft->op_timeout_ms;
			wd_kick();
			continue;
		}
		if (peer_failed(ft))
			return -1;
		if (now_ms() > deadline)
			return fail(ft, "%s still NULL after %d s for %d of %d comms",
				    ft->rank == 0 ? "accept" : "connect", ft->op_timeout_ms / 1000,
				    left, n);
		sched_yield();
	}
	if (close_listen && ft->rank == 0)
		for (int i = 0; i < n; i++) {
			g_step = "closeListen";
			CALL(ft, pl_close_listen(ft->net, p[i].lcomm), "closeListen");
			p[i].lcomm = NULL;
		}
	return 0;
}

/* n listens on rank 0, handles to rank 1, connect/accept. */
int pairs_open(struct ft *ft, struct pair *p, int n, int close_listen)
{
	memset(p, 0, sizeof(*p) * (size_t)n);
	if (ft->rank == 0) {
		uint8_t *all = calloc((size_t)n, NCCL_NET_HANDLE_MAXSIZE);
		if (!all)
			return fail(ft, "out of memory");
		for (int i = 0; i < n; i++) {
			ncclResult_t r;
			g_step = "listen";
			r = pl_listen(ft->net, ft->dev, p[i].handle, &p[i].lcomm);
			if (r != ncclSuccess || !p[i].lcomm) {
				free(all);
				return fail(ft, "listen (comm %d of %d) returned %d (%s)%s", i, n,
					    (int)r, pl_result_str(r),
					    r == ncclSuccess ? " with a NULL listen comm" : "");
			}
			memcpy(all + (size_t)i * NCCL_NET_HANDLE_MAXSIZE, p[i].handle,
			       NCCL_NET_HANDLE_MAXSIZE);
		}
		if (ft_send(ft, all, (uint32_t)n * NCCL_NET_HANDLE_MAXSIZE)) {
			free(all);
			return -1;
		}
		free(all);
	} else {
		uint8_t *all = calloc((size_t)n, NCCL_NET_HANDLE_MAXSIZE);
		if (!all)
			return fail(ft, "out of memory");
		if (ft_recv(ft, all, (uint32_t)n * NCCL_NET_HANDLE_MAXSIZE)) {
			free(all);
			return -1;
		}
		for (int i = 0; i < n; i++)
			memcpy(p[i].handle, all + (size_t)i * NCCL_NET_HANDLE_MAXSIZE,
			       NCCL_NET_HANDLE_MAXSIZE);
		free(all);
	}
	return connect_all(ft, p, n, close_listen);
}

int close_comm(struct ft *ft, void *comm)
{
	if (!comm)
		return 0;
	if (ft->rank == 0) {
		g_step = "closeRecv";
		CALL(ft, pl_close_recv(ft->net, comm), "closeRecv");
	} else {
		g_step = "closeSend";
		CALL(ft, pl_close_send(ft->net, comm), "closeSend");
	}
	return 0;
}

int pairs_close(struct ft *ft, struct pair *p, int n)
{
	int rc = 0;

	for (int i = 0; i < n; i++) {
		rc |= close_comm(ft, p[i].comm);
		p[i].comm = NULL;
		if (p[i].lcomm) {
			ncclResult_t r;
			g_step = "closeListen";
			r = pl_close_listen(ft->net, p[i].lcomm);
			if (r != ncclSuccess)
				rc = fail(ft, "closeListen returned %d (%s)", (int)r, pl_result_str(r));
			p[i].lcomm = NULL;
		}
	}
	return rc ? -1 : 0;
}

/* ---- messages: one description shared by both ranks --------------------------- */
/* Rank-side state of a batch of messages, and the plan it follows. */
struct batch {
	struct fbuf *bufs;
	struct xop *ops;
	int nbufs, nops;
	const struct msg *m;
	int nmsg;
	const int *group_start; /* rank 0: message indices starting each irecv */
	int ngroups;
	const int *send_order;  /* rank 1: the order of the isends (NULL: 0..nmsg-1) */
};

static void batch_free(struct ft *ft, struct batch *b)
{
	for (int i = 0; i < b->nbufs; i++)
		fbuf_free(ft, &b->bufs[i], 1);
	free(b->bufs);
	free(b->ops);
	memset(b, 0, sizeof(*b));
}

/* Checks one received buffer: reported size, data, canary. */
int check_recv(struct ft *ft, const char *what, const struct fbuf *buf, size_t sent,
	       uint64_t iter, int reported)
{
	char why[400];

	if (reported != (int)sent)
		return fail(ft, "%s: test() reported %d bytes received, %zu were sent", what,
			    reported, sent);
	if (pat_check(buf->p, sent, pat_key(ft->seed, sent, iter), why, sizeof(why)))
		return fail(ft, "%s (%zu bytes): %s", what, sent, why);
	if (canary_check(buf->p, sent, buf->cap, why, sizeof(why)))
		return fail(ft, "%s: %s", what, why);
	return 0;
}

/* A registered buffer per message on its comm: a canary to receive into on
 * rank 0, the message's pattern on rank 1. */
static int batch_buffers(struct ft *ft, struct pair *pairs, struct batch *b)
{
	const struct msg *m = b->m;

	for (int i = 0; i < b->nmsg; i++) {
		void *comm = pairs[m[i].comm].comm;
		if (ft->rank == 0) {
			if (fbuf_alloc(ft, comm, m[i].cap + CANARY_PAD, &b->bufs[i]))
				return -1;
			canary_fill(b->bufs[i].p, 0, b->bufs[i].cap);
		} else {
			if (fbuf_alloc(ft, comm, m[i].size, &b->bufs[i]))
				return -1;
			pat_fill(b->bufs[i].p, m[i].size, pat_key(ft->seed, m[i].size, m[i].iter));
		}
	}
	return 0;
}

/* Rank 0: one irecv per group; rank 1: one isend per message, in send_order. */
static void batch_ops(struct ft *ft, struct pair *pairs, struct batch *b)
{
	const struct msg *m = b->m;

	if (ft->rank == 0) {
		b->nops = b->ngroups;
		for (int g = 0; g < b->ngroups; g++) {
			struct xop *op = &b->ops[g];
			int first = b->group_start[g];
			int last = g + 1 < b->ngroups ? b->group_start[g + 1] : b->nmsg;
			op->kind = OP_RECV;
			op->comm = pairs[m[first].comm].comm;
			op->n = last - first;
			op->label = g;
			for (int j = 0; j < op->n; j++) {
				op->data[j] = b->bufs[first + j].p;
				op->size[j] = m[first + j].cap;
				op->tag[j] = m[first + j].tag;
				op->mh[j] = b->bufs[first + j].mh;
			}
		}
		return;
	}
	b->nops = b->nmsg;
	for (int k = 0; k < b->nmsg; k++) {
		int i = b->send_order ? b->send_order[k] : k;
		struct xop *op = &b->ops[k];
		op->kind = OP_SEND;
		op->comm = pairs[m[i].comm].comm;
		op->n = 1;
		op->label = i;
		op->data[0] = b->bufs[i].p;
		op->size[0] = m[i].size;
		op->tag[0] = m[i].tag;
		op->mh[0] = b->bufs[i].mh;
	}
}

/* Rank 0 verifies every received message; rank 1 checks the sizes test()
 * reported and that its send buffers did not change. */
static int batch_verify(struct ft *ft, struct batch *b, const char *what)
{
	const struct msg *m = b->m;

	if (ft->rank == 0) {
		for (int g = 0; g < b->ngroups; g++) {
			int first = b->group_start[g];
			for (int j = 0; j < b->ops[g].n; j++) {
				int i = first + j;
				char lbl[160];
				snprintf(lbl, sizeof(lbl), "%s: message %d (comm %d, tag %d, recv %d of %d)",
					 what, i, m[i].comm, m[i].tag, j, b->ops[g].n);
				if (check_recv(ft, lbl, &b->bufs[i], m[i].size, m[i].iter,
					       b->ops[g].got[j]))
					return -1;
			}
		}
		return 0;
	}
	for (int k = 0; k < b->nmsg; k++) {
		int i = b->send_order ? b->send_order[k] : k;
		char why[400];
		if (b->ops[k].got[0] != (int)m[i].size)
			return fail(ft, "%s: test() on the isend of message %d reported %d bytes, not "
				    "%zu", what, i, b->ops[k].got[0], m[i].size);
		if (pat_check(b->bufs[i].p, m[i].size, pat_key(ft->seed, m[i].size, m[i].iter),
			      why, sizeof(why)))
			return fail(ft, "%s: the send buffer of message %d changed: %s", what, i, why);
	}
	return 0;
}

/*
 * Transfers the messages: groups[g] lists message indices received together by
 * one irecv (n = group size) on rank 0; on rank 1 every message is one isend,
 * issued in send_order. Each message has its own buffer, registered on its comm.
 * Then rank 0 verifies everything and rank 1 checks the sizes test() reported.
 */
int transfer(struct ft *ft, struct pair *pairs, const struct msg *m, int nmsg,
	     const int *group_start, int ngroups, const int *send_order, const char *what)
{
	struct batch b;
	int rc = -1;

	memset(&b, 0, sizeof(b));
	b.bufs = calloc((size_t)nmsg, sizeof(*b.bufs));
	b.ops = calloc((size_t)nmsg, sizeof(*b.ops));
	if (!b.bufs || !b.ops) {
		fail(ft, "out of memory");
		goto out;
	}
	b.nbufs = nmsg;
	b.m = m;
	b.nmsg = nmsg;
	b.group_start = group_start;
	b.ngroups = ngroups;
	b.send_order = send_order;
	if (batch_buffers(ft, pairs, &b))
		goto out;
	batch_ops(ft, pairs, &b);
	vnote("%s: %d messages, %d ops", what, nmsg, b.nops);
	if (run_ops(ft, b.ops, b.nops) || batch_verify(ft, &b, what))
		goto out;
	rc = 0;
out:
	batch_free(ft, &b);
	return rc;
}

/* One message per group (n = 1), sent in order. */
int transfer_simple(struct ft *ft, struct pair *pairs, const struct msg *m, int nmsg,
		    const char *what)
{
	int *starts = malloc(sizeof(int) * (size_t)(nmsg ? nmsg : 1));
	int rc;

	if (!starts)
		return fail(ft, "out of memory");
	for (int i = 0; i < nmsg; i++)
		starts[i] = i;
	rc = transfer(ft, pairs, m, nmsg, starts, nmsg, NULL, what);
	free(starts);
	return rc;
}

void shuffle(int *v, int n, uint64_t seed)
{
	for (int i = 0; i < n; i++)
		v[i] = i;
	for (int i = n - 1; i > 0; i--) {
		int j = (int)(mix64(seed + (uint64_t)i) % (uint64_t)(i + 1));
		int t = v[i];
		v[i] = v[j];
		v[j] = t;
	}
}
