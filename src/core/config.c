#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/config.h"
#include "core/log.h"

#define DEFAULT_EAGER_MAX 8192
#define DEFAULT_RX_BUFFERS 256
#define DEFAULT_TX_BUFFERS 1024
#define DEFAULT_EAGER_CREDITS 16
#define DEFAULT_WRITES_IN_FLIGHT 4
#define DEFAULT_CONNECT_TIMEOUT_MS 30000
#define DEFAULT_LINK_SPEED_MBPS 100000
#define DEFAULT_PEER_TIMEOUT_MS 10000
#define DEFAULT_RAILS 4
#define DEFAULT_CHUNK_SIZE (1u << 20)
#define DEFAULT_MIN_STRIPE (64u << 10)
#define DEFAULT_STRIPE_ALIGN 128
#define DEFAULT_RAIL_INFLIGHT (8u << 20)

int fabnet_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!s || !isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

int fabnet_parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	if (!s || !isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -1;
	switch (*end) {
	case '\0':
		break;
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	default:
		return -1;
	}
	if (*end != '\0')
		return -1;
	if (shift && v > (UINT64_MAX >> shift))
		return -1;
	*out = (uint64_t)v << shift;
	return 0;
}

int fabnet_parse_bool(const char *s, int *out)
{
	static const char *yes[] = {"1", "yes", "on", "true"};
	static const char *no[] = {"0", "no", "off", "false"};

	if (!s)
		return -1;
	for (size_t i = 0; i < 4; i++) {
		if (!strcasecmp(s, yes[i])) {
			*out = 1;
			return 0;
		}
		if (!strcasecmp(s, no[i])) {
			*out = 0;
			return 0;
		}
	}
	return -1;
}

static int bad(char *err, size_t errlen, const char *name, const char *value, const char *want)
{
	snprintf(err, errlen, "%s=\"%s\" is invalid: expected %s", name, value, want);
	return -1;
}

static int get_uint(fabnet_getenv_fn lookup, const char *name, uint64_t min, uint64_t max,
		    unsigned *dst, enum fabnet_config_source *src, char *err, size_t errlen)
{
	const char *v = lookup(name);
	uint64_t x;

	if (!v || !*v)
		return 0;
	if (fabnet_parse_uint(v, min, max, &x)) {
		char want[96];
		snprintf(want, sizeof(want), "an integer from %llu to %llu",
			 (unsigned long long)min, (unsigned long long)max);
		return bad(err, errlen, name, v, want);
	}
	*dst = (unsigned)x;
	*src = FABNET_SRC_ENV;
	return 0;
}

static int get_size(fabnet_getenv_fn lookup, const char *name, uint64_t max, size_t *dst,
		    enum fabnet_config_source *src, char *err, size_t errlen)
{
	const char *v = lookup(name);
	uint64_t x;

	if (!v || !*v)
		return 0;
	if (fabnet_parse_size(v, &x) || x > max)
		return bad(err, errlen, name, v, "a byte count such as 8192, 64K or 1M");
	*dst = (size_t)x;
	*src = FABNET_SRC_ENV;
	return 0;
}

int fabnet_config_parse(struct fabnet_config *cfg, fabnet_getenv_fn lookup, char *err,
			size_t errlen)
{
	const char *v;

	memset(cfg, 0, sizeof(*cfg));
	cfg->eager_max = DEFAULT_EAGER_MAX;
	cfg->rx_buffers = DEFAULT_RX_BUFFERS;
	cfg->tx_buffers = DEFAULT_TX_BUFFERS;
	cfg->eager_credits = DEFAULT_EAGER_CREDITS;
	cfg->writes_in_flight = DEFAULT_WRITES_IN_FLIGHT;
	cfg->connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
	cfg->link_speed_mbps = DEFAULT_LINK_SPEED_MBPS;
	/* On: the probe still decides per provider, with a real dma-buf
	 * registration and an RMA read of it (see docs/memory.md).
	 * FABNET_DMABUF=0 opts out. */
	cfg->dmabuf = 1;
	cfg->hmem = 1;
	cfg->peer_timeout_ms = DEFAULT_PEER_TIMEOUT_MS;
	cfg->gdr_flush = FABNET_FLUSH_READ;
	cfg->rails = DEFAULT_RAILS;
	cfg->chunk_size = DEFAULT_CHUNK_SIZE;
	cfg->min_stripe = DEFAULT_MIN_STRIPE;
	cfg->stripe_align = DEFAULT_STRIPE_ALIGN;
	cfg->rail_inflight = DEFAULT_RAIL_INFLIGHT;

	v = lookup("FABNET_PROVIDER");
	if (v && *v) {
		snprintf(cfg->provider_from, sizeof(cfg->provider_from), "FABNET_PROVIDER");
	} else {
		v = lookup("FI_PROVIDER");
		if (v && *v)
			snprintf(cfg->provider_from, sizeof(cfg->provider_from), "FI_PROVIDER");
	}
	if (v && *v) {
		if (strlen(v) >= sizeof(cfg->provider))
			return bad(err, errlen, cfg->provider_from, v, "a provider name");
		snprintf(cfg->provider, sizeof(cfg->provider), "%s", v);
	}
	v = lookup("FABNET_IFACE");
	if (v && *v) {
		if (strlen(v) >= sizeof(cfg->iface))
			return bad(err, errlen, "FABNET_IFACE", v, "a shorter list of names");
		snprintf(cfg->iface, sizeof(cfg->iface), "%s", v);
		cfg->src_iface = FABNET_SRC_ENV;
	}
	if (get_size(lookup, "FABNET_EAGER_MAX", 1 << 20, &cfg->eager_max, &cfg->src_eager_max,
		     err, errlen) ||
	    get_size(lookup, "FABNET_MAX_WRITE", (uint64_t)1 << 40, &cfg->max_write,
		     &cfg->src_max_write, err, errlen) ||
	    get_uint(lookup, "FABNET_RX_BUFFERS", 16, 65536, &cfg->rx_buffers, &cfg->src_rx_buffers,
		     err, errlen) ||
	    get_uint(lookup, "FABNET_TX_BUFFERS", 16, 65536, &cfg->tx_buffers, &cfg->src_tx_buffers,
		     err, errlen) ||
	    get_uint(lookup, "FABNET_EAGER_CREDITS", 0, 256, &cfg->eager_credits,
		     &cfg->src_eager_credits, err, errlen) ||
	    get_uint(lookup, "FABNET_WRITES_IN_FLIGHT", 1, 16, &cfg->writes_in_flight,
		     &cfg->src_writes_in_flight, err, errlen) ||
	    get_uint(lookup, "FABNET_CONNECT_TIMEOUT_MS", 1, 3600000, &cfg->connect_timeout_ms,
		     &cfg->src_connect_timeout, err, errlen) ||
	    get_uint(lookup, "FABNET_PEER_TIMEOUT_MS", 100, 3600000, &cfg->peer_timeout_ms,
		     &cfg->src_peer_timeout, err, errlen) ||
	    get_uint(lookup, "FABNET_LINK_SPEED_MBPS", 1, 10000000, &cfg->link_speed_mbps,
		     &cfg->src_link_speed, err, errlen))
		return -1;
	if (get_uint(lookup, "FABNET_RAILS", 1, 4, &cfg->rails, &cfg->src_rails, err, errlen) ||
	    get_size(lookup, "FABNET_CHUNK_SIZE", (uint64_t)1 << 40, &cfg->chunk_size,
		     &cfg->src_chunk_size, err, errlen) ||
	    get_size(lookup, "FABNET_MIN_STRIPE", (uint64_t)1 << 40, &cfg->min_stripe,
		     &cfg->src_min_stripe, err, errlen) ||
	    get_size(lookup, "FABNET_STRIPE_ALIGN", 1 << 20, &cfg->stripe_align,
		     &cfg->src_stripe_align, err, errlen) ||
	    get_size(lookup, "FABNET_RAIL_INFLIGHT", (uint64_t)1 << 40, &cfg->rail_inflight,
		     &cfg->src_rail_inflight, err, errlen))
		return -1;
	if (cfg->chunk_size < 4096)
		return bad(err, errlen, "FABNET_CHUNK_SIZE", lookup("FABNET_CHUNK_SIZE"),
			   "at least 4096");
	if (!cfg->stripe_align || (cfg->stripe_align & (cfg->stripe_align - 1)))
		return bad(err, errlen, "FABNET_STRIPE_ALIGN", lookup("FABNET_STRIPE_ALIGN"),
			   "a power of two");
	if (cfg->min_stripe < cfg->stripe_align)
		return bad(err, errlen, "FABNET_MIN_STRIPE", lookup("FABNET_MIN_STRIPE"),
			   "at least FABNET_STRIPE_ALIGN");
	if (!cfg->rail_inflight)
		return bad(err, errlen, "FABNET_RAIL_INFLIGHT", lookup("FABNET_RAIL_INFLIGHT"),
			   "a byte count above 0");
	v = lookup("FABNET_RAIL_GROUPS");
	if (v && *v) {
		if (strlen(v) >= sizeof(cfg->rail_groups))
			return bad(err, errlen, "FABNET_RAIL_GROUPS", v, "a shorter list");
		snprintf(cfg->rail_groups, sizeof(cfg->rail_groups), "%s", v);
		cfg->src_rail_groups = FABNET_SRC_ENV;
	}
	v = lookup("FABNET_TOPO_FILE");
	if (v && *v) {
		if (strlen(v) >= sizeof(cfg->topo_file))
			return bad(err, errlen, "FABNET_TOPO_FILE", v, "a shorter path");
		snprintf(cfg->topo_file, sizeof(cfg->topo_file), "%s", v);
		cfg->src_topo_file = FABNET_SRC_ENV;
	}
	if (cfg->max_write && cfg->max_write < 4096)
		return bad(err, errlen, "FABNET_MAX_WRITE", lookup("FABNET_MAX_WRITE"),
			   "0 (the provider's limit) or at least 4096");
	v = lookup("FABNET_ALLOW_LOOPBACK");
	if (v && *v) {
		if (fabnet_parse_bool(v, &cfg->allow_loopback))
			return bad(err, errlen, "FABNET_ALLOW_LOOPBACK", v, "0 or 1");
		cfg->src_allow_loopback = FABNET_SRC_ENV;
	}
	v = lookup("FABNET_DMABUF");
	if (v && *v) {
		if (fabnet_parse_bool(v, &cfg->dmabuf))
			return bad(err, errlen, "FABNET_DMABUF", v, "0 or 1");
		cfg->src_dmabuf = FABNET_SRC_ENV;
	}
	v = lookup("FABNET_HMEM");
	if (v && *v) {
		if (fabnet_parse_bool(v, &cfg->hmem))
			return bad(err, errlen, "FABNET_HMEM", v, "0 or 1");
		cfg->src_hmem = FABNET_SRC_ENV;
	}
	v = lookup("FABNET_GDR_FLUSH");
	if (v && *v) {
		static const struct { const char *name; int mode; } modes[] = {
			{"0", FABNET_FLUSH_OFF}, {"off", FABNET_FLUSH_OFF},
			{"1", FABNET_FLUSH_READ}, {"read", FABNET_FLUSH_READ},
			{"cuda", FABNET_FLUSH_CUDA}, {"always", FABNET_FLUSH_ALWAYS},
		};
		size_t i;
		for (i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
			if (!strcasecmp(v, modes[i].name))
				break;
		if (i == sizeof(modes) / sizeof(modes[0]))
			return bad(err, errlen, "FABNET_GDR_FLUSH", v, "0, 1 (read), cuda or always");
		cfg->gdr_flush = modes[i].mode;
		cfg->src_gdr_flush = FABNET_SRC_ENV;
	}
	v = lookup("FABNET_EFA_FABRIC");
	if (v && *v) {
		if (!strcasecmp(v, "auto"))
			cfg->efa_fabric = FABNET_EFA_AUTO;
		else if (!strcasecmp(v, "efa"))
			cfg->efa_fabric = FABNET_EFA_RDM;
		else if (!strcasecmp(v, "efa-direct"))
			cfg->efa_fabric = FABNET_EFA_DIRECT;
		else
			return bad(err, errlen, "FABNET_EFA_FABRIC", v, "auto, efa or efa-direct");
		cfg->src_efa_fabric = FABNET_SRC_ENV;
	}
	return 0;
}

static struct fabnet_config global_cfg;
static pthread_mutex_t cfg_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *env_lookup(const char *name)
{
	return getenv(name);
}

int fabnet_config_load_err(char *err, size_t errlen)
{
	int rc;

	pthread_mutex_lock(&cfg_lock);
	rc = fabnet_config_parse(&global_cfg, env_lookup, err, errlen);
	pthread_mutex_unlock(&cfg_lock);
	return rc;
}

int fabnet_config_load(void)
{
	char err[256];
	int rc = fabnet_config_load_err(err, sizeof(err));

	if (rc)
		FN_WARN("fabnet: configuration error: %s. Fix or unset the variable "
			"(see docs/configuration.md).", err);
	return rc;
}

const struct fabnet_config *fabnet_config(void)
{
	return &global_cfg;
}
