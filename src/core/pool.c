#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "core/pool.h"

int fabnet_pool_init(struct fabnet_pool *p, size_t item_size, uint32_t capacity, void *items)
{
	memset(p, 0, sizeof(*p));
	if (item_size == 0 || capacity == 0)
		return -1;
	p->item_size = item_size;
	p->capacity = capacity;
	p->free_stack = malloc(sizeof(uint32_t) * capacity);
	p->in_use = calloc(capacity, 1);
	if (items) {
		p->items = items;
	} else {
		p->items = calloc(capacity, item_size);
		p->owns_items = 1;
	}
	if (!p->free_stack || !p->in_use || !p->items) {
		fabnet_pool_fini(p);
		return -1;
	}
	/* Lowest index on top, so a fresh pool hands items out in order. */
	for (uint32_t i = 0; i < capacity; i++)
		p->free_stack[i] = capacity - 1 - i;
	p->nfree = capacity;
	return 0;
}

void fabnet_pool_fini(struct fabnet_pool *p)
{
	free(p->free_stack);
	free(p->in_use);
	if (p->owns_items)
		free(p->items);
	memset(p, 0, sizeof(*p));
}

void *fabnet_pool_get(struct fabnet_pool *p)
{
	uint32_t i;

	if (p->nfree == 0)
		return NULL;
	i = p->free_stack[--p->nfree];
	p->in_use[i] = 1;
	return p->items + (size_t)i * p->item_size;
}

int64_t fabnet_pool_index(const struct fabnet_pool *p, const void *item)
{
	const uint8_t *b = item;
	size_t off;

	if (!p->items || b < p->items)
		return -1;
	off = (size_t)(b - p->items);
	if (off % p->item_size || off / p->item_size >= p->capacity)
		return -1;
	return (int64_t)(off / p->item_size);
}

void *fabnet_pool_at(const struct fabnet_pool *p, uint32_t index)
{
	return index < p->capacity ? p->items + (size_t)index * p->item_size : NULL;
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
