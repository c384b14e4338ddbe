/*
 * Configuration parsing (src/core/config.h). fabnet_config_parse() reads
 * variables only through the lookup function it is given; these tests give it
 * a small fake environment, reset before every test.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "unit.h"

/* The defaults a user gets with no FABNET_* variable set. */
#define DEFAULT_EAGER_MAX 8192
#define DEFAULT_RX_BUFFERS 256
#define DEFAULT_TX_BUFFERS 1024
#define DEFAULT_MAX_WRITE 0
#define DEFAULT_WRITES_IN_FLIGHT 4
#define DEFAULT_CONNECT_TIMEOUT_MS 30000
#define DEFAULT_LINK_SPEED_MBPS 100000

/* ---- a fake environment ------------------------------------------------- */
#define FAKE_ENV_MAX 16

static struct {
	const char *name;
	const char *value;
} fake_env[FAKE_ENV_MAX];
static int fake_env_n;

static void env_clear(void)
{
	memset(fake_env, 0, sizeof(fake_env));
	fake_env_n = 0;
}

/* Sets (or replaces) one variable; value NULL removes it. */
static void env_set(const char *name, const char *value)
{
	for (int i = 0; i < fake_env_n; i++) {
		if (!strcmp(fake_env[i].name, name)) {
			fake_env[i].value = value;
			return;
		}
	}
	CU_ASSERT_FATAL(fake_env_n < FAKE_ENV_MAX);
	fake_env[fake_env_n].name = name;
	fake_env[fake_env_n].value = value;
	fake_env_n++;
}

static const char *fake_lookup(const char *name)
{
	for (int i = 0; i < fake_env_n; i++)
		if (!strcmp(fake_env[i].name, name))
			return fake_env[i].value;
	return NULL;
}

static void setup(void)
{
	env_clear();
}

static struct fabnet_config cfg;
static char err[512];

/* Parses the fake environment into cfg; err is reset first. */
static int parse(void)
{
	memset(err, 0, sizeof(err));
	memset(&cfg, 0xa5, sizeof(cfg)); /* nothing may survive from before */
	return fabnet_config_parse(&cfg, fake_lookup, err, sizeof(err));
}

/* Parsing fails and err names the variable and quotes the rejected value. */
static void assert_rejected(const char *name, const char *value)
{
	int rc;

	env_clear();
	env_set(name, value);
	rc = parse();
	UNIT_ASSERT_MSG(rc == -1, "%s=\"%s\" was accepted", name, value);
	UNIT_ASSERT_MSG(rc != -1 || strstr(err, name), "error for %s=\"%s\" omits the name: %s",
			name, value, err);
	UNIT_ASSERT_MSG(rc != -1 || strstr(err, value),
			"error for %s=\"%s\" omits the value: %s", name, value, err);
}

/* Every numeric variable with its accepted bounds, as a byte count or not.
 * Keep in step with src/core/config.c and docs/configuration.md. */
static const struct numeric_var {
	const char *name;
	int is_size;
	uint64_t min, max;
} numeric_vars[] = {
	{"FABNET_EAGER_MAX", 1, 0, 1u << 20},
	{"FABNET_MAX_WRITE", 1, 0, (uint64_t)1 << 40},
	{"FABNET_RX_BUFFERS", 0, 16, 65536},
	{"FABNET_TX_BUFFERS", 0, 16, 65536},
	{"FABNET_EAGER_CREDITS", 0, 0, 256},
	{"FABNET_WRITES_IN_FLIGHT", 0, 1, 16},
	{"FABNET_CONNECT_TIMEOUT_MS", 0, 1, 3600000},
	{"FABNET_LINK_SPEED_MBPS", 0, 1, 10000000},
	{"FABNET_PEER_TIMEOUT_MS", 0, 100, 3600000},
};
#define NUM_NUMERIC_VARS (sizeof(numeric_vars) / sizeof(numeric_vars[0]))

/* ---- fabnet_parse_size --------------------------------------------------- */
static void parse_size_accepts_plain_digits(void)
{
	uint64_t v = 1;

	CU_ASSERT_EQUAL(fabnet_parse_size("0", &v), 0);
	CU_ASSERT_EQUAL(v, 0);
	CU_ASSERT_EQUAL(fabnet_parse_size("8192", &v), 0);
	CU_ASSERT_EQUAL(v, 8192);
	CU_ASSERT_EQUAL(fabnet_parse_size("18446744073709551615", &v), 0);
	CU_ASSERT_EQUAL(v, UINT64_MAX);
}

static void parse_size_suffixes_are_powers_of_1024_in_either_case(void)
{
	static const struct {
		const char *s;
		uint64_t v;
	} cases[] = {
		{"1K", 1024},         {"1k", 1024},
		{"64K", 65536},       {"1M", 1048576},
		{"1m", 1048576},      {"3M", 3145728},
		{"1G", 1073741824},   {"1g", 1073741824},
		{"0K", 0},            {"1024G", (uint64_t)1 << 40},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t v = 12345;

		CU_ASSERT_EQUAL(fabnet_parse_size(cases[i].s, &v), 0);
		CU_ASSERT_EQUAL(v, cases[i].v);
	}
}

static void parse_size_accepts_the_largest_value_that_fits_64_bits(void)
{
	uint64_t v = 0;

	/* (2^64 - 1) >> 30 gigabytes still fit; one more does not. */
	CU_ASSERT_EQUAL(fabnet_parse_size("17179869183G", &v), 0);
	CU_ASSERT_EQUAL(v, (uint64_t)17179869183ull << 30);
	CU_ASSERT_EQUAL(fabnet_parse_size("17179869184G", &v), -1);
	CU_ASSERT_EQUAL(fabnet_parse_size("17592186044415M", &v), 0);
	CU_ASSERT_EQUAL(fabnet_parse_size("17592186044416M", &v), -1);
	CU_ASSERT_EQUAL(fabnet_parse_size("18014398509481983K", &v), 0);
	CU_ASSERT_EQUAL(fabnet_parse_size("18014398509481984K", &v), -1);
}

static void parse_size_rejects_overflow(void)
{
	uint64_t v;

	CU_ASSERT_EQUAL(fabnet_parse_size("18446744073709551616", &v), -1);
	CU_ASSERT_EQUAL(fabnet_parse_size("99999999999999999999", &v), -1);
	CU_ASSERT_EQUAL(fabnet_parse_size("99999999999999999999G", &v), -1);
	CU_ASSERT_EQUAL(fabnet_parse_size("99999999999999999999K", &v), -1);
}

static void parse_size_rejects_anything_but_digits_and_one_suffix(void)
{
	static const char *bad[] = {
		"",     "K",    "12KB", "12 K", " 12",  "12 ",  "-1",    "+1",  "1.5K",
		"0x10", "12T",  "12B",  "abc",  "K12",  "1KK",  "12kib", "1e3", "1,024",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint64_t v;

		CU_ASSERT_EQUAL(fabnet_parse_size(bad[i], &v), -1);
	}
	CU_ASSERT_EQUAL(fabnet_parse_size(NULL, &(uint64_t){0}), -1);
}

/* ---- fabnet_parse_bool --------------------------------------------------- */
static void parse_bool_accepts_every_spelling_in_any_case(void)
{
	static const char *yes[] = {"1", "yes", "on", "true", "YES", "On", "TRUE", "True"};
	static const char *no[] = {"0", "no", "off", "false", "NO", "Off", "FALSE", "False"};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		int v = 0;

		CU_ASSERT_EQUAL(fabnet_parse_bool(yes[i], &v), 0);
		CU_ASSERT_EQUAL(v, 1);
	}
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		int v = 1;

		CU_ASSERT_EQUAL(fabnet_parse_bool(no[i], &v), 0);
		CU_ASSERT_EQUAL(v, 0);
	}
}

static void parse_bool_rejects_other_words(void)
{
	static const char *bad[] = {"", "2", "-1", "y", "n", "yes ", " no", "enable", "onn", "01"};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int v;

		CU_ASSERT_EQUAL(fabnet_parse_bool(bad[i], &v), -1);
	}
	CU_ASSERT_EQUAL(fabnet_parse_bool(NULL, &(int){0}), -1);
}

/* ---- fabnet_parse_uint --------------------------------------------------- */
static void parse_uint_accepts_values_within_the_range_inclusive(void)
{
	uint64_t v = 0;

	CU_ASSERT_EQUAL(fabnet_parse_uint("16", 16, 64, &v), 0);
	CU_ASSERT_EQUAL(v, 16);
	CU_ASSERT_EQUAL(fabnet_parse_uint("40", 16, 64, &v), 0);
	CU_ASSERT_EQUAL(v, 40);
	CU_ASSERT_EQUAL(fabnet_parse_uint("64", 16, 64, &v), 0);
	CU_ASSERT_EQUAL(v, 64);
	CU_ASSERT_EQUAL(fabnet_parse_uint("0", 0, 0, &v), 0);
	CU_ASSERT_EQUAL(v, 0);
	CU_ASSERT_EQUAL(fabnet_parse_uint("18446744073709551615", 0, UINT64_MAX, &v), 0);
	CU_ASSERT_EQUAL(v, UINT64_MAX);
}

static void parse_uint_rejects_values_outside_the_range(void)
{
	uint64_t v;

	CU_ASSERT_EQUAL(fabnet_parse_uint("15", 16, 64, &v), -1);
	CU_ASSERT_EQUAL(fabnet_parse_uint("65", 16, 64, &v), -1);
	CU_ASSERT_EQUAL(fabnet_parse_uint("0", 1, 64, &v), -1);
	CU_ASSERT_EQUAL(fabnet_parse_uint("18446744073709551616", 0, UINT64_MAX, &v), -1);
	CU_ASSERT_EQUAL(fabnet_parse_uint("99999999999999999999", 0, UINT64_MAX, &v), -1);
}

static void parse_uint_rejects_anything_but_decimal_digits(void)
{
	static const char *bad[] = {"", "-1", "+1", " 1", "1 ", "1x", "1K", "0x10", "1.0", "abc"};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint64_t v;

		CU_ASSERT_EQUAL(fabnet_parse_uint(bad[i], 0, UINT64_MAX, &v), -1);
	}
	CU_ASSERT_EQUAL(fabnet_parse_uint(NULL, 0, UINT64_MAX, &(uint64_t){0}), -1);
}

/* ---- fabnet_config_parse: defaults --------------------------------------- */
static void defaults_apply_when_nothing_is_set(void)
{
	CU_ASSERT_EQUAL_FATAL(parse(), 0);
	CU_ASSERT_STRING_EQUAL(cfg.provider, "");
	CU_ASSERT_STRING_EQUAL(cfg.provider_from, "");
	CU_ASSERT_STRING_EQUAL(cfg.iface, "");
	CU_ASSERT_EQUAL(cfg.eager_max, DEFAULT_EAGER_MAX);
	CU_ASSERT_EQUAL(cfg.rx_buffers, DEFAULT_RX_BUFFERS);
	CU_ASSERT_EQUAL(cfg.tx_buffers, DEFAULT_TX_BUFFERS);
	CU_ASSERT_EQUAL(cfg.max_write, DEFAULT_MAX_WRITE);
	CU_ASSERT_EQUAL(cfg.writes_in_flight, DEFAULT_WRITES_IN_FLIGHT);
	CU_ASSERT_EQUAL(cfg.connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT_MS);
	CU_ASSERT_EQUAL(cfg.link_speed_mbps, DEFAULT_LINK_SPEED_MBPS);
	CU_ASSERT_EQUAL(cfg.allow_loopback, 0);
}

static void defaults_are_marked_as_defaults(void)
{
	CU_ASSERT_EQUAL_FATAL(parse(), 0);
	CU_ASSERT_EQUAL(cfg.src_eager_max, FABNET_SRC_DEFAULT);
	CU_ASSERT_EQUAL(cfg.src_rx_buffers, FABNET_SRC_DEFAULT);
	CU_ASSERT_EQUAL(cfg.src_tx_buffers, FABNET_SRC_DEFAULT);
	CU_ASSERT_EQUAL(cfg.src_max_write, FABNET_SRC_DEFAULT);
	CU_ASSERT_EQUAL(cfg.src_writes_in_flight, FABNET_SRC_DEFAULT);
	CU_ASSERT_EQUAL(cfg.src_connect_timeout, FABNET_SRC_DEFAULT);
	CU_ASSERT_EQUAL(cfg.src_link_speed, FABNET_SRC_DEFAULT);
	CU_ASSERT_EQUAL(cfg.src_iface, FABNET_SRC_DEFAULT);
	CU_ASSERT_EQUAL(cfg.src_allow_loopback, FABNET_SRC_DEFAULT);
}

static void empty_values_count_as_unset(void)
{
	static const char *all[] = {
		"FABNET_PROVIDER",         "FI_PROVIDER",           "FABNET_IFACE",
		"FABNET_EAGER_MAX",        "FABNET_MAX_WRITE",      "FABNET_RX_BUFFERS",
		"FABNET_TX_BUFFERS",       "FABNET_WRITES_IN_FLIGHT", "FABNET_CONNECT_TIMEOUT_MS",
		"FABNET_LINK_SPEED_MBPS",  "FABNET_ALLOW_LOOPBACK",
	};

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		env_set(all[i], "");
	CU_ASSERT_EQUAL_FATAL(parse(), 0);
	CU_ASSERT_STRING_EQUAL(cfg.provider, "");
	CU_ASSERT_STRING_EQUAL(cfg.provider_from, "");
	CU_ASSERT_EQUAL(cfg.eager_max, DEFAULT_EAGER_MAX);
	CU_ASSERT_EQUAL(cfg.rx_buffers, DEFAULT_RX_BUFFERS);
	CU_ASSERT_EQUAL(cfg.link_speed_mbps, DEFAULT_LINK_SPEED_MBPS);
	CU_ASSERT_EQUAL(cfg.src_eager_max, FABNET_SRC_DEFAULT);
	CU_ASSERT_EQUAL(cfg.src_iface, FABNET_SRC_DEFAULT);
	CU_ASSERT_EQUAL(cfg.src_allow_loopback, FABNET_SRC_DEFAULT);
}

static void the_process_environment_is_not_consulted(void)
{
	/* Only the injected lookup counts: a real variable must not leak in. */
	CU_ASSERT_EQUAL_FATAL(setenv("FABNET_EAGER_MAX", "1K", 1), 0);
	CU_ASSERT_EQUAL_FATAL(setenv("FABNET_PROVIDER", "from-real-env", 1), 0);
	CU_ASSERT_EQUAL(parse(), 0);
	unsetenv("FABNET_EAGER_MAX");
	unsetenv("FABNET_PROVIDER");
	CU_ASSERT_EQUAL(cfg.eager_max, DEFAULT_EAGER_MAX);
	CU_ASSERT_STRING_EQUAL(cfg.provider, "");
}

/* ---- fabnet_config_parse: each variable ---------------------------------- */
static void eager_max_is_a_byte_count_from_the_environment(void)
{
	env_set("FABNET_EAGER_MAX", "64K");
	CU_ASSERT_EQUAL_FATAL(parse(), 0);
	CU_ASSERT_EQUAL(cfg.eager_max, 65536);
	CU_ASSERT_EQUAL(cfg.src_eager_max, FABNET_SRC_ENV);
}

static void max_write_is_a_byte_count_from_the_environment(void)
{
	env_set("FABNET_MAX_WRITE", "1G");
	CU_ASSERT_EQUAL_FATAL(parse(), 0);
	CU_ASSERT_EQUAL(cfg.max_write, (size_t)1 << 30);
	CU_ASSERT_EQUAL(cfg.src_max_write, FABNET_SRC_ENV);
}

static void rx_buffers_is_read_from_the_environment(void)
{
	env_set("FABNET_RX_BUFFERS", "512");
	CU_ASSERT_EQUAL_FATAL(parse(), 0);
	CU_ASSERT_EQUAL(cfg.rx_buffers, 512);
	CU_ASSERT_EQUAL(cfg.src_rx_buffers, FABNET_SRC_ENV);
}

static void tx_buffers_is_read_from_the_environment(void)
{
	env_set("FABNET_TX_BUFFERS", "2048");
	CU_ASSERT_EQUAL_FATAL(parse(), 0);
	CU_ASSERT_EQUAL(cfg.tx_buffers, 2048);
	CU_ASSERT_EQUAL(cfg.src_tx_buffers, FABNET_SRC_ENV);
}

static void writes_in_flight_is_read_from_the_environment(void)
{
	env_set("FABNET_WRITES_IN_FLIGHT", "8");
	CU_ASSERT_EQUAL_FATAL(parse(), 0);
	CU_ASSERT_EQUAL(cfg.writes_in_flight, 8);
	CU_ASSERT_EQUAL(cfg.src_writes_in_flight, FABNET_SRC_ENV);
}

static void connect_timeout_is_read_from_the_environment(void)
{
	env_set("FABNET_CONNECT_TIMEOUT_MS", "5000");
	CU_ASSERT_EQUAL_FATAL(parse(), 0);
	CU_ASSERT_EQUAL(cfg.connect_timeout_ms, 5000);
	CU_ASSERT_EQUAL(cfg.src_connect_timeout, FABNET_SRC_ENV);
}

static void link_speed_is_read_from_the_environment(void)
{
	env_set("FABNET_LINK_SPEED_MBPS", "400000");
	CU_ASSERT_EQUAL_FATAL(parse(), 0);
	CU_ASSERT_EQUAL(cfg.link_speed_mbps, 400000);
	CU_ASSERT_EQUAL(cfg.src_link_speed, FABNET_SRC_ENV);
}

static void iface_list_is_read_from_the_environment(void)
{
	env_set("FABNET_IFACE", "rdmap0s6,rdmap0s7");
	CU_ASSERT_EQUAL_FATAL(parse(), 0);
	CU_ASSERT_STRING_EQUAL(cfg.iface, "rdmap0s6,rdmap0s7");
	CU_ASSERT_EQUAL(cfg.src_iface, FABNET_SRC_ENV);
}

static void allow_loopback_accepts_every_bool_spelling(void)
{
	static const struct {
		const char *s;
		int v;
	} cases[] = {
		{"1", 1},  {"yes", 1}, {"on", 1},  {"true", 1},  {"TRUE", 1},
		{"0", 0},  {"no", 0},  {"off", 0}, {"false", 0}, {"Off", 0},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		env_set("FABNET_ALLOW_LOOPBACK", cases[i].s);
		CU_ASSERT_EQUAL(parse(), 0);
		CU_ASSERT_EQUAL(cfg.allow_loopback, cases[i].v);
		CU_ASSERT_EQUAL(cfg.src_allow_loopback, FABNET_SRC_ENV);
	}
}

static void setting_one_variable_leaves_the_others_at_their_defaults(void)
{
	env_set("FABNET_TX_BUFFERS", "64");
	CU_ASSERT_EQUAL_FATAL(parse(), 0);
	CU_ASSERT_EQUAL(cfg.src_tx_buffers, FABNET_SRC_ENV);
	CU_ASSERT_EQUAL(cfg.rx_buffers, DEFAULT_RX_BUFFERS);
	CU_ASSERT_EQUAL(cfg.src_rx_buffers, FABNET_SRC_DEFAULT);
	CU_ASSERT_EQUAL(cfg.src_eager_max, FABNET_SRC_DEFAULT);
	CU_ASSERT_EQUAL(cfg.src_max_write, FABNET_SRC_DEFAULT);
	CU_ASSERT_EQUAL(cfg.src_writes_in_flight, FABNET_SRC_DEFAULT);
	CU_ASSERT_EQUAL(cfg.src_connect_timeout, FABNET_SRC_DEFAULT);
	CU_ASSERT_EQUAL(cfg.src_link_speed, FABNET_SRC_DEFAULT);
	CU_ASSERT_EQUAL(cfg.src_iface, FABNET_SRC_DEFAULT);
	CU_ASSERT_EQUAL(cfg.src_allow_loopback, FABNET_SRC_DEFAULT);
}

/* ---- integer ranges ------------------------------------------------------ */
static uint64_t config_value(const char *name)
{
	if (!strcmp(name, "FABNET_EAGER_MAX"))
		return cfg.eager_max;
	if (!strcmp(name, "FABNET_MAX_WRITE"))
		return cfg.max_write;
	if (!strcmp(name, "FABNET_RX_BUFFERS"))
		return cfg.rx_buffers;
	if (!strcmp(name, "FABNET_TX_BUFFERS"))
		return cfg.tx_buffers;
	if (!strcmp(name, "FABNET_EAGER_CREDITS"))
		return cfg.eager_credits;
	if (!strcmp(name, "FABNET_WRITES_IN_FLIGHT"))
		return cfg.writes_in_flight;
	if (!strcmp(name, "FABNET_CONNECT_TIMEOUT_MS"))
		return cfg.connect_timeout_ms;
	if (!strcmp(name, "FABNET_LINK_SPEED_MBPS"))
		return cfg.link_speed_mbps;
	if (!strcmp(name, "FABNET_PEER_TIMEOUT_MS"))
		return cfg.peer_timeout_ms;
	CU_FAIL("unknown variable");
	return 0;
}

static void numeric_variables_accept_both_ends_of_their_range(void)
{
	for (size_t i = 0; i < NUM_NUMERIC_VARS; i++) {
		const struct numeric_var *nv = &numeric_vars[i];
		uint64_t ends[2] = {nv->min, nv->max};

		for (int j = 0; j < 2; j++) {
			char buf[32];

			/* FABNET_MAX_WRITE has a hole below 4096, tested apart. */
			if (!strcmp(nv->name, "FABNET_MAX_WRITE") && ends[j] != 0 && ends[j] < 4096)
				continue;
			snprintf(buf, sizeof(buf), "%llu", (unsigned long long)ends[j]);
			env_clear();
			env_set(nv->name, buf);
			UNIT_ASSERT_MSG(parse() == 0, "%s=%s rejected: %s", nv->name, buf, err);
			UNIT_ASSERT_MSG(config_value(nv->name) == ends[j], "%s=%s read as %llu",
					nv->name, buf, (unsigned long long)config_value(nv->name));
		}
	}
}

static void numeric_variables_reject_values_just_outside_their_range(void)
{
	for (size_t i = 0; i < NUM_NUMERIC_VARS; i++) {
		const struct numeric_var *nv = &numeric_vars[i];
		char buf[32];

		if (nv->min > 0) {
			snprintf(buf, sizeof(buf), "%llu", (unsigned long long)(nv->min - 1));
			assert_rejected(nv->name, buf);
		}
		snprintf(buf, sizeof(buf), "%llu", (unsigned long long)(nv->max + 1));
		assert_rejected(nv->name, buf);
	}
}

static void byte_count_limits_apply_after_the_suffix(void)
{
	env_set("FABNET_EAGER_MAX", "1M");
	CU_ASSERT_EQUAL(parse(), 0);
	CU_ASSERT_EQUAL(cfg.eager_max, 1u << 20);
	assert_rejected("FABNET_EAGER_MAX", "1025K");
	assert_rejected("FABNET_EAGER_MAX", "1G");
	env_clear();
	env_set("FABNET_MAX_WRITE", "1024G");
	CU_ASSERT_EQUAL(parse(), 0);
	CU_ASSERT_EQUAL(cfg.max_write, (size_t)1 << 40);
	assert_rejected("FABNET_MAX_WRITE", "1025G");
}

/* ---- invalid values ------------------------------------------------------ */
static void every_numeric_variable_rejects_malformed_values_by_name(void)
{
	static const char *bad[] = {
		"garbage", "-1", "-0", " 64", "64 ", "12KB", "1.5", "0x40", "64T", "K",
		"99999999999999999999G", "99999999999999999999", "18446744073709551616",
	};

	for (size_t i = 0; i < NUM_NUMERIC_VARS; i++)
		for (size_t j = 0; j < sizeof(bad) / sizeof(bad[0]); j++)
			assert_rejected(numeric_vars[i].name, bad[j]);
}

static void plain_integer_variables_reject_size_suffixes(void)
{
	for (size_t i = 0; i < NUM_NUMERIC_VARS; i++)
		if (!numeric_vars[i].is_size)
			assert_rejected(numeric_vars[i].name, "1K");
}

static void allow_loopback_rejects_non_bool_values_by_name(void)
{
	assert_rejected("FABNET_ALLOW_LOOPBACK", "maybe");
	assert_rejected("FABNET_ALLOW_LOOPBACK", "2");
	assert_rejected("FABNET_ALLOW_LOOPBACK", "-1");
	assert_rejected("FABNET_ALLOW_LOOPBACK", "yes please");
}

static void max_write_below_4096_is_rejected(void)
{
	assert_rejected("FABNET_MAX_WRITE", "1");
	assert_rejected("FABNET_MAX_WRITE", "1K");
	assert_rejected("FABNET_MAX_WRITE", "4095");
}

static void max_write_of_4096_is_accepted(void)
{
	env_set("FABNET_MAX_WRITE", "4096");
	CU_ASSERT_EQUAL_FATAL(parse(), 0);
	CU_ASSERT_EQUAL(cfg.max_write, 4096);
	env_set("FABNET_MAX_WRITE", "4K");
	CU_ASSERT_EQUAL_FATAL(parse(), 0);
	CU_ASSERT_EQUAL(cfg.max_write, 4096);
}

static void max_write_of_0_means_the_providers_limit(void)
{
	env_set("FABNET_MAX_WRITE", "0");
	CU_ASSERT_EQUAL_FATAL(parse(), 0);
	CU_ASSERT_EQUAL(cfg.max_write, 0);
	CU_ASSERT_EQUAL(cfg.src_max_write, FABNET_SRC_ENV);
}

static void a_valid_variable_does_not_hide_an_invalid_one(void)
{
	env_set("FABNET_EAGER_MAX", "16K");
	env_set("FABNET_LINK_SPEED_MBPS", "fast");
	env_set("FABNET_RX_BUFFERS", "128");
	CU_ASSERT_EQUAL(parse(), -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "FABNET_LINK_SPEED_MBPS"));
}

static void error_message_is_truncated_to_errlen(void)
{
	char small[17];

	memset(small, 'x', sizeof(small));
	env_set("FABNET_CONNECT_TIMEOUT_MS", "not-a-number");
	CU_ASSERT_EQUAL(fabnet_config_parse(&cfg, fake_lookup, small, 16), -1);
	CU_ASSERT_EQUAL(small[15], '\0');
	CU_ASSERT_EQUAL(small[16], 'x'); /* the byte past errlen is untouched */
	CU_ASSERT_EQUAL(strlen(small), 15); /* truncated, not left empty */
}

/* ---- provider ------------------------------------------------------------ */
static void fabnet_provider_wins_over_fi_provider(void)
{
	env_set("FI_PROVIDER", "tcp");
	env_set("FABNET_PROVIDER", "efa");
	CU_ASSERT_EQUAL_FATAL(parse(), 0);
	CU_ASSERT_STRING_EQUAL(cfg.provider, "efa");
	CU_ASSERT_STRING_EQUAL(cfg.provider_from, "FABNET_PROVIDER");
}

static void fi_provider_is_used_when_fabnet_provider_is_unset(void)
{
	env_set("FI_PROVIDER", "tcp");
	CU_ASSERT_EQUAL_FATAL(parse(), 0);
	CU_ASSERT_STRING_EQUAL(cfg.provider, "tcp");
	CU_ASSERT_STRING_EQUAL(cfg.provider_from, "FI_PROVIDER");
}

static void fi_provider_is_used_when_fabnet_provider_is_empty(void)
{
	env_set("FABNET_PROVIDER", "");
	env_set("FI_PROVIDER", "verbs");
	CU_ASSERT_EQUAL_FATAL(parse(), 0);
	CU_ASSERT_STRING_EQUAL(cfg.provider, "verbs");
	CU_ASSERT_STRING_EQUAL(cfg.provider_from, "FI_PROVIDER");
}

static void provider_name_may_use_the_whole_field(void)
{
	char name[sizeof(cfg.provider)];

	memset(name, 'p', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	env_set("FABNET_PROVIDER", name);
	CU_ASSERT_EQUAL_FATAL(parse(), 0);
	CU_ASSERT_STRING_EQUAL(cfg.provider, name);
}

static void too_long_provider_is_rejected_naming_its_variable(void)
{
	char name[sizeof(cfg.provider) + 1];

	memset(name, 'p', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	assert_rejected("FABNET_PROVIDER", name);
	assert_rejected("FI_PROVIDER", name);
}

static void too_long_iface_list_is_rejected(void)
{
	char list[sizeof(cfg.iface) + 1];

	memset(list, 'e', sizeof(list) - 1);
	list[sizeof(list) - 1] = '\0';
	assert_rejected("FABNET_IFACE", list);
	list[sizeof(list) - 2] = '\0'; /* one shorter: fits exactly */
	env_clear();
	env_set("FABNET_IFACE", list);
	CU_ASSERT_EQUAL(parse(), 0);
	CU_ASSERT_STRING_EQUAL(cfg.iface, list);
}

/* ---- memory settings ------------------------------------------------------- */
static void dmabuf_and_hmem_default_on_and_both_take_bools(void)
{
	CU_ASSERT_EQUAL_FATAL(parse(), 0);
	CU_ASSERT_EQUAL(cfg.dmabuf, 1);
	CU_ASSERT_EQUAL(cfg.hmem, 1);
	env_set("FABNET_DMABUF", "off");
	env_set("FABNET_HMEM", "0");
	CU_ASSERT_EQUAL_FATAL(parse(), 0);
	CU_ASSERT_EQUAL(cfg.dmabuf, 0);
	CU_ASSERT_EQUAL(cfg.hmem, 0);
	CU_ASSERT_EQUAL(cfg.src_dmabuf, FABNET_SRC_ENV);
	CU_ASSERT_EQUAL(cfg.src_hmem, FABNET_SRC_ENV);
}

static void dmabuf_and_hmem_reject_non_bools_by_name(void)
{
	assert_rejected("FABNET_DMABUF", "sometimes");
	assert_rejected("FABNET_HMEM", "2");
}

static void gdr_flush_defaults_to_read_and_takes_each_mode(void)
{
	static const struct {
		const char *value;
		int mode;
	} modes[] = {{"0", FABNET_FLUSH_OFF}, {"off", FABNET_FLUSH_OFF}, {"1", FABNET_FLUSH_READ},
		     {"READ", FABNET_FLUSH_READ}, {"cuda", FABNET_FLUSH_CUDA},
		     {"always", FABNET_FLUSH_ALWAYS}};

	CU_ASSERT_EQUAL_FATAL(parse(), 0);
	CU_ASSERT_EQUAL(cfg.gdr_flush, FABNET_FLUSH_READ);
	CU_ASSERT_EQUAL(cfg.src_gdr_flush, FABNET_SRC_DEFAULT);
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		env_set("FABNET_GDR_FLUSH", modes[i].value);
		CU_ASSERT_EQUAL_FATAL(parse(), 0);
		CU_ASSERT_EQUAL(cfg.gdr_flush, modes[i].mode);
		CU_ASSERT_EQUAL(cfg.src_gdr_flush, FABNET_SRC_ENV);
	}
}

static void gdr_flush_rejects_unknown_modes_by_name(void)
{
	assert_rejected("FABNET_GDR_FLUSH", "sometimes");
	assert_rejected("FABNET_GDR_FLUSH", "2");
}

static void efa_fabric_defaults_to_auto_and_takes_each_name(void)
{
	static const struct {
		const char *value;
		int fabric;
	} names[] = {{"auto", FABNET_EFA_AUTO}, {"efa", FABNET_EFA_RDM}, {"EFA", FABNET_EFA_RDM},
		     {"efa-direct", FABNET_EFA_DIRECT}};

	CU_ASSERT_EQUAL_FATAL(parse(), 0);
	CU_ASSERT_EQUAL(cfg.efa_fabric, FABNET_EFA_AUTO);
	CU_ASSERT_EQUAL(cfg.src_efa_fabric, FABNET_SRC_DEFAULT);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		env_set("FABNET_EFA_FABRIC", names[i].value);
		CU_ASSERT_EQUAL_FATAL(parse(), 0);
		CU_ASSERT_EQUAL(cfg.efa_fabric, names[i].fabric);
		CU_ASSERT_EQUAL(cfg.src_efa_fabric, FABNET_SRC_ENV);
	}
}

static void efa_fabric_rejects_other_names(void)
{
	assert_rejected("FABNET_EFA_FABRIC", "direct");
	assert_rejected("FABNET_EFA_FABRIC", "efa-rdm");
}

void register_config_tests(void)
{
	CU_pSuite s = CU_add_suite_with_setup_and_teardown("config", NULL, NULL, setup, NULL);

	UNIT_ADD(s, parse_size_accepts_plain_digits);
	UNIT_ADD(s, efa_fabric_defaults_to_auto_and_takes_each_name);
	UNIT_ADD(s, efa_fabric_rejects_other_names);
	UNIT_ADD(s, parse_size_suffixes_are_powers_of_1024_in_either_case);
	UNIT_ADD(s, parse_size_accepts_the_largest_value_that_fits_64_bits);
	UNIT_ADD(s, parse_size_rejects_overflow);
	UNIT_ADD(s, parse_size_rejects_anything_but_digits_and_one_suffix);
	UNIT_ADD(s, parse_bool_accepts_every_spelling_in_any_case);
	UNIT_ADD(s, parse_bool_rejects_other_words);
	UNIT_ADD(s, parse_uint_accepts_values_within_the_range_inclusive);
	UNIT_ADD(s, parse_uint_rejects_values_outside_the_range);
	UNIT_ADD(s, parse_uint_rejects_anything_but_decimal_digits);
	UNIT_ADD(s, defaults_apply_when_nothing_is_set);
	UNIT_ADD(s, defaults_are_marked_as_defaults);
	UNIT_ADD(s, empty_values_count_as_unset);
	UNIT_ADD(s, the_process_environment_is_not_consulted);
	UNIT_ADD(s, eager_max_is_a_byte_count_from_the_environment);
	UNIT_ADD(s, max_write_is_a_byte_count_from_the_environment);
	UNIT_ADD(s, rx_buffers_is_read_from_the_environment);
	UNIT_ADD(s, tx_buffers_is_read_from_the_environment);
	UNIT_ADD(s, writes_in_flight_is_read_from_the_environment);
	UNIT_ADD(s, connect_timeout_is_read_from_the_environment);
	UNIT_ADD(s, link_speed_is_read_from_the_environment);
	UNIT_ADD(s, iface_list_is_read_from_the_environment);
	UNIT_ADD(s, allow_loopback_accepts_every_bool_spelling);
	UNIT_ADD(s, setting_one_variable_leaves_the_others_at_their_defaults);
	UNIT_ADD(s, numeric_variables_accept_both_ends_of_their_range);
	UNIT_ADD(s, numeric_variables_reject_values_just_outside_their_range);
	UNIT_ADD(s, byte_count_limits_apply_after_the_suffix);
	UNIT_ADD(s, every_numeric_variable_rejects_malformed_values_by_name);
	UNIT_ADD(s, plain_integer_variables_reject_size_suffixes);
	UNIT_ADD(s, allow_loopback_rejects_non_bool_values_by_name);
	UNIT_ADD(s, max_write_below_4096_is_rejected);
	UNIT_ADD(s, max_write_of_4096_is_accepted);
	UNIT_ADD(s, max_write_of_0_means_the_providers_limit);
	UNIT_ADD(s, a_valid_variable_does_not_hide_an_invalid_one);
	UNIT_ADD(s, error_message_is_truncated_to_errlen);
	UNIT_ADD(s, fabnet_provider_wins_over_fi_provider);
	UNIT_ADD(s, fi_provider_is_used_when_fabnet_provider_is_unset);
	UNIT_ADD(s, fi_provider_is_used_when_fabnet_provider_is_empty);
	UNIT_ADD(s, provider_name_may_use_the_whole_field);
	UNIT_ADD(s, too_long_provider_is_rejected_naming_its_variable);
	UNIT_ADD(s, too_long_iface_list_is_rejected);
	UNIT_ADD(s, dmabuf_and_hmem_default_on_and_both_take_bools);
	UNIT_ADD(s, dmabuf_and_hmem_reject_non_bools_by_name);
	UNIT_ADD(s, gdr_flush_defaults_to_read_and_takes_each_mode);
	UNIT_ADD(s, gdr_flush_rejects_unknown_modes_by_name);
}
