/*
 * The protocol layer: comms and transfers on top of the shared endpoint.
 *
 * Receiver-driven, as NCCL's net_ib, with small sends that may go first. The
 * k-th send with tag T pairs with the k-th receive entry with tag T (tags.c).
 * irecv sends the sender a CTS ("clear to send") naming, for each of up to 8
 * grouped buffers, where to write (address, key, size, tag, per-tag index)
 * and the receive's sequence number. isend finds the CTS entry of its (tag,
 * index), then either
 *   - eager: sends header + payload in one message into the receiver's
 *     pre-posted bounce buffers (small sends to host memory), or
 *   - rendezvous: sends a FIN (size, number of writes) and RMA-writes the data
 *     in chunks, each write carrying 32 bits of immediate data that name the
 *     receiving comm, the sequence and the index;
 * or, with no CTS there yet, a small send from host memory goes early (EARLY,
 * under a credit, early.c) and waits in the receiver's store for its irecv.
 * A receive whose entries are all small and in host memory withholds its
 * CTS until a sender that cannot go early asks for it (RTS).
 * A receive entry completes when its EAGER or EARLY arrived, or when its FIN
 * arrived and as many writes as the FIN announced have landed, in whatever
 * order: nothing depends on message or completion ordering (EFA's SRD
 * reorders).
 *
 * Every byte a peer sends is decoded by core/wire.c and checked against the
 * state it refers to (comm id and peer id, slot and sequence, index, size)
 * before anything is written or completed.
 *
 * Rails (docs/architecture.md, "Rails"): a comm on a group of NICs sends its
 * control messages (CONNECT, ACK, CTS, FIN, CLOSE, PING) on the first rail.
 * Each receive buffer is registered on every rail and the CTS names its key on
 * each. A rendezvous send of at least 2 * FABNET_MIN_STRIPE is cut into one
 * stripe per rail (FABNET_STRIPE_ALIGN-aligned), smaller sends and eager
 * messages take one rail each, round-robin. Each stripe goes out in
 * FABNET_CHUNK_SIZE writes, posted as the rail's bytes in flight drop below
 * FABNET_RAIL_INFLIGHT. Every write carries the same immediate data (comm,
 * seq, index) and the FIN the total count, so the receive completes once
 * every stripe has landed, on whatever rail and in whatever order.
 */
#ifndef FABNET_PROTOCOL_PROTO_H
#define FABNET_PROTOCOL_PROTO_H

#include <stdint.h>
#include <time.h>

#include <rdma/fi_errno.h>

#include "core/pool.h"
#include "core/wire.h"
#include "nccl_net_abi.h"
#include "transport/device.h"
#include "transport/mr.h"

#define FABNET_NREQS NCCL_NET_MAX_REQUESTS /* send / receive requests per comm */
/* Requests only iflush may take beyond FABNET_NREQS: NCCL reads a NULL flush
 * request as "nothing to flush", so iflush must not run out with the rest. */
#define FABNET_FLUSH_REQS 8
#define FABNET_NSLOTS 32                    /* receives in flight per comm */
#define FABNET_COMM_MAGIC 0x464e434du       /* "FNCM" */
#define FABNET_REQ_MAGIC 0x464e5251u        /* "FNRQ" */
#define FABNET_MAX_COMMS 65535              /* ids are 16 bits in the immediate */
#define FABNET_RTS_KEPT 16                  /* RTSs a recv comm keeps for receives to come */

enum fabnet_comm_kind { FABNET_LISTEN = 1, FABNET_SEND, FABNET_RECV };
enum fabnet_comm_state { FABNET_CONNECTING = 1, FABNET_READY, FABNET_FAILED };
enum fabnet_req_kind { FABNET_REQ_SEND = 1, FABNET_REQ_RECV, FABNET_REQ_FLUSH };

struct fabnet_comm;

#define FABNET_RMR_MAGIC 0x464e524du /* "FNRM" */

/* What NCCL holds as an mhandle: one buffer registered on every rail of a
 * device (each registration shared through that rail's cache). */
struct fabnet_rmr {
	uint32_t magic;
	int type;                /* NCCL_PTR_* */
	int nrails;
	struct fabnet_dev *dev;  /* the group's primary */
	struct fabnet_mr *mr[FABNET_MAX_RAILS];
};

struct fabnet_recv_entry {
	uint8_t *data;
	uint64_t size;   /* posted */
	uint64_t got;    /* bytes the sender says it sent */
	struct fabnet_rmr *mr;
	int32_t tag;
	uint32_t tagseq; /* its index among the comm's entries with this tag */
	uint8_t done;
	uint8_t fin_seen;
	uint8_t gone;    /* its buffer was deregistered: nothing may touch it */
	uint32_t writes_expected;
	uint32_t writes_seen;
};

struct fabnet_req {
	uint32_t magic;
	uint8_t kind;
	uint8_t failed;          /* ncclResult_t to report, 0 = none */
	uint8_t msg_pending;     /* the CTS / EAGER / FIN op is with the provider */
	uint8_t abandoned;       /* reported failed to NCCL; freed when its ops return */
	struct fabnet_comm *comm;
	uint32_t seq;
	struct fabnet_op msg_op; /* CTS (recv) or EAGER/FIN (send); cleared when posted */
	union {
		struct {
			int n;
			int ndone;
			uint8_t revoke;        /* FABNET_REVOKE_*: deregMr withdrew it */
			uint8_t noslot;        /* every entry came early: done at irecv, no
						* sequence, slot or CTS of its own */
			uint8_t withheld;      /* its CTS waits for an RTS (every entry small,
						* in host memory: its sends go early) */
			uint8_t rts_wanted;    /* an RTS came, its CTS could not go yet */
			struct fabnet_recv_entry e[FABNET_MAX_RECVS];
		} recv;
		struct {
			uint8_t *data;
			uint64_t size;
			struct fabnet_rmr *mr;
			int32_t tag;
			uint32_t tagseq;       /* its index among the comm's sends with this tag */
			uint8_t early;         /* sent before its CTS (EARLY) */
			uint8_t idx;
			uint8_t nrails;        /* rails this send may use (both sides have them) */
			uint8_t nstripes;      /* 1 .. nrails */
			uint8_t first_rail;    /* stripe s goes out on rail (first_rail + s) % nrails */
			uint64_t stripe;       /* bytes per stripe (the last may be shorter) */
			uint64_t chunk;        /* bytes per write */
			uint64_t next[FABNET_MAX_RAILS]; /* next byte to write, per stripe */
			uint64_t raddr[FABNET_MAX_RAILS]; /* where the buffer is, per rail */
			uint64_t rkey[FABNET_MAX_RAILS];
			uint32_t nwrites;      /* writes this send needs */
			uint32_t writes_posted;
			uint32_t writes_done;
			struct fabnet_req *stall_next; /* waiting for a write op or a rail */
			uint8_t stalled;
			uint8_t draining;      /* FABNET_DRAIN_*: its buffer deregistered */
			uint8_t revoked;       /* the receiver withdrew its receive: REVOKED
						* goes once the writes out are done */
		} send;
		struct {
			/* the reads on rails 1.. (rail 0's is msg_op); msg_pending counts them all */
			struct fabnet_op rail_op[FABNET_MAX_RAILS - 1];
		} flush;
	} u;
};

/* A send whose buffer is deregistered while the provider holds its writes:
 * the deregMr waits for them (WAIT); once it gave up on them (the peer never
 * completes them: a closed target on shm) nothing waits for them again. */
enum { FABNET_DRAIN_NONE, FABNET_DRAIN_WAIT, FABNET_DRAIN_GIVEN_UP };
/* A receive withdrawn by deregMr: REVOKE sent, then the sender's REVOKED. */
enum { FABNET_REVOKE_NONE, FABNET_REVOKE_SENT, FABNET_REVOKE_DONE };

struct fabnet_cts_slot {
	uint8_t valid;
	uint8_t n;
	uint8_t nextra;   /* receiver's rails after the first, as far as we keep them */
	uint16_t src;     /* the comm that sent it (checked at the ACK when it came first) */
	uint8_t revoked;  /* the receiver withdrew receive `seq`: sends for it fail */
	uint32_t seq;
	uint32_t taken;
	struct fabnet_cts_entry e[FABNET_MAX_RECVS];
};

/* Per-tag counts of a comm (tags.c). NCCL pairs a comm's k-th send with tag
 * T with its k-th receive entry with tag T, whatever the grouping: the
 * receiver numbers its entries, the sender its sends, per tag. */
struct fabnet_tag_count {
	int32_t tag;
	uint32_t n;       /* entries posted (recv) or sends made (send) */
	uint32_t final;   /* recv: the peer's CLOSE: entries from here cannot complete */
	uint8_t used;     /* the hash slot holds a tag */
	uint8_t named;    /* recv: the peer's CLOSE named this tag */
	uint8_t rts_sent; /* send: an RTS went for send number rts_for */
	uint32_t rts_for;
};

struct fabnet_tags {
	struct fabnet_tag_count *t; /* open addressing, cap a power of 2 */
	uint32_t n, cap;
	uint32_t last;    /* the last one found: comms mostly use one tag */
};

/* A message that came before its receive was posted (early.c), kept until
 * an irecv takes it: bytes for host memory are copied by the CPU, those for
 * accelerator memory written by the NIC, from here, into the buffer. */
struct fabnet_early_slot {
	uint8_t used;          /* holds a message nobody took yet */
	uint8_t writing;       /* a loopback write from it is with the provider */
	int32_t tag;
	uint32_t tagseq;
	uint64_t size;
	uint8_t *data;         /* eager_max bytes, allocated when first used */
	const struct fabnet_rmr *target; /* the buffer the loopback write fills */
	struct fabnet_mr *mr;  /* its registration, where the provider wants local ones */
	struct fabnet_op op;   /* the loopback write */
	struct fabnet_comm *comm;
};

struct fabnet_pending_conn {
	uint32_t src_id;
	uint64_t token;         /* the connecting comm's, from its CONNECT */
	uint32_t eager_max;     /* the connecting side's, from its CONNECT */
	uint16_t credits;       /* its early credits, from its CONNECT */
	struct fabnet_proc proc;
	uint8_t addrlen;
	uint8_t addr[FABNET_ADDR_MAX];
};

struct fabnet_comm {
	uint32_t magic;
	uint8_t kind;
	uint8_t state;
	uint8_t closing;        /* closed by the user, freed once its ops drain */
	uint8_t peer_closed;
	struct fabnet_dev *dev;
	uint16_t id;
	uint16_t peer_id;
	fi_addr_t peer;         /* on the first rail */
	/* Connection tokens: ours is random, its low bits the generation of our
	 * id; every message to us must carry it, and every message we send the
	 * peer's (learnt from its CONNECT or CONNECT_ACK). */
	uint64_t token;
	uint64_t peer_token;
	uint8_t nrails;         /* rails in use: send: both sides have them; recv: ours */
	uint32_t rr;            /* round-robin rail for the next small send */
	uint32_t eager_max;     /* largest eager message: the smaller of both sides' */
	uint16_t credits_max;   /* early credits: the smaller of both sides' counts */
	uint16_t credits;       /* send: early messages it may send now;
				 * recv: credits it owes the sender (taken early messages) */
	struct fabnet_tags tags;
	fi_addr_t rail_peer[FABNET_MAX_RAILS]; /* send: the receiver on each rail */
	uint32_t seq;           /* recv: next irecv's sequence; send: one past the
				 * highest CTS sequence seen */
	uint32_t peer_final_seq;/* from the peer's CLOSE */
	unsigned ops_inflight;  /* our ops the provider still owns */
	uint8_t ping_pending;   /* a keepalive is with the provider */
	uint8_t flush_rails_logged;
	uint8_t polls;          /* check_peer calls since it last read the clock */
	struct fabnet_proc peer_proc; /* from CONNECT / CONNECT_ACK */
	uint64_t peer_start;          /* its start time, where it runs beside us */
	struct timespec ping_sent;
	struct timespec checked;  /* last liveness check */
	struct fabnet_op ping_op;
	struct fabnet_pool reqs;
	struct fabnet_comm *next; /* connecting list or zombie list */
	union {
		struct {        /* FABNET_LISTEN */
			uint64_t nonce;
			struct fabnet_comm *accepting; /* ACK queued, not yet posted */
			struct fabnet_pending_conn *pending;
			unsigned npending, cap;
		} listen;
		struct {        /* FABNET_SEND */
			struct fabnet_cts_slot *cts; /* FABNET_NSLOTS, only send comms need them */
			uint32_t cts_valid;     /* a bit per slot holding entries to take */
			uint8_t cts_hint;       /* where the next send's entry likely is */
			uint64_t cts_seen;      /* bit i: CTS seq - 1 - i came (duplicates) */
			/* (addr, key) on the receiver's extra rails, per slot and entry:
			 * [slot][entry][rail - 1], allocated only on multi-rail devices */
			struct fabnet_cts_rail *cts_rails;
			uint8_t cts_rails_max;  /* extra rails each row holds */
			/* connect in progress: which handle, since when */
			uint8_t handle[FABNET_HANDLE_SIZE];
			const void *handle_ptr;
			uint64_t nonce;
			uint32_t listen_id;
			struct timespec started;
			struct fabnet_op conn_op;
			void *conn_buf;
		} send;
		struct {        /* FABNET_RECV */
			struct fabnet_req *slot[FABNET_NSLOTS];
			struct fabnet_op ack_op;
			void *ack_buf;
			struct fabnet_early_slot *store; /* credits_max of them */
			uint16_t nstored;
			struct fabnet_op credit_op;      /* a CREDIT message */
			uint8_t peer_tags_final;         /* the sender's CLOSE named its counts */
			uint8_t no_withhold;             /* more RTSs came than we keep */
			uint8_t nrts;                    /* RTSs for entries not posted yet */
			struct { int32_t tag; uint32_t tagseq; } rts[FABNET_RTS_KEPT];
			uint8_t peer_tags_partial;       /* ... of some of its tags only */
		} recv;
	} u;
};

/* Per-device protocol state, hung off dev->proto. */
#define FABNET_SILENT_PEERS 8

struct fabnet_proto_dev {
	struct fabnet_comm **table; /* by id; ids are reused last-freed-last */
	uint32_t cap;
	uint32_t next_fresh;
	uint16_t *free_ids;         /* FIFO ring of FABNET_MAX_COMMS + 1 */
	uint8_t *id_gen;            /* per id: how often it was issued (mod 32) */
	uint32_t free_head, nfree;
	struct fabnet_pool wops;    /* write ops shared by every send on the device */
	struct fabnet_req *stall_head, *stall_tail; /* sends waiting for a write op */
	struct fabnet_comm *connecting;
	struct fabnet_comm *zombies;
	/* loopback target of flush reads */
	unsigned flush_ready;       /* a bit per rail */
	unsigned self_ready;        /* a bit per rail: self[k] is in its AV */
	fi_addr_t self[FABNET_MAX_RAILS];
	uint8_t flush_sink[64];
	struct fabnet_mr *flush_mr[FABNET_MAX_RAILS];
	int cuda_flush_failed;
	/* WARNs about dropped peer input, rate-limited (fabnet_drop_log_ok) */
	uint64_t drop_window_ms;
	unsigned drop_logged, drop_suppressed;
	/* CLOSEs answering PINGs for comms we no longer have, rate-limited */
	uint64_t pingback_window_ms;
	unsigned pingbacks;
	/* peers (their first rail) that left a REVOKE unanswered for the peer
	 * timeout: deregMr and close do not wait on them again until they are
	 * heard from (comm.c) */
	fi_addr_t silent[FABNET_SILENT_PEERS];
	unsigned nsilent;
};

/* All calls below take the device lock themselves. Results are ncclResult_t. */
int fabnet_proto_dev_init(struct fabnet_dev *dev);   /* opens dev if needed */
void fabnet_proto_dev_fini(struct fabnet_dev *dev);  /* frees every comm left */

ncclResult_t fabnet_proto_listen(struct fabnet_dev *dev, void *handle, struct fabnet_comm **out);
ncclResult_t fabnet_proto_connect(struct fabnet_dev *dev, const void *handle,
				  struct fabnet_comm **out);
ncclResult_t fabnet_proto_accept(struct fabnet_comm *listen, struct fabnet_comm **out);
ncclResult_t fabnet_proto_close(struct fabnet_comm *comm);

ncclResult_t fabnet_proto_isend(struct fabnet_comm *comm, void *data, uint64_t size, int tag,
				struct fabnet_rmr *mr, struct fabnet_req **out);
ncclResult_t fabnet_proto_irecv(struct fabnet_comm *comm, int n, void **data,
				const uint64_t *sizes, const int *tags, struct fabnet_rmr **mrs,
				struct fabnet_req **out);
/* GPUDirect flush: a small loopback fi_read from the last received buffer
 * (accelerator memory; host too with FABNET_GDR_FLUSH=always), or the CUDA
 * driver's flush call. *out is NULL when there is nothing to wait for. */
ncclResult_t fabnet_proto_iflush(struct fabnet_comm *comm, int n, void **data, const int *sizes,
				 struct fabnet_rmr **mrs, struct fabnet_req **out);

/* Registers [data, data+size) on every rail of dev's group (through each
 * rail's cache) and releases it. Called with the primary's lock held. */
int fabnet_proto_reg(struct fabnet_dev *dev, void *data, size_t size, int type, int fd,
		     uint64_t offset, struct fabnet_rmr **out);
/* Before the registration goes: every request still naming it forgets it
 * (NCCL deregisters and frees buffers before it closes their comms). */
void fabnet_proto_dereg(struct fabnet_rmr *rmr);
ncclResult_t fabnet_proto_test(struct fabnet_req *req, int *done, uint64_t *sizes);

/* What the transport hands up (dev->up): a message that arrived, and the
 * immediate data of an RMA write that landed. Untrusted bytes, checked here. */
void fabnet_proto_on_msg(struct fabnet_dev *dev, const void *buf, size_t len);
void fabnet_proto_on_imm(struct fabnet_dev *dev, uint64_t data);

#endif
