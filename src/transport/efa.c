#include <config.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#if HAVE_RDMA_FI_EXT_H
#include <rdma/fi_ext.h>
#endif

#include "core/log.h"
#include "transport/efa.h"

/* What fabnet needs of a fabric: FI_MSG for control messages and eager data,
 * FI_RMA writes with immediate data for the payload. efa-direct has no
 * emulation: it offers FI_RMA only on a device with RDMA write, limits
 * messages to the MTU (fabnet's bounce buffers fit it: see
 * fabnet_efa_after_enable) and needs the initiator of an RDMA write in the
 * target's AV (fabnet's receiver learns the sender's address when the
 * connection is set up, before it sends the first CTS that lets the sender
 * write) -- but on its first rail only: the receiver does not insert the
 * sender's addresses on the other rails of a group, so writes striped there
 * fail ("No valid address handle at remote side"). efa adds a software
 * protocol on top: emulated RMA, messages over the MTU, shm between local
 * processes, and a handshake that makes an unknown initiator known. */
const struct fi_info *fabnet_efa_pick(const struct fabnet_config *cfg, const struct fi_info *rdm,
				      const struct fi_info *direct, int rails, char *why, size_t whylen)
{
	static int warned_rails; /* discovery runs once per process: say it once */

	switch (cfg->efa_fabric) {
	case FABNET_EFA_RDM:
		snprintf(why, whylen, rdm ? "FABNET_EFA_FABRIC=efa"
					  : "FABNET_EFA_FABRIC=efa, but the provider offers no efa-fabric "
					    "endpoint with FI_MSG|FI_RMA on this device");
		return rdm;
	case FABNET_EFA_DIRECT:
		snprintf(why, whylen, direct ? "FABNET_EFA_FABRIC=efa-direct"
					     : "FABNET_EFA_FABRIC=efa-direct, but efa-direct offers no "
					       "FI_MSG|FI_RMA endpoint on this device: it has no RDMA write, "
					       "and efa-direct emulates nothing. Use FABNET_EFA_FABRIC=efa");
		if (direct && rails && !warned_rails++)
			FN_WARN("fabnet: FABNET_EFA_FABRIC=efa-direct with several efa devices that may form "
				"rails: writes on a group's second and later rails fail until fabnet inserts "
				"the sender's address there too (set FABNET_RAILS=1, or use efa)");
		return direct;
	default:
		if (direct && rails && rdm) {
			snprintf(why, whylen, "automatic: efa-direct needs a writer in the target's AV, "
				 "and fabnet inserts peers on the first rail of a group only; with several "
				 "devices that may form rails, efa (its handshake makes peers known) is safe. "
				 "FABNET_RAILS=1 allows efa-direct");
			return rdm;
		}
		if (direct) {
			snprintf(why, whylen, "automatic: the device does RDMA write, so efa-direct hands "
				 "fabnet's writes to it with no protocol in between (efa would add "
				 "emulation, large messages and shm, which fabnet does not use)");
			return direct;
		}
		snprintf(why, whylen, rdm ? "automatic: efa-direct offers no FI_MSG|FI_RMA endpoint (no "
					    "device RDMA write); efa emulates RMA writes with messages"
					  : "the provider offers neither fabric with FI_MSG|FI_RMA");
		return rdm;
	}
}

/* NCCL forbids CUDA calls from the network plugin, and the efa fabric's
 * shm path uses CUDA IPC for device memory and NCCL moves intra-node data
 * itself: with accelerator memory both go off. A refusal is kept for the
 * probe (transport/hmem.c), which then does not advertise NCCL_PTR_CUDA. */
static void set_cuda_and_shm(struct fabnet_dev *dev)
{
	struct fabnet_dev_efa *e = &dev->efa;
	bool off = false;
	int rc;

	(void)off;
	(void)rc;
#if HAVE_DECL_FI_OPT_SHARED_MEMORY_PERMITTED
	rc = fi_setopt(&dev->ep->fid, FI_OPT_ENDPOINT, FI_OPT_SHARED_MEMORY_PERMITTED, &off, sizeof(off));
	e->shm_permitted = rc ? 1 : 0;
	if (rc)
		FN_INFO(NCCL_INIT | NCCL_NET, "fabnet: %s: FI_OPT_SHARED_MEMORY_PERMITTED=false refused: "
			"%s (%d); the provider may use shm between processes of this node", dev->name,
			fi_strerror(-rc), rc);
#endif
	if (!dev->hmem)
		return;
#if HAVE_DECL_FI_OPT_CUDA_API_PERMITTED
	rc = fi_setopt(&dev->ep->fid, FI_OPT_ENDPOINT, FI_OPT_CUDA_API_PERMITTED, &off, sizeof(off));
	e->cuda_api_permitted = rc ? 1 : 0;
	if (rc)
		snprintf(e->why_cuda_api, sizeof(e->why_cuda_api),
			 "provider %s refused FI_OPT_CUDA_API_PERMITTED=false (%s): it would call CUDA "
			 "on accelerator memory, which NCCL forbids a network plugin", dev->prov_name,
			 fi_strerror(-rc));
#else
	e->cuda_api_permitted = 1;
	snprintf(e->why_cuda_api, sizeof(e->why_cuda_api),
		 "built against libfabric headers without FI_OPT_CUDA_API_PERMITTED: the provider "
		 "could not be kept from calling CUDA, which NCCL forbids a network plugin");
#endif
	if (e->cuda_api_permitted == 1)
		FN_WARN("fabnet: %s: %s; NCCL_PTR_CUDA is not advertised", dev->name, e->why_cuda_api);
}

static void set_inorder128(struct fabnet_dev *dev)
{
	struct fabnet_dev_efa *e = &dev->efa;
#if HAVE_DECL_FI_OPT_EFA_WRITE_IN_ORDER_ALIGNED_128_BYTES
	bool on = true;
	int rc = fi_setopt(&dev->ep->fid, FI_OPT_ENDPOINT, FI_OPT_EFA_WRITE_IN_ORDER_ALIGNED_128_BYTES,
			   &on, sizeof(on));

	e->inorder128 = rc == 0;
	if (rc)
		snprintf(e->why_no_inorder128, sizeof(e->why_no_inorder128),
			 "FI_OPT_EFA_WRITE_IN_ORDER_ALIGNED_128_BYTES refused: %s (%d)%s", fi_strerror(-rc),
			 rc, rc == -FI_EOPNOTSUPP ? ": the device does not write 128-byte blocks in order" : "");
#else
	e->inorder128 = -1;
	snprintf(e->why_no_inorder128, sizeof(e->why_no_inorder128),
		 "built against libfabric headers without FI_OPT_EFA_WRITE_IN_ORDER_ALIGNED_128_BYTES");
#endif
}

static int get_bool(struct fabnet_dev *dev, int opt)
{
	bool v = false;
	size_t len = sizeof(v);

	return fi_getopt(&dev->ep->fid, FI_OPT_ENDPOINT, opt, &v, &len) == 0 ? (int)v : -1;
}

void fabnet_efa_ep_options(struct fabnet_dev *dev)
{
	struct fabnet_dev_efa *e = &dev->efa;

	e->shm_permitted = e->cuda_api_permitted = -1;
	e->inorder128 = e->emulated_read = e->emulated_write = -1;
	if (!e->is_efa)
		return;
	set_cuda_and_shm(dev);
	set_inorder128(dev);
#if HAVE_DECL_FI_OPT_EFA_EMULATED_READ && HAVE_DECL_FI_OPT_EFA_EMULATED_WRITE
	e->emulated_read = get_bool(dev, FI_OPT_EFA_EMULATED_READ);
	e->emulated_write = get_bool(dev, FI_OPT_EFA_EMULATED_WRITE);
#else
	(void)get_bool;
#endif
}

/* NCCL_PROTO leaves LL128 out: "^...LL128..." or a list without LL128. A
 * per-collective clause naming LL128 counts as using it. */
static int proto_excludes_ll128(const char *proto)
{
	if (proto[0] == '^')
		return strcasestr(proto, "LL128") != NULL && !strchr(proto, ':');
	return strcasestr(proto, "LL128") == NULL;
}

/* NCCL's LL128 protocol needs 128-byte aligned writes to land whole and in
 * order; where they do not, NCCL must not use it. NCCL reads NCCL_PROTO when
 * it tunes a communicator, after it asked the plugin for its devices. */
static void keep_nccl_off_ll128(struct fabnet_dev *dev)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static int announced;
	const char *proto;

	pthread_mutex_lock(&lock);
	proto = getenv("NCCL_PROTO");
	if (!proto || !*proto) {
		setenv("NCCL_PROTO", "^LL128", 0);
		dev->efa.ll128_off = 1;
		if (!announced)
			FN_INFO(NCCL_INIT | NCCL_NET, "fabnet: %s: %s; NCCL_PROTO=^LL128 set so that NCCL "
				"does not use LL128 over it", dev->name, dev->efa.why_no_inorder128);
	} else if (proto_excludes_ll128(proto)) {
		dev->efa.ll128_off = 1;
	} else {
		FN_WARN("fabnet: %s: %s, but NCCL_PROTO=%s lets NCCL use LL128, which needs that: data "
			"may arrive torn. Add ^LL128 to NCCL_PROTO or unset it.", dev->name,
			dev->efa.why_no_inorder128, proto);
	}
	announced = 1;
	pthread_mutex_unlock(&lock);
}

void fabnet_efa_after_enable(struct fabnet_dev *dev)
{
	struct fabnet_dev_efa *e = &dev->efa;

	if (!e->is_efa)
		return;
#if HAVE_DECL_FI_OPT_MAX_MSG_SIZE
	{
		size_t v = 0, len = sizeof(v);
		if (fi_getopt(&dev->ep->fid, FI_OPT_ENDPOINT, FI_OPT_MAX_MSG_SIZE, &v, &len) == 0 && v)
			e->max_send = v;
	}
#endif
	if (e->inorder128 != 1)
		keep_nccl_off_ll128(dev);
	FN_INFO(NCCL_INIT | NCCL_NET,
		"fabnet: %s: efa fabric %s (%s); RMA read %s, write %s; 128-byte in-order writes %s; "
		"shm %s; largest message %zu", dev->name, e->fabric, e->fabric_why,
		e->emulated_read == 1 ? "emulated" : e->emulated_read == 0 ? "by the device" : "?",
		e->emulated_write == 1 ? "emulated" : e->emulated_write == 0 ? "by the device" : "?",
		e->inorder128 == 1 ? "yes" : "no", e->shm_permitted == 0 ? "off" : "as the provider likes",
		e->max_send);
}
