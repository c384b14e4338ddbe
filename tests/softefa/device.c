/* softefa: the device list, device instances, queries, PDs and AHs. */
#include "sefa.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#undef ibv_query_port

struct sefa_ibdev {
	struct ibv_device ibdev;	/* first: the list holds these */
	int index;
};

static struct sefa_ibdev devices[SEFA_MAX_DEVICES];
static int ndevices = -1;
static pthread_mutex_t list_lock = PTHREAD_MUTEX_INITIALIZER;

/* A process's host id: random, not its pid, which two PID namespaces can
 * share (pid 1 in each); the socket bind makes the GID's uniqueness sure. */
static uint32_t process_host_id(void)
{
	static uint32_t id;
	static pid_t owner;

	if (!id || owner != getpid()) {
		while (getrandom(&id, sizeof(id), 0) != sizeof(id) || !id)
			;
		owner = getpid();
	}
	return id;
}

static int mkdirs(const char *path)
{
	char buf[256];
	size_t n = strlen(path);

	if (n >= sizeof(buf))
		return ENAMETOOLONG;
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0755) && errno != EEXIST)
			return errno;
		*p = '/';
	}
	if (mkdir(buf, 0755) && errno != EEXIST)
		return errno;
	return 0;
}

static void write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0)
		return;
	if (write(fd, text, strlen(text)) < 0)
		SEFA_ERR("cannot write %s: %s", path, strerror(errno));
	close(fd);
}

/* The provider reads <ibdev_path>/device (a PCI address), <ibdev_path>/device/driver
 * and $SYSFS_PATH/class/infiniband_verbs/abi_version: build that much of sysfs. */
static int make_sysfs(int i, char *ibdev_path, size_t len)
{
	const char *d = sefa_cfg.dir;
	char pci[320], link[400], drv[320];
	int err;

	snprintf(drv, sizeof(drv), "%s/sysfs/bus/pci/drivers/efa", d);
	snprintf(pci, sizeof(pci), "%s/sysfs/%08x/devices/pci0000:00/%s", d, process_host_id(), sefa_cfg.pci[i]);
	snprintf(ibdev_path, len, "%s/sysfs/%08x/class/infiniband/efa_%d", d, process_host_id(), i);
	if ((err = mkdirs(drv)) || (err = mkdirs(pci)) || (err = mkdirs(ibdev_path)) ||
	    (err = mkdirs(d)))
		return err;
	snprintf(link, sizeof(link), "%s/sysfs/class/infiniband_verbs", d);
	if ((err = mkdirs(link)))
		return err;
	snprintf(link, sizeof(link), "%s/sysfs/class/infiniband_verbs/abi_version", d);
	write_file(link, "6\n");
	snprintf(link, sizeof(link), "%s/device", ibdev_path);
	unlink(link);
	if (symlink(pci, link))
		return errno;
	snprintf(link, sizeof(link), "%s/driver", pci);
	unlink(link);
	if (symlink(drv, link))
		return errno;
	return 0;
}

static void build_list(void)
{
	sefa_config_load();
	ndevices = 0;
	if (!sefa_cfg.enabled)
		return;
	for (int i = 0; i < sefa_cfg.ndev; i++) {
		struct ibv_device *d = &devices[i].ibdev;
		int err = make_sysfs(i, d->ibdev_path, sizeof(d->ibdev_path));

		if (err) {
			SEFA_ERR("cannot build the sysfs entries for device %d under %s: %s",
				 i, sefa_cfg.dir, strerror(err));
			return;
		}
		devices[i].index = i;
		d->node_type = IBV_NODE_UNSPECIFIED;
		d->transport_type = IBV_TRANSPORT_UNSPECIFIED;
		snprintf(d->name, sizeof(d->name), "efa_%d", i);
		snprintf(d->dev_name, sizeof(d->dev_name), "uverbs%d", i);
		snprintf(d->dev_path, sizeof(d->dev_path), "%s/sysfs/class/infiniband_verbs/uverbs%d",
			 sefa_cfg.dir, i);
		ndevices = i + 1;
	}
	/* libfabric's efa provider reads abi_version below $SYSFS_PATH */
	if (!getenv("SYSFS_PATH")) {
		char p[128];

		snprintf(p, sizeof(p), "%s/sysfs", sefa_cfg.dir);
		setenv("SYSFS_PATH", p, 0);
	}
}

SEFA_EXPORT struct ibv_device **ibv_get_device_list(int *num)
{
	struct ibv_device **list;

	pthread_mutex_lock(&list_lock);
	if (ndevices < 0)
		build_list();
	list = calloc((size_t)ndevices + 1, sizeof(*list));
	if (list)
		for (int i = 0; i < ndevices; i++)
			list[i] = &devices[i].ibdev;
	if (num)
		*num = list ? ndevices : 0;
	pthread_mutex_unlock(&list_lock);
	if (!list)
		errno = ENOMEM;
	return list;
}

SEFA_EXPORT void ibv_free_device_list(struct ibv_device **list)
{
	free(list);
}

SEFA_EXPORT const char *ibv_get_device_name(struct ibv_device *d)
{
	return d->name;
}

SEFA_EXPORT int ibv_get_device_index(struct ibv_device *d)
{
	return ((struct sefa_ibdev *)d)->index;
}

static void make_gid(int index, uint8_t gid[16])
{
	uint32_t host = process_host_id();

	if (sefa_cfg.shared_host) {
		host = 2166136261u;	/* FNV-1a of the host name */
		for (const char *p = sefa_cfg.host; *p; p++)
			host = (host ^ (uint8_t)*p) * 16777619u;
	}
	memset(gid, 0, 16);
	gid[0] = 0xfe;
	gid[1] = 0x80;
	gid[8] = 0x5e;	/* "soft efa" marker */
	gid[9] = 0xfa;
	gid[10] = (uint8_t)(host >> 24);
	gid[11] = (uint8_t)(host >> 16);
	gid[12] = (uint8_t)(host >> 8);
	gid[13] = (uint8_t)host;
	gid[15] = (uint8_t)index;
}

SEFA_EXPORT __be64 ibv_get_device_guid(struct ibv_device *d)
{
	uint8_t gid[16];
	__be64 guid;

	make_gid(((struct sefa_ibdev *)d)->index, gid);
	memcpy(&guid, gid + 8, 8);
	return guid;
}

void sefa_gid_to_str(const uint8_t *gid, char *out, size_t len)
{
	size_t o = 0;

	for (int i = 0; i < 16 && o + 2 < len; i++)
		o += (size_t)snprintf(out + o, len - o, "%02x", gid[i]);
}

void sefa_peer_paths(const uint8_t *gid, uint32_t slot, char *sock, size_t slen, char *shm, size_t shmlen)
{
	char g[40];

	sefa_gid_to_str(gid, g, sizeof(g));
	if (sock)
		snprintf(sock, slen, "%s/%s-%u.sock", sefa_cfg.dir, g, slot);
	if (shm)
		snprintf(shm, shmlen, "%s/%s-%u.shm", sefa_cfg.dir, g, slot);
}

/* Claims a socket address: one slot per process, several slots per GID only
 * when processes share a host (SOFTEFA_HOST). A path whose owner is gone is
 * reclaimed. */
static int bind_slot(struct sefa_dev *dev)
{
	uint32_t nslots = sefa_cfg.shared_host ? 64 : 1;
	struct sockaddr_un a = { .sun_family = AF_UNIX };

	for (uint32_t s = 0; s < nslots; s++) {
		sefa_peer_paths(dev->gid, s, dev->sock_path, sizeof(dev->sock_path), dev->shm_path,
				sizeof(dev->shm_path));
		if (strlen(dev->sock_path) >= sizeof(a.sun_path)) {
			SEFA_ERR("socket path %s is too long: use a shorter SOFTEFA_DIR", dev->sock_path);
			return ENAMETOOLONG;
		}
		memcpy(a.sun_path, dev->sock_path, strlen(dev->sock_path) + 1);
		if (!bind(dev->sock, (struct sockaddr *)&a, sizeof(a))) {
			dev->slot = s;
			return 0;
		}
		if (errno != EADDRINUSE)
			return errno;
		if (sefa_sock_has_owner(&a)) {
			if (sefa_cfg.shared_host)
				continue;
			SEFA_ERR("%s belongs to a live process: two processes drew one host id", dev->sock_path);
			return EADDRINUSE;
		}
		unlink(dev->sock_path);
		if (!bind(dev->sock, (struct sockaddr *)&a, sizeof(a))) {
			dev->slot = s;
			return 0;
		}
	}
	return EADDRINUSE;
}

static int query_port_ex(struct ibv_context *ctx, uint8_t port, struct ibv_port_attr *pa, size_t len);
static int query_device_ex(struct ibv_context *ctx, const struct ibv_query_device_ex_input *in,
			   struct ibv_device_attr_ex *attr, size_t len);
struct ibv_cq_ex *sefa_create_cq_ex(struct ibv_context *ctx, struct ibv_cq_init_attr_ex *attr);
struct ibv_qp *sefa_create_qp_ex(struct ibv_context *ctx, struct ibv_qp_init_attr_ex *attr);
int sefa_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr, struct ibv_send_wr **bad);
int sefa_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad);

static int no_notify(struct ibv_cq *cq, int solicited)
{
	(void)cq;
	(void)solicited;
	return EOPNOTSUPP;	/* the profiles have no CQ notifications */
}

static void fill_ops(struct sefa_dev *dev)
{
	struct ibv_context *c = &dev->vctx.context;

	c->ops.post_send = sefa_post_send;
	c->ops.post_recv = sefa_post_recv;
	c->ops.poll_cq = sefa_poll_cq;
	c->ops.req_notify_cq = no_notify;
	c->abi_compat = __VERBS_ABI_IS_EXTENDED;
	c->num_comp_vectors = 1;
	dev->vctx.sz = sizeof(dev->vctx);
	dev->vctx.query_port = query_port_ex;
	dev->vctx.query_device_ex = query_device_ex;
	dev->vctx.create_cq_ex = sefa_create_cq_ex;
	dev->vctx.create_qp_ex = sefa_create_qp_ex;
}

static void free_dev(struct sefa_dev *dev)
{
	if (dev->shm) {
		atomic_store(&dev->shm->alive, 0);
		sefa_shm_unmap(dev->shm);
		unlink(dev->shm_path);
	}
	if (dev->sock >= 0) {
		close(dev->sock);
		if (dev->sock_path[0])
			unlink(dev->sock_path);
	}
	if (dev->memfd >= 0)
		close(dev->memfd);
	free(dev->qp_by_idx);
	free(dev->mr_by_idx);
	pthread_mutex_destroy(&dev->lock);
	free(dev);
}

SEFA_EXPORT struct ibv_context *ibv_open_device(struct ibv_device *ibdev)
{
	struct sefa_ibdev *sd = (struct sefa_ibdev *)ibdev;
	struct sefa_dev *dev = calloc(1, sizeof(*dev));
	int err = ENOMEM;

	if (!dev)
		goto fail;
	dev->ibdev = ibdev;
	dev->index = sd->index;
	dev->sock = dev->evfd = dev->epfd = dev->memfd = -1;
	pthread_mutex_init(&dev->lock, NULL);
	dev->vctx.context.device = ibdev;
	dev->vctx.context.cmd_fd = -1;
	dev->vctx.context.async_fd = -1;
	pthread_mutex_init(&dev->vctx.context.mutex, NULL);
	fill_ops(dev);
	make_gid(dev->index, dev->gid);
	dev->qp_by_idx = calloc(SEFA_SHM_QP, sizeof(*dev->qp_by_idx));
	dev->mr_by_idx = calloc(SEFA_SHM_MR, sizeof(*dev->mr_by_idx));
	if (!dev->qp_by_idx || !dev->mr_by_idx)
		goto fail;
	dev->sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (dev->sock < 0 || (err = bind_slot(dev))) {
		err = dev->sock < 0 ? errno : err;
		SEFA_ERR("cannot bind the device socket in %s: %s", sefa_cfg.dir, strerror(err));
		goto fail;
	}
	dev->qpn_base = sefa_cfg.shared_host ? dev->slot << SEFA_QPN_BITS_SHARED : 0;
	dev->memfd = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
	if (dev->memfd < 0) {
		err = errno;
		SEFA_ERR("cannot open /proc/self/mem for RDMA into this process: %s", strerror(err));
		goto fail;
	}
	if ((err = sefa_shm_create(dev->shm_path, &dev->shm)))
		goto fail;
	memcpy(dev->shm->gid, dev->gid, 16);
	dev->shm->slot = dev->slot;
	if ((err = sefa_engine_start(dev)))
		goto fail;
	return &dev->vctx.context;
fail:
	if (dev)
		free_dev(dev);
	errno = err;
	return NULL;
}

SEFA_EXPORT int ibv_close_device(struct ibv_context *ctx)
{
	struct sefa_dev *dev = sefa_dev_of(ctx);

	if (dev->qps || dev->cqs)
		SEFA_INFO("device %s closed with QPs or CQs still open", dev->ibdev->name);
	sefa_engine_stop(dev);
	free_dev(dev);
	return 0;
}

bool sefa_is_dev(struct ibv_context *ctx)
{
	return ctx && ctx->abi_compat == __VERBS_ABI_IS_EXTENDED &&
	       sefa_dev_of(ctx)->vctx.query_port == query_port_ex;
}

static void fill_device_attr(struct sefa_dev *dev, struct ibv_device_attr *a)
{
	const struct sefa_profile *p = &sefa_cfg.prof;

	memset(a, 0, sizeof(*a));
	snprintf(a->fw_ver, sizeof(a->fw_ver), "0.0.0.0");
	memcpy(&a->node_guid, dev->gid + 8, 8);
	a->sys_image_guid = a->node_guid;
	a->max_mr_size = p->max_mr_size;
	a->page_size_cap = p->page_size_cap;
	a->vendor_id = p->vendor_id;
	a->vendor_part_id = p->vendor_part_id;
	a->hw_ver = p->hw_ver;
	a->max_qp = (int)p->max_qp;
	a->max_qp_wr = (int)(p->max_sq_wr < p->max_rq_wr ? p->max_sq_wr : p->max_rq_wr);
	a->max_sge = p->max_sq_sge < p->max_rq_sge ? p->max_sq_sge : p->max_rq_sge;
	a->max_sge_rd = p->max_sge_rd;
	a->max_cq = (int)p->max_cq;
	a->max_cqe = (int)p->max_cqe;
	a->max_mr = (int)p->max_mr;
	a->max_pd = (int)p->max_pd;
	a->max_ah = (int)p->max_ah;
	a->max_pkeys = 1;
	a->phys_port_cnt = 1;
}

SEFA_EXPORT int ibv_query_device(struct ibv_context *ctx, struct ibv_device_attr *attr)
{
	fill_device_attr(sefa_dev_of(ctx), attr);
	return 0;
}

static int query_device_ex(struct ibv_context *ctx, const struct ibv_query_device_ex_input *in,
			   struct ibv_device_attr_ex *attr, size_t len)
{
	(void)in;
	if (len < sizeof(attr->orig_attr))
		return EINVAL;
	memset(attr, 0, len);
	fill_device_attr(sefa_dev_of(ctx), &attr->orig_attr);
	return 0;
}

static int query_port_ex(struct ibv_context *ctx, uint8_t port, struct ibv_port_attr *pa, size_t len)
{
	const struct sefa_profile *p = &sefa_cfg.prof;

	(void)ctx;
	if (port != 1)
		return EINVAL;
	memset(pa, 0, len < sizeof(*pa) ? len : sizeof(*pa));
	pa->state = IBV_PORT_ACTIVE;
	pa->phys_state = 5;	/* LinkUp */
	pa->max_mtu = pa->active_mtu = IBV_MTU_4096;
	pa->max_msg_sz = p->mtu;
	pa->gid_tbl_len = 1;
	pa->pkey_tbl_len = 1;
	pa->lmc = 1;
	pa->max_vl_num = 1;
	pa->active_speed = p->active_speed;
	pa->active_width = p->active_width;
	pa->link_layer = IBV_LINK_LAYER_UNSPECIFIED;
	return 0;
}

SEFA_EXPORT int ibv_query_port(struct ibv_context *ctx, uint8_t port, struct _compat_ibv_port_attr *pa)
{
	/* old callers pass a smaller struct that ends before the fields added later */
	return query_port_ex(ctx, port, (struct ibv_port_attr *)pa, offsetof(struct ibv_port_attr, link_layer) + 1);
}

SEFA_EXPORT int ibv_query_gid(struct ibv_context *ctx, uint8_t port, int index, union ibv_gid *gid)
{
	if (port != 1 || index != 0)
		return EINVAL;
	memcpy(gid->raw, sefa_dev_of(ctx)->gid, 16);
	return 0;
}

SEFA_EXPORT int ibv_query_pkey(struct ibv_context *ctx, uint8_t port, int index, __be16 *pkey)
{
	(void)ctx;
	if (port != 1 || index != 0)
		return EINVAL;
	*pkey = 0xffff;
	return 0;
}

int sefa_efadv_query_device(struct ibv_context *ctx, struct efadv_device_attr *attr, uint32_t inlen)
{
	const struct sefa_profile *p = &sefa_cfg.prof;

	if (!sefa_is_dev(ctx))
		return EOPNOTSUPP;
	if (inlen < offsetof(struct efadv_device_attr, inline_buf_size) + sizeof(attr->inline_buf_size))
		return EINVAL;
	memset(attr, 0, inlen);
	attr->max_sq_wr = p->max_sq_wr;
	attr->max_rq_wr = p->max_rq_wr;
	attr->max_sq_sge = p->max_sq_sge;
	attr->max_rq_sge = p->max_rq_sge;
	attr->inline_buf_size = p->inline_buf_size;
	/* fields after inline_buf_size exist only for callers built against newer headers */
	if (inlen >= offsetof(struct efadv_device_attr, device_caps) + sizeof(attr->device_caps))
		attr->device_caps = p->device_caps &
			~(uint32_t)(EFADV_DEVICE_ATTR_CAPS_RDMA_READ | EFADV_DEVICE_ATTR_CAPS_RDMA_WRITE);
	if (inlen >= offsetof(struct efadv_device_attr, max_rdma_size) + sizeof(attr->max_rdma_size)) {
		attr->max_rdma_size = p->max_rdma_size;
		attr->device_caps |= p->device_caps &
			(EFADV_DEVICE_ATTR_CAPS_RDMA_READ | EFADV_DEVICE_ATTR_CAPS_RDMA_WRITE);
	}
	return 0;
}

/* ---- PDs ---------------------------------------------------------------------- */
SEFA_EXPORT struct ibv_pd *ibv_alloc_pd(struct ibv_context *ctx)
{
	struct sefa_dev *dev = sefa_dev_of(ctx);
	struct sefa_pd *pd = calloc(1, sizeof(*pd));

	if (!pd) {
		errno = ENOMEM;
		return NULL;
	}
	pd->ibpd.context = ctx;
	pthread_mutex_lock(&dev->lock);
	pd->pdn = ++dev->next_pdn;
	pthread_mutex_unlock(&dev->lock);
	pd->ibpd.handle = pd->pdn;
	return &pd->ibpd;
}

SEFA_EXPORT int ibv_dealloc_pd(struct ibv_pd *pd)
{
	free(pd);
	return 0;
}

/* ---- AHs: one AH number per peer GID per device, counted like the device does */
int sefa_ah_lookup(struct sefa_dev *dev, const uint8_t *gid)
{
	for (int i = 1; i < SEFA_SHM_AH; i++)
		if (dev->ah_local_refs[i] && !memcmp(dev->shm->ah_gid[i], gid, 16))
			return i;
	return SEFA_AH_UNKNOWN;
}

SEFA_EXPORT struct ibv_ah *ibv_create_ah(struct ibv_pd *pd, struct ibv_ah_attr *attr)
{
	struct sefa_dev *dev = sefa_dev_of(pd->context);
	struct sefa_ah *ah;
	int ahn, free_slot = 0;

	if (!attr->is_global || attr->port_num != 1) {
		SEFA_INFO("create_ah: EFA needs a global route (GID) on port 1");
		errno = EINVAL;
		return NULL;
	}
	ah = calloc(1, sizeof(*ah));
	if (!ah) {
		errno = ENOMEM;
		return NULL;
	}
	pthread_mutex_lock(&dev->lock);
	ahn = sefa_ah_lookup(dev, attr->grh.dgid.raw);
	for (int i = 1; ahn == SEFA_AH_UNKNOWN && !free_slot && i < SEFA_SHM_AH; i++)
		if (!dev->ah_local_refs[i])
			free_slot = i;
	if (ahn == SEFA_AH_UNKNOWN && !free_slot) {
		pthread_mutex_unlock(&dev->lock);
		free(ah);
		errno = ENOMEM;
		return NULL;
	}
	if (ahn == SEFA_AH_UNKNOWN) {
		ahn = free_slot;
		sefa_shm_lock(dev->shm);
		memcpy(dev->shm->ah_gid[ahn], attr->grh.dgid.raw, 16);
		dev->shm->ah_refs[ahn] = 1;
		sefa_shm_unlock(dev->shm);
	}
	dev->ah_local_refs[ahn]++;
	pthread_mutex_unlock(&dev->lock);
	ah->ahn = (uint16_t)ahn;
	memcpy(ah->gid, attr->grh.dgid.raw, 16);
	ah->ibah.context = pd->context;
	ah->ibah.pd = pd;
	ah->ibah.handle = (uint32_t)ahn;
	return &ah->ibah;
}

SEFA_EXPORT int ibv_destroy_ah(struct ibv_ah *ibah)
{
	struct sefa_ah *ah = (struct sefa_ah *)ibah;
	struct sefa_dev *dev = sefa_dev_of(ibah->context);

	pthread_mutex_lock(&dev->lock);
	if (--dev->ah_local_refs[ah->ahn] == 0) {
		sefa_shm_lock(dev->shm);
		dev->shm->ah_refs[ah->ahn] = 0;
		memset(dev->shm->ah_gid[ah->ahn], 0, 16);
		sefa_shm_unlock(dev->shm);
	}
	pthread_mutex_unlock(&dev->lock);
	free(ah);
	return 0;
}

int sefa_efadv_query_ah(struct ibv_ah *ibah, struct efadv_ah_attr *attr, uint32_t inlen)
{
	if (!sefa_is_dev(ibah->context))
		return EOPNOTSUPP;
	if (inlen < offsetof(struct efadv_ah_attr, ahn) + sizeof(attr->ahn))
		return EINVAL;
	memset(attr, 0, inlen);
	attr->ahn = ((struct sefa_ah *)ibah)->ahn;
	return 0;
}

/* ---- fork, strings ------------------------------------------------------------- */
SEFA_EXPORT int ibv_fork_init(void)
{
	return 0;
}

SEFA_EXPORT enum ibv_fork_status ibv_is_fork_initialized(void)
{
	return IBV_FORK_UNNEEDED;	/* like a kernel with copy-on-fork pinned pages */
}

SEFA_EXPORT int ibv_dontfork_range(void *base, size_t size)
{
	(void)base;
	(void)size;
	return 0;
}

SEFA_EXPORT int ibv_dofork_range(void *base, size_t size)
{
	(void)base;
	(void)size;
	return 0;
}

SEFA_EXPORT const char *ibv_wc_status_str(enum ibv_wc_status status)
{
	static const char *const names[] = {
		"success", "local length error", "local QP operation error", "local EE context operation error",
		"local protection error", "Work Request Flushed Error", "memory management operation error",
		"bad response error", "local access error", "remote invalid request error",
		"remote access error", "remote operation error", "transport retry counter exceeded",
		"RNR retry counter exceeded", "local RDD violation error", "remote invalid RD request",
		"aborted error", "invalid EE context number", "invalid EE context state",
		"fatal error", "response timeout error", "general error", "TM error", "TM rendezvous error",
	};

	return (unsigned)status < sizeof(names) / sizeof(names[0]) ? names[status] : "unknown";
}

SEFA_EXPORT const char *ibv_node_type_str(enum ibv_node_type t)
{
	return t == IBV_NODE_UNSPECIFIED ? "unspecified" : "unknown";
}

SEFA_EXPORT const char *ibv_port_state_str(enum ibv_port_state s)
{
	return s == IBV_PORT_ACTIVE ? "PORT_ACTIVE" : "PORT_DOWN";
}

SEFA_EXPORT const char *ibv_event_type_str(enum ibv_event_type e)
{
	(void)e;
	return "unknown";
}

SEFA_EXPORT int ibv_get_async_event(struct ibv_context *ctx, struct ibv_async_event *ev)
{
	(void)ctx;
	(void)ev;
	errno = EOPNOTSUPP;	/* the device raises no async events */
	return -1;
}

SEFA_EXPORT void ibv_ack_async_event(struct ibv_async_event *ev)
{
	(void)ev;
}

enum ibv_wc_status sefa_status_to_ibv(uint32_t st)
{
	/* the mapping rdma-core's efa provider applies to completion statuses */
	switch (st) {
	case SEFA_ST_OK: return IBV_WC_SUCCESS;
	case SEFA_ST_FLUSHED: return IBV_WC_WR_FLUSH_ERR;
	case SEFA_ST_LOCAL_QP_INTERNAL:
	case SEFA_ST_LOCAL_UNSUPPORTED_OP:
	case SEFA_ST_LOCAL_INVALID_AH: return IBV_WC_LOC_QP_OP_ERR;
	case SEFA_ST_LOCAL_INVALID_LKEY: return IBV_WC_LOC_PROT_ERR;
	case SEFA_ST_LOCAL_BAD_LENGTH: return IBV_WC_LOC_LEN_ERR;
	case SEFA_ST_REMOTE_ABORT: return IBV_WC_REM_ABORT_ERR;
	case SEFA_ST_REMOTE_RNR: return IBV_WC_RNR_RETRY_EXC_ERR;
	case SEFA_ST_REMOTE_BAD_DEST_QPN: return IBV_WC_REM_INV_RD_REQ_ERR;
	case SEFA_ST_REMOTE_BAD_STATUS: return IBV_WC_BAD_RESP_ERR;
	case SEFA_ST_REMOTE_BAD_LENGTH: return IBV_WC_REM_INV_REQ_ERR;
	case SEFA_ST_LOCAL_UNRESP_REMOTE:
	case SEFA_ST_LOCAL_UNREACH_REMOTE: return IBV_WC_RESP_TIMEOUT_ERR;
	case SEFA_ST_REMOTE_BAD_ADDRESS: return IBV_WC_REM_ACCESS_ERR;
	case SEFA_ST_REMOTE_UNKNOWN_PEER: return IBV_WC_REM_OP_ERR;
	default: return IBV_WC_GENERAL_ERR;
	}
}
