/* softefa: libefa.so.1, the efadv entry points libfabric's efa provider uses.
 * The device itself lives in the soft libibverbs.so.1. */
#include "sefa.h"

#include <errno.h>

SEFA_EXPORT int efadv_query_device(struct ibv_context *ctx, struct efadv_device_attr *attr, uint32_t inlen)
{
	return sefa_efadv_query_device(ctx, attr, inlen);
}

SEFA_EXPORT struct ibv_qp *efadv_create_qp_ex(struct ibv_context *ctx, struct ibv_qp_init_attr_ex *attr,
					      struct efadv_qp_init_attr *efa_attr, uint32_t inlen)
{
	return sefa_efadv_create_qp_ex(ctx, attr, efa_attr, inlen);
}

SEFA_EXPORT struct ibv_qp *efadv_create_driver_qp(struct ibv_pd *pd, struct ibv_qp_init_attr *attr,
						  uint32_t driver_qp_type)
{
	return sefa_efadv_create_driver_qp(pd, attr, driver_qp_type);
}

SEFA_EXPORT int efadv_query_ah(struct ibv_ah *ah, struct efadv_ah_attr *attr, uint32_t inlen)
{
	return sefa_efadv_query_ah(ah, attr, inlen);
}

SEFA_EXPORT struct ibv_cq_ex *efadv_create_cq(struct ibv_context *ctx, struct ibv_cq_init_attr_ex *attr,
					      struct efadv_cq_init_attr *efa_attr, uint32_t inlen)
{
	return sefa_efadv_create_cq(ctx, attr, efa_attr, inlen);
}

SEFA_EXPORT struct efadv_cq *efadv_cq_from_ibv_cq_ex(struct ibv_cq_ex *cqx)
{
	return sefa_efadv_cq_from_ibv_cq_ex(cqx);
}

/* exported by rdma-core too (EFA_1.2), although efadv.h makes it inline */
#undef efadv_wc_read_sgid
SEFA_EXPORT int efadv_wc_read_sgid_sym(struct efadv_cq *cq, union ibv_gid *sgid) __asm__("efadv_wc_read_sgid");
SEFA_EXPORT int efadv_wc_read_sgid_sym(struct efadv_cq *cq, union ibv_gid *sgid)
{
	return cq->wc_read_sgid ? cq->wc_read_sgid(cq, sgid) : EOPNOTSUPP;
}

SEFA_EXPORT int efadv_query_mr(struct ibv_mr *mr, struct efadv_mr_attr *attr, uint32_t inlen)
{
	return sefa_efadv_query_mr(mr, attr, inlen);
}
