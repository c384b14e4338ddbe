/*
 * peer-death: each part runs in a fresh pair of processes started by rank 0,
 * both with FABNET_PEER_TIMEOUT_MS=2000: the survivor (--helper survivor)
 * starts the victim (--helper victim), connects to it, and kills it (SIGKILL)
 * or lets it close early; the survivor checks that its pending request fails
 * in time and that its log names the comm. Parts:
 *   idle    the sender is killed while the survivor's irecv waits, no data sent
 *   send    the sender is killed in the middle of a 64 MiB send
 *   recv    the receiver is killed while the survivor sends 64 MiB
 *   close   the sender calls closeSend without sending, an irecv is posted
 *   alive   the sender is alive but makes no plugin call for 2.5x the timeout
 *           while an irecv waits, then sends: no false alarm, the data arrives
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../../tools/logcap.h"
#include "../../../tools/proc.h"
#include "ft.h"

#define PD_TIMEOUT_MS 2000
#define PD_BOUND_MS 6000     /* FABNET_PEER_TIMEOUT_MS plus slack */
#define PD_CLOSE_BOUND_MS 2000
#define PD_BIG (64 * MiB)
#define PD_ALIVE_MS (5 * PD_TIMEOUT_MS / 2) /* an alive peer stays away this long */

/* Connects the survivor and the victim over the plugin: `listener` listens and
 * passes its handle over the channel. */
static int pd_connect(struct ft *ft, struct ctl *ch, int listener, void **lcomm, void **comm)
{
	uint8_t handle[NCCL_NET_HANDLE_MAXSIZE];
	int64_t deadline = now_ms() + ft->op_timeout_ms;

	*lcomm = *comm = NULL;
	if (listener) {
		g_step = "listen";
		CALL(ft, pl_listen(ft->net, ft->dev, handle, lcomm), "listen");
		if (!*lcomm)
			return fail(ft, "listen returned a NULL listen comm");
		if (hput(ch, HM_HANDLE, handle, sizeof(handle)))
			return fail(ft, "channel: %s", ch->err);
	} else {
		uint32_t kind, len;
		uint8_t buf[NCCL_NET_HANDLE_MAXSIZE + 1];
		if (hget(ch, &kind, buf, sizeof(buf), &len, ft->op_timeout_ms) || kind != HM_HANDLE ||
		    len != sizeof(handle))
			return fail(ft, "no handle from the other process: %s", ch->err);
		memcpy(handle, buf, sizeof(handle));
	}
	while (!*comm) {
		if (listener) {
			g_step = "accept";
			CALL(ft, pl_accept(ft->net, *lcomm, comm), "accept");
		} else {
			g_step = "connect";
			CALL(ft, pl_connect(ft->net, ft->dev, handle, comm), "connect");
		}
		if (now_ms() > deadline)
			return fail(ft, "%s still NULL after %d s", listener ? "accept" : "connect",
				    ft->op_timeout_ms / 1000);
		usleep(200);
	}
	if (listener) {
		g_step = "closeListen";
		CALL(ft, pl_close_listen(ft->net, *lcomm), "closeListen");
		*lcomm = NULL;
	}
	return 0;
}

/* FABNET_FT_PD_WAIT_S: how much longer than the bound to wait for an error
 * before calling it a hang (to measure how late a late error comes). */
static int64_t pd_extra_wait_ms(void)
{
	const char *e = getenv("FABNET_FT_PD_WAIT_S");

	return e && atoi(e) > 0 ? (int64_t)atoi(e) * 1000 : 0;
}

/* Test a pending request (progress) while waiting for a token. */
struct pd_poll {
	void *req;
	int done;
	ncclResult_t res;
};

static int pd_poll_fn(struct ft *ft, void *arg)
{
	struct pd_poll *pp = arg;
	int sizes[MAX_GROUP];

	if (!pp->req || pp->done)
		return 0;
	g_step = "test";
	pp->res = pl_test(ft->net, pp->req, &pp->done, sizes);
	if (pp->res != ncclSuccess)
		pp->done = 1;
	return 0;
}

/* Victim, part "close": closeSend without sending, then exit normally once
 * the survivor is done. */
static int victim_close_early(struct ft *ft, struct ctl *ch, void *comm)
{
	g_step = "closeSend";
	CALL(ft, pl_close_send(ft->net, comm), "closeSend");
	hput(ch, HM_TOKEN, "closed", 7);
	/* wait for the survivor to finish, then exit normally */
	hwait_token(ft, ch, "bye", 60000, NULL, NULL);
	return 0;
}

/* Victim, part "alive": after its pause (no plugin call), 1 MiB through b,
 * then closeSend once the survivor is done. */
static int victim_send_after_pause(struct ft *ft, struct ctl *ch, void *comm, struct fbuf *b)
{
	int64_t deadline;
	int done = 0, got = -1;
	void *req = NULL;

	pat_fill(b->p, MiB, pat_key(ft->seed, MiB, 79));
	deadline = now_ms() + ft->op_timeout_ms;
	while (!req) {
		g_step = "isend";
		CALL(ft, pl_isend(ft->net, comm, b->p, MiB, 1, b->mh, &req), "isend");
		if (now_ms() > deadline)
			return fail(ft, "isend kept returning NULL after the pause");
	}
	while (!done) {
		g_step = "test";
		CALL(ft, pl_test(ft->net, req, &done, &got), "test (isend after the pause)");
		if (now_ms() > deadline)
			return fail(ft, "the isend after the pause did not complete");
	}
	hput(ch, HM_TOKEN, "sent", 5);
	hwait_token(ft, ch, "bye", 60000, NULL, NULL);
	g_step = "closeSend";
	CALL(ft, pl_close_send(ft->net, comm), "closeSend");
	fbuf_free(ft, b, 1);
	return 0;
}

/* Victim, part "send": a 64 MiB isend through b that must still be moving
 * (the victim runs with FABNET_MAX_WRITE=4096, FABNET_WRITES_IN_FLIGHT=1). */
static int victim_start_slow_send(struct ft *ft, void *comm, struct fbuf *b, struct pd_poll *pp)
{
	int64_t deadline = now_ms() + ft->op_timeout_ms;
	void *req = NULL;

	pat_fill(b->p, PD_BIG, pat_key(ft->seed, PD_BIG, 77));
	while (!req) {
		g_step = "isend";
		CALL(ft, pl_isend(ft->net, comm, b->p, PD_BIG, 1, b->mh, &req), "isend");
		if (now_ms() > deadline)
			return fail(ft, "isend of 64 MiB kept returning NULL");
	}
	pp->req = req;
	for (int i = 0; i < 50; i++) { /* move some of it */
		pd_poll_fn(ft, pp);
		usleep(1000);
	}
	if (pp->done)
		return fail(ft, "the 64 MiB isend completed (%d) although the victim "
			    "was set up to be slow (FABNET_MAX_WRITE=4096, "
			    "FABNET_WRITES_IN_FLIGHT=1)", (int)pp->res);
	return 0;
}

/* Victim, part "recv": a 64 MiB irecv that progresses until the survivor is
 * sending, then no more. */
static int victim_receive(struct ft *ft, struct ctl *ch, void *comm, struct fbuf *b,
			  struct pd_poll *pp)
{
	size_t sz = PD_BIG;
	int tag = 1;
	void *req = NULL;

	if (fbuf_alloc(ft, comm, PD_BIG, b) ||
	    h_irecv(ft, comm, 1, (void **)&b->p, &sz, &tag, &b->mh, &req, ft->op_timeout_ms))
		return -1;
	hput(ch, HM_TOKEN, "posted", 7);
	pp->req = req;
	if (hwait_token(ft, ch, "sending", ft->op_timeout_ms, pd_poll_fn, pp))
		return -1;
	/* from now on no progress: the send cannot finish */
	hput(ch, HM_TOKEN, "ready", 6);
	return 0;
}

/* --helper victim --part P: the process that dies or closes early. Failures in
 * set-up reach the survivor as a "fail:WHY" token; a failed transfer call ends
 * the process, which the survivor sees as its channel closing. */
int helper_victim(struct ft *ft, struct ctl *ch, const char *part)
{
	int sender = strcmp(part, "recv") != 0;
	void *lcomm = NULL, *comm = NULL;
	struct fbuf b;
	struct pd_poll pp;

	memset(&b, 0, sizeof(b));
	memset(&pp, 0, sizeof(pp));
	if (h_init(ft) || pd_connect(ft, ch, !sender, &lcomm, &comm))
		goto failed;
	if (!sender) {
		if (victim_receive(ft, ch, comm, &b, &pp))
			goto failed;
	} else {
		if (hwait_token(ft, ch, "posted", ft->op_timeout_ms, NULL, NULL))
			goto failed;
		if (!strcmp(part, "close"))
			return victim_close_early(ft, ch, comm);
		if (!strcmp(part, "alive")) {
			usleep(PD_ALIVE_MS * 1000); /* alive, but no plugin call */
			if (fbuf_alloc(ft, comm, MiB, &b))
				goto failed;
			return victim_send_after_pause(ft, ch, comm, &b);
		}
		if (!strcmp(part, "send")) {
			if (fbuf_alloc(ft, comm, PD_BIG, &b))
				goto failed;
			if (victim_start_slow_send(ft, comm, &b, &pp))
				return -1;
		}
		hput(ch, HM_TOKEN, "ready", 6);
	}
	/* wait to be killed, making no progress */
	hwait_token(ft, ch, "never", 120000, NULL, NULL);
	return -1;
failed:
	{
		char msg[REASON_MAX + 8];
		snprintf(msg, sizeof(msg), "fail:%s", ft->why);
		hput(ch, HM_TOKEN, msg, (uint32_t)strlen(msg) + 1);
	}
	return -1;
}

/* The survivor's side of "alive": its irecv waits while the peer makes no
 * plugin call for PD_ALIVE_MS; it must neither fail nor complete wrongly. */
static int pd_alive(struct ft *ft, struct ctl *up, struct helper *v, void *comm, struct fbuf *b)
{
	size_t sz = MiB;
	int tag = 1, done = 0, got = -1, sent = 0;
	void *req = NULL;
	int64_t t0, deadline;
	char why[400], buf[64];

	if (fbuf_alloc(ft, comm, MiB + CANARY_PAD, b))
		return -1;
	canary_fill(b->p, 0, b->cap);
	if (h_irecv(ft, comm, 1, (void **)&b->p, &sz, &tag, &b->mh, &req, ft->op_timeout_ms))
		return -1;
	if (hput(&v->ch, HM_TOKEN, "posted", 7))
		return fail(ft, "channel to the peer: %s", v->ch.err);
	t0 = now_ms();
	deadline = t0 + PD_ALIVE_MS + ft->op_timeout_ms;
	while (!done || !sent) {
		if (!done) {
			ncclResult_t r;
			g_step = "test";
			r = pl_test(ft->net, req, &done, &got);
			if (r != ncclSuccess)
				return fail(ft, "test() returned %d (%s) %.1f s into the peer's %.1f s of "
					    "silence: an alive peer was declared dead", (int)r,
					    pl_result_str(r), (double)(now_ms() - t0) / 1000.0,
					    PD_ALIVE_MS / 1000.0);
		}
		if (!sent && ctl_readable(&v->ch) != 0) {
			uint32_t kind;
			if (hget(&v->ch, &kind, buf, sizeof(buf), NULL, 5000))
				return fail(ft, "the peer is gone: %s", v->ch.err);
			if (kind != HM_TOKEN || strcmp(buf, "sent"))
				return fail(ft, "the peer: %s", buf);
			sent = 1;
		}
		if (now_ms() > deadline)
			return fail(ft, "the receive did not complete %.1f s after the peer's pause",
				    (double)(now_ms() - t0 - PD_ALIVE_MS) / 1000.0);
		usleep(500);
	}
	if (got != (int)MiB)
		return fail(ft, "test() reported %d bytes, %u were sent", got, MiB);
	if (pat_check(b->p, MiB, pat_key(ft->seed, MiB, 79), why, sizeof(why)) ||
	    canary_check(b->p, MiB, b->cap, why, sizeof(why)))
		return fail(ft, "after the pause: %s", why);
	hnote(up, "# peer-death alive: the irecv waited %.1f s on a peer silent for %.1f s "
	      "(FABNET_PEER_TIMEOUT_MS=%d), then completed with the right bytes",
	      (double)(now_ms() - t0) / 1000.0, PD_ALIVE_MS / 1000.0, PD_TIMEOUT_MS);
	return 0;
}

/* The survivor's state through one part. */
struct survivor {
	const char *part;
	int receiver;          /* it receives (every part but recv) */
	int closes;            /* part close: the peer closes instead of dying */
	struct helper v;       /* the victim */
	struct logcap lc;
	int captured;          /* lc holds our stderr */
	void *lcomm, *comm;
	struct fbuf b;
	struct pd_poll pp;     /* the request that must fail */
	int64_t t_event, t_err;
	int send_completed;    /* the whole send left before the receiver died */
	ncclResult_t res;
	int st;
};

/* Checks the part and starts the victim. 0: started, 1: the part is skipped
 * here (said in a note), -1: failed. */
static int survivor_start_victim(struct ft *ft, struct ctl *up, struct survivor *s)
{
	const char *vextra[3] = {NULL, NULL, NULL};
	const char *part = s->part;
	int remote = !strcmp(part, "idle-remote"), r;

	if (!strcmp(part, "send")) { /* a slow sender: its transfer is surely cut */
		vextra[0] = "FABNET_MAX_WRITE=4096";
		vextra[1] = "FABNET_WRITES_IN_FLIGHT=1";
	}
	if (strcmp(part, "idle") && strcmp(part, "send") && strcmp(part, "recv") &&
	    strcmp(part, "close") && strcmp(part, "alive") && strcmp(part, "idle-remote"))
		return fail(ft, "unknown peer-death part \"%s\"", part);
	if (remote) {
		const char *prov = getenv("FABNET_PROVIDER") ? getenv("FABNET_PROVIDER") :
				   getenv("FI_PROVIDER");
		if (prov && !strcmp(prov, "shm")) {
			hnote(up, "# peer-death %s: skipped on shm (its peers share a host, where the "
			      "plugin checks the peer's pid)", part);
			return 1;
		}
	}
	/* the victim first: it must not inherit our endpoint */
	r = helper_spawn(ft, "victim", remote ? "idle" : part, vextra, -1,
			 remote ? HS_NEWPIDNS : 0, &s->v);
	if (r < 0)
		return -1;
	if (r > 0) {
		hnote(up, "# peer-death %s: skipped: no permission to create a pid namespace "
		      "(run as root)", part);
		return 1;
	}
	return 0;
}

/* The survivor receives: an irecv the victim's death (or close) must fail. */
static int survivor_post_irecv(struct ft *ft, struct survivor *s)
{
	size_t sz = s->closes ? MiB : PD_BIG;
	int tag = 1;
	void *req = NULL;

	if (fbuf_alloc(ft, s->comm, sz, &s->b) ||
	    h_irecv(ft, s->comm, 1, (void **)&s->b.p, &sz, &tag, &s->b.mh, &req, ft->op_timeout_ms))
		return -1;
	if (hput(&s->v.ch, HM_TOKEN, "posted", 7))
		return fail(ft, "channel to the victim: %s", s->v.ch.err);
	s->pp.req = req;
	if (hwait_token(ft, &s->v.ch, s->closes ? "closed" : "ready", ft->op_timeout_ms,
			pd_poll_fn, &s->pp))
		return -1;
	if (s->pp.done && s->closes) {
		/* already failed: fine, as long as it is the right error */
	} else if (s->pp.done) {
		return fail(ft, "the irecv completed (%d, %s) before the victim was killed",
			    (int)s->pp.res, pl_result_str(s->pp.res));
	}
	return 0;
}

/* The survivor sends: 64 MiB in flight when the receiving victim dies. */
static int survivor_start_isend(struct ft *ft, struct survivor *s)
{
	int64_t deadline = now_ms() + ft->op_timeout_ms;
	void *req = NULL;

	if (fbuf_alloc(ft, s->comm, PD_BIG, &s->b))
		return -1;
	pat_fill(s->b.p, PD_BIG, pat_key(ft->seed, PD_BIG, 78));
	if (hwait_token(ft, &s->v.ch, "posted", ft->op_timeout_ms, NULL, NULL))
		return -1;
	while (!req) {
		g_step = "isend";
		s->res = pl_isend(ft->net, s->comm, s->b.p, PD_BIG, 1, s->b.mh, &req);
		if (s->res != ncclSuccess)
			return fail(ft, "isend of 64 MiB returned %d (%s) before the receiver died",
				    (int)s->res, pl_result_str(s->res));
		if (now_ms() > deadline)
			return fail(ft, "isend of 64 MiB kept returning NULL although the receiver "
				    "posted its irecv");
	}
	s->pp.req = req;
	for (int i = 0; i < 20; i++) {
		pd_poll_fn(ft, &s->pp);
		usleep(1000);
	}
	if (hput(&s->v.ch, HM_TOKEN, "sending", 8) ||
	    hwait_token(ft, &s->v.ch, "ready", ft->op_timeout_ms, pd_poll_fn, &s->pp))
		return -1;
	return 0;
}

/* The event: SIGKILL, or the victim's closeSend has returned (the log is read
 * from the start of the part: a quick provider may report the event while we
 * still wait for the victim's word). Sets t_event. */
static int survivor_kill_victim(struct ft *ft, struct survivor *s)
{
	if (!s->closes) {
		pid_t vpid = s->v.pid;
		kill(s->v.pid, SIGKILL);
		if (helper_reap(&s->v, 5000, &s->st))
			return fail(ft, "the victim did not die within 5 s of SIGKILL");
		shm_leftovers_remove(vpid);
	}
	s->t_event = now_ms();
	return 0;
}

/* Waits for the request to fail (sets res and t_err); a hang past the bound
 * plus 9 s (and FABNET_FT_PD_WAIT_S) fails. */
static int survivor_wait_error(struct ft *ft, struct survivor *s)
{
	int64_t limit = s->closes ? PD_CLOSE_BOUND_MS : PD_BOUND_MS;

	for (;;) {
		if (!s->pp.done)
			pd_poll_fn(ft, &s->pp);
		if (s->pp.done && s->pp.res == ncclSuccess && !s->receiver) {
			/* the whole send left before the receiver died (providers that
			 * write without the target's help): the comm must still fail */
			void *r2 = NULL;
			s->send_completed = 1;
			g_step = "isend";
			s->res = pl_isend(ft->net, s->comm, s->b.p, 4096, 2, s->b.mh, &r2);
			if (s->res != ncclSuccess) {
				s->t_err = now_ms();
				return 0;
			}
			if (r2) {
				/* A small send goes early, without the receiver's CTS, and
				 * may even complete (the provider delivered it to a process
				 * that is gone): the comm must still fail once its early
				 * credits are spent and its keepalive goes unanswered. */
				int d = 0;
				ncclResult_t tr;
				do {
					tr = pl_test(ft->net, r2, &d, NULL);
				} while (tr == ncclSuccess && !d &&
					 now_ms() - s->t_event < limit + 9000 + pd_extra_wait_ms());
				if (tr != ncclSuccess) {
					s->res = tr;
					s->t_err = now_ms();
					return 0;
				}
			}
		} else if (s->pp.done) {
			s->res = s->pp.res;
			s->t_err = now_ms();
			if (s->res == ncclSuccess)
				return fail(ft, "test() completed the %s successfully after the peer %s",
					    s->receiver ? "irecv" : "isend",
					    !s->closes ? "was killed" : "closed without sending");
			return 0;
		}
		if (now_ms() - s->t_event > limit + 9000 + pd_extra_wait_ms())
			return fail(ft, "no error %.1f s after the peer %s (the bound is %.1f s): "
				    "test() on the %s still reports it in progress (hang)",
				    (double)(now_ms() - s->t_event) / 1000.0,
				    !s->closes ? "was killed" : "closed", (double)limit / 1000.0,
				    s->receiver ? "irecv" : "isend");
		usleep(500);
	}
}

/* The error came within the bound, and a close is ncclRemoteError. */
static int survivor_check_error(struct ft *ft, struct ctl *up, struct survivor *s)
{
	double secs = (double)(s->t_err - s->t_event) / 1000.0;
	int64_t limit = s->closes ? PD_CLOSE_BOUND_MS : PD_BOUND_MS;
	const char *event = !s->closes ? "was killed" : "closed";

	hnote(up, "# peer-death %s: %s returned %d (%s) %.2f s after the peer %s%s", s->part,
	      s->send_completed ? "a new isend" : "test()", (int)s->res, pl_result_str(s->res),
	      secs, event,
	      s->send_completed ? " (the 64 MiB send had completed before the death)" : "");
	if (s->t_err - s->t_event > limit)
		return fail(ft, "the error came %.2f s after the peer %s, more than %.1f s "
			    "(FABNET_PEER_TIMEOUT_MS=%d)", secs, event, (double)limit / 1000.0,
			    PD_TIMEOUT_MS);
	if (s->closes && s->res != ncclRemoteError)
		return fail(ft, "test() returned %d (%s), not ncclRemoteError, after the peer closed",
			    (int)s->res, pl_result_str(s->res));
	return 0;
}

/* Closing the failed comm must return, promptly. */
static int survivor_close(struct ft *ft, struct survivor *s)
{
	int64_t t0 = now_ms(), t_close;

	g_step = s->receiver ? "closeRecv" : "closeSend";
	s->res = s->receiver ? pl_close_recv(ft->net, s->comm) : pl_close_send(ft->net, s->comm);
	t_close = now_ms() - t0;
	s->comm = NULL;
	if (s->res != ncclSuccess)
		return fail(ft, "%s after the peer's death returned %d (%s)", g_step, (int)s->res,
			    pl_result_str(s->res));
	if (t_close > PD_BOUND_MS)
		return fail(ft, "%s took %.2f s", g_step, (double)t_close / 1000.0);
	return 0;
}

/* A line of the plugin's log names the comm. */
static int survivor_check_log(struct ft *ft, struct ctl *up, struct survivor *s)
{
	static const char *const died[] = {"comm ", "peer comm ", " at ", "failed", NULL};
	static const char *const closed[] = {"on comm ", "closed", NULL};
	char *log = logcap_since_mark(&s->lc);
	char line[2048];

	if (!log || !log_has_line(log, s->closes ? closed : died, line, sizeof(line))) {
		fail(ft, "no log line names the comm (expected a line with %s); the log "
		     "was:\n%.4000s", !s->closes ?
		     "\"comm N ... peer comm M at ADDR ... failed\"" : "\"on comm N ... closed\"",
		     log ? log : "(none)");
		free(log);
		return -1;
	}
	free(log);
	hnote(up, "# peer-death %s: log: %s", s->part, line);
	return 0;
}

/* The part "alive": no false alarm, then a normal close. */
static int survivor_alive(struct ft *ft, struct ctl *up, struct survivor *s)
{
	if (pd_alive(ft, up, &s->v, s->comm, &s->b))
		return -1;
	g_step = "closeRecv";
	s->res = pl_close_recv(ft->net, s->comm);
	s->comm = NULL;
	if (s->res != ncclSuccess)
		return fail(ft, "closeRecv returned %d (%s)", (int)s->res, pl_result_str(s->res));
	return 0;
}

/* Everything after the victim is connected: the request, the event, the error
 * within the bound, a prompt close, the log line. */
static int survivor_run(struct ft *ft, struct ctl *up, struct survivor *s)
{
	if (!strcmp(s->part, "alive"))
		return survivor_alive(ft, up, s);
	if (s->receiver ? survivor_post_irecv(ft, s) : survivor_start_isend(ft, s))
		return -1;
	if (survivor_kill_victim(ft, s) || survivor_wait_error(ft, s) ||
	    survivor_check_error(ft, up, s) || survivor_close(ft, s))
		return -1;
	if (fbuf_free(ft, &s->b, 1))
		return -1;
	if (s->captured && survivor_check_log(ft, up, s))
		return -1;
	return 0;
}

/* Closes what is left; a victim that closes (close, alive) must then exit 0. */
static int survivor_cleanup(struct ft *ft, struct survivor *s, int rc)
{
	if (s->comm && s->receiver)
		pl_close_recv(ft->net, s->comm);
	else if (s->comm)
		pl_close_send(ft->net, s->comm);
	if (s->lcomm)
		pl_close_listen(ft->net, s->lcomm);
	fbuf_free(ft, &s->b, 1);
	if (s->v.pid > 0 && (s->closes || !strcmp(s->part, "alive")) && rc == 0) {
		hput(&s->v.ch, HM_TOKEN, "bye", 4);
		if (helper_reap(&s->v, 15000, &s->st)) {
			rc = fail(ft, "the peer (%s) did not exit", s->part);
		} else if (!WIFEXITED(s->st) || WEXITSTATUS(s->st)) {
			char d[128];
			describe_status(s->st, d, sizeof(d));
			rc = fail(ft, "the peer (%s) %s", s->part, d);
		}
	}
	helper_kill(&s->v);
	if (s->captured)
		logcap_stop(&s->lc);
	return rc;
}

/* --helper survivor --part P */
int helper_survivor(struct ft *ft, struct ctl *up, const char *part)
{
	struct survivor s;
	int rc = -1, r;

	memset(&s, 0, sizeof(s));
	s.part = part;
	s.receiver = strcmp(part, "recv") != 0;
	s.closes = !strcmp(part, "close");
	s.lc.fd = s.lc.saved = -1;
	s.v.pid = -1;
	s.v.ch.fd = -1;
	s.res = ncclSuccess;
	r = survivor_start_victim(ft, up, &s);
	if (r)
		return r < 0 ? -1 : 0;
	if (logcap_start(&s.lc) == 0)
		s.captured = 1;
	if (!h_init(ft) && !pd_connect(ft, &s.v.ch, s.receiver, &s.lcomm, &s.comm) &&
	    !survivor_run(ft, up, &s))
		rc = 0;
	return survivor_cleanup(ft, &s, rc);
}

static int pd_part(struct ft *ft, const void *arg)
{
	static const char *const extra[] = {"FABNET_PEER_TIMEOUT_MS=2000", NULL};

	const char *prov = getenv("FABNET_PROVIDER");

	if (ft->rank != 0)
		return 0;
	/* sockets completes sends to a dead remote peer as if delivered, and udp
	 * (rxd) completes them only when the peer's software answers, so a dead
	 * remote peer looks alive or merely silent: no keepalive can tell. On the
	 * same host the process check still works (the other parts). */
	if (!strcmp((const char *)arg, "idle-remote") && prov &&
	    (!strcmp(prov, "sockets") || !strcmp(prov, "udp"))) {
		printf("# SKIP peer-death idle-remote on %s: the provider cannot report a dead "
		       "remote peer\n", prov);
		return 0;
	}
	return helper_run(ft, "survivor", arg, extra, 120000);
}

int scen_peer_death(struct ft *ft)
{
	sub(ft, "sender killed while an irecv waits (nothing sent)", pd_part, "idle");
	sub(ft, "the same, the sender's pid hidden in a pid namespace (as on another node)",
	    pd_part, "idle-remote");
	sub(ft, "sender killed during a 64 MiB transfer", pd_part, "send");
	sub(ft, "receiver killed while 64 MiB are sent", pd_part, "recv");
	sub(ft, "sender closes early with an irecv posted", pd_part, "close");
	sub(ft, "sender alive but silent for 2.5x the timeout: no false alarm", pd_part, "alive");
	return 0;
}
