/*
 * fabnet unit tests: one CUnit suite per pure module of src/core. Each
 * test_<module>.c defines its tests as static functions named after the
 * behaviour they check and registers them in register_<module>_tests().
 */
#ifndef FABNET_TESTS_UNIT_H
#define FABNET_TESTS_UNIT_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#include <CUnit/Basic.h>

void register_config_tests(void);
void register_wire_tests(void);
void register_pool_tests(void);
void register_tags_tests(void);
void register_regcache_tests(void);
void register_keypool_tests(void);
void register_topo_tests(void);
void register_rails_tests(void);

/* Registers a test under its function name, so the report reads like a list
 * of behaviours. Registry errors are checked once, in main(). */
#define UNIT_ADD(suite, fn) ((void)CU_add_test((suite), #fn, (fn)))

/* CU_ASSERT with a printf-style description of the case, for tests that
 * check many cases in a loop or through a helper. */
#define UNIT_ASSERT_MSG(cond, ...) unit_assert_msg(!!(cond), __LINE__, __FILE__, #cond, __VA_ARGS__)

static inline void unit_vformat(char *buf, size_t len, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));
static inline void unit_vformat(char *buf, size_t len, const char *fmt, va_list ap)
{
	vsnprintf(buf, len, fmt, ap);
}

static inline void unit_assert_msg(int ok, unsigned line, const char *file, const char *cond,
				   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static inline void unit_assert_msg(int ok, unsigned line, const char *file, const char *cond,
				   const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (!ok) {
		va_start(ap, fmt);
		unit_vformat(msg, sizeof(msg), fmt, ap);
		va_end(ap);
	}
	CU_assertImplementation(ok ? CU_TRUE : CU_FALSE, line, ok ? cond : msg, file, "",
				CU_FALSE);
}

/*
 * A deterministic generator (splitmix64): a seeded test sees the same
 * values on every machine and every run, so a failure can be replayed.
 */
static inline uint64_t unit_rand(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline void unit_rand_bytes(uint64_t *state, void *buf, size_t len)
{
	uint8_t *b = buf;

	for (size_t i = 0; i < len; i++)
		b[i] = (uint8_t)unit_rand(state);
}

/*
 * Loops over thousands of cases record one assertion, not thousands: every
 * case is checked, failures are counted, and the first one is described in
 * the CUnit failure report, with the count of all failed cases.
 */
struct unit_loop {
	unsigned long cases;
	unsigned long failed;
	char first[256]; /* description of the first failed case */
};

#define UNIT_LOOP_INIT {0, 0, ""}

#define UNIT_LOOP_CHECK(loop, cond, ...) unit_loop_check((loop), !!(cond), __VA_ARGS__)

static inline void unit_loop_check(struct unit_loop *loop, int ok, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static inline void unit_loop_check(struct unit_loop *loop, int ok, const char *fmt, ...)
{
	va_list ap;

	loop->cases++;
	if (ok || loop->failed++ > 0)
		return;
	va_start(ap, fmt);
	unit_vformat(loop->first, sizeof(loop->first), fmt, ap);
	va_end(ap);
}

/* One assertion for the whole loop: it fails if any case failed, or if the
 * loop checked no case at all. */
#define UNIT_LOOP_ASSERT_ALL_PASSED(loop)                                                  \
	unit_assert_msg((loop)->failed == 0 && (loop)->cases > 0, __LINE__, __FILE__,      \
			"every case of the loop passed", "%lu of %lu cases failed; first: %s", \
			(loop)->failed, (loop)->cases, (loop)->first)

#endif
