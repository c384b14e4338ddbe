/*
 * The doctor's libfabric checks: FI_PROVIDER against the providers libfabric
 * has (fi-provider), libfabric at build and run time (libfabric-version),
 * which provider and devices fabnet would choose (providers), and the
 * accelerator / NIC affinity of each rail group (rail-affinity).
 *
 * fabnet's own discovery (transport/fabric.c) and rail planning
 * (transport/rails.c) are called as the plugin calls them; their log lines
 * are captured and become the findings' text.
 */
#include <config.h>

#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <rdma/fabric.h>

#include "core/config.h"
#include "core/log.h"
#include "core/topo.h"
#include "doctor.h"
#include "transport/fabric.h"
#include "transport/hmem.h"
#include "transport/rails.h"

/* Shared by the providers and rail-affinity checks. */
static struct fabnet_config cfg;
static struct fabnet_dev *devs;
static int ndevs;

/* ---- fabnet's log, captured ---------------------------------------------------------- */

static struct doc_buf captured;

static void capture(ncclDebugLogLevel level, unsigned long flags, const char *file, int line,
		    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void capture(ncclDebugLogLevel level, unsigned long flags, const char *file, int line,
		    const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	(void)flags;
	(void)file;
	(void)line;
	if (level != NCCL_LOG_WARN && level != NCCL_LOG_INFO)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	doc_buf_printf(&captured, "%s%s", captured.len ? "\n" : "", msg);
}

/* The first captured line that contains key, or NULL. */
static const char *captured_line(const char *key, char *out, size_t len)
{
	const char *p = strstr(doc_buf_str(&captured), key);

	if (!p)
		return NULL;
	while (p > captured.s && p[-1] != '\n')
		p--;
	snprintf(out, len, "%.*s", (int)strcspn(p, "\n"), p);
	return out;
}

/* ---- what libfabric has ---------------------------------------------------------------- */

struct provs {
	char name[64][64]; /* "tcp;ofi_rxm", "shm", ... */
	char doms[64][256];
	int n;
};

static int prov_index(struct provs *p, const char *name)
{
	for (int i = 0; i < p->n; i++)
		if (!strcmp(p->name[i], name))
			return i;
	return -1;
}

static void collect(struct fi_info *list, struct provs *p, int with_domains)
{
	for (struct fi_info *it = list; it; it = it->next) {
		const char *name = it->fabric_attr->prov_name;
		int i = prov_index(p, name);
		if (i < 0 && p->n < 64) {
			i = p->n++;
			snprintf(p->name[i], sizeof(p->name[i]), "%s", name);
			p->doms[i][0] = '\0';
		}
		if (i < 0 || !with_domains || !it->domain_attr->name ||
		    strstr(p->doms[i], it->domain_attr->name))
			continue;
		size_t used = strlen(p->doms[i]);
		snprintf(p->doms[i] + used, sizeof(p->doms[i]) - used, "%s%s", used ? ", " : "",
			 it->domain_attr->name);
	}
}

/* Does provider name (possibly layered, "tcp;ofi_rxm") contain component? */
static int has_component(const char *name, const char *comp, size_t len)
{
	for (const char *p = name; *p;) {
		size_t n = strcspn(p, ";");
		if (n == len && !strncasecmp(p, comp, len))
			return 1;
		p += n;
		if (*p == ';')
			p++;
	}
	return 0;
}

static int provider_known(const struct provs *all, const char *comp, size_t len)
{
	for (int i = 0; i < all->n; i++)
		if (has_component(all->name[i], comp, len))
			return 1;
	return 0;
}

static size_t core_len(const char *name)
{
	return strcspn(name, ";");
}

/* ---- fi-provider ------------------------------------------------------------------------- */

/* FI_PROVIDER as libfabric reads it: names separated by ',', all excluded
 * when it starts with '^'. */
struct fi_filter {
	int neg, nnames, nmissing, blocked;
	struct doc_buf missing;
};

static void judge_filter(const char *fi, const char *fabnet, const struct provs *all,
			 struct fi_filter *r)
{
	memset(r, 0, sizeof(*r));
	r->neg = fi[0] == '^';
	for (const char *p = fi + r->neg; *p;) {
		size_t n = strcspn(p, ",");
		if (n) {
			r->nnames++;
			if (!provider_known(all, p, core_len(p) < n ? core_len(p) : n))
				doc_buf_printf(&r->missing, "%s%.*s", r->nmissing++ ? ", " : "", (int)n, p);
			if (fabnet && *fabnet && r->neg && has_component(fabnet, p, n))
				r->blocked = 1;
		}
		p += n + (p[n] == ',');
	}
	if (fabnet && *fabnet && !r->neg) {
		r->blocked = 1;
		for (const char *p = fi; *p;) {
			size_t n = strcspn(p, ",");
			if (has_component(fabnet, p, core_len(p) < n ? core_len(p) : n))
				r->blocked = 0;
			p += n + (p[n] == ',');
		}
	}
}

static void check_fi_provider(struct doc_ctx *c, const char *fi, const struct provs *all,
			      const struct provs *rdm)
{
	const char *fabnet = getenv("FABNET_PROVIDER");
	struct doc_buf have = {0};
	struct fi_filter r;

	for (int i = 0; i < all->n; i++)
		doc_buf_printf(&have, "%s%s", i ? ", " : "", all->name[i]);
	if (!fi || !*fi) {
		doc_add(c, "fi-provider", DOC_OK, "FI_PROVIDER is unset: libfabric offers every "
			"provider it has", NULL, NULL);
		doc_buf_free(&have);
		return;
	}
	if (!all->n) { /* libfabric itself failed: libfabric-version says why */
		doc_addf(c, "fi-provider", DOC_INFO, "FI_PROVIDER is judged against the providers "
			 "libfabric lists", "see libfabric-version and providers",
			 "FI_PROVIDER=%s; libfabric lists no provider at all", fi);
		doc_buf_free(&have);
		return;
	}
	judge_filter(fi, fabnet, all, &r);
	int neg = r.neg, nnames = r.nnames, nmissing = r.nmissing, blocked = r.blocked;
	if (blocked)
		doc_addf(c, "fi-provider", DOC_ERROR,
			 "libfabric applies FI_PROVIDER before fabnet asks: the provider fabnet "
			 "wants is hidden, and fabnet's init fails",
			 "unset FI_PROVIDER (FABNET_PROVIDER alone chooses fabnet's provider)",
			 "FABNET_PROVIDER=%s but FI_PROVIDER=%s hides it", fabnet, fi);
	else if (!neg && nmissing == nnames)
		doc_addf(c, "fi-provider", DOC_ERROR,
			 "libfabric hides every other provider, so fabnet finds none and its init "
			 "fails: NCCL falls back to another network",
			 "unset FI_PROVIDER, or name a provider libfabric has (`fi_info -l`)",
			 "FI_PROVIDER=%s names no provider libfabric has (it has: %s)", fi,
			 doc_buf_str(&have));
	else if (!neg && nnames > 1 && !(fabnet && *fabnet))
		doc_addf(c, "fi-provider", DOC_ERROR,
			 "without FABNET_PROVIDER, fabnet asks libfabric for the provider named by "
			 "FI_PROVIDER as a whole, and no provider is called that: its init fails",
			 "name one provider: FABNET_PROVIDER=<name> (FI_PROVIDER may stay)",
			 "FI_PROVIDER=%s is a list of %d providers", fi, nnames);
	else if (nmissing)
		doc_addf(c, "fi-provider", DOC_WARN, "a misspelt name hides the provider you meant",
			 "correct the name (`fi_info -l` lists them)",
			 "FI_PROVIDER=%s: libfabric has no %s (it has: %s)", fi,
			 doc_buf_str(&r.missing), doc_buf_str(&have));
	else if (neg && !(fabnet && *fabnet))
		doc_addf(c, "fi-provider", DOC_INFO,
			 "with FI_PROVIDER set, fabnet takes the first provider libfabric offers "
			 "instead of its own order (efa, verbs, tcp, sockets, udp), shm included",
			 "prefer FABNET_PROVIDER=<name> to choose fabnet's provider",
			 "FI_PROVIDER=%s excludes providers", fi);
	else
		doc_addf(c, "fi-provider", DOC_OK, NULL, NULL, "FI_PROVIDER=%s: libfabric has it%s",
			 fi, rdm->n ? "" : " (but nothing for FI_EP_RDM: see providers)");
	doc_buf_free(&r.missing);
	doc_buf_free(&have);
}

/* ---- libfabric-version --------------------------------------------------------------------- */

static int parse_ver(const char *s, unsigned *maj, unsigned *min)
{
	return sscanf(s, "%u.%u", maj, min) == 2 ? 0 : -1;
}

void doc_check_libfabric_version(struct doc_ctx *c)
{
	const char *built = fabnet_built_libfabric();
	unsigned bmaj = 0, bmin = 0, rt = fi_version(), pmaj = 0, pmin = 0;
	unsigned rmaj = FI_MAJOR(rt), rmin = FI_MINOR(rt);
	Dl_info dl;
	const char *here = dladdr((void *)fi_getinfo, &dl) && dl.dli_fname ? dl.dli_fname : "?";
	int have_plugin = c->plugin_fabric[0] && !parse_ver(c->plugin_fabric_ver, &pmaj, &pmin);

	parse_ver(built, &bmaj, &bmin);
	if (have_plugin && (pmaj < bmaj || (pmaj == bmaj && pmin < bmin)))
		doc_addf(c, "libfabric-version", DOC_ERROR,
			 "fabnet asks libfabric for the API version it was built with; an older "
			 "libfabric refuses it or lacks its symbols",
			 "put the libfabric fabnet was built against first on LD_LIBRARY_PATH, or "
			 "rebuild fabnet against the one installed",
			 "built against libfabric %s, but the plugin loads %s (%s)", built,
			 c->plugin_fabric_ver, c->plugin_fabric);
	else if (rmaj < bmaj || (rmaj == bmaj && rmin < bmin))
		doc_addf(c, "libfabric-version", DOC_ERROR,
			 "fabnet asks libfabric for the API version it was built with; an older "
			 "libfabric refuses it", "use the libfabric fabnet was built against",
			 "built against libfabric %s, running on %u.%u (%s)", built, rmaj, rmin, here);
	else if (c->nfabric > 1 || c->nverbs > 1)
		doc_addf(c, "libfabric-version", DOC_WARN,
			 "two copies of one library in a process resolve symbols against each other "
			 "unpredictably (the rdma-core symbol clash)",
			 "make one installation of libfabric and rdma-core visible to the job",
			 "the self-test process loaded %d libfabric and %d libibverbs copies",
			 c->nfabric, c->nverbs);
	else if (have_plugin && strcmp(c->plugin_fabric, here))
		doc_addf(c, "libfabric-version", DOC_WARN,
			 "the doctor's provider checks describe its own libfabric, not the one NCCL's "
			 "process would use", "make both resolve to one libfabric (LD_LIBRARY_PATH)",
			 "the plugin loads libfabric %s from %s; this tool runs on %u.%u from %s",
			 c->plugin_fabric_ver, c->plugin_fabric, rmaj, rmin, here);
	else
		doc_addf(c, "libfabric-version", DOC_OK, NULL, NULL,
			 "built against libfabric %s, running on %u.%u (%s)%s", built, rmaj, rmin,
			 here, have_plugin ? ", the plugin too"
			 : "; the plugin's is not known (it did not load, or no self-test ran)");
}

/* ---- providers ------------------------------------------------------------------------------ */

static void check_providers(struct doc_ctx *c, const struct provs *rdm)
{
	struct doc_buf list = {0};
	char line[1024];

	for (int i = 0; i < rdm->n; i++)
		doc_buf_printf(&list, "%s%s (%s)", i ? "; " : "", rdm->name[i], rdm->doms[i]);
	fabnet_log_set_logger(capture);
	ndevs = fabnet_fabric_discover(&cfg, &devs);
	fabnet_log_set_logger(NULL);
	if (ndevs < 0)
		ndevs = 0;
	c->ndevs = ndevs;
	if (ndevs > 0) {
		snprintf(c->provider, sizeof(c->provider), "%s", devs[0].prov_name);
		if (!strncmp(c->provider, "efa", 3))
			c->efa_wanted = 1;
	}
	if (ndevs == 0) {
		doc_addf(c, "providers", DOC_ERROR,
			 "fabnet's init fails without a device, and NCCL falls back to another "
			 "network",
			 "act on fabnet's message (under what); `fi_info -t FI_EP_RDM` lists what "
			 "libfabric offers",
			 "fabnet finds no device:\n%s\nlibfabric offers for FI_EP_RDM with FI_MSG and "
			 "FI_RMA: %s", doc_buf_str(&captured), list.len ? doc_buf_str(&list) : "nothing");
	} else if (c->efa_pci_nics && strncmp(c->provider, "efa", 3)) {
		doc_addf(c, "providers", DOC_WARN,
			 "the machine has EFA NICs, but fabnet would move the job's data over "
			 "another provider, far slower",
			 "unset FABNET_PROVIDER / FI_PROVIDER, or see efa-device for why libfabric "
			 "finds no efa device",
			 "%s; %d EFA NICs on the PCI bus. Offered: %s",
			 captured_line("using provider", line, sizeof(line)) ? line : c->provider,
			 c->efa_pci_nics, doc_buf_str(&list));
	} else {
		doc_addf(c, "providers", DOC_OK, NULL, NULL, "%s. Offered: %s",
			 captured_line("using provider", line, sizeof(line)) ? line : c->provider,
			 doc_buf_str(&list));
	}
	doc_buf_free(&list);
}

static const char *no_lookup(const char *name)
{
	(void)name;
	return NULL;
}

static const char *env_lookup(const char *name)
{
	return getenv(name);
}

void doc_check_fabric(struct doc_ctx *c)
{
	struct fi_info *all = NULL, *rdm = NULL, *hints;
	struct provs pall, prdm;
	char *fi = getenv("FI_PROVIDER") ? strdup(getenv("FI_PROVIDER")) : NULL;
	char err[256];

	if (fabnet_config_parse(&cfg, env_lookup, err, sizeof(err))) {
		/* fabnet-config reports it; go on with the defaults and the provider */
		fabnet_config_parse(&cfg, no_lookup, err, sizeof(err));
		const char *p = getenv("FABNET_PROVIDER") ? getenv("FABNET_PROVIDER") : fi;
		if (p)
			snprintf(cfg.provider, sizeof(cfg.provider), "%s", p);
	}
	if (!strncmp(cfg.provider, "efa", 3))
		c->efa_wanted = 1;
	if (c->efa_pci_nics)
		c->efa_wanted = 1;
	/* libfabric reads FI_PROVIDER once, at its first call: without it we see
	 * every provider, and judge the filter ourselves. */
	unsetenv("FI_PROVIDER");
	memset(&pall, 0, sizeof(pall));
	memset(&prdm, 0, sizeof(prdm));
	if (fi_getinfo(FABNET_FI_VERSION, NULL, NULL, 0, NULL, &all) == 0)
		collect(all, &pall, 0);
	hints = fabnet_fabric_hints(NULL);
	if (hints && fi_getinfo(FABNET_FI_VERSION, NULL, NULL, 0, hints, &rdm) == 0)
		collect(rdm, &prdm, 1);
	fi_freeinfo(hints);
	fi_freeinfo(all);
	fi_freeinfo(rdm);
	if (fi)
		setenv("FI_PROVIDER", fi, 1);
	check_fi_provider(c, fi, &pall, &prdm);
	check_providers(c, &prdm);
	free(fi);
}

/* ---- rail-affinity ---------------------------------------------------------------------------- */

static const char *basename_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	return slash ? slash + 1 : path;
}

/* One line per accelerator: its NICs, how close, and which fabnet device has them. */
static enum doc_severity describe_accels(const struct fabnet_topo *t, struct doc_buf *b)
{
	enum doc_severity sev = DOC_OK;

	for (int a = 0; a < fabnet_topo_naccels(t); a++) {
		int rails[64], n = fabnet_topo_rails_for(t, a, rails, 64);
		enum fabnet_topo_level lvl = fabnet_topo_accel_level(t, a);
		doc_buf_printf(b, "\naccelerator %s: ", fabnet_topo_accel_pci(t, a)->busid);
		if (n <= 0) {
			doc_buf_printf(b, "no NIC at all");
			sev = DOC_WARN;
			continue;
		}
		for (int k = 0; k < n && k < 64; k++) {
			const char *busid = fabnet_topo_nic_pci(t, rails[k])->busid;
			const char *ours = NULL;
			for (int d = 0; d < ndevs && !ours; d++)
				if (devs[d].pci_path && !strcmp(basename_of(devs[d].pci_path), busid))
					ours = devs[d].name;
			doc_buf_printf(b, "%s%s%s", k ? "+" : "", fabnet_topo_nic_name(t, rails[k]),
				       ours ? "" : " (not a fabnet device)");
		}
		doc_buf_printf(b, ", sharing the %s", fabnet_topo_level_name(lvl));
		if (lvl != FABNET_TOPO_SWITCH) {
			doc_buf_printf(b, " (no NIC under its PCIe switch)");
			sev = DOC_WARN;
		}
	}
	return sev;
}

void doc_check_rail_affinity(struct doc_ctx *c)
{
	struct doc_buf b = {0};
	struct fabnet_topo t;
	int *primaries = calloc((size_t)(ndevs ? ndevs : 1), sizeof(int)), ngroups = 0;
	enum doc_severity sev;

	fabnet_log_set_logger(capture);
	if (primaries && ndevs)
		ngroups = fabnet_rails_plan(devs, ndevs, &cfg, primaries);
	for (int g = 0; g < ngroups; g++) {
		struct fabnet_dev *p = &devs[primaries[g]];
		doc_buf_printf(&b, "%sNCCL device %d = ", g ? "; " : "", g);
		for (int k = 0; k < p->nrails; k++)
			doc_buf_printf(&b, "%s%s", k ? "+" : "", p->rails[k]->name);
	}
	if (!ngroups)
		doc_buf_printf(&b, "no NCCL device (see providers)");
	fabnet_topo_init(&t);
	if (fabnet_topo_load(&t, cfg.topo_file[0] ? cfg.topo_file : NULL)) {
		doc_addf(c, "rail-affinity", DOC_INFO, "without the PCI topology fabnet cannot tell "
			 "which NICs sit next to which accelerator", "install hwloc, or give "
			 "FABNET_TOPO_FILE (an lstopo XML export)", "%s; no topology: %s",
			 doc_buf_str(&b), fabnet_topo_error(&t));
	} else if (fabnet_topo_naccels(&t) == 0) {
		doc_addf(c, "rail-affinity", DOC_INFO, "rail groups follow accelerators: with none, "
			 "each NIC is its own NCCL device", NULL,
			 "%s; no accelerator in the PCI topology%s", doc_buf_str(&b),
			 cfg.topo_file[0] ? " (FABNET_TOPO_FILE)" : "");
	} else {
		sev = describe_accels(&t, &b);
		doc_add(c, "rail-affinity", sev, doc_buf_str(&b),
			sev == DOC_OK ? NULL
				      : "an accelerator without a NIC under its own PCIe switch sends "
					"through the host bridge or across sockets: less bandwidth, "
					"shared with other accelerators",
			sev == DOC_OK ? NULL
				      : "nothing to set in fabnet (the hardware decides); on a "
					"cloud instance pick the type whose NICs sit next to each GPU");
	}
	fabnet_topo_fini(&t);
	fabnet_log_set_logger(NULL);
	fabnet_fabric_free(devs, ndevs);
	devs = NULL;
	ndevs = 0;
	free(primaries);
	doc_buf_free(&b);
	doc_buf_free(&captured);
}
