/*
 * The CPU side of tests/gpu/nccl-e2e, where there is no GPU: the expectations
 * its check kernel applies (nccl_e2e_check.h) must equal each collective's
 * definition computed here from the ranks' inputs, and the element check must
 * catch what a broken transport would leave behind (a wrong, shifted, stale or
 * missing element, a write past the output, a changed send buffer).
 * Exit 0 when every check passed, 1 otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nccl_e2e_check.h"

static int passed, failed;

#define CHECK(cond, ...)                                                  \
	do {                                                              \
		if (cond) {                                               \
			passed++;                                         \
		} else {                                                  \
			failed++;                                         \
			fprintf(stderr, "nccl-e2e-selftest: FAIL %s:%d: ", __FILE__, __LINE__); \
			fprintf(stderr, __VA_ARGS__);                     \
			fputc('\n', stderr);                              \
		}                                                         \
	} while (0)

/* The output rank `rank` must hold, from the definition of the operation. */
static void reference(const struct e2e_case *c, float **in, float *out, size_t out_elems)
{
	for (size_t j = 0; j < out_elems; j++) {
		float v = 0;
		switch (c->op) {
		case E2E_ALL_REDUCE:
			for (int r = 0; r < c->nranks; r++)
				v += in[r][j];
			break;
		case E2E_ALL_GATHER: /* rank r's whole input lands at r * chunk */
			v = in[j / c->chunk][j % c->chunk];
			break;
		case E2E_REDUCE_SCATTER: /* this rank's slice of the element-wise sum */
			for (int r = 0; r < c->nranks; r++)
				v += in[r][(size_t)c->rank * c->chunk + j];
			break;
		case E2E_BROADCAST:
			v = in[c->root][j];
			break;
		default:
			v = in[(c->rank + c->nranks - 1) % c->nranks][j];
		}
		out[j] = v;
	}
}

/* What the check kernel counts, on a host copy laid out as the kernel sees
 * it: output, canary, send buffer. *first gets the first wrong element. */
static size_t count_wrong(const struct e2e_case *c, const uint32_t *buf, size_t out, size_t in,
			  size_t *first)
{
	size_t wrong = 0;
	uint32_t want;

	*first = (size_t)-1;
	for (size_t k = 0; k < out + E2E_CANARY + in; k++) {
		if (!e2e_elem_ok(c, out, k, buf[k], &want)) {
			if (!wrong)
				*first = k;
			wrong++;
		}
	}
	return wrong;
}

/* A rank's buffers after a correct run: reference output, untouched canary,
 * its own input. Caller frees. */
static uint32_t *correct_layout(const struct e2e_case *c, float **in, size_t in_elems,
				size_t out_elems)
{
	uint32_t *buf = malloc((out_elems + E2E_CANARY + in_elems) * sizeof(*buf));
	float *ref = malloc((out_elems + 1) * sizeof(*ref));

	if (!buf || !ref)
		abort();
	reference(c, in, ref, out_elems);
	for (size_t j = 0; j < out_elems; j++)
		buf[j] = e2e_bits(ref[j]);
	for (size_t j = 0; j < E2E_CANARY; j++)
		buf[out_elems + j] = E2E_POISON;
	for (size_t j = 0; j < in_elems; j++)
		buf[out_elems + E2E_CANARY + j] = e2e_bits(in[c->rank][j]);
	free(ref);
	return buf;
}

/* One rank's output of one run equals the definition, and the kernel's check
 * accepts exactly that layout. */
static void semantics_case(int op, int rank, int n, int root, size_t bytes, unsigned seed)
{
	struct e2e_case c = {.op = op, .rank = rank, .nranks = n, .root = root, .seed = seed};
	size_t in_e, out_e, first, wrong;
	float *in[8], want;
	uint32_t *buf;

	if (!e2e_geometry(&c, bytes, &in_e, &out_e)) {
		CHECK(0, "%s: %zu bytes on %d ranks hold no element", e2e_op_names[op], bytes, n);
		return;
	}
	for (int r = 0; r < n; r++) {
		in[r] = malloc(in_e * sizeof(float));
		for (size_t i = 0; i < in_e; i++)
			in[r][i] = e2e_input(r, i, seed);
	}
	buf = correct_layout(&c, in, in_e, out_e);
	for (size_t j = 0; j < out_e; j++) {
		memcpy(&want, &buf[j], sizeof(want));
		if (e2e_expect(&c, j) != want) {
			CHECK(0, "%s rank %d/%d root %d: element %zu expected %g, the definition "
			      "says %g", e2e_op_names[op], rank, n, root, j, e2e_expect(&c, j), want);
			break;
		}
	}
	wrong = count_wrong(&c, buf, out_e, in_e, &first);
	CHECK(wrong == 0, "%s rank %d/%d: a correct result has %zu wrong elements (first %zu)",
	      e2e_op_names[op], rank, n, wrong, first);
	free(buf);
	for (int r = 0; r < n; r++)
		free(in[r]);
}

/* Every operation, rank and root, on 1 to 8 ranks, at sizes that are and are
 * not multiples of the element size. */
static void test_semantics(void)
{
	static const int nranks_list[] = {1, 2, 3, 4, 8};
	static const size_t per_rank[] = {1, 7, 37};

	for (size_t a = 0; a < sizeof(nranks_list) / sizeof(nranks_list[0]); a++) {
		int n = nranks_list[a];
		for (size_t b = 0; b < sizeof(per_rank) / sizeof(per_rank[0]); b++) {
			size_t bytes = per_rank[b] * (size_t)n * sizeof(float) + 3;
			for (int op = 0; op < E2E_NOPS; op++)
				for (int root = 0; root < (op == E2E_BROADCAST ? n : 1); root++)
					for (int rank = 0; rank < n; rank++)
						semantics_case(op, rank, n, root, bytes,
							       (unsigned)(op * 7 + b));
		}
	}
}

/* An all_gather result on rank 1 of 2, then damaged the ways a broken
 * transport would damage it; each damage must be counted, at the right place. */
struct damage {
	struct e2e_case c;
	size_t in_e, out_e, total;
	float *in[2];
	uint32_t *good, *buf;
};

static void damage_setup(struct damage *d)
{
	memset(d, 0, sizeof(*d));
	d->c = (struct e2e_case){.op = E2E_ALL_GATHER, .rank = 1, .nranks = 2, .seed = 5};
	e2e_geometry(&d->c, 4096 * sizeof(float), &d->in_e, &d->out_e);
	for (int r = 0; r < 2; r++) {
		d->in[r] = malloc(d->in_e * sizeof(float));
		for (size_t i = 0; i < d->in_e; i++)
			d->in[r][i] = e2e_input(r, i, d->c.seed);
	}
	d->good = correct_layout(&d->c, d->in, d->in_e, d->out_e);
	d->total = d->out_e + E2E_CANARY + d->in_e;
	d->buf = malloc(d->total * sizeof(*d->buf));
}

static void damage_reset(struct damage *d)
{
	memcpy(d->buf, d->good, d->total * sizeof(*d->buf));
}

static size_t damage_count(struct damage *d, size_t *first)
{
	return count_wrong(&d->c, d->buf, d->out_e, d->in_e, first);
}

static void test_detect_single(struct damage *d)
{
	size_t first, wrong, out = d->out_e;

	damage_reset(d);
	d->buf[3000] = e2e_bits(e2e_expect(&d->c, 3000) + 1);
	wrong = damage_count(d, &first);
	CHECK(wrong == 1 && first == 3000, "one wrong element: counted %zu, first %zu", wrong, first);

	damage_reset(d);
	for (size_t j = 0; j < out; j++)
		d->buf[j] = E2E_POISON; /* the operation never wrote */
	wrong = damage_count(d, &first);
	CHECK(wrong == out && first == 0, "untouched output: %zu of %zu counted", wrong, out);

	damage_reset(d);
	d->buf[out + E2E_CANARY - 1] = 0; /* a write just past the output */
	wrong = damage_count(d, &first);
	CHECK(wrong == 1 && first == out + E2E_CANARY - 1, "canary write: %zu, first %zu", wrong,
	      first);

	damage_reset(d);
	d->buf[out + E2E_CANARY + 10] ^= 1; /* the send buffer changed */
	wrong = damage_count(d, &first);
	CHECK(wrong == 1 && first == out + E2E_CANARY + 10, "send buffer change: %zu, first %zu",
	      wrong, first);
}

static void test_detect_misplaced(struct damage *d)
{
	struct e2e_case prev = d->c;
	size_t first, wrong, in = d->in_e, out = d->out_e;

	/* rank 0's chunk shifted by one element: nearly all of it must be wrong */
	damage_reset(d);
	memmove(d->buf + 1, d->buf, (in - 1) * sizeof(*d->buf));
	wrong = damage_count(d, &first);
	CHECK(wrong > in * 9 / 10, "shifted chunk: only %zu of %zu counted", wrong, in);

	/* the two ranks' chunks swapped */
	damage_reset(d);
	memcpy(d->buf, d->good + in, in * sizeof(*d->buf));
	memcpy(d->buf + in, d->good, in * sizeof(*d->buf));
	wrong = damage_count(d, &first);
	CHECK(wrong > out * 9 / 10, "swapped chunks: only %zu of %zu counted", wrong, out);

	/* a stale result: the right operation, from the previous run's inputs */
	damage_reset(d);
	prev.seed = d->c.seed - 1;
	for (size_t j = 0; j < out; j++)
		d->buf[j] = e2e_bits(e2e_expect(&prev, j));
	wrong = damage_count(d, &first);
	CHECK(wrong > out * 9 / 10, "stale result: only %zu of %zu counted", wrong, out);
}

/* Another rank's reduce_scatter slice is not this rank's. */
static void test_detect_other_rank(void)
{
	struct e2e_case r0 = {.op = E2E_REDUCE_SCATTER, .rank = 0, .nranks = 2, .seed = 9};
	struct e2e_case r1 = r0;
	size_t in_e, out_e, n = 0;

	r1.rank = 1;
	e2e_geometry(&r0, 2048 * sizeof(float), &in_e, &out_e);
	e2e_geometry(&r1, 2048 * sizeof(float), &in_e, &out_e);
	for (size_t j = 0; j < out_e; j++)
		n += e2e_expect(&r0, j) != e2e_expect(&r1, j);
	CHECK(n > out_e * 9 / 10, "ranks' reduce_scatter slices differ in only %zu of %zu", n,
	      out_e);
}

static void test_detection(void)
{
	struct damage d;

	damage_setup(&d);
	test_detect_single(&d);
	test_detect_misplaced(&d);
	test_detect_other_rank();
	free(d.buf);
	free(d.good);
	free(d.in[0]);
	free(d.in[1]);
}

static void test_geometry(void)
{
	struct e2e_case c = {.nranks = 2};
	size_t in_e, out_e;

	c.op = E2E_ALL_GATHER;
	CHECK(e2e_geometry(&c, 8, &in_e, &out_e) && in_e == 1 && out_e == 2 && c.chunk == 1,
	      "all_gather 8 B on 2 ranks: in %zu out %zu", in_e, out_e);
	c.op = E2E_REDUCE_SCATTER;
	CHECK(e2e_geometry(&c, 8, &in_e, &out_e) && in_e == 2 && out_e == 1,
	      "reduce_scatter 8 B on 2 ranks: in %zu out %zu", in_e, out_e);
	CHECK(!e2e_geometry(&c, 4, &in_e, &out_e), "reduce_scatter of 4 B on 2 ranks must be refused");
	c.op = E2E_ALL_REDUCE;
	CHECK(e2e_geometry(&c, 1u << 30, &in_e, &out_e) && in_e == (1u << 28) && out_e == in_e,
	      "all_reduce 1 GiB: %zu elements", in_e);
	c.op = E2E_SENDRECV;
	CHECK(e2e_geometry(&c, 10, &in_e, &out_e) && in_e == 2, "sendrecv 10 B: %zu elements", in_e);
}

static void test_factors_and_inputs(void)
{
	CHECK(e2e_busbw_factor(E2E_ALL_REDUCE, 2) == 1.0, "all_reduce factor on 2 ranks");
	CHECK(e2e_busbw_factor(E2E_ALL_REDUCE, 8) == 1.75, "all_reduce factor on 8 ranks");
	CHECK(e2e_busbw_factor(E2E_ALL_GATHER, 2) == 0.5, "all_gather factor on 2 ranks");
	CHECK(e2e_busbw_factor(E2E_REDUCE_SCATTER, 4) == 0.75, "reduce_scatter factor on 4 ranks");
	CHECK(e2e_busbw_factor(E2E_BROADCAST, 2) == 1.0 && e2e_busbw_factor(E2E_SENDRECV, 2) == 1.0,
	      "broadcast and sendrecv factors");
	/* inputs are small integers and not constant, so sums are exact and informative */
	{
		int lo = 0, hi = 0, distinct = 0;
		float prev = e2e_input(0, 0, 1);
		for (size_t i = 0; i < 100000; i++) {
			float v = e2e_input((int)(i % 64), i, 1);
			lo = v < lo ? (int)v : lo;
			hi = v > hi ? (int)v : hi;
			distinct += v != prev;
			prev = v;
			if (v != (float)(int)v) {
				CHECK(0, "input %zu is %g, not an integer", i, v);
				break;
			}
		}
		CHECK(lo >= -125 && hi <= 125 && hi - lo > 200, "inputs span %d..%d", lo, hi);
		CHECK(distinct > 99000, "only %d of 100000 neighbouring inputs differ", distinct);
	}
}

static void test_parsing(void)
{
	unsigned mask;
	size_t v;

	CHECK(e2e_parse_ops("all", &mask) == 0 && mask == 0x1f, "ops all: %#x", mask);
	CHECK(e2e_parse_ops("all_reduce,sendrecv", &mask) == 0 && mask == 0x11, "two ops: %#x", mask);
	CHECK(e2e_parse_ops("broadcast", &mask) == 0 && mask == 1u << E2E_BROADCAST, "broadcast");
	CHECK(e2e_parse_ops("all_reduce,bogus", &mask) == -1, "an unknown op must be refused");
	CHECK(e2e_parse_ops("", &mask) == -1 && e2e_parse_ops(",,", &mask) == -1, "empty op lists");
	CHECK(e2e_parse_ops("all_reduc", &mask) == -1, "a prefix is not an op");
	CHECK(e2e_parse_size("8", &v) == 0 && v == 8, "size 8");
	CHECK(e2e_parse_size("1K", &v) == 0 && v == 1024, "size 1K");
	CHECK(e2e_parse_size("64m", &v) == 0 && v == 64u << 20, "size 64m");
	CHECK(e2e_parse_size("1G", &v) == 0 && v == 1u << 30, "size 1G");
	CHECK(e2e_parse_size("1024G", &v) == 0 && v == 1ull << 40, "size 1024G");
	CHECK(e2e_parse_size("1025G", &v) == -1, "sizes above 1 TiB are refused");
	CHECK(e2e_parse_size("99999999999999999999", &v) == -1, "an overflowing size is refused");
	CHECK(e2e_parse_size("", &v) == -1 && e2e_parse_size("K", &v) == -1, "sizes without digits");
	CHECK(e2e_parse_size("12x", &v) == -1 && e2e_parse_size("1KB", &v) == -1 &&
	      e2e_parse_size("-8", &v) == -1, "sizes with junk");
}

int main(void)
{
	test_semantics();
	test_detection();
	test_geometry();
	test_factors_and_inputs();
	test_parsing();
	printf("nccl-e2e-selftest: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
