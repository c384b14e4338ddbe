/* Device discovery: which provider, which domains become NCCL devices. */
#ifndef FABNET_TRANSPORT_FABRIC_H
#define FABNET_TRANSPORT_FABRIC_H

#include "core/config.h"
#include "transport/device.h"

/* The libfabric API version we ask for: the one we were built against. */
#define FABNET_FI_VERSION FI_VERSION(FI_MAJOR_VERSION, FI_MINOR_VERSION)

/* The hints fabnet uses for FI_EP_RDM endpoints (caller frees with fi_freeinfo). */
struct fi_info *fabnet_fabric_hints(const char *provider);

/* Chooses the provider (FABNET_PROVIDER, FI_PROVIDER, efa, else the best
 * available), logs which and why, and fills *devs with one device per domain.
 * Returns the number of devices (0: none usable, logged) or a negative code. */
int fabnet_fabric_discover(const struct fabnet_config *cfg, struct fabnet_dev **devs);
/* The same, but when nothing is found the reason goes to why (not the log). */
int fabnet_fabric_discover_why(const struct fabnet_config *cfg, struct fabnet_dev **devs,
			       char *why, size_t whylen);
void fabnet_fabric_free(struct fabnet_dev *devs, int ndev);

#endif
