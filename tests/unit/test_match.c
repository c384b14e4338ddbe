/*
 * NCCL's tag rule for grouped receives (src/core/match.h): a send matches
 * the first entry of the group that carries its tag and is not yet taken.
 */
#include "config.h"

#include "core/match.h"
#include "core/wire.h" /* FABNET_MAX_RECVS: the largest group */
#include "unit.h"

static void the_entry_carrying_the_tag_is_found(void)
{
	const int32_t tags[] = {10, 20, 30};

	CU_ASSERT_EQUAL(fabnet_match_tag(3, tags, 0, 10), 0);
	CU_ASSERT_EQUAL(fabnet_match_tag(3, tags, 0, 20), 1);
	CU_ASSERT_EQUAL(fabnet_match_tag(3, tags, 0, 30), 2);
}

static void the_first_free_entry_with_the_tag_wins(void)
{
	const int32_t tags[] = {7, 5, 9, 5, 5};

	CU_ASSERT_EQUAL(fabnet_match_tag(5, tags, 0, 5), 1);
}

static void duplicate_tags_are_taken_in_order(void)
{
	const int32_t tags[] = {5, 7, 5, 5, 7};
	uint32_t taken = 0;
	const int expect[] = {0, 2, 3};

	for (int k = 0; k < 3; k++) {
		int i = fabnet_match_tag(5, tags, taken, 5);

		CU_ASSERT_EQUAL(i, expect[k]);
		if (i >= 0)
			taken |= 1u << i;
	}
	CU_ASSERT_EQUAL(fabnet_match_tag(5, tags, taken, 5), -1);
	CU_ASSERT_EQUAL(fabnet_match_tag(5, tags, taken, 7), 1); /* other tags unaffected */
}

static void taken_entries_are_skipped(void)
{
	const int32_t tags[] = {3, 3, 3, 3};

	CU_ASSERT_EQUAL(fabnet_match_tag(4, tags, 0x1, 3), 1);
	CU_ASSERT_EQUAL(fabnet_match_tag(4, tags, 0x3, 3), 2);
	CU_ASSERT_EQUAL(fabnet_match_tag(4, tags, 0x5, 3), 1);
	CU_ASSERT_EQUAL(fabnet_match_tag(4, tags, 0x7, 3), 3);
	CU_ASSERT_EQUAL(fabnet_match_tag(4, tags, 0xe, 3), 0);
}

static void all_entries_taken_means_no_match(void)
{
	const int32_t tags[] = {3, 3, 3, 3};

	CU_ASSERT_EQUAL(fabnet_match_tag(4, tags, 0xf, 3), -1);
}

static void a_missing_tag_returns_minus_1(void)
{
	const int32_t tags[] = {1, 2, 3, 4};

	CU_ASSERT_EQUAL(fabnet_match_tag(4, tags, 0, 5), -1);
	CU_ASSERT_EQUAL(fabnet_match_tag(4, tags, 0, 0), -1);
	CU_ASSERT_EQUAL(fabnet_match_tag(4, tags, 0, -1), -1);
}

static void an_empty_group_matches_nothing(void)
{
	const int32_t tags[] = {42};

	CU_ASSERT_EQUAL(fabnet_match_tag(0, tags, 0, 42), -1);
}

static void entries_beyond_n_are_ignored(void)
{
	const int32_t tags[] = {1, 2, 3, 4, 5, 6, 7, 8};

	CU_ASSERT_EQUAL(fabnet_match_tag(4, tags, 0, 4), 3);
	CU_ASSERT_EQUAL(fabnet_match_tag(4, tags, 0, 5), -1);
	CU_ASSERT_EQUAL(fabnet_match_tag(4, tags, 0, 8), -1);
}

static void taken_bits_beyond_n_do_not_matter(void)
{
	const int32_t tags[] = {1, 2, 3, 4};

	CU_ASSERT_EQUAL(fabnet_match_tag(4, tags, 0xfffffff0u, 2), 1);
}

static void tags_compare_as_full_signed_32_bit_values(void)
{
	const int32_t tags[] = {INT32_MIN, -1, 0, INT32_MAX, 0x100, 1};

	CU_ASSERT_EQUAL(fabnet_match_tag(6, tags, 0, INT32_MIN), 0);
	CU_ASSERT_EQUAL(fabnet_match_tag(6, tags, 0, -1), 1);
	CU_ASSERT_EQUAL(fabnet_match_tag(6, tags, 0, 0), 2);
	CU_ASSERT_EQUAL(fabnet_match_tag(6, tags, 0, INT32_MAX), 3);
	CU_ASSERT_EQUAL(fabnet_match_tag(6, tags, 0, 0x100), 4);
	CU_ASSERT_EQUAL(fabnet_match_tag(6, tags, 0, 1), 5);
	CU_ASSERT_EQUAL(fabnet_match_tag(6, tags, 0, 0x10000), -1); /* no truncation */
}

static void a_full_group_is_matched_exactly_once_per_send(void)
{
	/* A group of 8 with repeated tags; sends arrive in an order that
	 * interleaves the tags. Each send takes a distinct entry with its tag,
	 * and equal tags are consumed lowest index first. */
	const int32_t tags[FABNET_MAX_RECVS] = {2, 1, 2, 3, 1, 2, 3, 1};
	const int32_t sends[FABNET_MAX_RECVS] = {1, 3, 2, 1, 2, 2, 1, 3};
	const int expect[FABNET_MAX_RECVS] = {1, 3, 0, 4, 2, 5, 7, 6};
	uint32_t taken = 0;

	for (int k = 0; k < FABNET_MAX_RECVS; k++) {
		int i = fabnet_match_tag(FABNET_MAX_RECVS, tags, taken, sends[k]);

		CU_ASSERT_EQUAL(i, expect[k]);
		if (i >= 0)
			taken |= 1u << i;
	}
	CU_ASSERT_EQUAL(taken, (1u << FABNET_MAX_RECVS) - 1);
	CU_ASSERT_EQUAL(fabnet_match_tag(FABNET_MAX_RECVS, tags, taken, 1), -1);
}

void register_match_tests(void)
{
	CU_pSuite s = CU_add_suite("match", NULL, NULL);

	UNIT_ADD(s, the_entry_carrying_the_tag_is_found);
	UNIT_ADD(s, the_first_free_entry_with_the_tag_wins);
	UNIT_ADD(s, duplicate_tags_are_taken_in_order);
	UNIT_ADD(s, taken_entries_are_skipped);
	UNIT_ADD(s, all_entries_taken_means_no_match);
	UNIT_ADD(s, a_missing_tag_returns_minus_1);
	UNIT_ADD(s, an_empty_group_matches_nothing);
	UNIT_ADD(s, entries_beyond_n_are_ignored);
	UNIT_ADD(s, taken_bits_beyond_n_do_not_matter);
	UNIT_ADD(s, tags_compare_as_full_signed_32_bit_values);
	UNIT_ADD(s, a_full_group_is_matched_exactly_once_per_send);
}
