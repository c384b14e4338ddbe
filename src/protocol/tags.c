/*
 * Per-tag counts of a comm. NCCL pairs the k-th send with tag T on a comm
 * with the k-th receive entry with tag T, however the receiver groups its
 * buffers and however far apart its senders run (shared comms carry one tag
 * per sender): the receiver numbers its entries and the sender its sends,
 * per tag, and an early message or a CTS entry names (T, k).
 *
 * NCCL uses a few tags per comm (the sending ranks); other users of the
 * plugin API may use a new tag for every message. The counts live in an
 * open-addressing hash table that doubles at half load: 16 bytes per
 * distinct tag a comm has seen, for the comm's life (a count cannot be
 * forgotten by one side alone).
 */
#include <config.h>

#include <stdlib.h>

#include "protocol/internal.h"

static uint32_t slot_of(int32_t tag, uint32_t cap)
{
	uint32_t h = (uint32_t)tag * 0x9e3779b1u;

	return (h ^ h >> 15) & (cap - 1);
}

struct fabnet_tag_count *fabnet_tag_find(struct fabnet_tags *t, int32_t tag)
{
	struct fabnet_tag_count *c;

	if (!t->cap)
		return NULL;
	c = &t->t[t->last];
	if (c->used && c->tag == tag)
		return c;
	for (uint32_t i = slot_of(tag, t->cap);; i = (i + 1) & (t->cap - 1)) {
		c = &t->t[i];
		if (!c->used)
			return NULL;
		if (c->tag == tag) {
			t->last = i;
			return c;
		}
	}
}

static int grow(struct fabnet_tags *t)
{
	uint32_t cap = t->cap ? t->cap * 2 : 8;
	struct fabnet_tag_count *old = t->t, *m = calloc(cap, sizeof(*m));

	if (!m || cap > (1u << 30))
		return free(m), -1;
	for (uint32_t i = 0; i < t->cap; i++) {
		uint32_t k;
		if (!old[i].used)
			continue;
		for (k = slot_of(old[i].tag, cap); m[k].used; k = (k + 1) & (cap - 1))
			;
		m[k] = old[i];
	}
	free(old);
	t->t = m;
	t->cap = cap;
	t->last = 0;
	return 0;
}

struct fabnet_tag_count *fabnet_tag_get(struct fabnet_tags *t, int32_t tag)
{
	struct fabnet_tag_count *c = fabnet_tag_find(t, tag);
	uint32_t i;

	if (c)
		return c;
	if (2 * (t->n + 1) > t->cap && grow(t))
		return NULL;
	for (i = slot_of(tag, t->cap); t->t[i].used; i = (i + 1) & (t->cap - 1))
		;
	c = &t->t[i];
	c->used = 1;
	c->tag = tag;
	c->n = 0;
	c->final = 0;
	t->n++;
	t->last = i;
	return c;
}

uint32_t fabnet_tag_count_of(struct fabnet_tags *t, int32_t tag)
{
	struct fabnet_tag_count *c = fabnet_tag_find(t, tag);

	return c ? c->n : 0;
}

void fabnet_tags_free(struct fabnet_tags *t)
{
	free(t->t);
	t->t = NULL;
	t->n = t->cap = t->last = 0;
}
