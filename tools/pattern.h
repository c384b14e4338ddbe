/*
 * Verifiable bytes for the tools and tests: a pattern derived from a 64-bit
 * key (every message of a test gets its own key), a canary for the bytes a
 * receive must not touch, and a monotonic clock in milliseconds. Shared by
 * fabnet-ft, fabnet-hostile and the NCCL-faithful driver, so that a byte is
 * "right" by one definition everywhere.
 */
#ifndef FABNET_TOOLS_PATTERN_H
#define FABNET_TOOLS_PATTERN_H

#include <stddef.h>
#include <stdint.h>

/* splitmix64's finaliser: a cheap, well-mixed bijection. */
uint64_t mix64(uint64_t z);
/* The key of the pattern carried by one message. */
uint64_t pat_key(uint64_t seed, size_t size, uint64_t iter);
void pat_fill(void *buf, size_t len, uint64_t key);
/* The pattern's byte at offset off. */
uint8_t pat_byte(size_t off, uint64_t key);
/* Returns 0, or -1 and describes the damage in why. */
int pat_check(const void *buf, size_t len, uint64_t key, char *why, size_t whylen);

/* The canary's byte at offset off of a buffer. */
uint8_t canary_byte(size_t off);
void canary_fill(void *buf, size_t from, size_t to);
/* Returns 0, or -1 and says which bytes in [from, to) changed. */
int canary_check(const void *buf, size_t from, size_t to, char *why, size_t whylen);

/* CLOCK_MONOTONIC in milliseconds. */
int64_t now_ms(void);

#endif
