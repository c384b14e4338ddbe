/*
 * dmabuf: buffers registered through regMrDmaBuf with a memfd (a stand-in for a
 * dma-buf exporter) at offset 0 and at page offsets, several live at once; and
 * NCCL_PTR_DMABUF advertised exactly when the libfabric in use can do it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rdma/fabric.h>
#include <rdma/fi_domain.h>

#include "../../../tools/proc.h"
#include "ft.h"

/* NCCL_PTR_DMABUF is advertised exactly when it should be: always where tcp
 * and shm can import a memfd (libfabric 1.20+), never without FI_MR_DMABUF
 * or with FABNET_DMABUF=0. Rank 0 prints what it found. */
static int dmabuf_check_advertised(struct ft *ft)
{
	uint32_t v = ft_libfabric_version();
	unsigned maj = v >> 16, min = v & 0xffff;
	int advertised = (ft->props.ptrSupport & NCCL_PTR_DMABUF) != 0;
	const char *prov = getenv("FABNET_PROVIDER");
	const char *env_dmabuf = getenv("FABNET_DMABUF");
	int disabled = env_dmabuf && !strcmp(env_dmabuf, "0");

	/* fabnet-ft is built with the headers the plugin was built with */
#ifdef FI_MR_DMABUF
	const int built_dmabuf = 1;
#else
	const int built_dmabuf = 0;
#endif
	/* tcp and shm import a memfd dma-buf under libfabric 1.20+ (proven on
	 * 2.1): there the dma-buf path must be the one used, not the fallback */
	int must = built_dmabuf && v >= ((1u << 16) | 20) && !disabled && prov &&
		   (!strcmp(prov, "tcp") || !strcmp(prov, "shm"));

	if (ft->rank == 0) {
		char ver[32];
		if (v)
			snprintf(ver, sizeof(ver), "%u.%u", maj, min);
		else
			snprintf(ver, sizeof(ver), "unknown");
		printf("# dmabuf: %s (libfabric %s, built %d.%d, provider %s, ptrSupport 0x%x)\n",
		       advertised ? "advertised: regMrDmaBuf registers with FI_MR_DMABUF"
				  : "not advertised: regMrDmaBuf registers by address (fallback)",
		       ver, FI_MAJOR_VERSION, FI_MINOR_VERSION, prov ? prov : "(automatic)",
		       (unsigned)ft->props.ptrSupport);
	}
	if (must && !advertised)
		return fail(ft, "libfabric %u.%u (built %d.%d) with provider %s does not advertise "
			    "NCCL_PTR_DMABUF (ptrSupport 0x%x), so regMrDmaBuf would fall back to "
			    "registering by address; run fabnet-info for the reason",
			    maj, min, FI_MAJOR_VERSION, FI_MINOR_VERSION, prov,
			    (unsigned)ft->props.ptrSupport);
	if (advertised && !built_dmabuf)
		return fail(ft, "getProperties advertises NCCL_PTR_DMABUF (ptrSupport 0x%x) but the "
			    "plugin was built against libfabric %d.%d, which has no FI_MR_DMABUF",
			    (unsigned)ft->props.ptrSupport, FI_MAJOR_VERSION, FI_MINOR_VERSION);
	if (advertised && v && v < ((1u << 16) | 20))
		return fail(ft, "getProperties advertises NCCL_PTR_DMABUF (ptrSupport 0x%x) under "
			    "libfabric %u.%u, which has no FI_MR_DMABUF (1.20+)",
			    (unsigned)ft->props.ptrSupport, maj, min);
	if (advertised && disabled)
		return fail(ft, "getProperties advertises NCCL_PTR_DMABUF although FABNET_DMABUF=0");
	return 0;
}

/* Transfers through memfd registrations (ft->dmabuf is set): offset 0, 3
 * pages in, and four live at once. */
static int dmabuf_transfers(struct ft *ft, struct pair *p)
{
	static const size_t sizes[] = {1, 4096, MiB, 8 * MiB + 5};
	static const size_t offset_sizes[] = {1, 4096, MiB, 8 * MiB + 5};
	struct msg all[4];

	ft->dmabuf_off = 0;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct msg m = {.comm = 0, .size = sizes[i], .cap = sizes[i], .tag = 31,
				.iter = 3000 + i};
		char what[96];
		snprintf(what, sizeof(what), "%zu bytes, memfd offset 0", sizes[i]);
		if (transfer_simple(ft, p, &m, 1, what))
			return -1;
	}
	/* a buffer that starts 3 pages into a larger memfd */
	ft->dmabuf_off = 3 * page_size();
	for (size_t i = 0; i < sizeof(offset_sizes) / sizeof(offset_sizes[0]); i++) {
		struct msg m = {.comm = 0, .size = offset_sizes[i], .cap = offset_sizes[i], .tag = 32,
				.iter = 3100 + i};
		char what[96];
		snprintf(what, sizeof(what), "%zu bytes, memfd offset %zu", offset_sizes[i],
			 ft->dmabuf_off);
		if (transfer_simple(ft, p, &m, 1, what))
			return -1;
	}
	/* several dma-buf registrations live at once, all outstanding */
	ft->dmabuf_off = page_size();
	for (int i = 0; i < 4; i++)
		all[i] = (struct msg){.comm = 0, .size = sizes[i] + (size_t)i * 3, .tag = 33,
				      .iter = 3200u + (uint64_t)i};
	for (int i = 0; i < 4; i++)
		all[i].cap = all[i].size + 100;
	return transfer_simple(ft, p, all, 4, "4 outstanding, memfd offset 1 page");
}

int scen_dmabuf(struct ft *ft)
{
	struct pair p;
	int rc = -1, saved_timeout = 0;

	if (dmabuf_check_advertised(ft))
		return -1;
	if (pairs_open(ft, &p, 1, 1))
		goto out;
	/* at most 8 MiB at a time: 20 s without progress is a hang */
	saved_timeout = ft->op_timeout_ms;
	if (ft->op_timeout_ms > 20000)
		ft->op_timeout_ms = 20000;
	ft->dmabuf = 1;
	if (dmabuf_transfers(ft, &p))
		goto out;
	rc = 0;
out:
	ft->dmabuf = 0;
	ft->dmabuf_off = 0;
	if (saved_timeout)
		ft->op_timeout_ms = saved_timeout;
	pairs_close(ft, &p, 1);
	return rc;
}
