/*
 * What fabnet does differently on libfabric's efa provider: which of its two
 * fabrics to use, and the endpoint options EFA needs (docs/configuration.md,
 * "EFA"). Every decision is kept with its reason for the log and fabnet-info.
 */
#ifndef FABNET_TRANSPORT_EFA_H
#define FABNET_TRANSPORT_EFA_H

#include <rdma/fabric.h>

#include "core/config.h"
#include "transport/device.h"

/* Among the infos of one efa domain (rdm: fabric "efa", direct: fabric
 * "efa-direct", either may be NULL), the one to use under cfg->efa_fabric,
 * or NULL when the forced one is missing; why says which and why. rails:
 * devices may be grouped into rails (several efa devices, FABNET_RAILS > 1). */
const struct fi_info *fabnet_efa_pick(const struct fabnet_config *cfg, const struct fi_info *rdm,
				      const struct fi_info *direct, int rails, char *why, size_t whylen);

/* On an efa endpoint before fi_enable: FI_OPT_SHARED_MEMORY_PERMITTED,
 * FI_OPT_CUDA_API_PERMITTED (with accelerator memory), the 128-byte
 * in-order write option; reads the emulated-RMA state. Never fails the open:
 * an option refused is recorded and logged. */
void fabnet_efa_ep_options(struct fabnet_dev *dev);
/* After fi_enable: the largest message the endpoint sends (efa-direct: the
 * MTU), so bounce buffers fit; and keeps NCCL off LL128 when 128-byte
 * aligned writes are not delivered in order. */
void fabnet_efa_after_enable(struct fabnet_dev *dev);

static inline int fabnet_dev_is_efa(const struct fabnet_dev *dev)
{
	return dev->efa.is_efa;
}

#endif
