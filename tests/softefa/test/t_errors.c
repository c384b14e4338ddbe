/* softefa verbs tests: RNR, dead and vanished peers, bad destinations,
 * lengths and the device's limits. */
#include "harness.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#define ST_RNR 10
#define ST_BAD_QPN 9
#define ST_UNRESP 13
#define ST_UNREACH 15

/* rnr_retry 2 and no receive posted: three NACKs, then RNR_RETRY_EXC_ERR
 * (vendor error 10) after at least two retry delays of 20 ms. */
static void rnr_exhausted(struct node *n, int side)
{
	struct node_opts o;
	char buf[64] = { 0 };
	struct ibv_mr *mr;

	node_default_opts(&o);
	o.rnr_retry = 2;
	node_open(n, n->oob, &o);
	mr = reg(n, buf, sizeof(buf), IBV_ACCESS_LOCAL_WRITE);
	if (side == 0) {
		double t0 = now_ms();
		struct comp c;

		CHECK(!post_send(n, 5, mr, buf, sizeof(buf), false, 0), "post_send");
		c = poll_must(n, 10000);
		CHECK(c.status == IBV_WC_RNR_RETRY_EXC_ERR && c.vendor_err == ST_RNR, "status %d vendor %u", c.status,
		      c.vendor_err);
		CHECK(c.wr_id == 5, "wr_id %llu", (unsigned long long)c.wr_id);
		CHECK(now_ms() - t0 >= 39.0, "gave up after %.1f ms: fewer retries than rnr_retry", now_ms() - t0);
	}
	oob_sync(n);
	ibv_dereg_mr(mr);
	node_close(n);
}

/* Infinite RNR retry (the SRD default): the send completes once the
 * receiver posts its buffer 200 ms later. */
static void rnr_recovered(struct node *n, int side)
{
	struct node_opts o;
	char buf[64];
	struct ibv_mr *mr;

	node_default_opts(&o);
	node_open(n, n->oob, &o);
	mr = reg(n, buf, sizeof(buf), IBV_ACCESS_LOCAL_WRITE);
	if (side == 1) {
		memset(buf, 0, sizeof(buf));
		oob_sync(n);
		usleep(200000);
		CHECK(!post_recv(n, 9, mr, buf, sizeof(buf)), "post_recv");
		CHECK(poll_must(n, 10000).status == IBV_WC_SUCCESS, "recv");
		CHECK(check_pattern(buf, sizeof(buf), 3) == sizeof(buf), "payload differs");
	} else {
		double t0;
		struct comp c;

		fill_pattern(buf, sizeof(buf), 3);
		oob_sync(n);
		t0 = now_ms();
		CHECK(!post_send(n, 1, mr, buf, sizeof(buf), false, 0), "post_send");
		c = poll_must(n, 10000);
		CHECK(c.status == IBV_WC_SUCCESS, "status %d vendor %u", c.status, c.vendor_err);
		CHECK(now_ms() - t0 >= 150.0, "completed after %.1f ms, before the receive was posted", now_ms() - t0);
	}
	oob_sync(n);
	ibv_dereg_mr(mr);
	node_close(n);
}

/* The receiver dies before anything reaches it: RESP_TIMEOUT_ERR with
 * vendor error 15 (never responded) after SOFTEFA_TIMEOUT_MS. */
static void dead_peer(struct node *n, int side)
{
	struct node_opts o;
	char buf[64] = "anyone?", c1;
	struct ibv_mr *mr;

	node_default_opts(&o);
	node_open(n, n->oob, &o);
	if (side == 1)
		_exit(0);	/* no close: the device vanishes with the process */
	CHECK(read(n->oob, &c1, 1) == 0, "the peer should be gone");
	mr = reg(n, buf, sizeof(buf), 0);
	{
		double t0 = now_ms();
		struct comp c;

		CHECK(!post_send(n, 3, mr, buf, sizeof(buf), false, 0), "post_send");
		c = poll_must(n, 10000);
		CHECK(c.status == IBV_WC_RESP_TIMEOUT_ERR && c.vendor_err == ST_UNREACH, "status %d vendor %u",
		      c.status, c.vendor_err);
		CHECK(now_ms() - t0 >= 250.0, "gave up after %.1f ms, timeout is 300", now_ms() - t0);
	}
	ibv_dereg_mr(mr);
	node_close(n);
}

/* The receiver's device vanishes after its first packet (the process lives
 * on): the second send fails with vendor error 13 (was responsive). */
static void vanished_peer(struct node *n, int side)
{
	struct node_opts o;
	char buf[64] = "ping";
	struct ibv_mr *mr;

	node_default_opts(&o);
	node_open(n, n->oob, &o);
	mr = reg(n, buf, sizeof(buf), IBV_ACCESS_LOCAL_WRITE);
	if (side == 1) {
		CHECK(!post_recv(n, 1, mr, buf, sizeof(buf)), "post_recv");
		CHECK(!post_recv(n, 2, mr, buf, sizeof(buf)), "post_recv");
		oob_sync(n);
		CHECK(poll_must(n, 10000).status == IBV_WC_SUCCESS, "first receive");
		oob_sync(n);	/* until the sender has seen the failure */
	} else {
		struct comp c;

		oob_sync(n);
		CHECK(!post_send(n, 1, mr, buf, sizeof(buf), false, 0), "post_send");
		c = poll_must(n, 10000);
		CHECK(c.status == IBV_WC_SUCCESS, "first send: status %d vendor %u", c.status, c.vendor_err);
		CHECK(!post_send(n, 2, mr, buf, sizeof(buf), false, 0), "post_send");
		c = poll_must(n, 10000);
		CHECK(c.status == IBV_WC_RESP_TIMEOUT_ERR && c.vendor_err == ST_UNRESP, "status %d vendor %u",
		      c.status, c.vendor_err);
		oob_sync(n);
	}
	ibv_dereg_mr(mr);
	node_close(n);
}

/* A QPN that does not exist, and the right QPN with another qkey. */
static void bad_destination(struct node *n, int side)
{
	struct node_opts o;
	char buf[64] = "x";
	struct ibv_mr *mr;

	node_default_opts(&o);
	node_open(n, n->oob, &o);
	mr = reg(n, buf, sizeof(buf), IBV_ACCESS_LOCAL_WRITE);
	if (side == 0) {
		uint32_t qpn = n->peer_qpn, qkey = n->peer_qkey;
		struct comp c;

		n->peer_qpn = qpn + 7;
		CHECK(!post_send(n, 1, mr, buf, 8, false, 0), "post_send");
		c = poll_must(n, 10000);
		CHECK(c.status == IBV_WC_REM_INV_RD_REQ_ERR && c.vendor_err == ST_BAD_QPN, "no such QP: status %d vendor %u",
		      c.status, c.vendor_err);
		n->peer_qpn = qpn;
		n->peer_qkey = qkey + 1;
		CHECK(!post_send(n, 2, mr, buf, 8, false, 0), "post_send");
		c = poll_must(n, 10000);
		CHECK(c.status == IBV_WC_REM_INV_RD_REQ_ERR && c.vendor_err == ST_BAD_QPN, "wrong qkey: status %d vendor %u",
		      c.status, c.vendor_err);
		n->peer_qkey = qkey;
	}
	oob_sync(n);
	ibv_dereg_mr(mr);
	node_close(n);
}

/* A 100-byte send into a 16-byte receive: the receiver completes with a
 * length error (6), the sender with "remote SGL too short" (11). */
static void receive_too_small(struct node *n, int side)
{
	struct node_opts o;
	char buf[128] = { 0 };
	struct ibv_mr *mr;
	struct comp c;

	node_default_opts(&o);
	node_open(n, n->oob, &o);
	mr = reg(n, buf, sizeof(buf), IBV_ACCESS_LOCAL_WRITE);
	if (side == 1) {
		CHECK(!post_recv(n, 4, mr, buf, 16), "post_recv");
		oob_sync(n);
		c = poll_must(n, 10000);
		CHECK(c.status == IBV_WC_LOC_LEN_ERR && c.vendor_err == 6, "receiver: status %d vendor %u", c.status,
		      c.vendor_err);
	} else {
		oob_sync(n);
		CHECK(!post_send(n, 4, mr, buf, 100, false, 0), "post_send");
		c = poll_must(n, 10000);
		CHECK(c.status == IBV_WC_REM_INV_REQ_ERR && c.vendor_err == 11, "sender: status %d vendor %u", c.status,
		      c.vendor_err);
	}
	oob_sync(n);
	ibv_dereg_mr(mr);
	node_close(n);
}

static void check_create_refused(struct node *n, struct ibv_qp_init_attr_ex base, const char *what, int want)
{
	struct efadv_qp_init_attr ea = { .driver_qp_type = EFADV_QP_DRIVER_TYPE_SRD };
	struct ibv_qp *qp;

	errno = 0;
	qp = efadv_create_qp_ex(n->ctx, &base, &ea, sizeof(ea));
	CHECK(!qp && errno == want, "%s: QP %p, errno %d (want %d)", what, (void *)qp, errno, want);
}

static void creation_limits(struct node *n)
{
	struct ibv_qp_init_attr_ex a = { .qp_type = IBV_QPT_DRIVER, .pd = n->pd, .sq_sig_all = 1,
					 .comp_mask = IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_SEND_OPS_FLAGS,
					 .send_ops_flags = IBV_QP_EX_WITH_SEND };
	struct ibv_qp_init_attr_ex t;

	a.send_cq = a.recv_cq = ibv_cq_ex_to_cq(n->cq);
	a.cap.max_send_wr = a.cap.max_recv_wr = 16;
	a.cap.max_send_sge = a.cap.max_recv_sge = 1;
	t = a;
	t.cap.max_send_wr = n->efa.max_sq_wr + 1;
	check_create_refused(n, t, "max_send_wr over the device's", EINVAL);
	t = a;
	t.cap.max_recv_wr = n->efa.max_rq_wr + 1;
	check_create_refused(n, t, "max_recv_wr over the device's", EINVAL);
	t = a;
	t.cap.max_recv_sge = n->efa.max_rq_sge + 1u;
	check_create_refused(n, t, "max_recv_sge over the device's", EINVAL);
	t = a;
	t.cap.max_inline_data = n->efa.inline_buf_size + 1u;
	check_create_refused(n, t, "inline over the device's", EINVAL);
	if (!(n->efa.device_caps & EFADV_DEVICE_ATTR_CAPS_RDMA_WRITE)) {
		t = a;
		t.send_ops_flags |= IBV_QP_EX_WITH_RDMA_WRITE;
		check_create_refused(n, t, "RDMA write on a device without it", EOPNOTSUPP);
	}
}

/* Queue limits: creation caps, a full send queue (ENOMEM from wr_complete
 * until completions are polled), too many SGEs, too much inline data, a send
 * over the MTU, a bad lkey, a full receive queue. */
static void limits(struct node *n, int side)
{
	struct node_opts o;
	uint32_t mtu;
	uint8_t *buf;
	struct ibv_mr *mr;

	node_default_opts(&o);
	o.max_send_wr = 4;
	o.max_recv_wr = 8;
	node_open(n, n->oob, &o);
	mtu = n->port.max_msg_sz;
	buf = calloc(1, (size_t)mtu * 2);
	mr = reg(n, buf, (size_t)mtu * 2, IBV_ACCESS_LOCAL_WRITE);
	if (side == 0) {
		struct ibv_sge sg[3] = { { (uint64_t)(uintptr_t)buf, 8, mr->lkey }, { (uint64_t)(uintptr_t)buf + 8, 8, mr->lkey },
					 { (uint64_t)(uintptr_t)buf + 16, 8, mr->lkey } };
		struct comp c;

		creation_limits(n);
		oob_sync(n);	/* the receiver has posted nothing: sends wait on RNR */
		for (int i = 0; i < 4; i++)
			CHECK(!post_send(n, (uint64_t)i, mr, buf, 8, false, 0), "send %d of a 4-deep queue", i);
		CHECK(post_send(n, 4, mr, buf, 8, false, 0) == ENOMEM, "a fifth outstanding send is accepted");
		oob_sync(n);	/* the receiver posts its buffers */
		for (int i = 0; i < 4; i++)
			CHECK(poll_must(n, 10000).status == IBV_WC_SUCCESS, "queued send %d", i);
		CHECK(!post_send(n, 4, mr, buf, 8, false, 0), "the queue is free again");
		CHECK(poll_must(n, 10000).status == IBV_WC_SUCCESS, "send 4");
		ibv_wr_start(n->qpx);
		n->qpx->wr_flags = IBV_SEND_SIGNALED;
		ibv_wr_send(n->qpx);
		ibv_wr_set_sge_list(n->qpx, 3, sg);
		ibv_wr_set_ud_addr(n->qpx, n->ah, n->peer_qpn, n->peer_qkey);
		CHECK(ibv_wr_complete(n->qpx) == EINVAL, "three SGEs accepted (max %u)", n->efa.max_sq_sge);
		ibv_wr_start(n->qpx);
		ibv_wr_send(n->qpx);
		ibv_wr_set_inline_data(n->qpx, buf, n->efa.inline_buf_size + 1u);
		ibv_wr_set_ud_addr(n->qpx, n->ah, n->peer_qpn, n->peer_qkey);
		CHECK(ibv_wr_complete(n->qpx) == EINVAL, "inline over %u accepted", n->efa.inline_buf_size);
		CHECK(!post_send(n, 5, mr, buf, mtu + 1, false, 0), "post_send");
		c = poll_must(n, 10000);
		CHECK(c.status == IBV_WC_LOC_LEN_ERR && c.vendor_err == 6, "MTU+1: status %d vendor %u", c.status,
		      c.vendor_err);
		mr->lkey ^= 0x10000;	/* another generation of the same index */
		CHECK(!post_send(n, 6, mr, buf, 8, false, 0), "post_send");
		mr->lkey ^= 0x10000;
		c = poll_must(n, 10000);
		CHECK(c.status == IBV_WC_LOC_PROT_ERR && c.vendor_err == 5, "bad lkey: status %d vendor %u", c.status,
		      c.vendor_err);
		oob_sync(n);
	} else {
		int i, err = 0;

		oob_sync(n);
		usleep(100000);
		for (i = 0; i < 5; i++)
			CHECK(!post_recv(n, (uint64_t)i, mr, buf, 64), "post_recv %d", i);
		oob_sync(n);
		for (i = 0; i < 5; i++)
			CHECK(poll_must(n, 10000).status == IBV_WC_SUCCESS, "recv %d", i);
		oob_sync(n);
		for (i = 0; i < 9 && !err; i++)
			err = post_recv(n, (uint64_t)i, mr, buf, 64);
		CHECK(err == ENOMEM && i == 9, "receive queue of 8: post %d gave %d", i, err);
	}
	ibv_dereg_mr(mr);
	free(buf);
	node_close(n);
}

static int run_rnr(void)
{
	int a = run_pair("rnr-exhausted: rnr_retry 2, no receive: RNR_RETRY_EXC_ERR / 10 after the retries",
			 "SOFTEFA_RNR_DELAY_US=20000", rnr_exhausted);
	int b = run_pair("rnr-recovered: infinite retry completes once the receive is posted",
			 "SOFTEFA_RNR_DELAY_US=1000", rnr_recovered);

	return a ? a : b;
}

static int run_dead(void)
{
	return run_pair("dead-peer: RESP_TIMEOUT_ERR / 15 after the timeout", "SOFTEFA_TIMEOUT_MS=300", dead_peer);
}

static int run_vanish(void)
{
	return run_pair("vanished-peer: RESP_TIMEOUT_ERR / 13 once it stops answering",
			"SOFTEFA_TIMEOUT_MS=300;1:SOFTEFA_FAULT_VANISH_AFTER=2", vanished_peer);
}

static int run_bad_dest(void)
{
	return run_pair("bad-destination: unknown QPN and wrong qkey give REM_INV_RD_REQ_ERR / 9", NULL,
			bad_destination);
}

static int run_small(void)
{
	return run_pair("receive-too-small: LOC_LEN_ERR / 6 and REM_INV_REQ_ERR / 11", NULL, receive_too_small);
}

static int run_limits(void)
{
	return run_pair("limits: creation caps, full SQ (ENOMEM), SGEs, inline, MTU, lkey, full RQ",
			"SOFTEFA_RNR_DELAY_US=1000", limits);
}

const struct scenario error_scenarios[] = {
	{ "rnr", run_rnr },
	{ "dead-peer", run_dead },
	{ "vanished-peer", run_vanish },
	{ "bad-destination", run_bad_dest },
	{ "receive-too-small", run_small },
	{ "limits", run_limits },
	{ NULL, NULL },
};
