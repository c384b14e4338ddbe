/* softefa: shared-memory rings between device instances (ring.c). */
#ifndef SEFA_RING_H
#define SEFA_RING_H

#include "sefa.h"

struct sefa_ring_hdr;

struct sefa_ring {
	struct sefa_ring_hdr *hdr;
	uint8_t *data;
	size_t cap, map_len;
	char path[192];
	/* receiver side: who writes into it */
	uint8_t src_gid[16];
	uint32_t src_slot;
};

void sefa_ring_path(char *out, size_t len, const uint8_t *sgid, uint32_t sslot, const uint8_t *dgid,
		    uint32_t dslot);
struct sefa_ring *sefa_ring_create(const char *path);
struct sefa_ring *sefa_ring_open(const char *path);
void sefa_ring_close(struct sefa_ring *r, bool unlink_file);
int sefa_ring_push(struct sefa_ring *r, const void *a, size_t alen, const void *b, size_t blen);
bool sefa_ring_empty(struct sefa_ring *r);
int sefa_ring_drain(struct sefa_ring *r, int max, void (*fn)(void *arg, const void *rec, size_t len),
		    void *arg);
uint64_t sefa_ring_incarnation(const struct sefa_ring *r);

#endif
