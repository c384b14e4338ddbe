/*
 * fabnet-hostile: what a confused or hostile peer can do to a receive.
 *
 * One process, linked with the plugin's core library: device 0 is connected
 * to itself (listen, then connect and accept in turn), a receive buffer full
 * of a canary is registered and an irecv posted, and then messages and
 * immediate data are forged with the wire encoders and injected exactly where
 * the transport delivers them (fabnet_proto_on_msg / fabnet_proto_on_imm on
 * the comm's device, under the device lock), as if the peer had sent them.
 *
 * After each case: no byte of the receive buffers changed, and the request is
 * either still pending (the forgery was dropped) or failed with an error; it
 * never completes successfully. Then the genuine sender completes the
 * receive (a pending one must then deliver exactly the genuine bytes) or
 * consumes the sequence (a failed one), so that every case starts from a
 * healthy pair of comms; at the end genuine transfers of every kind are
 * verified on the same comms.
 *
 *   fabnet-hostile [--verbose] [--seed S]
 * Environment: FABNET_PROVIDER etc. as for the plugin. Prints "PASS name" or
 * "FAIL name: reason" per case and "N passed, M failed"; exit status 1 if any
 * case failed.
 */
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

#include "../../tools/pattern.h"

#define MiB (1024u * 1024u)
#define NSLOT 8
#define SLOT (256 * 1024)           /* one receive entry's room (the last may use more) */
#define RBUF (NSLOT * (size_t)SLOT)
#define SBUF (MiB + 4096)
#define TAG0 100
#define CASE_TIMEOUT_MS 20000

/* ---- state ------------------------------------------------------------------- */

static int verbose;
static uint64_t seed = 0x4057113ull;
static int passed, failed;
static const char *volatile cur_case = "setup";

static struct fabnet_comm *lc, *sc, *rc; /* listen, send, recv */
static struct fabnet_dev *dev;
static uint8_t *rbuf, *sbuf;
static void *rmh, *smh;

/* what the plugin logged during the current case */
static int nlog;
static char firstlog[512];
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static char why[1024];
static size_t span = RBUF;       /* the part of the receive buffers in play */
static int forged;               /* the current case forges something */

static int bad(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad(const char *fmt, ...)
{
	va_list ap;

	if (why[0])
		return -1;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	return -1;
}

static void logger(ncclDebugLogLevel level, unsigned long flags, const char *file, int line,
		   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void logger(ncclDebugLogLevel level, unsigned long flags, const char *file, int line,
		   const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	(void)flags;
	if (level != NCCL_LOG_WARN && level != NCCL_LOG_INFO)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&log_lock);
	if (!nlog++)
		snprintf(firstlog, sizeof(firstlog), "%.500s", msg);
	pthread_mutex_unlock(&log_lock);
	if (verbose)
		fprintf(stderr, "  [%s] %s %s:%d %s\n", cur_case, level == NCCL_LOG_WARN ? "WARN" : "INFO",
			file ? file : "-", line, msg);
}

static void on_crash(int sig)
{
	char buf[256];
	int n = snprintf(buf, sizeof(buf), "FAIL %s: crashed with signal %d%s\n", cur_case, sig,
			 sig == SIGALRM ? " (watchdog: a call hung)" : "");

	if (n > 0 && write(1, buf, (size_t)n) < 0)
		_exit(3);
	_exit(3);
}

/* ---- plumbing ------------------------------------------------------------------ */

/* The message as it is, connection token included: what a stranger (or a
 * late message of an earlier connection) can send. */
static void inject_raw(const void *buf, size_t len)
{
	pthread_mutex_lock(&dev->lock);
	fabnet_proto_on_msg(dev, buf, len);
	pthread_mutex_unlock(&dev->lock);
}

/* The destination comm's token, as its genuine peer knows it (0: no such comm). */
static uint64_t genuine_token(uint32_t dst)
{
	struct fabnet_comm *c = dst <= UINT16_MAX ? fabnet_proto_lookup(dev, dst) : NULL;

	return c ? c->token : 0;
}

/* The message with the destination's genuine token stamped in: a confused
 * or hostile peer that holds the token. Most cases forge as one, to reach
 * the checks behind the token's. */
static void inject_msg(uint8_t *buf, size_t len)
{
	if (len >= FABNET_MSG_HDR_SIZE && buf[3] != FABNET_MSG_CONNECT &&
	    buf[3] != FABNET_MSG_CONNECT_ACK) {
		uint32_t dst = (uint32_t)buf[4] | (uint32_t)buf[5] << 8 | (uint32_t)buf[6] << 16 |
			       (uint32_t)buf[7] << 24;
		fabnet_msg_set_token(buf, genuine_token(dst));
	}
	inject_raw(buf, len);
}

/* The generation the receive comm's immediate data must carry. */
static uint8_t gen(void)
{
	return (uint8_t)(rc->token & FABNET_IMM_GEN_MASK);
}

static void inject_imm(uint64_t data)
{
	pthread_mutex_lock(&dev->lock);
	fabnet_proto_on_imm(dev, data);
	pthread_mutex_unlock(&dev->lock);
}

static void progress(int rounds)
{
	for (int i = 0; i < rounds; i++) {
		pthread_mutex_lock(&dev->lock);
		fabnet_dev_progress(dev);
		pthread_mutex_unlock(&dev->lock);
		usleep(200);
	}
}

static uint8_t *entry(int j)
{
	return rbuf + (size_t)j * SLOT;
}

static void canary_reset(void)
{
	for (size_t i = 0; i < span; i++)
		rbuf[i] = canary_byte(i);
}

/* Every byte of the receive buffers outside [skip_from, skip_to) holds the canary. */
static int canary_intact(size_t skip_from, size_t skip_to, const char *when)
{
	for (size_t i = 0; i < span; i++) {
		if (i >= skip_from && i < skip_to)
			continue;
		if (rbuf[i] != canary_byte(i)) {
			size_t n = 0, last = i;
			for (size_t k = i; k < span; k++)
				if ((k < skip_from || k >= skip_to) && rbuf[k] != canary_byte(k)) {
					n++;
					last = k;
				}
			return bad("%s: %zu bytes of the receive buffers changed, first at entry %zu "
				   "offset %zu (0x%02x), last at entry %zu offset %zu", when, n,
				   i / SLOT, i % SLOT, rbuf[i], last / SLOT, last % SLOT);
		}
	}
	return 0;
}

/* A posted receive: n entries of sizes[j] bytes at entry(j), tags TAG0 + j. */
struct posted {
	void *req;
	uint32_t seq;
	int n;
	size_t size[NSLOT];
};

static int post_recv(struct posted *p, int n, const size_t *sizes)
{
	void *data[NSLOT], *mh[NSLOT];
	size_t sz[NSLOT];
	int tags[NSLOT];
	int64_t deadline = now_ms() + CASE_TIMEOUT_MS;
	ncclResult_t r;

	memset(p, 0, sizeof(*p));
	p->n = n;
	for (int j = 0; j < n; j++) {
		data[j] = entry(j);
		mh[j] = rmh;
		sz[j] = sizes[j];
		p->size[j] = sizes[j];
		tags[j] = TAG0 + j;
	}
	while (!p->req) {
		r = fabnet_api_irecv(rc, n, data, sz, tags, mh, &p->req);
		if (r != ncclSuccess)
			return bad("irecv returned %d", (int)r);
		if (now_ms() > deadline)
			return bad("irecv kept returning a NULL request");
	}
	p->seq = ((struct fabnet_req *)p->req)->seq;
	progress(5); /* the CTS reaches the send comm */
	return 0;
}

enum outcome { PENDING, FAILED, COMPLETED };

static const char *outcome_name(enum outcome o)
{
	return o == PENDING ? "pending" : o == FAILED ? "failed" : "completed";
}

/* Tests the receive a few times: still pending, failed, or completed. */
static enum outcome poll_recv(struct posted *p, int rounds, int *sizes, ncclResult_t *res)
{
	for (int i = 0; i < rounds; i++) {
		int done = 0;
		*res = fabnet_api_test(p->req, &done, sizes);
		if (*res != ncclSuccess) {
			p->req = NULL;
			return FAILED;
		}
		if (done) {
			p->req = NULL;
			return COMPLETED;
		}
		usleep(200);
	}
	return PENDING;
}

/* Genuine sends from the send comm: entry j gets sizes[j] bytes of pattern
 * (key from seq and j), in reverse order. Waits for every send to complete. */
static int genuine_send(int n, const size_t *sizes, uint32_t seq)
{
	void *req[NSLOT] = {NULL};
	int done[NSLOT] = {0};
	int64_t deadline = now_ms() + CASE_TIMEOUT_MS;
	size_t off[NSLOT], o = 0;

	for (int j = 0; j < n; j++) {
		off[j] = o;
		o += (sizes[j] + 63) & ~(size_t)63;
		if (o > SBUF)
			return bad("harness: send sizes exceed the send buffer");
		pat_fill(sbuf + off[j], sizes[j], mix64(seed ^ ((uint64_t)seq << 8) ^ (uint64_t)j));
	}
	for (;;) {
		int left = 0;
		for (int j = n - 1; j >= 0; j--) {
			int d = 0, sz = -1;
			ncclResult_t r;
			if (done[j])
				continue;
			left++;
			if (!req[j]) {
				r = fabnet_api_isend(sc, sbuf + off[j], sizes[j], TAG0 + j, smh, &req[j]);
				if (r != ncclSuccess)
					return bad("genuine isend %d of %zu bytes returned %d", j, sizes[j],
						   (int)r);
				if (!req[j])
					continue;
			}
			r = fabnet_api_test(req[j], &d, &sz);
			if (r != ncclSuccess)
				return bad("test() on the genuine isend %d returned %d", j, (int)r);
			if (d)
				done[j] = 1;
		}
		if (!left)
			return 0;
		if (now_ms() > deadline)
			return bad("the genuine isends did not complete");
		usleep(100);
	}
}

/* Completes a receive with genuine data and verifies it. may_fail: the
 * forgery was allowed to poison the receive (it then must fail). */
static int genuine_complete(struct posted *p, int may_fail)
{
	int sizes[NSLOT];
	ncclResult_t res = ncclSuccess;
	enum outcome o = PENDING;
	int64_t deadline = now_ms() + CASE_TIMEOUT_MS;

	if (genuine_send(p->n, p->size, p->seq))
		return -1;
	while (o == PENDING) {
		o = poll_recv(p, 1, sizes, &res);
		if (now_ms() > deadline)
			return bad("the genuine transfer after the forgery never completed (hang)");
	}
	if (o == FAILED) {
		if (may_fail)
			return 0;
		return bad("the forgery was dropped, yet the genuine transfer that followed failed "
			   "(%d)", (int)res);
	}
	for (int j = 0; j < p->n; j++) {
		uint64_t key = mix64(seed ^ ((uint64_t)p->seq << 8) ^ (uint64_t)j);
		if (sizes[j] != (int)p->size[j])
			return bad("genuine transfer: entry %d reported %d bytes, %zu were sent", j,
				   sizes[j], p->size[j]);
		for (size_t i = 0; i < p->size[j]; i++)
			if (entry(j)[i] != pat_byte(i, key))
				return bad("genuine transfer after the forgery: entry %d byte %zu is "
					   "0x%02x, the sender sent 0x%02x%s", j, i, entry(j)[i],
					   pat_byte(i, key), may_fail ? " (completed with wrong data)" : "");
	}
	/* nothing beyond the genuine bytes */
	for (size_t i = 0; i < span; i++) {
		int data = 0;
		for (int j = 0; j < p->n && !data; j++)
			data = i >= (size_t)j * SLOT && i < (size_t)j * SLOT + p->size[j];
		if (!data && rbuf[i] != canary_byte(i))
			return bad("genuine transfer: byte %zu of the receive buffers (entry %zu, "
				   "offset %zu), outside the bytes sent, changed", i, i / SLOT, i % SLOT);
	}
	return 0;
}

/* The receive failed: the sender still holds its CTS. Zero-byte sends use
 * it up (the receiver drops them: the sequence is no longer posted). */
static int consume(struct posted *p)
{
	size_t zero[NSLOT] = {0};

	if (genuine_send(p->n, zero, p->seq))
		return -1;
	progress(5);
	return canary_intact(0, 0, "after the sender used up the failed receive's sequence");
}

static void report(const char *name)
{
	if (why[0]) {
		printf("FAIL %s: %s\n", name, why);
		failed++;
	} else {
		if (verbose && nlog)
			printf("PASS %s (%d log line%s, first: %s)\n", name, nlog, nlog > 1 ? "s" : "",
			       firstlog);
		else
			printf("PASS %s%s\n", name,
			       nlog || !forged ? "" : " (dropped without a log line)");
		passed++;
	}
	fflush(stdout);
}

static void begin(const char *name)
{
	cur_case = name;
	span = RBUF;
	forged = 1;
	why[0] = '\0';
	pthread_mutex_lock(&log_lock);
	nlog = 0;
	firstlog[0] = '\0';
	pthread_mutex_unlock(&log_lock);
	alarm(60);
}

/* ---- forged receive cases -------------------------------------------------------- */

struct forge {
	struct posted *p;
	uint16_t rid, sid; /* the receiving comm, its genuine peer */
};

typedef void (*forge_fn)(const struct forge *f);

#define MSGBUF 4096
static uint8_t mbuf[MSGBUF + 64];

static void eager(uint32_t dst, uint32_t src, uint32_t seq, uint8_t idx, size_t size)
{
	size_t len = fabnet_msg_encode_eager(mbuf, MSGBUF, dst, src, seq, idx, 0, size);
	uint8_t *payload = mbuf + FABNET_MSG_HDR_SIZE + FABNET_EAGER_FIXED;

	if (!len) {
		bad("harness: EAGER of %zu bytes does not fit", size);
		return;
	}
	memset(payload, 0xEE, size);
	inject_msg(mbuf, len);
}

static void fin(uint32_t dst, uint32_t src, uint32_t seq, uint8_t idx, uint8_t flags,
		uint32_t nwrites, uint64_t size)
{
	size_t len = fabnet_msg_encode_fin(mbuf, MSGBUF, dst, src, seq, idx, flags, nwrites, size);

	inject_msg(mbuf, len);
}

static void f_eager_too_big(const struct forge *f)
{
	eager(f->rid, f->sid, f->p->seq, 0, f->p->size[0] + 100);
}
static void f_eager_stale(const struct forge *f)
{
	eager(f->rid, f->sid, f->p->seq - 1, 0, 10);
}
static void f_eager_future(const struct forge *f)
{
	eager(f->rid, f->sid, f->p->seq + 1, 0, 10);
}
static void f_eager_next_round(const struct forge *f)
{
	eager(f->rid, f->sid, f->p->seq + FABNET_NSLOTS, 0, 10);
}
static void f_eager_seq_high_bits(const struct forge *f)
{
	eager(f->rid, f->sid, f->p->seq ^ 0x10000u, 0, 10);
}
static void f_eager_idx_n(const struct forge *f)
{
	eager(f->rid, f->sid, f->p->seq, (uint8_t)f->p->n, 10);
}
static void f_eager_idx_7(const struct forge *f)
{
	eager(f->rid, f->sid, f->p->seq, 7, 10);
}
static void f_eager_idx_huge(const struct forge *f)
{
	eager(f->rid, f->sid, f->p->seq, 200, 10);
}
static void f_eager_wrong_src(const struct forge *f)
{
	eager(f->rid, (uint32_t)f->sid + 1, f->p->seq, 0, 10);
}
static void f_eager_src_zero(const struct forge *f)
{
	eager(f->rid, 0, f->p->seq, 0, 10);
}
static void f_eager_src_wide(const struct forge *f)
{
	eager(f->rid, f->sid | 0x10000u, f->p->seq, 0, 10);
}
static void f_eager_to_send_comm(const struct forge *f)
{
	eager(f->sid, f->rid, f->p->seq, 0, 10);
}
static void f_eager_no_comm(const struct forge *f)
{
	eager(60000, f->sid, f->p->seq, 0, 10);
}
static void f_eager_dst_wide(const struct forge *f)
{
	eager(f->rid | 0x10000u, f->sid, f->p->seq, 0, 10);
}
static void f_eager_short_payload(const struct forge *f)
{
	size_t len = fabnet_msg_encode_eager(mbuf, MSGBUF, f->rid, f->sid, f->p->seq, 0, 0, 100);

	memset(mbuf + FABNET_MSG_HDR_SIZE + FABNET_EAGER_FIXED, 0xEE, 100);
	inject_msg(mbuf, len - 50); /* says 100 bytes, carries 50 */
}
static void f_eager_long_payload(const struct forge *f)
{
	size_t len = fabnet_msg_encode_eager(mbuf, MSGBUF, f->rid, f->sid, f->p->seq, 0, 0, 10);

	memset(mbuf + FABNET_MSG_HDR_SIZE + FABNET_EAGER_FIXED, 0xEE, 60);
	inject_msg(mbuf, len + 50); /* says 10 bytes, carries 60 */
}
static void f_eager_bad_flags(const struct forge *f)
{
	size_t len = fabnet_msg_encode_eager(mbuf, MSGBUF, f->rid, f->sid, f->p->seq, 0, 0x80, 10);

	if (len) {
		memset(mbuf + FABNET_MSG_HDR_SIZE + FABNET_EAGER_FIXED, 0xEE, 10);
		inject_msg(mbuf, len);
	}
}
static void f_eager_reserved(const struct forge *f)
{
	size_t len = fabnet_msg_encode_eager(mbuf, MSGBUF, f->rid, f->sid, f->p->seq, 0, 0, 10);

	memset(mbuf + FABNET_MSG_HDR_SIZE + FABNET_EAGER_FIXED, 0xEE, 10);
	mbuf[FABNET_MSG_HDR_SIZE + 3] = 1; /* the reserved u16 */
	inject_msg(mbuf, len);
}
static void f_fin_idx_n(const struct forge *f)
{
	fin(f->rid, f->sid, f->p->seq, (uint8_t)f->p->n, 0, 1, 1);
}
static void f_fin_idx_huge(const struct forge *f)
{
	fin(f->rid, f->sid, f->p->seq, 9, 0, 1, 1);
}
static void f_fin_too_big(const struct forge *f)
{
	fin(f->rid, f->sid, f->p->seq, 0, 0, 1, f->p->size[0] + 1);
}
static void f_fin_size_huge(const struct forge *f)
{
	fin(f->rid, f->sid, f->p->seq, 0, 0, 1, ~0ull);
}
static void f_fin_duplicate(const struct forge *f)
{
	fin(f->rid, f->sid, f->p->seq, 0, 0, 2, f->p->size[0]);
	fin(f->rid, f->sid, f->p->seq, 0, 0, 2, f->p->size[0]);
}
static void f_fin_no_writes(const struct forge *f)
{
	fin(f->rid, f->sid, f->p->seq, 0, 0, 0, f->p->size[0]);
}
static void f_fin_wrong_src(const struct forge *f)
{
	fin(f->rid, (uint32_t)f->sid + 3, f->p->seq, 0, 0, 1, 100);
}
static void f_fin_not_posted(const struct forge *f)
{
	fin(f->rid, f->sid, f->p->seq + 1, 0, 0, 1, 100);
}
static void f_fin_error_flag(const struct forge *f)
{
	fin(f->rid, f->sid, f->p->seq, 0, FABNET_FIN_ERROR, 0, 0);
}
static void f_fin_after_eager_size(const struct forge *f)
{
	/* a FIN announcing writes into an entry, then as many immediates: no
	 * byte was written, so this must not complete */
	fin(f->rid, f->sid, f->p->seq, 0, 0, 1, f->p->size[0]);
}
static void f_imm_no_comm(const struct forge *f)
{
	inject_imm(fabnet_imm_pack(60000, (uint8_t)f->p->seq, 0, gen()));
}
static void f_imm_comm_zero(const struct forge *f)
{
	inject_imm(fabnet_imm_pack(0, (uint8_t)f->p->seq, 0, gen()));
}
static void f_imm_send_comm(const struct forge *f)
{
	inject_imm(fabnet_imm_pack(f->sid, (uint8_t)f->p->seq, 0, gen()));
}
static void f_imm_not_posted(const struct forge *f)
{
	inject_imm(fabnet_imm_pack(f->rid, (uint8_t)(f->p->seq + 1), 0, gen()));
}
static void f_imm_reserved(const struct forge *f)
{
	for (uint32_t bit = 0; bit < 5; bit++)
		inject_imm(fabnet_imm_pack(f->rid, (uint8_t)f->p->seq, 0, gen()) ^ (1u << bit));
}
static void f_imm_wide(const struct forge *f)
{
	inject_imm(fabnet_imm_pack(f->rid, (uint8_t)f->p->seq, 0, gen()) | (1ull << 32));
	inject_imm(fabnet_imm_pack(f->rid, (uint8_t)f->p->seq, 0, gen()) | (1ull << 63));
}
static void f_imm_idx_n(const struct forge *f)
{
	inject_imm(fabnet_imm_pack(f->rid, (uint8_t)f->p->seq, (uint8_t)f->p->n, gen()));
}
static void f_imm_posted(const struct forge *f)
{
	inject_imm(fabnet_imm_pack(f->rid, (uint8_t)f->p->seq, 0, gen()));
}
static void f_close_wrong_src(const struct forge *f)
{
	size_t len = fabnet_msg_encode_close(mbuf, MSGBUF, f->rid, (uint32_t)f->sid + 5, 0);

	inject_msg(mbuf, len);
}
/* Messages that are right in every field but the connection's token: what
 * anyone who can reach the endpoint and guess the small ids could send. */
static void f_eager_no_token(const struct forge *f)
{
	size_t len = fabnet_msg_encode_eager(mbuf, MSGBUF, f->rid, f->sid, f->p->seq, 0, 0, 60);

	memset(mbuf + FABNET_MSG_HDR_SIZE + FABNET_EAGER_FIXED, 0xEE, 60);
	inject_raw(mbuf, len); /* token 0 */
	fabnet_msg_set_token(mbuf, rc->token ^ 0x100);
	inject_raw(mbuf, len); /* a near miss */
}
static void f_fin_no_token(const struct forge *f)
{
	/* a FIN of 0 bytes would complete the receive on the spot */
	size_t len = fabnet_msg_encode_fin(mbuf, MSGBUF, f->rid, f->sid, f->p->seq, 0, 0, 0, 0);

	inject_raw(mbuf, len);
}
static void f_close_no_token(const struct forge *f)
{
	size_t len = fabnet_msg_encode_close(mbuf, MSGBUF, f->rid, f->sid, f->p->seq);

	fabnet_msg_set_token(mbuf, rc->token ^ 1);
	inject_raw(mbuf, len);
	if (rc->peer_closed || rc->state != FABNET_READY)
		bad("a CLOSE without the connection's token closed the comm (state %d)", rc->state);
}
static void f_imm_old_gen(const struct forge *f)
{
	/* a FIN announcing one write, then that write's immediate data as an
	 * earlier comm under the same id would have sent it */
	fin(f->rid, f->sid, f->p->seq, 0, 0, 1, 5000);
	inject_imm(fabnet_imm_pack(f->rid, (uint8_t)f->p->seq, 0, (uint8_t)(gen() - 1)));
}
/* A message sent with CQ data (fi_senddata), the data a valid immediate for
 * the posted receive whose FIN announced one write: a message is no write,
 * so nothing may count, and its receive buffer must be posted again. */
struct probe {
	struct fabnet_op op;
	int done, err;
};

static void probe_done(struct fabnet_op *op, int err, const struct fi_cq_data_entry *e)
{
	struct probe *pr = (struct probe *)op;

	(void)e;
	pr->done = 1;
	pr->err = err;
}

static unsigned rx_posted(void)
{
	unsigned n = 0;

	for (unsigned i = 0; i < dev->nrx; i++)
		n += dev->rx_ops[i].posted || dev->rx_ops[i].queued;
	return n;
}

static void f_senddata_imm(const struct forge *f)
{
	static struct probe pr;
	fi_addr_t self;
	unsigned before;
	ssize_t ret;

	fin(f->rid, f->sid, f->p->seq, 0, 0, 1, 5000);
	if (fabnet_dev_peer(dev, dev->addr, dev->addrlen, &self)) {
		bad("harness: our own address is not usable");
		return;
	}
	memset(&pr, 0, sizeof(pr));
	pr.op.cb = probe_done;
	memset(sbuf, 0x77, 32);
	pthread_mutex_lock(&dev->lock);
	before = rx_posted();
	ret = fi_senddata(dev->ep, sbuf, 32, ((struct fabnet_rmr *)smh)->mr[0]->desc,
			  fabnet_imm_pack(f->rid, (uint8_t)f->p->seq, 0, gen()), self, &pr.op.ctx);
	pthread_mutex_unlock(&dev->lock);
	if (ret) {
		bad("harness: fi_senddata failed (%zd)", ret);
		return;
	}
	for (int i = 0; i < 2000 && !pr.done; i++)
		progress(1);
	progress(20);
	pthread_mutex_lock(&dev->lock);
	if (!pr.done)
		bad("harness: the fi_senddata never completed");
	else if (rx_posted() != before)
		bad("a receive buffer was not posted again after a message with CQ data (%u of %u "
		    "posted, %u before)", rx_posted(), dev->nrx, before);
	pthread_mutex_unlock(&dev->lock);
}
static void f_ping_forged(const struct forge *f)
{
	size_t len = fabnet_msg_encode_ping(mbuf, MSGBUF, f->rid, 9999, 1, dev->addr,
					    (uint8_t)dev->addrlen);

	inject_msg(mbuf, len);
}

/* Bytes of every length 0..64: random, zeros, a valid header of every type
 * with a random body, and every truncation of valid messages. */
static void f_garbage(const struct forge *f)
{
	uint8_t *b = malloc(128);
	uint8_t valid[4][MSGBUF];
	size_t vlen[4];
	struct fabnet_cts_entry ce;
	struct fabnet_proc proc = {0x1234, 42};

	if (!b) {
		bad("out of memory");
		return;
	}
	for (size_t len = 0; len <= 64; len++) {
		uint8_t *m = malloc(len ? len : 1); /* exactly len: an over-read is caught by tools */
		if (!m)
			break;
		for (size_t i = 0; i < len; i++)
			m[i] = (uint8_t)mix64(seed ^ (len << 16) ^ i);
		inject_raw(m, len);
		memset(m, 0, len);
		inject_raw(m, len);
		for (uint8_t type = 0; type <= FABNET_MSG_TYPE_MAX && len >= FABNET_MSG_HDR_SIZE; type++) {
			for (size_t i = 0; i < len; i++)
				m[i] = (uint8_t)mix64(seed ^ (len << 16) ^ ((size_t)type << 8) ^ i ^ 0xabc);
			/* magic, version, type, dst = our comms, src = the peer, seq posted */
			m[0] = FABNET_MSG_MAGIC & 0xff;
			m[1] = FABNET_MSG_MAGIC >> 8;
			m[2] = FABNET_WIRE_VERSION;
			m[3] = type;
			m[4] = (uint8_t)(type % 2 ? f->rid : f->sid);
			m[5] = (uint8_t)((type % 2 ? f->rid : f->sid) >> 8);
			m[6] = m[7] = 0;
			m[8] = (uint8_t)(type % 2 ? f->sid : f->rid);
			m[9] = (uint8_t)((type % 2 ? f->sid : f->rid) >> 8);
			m[10] = m[11] = 0;
			memcpy(m + 12, &f->p->seq, 4);
			if (type == FABNET_MSG_CLOSE || type == FABNET_MSG_REVOKE ||
			    type == FABNET_MSG_REVOKED) {
				/* a header-only CLOSE or REVOKE from the genuine peer is a valid
				 * message, not garbage: name a stranger */
				m[8] = 0x39;
				m[9] = 0x30;
			}
			inject_msg(m, len);
		}
		free(m);
	}
	/* truncations of valid messages aimed at the posted receive */
	memset(&ce, 0, sizeof(ce));
	ce.size = 4096;
	vlen[0] = fabnet_msg_encode_eager(valid[0], MSGBUF, f->rid, f->sid, f->p->seq, 0, 0, 40);
	memset(valid[0] + FABNET_MSG_HDR_SIZE + FABNET_EAGER_FIXED, 0xEE, 40);
	vlen[1] = fabnet_msg_encode_fin(valid[1], MSGBUF, f->rid, f->sid, f->p->seq, 0, 0, 1, 40);
	vlen[2] = fabnet_msg_encode_cts(valid[2], MSGBUF, f->sid, f->rid, 77, 1, &ce);
	vlen[3] = fabnet_msg_encode_connect(valid[3], MSGBUF, lc ? lc->id : 1, 4242, 1, &proc,
					    dev->addr, (uint8_t)dev->addrlen, 0);
	for (int k = 0; k < 4; k++)
		for (size_t len = 0; len < vlen[k]; len++) {
			uint8_t *m = malloc(len ? len : 1);
			if (!m)
				break;
			memcpy(m, valid[k], len);
			inject_msg(m, len);
			free(m);
		}
	free(b);
}

enum {
	MAY_TAINT = 1,   /* the forgery may legitimately poison the receive: it must then fail */
};

/* One case: post n receives of `size` bytes each, forge, check, resync. */
static void recv_case(const char *name, int n, size_t size, forge_fn fn, unsigned flags)
{
	struct posted p;
	struct forge f;
	size_t sizes[NSLOT];
	int got[NSLOT];
	ncclResult_t res;
	enum outcome o;

	begin(name);
	canary_reset();
	for (int j = 0; j < n; j++)
		sizes[j] = size;
	if (post_recv(&p, n, sizes))
		goto out;
	f.p = &p;
	f.rid = rc->id;
	f.sid = rc->peer_id;
	fn(&f);
	if (why[0])
		goto out;
	o = poll_recv(&p, 20, got, &res);
	if (canary_intact(0, 0, "after the forgery"))
		goto out;
	if (o == COMPLETED) {
		bad("the receive completed successfully (sizes %d...) although only forged bytes "
		    "arrived", got[0]);
		goto out;
	}
	if (verbose)
		fprintf(stderr, "  [%s] receive seq %u: %s%s\n", name, p.seq, outcome_name(o),
			o == FAILED ? " with an error" : "");
	if (o == PENDING)
		genuine_complete(&p, flags & MAY_TAINT);
	else
		consume(&p);
out:
	if (p.req) { /* left pending by a harness failure: complete it somehow */
		int d = 0;
		for (int i = 0; i < 100 && p.req; i++)
			if (fabnet_api_test(p.req, &d, NULL) != ncclSuccess || d)
				p.req = NULL;
	}
	report(name);
}

/* A group of 2: entry 0 completes genuinely, then a forged EAGER repeats
 * entry 0 with other bytes; entry 0 must keep the genuine bytes. */
static void case_repeat_completed(void)
{
	const char *name = "EAGER repeating a completed entry of a pending group";
	size_t sizes[2] = {1000, 1000}, one[1] = {1000};
	struct fabnet_req *r;
	struct posted p;
	int64_t deadline;
	void *sreq = NULL;
	int d = 0, sz;

	begin(name);
	canary_reset();
	if (post_recv(&p, 2, sizes))
		goto out;
	r = p.req;
	pat_fill(sbuf, one[0], mix64(seed ^ ((uint64_t)p.seq << 8)));
	deadline = now_ms() + CASE_TIMEOUT_MS;
	while (!sreq) {
		if (fabnet_api_isend(sc, sbuf, one[0], TAG0, smh, &sreq) != ncclSuccess) {
			bad("genuine isend failed");
			goto out;
		}
		if (now_ms() > deadline) {
			bad("genuine isend kept returning NULL");
			goto out;
		}
	}
	while (!d) {
		if (fabnet_api_test(sreq, &d, &sz) != ncclSuccess) {
			bad("test() on the genuine isend failed");
			goto out;
		}
	}
	while (!r->u.recv.e[0].done) {
		progress(1);
		if (now_ms() > deadline) {
			bad("entry 0 never completed");
			goto out;
		}
	}
	eager(rc->id, rc->peer_id, p.seq, 0, 1000);
	progress(5);
	for (size_t i = 0; i < one[0]; i++)
		if (entry(0)[i] != pat_byte(i, mix64(seed ^ ((uint64_t)p.seq << 8)))) {
			bad("the forged EAGER overwrote byte %zu of a completed entry (0x%02x)", i,
			    entry(0)[i]);
			goto out;
		}
	if (canary_intact(0, 1000, "after the forgery"))
		goto out;
	/* entry 1 genuinely: send only it (entry 0's tag is taken) */
	{
		void *s2 = NULL;
		int got[2];
		ncclResult_t res = ncclSuccess;
		enum outcome o = PENDING;
		pat_fill(sbuf + 4096, 1000, mix64(seed ^ ((uint64_t)p.seq << 8) ^ 1));
		d = 0;
		while (!s2)
			if (fabnet_api_isend(sc, sbuf + 4096, 1000, TAG0 + 1, smh, &s2) != ncclSuccess) {
				bad("genuine isend of entry 1 failed");
				goto out;
			}
		while (!d)
			if (fabnet_api_test(s2, &d, &sz) != ncclSuccess) {
				bad("test() on the genuine isend of entry 1 failed");
				goto out;
			}
		while (o == PENDING) {
			o = poll_recv(&p, 1, got, &res);
			if (now_ms() > deadline) {
				bad("the group never completed");
				goto out;
			}
		}
		if (o == COMPLETED) {
			for (int j = 0; j < 2; j++)
				for (size_t i = 0; i < 1000; i++)
					if (entry(j)[i] != pat_byte(i, mix64(seed ^ ((uint64_t)p.seq << 8) ^
									     (uint64_t)j))) {
						bad("the group completed with wrong data in entry %d at "
						    "byte %zu", j, i);
						goto out;
					}
		}
	}
out:
	report(name);
}

/* A receive into accelerator memory is posted without FABNET_CTS_EAGER_OK:
 * the sender must write it by RMA, and the receiver must never memcpy an
 * EAGER payload into it (on a GPU pointer that memcpy faults). There is no
 * accelerator here: a host registration is marked NCCL_PTR_CUDA for the
 * duration of the case, which is all the protocol layer looks at. */
static void case_eager_into_accel(void)
{
	const char *name = "EAGER into a receive posted as accelerator memory";
	struct fabnet_rmr *mr = rmh;
	int saved = mr->type, got[1];
	size_t sizes[1] = {4096};
	ncclResult_t res;
	struct posted p;
	enum outcome o;

	begin(name);
	canary_reset();
	mr->type = NCCL_PTR_CUDA;
	if (post_recv(&p, 1, sizes))
		goto out;
	eager(rc->id, rc->peer_id, p.seq, 0, 100);
	o = poll_recv(&p, 20, got, &res);
	{
		size_t changed = 0;
		for (size_t i = 0; i < span; i++)
			changed += rbuf[i] != canary_byte(i);
		if (changed)
			bad("the EAGER payload (%zu bytes) was copied with memcpy into a buffer "
			    "registered as NCCL_PTR_CUDA, whose CTS entry did not allow eager data (a "
			    "device pointer would fault); the receive then %s%s", changed,
			    outcome_name(o), o == COMPLETED ? " successfully" : "");
		else if (o == COMPLETED)
			bad("the receive completed successfully from a forged EAGER that the CTS did "
			    "not allow");
	}
	mr->type = saved;
	if (why[0]) {
		if (o == PENDING) { /* leave the comms usable */
			int d = 0;
			for (int i = 0; i < 100 && p.req; i++)
				if (fabnet_api_test(p.req, &d, NULL) != ncclSuccess || d)
					p.req = NULL;
		}
		if (o != PENDING)
			consume(&p);
		goto out;
	}
	if (o == PENDING)
		genuine_complete(&p, 1);
	else
		consume(&p);
out:
	mr->type = saved;
	report(name);
}

/* Positive controls: well-formed forgeries do reach the protocol (otherwise
 * every case above would pass for nothing). The sender's CTS is then used up. */
static void control_case(const char *name, int imm)
{
	struct posted p;
	size_t sizes[1] = {imm ? 65536 : 100};
	int got[1];
	ncclResult_t res;
	enum outcome o;

	begin(name);
	canary_reset();
	if (post_recv(&p, 1, sizes))
		goto out;
	if (imm) {
		fin(rc->id, rc->peer_id, p.seq, 0, 0, 1, 5000);
		inject_imm(fabnet_imm_pack(rc->id, (uint8_t)p.seq, 0, gen()));
	} else {
		eager(rc->id, rc->peer_id, p.seq, 0, 60);
	}
	o = poll_recv(&p, 50, got, &res);
	if (o != COMPLETED) {
		bad("a well-formed forged %s left the receive %s (%d): the injection does not reach "
		    "the protocol, the other cases prove nothing", imm ? "FIN + immediate data" :
		    "EAGER", outcome_name(o), (int)res);
		goto out;
	}
	if (got[0] != (imm ? 5000 : 60)) {
		bad("the receive reported %d bytes", got[0]);
		goto out;
	}
	if (!imm)
		for (int i = 0; i < 60; i++)
			if (entry(0)[i] != 0xEE) {
				bad("the forged EAGER's bytes did not land");
				goto out;
			}
	canary_reset();
	consume(&p);
out:
	report(name);
}

/* ---- the send side and the connection ----------------------------------------------- */

/* A CTS that must be dropped: the send comm's state does not change, and a
 * genuine transfer still works. */
static void cts_case(const char *name, int which)
{
	struct fabnet_cts_slot before[FABNET_NSLOTS];
	struct fabnet_cts_entry e[2];
	uint32_t seq = sc->seq, src = sc->peer_id;
	uint8_t n = 1;
	size_t len;
	struct posted p;
	size_t sizes[1] = {3000};

	begin(name);
	canary_reset();
	memset(e, 0, sizeof(e));
	e[0].addr = (uint64_t)(uintptr_t)entry(0);
	e[0].key = ((struct fabnet_rmr *)rmh)->mr[0]->key;
	e[0].size = 1 << 20;
	e[0].tag = TAG0;
	e[0].flags = FABNET_CTS_EAGER_OK;
	e[1] = e[0];
	switch (which) {
	case 0: seq += FABNET_NSLOTS; break;        /* beyond the window */
	case 1: seq -= 1; break;                    /* before it (already used) */
	case 2: seq += 0x80000000u; break;          /* far away */
	case 3: src = (uint32_t)sc->peer_id + 1; break; /* from a comm that is not the peer */
	case 4: src |= 0x10000u; break;             /* a peer id wider than 16 bits */
	case 5: break;                              /* right in all but the token */
	}
	memcpy(before, sc->u.send.cts, sizeof(before));
	len = fabnet_msg_encode_cts(mbuf, MSGBUF, sc->id, src, seq, n, e);
	if (which == 5) {
		fabnet_msg_set_token(mbuf, sc->token ^ 0x8000000000000000ull);
		inject_raw(mbuf, len);
	} else {
		inject_msg(mbuf, len);
	}
	if (memcmp(before, sc->u.send.cts, sizeof(before))) {
		bad("the send comm took the forged CTS (seq %u, from comm %u) into its window", seq,
		    src);
		goto out;
	}
	if (sc->state != FABNET_READY) {
		bad("the forged CTS failed the send comm (state %d)", sc->state);
		goto out;
	}
	if (post_recv(&p, 1, sizes) == 0)
		genuine_complete(&p, 0);
out:
	report(name);
}

/* REVOKE withdraws a receive the sender has not finished: from anyone but
 * the connection's peer (no token) it must change nothing; from the peer it
 * marks the send window's slot (the control: the injection reaches it). */
static void revoke_case(const char *name)
{
	struct fabnet_cts_slot *s = &sc->u.send.cts[sc->seq % FABNET_NSLOTS];
	size_t len;

	begin(name);
	len = fabnet_msg_encode_revoke(mbuf, MSGBUF, sc->id, sc->peer_id, sc->seq, 0);
	fabnet_msg_set_token(mbuf, sc->token ^ 4);
	inject_raw(mbuf, len);
	if (s->revoked) {
		bad("a REVOKE without the connection's token withdrew receive %u", sc->seq);
		s->revoked = 0;
		goto out;
	}
	inject_msg(mbuf, len);
	if (!s->revoked || s->seq != sc->seq) {
		bad("control: the peer's REVOKE of receive %u did not reach the send comm", sc->seq);
		goto out;
	}
	s->revoked = 0; /* undo the control's effect: the genuine receive of this seq comes */
	{
		struct posted p;
		size_t sizes[1] = {3000};
		canary_reset();
		if (post_recv(&p, 1, sizes) == 0)
			genuine_complete(&p, 0);
	}
out:
	report(name);
}

static void connect_case(const char *name, int which)
{
	struct fabnet_proc proc = {0x1234, 4242};
	unsigned pending_before = lc->u.listen.npending;
	uint16_t peer_before = sc->peer_id;
	void *comm = NULL;
	size_t len = 0;

	begin(name);
	switch (which) {
	case 0: /* CONNECT with a wrong nonce */
		len = fabnet_msg_encode_connect(mbuf, MSGBUF, lc->id, 4242, lc->u.listen.nonce ^ 1,
						&proc, dev->addr, (uint8_t)dev->addrlen, 0);
		break;
	case 1: /* CONNECT addressed to a comm that is not a listener */
		len = fabnet_msg_encode_connect(mbuf, MSGBUF, rc->id, 4242, lc->u.listen.nonce,
						&proc, dev->addr, (uint8_t)dev->addrlen, 0);
		break;
	case 2: /* CONNECT_ACK for the connected send comm */
		len = fabnet_msg_encode_ack(mbuf, MSGBUF, sc->id, 777, sc->u.send.nonce, &proc);
		break;
	}
	inject_msg(mbuf, len);
	progress(3);
	if (lc->u.listen.npending != pending_before) {
		bad("the listener queued the forged CONNECT (%u pending)", lc->u.listen.npending);
		goto out;
	}
	if (fabnet_api_accept(lc, &comm) != ncclSuccess || comm) {
		bad("accept returned a comm for a forged CONNECT");
		if (comm)
			fabnet_api_close(comm, 3);
		goto out;
	}
	if (sc->peer_id != peer_before || sc->state != FABNET_READY) {
		bad("the forged CONNECT_ACK changed the send comm (peer %u, state %d)", sc->peer_id,
		    sc->state);
		goto out;
	}
	{
		struct posted p;
		size_t sizes[1] = {70000};
		canary_reset();
		if (post_recv(&p, 1, sizes) == 0)
			genuine_complete(&p, 0);
	}
out:
	report(name);
}

/* Connects another pair on the listener; 0, or -1 after bad(). */
static int connect_extra(void *handle, struct fabnet_comm **s, struct fabnet_comm **r)
{
	int64_t deadline = now_ms() + 5000;

	while (!*s || !*r) {
		if ((!*s && fabnet_api_connect(0, handle, (void **)s) != ncclSuccess) ||
		    (!*r && fabnet_api_accept(lc, (void **)r) != ncclSuccess))
			return bad("connect or accept failed (%s)", firstlog);
		if (now_ms() > deadline)
			return bad("not connected after 5 s (send comm %s)", *s ? "ready" : "connecting");
	}
	return 0;
}

/* Posts a receive of size bytes on r and a send of them from sdata on s while
 * the rail looks full, so the send waits for room with no write posted.
 * 0, or -1 after bad(); the caller restores dev->rail_bytes. */
static int post_stalled_send(struct fabnet_comm *s, struct fabnet_comm *r, void *sdata,
			     void *smhandle, size_t size, void **rreq, void **sreq)
{
	void *data = rbuf, *mh = rmh;
	int tag = TAG0;
	int64_t deadline = now_ms() + 5000;

	while (!*rreq && now_ms() < deadline)
		if (fabnet_api_irecv(r, 1, &data, &size, &tag, &mh, rreq) != ncclSuccess)
			break;
	dev->rail_bytes = fabnet_config()->rail_inflight; /* the send waits for its rail */
	while (*rreq && !*sreq && now_ms() < deadline)
		if (fabnet_api_isend(s, sdata, size, tag, smhandle, sreq) != ncclSuccess)
			break;
	if (!*rreq || !*sreq)
		return bad("could not post the receive and the send (%p, %p)", *rreq, *sreq);
	if (((struct fabnet_req *)*sreq)->u.send.writes_posted)
		return bad("the send posted %u writes on a full rail",
			   ((struct fabnet_req *)*sreq)->u.send.writes_posted);
	return 0;
}

/* Writes the provider never completes (shm to a peer whose comm closed) hold
 * a deregMr of their buffer for the peer timeout; they must not hold every
 * later deregMr and the close as well, the timeout each time, with the
 * proxy thread and every other comm of the device waiting. A send stalled on
 * a full rail stands in for them: it is made to look as if the provider held
 * one of its writes. */
static void given_up_writes_case(const char *name, void *handle)
{
	struct fabnet_comm *s = NULL, *r = NULL;
	size_t size = 256 * 1024, saved = dev->rail_bytes;
	void *rreq = NULL, *sreq = NULL, *mh1 = NULL, *mh2 = NULL;
	uint8_t *b1 = sbuf, *b2 = sbuf + 512 * 1024;
	struct fabnet_req *sr;
	int64_t t0, t1, t2;

	begin(name);
	forged = 0;
	if (connect_extra(handle, &s, &r))
		goto out;
	if (fabnet_api_reg_mr(s, b1, size, NCCL_PTR_HOST, &mh1) != ncclSuccess ||
	    fabnet_api_reg_mr(s, b2, 4096, NCCL_PTR_HOST, &mh2) != ncclSuccess) {
		bad("harness: regMr failed");
		goto out;
	}
	if (post_stalled_send(s, r, b1, mh1, size, &rreq, &sreq))
		goto out;
	sr = sreq;
	pthread_mutex_lock(&dev->lock);
	sr->u.send.writes_posted = sr->u.send.writes_done + 1; /* "the provider holds one" */
	pthread_mutex_unlock(&dev->lock);
	t0 = now_ms();
	fabnet_api_dereg_mr(s, mh1); /* waits the peer timeout, then gives them up */
	mh1 = NULL;
	t1 = now_ms();
	fabnet_api_dereg_mr(s, mh2);
	mh2 = NULL;
	t2 = now_ms();
	if (t1 - t0 < (int64_t)fabnet_config()->peer_timeout_ms / 2)
		bad("harness: the first deregMr did not wait for the write (%" PRId64 " ms)", t1 - t0);
	else if (t2 - t1 > (int64_t)fabnet_config()->peer_timeout_ms / 2)
		bad("a deregMr of another buffer waited %" PRId64 " ms for the write the first one "
		    "gave up on", t2 - t1);
	pthread_mutex_lock(&dev->lock);
	sr->u.send.writes_posted = sr->u.send.writes_done; /* back to the truth */
	pthread_mutex_unlock(&dev->lock);
out:
	dev->rail_bytes = saved;
	if (mh1)
		fabnet_api_dereg_mr(s, mh1);
	if (mh2)
		fabnet_api_dereg_mr(s, mh2);
	if (s)
		fabnet_api_close(s, 2);
	if (r)
		fabnet_api_close(r, 3);
	report(name);
}

/* The peer's comm is gone without its CLOSE reaching us (lost, or the peer
 * freed it some other way): our keepalives are still delivered, to the
 * peer's endpoint, so delivery alone would keep the comm looking alive for
 * good. The peer answers a PING for a comm it no longer has with a CLOSE. */
static void stale_ping_case(const char *name, void *handle)
{
	struct fabnet_comm *s = NULL, *r = NULL;
	void *sreq = NULL;
	ncclResult_t res = ncclSuccess;
	int64_t deadline;

	begin(name);
	forged = 0;
	if (connect_extra(handle, &s, &r))
		goto out;
	pthread_mutex_lock(&dev->lock);
	fabnet_comm_free(r); /* gone, and no CLOSE sent */
	r = NULL;
	s->ping_sent.tv_sec = 0; /* a keepalive is due now */
	s->checked.tv_sec = 0;
	fabnet_proto_check_peer_now(s);
	pthread_mutex_unlock(&dev->lock);
	if (!s->ping_pending) {
		bad("harness: no keepalive went out");
		goto out;
	}
	deadline = now_ms() + 3000;
	while (res == ncclSuccess && now_ms() < deadline) {
		progress(2);
		res = fabnet_api_isend(s, sbuf, 100, TAG0, smh, &sreq);
		if (sreq) {
			bad("an isend on the comm got a request: something answered with a CTS");
			goto out;
		}
	}
	if (res == ncclSuccess)
		bad("3 s after a keepalive to a comm the peer no longer has, the send comm still "
		    "takes sends (it waits for a CTS that cannot come)");
out:
	if (s)
		fabnet_api_close(s, 2);
	report(name);
}

/* A rendezvous send waiting for room on its rail when its comm fails must
 * end, with an error: its writes will never be posted. */
static void stalled_send_case(const char *name, void *handle)
{
	struct fabnet_comm *s = NULL, *r = NULL;
	size_t size = 256 * 1024, saved = dev->rail_bytes;
	void *rreq = NULL, *sreq = NULL;
	int done = 0, got = -1;
	ncclResult_t res = ncclSuccess;
	int64_t deadline;

	begin(name);
	forged = 0;
	if (connect_extra(handle, &s, &r))
		goto out;
	if (post_stalled_send(s, r, sbuf, smh, size, &rreq, &sreq))
		goto out;
	fabnet_proto_fail_comm(s, "failed by fabnet-hostile, its send waiting for a rail");
	deadline = now_ms() + 3000;
	while (!done && now_ms() < deadline) {
		res = fabnet_api_test(sreq, &done, &got);
		usleep(100);
	}
	if (!done)
		bad("the waiting send of a failed comm did not complete within 3 s");
	else if (res != ncclRemoteError)
		bad("the waiting send of a failed comm completed with %d, not ncclRemoteError",
		    (int)res);
out:
	dev->rail_bytes = saved;
	if (r)
		fabnet_proto_fail_comm(r, "closed by fabnet-hostile with its receive posted");
	if (s)
		fabnet_api_close(s, 2);
	if (r)
		fabnet_api_close(r, 3);
	report(name);
}

/* Another pair on the same device, driven by a thread of its own the way
 * NCCL's proxy threads of other communicators drive theirs: round trips of
 * an eager-sized message, the longest one timed. */
struct bystander {
	struct fabnet_comm *s, *r;
	void *smh, *rmh;
	uint8_t sbuf[256], rbuf[256];
	int stop, measuring, rounds; /* shared with the thread: __atomic */
	int failed;                  /* the thread's until it is joined */
	int64_t longest_ms;          /* of the round trips begun while measuring */
};

static int bystander_round(struct bystander *b)
{
	void *data = b->rbuf, *rreq = NULL, *sreq = NULL;
	size_t size = sizeof(b->rbuf);
	int tag = TAG0, rdone = 0, sdone = 0, got;
	int64_t deadline = now_ms() + CASE_TIMEOUT_MS;

	while (!rreq && now_ms() < deadline)
		if (fabnet_api_irecv(b->r, 1, &data, &size, &tag, &b->rmh, &rreq) != ncclSuccess)
			return -1;
	while (!sreq && now_ms() < deadline)
		if (fabnet_api_isend(b->s, b->sbuf, sizeof(b->sbuf), tag, b->smh, &sreq) != ncclSuccess)
			return -1;
	while ((!rdone || !sdone) && now_ms() < deadline) {
		if ((!rdone && fabnet_api_test(rreq, &rdone, &got) != ncclSuccess) ||
		    (!sdone && fabnet_api_test(sreq, &sdone, &got) != ncclSuccess))
			return -1;
	}
	return rdone && sdone && !memcmp(b->rbuf, b->sbuf, sizeof(b->rbuf)) ? 0 : -1;
}

static void *bystander_main(void *arg)
{
	struct bystander *b = arg;

	for (int n = 0; !__atomic_load_n(&b->stop, __ATOMIC_ACQUIRE); n++) {
		int measuring = __atomic_load_n(&b->measuring, __ATOMIC_ACQUIRE);
		int64_t t0 = now_ms();
		memset(b->sbuf, (uint8_t)(n * 7 + 1), sizeof(b->sbuf));
		if (bystander_round(b)) {
			b->failed = 1;
			break;
		}
		if (measuring && now_ms() - t0 > b->longest_ms)
			b->longest_ms = now_ms() - t0;
		__atomic_store_n(&b->rounds, n + 1, __ATOMIC_RELEASE);
	}
	return NULL;
}

/* A deregMr, or a close, waiting on its peer (here a sender that never
 * answers the REVOKE of a receive posted into the buffer, until a keepalive
 * finds its comm gone) must not take the device from its other comms: NCCL
 * runs other communicators' proxy threads on the same device meanwhile, and
 * an abort over many comms would otherwise stop all of them for as long. */
static void waiting_teardown_case(const char *name, void *handle, int close_first)
{
	struct fabnet_comm *s = NULL, *r = NULL;
	struct bystander *b = calloc(1, sizeof(*b));
	void *mh = NULL, *rreq = NULL, *data = rbuf;
	size_t size = 65536;
	int tag = TAG0, started = 0;
	int64_t t0, waited, deadline = now_ms() + 5000;
	pthread_t th;

	begin(name);
	forged = 0;
	if (!b || connect_extra(handle, &s, &r) || connect_extra(handle, &b->s, &b->r))
		goto out;
	if (fabnet_api_reg_mr(r, rbuf, size, NCCL_PTR_HOST, &mh) != ncclSuccess ||
	    fabnet_api_reg_mr(b->s, b->sbuf, sizeof(b->sbuf), NCCL_PTR_HOST, &b->smh) != ncclSuccess ||
	    fabnet_api_reg_mr(b->r, b->rbuf, sizeof(b->rbuf), NCCL_PTR_HOST, &b->rmh) != ncclSuccess) {
		bad("harness: regMr failed");
		goto out;
	}
	while (!rreq && now_ms() < deadline)
		if (fabnet_api_irecv(r, 1, &data, &size, &tag, &mh, &rreq) != ncclSuccess)
			break;
	if (!rreq) {
		bad("harness: could not post the receive");
		goto out;
	}
	progress(5); /* its CTS is with the sender, which will never write */
	pthread_mutex_lock(&dev->lock);
	r->peer_token ^= 0x5a5a00; /* what r sends the sender from now on is dropped there */
	clock_gettime(CLOCK_MONOTONIC, &r->ping_sent); /* no keepalive for a while */
	r->checked = r->ping_sent;
	pthread_mutex_unlock(&dev->lock);
	if (pthread_create(&th, NULL, bystander_main, b)) {
		bad("harness: pthread_create failed");
		goto out;
	}
	started = 1;
	while (__atomic_load_n(&b->rounds, __ATOMIC_ACQUIRE) < 10 && now_ms() < deadline)
		usleep(1000);
	__atomic_store_n(&b->measuring, 1, __ATOMIC_RELEASE);
	t0 = now_ms();
	if (close_first) {
		fabnet_api_close(r, 3); /* waits for the sender's writes or its end */
		r = NULL;
		fabnet_api_dereg_mr(s, mh);
	} else {
		fabnet_api_dereg_mr(r, mh); /* waits for the sender's REVOKED or its end */
	}
	mh = NULL;
	waited = now_ms() - t0;
	__atomic_store_n(&b->stop, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	started = 0;
	if (b->failed)
		bad("a transfer on another comm of the device failed (%s)", firstlog);
	else if (waited < 300)
		bad("harness: the %s did not wait on the sender (%" PRId64 " ms)",
		    close_first ? "close" : "deregMr", waited);
	else if (b->longest_ms > waited / 2)
		bad("while a %s waited %" PRId64 " ms on its peer, a round trip on another comm of "
		    "the device took %" PRId64 " ms (%d round trips): the wait held the device",
		    close_first ? "close" : "deregMr", waited, b->longest_ms, b->rounds);
	else if (verbose)
		printf("  %s waited %" PRId64 " ms; another comm meanwhile: longest round trip %"
		       PRId64 " ms\n", close_first ? "close" : "deregMr", waited, b->longest_ms);
out:
	if (started) {
		__atomic_store_n(&b->stop, 1, __ATOMIC_RELEASE);
		pthread_join(th, NULL);
	}
	if (mh)
		fabnet_api_dereg_mr(r, mh);
	if (b) {
		if (b->smh)
			fabnet_api_dereg_mr(b->s, b->smh);
		if (b->rmh)
			fabnet_api_dereg_mr(b->r, b->rmh);
		if (b->s)
			fabnet_api_close(b->s, 2);
		if (b->r)
			fabnet_api_close(b->r, 3);
		free(b);
	}
	if (s)
		fabnet_api_close(s, 2);
	if (r)
		fabnet_api_close(r, 3);
	report(name);
}

/* A peer whose CONNECT names a process of this host that is not alive (a
 * forged or a wrong pid) must not have its comm failed at the first liveness
 * check as "exited": only keepalives can tell then. */
static void dead_pid_case(const char *name)
{
	struct fabnet_proc proc = *fabnet_self_proc();
	struct fabnet_comm *r = NULL;
	int64_t deadline = now_ms() + 5000;
	pid_t child = fork();
	size_t len;

	begin(name);
	forged = 0;
	if (child == 0)
		_exit(0);
	if (child < 0 || waitpid(child, NULL, 0) != child) {
		bad("harness: no exited process to name");
		goto out;
	}
	proc.pid = (uint32_t)child; /* exited and reaped */
	len = fabnet_msg_encode_connect(mbuf, MSGBUF, lc->id, 4000, lc->u.listen.nonce, &proc,
					dev->addr, (uint8_t)dev->addrlen, 0);
	inject_msg(mbuf, len);
	while (!r && now_ms() < deadline)
		if (fabnet_api_accept(lc, (void **)&r) != ncclSuccess)
			break;
	if (!r) {
		bad("accept returned no comm for the CONNECT (%s)", firstlog);
		goto out;
	}
	pthread_mutex_lock(&dev->lock);
	r->checked.tv_sec = 0;
	fabnet_proto_check_peer_now(r);
	pthread_mutex_unlock(&dev->lock);
	if (r->state == FABNET_FAILED)
		bad("the comm failed at its first liveness check: its peer named process %d, which "
		    "had exited (%s)", (int)child, firstlog);
out:
	if (r)
		fabnet_api_close(r, 3);
	report(name);
}

/* A CTS forged for a comm that is still connecting (its ACK not yet in) must
 * neither lock the genuine ACK out nor stay in the window for a send to
 * write to: the ACK, which carries the listener's nonce, decides the peer. */
static void cts_before_ack_case(const char *name, void *handle)
{
	struct fabnet_proto_dev *pd = dev->proto;
	struct fabnet_cts_entry e = {.addr = (uint64_t)(uintptr_t)sbuf, .key = 1, .size = 4096};
	struct fabnet_comm *s = NULL, *r = NULL, *connecting;
	int64_t deadline;
	size_t len;

	begin(name);
	forged = 1;
	if (fabnet_api_connect(0, handle, (void **)&s) != ncclSuccess || s || !pd->connecting) {
		bad("connect did not leave a comm connecting (returned %p)", (void *)s);
		goto out;
	}
	connecting = pd->connecting;
	len = fabnet_msg_encode_cts(mbuf, MSGBUF, connecting->id, 999, 0, 1, &e);
	inject_msg(mbuf, len);
	deadline = now_ms() + 5000;
	while (!s || !r) {
		if ((!s && fabnet_api_connect(0, handle, (void **)&s) != ncclSuccess) ||
		    (!r && fabnet_api_accept(lc, (void **)&r) != ncclSuccess)) {
			bad("connect or accept failed after the forged CTS (%s)", firstlog);
			goto out;
		}
		if (now_ms() > deadline) {
			bad("not connected 5 s after a forged CTS came before the ACK (send comm "
			    "%s, peer id %u)", s ? "ready" : "connecting", connecting->peer_id);
			goto out;
		}
	}
	if (s->peer_id != r->id)
		bad("the send comm's peer is comm %u, not the accepting comm %u", s->peer_id, r->id);
	else if (s->u.send.cts[0].valid)
		bad("the forged CTS (from comm 999) is still in the send comm's window");
out:
	if (s)
		fabnet_api_close(s, 2);
	if (r)
		fabnet_api_close(r, 3);
	report(name);
}

/* A peer (or anything else on the network) sending garbage as fast as it can
 * must not turn into as many WARN lines: they would drown the job's log and
 * slow the progress loop that writes them. */
static void flood_case(const char *name, int n)
{
	int logged;

	begin(name);
	for (int i = 0; i < n; i++) {
		memset(mbuf, 0, 64);
		mbuf[0] = (uint8_t)(0x5a ^ i); /* not the message magic */
		inject_msg(mbuf, 32 + (size_t)(i % 32));
	}
	pthread_mutex_lock(&log_lock);
	logged = nlog;
	pthread_mutex_unlock(&log_lock);
	if (logged > FABNET_DROP_LOG_BURST + 1)
		bad("%d malformed messages gave %d log lines (at most %d a second expected)", n,
		    logged, FABNET_DROP_LOG_BURST);
	else if (!logged)
		bad("%d malformed messages were dropped without a single log line", n);
	else {
		struct posted p;
		size_t sizes[1] = {3000};
		canary_reset();
		if (post_recv(&p, 1, sizes) == 0)
			genuine_complete(&p, 0);
	}
	report(name);
}

/* ---- genuine traffic at the end ----------------------------------------------------- */

static void final_case(const char *name, int n, const size_t *sizes)
{
	struct posted p;

	begin(name);
	forged = 0;
	canary_reset();
	if (post_recv(&p, n, sizes) == 0)
		genuine_complete(&p, 0);
	report(name);
}

static void final_many(const char *name, int count)
{
	begin(name);
	forged = 0;
	span = 2 * SLOT;
	for (int i = 0; i < count && !why[0]; i++) {
		struct posted p;
		size_t sz[2] = {(size_t)(i * 977) % 20000, (size_t)(i * 131) % 9000};
		int n = i % 3 == 0 ? 2 : 1;
		canary_reset();
		if (post_recv(&p, n, sz) == 0)
			genuine_complete(&p, 0);
		alarm(60);
	}
	report(name);
}

int main(int argc, char **argv)
{
	uint8_t handle[NCCL_NET_HANDLE_MAXSIZE];
	void *l = NULL, *s = NULL, *r = NULL;
	int64_t deadline;
	int ndev = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--verbose") || !strcmp(argv[i], "-v"))
			verbose = 1;
		else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
			seed = strtoull(argv[++i], NULL, 0);
		else {
			fprintf(stderr, "usage: fabnet-hostile [--verbose] [--seed S]\n");
			return 2;
		}
	}
	if (getenv("FABNET_HOSTILE_VERBOSE"))
		verbose = 1;
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGSEGV, on_crash);
	signal(SIGBUS, on_crash);
	signal(SIGABRT, on_crash);
	signal(SIGALRM, on_crash);
	signal(SIGPIPE, SIG_IGN);
	alarm(120);

	/* set-up: device 0 connected to itself */
	if (fabnet_api_init(logger) != ncclSuccess || fabnet_api_devices(&ndev) != ncclSuccess ||
	    ndev < 1) {
		printf("FAIL setup: init found no device (%s)\n", firstlog);
		printf("0 passed, 1 failed\n");
		return 1;
	}
	if (fabnet_api_listen(0, handle, &l) != ncclSuccess || !l) {
		printf("FAIL setup: listen failed (%s)\n", firstlog);
		printf("0 passed, 1 failed\n");
		return 1;
	}
	deadline = now_ms() + 30000;
	while (!s || !r) {
		if ((!s && fabnet_api_connect(0, handle, &s) != ncclSuccess) ||
		    (!r && fabnet_api_accept(l, &r) != ncclSuccess) || now_ms() > deadline) {
			printf("FAIL setup: connecting device 0 to itself failed (%s)\n", firstlog);
			printf("0 passed, 1 failed\n");
			return 1;
		}
	}
	lc = l;
	sc = s;
	rc = r;
	dev = rc->dev;
	rbuf = mmap(NULL, RBUF, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	sbuf = mmap(NULL, SBUF, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (rbuf == MAP_FAILED || sbuf == MAP_FAILED ||
	    fabnet_api_reg_mr(rc, rbuf, RBUF, NCCL_PTR_HOST, &rmh) != ncclSuccess ||
	    fabnet_api_reg_mr(sc, sbuf, SBUF, NCCL_PTR_HOST, &smh) != ncclSuccess) {
		printf("FAIL setup: buffers (%s)\n", firstlog);
		printf("0 passed, 1 failed\n");
		return 1;
	}
	printf("# fabnet-hostile: provider %s, device %s (eager up to %zu bytes): recv comm %u, "
	       "send comm %u, listener %u\n", dev->prov_name, dev->name, dev->eager_max, rc->id,
	       sc->id, lc->id);
	fflush(stdout);

	/* a genuine transfer first: the set-up works */
	{
		size_t one[1] = {5000};
		final_case("genuine transfer before any forgery", 1, one);
	}

	control_case("control: a well-formed forged EAGER completes the receive", 0);
	control_case("control: a well-formed forged FIN + immediate data completes it", 1);

	/* EAGER */
	recv_case("EAGER with more bytes than posted", 1, 100, f_eager_too_big, 0);
	recv_case("EAGER for a stale sequence (seq - 1)", 1, 100, f_eager_stale, 0);
	recv_case("EAGER for a future sequence (seq + 1)", 1, 100, f_eager_future, 0);
	recv_case("EAGER for seq + 32 (same slot, later round)", 1, 100, f_eager_next_round, 0);
	recv_case("EAGER for seq with bit 16 flipped", 1, 100, f_eager_seq_high_bits, 0);
	recv_case("EAGER with index n (1-buffer receive)", 1, 100, f_eager_idx_n, 0);
	recv_case("EAGER with index n (3-buffer group)", 3, 100, f_eager_idx_n, 0);
	recv_case("EAGER with index 7 (2-buffer group)", 2, 100, f_eager_idx_7, 0);
	recv_case("EAGER with index 200", 1, 100, f_eager_idx_huge, 0);
	recv_case("EAGER from a comm that is not the peer", 1, 100, f_eager_wrong_src, 0);
	recv_case("EAGER from comm id 0", 1, 100, f_eager_src_zero, 0);
	recv_case("EAGER from the peer id + 65536", 1, 100, f_eager_src_wide, 0);
	recv_case("EAGER addressed to the send comm", 1, 100, f_eager_to_send_comm, 0);
	recv_case("EAGER for a comm id that does not exist", 1, 100, f_eager_no_comm, 0);
	recv_case("EAGER for the recv comm id + 65536", 1, 100, f_eager_dst_wide, 0);
	recv_case("EAGER whose size exceeds its payload", 1, 100, f_eager_short_payload, 0);
	recv_case("EAGER whose payload exceeds its size", 1, 100, f_eager_long_payload, 0);
	recv_case("EAGER with unknown flags", 1, 100, f_eager_bad_flags, 0);
	recv_case("EAGER with reserved bytes set", 1, 100, f_eager_reserved, 0);
	case_repeat_completed();
	case_eager_into_accel();

	/* FIN (rendezvous-sized receives) */
	recv_case("FIN with index n (1-buffer receive)", 1, 65536, f_fin_idx_n, 0);
	recv_case("FIN with index n (2-buffer group)", 2, 65536, f_fin_idx_n, 0);
	recv_case("FIN with index 9", 1, 65536, f_fin_idx_huge, 0);
	recv_case("FIN claiming more bytes than posted", 1, 65536, f_fin_too_big, 0);
	recv_case("FIN claiming 2^64-1 bytes", 1, 65536, f_fin_size_huge, 0);
	recv_case("FIN duplicate", 1, 65536, f_fin_duplicate, MAY_TAINT);
	recv_case("FIN claiming bytes with no writes", 1, 65536, f_fin_no_writes, 0);
	recv_case("FIN from a comm that is not the peer", 1, 65536, f_fin_wrong_src, 0);
	recv_case("FIN for a sequence not posted", 1, 65536, f_fin_not_posted, 0);
	recv_case("FIN with the error flag", 1, 65536, f_fin_error_flag, MAY_TAINT);
	recv_case("FIN announcing a write that never lands", 1, 65536, f_fin_after_eager_size,
		  MAY_TAINT);

	/* immediate data */
	recv_case("immediate data for a comm id that does not exist", 1, 65536, f_imm_no_comm, 0);
	recv_case("immediate data for comm id 0", 1, 65536, f_imm_comm_zero, 0);
	recv_case("immediate data for the send comm's id", 1, 65536, f_imm_send_comm, 0);
	recv_case("immediate data for a sequence not posted", 1, 65536, f_imm_not_posted, 0);
	recv_case("immediate data with each generation bit flipped", 1, 65536, f_imm_reserved, 0);
	recv_case("immediate data wider than 32 bits", 1, 65536, f_imm_wide, 0);
	recv_case("immediate data with index n", 1, 65536, f_imm_idx_n, 0);
	recv_case("immediate data for the posted receive, no FIN", 1, 65536, f_imm_posted,
		  MAY_TAINT);
	recv_case("immediate data for an eager-sized receive", 1, 100, f_imm_posted, MAY_TAINT);

	/* other messages */
	recv_case("CLOSE from a comm that is not the peer", 1, 100, f_close_wrong_src, 0);
	recv_case("PING from a stranger", 1, 100, f_ping_forged, 0);
	recv_case("a message with CQ data carrying the posted receive's immediate data", 1, 65536,
		  f_senddata_imm, MAY_TAINT);

	/* right ids, no token */
	recv_case("EAGER right in every field but the connection's token", 1, 100,
		  f_eager_no_token, 0);
	recv_case("FIN of 0 bytes right in every field but the connection's token", 1, 65536,
		  f_fin_no_token, 0);
	recv_case("CLOSE from the peer without the connection's token", 1, 100, f_close_no_token,
		  0);
	recv_case("immediate data of an earlier comm under the same id (generation - 1)", 1,
		  65536, f_imm_old_gen, MAY_TAINT);
	recv_case("garbage and truncated messages of every length 0..64", 1, 65536, f_garbage, 0);

	/* the send comm and the listener */
	cts_case("CTS beyond the window (seq + 32)", 0);
	cts_case("CTS before the window (seq - 1)", 1);
	cts_case("CTS far outside the window (seq + 2^31)", 2);
	cts_case("CTS from a comm that is not the peer", 3);
	cts_case("CTS from the peer id + 65536", 4);
	cts_case("CTS right in every field but the connection's token", 5);
	revoke_case("REVOKE right in every field but the connection's token");
	connect_case("CONNECT with a wrong nonce", 0);
	connect_case("CONNECT to a comm that is not a listener", 1);
	connect_case("CONNECT_ACK for a connected send comm", 2);
	dead_pid_case("CONNECT naming a process of this host that has exited");
	cts_before_ack_case("CTS forged for a comm still connecting, before its ACK", handle);
	sleep(1); /* a log window of its own */
	flood_case("a flood of 1000 malformed messages", 1000);

	/* genuine traffic on the same comms */
	{
		static const size_t s0[1] = {0}, s1[1] = {1}, s4k[1] = {4096}, s64k[1] = {65539},
				    s1m[1] = {MiB};
		static const size_t g3[3] = {7000, 0, 300000};
		static const size_t g8[8] = {1, 2, 9000, 4, 70000, 6, 7, 8192};
		final_case("genuine transfer: 0 bytes", 1, s0);
		final_case("genuine transfer: 1 byte", 1, s1);
		final_case("genuine transfer: 4096 bytes", 1, s4k);
		final_case("genuine transfer: 65539 bytes", 1, s64k);
		final_case("genuine transfer: 1 MiB", 1, s1m);
		final_case("genuine transfer: group of 3", 3, g3);
		final_case("genuine transfer: group of 8", 8, g8);
		final_many("genuine transfers: 300 more (past the 32 slots and the 8-bit sequence "
			   "wrap)", 300);
	}
	stalled_send_case("a send waiting for a full rail when its comm fails", handle);
	stale_ping_case("a keepalive to a comm the peer no longer has, its CLOSE lost", handle);
	given_up_writes_case("writes a deregMr gave up on hold no later deregMr", handle);
	waiting_teardown_case("a deregMr waiting on its sender leaves the device to other comms",
			      handle, 0);
	waiting_teardown_case("a close waiting on its sender leaves the device to other comms",
			      handle, 1);

	cur_case = "teardown";
	fabnet_api_dereg_mr(rc, rmh);
	fabnet_api_dereg_mr(sc, smh);
	fabnet_api_close(sc, 2);
	fabnet_api_close(rc, 3);
	fabnet_api_close(lc, 1);
	fabnet_api_fini();
	alarm(0);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
