#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "core/keypool.h"

#define MIN_CAP 16 /* smallest table and ring */

enum { KEY_IN_USE = 1, KEY_QUARANTINED = 2 };

/* ---- the table of keys in use or in quarantine ------------------------------ */

static size_t slot_of(uint64_t key, size_t cap)
{
	/* splitmix64's finaliser: consecutive keys spread over the table. */
	key = (key ^ (key >> 30)) * 0xbf58476d1ce4e5b9ull;
	key = (key ^ (key >> 27)) * 0x94d049bb133111ebull;
	return (size_t)(key ^ (key >> 31)) & (cap - 1);
}

static size_t stored(const struct fabnet_keypool *kp)
{
	return kp->in_use + kp->quarantined;
}

static struct fabnet_keypool_slot *table_find(const struct fabnet_keypool *kp, uint64_t key)
{
	size_t mask = kp->slots_cap - 1;

	for (size_t i = slot_of(key, kp->slots_cap);; i = (i + 1) & mask) {
		if (kp->slots[i].key == key)
			return &kp->slots[i];
		if (kp->slots[i].key == 0)
			return NULL;
	}
}

/* key must be absent and a slot free (the load stays at or below 1/2). */
static void table_put(struct fabnet_keypool_slot *slots, size_t cap, uint64_t key, int state)
{
	size_t i = slot_of(key, cap);

	while (slots[i].key != 0)
		i = (i + 1) & (cap - 1);
	slots[i].key = key;
	slots[i].state = state;
}

/* Deletes by shifting later members of the probe run back: no tombstones, so
 * lookups never slow down with churn. */
static void table_del(struct fabnet_keypool *kp, struct fabnet_keypool_slot *s)
{
	size_t mask = kp->slots_cap - 1;
	size_t hole = (size_t)(s - kp->slots);

	for (size_t i = (hole + 1) & mask; kp->slots[i].key != 0; i = (i + 1) & mask) {
		size_t home = slot_of(kp->slots[i].key, kp->slots_cap);

		/* Move it into the hole unless its home lies cyclically in (hole, i]. */
		if (((i - home) & mask) >= ((i - hole) & mask)) {
			kp->slots[hole] = kp->slots[i];
			hole = i;
		}
	}
	kp->slots[hole].key = 0;
	kp->slots[hole].state = 0;
}

static int table_resize(struct fabnet_keypool *kp, size_t cap)
{
	struct fabnet_keypool_slot *slots = calloc(cap, sizeof(*slots));

	if (!slots)
		return -1;
	for (size_t i = 0; i < kp->slots_cap; i++)
		if (kp->slots[i].key)
			table_put(slots, cap, kp->slots[i].key, kp->slots[i].state);
	free(kp->slots);
	kp->slots = slots;
	kp->slots_cap = cap;
	return 0;
}

/* ---- the ring of quarantined keys, oldest free first ------------------------ */

static struct fabnet_keypool_freed *fifo_at(const struct fabnet_keypool *kp, size_t i)
{
	return &kp->fifo[(kp->fifo_head + i) & (kp->fifo_cap - 1)];
}

static int fifo_resize(struct fabnet_keypool *kp, size_t cap)
{
	struct fabnet_keypool_freed *fifo = malloc(cap * sizeof(*fifo));

	if (!fifo)
		return -1;
	for (size_t i = 0; i < kp->quarantined; i++)
		fifo[i] = *fifo_at(kp, i);
	free(kp->fifo);
	kp->fifo = fifo;
	kp->fifo_cap = cap;
	kp->fifo_head = 0;
	return 0;
}

/* ---- the pool ------------------------------------------------------------------ */

int fabnet_keypool_init(struct fabnet_keypool *kp, unsigned key_size, uint64_t quarantine_count,
			uint64_t quarantine_ns)
{
	memset(kp, 0, sizeof(*kp));
	if (key_size < 1 || key_size > 8)
		return -1;
	kp->max_key = key_size == 8 ? UINT64_MAX : (1ull << (8 * key_size)) - 1;
	kp->quarantine_count = quarantine_count;
	kp->quarantine_ns = quarantine_ns;
	kp->cursor = 1;
	kp->slots = calloc(MIN_CAP, sizeof(*kp->slots));
	kp->fifo = malloc(MIN_CAP * sizeof(*kp->fifo));
	if (!kp->slots || !kp->fifo) {
		fabnet_keypool_fini(kp);
		return -1;
	}
	kp->slots_cap = MIN_CAP;
	kp->fifo_cap = MIN_CAP;
	return 0;
}

void fabnet_keypool_fini(struct fabnet_keypool *kp)
{
	free(kp->slots);
	free(kp->fifo);
	memset(kp, 0, sizeof(*kp));
}

/* Ends the quarantine of the oldest freed keys that served it. Both
 * conditions only get easier along the ring (later frees have higher
 * sequence numbers and, with a monotonic clock, later times), so stopping at
 * the first key still in quarantine misses none. */
static void expire(struct fabnet_keypool *kp, uint64_t now_ns)
{
	while (kp->quarantined > 0) {
		struct fabnet_keypool_freed *f = fifo_at(kp, 0);
		uint64_t frees_after = kp->frees - f->free_seq - 1;

		if (frees_after < kp->quarantine_count || now_ns < f->free_ns ||
		    now_ns - f->free_ns < kp->quarantine_ns)
			break;
		table_del(kp, table_find(kp, f->key));
		kp->fifo_head = (kp->fifo_head + 1) & (kp->fifo_cap - 1);
		kp->quarantined--;
	}
}

int fabnet_keypool_alloc(struct fabnet_keypool *kp, uint64_t now_ns, uint64_t *key)
{
	uint64_t k;

	expire(kp, now_ns);
	/* Give memory back once the keys it held are gone (failure is harmless). */
	while (kp->slots_cap > MIN_CAP && stored(kp) * 8 < kp->slots_cap)
		if (table_resize(kp, kp->slots_cap / 2))
			break;
	while (kp->fifo_cap > MIN_CAP && stored(kp) * 4 < kp->fifo_cap)
		if (fifo_resize(kp, kp->fifo_cap / 2))
			break;

	if ((uint64_t)stored(kp) >= kp->max_key)
		return FABNET_KEYPOOL_EXHAUSTED;
	/* Room for the new key in the table (load <= 1/2), and room in the ring
	 * for every key in use to be freed, so free never allocates. */
	if ((stored(kp) + 1) * 2 > kp->slots_cap && table_resize(kp, kp->slots_cap * 2))
		return FABNET_KEYPOOL_NOMEM;
	if (stored(kp) + 1 > kp->fifo_cap && fifo_resize(kp, kp->fifo_cap * 2))
		return FABNET_KEYPOOL_NOMEM;

	/* Some key is free (checked above), so this ends within stored() + 1 steps. */
	do {
		k = kp->cursor;
		if (kp->cursor == kp->max_key) {
			kp->cursor = 1;
			kp->laps++;
		} else {
			kp->cursor++;
		}
	} while (table_find(kp, k));
	table_put(kp->slots, kp->slots_cap, k, KEY_IN_USE);
	kp->in_use++;
	*key = k;
	return 0;
}

int fabnet_keypool_free(struct fabnet_keypool *kp, uint64_t key, uint64_t now_ns)
{
	struct fabnet_keypool_slot *s;
	struct fabnet_keypool_freed *f;

	if (key == 0 || key > kp->max_key)
		return -1;
	s = table_find(kp, key);
	if (!s || s->state != KEY_IN_USE)
		return -1;
	s->state = KEY_QUARANTINED;
	f = fifo_at(kp, kp->quarantined); /* fifo_cap >= in_use + quarantined */
	f->key = key;
	f->free_ns = now_ns;
	f->free_seq = kp->frees++;
	kp->in_use--;
	kp->quarantined++;
	expire(kp, now_ns);
	return 0;
}
