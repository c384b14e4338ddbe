/*
 * fabnet EFA-contract layer: completion queues and in-flight operations.
 *
 * The CQ wrapper reads the real completions into a private buffer and hands
 * them out in a bounded random order (FABNET_CONTRACT_REORDER entries), may
 * answer a read with -FI_EAGAIN (FABNET_CONTRACT_EAGAIN percent), and may turn
 * every Nth local send/write completion into an FI_EIO error entry
 * (FABNET_CONTRACT_CQ_ERROR_EVERY) although the operation itself happened.
 * No completion is lost or duplicated.
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
#include <time.h>

#include "contract_int.h"

#define FC_CONTAINER(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* ---- in-flight operations --------------------------------------------------------------- */

pthread_mutex_t fc_rec_lock = PTHREAD_MUTEX_INITIALIZER;
#define FC_REC_BUCKETS 4096
static struct fc_rec *fc_rec_table[FC_REC_BUCKETS];  /* by the application's context */
static struct fc_rec *fc_rec_live[FC_REC_BUCKETS];   /* by the record's own address */
static uint64_t fc_rec_serial;

static size_t fc_rec_bucket(const void *ctx)
{
	return (size_t)(fc_mix64((uint64_t)(uintptr_t)ctx) % FC_REC_BUCKETS);
}

struct fc_rec *fc_rec_lookup_ctx(void *ctx)
{
	struct fc_rec *r;

	if (!ctx)
		return NULL;
	for (r = fc_rec_table[fc_rec_bucket(ctx)]; r; r = r->hnext)
		if (r->ctx == ctx)
			return r;
	return NULL;
}

static void fc_rec_unhash(struct fc_rec *rec)
{
	struct fc_rec **pp = &fc_rec_table[fc_rec_bucket(rec->ctx)];

	for (; *pp; pp = &(*pp)->hnext)
		if (*pp == rec) {
			*pp = rec->hnext;
			break;
		}
	rec->hnext = NULL;
}

static void fc_rec_live_add(struct fc_rec *rec)
{
	size_t b = fc_rec_bucket(rec);

	rec->anext = fc_rec_live[b];
	fc_rec_live[b] = rec;
}

static void fc_rec_live_del(struct fc_rec *rec)
{
	struct fc_rec **pp = &fc_rec_live[fc_rec_bucket(rec)];

	for (; *pp; pp = &(*pp)->anext)
		if (*pp == rec) {
			*pp = rec->anext;
			break;
		}
}

static void fc_rec_unlist(struct fc_rec *rec)
{
	fc_rec_live_del(rec);
	if (rec->prev)
		rec->prev->next = rec->next;
	else
		rec->cq->outstanding = rec->next;
	if (rec->next)
		rec->next->prev = rec->prev;
	rec->prev = rec->next = NULL;
}

/* What we write over the application's struct fi_context2 while the provider
 * owns it (EFA keeps its own state there). */
static void fc_scribble_words(const struct fc_rec *rec, uint64_t w[8])
{
	for (int i = 0; i < 8; i++)
		w[i] = fc_mix64(rec->serial * 8 + (uint64_t)i) ^ (uint64_t)(uintptr_t)rec->ctx;
}

struct fc_rec *fc_rec_new(struct fc_cq *cq, const void *owner, void *ctx, const char *op,
			 int kind, size_t len, void *saved)
{
	struct fc_rec *rec = calloc(1, sizeof(*rec));
	uint64_t w[8];
	size_t b;

	if (!rec)
		return NULL;
	rec->magic = FC_REC_MAGIC;
	rec->ctx = ctx;
	rec->cq = cq;
	rec->owner = owner;
	rec->serial = ++fc_rec_serial;
	rec->op = op;
	rec->kind = kind;
	rec->len = len;
	b = fc_rec_bucket(ctx);
	rec->hnext = fc_rec_table[b];
	fc_rec_table[b] = rec;
	rec->next = cq->outstanding;
	if (rec->next)
		rec->next->prev = rec;
	cq->outstanding = rec;
	fc_rec_live_add(rec);
	memcpy(saved, ctx, sizeof(struct fi_context2));
	fc_scribble_words(rec, w);
	memcpy(ctx, w, sizeof(struct fi_context2));
	fc_count(FC_in_flight, 1);
	return rec;
}

void fc_rec_abandon(struct fc_rec *rec, const void *saved)
{
	memcpy(rec->ctx, saved, sizeof(struct fi_context2));
	fc_rec_unhash(rec);
	fc_rec_unlist(rec);
	rec->magic = 0;
	free(rec);
	fc_uncount(FC_in_flight, 1);
}

void fc_rec_orphan_owner(struct fc_cq *cq, const void *owner)
{
	pthread_mutex_lock(&fc_rec_lock);
	for (struct fc_rec *r = cq->outstanding; r; r = r->next)
		if (r->owner == owner && !r->orphan) {
			fc_rec_unhash(r);
			r->orphan = 1;
		}
	pthread_mutex_unlock(&fc_rec_lock);
}

/* The real provider returned rec as an op_context: give the application its
 * own context back (left scribbled, as EFA leaves it). */
static void *fc_rec_finish(struct fc_rec *rec)
{
	void *ctx;
	uint64_t w[8];

	pthread_mutex_lock(&fc_rec_lock);
	ctx = rec->ctx;
	if (!rec->orphan) {
		fc_scribble_words(rec, w);
		if (memcmp(ctx, w, sizeof(w)))
			fc_violation(rec->op, "the application wrote into its struct fi_context2 %p "
				     "while the operation (#%" PRIu64 ", %zu bytes) was in flight: "
				     "under FI_CONTEXT2 the provider owns those 64 bytes until the "
				     "completion", ctx, rec->serial, rec->len);
		fc_rec_unhash(rec);
	}
	fc_rec_unlist(rec);
	rec->magic = 0;
	free(rec);
	fc_uncount(FC_in_flight, 1);
	pthread_mutex_unlock(&fc_rec_lock);
	return ctx;
}

static struct fc_rec *fc_rec_of(void *op_context)
{
	struct fc_rec *r;

	/* Contexts we gave the provider are records; anything else (NULL or a
	 * provider's own pointer for a remote write's CQ data, a context the
	 * layer passed through) is not, and must not be dereferenced. */
	if (!op_context)
		return NULL;
	pthread_mutex_lock(&fc_rec_lock);
	for (r = fc_rec_live[fc_rec_bucket(op_context)]; r; r = r->anext)
		if (r == op_context)
			break;
	pthread_mutex_unlock(&fc_rec_lock);
	return r && r->magic == FC_REC_MAGIC ? r : NULL;
}

/* ---- the CQ wrapper ----------------------------------------------------------------------- */

static struct fi_ops fc_cq_fi_ops;
static struct fi_ops_cq fc_cq_ops;

int fc_is_cq(const struct fid *fid)
{
	return fid && fid->ops == &fc_cq_fi_ops;
}

struct fc_cq *fc_cq_of(struct fid *fid)
{
	return FC_CONTAINER(fid, struct fc_cq, pub.fid);
}

static struct fc_cq *CQ(struct fid_cq *c)
{
	return FC_CONTAINER(c, struct fc_cq, pub);
}

static struct fc_cqe *fc_cq_slot(struct fc_cq *cq)
{
	if (cq->n == cq->cap) {
		size_t cap = cq->cap ? cq->cap * 2 : 64;
		struct fc_cqe *b = realloc(cq->buf, cap * sizeof(*b));
		if (!b)
			return NULL;
		cq->buf = b;
		cq->cap = cap;
	}
	memset(&cq->buf[cq->n], 0, sizeof(cq->buf[0]));
	return &cq->buf[cq->n];
}

static int fc_cq_push(struct fc_cq *cq, const void *entry, fi_addr_t src)
{
	struct fc_cqe *q = fc_cq_slot(cq);

	if (!q)
		return -FI_ENOMEM;
	memcpy(&q->e, entry, cq->esz);
	q->src = src;
	q->rec = fc_rec_of(q->e.op_context);
	if ((cq->format == FI_CQ_FORMAT_DATA || cq->format == FI_CQ_FORMAT_TAGGED) &&
	    (q->e.flags & FI_REMOTE_CQ_DATA))
		q->e.data &= 0xffffffffull; /* EFA carries 4 bytes */
	if (q->rec && !q->rec->orphan && cq->error_every &&
	    (q->rec->kind == FC_K_SEND || q->rec->kind == FC_K_WRITE) &&
	    ++cq->local_done % cq->error_every == 0) {
		/* The operation really happened; the application is told it failed. */
		q->is_err = 1;
		q->err.op_context = q->e.op_context;
		q->err.flags = q->e.flags;
		q->err.buf = q->e.buf;
		q->err.data = q->e.data;
		q->err.tag = q->e.tag;
		q->err.err = FI_EIO;
		q->err.prov_errno = FC_INJECTED_PROV_ERRNO;
#if FC_LIBFABRIC_2
		q->err.src_addr = FI_ADDR_NOTAVAIL;
#endif
		fc_count(FC_errors_injected, 1);
	}
	cq->n++;
	return 0;
}

int fc_cq_add_error(struct fc_cq *cq, void *op_context, uint64_t flags, size_t len, int err,
		    int prov_errno)
{
	struct fc_cqe *q;

	pthread_mutex_lock(&cq->lock);
	q = fc_cq_slot(cq);
	if (!q) {
		pthread_mutex_unlock(&cq->lock);
		return -FI_ENOMEM;
	}
	q->is_err = 1;
	q->e.op_context = op_context;
	q->e.flags = flags;
	q->err.op_context = op_context;
	q->err.flags = flags;
	q->err.len = len;
	q->err.err = err;
	q->err.prov_errno = prov_errno;
#if FC_LIBFABRIC_2
	q->err.src_addr = FI_ADDR_NOTAVAIL;
#endif
	q->src = FI_ADDR_NOTAVAIL;
	q->rec = fc_rec_of(op_context);
	cq->n++;
	pthread_mutex_unlock(&cq->lock);
	return 0;
}

static int fc_cq_pull_err(struct fc_cq *cq)
{
	unsigned char scratch[512];
	struct fi_cq_err_entry ee;
	struct fc_cqe *q;
	ssize_t r;

	memset(&ee, 0, sizeof(ee));
	ee.err_data = scratch;
	ee.err_data_size = sizeof(scratch);
#if FC_LIBFABRIC_2
	ee.src_addr = FI_ADDR_NOTAVAIL;
#endif
	r = cq->real->ops->readerr(cq->real, &ee, 0);
	if (r == -FI_EAGAIN)
		return 0;
	if (r < 0)
		return (int)r;
	q = fc_cq_slot(cq);
	if (!q)
		return -FI_ENOMEM;
	q->is_err = 1;
	q->err = ee;
	q->e.op_context = ee.op_context;
	q->e.flags = ee.flags;
	q->src = FI_ADDR_NOTAVAIL;
	q->rec = fc_rec_of(ee.op_context);
	if (ee.err_data && ee.err_data_size) {
		q->err_data = malloc(ee.err_data_size);
		if (q->err_data) {
			memcpy(q->err_data, ee.err_data, ee.err_data_size);
			q->err_data_size = ee.err_data_size;
		}
	}
	q->err.err_data = NULL;
	q->err.err_data_size = 0;
	cq->n++;
	return 0;
}

/* Moves what the real CQ has into our buffer (cq->lock held). */
static int fc_cq_fill(struct fc_cq *cq)
{
	unsigned char raw[16 * sizeof(struct fi_cq_tagged_entry)];
	fi_addr_t src[16];
	size_t limit = cq->window > 16 ? 4 * (size_t)cq->window : 64;

	while (cq->n < limit) {
		size_t want = limit - cq->n < 16 ? limit - cq->n : 16;
		ssize_t r;

		if (!cq->no_readfrom) {
			r = cq->real->ops->readfrom(cq->real, raw, want, src);
			if (r == -FI_ENOSYS) {
				cq->no_readfrom = 1;
				continue;
			}
		} else {
			r = cq->real->ops->read(cq->real, raw, want);
			for (size_t i = 0; i < want; i++)
				src[i] = FI_ADDR_NOTAVAIL;
		}
		if (r == -FI_EAGAIN)
			return 0;
		if (r == -FI_EAVAIL) {
			int rc = fc_cq_pull_err(cq);
			if (rc)
				return rc;
			continue;
		}
		if (r < 0)
			return (int)r;
		for (ssize_t i = 0; i < r; i++) {
			int rc = fc_cq_push(cq, raw + (size_t)i * cq->esz, src[i]);
			if (rc)
				return rc;
		}
		if ((size_t)r < want)
			return 0;
	}
	return 0;
}

static void fc_cq_remove(struct fc_cq *cq, size_t j)
{
	memmove(&cq->buf[j], &cq->buf[j + 1], (cq->n - j - 1) * sizeof(cq->buf[0]));
	cq->n--;
}

static ssize_t fc_cq_take(struct fc_cq *cq, void *buf, size_t count, fi_addr_t *src)
{
	ssize_t got = 0;
	int rc;

	pthread_mutex_lock(&cq->lock);
	if (fc_roll(&cq->rng, cq->eagain_pct)) {
		pthread_mutex_unlock(&cq->lock);
		fc_count(FC_eagain_injected, 1);
		fc_count(FC_eagain_cq_reads, 1);
		return -FI_EAGAIN;
	}
	rc = fc_cq_fill(cq);
	if (cq->n == 0) {
		pthread_mutex_unlock(&cq->lock);
		return rc < 0 ? rc : -FI_EAGAIN;
	}
	if (cq->err_sel >= 0) {
		pthread_mutex_unlock(&cq->lock);
		return -FI_EAVAIL;
	}
	/* Few completions: hold them a little so later ones can overtake. */
	if (cq->window > 1 && cq->n < cq->window &&
	    cq->buf[0].held < (cq->window < 32 ? cq->window : 32)) {
		cq->buf[0].held++;
		pthread_mutex_unlock(&cq->lock);
		fc_count(FC_held_reads, 1);
		return -FI_EAGAIN;
	}
	while ((size_t)got < count && cq->n) {
		size_t lim = cq->n < cq->window ? cq->n : cq->window, j = 0;
		struct fc_cqe *q;
		struct fi_cq_tagged_entry t;

		if (cq->window > 1 && cq->buf[0].passed < cq->window)
			j = (size_t)(fc_rand(&cq->rng) % lim);
		q = &cq->buf[j];
		if (q->is_err) {
			if (got == 0) {
				cq->err_sel = (long)j;
				got = -FI_EAVAIL;
			}
			break;
		}
		if (j) {
			fc_count(FC_reordered, 1);
			for (size_t k = 0; k < j; k++)
				cq->buf[k].passed++;
		}
		t = q->e;
		if (q->rec) {
			fc_trace("trace: completion of %s op #%" PRIu64 " len %zu flags 0x%" PRIx64,
				 q->rec->op, q->rec->serial, (size_t)q->e.len, (uint64_t)q->e.flags);
			t.op_context = fc_rec_finish(q->rec);
		} else {
			fc_trace("trace: completion without an op, flags 0x%" PRIx64 " data 0x%" PRIx64,
				 (uint64_t)q->e.flags, (uint64_t)q->e.data);
		}
		memcpy((char *)buf + (size_t)got * cq->esz, &t, cq->esz);
		if (src)
			src[got] = q->src;
		fc_cq_remove(cq, j);
		got++;
	}
	pthread_mutex_unlock(&cq->lock);
	if (got > 0)
		fc_count(FC_completions, (uint64_t)got);
	return got;
}

static ssize_t fc_cq_read(struct fid_cq *c, void *buf, size_t count)
{
	return fc_cq_take(CQ(c), buf, count, NULL);
}

static ssize_t fc_cq_readfrom(struct fid_cq *c, void *buf, size_t count, fi_addr_t *src)
{
	return fc_cq_take(CQ(c), buf, count, src);
}

static ssize_t fc_cq_readerr(struct fid_cq *c, struct fi_cq_err_entry *out, uint64_t flags)
{
	struct fc_cq *cq = CQ(c);
	struct fi_cq_err_entry e;
	struct fc_cqe *q;
	void *user_buf = out->err_data;
	size_t user_size = out->err_data_size;

	(void)flags;
	pthread_mutex_lock(&cq->lock);
	if (cq->err_sel < 0) {
		int rc = fc_cq_fill(cq);
		for (size_t i = 0; i < cq->n; i++)
			if (cq->buf[i].is_err) {
				cq->err_sel = (long)i;
				break;
			}
		if (cq->err_sel < 0) {
			pthread_mutex_unlock(&cq->lock);
			return rc < 0 ? rc : -FI_EAGAIN;
		}
	}
	q = &cq->buf[cq->err_sel];
	fc_trace("trace: error completion of %s op #%" PRIu64 ": err %d prov_errno %d",
		 q->rec ? q->rec->op : "?", q->rec ? q->rec->serial : 0, q->err.err,
		 q->err.prov_errno);
	e = q->err;
	e.op_context = q->rec ? fc_rec_finish(q->rec) : q->err.op_context;
	free(cq->last_err_data);
	cq->last_err_data = NULL;
	if (q->err_data_size && user_buf && user_size) {
		size_t n = q->err_data_size < user_size ? q->err_data_size : user_size;
		memcpy(user_buf, q->err_data, n);
		e.err_data = user_buf;
		e.err_data_size = n;
		free(q->err_data);
	} else if (q->err_data_size) {
		/* Valid until the next readerr, as libfabric promises. */
		cq->last_err_data = q->err_data;
		e.err_data = q->err_data;
		e.err_data_size = q->err_data_size;
	} else {
		e.err_data = user_buf;
		e.err_data_size = 0;
	}
	*out = e;
	fc_cq_remove(cq, (size_t)cq->err_sel);
	cq->err_sel = -1;
	pthread_mutex_unlock(&cq->lock);
	fc_count(FC_completions, 1);
	fc_count(FC_error_completions, 1);
	return 1;
}

static double fc_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void fc_nap(long us)
{
	struct timespec ts = {0, us * 1000};
	nanosleep(&ts, NULL);
}

static ssize_t fc_cq_sreadfrom(struct fid_cq *c, void *buf, size_t count, fi_addr_t *src,
			       const void *cond, int timeout)
{
	struct fc_cq *cq = CQ(c);
	double start = fc_now_ms();
	unsigned char raw[sizeof(struct fi_cq_tagged_entry)];

	(void)cond; /* a threshold is a hint: we return as soon as something is there */
	for (;;) {
		ssize_t r = fc_cq_take(cq, buf, count, src);
		double left;
		size_t n;
		fi_addr_t s = FI_ADDR_NOTAVAIL;

		if (r != -FI_EAGAIN)
			return r;
		left = timeout < 0 ? 100.0 : (double)timeout - (fc_now_ms() - start);
		if (left <= 0)
			return -FI_EAGAIN;
		pthread_mutex_lock(&cq->lock);
		n = cq->n;
		pthread_mutex_unlock(&cq->lock);
		if (n) {
			fc_nap(50); /* we hold completions back: poll again soon */
			continue;
		}
		/* Block on the real CQ for one completion, then loop. */
		if (cq->no_readfrom)
			r = cq->real->ops->sread(cq->real, raw, 1, NULL, left > 100 ? 100 : (int)left + 1);
		else
			r = cq->real->ops->sreadfrom(cq->real, raw, 1, &s, NULL,
						     left > 100 ? 100 : (int)left + 1);
		if (r == 1) {
			pthread_mutex_lock(&cq->lock);
			r = fc_cq_push(cq, raw, s);
			pthread_mutex_unlock(&cq->lock);
			if (r)
				return r;
		} else if (r == -FI_EAVAIL) {
			pthread_mutex_lock(&cq->lock);
			r = fc_cq_pull_err(cq);
			pthread_mutex_unlock(&cq->lock);
			if (r)
				return r;
		} else if (r == -FI_ENOSYS || r == -FI_EINVAL) {
			fc_nap(100); /* no wait object: poll */
		} else if (r != -FI_EAGAIN && r != -FI_ETIMEDOUT && r != -FI_EINTR) {
			return r;
		}
	}
}

static ssize_t fc_cq_sread(struct fid_cq *c, void *buf, size_t count, const void *cond,
			   int timeout)
{
	return fc_cq_sreadfrom(c, buf, count, NULL, cond, timeout);
}

static int fc_cq_signal(struct fid_cq *c)
{
	struct fid_cq *r = CQ(c)->real;
	return r->ops->signal(r);
}

static const char *fc_cq_strerror(struct fid_cq *c, int prov_errno, const void *err_data,
				  char *buf, size_t len)
{
	struct fid_cq *r = CQ(c)->real;

	if (prov_errno == FC_INJECTED_PROV_ERRNO || prov_errno == FC_REMOTE_GONE_PROV_ERRNO) {
		const char *msg = prov_errno == FC_INJECTED_PROV_ERRNO
			? "fabnet-contract: injected FI_EIO (the operation itself completed; "
			  "FABNET_CONTRACT_CQ_ERROR_EVERY)"
			: "fabnet-contract: remote error: the target memory region was closed";
		if (buf && len) {
			snprintf(buf, len, "%s", msg);
			return buf;
		}
		return msg;
	}
	return r->ops->strerror(r, prov_errno, err_data, buf, len);
}

static int fc_cq_close(struct fid *fid)
{
	struct fc_cq *cq = fc_cq_of(fid);
	int rc = fi_close(&cq->real->fid);
	struct fc_rec *r, *next;

	if (rc)
		return rc;
	pthread_mutex_lock(&fc_rec_lock);
	for (r = cq->outstanding; r; r = next) {
		next = r->next;
		if (!r->orphan)
			fc_rec_unhash(r);
		fc_rec_live_del(r);
		r->magic = 0;
		free(r);
		fc_uncount(FC_in_flight, 1);
	}
	cq->outstanding = NULL;
	pthread_mutex_unlock(&fc_rec_lock);
	for (size_t i = 0; i < cq->n; i++)
		free(cq->buf[i].err_data);
	if (cq->n)
		fc_vlog("CQ closed with %zu completion%s still buffered", cq->n, cq->n == 1 ? "" : "s");
	free(cq->buf);
	free(cq->last_err_data);
	pthread_mutex_destroy(&cq->lock);
	free(cq);
	return 0;
}

static int fc_cq_bind(struct fid *fid, struct fid *bfid, uint64_t flags)
{
	struct fid *real = &fc_cq_of(fid)->real->fid;
	return real->ops->bind(real, bfid, flags);
}

static int fc_cq_control(struct fid *fid, int command, void *arg)
{
	struct fid *real = &fc_cq_of(fid)->real->fid;
	return real->ops->control(real, command, arg);
}

static int fc_cq_ops_open(struct fid *fid, const char *name, uint64_t flags, void **ops,
			  void *context)
{
	struct fid *real = &fc_cq_of(fid)->real->fid;
	return real->ops->ops_open(real, name, flags, ops, context);
}

static struct fi_ops fc_cq_fi_ops = {
	.size = sizeof(struct fi_ops),
	.close = fc_cq_close,
	.bind = fc_cq_bind,
	.control = fc_cq_control,
	.ops_open = fc_cq_ops_open,
};

static struct fi_ops_cq fc_cq_ops = {
	.size = sizeof(struct fi_ops_cq),
	.read = fc_cq_read,
	.readfrom = fc_cq_readfrom,
	.readerr = fc_cq_readerr,
	.sread = fc_cq_sread,
	.sreadfrom = fc_cq_sreadfrom,
	.signal = fc_cq_signal,
	.strerror = fc_cq_strerror,
};

int fc_cq_open(struct fc_domain *dom, struct fi_cq_attr *attr, struct fid_cq **out, void *context)
{
	struct fi_cq_attr a;
	struct fid_cq *real = NULL;
	struct fc_cq *cq;
	size_t esz;
	int rc;

	if (attr)
		a = *attr;
	else
		memset(&a, 0, sizeof(a));
	switch (a.format) {
	case FI_CQ_FORMAT_UNSPEC:
		a.format = FI_CQ_FORMAT_CONTEXT;
		/* fall through */
	case FI_CQ_FORMAT_CONTEXT: esz = sizeof(struct fi_cq_entry); break;
	case FI_CQ_FORMAT_MSG: esz = sizeof(struct fi_cq_msg_entry); break;
	case FI_CQ_FORMAT_DATA: esz = sizeof(struct fi_cq_data_entry); break;
	case FI_CQ_FORMAT_TAGGED: esz = sizeof(struct fi_cq_tagged_entry); break;
	default: return -FI_ENOSYS;
	}
	rc = fi_cq_open(dom->real, &a, &real, context);
	if (rc)
		return rc;
	cq = calloc(1, sizeof(*cq));
	if (!cq) {
		fi_close(&real->fid);
		return -FI_ENOMEM;
	}
	cq->pub.fid.fclass = FI_CLASS_CQ;
	cq->pub.fid.context = context;
	cq->pub.fid.ops = &fc_cq_fi_ops;
	cq->pub.ops = &fc_cq_ops;
	cq->real = real;
	cq->dom = dom;
	cq->format = a.format;
	cq->esz = esz;
	cq->err_sel = -1;
	pthread_mutex_init(&cq->lock, NULL);
	cq->rng = fc_object_seed();
	cq->window = (unsigned)fc_env_u64("FABNET_CONTRACT_REORDER", 8);
	if (cq->window > 4096)
		cq->window = 4096;
	if (cq->window == 0)
		cq->window = 1; /* in order */
	cq->eagain_pct = (unsigned)fc_env_u64("FABNET_CONTRACT_EAGAIN", 0);
	if (cq->eagain_pct > 100)
		cq->eagain_pct = 100;
	cq->error_every = fc_env_u64("FABNET_CONTRACT_CQ_ERROR_EVERY", 0);
	fc_vlog("CQ on %s/%s: format %d, reorder window %u, eagain %u%%, error every %" PRIu64,
		dom->prov, dom->name, (int)a.format, cq->window, cq->eagain_pct, cq->error_every);
	fc_count(FC_objects_wrapped, 1);
	*out = &cq->pub;
	return 0;
}
