/* softefa: a software EFA device for tests (never linked into the plugin).
 *
 * It stands in for rdma-core's libibverbs and libefa so that libfabric's
 * unmodified efa provider runs over it. Every process owns its devices; SRD
 * packets travel between the device threads of different processes in
 * shared-memory rings, one-sided RDMA goes straight into the target's memory
 * through its /proc/self/mem after the target's MR table (shared memory)
 * allows it. See docs/softefa.md. */
#ifndef SEFA_H
#define SEFA_H

#include <infiniband/verbs.h>
#include <infiniband/efadv.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/un.h>

#define SEFA_EXPORT __attribute__((visibility("default")))
#define SEFA_MAX_DEVICES 16
#define SEFA_MAX_SGE 4		/* storage per WQE; profiles allow fewer */
#define SEFA_MAX_INLINE 64
#define SEFA_AH_UNKNOWN 0xFFFF	/* slid of a receive whose sender has no AH here */

/* ---- attribute profiles (profile.c) ------------------------------------- */
struct sefa_profile {
	const char *name;
	uint32_t vendor_id, vendor_part_id, hw_ver;
	uint32_t max_qp, max_cq, max_mr, max_pd, max_ah, max_cqe;
	uint64_t max_mr_size, page_size_cap;
	uint32_t max_sq_wr, max_rq_wr;
	uint16_t max_sq_sge, max_rq_sge, max_sge_rd, inline_buf_size;
	uint32_t max_rdma_size, mtu;
	uint32_t device_caps;	/* EFADV_DEVICE_ATTR_CAPS_* */
	bool in_order_128;	/* IBV_QUERY_QP_DATA_IN_ORDER_ALIGNED_128_BYTES */
	uint8_t active_speed, active_width;
};

/* Settings read once from SOFTEFA_* (see docs/softefa.md). */
struct sefa_config {
	bool enabled;		/* SOFTEFA_PROFILE set */
	struct sefa_profile prof;
	int ndev;
	char dir[96];
	uint64_t seed;
	int reorder;		/* window of packets/completions picked at random */
	int timeout_ms;		/* dead-peer timeout */
	int rnr_delay_us;	/* between RNR retries */
	int log_level;
	bool shared_host;	/* SOFTEFA_HOST: processes share GIDs */
	char host[64];
	char pci[SEFA_MAX_DEVICES][16];
	bool accept_memfd;	/* SOFTEFA_DMABUF_ACCEPT_MEMFD */
	int fault_rnr_every;	/* NACK every Nth send with RNR */
	int fault_delay_us;	/* delay before each transmit */
	long fault_vanish_after;/* stop responding after N received packets */
};
extern struct sefa_config sefa_cfg;
void sefa_config_load(void);
const struct sefa_profile *sefa_profile_find(const char *name);
void sefa_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define SEFA_ERR(...) sefa_log(0, __VA_ARGS__)
#define SEFA_INFO(...) sefa_log(1, __VA_ARGS__)
#define SEFA_DBG(...) sefa_log(2, __VA_ARGS__)
uint64_t sefa_now_ns(void);
uint64_t sefa_rand(uint64_t *state);

/* ---- shared segment of one device instance (shm.c) ---------------------- */
#define SEFA_SHM_MR 65536
#define SEFA_SHM_QP 4096
#define SEFA_SHM_AH 1024
#define SEFA_KEY_IDX(k) ((k) & 0xffffu)
#define SEFA_KEY_GEN(k) (((k) >> 16) & 0x3ffu)
#define SEFA_KEY_SLOT(k) ((k) >> 26)
#define SEFA_QPN_BITS_SHARED 10	/* qpn = slot << 10 | index when hosts are shared */

struct sefa_shm_mr {
	uint32_t key;		/* 0: free */
	uint32_t access;
	uint32_t pd;
	uint32_t pad;
	uint64_t iova, length;
	uint64_t host_va;	/* where the owner's device reaches byte iova */
};

struct sefa_shm_qp {
	uint32_t qpn;		/* 0: free */
	uint32_t qkey, state, pd;
};

struct sefa_shm {
	uint64_t magic;
	uint64_t incarnation;
	int32_t pid;
	uint32_t slot;
	uint8_t gid[16];
	_Atomic uint32_t alive;	/* 0 once closed or vanished */
	_Atomic uint32_t sleeping;	/* the device thread waits on its socket: wake it */
	pthread_mutex_t lock;	/* robust, process-shared: MR/QP/AH changes and remote checks */
	uint8_t ah_gid[SEFA_SHM_AH][16];	/* peers this device has an AH for */
	uint32_t ah_refs[SEFA_SHM_AH];
	struct sefa_shm_qp qp[SEFA_SHM_QP];
	struct sefa_shm_mr mr[SEFA_SHM_MR];
};
#define SEFA_SHM_MAGIC 0x5345464153484d31ull	/* "SEFASHM1" */

int sefa_shm_create(const char *path, struct sefa_shm **out);
int sefa_shm_map_peer(const char *path, struct sefa_shm **out);
void sefa_shm_unmap(struct sefa_shm *shm);
int sefa_shm_lock(struct sefa_shm *shm);
void sefa_shm_unlock(struct sefa_shm *shm);
bool sefa_sock_has_owner(const struct sockaddr_un *a);

/* ---- objects ---------------------------------------------------------------- */
struct sefa_dev;
struct sefa_cq;

struct sefa_pd {
	struct ibv_pd ibpd;
	uint32_t pdn;
};

struct sefa_mr {
	struct ibv_mr ibmr;
	struct sefa_dev *dev;
	uint32_t idx, key;	/* the device's copy: ibv_mr belongs to the user */
	uint64_t iova, length, host_va;
	uint32_t access;
	void *map;		/* dma-buf mapping (NULL for ordinary MRs) */
	size_t map_len;
};

struct sefa_ah {
	struct ibv_ah ibah;
	uint16_t ahn;
	uint8_t gid[16];
};

/* One posted send work request as the application described it. */
struct sefa_wqe {
	uint64_t wr_id;
	uint8_t opcode;		/* IBV_WR_* */
	bool has_imm, is_inline;
	uint32_t imm;		/* host order */
	uint32_t num_sge;
	struct ibv_sge sge[SEFA_MAX_SGE];
	uint32_t inline_len;
	uint8_t inline_data[SEFA_MAX_INLINE];
	uint32_t rkey;
	uint64_t raddr;
	uint8_t dgid[16];
	uint16_t ahn;
	bool has_addr;
	uint32_t dqpn, dqkey;
};

struct sefa_rwqe {
	uint64_t wr_id;
	uint32_t num_sge;
	struct ibv_sge sge[SEFA_MAX_SGE];
};

struct sefa_qp {
	struct ibv_qp_ex qpx;	/* must be first: ibv_qp and ibv_qp_ex casts */
	struct sefa_dev *dev;
	struct sefa_pd *pd;
	struct sefa_cq *scq, *rcq;
	uint32_t qpn, qkey, rnr_retry;
	_Atomic int state;	/* enum ibv_qp_state */
	bool is_srd, unsolicited_write_recv, sq_sig_all;
	uint64_t send_ops;	/* IBV_QP_EX_WITH_* */
	uint32_t max_inline, max_send_sge, max_recv_sge;
	/* send queue: the application fills slots, the device thread drains them */
	pthread_mutex_t sq_lock;
	struct sefa_wqe *sq;
	uint32_t sq_cnt;	/* power of two */
	_Atomic uint32_t sq_head, sq_tail;
	_Atomic uint32_t sq_posted, sq_completed;
	uint32_t sess_pending, sess_head;
	int sess_err;
	struct sefa_wqe *cur;
	/* receive queue, consumed in order by arriving packets */
	pthread_mutex_t rq_lock;
	struct sefa_rwqe *rq;
	uint32_t rq_cnt;
	uint32_t rq_head, rq_tail;
	_Atomic uint32_t rq_posted, rq_completed;
	struct sefa_qp *next;	/* device's QP list */
};

struct sefa_cqe {
	uint64_t wr_id;
	uint32_t status;	/* efa_io_comp_status */
	uint8_t opcode;		/* IBV_WC_* */
	bool has_imm, unsolicited, is_send;
	uint32_t byte_len, imm, qp_num, src_qp;
	uint16_t slid;
	uint8_t sgid[16];
	struct sefa_qp *qp;	/* for queue accounting; purged before the QP goes */
};

struct sefa_cq {
	struct ibv_cq_ex cqx;	/* must be first */
	struct efadv_cq dv;
	struct sefa_dev *dev;
	pthread_mutex_t lock;	/* held from start_poll to end_poll, like rdma-core */
	struct sefa_cqe *ring;
	uint32_t cap, head, tail;	/* head: next to read */
	uint32_t size;		/* what the user asked for, rounded up */
	bool warned_overrun;
	struct sefa_cqe *cur;
	struct sefa_cq *next;
};

/* A device instance: one per ibv_open_device. */
struct sefa_dev {
	struct verbs_context vctx;	/* ibv_context inside, must be last of vctx */
	struct ibv_device *ibdev;
	int index;
	uint8_t gid[16];
	uint32_t slot;
	uint32_t qpn_base;
	char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char shm_path[160];
	int sock, evfd, epfd;
	int memfd;		/* /proc/self/mem: what peers get to do RDMA into us */
	struct sefa_shm *shm;
	pthread_t thread;
	_Atomic bool stop, sleeping;
	pthread_mutex_t lock;	/* object lists and tables; the device thread holds it while it works */
	struct sefa_qp *qps;
	struct sefa_cq *cqs;
	struct sefa_qp **qp_by_idx;	/* SEFA_SHM_QP entries */
	struct sefa_mr **mr_by_idx;	/* SEFA_SHM_MR entries */
	uint16_t mr_gen[SEFA_SHM_MR];
	uint32_t next_pdn;
	uint32_t mr_hint;	/* where to look for a free MR index */
	uint16_t ah_local_refs[SEFA_SHM_AH];
	struct sefa_engine *eng;
	long rx_packets;
	bool vanished;
};

static inline struct sefa_dev *sefa_dev_of(struct ibv_context *ctx)
{
	return (struct sefa_dev *)((char *)ctx - __builtin_offsetof(struct sefa_dev, vctx.context));
}

/* device.c */
bool sefa_is_dev(struct ibv_context *ctx);
void sefa_gid_to_str(const uint8_t *gid, char *out, size_t len);
void sefa_peer_paths(const uint8_t *gid, uint32_t slot, char *sock, size_t slen, char *shm, size_t shmlen);
int sefa_ah_lookup(struct sefa_dev *dev, const uint8_t *gid);

/* mr.c */
int sefa_mr_translate(struct sefa_dev *dev, uint32_t lkey, uint64_t addr, uint64_t len,
		      uint32_t need_access, void **host);

/* qp.c */
void sefa_qp_fill_ops(struct sefa_qp *qp);
struct sefa_qp *sefa_qp_find(struct sefa_dev *dev, uint32_t qpn);
int sefa_rq_pop(struct sefa_qp *qp, struct sefa_rwqe *out);

/* cq.c */
void sefa_cq_push(struct sefa_cq *cq, const struct sefa_cqe *cqe);
void sefa_cq_purge_qp(struct sefa_cq *cq, uint32_t qpn);
int sefa_poll_cq(struct ibv_cq *ibcq, int n, struct ibv_wc *wc);
bool sefa_thread_polls(void);

/* engine.c: the device thread */
int sefa_engine_start(struct sefa_dev *dev);
void sefa_engine_stop(struct sefa_dev *dev);
void sefa_engine_kick(struct sefa_dev *dev);
bool sefa_engine_assist(struct sefa_dev *dev);
void sefa_engine_forget_qp(struct sefa_dev *dev, struct sefa_qp *qp);

/* rdma.c: one-sided operations, executed by the initiator's device thread */
struct sefa_peer;
int sefa_rdma_exec(struct sefa_dev *dev, struct sefa_peer *peer, const struct sefa_wqe *w,
		   uint32_t *byte_len);

/* engine.c helpers rdma.c uses */
struct sefa_shm *sefa_peer_shm(struct sefa_dev *dev, struct sefa_peer *peer);

/* efadv entry points libefa re-exports */
SEFA_EXPORT int sefa_efadv_query_device(struct ibv_context *ctx, struct efadv_device_attr *attr, uint32_t inlen);
SEFA_EXPORT struct ibv_qp *sefa_efadv_create_qp_ex(struct ibv_context *ctx, struct ibv_qp_init_attr_ex *attr,
				       struct efadv_qp_init_attr *efa_attr, uint32_t inlen);
SEFA_EXPORT struct ibv_qp *sefa_efadv_create_driver_qp(struct ibv_pd *pd, struct ibv_qp_init_attr *attr,
					   uint32_t driver_qp_type);
SEFA_EXPORT int sefa_efadv_query_ah(struct ibv_ah *ah, struct efadv_ah_attr *attr, uint32_t inlen);
SEFA_EXPORT struct ibv_cq_ex *sefa_efadv_create_cq(struct ibv_context *ctx, struct ibv_cq_init_attr_ex *attr,
				       struct efadv_cq_init_attr *efa_attr, uint32_t inlen);
SEFA_EXPORT struct efadv_cq *sefa_efadv_cq_from_ibv_cq_ex(struct ibv_cq_ex *cqx);
SEFA_EXPORT int sefa_efadv_query_mr(struct ibv_mr *mr, struct efadv_mr_attr *attr, uint32_t inlen);

/* efa_io_comp_status values (rdma-core providers/efa/efa_io_defs.h) */
enum {
	SEFA_ST_OK = 0,
	SEFA_ST_FLUSHED = 1,
	SEFA_ST_LOCAL_QP_INTERNAL = 2,
	SEFA_ST_LOCAL_UNSUPPORTED_OP = 3,
	SEFA_ST_LOCAL_INVALID_AH = 4,
	SEFA_ST_LOCAL_INVALID_LKEY = 5,
	SEFA_ST_LOCAL_BAD_LENGTH = 6,
	SEFA_ST_REMOTE_BAD_ADDRESS = 7,
	SEFA_ST_REMOTE_ABORT = 8,
	SEFA_ST_REMOTE_BAD_DEST_QPN = 9,
	SEFA_ST_REMOTE_RNR = 10,
	SEFA_ST_REMOTE_BAD_LENGTH = 11,
	SEFA_ST_REMOTE_BAD_STATUS = 12,
	SEFA_ST_LOCAL_UNRESP_REMOTE = 13,
	SEFA_ST_REMOTE_UNKNOWN_PEER = 14,
	SEFA_ST_LOCAL_UNREACH_REMOTE = 15,
};
enum ibv_wc_status sefa_status_to_ibv(uint32_t st);

#endif
