#include <config.h>

#include <stdlib.h>
#include <string.h>

#include <rdma/fi_cm.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>

#include "core/config.h"
#include "core/log.h"
#include "nccl_net_abi.h"
#include "transport/device.h"
#include "transport/efa.h"
#include "transport/mr.h"

#define CQ_BATCH 16
#define CQ_ROUNDS 8

static void rx_complete(struct fabnet_op *op, int err, const struct fi_cq_data_entry *e);

static ssize_t post_now(struct fabnet_dev *dev, struct fabnet_op *op)
{
	switch (op->kind) {
	case FABNET_OP_SEND:
		return fi_send(dev->ep, op->buf, op->len, op->desc, op->peer, &op->ctx);
	case FABNET_OP_WRITE:
		return fi_writedata(dev->ep, op->buf, op->len, op->desc, op->imm, op->peer,
				    op->raddr, op->rkey, &op->ctx);
	case FABNET_OP_READ:
		return fi_read(dev->ep, op->buf, op->len, op->desc, op->peer, op->raddr, op->rkey,
			       &op->ctx);
	case FABNET_OP_RECV:
		return fi_recv(dev->ep, op->buf, op->len, op->desc, FI_ADDR_UNSPEC, &op->ctx);
	default:
		return -FI_EINVAL;
	}
}

static const char *op_name(int kind)
{
	static const char *const names[] = {"?", "fi_send", "fi_writedata", "fi_read", "fi_recv"};
	return kind > 0 && kind <= FABNET_OP_RECV ? names[kind] : names[0];
}

static void enqueue(struct fabnet_dev *dev, struct fabnet_op *op)
{
	op->queued = 1;
	op->next = NULL;
	if (dev->retry_tail)
		dev->retry_tail->next = op;
	else
		dev->retry_head = op;
	dev->retry_tail = op;
}

void fabnet_dev_unqueue(struct fabnet_dev *dev, struct fabnet_op *op)
{
	struct fabnet_op **pp = &dev->retry_head, *prev = NULL;

	if (!op->queued)
		return;
	while (*pp && *pp != op) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	if (*pp) {
		*pp = op->next;
		if (dev->retry_tail == op)
			dev->retry_tail = prev;
	}
	op->queued = 0;
	op->next = NULL;
}

int fabnet_dev_post(struct fabnet_dev *dev, struct fabnet_op *op)
{
	ssize_t rc;

	op->dev = dev;
	/* Keep order behind earlier refused posts: the provider is full anyway. */
	if (dev->retry_head) {
		enqueue(dev, op);
		return 0;
	}
	rc = post_now(dev, op);
	if (rc == 0) {
		op->posted = 1;
		return 0;
	}
	if (rc == -FI_EAGAIN) {
		dev->eagain_count++;
		enqueue(dev, op);
		return 0;
	}
	fabnet_log(op->best_effort ? NCCL_LOG_INFO : NCCL_LOG_WARN, NCCL_NET, __FILE__, __LINE__,
		   "fabnet: %s on %s (%zu bytes) failed: %s (%zd). The endpoint may be broken; "
		   "check the peer and the provider.", op_name(op->kind), dev->name, op->len,
		   fi_strerror((int)-rc), rc);
	return (int)rc;
}

/* One pass over the retry list. An op the provider still refuses stays where
 * it is and the pass goes on: a post stuck on one peer (a full or dead shm
 * queue) must not hold back posts to every other peer. */
static int drain_retry(struct fabnet_dev *dev)
{
	struct fabnet_op **pp = &dev->retry_head, *prev = NULL;

	while (*pp) {
		struct fabnet_op *op = *pp;
		ssize_t rc = post_now(dev, op);
		if (rc == -FI_EAGAIN) {
			dev->eagain_count++;
			prev = op;
			pp = &op->next;
			continue;
		}
		*pp = op->next;
		if (dev->retry_tail == op)
			dev->retry_tail = prev;
		op->queued = 0;
		op->next = NULL;
		if (rc == 0) {
			op->posted = 1;
			continue;
		}
		FN_WARN("fabnet: %s on %s failed on retry: %s (%zd)", op_name(op->kind), dev->name,
			fi_strerror((int)-rc), rc);
		op->cb(op, (int)-rc, NULL);
	}
	return 0;
}

static void read_cq_error(struct fabnet_dev *dev)
{
	struct fi_cq_err_entry err;
	char detail[256];
	struct fabnet_op *op;

	memset(&err, 0, sizeof(err));
	if (fi_cq_readerr(dev->cq, &err, 0) < 0)
		return;
	op = err.op_context;
	detail[0] = '\0';
	fi_cq_strerror(dev->cq, err.prov_errno, err.err_data, detail, sizeof(detail));
	if (err.err != FI_ECANCELED && !(op && op->best_effort))
		FN_INFO(NCCL_NET, "fabnet: %s completed with error on %s: %s (%d), provider: %s",
			op ? op_name(op->kind) : "operation", dev->name, fi_strerror(err.err),
			err.err, detail);
	if (op) {
		op->posted = 0;
		op->cb(op, err.err ? err.err : FI_EIO, NULL);
	}
}

static void dispatch(struct fabnet_dev *dev, const struct fi_cq_data_entry *e)
{
	struct fabnet_op *op = e->op_context;

	/* Remote CQ data on anything but a received message is a peer's write
	 * landing here. Some providers (sockets) also flag our own writedata's
	 * local completion with FI_REMOTE_CQ_DATA: FI_WRITE tells those apart. A
	 * message that carries CQ data (fi_senddata: never fabnet's) is a message,
	 * and rx_complete drops it; taken for a write it counted towards a receive
	 * and, without FI_RX_CQ_DATA, its buffer was never posted again. */
	if ((e->flags & FI_REMOTE_WRITE) ||
	    ((e->flags & FI_REMOTE_CQ_DATA) &&
	     !(e->flags & (FI_WRITE | FI_SEND | FI_READ | FI_RECV | FI_MSG)))) {
		dev->up.on_imm(dev, e->data);
		/* With FI_RX_CQ_DATA the write consumed one of our receive buffers. */
		if (dev->rx_cq_data && op && op->kind == FABNET_OP_RECV) {
			op->posted = 0;
			if (fabnet_dev_post(dev, op))
				FN_WARN("fabnet: could not re-post a receive buffer on %s", dev->name);
		}
		return;
	}
	if (!op)
		return;
	op->posted = 0;
	op->cb(op, 0, e);
}

static inline __attribute__((always_inline)) int progress_one(struct fabnet_dev *dev)
{
	struct fi_cq_data_entry e[CQ_BATCH];

	if (!dev->opened)
		return 0;
	for (int round = 0; round < CQ_ROUNDS; round++) {
		ssize_t n = fi_cq_read(dev->cq, e, CQ_BATCH);
		if (n == -FI_EAGAIN)
			break;
		if (n == -FI_EAVAIL) {
			read_cq_error(dev);
			continue;
		}
		if (n < 0) {
			FN_WARN("fabnet: fi_cq_read on %s failed: %s (%zd). The device is unusable; "
				"restart the job.", dev->name, fi_strerror((int)-n), n);
			return (int)n;
		}
		for (ssize_t i = 0; i < n; i++)
			dispatch(dev, &e[i]);
		if (n < CQ_BATCH)
			break;
	}
	/* Every test() polls: skip the call when nothing waits for a retry. */
	return dev->retry_head ? drain_retry(dev) : 0;
}

int fabnet_dev_progress(struct fabnet_dev *dev)
{
	int rc = progress_one(dev);

	for (int i = 1; i < dev->nrails && !rc; i++)
		rc = progress_one(dev->rails[i]);
	return rc;
}

void fabnet_dev_group(struct fabnet_dev **devs, int n)
{
	struct fabnet_dev *p = devs[0];

	p->nrails = n;
	for (int i = 0; i < n; i++) {
		p->rails[i] = devs[i];
		devs[i]->primary = p;
		devs[i]->rail = i;
		if (i)
			devs[i]->nrails = 0;
	}
}

int fabnet_dev_peer_known(struct fabnet_dev *dev, const void *addr, size_t addrlen,
			  fi_addr_t *out)
{
	for (size_t i = 0; i < dev->npeers; i++)
		if (dev->peers[i].addrlen == addrlen && !memcmp(dev->peers[i].addr, addr, addrlen)) {
			*out = dev->peers[i].fi_addr;
			return 1;
		}
	return 0;
}

int fabnet_dev_peer(struct fabnet_dev *dev, const void *addr, size_t addrlen, fi_addr_t *out)
{
	fi_addr_t fa = FI_ADDR_NOTAVAIL;
	int rc;

	if (addrlen == 0 || addrlen > FABNET_ADDR_MAX)
		return -FI_EINVAL;
	if (fabnet_dev_peer_known(dev, addr, addrlen, out))
		return 0;
	if (dev->npeers == dev->peers_cap) {
		size_t cap = dev->peers_cap ? dev->peers_cap * 2 : 16;
		struct fabnet_peer *p = realloc(dev->peers, cap * sizeof(*p));
		if (!p)
			return -FI_ENOMEM;
		dev->peers = p;
		dev->peers_cap = cap;
	}
	rc = fi_av_insert(dev->av, addr, 1, &fa, 0, NULL);
	if (rc != 1 || fa == FI_ADDR_NOTAVAIL) {
		FN_WARN("fabnet: fi_av_insert on %s failed (%d): the peer address is not usable "
			"with provider %s. Do both ranks use the same provider?", dev->name, rc,
			dev->prov_name);
		return rc < 0 ? rc : -FI_EINVAL;
	}
	memcpy(dev->peers[dev->npeers].addr, addr, addrlen);
	dev->peers[dev->npeers].addrlen = addrlen;
	dev->peers[dev->npeers].fi_addr = fa;
	dev->npeers++;
	*out = fa;
	return 0;
}

void *fabnet_dev_txbuf_get(struct fabnet_dev *dev)
{
	if (dev->ntx_free == 0)
		return NULL;
	return dev->tx_slab + (size_t)dev->tx_free[--dev->ntx_free] * dev->buf_size;
}

void fabnet_dev_txbuf_put(struct fabnet_dev *dev, void *buf)
{
	size_t off = (size_t)((uint8_t *)buf - dev->tx_slab);
	dev->tx_free[dev->ntx_free++] = (uint32_t)(off / dev->buf_size);
}

void *fabnet_dev_txbuf_desc(struct fabnet_dev *dev)
{
	return dev->tx_mr ? dev->tx_mr->desc : NULL;
}

static void rx_complete(struct fabnet_op *op, int err, const struct fi_cq_data_entry *e)
{
	struct fabnet_dev *dev = op->owner;

	if (err == FI_ECANCELED)
		return; /* the endpoint is closing */
	if (!err && (e->flags & FI_REMOTE_CQ_DATA)) {
		/* The first, then one in 1000: a flood must not drown the log. */
		if (dev->foreign_msgs++ % 1000 == 0)
			FN_WARN("fabnet: dropped a message with immediate data on %s (%llu so far): "
				"fabnet never sends one. Something else sends to this endpoint.",
				dev->name, (unsigned long long)dev->foreign_msgs);
	} else if (!err) {
		dev->up.on_msg(dev, op->buf, e->len);
	}
	if (fabnet_dev_post(dev, op))
		FN_WARN("fabnet: could not re-post a receive buffer on %s", dev->name);
}

#define OPEN_CHECK(call, what, hint)                                                  \
	do {                                                                          \
		int rc_ = (call);                                                     \
		if (rc_) {                                                            \
			FN_WARN("fabnet: %s on %s (provider %s) failed: %s (%d). %s",  \
				(what), dev->name, dev->prov_name, fi_strerror(-rc_), rc_, \
				(hint));                                              \
			fabnet_dev_close(dev);                                        \
			dev->open_failed = 1;                                         \
			return rc_ < 0 ? rc_ : -FI_EIO;                               \
		}                                                                     \
	} while (0)

/* A provider may send less than its max_msg_size says (efa-direct sends up
 * to the MTU while its RMA goes to 1 GiB): bounce buffers, and so eager
 * data, shrink to what the endpoint sends. */
static int fit_messages(struct fabnet_dev *dev)
{
	size_t fit = dev->efa.max_send & ~(size_t)63;

	if (!dev->efa.max_send || dev->buf_size <= dev->efa.max_send)
		return 0;
	if (fit < FABNET_MSG_MAX_CONTROL) {
		FN_WARN("fabnet: %s sends at most %zu bytes; fabnet needs %zu.", dev->name,
			dev->efa.max_send, (size_t)FABNET_MSG_MAX_CONTROL);
		return -FI_ENOSYS;
	}
	dev->buf_size = fit;
	dev->eager_max = fit - FABNET_MSG_HDR_SIZE - FABNET_EAGER_FIXED;
	FN_INFO(NCCL_INIT | NCCL_NET, "fabnet: %s sends messages of at most %zu bytes: eager data "
		"up to %zu bytes", dev->name, dev->efa.max_send, dev->eager_max);
	return 0;
}

int fabnet_dev_open(struct fabnet_dev *dev)
{
	const struct fabnet_config *cfg = fabnet_config();
	struct fi_info *info = dev->info;
	struct fi_av_attr av_attr;
	struct fi_cq_attr cq_attr;
	size_t min_buf, rx_size;

	if (dev->opened)
		return 0;
	if (dev->open_failed)
		return -FI_ENODEV;

	dev->mode = info->mode;
	dev->mr_mode = (uint64_t)info->domain_attr->mr_mode;
	dev->cq_data_size = info->domain_attr->cq_data_size;
	dev->max_msg_size = info->ep_attr->max_msg_size;
	dev->local_mr = !!(dev->mr_mode & FI_MR_LOCAL);
	dev->prov_key = !!(dev->mr_mode & FI_MR_PROV_KEY);
	dev->virt_addr = !!(dev->mr_mode & FI_MR_VIRT_ADDR);
	dev->mr_endpoint = !!(dev->mr_mode & FI_MR_ENDPOINT);
#ifdef FI_RX_CQ_DATA
	dev->rx_cq_data = !!(dev->mode & FI_RX_CQ_DATA);
#endif
	if (dev->cq_data_size < 4) {
		FN_WARN("fabnet: provider %s carries %zu bytes of CQ data on %s; fabnet needs 4. "
			"Choose another provider with FABNET_PROVIDER.", dev->prov_name,
			dev->cq_data_size, dev->name);
		dev->open_failed = 1;
		return -FI_ENOSYS;
	}
	dev->delivery_needs_peer = strstr(dev->prov_name, "ofi_rxd") != NULL;
	dev->max_write = dev->max_msg_size;
	if (cfg->max_write && cfg->max_write < dev->max_write)
		dev->max_write = cfg->max_write;

	/* A bounce buffer holds the largest control message or an eager payload. */
	dev->eager_max = cfg->eager_max;
	dev->buf_size = FABNET_MSG_HDR_SIZE + FABNET_EAGER_FIXED + dev->eager_max;
	min_buf = FABNET_MSG_MAX_CONTROL;
	if (dev->buf_size < min_buf)
		dev->buf_size = min_buf;
	if (dev->buf_size > dev->max_msg_size) {
		dev->buf_size = dev->max_msg_size;
		if (dev->buf_size < min_buf) {
			FN_WARN("fabnet: provider %s limits messages to %zu bytes; fabnet needs %zu.",
				dev->prov_name, dev->max_msg_size, min_buf);
			dev->open_failed = 1;
			return -FI_ENOSYS;
		}
	}
	dev->eager_max = dev->buf_size - FABNET_MSG_HDR_SIZE - FABNET_EAGER_FIXED;
	dev->buf_size = (dev->buf_size + 63) & ~(size_t)63;

	/* Keys we pick go back into use only after a quarantine (keypool.h): a
	 * peer that still holds an old key must not reach a new buffer. */
	OPEN_CHECK(fabnet_keypool_init(&dev->keys,
				       info->domain_attr->mr_key_size ? info->domain_attr->mr_key_size : 8,
				       FABNET_KEY_QUARANTINE_COUNT, FABNET_KEY_QUARANTINE_NS) ? -FI_ENOMEM : 0,
		   "setting up the key pool", "");
	OPEN_CHECK(fabnet_regcache_init(&dev->cache, 0) ? -FI_ENOMEM : 0,
		   "setting up the registration cache", "");
	OPEN_CHECK(fi_fabric(info->fabric_attr, &dev->fabric, NULL), "fi_fabric",
		   "Is the provider installed and the fabric up?");
	OPEN_CHECK(fi_domain(dev->fabric, info, &dev->domain, NULL), "fi_domain",
		   "Check device permissions (ulimit -l, /dev/infiniband).");
	memset(&av_attr, 0, sizeof(av_attr));
	av_attr.type = info->domain_attr->av_type != FI_AV_UNSPEC ? info->domain_attr->av_type
								  : FI_AV_TABLE;
	OPEN_CHECK(fi_av_open(dev->domain, &av_attr, &dev->av, NULL), "fi_av_open", "");
	memset(&cq_attr, 0, sizeof(cq_attr));
	cq_attr.format = FI_CQ_FORMAT_DATA;
	cq_attr.size = info->tx_attr->size + info->rx_attr->size;
	OPEN_CHECK(fi_cq_open(dev->domain, &cq_attr, &dev->cq, NULL), "fi_cq_open", "");
	OPEN_CHECK(fi_endpoint(dev->domain, info, &dev->ep, NULL), "fi_endpoint", "");
	OPEN_CHECK(fi_ep_bind(dev->ep, &dev->av->fid, 0), "fi_ep_bind(av)", "");
	OPEN_CHECK(fi_ep_bind(dev->ep, &dev->cq->fid, FI_TRANSMIT | FI_RECV), "fi_ep_bind(cq)", "");
	fabnet_efa_ep_options(dev);
	OPEN_CHECK(fi_enable(dev->ep), "fi_enable", "");
#if HAVE_DECL_FI_OPT_MAX_RMA_SIZE
	{
		/* RMA may allow more than a message (EFA: 8 KiB sends, 1 GiB writes). */
		size_t rma = 0, optlen = sizeof(rma);
		if (fi_getopt(&dev->ep->fid, FI_OPT_ENDPOINT, FI_OPT_MAX_RMA_SIZE, &rma, &optlen) == 0 &&
		    rma > 0) {
			dev->max_write = rma;
			if (cfg->max_write && cfg->max_write < dev->max_write)
				dev->max_write = cfg->max_write;
		}
	}
#endif
	fabnet_efa_after_enable(dev);
	OPEN_CHECK(fit_messages(dev), "fitting bounce buffers to the largest message", "");
	dev->addrlen = sizeof(dev->addr);
	OPEN_CHECK(fi_getname(&dev->ep->fid, dev->addr, &dev->addrlen), "fi_getname",
		   "The endpoint address is longer than a connection handle can carry.");
	dev->opened = 1;

	/* Bounce buffers. */
	rx_size = info->rx_attr->size ? info->rx_attr->size : cfg->rx_buffers;
	dev->nrx = cfg->rx_buffers < rx_size ? cfg->rx_buffers : (unsigned)rx_size;
	dev->ntx = cfg->tx_buffers;
	dev->rx_slab = aligned_alloc(4096, ((size_t)dev->nrx * dev->buf_size + 4095) & ~(size_t)4095);
	dev->tx_slab = aligned_alloc(4096, ((size_t)dev->ntx * dev->buf_size + 4095) & ~(size_t)4095);
	dev->rx_ops = calloc(dev->nrx, sizeof(*dev->rx_ops));
	dev->tx_free = malloc(sizeof(uint32_t) * dev->ntx);
	if (!dev->rx_slab || !dev->tx_slab || !dev->rx_ops || !dev->tx_free)
		OPEN_CHECK(-FI_ENOMEM, "allocating bounce buffers", "Lower FABNET_RX_BUFFERS.");
	memset(dev->rx_slab, 0, (size_t)dev->nrx * dev->buf_size);
	memset(dev->tx_slab, 0, (size_t)dev->ntx * dev->buf_size);
	for (unsigned i = 0; i < dev->ntx; i++)
		dev->tx_free[i] = dev->ntx - 1 - i;
	dev->ntx_free = dev->ntx;
	if (dev->local_mr) {
		/* Peers only send into these and we only send from those: no
		 * remote access, whatever key a peer learns or guesses. */
		OPEN_CHECK(fabnet_mr_reg_local(dev, dev->rx_slab, (size_t)dev->nrx * dev->buf_size,
					       FI_RECV, &dev->rx_mr),
			   "registering receive buffers", "");
		OPEN_CHECK(fabnet_mr_reg_local(dev, dev->tx_slab, (size_t)dev->ntx * dev->buf_size,
					       FI_SEND, &dev->tx_mr),
			   "registering send buffers", "");
	}
	for (unsigned i = 0; i < dev->nrx; i++) {
		struct fabnet_op *op = &dev->rx_ops[i];
		op->kind = FABNET_OP_RECV;
		op->cb = rx_complete;
		op->owner = dev;
		op->buf = dev->rx_slab + (size_t)i * dev->buf_size;
		op->len = dev->buf_size;
		op->desc = dev->rx_mr ? dev->rx_mr->desc : NULL;
		OPEN_CHECK(fabnet_dev_post(dev, op), "posting receive buffers", "");
	}
	FN_INFO(NCCL_INIT | NCCL_NET,
		"fabnet: opened %s (%s): mode 0x%llx mr_mode 0x%llx cq_data %zu max_msg %zu "
		"eager %zu rx %u tx %u", dev->name, dev->prov_name, (unsigned long long)dev->mode,
		(unsigned long long)dev->mr_mode, dev->cq_data_size, dev->max_msg_size,
		dev->eager_max, dev->nrx, dev->ntx);
	return 0;
}

void fabnet_dev_close(struct fabnet_dev *dev)
{
	/* Closing the endpoint first cancels everything still posted on it. */
	if (dev->ep)
		fi_close(&dev->ep->fid);
	dev->ep = NULL;
	if (dev->rx_mr)
		fabnet_mr_dereg(dev->rx_mr);
	if (dev->tx_mr)
		fabnet_mr_dereg(dev->tx_mr);
	dev->rx_mr = dev->tx_mr = NULL;
	/* Registrations the application never released go with the domain. */
	if (dev->cache.trees || dev->cache.detached)
		fabnet_regcache_fini(&dev->cache, fabnet_mr_release_cached, NULL);
	memset(&dev->cache, 0, sizeof(dev->cache));
	if (dev->keys.slots || dev->keys.fifo)
		fabnet_keypool_fini(&dev->keys);
	memset(&dev->keys, 0, sizeof(dev->keys));
	if (dev->cq)
		fi_close(&dev->cq->fid);
	if (dev->av)
		fi_close(&dev->av->fid);
	if (dev->domain)
		fi_close(&dev->domain->fid);
	if (dev->fabric)
		fi_close(&dev->fabric->fid);
	dev->cq = NULL;
	dev->av = NULL;
	dev->domain = NULL;
	dev->fabric = NULL;
	free(dev->rx_slab);
	free(dev->tx_slab);
	free(dev->rx_ops);
	free(dev->tx_free);
	free(dev->peers);
	dev->rx_slab = dev->tx_slab = NULL;
	dev->rx_ops = NULL;
	dev->tx_free = NULL;
	dev->peers = NULL;
	dev->npeers = dev->peers_cap = 0;
	dev->retry_head = dev->retry_tail = NULL;
	dev->opened = 0;
}
