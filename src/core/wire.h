/*
 * Everything fabnet puts on the wire, and its decoders. Bytes that arrive
 * from outside (a connection handle, a peer's message, immediate data) are
 * untrusted: every decoder checks magic, version, lengths and indices and
 * returns an error string instead of trusting a field. Little-endian, packed
 * by hand, so the layout does not depend on the compiler.
 */
#ifndef FABNET_CORE_WIRE_H
#define FABNET_CORE_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define FABNET_WIRE_VERSION 3 /* 2: the header carries the connection token;
			       * 3: early eager (EARLY, CREDIT, per-tag indices) */
#define FABNET_HANDLE_MAGIC 0x484e4246u /* "FBNH" */
#define FABNET_MSG_MAGIC 0xfb17u
#define FABNET_ADDR_MAX 96     /* endpoint address bytes carried in a handle */
#define FABNET_MAX_RECVS 8     /* grouped receives per irecv */
#define FABNET_HANDLE_SIZE 128 /* NCCL_NET_HANDLE_MAXSIZE */
#define FABNET_MAX_RAILS 4     /* endpoints (NICs) one comm stripes across */

/* ---- connection handle (listen -> connect, exchanged by NCCL) ------------ */
struct fabnet_handle {
	uint32_t listen_id;
	uint64_t nonce; /* random per listener: a stale handle does not reach a new one */
	uint8_t addrlen;
	uint8_t addr[FABNET_ADDR_MAX];
};

/* Writes h into buf (FABNET_HANDLE_SIZE bytes, rest zeroed); returns 0 or -1. */
int fabnet_handle_encode(const struct fabnet_handle *h, void *buf, size_t buflen);
/* Returns NULL on success, else why the bytes are not a fabnet handle. */
const char *fabnet_handle_decode(const void *buf, size_t buflen, struct fabnet_handle *h);

/* ---- messages on the shared endpoint ------------------------------------ */
enum fabnet_msg_type {
	FABNET_MSG_CONNECT = 1, /* sender -> listener: please accept me */
	FABNET_MSG_CONNECT_ACK, /* receiver -> sender: accepted, here is my comm id */
	FABNET_MSG_CTS,         /* receiver -> sender: clear to send, write here */
	FABNET_MSG_EAGER,       /* sender -> receiver: small payload inline */
	FABNET_MSG_FIN,         /* sender -> receiver: size and write count of a send */
	FABNET_MSG_CLOSE,       /* either way: this side closed after `seq` operations */
	FABNET_MSG_PING,        /* either way: keepalive; its delivery proves the peer lives,
				 * and a peer without the comm answers it with a CLOSE */
	FABNET_MSG_REVOKE,      /* receiver -> sender: receive `seq` is withdrawn (its buffer
				 * is being deregistered): write no more into it */
	FABNET_MSG_REVOKED,     /* sender -> receiver: no write into receive `seq` is left */
	FABNET_MSG_EARLY,       /* sender -> receiver: a small payload sent before its CTS,
				 * named by (tag, per-tag index), under a credit */
	FABNET_MSG_CREDIT,      /* receiver -> sender: `seq` early credits given back */
	FABNET_MSG_RTS,         /* sender -> receiver: send (tag, index `seq`) cannot go
				 * early: send the CTS of its receive now */
	FABNET_MSG_TYPE_MAX
};

#define FABNET_MSG_HDR_SIZE 24
#define FABNET_CTS_ENTRY_SIZE 32
#define FABNET_CTS_FIXED 8
#define FABNET_EAGER_FIXED 16
#define FABNET_CTS_RAIL_SIZE 16 /* (address, key) on each rail after the first */
#define FABNET_MSG_MAX_CONTROL                                                \
	(FABNET_MSG_HDR_SIZE + FABNET_CTS_FIXED +                             \
	 FABNET_MAX_RECVS * (FABNET_CTS_ENTRY_SIZE + (FABNET_MAX_RAILS - 1) * FABNET_CTS_RAIL_SIZE))

/* CTS entry flags (the low 8 bits of the entry's flags word; the high 24
 * bits carry the entry's per-tag index) */
#define FABNET_CTS_EAGER_OK 0x1 /* host memory: the receiver can copy inline data */
#define FABNET_CTS_NO_RMA 0x2   /* posted without registration: inline data only */
#define FABNET_TAGSEQ_MASK 0xffffffu /* per-tag indices in a CTS: 24 bits, modular */
/* Largest number of (tag, count) pairs a CLOSE carries; a sender with more
 * tags names those that matter most and says the list is partial (the
 * header's seq is FABNET_CLOSE_PARTIAL, else 0). */
#define FABNET_CLOSE_MAX_TAGS 1000
#define FABNET_CLOSE_PARTIAL 1u
#define FABNET_CLOSE_TAG_SIZE 8
/* FIN / EAGER flags */
#define FABNET_FIN_ERROR 0x1 /* the send failed (too large for the buffer) */

/* Where to write on the receiver's first rail, and what may be written. */
struct fabnet_cts_entry {
	uint64_t addr; /* virtual address or offset, as the MR mode wants */
	uint64_t key;
	uint64_t size;
	int32_t tag;
	uint32_t flags;  /* FABNET_CTS_* (8 bits) */
	uint32_t tagseq; /* the entry's index among the receiver's entries with
			  * this tag (24 bits): the sender's send of that index
			  * takes it, or sent it early already */
};

/* The same buffer as registered on the receiver's rail 1, 2, ...: each NIC
 * has its own key (and, without FI_MR_VIRT_ADDR, its own offset base). */
struct fabnet_cts_rail {
	uint64_t addr;
	uint64_t key;
};

/* Who sent a CONNECT / CONNECT_ACK: a process in a (host, pid namespace). A
 * survivor in the same host and namespace can ask the kernel whether its peer
 * still lives, for providers (shm) that cannot report a dead peer. */
struct fabnet_proc {
	uint64_t host; /* hash of the boot id and the pid namespace; 0 = unknown */
	uint32_t pid;
};

struct fabnet_msg {
	uint8_t type;
	uint32_t dst_id; /* comm (or listener) id on the receiving side */
	uint32_t src_id; /* comm id on the sending side */
	uint32_t seq;    /* the receive's sequence; CLOSE: operations started;
			  * CONNECT, CONNECT_ACK: the sender's eager limit (0: not said) */
	uint64_t token;  /* the destination comm's connection token; CONNECT and
			  * CONNECT_ACK: the token the peer must put on every later
			  * message to the sending comm */
	union {
		struct {
			uint64_t nonce;
			uint8_t addrlen;
			uint16_t credits;      /* early messages this side takes / sends */
			struct fabnet_proc proc;
			const uint8_t *addr;
		} connect;
		struct {
			uint64_t nonce;
			struct fabnet_proc proc;
			uint8_t nextra;        /* rails after the first (0..MAX_RAILS-1) */
			uint8_t addrlen;       /* bytes of each extra rail's address */
			uint16_t credits;      /* early credits agreed (the smaller) */
			const uint8_t *addrs;  /* nextra addresses, back to back */
		} ack;
		struct {
			uint8_t n;
			uint8_t nextra;        /* rails after the first */
			uint16_t credits;      /* early credits given back */
			struct fabnet_cts_entry e[FABNET_MAX_RECVS];
			struct fabnet_cts_rail rail[FABNET_MAX_RECVS][FABNET_MAX_RAILS - 1];
		} cts;
		struct {
			uint8_t idx;
			uint8_t flags;
			uint64_t size;
			const uint8_t *payload;
		} eager;
		struct {
			uint8_t idx;
			uint8_t flags;
			uint32_t nwrites;
			uint64_t size;
		} fin;
		struct {
			int32_t tag;      /* header seq: the index among this tag's sends */
			uint64_t size;
			const uint8_t *payload;
		} early;
		struct {
			int32_t tag;      /* header seq: the index among this tag's sends */
		} rts;
		struct {
			uint32_t ntags;   /* a sender's CLOSE: (tag, sends) pairs */
			const uint8_t *tags; /* read with fabnet_msg_close_tag */
		} close;
		struct {
			uint64_t token;   /* the sending comm's own: for a CLOSE back */
			uint8_t addrlen;
			const uint8_t *addr; /* the sending endpoint's */
		} ping;
	} u;
};

/* Each encoder returns the encoded length, or 0 when buf is too small. */
/* CONNECT and CONNECT_ACK carry, in the header's seq, the largest eager
 * message their side takes (0: not said); both sides use the smaller. */
size_t fabnet_msg_encode_connect(void *buf, size_t len, uint32_t listen_id, uint32_t src_id,
				 uint64_t nonce, const struct fabnet_proc *proc, const void *addr,
				 uint8_t addrlen, uint32_t eager_max);
size_t fabnet_msg_encode_ack(void *buf, size_t len, uint32_t dst_id, uint32_t src_id,
			     uint64_t nonce, const struct fabnet_proc *proc);
/* A receiver with several rails also names the addresses of rails 1..nextra
 * (addrlen bytes each, back to back); the first is in the handle. */
size_t fabnet_msg_encode_ack_rails(void *buf, size_t len, uint32_t dst_id, uint32_t src_id,
				   uint64_t nonce, const struct fabnet_proc *proc, uint8_t nextra,
				   uint8_t addrlen, const void *addrs, uint32_t eager_max);
size_t fabnet_msg_encode_cts(void *buf, size_t len, uint32_t dst_id, uint32_t src_id,
			     uint32_t seq, uint8_t n, const struct fabnet_cts_entry *e);
/* rail[i][k] is entry i on the receiver's rail k + 1, for k < nextra. */
size_t fabnet_msg_encode_cts_rails(void *buf, size_t len, uint32_t dst_id, uint32_t src_id,
				   uint32_t seq, uint8_t n, const struct fabnet_cts_entry *e,
				   uint8_t nextra,
				   const struct fabnet_cts_rail (*rail)[FABNET_MAX_RAILS - 1]);
/* Writes the EAGER header only; the payload goes at buf + FABNET_MSG_HDR_SIZE + FABNET_EAGER_FIXED. */
size_t fabnet_msg_encode_eager(void *buf, size_t len, uint32_t dst_id, uint32_t src_id,
			       uint32_t seq, uint8_t idx, uint8_t flags, uint64_t size);
size_t fabnet_msg_encode_fin(void *buf, size_t len, uint32_t dst_id, uint32_t src_id,
			     uint32_t seq, uint8_t idx, uint8_t flags, uint32_t nwrites,
			     uint64_t size);
size_t fabnet_msg_encode_close(void *buf, size_t len, uint32_t dst_id, uint32_t src_id,
			       uint32_t final_seq);
/* A sender's CLOSE also names, per tag, how many of its sends the receiver
 * can still complete (its entries of higher index with that tag fail, and
 * so do those of tags not named). */
size_t fabnet_msg_encode_close_tags(void *buf, size_t len, uint32_t dst_id, uint32_t src_id,
				    uint32_t final_seq, uint32_t ntags, const int32_t *tags,
				    const uint32_t *counts);
void fabnet_msg_close_tag(const struct fabnet_msg *m, uint32_t i, int32_t *tag,
			  uint32_t *count);
/* EARLY: the header's seq is the send's index among those with its tag;
 * writes the header only, the payload goes at
 * buf + FABNET_MSG_HDR_SIZE + FABNET_EAGER_FIXED. */
size_t fabnet_msg_encode_early(void *buf, size_t len, uint32_t dst_id, uint32_t src_id,
			       int32_t tag, uint32_t tagseq, uint64_t size);
size_t fabnet_msg_encode_credit(void *buf, size_t len, uint32_t dst_id, uint32_t src_id,
				uint32_t credits);
size_t fabnet_msg_encode_rts(void *buf, size_t len, uint32_t dst_id, uint32_t src_id,
			     int32_t tag, uint32_t tagseq);
/* Into an encoded CONNECT or CONNECT_ACK: the early credits of its side;
 * into an encoded CTS: the early credits it gives back. */
void fabnet_msg_set_credits(void *buf, uint16_t credits);
/* A PING names the sender's own token and endpoint address, so that a peer
 * which no longer has the comm (closed, its CLOSE lost; or the id reused)
 * can answer with a CLOSE the sender accepts. */
/* REVOKE (confirm 0) or REVOKED (confirm 1) of receive seq. */
size_t fabnet_msg_encode_revoke(void *buf, size_t len, uint32_t dst_id, uint32_t src_id,
				uint32_t seq, int confirm);
size_t fabnet_msg_encode_ping(void *buf, size_t len, uint32_t dst_id, uint32_t src_id,
			      uint64_t own_token, const void *addr, uint8_t addrlen);

/* Stamps the connection token into an encoded message's header (the
 * encoders leave it zero). A random 64-bit value each side chooses for its
 * comm and names in CONNECT / CONNECT_ACK: a message without it is not from
 * this connection's peer, whatever ids it carries. */
void fabnet_msg_set_token(void *buf, uint64_t token);

/* Returns NULL and fills m, or a reason the bytes are not a valid message.
 * Pointers in m (connect.addr, eager.payload) point into buf. */
const char *fabnet_msg_decode(const void *buf, size_t len, struct fabnet_msg *m);

/* ---- immediate data of an RMA write: 32 bits, as EFA carries -------------
 * bits 31..16  receiver's comm id (1..65535)
 * bits 15..8   sequence number of the receive, low 8 bits (its slot is seq % 32)
 * bits  7..5   index within a grouped receive (0..7)
 * bits  4..0   generation of the receiver's comm id (the low bits of its
 *              token): a late write meant for an earlier comm under the
 *              same id carries another generation and is dropped
 */
#define FABNET_IMM_GEN_MASK 0x1fu
struct fabnet_imm {
	uint16_t comm_id;
	uint8_t seq;
	uint8_t idx;
	uint8_t gen;
};
uint32_t fabnet_imm_pack(uint16_t comm_id, uint8_t seq, uint8_t idx, uint8_t gen);
/* Returns NULL or why the value cannot be ours. */
const char *fabnet_imm_unpack(uint64_t data, struct fabnet_imm *imm);

/* FNV-1a, used as the handle checksum. */
uint32_t fabnet_fnv1a32(const void *buf, size_t len);

#endif
