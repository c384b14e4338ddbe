/*
 * The memory-region key pool (src/core/keypool.h): keys are unique while in
 * use, fresh keys come first and in order, and once the key space is used
 * up a freed key comes back only after its quarantine (enough later frees
 * AND enough time). Time is passed in, so every case here is exact.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "core/keypool.h"
#include "unit.h"

#define NEVER UINT64_MAX /* a quarantine that never ends */

static void new_pool(struct fabnet_keypool *kp, unsigned key_size, uint64_t count, uint64_t ns)
{
	CU_ASSERT_EQUAL_FATAL(fabnet_keypool_init(kp, key_size, count, ns), 0);
}

/* Allocates and returns a key; fails the test when none comes. */
static uint64_t take(struct fabnet_keypool *kp, uint64_t now)
{
	uint64_t key = 0;

	CU_ASSERT_EQUAL_FATAL(fabnet_keypool_alloc(kp, now, &key), 0);
	return key;
}

/* Takes every key of a small key space: 1, 2, ... max_key in order. */
static void take_all(struct fabnet_keypool *kp, uint64_t now)
{
	struct unit_loop loop = UNIT_LOOP_INIT;
	uint64_t key;

	for (uint64_t k = 1; k <= kp->max_key; k++) {
		key = 0;
		UNIT_LOOP_CHECK(&loop, fabnet_keypool_alloc(kp, now, &key) == 0 && key == k,
				"expected key %llu, got %llu", (unsigned long long)k,
				(unsigned long long)key);
	}
	UNIT_LOOP_ASSERT_ALL_PASSED(&loop);
}

static void init_refuses_key_sizes_outside_1_to_8(void)
{
	struct fabnet_keypool kp;

	CU_ASSERT_EQUAL(fabnet_keypool_init(&kp, 0, 0, 0), -1);
	CU_ASSERT_EQUAL(fabnet_keypool_init(&kp, 9, 0, 0), -1);
}

static void the_key_space_follows_the_key_size(void)
{
	struct fabnet_keypool kp;
	const uint64_t expect[] = {0, 0xff, 0xffff, 0xffffff, 0xffffffff, 0xffffffffffull,
				   0xffffffffffffull, 0xffffffffffffffull, UINT64_MAX};

	for (unsigned ks = 1; ks <= 8; ks++) {
		new_pool(&kp, ks, 0, 0);
		UNIT_ASSERT_MSG(kp.max_key == expect[ks], "key_size %u: max_key %#llx", ks,
				(unsigned long long)kp.max_key);
		fabnet_keypool_fini(&kp);
	}
}

static void keys_start_at_1_and_count_up(void)
{
	struct fabnet_keypool kp;

	new_pool(&kp, 8, 0, 0);
	CU_ASSERT_EQUAL(fabnet_keypool_in_use(&kp), 0);
	CU_ASSERT_EQUAL(take(&kp, 0), 1);
	CU_ASSERT_EQUAL(take(&kp, 0), 2);
	CU_ASSERT_EQUAL(take(&kp, 0), 3);
	CU_ASSERT_EQUAL(fabnet_keypool_in_use(&kp), 3);
	fabnet_keypool_fini(&kp);
}

static void keys_in_use_are_unique(void)
{
	struct fabnet_keypool kp;
	static uint64_t keys[5000];
	int dup = 0;

	new_pool(&kp, 4, 0, 0);
	for (int i = 0; i < 5000; i++)
		dup += fabnet_keypool_alloc(&kp, 0, &keys[i]) != 0;
	CU_ASSERT_EQUAL_FATAL(dup, 0);
	for (int i = 0; i < 5000; i++)
		dup += keys[i] == 0 || (i > 0 && keys[i] <= keys[i - 1]); /* ascending: distinct */
	CU_ASSERT_EQUAL(dup, 0);
	CU_ASSERT_EQUAL(fabnet_keypool_in_use(&kp), 5000);
	fabnet_keypool_fini(&kp);
}

static void the_counter_never_reuses_a_freed_key(void)
{
	struct fabnet_keypool kp;
	uint64_t prev = 0, key;
	struct unit_loop loop = UNIT_LOOP_INIT;

	/* No quarantine at all: a freed key would be eligible at once, yet fresh
	 * keys are handed out while they last. */
	new_pool(&kp, 8, 0, 0);
	for (uint64_t i = 0; i < 100000; i++) {
		key = 0;
		UNIT_LOOP_CHECK(&loop, fabnet_keypool_alloc(&kp, i, &key) == 0, "alloc %llu",
				(unsigned long long)i);
		UNIT_LOOP_CHECK(&loop, key > prev, "step %llu: key %llu after %llu",
				(unsigned long long)i, (unsigned long long)key,
				(unsigned long long)prev);
		prev = key;
		UNIT_LOOP_CHECK(&loop, fabnet_keypool_free(&kp, key, i) == 0, "free of %llu",
				(unsigned long long)key);
	}
	UNIT_LOOP_ASSERT_ALL_PASSED(&loop);
	CU_ASSERT_EQUAL(kp.laps, 0);
	fabnet_keypool_fini(&kp);
}

static void a_key_freed_early_waits_for_the_fresh_keys(void)
{
	struct fabnet_keypool kp;

	new_pool(&kp, 1, 0, 0);
	for (int i = 0; i < 10; i++)
		take(&kp, 0);
	CU_ASSERT_EQUAL(fabnet_keypool_free(&kp, 3, 0), 0);
	CU_ASSERT_EQUAL(take(&kp, 1000), 11);
	/* Once the fresh keys are gone, key 3 is the only one free. */
	for (uint64_t k = 12; k <= 255; k++)
		CU_ASSERT_EQUAL(take(&kp, 1000), k);
	CU_ASSERT_EQUAL(take(&kp, 1000), 3);
	fabnet_keypool_fini(&kp);
}

static void a_one_byte_key_space_runs_out_after_255_keys(void)
{
	struct fabnet_keypool kp;
	uint64_t key = 77;

	new_pool(&kp, 1, 0, 0);
	take_all(&kp, 0);
	CU_ASSERT_EQUAL(fabnet_keypool_in_use(&kp), 255);
	CU_ASSERT_EQUAL(fabnet_keypool_alloc(&kp, 0, &key), FABNET_KEYPOOL_EXHAUSTED);
	CU_ASSERT_EQUAL(fabnet_keypool_alloc(&kp, 1000000, &key), FABNET_KEYPOOL_EXHAUSTED);
	CU_ASSERT_EQUAL(key, 77); /* untouched */
	fabnet_keypool_fini(&kp);
}

static void without_quarantine_a_freed_key_comes_back_once_keys_run_out(void)
{
	struct fabnet_keypool kp;

	new_pool(&kp, 1, 0, 0);
	take_all(&kp, 0);
	CU_ASSERT_EQUAL(fabnet_keypool_free(&kp, 200, 0), 0);
	CU_ASSERT_EQUAL(fabnet_keypool_in_use(&kp), 254);
	CU_ASSERT_EQUAL(take(&kp, 0), 200);
	CU_ASSERT_EQUAL(kp.laps, 1);
	fabnet_keypool_fini(&kp);
}

static void quarantine_by_count_is_enforced(void)
{
	struct fabnet_keypool kp;
	uint64_t key;

	/* A key comes back only after 3 other frees. */
	new_pool(&kp, 1, 3, 0);
	take_all(&kp, 0);
	CU_ASSERT_EQUAL(fabnet_keypool_free(&kp, 10, 0), 0);
	CU_ASSERT_EQUAL(fabnet_keypool_alloc(&kp, 0, &key), FABNET_KEYPOOL_EXHAUSTED);
	CU_ASSERT_EQUAL(fabnet_keypool_free(&kp, 20, 0), 0);
	CU_ASSERT_EQUAL(fabnet_keypool_free(&kp, 30, 0), 0);
	CU_ASSERT_EQUAL(fabnet_keypool_alloc(&kp, 0, &key), FABNET_KEYPOOL_EXHAUSTED);
	CU_ASSERT_EQUAL(fabnet_keypool_quarantined(&kp), 3);
	CU_ASSERT_EQUAL(fabnet_keypool_free(&kp, 40, 0), 0);
	CU_ASSERT_EQUAL(take(&kp, 0), 10);
	/* 20 has seen only two frees after it (30, 40). */
	CU_ASSERT_EQUAL(fabnet_keypool_alloc(&kp, 0, &key), FABNET_KEYPOOL_EXHAUSTED);
	CU_ASSERT_EQUAL(fabnet_keypool_quarantined(&kp), 3);
	fabnet_keypool_fini(&kp);
}

static void quarantine_by_time_is_enforced(void)
{
	struct fabnet_keypool kp;
	uint64_t key;

	/* A key comes back only 1000 ns after its free. */
	new_pool(&kp, 1, 0, 1000);
	take_all(&kp, 0);
	CU_ASSERT_EQUAL(fabnet_keypool_free(&kp, 10, 5000), 0);
	CU_ASSERT_EQUAL(fabnet_keypool_free(&kp, 20, 5500), 0);
	CU_ASSERT_EQUAL(fabnet_keypool_alloc(&kp, 5999, &key), FABNET_KEYPOOL_EXHAUSTED);
	CU_ASSERT_EQUAL(take(&kp, 6000), 10);
	CU_ASSERT_EQUAL(fabnet_keypool_alloc(&kp, 6499, &key), FABNET_KEYPOOL_EXHAUSTED);
	CU_ASSERT_EQUAL(take(&kp, 6500), 20);
	fabnet_keypool_fini(&kp);
}

static void quarantine_needs_both_count_and_time(void)
{
	struct fabnet_keypool kp;
	uint64_t key;

	new_pool(&kp, 1, 2, 1000);
	take_all(&kp, 0);
	/* Time served, count not: key 10 has one free after it (20). */
	CU_ASSERT_EQUAL(fabnet_keypool_free(&kp, 10, 0), 0);
	CU_ASSERT_EQUAL(fabnet_keypool_free(&kp, 20, 0), 0);
	CU_ASSERT_EQUAL(fabnet_keypool_alloc(&kp, 1000000, &key), FABNET_KEYPOOL_EXHAUSTED);
	/* A second free after it: 10 has served both. */
	CU_ASSERT_EQUAL(fabnet_keypool_free(&kp, 30, 1000000), 0);
	CU_ASSERT_EQUAL(take(&kp, 1000000), 10);
	CU_ASSERT_EQUAL(fabnet_keypool_free(&kp, 40, 1000000), 0);
	CU_ASSERT_EQUAL(fabnet_keypool_free(&kp, 50, 1000000), 0);
	/* 20 (freed at 0, three frees after it) has served both too. */
	CU_ASSERT_EQUAL(take(&kp, 1000000), 20);
	/* Count served, time not: 30 has two frees after it (40, 50) but was
	 * freed at 1000000, so its time is served at 1001000. */
	CU_ASSERT_EQUAL(fabnet_keypool_alloc(&kp, 1000999, &key), FABNET_KEYPOOL_EXHAUSTED);
	CU_ASSERT_EQUAL(take(&kp, 1001000), 30);
	fabnet_keypool_fini(&kp);
}

static void time_going_backwards_only_lengthens_the_quarantine(void)
{
	struct fabnet_keypool kp;
	uint64_t key;

	new_pool(&kp, 1, 0, 100);
	take_all(&kp, 0);
	CU_ASSERT_EQUAL(fabnet_keypool_free(&kp, 9, 5000), 0);
	CU_ASSERT_EQUAL(fabnet_keypool_alloc(&kp, 10, &key), FABNET_KEYPOOL_EXHAUSTED);
	CU_ASSERT_EQUAL(take(&kp, 5100), 9);
	fabnet_keypool_fini(&kp);
}

static void a_double_free_is_rejected(void)
{
	struct fabnet_keypool kp;
	uint64_t a, b;

	new_pool(&kp, 8, 0, 0);
	a = take(&kp, 0);
	b = take(&kp, 0);
	CU_ASSERT_EQUAL(fabnet_keypool_free(&kp, a, 0), 0);
	CU_ASSERT_EQUAL(fabnet_keypool_free(&kp, a, 0), -1);
	CU_ASSERT_EQUAL(fabnet_keypool_in_use(&kp), 1);
	CU_ASSERT_EQUAL(fabnet_keypool_free(&kp, b, 0), 0);
	CU_ASSERT_EQUAL(fabnet_keypool_in_use(&kp), 0);
	fabnet_keypool_fini(&kp);
}

static void a_double_free_during_quarantine_is_rejected(void)
{
	struct fabnet_keypool kp;

	new_pool(&kp, 1, 5, NEVER);
	take(&kp, 0);
	CU_ASSERT_EQUAL(fabnet_keypool_free(&kp, 1, 0), 0);
	CU_ASSERT_EQUAL(fabnet_keypool_quarantined(&kp), 1);
	CU_ASSERT_EQUAL(fabnet_keypool_free(&kp, 1, 0), -1);
	CU_ASSERT_EQUAL(fabnet_keypool_quarantined(&kp), 1); /* not queued twice */
	fabnet_keypool_fini(&kp);
}

static void a_free_of_a_key_never_handed_out_is_rejected(void)
{
	struct fabnet_keypool kp;

	new_pool(&kp, 1, 0, 0);
	take(&kp, 0);
	CU_ASSERT_EQUAL(fabnet_keypool_free(&kp, 0, 0), -1);   /* never a key */
	CU_ASSERT_EQUAL(fabnet_keypool_free(&kp, 2, 0), -1);   /* not yet handed out */
	CU_ASSERT_EQUAL(fabnet_keypool_free(&kp, 256, 0), -1); /* beyond the key space */
	CU_ASSERT_EQUAL(fabnet_keypool_free(&kp, UINT64_MAX, 0), -1);
	CU_ASSERT_EQUAL(fabnet_keypool_in_use(&kp), 1);
	CU_ASSERT_EQUAL(take(&kp, 0), 2); /* the refused frees changed nothing */
	fabnet_keypool_fini(&kp);
}

static void memory_follows_the_keys_in_use_and_in_quarantine(void)
{
	struct fabnet_keypool kp;
	static uint64_t keys[20000];

	struct unit_loop loop = UNIT_LOOP_INIT;
	uint64_t key;

	new_pool(&kp, 8, 0, 0);
	/* 100,000 registrations, never more than one at a time: memory stays at
	 * its minimum however many keys went by. */
	for (int i = 0; i < 100000; i++)
		UNIT_LOOP_CHECK(&loop, fabnet_keypool_alloc(&kp, 0, &key) == 0 &&
				fabnet_keypool_free(&kp, key, 0) == 0, "cycle %d", i);
	CU_ASSERT_EQUAL(kp.slots_cap, 16);
	CU_ASSERT_EQUAL(kp.fifo_cap, 16);
	/* A peak of 20,000 grows it; once they are freed it shrinks back. */
	for (int i = 0; i < 20000; i++)
		UNIT_LOOP_CHECK(&loop, fabnet_keypool_alloc(&kp, 0, &keys[i]) == 0, "alloc %d", i);
	CU_ASSERT(kp.slots_cap >= 40000 && kp.fifo_cap >= 20000);
	for (int i = 0; i < 20000; i++)
		UNIT_LOOP_CHECK(&loop, fabnet_keypool_free(&kp, keys[i], 0) == 0, "free %d", i);
	UNIT_LOOP_ASSERT_ALL_PASSED(&loop);
	take(&kp, 0);
	CU_ASSERT_EQUAL(kp.slots_cap, 16);
	CU_ASSERT_EQUAL(kp.fifo_cap, 16);
	fabnet_keypool_fini(&kp);
}

/* ---- a reference model -------------------------------------------------------- */

enum { M_NEVER, M_IN_USE, M_FREED };

struct key_model {
	int state;
	uint64_t free_seq, free_ns;
};

/* What the contract allows: a key not in use, fresh or past its quarantine. */
static int model_eligible(const struct key_model *m, uint64_t frees, uint64_t now,
			  uint64_t qcount, uint64_t qns)
{
	if (m->state == M_NEVER)
		return 1;
	return m->state == M_FREED && frees - m->free_seq - 1 >= qcount && now - m->free_ns >= qns;
}

/* Random allocs and frees (and bogus frees) against a per-key model: no key
 * is handed out while in use or in quarantine, and a refusal means the
 * model has no eligible key either. */
static void run_against_model(unsigned key_size, uint64_t qcount, uint64_t qns,
			      unsigned alloc_pct, uint64_t seed, unsigned long steps)
{
	struct fabnet_keypool kp;
	struct unit_loop loop = UNIT_LOOP_INIT;
	uint64_t max = key_size == 8 ? UINT64_MAX : (1ull << (8 * key_size)) - 1;
	struct key_model *model = calloc(max + 1, sizeof(*model));
	uint64_t *live = calloc(max + 1, sizeof(*live)); /* keys in use, unordered */
	size_t nlive = 0;
	uint64_t now = 0, frees = 0;
	unsigned long refusals = 0, reuses = 0;

	CU_ASSERT_PTR_NOT_NULL_FATAL(model);
	CU_ASSERT_PTR_NOT_NULL_FATAL(live);
	new_pool(&kp, key_size, qcount, qns);
	for (unsigned long step = 0; step < steps; step++) {
		unsigned op = (unsigned)(unit_rand(&seed) % 100);

		now += unit_rand(&seed) % 20;
		if (op < alloc_pct) {
			uint64_t key = 0;
			int rc = fabnet_keypool_alloc(&kp, now, &key);

			if (rc == 0) {
				int ok = key >= 1 && key <= max;

				UNIT_LOOP_CHECK(&loop, ok && model_eligible(&model[key], frees, now,
									    qcount, qns),
						"step %lu: key %llu handed out in state %d", step,
						(unsigned long long)key, ok ? model[key].state : -1);
				if (!ok)
					continue;
				reuses += model[key].state == M_FREED;
				model[key].state = M_IN_USE;
				live[nlive++] = key;
			} else {
				uint64_t k = 1;

				while (k <= max && !model_eligible(&model[k], frees, now, qcount, qns))
					k++;
				refusals++;
				UNIT_LOOP_CHECK(&loop, rc == FABNET_KEYPOOL_EXHAUSTED && k > max,
						"step %lu: alloc refused (%d) with key %llu eligible",
						step, rc, (unsigned long long)k);
			}
		} else {
			/* Mostly keys in use; one time in ten any number near the key space. */
			int bogus = nlive == 0 || unit_rand(&seed) % 10 == 0;
			size_t i = bogus ? 0 : (size_t)(unit_rand(&seed) % nlive);
			uint64_t key = bogus ? unit_rand(&seed) % (max + 50) : live[i];
			int expect, rc;

			if (bogus && key <= max && model[key].state == M_IN_USE)
				for (i = 0; live[i] != key; i++)
					;
			expect = key >= 1 && key <= max && model[key].state == M_IN_USE ? 0 : -1;
			rc = fabnet_keypool_free(&kp, key, now);
			UNIT_LOOP_CHECK(&loop, rc == expect, "step %lu: free of %llu (state %d): %d",
					step, (unsigned long long)key,
					key <= max ? model[key].state : -1, rc);
			if (expect == 0) {
				model[key].state = M_FREED;
				model[key].free_seq = frees++;
				model[key].free_ns = now;
				live[i] = live[--nlive];
			}
		}
		UNIT_LOOP_CHECK(&loop, fabnet_keypool_in_use(&kp) == nlive,
				"step %lu: in use %zu, model %zu", step, fabnet_keypool_in_use(&kp),
				nlive);
		/* Memory stays proportional to what is stored (alloc gives back
		 * what frees left over). */
		if (op < alloc_pct)
			UNIT_LOOP_CHECK(&loop, kp.slots_cap <= 16 + 8 * (nlive + kp.quarantined) &&
					kp.fifo_cap <= 16 + 4 * (nlive + kp.quarantined),
					"step %lu: table %zu ring %zu for %zu + %zu keys", step,
					kp.slots_cap, kp.fifo_cap, nlive, kp.quarantined);
	}
	UNIT_LOOP_ASSERT_ALL_PASSED(&loop);
	/* The run went through the interesting states. */
	UNIT_ASSERT_MSG(kp.laps > 0 && reuses > 0, "key_size %u: %llu laps, %lu reuses",
			key_size, (unsigned long long)kp.laps, reuses);
	if (key_size == 1)
		UNIT_ASSERT_MSG(refusals > 0, "key_size 1, quarantine %llu/%llu: no refusal",
				(unsigned long long)qcount, (unsigned long long)qns);
	fabnet_keypool_fini(&kp);
	free(model);
	free(live);
}

static void random_use_of_a_1_byte_space_matches_the_model(void)
{
	run_against_model(1, 0, 0, 55, 1, 100000);   /* no quarantine */
	run_against_model(1, 20, 100, 55, 2, 100000); /* both conditions */
	run_against_model(1, 200, 0, 55, 3, 100000); /* count only, near the whole space */
	run_against_model(1, 0, 5000, 60, 4, 100000); /* time only */
}

static void random_use_of_a_2_byte_space_matches_the_model(void)
{
	run_against_model(2, 50, 500, 70, 5, 100000);
}

void register_keypool_tests(void)
{
	CU_pSuite s = CU_add_suite("keypool", NULL, NULL);

	UNIT_ADD(s, init_refuses_key_sizes_outside_1_to_8);
	UNIT_ADD(s, the_key_space_follows_the_key_size);
	UNIT_ADD(s, keys_start_at_1_and_count_up);
	UNIT_ADD(s, keys_in_use_are_unique);
	UNIT_ADD(s, the_counter_never_reuses_a_freed_key);
	UNIT_ADD(s, a_key_freed_early_waits_for_the_fresh_keys);
	UNIT_ADD(s, a_one_byte_key_space_runs_out_after_255_keys);
	UNIT_ADD(s, without_quarantine_a_freed_key_comes_back_once_keys_run_out);
	UNIT_ADD(s, quarantine_by_count_is_enforced);
	UNIT_ADD(s, quarantine_by_time_is_enforced);
	UNIT_ADD(s, quarantine_needs_both_count_and_time);
	UNIT_ADD(s, time_going_backwards_only_lengthens_the_quarantine);
	UNIT_ADD(s, a_double_free_is_rejected);
	UNIT_ADD(s, a_double_free_during_quarantine_is_rejected);
	UNIT_ADD(s, a_free_of_a_key_never_handed_out_is_rejected);
	UNIT_ADD(s, memory_follows_the_keys_in_use_and_in_quarantine);
	UNIT_ADD(s, random_use_of_a_1_byte_space_matches_the_model);
	UNIT_ADD(s, random_use_of_a_2_byte_space_matches_the_model);
}
