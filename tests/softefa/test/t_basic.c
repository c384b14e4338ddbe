/* softefa verbs tests: delivery, gather, immediates, source identification,
 * reordering, several devices. */
#include "harness.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#define NMSG 24

static uint32_t msg_len(int i, uint32_t mtu)
{
	static const uint32_t lens[] = { 4, 7, 16, 32, 33, 100, 1000, 4096, 4097, 8000 };

	return i == NMSG - 1 ? mtu : lens[i % 10];
}

/* Side 0 sends NMSG messages gathered from two registered buffers (or inline
 * when they fit), every other one with an immediate; side 1 receives and
 * checks every byte, the length, the immediate, the source QP and AH. */
static void deliver(struct node *n, int side)
{
	struct node_opts o;

	node_default_opts(&o);
	node_open(n, n->oob, &o);
	if (side == 1) {
		uint32_t mtu = n->port.max_msg_sz;
		uint8_t *buf = calloc(NMSG, mtu);
		struct ibv_mr *mr = reg(n, buf, (size_t)NMSG * mtu, IBV_ACCESS_LOCAL_WRITE);
		bool seen[NMSG] = { false };

		for (int i = 0; i < NMSG; i++)
			CHECK(!post_recv(n, (uint64_t)i, mr, buf + (size_t)i * mtu, mtu), "post_recv %d", i);
		oob_sync(n);
		for (int k = 0; k < NMSG; k++) {
			struct comp c = poll_must(n, 10000);
			uint8_t *m = buf + c.wr_id * mtu;
			uint32_t idx;

			CHECK(c.status == IBV_WC_SUCCESS, "recv status %d vendor %u", c.status, c.vendor_err);
			CHECK(c.opcode == IBV_WC_RECV, "opcode %d", c.opcode);
			CHECK(c.byte_len >= 4, "short message of %u bytes", c.byte_len);
			memcpy(&idx, m, 4);
			CHECK(idx < NMSG && !seen[idx], "message index %u twice or out of range", idx);
			seen[idx] = true;
			CHECK(c.byte_len == msg_len((int)idx, mtu), "message %u: %u bytes, sent %u", idx, c.byte_len,
			      msg_len((int)idx, mtu));
			CHECK(check_pattern(m + 4, c.byte_len - 4, idx) == c.byte_len - 4, "message %u: byte %zu wrong",
			      idx, check_pattern(m + 4, c.byte_len - 4, idx) + 4);
			CHECK(c.has_imm == (idx % 2 == 1), "message %u: immediate flag %d", idx, c.has_imm);
			CHECK(!c.has_imm || c.imm == 0xabc000u + idx, "message %u: immediate %#x", idx, c.imm);
			CHECK(c.src_qp == n->peer_qpn, "src_qp %u, peer is %u", c.src_qp, n->peer_qpn);
			CHECK(c.slid == n->ahn, "slid %u, our AH for the sender is %u", c.slid, n->ahn);
			CHECK(!c.has_sgid, "the GID is given although the AH is known");
			CHECK(c.qp_num == n->qp->qp_num, "qp_num %u", c.qp_num);
		}
		oob_sync(n);
		ibv_dereg_mr(mr);
		free(buf);
	} else {
		uint32_t mtu = n->port.max_msg_sz;
		uint8_t *a = malloc(mtu), *b = malloc(mtu);
		struct ibv_mr *ma = reg(n, a, mtu, 0), *mb = reg(n, b, mtu, 0);

		oob_sync(n);
		for (int i = 0; i < NMSG; i++) {
			uint32_t len = msg_len(i, mtu), idx = (uint32_t)i, first = len / 3 + 4;
			uint8_t *whole = malloc(len);

			memcpy(whole, &idx, 4);
			fill_pattern(whole + 4, len - 4, idx);
			ibv_wr_start(n->qpx);
			n->qpx->wr_id = 1000u + (uint64_t)i;
			n->qpx->wr_flags = IBV_SEND_SIGNALED;
			if (i % 2)
				ibv_wr_send_imm(n->qpx, htobe32(0xabc000u + idx));
			else
				ibv_wr_send(n->qpx);
			if (len <= n->efa.inline_buf_size) {
				ibv_wr_set_inline_data(n->qpx, whole, len);
			} else {	/* gather from two buffers */
				struct ibv_sge sg[2] = { { (uint64_t)(uintptr_t)a, first, ma->lkey },
							 { (uint64_t)(uintptr_t)b + 8, len - first, mb->lkey } };

				memcpy(a, whole, first);
				memcpy(b + 8, whole + first, len - first);
				ibv_wr_set_sge_list(n->qpx, 2, sg);
			}
			ibv_wr_set_ud_addr(n->qpx, n->ah, n->peer_qpn, n->peer_qkey);
			CHECK(!ibv_wr_complete(n->qpx), "wr_complete %d", i);
			/* the buffers belong to the device until the completion */
			{
				struct comp c = poll_must(n, 10000);

				CHECK(c.status == IBV_WC_SUCCESS && c.vendor_err == 0, "send %d: status %d vendor %u", i,
				      c.status, c.vendor_err);
				CHECK(c.wr_id == 1000u + (uint64_t)i && c.opcode == IBV_WC_SEND, "send %d: wr_id %llu op %d",
				      i, (unsigned long long)c.wr_id, c.opcode);
			}
			free(whole);
		}
		oob_sync(n);
		ibv_dereg_mr(ma);
		ibv_dereg_mr(mb);
		free(a);
		free(b);
	}
	node_close(n);
}

#define BURST 64

/* One wr_complete posts BURST sends; whether arrival and completion orders
 * differ from the posting order depends on SOFTEFA_REORDER. */
static void burst(struct node *n, int side, bool expect_reordered)
{
	struct node_opts o;
	uint32_t order[BURST];

	node_default_opts(&o);
	o.max_send_wr = BURST;
	node_open(n, n->oob, &o);
	if (side == 1) {
		uint32_t *buf = calloc(BURST, 64);
		struct ibv_mr *mr = reg(n, buf, BURST * 64, IBV_ACCESS_LOCAL_WRITE);

		for (int i = 0; i < BURST; i++)
			CHECK(!post_recv(n, (uint64_t)i, mr, (char *)buf + i * 64, 64), "post_recv");
		oob_sync(n);
		for (int k = 0; k < BURST; k++) {
			struct comp c = poll_must(n, 10000);

			CHECK(c.status == IBV_WC_SUCCESS, "recv %d: status %d", k, c.status);
			CHECK(c.wr_id == (uint64_t)k, "receives are consumed in posting order (got %llu at %d)",
			      (unsigned long long)c.wr_id, k);
			order[k] = buf[c.wr_id * 16];
		}
		ibv_dereg_mr(mr);
		free(buf);
	} else {
		uint32_t *msg = calloc(BURST, 64);
		struct ibv_mr *mr = reg(n, msg, BURST * 64, 0);

		oob_sync(n);
		ibv_wr_start(n->qpx);
		for (int i = 0; i < BURST; i++) {
			msg[i * 16] = (uint32_t)i;
			n->qpx->wr_id = (uint64_t)i;
			n->qpx->wr_flags = IBV_SEND_SIGNALED;
			ibv_wr_send(n->qpx);
			ibv_wr_set_sge(n->qpx, mr->lkey, (uint64_t)(uintptr_t)(msg + i * 16), 64);
			ibv_wr_set_ud_addr(n->qpx, n->ah, n->peer_qpn, n->peer_qkey);
		}
		CHECK(!ibv_wr_complete(n->qpx), "wr_complete of %d WRs", BURST);
		for (int k = 0; k < BURST; k++) {
			struct comp c = poll_must(n, 10000);

			CHECK(c.status == IBV_WC_SUCCESS, "send status %d", c.status);
			order[k] = (uint32_t)c.wr_id;
		}
		ibv_dereg_mr(mr);
		free(msg);
	}
	{
		bool seen[BURST] = { false }, identity = true;

		for (int k = 0; k < BURST; k++) {
			CHECK(order[k] < BURST && !seen[order[k]], "%s: %u lost or doubled", side ? "arrivals" : "completions",
			      order[k]);
			seen[order[k]] = true;
			identity = identity && order[k] == (uint32_t)k;
		}
		CHECK(identity != expect_reordered, "%s came %s", side ? "arrivals" : "send completions",
		      identity ? "in posting order although reordering is on" : "out of order with a window of 1");
	}
	oob_sync(n);
	node_close(n);
}

static void burst_reordered(struct node *n, int side)
{
	burst(n, side, true);
}

static void burst_ordered(struct node *n, int side)
{
	burst(n, side, false);
}

/* A receiver without an AH for the sender gets slid 0xffff and the GID. */
static void unknown_ah(struct node *n, int side)
{
	struct node_opts o;
	char buf[64] = "hello";
	struct ibv_mr *mr;

	node_default_opts(&o);
	o.no_ah = side == 1;
	node_open(n, n->oob, &o);
	mr = reg(n, buf, sizeof(buf), IBV_ACCESS_LOCAL_WRITE);
	if (side == 1) {
		struct comp c;

		CHECK(!post_recv(n, 7, mr, buf, sizeof(buf)), "post_recv");
		oob_sync(n);
		c = poll_must(n, 10000);
		CHECK(c.status == IBV_WC_SUCCESS && c.byte_len == 6, "status %d len %u", c.status, c.byte_len);
		CHECK(c.slid == 0xffff, "slid %#x for a sender without AH", c.slid);
		CHECK(c.has_sgid && !memcmp(c.sgid.raw, n->peer_gid.raw, 16), "source GID not given or wrong");
		CHECK(c.src_qp == n->peer_qpn, "src_qp %u", c.src_qp);
	} else {
		oob_sync(n);
		CHECK(!post_send(n, 1, mr, buf, 6, false, 0), "post_send");
		CHECK(poll_must(n, 10000).status == IBV_WC_SUCCESS, "send");
	}
	oob_sync(n);
	ibv_dereg_mr(mr);
	node_close(n);
}

static void read_link(const char *path, char *out, size_t len)
{
	char *r = realpath(path, NULL);

	snprintf(out, len, "%s", r ? r : "");
	free(r);
}

/* SOFTEFA_DEVICES=4: four devices with their own GIDs and PCI addresses;
 * traffic between the third devices of the two processes. */
static void four_devices(struct node *n, int side)
{
	struct node_opts o;
	struct ibv_device **l;
	union ibv_gid g[4];
	int num = 0;

	l = ibv_get_device_list(&num);
	CHECK(l && num == 4, "%d devices, SOFTEFA_DEVICES=4", num);
	for (int i = 0; i < 4; i++) {
		struct ibv_context *c = ibv_open_device(l[i]);
		char want[32], dev[PATH_MAX + 16], got[PATH_MAX];

		CHECK(c, "open device %d", i);
		CHECK(!ibv_query_gid(c, 1, 0, &g[i]), "gid %d", i);
		for (int j = 0; j < i; j++)
			CHECK(memcmp(g[i].raw, g[j].raw, 16), "devices %d and %d share a GID", i, j);
		snprintf(want, sizeof(want), "0000:%02x:00.0", 0x10 + 0x10 * i);
		snprintf(dev, sizeof(dev), "%s/device", l[i]->ibdev_path);
		read_link(dev, got, sizeof(got));
		CHECK(strlen(got) > strlen(want) && !strcmp(got + strlen(got) - strlen(want), want),
		      "device %d is at %s, expected %s", i, got, want);
		ibv_close_device(c);
	}
	ibv_free_device_list(l);
	node_default_opts(&o);
	o.device = 2;
	node_open(n, n->oob, &o);
	CHECK(!memcmp(n->gid.raw, g[2].raw, 16), "node on device 2 has another GID");
	{
		char buf[32] = "over the third rail";
		struct ibv_mr *mr = reg(n, buf, sizeof(buf), IBV_ACCESS_LOCAL_WRITE);

		if (side == 1) {
			char want[32] = "over the third rail";

			memset(buf, 0, sizeof(buf));
			CHECK(!post_recv(n, 1, mr, buf, sizeof(buf)), "post_recv");
			oob_sync(n);
			CHECK(poll_must(n, 10000).status == IBV_WC_SUCCESS, "recv");
			CHECK(!memcmp(buf, want, sizeof(want)), "payload differs");
		} else {
			oob_sync(n);
			CHECK(!post_send(n, 1, mr, buf, sizeof(buf), false, 0), "post_send");
			CHECK(poll_must(n, 10000).status == IBV_WC_SUCCESS, "send");
		}
		oob_sync(n);
		ibv_dereg_mr(mr);
	}
	node_close(n);
}

static int run_deliver(void)
{
	return run_pair("deliver: gather, inline, immediates, lengths up to the MTU, source QP and AH", NULL, deliver);
}

static int run_reorder(void)
{
	return run_pair("reorder: a window of 8 reorders arrivals and send completions", "SOFTEFA_REORDER=8",
			burst_reordered);
}

static int run_ordered(void)
{
	return run_pair("in-order: a window of 1 keeps posting order", "SOFTEFA_REORDER=1", burst_ordered);
}

static int run_unknown_ah(void)
{
	return run_pair("unknown-ah: slid 0xffff and the source GID", NULL, unknown_ah);
}

static int run_four(void)
{
	return run_pair("four-devices: GIDs, PCI addresses, traffic on one rail", "SOFTEFA_DEVICES=4", four_devices);
}

const struct scenario basic_scenarios[] = {
	{ "deliver", run_deliver },
	{ "reorder", run_reorder },
	{ "in-order", run_ordered },
	{ "unknown-ah", run_unknown_ah },
	{ "four-devices", run_four },
	{ NULL, NULL },
};
