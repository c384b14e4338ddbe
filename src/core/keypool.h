/*
 * Memory-region keys we choose ourselves, for providers without
 * FI_MR_PROV_KEY (we pass requested_key to fi_mr_regattr).
 *
 * Why keys are quarantined: a key is a capability. Once we send it to a peer,
 * the peer may keep using it after we deregistered the region: a write
 * already in flight, a retransmission, a peer that has not yet processed our
 * close, a buggy or stale peer. If the same key were handed at once to a new
 * registration, such a write would not fail with a protection error but
 * silently land in somebody else's new buffer. So a key is never reused while
 * it is in use, never reused at all while fresh keys remain (the common case
 * with 4- or 8-byte keys), and once the key space is exhausted, a freed key
 * is reused only after a quarantine: at least quarantine_count other keys
 * were freed after it, and at least quarantine_ns nanoseconds passed since it
 * was freed, long enough for any straggler to have landed or failed.
 *
 * Keys lie in [1, 2^(8*key_size) - 1] (0 is never a key). A cursor walks the
 * key space in order; the first lap hands out fresh keys (a counter). After
 * it wraps, it skips keys that are in use or in quarantine, so the keys it
 * hands out are the ones freed longest ago in key order. Only keys in use and
 * in quarantine are stored (a hash table plus a FIFO of freed keys): memory
 * is O(in use + quarantined), not O(key space); alloc gives back what is no
 * longer needed.
 *
 * Time is passed in by the caller (any monotonic nanosecond clock): there
 * are no clock calls here, so tests are deterministic. If now_ns goes
 * backwards, quarantines last longer, never shorter.
 *
 * Complexity: free O(1) expected and never allocates; alloc O(1) amortised
 * expected on the first lap, afterwards at most in_use + quarantined keys
 * skipped per call.
 *
 * Not thread-safe: the caller serialises calls on one pool. No global state.
 */
#ifndef FABNET_CORE_KEYPOOL_H
#define FABNET_CORE_KEYPOOL_H

#include <stddef.h>
#include <stdint.h>

enum {
	FABNET_KEYPOOL_EXHAUSTED = -1, /* every key is in use or in quarantine */
	FABNET_KEYPOOL_NOMEM = -2,     /* could not grow the bookkeeping */
};

struct fabnet_keypool_slot {
	uint64_t key; /* 0: empty */
	int state;    /* in use or quarantined */
};

struct fabnet_keypool_freed {
	uint64_t key;
	uint64_t free_ns;
	uint64_t free_seq; /* how many frees came before this one */
};

struct fabnet_keypool {
	uint64_t max_key;          /* 2^(8*key_size) - 1 */
	uint64_t quarantine_count; /* other frees needed after a key's free */
	uint64_t quarantine_ns;    /* time needed after a key's free */
	uint64_t cursor;           /* next key to consider, 1..max_key */
	uint64_t laps;             /* times the cursor wrapped: 0 while fresh keys last */
	uint64_t frees;            /* frees ever */
	size_t in_use, quarantined;
	/* Keys in use or in quarantine: open addressing, linear probing. */
	struct fabnet_keypool_slot *slots;
	size_t slots_cap; /* a power of two */
	/* Quarantined keys in the order they were freed: a ring. */
	struct fabnet_keypool_freed *fifo;
	size_t fifo_cap, fifo_head; /* fifo_cap: a power of two, >= in_use + quarantined */
};

/* key_size: bytes of key, 1..8 (the provider's mr_key_size). Returns 0, or -1
 * for a bad key_size or no memory. */
int fabnet_keypool_init(struct fabnet_keypool *kp, unsigned key_size, uint64_t quarantine_count,
			uint64_t quarantine_ns);
void fabnet_keypool_fini(struct fabnet_keypool *kp);

/* Hands out a key that is neither in use nor in quarantine into *key.
 * Returns 0, FABNET_KEYPOOL_EXHAUSTED (-1) or FABNET_KEYPOOL_NOMEM (-2). */
int fabnet_keypool_alloc(struct fabnet_keypool *kp, uint64_t now_ns, uint64_t *key);

/* Puts a key in quarantine. Returns 0, or -1 when key is not allocated: a
 * double free, or a key this pool never handed out (0 and out-of-range keys
 * included). Never allocates memory. */
int fabnet_keypool_free(struct fabnet_keypool *kp, uint64_t key, uint64_t now_ns);

static inline size_t fabnet_keypool_in_use(const struct fabnet_keypool *kp)
{
	return kp->in_use;
}

static inline size_t fabnet_keypool_quarantined(const struct fabnet_keypool *kp)
{
	return kp->quarantined;
}

#endif
