#include <config.h>

#include <string.h>

#include "core/wire.h"

/* ---- little-endian cursor ------------------------------------------------ */
/* memcpy of a fixed width compiles to one load or store (any alignment); on a
 * little-endian host that is the wire order already. Byte by byte, these were
 * out-of-line calls per byte: about a sixth of fabnet's own instructions per
 * 8-byte message went into decoding (docs/performance.md). */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define LE16(v) __builtin_bswap16(v)
#define LE32(v) __builtin_bswap32(v)
#define LE64(v) __builtin_bswap64(v)
#else
#define LE16(v) (v)
#define LE32(v) (v)
#define LE64(v) (v)
#endif
static inline void put8(uint8_t **p, uint8_t v) { *(*p)++ = v; }
static inline void put16(uint8_t **p, uint16_t v) { v = LE16(v); memcpy(*p, &v, 2); *p += 2; }
static inline void put32(uint8_t **p, uint32_t v) { v = LE32(v); memcpy(*p, &v, 4); *p += 4; }
static inline void put64(uint8_t **p, uint64_t v) { v = LE64(v); memcpy(*p, &v, 8); *p += 8; }
static inline uint8_t get8(const uint8_t **p) { return *(*p)++; }
static inline uint16_t get16(const uint8_t **p) { uint16_t v; memcpy(&v, *p, 2); *p += 2; return LE16(v); }
static inline uint32_t get32(const uint8_t **p) { uint32_t v; memcpy(&v, *p, 4); *p += 4; return LE32(v); }
static inline uint64_t get64(const uint8_t **p) { uint64_t v; memcpy(&v, *p, 8); *p += 8; return LE64(v); }

uint32_t fabnet_fnv1a32(const void *buf, size_t len)
{
	const uint8_t *b = buf;
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < len; i++) {
		h ^= b[i];
		h *= 16777619u;
	}
	return h;
}

/* ---- handle --------------------------------------------------------------
 * 0 magic u32 | 4 version u8 | 5 addrlen u8 | 6 reserved u16 | 8 listen_id u32
 * 12 nonce u64 | 20 addr[addrlen] | checksum u32 (FNV-1a of all before it)
 */
#define HANDLE_FIXED 20

int fabnet_handle_encode(const struct fabnet_handle *h, void *buf, size_t buflen)
{
	uint8_t *p = buf;

	if (buflen < FABNET_HANDLE_SIZE || h->addrlen == 0 || h->addrlen > FABNET_ADDR_MAX)
		return -1;
	memset(buf, 0, FABNET_HANDLE_SIZE);
	put32(&p, FABNET_HANDLE_MAGIC);
	put8(&p, FABNET_WIRE_VERSION);
	put8(&p, h->addrlen);
	put16(&p, 0);
	put32(&p, h->listen_id);
	put64(&p, h->nonce);
	memcpy(p, h->addr, h->addrlen);
	p += h->addrlen;
	put32(&p, fabnet_fnv1a32(buf, HANDLE_FIXED + (size_t)h->addrlen));
	return 0;
}

const char *fabnet_handle_decode(const void *buf, size_t buflen, struct fabnet_handle *h)
{
	const uint8_t *p = buf;
	uint32_t magic, sum;
	uint8_t version;

	if (!buf || buflen < FABNET_HANDLE_SIZE)
		return "handle buffer too small";
	magic = get32(&p);
	if (magic != FABNET_HANDLE_MAGIC)
		return "bad magic: not a fabnet handle";
	version = get8(&p);
	if (version != FABNET_WIRE_VERSION)
		return "unsupported handle version (fabnet builds differ between the ranks?)";
	h->addrlen = get8(&p);
	if (h->addrlen == 0 || h->addrlen > FABNET_ADDR_MAX)
		return "address length out of range";
	if (get16(&p) != 0)
		return "reserved bits set";
	h->listen_id = get32(&p);
	h->nonce = get64(&p);
	memcpy(h->addr, p, h->addrlen);
	p += h->addrlen;
	sum = get32(&p);
	if (sum != fabnet_fnv1a32(buf, HANDLE_FIXED + (size_t)h->addrlen))
		return "checksum mismatch: the handle was corrupted";
	if (h->listen_id == 0)
		return "listener id 0 is never issued";
	return NULL;
}

/* ---- messages ------------------------------------------------------------ */
static uint8_t *put_hdr(uint8_t *p, uint8_t type, uint32_t dst, uint32_t src, uint32_t seq)
{
	put16(&p, FABNET_MSG_MAGIC);
	put8(&p, FABNET_WIRE_VERSION);
	put8(&p, type);
	put32(&p, dst);
	put32(&p, src);
	put32(&p, seq);
	put64(&p, 0); /* the token: fabnet_msg_set_token */
	return p;
}

void fabnet_msg_set_token(void *buf, uint64_t token)
{
	uint8_t *p = (uint8_t *)buf + 16;

	put64(&p, token);
}

#define CONNECT_FIXED 24
#define ACK_FIXED 24

size_t fabnet_msg_encode_connect(void *buf, size_t len, uint32_t listen_id, uint32_t src_id,
				 uint64_t nonce, const struct fabnet_proc *proc, const void *addr,
				 uint8_t addrlen, uint32_t eager_max)
{
	size_t need = FABNET_MSG_HDR_SIZE + CONNECT_FIXED + (size_t)addrlen;
	uint8_t *p;

	if (len < need || addrlen == 0 || addrlen > FABNET_ADDR_MAX)
		return 0;
	p = put_hdr(buf, FABNET_MSG_CONNECT, listen_id, src_id, eager_max);
	put64(&p, nonce);
	put8(&p, addrlen);
	put8(&p, 0);
	put16(&p, 0);
	put32(&p, proc ? proc->pid : 0);
	put64(&p, proc ? proc->host : 0);
	memcpy(p, addr, addrlen);
	return need;
}

/* ACK: nonce, pid, extra rail count and address length (zero for one rail,
 * the layout of the single-rail format), host, then the extra addresses. */
size_t fabnet_msg_encode_ack_rails(void *buf, size_t len, uint32_t dst_id, uint32_t src_id,
				   uint64_t nonce, const struct fabnet_proc *proc, uint8_t nextra,
				   uint8_t addrlen, const void *addrs, uint32_t eager_max)
{
	size_t need = FABNET_MSG_HDR_SIZE + ACK_FIXED + (size_t)nextra * addrlen;
	uint8_t *p;

	if (len < need || nextra > FABNET_MAX_RAILS - 1 || (nextra && !addrlen) ||
	    addrlen > FABNET_ADDR_MAX)
		return 0;
	p = put_hdr(buf, FABNET_MSG_CONNECT_ACK, dst_id, src_id, eager_max);
	put64(&p, nonce);
	put32(&p, proc ? proc->pid : 0);
	put8(&p, nextra);
	put8(&p, nextra ? addrlen : 0);
	put16(&p, 0);
	put64(&p, proc ? proc->host : 0);
	if (nextra)
		memcpy(p, addrs, (size_t)nextra * addrlen);
	return need;
}

size_t fabnet_msg_encode_ack(void *buf, size_t len, uint32_t dst_id, uint32_t src_id,
			     uint64_t nonce, const struct fabnet_proc *proc)
{
	return fabnet_msg_encode_ack_rails(buf, len, dst_id, src_id, nonce, proc, 0, 0, NULL, 0);
}

/* CTS: n, extra rail count, 6 reserved bytes, then per entry the first
 * rail's (addr, key), size, tag, flags and (addr, key) on each extra rail. */
size_t fabnet_msg_encode_cts_rails(void *buf, size_t len, uint32_t dst_id, uint32_t src_id,
				   uint32_t seq, uint8_t n, const struct fabnet_cts_entry *e,
				   uint8_t nextra,
				   const struct fabnet_cts_rail (*rail)[FABNET_MAX_RAILS - 1])
{
	size_t need = FABNET_MSG_HDR_SIZE + FABNET_CTS_FIXED +
		      (size_t)n * (FABNET_CTS_ENTRY_SIZE + (size_t)nextra * FABNET_CTS_RAIL_SIZE);
	uint8_t *p;

	if (len < need || n == 0 || n > FABNET_MAX_RECVS || nextra > FABNET_MAX_RAILS - 1 ||
	    (nextra && !rail))
		return 0;
	p = put_hdr(buf, FABNET_MSG_CTS, dst_id, src_id, seq);
	put8(&p, n);
	put8(&p, nextra);
	for (int i = 0; i < 6; i++)
		put8(&p, 0);
	for (uint8_t i = 0; i < n; i++) {
		put64(&p, e[i].addr);
		put64(&p, e[i].key);
		put64(&p, e[i].size);
		put32(&p, (uint32_t)e[i].tag);
		put32(&p, (e[i].flags & 0xffu) | (e[i].tagseq & FABNET_TAGSEQ_MASK) << 8);
		for (uint8_t k = 0; k < nextra; k++) {
			put64(&p, rail[i][k].addr);
			put64(&p, rail[i][k].key);
		}
	}
	return need;
}

size_t fabnet_msg_encode_cts(void *buf, size_t len, uint32_t dst_id, uint32_t src_id,
			     uint32_t seq, uint8_t n, const struct fabnet_cts_entry *e)
{
	return fabnet_msg_encode_cts_rails(buf, len, dst_id, src_id, seq, n, e, 0, NULL);
}

size_t fabnet_msg_encode_eager(void *buf, size_t len, uint32_t dst_id, uint32_t src_id,
			       uint32_t seq, uint8_t idx, uint8_t flags, uint64_t size)
{
	uint8_t *p;

	if (len < FABNET_MSG_HDR_SIZE + FABNET_EAGER_FIXED ||
	    size > len - FABNET_MSG_HDR_SIZE - FABNET_EAGER_FIXED)
		return 0;
	p = put_hdr(buf, FABNET_MSG_EAGER, dst_id, src_id, seq);
	put8(&p, idx);
	put8(&p, flags);
	put16(&p, 0);
	put32(&p, 0);
	put64(&p, size);
	return FABNET_MSG_HDR_SIZE + FABNET_EAGER_FIXED + (size_t)size;
}

size_t fabnet_msg_encode_fin(void *buf, size_t len, uint32_t dst_id, uint32_t src_id,
			     uint32_t seq, uint8_t idx, uint8_t flags, uint32_t nwrites,
			     uint64_t size)
{
	uint8_t *p;

	if (len < FABNET_MSG_HDR_SIZE + 16)
		return 0;
	p = put_hdr(buf, FABNET_MSG_FIN, dst_id, src_id, seq);
	put8(&p, idx);
	put8(&p, flags);
	put16(&p, 0);
	put32(&p, nwrites);
	put64(&p, size);
	return FABNET_MSG_HDR_SIZE + 16;
}

size_t fabnet_msg_encode_close(void *buf, size_t len, uint32_t dst_id, uint32_t src_id,
			       uint32_t final_seq)
{
	if (len < FABNET_MSG_HDR_SIZE)
		return 0;
	put_hdr(buf, FABNET_MSG_CLOSE, dst_id, src_id, final_seq);
	return FABNET_MSG_HDR_SIZE;
}

size_t fabnet_msg_encode_close_tags(void *buf, size_t len, uint32_t dst_id, uint32_t src_id,
				    uint32_t final_seq, uint32_t ntags, const int32_t *tags,
				    const uint32_t *counts)
{
	size_t need = FABNET_MSG_HDR_SIZE + (size_t)ntags * FABNET_CLOSE_TAG_SIZE;
	uint8_t *p;

	if (len < need || ntags > FABNET_CLOSE_MAX_TAGS)
		return 0;
	p = put_hdr(buf, FABNET_MSG_CLOSE, dst_id, src_id, final_seq);
	for (uint32_t i = 0; i < ntags; i++) {
		put32(&p, (uint32_t)tags[i]);
		put32(&p, counts[i]);
	}
	return need;
}

void fabnet_msg_close_tag(const struct fabnet_msg *m, uint32_t i, int32_t *tag, uint32_t *count)
{
	const uint8_t *p = m->u.close.tags + (size_t)i * FABNET_CLOSE_TAG_SIZE;

	*tag = (int32_t)get32(&p);
	*count = get32(&p);
}

/* EARLY: tag, 4 reserved bytes, size, payload; the header's seq is the
 * per-tag index. */
size_t fabnet_msg_encode_early(void *buf, size_t len, uint32_t dst_id, uint32_t src_id,
			       int32_t tag, uint32_t tagseq, uint64_t size)
{
	uint8_t *p;

	if (len < FABNET_MSG_HDR_SIZE + FABNET_EAGER_FIXED ||
	    size > len - FABNET_MSG_HDR_SIZE - FABNET_EAGER_FIXED)
		return 0;
	p = put_hdr(buf, FABNET_MSG_EARLY, dst_id, src_id, tagseq);
	put32(&p, (uint32_t)tag);
	put32(&p, 0);
	put64(&p, size);
	return FABNET_MSG_HDR_SIZE + FABNET_EAGER_FIXED + (size_t)size;
}

size_t fabnet_msg_encode_credit(void *buf, size_t len, uint32_t dst_id, uint32_t src_id,
				uint32_t credits)
{
	if (len < FABNET_MSG_HDR_SIZE)
		return 0;
	put_hdr(buf, FABNET_MSG_CREDIT, dst_id, src_id, credits);
	return FABNET_MSG_HDR_SIZE;
}

size_t fabnet_msg_encode_rts(void *buf, size_t len, uint32_t dst_id, uint32_t src_id,
			     int32_t tag, uint32_t tagseq)
{
	uint8_t *p;

	if (len < FABNET_MSG_HDR_SIZE + 8)
		return 0;
	p = put_hdr(buf, FABNET_MSG_RTS, dst_id, src_id, tagseq);
	put32(&p, (uint32_t)tag);
	put32(&p, 0);
	return FABNET_MSG_HDR_SIZE + 8;
}

/* CONNECT: the reserved u16 after addrlen and a reserved byte; ACK: the one
 * after nextra and addrlen; CTS: the first two of its reserved bytes. */
void fabnet_msg_set_credits(void *buf, uint16_t credits)
{
	uint8_t *p = buf;
	uint8_t type = p[3];

	p += FABNET_MSG_HDR_SIZE;
	if (type == FABNET_MSG_CONNECT)
		p += 10;
	else if (type == FABNET_MSG_CONNECT_ACK)
		p += 14;
	else if (type == FABNET_MSG_CTS)
		p += 2;
	else
		return;
	put16(&p, credits);
}

size_t fabnet_msg_encode_revoke(void *buf, size_t len, uint32_t dst_id, uint32_t src_id,
				uint32_t seq, int confirm)
{
	if (len < FABNET_MSG_HDR_SIZE)
		return 0;
	put_hdr(buf, confirm ? FABNET_MSG_REVOKED : FABNET_MSG_REVOKE, dst_id, src_id, seq);
	return FABNET_MSG_HDR_SIZE;
}

#define PING_FIXED 16

size_t fabnet_msg_encode_ping(void *buf, size_t len, uint32_t dst_id, uint32_t src_id,
			      uint64_t own_token, const void *addr, uint8_t addrlen)
{
	size_t need = FABNET_MSG_HDR_SIZE + PING_FIXED + (size_t)addrlen;
	uint8_t *p;

	if (len < need || addrlen == 0 || addrlen > FABNET_ADDR_MAX)
		return 0;
	p = put_hdr(buf, FABNET_MSG_PING, dst_id, src_id, 0);
	put64(&p, own_token);
	put8(&p, addrlen);
	for (int i = 0; i < 7; i++)
		put8(&p, 0);
	memcpy(p, addr, addrlen);
	return need;
}

const char *fabnet_msg_decode(const void *buf, size_t len, struct fabnet_msg *m)
{
	const uint8_t *p = buf;
	size_t body;

	if (!buf || len < FABNET_MSG_HDR_SIZE)
		return "message shorter than its header";
	if (get16(&p) != FABNET_MSG_MAGIC)
		return "bad message magic";
	if (get8(&p) != FABNET_WIRE_VERSION)
		return "unsupported message version";
	m->type = get8(&p);
	m->dst_id = get32(&p);
	m->src_id = get32(&p);
	m->seq = get32(&p);
	m->token = get64(&p);
	body = len - FABNET_MSG_HDR_SIZE;
	if (m->dst_id == 0)
		return "destination id 0 is never issued";

	switch (m->type) {
	case FABNET_MSG_CONNECT:
		if (body < CONNECT_FIXED)
			return "CONNECT too short";
		m->u.connect.nonce = get64(&p);
		m->u.connect.addrlen = get8(&p);
		if (get8(&p))
			return "CONNECT reserved bytes set";
		m->u.connect.credits = get16(&p);
		m->u.connect.proc.pid = get32(&p);
		m->u.connect.proc.host = get64(&p);
		if (m->u.connect.addrlen == 0 || m->u.connect.addrlen > FABNET_ADDR_MAX ||
		    body != CONNECT_FIXED + (size_t)m->u.connect.addrlen)
			return "CONNECT address length does not match the message";
		if (m->src_id == 0)
			return "CONNECT from comm id 0";
		m->u.connect.addr = p;
		return NULL;
	case FABNET_MSG_CONNECT_ACK:
		if (body < ACK_FIXED)
			return "CONNECT_ACK has the wrong length";
		if (m->src_id == 0)
			return "CONNECT_ACK from comm id 0";
		m->u.ack.nonce = get64(&p);
		m->u.ack.proc.pid = get32(&p);
		m->u.ack.nextra = get8(&p);
		m->u.ack.addrlen = get8(&p);
		m->u.ack.credits = get16(&p);
		m->u.ack.proc.host = get64(&p);
		if (m->u.ack.nextra > FABNET_MAX_RAILS - 1)
			return "CONNECT_ACK names too many rails";
		if (!m->u.ack.nextra != !m->u.ack.addrlen || m->u.ack.addrlen > FABNET_ADDR_MAX)
			return "CONNECT_ACK rail address length out of range";
		if (body != ACK_FIXED + (size_t)m->u.ack.nextra * m->u.ack.addrlen)
			return "CONNECT_ACK has the wrong length";
		m->u.ack.addrs = m->u.ack.nextra ? p : NULL;
		return NULL;
	case FABNET_MSG_CTS:
		if (body < FABNET_CTS_FIXED)
			return "CTS too short";
		m->u.cts.n = get8(&p);
		m->u.cts.nextra = get8(&p);
		m->u.cts.credits = get16(&p);
		if (get32(&p))
			return "CTS reserved bytes set";
		if (m->u.cts.n == 0 || m->u.cts.n > FABNET_MAX_RECVS)
			return "CTS receive count out of range";
		if (m->u.cts.nextra > FABNET_MAX_RAILS - 1)
			return "CTS names too many rails";
		if (body != FABNET_CTS_FIXED + (size_t)m->u.cts.n *
						       (FABNET_CTS_ENTRY_SIZE +
							(size_t)m->u.cts.nextra * FABNET_CTS_RAIL_SIZE))
			return "CTS length does not match its receive count";
		for (uint8_t i = 0; i < m->u.cts.n; i++) {
			struct fabnet_cts_entry *e = &m->u.cts.e[i];
			e->addr = get64(&p);
			e->key = get64(&p);
			e->size = get64(&p);
			e->tag = (int32_t)get32(&p);
			e->flags = get32(&p);
			e->tagseq = e->flags >> 8;
			e->flags &= 0xffu;
			if (e->flags & ~(uint32_t)(FABNET_CTS_EAGER_OK | FABNET_CTS_NO_RMA))
				return "CTS entry has unknown flags";
			if (e->size && e->addr + e->size < e->addr)
				return "CTS entry wraps around the address space";
			for (uint8_t k = 0; k < m->u.cts.nextra; k++) {
				struct fabnet_cts_rail *r = &m->u.cts.rail[i][k];
				r->addr = get64(&p);
				r->key = get64(&p);
				if (e->size && r->addr + e->size < r->addr)
					return "CTS entry wraps around the address space";
			}
		}
		return NULL;
	case FABNET_MSG_EAGER:
		if (body < FABNET_EAGER_FIXED)
			return "EAGER too short";
		m->u.eager.idx = get8(&p);
		m->u.eager.flags = get8(&p);
		if (get16(&p) || get32(&p))
			return "EAGER reserved bytes set";
		m->u.eager.size = get64(&p);
		if (m->u.eager.idx >= FABNET_MAX_RECVS)
			return "EAGER index out of range";
		if (m->u.eager.flags & ~(uint8_t)FABNET_FIN_ERROR)
			return "EAGER has unknown flags";
		if (m->u.eager.size != body - FABNET_EAGER_FIXED)
			return "EAGER size does not match the bytes received";
		m->u.eager.payload = p;
		return NULL;
	case FABNET_MSG_FIN:
		if (body != 16)
			return "FIN has the wrong length";
		m->u.fin.idx = get8(&p);
		m->u.fin.flags = get8(&p);
		if (get16(&p))
			return "FIN reserved bytes set";
		m->u.fin.nwrites = get32(&p);
		m->u.fin.size = get64(&p);
		if (m->u.fin.idx >= FABNET_MAX_RECVS)
			return "FIN index out of range";
		if (m->u.fin.flags & ~(uint8_t)FABNET_FIN_ERROR)
			return "FIN has unknown flags";
		if (m->u.fin.size && m->u.fin.nwrites == 0 && !(m->u.fin.flags & FABNET_FIN_ERROR))
			return "FIN claims bytes but no writes";
		return NULL;
	case FABNET_MSG_CLOSE:
		if (body % FABNET_CLOSE_TAG_SIZE || body / FABNET_CLOSE_TAG_SIZE > FABNET_CLOSE_MAX_TAGS)
			return "CLOSE has the wrong length";
		m->u.close.ntags = (uint32_t)(body / FABNET_CLOSE_TAG_SIZE);
		m->u.close.tags = p;
		return NULL;
	case FABNET_MSG_EARLY:
		if (body < FABNET_EAGER_FIXED)
			return "EARLY too short";
		m->u.early.tag = (int32_t)get32(&p);
		if (get32(&p))
			return "EARLY reserved bytes set";
		m->u.early.size = get64(&p);
		if (m->u.early.size != body - FABNET_EAGER_FIXED)
			return "EARLY size does not match the bytes received";
		if (m->src_id == 0 || m->src_id > 0xffff)
			return "EARLY from a comm id out of range";
		m->u.early.payload = p;
		return NULL;
	case FABNET_MSG_RTS:
		if (body != 8)
			return "RTS has the wrong length";
		m->u.rts.tag = (int32_t)get32(&p);
		if (get32(&p))
			return "RTS reserved bytes set";
		if (m->src_id == 0 || m->src_id > 0xffff)
			return "RTS from a comm id out of range";
		return NULL;
	case FABNET_MSG_CREDIT:
		if (body != 0)
			return "CREDIT has the wrong length";
		if (m->seq == 0 || m->seq > 0xffff)
			return "CREDIT count out of range";
		return NULL;
	case FABNET_MSG_REVOKE:
	case FABNET_MSG_REVOKED:
		if (body != 0)
			return "REVOKE has the wrong length";
		if (m->src_id == 0 || m->src_id > 0xffff)
			return "REVOKE from a comm id out of range";
		return NULL;
	case FABNET_MSG_PING:
		if (body < PING_FIXED)
			return "PING too short";
		if (m->seq != 0)
			return "PING carries a sequence";
		m->u.ping.token = get64(&p);
		m->u.ping.addrlen = get8(&p);
		for (int i = 0; i < 7; i++)
			if (get8(&p))
				return "PING reserved bytes set";
		if (m->u.ping.addrlen == 0 || m->u.ping.addrlen > FABNET_ADDR_MAX ||
		    body != PING_FIXED + (size_t)m->u.ping.addrlen)
			return "PING address length does not match the message";
		m->u.ping.addr = p;
		return NULL;
	default:
		return "unknown message type";
	}
}

/* ---- immediate data ------------------------------------------------------ */
uint32_t fabnet_imm_pack(uint16_t comm_id, uint8_t seq, uint8_t idx, uint8_t gen)
{
	return (uint32_t)comm_id << 16 | (uint32_t)seq << 8 | (uint32_t)(idx & 7) << 5 |
	       (gen & FABNET_IMM_GEN_MASK);
}

const char *fabnet_imm_unpack(uint64_t data, struct fabnet_imm *imm)
{
	if (data >> 32)
		return "immediate data wider than 32 bits";
	imm->comm_id = (uint16_t)(data >> 16);
	imm->seq = (uint8_t)(data >> 8);
	imm->idx = (uint8_t)((data >> 5) & 7);
	imm->gen = (uint8_t)(data & FABNET_IMM_GEN_MASK);
	if (imm->comm_id == 0)
		return "immediate data names comm id 0";
	return NULL;
}
