# EFA contract layer (test only): LD_PRELOADed into test processes, never
# installed, never linked into the plugin. See tests/contract/README.md.
# Included at the end of the top-level Makefile.am:
#   include $(top_srcdir)/tests/contract/Makefile.frag
check_LTLIBRARIES = tests/contract/libfabnet-efa-contract.la
tests_contract_libfabnet_efa_contract_la_SOURCES = \
	tests/contract/contract_int.h tests/contract/fabnet_contract.h \
	tests/contract/contract_core.c tests/contract/contract_fid.c \
	tests/contract/contract_cq.c tests/contract/contract_reg.c
tests_contract_libfabnet_efa_contract_la_CFLAGS = $(AM_CFLAGS) -fvisibility=hidden
# No $(LIBFABRIC_LIBS): the layer uses the libfabric the test process loaded.
tests_contract_libfabnet_efa_contract_la_LIBADD = -ldl
# -rpath makes libtool build a shared object although nothing installs it.
tests_contract_libfabnet_efa_contract_la_LDFLAGS = -module -avoid-version -shared \
	-rpath $(abs_builddir)/tests/contract

check_PROGRAMS += tests/contract/contract-selftest
tests_contract_contract_selftest_SOURCES = tests/contract/selftest.c tests/contract/fabnet_contract.h
tests_contract_contract_selftest_LDADD = $(LIBFABRIC_LIBS) -ldl

TESTS += tests/contract/run-selftest.sh
EXTRA_DIST += tests/contract/README.md tests/contract/build.sh \
	tests/contract/run-selftest.sh tests/contract/run-plugin.sh
