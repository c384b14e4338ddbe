/*
 * Rail groups: which devices (NICs) NCCL sees as one device. See rails.c.
 */
#ifndef FABNET_TRANSPORT_RAILS_H
#define FABNET_TRANSPORT_RAILS_H

#include "core/config.h"
#include "transport/device.h"

/* Groups devs[0..ndevs-1] into rail groups (fabnet_dev_group) and writes the
 * index of each group's primary into primaries[] (groups first, then the
 * devices left alone, in device order). Returns
 * the number of groups (the NCCL devices). Never fails: a grouping that
 * cannot be honoured is logged and its devices stay alone. */
int fabnet_rails_plan(struct fabnet_dev *devs, int ndevs, const struct fabnet_config *cfg,
		      int *primaries);

#endif
