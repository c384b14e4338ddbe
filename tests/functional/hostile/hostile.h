/*
 * fabnet-hostile's harness: what every scenario file shares.
 *
 * One process, linked with the plugin's core library: device 0 connected to
 * itself (lc listens, sc sends, rc receives), a receive buffer (rbuf, rmh)
 * full of a canary and a send buffer (sbuf, smh) registered. Messages and
 * immediate data are forged with the wire encoders and injected where the
 * transport delivers them (inject_msg / inject_imm, under the device lock).
 * A case starts with begin(), records its first failure with bad() and ends
 * with report().
 */
#ifndef FABNET_TESTS_HOSTILE_H
#define FABNET_TESTS_HOSTILE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "api/plugin.h"
#include "core/config.h"
#include "core/wire.h"
#include "protocol/internal.h"
#include "transport/device.h"
#include "transport/mr.h"

#include "../../../tools/pattern.h"

#define MiB (1024u * 1024u)
#define NSLOT 8
#define SLOT (256 * 1024)           /* one receive entry's room (the last may use more) */
#define RBUF (NSLOT * (size_t)SLOT)
#define SBUF (MiB + 4096)
#define TAG0 100
#define CASE_TIMEOUT_MS 20000
#define MSGBUF 4096

/* ---- state (harness.c) ------------------------------------------------------- */
extern int verbose;
extern uint64_t seed;
extern int passed, failed;
extern const char *volatile cur_case;

extern struct fabnet_comm *lc, *sc, *rc; /* listen, send, recv */
extern struct fabnet_dev *dev;
extern uint8_t *rbuf, *sbuf;
extern void *rmh, *smh;

/* what the plugin logged during the current case */
extern int nlog;
extern char firstlog[512];
extern pthread_mutex_t log_lock;

extern char why[1024];
extern size_t span;   /* the part of the receive buffers in play */
extern int forged;    /* the current case forges something */
extern uint8_t mbuf[MSGBUF + 64]; /* where cases encode their forgeries */

/* ---- a case ------------------------------------------------------------------- */
/* Records the case's first failure; returns -1. */
int bad(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void begin(const char *name);
void report(const char *name);
void logger(ncclDebugLogLevel level, unsigned long flags, const char *file, int line,
	    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
void on_crash(int sig);

/* ---- injection ----------------------------------------------------------------- */
/* The message as it is, connection token included. */
void inject_raw(const void *buf, size_t len);
/* The destination comm's token, as its genuine peer knows it (0: no such comm). */
uint64_t genuine_token(uint32_t dst);
/* The message with the destination's genuine token stamped in. */
void inject_msg(uint8_t *buf, size_t len);
/* The generation the receive comm's immediate data must carry. */
uint8_t gen(void);
void inject_imm(uint64_t data);
void progress(int rounds);

/* ---- receives, and the genuine sender -------------------------------------------- */
uint8_t *entry(int j);
void canary_reset(void);
int canary_intact(size_t skip_from, size_t skip_to, const char *when);

/* A posted receive: n entries of sizes[j] bytes at entry(j), tags TAG0 + j. */
struct posted {
	void *req;
	uint32_t seq;
	int n;
	size_t size[NSLOT];
};

enum outcome { PENDING, FAILED, COMPLETED };

int post_recv(struct posted *p, int n, const size_t *sizes);
const char *outcome_name(enum outcome o);
enum outcome poll_recv(struct posted *p, int rounds, int *sizes, ncclResult_t *res);
int genuine_send(int n, const size_t *sizes, uint32_t seq);
int genuine_complete(struct posted *p, int may_fail);
int consume(struct posted *p);
/* One genuine 1-buffer transfer of size bytes, canaries checked. */
int genuine_one(size_t size);

/* ---- more comms on the listener ------------------------------------------------- */
/* Connects another pair on the listener; 0, or -1 after bad(). */
int connect_extra(void *handle, struct fabnet_comm **s, struct fabnet_comm **r);
/* Posts a receive on r and a send on s while the rail looks full. */
int post_stalled_send(struct fabnet_comm *s, struct fabnet_comm *r, void *sdata,
		      void *smhandle, size_t size, void **rreq, void **sreq);

/* ---- the scenario files ---------------------------------------------------------- */
/* recv.c: forged EAGER, FIN, immediate data and others against a posted receive. */
void hostile_recv_cases(void);
/* conn.c: forged CTS, REVOKE, CONNECT and ACK; the listener; a flood. */
void hostile_conn_cases(void *handle);
/* early.c: sends before their receives (EARLY), genuine and forged. */
void hostile_early_cases(void);
/* teardown.c: failing, closing and deregistering comms of their own. */
void hostile_teardown_cases(void *handle);

#endif
