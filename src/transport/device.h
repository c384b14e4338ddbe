/*
 * One fabnet device = one libfabric domain (a NIC) with ONE reliable-datagram
 * endpoint, completion queue and address vector that every comm on the device
 * shares. Operations are plain structs (struct fabnet_op) that begin with the
 * provider's context space, so FI_CONTEXT / FI_CONTEXT2 are always honoured.
 * A post the provider refuses with -FI_EAGAIN goes on a retry list that the
 * next progress call drains: callers never see EAGAIN.
 *
 * Locking: dev->lock serialises every call into the domain (we ask for
 * FI_THREAD_DOMAIN), and the protocol layer holds it while it runs.
 *
 * Rails: several devices (NICs next to one accelerator) can form one group
 * that NCCL sees as a single device. The group's first device (its primary)
 * owns the lock and the protocol state for all of them; progress on the
 * primary progresses every rail, and operations say which rail they went out
 * on (op->dev), so each completes where it was posted.
 */
#ifndef FABNET_TRANSPORT_DEVICE_H
#define FABNET_TRANSPORT_DEVICE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <rdma/fabric.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>

#include "core/keypool.h"
#include "core/regcache.h"
#include "core/wire.h"

struct fabnet_dev;
struct fabnet_op;
struct fabnet_mr;

/* err is 0 or a positive FI_E* code; e is NULL on error. */
typedef void (*fabnet_op_cb)(struct fabnet_op *op, int err, const struct fi_cq_data_entry *e);

enum fabnet_op_kind { FABNET_OP_SEND = 1, FABNET_OP_WRITE, FABNET_OP_READ, FABNET_OP_RECV };

struct fabnet_op {
	struct fi_context2 ctx; /* first: handed to the provider as the op context */
	uint8_t kind;
	uint8_t queued;         /* on the retry list */
	uint8_t posted;         /* owned by the provider until its completion */
	uint8_t best_effort;    /* failure is expected (CLOSE to a gone peer): log at INFO */
	fabnet_op_cb cb;
	void *owner;
	struct fabnet_op *next;
	/* what to post */
	void *buf;
	size_t len;
	void *desc;
	fi_addr_t peer;
	uint64_t raddr;
	uint64_t rkey;
	uint64_t imm;           /* WRITE: immediate data (remote CQ data) */
	struct fabnet_dev *dev; /* the rail it was posted on (set by fabnet_dev_post) */
};

struct fabnet_peer {
	uint8_t addr[FABNET_ADDR_MAX];
	size_t addrlen;
	fi_addr_t fi_addr;
};

/* Upcalls from the transport to the layer above, installed once. */
struct fabnet_dev_upcalls {
	/* A message landed in a bounce buffer (valid only during the call). */
	void (*on_msg)(struct fabnet_dev *dev, const void *buf, size_t len);
	/* An RMA write with immediate data landed. */
	void (*on_imm)(struct fabnet_dev *dev, uint64_t data);
};

/* EFA specifics (transport/efa.c); all zero on other providers. */
struct fabnet_dev_efa {
	int is_efa;
	char fabric[16];          /* "efa" or "efa-direct" */
	char offered[32];         /* the fabrics the provider offered for this domain */
	char fabric_why[256];
	int inorder128;           /* 128-byte aligned RDMA writes land in order: 1, 0, or -1 unknown */
	char why_no_inorder128[160];
	int ll128_off;            /* NCCL is kept off LL128 for this device */
	int emulated_read;        /* the provider emulates RMA read / write: 1, 0, -1 unknown */
	int emulated_write;
	int shm_permitted;        /* FI_OPT_SHARED_MEMORY_PERMITTED: -1 not set, 0 off, 1 refused */
	int cuda_api_permitted;   /* FI_OPT_CUDA_API_PERMITTED: -1 not set, 0 forbidden, 1 refused */
	char why_cuda_api[320];
	size_t max_send;          /* FI_OPT_MAX_MSG_SIZE: the largest message; 0 unknown */
};

struct fabnet_dev {
	int index;
	struct fi_info *info;   /* our copy, used to open everything */
	char name[64];          /* domain name, e.g. "eth0" or "rdmap16s27" */
	char prov_name[64];
	char *pci_path;         /* realpath of the NIC's PCI device, or NULL */
	uint64_t guid;
	int speed_mbps;
	int speed_reported;     /* 0: speed is FABNET_LINK_SPEED_MBPS */
	int hmem;               /* the provider offered FI_HMEM for this domain */
	struct fabnet_dev_efa efa;

	/* What memory NCCL may hand us, probed once (transport/hmem.c). */
	int probed;
	int ptr_support;        /* NCCL_PTR_* bits */
	char why_no_cuda[352];
	char why_no_dmabuf[352];
	int dmabuf_raddr_word;  /* remote addresses of dma-buf regions count from
				 * the first word of struct fi_mr_dmabuf (see mr.c) */

	pthread_mutex_t lock;
	int opened;
	int open_failed;
	struct fid_fabric *fabric;
	struct fid_domain *domain;
	struct fid_av *av;
	struct fid_cq *cq;
	struct fid_ep *ep;
	uint8_t addr[FABNET_ADDR_MAX];
	size_t addrlen;

	/* What the provider granted: we honour each of these. */
	uint64_t mode;
	uint64_t mr_mode;
	size_t cq_data_size;
	size_t max_msg_size;
	size_t max_write;       /* largest single RMA write we post */
	int local_mr;           /* FI_MR_LOCAL: every local buffer needs a descriptor */
	int prov_key;           /* FI_MR_PROV_KEY: the provider chooses keys */
	int virt_addr;          /* FI_MR_VIRT_ADDR: remote addresses are virtual */
	int mr_endpoint;        /* FI_MR_ENDPOINT: bind each MR to the endpoint */
	int rx_cq_data;         /* FI_RX_CQ_DATA: remote CQ data consumes a receive */
	int delivery_needs_peer;/* a send completes only once the peer's software
				 * progresses (rxd): a slow keepalive proves nothing */
	struct fabnet_keypool keys;   /* keys we choose when !prov_key */
	struct fabnet_regcache cache; /* live registrations, shared by every comm */

	/* Bounce buffers: rx pre-posted for messages, tx for messages we send. */
	size_t buf_size;
	size_t eager_max;
	unsigned nrx;
	uint8_t *rx_slab;
	struct fabnet_mr *rx_mr;
	struct fabnet_op *rx_ops;
	uint64_t foreign_msgs;  /* messages with CQ data (not ours) dropped */
	unsigned ntx;
	uint8_t *tx_slab;
	struct fabnet_mr *tx_mr;
	uint32_t *tx_free;
	unsigned ntx_free;

	struct fabnet_op *retry_head, *retry_tail;
	unsigned long eagain_count;

	struct fabnet_peer *peers;
	size_t npeers, peers_cap;

	struct fabnet_dev_upcalls up;
	void *proto;            /* the protocol layer's per-device state (the primary's) */

	/* Rail group (see above). A device alone is its own one-rail group. */
	struct fabnet_dev *primary;
	int rail;               /* index within the group */
	int nrails;             /* on the primary: rails in the group */
	struct fabnet_dev *rails[FABNET_MAX_RAILS]; /* on the primary; rails[0] is itself */
	uint64_t rail_bytes;    /* RMA bytes posted on this rail and not yet completed */
};

/* Opens the domain, endpoint, CQ, AV and bounce buffers (idempotent).
 * Returns 0 or a negative FI_E* code (already logged). */
int fabnet_dev_open(struct fabnet_dev *dev);
void fabnet_dev_close(struct fabnet_dev *dev);

/* Posts op now or queues it for retry after -FI_EAGAIN. Returns 0 or a
 * negative FI_E* code (logged); on error op was not posted. */
int fabnet_dev_post(struct fabnet_dev *dev, struct fabnet_op *op);
/* Reads the CQ, runs completions and upcalls, retries queued posts, on dev
 * and, when dev is a group's primary, on every other rail of the group.
 * Returns 0 or a negative FI_E* code for a broken CQ. */
int fabnet_dev_progress(struct fabnet_dev *dev);
/* Makes devs[0..n-1] one rail group with devs[0] as its primary. */
void fabnet_dev_group(struct fabnet_dev **devs, int n);
/* Removes op from the retry list if it is there (used by close). */
void fabnet_dev_unqueue(struct fabnet_dev *dev, struct fabnet_op *op);

/* Looks up or inserts a peer address. Returns 0 or a negative FI_E* code. */
int fabnet_dev_peer(struct fabnet_dev *dev, const void *addr, size_t addrlen, fi_addr_t *out);
/* 1 and *out when addr is already in the address vector, else 0 (inserts nothing). */
int fabnet_dev_peer_known(struct fabnet_dev *dev, const void *addr, size_t addrlen,
			  fi_addr_t *out);

/* Send bounce buffers, each dev->buf_size bytes; NULL when all are in use. */
void *fabnet_dev_txbuf_get(struct fabnet_dev *dev);
void fabnet_dev_txbuf_put(struct fabnet_dev *dev, void *buf);
void *fabnet_dev_txbuf_desc(struct fabnet_dev *dev);

#endif
