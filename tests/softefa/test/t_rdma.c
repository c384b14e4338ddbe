/* softefa verbs tests: RDMA read, write, write with immediate, unsolicited
 * write receive, the target's checks, and dma-buf registrations. */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define RLEN (1u << 20)

struct remote {
	uint64_t addr;
	uint32_t rkey, len;
};

static bool have_write(void)
{
	return caps_have(EFADV_DEVICE_ATTR_CAPS_RDMA_WRITE);
}

static struct comp rdma(struct node *n, enum ibv_wr_opcode op, struct ibv_mr *mr, void *buf, uint32_t len,
			struct remote r, uint32_t imm)
{
	ibv_wr_start(n->qpx);
	n->qpx->wr_id = 77;
	n->qpx->wr_flags = IBV_SEND_SIGNALED;
	if (op == IBV_WR_RDMA_READ)
		ibv_wr_rdma_read(n->qpx, r.rkey, r.addr);
	else if (op == IBV_WR_RDMA_WRITE)
		ibv_wr_rdma_write(n->qpx, r.rkey, r.addr);
	else
		ibv_wr_rdma_write_imm(n->qpx, r.rkey, r.addr, htobe32(imm));
	ibv_wr_set_sge(n->qpx, mr->lkey, (uint64_t)(uintptr_t)buf, len);
	ibv_wr_set_ud_addr(n->qpx, n->ah, n->peer_qpn, n->peer_qkey);
	CHECK(!ibv_wr_complete(n->qpx), "wr_complete");
	return poll_must(n, 10000);
}

/* Side 1 owns a 1 MiB region; side 0 reads it, then (p5) writes it and
 * writes with an immediate that consumes one posted receive. */
static void read_write(struct node *n, int side)
{
	struct node_opts o;
	uint8_t *buf = malloc(RLEN);
	struct ibv_mr *mr;
	struct remote r;

	node_default_opts(&o);
	node_open(n, n->oob, &o);
	mr = reg(n, buf, RLEN, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE);
	if (side == 1) {
		struct comp c;

		fill_pattern(buf, RLEN, 11);
		r = (struct remote){ (uint64_t)(uintptr_t)buf, mr->rkey, RLEN };
		oob_send(n, &r, sizeof(r));
		oob_sync(n);	/* read done */
		if (have_write()) {
			CHECK(!post_recv(n, 42, mr, buf, 0), "post_recv");
			uint8_t *want = malloc(RLEN);

			oob_sync(n);	/* write done */
			fill_pattern(want, RLEN, 12);
			fill_pattern(want + 8192, 4096, 13);	/* what the write with immediate replaced */
			for (size_t i = 0; i < RLEN; i++)
				CHECK(buf[i] == want[i], "after the writes byte %zu is %#x, want %#x", i, buf[i], want[i]);
			free(want);
			c = poll_must(n, 10000);
			CHECK(c.status == IBV_WC_SUCCESS && c.opcode == IBV_WC_RECV_RDMA_WITH_IMM, "status %d opcode %d",
			      c.status, c.opcode);
			CHECK(c.wr_id == 42 && c.has_imm && c.imm == 0xfeed && c.byte_len == 4096 && !c.unsolicited,
			      "wr_id %llu imm %d/%#x len %u unsolicited %d", (unsigned long long)c.wr_id, c.has_imm, c.imm,
			      c.byte_len, c.unsolicited);
		}
	} else {
		struct comp c;

		oob_recv(n, &r, sizeof(r));
		memset(buf, 0, RLEN);
		c = rdma(n, IBV_WR_RDMA_READ, mr, buf, RLEN, r, 0);
		CHECK(c.status == IBV_WC_SUCCESS, "read: status %d vendor %u", c.status, c.vendor_err);
		CHECK(c.opcode == IBV_WC_SEND, "rdma-core's efa reports reads as IBV_WC_SEND, got %d", c.opcode);
		CHECK(check_pattern(buf, RLEN, 11) == RLEN, "read: byte %zu differs", check_pattern(buf, RLEN, 11));
		oob_sync(n);
		if (have_write()) {
			struct remote r2 = { r.addr + 8192, r.rkey, 4096 };

			fill_pattern(buf, RLEN, 12);
			c = rdma(n, IBV_WR_RDMA_WRITE, mr, buf, RLEN, r, 0);
			CHECK(c.status == IBV_WC_SUCCESS && c.opcode == IBV_WC_RDMA_WRITE, "write: status %d opcode %d",
			      c.status, c.opcode);
			fill_pattern(buf, 4096, 13);
			c = rdma(n, IBV_WR_RDMA_WRITE_WITH_IMM, mr, buf, 4096, r2, 0xfeed);
			CHECK(c.status == IBV_WC_SUCCESS && c.opcode == IBV_WC_RDMA_WRITE, "write-imm: status %d opcode %d",
			      c.status, c.opcode);
			oob_sync(n);
		}
	}
	oob_sync(n);
	ibv_dereg_mr(mr);
	free(buf);
	node_close(n);
}

/* p4d: neither a QP nor a CQ can ask for unsolicited write receive. */
static void no_unsolicited(struct node *n, int side)
{
	struct ibv_device **l = ibv_get_device_list(NULL);
	struct ibv_context *ctx = ibv_open_device(l[0]);
	struct ibv_pd *pd = ibv_alloc_pd(ctx);
	struct ibv_cq_init_attr_ex ca = { .cqe = 16, .wc_flags = IBV_WC_STANDARD_FLAGS };
	struct efadv_cq_init_attr eca = { .wc_flags = EFADV_WC_EX_WITH_IS_UNSOLICITED };
	struct efadv_qp_init_attr ea = { .driver_qp_type = EFADV_QP_DRIVER_TYPE_SRD,
					 .flags = EFADV_QP_FLAGS_UNSOLICITED_WRITE_RECV };
	struct ibv_qp_init_attr_ex qa = { .qp_type = IBV_QPT_DRIVER, .pd = pd, .comp_mask = IBV_QP_INIT_ATTR_PD,
					  .cap = { .max_send_wr = 8, .max_recv_wr = 8, .max_send_sge = 1,
						   .max_recv_sge = 1 } };
	struct ibv_cq_ex *cq;

	(void)n;
	(void)side;
	errno = 0;
	CHECK(!efadv_create_cq(ctx, &ca, &eca, sizeof(eca)) && errno == EOPNOTSUPP,
	      "a CQ with IS_UNSOLICITED on a device without unsolicited write receive (errno %d)", errno);
	eca.wc_flags = 0;
	cq = efadv_create_cq(ctx, &ca, &eca, sizeof(eca));
	CHECK(cq, "efadv_create_cq");
	qa.send_cq = qa.recv_cq = ibv_cq_ex_to_cq(cq);
	errno = 0;
	CHECK(!efadv_create_qp_ex(ctx, &qa, &ea, sizeof(ea)) && errno == EOPNOTSUPP,
	      "a QP with UNSOLICITED_WRITE_RECV on a device without it (errno %d)", errno);
	ibv_destroy_cq(ibv_cq_ex_to_cq(cq));
	ibv_dealloc_pd(pd);
	ibv_close_device(ctx);
	ibv_free_device_list(l);
}

/* p5: with EFADV_QP_FLAGS_UNSOLICITED_WRITE_RECV a write with immediate
 * completes at the target without a posted receive. */
static void unsolicited(struct node *n, int side)
{
	struct node_opts o;
	uint8_t buf[4096];
	struct ibv_mr *mr;
	struct remote r;

	if (!have_write()) {
		no_unsolicited(n, side);
		return;
	}
	node_default_opts(&o);
	o.unsolicited = side == 1;
	node_open(n, n->oob, &o);
	mr = reg(n, buf, sizeof(buf), IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
	if (side == 1) {
		struct comp c;

		memset(buf, 0, sizeof(buf));
		r = (struct remote){ (uint64_t)(uintptr_t)buf, mr->rkey, sizeof(buf) };
		oob_send(n, &r, sizeof(r));
		c = poll_must(n, 10000);
		CHECK(c.status == IBV_WC_SUCCESS && c.opcode == IBV_WC_RECV_RDMA_WITH_IMM, "status %d opcode %d",
		      c.status, c.opcode);
		CHECK(c.unsolicited && c.wr_id == 0 && c.imm == 0x5151 && c.byte_len == 100,
		      "unsolicited %d wr_id %llu imm %#x len %u", c.unsolicited, (unsigned long long)c.wr_id, c.imm,
		      c.byte_len);
		CHECK(check_pattern(buf, 100, 21) == 100, "data missing");
	} else {
		oob_recv(n, &r, sizeof(r));
		fill_pattern(buf, 100, 21);
		CHECK(rdma(n, IBV_WR_RDMA_WRITE_WITH_IMM, mr, buf, 100, r, 0x5151).status == IBV_WC_SUCCESS, "write");
	}
	oob_sync(n);
	ibv_dereg_mr(mr);
	node_close(n);
}

static void expect_vendor(struct node *n, struct ibv_mr *mr, void *buf, struct remote r, uint32_t vendor,
			  enum ibv_wc_status st, const char *what)
{
	struct comp c = rdma(n, IBV_WR_RDMA_READ, mr, buf, r.len, r, 0);

	CHECK(c.status == st && c.vendor_err == vendor, "%s: status %d vendor %u (want %d / %u)", what, c.status,
	      c.vendor_err, st, vendor);
}

/* What the target NIC refuses: another generation of the rkey, a range past
 * the MR, an MR without remote read, a QP that does not exist, an initiator
 * the target has no AH for. */
static void target_checks(struct node *n, int side)
{
	struct node_opts o;
	uint8_t *buf = malloc(8192);
	struct ibv_mr *mr, *noread;
	struct remote r[2];

	node_default_opts(&o);
	o.no_ah = side == 1 && getenv("SEFA_TEST_NO_AH");
	node_open(n, n->oob, &o);
	mr = reg(n, buf, 4096, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ);
	noread = reg(n, buf + 4096, 4096, IBV_ACCESS_LOCAL_WRITE);
	if (side == 1) {
		r[0] = (struct remote){ (uint64_t)(uintptr_t)buf, mr->rkey, 4096 };
		r[1] = (struct remote){ (uint64_t)(uintptr_t)buf + 4096, noread->rkey, 4096 };
		oob_send(n, r, sizeof(r));
	} else {
		struct remote bad;

		oob_recv(n, r, sizeof(r));
		if (getenv("SEFA_TEST_NO_AH")) {
			expect_vendor(n, mr, buf, r[0], 14, IBV_WC_REM_OP_ERR, "no AH at the target");
		} else {
			expect_vendor(n, mr, buf, r[0], 0, IBV_WC_SUCCESS, "a good read");
			bad = r[0];
			bad.rkey ^= 0x10000;
			expect_vendor(n, mr, buf, bad, 7, IBV_WC_REM_ACCESS_ERR, "stale rkey");
			bad = r[0];
			bad.addr += 1;
			expect_vendor(n, mr, buf, bad, 7, IBV_WC_REM_ACCESS_ERR, "one byte past the MR");
			bad = r[0];
			bad.addr -= 64;
			bad.len = 64;
			expect_vendor(n, mr, buf, bad, 7, IBV_WC_REM_ACCESS_ERR, "before the MR");
			expect_vendor(n, mr, buf, r[1], 7, IBV_WC_REM_ACCESS_ERR, "MR without remote read");
			n->peer_qpn += 5;
			expect_vendor(n, mr, buf, r[0], 9, IBV_WC_REM_INV_RD_REQ_ERR, "no such QP");
			n->peer_qpn -= 5;
		}
	}
	oob_sync(n);
	ibv_dereg_mr(mr);
	ibv_dereg_mr(noread);
	free(buf);
	node_close(n);
}

static int memfd_with(size_t len, uint32_t seed)
{
	int fd = memfd_create("sefa-dmabuf", MFD_CLOEXEC);
	uint8_t *tmp = malloc(len);

	CHECK(fd >= 0 && !ftruncate(fd, (off_t)len), "memfd: %s", strerror(errno));
	fill_pattern(tmp, len, seed);
	CHECK(pwrite(fd, tmp, len, 0) == (ssize_t)len, "pwrite");
	free(tmp);
	return fd;
}

/* The device reaches a dma-buf MR through the fd's pages at the given
 * offset, never through the user's virtual address: side 1 maps the memfd
 * privately and scribbles over its copy; side 0 must read the fd's bytes, and
 * a receive into the MR must land in the fd's pages. */
static void dmabuf(struct node *n, int side)
{
	struct node_opts o;
	const size_t len = 1 << 20, off = 8192;
	uint8_t *buf = malloc(65536);
	struct ibv_mr *mr;
	struct remote r;

	node_default_opts(&o);
	node_open(n, n->oob, &o);
	if (side == 1) {
		int fd = memfd_with(len, 31);
		uint8_t *va = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0), got[256];
		struct ibv_mr *dm;

		CHECK(va != MAP_FAILED, "mmap");
		memset(va, 0xee, len);	/* the user's view now differs from the fd's pages */
		dm = ibv_reg_dmabuf_mr(n->pd, off, 65536, (uint64_t)(uintptr_t)va + off, fd,
				       IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ);
		CHECK(dm, "ibv_reg_dmabuf_mr (memfd accepted for the test): %s", strerror(errno));
		r = (struct remote){ (uint64_t)(uintptr_t)va + off, dm->rkey, 65536 };
		oob_send(n, &r, sizeof(r));
		CHECK(!post_recv(n, 1, dm, va + off + 1024, 256), "post_recv into the dma-buf MR");
		oob_sync(n);
		CHECK(poll_must(n, 10000).status == IBV_WC_SUCCESS, "receive into the dma-buf MR");
		CHECK(pread(fd, got, sizeof(got), (off_t)(off + 1024)) == (ssize_t)sizeof(got), "pread");
		CHECK(check_pattern(got, sizeof(got), 32) == sizeof(got), "the receive did not land in the fd's pages");
		CHECK(va[off + 1024] == 0xee, "the receive went through the user's mapping");
		ibv_dereg_mr(dm);
		munmap(va, len);
		close(fd);
	} else {
		uint8_t *want = malloc(len);
		struct comp c;

		mr = reg(n, buf, 65536, IBV_ACCESS_LOCAL_WRITE);
		oob_recv(n, &r, sizeof(r));
		fill_pattern(want, len, 31);
		c = rdma(n, IBV_WR_RDMA_READ, mr, buf, 65536, r, 0);
		CHECK(c.status == IBV_WC_SUCCESS, "read of the dma-buf MR: status %d vendor %u", c.status, c.vendor_err);
		CHECK(!memcmp(buf, want + off, 65536), "read returned other bytes than the fd's at offset %zu", off);
		fill_pattern(buf, 256, 32);
		CHECK(!post_send(n, 2, mr, buf, 256, false, 0), "post_send");
		CHECK(poll_must(n, 10000).status == IBV_WC_SUCCESS, "send");
		oob_sync(n);
		ibv_dereg_mr(mr);
		free(want);
	}
	oob_sync(n);
	free(buf);
	node_close(n);
}

/* One process, default settings: what is not a dma-buf is refused. */
static int dmabuf_refused(void)
{
	struct ibv_device **l = ibv_get_device_list(NULL);
	struct ibv_context *ctx = ibv_open_device(l[0]);
	struct ibv_pd *pd = ibv_alloc_pd(ctx);
	int memfd = memfd_with(4096, 1);
	char path[] = "/tmp/sefa-test-XXXXXX";
	int file = mkstemp(path);
	struct ibv_mr *mr;
	int ok = 1;

	unlink(path);
	CHECK(file >= 0 && !ftruncate(file, 4096), "temporary file");
	errno = 0;
	mr = ibv_reg_dmabuf_mr(pd, 0, 4096, 0x10000, memfd, IBV_ACCESS_LOCAL_WRITE);
	ok &= !mr && errno == EINVAL;
	errno = 0;
	mr = ibv_reg_dmabuf_mr(pd, 0, 4096, 0x10000, file, IBV_ACCESS_LOCAL_WRITE);
	ok &= !mr && errno == EINVAL;
	close(memfd);
	close(file);
	ibv_dealloc_pd(pd);
	ibv_close_device(ctx);
	ibv_free_device_list(l);
	CHECK(ok, "a memfd or a plain file was accepted as a dma-buf");
	return 0;
}

static int run_read_write(void)
{
	return run_pair(have_write() ? "read-write: RDMA read, write and write with immediate of 1 MiB"
				     : "read-write: RDMA read of 1 MiB (the profile has no RDMA write)",
			NULL, read_write);
}

/* Both processes as pid 1 of their own PID namespace (as on two nodes): the
 * GIDs differ and RDMA still reaches the target. */
static void in_pid_namespace(struct node *n, int side)
{
	int st = 0;
	pid_t pid;

	if (unshare(CLONE_NEWPID)) {
		fprintf(stderr, "  unshare(CLONE_NEWPID): %s: needs root\n", strerror(errno));
		_exit(SKIP_RC);
	}
	pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		CHECK(getpid() == 1, "not pid 1 in the new namespace");
		read_write(n, side);
		_exit(0);
	}
	CHECK(waitpid(pid, &st, 0) == pid, "waitpid");
	_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 1);
}

static int run_pidns(void)
{
	return run_pair("pid-namespaces: both sides pid 1 of their own namespace, RDMA and sends still work", NULL,
			in_pid_namespace);
}

static int run_unsolicited(void)
{
	return run_pair(have_write() ? "unsolicited: write with immediate without a posted receive"
				     : "unsolicited: refused by a device without unsolicited write receive",
			NULL, unsolicited);
}

static int run_checks(void)
{
	int a = run_pair("target-checks: stale rkey, out of range, no remote read, no such QP (7, 9)", NULL,
			 target_checks);
	int b;

	setenv("SEFA_TEST_NO_AH", "1", 1);
	b = run_pair("target-checks: an initiator without AH at the target (14)", NULL, target_checks);
	unsetenv("SEFA_TEST_NO_AH");
	return a ? a : b;
}

static int run_dmabuf(void)
{
	int a = run_pair("dmabuf: RDMA and receives reach the fd's pages, not the user's mapping",
			 "1:SOFTEFA_DMABUF_ACCEPT_MEMFD=1", dmabuf);
	int b = run_single("dmabuf-refused: a memfd and a plain file are not dma-bufs (EINVAL)", dmabuf_refused);

	return a ? a : b;
}

const struct scenario rdma_scenarios[] = {
	{ "read-write", run_read_write },
	{ "pid-namespaces", run_pidns },
	{ "unsolicited", run_unsolicited },
	{ "target-checks", run_checks },
	{ "dmabuf", run_dmabuf },
	{ NULL, NULL },
};
