/*
 * Runs every unit suite and exits non-zero when anything failed: a failed
 * assertion, a failed test, a suite that could not be set up, or a CUnit
 * error. Run it directly or through `make check`.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "unit.h"

int main(void)
{
	unsigned failures, tests_failed, suites_failed, asserts, tests_run;
	CU_ErrorCode rc;

	if (CU_initialize_registry() != CUE_SUCCESS) {
		fprintf(stderr, "unit: cannot initialise CUnit: %s\n", CU_get_error_msg());
		return EXIT_FAILURE;
	}
	register_config_tests();
	register_wire_tests();
	register_pool_tests();
	register_tags_tests();
	register_regcache_tests();
	register_keypool_tests();
	register_topo_tests();
	register_rails_tests();
	if (CU_get_error() != CUE_SUCCESS) {
		fprintf(stderr, "unit: cannot register the tests: %s\n", CU_get_error_msg());
		CU_cleanup_registry();
		return EXIT_FAILURE;
	}

	CU_basic_set_mode(CU_BRM_VERBOSE);
	rc = CU_basic_run_tests();
	failures = CU_get_number_of_failures();
	tests_failed = CU_get_number_of_tests_failed();
	suites_failed = CU_get_number_of_suites_failed();
	asserts = CU_get_number_of_asserts();
	tests_run = CU_get_number_of_tests_run();
	CU_cleanup_registry();

	printf("\nunit: %u tests, %u asserts, %u failed assertions, %u failed tests, "
	       "%u failed suites\n",
	       tests_run, asserts, failures, tests_failed, suites_failed);
	if (rc != CUE_SUCCESS || failures || tests_failed || suites_failed || tests_run == 0)
		return EXIT_FAILURE;
	return EXIT_SUCCESS;
}
