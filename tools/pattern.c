/* Verifiable bytes for the tools and tests: see pattern.h. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "pattern.h"

int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t mix64(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* The key of the pattern carried by one message. */
uint64_t pat_key(uint64_t seed, size_t size, uint64_t iter)
{
	return mix64(seed ^ mix64((uint64_t)size * 0x100000001b3ull ^ mix64(iter + 0x51)));
}

void pat_fill(void *buf, size_t len, uint64_t key)
{
	uint8_t *p = buf;
	size_t k = 0;

	for (; k + 8 <= len; k += 8) {
		uint64_t w = mix64(key + k / 8);
		memcpy(p + k, &w, 8);
	}
	if (k < len) {
		uint64_t w = mix64(key + k / 8);
		memcpy(p + k, &w, len - k);
	}
}

uint8_t pat_byte(size_t off, uint64_t key)
{
	uint64_t w = mix64(key + off / 8);
	uint8_t b[8];

	memcpy(b, &w, 8);
	return b[off % 8];
}

/* Returns 0, or -1 and describes the damage in why. */
int pat_check(const void *buf, size_t len, uint64_t key, char *why, size_t whylen)
{
	const uint8_t *p = buf;
	size_t first = SIZE_MAX, last = 0, bad = 0;

	for (size_t k = 0; k < len; k += 8) {
		uint64_t w = mix64(key + k / 8);
		size_t n = len - k < 8 ? len - k : 8;

		if (memcmp(p + k, &w, n) == 0)
			continue;
		for (size_t j = 0; j < n; j++) {
			if (p[k + j] != pat_byte(k + j, key)) {
				if (first == SIZE_MAX)
					first = k + j;
				last = k + j;
				bad++;
			}
		}
	}
	if (first == SIZE_MAX)
		return 0;
	snprintf(why, whylen, "data corrupted: %zu of %zu bytes wrong, first at offset %zu "
		 "(got 0x%02x, want 0x%02x), last at %zu", bad, len, first, p[first],
		 pat_byte(first, key), last);
	return -1;
}

uint8_t canary_byte(size_t off)
{
	return (uint8_t)(0xA5 ^ (off * 0x3B) ^ (off >> 8));
}

void canary_fill(void *buf, size_t from, size_t to)
{
	uint8_t *p = buf;

	for (size_t i = from; i < to; i++)
		p[i] = canary_byte(i);
}

int canary_check(const void *buf, size_t from, size_t to, char *why, size_t whylen)
{
	const uint8_t *p = buf;

	for (size_t i = from; i < to; i++) {
		if (p[i] != canary_byte(i)) {
			size_t last = i, bad = 0;
			for (size_t j = i; j < to; j++)
				if (p[j] != canary_byte(j)) {
					last = j;
					bad++;
				}
			snprintf(why, whylen, "wrote past the received size: %zu bytes changed in "
				 "[%zu, %zu) beyond the %zu bytes sent, first at %zu, last at %zu",
				 bad, from, to, from, i, last);
			return -1;
		}
	}
	return 0;
}

