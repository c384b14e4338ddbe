/*
 * membw: single-thread memcpy bandwidth of this machine, the ceiling for a
 * same-host transport that copies each byte once (libfabric shm with CMA or
 * a bounce buffer copy on each side is bounded by it).
 *
 *   membw [--size BYTES] [--runs N] [--min-ms MS]
 *
 * Copies a --size buffer (default 256 MiB, much larger than any cache) into
 * another one; each run repeats the copy until at least --min-ms has passed
 * and reports bytes copied per second (each byte is read once and written
 * once; the figure counts it once). Prints one line per run and a final line
 *
 *   membw: size B runs N median X GB/s min Y max Z
 *
 * in decimal units (1 GB/s = 10^9 bytes/s), the median over --runs runs.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int parse_size(const char *s, size_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -1;
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	default: break;
	}
	if (*end || v == 0)
		return -1;
	*out = (size_t)v;
	return 0;
}

static void *map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		fprintf(stderr, "membw: mmap %zu bytes: %s\n", len, strerror(errno));
		exit(1);
	}
	return p;
}

int main(int argc, char **argv)
{
	size_t size = 256u << 20;
	int runs = 5, min_ms = 200;
	double *gbps;
	uint8_t *src, *dst;
	volatile uint8_t sink = 0;

	for (int i = 1; i < argc; i += 2) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			printf("usage: membw [--size BYTES(K/M/G)] [--runs N] [--min-ms MS]\n"
			       "  defaults: --size 256M --runs 5 --min-ms 200\n");
			return 0;
		}
		if (!v)
			goto bad;
		if (!strcmp(a, "--size")) {
			if (parse_size(v, &size))
				goto bad;
		} else if (!strcmp(a, "--runs")) {
			runs = atoi(v);
		} else if (!strcmp(a, "--min-ms")) {
			min_ms = atoi(v);
		} else {
			goto bad;
		}
	}
	if (runs < 1 || runs > 1000 || min_ms < 1 || min_ms > 60000)
		goto bad;

	gbps = calloc((size_t)runs, sizeof(*gbps));
	src = map(size);
	dst = map(size);
	if (!gbps) {
		fprintf(stderr, "membw: out of memory\n");
		return 1;
	}
	/* Fault every page in (and warm the TLB) before timing. */
	for (size_t k = 0; k < size; k++)
		src[k] = (uint8_t)(k * 131u + 7u);
	memset(dst, 0, size);
	memcpy(dst, src, size);

	for (int r = 0; r < runs; r++) {
		double t0 = now_s(), t;
		size_t copies = 0;
		do {
			memcpy(dst, src, size);
			sink ^= dst[(copies * 4099u) % size];
			copies++;
			t = now_s() - t0;
		} while (t * 1e3 < min_ms);
		gbps[r] = (double)size * (double)copies / t / 1e9;
		printf("run %d: %zu copies of %zu bytes in %.3f s: %.3f GB/s\n", r, copies, size, t,
		       gbps[r]);
	}
	if (memcmp(dst, src, size)) {
		fprintf(stderr, "membw: the copy differs from the source\n");
		return 1;
	}
	qsort(gbps, (size_t)runs, sizeof(*gbps), cmp_double);
	printf("membw: size %zu runs %d median %.3f GB/s min %.3f max %.3f\n", size, runs,
	       runs % 2 ? gbps[runs / 2] : (gbps[runs / 2 - 1] + gbps[runs / 2]) / 2, gbps[0],
	       gbps[runs - 1]);
	(void)sink;
	return 0;
bad:
	fprintf(stderr, "membw: bad arguments (try --help)\n");
	return 2;
}
