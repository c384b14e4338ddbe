/*
 * fabnet-hostile: forged input against a posted receive. Each case posts a
 * receive, forges, checks that no byte of the buffers changed and that the
 * receive did not complete, then lets the genuine sender resync the pair.
 */
#include "hostile.h"

/* ---- forged receive cases -------------------------------------------------------- */

struct forge {
	struct posted *p;
	uint16_t rid, sid; /* the receiving comm, its genuine peer */
};

typedef void (*forge_fn)(const struct forge *f);

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
		uint8_t *m = calloc(1, len ? len : 1); /* exactly len: an over-read is caught by tools */
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

void hostile_recv_cases(void)
{
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
}
