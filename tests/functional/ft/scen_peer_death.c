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

/* --helper victim --part P: the process that dies or closes early. */
int helper_victim(struct ft *ft, struct ctl *ch, const char *part)
{
	int sender = strcmp(part, "recv") != 0;
	void *lcomm = NULL, *comm = NULL, *req = NULL;
	struct fbuf b;
	struct pd_poll pp;

	memset(&b, 0, sizeof(b));
	memset(&pp, 0, sizeof(pp));
	if (h_init(ft) || pd_connect(ft, ch, !sender, &lcomm, &comm))
		goto failed;
	if (sender) {
		if (hwait_token(ft, ch, "posted", ft->op_timeout_ms, NULL, NULL))
			goto failed;
		if (!strcmp(part, "close")) {
			g_step = "closeSend";
			CALL(ft, pl_close_send(ft->net, comm), "closeSend");
			hput(ch, HM_TOKEN, "closed", 7);
			/* wait for the survivor to finish, then exit normally */
			hwait_token(ft, ch, "bye", 60000, NULL, NULL);
			return 0;
		}
		if (!strcmp(part, "alive")) {
			int64_t deadline;
			int done = 0, got = -1;
			usleep(PD_ALIVE_MS * 1000); /* alive, but no plugin call */
			if (fbuf_alloc(ft, comm, MiB, &b))
				goto failed;
			pat_fill(b.p, MiB, pat_key(ft->seed, MiB, 79));
			deadline = now_ms() + ft->op_timeout_ms;
			while (!req) {
				g_step = "isend";
				CALL(ft, pl_isend(ft->net, comm, b.p, MiB, 1, b.mh, &req), "isend");
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
			fbuf_free(ft, &b, 1);
			return 0;
		}
		if (!strcmp(part, "send")) {
			int64_t deadline = now_ms() + ft->op_timeout_ms;
			if (fbuf_alloc(ft, comm, PD_BIG, &b))
				goto failed;
			pat_fill(b.p, PD_BIG, pat_key(ft->seed, PD_BIG, 77));
			while (!req) {
				g_step = "isend";
				CALL(ft, pl_isend(ft->net, comm, b.p, PD_BIG, 1, b.mh, &req), "isend");
				if (now_ms() > deadline)
					return fail(ft, "isend of 64 MiB kept returning NULL");
			}
			pp.req = req;
			for (int i = 0; i < 50; i++) { /* move some of it */
				pd_poll_fn(ft, &pp);
				usleep(1000);
			}
			if (pp.done)
				return fail(ft, "the 64 MiB isend completed (%d) although the victim "
					    "was set up to be slow (FABNET_MAX_WRITE=4096, "
					    "FABNET_WRITES_IN_FLIGHT=1)", (int)pp.res);
		}
		hput(ch, HM_TOKEN, "ready", 6);
	} else { /* receiver */
		size_t sz = PD_BIG;
		int tag = 1;
		if (fbuf_alloc(ft, comm, PD_BIG, &b) ||
		    h_irecv(ft, comm, 1, (void **)&b.p, &sz, &tag, &b.mh, &req, ft->op_timeout_ms))
			goto failed;
		hput(ch, HM_TOKEN, "posted", 7);
		pp.req = req;
		if (hwait_token(ft, ch, "sending", ft->op_timeout_ms, pd_poll_fn, &pp))
			goto failed;
		/* from now on no progress: the send cannot finish */
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

/* --helper survivor --part P */
int helper_survivor(struct ft *ft, struct ctl *up, const char *part)
{
	int receiver = strcmp(part, "recv") != 0;
	const char *vextra[3] = {NULL, NULL, NULL};
	struct helper v;
	struct logcap lc;
	void *lcomm = NULL, *comm = NULL, *req = NULL;
	struct fbuf b;
	struct pd_poll pp;
	int64_t t_event = 0, t_err = 0, t_close = 0;
	int rc = -1, captured = 0, st = 0, send_completed = 0;
	ncclResult_t res = ncclSuccess;
	char line[2048];

	memset(&b, 0, sizeof(b));
	memset(&pp, 0, sizeof(pp));
	memset(&v, 0, sizeof(v));
	memset(&lc, 0, sizeof(lc));
	lc.fd = lc.saved = -1;
	v.pid = -1;
	v.ch.fd = -1;
	if (!strcmp(part, "send")) { /* a slow sender: its transfer is surely cut */
		vextra[0] = "FABNET_MAX_WRITE=4096";
		vextra[1] = "FABNET_WRITES_IN_FLIGHT=1";
	}
	if (strcmp(part, "idle") && strcmp(part, "send") && strcmp(part, "recv") &&
	    strcmp(part, "close") && strcmp(part, "alive") && strcmp(part, "idle-remote"))
		return fail(ft, "unknown peer-death part \"%s\"", part);
	if (!strcmp(part, "idle-remote")) {
		const char *prov = getenv("FABNET_PROVIDER") ? getenv("FABNET_PROVIDER") :
				   getenv("FI_PROVIDER");
		if (prov && !strcmp(prov, "shm")) {
			hnote(up, "# peer-death %s: skipped on shm (its peers share a host, where the "
			      "plugin checks the peer's pid)", part);
			return 0;
		}
	}
	/* the victim first: it must not inherit our endpoint */
	{
		int remote = !strcmp(part, "idle-remote");
		int r = helper_spawn(ft, "victim", remote ? "idle" : part, vextra, -1,
				     remote ? HS_NEWPIDNS : 0, &v);
		if (r < 0)
			return -1;
		if (r > 0) {
			hnote(up, "# peer-death %s: skipped: no permission to create a pid namespace "
			      "(run as root)", part);
			return 0;
		}
	}
	if (logcap_start(&lc) == 0)
		captured = 1;
	if (h_init(ft) || pd_connect(ft, &v.ch, receiver, &lcomm, &comm))
		goto out;
	if (!strcmp(part, "alive")) {
		if (pd_alive(ft, up, &v, comm, &b))
			goto out;
		g_step = "closeRecv";
		res = pl_close_recv(ft->net, comm);
		comm = NULL;
		if (res != ncclSuccess) {
			fail(ft, "closeRecv returned %d (%s)", (int)res, pl_result_str(res));
			goto out;
		}
		rc = 0;
		goto out;
	}
	if (receiver) {
		size_t sz = !strcmp(part, "close") ? MiB : PD_BIG;
		int tag = 1;
		if (fbuf_alloc(ft, comm, sz, &b) ||
		    h_irecv(ft, comm, 1, (void **)&b.p, &sz, &tag, &b.mh, &req, ft->op_timeout_ms))
			goto out;
		if (hput(&v.ch, HM_TOKEN, "posted", 7)) {
			fail(ft, "channel to the victim: %s", v.ch.err);
			goto out;
		}
		pp.req = req;
		if (hwait_token(ft, &v.ch, !strcmp(part, "close") ? "closed" : "ready",
				ft->op_timeout_ms, pd_poll_fn, &pp))
			goto out;
		if (pp.done && !strcmp(part, "close")) {
			/* already failed: fine, as long as it is the right error */
		} else if (pp.done) {
			fail(ft, "the irecv completed (%d, %s) before the victim was killed",
			     (int)pp.res, pl_result_str(pp.res));
			goto out;
		}
	} else {
		int64_t deadline = now_ms() + ft->op_timeout_ms;
		if (fbuf_alloc(ft, comm, PD_BIG, &b))
			goto out;
		pat_fill(b.p, PD_BIG, pat_key(ft->seed, PD_BIG, 78));
		if (hwait_token(ft, &v.ch, "posted", ft->op_timeout_ms, NULL, NULL))
			goto out;
		while (!req) {
			g_step = "isend";
			res = pl_isend(ft->net, comm, b.p, PD_BIG, 1, b.mh, &req);
			if (res != ncclSuccess) {
				fail(ft, "isend of 64 MiB returned %d (%s) before the receiver died",
				     (int)res, pl_result_str(res));
				goto out;
			}
			if (now_ms() > deadline) {
				fail(ft, "isend of 64 MiB kept returning NULL although the receiver "
				     "posted its irecv");
				goto out;
			}
		}
		pp.req = req;
		for (int i = 0; i < 20; i++) {
			pd_poll_fn(ft, &pp);
			usleep(1000);
		}
		if (hput(&v.ch, HM_TOKEN, "sending", 8) ||
		    hwait_token(ft, &v.ch, "ready", ft->op_timeout_ms, pd_poll_fn, &pp))
			goto out;
	}
	/* the event: SIGKILL, or the victim's closeSend has returned (the log is
	 * read from the start of the part: a quick provider may report the event
	 * while we still wait for the victim's word) */
	if (strcmp(part, "close")) {
		pid_t vpid = v.pid;
		kill(v.pid, SIGKILL);
		if (helper_reap(&v, 5000, &st)) {
			fail(ft, "the victim did not die within 5 s of SIGKILL");
			goto out;
		}
		shm_leftovers_remove(vpid);
	}
	t_event = now_ms();
	/* wait for the request to fail */
	for (;;) {
		int64_t limit = !strcmp(part, "close") ? PD_CLOSE_BOUND_MS : PD_BOUND_MS;
		if (!pp.done)
			pd_poll_fn(ft, &pp);
		if (pp.done && pp.res == ncclSuccess && !receiver) {
			/* the whole send left before the receiver died (providers that
			 * write without the target's help): the comm must still fail */
			void *r2 = NULL;
			send_completed = 1;
			g_step = "isend";
			res = pl_isend(ft->net, comm, b.p, 4096, 2, b.mh, &r2);
			if (res != ncclSuccess) {
				t_err = now_ms();
				break;
			}
			if (r2) {
				fail(ft, "isend after the receiver died returned a request: nothing can "
				     "have answered it");
				goto out;
			}
		} else if (pp.done) {
			res = pp.res;
			t_err = now_ms();
			if (res == ncclSuccess) {
				fail(ft, "test() completed the %s successfully after the peer %s",
				     receiver ? "irecv" : "isend",
				     strcmp(part, "close") ? "was killed" : "closed without sending");
				goto out;
			}
			break;
		}
		if (now_ms() - t_event > limit + 9000 + pd_extra_wait_ms()) {
			fail(ft, "no error %.1f s after the peer %s (the bound is %.1f s): test() on "
			     "the %s still reports it in progress (hang)",
			     (double)(now_ms() - t_event) / 1000.0,
			     strcmp(part, "close") ? "was killed" : "closed", (double)limit / 1000.0,
			     receiver ? "irecv" : "isend");
			goto out;
		}
		usleep(500);
	}
	{
		double secs = (double)(t_err - t_event) / 1000.0;
		int64_t limit = !strcmp(part, "close") ? PD_CLOSE_BOUND_MS : PD_BOUND_MS;
		hnote(up, "# peer-death %s: %s returned %d (%s) %.2f s after the peer %s%s", part,
		      send_completed ? "a new isend" : "test()", (int)res, pl_result_str(res), secs,
		      strcmp(part, "close") ? "was killed" : "closed",
		      send_completed ? " (the 64 MiB send had completed before the death)" : "");
		if (t_err - t_event > limit) {
			fail(ft, "the error came %.2f s after the peer %s, more than %.1f s "
			     "(FABNET_PEER_TIMEOUT_MS=%d)", secs,
			     strcmp(part, "close") ? "was killed" : "closed", (double)limit / 1000.0,
			     PD_TIMEOUT_MS);
			goto out;
		}
		if (!strcmp(part, "close") && res != ncclRemoteError) {
			fail(ft, "test() returned %d (%s), not ncclRemoteError, after the peer closed",
			     (int)res, pl_result_str(res));
			goto out;
		}
	}
	/* close must return, promptly */
	g_step = receiver ? "closeRecv" : "closeSend";
	{
		int64_t t0 = now_ms();
		res = receiver ? pl_close_recv(ft->net, comm) : pl_close_send(ft->net, comm);
		t_close = now_ms() - t0;
		comm = NULL;
		if (res != ncclSuccess) {
			fail(ft, "%s after the peer's death returned %d (%s)", g_step, (int)res,
			     pl_result_str(res));
			goto out;
		}
		if (t_close > PD_BOUND_MS) {
			fail(ft, "%s took %.2f s", g_step, (double)t_close / 1000.0);
			goto out;
		}
	}
	if (fbuf_free(ft, &b, 1))
		goto out;
	/* the log names the comm */
	if (captured) {
		char *log = logcap_since_mark(&lc);
		static const char *const died[] = {"comm ", "peer comm ", " at ", "failed", NULL};
		static const char *const closed[] = {"on comm ", "closed", NULL};
		const char *const *words = strcmp(part, "close") ? died : closed;
		if (!log || !log_has_line(log, words, line, sizeof(line))) {
			fail(ft, "no log line names the comm (expected a line with %s); the log "
			     "was:\n%.4000s", strcmp(part, "close") ?
			     "\"comm N ... peer comm M at ADDR ... failed\"" : "\"on comm N ... closed\"",
			     log ? log : "(none)");
			free(log);
			goto out;
		}
		free(log);
		hnote(up, "# peer-death %s: log: %s", part, line);
	}
	rc = 0;
out:
	if (comm && receiver)
		pl_close_recv(ft->net, comm);
	else if (comm)
		pl_close_send(ft->net, comm);
	if (lcomm)
		pl_close_listen(ft->net, lcomm);
	fbuf_free(ft, &b, 1);
	if (v.pid > 0 && (!strcmp(part, "close") || !strcmp(part, "alive")) && rc == 0) {
		hput(&v.ch, HM_TOKEN, "bye", 4);
		if (helper_reap(&v, 15000, &st)) {
			rc = fail(ft, "the peer (%s) did not exit", part);
		} else if (!WIFEXITED(st) || WEXITSTATUS(st)) {
			char d[128];
			describe_status(st, d, sizeof(d));
			rc = fail(ft, "the peer (%s) %s", part, d);
		}
	}
	helper_kill(&v);
	if (captured)
		logcap_stop(&lc);
	return rc;
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
