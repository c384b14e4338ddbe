/*
 * Self-test of the EFA-contract layer against real providers, without fabnet.
 *
 *   LD_PRELOAD=tests/contract/.libs/libfabnet-efa-contract.so \
 *       tests/contract/.libs/contract-selftest [provider...]   (default: tcp shm)
 *
 * Two RDM endpoints in this process talk through the layer: contract
 * violations must be refused and counted, correct traffic must arrive intact,
 * completions must come back reordered, exactly once, with injected EAGAINs
 * and (in one phase) injected errors. The last line is "N passed, M failed";
 * the exit status is non-zero on failure.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>

#include "fabnet_contract.h"

static int passed, failed;
static fabnet_contract_counter_fn CTR;

static void check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(int ok, const char *fmt, ...)
{
	va_list ap;

	printf("%s ", ok ? "ok  " : "FAIL");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	if (ok)
		passed++;
	else
		failed++;
}

static uint64_t ctr(const char *name)
{
	return CTR(name);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#define MSG 64
#define NMSG 1000
#define NRECV 64
#define BUF (4u << 20)

enum { K_SEND = 1, K_RECV, K_WRITE, K_READ, K_OTHER };

struct op {
	struct fi_context2 ctx; /* first: the op context */
	int kind;
	int idx;
	int done;
};

struct rig {
	const char *prov;
	struct fi_info *info;
	struct fid_fabric *fabric;
	struct fid_domain *domain;
	struct fid_av *av;
	struct fid_cq *cqa, *cqb;
	struct fid_ep *a, *b;
	fi_addr_t addr_a, addr_b;
	struct fid_mr *mra, *mrb;
	uint8_t *bufa, *bufb;
	void *desca, *descb;
	size_t inject_size;
};

static struct fi_info *hints_for(const char *prov, uint64_t mode, int mr_mode)
{
	struct fi_info *h = fi_allocinfo();

	h->caps = FI_MSG | FI_RMA;
	h->ep_attr->type = FI_EP_RDM;
	h->mode = mode;
	h->domain_attr->mr_mode = mr_mode;
	h->domain_attr->threading = FI_THREAD_DOMAIN;
	h->fabric_attr->prov_name = strdup(prov);
	return h;
}

#define EFA_MR (FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY)

static void test_getinfo(const char *prov)
{
	struct fi_info *h, *list = NULL;
	uint64_t dropped;
	int rc;

	/* A strict provider returns nothing to an application without FI_CONTEXT2 ... */
	dropped = ctr("infos_dropped");
	h = hints_for(prov, FI_CONTEXT, EFA_MR);
	rc = fi_getinfo(FI_VERSION(FI_MAJOR_VERSION, FI_MINOR_VERSION), NULL, NULL, 0, h, &list);
	check(rc == -FI_ENODATA && !list && ctr("infos_dropped") > dropped,
	      "%s: hints without FI_CONTEXT2 find nothing (rc %d)", prov, rc);
	if (list)
		fi_freeinfo(list);
	fi_freeinfo(h);
	list = NULL;
	/* ... nor to one that cannot honour FI_MR_LOCAL. */
	h = hints_for(prov, FI_CONTEXT | FI_CONTEXT2, FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY);
	rc = fi_getinfo(FI_VERSION(FI_MAJOR_VERSION, FI_MINOR_VERSION), NULL, NULL, 0, h, &list);
	check(rc == -FI_ENODATA && !list, "%s: hints without FI_MR_LOCAL find nothing (rc %d)", prov,
	      rc);
	if (list)
		fi_freeinfo(list);
	fi_freeinfo(h);
}

static int rig_open(struct rig *r, const char *prov)
{
	struct fi_info *h, *list = NULL, *pick = NULL;
	struct fi_cq_attr cq_attr;
	struct fi_av_attr av_attr;
	char addr[256];
	size_t len;
	int rc;

	memset(r, 0, sizeof(*r));
	r->prov = prov;
	h = hints_for(prov, FI_CONTEXT | FI_CONTEXT2, EFA_MR);
	rc = fi_getinfo(FI_VERSION(FI_MAJOR_VERSION, FI_MINOR_VERSION), NULL, NULL, 0, h, &list);
	fi_freeinfo(h);
	check(rc == 0 && list, "%s: fi_getinfo with EFA-like hints (rc %d)", prov, rc);
	if (rc || !list)
		return -1;
	for (struct fi_info *it = list; it && !pick; it = it->next)
		if (it->addr_format == FI_SOCKADDR_IN || it->addr_format == FI_ADDR_STR)
			pick = it;
	if (!pick)
		pick = list;
	r->info = fi_dupinfo(pick);
	fi_freeinfo(list);
	{
		struct fi_info *i = r->info;
		uint64_t mr = (uint64_t)(unsigned)i->domain_attr->mr_mode;
		check((mr & EFA_MR) == EFA_MR,
		      "%s: advertised mr_mode has FI_MR_LOCAL|PROV_KEY|VIRT_ADDR|ALLOCATED (0x%" PRIx64
		      ")", prov, mr);
		check(!!(i->mode & FI_CONTEXT2), "%s: advertised mode has FI_CONTEXT2", prov);
		check(i->domain_attr->cq_data_size == 4, "%s: cq_data_size is 4 (%zu)", prov,
		      i->domain_attr->cq_data_size);
		check(i->ep_attr->max_msg_size <= 8192, "%s: max_msg_size capped at 8 KiB (%zu)", prov,
		      i->ep_attr->max_msg_size);
		check(i->tx_attr->rma_iov_limit <= 1, "%s: rma_iov_limit 1 (%zu)", prov,
		      i->tx_attr->rma_iov_limit);
		printf("     %s: using %s / %s, inject_size %zu\n", prov, i->fabric_attr->prov_name,
		       i->domain_attr->name, i->tx_attr->inject_size);
		r->inject_size = i->tx_attr->inject_size;
	}
#define OPEN(call, what)                                                       \
	do {                                                                   \
		rc = (call);                                                   \
		if (rc) {                                                      \
			check(0, "%s: %s: %s (%d)", prov, what, fi_strerror(-rc), rc); \
			return -1;                                             \
		}                                                              \
	} while (0)
	OPEN(fi_fabric(r->info->fabric_attr, &r->fabric, NULL), "fi_fabric");
	OPEN(fi_domain(r->fabric, r->info, &r->domain, NULL), "fi_domain");
	memset(&av_attr, 0, sizeof(av_attr));
	av_attr.type = FI_AV_TABLE;
	OPEN(fi_av_open(r->domain, &av_attr, &r->av, NULL), "fi_av_open");
	memset(&cq_attr, 0, sizeof(cq_attr));
	cq_attr.format = FI_CQ_FORMAT_DATA;
	cq_attr.size = 4096;
	OPEN(fi_cq_open(r->domain, &cq_attr, &r->cqa, NULL), "fi_cq_open(a)");
	OPEN(fi_cq_open(r->domain, &cq_attr, &r->cqb, NULL), "fi_cq_open(b)");
	OPEN(fi_endpoint(r->domain, r->info, &r->a, NULL), "fi_endpoint(a)");
	OPEN(fi_endpoint(r->domain, r->info, &r->b, NULL), "fi_endpoint(b)");
	OPEN(fi_ep_bind(r->a, &r->av->fid, 0), "fi_ep_bind(a, av)");
	OPEN(fi_ep_bind(r->b, &r->av->fid, 0), "fi_ep_bind(b, av)");
	OPEN(fi_ep_bind(r->a, &r->cqa->fid, FI_TRANSMIT | FI_RECV), "fi_ep_bind(a, cq)");
	OPEN(fi_ep_bind(r->b, &r->cqb->fid, FI_TRANSMIT | FI_RECV), "fi_ep_bind(b, cq)");
	OPEN(fi_enable(r->a), "fi_enable(a)");
	OPEN(fi_enable(r->b), "fi_enable(b)");
	len = sizeof(addr);
	OPEN(fi_getname(&r->a->fid, addr, &len), "fi_getname(a)");
	if (fi_av_insert(r->av, addr, 1, &r->addr_a, 0, NULL) != 1) {
		check(0, "%s: fi_av_insert(a)", prov);
		return -1;
	}
	len = sizeof(addr);
	OPEN(fi_getname(&r->b->fid, addr, &len), "fi_getname(b)");
	if (fi_av_insert(r->av, addr, 1, &r->addr_b, 0, NULL) != 1) {
		check(0, "%s: fi_av_insert(b)", prov);
		return -1;
	}
	r->bufa = aligned_alloc(4096, BUF);
	r->bufb = aligned_alloc(4096, BUF);
	memset(r->bufa, 0, BUF);
	memset(r->bufb, 0, BUF);
	OPEN(fi_mr_reg(r->domain, r->bufa, BUF, FI_SEND | FI_RECV | FI_READ | FI_WRITE |
		       FI_REMOTE_READ | FI_REMOTE_WRITE, 0, 7, 0, &r->mra, NULL), "fi_mr_reg(a)");
	OPEN(fi_mr_reg(r->domain, r->bufb, BUF, FI_SEND | FI_RECV | FI_READ | FI_WRITE |
		       FI_REMOTE_READ | FI_REMOTE_WRITE, 0, 8, 0, &r->mrb, NULL), "fi_mr_reg(b)");
	r->desca = fi_mr_desc(r->mra);
	r->descb = fi_mr_desc(r->mrb);
	check(fi_mr_key(r->mra) != 7 && fi_mr_key(r->mrb) != 8 && fi_mr_key(r->mra) != fi_mr_key(r->mrb),
	      "%s: FI_MR_PROV_KEY: keys differ from requested_key (0x%" PRIx64 ", 0x%" PRIx64 ")",
	      prov, fi_mr_key(r->mra), fi_mr_key(r->mrb));
	check(r->desca && r->descb, "%s: fi_mr_desc gives descriptors", prov);
	return 0;
}

static void rig_close(struct rig *r)
{
	if (r->a)
		fi_close(&r->a->fid);
	if (r->b)
		fi_close(&r->b->fid);
	if (r->mra)
		fi_close(&r->mra->fid);
	if (r->mrb)
		fi_close(&r->mrb->fid);
	if (r->cqa)
		fi_close(&r->cqa->fid);
	if (r->cqb)
		fi_close(&r->cqb->fid);
	if (r->av)
		fi_close(&r->av->fid);
	if (r->domain)
		fi_close(&r->domain->fid);
	if (r->fabric)
		fi_close(&r->fabric->fid);
	if (r->info)
		fi_freeinfo(r->info);
	free(r->bufa);
	free(r->bufb);
	memset(r, 0, sizeof(*r));
}

/* Reads one CQ; calls fn for each completion (err 0) and each error entry. */
typedef void (*done_fn)(void *arg, struct op *op, int err, const struct fi_cq_data_entry *e);

static int poll_cq(struct fid_cq *cq, done_fn fn, void *arg)
{
	struct fi_cq_data_entry e[16];
	ssize_t n = fi_cq_read(cq, e, 16);

	if (n == -FI_EAGAIN)
		return 0;
	if (n == -FI_EAVAIL) {
		struct fi_cq_err_entry err;
		memset(&err, 0, sizeof(err));
		n = fi_cq_readerr(cq, &err, 0);
		if (n != 1)
			return (int)n;
		fn(arg, err.op_context, err.err ? err.err : FI_EIO, NULL);
		return 1;
	}
	if (n < 0)
		return (int)n;
	for (ssize_t i = 0; i < n; i++)
		fn(arg, e[i].op_context, 0, &e[i]);
	return (int)n;
}

/* Waits for one operation's completion on cq, progressing the peer's CQ too
 * (providers such as shm and ofi_rxm need the target to progress). */
static int wait_op2(struct fid_cq *cq, struct op *op, done_fn fn, void *arg, struct fid_cq *peer,
		    void *peer_arg)
{
	double t0 = now_s();

	while (!op->done) {
		int rc = poll_cq(cq, fn, arg);
		if (rc >= 0 && peer)
			rc = poll_cq(peer, fn, peer_arg);
		if (rc < 0)
			return rc;
		if (now_s() - t0 > 10)
			return -FI_ETIMEDOUT;
	}
	return 0;
}

struct simple {
	int errors;
	int last_err;
	uint64_t data;
	uint64_t flags;
	int remote;
};

static void simple_done(void *arg, struct op *op, int err, const struct fi_cq_data_entry *e)
{
	struct simple *s = arg;

	if (e && (e->flags & FI_REMOTE_CQ_DATA) && !(e->flags & (FI_SEND | FI_WRITE | FI_READ))) {
		s->remote++;
		s->data = e->data;
		s->flags = e->flags;
		return;
	}
	if (!op)
		return;
	op->done = 1;
	if (err) {
		s->errors++;
		s->last_err = err;
	}
}

/* Posts until the layer stops answering with an injected EAGAIN. */
#define POST(expr)                                                           \
	({                                                                   \
		ssize_t rc_;                                                 \
		int tries_ = 0;                                              \
		do {                                                         \
			rc_ = (expr);                                        \
		} while (rc_ == -FI_EAGAIN && ++tries_ < 100000 &&           \
			 (poll_cq(r->cqa, simple_done, &sa) >= 0) &&         \
			 (poll_cq(r->cqb, simple_done, &sb) >= 0));          \
		rc_;                                                         \
	})

static void test_violations(struct rig *r)
{
	struct simple sa = {0}, sb = {0};
	struct op o1, o2, o3;
	uint64_t v0 = ctr("violations"), v;
	uint64_t badkey = 7; /* what the application asked for: not the key */
	struct fid_mr *tmp = NULL;
	void *stale;
	ssize_t rc;

	memset(&o1, 0, sizeof(o1));
	memset(&o2, 0, sizeof(o2));
	memset(&o3, 0, sizeof(o3));
#define EXPECT_REFUSED(expr, what)                                                         \
	do {                                                                               \
		v = ctr("violations");                                                     \
		rc = (expr);                                                               \
		check(rc == -FI_EINVAL && ctr("violations") == v + 1,                      \
		      "%s: refused with a violation: %s (rc %zd)", r->prov, what, rc);      \
	} while (0)
	EXPECT_REFUSED(fi_send(r->a, r->bufa, 16, NULL, r->addr_b, &o1.ctx),
		       "fi_send without a descriptor");
	EXPECT_REFUSED(fi_send(r->a, r->bufa + BUF - 10, 100, r->desca, r->addr_b, &o1.ctx),
		       "fi_send of a buffer running past its region");
	EXPECT_REFUSED(fi_send(r->a, r->bufb, 16, r->desca, r->addr_b, &o1.ctx),
		       "fi_send with another region's descriptor");
	EXPECT_REFUSED(fi_send(r->a, r->bufa, 16, r->desca, r->addr_b, NULL),
		       "fi_send with a NULL context");
	EXPECT_REFUSED(fi_send(r->a, r->bufa, 8193, r->desca, r->addr_b, &o1.ctx),
		       "fi_send of 8193 bytes (max_msg_size 8192)");
	EXPECT_REFUSED(fi_recv(r->b, r->bufb, 64, NULL, FI_ADDR_UNSPEC, &o1.ctx),
		       "fi_recv without a descriptor");
	EXPECT_REFUSED(fi_writedata(r->a, r->bufa, 64, r->desca, 1ull << 32, r->addr_b,
				    (uint64_t)(uintptr_t)r->bufb, fi_mr_key(r->mrb), &o1.ctx),
		       "fi_writedata with 33 bits of CQ data");
	EXPECT_REFUSED(fi_write(r->a, r->bufa, 64, r->desca, r->addr_b, (uint64_t)(uintptr_t)r->bufb,
				badkey, &o1.ctx),
		       "fi_write with the application's requested_key instead of fi_mr_key()");
	EXPECT_REFUSED(fi_write(r->a, r->bufa, 64, r->desca, r->addr_b, (uint64_t)(uintptr_t)r->bufb,
				fi_mr_key(r->mrb) ^ 1, &o1.ctx),
		       "fi_write with a corrupted key");
	/* The rig was opened with FABNET_CONTRACT_MAX_RMA=256K. */
	EXPECT_REFUSED(fi_write(r->a, r->bufa, (256 << 10) + 1, r->desca, r->addr_b,
				(uint64_t)(uintptr_t)r->bufb, fi_mr_key(r->mrb), &o1.ctx),
		       "fi_write beyond the RMA size limit");
	rc = fi_mr_reg(r->domain, r->bufa, 4096, FI_SEND | FI_RECV, 0, 0, 0, &tmp, NULL);
	check(rc == 0, "%s: fi_mr_reg of a scratch region", r->prov);
	if (!rc) {
		stale = fi_mr_desc(tmp);
		fi_close(&tmp->fid);
		EXPECT_REFUSED(fi_send(r->a, r->bufa, 16, stale, r->addr_b, &o1.ctx),
			       "fi_send with the descriptor of a closed region");
	}
	rc = fi_mr_reg(r->domain, r->bufa, 4096, FI_RECV, 0, 0, 0, &tmp, NULL);
	if (!rc) {
		EXPECT_REFUSED(fi_send(r->a, r->bufa, 16, fi_mr_desc(tmp), r->addr_b, &o1.ctx),
			       "fi_send from a region registered without FI_SEND");
		fi_close(&tmp->fid);
	}
	{
		struct iovec iov[2] = {{r->bufa, 8}, {r->bufa + 64, 8}};
		void *desc[2] = {r->desca, r->desca};
		struct fi_rma_iov rma[2] = {{(uint64_t)(uintptr_t)r->bufb, 8, fi_mr_key(r->mrb)},
					    {(uint64_t)(uintptr_t)r->bufb + 64, 8, fi_mr_key(r->mrb)}};
		struct fi_msg_rma msg = {.msg_iov = iov, .desc = desc, .iov_count = 2,
					 .addr = r->addr_b, .rma_iov = rma, .rma_iov_count = 2,
					 .context = &o1.ctx};
		EXPECT_REFUSED(fi_writemsg(r->a, &msg, 0), "fi_writemsg with 2 remote iovs");
	}
	if (r->inject_size < 8192)
		EXPECT_REFUSED(fi_inject(r->a, r->bufa, r->inject_size + 1, r->addr_b),
			       "fi_inject larger than inject_size");

	/* A context still in flight cannot be used again. o2 stays posted on a
	 * and is cancelled below (a's receives see no traffic in this test). */
	rc = POST(fi_recv(r->a, r->bufa + 8192, 64, r->desca, FI_ADDR_UNSPEC, &o2.ctx));
	check(rc == 0, "%s: fi_recv posted (rc %zd)", r->prov, rc);
	{
		static const uint8_t zero[sizeof(struct fi_context2)];
		check(memcmp(&o2.ctx, zero, sizeof(zero)) != 0,
		      "%s: the layer scribbled over the posted fi_context2", r->prov);
	}
	EXPECT_REFUSED(fi_recv(r->a, r->bufa + 8192 + 64, 64, r->desca, FI_ADDR_UNSPEC, &o2.ctx),
		       "fi_recv reusing a context still in flight");
	rc = fi_cancel(&r->a->fid, &o2.ctx);
	if (rc == 0) {
		rc = wait_op2(r->cqa, &o2, simple_done, &sa, r->cqb, &sb);
		check(rc == 0 && sa.errors == 1 && sa.last_err == FI_ECANCELED,
		      "%s: fi_cancel reports FI_ECANCELED through fi_cq_readerr (rc %zd, err %d)",
		      r->prov, rc, sa.last_err);
	} else {
		printf("     %s: fi_cancel not supported (%zd); skipped\n", r->prov, rc);
	}
	/* Writing into a context the provider owns is caught at its completion. */
	sa.errors = 0;
	rc = POST(fi_recv(r->a, r->bufa + 8192, 64, r->desca, FI_ADDR_UNSPEC, &o3.ctx));
	if (rc == 0) {
		memset(&o3.ctx, 0, sizeof(o3.ctx)); /* an application storing state there */
		v = ctr("violations");
		if (fi_cancel(&r->a->fid, &o3.ctx) == 0) {
			rc = wait_op2(r->cqa, &o3, simple_done, &sa, r->cqb, &sb);
			check(rc == 0 && ctr("violations") == v + 1,
			      "%s: writing into an in-flight fi_context2 is a violation", r->prov);
		}
	}
	/* RMA outside the target region (EFA fails it remotely). */
	EXPECT_REFUSED(fi_write(r->a, r->bufa, 64, r->desca, r->addr_b,
				(uint64_t)(uintptr_t)r->bufb + BUF - 32, fi_mr_key(r->mrb), &o1.ctx),
		       "fi_write running past the target region");
	EXPECT_REFUSED(fi_read(r->a, r->bufa, 64, r->desca, r->addr_b,
			       (uint64_t)(uintptr_t)r->bufb - 4096, fi_mr_key(r->mrb), &o1.ctx),
		       "fi_read below the target region");
	rc = fi_mr_reg(r->domain, r->bufb, 4096, FI_SEND | FI_RECV | FI_REMOTE_READ, 0, 0, 0, &tmp,
		       NULL);
	if (!rc) {
		EXPECT_REFUSED(fi_write(r->a, r->bufa, 64, r->desca, r->addr_b,
					(uint64_t)(uintptr_t)r->bufb, fi_mr_key(tmp), &o1.ctx),
			       "fi_write to a region registered without FI_REMOTE_WRITE");
		fi_close(&tmp->fid);
	}
	check(ctr("violations") > v0, "%s: %" PRIu64 " violations counted", r->prov,
	      ctr("violations") - v0);
}

static void test_rma(struct rig *r)
{
	struct simple sa = {0}, sb = {0};
	struct op w, rd;
	const size_t len = 64 << 10;
	uint8_t *src = r->bufa + (1 << 20), *dst = r->bufb + (1 << 20);
	ssize_t rc;
	int bad = 0;
	double t0;

	for (size_t i = 0; i < len; i++)
		src[i] = (uint8_t)(i * 13 + 5);
	memset(dst, 0, len);
	memset(&w, 0, sizeof(w));
	rc = POST(fi_writedata(r->a, src, len, r->desca, 0xdeadbeefull, r->addr_b,
			       (uint64_t)(uintptr_t)dst, fi_mr_key(r->mrb), &w.ctx));
	check(rc == 0, "%s: fi_writedata of 64 KiB with FI_MR_VIRT_ADDR and fi_mr_key() (rc %zd)",
	      r->prov, rc);
	if (rc)
		return;
	rc = wait_op2(r->cqa, &w, simple_done, &sa, r->cqb, &sb);
	t0 = now_s();
	while (!sb.remote && now_s() - t0 < 10)
		poll_cq(r->cqb, simple_done, &sb);
	for (size_t i = 0; i < len; i++)
		bad += dst[i] != (uint8_t)(i * 13 + 5);
	check(rc == 0 && sa.errors == 0 && !bad,
	      "%s: the write landed intact (rc %zd, %d errors, %d bad bytes)", r->prov, rc,
	      sa.errors, bad);
	check(sb.remote == 1 && sb.data == 0xdeadbeefull,
	      "%s: the target got the 32-bit CQ data (0x%" PRIx64 ", %d completions)", r->prov,
	      sb.data, sb.remote);

	/* Read it back into a fresh place. */
	memset(&rd, 0, sizeof(rd));
	memset(src + len, 0, len);
	rc = POST(fi_read(r->a, src + len, len, r->desca, r->addr_b, (uint64_t)(uintptr_t)dst,
			  fi_mr_key(r->mrb), &rd.ctx));
	check(rc == 0, "%s: fi_read of 64 KiB (rc %zd)", r->prov, rc);
	if (rc)
		return;
	rc = wait_op2(r->cqa, &rd, simple_done, &sa, r->cqb, &sb);
	bad = 0;
	for (size_t i = 0; i < len; i++)
		bad += src[len + i] != src[i];
	check(rc == 0 && sa.errors == 0 && !bad,
	      "%s: the read came back intact (rc %zd, %d errors, %d bad bytes)", r->prov, rc,
	      sa.errors, bad);

	/* RMA to a region the target already closed completes with an error. */
	{
		struct fid_mr *gone = NULL;
		uint64_t v = ctr("violations"), re = ctr("remote_errors");
		char msg[256] = "";
		rc = fi_mr_reg(r->domain, dst, 4096, FI_REMOTE_WRITE | FI_REMOTE_READ, 0, 0, 0, &gone,
			       NULL);
		if (!rc) {
			uint64_t key = fi_mr_key(gone);
			fi_close(&gone->fid);
			memset(&w, 0, sizeof(w));
			sa.errors = 0;
			rc = POST(fi_write(r->a, src, 64, r->desca, r->addr_b, (uint64_t)(uintptr_t)dst,
					   key, &w.ctx));
			if (!rc)
				rc = wait_op2(r->cqa, &w, simple_done, &sa, r->cqb, &sb);
			fi_cq_strerror(r->cqa, 0x0fabe771, NULL, msg, sizeof(msg));
			check(rc == 0 && sa.errors == 1 && sa.last_err == FI_EIO &&
			      ctr("violations") == v && ctr("remote_errors") == re + 1 &&
			      strstr(msg, "closed"),
			      "%s: fi_write to a closed region completes with FI_EIO (rc %zd, %d errors)",
			      r->prov, rc, sa.errors);
		}
	}

	/* writemsg with one remote iov is fine. */
	{
		struct iovec iov = {src, 4096};
		void *desc = r->desca;
		struct fi_rma_iov rma = {(uint64_t)(uintptr_t)dst + len, 4096, fi_mr_key(r->mrb)};
		struct fi_msg_rma msg = {.msg_iov = &iov, .desc = &desc, .iov_count = 1,
					 .addr = r->addr_b, .rma_iov = &rma, .rma_iov_count = 1,
					 .context = &w.ctx};
		w.done = 0;
		rc = POST(fi_writemsg(r->a, &msg, FI_COMPLETION));
		if (!rc)
			rc = wait_op2(r->cqa, &w, simple_done, &sa, r->cqb, &sb);
		check(rc == 0 && !memcmp(dst + len, src, 4096), "%s: fi_writemsg landed (rc %zd)",
		      r->prov, rc);
	}
}

/* ---- many small sends ---------------------------------------------------------------- */

struct bulk {
	struct rig *r;
	struct op *sends;      /* NMSG */
	struct op recvs[NRECV];
	int sent_done[NMSG];   /* completions per send context */
	int recvd[NMSG];       /* deliveries per sequence number */
	int send_errors, recv_errors, bad_bytes, bad_ctx, dup, unknown;
	int completed, received, inversions, last_seq;
	int scribbled;         /* completed contexts that came back changed */
	int repost[NRECV], nrepost;
};

static uint8_t *recv_slot(struct bulk *k, int i)
{
	return k->r->bufb + (2 << 20) + (size_t)i * 256;
}

static uint8_t *send_buf(struct bulk *k, int i)
{
	return k->r->bufa + (2 << 20) + (size_t)i * MSG;
}

static void bulk_done(void *arg, struct op *op, int err, const struct fi_cq_data_entry *e)
{
	struct bulk *k = arg;
	static const uint8_t zero[sizeof(struct fi_context2)];

	(void)e;
	if (!op) {
		k->unknown++;
		return;
	}
	if (memcmp(&op->ctx, zero, sizeof(zero)))
		k->scribbled++;
	if (op->kind == K_SEND) {
		if (op->idx < 0 || op->idx >= NMSG) {
			k->bad_ctx++;
			return;
		}
		if (k->sent_done[op->idx]++)
			k->dup++;
		if (err)
			k->send_errors++;
		if (op->idx < k->last_seq)
			k->inversions++;
		else
			k->last_seq = op->idx;
		k->completed++;
		return;
	}
	if (op->kind == K_RECV) {
		uint8_t *b = recv_slot(k, op->idx);
		uint32_t seq;
		if (err) {
			k->recv_errors++;
		} else {
			memcpy(&seq, b, 4);
			if (seq >= NMSG || e->len != MSG) {
				k->bad_bytes++;
			} else {
				for (int j = 4; j < MSG; j++)
					k->bad_bytes += b[j] != (uint8_t)(seq * 7 + (uint32_t)j);
				if (k->recvd[seq]++)
					k->dup++;
				k->received++;
			}
		}
		k->repost[k->nrepost++] = op->idx;
		return;
	}
	k->bad_ctx++;
}

static int bulk_post_recv(struct bulk *k, int i)
{
	struct op *o = &k->recvs[i];

	memset(o, 0, sizeof(*o));
	o->kind = K_RECV;
	o->idx = i;
	memset(recv_slot(k, i), 0, 256);
	return (int)fi_recv(k->r->b, recv_slot(k, i), 256, k->r->descb, FI_ADDR_UNSPEC, &o->ctx);
}

/* Sends NMSG messages a -> b; returns 0 when everything completed. */
static int bulk_run(struct rig *r, struct bulk *k)
{
	int next = 0, inflight = 0;
	double t0 = now_s();

	memset(k, 0, sizeof(*k));
	k->r = r;
	k->sends = calloc(NMSG, sizeof(struct op));
	k->last_seq = -1;
	for (int i = 0; i < NRECV; i++)
		k->repost[k->nrepost++] = i;
	while (k->completed < NMSG || k->received < NMSG) {
		/* (re)post receives; refused ones stay queued */
		int keep = 0;
		for (int i = 0; i < k->nrepost; i++) {
			int slot = k->repost[i];
			if (bulk_post_recv(k, slot))
				k->repost[keep++] = slot;
		}
		k->nrepost = keep;
		inflight = next - k->completed;
		while (next < NMSG && inflight < 64) {
			struct op *o = &k->sends[next];
			uint8_t *b = send_buf(k, next);
			uint32_t seq = (uint32_t)next;
			ssize_t rc;
			memcpy(b, &seq, 4);
			for (int j = 4; j < MSG; j++)
				b[j] = (uint8_t)(seq * 7 + (uint32_t)j);
			o->kind = K_SEND;
			o->idx = next;
			rc = fi_send(r->a, b, MSG, r->desca, r->addr_b, &o->ctx);
			if (rc == -FI_EAGAIN)
				break;
			if (rc) {
				check(0, "%s: fi_send #%d: %zd", r->prov, next, rc);
				return -1;
			}
			next++;
			inflight++;
		}
		if (poll_cq(r->cqa, bulk_done, k) < 0 || poll_cq(r->cqb, bulk_done, k) < 0) {
			check(0, "%s: fi_cq_read failed", r->prov);
			return -1;
		}
		if (now_s() - t0 > 60) {
			check(0, "%s: bulk timed out: %d/%d sends completed, %d/%d received", r->prov,
			      k->completed, NMSG, k->received, NMSG);
			return -1;
		}
	}
	/* Receives still posted are cancelled when the endpoint closes. */
	return 0;
}

static int env_is_zero(const char *name)
{
	const char *v = getenv(name);
	return v && strtoul(v, NULL, 0) == 0;
}

static void test_bulk(struct rig *r)
{
	struct bulk k;
	uint64_t re0 = ctr("reordered"), ea0 = ctr("eagain_posts"), ec0 = ctr("eagain_cq_reads");
	uint64_t v0 = ctr("violations");
	int missing = 0;

	if (bulk_run(r, &k))
		return;
	for (int i = 0; i < NMSG; i++)
		missing += k.sent_done[i] != 1 || k.recvd[i] != 1;
	check(k.dup == 0 && missing == 0 && k.unknown == 0 && k.bad_ctx == 0,
	      "%s: %d sends: every completion exactly once (dup %d, missing %d, unknown %d)", r->prov,
	      NMSG, k.dup, missing, k.unknown);
	check(k.bad_bytes == 0 && k.send_errors == 0 && k.recv_errors == 0,
	      "%s: every message intact (%d bad bytes, %d/%d errors)", r->prov, k.bad_bytes,
	      k.send_errors, k.recv_errors);
	if (env_is_zero("FABNET_CONTRACT_REORDER"))
		printf("skip %s: reordering is off (FABNET_CONTRACT_REORDER=0)\n", r->prov);
	else
	check(k.inversions > 0 && ctr("reordered") > re0,
	      "%s: completions came back out of order (%d inversions seen, %" PRIu64
	      " reordered by the layer)", r->prov, k.inversions, ctr("reordered") - re0);
	if (env_is_zero("FABNET_CONTRACT_EAGAIN"))
		printf("skip %s: EAGAIN injection is off (FABNET_CONTRACT_EAGAIN=0)\n", r->prov);
	else
	check(ctr("eagain_posts") > ea0 && ctr("eagain_cq_reads") > ec0,
	      "%s: EAGAIN injected (%" PRIu64 " posts, %" PRIu64 " CQ reads)", r->prov,
	      ctr("eagain_posts") - ea0, ctr("eagain_cq_reads") - ec0);
	check(k.scribbled == 2 * NMSG,
	      "%s: every completed context came back scribbled (%d)", r->prov, k.scribbled);
	check(ctr("violations") == v0, "%s: correct traffic raised no violation", r->prov);
	free(k.sends);
}

static void test_errors(const char *prov)
{
	struct rig r;
	struct bulk k;
	uint64_t inj0 = ctr("errors_injected");
	int missing = 0;
	char msg[256];

	setenv("FABNET_CONTRACT_CQ_ERROR_EVERY", "5", 1);
	if (rig_open(&r, prov)) {
		unsetenv("FABNET_CONTRACT_CQ_ERROR_EVERY");
		rig_close(&r);
		return;
	}
	unsetenv("FABNET_CONTRACT_CQ_ERROR_EVERY");
	if (bulk_run(&r, &k) == 0) {
		for (int i = 0; i < NMSG; i++)
			missing += k.sent_done[i] != 1 || k.recvd[i] != 1;
		check(k.send_errors == NMSG / 5 && ctr("errors_injected") - inj0 == NMSG / 5,
		      "%s: every 5th send completion became an FI_EIO error entry (%d errors)", prov,
		      k.send_errors);
		check(k.dup == 0 && missing == 0 && k.bad_bytes == 0,
		      "%s: with injected errors every completion still came exactly once and every "
		      "message arrived (dup %d, missing %d, bad %d)", prov, k.dup, missing,
		      k.bad_bytes);
		msg[0] = '\0';
		fi_cq_strerror(r.cqa, 0x0fabe770, NULL, msg, sizeof(msg));
		check(strstr(msg, "injected") != NULL, "%s: fi_cq_strerror explains the injected error",
		      prov);
	}
	free(k.sends);
	rig_close(&r);
}

int main(int argc, char **argv)
{
	const char *defaults[] = {"tcp", "shm"};
	const char **provs = defaults;
	int nprov = 2;

	setvbuf(stdout, NULL, _IOLBF, 0);
	/* Defaults for this test; the caller's environment wins. */
	setenv("FABNET_CONTRACT_REORDER", "8", 0);
	setenv("FABNET_CONTRACT_EAGAIN", "10", 0);
	CTR = (fabnet_contract_counter_fn)(uintptr_t)dlsym(RTLD_DEFAULT, "fabnet_contract_counter");
	if (!CTR) {
		printf("FAIL the EFA-contract layer is not loaded: run with "
		       "LD_PRELOAD=.../libfabnet-efa-contract.so\n0 passed, 1 failed\n");
		return 1;
	}
	if (argc > 1) {
		provs = (const char **)(argv + 1);
		nprov = argc - 1;
	}
	for (int p = 0; p < nprov; p++) {
		struct rig r;
		const char *max_rma = getenv("FABNET_CONTRACT_MAX_RMA");
		char *saved = max_rma ? strdup(max_rma) : NULL;
		int rc;

		printf("---- provider %s\n", provs[p]);
		test_getinfo(provs[p]);
		setenv("FABNET_CONTRACT_MAX_RMA", "256K", 1);
		rc = rig_open(&r, provs[p]);
		if (saved)
			setenv("FABNET_CONTRACT_MAX_RMA", saved, 1);
		else
			unsetenv("FABNET_CONTRACT_MAX_RMA");
		free(saved);
		if (rc == 0) {
			test_violations(&r);
			test_rma(&r);
			test_bulk(&r);
		}
		rig_close(&r);
		test_errors(provs[p]);
	}
	check(ctr("in_flight") == 0, "nothing left in flight after closing (%" PRIu64 ")",
	      ctr("in_flight"));
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
