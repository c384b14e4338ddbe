/*
 * Registrations NCCL holds: one buffer on every rail of a device. Each rail
 * is its own libfabric domain with its own keys, so the buffer is registered
 * once per rail, each time through that rail's cache (regIsGlobal holds for
 * the set as for each part). The receiver advertises every rail's key in its
 * CTS; a sender uses the descriptor of the rail each write goes out on.
 */
#include <config.h>

#include <stdlib.h>

#include "core/log.h"
#include "protocol/proto.h"

int fabnet_proto_reg(struct fabnet_dev *dev, void *data, size_t size, int type, int fd,
		     uint64_t offset, struct fabnet_rmr **out)
{
	int n = dev->nrails > 1 ? dev->nrails : 1;
	struct fabnet_rmr *rmr = calloc(1, sizeof(*rmr));
	int rc = 0;

	*out = NULL;
	if (!rmr)
		return -FI_ENOMEM;
	rmr->magic = FABNET_RMR_MAGIC;
	rmr->type = type;
	rmr->dev = dev;
	for (int k = 0; k < n; k++) {
		struct fabnet_dev *rd = k ? dev->rails[k] : dev;
		rc = fabnet_mr_get(rd, data, size, type, fd, offset, &rmr->mr[k]);
		if (rc) {
			if (k)
				FN_WARN("fabnet: registering %p+%zu on rail %d (%s) of %s failed after "
					"it succeeded on the rails before it", data, size, k, rd->name,
					dev->name);
			break;
		}
		rmr->nrails = k + 1;
	}
	if (rc) {
		fabnet_proto_dereg(rmr);
		return rc;
	}
	*out = rmr;
	return 0;
}

void fabnet_proto_dereg(struct fabnet_rmr *rmr)
{
	if (rmr->dev->proto)
		fabnet_proto_forget_mr(rmr);
	for (int k = 0; k < rmr->nrails; k++)
		fabnet_mr_put(rmr->mr[k]);
	rmr->magic = 0;
	free(rmr);
}
