/* softefa verbs-level tests: the two-process harness. */
#include "harness.h"

#include <endian.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void fill_pattern(void *buf, size_t len, uint32_t seed)
{
	uint8_t *p = buf;

	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)((i * 2654435761u + seed * 97u) >> 7 ^ seed);
}

size_t check_pattern(const void *buf, size_t len, uint32_t seed)
{
	const uint8_t *p = buf;

	for (size_t i = 0; i < len; i++)
		if (p[i] != (uint8_t)((i * 2654435761u + seed * 97u) >> 7 ^ seed))
			return i;
	return len;
}

void oob_send(struct node *n, const void *buf, size_t len)
{
	CHECK(write(n->oob, buf, len) == (ssize_t)len, "oob write: %s", strerror(errno));
}

void oob_recv(struct node *n, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t r = read(n->oob, (char *)buf + got, len - got);

		CHECK(r > 0, "oob read: the other side is gone (%s)", r < 0 ? strerror(errno) : "eof");
		got += (size_t)r;
	}
}

void oob_sync(struct node *n)
{
	char c = 's';

	oob_send(n, &c, 1);
	oob_recv(n, &c, 1);
}

/* Asks a child: the parent must not load the device's settings, or the
 * SOFTEFA_* values a scenario sets in its children would be ignored. */
bool caps_have(uint32_t cap)
{
	static int caps = -1;

	if (caps < 0) {
		int fd[2];
		uint32_t v = 0;
		pid_t pid;

		CHECK(!pipe(fd), "pipe");
		pid = fork();
		CHECK(pid >= 0, "fork");
		if (pid == 0) {
			struct ibv_device **l = ibv_get_device_list(NULL);
			struct ibv_context *ctx = l && l[0] ? ibv_open_device(l[0]) : NULL;
			struct efadv_device_attr a = { 0 };

			CHECK(ctx, "no soft EFA device (is SOFTEFA_PROFILE set?)");
			CHECK(efadv_query_device(ctx, &a, sizeof(a)) == 0, "efadv_query_device");
			CHECK(write(fd[1], &a.device_caps, sizeof(a.device_caps)) == sizeof(a.device_caps), "pipe");
			_exit(0);
		}
		close(fd[1]);
		CHECK(read(fd[0], &v, sizeof(v)) == sizeof(v), "no device capabilities from the child");
		close(fd[0]);
		waitpid(pid, NULL, 0);
		caps = (int)v;
	}
	return (uint32_t)caps & cap;
}

int run_single(const char *name, int (*fn)(void))
{
	int st = 0, rc;
	pid_t pid;

	fflush(stdout);
	pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0)
		_exit(fn());
	CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
	rc = WIFEXITED(st) ? WEXITSTATUS(st) : 1;
	printf("%s  %s\n", rc == 0 ? "PASS" : rc == SKIP_RC ? "SKIP" : "FAIL", name);
	return rc;
}

void node_default_opts(struct node_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->max_send_wr = 256;
	o->max_recv_wr = 256;
	o->rnr_retry = -1;
}

static void create_qp(struct node *n, const struct node_opts *o)
{
	struct ibv_qp_init_attr_ex a = { 0 };
	struct efadv_qp_init_attr ea = { .driver_qp_type = EFADV_QP_DRIVER_TYPE_SRD };
	uint64_t ops = IBV_QP_EX_WITH_SEND | IBV_QP_EX_WITH_SEND_WITH_IMM;

	if (n->efa.device_caps & EFADV_DEVICE_ATTR_CAPS_RDMA_READ)
		ops |= IBV_QP_EX_WITH_RDMA_READ;
	if (n->efa.device_caps & EFADV_DEVICE_ATTR_CAPS_RDMA_WRITE)
		ops |= IBV_QP_EX_WITH_RDMA_WRITE | IBV_QP_EX_WITH_RDMA_WRITE_WITH_IMM;
	a.qp_type = IBV_QPT_DRIVER;
	a.comp_mask = IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_SEND_OPS_FLAGS;
	a.send_ops_flags = o->send_ops ? o->send_ops : ops;
	a.pd = n->pd;
	a.send_cq = a.recv_cq = ibv_cq_ex_to_cq(n->cq);
	a.cap.max_send_wr = o->max_send_wr;
	a.cap.max_recv_wr = o->max_recv_wr;
	a.cap.max_send_sge = n->efa.max_sq_sge;
	a.cap.max_recv_sge = n->efa.max_rq_sge;
	a.cap.max_inline_data = n->efa.inline_buf_size;
	a.sq_sig_all = 1;
	if (o->unsolicited)
		ea.flags = EFADV_QP_FLAGS_UNSOLICITED_WRITE_RECV;
	n->qp = efadv_create_qp_ex(n->ctx, &a, &ea, sizeof(ea));
	CHECK(n->qp, "efadv_create_qp_ex: %s", strerror(errno));
	n->qpx = ibv_qp_to_qp_ex(n->qp);
}

static void to_rts(struct node *n, int rnr_retry)
{
	struct ibv_qp_attr qa = { .qp_state = IBV_QPS_INIT, .port_num = 1, .qkey = n->qkey };

	CHECK(!ibv_modify_qp(n->qp, &qa, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_QKEY), "INIT");
	qa.qp_state = IBV_QPS_RTR;
	CHECK(!ibv_modify_qp(n->qp, &qa, IBV_QP_STATE), "RTR");
	qa.qp_state = IBV_QPS_RTS;
	qa.rnr_retry = (uint8_t)(rnr_retry < 0 ? 7 : rnr_retry);
	CHECK(!ibv_modify_qp(n->qp, &qa, IBV_QP_STATE | IBV_QP_SQ_PSN | (rnr_retry < 0 ? 0 : IBV_QP_RNR_RETRY)),
	      "RTS");
}

void node_open(struct node *n, int oob, const struct node_opts *o)
{
	struct ibv_device **list;
	struct ibv_cq_init_attr_ex ca = { .cqe = 1024, .wc_flags = IBV_WC_STANDARD_FLAGS };
	struct efadv_cq_init_attr eca = { .wc_flags = EFADV_WC_EX_WITH_SGID };
	struct { union ibv_gid gid; uint32_t qpn, qkey; } me, peer;
	int num = 0;

	memset(n, 0, sizeof(*n));
	n->oob = oob;
	list = ibv_get_device_list(&num);
	CHECK(list && num > o->device, "device %d of %d", o->device, num);
	n->ctx = ibv_open_device(list[o->device]);
	ibv_free_device_list(list);
	CHECK(n->ctx, "ibv_open_device: %s", strerror(errno));
	CHECK(!efadv_query_device(n->ctx, &n->efa, sizeof(n->efa)), "efadv_query_device");
	CHECK(!ibv_query_port(n->ctx, 1, &n->port), "ibv_query_port");
	CHECK(!ibv_query_gid(n->ctx, 1, 0, &n->gid), "ibv_query_gid");
	n->pd = ibv_alloc_pd(n->ctx);
	CHECK(n->pd, "ibv_alloc_pd");
	if (n->efa.device_caps & EFADV_DEVICE_ATTR_CAPS_UNSOLICITED_WRITE_RECV)
		eca.wc_flags |= EFADV_WC_EX_WITH_IS_UNSOLICITED;
	n->cq = efadv_create_cq(n->ctx, &ca, &eca, sizeof(eca));
	CHECK(n->cq, "efadv_create_cq: %s", strerror(errno));
	create_qp(n, o);
	n->qkey = 0x1000u + (uint32_t)getpid();
	to_rts(n, o->rnr_retry);
	me.gid = n->gid;
	me.qpn = n->qp->qp_num;
	me.qkey = n->qkey;
	oob_send(n, &me, sizeof(me));
	oob_recv(n, &peer, sizeof(peer));
	n->peer_gid = peer.gid;
	n->peer_qpn = peer.qpn;
	n->peer_qkey = peer.qkey;
	if (!o->no_ah) {
		struct ibv_ah_attr aa = { .is_global = 1, .port_num = 1 };
		struct efadv_ah_attr ea = { 0 };

		aa.grh.dgid = peer.gid;
		n->ah = ibv_create_ah(n->pd, &aa);
		CHECK(n->ah, "ibv_create_ah: %s", strerror(errno));
		CHECK(!efadv_query_ah(n->ah, &ea, sizeof(ea)), "efadv_query_ah");
		n->ahn = ea.ahn;
	}
	oob_sync(n);	/* both have their AHs before anything is sent */
}

void node_close(struct node *n)
{
	if (n->ah)
		CHECK(!ibv_destroy_ah(n->ah), "destroy_ah");
	CHECK(!ibv_destroy_qp(n->qp), "destroy_qp");
	CHECK(!ibv_destroy_cq(ibv_cq_ex_to_cq(n->cq)), "destroy_cq");
	CHECK(!ibv_dealloc_pd(n->pd), "dealloc_pd");
	CHECK(!ibv_close_device(n->ctx), "close_device");
}

static void read_comp(struct node *n, struct comp *c)
{
	struct efadv_cq *dv = efadv_cq_from_ibv_cq_ex(n->cq);

	memset(c, 0, sizeof(*c));
	c->wr_id = n->cq->wr_id;
	c->status = n->cq->status;
	c->vendor_err = ibv_wc_read_vendor_err(n->cq);
	c->opcode = ibv_wc_read_opcode(n->cq);
	c->byte_len = ibv_wc_read_byte_len(n->cq);
	c->qp_num = ibv_wc_read_qp_num(n->cq);
	c->src_qp = ibv_wc_read_src_qp(n->cq);
	c->slid = ibv_wc_read_slid(n->cq);
	c->has_imm = ibv_wc_read_wc_flags(n->cq) & IBV_WC_WITH_IMM;
	if (c->has_imm)
		c->imm = be32toh(ibv_wc_read_imm_data(n->cq));
	c->has_sgid = efadv_wc_read_sgid(dv, &c->sgid) == 0;
	if (dv->wc_is_unsolicited)
		c->unsolicited = efadv_wc_is_unsolicited(dv);
}

bool poll_one(struct node *n, struct comp *c, int timeout_ms)
{
	struct ibv_poll_cq_attr pa = { 0 };
	double end = now_ms() + timeout_ms;

	for (;;) {
		int err = ibv_start_poll(n->cq, &pa);

		if (!err) {
			read_comp(n, c);
			ibv_end_poll(n->cq);
			return true;
		}
		CHECK(err == ENOENT, "ibv_start_poll: %s", strerror(err));
		if (now_ms() > end)
			return false;
		usleep(50);
	}
}

struct comp poll_must(struct node *n, int timeout_ms)
{
	struct comp c;

	CHECK(poll_one(n, &c, timeout_ms), "no completion within %d ms", timeout_ms);
	return c;
}

struct ibv_mr *reg(struct node *n, void *buf, size_t len, int access)
{
	struct ibv_mr *mr = ibv_reg_mr(n->pd, buf, len, access);

	CHECK(mr, "ibv_reg_mr(%zu bytes): %s", len, strerror(errno));
	return mr;
}

int post_send(struct node *n, uint64_t wr_id, struct ibv_mr *mr, void *buf, uint32_t len, bool imm,
	      uint32_t imm_data)
{
	ibv_wr_start(n->qpx);
	n->qpx->wr_id = wr_id;
	n->qpx->wr_flags = IBV_SEND_SIGNALED;
	if (imm)
		ibv_wr_send_imm(n->qpx, htobe32(imm_data));
	else
		ibv_wr_send(n->qpx);
	ibv_wr_set_sge(n->qpx, mr->lkey, (uint64_t)(uintptr_t)buf, len);
	ibv_wr_set_ud_addr(n->qpx, n->ah, n->peer_qpn, n->peer_qkey);
	return ibv_wr_complete(n->qpx);
}

int post_recv(struct node *n, uint64_t wr_id, struct ibv_mr *mr, void *buf, uint32_t len)
{
	struct ibv_sge sge = { .addr = (uint64_t)(uintptr_t)buf, .length = len, .lkey = mr->lkey };
	struct ibv_recv_wr wr = { .wr_id = wr_id, .sg_list = &sge, .num_sge = 1 }, *bad = NULL;

	return ibv_post_recv(n->qp, &wr, &bad);
}

static void apply_env(const char *env, int side)
{
	char buf[512], *save = NULL;

	if (!env)
		return;
	snprintf(buf, sizeof(buf), "%s", env);
	for (char *kv = strtok_r(buf, ";", &save); kv; kv = strtok_r(NULL, ";", &save)) {
		char *eq = strchr(kv, '=');

		if (kv[0] >= '0' && kv[0] <= '1' && kv[1] == ':') {
			if (kv[0] - '0' != side)
				continue;
			kv += 2;
		}
		if (eq) {
			*eq = 0;
			setenv(kv, eq + 1, 1);
		}
	}
}

int run_pair(const char *name, const char *env, side_fn fn)
{
	int sv[2], st[2] = { 0, 0 }, rc = 0;
	pid_t pid[2];

	CHECK(!socketpair(AF_UNIX, SOCK_STREAM, 0, sv), "socketpair");
	fflush(stdout);
	for (int side = 0; side < 2; side++) {
		pid[side] = fork();
		CHECK(pid[side] >= 0, "fork");
		if (pid[side] == 0) {
			struct node n;

			close(sv[1 - side]);
			apply_env(env, side);
			memset(&n, 0, sizeof(n));
			n.oob = sv[side];
			fn(&n, side);
			_exit(0);
		}
	}
	close(sv[0]);
	close(sv[1]);
	for (int side = 0; side < 2; side++) {
		CHECK(waitpid(pid[side], &st[side], 0) == pid[side], "waitpid");
		if (!WIFEXITED(st[side]))
			rc = 1;
		else if (WEXITSTATUS(st[side]) == SKIP_RC && rc == 0)
			rc = SKIP_RC;
		else if (WEXITSTATUS(st[side]) && WEXITSTATUS(st[side]) != SKIP_RC)
			rc = 1;
	}
	printf("%s  %s\n", rc == 0 ? "PASS" : rc == SKIP_RC ? "SKIP" : "FAIL", name);
	return rc;
}
