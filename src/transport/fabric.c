#include <config.h>

#include <ctype.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rdma/fabric.h>
#include <rdma/fi_errno.h>

#include "core/log.h"
#include "core/wire.h"
#include "transport/efa.h"
#include "transport/fabric.h"

/* Providers for inter-node traffic, best first, when the user names none.
 * shm is intra-node only, so it is used only when asked for. */
static const char *const auto_order[] = {
	"efa", "verbs;ofi_rxm", "tcp;ofi_rxm", "tcp", "sockets", "udp;ofi_rxd", NULL,
};

struct fi_info *fabnet_fabric_hints(const char *provider)
{
	struct fi_info *hints = fi_allocinfo();

	if (!hints)
		return NULL;
	hints->caps = FI_MSG | FI_RMA;
	hints->ep_attr->type = FI_EP_RDM;
	/* Modes we honour: every op carries a fi_context2 we own. */
	hints->mode = 0;
#ifdef FI_CONTEXT
	hints->mode |= FI_CONTEXT;
#endif
#ifdef FI_CONTEXT2
	hints->mode |= FI_CONTEXT2;
#endif
#ifdef FI_RX_CQ_DATA
	hints->mode |= FI_RX_CQ_DATA;
#endif
	hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED |
				      FI_MR_PROV_KEY | FI_MR_ENDPOINT;
	hints->domain_attr->threading = FI_THREAD_DOMAIN;
	hints->domain_attr->resource_mgmt = FI_RM_ENABLED;
	if (provider && *provider)
		hints->fabric_attr->prov_name = strdup(provider);
	return hints;
}

static int is_bdf(const char *s)
{
	unsigned d, b, dev, fn;
	char tail;

	return sscanf(s, "%x:%x:%x.%x%c", &d, &b, &dev, &fn, &tail) == 4;
}

/* The NIC's PCI device in sysfs: from libfabric's NIC attributes when the
 * provider fills them, else from the network interface of that name. */
static char *find_pci_path(const struct fi_info *info, const char *name)
{
	char path[PATH_MAX], real[PATH_MAX];

	if (info->nic && info->nic->bus_attr && info->nic->bus_attr->bus_type == FI_BUS_PCI) {
		const struct fi_pci_attr *pci = &info->nic->bus_attr->attr.pci;
		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%04x:%02x:%02x.%x",
			 pci->domain_id, pci->bus_id, pci->device_id, pci->function_id);
		if (realpath(path, real))
			return strdup(real);
	}
	snprintf(path, sizeof(path), "/sys/class/net/%s/device", name);
	if (!realpath(path, real))
		return NULL;
	/* Virtual functions like virtio sit below their PCI device: walk up. */
	for (;;) {
		char *slash = strrchr(real, '/');
		if (!slash || slash == real)
			return NULL;
		if (is_bdf(slash + 1))
			return strdup(real);
		*slash = '\0';
	}
}

static int find_speed_mbps(const struct fi_info *info, const char *name)
{
	char path[PATH_MAX];
	FILE *f;
	long mbps = -1;

	if (info->nic && info->nic->link_attr && info->nic->link_attr->speed > 0 &&
	    info->nic->link_attr->speed != (size_t)-1) {
		size_t s = info->nic->link_attr->speed / 1000000;
		if (s > 0 && s < INT_MAX)
			return (int)s;
	}
	snprintf(path, sizeof(path), "/sys/class/net/%s/speed", name);
	f = fopen(path, "r");
	if (f) {
		if (fscanf(f, "%ld", &mbps) != 1)
			mbps = -1;
		fclose(f);
	}
	return mbps > 0 && mbps < INT_MAX ? (int)mbps : 0;
}

static uint64_t fnv1a64(const char *a, const char *b)
{
	uint64_t h = 1469598103934665603ull;
	for (const char *s = a; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ull;
	h = (h ^ '/') * 1099511628211ull;
	for (const char *s = b; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ull;
	return h;
}

static int name_in_list(const char *name, const char *list)
{
	size_t n = strlen(name);
	const char *p = list;

	while (*p) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len == n && !strncmp(p, name, n))
			return 1;
		if (!end)
			break;
		p = end + 1;
	}
	return 0;
}

static const char *choose_provider(const struct fabnet_config *cfg, struct fi_info *list,
				   char *why, size_t whylen)
{
	if (cfg->provider[0]) {
		snprintf(why, whylen, "%s=%s", cfg->provider_from, cfg->provider);
		return list->fabric_attr->prov_name;
	}
	for (int i = 0; auto_order[i]; i++)
		for (struct fi_info *it = list; it; it = it->next)
			if (!strcmp(it->fabric_attr->prov_name, auto_order[i])) {
				snprintf(why, whylen, i == 0 ? "EFA is present"
							     : "best available: no EFA device found");
				return it->fabric_attr->prov_name;
			}
	for (struct fi_info *it = list; it; it = it->next)
		if (strcmp(it->fabric_attr->prov_name, "shm")) {
			snprintf(why, whylen, "first provider libfabric offered");
			return it->fabric_attr->prov_name;
		}
	return NULL;
}

/* Among infos of one domain, prefer IPv4 addressing: it works in any netns. */
static int better_info(const struct fi_info *a, const struct fi_info *b)
{
	return a->addr_format == FI_SOCKADDR_IN && b->addr_format != FI_SOCKADDR_IN;
}

/* The same domain asked for again with FI_HMEM: when the provider offers it,
 * the device is opened from this info so accelerator memory can register. */
static struct fi_info *hmem_variant(const struct fi_info *base)
{
	struct fi_info *pick = NULL;
#if HAVE_DECL_FI_HMEM
	struct fi_info *hints = fabnet_fabric_hints(base->fabric_attr->prov_name), *list = NULL;

	if (!hints)
		return NULL;
	hints->caps |= FI_HMEM;
	hints->domain_attr->mr_mode |= FI_MR_HMEM;
	hints->domain_attr->name = strdup(base->domain_attr->name);
	/* efa offers one domain on two fabrics: stay on the chosen one */
	hints->fabric_attr->name = base->fabric_attr->name ? strdup(base->fabric_attr->name) : NULL;
	hints->addr_format = base->addr_format;
	if (fi_getinfo(FABNET_FI_VERSION, NULL, NULL, 0, hints, &list) == 0) {
		for (struct fi_info *it = list; it && !pick; it = it->next)
			if ((it->caps & FI_HMEM) &&
			    !strcmp(it->fabric_attr->prov_name, base->fabric_attr->prov_name) &&
			    !strcmp(it->domain_attr->name, base->domain_attr->name) &&
			    (!base->fabric_attr->name ||
			     !strcmp(it->fabric_attr->name, base->fabric_attr->name)))
				pick = fi_dupinfo(it);
		fi_freeinfo(list);
	}
	fi_freeinfo(hints);
#endif
	return pick;
}

/* Why discovery found nothing: handed to the caller when it asked, else logged. */
static void no_device(char *why, size_t whylen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void no_device(char *why, size_t whylen, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (why && whylen)
		snprintf(why, whylen, "%s", msg);
	else
		FN_WARN("fabnet: %s", msg);
}

/* The efa provider offers each device on two fabrics, efa and efa-direct:
 * transport/efa.c chooses, per domain, and a domain whose forced fabric is
 * missing is dropped (logged). */
static int choose_efa_fabrics(const struct fabnet_config *cfg, struct fi_info *list,
			      struct fi_info **pick, int npick, struct fabnet_dev_efa *efa)
{
	int j = 0;

	for (int i = 0; i < npick; i++) {
		const char *dom = pick[i]->domain_attr->name;
		struct fi_info *rdm = NULL, *direct = NULL, *choice;
		struct fabnet_dev_efa e;

		memset(&e, 0, sizeof(e));
		for (struct fi_info *it = list; it; it = it->next) {
			const char *fab = it->fabric_attr->name ? it->fabric_attr->name : "";
			if (strcmp(it->fabric_attr->prov_name, "efa") || strcmp(it->domain_attr->name, dom))
				continue;
			if (!strcmp(fab, "efa-direct") && !direct)
				direct = it;
			else if (!strcmp(fab, "efa") && !rdm)
				rdm = it;
		}
		snprintf(e.offered, sizeof(e.offered), "%s%s%s", rdm ? "efa" : "",
			 rdm && direct ? ", " : "", direct ? "efa-direct" : "");
		choice = (struct fi_info *)fabnet_efa_pick(cfg, rdm, direct, cfg->rails > 1 && npick > 1,
							   e.fabric_why, sizeof(e.fabric_why));
		if (!choice) {
			FN_WARN("fabnet: %s: %s; the device is not used.", dom, e.fabric_why);
			continue;
		}
		e.is_efa = 1;
		snprintf(e.fabric, sizeof(e.fabric), "%s", choice->fabric_attr->name);
		pick[j] = choice;
		efa[j++] = e;
	}
	return j;
}

int fabnet_fabric_discover(const struct fabnet_config *cfg, struct fabnet_dev **devs_out)
{
	return fabnet_fabric_discover_why(cfg, devs_out, NULL, 0);
}

int fabnet_fabric_discover_why(const struct fabnet_config *cfg, struct fabnet_dev **devs_out,
			       char *whynone, size_t whylen)
{
	struct fabnet_dev_efa *efa = NULL;
	struct fi_info *hints, *list = NULL;
	struct fi_info *pick[256];
	int npick = 0, nonloop = 0, rc;
	const char *prov;
	char why[128];
	struct fabnet_dev *devs;

	*devs_out = NULL;
	hints = fabnet_fabric_hints(cfg->provider);
	if (!hints) {
		no_device(whynone, whylen, "out of memory building fi_getinfo hints");
		return -FI_ENOMEM;
	}
	rc = fi_getinfo(FABNET_FI_VERSION, NULL, NULL, 0, hints, &list);
	fi_freeinfo(hints);
	if (rc || !list) {
		no_device(whynone, whylen, "fi_getinfo found no FI_EP_RDM endpoint with FI_MSG|FI_RMA%s%s: "
			"%s (%d). Check `fi_info -t FI_EP_RDM`%s",
			cfg->provider[0] ? " for provider " : "", cfg->provider,
			fi_strerror(-rc), rc,
			cfg->provider[0] ? " and the provider name" : "");
		return 0;
	}
	prov = choose_provider(cfg, list, why, sizeof(why));
	if (!prov) {
		no_device(whynone, whylen, "libfabric offers only the intra-node shm provider; set "
			"FABNET_PROVIDER=shm to use it for processes on one machine");
		fi_freeinfo(list);
		return 0;
	}

	for (struct fi_info *it = list; it; it = it->next) {
		const char *dom = it->domain_attr->name;
		int seen = -1;
		if (strcmp(it->fabric_attr->prov_name, prov) || !dom)
			continue;
		if (cfg->iface[0] && !name_in_list(dom, cfg->iface))
			continue;
		for (int i = 0; i < npick; i++)
			if (!strcmp(pick[i]->domain_attr->name, dom))
				seen = i;
		if (seen >= 0) {
			if (better_info(it, pick[seen]))
				pick[seen] = it;
			continue;
		}
		if (npick < (int)(sizeof(pick) / sizeof(pick[0])))
			pick[npick++] = it;
	}
	for (int i = 0; i < npick; i++)
		nonloop += strcmp(pick[i]->domain_attr->name, "lo") != 0;
	/* Loopback is no path to another node: hide it unless it is all there is. */
	if (nonloop && !cfg->allow_loopback) {
		int j = 0;
		for (int i = 0; i < npick; i++)
			if (strcmp(pick[i]->domain_attr->name, "lo"))
				pick[j++] = pick[i];
		npick = j;
	}
	if (!strcmp(prov, "efa") && npick) {
		efa = calloc((size_t)npick + 1, sizeof(*efa));
		if (!efa) {
			fi_freeinfo(list);
			return -FI_ENOMEM;
		}
		npick = choose_efa_fabrics(cfg, list, pick, npick, efa);
		if (!npick) { /* each drop was logged with its reason */
			free(efa);
			fi_freeinfo(list);
			return 0;
		}
	}
	if (npick == 0) {
		free(efa);
		no_device(whynone, whylen, "provider %s offers no domain%s%s. Unset FABNET_IFACE or list "
			"domains that `fi_info -p %s` shows", prov,
			cfg->iface[0] ? " matching FABNET_IFACE=" : "", cfg->iface, prov);
		fi_freeinfo(list);
		return 0;
	}

	devs = calloc((size_t)npick, sizeof(*devs));
	if (!devs) {
		free(efa);
		no_device(whynone, whylen, "out of memory for %d devices", npick);
		fi_freeinfo(list);
		return -FI_ENOMEM;
	}
	for (int i = 0; i < npick; i++) {
		struct fabnet_dev *d = &devs[i];
		d->index = i;
		if (efa)
			d->efa = efa[i];
		d->info = cfg->hmem ? hmem_variant(pick[i]) : NULL;
		d->hmem = d->info != NULL;
		if (!d->info)
			d->info = fi_dupinfo(pick[i]);
		snprintf(d->name, sizeof(d->name), "%s", pick[i]->domain_attr->name);
		snprintf(d->prov_name, sizeof(d->prov_name), "%s", prov);
		d->pci_path = find_pci_path(pick[i], d->name);
		d->guid = fnv1a64(prov, d->name);
		d->speed_mbps = find_speed_mbps(pick[i], d->name);
		d->speed_reported = d->speed_mbps > 0;
		if (!d->speed_reported)
			d->speed_mbps = (int)cfg->link_speed_mbps;
		pthread_mutex_init(&d->lock, NULL);
		if (!d->info) {
			no_device(whynone, whylen, "out of memory copying the fi_info of %s", d->name);
			fabnet_fabric_free(devs, i + 1);
			free(efa);
			fi_freeinfo(list);
			return -FI_ENOMEM;
		}
	}
	FN_INFO(NCCL_INIT | NCCL_NET, "fabnet: using provider %s (%s), %d device%s, first %s",
		prov, why, npick, npick == 1 ? "" : "s", devs[0].name);
	if (devs[0].efa.is_efa)
		FN_INFO(NCCL_INIT | NCCL_NET, "fabnet: efa fabric %s of %s offered: %s", devs[0].efa.fabric,
			devs[0].efa.offered, devs[0].efa.fabric_why);
	free(efa);
	fi_freeinfo(list);
	*devs_out = devs;
	return npick;
}

void fabnet_fabric_free(struct fabnet_dev *devs, int ndev)
{
	if (!devs)
		return;
	for (int i = 0; i < ndev; i++) {
		fabnet_dev_close(&devs[i]);
		if (devs[i].info)
			fi_freeinfo(devs[i].info);
		free(devs[i].pci_path);
		pthread_mutex_destroy(&devs[i].lock);
	}
	free(devs);
}
