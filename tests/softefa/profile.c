/* softefa: attribute profiles, SOFTEFA_* settings, logging, clock, PRNG.
 * Where each profile value comes from is documented in docs/softefa.md. */
#include "sefa.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct sefa_config sefa_cfg;

#define EFA_COMMON_CAPS (EFADV_DEVICE_ATTR_CAPS_RDMA_READ | EFADV_DEVICE_ATTR_CAPS_RNR_RETRY | \
			 EFADV_DEVICE_ATTR_CAPS_CQ_WITH_SGID)

static const struct sefa_profile profiles[] = {
	{
		/* p4d.24xlarge-like: second EFA generation, RDMA read only. */
		.name = "p4d",
		.vendor_id = 0x1d0f, .vendor_part_id = 0xefa1, .hw_ver = 0,
		.max_qp = SEFA_SHM_QP - 1, .max_cq = 4096, .max_mr = SEFA_SHM_MR - 1,
		.max_pd = 256, .max_ah = SEFA_SHM_AH - 1, .max_cqe = 65536,
		.max_mr_size = 1ull << 40, .page_size_cap = 0xfffff000,
		.max_sq_wr = 4096, .max_rq_wr = 8192,
		.max_sq_sge = 2, .max_rq_sge = 1, .max_sge_rd = 1, .inline_buf_size = 32,
		.max_rdma_size = 1u << 30, .mtu = 8928,
		.device_caps = EFA_COMMON_CAPS,
		.in_order_128 = false,
		.active_speed = 32 /* EDR */, .active_width = 2 /* 4X: 100 Gb/s */,
	},
	{
		/* p5.48xlarge-like: third generation, RDMA read, write, write with
		 * immediate, unsolicited write receive, 128-byte in-order writes. */
		.name = "p5",
		.vendor_id = 0x1d0f, .vendor_part_id = 0xefa2, .hw_ver = 0,
		.max_qp = SEFA_SHM_QP - 1, .max_cq = 4096, .max_mr = SEFA_SHM_MR - 1,
		.max_pd = 256, .max_ah = SEFA_SHM_AH - 1, .max_cqe = 65536,
		.max_mr_size = 1ull << 40, .page_size_cap = 0xfffff000,
		.max_sq_wr = 4096, .max_rq_wr = 8192,
		.max_sq_sge = 2, .max_rq_sge = 1, .max_sge_rd = 1, .inline_buf_size = 32,
		.max_rdma_size = 1u << 30, .mtu = 8928,
		.device_caps = EFA_COMMON_CAPS | EFADV_DEVICE_ATTR_CAPS_RDMA_WRITE |
			       EFADV_DEVICE_ATTR_CAPS_UNSOLICITED_WRITE_RECV,
		.in_order_128 = true,
		.active_speed = 32, .active_width = 2,
	},
};

const struct sefa_profile *sefa_profile_find(const char *name)
{
	for (size_t i = 0; i < sizeof(profiles) / sizeof(profiles[0]); i++)
		if (!strcmp(profiles[i].name, name))
			return &profiles[i];
	return NULL;
}

void sefa_log(int level, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	if (level > sefa_cfg.log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fprintf(stderr, "softefa[%d]: %s\n", (int)getpid(), buf);
}

uint64_t sefa_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t sefa_rand(uint64_t *s)
{
	/* splitmix64: small, seedable, good enough to pick reorder victims */
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static long env_long(const char *name, long dflt, long lo, long hi)
{
	const char *v = getenv(name);
	char *end;
	long x;

	if (!v || !*v)
		return dflt;
	errno = 0;
	x = strtol(v, &end, 0);
	if (errno || *end || x < lo || x > hi) {
		SEFA_ERR("%s=%s is not a number in [%ld, %ld]; using %ld", name, v, lo, hi, dflt);
		return dflt;
	}
	return x;
}

static void load_pci(void)
{
	const char *list = getenv("SOFTEFA_PCI");
	int i = 0;

	for (i = 0; i < SEFA_MAX_DEVICES; i++)
		snprintf(sefa_cfg.pci[i], sizeof(sefa_cfg.pci[i]), "0000:%02x:00.0", 0x10 + 0x10 * i);
	if (!list)
		return;
	/* comma-separated PCI addresses, one per device, e.g. to match a hwloc topology */
	for (i = 0; i < SEFA_MAX_DEVICES && *list; i++) {
		size_t n = strcspn(list, ",");

		if (n >= sizeof(sefa_cfg.pci[i]))
			n = sizeof(sefa_cfg.pci[i]) - 1;
		memcpy(sefa_cfg.pci[i], list, n);
		sefa_cfg.pci[i][n] = 0;
		list += n + (list[n] == ',');
	}
}

static void load_profile(const char *pname)
{
	const struct sefa_profile *p = sefa_profile_find(pname);

	if (!p) {
		SEFA_ERR("SOFTEFA_PROFILE=%s is not a profile (p4d, p5): no device", pname);
		return;
	}
	sefa_cfg.prof = *p;
	/* 128-byte in-order can be switched off to test what a user sees without it */
	sefa_cfg.prof.in_order_128 = env_long("SOFTEFA_INORDER128", p->in_order_128, 0, 1);
	sefa_cfg.enabled = true;
}

static void config_init(void)
{
	const char *pname = getenv("SOFTEFA_PROFILE");
	const char *dir = getenv("SOFTEFA_DIR");
	const char *host = getenv("SOFTEFA_HOST");

	sefa_cfg.log_level = (int)env_long("SOFTEFA_LOG", 0, 0, 3);
	sefa_cfg.ndev = (int)env_long("SOFTEFA_DEVICES", 1, 0, SEFA_MAX_DEVICES);
	snprintf(sefa_cfg.dir, sizeof(sefa_cfg.dir), "%s", dir && *dir ? dir : "/tmp/softefa");
	sefa_cfg.seed = (uint64_t)env_long("SOFTEFA_SEED", 0x5eed, 0, 0x7fffffffffffffffl);
	sefa_cfg.reorder = (int)env_long("SOFTEFA_REORDER", 4, 1, 256);
	sefa_cfg.timeout_ms = (int)env_long("SOFTEFA_TIMEOUT_MS", 2000, 10, 3600000);
	sefa_cfg.rnr_delay_us = (int)env_long("SOFTEFA_RNR_DELAY_US", 200, 0, 10000000);
	sefa_cfg.accept_memfd = env_long("SOFTEFA_DMABUF_ACCEPT_MEMFD", 0, 0, 1);
	sefa_cfg.fault_rnr_every = (int)env_long("SOFTEFA_FAULT_RNR_EVERY", 0, 0, 1 << 30);
	sefa_cfg.fault_delay_us = (int)env_long("SOFTEFA_FAULT_DELAY_US", 0, 0, 10000000);
	sefa_cfg.fault_vanish_after = env_long("SOFTEFA_FAULT_VANISH_AFTER", 0, 0, 1l << 40);
	if (host && *host) {
		sefa_cfg.shared_host = true;
		snprintf(sefa_cfg.host, sizeof(sefa_cfg.host), "%s", host);
	}
	load_pci();
	if (pname && *pname)
		load_profile(pname);
}

void sefa_config_load(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, config_init);
}
