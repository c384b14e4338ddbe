/*
 * What each collective of tests/gpu/nccl_e2e.cu must leave in GPU memory,
 * element by element: the one definition shared by the driver's check kernel
 * and the CPU self-test (nccl_e2e_selftest.c, run by make check), so the
 * expectations are tested where there is no GPU.
 *
 * Every buffer is float. Inputs are small integers (-125..125) from a hash of
 * (rank, index, seed), so sums over many ranks are exact in float whatever
 * order NCCL adds in, and an element landing at the wrong offset or from the
 * wrong rank or run is caught. Outputs are poisoned with all-ones bits (a NaN,
 * equal to nothing) before each checked run, and E2E_CANARY elements after the
 * output must still hold the poison afterwards. The send buffer must come back
 * unchanged (all operations are out of place).
 */
#ifndef NCCL_E2E_CHECK_H
#define NCCL_E2E_CHECK_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define E2E_HD __host__ __device__
#else
#define E2E_HD
#endif

#define E2E_POISON 0xffffffffu
#define E2E_CANARY 1024 /* elements after the output that nobody may write */

enum e2e_op { E2E_ALL_REDUCE, E2E_ALL_GATHER, E2E_REDUCE_SCATTER, E2E_BROADCAST, E2E_SENDRECV,
	      E2E_NOPS };

static const char *const e2e_op_names[E2E_NOPS] = {"all_reduce", "all_gather", "reduce_scatter",
						    "broadcast", "sendrecv"};

/* One checked run, as one rank sees it. */
struct e2e_case {
	int op, rank, nranks, root; /* root: broadcast only */
	size_t chunk;               /* elements per rank (see e2e_geometry) */
	unsigned seed;
};

/* Buffer sizes in elements for a run of `bytes` (nccl-tests' convention: the
 * size is the larger buffer: all_gather's output, reduce_scatter's input).
 * Sets c->chunk; returns 0 when the size holds no element per rank. */
static inline int e2e_geometry(struct e2e_case *c, size_t bytes, size_t *in_elems,
			       size_t *out_elems)
{
	size_t n = bytes / sizeof(float);

	switch (c->op) {
	case E2E_ALL_GATHER:
		c->chunk = n / (size_t)c->nranks;
		*in_elems = c->chunk;
		*out_elems = c->chunk * (size_t)c->nranks;
		break;
	case E2E_REDUCE_SCATTER:
		c->chunk = n / (size_t)c->nranks;
		*in_elems = c->chunk * (size_t)c->nranks;
		*out_elems = c->chunk;
		break;
	default:
		c->chunk = n;
		*in_elems = *out_elems = n;
	}
	return c->chunk > 0;
}

static inline E2E_HD float e2e_input(int rank, size_t i, unsigned seed)
{
	uint64_t x = (uint64_t)i * 0x9e3779b97f4a7c15ull + (uint64_t)(rank + 1) * 0xbf58476d1ce4e5b9ull +
		     (uint64_t)seed * 0x94d049bb133111ebull;

	x ^= x >> 31;
	x *= 0xd6e8feb46e2ed1ebull;
	x ^= x >> 29;
	return (float)((int)(x % 251u) - 125);
}

/* Output element j of the rank described by c. */
static inline E2E_HD float e2e_expect(const struct e2e_case *c, size_t j)
{
	float sum = 0;
	int r;

	switch (c->op) {
	case E2E_ALL_REDUCE:
		for (r = 0; r < c->nranks; r++)
			sum += e2e_input(r, j, c->seed);
		return sum;
	case E2E_ALL_GATHER:
		return e2e_input((int)(j / c->chunk), j % c->chunk, c->seed);
	case E2E_REDUCE_SCATTER:
		for (r = 0; r < c->nranks; r++)
			sum += e2e_input(r, (size_t)c->rank * c->chunk + j, c->seed);
		return sum;
	case E2E_BROADCAST:
		return e2e_input(c->root, j, c->seed);
	default: /* sendrecv: a ring, each rank receives from the previous one */
		return e2e_input((c->rank + c->nranks - 1) % c->nranks, j, c->seed);
	}
}

static inline E2E_HD uint32_t e2e_bits(float f)
{
	uint32_t u;

	memcpy(&u, &f, sizeof(u));
	return u;
}

/* Element k of the checked space: the output [0, out), then the canary
 * [out, out + E2E_CANARY), then the send buffer [.., + in). Returns 1 if it
 * holds what it must; *want gets the expected bits. */
static inline E2E_HD int e2e_elem_ok(const struct e2e_case *c, size_t out, size_t k,
				     uint32_t got, uint32_t *want)
{
	if (k < out)
		*want = e2e_bits(e2e_expect(c, k));
	else if (k < out + E2E_CANARY)
		*want = E2E_POISON;
	else
		*want = e2e_bits(e2e_input(c->rank, k - out - E2E_CANARY, c->seed));
	return got == *want;
}

/* nccl-tests' bus bandwidth factor: what each rank's link carries per byte
 * of the operation's size. */
static inline double e2e_busbw_factor(int op, int nranks)
{
	double n = nranks;

	switch (op) {
	case E2E_ALL_REDUCE:
		return 2.0 * (n - 1) / n;
	case E2E_ALL_GATHER:
	case E2E_REDUCE_SCATTER:
		return (n - 1) / n;
	default:
		return 1.0;
	}
}

/* "all" or a comma-separated list of op names; sets bit i for op i. Returns
 * 0, or -1 for an unknown name. */
static inline int e2e_parse_ops(const char *list, unsigned *mask)
{
	const char *p = list;

	*mask = 0;
	if (!strcmp(list, "all")) {
		*mask = (1u << E2E_NOPS) - 1;
		return 0;
	}
	while (*p) {
		size_t len = strcspn(p, ",");
		int i, found = 0;

		for (i = 0; i < E2E_NOPS; i++) {
			if (strlen(e2e_op_names[i]) == len && !strncmp(p, e2e_op_names[i], len)) {
				*mask |= 1u << i;
				found = 1;
			}
		}
		if (!found)
			return -1;
		p += len;
		if (*p == ',')
			p++;
	}
	return *mask ? 0 : -1;
}

/* A byte count with an optional K, M or G (powers of 1024). 0 or -1. */
static inline int e2e_parse_size(const char *s, size_t *out)
{
	unsigned long long v = 0;
	int digits = 0, shift = 0;

	for (; *s >= '0' && *s <= '9'; s++, digits++) {
		if (v > (~0ull - 9) / 10)
			return -1;
		v = v * 10 + (unsigned)(*s - '0');
	}
	if (!digits)
		return -1;
	switch (*s) {
	case 'G': case 'g': shift = 30; s++; break;
	case 'M': case 'm': shift = 20; s++; break;
	case 'K': case 'k': shift = 10; s++; break;
	default: break;
	}
	if (*s || v > (1ull << 40) >> shift) /* 1 TiB is more than any GPU run needs */
		return -1;
	*out = (size_t)(v << shift);
	return 0;
}

#endif
