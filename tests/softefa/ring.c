/* softefa: the wire between two device instances, one single-producer
 * single-consumer ring per direction in a file under SOFTEFA_DIR. The sender
 * owns and creates its ring to a peer; the receiver maps it when the sender
 * announces it on the receiver's socket. A record becomes visible only when
 * the producer publishes its tail, so a sender that dies mid-write leaves
 * nothing half-written behind. */
#include "ring.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define RING_MAGIC 0x5345464152494e47ull	/* "SEFARING" */
#define RING_WRAP 0xffffffffu
#define RING_DATA_OFF 4096

struct sefa_ring_hdr {
	uint64_t magic;
	uint64_t cap;
	uint64_t incarnation;
	uint8_t pad0[40];
	_Atomic uint64_t head;	/* consumer position in bytes, never wraps */
	uint8_t pad1[56];
	_Atomic uint64_t tail;	/* producer position */
};

static size_t ring_bytes(void)
{
	long kb = 2048;
	const char *v = getenv("SOFTEFA_RING_KB");

	if (v && atol(v) >= 64)
		kb = atol(v);
	for (long p = 64; ; p <<= 1)
		if (p >= kb)
			return (size_t)p << 10;
}

void sefa_ring_path(char *out, size_t len, const uint8_t *sgid, uint32_t sslot, const uint8_t *dgid,
		    uint32_t dslot)
{
	char s[40], d[40];

	sefa_gid_to_str(sgid, s, sizeof(s));
	sefa_gid_to_str(dgid, d, sizeof(d));
	snprintf(out, len, "%s/r-%s-%u-%s-%u", sefa_cfg.dir, s, sslot, d, dslot);
}

static struct sefa_ring *map(const char *path, int fd, size_t total, bool create)
{
	struct sefa_ring *r = calloc(1, sizeof(*r));
	void *m;

	if (!r)
		return NULL;
	m = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		SEFA_ERR("cannot map the ring %s: %s", path, strerror(errno));
		free(r);
		return NULL;
	}
	r->hdr = m;
	r->data = (uint8_t *)m + RING_DATA_OFF;
	r->map_len = total;
	if (create) {
		r->hdr->cap = total - RING_DATA_OFF;
		r->hdr->incarnation = sefa_now_ns();
		__atomic_store_n(&r->hdr->magic, RING_MAGIC, __ATOMIC_RELEASE);
	}
	r->cap = r->hdr->cap;
	snprintf(r->path, sizeof(r->path), "%s", path);
	return r;
}

struct sefa_ring *sefa_ring_create(const char *path)
{
	size_t total = RING_DATA_OFF + ring_bytes();
	struct sefa_ring *r;
	int fd;

	unlink(path);	/* left by a dead process that had our GID */
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, (off_t)total)) {
		SEFA_ERR("cannot create the ring %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	r = map(path, fd, total, true);
	close(fd);
	return r;
}

struct sefa_ring *sefa_ring_open(const char *path)
{
	struct sefa_ring *r;
	int fd = open(path, O_RDWR | O_CLOEXEC);
	off_t len;

	if (fd < 0)
		return NULL;
	len = lseek(fd, 0, SEEK_END);
	if (len <= RING_DATA_OFF) {
		close(fd);
		return NULL;
	}
	r = map(path, fd, (size_t)len, false);
	close(fd);
	if (r && (__atomic_load_n(&r->hdr->magic, __ATOMIC_ACQUIRE) != RING_MAGIC ||
		  r->cap + RING_DATA_OFF != (size_t)len)) {
		sefa_ring_close(r, false);
		return NULL;
	}
	return r;
}

void sefa_ring_close(struct sefa_ring *r, bool unlink_file)
{
	if (!r)
		return;
	munmap(r->hdr, r->map_len);
	if (unlink_file)
		unlink(r->path);
	free(r);
}

/* Appends one record made of two pieces; EAGAIN when it does not fit yet. */
int sefa_ring_push(struct sefa_ring *r, const void *a, size_t alen, const void *b, size_t blen)
{
	uint64_t tail = atomic_load_explicit(&r->hdr->tail, memory_order_relaxed);
	uint64_t head = atomic_load_explicit(&r->hdr->head, memory_order_acquire);
	size_t rec = (8 + alen + blen + 7) & ~(size_t)7;
	size_t pos = (size_t)(tail & (r->cap - 1)), skip = 0;
	uint32_t len = (uint32_t)(alen + blen);

	if (rec > r->cap / 2)
		return EMSGSIZE;
	if (pos + rec > r->cap)
		skip = r->cap - pos;	/* the record starts again at the beginning */
	if (tail + skip + rec - head > r->cap)
		return EAGAIN;
	if (skip) {
		uint32_t wrap = RING_WRAP;

		memcpy(r->data + pos, &wrap, sizeof(wrap));
		pos = 0;
	}
	memcpy(r->data + pos, &len, sizeof(len));
	memcpy(r->data + pos + 8, a, alen);
	if (blen)
		memcpy(r->data + pos + 8 + alen, b, blen);
	atomic_store_explicit(&r->hdr->tail, tail + skip + rec, memory_order_release);
	return 0;
}

bool sefa_ring_empty(struct sefa_ring *r)
{
	return atomic_load_explicit(&r->hdr->head, memory_order_relaxed) ==
	       atomic_load_explicit(&r->hdr->tail, memory_order_acquire);
}

/* Hands up to max records to fn, in place, then gives their room back. */
int sefa_ring_drain(struct sefa_ring *r, int max, void (*fn)(void *arg, const void *rec, size_t len),
		    void *arg)
{
	uint64_t head = atomic_load_explicit(&r->hdr->head, memory_order_relaxed);
	uint64_t tail = atomic_load_explicit(&r->hdr->tail, memory_order_acquire);
	int n = 0;

	while (head != tail && n < max) {
		size_t pos = (size_t)(head & (r->cap - 1));
		uint32_t len;

		memcpy(&len, r->data + pos, sizeof(len));
		if (len == RING_WRAP) {
			head += r->cap - pos;
			continue;
		}
		if (len > r->cap / 2) {
			SEFA_ERR("ring %s is corrupt (record of %u bytes): dropping it", r->path, len);
			head = tail;
			break;
		}
		fn(arg, r->data + pos + 8, len);
		head += (8 + len + 7) & ~(uint64_t)7;
		n++;
	}
	atomic_store_explicit(&r->hdr->head, head, memory_order_release);
	return n;
}

uint64_t sefa_ring_incarnation(const struct sefa_ring *r)
{
	return r->hdr->incarnation;
}
