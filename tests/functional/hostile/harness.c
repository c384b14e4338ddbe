/*
 * fabnet-hostile's harness (hostile.h): the state every case shares, the
 * injection of forged input, the genuine sender and the canary checks.
 */
#include "hostile.h"

/* ---- state ------------------------------------------------------------------- */

int verbose;
uint64_t seed = 0x4057113ull;
int passed, failed;
const char *volatile cur_case = "setup";

struct fabnet_comm *lc, *sc, *rc; /* listen, send, recv */
struct fabnet_dev *dev;
uint8_t *rbuf, *sbuf;
void *rmh, *smh;

/* what the plugin logged during the current case */
int nlog;
char firstlog[512];
pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

char why[1024];
size_t span = RBUF;       /* the part of the receive buffers in play */
int forged;               /* the current case forges something */

int bad(const char *fmt, ...)
{
	va_list ap;

	if (why[0])
		return -1;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	return -1;
}

void logger(ncclDebugLogLevel level, unsigned long flags, const char *file, int line,
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

void on_crash(int sig)
{
	char buf[256];
	int n = snprintf(buf, sizeof(buf), "FAIL %s: crashed with signal %d%s\n", cur_case, sig,
			 sig == SIGALRM ? " (watchdog: a call hung)" : "");

	if (n > 0 && write(1, buf, (size_t)n) < 0)
		_exit(3);
	_exit(3);
}

uint8_t mbuf[MSGBUF + 64];

/* ---- plumbing ------------------------------------------------------------------ */

/* The message as it is, connection token included: what a stranger (or a
 * late message of an earlier connection) can send. */
void inject_raw(const void *buf, size_t len)
{
	pthread_mutex_lock(&dev->lock);
	fabnet_proto_on_msg(dev, buf, len);
	pthread_mutex_unlock(&dev->lock);
}

/* The destination comm's token, as its genuine peer knows it (0: no such comm). */
uint64_t genuine_token(uint32_t dst)
{
	struct fabnet_comm *c = dst <= UINT16_MAX ? fabnet_proto_lookup(dev, dst) : NULL;

	return c ? c->token : 0;
}

/* The message with the destination's genuine token stamped in: a confused
 * or hostile peer that holds the token. Most cases forge as one, to reach
 * the checks behind the token's. */
void inject_msg(uint8_t *buf, size_t len)
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
uint8_t gen(void)
{
	return (uint8_t)(rc->token & FABNET_IMM_GEN_MASK);
}

void inject_imm(uint64_t data)
{
	pthread_mutex_lock(&dev->lock);
	fabnet_proto_on_imm(dev, data);
	pthread_mutex_unlock(&dev->lock);
}

void progress(int rounds)
{
	for (int i = 0; i < rounds; i++) {
		pthread_mutex_lock(&dev->lock);
		fabnet_dev_progress(dev);
		pthread_mutex_unlock(&dev->lock);
		usleep(200);
	}
}

uint8_t *entry(int j)
{
	return rbuf + (size_t)j * SLOT;
}

void canary_reset(void)
{
	for (size_t i = 0; i < span; i++)
		rbuf[i] = canary_byte(i);
}

/* Every byte of the receive buffers outside [skip_from, skip_to) holds the canary. */
int canary_intact(size_t skip_from, size_t skip_to, const char *when)
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

int post_recv(struct posted *p, int n, const size_t *sizes)
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

const char *outcome_name(enum outcome o)
{
	return o == PENDING ? "pending" : o == FAILED ? "failed" : "completed";
}

/* Tests the receive a few times: still pending, failed, or completed. */
enum outcome poll_recv(struct posted *p, int rounds, int *sizes, ncclResult_t *res)
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
int genuine_send(int n, const size_t *sizes, uint32_t seq)
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
int genuine_complete(struct posted *p, int may_fail)
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

/* One genuine transfer of size bytes into fresh canaries: the pair still
 * works after a case. 0, or -1 after bad(). */
int genuine_one(size_t size)
{
	struct posted p;

	canary_reset();
	if (post_recv(&p, 1, &size))
		return -1;
	return genuine_complete(&p, 0);
}

/* The receive failed: the sender still holds its CTS. Zero-byte sends use
 * it up (the receiver drops them: the sequence is no longer posted). */
int consume(struct posted *p)
{
	size_t zero[NSLOT] = {0};

	if (genuine_send(p->n, zero, p->seq))
		return -1;
	progress(5);
	return canary_intact(0, 0, "after the sender used up the failed receive's sequence");
}

void report(const char *name)
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

void begin(const char *name)
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

/* Connects another pair on the listener; 0, or -1 after bad(). */
int connect_extra(void *handle, struct fabnet_comm **s, struct fabnet_comm **r)
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
int post_stalled_send(struct fabnet_comm *s, struct fabnet_comm *r, void *sdata,
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
