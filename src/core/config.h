/*
 * fabnet's configuration: every FABNET_* variable is read here, once, and
 * documented in docs/configuration.md. The parser takes a lookup function so
 * that unit tests can feed it values without touching the environment.
 */
#ifndef FABNET_CORE_CONFIG_H
#define FABNET_CORE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

enum fabnet_config_source { FABNET_SRC_DEFAULT = 0, FABNET_SRC_ENV = 1 };

struct fabnet_config {
	char provider[64];        /* FABNET_PROVIDER, else FI_PROVIDER; "" = automatic */
	char provider_from[32];   /* which variable chose it */
	char iface[256];          /* FABNET_IFACE: comma-separated domain names */
	size_t eager_max;         /* FABNET_EAGER_MAX: largest message sent inline */
	unsigned rx_buffers;      /* FABNET_RX_BUFFERS: pre-posted receive buffers per device */
	unsigned tx_buffers;      /* FABNET_TX_BUFFERS: send bounce buffers per device */
	unsigned eager_credits;   /* FABNET_EAGER_CREDITS: small sends a comm may send before
				   * their CTS (0: none; both sides' smaller counts) */
	size_t max_write;         /* FABNET_MAX_WRITE: largest single RMA write, 0 = provider's */
	unsigned writes_in_flight;/* FABNET_WRITES_IN_FLIGHT: writes posted at once per send */
	unsigned connect_timeout_ms; /* FABNET_CONNECT_TIMEOUT_MS */
	unsigned peer_timeout_ms; /* FABNET_PEER_TIMEOUT_MS: declare a silent peer dead */
	unsigned link_speed_mbps; /* FABNET_LINK_SPEED_MBPS: speed when the NIC reports none */
	int allow_loopback;       /* FABNET_ALLOW_LOOPBACK: expose the "lo" domain too */
	int dmabuf;               /* FABNET_DMABUF: use dma-buf registrations when possible */
	int hmem;                 /* FABNET_HMEM: ask providers for FI_HMEM (accelerator memory) */
	int gdr_flush;            /* FABNET_GDR_FLUSH: enum fabnet_flush_mode */
	int efa_fabric;           /* FABNET_EFA_FABRIC: enum fabnet_efa_fabric */
	/* Rails (several NICs as one NCCL device) and the write schedule. */
	unsigned rails;           /* FABNET_RAILS: most rails per NCCL device (1..4) */
	char rail_groups[512];    /* FABNET_RAIL_GROUPS: "a,b;c,d" domain names per device */
	char topo_file[256];      /* FABNET_TOPO_FILE: hwloc XML instead of this machine */
	size_t chunk_size;        /* FABNET_CHUNK_SIZE: bytes per RMA write of a large send */
	size_t min_stripe;        /* FABNET_MIN_STRIPE: smallest stripe worth a rail */
	size_t stripe_align;      /* FABNET_STRIPE_ALIGN: stripe boundaries fall on this */
	size_t rail_inflight;     /* FABNET_RAIL_INFLIGHT: RMA bytes in flight per rail */
	/* Where each value came from, for fabnet-info and the INFO log. */
	enum fabnet_config_source src_eager_max, src_rx_buffers, src_tx_buffers, src_max_write,
		src_writes_in_flight, src_connect_timeout, src_peer_timeout, src_link_speed, src_iface,
		src_allow_loopback, src_dmabuf, src_hmem, src_gdr_flush, src_rails, src_rail_groups,
		src_topo_file, src_chunk_size, src_min_stripe, src_stripe_align, src_rail_inflight,
		src_efa_fabric, src_eager_credits;
};

enum fabnet_flush_mode {
	FABNET_FLUSH_OFF = 0,    /* never flush */
	FABNET_FLUSH_READ = 1,   /* fi_read loopback after accelerator-memory receives */
	FABNET_FLUSH_CUDA = 2,   /* cuFlushGPUDirectRDMAWrites, loaded at run time */
	FABNET_FLUSH_ALWAYS = 3, /* read loopback after every receive, host too (tests) */
};

/* Which of the efa provider's two fabrics to use (transport/efa.c decides "auto"). */
enum fabnet_efa_fabric {
	FABNET_EFA_AUTO = 0,    /* efa-direct when it offers fabnet's needs, else efa */
	FABNET_EFA_RDM = 1,     /* "efa": the provider's RDM protocol, emulating what the device lacks */
	FABNET_EFA_DIRECT = 2,  /* "efa-direct": the device's SRD operations only */
};

typedef const char *(*fabnet_getenv_fn)(const char *name);

/* Fills cfg from defaults and lookup(); returns 0, or -1 with err describing
 * the first invalid variable (the caller logs it and fails init). */
int fabnet_config_parse(struct fabnet_config *cfg, fabnet_getenv_fn lookup, char *err,
			size_t errlen);

/* Parses a byte count: digits with an optional K, M or G suffix (powers of 1024). */
int fabnet_parse_size(const char *s, uint64_t *out);
/* Parses 0/1, yes/no, on/off, true/false. */
int fabnet_parse_bool(const char *s, int *out);
/* Parses a decimal unsigned within [min, max]. */
int fabnet_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* The process-wide configuration, parsed from the environment by init. */
const struct fabnet_config *fabnet_config(void);
int fabnet_config_load(void);
/* The same without logging: the first invalid variable is described in err. */
int fabnet_config_load_err(char *err, size_t errlen);

#endif
