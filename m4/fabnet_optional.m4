# FABNET_CHECK_HWLOC: hwloc through pkg-config (optional, used for topology).
AC_DEFUN([FABNET_CHECK_HWLOC], [
  AC_ARG_WITH([hwloc], [AS_HELP_STRING([--without-hwloc], [build without hwloc])],
    [], [with_hwloc=check])
  have_hwloc=no
  AS_IF([test "x$with_hwloc" != xno], [
    PKG_CHECK_MODULES([HWLOC], [hwloc >= 2.0], [have_hwloc=yes], [have_hwloc=no])
    AS_IF([test "x$with_hwloc" = xyes && test "x$have_hwloc" = xno],
      [AC_MSG_ERROR([hwloc requested but not found])])
  ])
  AS_IF([test "x$have_hwloc" = xyes], [AC_DEFINE([HAVE_HWLOC], [1], [hwloc is available])])
  AM_CONDITIONAL([HAVE_HWLOC], [test "x$have_hwloc" = xyes])
])

# FABNET_CHECK_RDMA_CORE: libibverbs headers where present (informational: the
# plugin talks to NICs through libfabric only).
AC_DEFUN([FABNET_CHECK_RDMA_CORE], [
  have_rdma_core=no
  AC_CHECK_HEADER([infiniband/verbs.h], [have_rdma_core=yes])
  AS_IF([test "x$have_rdma_core" = xyes], [AC_DEFINE([HAVE_RDMA_CORE], [1], [rdma-core headers present])])
])

# FABNET_CHECK_CUNIT: CUnit for the unit tests (make check).
AC_DEFUN([FABNET_CHECK_CUNIT], [
  have_cunit=no
  PKG_CHECK_MODULES([CUNIT], [cunit], [have_cunit=yes], [
    AC_CHECK_HEADER([CUnit/Basic.h], [AC_CHECK_LIB([cunit], [CU_initialize_registry],
      [have_cunit=yes; CUNIT_LIBS=-lcunit])])
  ])
  AS_IF([test "x$have_cunit" = xno], [AC_MSG_WARN([CUnit not found: unit tests will not be built])])
  AM_CONDITIONAL([HAVE_CUNIT], [test "x$have_cunit" = xyes])
  AC_SUBST([CUNIT_CFLAGS])
  AC_SUBST([CUNIT_LIBS])
])

# FABNET_ENABLE_WERROR: --enable-werror adds -Werror to the warnings we always use.
AC_DEFUN([FABNET_ENABLE_WERROR], [
  AC_ARG_ENABLE([werror], [AS_HELP_STRING([--enable-werror], [treat warnings as errors])],
    [], [enable_werror=no])
  FABNET_WARN_CFLAGS="-Wall -Wextra -Wno-unused-parameter -Wshadow -Wformat=2 -Wstrict-prototypes -Wmissing-prototypes"
  AS_IF([test "x$enable_werror" = xyes], [FABNET_WARN_CFLAGS="$FABNET_WARN_CFLAGS -Werror"])
  AC_SUBST([FABNET_WARN_CFLAGS])
])
