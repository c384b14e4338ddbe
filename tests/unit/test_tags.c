/*
 * Per-tag counts (src/protocol/tags.c): the k-th send with a tag pairs with
 * the k-th receive entry with it, so each side keeps a count per tag, for
 * as many tags as a comm uses (NCCL: a few; other users: one per message).
 */
#include "config.h"

#include "protocol/internal.h"
#include "unit.h"

static void a_new_table_knows_no_tag(void)
{
	struct fabnet_tags t = {0};

	CU_ASSERT_PTR_NULL(fabnet_tag_find(&t, 0));
	CU_ASSERT_EQUAL(fabnet_tag_count_of(&t, 5), 0);
	fabnet_tags_free(&t);
}

static void get_creates_a_count_at_0_and_finds_it_again(void)
{
	struct fabnet_tags t = {0};
	struct fabnet_tag_count *c = fabnet_tag_get(&t, -7);

	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	CU_ASSERT_EQUAL(c->tag, -7);
	CU_ASSERT_EQUAL(c->n, 0);
	c->n = 3;
	CU_ASSERT_PTR_EQUAL(fabnet_tag_get(&t, -7), c);
	CU_ASSERT_EQUAL(fabnet_tag_count_of(&t, -7), 3);
	CU_ASSERT_EQUAL(t.n, 1);
	fabnet_tags_free(&t);
}

/* A tag per message (fabnet-ft's soak does that): counts survive the table
 * doubling, and no two tags share one. */
static void counts_of_100000_tags_survive_growth(void)
{
	struct fabnet_tags t = {0};
	struct unit_loop loop = UNIT_LOOP_INIT;

	for (int32_t tag = 0; tag < 100000; tag++) {
		struct fabnet_tag_count *c = fabnet_tag_get(&t, tag * 8);
		CU_ASSERT_PTR_NOT_NULL_FATAL(c);
		c->n = (uint32_t)tag + 1;
	}
	CU_ASSERT_EQUAL(t.n, 100000);
	CU_ASSERT(t.cap >= 2 * t.n);
	for (int32_t tag = 0; tag < 100000; tag++)
		UNIT_LOOP_CHECK(&loop, fabnet_tag_count_of(&t, tag * 8) == (uint32_t)tag + 1,
				"tag %d counts %u, not %d", tag * 8, fabnet_tag_count_of(&t, tag * 8),
				tag + 1);
	CU_ASSERT_PTR_NULL(fabnet_tag_find(&t, 1)); /* never used */
	UNIT_LOOP_ASSERT_ALL_PASSED(&loop);
	fabnet_tags_free(&t);
}

static void order_of_indices_wraps_around(void)
{
	CU_ASSERT(fabnet_before(1, 2));
	CU_ASSERT(!fabnet_before(2, 2));
	CU_ASSERT(fabnet_before(0xffffffffu, 0));
	CU_ASSERT(!fabnet_before(0, 0xffffffffu));
	/* the 24 bits a CTS entry carries */
	CU_ASSERT(fabnet_before24(0, 1));
	CU_ASSERT(!fabnet_before24(1, 1));
	CU_ASSERT(!fabnet_before24(1, 0));
	CU_ASSERT(fabnet_before24(FABNET_TAGSEQ_MASK, 0));
	CU_ASSERT(!fabnet_before24(0, FABNET_TAGSEQ_MASK));
}

void register_tags_tests(void)
{
	CU_pSuite s = CU_add_suite("tags", NULL, NULL);

	UNIT_ADD(s, a_new_table_knows_no_tag);
	UNIT_ADD(s, get_creates_a_count_at_0_and_finds_it_again);
	UNIT_ADD(s, counts_of_100000_tags_survive_growth);
	UNIT_ADD(s, order_of_indices_wraps_around);
}
