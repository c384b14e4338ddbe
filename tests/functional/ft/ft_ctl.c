/*
 * The control channel between the two ranks (tools/ctl.h underneath): data
 * messages and verdicts, each tagged with the unit of work it belongs to.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ft.h"

struct qmsg {
	struct qmsg *next;
	uint16_t kind;
	uint16_t scen;
	uint32_t len;
	uint8_t data[];
};

enum { MSG_DATA = 1, MSG_RESULT = 2 };
#define CTL_MAGIC 0xfab7e570u

struct ctl_hdr {
	uint32_t magic;
	uint16_t kind;
	uint16_t scen;
	uint32_t len;
};

static int ctl_put(struct ft *ft, uint16_t kind, const void *buf, uint32_t len)
{
	struct ctl_hdr h = {CTL_MAGIC, kind, ft->scen, len};

	if (ft->peer_gone)
		return -1;
	if (ctl_send(&ft->ctl, &h, sizeof(h)) || (len && ctl_send(&ft->ctl, buf, len))) {
		ft->peer_gone = 1;
		snprintf(ft->gone_why, sizeof(ft->gone_why), "%s", ft->ctl.err);
		return -1;
	}
	return 0;
}

/* The peer's verdict on the current unit; frees m. */
static void take_result(struct ft *ft, struct qmsg *m)
{
	int32_t ok = 0;

	if (m->len >= 4)
		memcpy(&ok, m->data, 4);
	ft->peer_done = 1;
	ft->peer_ok = ok;
	snprintf(ft->peer_why, sizeof(ft->peer_why), "%s",
		 m->len > 4 ? (const char *)m->data + 4 : "");
	free(m);
}

/* Drops queued messages of earlier units; takes a queued verdict on this one. */
static void absorb_queue(struct ft *ft)
{
	struct qmsg **pp = &ft->q;

	while (*pp) {
		struct qmsg *m = *pp;
		if (m->scen < ft->scen) {
			*pp = m->next;
			free(m);
		} else if (m->scen == ft->scen && m->kind == MSG_RESULT) {
			*pp = m->next;
			take_result(ft, m);
		} else {
			pp = &m->next;
		}
	}
}

/* Starts a unit of work whose verdicts the ranks exchange (a scenario or a
 * part of one): messages are tagged with its number, so a rank that gave up
 * early never confuses the other. */
void begin_unit(struct ft *ft)
{
	ft->scen++;
	ft->why[0] = '\0';
	ft->peer_done = ft->peer_ok = 0;
	ft->peer_why[0] = '\0';
	absorb_queue(ft);
}

/* Reads one message if one arrives within wait_ms. 1: got one, 0: none, -1: gone. */
int ctl_pump(struct ft *ft, int wait_ms)
{
	struct ctl_hdr h;
	struct qmsg *m;
	int64_t until = now_ms() + wait_ms;

	if (ft->peer_gone)
		return -1;
	for (;;) {
		int r = ctl_readable(&ft->ctl);
		if (r < 0)
			goto gone;
		if (r > 0)
			break;
		if (now_ms() >= until)
			return 0;
		usleep(wait_ms > 50 ? 2000 : 200);
	}
	if (ctl_recv(&ft->ctl, &h, sizeof(h)))
		goto gone;
	if (h.magic != CTL_MAGIC || h.len > (64u << 20)) {
		snprintf(ft->ctl.err, sizeof(ft->ctl.err), "control stream out of step "
			 "(bad header)");
		goto gone;
	}
	m = malloc(sizeof(*m) + h.len + 1);
	if (!m)
		goto gone;
	m->next = NULL;
	m->kind = h.kind;
	m->scen = h.scen;
	m->len = h.len;
	if (h.len && ctl_recv(&ft->ctl, m->data, h.len)) {
		free(m);
		goto gone;
	}
	m->data[h.len] = '\0';
	if (m->scen < ft->scen) { /* left over from an aborted scenario */
		free(m);
		return 1;
	}
	if (m->kind == MSG_RESULT && m->scen == ft->scen) {
		take_result(ft, m);
		return 1;
	}
	/* append */
	{
		struct qmsg **pp = &ft->q;
		while (*pp)
			pp = &(*pp)->next;
		*pp = m;
	}
	return 1;
gone:
	ft->peer_gone = 1;
	snprintf(ft->gone_why, sizeof(ft->gone_why), "%s", ft->ctl.err);
	return -1;
}

/* Non-blocking: has the peer given up on this scenario (or died)? */
int peer_failed(struct ft *ft)
{
	int64_t t = now_ms();

	if (t - ft->last_peer_poll >= 20) {
		ft->last_peer_poll = t;
		while (ctl_pump(ft, 0) > 0)
			;
	}
	if (ft->peer_gone)
		return fail(ft, "the peer rank is gone: %s", ft->gone_why);
	if (ft->peer_done && !ft->peer_ok)
		return fail(ft, "stopped: the peer rank failed");
	return 0;
}

int ft_send(struct ft *ft, const void *buf, uint32_t len)
{
	if (ctl_put(ft, MSG_DATA, buf, len))
		return fail(ft, "control channel: %s", ft->gone_why);
	return 0;
}

int ft_recv(struct ft *ft, void *buf, uint32_t len)
{
	int64_t deadline = now_ms() + ft->op_timeout_ms;

	for (;;) {
		struct qmsg **pp;
		for (pp = &ft->q; *pp; pp = &(*pp)->next) {
			struct qmsg *m = *pp;
			if (m->kind != MSG_DATA || m->scen != ft->scen)
				continue;
			*pp = m->next;
			if (m->len != len) {
				uint32_t got = m->len;
				free(m);
				return fail(ft, "control message of %u bytes where %u were expected "
					    "(ranks out of step)", got, len);
			}
			memcpy(buf, m->data, len);
			free(m);
			wd_kick();
			return 0;
		}
		if (ft->peer_done)
			return fail(ft, ft->peer_ok ? "the peer rank ended the scenario early" :
				    "stopped: the peer rank failed");
		if (ft->peer_gone)
			return fail(ft, "the peer rank is gone: %s", ft->gone_why);
		if (now_ms() > deadline)
			return fail(ft, "no control message from the peer rank within %d s",
				    ft->op_timeout_ms / 1000);
		ctl_pump(ft, 100);
	}
}

int ft_sync(struct ft *ft)
{
	uint8_t t = 0x5c, in = 0;

	if (ft_send(ft, &t, 1) || ft_recv(ft, &in, 1))
		return -1;
	return 0;
}

/* Sends our verdict, waits for the peer's. Returns 1 if both passed. */
int ft_finish(struct ft *ft, int ok)
{
	char buf[4 + REASON_MAX];
	int32_t v = ok;
	int64_t deadline;

	memcpy(buf, &v, 4);
	snprintf(buf + 4, sizeof(buf) - 4, "%s", ok ? "" : ft->why);
	alarm(0);
	g_step = "waiting for the peer's verdict";
	ctl_put(ft, MSG_RESULT, buf, (uint32_t)(4 + strlen(buf + 4) + 1));
	deadline = now_ms() + 3 * (int64_t)ft->op_timeout_ms + 60000;
	absorb_queue(ft);
	while (!ft->peer_done && !ft->peer_gone && now_ms() < deadline)
		ctl_pump(ft, 200);
	if (!ft->peer_done && !ft->peer_gone) {
		ft->peer_ok = 0;
		snprintf(ft->peer_why, sizeof(ft->peer_why), "no verdict from the peer rank "
			 "within %d s", (int)((3 * (int64_t)ft->op_timeout_ms + 60000) / 1000));
	} else if (!ft->peer_done) {
		ft->peer_ok = 0;
		snprintf(ft->peer_why, sizeof(ft->peer_why), "exited or crashed (see its "
			 "message above)");
	}
	{ /* drop messages of this unit that nobody read */
		struct qmsg **pp = &ft->q;
		while (*pp) {
			struct qmsg *m = *pp;
			if (m->scen <= ft->scen) {
				*pp = m->next;
				free(m);
			} else {
				pp = &m->next;
			}
		}
	}
	return ok && ft->peer_ok;
}
