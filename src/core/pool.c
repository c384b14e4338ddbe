#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "core/pool.h"

/* Makes items [allocated, allocated + n) available, in storage s. */
static void add_segment(struct fabnet_pool *p, uint8_t *s, uint32_t n)
{
	p->seg[p->nseg] = s;
	p->seg_start[p->nseg] = p->allocated;
	p->nseg++;
	/* Lowest index on top, so a fresh pool hands items out in order. */
	for (uint32_t i = 0; i < n; i++)
		p->free_stack[p->nfree++] = p->allocated + n - 1 - i;
	p->allocated += n;
}

static int init_common(struct fabnet_pool *p, size_t item_size, uint32_t capacity)
{
	memset(p, 0, sizeof(*p));
	if (item_size == 0 || capacity == 0)
		return -1;
	p->item_size = item_size;
	p->capacity = capacity;
	p->free_stack = malloc(sizeof(uint32_t) * capacity);
	p->in_use = calloc(capacity, 1);
	if (!p->free_stack || !p->in_use) {
		fabnet_pool_fini(p);
		return -1;
	}
	return 0;
}

int fabnet_pool_init(struct fabnet_pool *p, size_t item_size, uint32_t capacity, void *items)
{
	uint8_t *s = items;

	if (init_common(p, item_size, capacity))
		return -1;
	if (!s) {
		s = calloc(capacity, item_size);
		p->owns_first = 1;
	}
	if (!s) {
		fabnet_pool_fini(p);
		return -1;
	}
	add_segment(p, s, capacity);
	return 0;
}

int fabnet_pool_init_growing(struct fabnet_pool *p, size_t item_size, uint32_t capacity,
			     uint32_t first)
{
	uint8_t *s;

	if (first == 0 || first > capacity || init_common(p, item_size, capacity))
		return -1;
	s = calloc(first, item_size);
	if (!s) {
		fabnet_pool_fini(p);
		return -1;
	}
	p->owns_first = 1;
	add_segment(p, s, first);
	return 0;
}

void fabnet_pool_fini(struct fabnet_pool *p)
{
	free(p->free_stack);
	free(p->in_use);
	for (uint32_t i = 0; i < p->nseg; i++)
		if (i || p->owns_first)
			free(p->seg[i]);
	memset(p, 0, sizeof(*p));
}

/* Each new segment doubles what the pool holds, up to its capacity. */
static int grow(struct fabnet_pool *p)
{
	uint32_t n = p->allocated;
	uint8_t *s;

	if (p->allocated >= p->capacity || p->nseg >= FABNET_POOL_MAX_SEGS)
		return -1;
	if (n > p->capacity - p->allocated || p->nseg == FABNET_POOL_MAX_SEGS - 1)
		n = p->capacity - p->allocated;
	s = calloc(n, p->item_size);
	if (!s)
		return -1;
	add_segment(p, s, n);
	return 0;
}

void *fabnet_pool_get(struct fabnet_pool *p)
{
	uint32_t i;

	if (p->nfree == 0 && grow(p))
		return NULL;
	i = p->free_stack[--p->nfree];
	p->in_use[i] = 1;
	return fabnet_pool_at(p, i);
}

int64_t fabnet_pool_index(const struct fabnet_pool *p, const void *item)
{
	const uint8_t *b = item;

	for (uint32_t k = 0; k < p->nseg; k++) {
		uint32_t n = (k + 1 < p->nseg ? p->seg_start[k + 1] : p->allocated) - p->seg_start[k];
		size_t off, i;
		if (b < p->seg[k] || (size_t)(b - p->seg[k]) >= (size_t)n * p->item_size)
			continue;
		off = (size_t)(b - p->seg[k]);
		i = off / p->item_size; /* one division: put runs for every request */
		if (i * p->item_size != off)
			return -1;
		return (int64_t)(p->seg_start[k] + i);
	}
	return -1;
}

void *fabnet_pool_at(const struct fabnet_pool *p, uint32_t index)
{
	if (index >= p->allocated)
		return NULL;
	for (uint32_t k = p->nseg; k-- > 0;)
		if (index >= p->seg_start[k])
			return p->seg[k] + (size_t)(index - p->seg_start[k]) * p->item_size;
	return NULL;
}

int fabnet_pool_put(struct fabnet_pool *p, void *item)
{
	int64_t i = fabnet_pool_index(p, item);

	if (i < 0 || !p->in_use[i])
		return -1;
	p->in_use[i] = 0;
	p->free_stack[p->nfree++] = (uint32_t)i;
	return 0;
}
