/* A fixed-capacity pool of equal-sized objects: O(1) get and put. Items never
 * move. A growing pool starts with a few items and doubles (a new segment,
 * one calloc) when they are all in use, up to its capacity: thousands of
 * comms that each keep a few requests in flight do not each pay for the
 * 32 NCCL allows. Requests and bounce buffers come from pools. */
#ifndef FABNET_CORE_POOL_H
#define FABNET_CORE_POOL_H

#include <stddef.h>
#include <stdint.h>

#define FABNET_POOL_MAX_SEGS 8

struct fabnet_pool {
	size_t item_size;
	uint32_t capacity;
	uint32_t allocated;   /* items that have storage: [0, allocated) */
	uint32_t nfree;
	uint32_t *free_stack; /* indices of free items */
	uint8_t *in_use;      /* one flag per item: catches double puts */
	uint32_t nseg;
	uint8_t *seg[FABNET_POOL_MAX_SEGS];       /* storage of items seg_start[k].. */
	uint32_t seg_start[FABNET_POOL_MAX_SEGS];
	int owns_first;       /* seg[0] was allocated here (later ones always are) */
};

/* items may be NULL (the pool allocates zeroed storage) or caller storage of
 * capacity * item_size bytes. Returns 0 or -1 (out of memory, bad sizes). */
int fabnet_pool_init(struct fabnet_pool *p, size_t item_size, uint32_t capacity, void *items);
/* A pool that allocates first items now and grows on demand. Returns 0 or -1. */
int fabnet_pool_init_growing(struct fabnet_pool *p, size_t item_size, uint32_t capacity,
			     uint32_t first);
void fabnet_pool_fini(struct fabnet_pool *p);
/* Returns a free item, or NULL when all are in use. */
void *fabnet_pool_get(struct fabnet_pool *p);
/* Returns 0, or -1 when item is not a live item of this pool. */
int fabnet_pool_put(struct fabnet_pool *p, void *item);
/* Index of item, or -1 when it does not point at an item of this pool. */
int64_t fabnet_pool_index(const struct fabnet_pool *p, const void *item);
void *fabnet_pool_at(const struct fabnet_pool *p, uint32_t index);
static inline uint32_t fabnet_pool_used(const struct fabnet_pool *p)
{
	return p->allocated - p->nfree;
}

#endif
