/*
 * The doctor's settings checks: NCCL's (NCCL_NET, NCCL_IB_*), fabnet's own
 * (parse errors, names fabnet does not know) and libfabric's FI_* variables
 * that change what fabnet gets. FI_PROVIDER is judged in doctor_fabric.c,
 * against the providers libfabric actually has.
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/config.h"
#include "doctor.h"

extern char **environ;

/* ---- NCCL ------------------------------------------------------------------------ */

static void check_nccl_net(struct doc_ctx *c)
{
	const char *v = getenv("NCCL_NET");

	if (!v)
		doc_add(c, "nccl-net", DOC_OK,
			"NCCL_NET is unset: NCCL takes the first network plugin that loads and "
			"initialises, fabnet included", NULL, NULL);
	else if (!strcasecmp(v, "fabnet"))
		doc_add(c, "nccl-net", DOC_INFO,
			"NCCL_NET=fabnet: NCCL uses fabnet and nothing else",
			"if fabnet cannot initialise, NCCL stops with 'Failed to initialize any NET "
			"plugin' instead of falling back to its socket transport",
			"nothing, if failing loudly is what you want; unset NCCL_NET to allow a fallback");
	else
		doc_addf(c, "nccl-net", DOC_ERROR,
			 "NCCL restricts itself to the network whose name matches NCCL_NET; "
			 "fabnet's is 'fabnet', so NCCL skips it even when it loads",
			 "unset NCCL_NET, or set NCCL_NET=fabnet",
			 "NCCL_NET=%s: NCCL would never use fabnet", v);
}

/* NCCL_IB_* configure NCCL's internal InfiniBand transport only. */
static void check_nccl_ib(struct doc_ctx *c)
{
	struct doc_buf names = {0};
	int hca = 0;

	for (char **e = environ; *e; e++) {
		if (strncmp(*e, "NCCL_IB_", 8) || !strncmp(*e, "NCCL_IB_DISABLE=", 16))
			continue;
		doc_buf_printf(&names, "%s%.*s", names.len ? ", " : "", (int)strcspn(*e, "="), *e);
		hca |= !strncmp(*e, "NCCL_IB_HCA=", 12);
	}
	if (!names.len)
		doc_add(c, "nccl-ib-settings", DOC_OK, "no NCCL_IB_* setting (other than "
			"NCCL_IB_DISABLE) is set", NULL, NULL);
	else if (hca)
		doc_addf(c, "nccl-ib-settings", DOC_WARN,
			 "NCCL_IB_HCA chooses NICs for NCCL's internal IB transport only: with "
			 "fabnet it has no effect, and the job uses every NIC fabnet finds",
			 "choose fabnet's NICs with FABNET_IFACE (domain names from `fabnet-info`), "
			 "and unset NCCL_IB_HCA",
			 "set, but not read by fabnet: %s", doc_buf_str(&names));
	else
		doc_addf(c, "nccl-ib-settings", DOC_INFO,
			 "these configure NCCL's internal IB transport, which NCCL uses only "
			 "when no plugin serves the job",
			 "nothing, unless you expected them to tune fabnet (its settings: "
			 "docs/configuration.md)",
			 "set, but not read by fabnet: %s", doc_buf_str(&names));
	doc_buf_free(&names);
}

/* ---- fabnet ----------------------------------------------------------------------- */

static const char *env_lookup(const char *name)
{
	return getenv(name);
}

/* Every name the configuration parser asks for: the plugin's variables,
 * without keeping a second list that could drift from config.c. */
static char asked[64][40];
static int nasked;

static const char *recording_lookup(const char *name)
{
	if (nasked < 64)
		snprintf(asked[nasked++], sizeof(asked[0]), "%s", name);
	return NULL;
}

/* Read by the tools and tests, not by the plugin (docs/configuration.md). */
static const char *const tool_vars[] = {
	"FABNET_DEBUG", "FABNET_ABI_VERSION", "FABNET_PLUGIN", "FABNET_FT", "FABNET_INFO",
	"FABNET_PERF", "FABNET_SRCDIR", "FABNET_HOSTILE", "FABNET_HOSTILE_VERBOSE",
	"FABNET_PERF_PROVIDERS", "FABNET_SAN_PROVIDERS", "FABNET_FUZZ_SECONDS",
	"FABNET_NETNS_TIMEOUT", NULL,
};
static const char *const tool_prefixes[] = {"FABNET_FT_", "FABNET_CONTRACT_", "FABNET_DOCTOR_",
					    NULL};

static int known_var(const char *name, size_t len)
{
	for (int i = 0; i < nasked; i++)
		if (strlen(asked[i]) == len && !strncmp(asked[i], name, len))
			return 1;
	for (int i = 0; tool_vars[i]; i++)
		if (strlen(tool_vars[i]) == len && !strncmp(tool_vars[i], name, len))
			return 1;
	for (int i = 0; tool_prefixes[i]; i++)
		if (!strncmp(name, tool_prefixes[i], strlen(tool_prefixes[i])))
			return 1;
	return 0;
}

/* Levenshtein distance, capped: enough to suggest a fix for a typo. */
static int distance(const char *a, size_t la, const char *b)
{
	size_t lb = strlen(b);
	int row[64];

	if (la >= 63 || lb >= 63)
		return 99;
	for (size_t j = 0; j <= lb; j++)
		row[j] = (int)j;
	for (size_t i = 1; i <= la; i++) {
		int prev = row[0];
		row[0] = (int)i;
		for (size_t j = 1; j <= lb; j++) {
			int cur = row[j];
			int sub = prev + (a[i - 1] != b[j - 1]);
			int best = row[j] + 1 < row[j - 1] + 1 ? row[j] + 1 : row[j - 1] + 1;
			row[j] = sub < best ? sub : best;
			prev = cur;
		}
	}
	return row[lb];
}

static void check_fabnet_unknown(struct doc_ctx *c)
{
	struct fabnet_config cfg;
	struct doc_buf what = {0};
	char err[256];

	nasked = 0;
	fabnet_config_parse(&cfg, recording_lookup, err, sizeof(err));
	for (char **e = environ; *e; e++) {
		size_t len = strcspn(*e, "=");
		const char *best = NULL;
		int bestd = 4;
		if (strncmp(*e, "FABNET_", 7) || known_var(*e, len))
			continue;
		for (int i = 0; i < nasked; i++) {
			int d = distance(*e, len, asked[i]);
			if (d < bestd)
				bestd = d, best = asked[i];
		}
		doc_buf_printf(&what, "%s%.*s%s%s%s", what.len ? "; " : "", (int)len, *e,
			       best ? " (did you mean " : "", best ? best : "", best ? "?)" : "");
	}
	if (!what.len)
		doc_add(c, "fabnet-unknown-settings", DOC_OK,
			"every FABNET_* variable set is one fabnet reads", NULL, NULL);
	else
		doc_addf(c, "fabnet-unknown-settings", DOC_WARN,
			 "fabnet ignores variables it does not know, so a misspelt setting "
			 "silently keeps its default",
			 "correct or unset them (all settings: docs/configuration.md)",
			 "not fabnet settings: %s", doc_buf_str(&what));
	doc_buf_free(&what);
}

static void check_fabnet_config(struct doc_ctx *c)
{
	struct fabnet_config cfg, names_only;
	struct doc_buf set = {0};
	char err[256];

	if (fabnet_config_parse(&cfg, env_lookup, err, sizeof(err))) {
		char fix[320];
		snprintf(fix, sizeof(fix), "correct or unset the variable: %.*s (every setting: "
			 "docs/configuration.md)", (int)strcspn(err, "="), err);
		doc_add(c, "fabnet-config", DOC_ERROR, err,
			"fabnet's init fails on an invalid setting, so NCCL falls back to another "
			"network", fix);
		return;
	}
	nasked = 0;
	fabnet_config_parse(&names_only, recording_lookup, err, sizeof(err));
	for (int i = 0; i < nasked; i++) {
		const char *v = getenv(asked[i]);
		if (v && *v)
			doc_buf_printf(&set, "%s%s=%s", set.len ? ", " : "", asked[i], v);
	}
	doc_addf(c, "fabnet-config", DOC_OK, NULL, NULL, "fabnet's settings parse (%s)",
		 set.len ? doc_buf_str(&set) : "all defaults");
	doc_buf_free(&set);
	if (cfg.provider[0])
		snprintf(c->provider, sizeof(c->provider), "%s", cfg.provider);
}

void doc_check_settings(struct doc_ctx *c)
{
	check_nccl_net(c);
	check_nccl_ib(c);
	check_fabnet_config(c);
	check_fabnet_unknown(c);
}

/* ---- libfabric -------------------------------------------------------------------- */

void doc_check_libfabric_settings(struct doc_ctx *c)
{
	const char *rdma = getenv("FI_EFA_USE_DEVICE_RDMA");
	const char *lvl = getenv("FI_LOG_LEVEL");
	const char *shm = getenv("FI_EFA_ENABLE_SHM_TRANSFER");
	struct doc_buf notes = {0};
	enum doc_severity sev = DOC_OK;
	int off;

	if (rdma && fabnet_parse_bool(rdma, &off) == 0 && off == 0) {
		doc_buf_printf(&notes, "FI_EFA_USE_DEVICE_RDMA=%s: efa emulates every RMA write "
			       "fabnet posts with messages (slower, more CPU)", rdma);
		sev = DOC_WARN;
	}
	if (shm && fabnet_parse_bool(shm, &off) == 0 && off == 0) {
		doc_buf_printf(&notes, "%sFI_EFA_ENABLE_SHM_TRANSFER=%s: ranks on one node talk "
			       "through the NIC instead of shared memory", notes.len ? "; " : "", shm);
		if (sev < DOC_INFO)
			sev = DOC_INFO;
	}
	if (lvl && (!strcasecmp(lvl, "debug") || !strcasecmp(lvl, "trace"))) {
		doc_buf_printf(&notes, "%sFI_LOG_LEVEL=%s: libfabric logs on the data path",
			       notes.len ? "; " : "", lvl);
		if (sev < DOC_INFO)
			sev = DOC_INFO;
	}
	if (sev == DOC_OK)
		doc_add(c, "libfabric-settings", DOC_OK,
			"no FI_* setting that slows fabnet down is set", NULL, NULL);
	else
		doc_add(c, "libfabric-settings", sev, doc_buf_str(&notes),
			"these change how the provider moves fabnet's data, at a cost in speed",
			"unset them unless you are debugging the provider");
	doc_buf_free(&notes);
}
