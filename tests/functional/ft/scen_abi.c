/*
 * abi: every plugin table version (v6..v12) loaded on its own: init,
 * properties that agree with the default table's, connect, transfer (grouped
 * too), close, finalize.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdlib.h>
#include <string.h>

#include "ft.h"

/* init, devices and getProperties of table n: plausible, and the same device
 * as the default table's (saved). */
static int abi_init_props(struct ft *ft, struct pl_net *n, const struct pl_props *saved)
{
	int ndev = 0;
	ncclResult_t r;

	g_step = "init";
	if ((r = pl_init(n)) != ncclSuccess)
		return fail(ft, "init returned %d (%s)", (int)r, pl_result_str(r));
	g_step = "devices";
	if ((r = pl_devices(n, &ndev)) != ncclSuccess || ndev <= ft->dev)
		return fail(ft, "devices() returned %d (%s) and %d devices", (int)r, pl_result_str(r),
			    ndev);
	g_step = "getProperties";
	if ((r = pl_get_properties(n, ft->dev, &ft->props)) != ncclSuccess)
		return fail(ft, "getProperties returned %d (%s)", (int)r, pl_result_str(r));
	if (!ft->props.name[0] || ft->props.maxRecvs < 1 || ft->props.maxComms < 1 ||
	    !(ft->props.ptrSupport & NCCL_PTR_HOST) || ft->props.speed <= 0)
		return fail(ft, "implausible properties: name \"%s\", maxRecvs %d, maxComms %d, "
			    "ptrSupport 0x%x, speed %d", ft->props.name, ft->props.maxRecvs,
			    ft->props.maxComms, (unsigned)ft->props.ptrSupport, ft->props.speed);
	if (strcmp(ft->props.name, saved->name) || ft->props.speed != saved->speed ||
	    ft->props.maxRecvs != saved->maxRecvs || ft->props.guid != saved->guid)
		return fail(ft, "properties differ from v%d's: name %s/%s, speed %d/%d, maxRecvs "
			    "%d/%d", ft->base.version, ft->props.name, saved->name, ft->props.speed,
			    saved->speed, ft->props.maxRecvs, saved->maxRecvs);
	return 0;
}

/* A comm pair through the table in use: three messages, a group of two when
 * the device allows, close. */
static int abi_traffic(struct ft *ft, int v)
{
	struct msg m[3] = {
		{.comm = 0, .size = 1, .cap = 1, .tag = 10, .iter = (uint64_t)v},
		{.comm = 0, .size = 100000, .cap = 100000, .tag = 10, .iter = 100u + (uint64_t)v},
		{.comm = 0, .size = 0, .cap = 64, .tag = 10, .iter = 200u + (uint64_t)v},
	};
	struct msg g[2] = {
		{.comm = 0, .size = 3000, .cap = 4000, .tag = 21, .iter = 300},
		{.comm = 0, .size = 70000, .cap = 70000, .tag = 22, .iter = 301},
	};
	int start = 0, order[2] = {1, 0};
	struct pair p;

	memset(&p, 0, sizeof(p));
	if (pairs_open(ft, &p, 1, 1) || transfer_simple(ft, &p, m, 3, "transfer") ||
	    (ft->props.maxRecvs >= 2 && transfer(ft, &p, g, 2, &start, 1, order, "grouped n=2"))) {
		pairs_close(ft, &p, 1);
		return -1;
	}
	return pairs_close(ft, &p, 1);
}

/* One ABI version: load its table, init, properties, connect, transfer, close,
 * finalize. ft->net points at it meanwhile. */
static int abi_version(struct ft *ft, const void *arg)
{
	int v = *(const int *)arg;
	struct pl_net *saved = ft->net;
	struct pl_props saved_props = ft->props;
	struct pl_net *n = calloc(1, sizeof(*n));
	int rc = -1;
	ncclResult_t r;

	if (!n)
		return fail(ft, "out of memory");
	g_step = "dlopen/dlsym";
	if (pl_open(n, ft->plugin, v)) {
		fail(ft, "%s", n->err);
		free(n);
		return -1;
	}
	ft->net = n;
	if (abi_init_props(ft, n, &saved_props) || abi_traffic(ft, v))
		goto out;
	g_step = "finalize";
	if ((r = pl_finalize(n)) != ncclSuccess) {
		fail(ft, "finalize returned %d (%s)", (int)r, pl_result_str(r));
		goto out;
	}
	rc = 0;
out:
	pl_finalize(n); /* no-op once finalized */
	pl_close(n);
	free(n);
	ft->net = saved;
	ft->props = saved_props;
	return rc;
}

int scen_abi(struct ft *ft)
{
	static const int versions[] = {6, 7, 8, 9, 10, 11, 12};
	static const char *names[] = {"v6", "v7", "v8", "v9", "v10", "v11", "v12"};

	for (int i = 0; i < (int)(sizeof(versions) / sizeof(versions[0])); i++)
		sub(ft, names[i], abi_version, &versions[i]);
	return 0;
}
