# FABNET_CHECK_LIBFABRIC
# Finds libfabric through --with-libfabric=DIR or pkg-config, then detects what
# the headers declare (not the version number): FI_MR_DMABUF and struct
# fi_mr_dmabuf (1.20+), FI_HMEM, FI_CONTEXT2, FI_RX_CQ_DATA, the endpoint
# options FI_OPT_CUDA_API_PERMITTED, FI_OPT_SHARED_MEMORY_PERMITTED,
# FI_OPT_MAX_MSG_SIZE and the efa provider's (fi_ext.h).
AC_DEFUN([FABNET_CHECK_LIBFABRIC], [
  AC_ARG_WITH([libfabric],
    [AS_HELP_STRING([--with-libfabric=DIR], [libfabric installation prefix])],
    [], [with_libfabric=check])

  AS_IF([test "x$with_libfabric" != xcheck && test "x$with_libfabric" != xyes], [
    LIBFABRIC_CFLAGS="-I$with_libfabric/include"
    AS_IF([test -d "$with_libfabric/lib64"], [fabnet_lf_libdir="$with_libfabric/lib64"],
          [fabnet_lf_libdir="$with_libfabric/lib"])
    LIBFABRIC_LIBS="-L$fabnet_lf_libdir -Wl,-rpath,$fabnet_lf_libdir -lfabric"
  ], [
    PKG_CHECK_MODULES([LIBFABRIC], [libfabric >= 1.14], [],
      [AC_MSG_ERROR([libfabric not found: install libfabric-dev or pass --with-libfabric=DIR])])
  ])

  fabnet_save_CPPFLAGS=$CPPFLAGS
  fabnet_save_LIBS=$LIBS
  CPPFLAGS="$CPPFLAGS $LIBFABRIC_CFLAGS"
  LIBS="$LIBS $LIBFABRIC_LIBS"
  AC_CHECK_HEADER([rdma/fabric.h], [], [AC_MSG_ERROR([rdma/fabric.h not found])])
  AC_MSG_CHECKING([that libfabric links])
  AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <rdma/fabric.h>]], [[return (int)fi_version();]])],
    [AC_MSG_RESULT([yes])], [AC_MSG_RESULT([no]); AC_MSG_ERROR([cannot link against libfabric])])

  AC_CHECK_DECLS([FI_MR_DMABUF, FI_HMEM, FI_MR_HMEM, FI_CONTEXT2, FI_RX_CQ_DATA, FI_HMEM_CUDA],
    [], [], [[#include <rdma/fabric.h>
#include <rdma/fi_domain.h>]])
  AC_CHECK_MEMBERS([struct fi_mr_attr.dmabuf], [], [], [[#include <rdma/fabric.h>
#include <rdma/fi_domain.h>]])
  AC_CHECK_DECLS([FI_OPT_CUDA_API_PERMITTED, FI_OPT_MAX_RMA_SIZE, FI_OPT_MAX_MSG_SIZE,
                  FI_OPT_SHARED_MEMORY_PERMITTED], [], [], [[#include <rdma/fabric.h>
#include <rdma/fi_endpoint.h>]])
  dnl The efa provider's own endpoint options (transport/efa.c).
  AC_CHECK_HEADERS([rdma/fi_ext.h], [], [], [[#include <rdma/fabric.h>]])
  AC_CHECK_DECLS([FI_OPT_EFA_WRITE_IN_ORDER_ALIGNED_128_BYTES, FI_OPT_EFA_EMULATED_READ,
                  FI_OPT_EFA_EMULATED_WRITE], [], [], [[#include <rdma/fabric.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_ext.h>]])
  CPPFLAGS=$fabnet_save_CPPFLAGS
  LIBS=$fabnet_save_LIBS
  AC_SUBST([LIBFABRIC_CFLAGS])
  AC_SUBST([LIBFABRIC_LIBS])
])
