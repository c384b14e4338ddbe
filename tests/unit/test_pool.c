/*
 * The fixed-capacity object pool (src/core/pool.h): get and put never
 * allocate, a pool never hands out more than its capacity, and a put of
 * anything but a live item of the pool is refused.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "core/pool.h"
#include "unit.h"

#define ITEM 24 /* deliberately not a power of two */
#define CAP 8

static void init_fails_with_zero_item_size(void)
{
	struct fabnet_pool p;

	CU_ASSERT_EQUAL(fabnet_pool_init(&p, 0, CAP, NULL), -1);
}

static void init_fails_with_zero_capacity(void)
{
	struct fabnet_pool p;

	CU_ASSERT_EQUAL(fabnet_pool_init(&p, ITEM, 0, NULL), -1);
}

static void a_new_pool_has_nothing_in_use(void)
{
	struct fabnet_pool p;

	CU_ASSERT_EQUAL_FATAL(fabnet_pool_init(&p, ITEM, CAP, NULL), 0);
	CU_ASSERT_EQUAL(fabnet_pool_used(&p), 0);
	fabnet_pool_fini(&p);
}

static void get_hands_out_capacity_distinct_items_then_null(void)
{
	struct fabnet_pool p;
	void *got[CAP];

	CU_ASSERT_EQUAL_FATAL(fabnet_pool_init(&p, ITEM, CAP, NULL), 0);
	for (int i = 0; i < CAP; i++) {
		got[i] = fabnet_pool_get(&p);
		CU_ASSERT_PTR_NOT_NULL(got[i]);
		CU_ASSERT_EQUAL(fabnet_pool_used(&p), (uint32_t)i + 1);
		for (int j = 0; j < i; j++)
			CU_ASSERT_PTR_NOT_EQUAL(got[i], got[j]);
	}
	CU_ASSERT_PTR_NULL(fabnet_pool_get(&p));
	CU_ASSERT_PTR_NULL(fabnet_pool_get(&p));
	CU_ASSERT_EQUAL(fabnet_pool_used(&p), CAP);
	fabnet_pool_fini(&p);
}

static void items_do_not_overlap(void)
{
	struct fabnet_pool p;
	uint8_t *got[CAP];

	CU_ASSERT_EQUAL_FATAL(fabnet_pool_init(&p, ITEM, CAP, NULL), 0);
	for (int i = 0; i < CAP; i++) {
		got[i] = fabnet_pool_get(&p);
		CU_ASSERT_PTR_NOT_NULL_FATAL(got[i]);
		memset(got[i], 0x10 + i, ITEM);
	}
	for (int i = 0; i < CAP; i++)
		for (int b = 0; b < ITEM; b++)
			CU_ASSERT_EQUAL(got[i][b], 0x10 + i);
	fabnet_pool_fini(&p);
}

static void pool_allocated_storage_is_zeroed(void)
{
	struct fabnet_pool p;

	CU_ASSERT_EQUAL_FATAL(fabnet_pool_init(&p, ITEM, CAP, NULL), 0);
	for (int i = 0; i < CAP; i++) {
		uint8_t *item = fabnet_pool_get(&p);

		CU_ASSERT_PTR_NOT_NULL_FATAL(item);
		for (int b = 0; b < ITEM; b++)
			CU_ASSERT_EQUAL(item[b], 0);
	}
	fabnet_pool_fini(&p);
}

static void put_returns_an_item_for_reuse(void)
{
	struct fabnet_pool p;
	void *got[CAP];

	CU_ASSERT_EQUAL_FATAL(fabnet_pool_init(&p, ITEM, CAP, NULL), 0);
	for (int i = 0; i < CAP; i++)
		got[i] = fabnet_pool_get(&p);
	CU_ASSERT_EQUAL(fabnet_pool_put(&p, got[3]), 0);
	CU_ASSERT_EQUAL(fabnet_pool_used(&p), CAP - 1);
	CU_ASSERT_PTR_EQUAL(fabnet_pool_get(&p), got[3]); /* the only free item */
	CU_ASSERT_EQUAL(fabnet_pool_used(&p), CAP);
	CU_ASSERT_PTR_NULL(fabnet_pool_get(&p));
	fabnet_pool_fini(&p);
}

static void every_item_can_be_put_back(void)
{
	struct fabnet_pool p;
	void *got[CAP];

	CU_ASSERT_EQUAL_FATAL(fabnet_pool_init(&p, ITEM, CAP, NULL), 0);
	for (int i = 0; i < CAP; i++)
		got[i] = fabnet_pool_get(&p);
	for (int i = CAP - 1; i >= 0; i -= 2)
		CU_ASSERT_EQUAL(fabnet_pool_put(&p, got[i]), 0);
	for (int i = CAP - 2; i >= 0; i -= 2)
		CU_ASSERT_EQUAL(fabnet_pool_put(&p, got[i]), 0);
	CU_ASSERT_EQUAL(fabnet_pool_used(&p), 0);
	fabnet_pool_fini(&p);
}

static void double_put_is_rejected(void)
{
	struct fabnet_pool p;
	void *a, *seen[CAP];

	CU_ASSERT_EQUAL_FATAL(fabnet_pool_init(&p, ITEM, CAP, NULL), 0);
	a = fabnet_pool_get(&p);
	fabnet_pool_get(&p);
	CU_ASSERT_EQUAL(fabnet_pool_put(&p, a), 0);
	CU_ASSERT_EQUAL(fabnet_pool_put(&p, a), -1);
	CU_ASSERT_EQUAL(fabnet_pool_used(&p), 1);
	/* The refused put did not free the item twice: it is handed out once. */
	for (int i = 0; i < CAP - 1; i++) {
		seen[i] = fabnet_pool_get(&p);
		CU_ASSERT_PTR_NOT_NULL(seen[i]);
		for (int j = 0; j < i; j++)
			CU_ASSERT_PTR_NOT_EQUAL(seen[i], seen[j]);
	}
	CU_ASSERT_PTR_NULL(fabnet_pool_get(&p));
	fabnet_pool_fini(&p);
}

static void put_of_an_item_never_taken_is_rejected(void)
{
	struct fabnet_pool p;

	CU_ASSERT_EQUAL_FATAL(fabnet_pool_init(&p, ITEM, CAP, NULL), 0);
	CU_ASSERT_EQUAL(fabnet_pool_put(&p, fabnet_pool_at(&p, 5)), -1);
	CU_ASSERT_EQUAL(fabnet_pool_used(&p), 0);
	fabnet_pool_fini(&p);
}

/* Caller storage with one spare item on each side, so pointers just outside
 * the pool stay inside one array. */
static uint8_t storage[(CAP + 2) * ITEM];
#define POOL_ITEMS (storage + ITEM)

static void put_of_a_foreign_pointer_is_rejected(void)
{
	struct fabnet_pool p;
	uint8_t other[ITEM];

	CU_ASSERT_EQUAL_FATAL(fabnet_pool_init(&p, ITEM, CAP, POOL_ITEMS), 0);
	for (int i = 0; i < CAP; i++)
		fabnet_pool_get(&p);
	CU_ASSERT_EQUAL(fabnet_pool_put(&p, other), -1);
	CU_ASSERT_EQUAL(fabnet_pool_put(&p, storage), -1);                 /* just before */
	CU_ASSERT_EQUAL(fabnet_pool_put(&p, POOL_ITEMS + CAP * ITEM), -1); /* just after */
	CU_ASSERT_EQUAL(fabnet_pool_put(&p, NULL), -1);
	CU_ASSERT_EQUAL(fabnet_pool_used(&p), CAP);
	fabnet_pool_fini(&p);
}

static void put_of_a_misaligned_pointer_is_rejected(void)
{
	struct fabnet_pool p;
	uint8_t *item;

	CU_ASSERT_EQUAL_FATAL(fabnet_pool_init(&p, ITEM, CAP, NULL), 0);
	item = fabnet_pool_get(&p);
	CU_ASSERT_PTR_NOT_NULL_FATAL(item);
	CU_ASSERT_EQUAL(fabnet_pool_put(&p, item + 1), -1);
	CU_ASSERT_EQUAL(fabnet_pool_put(&p, item + ITEM - 1), -1);
	CU_ASSERT_EQUAL(fabnet_pool_used(&p), 1);
	CU_ASSERT_EQUAL(fabnet_pool_put(&p, item), 0);
	fabnet_pool_fini(&p);
}

static void index_and_at_are_inverse(void)
{
	struct fabnet_pool p;

	CU_ASSERT_EQUAL_FATAL(fabnet_pool_init(&p, ITEM, CAP, NULL), 0);
	for (uint32_t i = 0; i < CAP; i++) {
		void *item = fabnet_pool_at(&p, i);

		CU_ASSERT_PTR_NOT_NULL(item);
		CU_ASSERT_EQUAL(fabnet_pool_index(&p, item), (int64_t)i);
	}
	for (int i = 0; i < CAP; i++) {
		void *item = fabnet_pool_get(&p);
		int64_t idx = fabnet_pool_index(&p, item);

		CU_ASSERT_TRUE(idx >= 0 && idx < CAP);
		CU_ASSERT_PTR_EQUAL(fabnet_pool_at(&p, (uint32_t)idx), item);
	}
	fabnet_pool_fini(&p);
}

static void at_beyond_capacity_is_null(void)
{
	struct fabnet_pool p;

	CU_ASSERT_EQUAL_FATAL(fabnet_pool_init(&p, ITEM, CAP, NULL), 0);
	CU_ASSERT_PTR_NULL(fabnet_pool_at(&p, CAP));
	CU_ASSERT_PTR_NULL(fabnet_pool_at(&p, UINT32_MAX));
	fabnet_pool_fini(&p);
}

static void index_of_a_pointer_outside_the_pool_is_minus_1(void)
{
	struct fabnet_pool p;

	CU_ASSERT_EQUAL_FATAL(fabnet_pool_init(&p, ITEM, CAP, POOL_ITEMS), 0);
	CU_ASSERT_EQUAL(fabnet_pool_index(&p, storage), -1);
	CU_ASSERT_EQUAL(fabnet_pool_index(&p, POOL_ITEMS - 1), -1);
	CU_ASSERT_EQUAL(fabnet_pool_index(&p, POOL_ITEMS + CAP * ITEM), -1);
	CU_ASSERT_EQUAL(fabnet_pool_index(&p, POOL_ITEMS + 2), -1);
	CU_ASSERT_EQUAL(fabnet_pool_index(&p, POOL_ITEMS), 0);
	CU_ASSERT_EQUAL(fabnet_pool_index(&p, POOL_ITEMS + (CAP - 1) * ITEM), CAP - 1);
	fabnet_pool_fini(&p);
}

static void caller_storage_is_used_for_the_items(void)
{
	struct fabnet_pool p;

	CU_ASSERT_EQUAL_FATAL(fabnet_pool_init(&p, ITEM, CAP, POOL_ITEMS), 0);
	for (int i = 0; i < CAP; i++) {
		uint8_t *item = fabnet_pool_get(&p);

		CU_ASSERT_TRUE(item >= POOL_ITEMS && item + ITEM <= POOL_ITEMS + CAP * ITEM);
		CU_ASSERT_EQUAL((item - POOL_ITEMS) % ITEM, 0);
	}
	CU_ASSERT_PTR_NULL(fabnet_pool_get(&p));
	fabnet_pool_fini(&p);
}

static void fini_leaves_caller_storage_alone(void)
{
	struct fabnet_pool p;
	uint8_t *heap = malloc(CAP * ITEM);

	CU_ASSERT_PTR_NOT_NULL_FATAL(heap);
	CU_ASSERT_EQUAL_FATAL(fabnet_pool_init(&p, ITEM, CAP, heap), 0);
	memset(fabnet_pool_get(&p), 0x77, ITEM);
	fabnet_pool_fini(&p);
	/* Still ours: freeing it here would be a double free had fini done so. */
	CU_ASSERT_EQUAL(heap[0], 0x77);
	free(heap);
}

static void random_gets_and_puts_match_a_reference_model(void)
{
	enum { MCAP = 64, STEPS = 100000 };
	struct fabnet_pool p;
	uint8_t live[MCAP] = {0}; /* the model: which indices are handed out */
	uint32_t nlive = 0;
	uint64_t rng = 20;
	struct unit_loop loop = UNIT_LOOP_INIT;

	CU_ASSERT_EQUAL_FATAL(fabnet_pool_init(&p, 40, MCAP, NULL), 0);
	for (int step = 0; step < STEPS; step++) {
		uint64_t r = unit_rand(&rng);
		uint32_t idx = (uint32_t)((r >> 8) % MCAP);

		if (r % 2 == 0) {
			uint8_t *item = fabnet_pool_get(&p);

			if (nlive == MCAP) {
				UNIT_LOOP_CHECK(&loop, item == NULL, "step %d: get from a full pool",
						step);
				continue;
			}
			{
				int64_t i = item ? fabnet_pool_index(&p, item) : -1;

				UNIT_LOOP_CHECK(&loop, i >= 0 && i < MCAP && !live[i],
						"step %d: get returned %p (index %lld), not a free item",
						step, (void *)item, (long long)i);
				if (i >= 0 && i < MCAP && !live[i]) {
					live[i] = 1;
					nlive++;
					item[0] = (uint8_t)i; /* tag it, checked at put */
				}
			}
		} else {
			/* A put of index idx: valid when live, refused when free. */
			uint8_t *item = fabnet_pool_at(&p, idx);
			int rc;

			if (live[idx])
				UNIT_LOOP_CHECK(&loop, item[0] == (uint8_t)idx,
						"step %d: item %u was overwritten", step, idx);
			rc = fabnet_pool_put(&p, item);
			UNIT_LOOP_CHECK(&loop, rc == (live[idx] ? 0 : -1),
					"step %d: put of %s item %u returned %d", step,
					live[idx] ? "live" : "free", idx, rc);
			if (live[idx] && rc == 0) {
				live[idx] = 0;
				nlive--;
			}
		}
		UNIT_LOOP_CHECK(&loop, fabnet_pool_used(&p) == nlive,
				"step %d: used %u, model %u", step, fabnet_pool_used(&p), nlive);
	}
	UNIT_LOOP_ASSERT_ALL_PASSED(&loop);
	fabnet_pool_fini(&p);
}


/* ---- growing pools -------------------------------------------------------- */
static void a_growing_pool_allocates_only_its_first_items(void)
{
	struct fabnet_pool p;

	CU_ASSERT_EQUAL_FATAL(fabnet_pool_init_growing(&p, 100, 32, 4), 0);
	CU_ASSERT_EQUAL(p.allocated, 4);
	CU_ASSERT_EQUAL(p.nfree, 4);
	CU_ASSERT_PTR_NULL(fabnet_pool_at(&p, 4));
	fabnet_pool_fini(&p);
	CU_ASSERT_EQUAL(fabnet_pool_init_growing(&p, 100, 32, 0), -1);
	CU_ASSERT_EQUAL(fabnet_pool_init_growing(&p, 100, 4, 5), -1);
}

static void a_growing_pool_grows_to_capacity_and_items_never_move(void)
{
	struct fabnet_pool p;
	void *items[37];
	char saw[37];

	CU_ASSERT_EQUAL_FATAL(fabnet_pool_init_growing(&p, 24, 37, 3), 0);
	for (int i = 0; i < 37; i++) {
		items[i] = fabnet_pool_get(&p);
		CU_ASSERT_PTR_NOT_NULL_FATAL(items[i]);
		memset(items[i], i + 1, 24); /* an item moved or overlapped would show below */
	}
	CU_ASSERT_PTR_NULL(fabnet_pool_get(&p));
	CU_ASSERT_EQUAL(p.allocated, 37);
	CU_ASSERT(p.nseg <= FABNET_POOL_MAX_SEGS);
	memset(saw, 0, sizeof(saw));
	for (int i = 0; i < 37; i++) {
		int64_t idx = fabnet_pool_index(&p, items[i]);
		CU_ASSERT_FATAL(idx >= 0 && idx < 37);
		CU_ASSERT_EQUAL(saw[idx], 0);
		saw[idx] = 1;
		CU_ASSERT_PTR_EQUAL(fabnet_pool_at(&p, (uint32_t)idx), items[i]);
		for (int b = 0; b < 24; b++)
			if (((unsigned char *)items[i])[b] != i + 1) {
				CU_FAIL("an item's bytes changed");
				break;
			}
	}
	/* indices come out in order: segment by segment, lowest first */
	for (int i = 0; i < 37; i++)
		CU_ASSERT_EQUAL(fabnet_pool_index(&p, items[i]), i);
	fabnet_pool_fini(&p);
}

static void a_growing_pool_reuses_before_growing_and_checks_puts(void)
{
	struct fabnet_pool p;
	void *a, *b, *c;

	CU_ASSERT_EQUAL_FATAL(fabnet_pool_init_growing(&p, 16, 32, 2), 0);
	a = fabnet_pool_get(&p);
	b = fabnet_pool_get(&p);
	CU_ASSERT_EQUAL(fabnet_pool_put(&p, a), 0);
	c = fabnet_pool_get(&p);
	CU_ASSERT_PTR_EQUAL(c, a); /* the freed item, not a new segment */
	CU_ASSERT_EQUAL(p.allocated, 2);
	c = fabnet_pool_get(&p);    /* now it grows */
	CU_ASSERT_PTR_NOT_NULL(c);
	CU_ASSERT_EQUAL(p.allocated, 4);
	CU_ASSERT_EQUAL(fabnet_pool_put(&p, c), 0);
	CU_ASSERT_EQUAL(fabnet_pool_put(&p, c), -1);            /* double put */
	CU_ASSERT_EQUAL(fabnet_pool_put(&p, (char *)c + 1), -1); /* misaligned */
	CU_ASSERT_EQUAL(fabnet_pool_put(&p, b), 0);
	CU_ASSERT_EQUAL(fabnet_pool_used(&p), 1);
	fabnet_pool_fini(&p);
}

void register_pool_tests(void)
{
	CU_pSuite s = CU_add_suite("pool", NULL, NULL);

	UNIT_ADD(s, init_fails_with_zero_item_size);
	UNIT_ADD(s, init_fails_with_zero_capacity);
	UNIT_ADD(s, a_new_pool_has_nothing_in_use);
	UNIT_ADD(s, get_hands_out_capacity_distinct_items_then_null);
	UNIT_ADD(s, items_do_not_overlap);
	UNIT_ADD(s, pool_allocated_storage_is_zeroed);
	UNIT_ADD(s, put_returns_an_item_for_reuse);
	UNIT_ADD(s, every_item_can_be_put_back);
	UNIT_ADD(s, double_put_is_rejected);
	UNIT_ADD(s, put_of_an_item_never_taken_is_rejected);
	UNIT_ADD(s, put_of_a_foreign_pointer_is_rejected);
	UNIT_ADD(s, put_of_a_misaligned_pointer_is_rejected);
	UNIT_ADD(s, index_and_at_are_inverse);
	UNIT_ADD(s, at_beyond_capacity_is_null);
	UNIT_ADD(s, index_of_a_pointer_outside_the_pool_is_minus_1);
	UNIT_ADD(s, caller_storage_is_used_for_the_items);
	UNIT_ADD(s, fini_leaves_caller_storage_alone);
	UNIT_ADD(s, a_growing_pool_allocates_only_its_first_items);
	UNIT_ADD(s, a_growing_pool_grows_to_capacity_and_items_never_move);
	UNIT_ADD(s, a_growing_pool_reuses_before_growing_and_checks_puts);
	UNIT_ADD(s, random_gets_and_puts_match_a_reference_model);
}
