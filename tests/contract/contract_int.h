/*
 * fabnet EFA-contract layer: internal declarations.
 *
 * TEST ONLY. This library is LD_PRELOADed into test processes; it interposes
 * fi_getinfo / fi_fabric / fi_fabric2 and wraps every object opened from the
 * fabrics it returns, so that a lenient provider (tcp, shm, sockets, udp)
 * behaves like EFA's strict contract while the real provider still moves the
 * bytes. It is never linked into the shipped plugin.
 */
#ifndef FABNET_CONTRACT_INT_H
#define FABNET_CONTRACT_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <rdma/fabric.h>
#include <rdma/fi_atomic.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_collective.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>
#include <rdma/fi_tagged.h>

#define FC_EXPORT __attribute__((visibility("default")))
#define FC_PRINTF(a, b) __attribute__((format(printf, a, b)))

#define FC_LIBFABRIC_2 (FI_MAJOR_VERSION >= 2)

/* EFA's memory-registration contract (FI_MR_BASIC-era bits spelled out). */
#define FC_EFA_MR_MODE (FI_MR_LOCAL | FI_MR_PROV_KEY | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED)
#define FC_CQ_DATA_SIZE 4
#define FC_MAX_IOV 4      /* iov_limit we advertise (and accept) */
#define FC_RMA_IOV_LIMIT 1
#define FC_MR_IOV_LIMIT 1
/* prov_errno of the error entries we make: fi_cq_strerror recognises them. */
#define FC_INJECTED_PROV_ERRNO 0x0fabe770    /* FABNET_CONTRACT_CQ_ERROR_EVERY */
#define FC_REMOTE_GONE_PROV_ERRNO 0x0fabe771 /* RMA to a region already closed */

/* ---- counters -------------------------------------------------------------- */
#define FC_COUNTERS(X)                                                               \
	X(posts)             /* data-path posts seen (all kinds) */                    \
	X(violations)        /* contract violations (each printed) */                  \
	X(completions)       /* completions handed to the application (incl. errors) */\
	X(error_completions) /* of which error entries (fi_cq_readerr) */              \
	X(reordered)         /* completions handed out ahead of an older one */        \
	X(held_reads)        /* CQ reads answered EAGAIN to wait for more completions */\
	X(eagain_injected)   /* eagain_posts + eagain_cq_reads */                      \
	X(eagain_posts)      /* posts refused with an injected -FI_EAGAIN */           \
	X(eagain_cq_reads)   /* CQ reads answered with an injected -FI_EAGAIN */       \
	X(errors_injected)   /* completions turned into FI_EIO error entries */        \
	X(remote_errors)     /* RMA to a closed region, completed with FI_EIO */      \
	X(translated)        /* RMA addresses turned into offsets for the provider */ \
	X(mr_registrations)  /* memory regions registered through the layer */        \
	X(infos_rewritten)   /* fi_info entries rewritten to EFA's contract */         \
	X(infos_dropped)     /* fi_info entries a strict provider would not return */  \
	X(objects_wrapped)   /* fabrics, domains, endpoints, CQs and MRs wrapped */    \
	X(in_flight)         /* operations posted and not yet completed (now) */

enum fc_counter {
#define FC_ENUM(n) FC_##n,
	FC_COUNTERS(FC_ENUM)
#undef FC_ENUM
	FC_NCOUNTERS
};

extern uint64_t fc_counters[FC_NCOUNTERS];
static inline void fc_count(enum fc_counter c, uint64_t n)
{
	__atomic_add_fetch(&fc_counters[c], n, __ATOMIC_RELAXED);
}
static inline void fc_uncount(enum fc_counter c, uint64_t n)
{
	__atomic_sub_fetch(&fc_counters[c], n, __ATOMIC_RELAXED);
}

/* ---- configuration (contract_core.c) --------------------------------------- */
struct fc_config {
	int disabled;           /* FABNET_CONTRACT_DISABLE=1: pure pass-through */
	int verbose;            /* FABNET_CONTRACT_VERBOSE */
	int abort_on_violation; /* FABNET_CONTRACT_ABORT */
	int backtrace;          /* FABNET_CONTRACT_BACKTRACE */
	int trace;              /* FABNET_CONTRACT_TRACE: every post and completion */
	uint64_t seed;          /* FABNET_CONTRACT_SEED */
	uint16_t key_nonce;     /* per process, never 0 */
	int pid;                /* the process that owns the counters (fork resets) */
};
extern struct fc_config fc_cfg;

void fc_init(void);
/* Per-object knobs, read when an object is opened so a test can vary them. */
uint64_t fc_env_u64(const char *name, uint64_t def);
size_t fc_max_msg(void);   /* FABNET_CONTRACT_MAX_MSG, default 8192 */
size_t fc_max_rma(void);   /* FABNET_CONTRACT_MAX_RMA, default 1 GiB */
/* A random generator seeded from the seed and the object's opening order. */
uint64_t fc_object_seed(void);
static inline uint64_t fc_rand(uint64_t *s)
{
	/* xorshift64* */
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1Dull;
}
static inline uint64_t fc_mix64(uint64_t z)
{
	z += 0x9E3779B97F4A7C15ull;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}
/* True with probability pct percent. */
static inline int fc_roll(uint64_t *s, unsigned pct)
{
	return pct && (fc_rand(s) % 100) < pct;
}

void fc_violation(const char *op, const char *fmt, ...) FC_PRINTF(2, 3);
void fc_log(const char *fmt, ...) FC_PRINTF(1, 2);
void fc_vlog(const char *fmt, ...) FC_PRINTF(1, 2); /* only when verbose */
#define fc_trace(...)                     \
	do {                              \
		if (fc_cfg.trace)         \
			fc_log(__VA_ARGS__); \
	} while (0)

/* The real libfabric entry points (resolved lazily, never linked). */
struct fc_real {
	int (*getinfo)(uint32_t, const char *, const char *, uint64_t, const struct fi_info *,
		       struct fi_info **);
	void (*freeinfo)(struct fi_info *);
	struct fi_info *(*dupinfo)(const struct fi_info *);
	int (*fabric)(struct fi_fabric_attr *, struct fid_fabric **, void *);
#if FC_LIBFABRIC_2
	int (*fabric2)(struct fi_info *, struct fid_fabric **, uint64_t, void *);
#endif
	const char *(*strerror)(int);
};
extern struct fc_real fc_real;
int fc_resolve(void);

/* Remembers what the real provider granted for a (provider, domain) so the
 * real objects are opened with the real attributes. */
void fc_remember_real(const struct fi_info *real_info, uint64_t added_mr_mode);
uint64_t fc_added_mr_mode(const struct fi_info *info);

/* Keys: ours encode a process-wide region id with the process's nonce and a
 * check tag; the region id is also the real key whenever the real provider
 * lets us choose keys. */
uint64_t fc_key_encode(uint32_t rid);
int fc_key_decode(uint64_t key, uint16_t *nonce, uint32_t *rid);
uint32_t fc_next_rid(void);

/* Same-host registry of regions (contract_reg.c). */
struct fc_region {
	uint64_t base, len, access, real_key;
};
enum { FC_REGION_UNKNOWN = 0, FC_REGION_LIVE, FC_REGION_CLOSED };
void fc_reg_join(uint64_t *rng);
void fc_reg_leave(void);
int fc_reg_publish(uint32_t rid, uint64_t real_key, const void *base, size_t len, uint64_t access);
void fc_reg_withdraw(uint32_t rid);
/* FC_REGION_LIVE (out filled), FC_REGION_CLOSED (its process lives on this
 * host but the region is gone) or FC_REGION_UNKNOWN (another host, or no
 * registry). */
int fc_reg_lookup(uint16_t nonce, uint32_t rid, struct fc_region *out);

/* ---- objects (contract_fid.c, contract_cq.c) -------------------------------- */
struct fc_fabric {
	struct fid_fabric pub;
	struct fid_fabric *real;
	uint32_t serial;
};

struct fc_domain {
	struct fid_domain pub;
	struct fid_domain *real;
	struct fc_fabric *fab;
	pthread_mutex_t lock;
	uint64_t added_mr_mode;  /* bits we advertised that the real provider lacks */
	uint64_t real_mr_mode;
	int translate;           /* the real provider wants offsets, not addresses */
	char prov[64];
	char name[64];
};

struct fc_mr {
	struct fid_mr pub;       /* pub.mem_desc == this, pub.key == encoded key */
	struct fid_mr *real;
	struct fc_domain *dom;
	uint64_t access;
	size_t niov;
	struct iovec iov[FC_MR_IOV_LIMIT];
	uint64_t real_key;
	uint32_t rid;            /* our region id (in the key) */
	struct fc_mr *hnext;     /* live-MR hash chain */
};

struct fc_cq;

struct fc_ep {
	struct fid_ep pub;
	struct fid_ep *real;
	struct fc_domain *dom;
	pthread_mutex_t lock;
	uint64_t rng;
	unsigned eagain_pct;
	size_t max_msg, max_rma, inject_size, iov_limit, rma_iov_limit;
	struct fc_cq *tx_cq, *rx_cq;
	int tx_selective, rx_selective;
	char prov[64];
};

/* One operation the provider owns: the real provider's op_context. */
struct fc_rec {
	uint64_t magic;
	void *ctx;               /* the application's struct fi_context2 */
	struct fc_rec *hnext;    /* in-flight context hash chain */
	struct fc_rec *anext;    /* live-record hash chain (by address) */
	struct fc_rec *prev, *next; /* the CQ's outstanding list */
	struct fc_cq *cq;
	uint64_t serial;
	const char *op;
	int kind;                /* FC_K_* */
	int orphan;              /* its endpoint was closed */
	const void *owner;       /* the struct fc_ep that posted it */
	size_t len;
};
#define FC_REC_MAGIC 0x66632d7265632d31ull

enum { FC_K_SEND = 1, FC_K_RECV, FC_K_WRITE, FC_K_READ };

/* Entry buffered in a wrapped CQ. */
struct fc_cqe {
	int is_err;
	fi_addr_t src;
	struct fi_cq_tagged_entry e;
	struct fi_cq_err_entry err;
	void *err_data;          /* our copy */
	size_t err_data_size;
	unsigned passed;         /* times a younger entry was handed out first */
	unsigned held;           /* reads that held it back */
	struct fc_rec *rec;
};

struct fc_cq {
	struct fid_cq pub;
	struct fid_cq *real;
	struct fc_domain *dom;
	pthread_mutex_t lock;
	enum fi_cq_format format;
	size_t esz;
	struct fc_cqe *buf;
	size_t n, cap;
	long err_sel;            /* index of the error entry read must report, or -1 */
	unsigned window;
	unsigned eagain_pct;
	uint64_t error_every;
	uint64_t local_done;
	uint64_t rng;
	int no_readfrom;
	void *last_err_data;     /* handed to a caller that gave no err_data buffer */
	struct fc_rec *outstanding; /* recs that complete on this CQ */
};

/* Wrapping (contract_fid.c). */
int fc_wrap_fabric(struct fid_fabric *real, void *context, struct fid_fabric **out);
struct fid *fc_unwrap(struct fid *fid);
struct fc_mr *fc_mr_lookup(const void *desc);

/* CQ (contract_cq.c). */
int fc_cq_open(struct fc_domain *dom, struct fi_cq_attr *attr, struct fid_cq **out,
	       void *context);
int fc_is_cq(const struct fid *fid);
struct fc_cq *fc_cq_of(struct fid *fid);
/* Queues an error completion the real provider never produced. */
int fc_cq_add_error(struct fc_cq *cq, void *op_context, uint64_t flags, size_t len, int err,
		    int prov_errno);

/* In-flight operations (contract_cq.c). */
struct fc_rec *fc_rec_lookup_ctx(void *ctx);   /* caller holds fc_rec_lock */
/* Creates the record of a post and scribbles over the caller's context
 * (saving it into saved[], 64 bytes). Caller holds fc_rec_lock. */
struct fc_rec *fc_rec_new(struct fc_cq *cq, const void *owner, void *ctx, const char *op,
			 int kind, size_t len, void *saved);
/* The post failed: restores the context and forgets the record. Caller holds
 * fc_rec_lock. */
void fc_rec_abandon(struct fc_rec *rec, const void *saved);
/* The endpoint closes: its operations no longer pin their contexts. */
void fc_rec_orphan_owner(struct fc_cq *cq, const void *owner);
extern pthread_mutex_t fc_rec_lock;

#endif
