/*
 * The registration cache (src/core/regcache.h): a lookup hits an entry of its
 * type that contains the whole range, preferring the innermost; entries live
 * while referenced; remove_range takes every overlapping entry out of the
 * cache. Ranges are page-aligned by fabnet_regcache_align.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/regcache.h"
#include "unit.h"

#define PG 4096u
#define HOST 1 /* type tags, as NCCL_PTR_HOST and NCCL_PTR_CUDA */
#define CUDA 2

static void *payload(uintptr_t id)
{
	return (void *)id;
}

/* Inserts [start, end) of type with payload id; fails the test on error. */
static struct fabnet_regcache_entry *add(struct fabnet_regcache *rc, uintptr_t start,
					 uintptr_t end, int type, uintptr_t id)
{
	struct fabnet_regcache_entry *e = NULL;

	CU_ASSERT_EQUAL_FATAL(fabnet_regcache_insert(rc, start, end, type, payload(id), &e), 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(e);
	return e;
}

static void new_cache(struct fabnet_regcache *rc)
{
	CU_ASSERT_EQUAL_FATAL(fabnet_regcache_init(rc, PG), 0);
}

/* ---- alignment ---------------------------------------------------------- */

static void align_rounds_out_to_whole_pages(void)
{
	uintptr_t s = 0, e = 0;

	CU_ASSERT_EQUAL(fabnet_regcache_align(0x10010, 100, PG, &s, &e), 0);
	CU_ASSERT_EQUAL(s, 0x10000);
	CU_ASSERT_EQUAL(e, 0x11000);
	/* One byte past a page boundary takes the next page. */
	CU_ASSERT_EQUAL(fabnet_regcache_align(0x10fff, 2, PG, &s, &e), 0);
	CU_ASSERT_EQUAL(s, 0x10000);
	CU_ASSERT_EQUAL(e, 0x12000);
}

static void align_of_an_aligned_range_is_the_range_itself(void)
{
	uintptr_t s = 0, e = 0;

	CU_ASSERT_EQUAL(fabnet_regcache_align(0x20000, 3 * PG, PG, &s, &e), 0);
	CU_ASSERT_EQUAL(s, 0x20000);
	CU_ASSERT_EQUAL(e, 0x23000);
}

static void align_uses_the_given_page_size(void)
{
	uintptr_t s = 0, e = 0;

	CU_ASSERT_EQUAL(fabnet_regcache_align(0x212345, 1, 1u << 21, &s, &e), 0);
	CU_ASSERT_EQUAL(s, 0x200000);
	CU_ASSERT_EQUAL(e, 0x400000);
	/* 0 means the default, 4096. */
	CU_ASSERT_EQUAL(fabnet_regcache_align(0x212345, 1, 0, &s, &e), 0);
	CU_ASSERT_EQUAL(s, 0x212000);
	CU_ASSERT_EQUAL(e, 0x213000);
}

static void align_refuses_len_0(void)
{
	uintptr_t s = 7, e = 7;

	CU_ASSERT_EQUAL(fabnet_regcache_align(0x10000, 0, PG, &s, &e), -1);
	CU_ASSERT_EQUAL(s, 7); /* outputs untouched */
	CU_ASSERT_EQUAL(e, 7);
}

static void align_refuses_ranges_that_wrap_the_address_space(void)
{
	uintptr_t s = 7, e = 7;

	CU_ASSERT_EQUAL(fabnet_regcache_align(UINTPTR_MAX - 10, 20, PG, &s, &e), -1);
	CU_ASSERT_EQUAL(fabnet_regcache_align(1, SIZE_MAX, PG, &s, &e), -1);
	/* Inside the address space, but its page-aligned end would be 2^N. */
	CU_ASSERT_EQUAL(fabnet_regcache_align(UINTPTR_MAX - 100, 1, PG, &s, &e), -1);
	CU_ASSERT_EQUAL(s, 7);
	/* The last page that still has a representable end is fine. */
	CU_ASSERT_EQUAL(fabnet_regcache_align(UINTPTR_MAX - 2 * PG + 1, 1, PG, &s, &e), 0);
	CU_ASSERT_EQUAL(e, UINTPTR_MAX - PG + 1);
}

static void align_refuses_a_page_size_that_is_not_a_power_of_two(void)
{
	uintptr_t s, e;

	CU_ASSERT_EQUAL(fabnet_regcache_align(0x10000, 10, 3000, &s, &e), -1);
}

static void init_refuses_a_page_size_that_is_not_a_power_of_two(void)
{
	struct fabnet_regcache rc;

	CU_ASSERT_EQUAL(fabnet_regcache_init(&rc, 6000), -1);
	CU_ASSERT_EQUAL(fabnet_regcache_init(&rc, 0), 0); /* the default */
	CU_ASSERT_EQUAL(rc.page_size, FABNET_REGCACHE_DEFAULT_PAGE);
	fabnet_regcache_fini(&rc, NULL, NULL);
}

/* ---- lookups -------------------------------------------------------------- */

static void an_empty_cache_misses(void)
{
	struct fabnet_regcache rc;

	new_cache(&rc);
	CU_ASSERT_EQUAL(fabnet_regcache_count(&rc), 0);
	CU_ASSERT_PTR_NULL(fabnet_regcache_lookup(&rc, 0x10000, 1, HOST));
	fabnet_regcache_fini(&rc, NULL, NULL);
}

static void the_exact_range_hits(void)
{
	struct fabnet_regcache rc;
	struct fabnet_regcache_entry *e;

	new_cache(&rc);
	e = add(&rc, 0x10000, 0x14000, HOST, 1);
	CU_ASSERT_EQUAL(fabnet_regcache_count(&rc), 1);
	CU_ASSERT_EQUAL(e->start, 0x10000);
	CU_ASSERT_EQUAL(e->end, 0x14000);
	CU_ASSERT_EQUAL(e->type, HOST);
	CU_ASSERT_PTR_EQUAL(e->payload, payload(1));
	CU_ASSERT_EQUAL(e->refs, 1);
	CU_ASSERT_PTR_EQUAL(fabnet_regcache_lookup(&rc, 0x10000, 0x4000, HOST), e);
	fabnet_regcache_fini(&rc, NULL, NULL);
}

static void every_sub_range_hits(void)
{
	struct fabnet_regcache rc;
	struct fabnet_regcache_entry *e;

	new_cache(&rc);
	e = add(&rc, 0x10000, 0x14000, HOST, 1);
	CU_ASSERT_PTR_EQUAL(fabnet_regcache_lookup(&rc, 0x10000, 1, HOST), e);  /* first byte */
	CU_ASSERT_PTR_EQUAL(fabnet_regcache_lookup(&rc, 0x13fff, 1, HOST), e);  /* last byte */
	CU_ASSERT_PTR_EQUAL(fabnet_regcache_lookup(&rc, 0x11234, 0x100, HOST), e); /* unaligned */
	CU_ASSERT_PTR_EQUAL(fabnet_regcache_lookup(&rc, 0x10001, 0x3fff, HOST), e); /* to the end */
	fabnet_regcache_fini(&rc, NULL, NULL);
}

static void a_partial_overlap_misses(void)
{
	struct fabnet_regcache rc;

	new_cache(&rc);
	add(&rc, 0x10000, 0x14000, HOST, 1);
	CU_ASSERT_PTR_NULL(fabnet_regcache_lookup(&rc, 0xffff, 2, HOST));     /* starts before */
	CU_ASSERT_PTR_NULL(fabnet_regcache_lookup(&rc, 0x13fff, 2, HOST));    /* ends after */
	CU_ASSERT_PTR_NULL(fabnet_regcache_lookup(&rc, 0xf000, 0x6000, HOST)); /* covers it */
	CU_ASSERT_PTR_NULL(fabnet_regcache_lookup(&rc, 0x10000, 0x4001, HOST));
	fabnet_regcache_fini(&rc, NULL, NULL);
}

static void a_neighbouring_range_misses(void)
{
	struct fabnet_regcache rc;

	new_cache(&rc);
	add(&rc, 0x10000, 0x14000, HOST, 1);
	CU_ASSERT_PTR_NULL(fabnet_regcache_lookup(&rc, 0xf000, 0x1000, HOST)); /* page before */
	CU_ASSERT_PTR_NULL(fabnet_regcache_lookup(&rc, 0xffff, 1, HOST));
	CU_ASSERT_PTR_NULL(fabnet_regcache_lookup(&rc, 0x14000, 1, HOST));     /* page after */
	CU_ASSERT_PTR_NULL(fabnet_regcache_lookup(&rc, 0x14000, 0x1000, HOST));
	fabnet_regcache_fini(&rc, NULL, NULL);
}

static void adjacent_entries_do_not_combine(void)
{
	struct fabnet_regcache rc;

	new_cache(&rc);
	add(&rc, 0x10000, 0x11000, HOST, 1);
	add(&rc, 0x11000, 0x12000, HOST, 2);
	/* Each page hits, a range across both does not: no single entry holds it. */
	CU_ASSERT_PTR_NOT_NULL(fabnet_regcache_lookup(&rc, 0x10800, 0x800, HOST));
	CU_ASSERT_PTR_NOT_NULL(fabnet_regcache_lookup(&rc, 0x11000, 0x800, HOST));
	CU_ASSERT_PTR_NULL(fabnet_regcache_lookup(&rc, 0x10800, 0x1000, HOST));
	fabnet_regcache_fini(&rc, NULL, NULL);
}

static void a_lookup_of_another_type_misses(void)
{
	struct fabnet_regcache rc;
	struct fabnet_regcache_entry *host, *cuda;

	new_cache(&rc);
	host = add(&rc, 0x10000, 0x14000, HOST, 1);
	CU_ASSERT_PTR_NULL(fabnet_regcache_lookup(&rc, 0x10000, 0x100, CUDA));
	/* The same range of another type is a separate entry. */
	cuda = add(&rc, 0x10000, 0x14000, CUDA, 2);
	CU_ASSERT_PTR_EQUAL(fabnet_regcache_lookup(&rc, 0x10000, 0x100, CUDA), cuda);
	CU_ASSERT_PTR_EQUAL(fabnet_regcache_lookup(&rc, 0x10000, 0x100, HOST), host);
	CU_ASSERT_EQUAL(fabnet_regcache_count(&rc), 2);
	fabnet_regcache_fini(&rc, NULL, NULL);
}

static void the_smallest_containing_entry_is_preferred(void)
{
	struct fabnet_regcache rc;
	struct fabnet_regcache_entry *inner, *buf, *pool;

	/* Nested entries, inserted innermost first so insertion order cannot
	 * explain the choice: a pool, a buffer in it, a page in the buffer. */
	new_cache(&rc);
	inner = add(&rc, 0x50000, 0x51000, HOST, 1);
	buf = add(&rc, 0x40000, 0x60000, HOST, 2);
	pool = add(&rc, 0x00000, 0x100000, HOST, 3);
	CU_ASSERT_PTR_EQUAL(fabnet_regcache_lookup(&rc, 0x50100, 0x10, HOST), inner);
	CU_ASSERT_PTR_EQUAL(fabnet_regcache_lookup(&rc, 0x4f000, 0x1001, HOST), buf);
	CU_ASSERT_PTR_EQUAL(fabnet_regcache_lookup(&rc, 0x41000, 0x10, HOST), buf);
	CU_ASSERT_PTR_EQUAL(fabnet_regcache_lookup(&rc, 0x3f000, 0x2000, HOST), pool);
	CU_ASSERT_PTR_EQUAL(fabnet_regcache_lookup(&rc, 0x70000, 0x10, HOST), pool);
	fabnet_regcache_fini(&rc, NULL, NULL);
}

static void among_entries_starting_together_the_shortest_wins(void)
{
	struct fabnet_regcache rc;
	struct fabnet_regcache_entry *small;

	new_cache(&rc);
	small = add(&rc, 0x10000, 0x12000, HOST, 1);
	add(&rc, 0x10000, 0x80000, HOST, 2);
	add(&rc, 0x10000, 0x20000, HOST, 3);
	CU_ASSERT_PTR_EQUAL(fabnet_regcache_lookup(&rc, 0x10000, 0x10, HOST), small);
	CU_ASSERT_PTR_EQUAL(fabnet_regcache_lookup(&rc, 0x11000, 0x1000, HOST), small);
	CU_ASSERT_EQUAL(fabnet_regcache_lookup(&rc, 0x11000, 0x1001, HOST)->end, 0x20000);
	fabnet_regcache_fini(&rc, NULL, NULL);
}

static void crossing_entries_prefer_the_one_starting_nearest(void)
{
	struct fabnet_regcache rc;
	struct fabnet_regcache_entry *late;

	/* The documented rule where entries cross rather than nest: the greatest
	 * start wins, even when it is not the shortest. */
	new_cache(&rc);
	add(&rc, 0x00000, 0x20000, HOST, 1);
	late = add(&rc, 0x10000, 0x100000, HOST, 2);
	CU_ASSERT_PTR_EQUAL(fabnet_regcache_lookup(&rc, 0x18000, 0x10, HOST), late);
	fabnet_regcache_fini(&rc, NULL, NULL);
}

static void a_lookup_of_len_0_misses(void)
{
	struct fabnet_regcache rc;

	new_cache(&rc);
	add(&rc, 0x10000, 0x14000, HOST, 1);
	CU_ASSERT_PTR_NULL(fabnet_regcache_lookup(&rc, 0x11000, 0, HOST));
	fabnet_regcache_fini(&rc, NULL, NULL);
}

static void a_lookup_that_wraps_the_address_space_misses(void)
{
	struct fabnet_regcache rc;
	uintptr_t top = UINTPTR_MAX - 2 * PG + 1; /* the highest page with an end */
	struct fabnet_regcache_entry *e;

	new_cache(&rc);
	e = add(&rc, top, top + PG, HOST, 1);
	CU_ASSERT_PTR_EQUAL(fabnet_regcache_lookup(&rc, top + PG - 1, 1, HOST), e);
	CU_ASSERT_PTR_NULL(fabnet_regcache_lookup(&rc, top + 10, SIZE_MAX, HOST));
	CU_ASSERT_PTR_NULL(fabnet_regcache_lookup(&rc, UINTPTR_MAX, 2, HOST));
	fabnet_regcache_fini(&rc, NULL, NULL);
}

/* ---- insertion and references ----------------------------------------- */

static void insert_refuses_empty_unaligned_or_reversed_ranges(void)
{
	struct fabnet_regcache rc;
	struct fabnet_regcache_entry *e = (void *)&rc;

	new_cache(&rc);
	CU_ASSERT_EQUAL(fabnet_regcache_insert(&rc, 0x10000, 0x10000, HOST, NULL, &e), -EINVAL);
	CU_ASSERT_PTR_NULL(e);
	CU_ASSERT_EQUAL(fabnet_regcache_insert(&rc, 0x10000, 0x0f000, HOST, NULL, &e), -EINVAL);
	CU_ASSERT_EQUAL(fabnet_regcache_insert(&rc, 0x10010, 0x11000, HOST, NULL, &e), -EINVAL);
	CU_ASSERT_EQUAL(fabnet_regcache_insert(&rc, 0x10000, 0x10800, HOST, NULL, &e), -EINVAL);
	CU_ASSERT_EQUAL(fabnet_regcache_count(&rc), 0);
	fabnet_regcache_fini(&rc, NULL, NULL);
}

static void identical_entries_coexist(void)
{
	struct fabnet_regcache rc;
	struct fabnet_regcache_entry *a, *b, *hit;
	void *p = NULL;

	new_cache(&rc);
	a = add(&rc, 0x10000, 0x12000, HOST, 1);
	b = add(&rc, 0x10000, 0x12000, HOST, 2);
	CU_ASSERT_PTR_NOT_EQUAL(a, b);
	CU_ASSERT_EQUAL(fabnet_regcache_count(&rc), 2);
	hit = fabnet_regcache_lookup(&rc, 0x10000, 1, HOST);
	CU_ASSERT(hit == a || hit == b);
	/* Removing one leaves the other findable. */
	CU_ASSERT_EQUAL(fabnet_regcache_unref(&rc, hit, &p), 0);
	CU_ASSERT_PTR_EQUAL(fabnet_regcache_lookup(&rc, 0x10000, 1, HOST), hit == a ? b : a);
	CU_ASSERT_EQUAL(fabnet_regcache_check(&rc), 0);
	fabnet_regcache_fini(&rc, NULL, NULL);
}

static void an_entry_lives_until_its_last_reference_is_dropped(void)
{
	struct fabnet_regcache rc;
	struct fabnet_regcache_entry *e;
	void *p = payload(99);

	new_cache(&rc);
	e = add(&rc, 0x10000, 0x14000, HOST, 7);
	CU_ASSERT_EQUAL(fabnet_regcache_ref(e), 2);
	CU_ASSERT_EQUAL(fabnet_regcache_ref(e), 3);
	CU_ASSERT_EQUAL(fabnet_regcache_unref(&rc, e, &p), 2);
	CU_ASSERT_PTR_NULL(p); /* not the last reference: nothing to deregister */
	CU_ASSERT_EQUAL(fabnet_regcache_unref(&rc, e, &p), 1);
	CU_ASSERT_PTR_EQUAL(fabnet_regcache_lookup(&rc, 0x10000, 1, HOST), e);
	CU_ASSERT_EQUAL(fabnet_regcache_unref(&rc, e, &p), 0);
	CU_ASSERT_PTR_EQUAL(p, payload(7)); /* the caller deregisters it now */
	CU_ASSERT_PTR_NULL(fabnet_regcache_lookup(&rc, 0x10000, 1, HOST));
	CU_ASSERT_EQUAL(fabnet_regcache_count(&rc), 0);
	fabnet_regcache_fini(&rc, NULL, NULL);
}

static void removing_the_inner_entry_exposes_the_outer_one(void)
{
	struct fabnet_regcache rc;
	struct fabnet_regcache_entry *inner, *outer;

	new_cache(&rc);
	outer = add(&rc, 0x00000, 0x100000, HOST, 1);
	inner = add(&rc, 0x50000, 0x51000, HOST, 2);
	CU_ASSERT_PTR_EQUAL(fabnet_regcache_lookup(&rc, 0x50000, 1, HOST), inner);
	CU_ASSERT_EQUAL(fabnet_regcache_unref(&rc, inner, NULL), 0);
	CU_ASSERT_PTR_EQUAL(fabnet_regcache_lookup(&rc, 0x50000, 1, HOST), outer);
	fabnet_regcache_fini(&rc, NULL, NULL);
}

/* ---- invalidation --------------------------------------------------------- */

struct removed {
	int n;
	uintptr_t ids[16];
	int unref; /* the callback drops one reference */
	struct fabnet_regcache *rc;
};

static void on_removed(struct fabnet_regcache_entry *e, void *arg)
{
	struct removed *r = arg;

	CU_ASSERT_FALSE(e->indexed);
	if (r->n < 16)
		r->ids[r->n] = (uintptr_t)e->payload;
	r->n++;
	if (r->unref)
		fabnet_regcache_unref(r->rc, e, NULL);
}

static int removed_has(const struct removed *r, uintptr_t id)
{
	for (int i = 0; i < r->n && i < 16; i++)
		if (r->ids[i] == id)
			return 1;
	return 0;
}

static void remove_range_takes_out_every_overlapping_entry_of_every_type(void)
{
	struct fabnet_regcache rc;
	struct removed r = {0};

	new_cache(&rc);
	add(&rc, 0x10000, 0x20000, HOST, 1); /* ends where the range starts: kept */
	add(&rc, 0x18000, 0x28000, HOST, 2); /* straddles the start */
	add(&rc, 0x21000, 0x22000, CUDA, 3); /* inside */
	add(&rc, 0x00000, 0x100000, CUDA, 4); /* contains the range */
	add(&rc, 0x2f000, 0x31000, HOST, 5); /* straddles the end */
	add(&rc, 0x30000, 0x40000, HOST, 6); /* starts where the range ends: kept */
	CU_ASSERT_EQUAL(fabnet_regcache_remove_range(&rc, 0x20000, 0x10000, on_removed, &r), 4);
	CU_ASSERT_EQUAL(r.n, 4);
	CU_ASSERT(removed_has(&r, 2) && removed_has(&r, 3) && removed_has(&r, 4) &&
		  removed_has(&r, 5));
	CU_ASSERT_EQUAL(fabnet_regcache_count(&rc), 2);
	CU_ASSERT_EQUAL(rc.ndetached, 4);
	CU_ASSERT_PTR_NULL(fabnet_regcache_lookup(&rc, 0x21000, 1, CUDA));
	CU_ASSERT_PTR_NULL(fabnet_regcache_lookup(&rc, 0x50000, 1, CUDA));
	CU_ASSERT_PTR_NOT_NULL(fabnet_regcache_lookup(&rc, 0x1f000, 1, HOST));
	CU_ASSERT_PTR_NOT_NULL(fabnet_regcache_lookup(&rc, 0x30000, 1, HOST));
	CU_ASSERT_EQUAL(fabnet_regcache_check(&rc), 0);
	fabnet_regcache_fini(&rc, NULL, NULL);
}

static void a_removed_entry_lives_until_its_last_reference(void)
{
	struct fabnet_regcache rc;
	struct fabnet_regcache_entry *e;
	void *p = NULL;

	new_cache(&rc);
	e = add(&rc, 0x10000, 0x20000, HOST, 8);
	fabnet_regcache_ref(e);
	CU_ASSERT_EQUAL(fabnet_regcache_remove_range(&rc, 0x10000, 1, NULL, NULL), 1);
	/* Out of the cache, but the two holders still use it. */
	CU_ASSERT_PTR_NULL(fabnet_regcache_lookup(&rc, 0x10000, 1, HOST));
	CU_ASSERT_EQUAL(e->refs, 2);
	CU_ASSERT_EQUAL(e->start, 0x10000);
	CU_ASSERT_EQUAL(fabnet_regcache_unref(&rc, e, &p), 1);
	CU_ASSERT_PTR_NULL(p);
	CU_ASSERT_EQUAL(fabnet_regcache_unref(&rc, e, &p), 0);
	CU_ASSERT_PTR_EQUAL(p, payload(8));
	CU_ASSERT_EQUAL(rc.ndetached, 0);
	CU_ASSERT_EQUAL(fabnet_regcache_check(&rc), 0);
	fabnet_regcache_fini(&rc, NULL, NULL);
}

static void the_callback_may_drop_the_last_reference(void)
{
	struct fabnet_regcache rc;
	struct removed r = {0};

	new_cache(&rc);
	r.unref = 1;
	r.rc = &rc;
	for (uintptr_t i = 0; i < 10; i++)
		add(&rc, 0x10000 + i * PG, 0x10000 + (i + 1) * PG, HOST, i + 1);
	CU_ASSERT_EQUAL(fabnet_regcache_remove_range(&rc, 0x12000, 3 * PG, on_removed, &r), 3);
	CU_ASSERT_EQUAL(r.n, 3);
	CU_ASSERT_EQUAL(rc.ndetached, 0); /* all freed by the callback (ASan checks) */
	CU_ASSERT_EQUAL(fabnet_regcache_count(&rc), 7);
	CU_ASSERT_EQUAL(fabnet_regcache_check(&rc), 0);
	fabnet_regcache_fini(&rc, NULL, NULL);
}

static void remove_range_of_len_0_or_that_wraps_removes_nothing(void)
{
	struct fabnet_regcache rc;

	new_cache(&rc);
	add(&rc, 0x10000, 0x20000, HOST, 1);
	CU_ASSERT_EQUAL(fabnet_regcache_remove_range(&rc, 0x11000, 0, NULL, NULL), 0);
	CU_ASSERT_EQUAL(fabnet_regcache_remove_range(&rc, 0x11000, SIZE_MAX, NULL, NULL), -1);
	CU_ASSERT_EQUAL(fabnet_regcache_count(&rc), 1);
	fabnet_regcache_fini(&rc, NULL, NULL);
}

/* ---- teardown --------------------------------------------------------------- */

static void count_release(void *p, void *arg)
{
	unsigned *seen = arg;

	seen[(uintptr_t)p]++;
}

static void fini_releases_every_payload_once(void)
{
	struct fabnet_regcache rc;
	unsigned seen[6] = {0};

	new_cache(&rc);
	for (uintptr_t i = 1; i <= 5; i++) {
		int type = i % 2 ? HOST : CUDA;

		fabnet_regcache_ref(add(&rc, i * 0x10000, i * 0x10000 + PG, type, i));
	}
	CU_ASSERT_EQUAL(fabnet_regcache_remove_range(&rc, 0x20000, 1, NULL, NULL), 1);
	fabnet_regcache_fini(&rc, count_release, seen); /* detached entry 2 included */
	for (int i = 1; i <= 5; i++)
		UNIT_ASSERT_MSG(seen[i] == 1, "payload %d released %u times", i, seen[i]);
	CU_ASSERT_EQUAL(seen[0], 0);
}

/* ---- scale and a reference model ------------------------------------------ */

static void a_large_cache_stays_balanced(void)
{
	struct fabnet_regcache rc;
	struct fabnet_regcache_entry *e;
	const int n = 100000;
	uint64_t seed = 11;

	struct unit_loop loop = UNIT_LOOP_INIT;

	/* Ascending inserts: the worst case of an unbalanced tree. */
	new_cache(&rc);
	for (int i = 0; i < n; i++)
		UNIT_LOOP_CHECK(&loop, fabnet_regcache_insert(&rc, (uintptr_t)i * PG,
							      (uintptr_t)(i + 1) * PG, HOST,
							      payload(1), &e) == 0,
				"insert %d", i);
	CU_ASSERT_EQUAL(fabnet_regcache_count(&rc), n);
	CU_ASSERT_EQUAL(fabnet_regcache_check(&rc), 0);
	/* AVL: height < 1.44 log2(n + 2); log2(100002) < 16.7. */
	CU_ASSERT_PTR_NOT_NULL_FATAL(rc.trees[0].root);
	UNIT_ASSERT_MSG(rc.trees[0].root->height <= 24, "height %d", rc.trees[0].root->height);
	for (int i = 0; i < 1000; i++) {
		uintptr_t page = unit_rand(&seed) % (uintptr_t)n;

		e = fabnet_regcache_lookup(&rc, page * PG + 5, 10, HOST);
		UNIT_LOOP_CHECK(&loop, e && e->start == page * PG, "page %lu",
				(unsigned long)page);
	}
	UNIT_LOOP_ASSERT_ALL_PASSED(&loop);
	fabnet_regcache_fini(&rc, NULL, NULL);
}

#define SPACE_PAGES 256 /* addresses 0x100000 .. +1 MiB: plenty of overlap */
#define BASE 0x100000u
#define MAX_LIVE 400

struct model_entry {
	struct fabnet_regcache_entry *e;
	uintptr_t start, end, id;
	int type;
	size_t refs;
	int indexed;
};

struct model {
	struct model_entry m[MAX_LIVE + 64];
	int n;
	struct unit_loop *loop;
	unsigned long step;
	uintptr_t lo, hi; /* the range remove_range is removing */
};

static int model_find(const struct model *md, const struct fabnet_regcache_entry *e)
{
	for (int i = 0; i < md->n; i++)
		if (md->m[i].e == e)
			return i;
	return -1;
}

static void model_drop(struct model *md, int i)
{
	md->m[i] = md->m[--md->n];
}

static void model_on_removed(struct fabnet_regcache_entry *e, void *arg)
{
	struct model *md = arg;
	int i = model_find(md, e);

	UNIT_LOOP_CHECK(md->loop, i >= 0 && md->m[i].indexed,
			"step %lu: remove_range reported an entry the model lacks", md->step);
	UNIT_LOOP_CHECK(md->loop, !e->indexed && e->start < md->hi && e->end > md->lo,
			"step %lu: remove_range took [%#lx,%#lx), outside [%#lx,%#lx)", md->step,
			(unsigned long)e->start, (unsigned long)e->end, (unsigned long)md->lo,
			(unsigned long)md->hi);
	if (i >= 0)
		md->m[i].indexed = 0;
}

static void random_operations_match_a_reference_model(void)
{
	static struct model md; /* large: not on the stack */
	struct unit_loop loop = UNIT_LOOP_INIT;
	struct fabnet_regcache rc;
	uint64_t seed = 0x5eedf00d;
	uintptr_t next_id = 1;
	unsigned long hits = 0, misses = 0, removed_total = 0;

	memset(&md, 0, sizeof(md));
	md.loop = &loop;
	new_cache(&rc);
	for (unsigned long step = 0; step < 100000; step++) {
		unsigned op = (unsigned)(unit_rand(&seed) % 100);
		int type = 1 + (int)(unit_rand(&seed) % 3);

		md.step = step;
		if (md.n >= MAX_LIVE && op >= 40 && op < 70)
			op = 80; /* full: unref instead of insert */
		if (op < 40) { /* lookup: half inside a live entry, half anywhere */
			uintptr_t addr, len, best_start = 0, best_end = 0;
			struct fabnet_regcache_entry *e;
			int found = 0, idx;

			if (md.n > 0 && op < 20) {
				struct model_entry *m = &md.m[unit_rand(&seed) % (uint64_t)md.n];

				addr = m->start + unit_rand(&seed) % (m->end - m->start);
				len = unit_rand(&seed) % (m->end - addr + 1); /* may be 0 */
				if (unit_rand(&seed) % 2)
					type = m->type;
			} else {
				addr = BASE + unit_rand(&seed) % (SPACE_PAGES * PG);
				len = unit_rand(&seed) % (8 * PG);
			}
			/* The model's answer: the greatest start, then the smallest end. */
			for (int i = 0; len > 0 && i < md.n; i++) {
				struct model_entry *m = &md.m[i];

				if (!m->indexed || m->type != type || m->start > addr ||
				    m->end < addr + len)
					continue;
				if (!found || m->start > best_start ||
				    (m->start == best_start && m->end < best_end)) {
					best_start = m->start;
					best_end = m->end;
				}
				found = 1;
			}
			e = fabnet_regcache_lookup(&rc, addr, len, type);
			idx = e ? model_find(&md, e) : -1;
			if (e) {
				hits++;
				UNIT_LOOP_CHECK(&loop, idx >= 0 && md.m[idx].indexed,
						"step %lu: hit an entry the model lacks", step);
				UNIT_LOOP_CHECK(&loop, e->type == type && e->start <= addr &&
						addr + len <= e->end && len > 0,
						"step %lu: [%#lx,+%lu) type %d hit [%#lx,%#lx) type %d",
						step, (unsigned long)addr, (unsigned long)len, type,
						(unsigned long)e->start, (unsigned long)e->end, e->type);
				UNIT_LOOP_CHECK(&loop, found && e->start == best_start &&
						e->end == best_end,
						"step %lu: hit [%#lx,%#lx), the model prefers [%#lx,%#lx)",
						step, (unsigned long)e->start, (unsigned long)e->end,
						(unsigned long)best_start, (unsigned long)best_end);
			} else {
				misses++;
				UNIT_LOOP_CHECK(&loop, !found,
						"step %lu: [%#lx,+%lu) type %d missed, the model has "
						"[%#lx,%#lx)", step, (unsigned long)addr,
						(unsigned long)len, type, (unsigned long)best_start,
						(unsigned long)best_end);
			}
		} else if (op < 70) { /* insert */
			uintptr_t s, end, addr = BASE + unit_rand(&seed) % (SPACE_PAGES * PG);
			size_t span = unit_rand(&seed) % 2 ? 4 * PG : 64 * PG; /* small or large */
			size_t len = 1 + unit_rand(&seed) % span;
			struct fabnet_regcache_entry *e = NULL;
			struct model_entry *m = &md.m[md.n];

			if (fabnet_regcache_align(addr, len, PG, &s, &end) != 0) {
				UNIT_LOOP_CHECK(&loop, 0, "step %lu: align failed", step);
				continue;
			}
			UNIT_LOOP_CHECK(&loop, s <= addr && addr + len <= end && s % PG == 0 &&
					end % PG == 0 && end - s < len + 2 * PG,
					"step %lu: align gave [%#lx,%#lx)", step, (unsigned long)s,
					(unsigned long)end);
			if (fabnet_regcache_insert(&rc, s, end, type, payload(next_id), &e) != 0) {
				UNIT_LOOP_CHECK(&loop, 0, "step %lu: insert failed", step);
				continue;
			}
			*m = (struct model_entry){e, s, end, next_id++, type, 1, 1};
			md.n++;
		} else if (op < 78) { /* ref */
			if (md.n > 0) {
				struct model_entry *m = &md.m[unit_rand(&seed) % (uint64_t)md.n];

				m->refs++;
				UNIT_LOOP_CHECK(&loop, fabnet_regcache_ref(m->e) == m->refs,
						"step %lu: ref count", step);
			}
		} else if (op < 97) { /* unref */
			if (md.n > 0) {
				int i = (int)(unit_rand(&seed) % (uint64_t)md.n);
				struct model_entry *m = &md.m[i];
				void *p = payload(12345);
				size_t left = fabnet_regcache_unref(&rc, m->e, &p);

				m->refs--;
				UNIT_LOOP_CHECK(&loop, left == m->refs &&
						p == (left ? NULL : payload(m->id)),
						"step %lu: unref left %zu (model %zu)", step, left,
						m->refs);
				if (m->refs == 0)
					model_drop(&md, i);
			}
		} else { /* remove_range */
			uintptr_t addr = BASE + unit_rand(&seed) % (SPACE_PAGES * PG);
			size_t len = unit_rand(&seed) % (8 * PG);
			long expect = 0, got;

			for (int i = 0; len > 0 && i < md.n; i++)
				expect += md.m[i].indexed && md.m[i].start < addr + len &&
					  md.m[i].end > addr;
			md.lo = addr;
			md.hi = addr + len;
			got = fabnet_regcache_remove_range(&rc, addr, len, model_on_removed, &md);
			removed_total += (unsigned long)(got > 0 ? got : 0);
			UNIT_LOOP_CHECK(&loop, got == expect, "step %lu: remove_range removed %ld, "
					"the model %ld", step, got, expect);
			/* Whatever the callback did not see is still indexed in the model:
			 * the next lookups and counts catch an entry left behind. */
		}
		{
			size_t indexed = 0, detached = 0;

			for (int i = 0; i < md.n; i++)
				if (md.m[i].indexed)
					indexed++;
				else
					detached++;
			UNIT_LOOP_CHECK(&loop, fabnet_regcache_count(&rc) == indexed &&
					rc.ndetached == detached,
					"step %lu: count %zu detached %zu, model %zu %zu", step,
					fabnet_regcache_count(&rc), rc.ndetached, indexed, detached);
		}
		if (step % 1000 == 0)
			UNIT_LOOP_CHECK(&loop, fabnet_regcache_check(&rc) == 0,
					"step %lu: the index is inconsistent", step);
	}
	UNIT_LOOP_CHECK(&loop, fabnet_regcache_check(&rc) == 0, "end: the index is inconsistent");
	UNIT_LOOP_ASSERT_ALL_PASSED(&loop);
	/* The run exercised both outcomes and the invalidation path. */
	UNIT_ASSERT_MSG(hits > 10000 && misses > 10000 && removed_total > 1000,
			"hits %lu misses %lu removed %lu", hits, misses, removed_total);
	/* Drop every remaining reference: the cache ends empty. */
	while (md.n > 0) {
		while (md.m[0].refs > 0) {
			fabnet_regcache_unref(&rc, md.m[0].e, NULL);
			md.m[0].refs--;
		}
		model_drop(&md, 0);
	}
	CU_ASSERT_EQUAL(fabnet_regcache_count(&rc), 0);
	CU_ASSERT_EQUAL(rc.ndetached, 0);
	fabnet_regcache_fini(&rc, NULL, NULL);
}

void register_regcache_tests(void)
{
	CU_pSuite s = CU_add_suite("regcache", NULL, NULL);

	UNIT_ADD(s, align_rounds_out_to_whole_pages);
	UNIT_ADD(s, align_of_an_aligned_range_is_the_range_itself);
	UNIT_ADD(s, align_uses_the_given_page_size);
	UNIT_ADD(s, align_refuses_len_0);
	UNIT_ADD(s, align_refuses_ranges_that_wrap_the_address_space);
	UNIT_ADD(s, align_refuses_a_page_size_that_is_not_a_power_of_two);
	UNIT_ADD(s, init_refuses_a_page_size_that_is_not_a_power_of_two);
	UNIT_ADD(s, an_empty_cache_misses);
	UNIT_ADD(s, the_exact_range_hits);
	UNIT_ADD(s, every_sub_range_hits);
	UNIT_ADD(s, a_partial_overlap_misses);
	UNIT_ADD(s, a_neighbouring_range_misses);
	UNIT_ADD(s, adjacent_entries_do_not_combine);
	UNIT_ADD(s, a_lookup_of_another_type_misses);
	UNIT_ADD(s, the_smallest_containing_entry_is_preferred);
	UNIT_ADD(s, among_entries_starting_together_the_shortest_wins);
	UNIT_ADD(s, crossing_entries_prefer_the_one_starting_nearest);
	UNIT_ADD(s, a_lookup_of_len_0_misses);
	UNIT_ADD(s, a_lookup_that_wraps_the_address_space_misses);
	UNIT_ADD(s, insert_refuses_empty_unaligned_or_reversed_ranges);
	UNIT_ADD(s, identical_entries_coexist);
	UNIT_ADD(s, an_entry_lives_until_its_last_reference_is_dropped);
	UNIT_ADD(s, removing_the_inner_entry_exposes_the_outer_one);
	UNIT_ADD(s, remove_range_takes_out_every_overlapping_entry_of_every_type);
	UNIT_ADD(s, a_removed_entry_lives_until_its_last_reference);
	UNIT_ADD(s, the_callback_may_drop_the_last_reference);
	UNIT_ADD(s, remove_range_of_len_0_or_that_wraps_removes_nothing);
	UNIT_ADD(s, fini_releases_every_payload_once);
	UNIT_ADD(s, a_large_cache_stays_balanced);
	UNIT_ADD(s, random_operations_match_a_reference_model);
}
