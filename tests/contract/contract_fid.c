/*
 * fabnet EFA-contract layer: fabric, domain, memory region and endpoint
 * wrappers. Each wrapper is a fid object of our own whose ops tables forward
 * to the real object, checking EFA's contract on the way.
 *
 * TEST ONLY: see README.md in this directory.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "contract_int.h"

#define FC_CONTAINER(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

static struct fi_ops fc_fabric_fi_ops, fc_domain_fi_ops, fc_mr_fi_ops, fc_ep_fi_ops;

static struct fc_fabric *FAB(struct fid_fabric *f)
{
	return FC_CONTAINER(f, struct fc_fabric, pub);
}
static struct fc_domain *DOM(struct fid_domain *d)
{
	return FC_CONTAINER(d, struct fc_domain, pub);
}
static struct fc_ep *EP(struct fid_ep *e)
{
	return FC_CONTAINER(e, struct fc_ep, pub);
}

struct fid *fc_unwrap(struct fid *fid)
{
	if (!fid)
		return NULL;
	if (fid->ops == &fc_fabric_fi_ops)
		return &FC_CONTAINER(fid, struct fc_fabric, pub.fid)->real->fid;
	if (fid->ops == &fc_domain_fi_ops)
		return &FC_CONTAINER(fid, struct fc_domain, pub.fid)->real->fid;
	if (fid->ops == &fc_mr_fi_ops)
		return &FC_CONTAINER(fid, struct fc_mr, pub.fid)->real->fid;
	if (fid->ops == &fc_ep_fi_ops)
		return &FC_CONTAINER(fid, struct fc_ep, pub.fid)->real->fid;
	if (fc_is_cq(fid))
		return &fc_cq_of(fid)->real->fid;
	return fid;
}

/* ---- generic fid forwarding -------------------------------------------------------- */

static int fc_fwd_bind(struct fid *fid, struct fid *bfid, uint64_t flags)
{
	struct fid *real = fc_unwrap(fid);
	return real->ops->bind(real, fc_unwrap(bfid), flags);
}

static int fc_fwd_control(struct fid *fid, int command, void *arg)
{
	struct fid *real = fc_unwrap(fid);

	if (command == FI_ALIAS)
		return -FI_ENOSYS; /* would hand out a real, unwrapped object */
	return real->ops->control(real, command, arg);
}

static int fc_fwd_ops_open(struct fid *fid, const char *name, uint64_t flags, void **ops,
			   void *context)
{
	struct fid *real = fc_unwrap(fid);
	return real->ops->ops_open(real, name, flags, ops, context);
}

static int fc_fwd_tostr(const struct fid *fid, char *buf, size_t len)
{
	struct fid *real = fc_unwrap((struct fid *)(uintptr_t)fid);
	if (!FI_CHECK_OP(real->ops, struct fi_ops, tostr))
		return -FI_ENOSYS;
	return real->ops->tostr(real, buf, len);
}

static int fc_fwd_ops_set(struct fid *fid, const char *name, uint64_t flags, void *ops,
			  void *context)
{
	struct fid *real = fc_unwrap(fid);
	if (!FI_CHECK_OP(real->ops, struct fi_ops, ops_set))
		return -FI_ENOSYS;
	return real->ops->ops_set(real, name, flags, ops, context);
}

/* ---- fabric ------------------------------------------------------------------------------ */

static int fc_domain_open(struct fc_fabric *fab, struct fi_info *info, struct fid_domain **out,
			  uint64_t flags, void *context, int v2);

static int fc_fabric_close(struct fid *fid)
{
	struct fc_fabric *f = FC_CONTAINER(fid, struct fc_fabric, pub.fid);
	int rc = fi_close(&f->real->fid);

	if (rc)
		return rc;
	free(f);
	return 0;
}

static int fc_fabric_domain(struct fid_fabric *fabric, struct fi_info *info,
			    struct fid_domain **dom, void *context)
{
	return fc_domain_open(FAB(fabric), info, dom, 0, context, 0);
}

static int fc_fabric_domain2(struct fid_fabric *fabric, struct fi_info *info,
			     struct fid_domain **dom, uint64_t flags, void *context)
{
	return fc_domain_open(FAB(fabric), info, dom, flags, context, 1);
}

static int fc_fabric_passive_ep(struct fid_fabric *fabric, struct fi_info *info,
				struct fid_pep **pep, void *context)
{
	(void)fabric;
	(void)info;
	(void)pep;
	(void)context;
	return -FI_ENOSYS; /* EFA offers reliable datagrams only */
}

static int fc_fabric_eq_open(struct fid_fabric *fabric, struct fi_eq_attr *attr,
			     struct fid_eq **eq, void *context)
{
	return fi_eq_open(FAB(fabric)->real, attr, eq, context);
}

static int fc_fabric_wait_open(struct fid_fabric *fabric, struct fi_wait_attr *attr,
			       struct fid_wait **waitset)
{
	struct fid_fabric *real = FAB(fabric)->real;
	return real->ops->wait_open(real, attr, waitset);
}

static int fc_fabric_trywait(struct fid_fabric *fabric, struct fid **fids, int count)
{
	struct fid *real[64];

	if (count < 0 || count > 64)
		return -FI_EINVAL;
	for (int i = 0; i < count; i++) {
		if (fc_is_cq(fids[i])) {
			struct fc_cq *cq = fc_cq_of(fids[i]);
			size_t n;
			pthread_mutex_lock(&cq->lock);
			n = cq->n;
			pthread_mutex_unlock(&cq->lock);
			if (n)
				return -FI_EAGAIN; /* we hold completions: do not block */
		}
		real[i] = fc_unwrap(fids[i]);
	}
	return fi_trywait(FAB(fabric)->real, real, count);
}

static struct fi_ops fc_fabric_fi_ops = {
	.size = sizeof(struct fi_ops),
	.close = fc_fabric_close,
	.bind = fc_fwd_bind,
	.control = fc_fwd_control,
	.ops_open = fc_fwd_ops_open,
	.tostr = fc_fwd_tostr,
	.ops_set = fc_fwd_ops_set,
};

static struct fi_ops_fabric fc_fabric_ops = {
	.size = sizeof(struct fi_ops_fabric),
	.domain = fc_fabric_domain,
	.passive_ep = fc_fabric_passive_ep,
	.eq_open = fc_fabric_eq_open,
	.wait_open = fc_fabric_wait_open,
	.trywait = fc_fabric_trywait,
	.domain2 = fc_fabric_domain2,
};

static uint32_t fc_fabric_serial;

int fc_wrap_fabric(struct fid_fabric *real, void *context, struct fid_fabric **out)
{
	struct fc_fabric *f = calloc(1, sizeof(*f));

	if (!f) {
		fi_close(&real->fid);
		return -FI_ENOMEM;
	}
	f->pub.fid.fclass = FI_CLASS_FABRIC;
	f->pub.fid.context = context;
	f->pub.fid.ops = &fc_fabric_fi_ops;
	f->pub.ops = &fc_fabric_ops;
	f->pub.api_version = real->api_version;
	f->real = real;
	f->serial = __atomic_add_fetch(&fc_fabric_serial, 1, __ATOMIC_RELAXED);
	fc_count(FC_objects_wrapped, 1);
	*out = &f->pub;
	return 0;
}

/* ---- domain ------------------------------------------------------------------------------ */

static struct fi_ops_domain fc_domain_ops;
static struct fi_ops_mr fc_mr_ops;

/* The info the real provider is opened with: what it granted, not what we
 * advertised (virtual addresses stay: the application sends those). */
static struct fi_info *fc_real_info(const struct fi_info *info, uint64_t *added_out)
{
	struct fi_info *ri = fc_real.dupinfo(info);
	uint64_t added = fc_added_mr_mode(info);

	if (!ri)
		return NULL;
	if (ri->domain_attr)
		ri->domain_attr->mr_mode =
			(int)(((uint64_t)(unsigned)info->domain_attr->mr_mode & ~added) | FI_MR_VIRT_ADDR);
	if (added_out)
		*added_out = added;
	return ri;
}

static int fc_domain_close(struct fid *fid)
{
	struct fc_domain *d = FC_CONTAINER(fid, struct fc_domain, pub.fid);
	int rc = fi_close(&d->real->fid);

	if (rc)
		return rc;
	pthread_mutex_destroy(&d->lock);
	free(d);
	return 0;
}

static int fc_domain_open(struct fc_fabric *fab, struct fi_info *info, struct fid_domain **out,
			  uint64_t flags, void *context, int v2)
{
	struct fid_domain *real = NULL;
	struct fi_info *ri;
	struct fc_domain *d;
	uint64_t added = 0;
	int rc;

	if (!info || !info->domain_attr)
		return -FI_EINVAL;
	ri = fc_real_info(info, &added);
	if (!ri)
		return -FI_ENOMEM;
	if (v2)
		rc = fi_domain2(fab->real, ri, &real, flags, context);
	else
		rc = fi_domain(fab->real, ri, &real, context);
	if (rc) {
		/* The provider wants the bits we stripped: give it the caller's info. */
		fc_vlog("fi_domain with the real mr_mode 0x%x failed (%d); retrying with 0x%x",
			ri->domain_attr->mr_mode, rc, info->domain_attr->mr_mode);
		ri->domain_attr->mr_mode = info->domain_attr->mr_mode;
		added = 0;
		rc = v2 ? fi_domain2(fab->real, ri, &real, flags, context)
			: fi_domain(fab->real, ri, &real, context);
	}
	if (rc) {
		fc_real.freeinfo(ri);
		return rc;
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		fi_close(&real->fid);
		fc_real.freeinfo(ri);
		return -FI_ENOMEM;
	}
	d->pub.fid.fclass = FI_CLASS_DOMAIN;
	d->pub.fid.context = context;
	d->pub.fid.ops = &fc_domain_fi_ops;
	d->pub.ops = &fc_domain_ops;
	d->pub.mr = &fc_mr_ops;
	d->real = real;
	d->fab = fab;
	d->added_mr_mode = added;
	d->real_mr_mode = (uint64_t)(unsigned)ri->domain_attr->mr_mode;
	pthread_mutex_init(&d->lock, NULL);
	snprintf(d->prov, sizeof(d->prov), "%s",
		 info->fabric_attr && info->fabric_attr->prov_name ? info->fabric_attr->prov_name : "?");
	snprintf(d->name, sizeof(d->name), "%s", info->domain_attr->name ? info->domain_attr->name : "?");
	/* Providers layered on ofi_rxm derive their core provider's mr_mode anew
	 * and ignore the FI_MR_VIRT_ADDR we ask for: they want offsets. */
	d->translate = (added & FI_MR_VIRT_ADDR) && strstr(d->prov, "ofi_rxm") != NULL;
	if (getenv("FABNET_CONTRACT_TRANSLATE") && *getenv("FABNET_CONTRACT_TRANSLATE"))
		d->translate = (int)fc_env_u64("FABNET_CONTRACT_TRANSLATE", 0);
	fc_vlog("domain %s/%s: advertised mr_mode 0x%x, real mr_mode 0x%" PRIx64 "%s", d->prov,
		d->name, info->domain_attr->mr_mode, d->real_mr_mode,
		d->translate ? ", RMA addresses translated to offsets" : "");
	fc_real.freeinfo(ri);
	fc_count(FC_objects_wrapped, 1);
	*out = &d->pub;
	return 0;
}

static int fc_domain_av_open(struct fid_domain *domain, struct fi_av_attr *attr,
			     struct fid_av **av, void *context)
{
	/* Nothing to check on an address vector: the caller gets the real one. */
	return fi_av_open(DOM(domain)->real, attr, av, context);
}

static int fc_domain_cq_open(struct fid_domain *domain, struct fi_cq_attr *attr,
			     struct fid_cq **cq, void *context)
{
	return fc_cq_open(DOM(domain), attr, cq, context);
}

static int fc_ep_open(struct fc_domain *dom, struct fi_info *info, struct fid_ep **out,
		      uint64_t flags, void *context, int v2);

static int fc_domain_endpoint(struct fid_domain *domain, struct fi_info *info,
			      struct fid_ep **ep, void *context)
{
	return fc_ep_open(DOM(domain), info, ep, 0, context, 0);
}

static int fc_domain_endpoint2(struct fid_domain *domain, struct fi_info *info,
			       struct fid_ep **ep, uint64_t flags, void *context)
{
	return fc_ep_open(DOM(domain), info, ep, flags, context, 1);
}

static int fc_domain_scalable_ep(struct fid_domain *domain, struct fi_info *info,
				 struct fid_ep **sep, void *context)
{
	(void)domain, (void)info, (void)sep, (void)context;
	return -FI_ENOSYS;
}

static int fc_domain_cntr_open(struct fid_domain *domain, struct fi_cntr_attr *attr,
			       struct fid_cntr **cntr, void *context)
{
	return fi_cntr_open(DOM(domain)->real, attr, cntr, context);
}

static int fc_domain_poll_open(struct fid_domain *domain, struct fi_poll_attr *attr,
			       struct fid_poll **pollset)
{
	(void)domain, (void)attr, (void)pollset;
	return -FI_ENOSYS;
}

static int fc_domain_stx_ctx(struct fid_domain *domain, struct fi_tx_attr *attr,
			     struct fid_stx **stx, void *context)
{
	(void)domain, (void)attr, (void)stx, (void)context;
	return -FI_ENOSYS;
}

static int fc_domain_srx_ctx(struct fid_domain *domain, struct fi_rx_attr *attr,
			     struct fid_ep **rx_ep, void *context)
{
	(void)domain, (void)attr, (void)rx_ep, (void)context;
	return -FI_ENOSYS;
}

static int fc_domain_query_atomic(struct fid_domain *domain, enum fi_datatype datatype,
				  enum fi_op op, struct fi_atomic_attr *attr, uint64_t flags)
{
	(void)domain, (void)datatype, (void)op, (void)attr, (void)flags;
	return -FI_ENOSYS;
}

static int fc_domain_query_collective(struct fid_domain *domain, enum fi_collective_op coll,
				      struct fi_collective_attr *attr, uint64_t flags)
{
	(void)domain, (void)coll, (void)attr, (void)flags;
	return -FI_ENOSYS;
}

static struct fi_ops fc_domain_fi_ops = {
	.size = sizeof(struct fi_ops),
	.close = fc_domain_close,
	.bind = fc_fwd_bind,
	.control = fc_fwd_control,
	.ops_open = fc_fwd_ops_open,
	.tostr = fc_fwd_tostr,
	.ops_set = fc_fwd_ops_set,
};

static struct fi_ops_domain fc_domain_ops = {
	.size = sizeof(struct fi_ops_domain),
	.av_open = fc_domain_av_open,
	.cq_open = fc_domain_cq_open,
	.endpoint = fc_domain_endpoint,
	.scalable_ep = fc_domain_scalable_ep,
	.cntr_open = fc_domain_cntr_open,
	.poll_open = fc_domain_poll_open,
	.stx_ctx = fc_domain_stx_ctx,
	.srx_ctx = fc_domain_srx_ctx,
	.query_atomic = fc_domain_query_atomic,
	.query_collective = fc_domain_query_collective,
	.endpoint2 = fc_domain_endpoint2,
};

/* ---- memory regions ---------------------------------------------------------------------- */

#define FC_MR_BUCKETS 1024
static struct fc_mr *fc_mr_table[FC_MR_BUCKETS];
static pthread_mutex_t fc_mr_lock = PTHREAD_MUTEX_INITIALIZER;

static size_t fc_mr_bucket(const void *p)
{
	return (size_t)(fc_mix64((uint64_t)(uintptr_t)p) % FC_MR_BUCKETS);
}

struct fc_mr *fc_mr_lookup(const void *desc)
{
	struct fc_mr *m;

	if (!desc)
		return NULL;
	pthread_mutex_lock(&fc_mr_lock);
	for (m = fc_mr_table[fc_mr_bucket(desc)]; m; m = m->hnext)
		if ((const void *)m == desc)
			break;
	pthread_mutex_unlock(&fc_mr_lock);
	return m;
}

static int fc_mr_close(struct fid *fid)
{
	struct fc_mr *m = FC_CONTAINER(fid, struct fc_mr, pub.fid), **pp;
	int rc;

	pthread_mutex_lock(&fc_mr_lock);
	for (pp = &fc_mr_table[fc_mr_bucket(m)]; *pp; pp = &(*pp)->hnext)
		if (*pp == m) {
			*pp = m->hnext;
			break;
		}
	pthread_mutex_unlock(&fc_mr_lock);
	fc_reg_withdraw(m->rid);
	rc = fi_close(&m->real->fid);
	if (rc)
		fc_log("closing a memory region failed (%d); it is forgotten anyway", rc);
	free(m);
	return rc;
}

static struct fi_ops fc_mr_fi_ops = {
	.size = sizeof(struct fi_ops),
	.close = fc_mr_close,
	.bind = fc_fwd_bind,
	.control = fc_fwd_control,
	.ops_open = fc_fwd_ops_open,
	.tostr = fc_fwd_tostr,
	.ops_set = fc_fwd_ops_set,
};

static int fc_mr_register(struct fc_domain *dom, const struct fi_mr_attr *attr, uint64_t flags,
			  struct fid_mr **out, const char *op)
{
	struct fi_mr_attr a = *attr;
	const struct iovec *iov = attr->mr_iov;
	size_t niov = attr->iov_count;
	struct fid_mr *real = NULL;
	struct fc_mr *m;
	uint64_t rk;
	uint32_t r;
	int rc;
#if FC_LIBFABRIC_2
	struct iovec span;

	if ((flags & FI_MR_DMABUF) && attr->dmabuf) {
		/* the region starts offset bytes into the mapping at base_addr */
		span.iov_base = (char *)attr->dmabuf->base_addr + attr->dmabuf->offset;
		span.iov_len = attr->dmabuf->len;
		iov = &span;
		niov = 1;
	}
#endif
	if (niov > FC_MR_IOV_LIMIT) {
		fc_violation(op, "%zu iovs in one registration; EFA's mr_iov_limit is %d", niov,
			     FC_MR_IOV_LIMIT);
		return -FI_EINVAL;
	}
	r = fc_next_rid();
	a.requested_key = (dom->real_mr_mode & FI_MR_PROV_KEY) ? 0 : r;
	pthread_mutex_lock(&dom->lock);
	rc = fi_mr_regattr(dom->real, &a, flags, &real);
	pthread_mutex_unlock(&dom->lock);
	if (rc)
		return rc;
	rk = fi_mr_key(real);
	if (rk != r)
		fc_vlog("%s: the real provider chose key 0x%" PRIx64 " (we asked for 0x%x): peers "
			"on other hosts cannot use this region through the layer", op, rk, r);
	m = calloc(1, sizeof(*m));
	if (!m) {
		fi_close(&real->fid);
		return -FI_ENOMEM;
	}
	m->pub.fid.fclass = FI_CLASS_MR;
	m->pub.fid.context = attr->context;
	m->pub.fid.ops = &fc_mr_fi_ops;
	m->pub.mem_desc = m;
	m->real_key = rk;
	m->rid = r;
	m->pub.key = fc_key_encode(r);
	m->real = real;
	m->dom = dom;
	m->access = attr->access;
	m->niov = niov;
	for (size_t i = 0; i < niov; i++)
		m->iov[i] = iov[i];
	pthread_mutex_lock(&fc_mr_lock);
	m->hnext = fc_mr_table[fc_mr_bucket(m)];
	fc_mr_table[fc_mr_bucket(m)] = m;
	pthread_mutex_unlock(&fc_mr_lock);
	fc_reg_publish(r, rk, niov ? iov[0].iov_base : NULL, niov ? iov[0].iov_len : 0, attr->access);
	fc_count(FC_mr_registrations, 1);
	fc_count(FC_objects_wrapped, 1);
	*out = &m->pub;
	return 0;
}

static int fc_mr_regattr(struct fid *fid, const struct fi_mr_attr *attr, uint64_t flags,
			 struct fid_mr **mr)
{
	struct fc_domain *d = FC_CONTAINER(fid, struct fc_domain, pub.fid);
	return fc_mr_register(d, attr, flags, mr, "fi_mr_regattr");
}

static int fc_mr_regv(struct fid *fid, const struct iovec *iov, size_t count, uint64_t access,
		      uint64_t offset, uint64_t requested_key, uint64_t flags, struct fid_mr **mr,
		      void *context)
{
	struct fc_domain *d = FC_CONTAINER(fid, struct fc_domain, pub.fid);
	struct fi_mr_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.mr_iov = iov;
	attr.iov_count = count;
	attr.access = access;
	attr.offset = offset;
	attr.requested_key = requested_key;
	attr.context = context;
	attr.iface = FI_HMEM_SYSTEM;
	return fc_mr_register(d, &attr, flags, mr, "fi_mr_regv");
}

static int fc_mr_reg(struct fid *fid, const void *buf, size_t len, uint64_t access,
		     uint64_t offset, uint64_t requested_key, uint64_t flags, struct fid_mr **mr,
		     void *context)
{
	struct fc_domain *d = FC_CONTAINER(fid, struct fc_domain, pub.fid);
	struct iovec iov = {.iov_base = (void *)(uintptr_t)buf, .iov_len = len};
	struct fi_mr_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.mr_iov = &iov;
	attr.iov_count = 1;
	attr.access = access;
	attr.offset = offset;
	attr.requested_key = requested_key;
	attr.context = context;
	attr.iface = FI_HMEM_SYSTEM;
	return fc_mr_register(d, &attr, flags, mr, "fi_mr_reg");
}

static struct fi_ops_mr fc_mr_ops = {
	.size = sizeof(struct fi_ops_mr),
	.reg = fc_mr_reg,
	.regv = fc_mr_regv,
	.regattr = fc_mr_regattr,
};

/* ---- endpoint: the data path ------------------------------------------------------------- */

enum fc_opcode {
	OP_RECV, OP_RECVV, OP_RECVMSG, OP_SEND, OP_SENDV, OP_SENDMSG, OP_INJECT, OP_SENDDATA,
	OP_INJECTDATA, OP_READ, OP_READV, OP_READMSG, OP_WRITE, OP_WRITEV, OP_WRITEMSG,
	OP_INJECT_WRITE, OP_WRITEDATA, OP_INJECT_WRITEDATA, OP_TRECV, OP_TRECVV, OP_TRECVMSG,
	OP_TSEND, OP_TSENDV, OP_TSENDMSG, OP_TINJECT, OP_TSENDDATA, OP_TINJECTDATA,
};

struct fc_post {
	enum fc_opcode code;
	const char *name;
	int kind;
	int inject;               /* fi_inject*: no completion, no context, no descriptor */
	int is_msg;               /* a *msg variant: flags apply */
	const struct iovec *iov;
	void **desc;              /* may be NULL */
	size_t count;
	fi_addr_t addr;
	void *ctx;
	uint64_t flags;
	int has_data;
	uint64_t data;
	const struct fi_rma_iov *rma;
	size_t rma_count;
	uint64_t tag, ignore;
	const void *msg;          /* the caller's fi_msg / fi_msg_rma / fi_msg_tagged */
};

static size_t fc_iov_total(const struct iovec *iov, size_t count);

static int fc_mr_covers(const struct fc_mr *m, const void *buf, size_t len)
{
	uintptr_t p = (uintptr_t)buf;

	for (size_t i = 0; i < m->niov; i++) {
		uintptr_t base = (uintptr_t)m->iov[i].iov_base;
		size_t n = m->iov[i].iov_len;
		if (p >= base && len <= n && p - base <= n - len)
			return 1;
	}
	return 0;
}

static uint64_t fc_local_access(int kind)
{
	switch (kind) {
	case FC_K_SEND: return FI_SEND;
	case FC_K_RECV: return FI_RECV;
	case FC_K_WRITE: return FI_WRITE;
	case FC_K_READ: return FI_READ;
	default: return 0;
	}
}

static const char *fc_access_name(uint64_t a)
{
	return a == FI_SEND ? "FI_SEND" : a == FI_RECV ? "FI_RECV" : a == FI_WRITE ? "FI_WRITE"
									: "FI_READ";
}

/* Checks the contract. Prints every violation; returns how many there were. */
static int fc_check(struct fc_ep *ep, const struct fc_post *p, void **rdesc,
		    struct fi_rma_iov *rrma, int *gone, int *translated)
{
	const char *op = p->name;
	size_t total = 0, rtotal = 0;
	int bad = 0;

	if (p->count > ep->iov_limit) {
		fc_violation(op, "%zu iovs; the endpoint's iov_limit is %zu", p->count, ep->iov_limit);
		return 1;
	}
	for (size_t i = 0; i < p->count; i++) {
		const void *buf = p->iov[i].iov_base;
		size_t len = p->iov[i].iov_len;
		void *desc = p->desc ? p->desc[i] : NULL;
		struct fc_mr *m = desc ? fc_mr_lookup(desc) : NULL;
		uint64_t need = fc_local_access(p->kind);

		total += len;
		rdesc[i] = m ? m->real->mem_desc : NULL;
		if (p->inject || len == 0)
			continue; /* inject buffers need no registration */
		if (!desc) {
			fc_violation(op, "no memory descriptor for local buffer %zu [%p, +%zu): "
				     "FI_MR_LOCAL requires fi_mr_desc() of a registered region "
				     "covering every local buffer", i, buf, len);
			bad++;
			continue;
		}
		if (!m) {
			fc_violation(op, "descriptor %p of local buffer %zu [%p, +%zu) is not a live "
				     "memory region (never registered, or already closed)", desc, i,
				     buf, len);
			bad++;
			continue;
		}
		if (m->dom != ep->dom) {
			fc_violation(op, "descriptor %p belongs to another domain (%s/%s)", desc,
				     m->dom->prov, m->dom->name);
			bad++;
		}
		if (!fc_mr_covers(m, buf, len)) {
			fc_violation(op, "local buffer %zu [%p, +%zu) lies outside its memory region "
				     "[%p, +%zu) (descriptor %p)", i, buf, len, m->iov[0].iov_base,
				     m->iov[0].iov_len, desc);
			bad++;
		}
		if ((m->access & (FI_SEND | FI_RECV | FI_READ | FI_WRITE)) && !(m->access & need)) {
			fc_violation(op, "local buffer %zu uses a region registered without %s "
				     "(access 0x%" PRIx64 ")", i, fc_access_name(need), m->access);
			bad++;
		}
	}
	if (!p->inject && !p->ctx) {
		fc_violation(op, "NULL context: EFA's FI_CONTEXT2 mode needs a struct fi_context2 "
			     "owned by the application for every operation");
		bad++;
	}
	if (p->kind == FC_K_SEND) {
		if (total > ep->max_msg) {
			fc_violation(op, "%zu bytes exceed max_msg_size %zu", total, ep->max_msg);
			bad++;
		}
		if ((p->inject || (p->is_msg && (p->flags & FI_INJECT))) && total > ep->inject_size) {
			fc_violation(op, "%zu bytes exceed inject_size %zu", total, ep->inject_size);
			bad++;
		}
	}
	if (p->kind == FC_K_WRITE || p->kind == FC_K_READ) {
		if (p->rma_count > ep->rma_iov_limit) {
			fc_violation(op, "%zu remote iovs; EFA's rma_iov_limit is %zu", p->rma_count,
				     ep->rma_iov_limit);
			return bad + 1;
		}
		if (p->inject && total > ep->inject_size) {
			fc_violation(op, "%zu bytes exceed inject_size %zu", total, ep->inject_size);
			bad++;
		}
		for (size_t i = 0; i < p->rma_count; i++) {
			const struct fi_rma_iov *ri = &p->rma[i];
			uint64_t need = p->kind == FC_K_WRITE ? FI_REMOTE_WRITE : FI_REMOTE_READ;
			struct fc_region reg;
			uint16_t nonce;
			uint32_t rid;
			rtotal += ri->len;
			rrma[i] = *ri;
			if (fc_key_decode(ri->key, &nonce, &rid)) {
				fc_violation(op, "remote key 0x%" PRIx64 " was not returned by "
					     "fi_mr_key() (FI_MR_PROV_KEY: the provider chooses keys)",
					     ri->key);
				bad++;
				continue;
			}
			rrma[i].key = rid;
			switch (fc_reg_lookup(nonce, rid, &reg)) {
			case FC_REGION_LIVE:
				rrma[i].key = reg.real_key;
				if (ri->addr < reg.base || ri->len > reg.len ||
				    ri->addr - reg.base > reg.len - ri->len) {
					fc_violation(op, "remote range [0x%" PRIx64 ", +%zu) lies outside "
						     "the target region [0x%" PRIx64 ", +%" PRIu64 ") of "
						     "key 0x%" PRIx64 " (FI_MR_VIRT_ADDR: remote "
						     "addresses are virtual addresses)", ri->addr,
						     ri->len, reg.base, reg.len, ri->key);
					bad++;
				} else if ((reg.access & (FI_REMOTE_READ | FI_REMOTE_WRITE)) &&
					   !(reg.access & need)) {
					fc_violation(op, "the target region of key 0x%" PRIx64 " was "
						     "registered without %s", ri->key,
						     need == FI_REMOTE_WRITE ? "FI_REMOTE_WRITE"
									     : "FI_REMOTE_READ");
					bad++;
				}
				if (ep->dom->translate) {
					rrma[i].addr = ri->addr - reg.base;
					*translated = 1;
				}
				break;
			case FC_REGION_CLOSED:
				*gone = 1;
				break;
			default:
				if (ep->dom->translate)
					fc_log("%s: key 0x%" PRIx64 " belongs to no process on this "
					       "host: its address cannot be translated for %s",
					       op, ri->key, ep->prov);
				break;
			}
		}
		if (total > ep->max_rma || rtotal > ep->max_rma) {
			fc_violation(op, "%zu bytes exceed the RMA size limit %zu", total, ep->max_rma);
			bad++;
		}
	}
	if (p->has_data && (p->data >> 32)) {
		fc_violation(op, "CQ data 0x%" PRIx64 " is wider than cq_data_size (%d bytes)",
			     p->data, FC_CQ_DATA_SIZE);
		bad++;
	}
	return bad;
}

static ssize_t fc_post_real(struct fc_ep *ep, const struct fc_post *p, void **rdesc,
			    const struct fi_rma_iov *rrma, void *rctx)
{
	struct fid_ep *r = ep->real;
	const struct iovec *iov = p->iov;
	void *buf = p->count ? iov[0].iov_base : NULL;
	size_t len = p->count ? iov[0].iov_len : 0;
	uint64_t raddr = p->rma_count ? rrma[0].addr : 0, rkey = p->rma_count ? rrma[0].key : 0;

	switch (p->code) {
	case OP_RECV: return fi_recv(r, buf, len, rdesc[0], p->addr, rctx);
	case OP_RECVV: return fi_recvv(r, iov, rdesc, p->count, p->addr, rctx);
	case OP_RECVMSG: {
		struct fi_msg m = *(const struct fi_msg *)p->msg;
		m.desc = rdesc;
		m.context = rctx;
		return fi_recvmsg(r, &m, p->flags);
	}
	case OP_SEND: return fi_send(r, buf, len, rdesc[0], p->addr, rctx);
	case OP_SENDV: return fi_sendv(r, iov, rdesc, p->count, p->addr, rctx);
	case OP_SENDMSG: {
		struct fi_msg m = *(const struct fi_msg *)p->msg;
		m.desc = rdesc;
		m.context = rctx;
		return fi_sendmsg(r, &m, p->flags);
	}
	case OP_INJECT: return fi_inject(r, buf, len, p->addr);
	case OP_SENDDATA: return fi_senddata(r, buf, len, rdesc[0], p->data, p->addr, rctx);
	case OP_INJECTDATA: return fi_injectdata(r, buf, len, p->data, p->addr);
	case OP_READ: return fi_read(r, buf, len, rdesc[0], p->addr, raddr, rkey, rctx);
	case OP_READV: return fi_readv(r, iov, rdesc, p->count, p->addr, raddr, rkey, rctx);
	case OP_READMSG: {
		struct fi_msg_rma m = *(const struct fi_msg_rma *)p->msg;
		m.desc = rdesc;
		m.rma_iov = rrma;
		m.context = rctx;
		return fi_readmsg(r, &m, p->flags);
	}
	case OP_WRITE: return fi_write(r, buf, len, rdesc[0], p->addr, raddr, rkey, rctx);
	case OP_WRITEV: return fi_writev(r, iov, rdesc, p->count, p->addr, raddr, rkey, rctx);
	case OP_WRITEMSG: {
		struct fi_msg_rma m = *(const struct fi_msg_rma *)p->msg;
		m.desc = rdesc;
		m.rma_iov = rrma;
		m.context = rctx;
		return fi_writemsg(r, &m, p->flags);
	}
	case OP_INJECT_WRITE: return fi_inject_write(r, buf, len, p->addr, raddr, rkey);
	case OP_WRITEDATA:
		return fi_writedata(r, buf, len, rdesc[0], p->data, p->addr, raddr, rkey, rctx);
	case OP_INJECT_WRITEDATA:
		return fi_inject_writedata(r, buf, len, p->data, p->addr, raddr, rkey);
	case OP_TRECV: return fi_trecv(r, buf, len, rdesc[0], p->addr, p->tag, p->ignore, rctx);
	case OP_TRECVV:
		return fi_trecvv(r, iov, rdesc, p->count, p->addr, p->tag, p->ignore, rctx);
	case OP_TRECVMSG: {
		struct fi_msg_tagged m = *(const struct fi_msg_tagged *)p->msg;
		m.desc = rdesc;
		m.context = rctx;
		return fi_trecvmsg(r, &m, p->flags);
	}
	case OP_TSEND: return fi_tsend(r, buf, len, rdesc[0], p->addr, p->tag, rctx);
	case OP_TSENDV: return fi_tsendv(r, iov, rdesc, p->count, p->addr, p->tag, rctx);
	case OP_TSENDMSG: {
		struct fi_msg_tagged m = *(const struct fi_msg_tagged *)p->msg;
		m.desc = rdesc;
		m.context = rctx;
		return fi_tsendmsg(r, &m, p->flags);
	}
	case OP_TINJECT: return fi_tinject(r, buf, len, p->addr, p->tag);
	case OP_TSENDDATA:
		return fi_tsenddata(r, buf, len, rdesc[0], p->data, p->addr, p->tag, rctx);
	case OP_TINJECTDATA: return fi_tinjectdata(r, buf, len, p->data, p->addr, p->tag);
	}
	return -FI_EINVAL;
}

/* The first bytes of a send, for FABNET_CONTRACT_TRACE. */
static const char *fc_head(const struct fc_post *p, char *out, size_t len)
{
	const unsigned char *b = p->count ? p->iov[0].iov_base : NULL;
	size_t n = p->count ? p->iov[0].iov_len : 0;
	size_t o = 0;

	out[0] = '\0';
	if (p->kind != FC_K_SEND || !b)
		return out;
	o += (size_t)snprintf(out, len, " head");
	for (size_t i = 0; i < n && i < 8 && o + 4 < len; i++)
		o += (size_t)snprintf(out + o, len - o, " %02x", b[i]);
	return out;
}

static ssize_t fc_submit(struct fc_ep *ep, const struct fc_post *p)
{
	char head[40];
	void *rdesc[FC_MAX_IOV] = {0};
	struct fi_rma_iov rrma[FC_RMA_IOV_LIMIT];
	unsigned char saved[sizeof(struct fi_context2)];
	struct fc_rec *rec = NULL;
	struct fc_cq *cq;
	int selective, completes, gone = 0, translated = 0;
	void *rctx;
	ssize_t rc;

	memset(rrma, 0, sizeof(rrma));
	fc_count(FC_posts, 1);
	pthread_mutex_lock(&ep->lock);
	if (fc_check(ep, p, rdesc, rrma, &gone, &translated)) {
		pthread_mutex_unlock(&ep->lock);
		return -FI_EINVAL;
	}
	cq = p->kind == FC_K_RECV ? ep->rx_cq : ep->tx_cq;
	selective = p->kind == FC_K_RECV ? ep->rx_selective : ep->tx_selective;
	completes = !p->inject && cq && (!selective || (p->is_msg && (p->flags & FI_COMPLETION)));
	/* A multi-receive buffer completes many times: pass its context through. */
	if (p->is_msg && (p->flags & FI_MULTI_RECV))
		completes = 0;
	rctx = p->ctx;
	pthread_mutex_lock(&fc_rec_lock);
	rec = p->inject ? NULL : fc_rec_lookup_ctx(p->ctx);
	if (rec) {
		const char *prev = rec->op;
		uint64_t serial = rec->serial;
		pthread_mutex_unlock(&fc_rec_lock);
		pthread_mutex_unlock(&ep->lock);
		fc_violation(p->name, "context %p is still in flight (posted by %s, op #%" PRIu64
			     ", not completed yet): each operation needs its own "
			     "struct fi_context2", p->ctx, prev, serial);
		return -FI_EINVAL;
	}
	/* Injected EAGAIN: the post did nothing. */
	if (fc_roll(&ep->rng, ep->eagain_pct)) {
		pthread_mutex_unlock(&fc_rec_lock);
		pthread_mutex_unlock(&ep->lock);
		fc_count(FC_eagain_injected, 1);
		fc_count(FC_eagain_posts, 1);
		fc_trace("trace: %s len %zu ctx %p%s -> injected EAGAIN", p->name,
			 p->count ? fc_iov_total(p->iov, p->count) : 0, p->ctx,
			 fc_cfg.trace ? fc_head(p, head, sizeof(head)) : "");
		return -FI_EAGAIN;
	}
	if (completes) {
		size_t len = 0;
		for (size_t i = 0; i < p->count; i++)
			len += p->iov[i].iov_len;
		rec = fc_rec_new(cq, ep, p->ctx, p->name, p->kind, len, saved);
		if (!rec) {
			pthread_mutex_unlock(&fc_rec_lock);
			pthread_mutex_unlock(&ep->lock);
			return -FI_ENOMEM;
		}
		rctx = rec;
	}
	pthread_mutex_unlock(&fc_rec_lock);
	if (gone) {
		/* EFA fails an RMA to a closed region remotely: an error completion. */
		fc_log("%s: the target region of key 0x%" PRIx64 " was closed: the operation "
		       "completes with FI_EIO as on EFA (not a contract violation by itself)",
		       p->name, p->rma[0].key);
		fc_count(FC_remote_errors, 1);
		rc = 0;
		if (rec)
			rc = fc_cq_add_error(cq, rec, p->kind == FC_K_WRITE ? FI_RMA | FI_WRITE
									    : FI_RMA | FI_READ,
					     0, FI_EIO, FC_REMOTE_GONE_PROV_ERRNO);
	} else {
		rc = fc_post_real(ep, p, rdesc, rrma, rctx);
		if (!rc && translated)
			fc_count(FC_translated, 1);
	}
	fc_trace("trace: %s len %zu ctx %p addr 0x%" PRIx64 "%s%s -> %zd (op #%" PRIu64 ")",
		 p->name, p->count ? fc_iov_total(p->iov, p->count) : 0, p->ctx, (uint64_t)p->addr,
		 p->has_data ? " +data" : "", fc_cfg.trace ? fc_head(p, head, sizeof(head)) : "", rc,
		 rec ? rec->serial : 0);
	if (rc && rec) {
		pthread_mutex_lock(&fc_rec_lock);
		fc_rec_abandon(rec, saved);
		pthread_mutex_unlock(&fc_rec_lock);
	}
	pthread_mutex_unlock(&ep->lock);
	return rc;
}

/* fi_ops_msg */

static ssize_t fc_recv(struct fid_ep *e, void *buf, size_t len, void *desc, fi_addr_t src,
		       void *ctx)
{
	struct iovec iov = {buf, len};
	struct fc_post p = {.code = OP_RECV, .name = "fi_recv", .kind = FC_K_RECV, .iov = &iov,
			    .desc = &desc, .count = 1, .addr = src, .ctx = ctx};
	return fc_submit(EP(e), &p);
}

static ssize_t fc_recvv(struct fid_ep *e, const struct iovec *iov, void **desc, size_t count,
			fi_addr_t src, void *ctx)
{
	struct fc_post p = {.code = OP_RECVV, .name = "fi_recvv", .kind = FC_K_RECV, .iov = iov,
			    .desc = desc, .count = count, .addr = src, .ctx = ctx};
	return fc_submit(EP(e), &p);
}

static ssize_t fc_recvmsg(struct fid_ep *e, const struct fi_msg *msg, uint64_t flags)
{
	struct fc_post p = {.code = OP_RECVMSG, .name = "fi_recvmsg", .kind = FC_K_RECV,
			    .is_msg = 1, .iov = msg->msg_iov, .desc = msg->desc,
			    .count = msg->iov_count, .addr = msg->addr, .ctx = msg->context,
			    .flags = flags, .msg = msg};
	return fc_submit(EP(e), &p);
}

static ssize_t fc_send(struct fid_ep *e, const void *buf, size_t len, void *desc,
		       fi_addr_t dest, void *ctx)
{
	struct iovec iov = {(void *)(uintptr_t)buf, len};
	struct fc_post p = {.code = OP_SEND, .name = "fi_send", .kind = FC_K_SEND, .iov = &iov,
			    .desc = &desc, .count = 1, .addr = dest, .ctx = ctx};
	return fc_submit(EP(e), &p);
}

static ssize_t fc_sendv(struct fid_ep *e, const struct iovec *iov, void **desc, size_t count,
			fi_addr_t dest, void *ctx)
{
	struct fc_post p = {.code = OP_SENDV, .name = "fi_sendv", .kind = FC_K_SEND, .iov = iov,
			    .desc = desc, .count = count, .addr = dest, .ctx = ctx};
	return fc_submit(EP(e), &p);
}

static ssize_t fc_sendmsg(struct fid_ep *e, const struct fi_msg *msg, uint64_t flags)
{
	struct fc_post p = {.code = OP_SENDMSG, .name = "fi_sendmsg", .kind = FC_K_SEND,
			    .is_msg = 1, .iov = msg->msg_iov, .desc = msg->desc,
			    .count = msg->iov_count, .addr = msg->addr, .ctx = msg->context,
			    .flags = flags, .has_data = !!(flags & FI_REMOTE_CQ_DATA),
			    .data = msg->data, .msg = msg};
	return fc_submit(EP(e), &p);
}

static ssize_t fc_inject(struct fid_ep *e, const void *buf, size_t len, fi_addr_t dest)
{
	struct iovec iov = {(void *)(uintptr_t)buf, len};
	struct fc_post p = {.code = OP_INJECT, .name = "fi_inject", .kind = FC_K_SEND,
			    .inject = 1, .iov = &iov, .count = 1, .addr = dest};
	return fc_submit(EP(e), &p);
}

static ssize_t fc_senddata(struct fid_ep *e, const void *buf, size_t len, void *desc,
			   uint64_t data, fi_addr_t dest, void *ctx)
{
	struct iovec iov = {(void *)(uintptr_t)buf, len};
	struct fc_post p = {.code = OP_SENDDATA, .name = "fi_senddata", .kind = FC_K_SEND,
			    .iov = &iov, .desc = &desc, .count = 1, .addr = dest, .ctx = ctx,
			    .has_data = 1, .data = data};
	return fc_submit(EP(e), &p);
}

static ssize_t fc_injectdata(struct fid_ep *e, const void *buf, size_t len, uint64_t data,
			     fi_addr_t dest)
{
	struct iovec iov = {(void *)(uintptr_t)buf, len};
	struct fc_post p = {.code = OP_INJECTDATA, .name = "fi_injectdata", .kind = FC_K_SEND,
			    .inject = 1, .iov = &iov, .count = 1, .addr = dest, .has_data = 1,
			    .data = data};
	return fc_submit(EP(e), &p);
}

static struct fi_ops_msg fc_msg_ops = {
	.size = sizeof(struct fi_ops_msg),
	.recv = fc_recv,
	.recvv = fc_recvv,
	.recvmsg = fc_recvmsg,
	.send = fc_send,
	.sendv = fc_sendv,
	.sendmsg = fc_sendmsg,
	.inject = fc_inject,
	.senddata = fc_senddata,
	.injectdata = fc_injectdata,
};

/* fi_ops_rma */

static ssize_t fc_read(struct fid_ep *e, void *buf, size_t len, void *desc, fi_addr_t src,
		       uint64_t addr, uint64_t key, void *ctx)
{
	struct iovec iov = {buf, len};
	struct fi_rma_iov rma = {addr, len, key};
	struct fc_post p = {.code = OP_READ, .name = "fi_read", .kind = FC_K_READ, .iov = &iov,
			    .desc = &desc, .count = 1, .addr = src, .ctx = ctx, .rma = &rma,
			    .rma_count = 1};
	return fc_submit(EP(e), &p);
}

static size_t fc_iov_total(const struct iovec *iov, size_t count)
{
	size_t t = 0;
	for (size_t i = 0; i < count; i++)
		t += iov[i].iov_len;
	return t;
}

static ssize_t fc_readv(struct fid_ep *e, const struct iovec *iov, void **desc, size_t count,
			fi_addr_t src, uint64_t addr, uint64_t key, void *ctx)
{
	struct fi_rma_iov rma = {addr, fc_iov_total(iov, count), key};
	struct fc_post p = {.code = OP_READV, .name = "fi_readv", .kind = FC_K_READ, .iov = iov,
			    .desc = desc, .count = count, .addr = src, .ctx = ctx, .rma = &rma,
			    .rma_count = 1};
	return fc_submit(EP(e), &p);
}

static ssize_t fc_readmsg(struct fid_ep *e, const struct fi_msg_rma *msg, uint64_t flags)
{
	struct fc_post p = {.code = OP_READMSG, .name = "fi_readmsg", .kind = FC_K_READ,
			    .is_msg = 1, .iov = msg->msg_iov, .desc = msg->desc,
			    .count = msg->iov_count, .addr = msg->addr, .ctx = msg->context,
			    .flags = flags, .rma = msg->rma_iov, .rma_count = msg->rma_iov_count,
			    .msg = msg};
	return fc_submit(EP(e), &p);
}

static ssize_t fc_write(struct fid_ep *e, const void *buf, size_t len, void *desc,
			fi_addr_t dest, uint64_t addr, uint64_t key, void *ctx)
{
	struct iovec iov = {(void *)(uintptr_t)buf, len};
	struct fi_rma_iov rma = {addr, len, key};
	struct fc_post p = {.code = OP_WRITE, .name = "fi_write", .kind = FC_K_WRITE, .iov = &iov,
			    .desc = &desc, .count = 1, .addr = dest, .ctx = ctx, .rma = &rma,
			    .rma_count = 1};
	return fc_submit(EP(e), &p);
}

static ssize_t fc_writev(struct fid_ep *e, const struct iovec *iov, void **desc, size_t count,
			 fi_addr_t dest, uint64_t addr, uint64_t key, void *ctx)
{
	struct fi_rma_iov rma = {addr, fc_iov_total(iov, count), key};
	struct fc_post p = {.code = OP_WRITEV, .name = "fi_writev", .kind = FC_K_WRITE,
			    .iov = iov, .desc = desc, .count = count, .addr = dest, .ctx = ctx,
			    .rma = &rma, .rma_count = 1};
	return fc_submit(EP(e), &p);
}

static ssize_t fc_writemsg(struct fid_ep *e, const struct fi_msg_rma *msg, uint64_t flags)
{
	struct fc_post p = {.code = OP_WRITEMSG, .name = "fi_writemsg", .kind = FC_K_WRITE,
			    .is_msg = 1, .iov = msg->msg_iov, .desc = msg->desc,
			    .count = msg->iov_count, .addr = msg->addr, .ctx = msg->context,
			    .flags = flags, .has_data = !!(flags & FI_REMOTE_CQ_DATA),
			    .data = msg->data, .rma = msg->rma_iov,
			    .rma_count = msg->rma_iov_count, .msg = msg};
	return fc_submit(EP(e), &p);
}

static ssize_t fc_inject_write(struct fid_ep *e, const void *buf, size_t len, fi_addr_t dest,
			       uint64_t addr, uint64_t key)
{
	struct iovec iov = {(void *)(uintptr_t)buf, len};
	struct fi_rma_iov rma = {addr, len, key};
	struct fc_post p = {.code = OP_INJECT_WRITE, .name = "fi_inject_write",
			    .kind = FC_K_WRITE, .inject = 1, .iov = &iov, .count = 1,
			    .addr = dest, .rma = &rma, .rma_count = 1};
	return fc_submit(EP(e), &p);
}

static ssize_t fc_writedata(struct fid_ep *e, const void *buf, size_t len, void *desc,
			    uint64_t data, fi_addr_t dest, uint64_t addr, uint64_t key, void *ctx)
{
	struct iovec iov = {(void *)(uintptr_t)buf, len};
	struct fi_rma_iov rma = {addr, len, key};
	struct fc_post p = {.code = OP_WRITEDATA, .name = "fi_writedata", .kind = FC_K_WRITE,
			    .iov = &iov, .desc = &desc, .count = 1, .addr = dest, .ctx = ctx,
			    .has_data = 1, .data = data, .rma = &rma, .rma_count = 1};
	return fc_submit(EP(e), &p);
}

static ssize_t fc_inject_writedata(struct fid_ep *e, const void *buf, size_t len, uint64_t data,
				   fi_addr_t dest, uint64_t addr, uint64_t key)
{
	struct iovec iov = {(void *)(uintptr_t)buf, len};
	struct fi_rma_iov rma = {addr, len, key};
	struct fc_post p = {.code = OP_INJECT_WRITEDATA, .name = "fi_inject_writedata",
			    .kind = FC_K_WRITE, .inject = 1, .iov = &iov, .count = 1,
			    .addr = dest, .has_data = 1, .data = data, .rma = &rma,
			    .rma_count = 1};
	return fc_submit(EP(e), &p);
}

static struct fi_ops_rma fc_rma_ops = {
	.size = sizeof(struct fi_ops_rma),
	.read = fc_read,
	.readv = fc_readv,
	.readmsg = fc_readmsg,
	.write = fc_write,
	.writev = fc_writev,
	.writemsg = fc_writemsg,
	.inject = fc_inject_write,
	.writedata = fc_writedata,
	.injectdata = fc_inject_writedata,
};

/* fi_ops_tagged: the same contract as messages. */

static ssize_t fc_trecv(struct fid_ep *e, void *buf, size_t len, void *desc, fi_addr_t src,
			uint64_t tag, uint64_t ignore, void *ctx)
{
	struct iovec iov = {buf, len};
	struct fc_post p = {.code = OP_TRECV, .name = "fi_trecv", .kind = FC_K_RECV, .iov = &iov,
			    .desc = &desc, .count = 1, .addr = src, .ctx = ctx, .tag = tag,
			    .ignore = ignore};
	return fc_submit(EP(e), &p);
}

static ssize_t fc_trecvv(struct fid_ep *e, const struct iovec *iov, void **desc, size_t count,
			 fi_addr_t src, uint64_t tag, uint64_t ignore, void *ctx)
{
	struct fc_post p = {.code = OP_TRECVV, .name = "fi_trecvv", .kind = FC_K_RECV,
			    .iov = iov, .desc = desc, .count = count, .addr = src, .ctx = ctx,
			    .tag = tag, .ignore = ignore};
	return fc_submit(EP(e), &p);
}

static ssize_t fc_trecvmsg(struct fid_ep *e, const struct fi_msg_tagged *msg, uint64_t flags)
{
	struct fc_post p = {.code = OP_TRECVMSG, .name = "fi_trecvmsg", .kind = FC_K_RECV,
			    .is_msg = 1, .iov = msg->msg_iov, .desc = msg->desc,
			    .count = msg->iov_count, .addr = msg->addr, .ctx = msg->context,
			    .flags = flags, .tag = msg->tag, .ignore = msg->ignore, .msg = msg};
	return fc_submit(EP(e), &p);
}

static ssize_t fc_tsend(struct fid_ep *e, const void *buf, size_t len, void *desc,
			fi_addr_t dest, uint64_t tag, void *ctx)
{
	struct iovec iov = {(void *)(uintptr_t)buf, len};
	struct fc_post p = {.code = OP_TSEND, .name = "fi_tsend", .kind = FC_K_SEND, .iov = &iov,
			    .desc = &desc, .count = 1, .addr = dest, .ctx = ctx, .tag = tag};
	return fc_submit(EP(e), &p);
}

static ssize_t fc_tsendv(struct fid_ep *e, const struct iovec *iov, void **desc, size_t count,
			 fi_addr_t dest, uint64_t tag, void *ctx)
{
	struct fc_post p = {.code = OP_TSENDV, .name = "fi_tsendv", .kind = FC_K_SEND,
			    .iov = iov, .desc = desc, .count = count, .addr = dest, .ctx = ctx,
			    .tag = tag};
	return fc_submit(EP(e), &p);
}

static ssize_t fc_tsendmsg(struct fid_ep *e, const struct fi_msg_tagged *msg, uint64_t flags)
{
	struct fc_post p = {.code = OP_TSENDMSG, .name = "fi_tsendmsg", .kind = FC_K_SEND,
			    .is_msg = 1, .iov = msg->msg_iov, .desc = msg->desc,
			    .count = msg->iov_count, .addr = msg->addr, .ctx = msg->context,
			    .flags = flags, .has_data = !!(flags & FI_REMOTE_CQ_DATA),
			    .data = msg->data, .tag = msg->tag, .msg = msg};
	return fc_submit(EP(e), &p);
}

static ssize_t fc_tinject(struct fid_ep *e, const void *buf, size_t len, fi_addr_t dest,
			  uint64_t tag)
{
	struct iovec iov = {(void *)(uintptr_t)buf, len};
	struct fc_post p = {.code = OP_TINJECT, .name = "fi_tinject", .kind = FC_K_SEND,
			    .inject = 1, .iov = &iov, .count = 1, .addr = dest, .tag = tag};
	return fc_submit(EP(e), &p);
}

static ssize_t fc_tsenddata(struct fid_ep *e, const void *buf, size_t len, void *desc,
			    uint64_t data, fi_addr_t dest, uint64_t tag, void *ctx)
{
	struct iovec iov = {(void *)(uintptr_t)buf, len};
	struct fc_post p = {.code = OP_TSENDDATA, .name = "fi_tsenddata", .kind = FC_K_SEND,
			    .iov = &iov, .desc = &desc, .count = 1, .addr = dest, .ctx = ctx,
			    .has_data = 1, .data = data, .tag = tag};
	return fc_submit(EP(e), &p);
}

static ssize_t fc_tinjectdata(struct fid_ep *e, const void *buf, size_t len, uint64_t data,
			      fi_addr_t dest, uint64_t tag)
{
	struct iovec iov = {(void *)(uintptr_t)buf, len};
	struct fc_post p = {.code = OP_TINJECTDATA, .name = "fi_tinjectdata", .kind = FC_K_SEND,
			    .inject = 1, .iov = &iov, .count = 1, .addr = dest, .has_data = 1,
			    .data = data, .tag = tag};
	return fc_submit(EP(e), &p);
}

static struct fi_ops_tagged fc_tagged_ops = {
	.size = sizeof(struct fi_ops_tagged),
	.recv = fc_trecv,
	.recvv = fc_trecvv,
	.recvmsg = fc_trecvmsg,
	.send = fc_tsend,
	.sendv = fc_tsendv,
	.sendmsg = fc_tsendmsg,
	.inject = fc_tinject,
	.senddata = fc_tsenddata,
	.injectdata = fc_tinjectdata,
};

/* Atomics and collectives are not wrapped (the layer strips those caps). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
static ssize_t fc_no_atomic_write(struct fid_ep *ep, const void *buf, size_t count, void *desc,
				  fi_addr_t dest_addr, uint64_t addr, uint64_t key,
				  enum fi_datatype datatype, enum fi_op op, void *context)
{
	return -FI_ENOSYS;
}
static ssize_t fc_no_atomic_writev(struct fid_ep *ep, const struct fi_ioc *iov, void **desc,
				   size_t count, fi_addr_t dest_addr, uint64_t addr, uint64_t key,
				   enum fi_datatype datatype, enum fi_op op, void *context)
{
	return -FI_ENOSYS;
}
static ssize_t fc_no_atomic_writemsg(struct fid_ep *ep, const struct fi_msg_atomic *msg,
				     uint64_t flags)
{
	return -FI_ENOSYS;
}
static ssize_t fc_no_atomic_inject(struct fid_ep *ep, const void *buf, size_t count,
				   fi_addr_t dest_addr, uint64_t addr, uint64_t key,
				   enum fi_datatype datatype, enum fi_op op)
{
	return -FI_ENOSYS;
}
static ssize_t fc_no_atomic_readwrite(struct fid_ep *ep, const void *buf, size_t count,
				      void *desc, void *result, void *result_desc,
				      fi_addr_t dest_addr, uint64_t addr, uint64_t key,
				      enum fi_datatype datatype, enum fi_op op, void *context)
{
	return -FI_ENOSYS;
}
static ssize_t fc_no_atomic_readwritev(struct fid_ep *ep, const struct fi_ioc *iov, void **desc,
				       size_t count, struct fi_ioc *resultv, void **result_desc,
				       size_t result_count, fi_addr_t dest_addr, uint64_t addr,
				       uint64_t key, enum fi_datatype datatype, enum fi_op op,
				       void *context)
{
	return -FI_ENOSYS;
}
static ssize_t fc_no_atomic_readwritemsg(struct fid_ep *ep, const struct fi_msg_atomic *msg,
					 struct fi_ioc *resultv, void **result_desc,
					 size_t result_count, uint64_t flags)
{
	return -FI_ENOSYS;
}
static ssize_t fc_no_atomic_compwrite(struct fid_ep *ep, const void *buf, size_t count,
				      void *desc, const void *compare, void *compare_desc,
				      void *result, void *result_desc, fi_addr_t dest_addr,
				      uint64_t addr, uint64_t key, enum fi_datatype datatype,
				      enum fi_op op, void *context)
{
	return -FI_ENOSYS;
}
static ssize_t fc_no_atomic_compwritev(struct fid_ep *ep, const struct fi_ioc *iov, void **desc,
				       size_t count, const struct fi_ioc *comparev,
				       void **compare_desc, size_t compare_count,
				       struct fi_ioc *resultv, void **result_desc,
				       size_t result_count, fi_addr_t dest_addr, uint64_t addr,
				       uint64_t key, enum fi_datatype datatype, enum fi_op op,
				       void *context)
{
	return -FI_ENOSYS;
}
static ssize_t fc_no_atomic_compwritemsg(struct fid_ep *ep, const struct fi_msg_atomic *msg,
					 const struct fi_ioc *comparev, void **compare_desc,
					 size_t compare_count, struct fi_ioc *resultv,
					 void **result_desc, size_t result_count, uint64_t flags)
{
	return -FI_ENOSYS;
}
static int fc_no_atomic_valid(struct fid_ep *ep, enum fi_datatype datatype, enum fi_op op,
			      size_t *count)
{
	return -FI_ENOSYS;
}

static ssize_t fc_no_coll_barrier(struct fid_ep *ep, fi_addr_t coll_addr, void *context)
{
	return -FI_ENOSYS;
}
static ssize_t fc_no_coll_broadcast(struct fid_ep *ep, void *buf, size_t count, void *desc,
				    fi_addr_t coll_addr, fi_addr_t root_addr,
				    enum fi_datatype datatype, uint64_t flags, void *context)
{
	return -FI_ENOSYS;
}
static ssize_t fc_no_coll_xfer(struct fid_ep *ep, const void *buf, size_t count, void *desc,
			       void *result, void *result_desc, fi_addr_t coll_addr,
			       enum fi_datatype datatype, uint64_t flags, void *context)
{
	return -FI_ENOSYS;
}
static ssize_t fc_no_coll_xfer_op(struct fid_ep *ep, const void *buf, size_t count, void *desc,
				  void *result, void *result_desc, fi_addr_t coll_addr,
				  enum fi_datatype datatype, enum fi_op op, uint64_t flags,
				  void *context)
{
	return -FI_ENOSYS;
}
static ssize_t fc_no_coll_reduce(struct fid_ep *ep, const void *buf, size_t count, void *desc,
				 void *result, void *result_desc, fi_addr_t coll_addr,
				 fi_addr_t root_addr, enum fi_datatype datatype, enum fi_op op,
				 uint64_t flags, void *context)
{
	return -FI_ENOSYS;
}
static ssize_t fc_no_coll_rooted(struct fid_ep *ep, const void *buf, size_t count, void *desc,
				 void *result, void *result_desc, fi_addr_t coll_addr,
				 fi_addr_t root_addr, enum fi_datatype datatype, uint64_t flags,
				 void *context)
{
	return -FI_ENOSYS;
}
static ssize_t fc_no_coll_msg(struct fid_ep *ep, const struct fi_msg_collective *msg,
			      struct fi_ioc *resultv, void **result_desc, size_t result_count,
			      uint64_t flags)
{
	return -FI_ENOSYS;
}
static ssize_t fc_no_coll_barrier2(struct fid_ep *ep, fi_addr_t coll_addr, uint64_t flags,
				   void *context)
{
	return -FI_ENOSYS;
}
#pragma GCC diagnostic pop

static struct fi_ops_atomic fc_atomic_ops = {
	.size = sizeof(struct fi_ops_atomic),
	.write = fc_no_atomic_write,
	.writev = fc_no_atomic_writev,
	.writemsg = fc_no_atomic_writemsg,
	.inject = fc_no_atomic_inject,
	.readwrite = fc_no_atomic_readwrite,
	.readwritev = fc_no_atomic_readwritev,
	.readwritemsg = fc_no_atomic_readwritemsg,
	.compwrite = fc_no_atomic_compwrite,
	.compwritev = fc_no_atomic_compwritev,
	.compwritemsg = fc_no_atomic_compwritemsg,
	.writevalid = fc_no_atomic_valid,
	.readwritevalid = fc_no_atomic_valid,
	.compwritevalid = fc_no_atomic_valid,
};

static struct fi_ops_collective fc_collective_ops = {
	.size = sizeof(struct fi_ops_collective),
	.barrier = fc_no_coll_barrier,
	.broadcast = fc_no_coll_broadcast,
	.alltoall = fc_no_coll_xfer,
	.allreduce = fc_no_coll_xfer_op,
	.allgather = fc_no_coll_xfer,
	.reduce_scatter = fc_no_coll_xfer_op,
	.reduce = fc_no_coll_reduce,
	.scatter = fc_no_coll_rooted,
	.gather = fc_no_coll_rooted,
	.msg = fc_no_coll_msg,
	.barrier2 = fc_no_coll_barrier2,
};

/* ---- endpoint: control path ------------------------------------------------------------- */

static int fc_ep_close(struct fid *fid)
{
	struct fc_ep *ep = FC_CONTAINER(fid, struct fc_ep, pub.fid);
	int rc = fi_close(&ep->real->fid);

	if (rc)
		return rc;
	/* Operations still posted were cancelled with the endpoint: their
	 * contexts are the application's again. */
	if (ep->tx_cq)
		fc_rec_orphan_owner(ep->tx_cq, ep);
	if (ep->rx_cq && ep->rx_cq != ep->tx_cq)
		fc_rec_orphan_owner(ep->rx_cq, ep);
	pthread_mutex_destroy(&ep->lock);
	free(ep);
	return 0;
}

static int fc_ep_bind(struct fid *fid, struct fid *bfid, uint64_t flags)
{
	struct fc_ep *ep = FC_CONTAINER(fid, struct fc_ep, pub.fid);
	int rc = ep->real->fid.ops->bind(&ep->real->fid, fc_unwrap(bfid), flags);

	if (rc || !fc_is_cq(bfid))
		return rc;
	pthread_mutex_lock(&ep->lock);
	if (flags & FI_TRANSMIT) {
		ep->tx_cq = fc_cq_of(bfid);
		ep->tx_selective = !!(flags & FI_SELECTIVE_COMPLETION);
	}
	if (flags & FI_RECV) {
		ep->rx_cq = fc_cq_of(bfid);
		ep->rx_selective = !!(flags & FI_SELECTIVE_COMPLETION);
	}
	pthread_mutex_unlock(&ep->lock);
	return 0;
}

static struct fi_ops fc_ep_fi_ops = {
	.size = sizeof(struct fi_ops),
	.close = fc_ep_close,
	.bind = fc_ep_bind,
	.control = fc_fwd_control,
	.ops_open = fc_fwd_ops_open,
	.tostr = fc_fwd_tostr,
	.ops_set = fc_fwd_ops_set,
};

static ssize_t fc_ep_cancel(fid_t fid, void *context)
{
	struct fc_ep *ep = FC_CONTAINER(fid, struct fc_ep, pub.fid);
	struct fc_rec *rec;

	pthread_mutex_lock(&fc_rec_lock);
	rec = fc_rec_lookup_ctx(context);
	pthread_mutex_unlock(&fc_rec_lock);
	return fi_cancel(&ep->real->fid, rec ? (void *)rec : context);
}

static int fc_ep_getopt(fid_t fid, int level, int optname, void *optval, size_t *optlen)
{
	struct fc_ep *ep = FC_CONTAINER(fid, struct fc_ep, pub.fid);
#if FC_LIBFABRIC_2
	size_t v = 0;
	int ours = 1;

	if (level == FI_OPT_ENDPOINT) {
		switch (optname) {
		case FI_OPT_MAX_MSG_SIZE:
		case FI_OPT_MAX_TAGGED_SIZE: v = ep->max_msg; break;
		case FI_OPT_MAX_RMA_SIZE: v = ep->max_rma; break;
		case FI_OPT_INJECT_MSG_SIZE:
		case FI_OPT_INJECT_TAGGED_SIZE:
		case FI_OPT_INJECT_RMA_SIZE: v = ep->inject_size; break;
		default: ours = 0; break;
		}
		if (ours) {
			if (!optval || !optlen || *optlen < sizeof(size_t))
				return -FI_ETOOSMALL;
			memcpy(optval, &v, sizeof(v));
			*optlen = sizeof(v);
			return 0;
		}
	}
#endif
	return fi_getopt(&ep->real->fid, level, optname, optval, optlen);
}

static int fc_ep_setopt(fid_t fid, int level, int optname, const void *optval, size_t optlen)
{
	struct fc_ep *ep = FC_CONTAINER(fid, struct fc_ep, pub.fid);
	return fi_setopt(&ep->real->fid, level, optname, optval, optlen);
}

static int fc_ep_tx_ctx(struct fid_ep *sep, int index, struct fi_tx_attr *attr,
			struct fid_ep **tx_ep, void *context)
{
	(void)sep, (void)index, (void)attr, (void)tx_ep, (void)context;
	return -FI_ENOSYS;
}

static int fc_ep_rx_ctx(struct fid_ep *sep, int index, struct fi_rx_attr *attr,
			struct fid_ep **rx_ep, void *context)
{
	(void)sep, (void)index, (void)attr, (void)rx_ep, (void)context;
	return -FI_ENOSYS;
}

static ssize_t fc_ep_rx_size_left(struct fid_ep *e)
{
	struct fid_ep *r = EP(e)->real;
	return FI_CHECK_OP(r->ops, struct fi_ops_ep, rx_size_left) ? r->ops->rx_size_left(r)
								  : -FI_ENOSYS;
}

static ssize_t fc_ep_tx_size_left(struct fid_ep *e)
{
	struct fid_ep *r = EP(e)->real;
	return FI_CHECK_OP(r->ops, struct fi_ops_ep, tx_size_left) ? r->ops->tx_size_left(r)
								  : -FI_ENOSYS;
}

static struct fi_ops_ep fc_ep_ops = {
	.size = sizeof(struct fi_ops_ep),
	.cancel = fc_ep_cancel,
	.getopt = fc_ep_getopt,
	.setopt = fc_ep_setopt,
	.tx_ctx = fc_ep_tx_ctx,
	.rx_ctx = fc_ep_rx_ctx,
	.rx_size_left = fc_ep_rx_size_left,
	.tx_size_left = fc_ep_tx_size_left,
};

static int fc_cm_setname(fid_t fid, void *addr, size_t addrlen)
{
	struct fc_ep *ep = FC_CONTAINER(fid, struct fc_ep, pub.fid);
	return fi_setname(&ep->real->fid, addr, addrlen);
}

static int fc_cm_getname(fid_t fid, void *addr, size_t *addrlen)
{
	struct fc_ep *ep = FC_CONTAINER(fid, struct fc_ep, pub.fid);
	return fi_getname(&ep->real->fid, addr, addrlen);
}

static int fc_cm_getpeer(struct fid_ep *e, void *addr, size_t *addrlen)
{
	return fi_getpeer(EP(e)->real, addr, addrlen);
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
static int fc_cm_connect(struct fid_ep *ep, const void *addr, const void *param, size_t paramlen)
{
	return -FI_ENOSYS;
}
static int fc_cm_listen(struct fid_pep *pep)
{
	return -FI_ENOSYS;
}
static int fc_cm_accept(struct fid_ep *ep, const void *param, size_t paramlen)
{
	return -FI_ENOSYS;
}
static int fc_cm_reject(struct fid_pep *pep, fid_t handle, const void *param, size_t paramlen)
{
	return -FI_ENOSYS;
}
static int fc_cm_shutdown(struct fid_ep *ep, uint64_t flags)
{
	return -FI_ENOSYS;
}
static int fc_cm_join(struct fid_ep *ep, const void *addr, uint64_t flags, struct fid_mc **mc,
		      void *context)
{
	return -FI_ENOSYS;
}
#pragma GCC diagnostic pop

static struct fi_ops_cm fc_cm_ops = {
	.size = sizeof(struct fi_ops_cm),
	.setname = fc_cm_setname,
	.getname = fc_cm_getname,
	.getpeer = fc_cm_getpeer,
	.connect = fc_cm_connect,
	.listen = fc_cm_listen,
	.accept = fc_cm_accept,
	.reject = fc_cm_reject,
	.shutdown = fc_cm_shutdown,
	.join = fc_cm_join,
};

static size_t fc_clamp(size_t v, size_t lo, size_t hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

static int fc_ep_open(struct fc_domain *dom, struct fi_info *info, struct fid_ep **out,
		      uint64_t flags, void *context, int v2)
{
	struct fid_ep *real = NULL;
	struct fi_info *ri;
	struct fc_ep *ep;
	int rc;

	if (!info || !info->domain_attr)
		return -FI_EINVAL;
	ri = fc_real_info(info, NULL);
	if (!ri)
		return -FI_ENOMEM;
	if (dom->added_mr_mode == 0)
		ri->domain_attr->mr_mode = info->domain_attr->mr_mode; /* as the domain was */
	rc = v2 ? fi_endpoint2(dom->real, ri, &real, flags, context)
		: fi_endpoint(dom->real, ri, &real, context);
	fc_real.freeinfo(ri);
	if (rc)
		return rc;
	ep = calloc(1, sizeof(*ep));
	if (!ep) {
		fi_close(&real->fid);
		return -FI_ENOMEM;
	}
	ep->pub.fid.fclass = FI_CLASS_EP;
	ep->pub.fid.context = context;
	ep->pub.fid.ops = &fc_ep_fi_ops;
	ep->pub.ops = &fc_ep_ops;
	ep->pub.cm = &fc_cm_ops;
	ep->pub.msg = &fc_msg_ops;
	ep->pub.rma = &fc_rma_ops;
	ep->pub.tagged = &fc_tagged_ops;
	ep->pub.atomic = &fc_atomic_ops;
	ep->pub.collective = &fc_collective_ops;
	ep->real = real;
	ep->dom = dom;
	pthread_mutex_init(&ep->lock, NULL);
	ep->rng = fc_object_seed();
	ep->eagain_pct = (unsigned)fc_clamp(fc_env_u64("FABNET_CONTRACT_EAGAIN", 0), 0, 100);
	ep->max_msg = fc_max_msg();
	if (info->ep_attr && info->ep_attr->max_msg_size < ep->max_msg)
		ep->max_msg = info->ep_attr->max_msg_size;
	ep->max_rma = fc_max_rma();
	ep->inject_size = info->tx_attr ? fc_clamp(info->tx_attr->inject_size, 0, ep->max_msg) : 0;
	ep->iov_limit = info->tx_attr ? fc_clamp(info->tx_attr->iov_limit, 1, FC_MAX_IOV) : 1;
	if (info->rx_attr && info->rx_attr->iov_limit && info->rx_attr->iov_limit < ep->iov_limit)
		ep->iov_limit = info->rx_attr->iov_limit;
	ep->rma_iov_limit = FC_RMA_IOV_LIMIT;
	snprintf(ep->prov, sizeof(ep->prov), "%s", dom->prov);
	fc_vlog("endpoint on %s/%s: max_msg %zu, max_rma %zu, inject %zu, iov_limit %zu, "
		"eagain %u%%", dom->prov, dom->name, ep->max_msg, ep->max_rma, ep->inject_size,
		ep->iov_limit, ep->eagain_pct);
	fc_count(FC_objects_wrapped, 1);
	*out = &ep->pub;
	return 0;
}
