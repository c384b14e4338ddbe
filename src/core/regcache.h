/*
 * A registration cache, one per libfabric domain: it remembers which
 * page-aligned ranges are registered with the NIC, so that registering any
 * sub-range of a registered buffer is a cache hit (what NCCL's
 * regIsGlobal = 1 promises).
 *
 * An entry covers [start, end), both multiples of the cache's page size,
 * carries a type tag (NCCL_PTR_HOST, NCCL_PTR_CUDA, ...: a lookup only hits
 * entries of its own type), an opaque payload (the caller's memory region)
 * and a reference count. Entries may overlap, even be identical.
 *
 * Use:
 *	e = fabnet_regcache_lookup(rc, addr, len, type);
 *	if (e)
 *		fabnet_regcache_ref(e);
 *	else if (fabnet_regcache_align(addr, len, rc->page_size, &s, &end) == 0)
 *		register [s, end) with the NIC, then
 *		fabnet_regcache_insert(rc, s, end, type, mr, &e);   (refs = 1)
 *	...
 *	if (fabnet_regcache_unref(rc, e, &payload) == 0)
 *		deregister payload;
 *
 * Complexity (n: entries of the looked-up type, T: distinct types ever
 * inserted, 2 or 3 in practice): each type has its own AVL tree keyed by
 * start, every node augmented with the largest end in its subtree, so a
 * search skips any subtree whose ends all fall short. lookup is
 * O(T + log n), insert and the final unref O(T + log n), remove_range
 * O(T + (k + 1) log n) for k entries removed, ref O(1).
 *
 * Not thread-safe: the caller serialises calls on one cache. No global state.
 */
#ifndef FABNET_CORE_REGCACHE_H
#define FABNET_CORE_REGCACHE_H

#include <stddef.h>
#include <stdint.h>

#define FABNET_REGCACHE_DEFAULT_PAGE 4096

struct fabnet_regcache_entry {
	/* Read-only for the caller. */
	uintptr_t start, end; /* page-aligned, start < end */
	int type;
	void *payload;
	size_t refs;
	int indexed; /* 1 while lookups can find it; 0 once remove_range took it out */
	/* Private. In the tree: children. Out of it: links of the detached list. */
	struct fabnet_regcache_entry *left, *right;
	uintptr_t max_end; /* largest end in this subtree */
	uint64_t seq;      /* insertion number: orders identical ranges */
	int height;
};

struct fabnet_regcache_tree {
	int type;
	size_t count;
	struct fabnet_regcache_entry *root;
};

struct fabnet_regcache {
	size_t page_size;
	size_t count;     /* entries lookups can find */
	size_t ndetached; /* entries removed by remove_range, still referenced */
	struct fabnet_regcache_tree *trees; /* one per type */
	size_t ntrees, trees_cap;
	struct fabnet_regcache_entry *detached; /* list through left (prev) / right (next) */
	uint64_t next_seq;
};

/* page_size: a power of two, or 0 for FABNET_REGCACHE_DEFAULT_PAGE.
 * Returns 0, or -1 when page_size is not a power of two. */
int fabnet_regcache_init(struct fabnet_regcache *rc, size_t page_size);

/* Frees every entry, those remove_range detached included, calling
 * release(payload, arg) for each first (release may be NULL). Whatever
 * references callers still hold become invalid. */
void fabnet_regcache_fini(struct fabnet_regcache *rc, void (*release)(void *payload, void *arg),
			  void *arg);

/* The page-aligned range covering [addr, addr+len): *start rounded down,
 * *end rounded up. page: a power of two, or 0 for the default. Returns 0, or
 * -1 (outputs untouched) when len is 0 (no memory to register), page is not a
 * power of two, or the range wraps the address space: addr + len, or its
 * rounding up, would exceed UINTPTR_MAX. */
int fabnet_regcache_align(uintptr_t addr, size_t len, size_t page, uintptr_t *start,
			  uintptr_t *end);

/*
 * An entry of this type whose range contains [addr, addr+len), or NULL. Does
 * not take a reference. When several contain it, the one with the greatest
 * start, and among those the smallest end, is returned: the smallest
 * containing entry whenever the containing entries nest (a buffer registered
 * inside a registered pool), which is the usual case. (Finding the smallest
 * among crossing entries would need a two-dimensional index.) len 0 names no
 * memory and a range that wraps the address space none either: NULL.
 */
struct fabnet_regcache_entry *fabnet_regcache_lookup(const struct fabnet_regcache *rc,
						     uintptr_t addr, size_t len, int type);

/*
 * Adds an entry for [start, end) with one reference (the caller's) and
 * returns it in *out. start and end must be multiples of the page size with
 * start < end (fabnet_regcache_align makes them). Does not look for an
 * existing entry: the caller looks up first. Returns 0, -EINVAL for a bad
 * range or -ENOMEM.
 */
int fabnet_regcache_insert(struct fabnet_regcache *rc, uintptr_t start, uintptr_t end, int type,
			   void *payload, struct fabnet_regcache_entry **out);

/* Takes one more reference on a live entry; returns the new count. */
size_t fabnet_regcache_ref(struct fabnet_regcache_entry *e);

/*
 * Drops one reference and returns how many remain. At 0 the entry leaves the
 * cache and is freed: *payload (when payload is not NULL) receives its
 * payload, which the caller then deregisters; otherwise *payload is NULL.
 */
size_t fabnet_regcache_unref(struct fabnet_regcache *rc, struct fabnet_regcache_entry *e,
			     void **payload);

/*
 * Invalidation, for memory the application frees: every entry, of any type,
 * overlapping [addr, addr+len) is taken out of the cache (lookups no longer
 * find it, count() no longer counts it), then callback(e, arg) is called for
 * it (callback may be NULL). The entry itself stays alive while references
 * are held: the last unref frees it and hands its payload back as usual. The
 * callback may unref the entry it is given (and must not touch it after its
 * last unref); it must not insert. Returns how many entries were removed, or
 * -1 (nothing removed) when the range wraps the address space. len 0: 0.
 */
long fabnet_regcache_remove_range(struct fabnet_regcache *rc, uintptr_t addr, size_t len,
				  void (*callback)(struct fabnet_regcache_entry *e, void *arg),
				  void *arg);

/* Entries lookups can find (remove_range's detached entries not included). */
static inline size_t fabnet_regcache_count(const struct fabnet_regcache *rc)
{
	return rc->count;
}

/* Checks the index: key order, AVL balance, heights, subtree ends, counts.
 * O(n); for tests. Returns 0, or -1 at the first violation. */
int fabnet_regcache_check(const struct fabnet_regcache *rc);

#endif
