/* softefa: the device thread's private state (engine.c, engine_rx.c). */
#ifndef SEFA_ENGINE_H
#define SEFA_ENGINE_H

#include "ring.h"

#include <sys/socket.h>

#define SEFA_PKT_MAGIC 0x53454650u	/* "SEFP" */
#define SEFA_RDMA_ABSENT (-1)		/* the target device is not there (yet, or any more) */
#define SEFA_RDMA_WAIT (-2)		/* asked the target for its memory, try again soon */

/* PKT_SEND, PKT_WRITE_IMM and PKT_ACKS travel in rings; on the receiver's
 * socket go PKT_RING (a new ring to map), PKT_WAKE (the receiver was asleep)
 * and PKT_HELLO / PKT_HELLO_REPLY, which carry the sender's /proc/self/mem
 * (SCM_RIGHTS) for RDMA: an fd, unlike a pid, means the same process in
 * every PID namespace. */
enum { PKT_SEND = 1, PKT_WRITE_IMM = 2, PKT_ACKS = 3, PKT_RING = 4, PKT_WAKE = 5, PKT_HELLO = 6,
       PKT_HELLO_REPLY = 7 };

/* Wire format between device threads (same host, native byte order). */
struct sefa_pkt {
	uint32_t magic;
	uint8_t type;
	uint8_t has_imm;
	uint16_t n_acks;
	uint8_t src_gid[16];
	uint32_t src_slot;
	uint32_t src_qpn, dst_qpn, qkey;
	uint32_t imm, len;
	uint64_t seq;
	uint8_t data[];
};

struct sefa_ack {
	uint64_t seq;
	uint32_t status;
	uint32_t pad;
};

#define SEFA_MAX_ACKS 256

struct sefa_peer {
	uint8_t gid[16];
	uint32_t slot;
	struct sockaddr_un addr;
	struct sefa_shm *shm;
	struct sefa_ring *out;	/* what we send it */
	bool announced;		/* it has been told to map out */
	int memfd;		/* its /proc/self/mem, once it sent it; -1 before */
	uint64_t hello_at;	/* when we last asked for it */
	bool responsive;	/* it has answered at least once */
	struct sefa_peer *next;
	/* acknowledgements waiting to go out (never dropped: the sender
	 * cannot complete without them) */
	uint32_t n_acks, acks_cap;
	struct sefa_ack *acks;
	bool ack_queued;
};

enum { OP_QUEUED, OP_WAIT_ACK, OP_RETRY };

struct sefa_op {
	struct sefa_wqe w;
	struct sefa_qp *qp;
	struct sefa_peer *peer;
	uint64_t seq;
	int state;
	uint32_t rnr_tries;
	uint64_t deadline, retry_at;
	uint32_t byte_len;
	struct sefa_pkt *pkt;
	size_t pkt_len;
};

struct sefa_pending_cqe {
	struct sefa_cq *cq;
	struct sefa_cqe cqe;
};

struct sefa_engine {
	uint64_t rng;
	struct sefa_op **txq;	/* waiting to be put on the wire */
	uint32_t txq_n, txq_cap;
	bool tx_blocked;	/* the receiver's queue was full */
	struct sefa_op **ops;	/* by seq slot: everything not yet completed */
	uint32_t ops_cap, seq_gen;
	uint32_t *free_slots, n_free;
	struct sefa_pending_cqe *cwin;	/* send completions, released in random order */
	uint32_t cwin_n, cwin_cap;
	struct sefa_peer *peers[64];
	struct sefa_peer **ack_peers;	/* peers with queued acks */
	uint32_t n_ack_peers, ack_peers_cap;
	uint64_t next_timer;
	uint32_t ack_backlog;	/* acknowledgements not sent yet */
	long rnr_count;		/* received sends, for SOFTEFA_FAULT_RNR_EVERY */
	struct sefa_ring **in;	/* rings others send us */
	uint32_t n_in, in_cap;
	uint8_t *rxbuf;		/* socket datagrams */
	size_t rxbuf_len;
};

struct sefa_peer *sefa_peer_get(struct sefa_dev *dev, const uint8_t *gid, uint32_t slot);
bool sefa_peer_alive(struct sefa_dev *dev, struct sefa_peer *peer);
void sefa_op_complete(struct sefa_dev *dev, struct sefa_op *op, uint32_t status);
void sefa_op_on_ack(struct sefa_dev *dev, struct sefa_op *op, uint32_t status);
struct sefa_op *sefa_op_by_seq(struct sefa_engine *e, uint64_t seq);
int sefa_engine_receive(struct sefa_dev *dev);
int sefa_send_hello(struct sefa_dev *dev, struct sefa_peer *peer, uint8_t type);
void sefa_ack_flush(struct sefa_dev *dev);
/* 0, EAGAIN (its ring is full: retry), or ECONNREFUSED (nobody there) */
int sefa_peer_send(struct sefa_dev *dev, struct sefa_peer *peer, const void *buf, size_t len);
bool sefa_rings_pending(struct sefa_dev *dev);

#endif
