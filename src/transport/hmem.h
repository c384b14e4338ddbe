/* Which memory a device can register, decided by probing with real
 * registrations, each refusal kept with its reason for the log and fabnet-info. */
#ifndef FABNET_TRANSPORT_HMEM_H
#define FABNET_TRANSPORT_HMEM_H

#include "transport/device.h"

/* Fills dev->ptr_support and the why_no_* strings (opens the device). */
void fabnet_hmem_probe(struct fabnet_dev *dev);

/* The libfabric version fabnet was built against, for messages. */
const char *fabnet_built_libfabric(void);

#endif
