/*
 * fabnet EFA-contract layer: configuration, counters, reporting, the real
 * libfabric entry points, and the interposed fi_getinfo / fi_fabric.
 *
 * TEST ONLY: see README.md in this directory.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "contract_int.h"
#include "fabnet_contract.h"

uint64_t fc_counters[FC_NCOUNTERS];
struct fc_config fc_cfg;
struct fc_real fc_real;

static const char *const fc_counter_names[FC_NCOUNTERS] = {
#define FC_NAME(n) #n,
	FC_COUNTERS(FC_NAME)
#undef FC_NAME
};

/* The symbol version of fi_getinfo / fi_dupinfo / fi_freeinfo whose struct
 * fi_info layout matches the headers we are compiled against. The caller (the
 * plugin) must be built against the same headers. */
#if FI_MAJOR_VERSION >= 2
#define FC_INFO_ABI "FABRIC_1.8"
#elif FI_MAJOR_VERSION == 1 && FI_MINOR_VERSION >= 9 && FI_MINOR_VERSION <= 17
#define FC_INFO_ABI "FABRIC_1.3"
#else
#define FC_INFO_ABI NULL
#endif

/* ---- logging ----------------------------------------------------------------- */

static void fc_vemit(const char *prefix, const char *fmt, va_list ap) FC_PRINTF(2, 0);
static void fc_vemit(const char *prefix, const char *fmt, va_list ap)
{
	char line[1024];
	int n = snprintf(line, sizeof(line), "%s[pid %d] ", prefix, (int)getpid());

	if (n < 0)
		return;
	if ((size_t)n < sizeof(line))
		vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	n = (int)strnlen(line, sizeof(line) - 2);
	line[n++] = '\n';
	/* One write: lines of several processes do not interleave. */
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		return;
}

void fc_log(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fc_vemit("fabnet-contract", fmt, ap);
	va_end(ap);
}

void fc_vlog(const char *fmt, ...)
{
	va_list ap;

	if (!fc_cfg.verbose)
		return;
	va_start(ap, fmt);
	fc_vemit("fabnet-contract", fmt, ap);
	va_end(ap);
}

void fc_violation(const char *op, const char *fmt, ...)
{
	char what[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	fc_count(FC_violations, 1);
	fc_log("CONTRACT VIOLATION: %s: %s", op, what);
	if (fc_cfg.backtrace) {
		void *frames[32];
		int n = backtrace(frames, 32);
		backtrace_symbols_fd(frames, n, STDERR_FILENO);
	}
	if (fc_cfg.abort_on_violation)
		abort();
}

/* ---- configuration ------------------------------------------------------------- */

uint64_t fc_env_u64(const char *name, uint64_t def)
{
	const char *s = getenv(name);
	char *end;
	unsigned long long v;

	if (!s || !*s)
		return def;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s) {
		fc_log("ignoring %s=%s (not a number)", name, s);
		return def;
	}
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	default: break;
	}
	if (*end)
		fc_log("ignoring the trailing '%s' of %s=%s", end, name, s);
	return v;
}

size_t fc_max_msg(void)
{
	uint64_t v = fc_env_u64("FABNET_CONTRACT_MAX_MSG", 8192);
	return v ? (size_t)v : 8192;
}

size_t fc_max_rma(void)
{
	uint64_t v = fc_env_u64("FABNET_CONTRACT_MAX_RMA", 1ull << 30);
	return v ? (size_t)v : (size_t)1 << 30;
}

static uint64_t fc_objects;

uint64_t fc_object_seed(void)
{
	uint64_t n = __atomic_add_fetch(&fc_objects, 1, __ATOMIC_RELAXED);
	uint64_t s = fc_mix64(fc_cfg.seed ^ fc_mix64(n));
	return s ? s : 0x1234567ull;
}

static void fc_atfork_child(void)
{
	uint64_t rng = fc_mix64(fc_cfg.seed ^ ((uint64_t)getpid() << 20) ^ 0xf0f0);

	/* A forked child starts its own account (objects it inherited are the
	 * parent's business) and needs its own key nonce. */
	memset(fc_counters, 0, sizeof(fc_counters));
	fc_cfg.pid = (int)getpid();
	if (fc_cfg.disabled)
		return;
	do
		fc_cfg.key_nonce = (uint16_t)fc_rand(&rng);
	while (!fc_cfg.key_nonce);
	fc_reg_join(&rng);
}

static pthread_once_t fc_once = PTHREAD_ONCE_INIT;

static void fc_do_init(void)
{
	struct timespec ts;
	const char *seed = getenv("FABNET_CONTRACT_SEED");

	fc_cfg.disabled = (int)fc_env_u64("FABNET_CONTRACT_DISABLE", 0);
	fc_cfg.verbose = (int)fc_env_u64("FABNET_CONTRACT_VERBOSE", 0);
	fc_cfg.abort_on_violation = (int)fc_env_u64("FABNET_CONTRACT_ABORT", 0);
	fc_cfg.backtrace = (int)fc_env_u64("FABNET_CONTRACT_BACKTRACE", 0);
	fc_cfg.trace = (int)fc_env_u64("FABNET_CONTRACT_TRACE", 0);
	fc_cfg.pid = (int)getpid();
	clock_gettime(CLOCK_REALTIME, &ts);
	if (seed && *seed)
		fc_cfg.seed = fc_env_u64("FABNET_CONTRACT_SEED", 1);
	else
		fc_cfg.seed = fc_mix64((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) ^
			      (uint64_t)getpid();
	/* The key nonce differs per process and run whatever the seed: an
	 * application cannot learn keys without fi_mr_key(). */
	do {
		uint64_t x = fc_mix64((uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32) ^
				      (uint64_t)(uintptr_t)&ts);
		fc_cfg.key_nonce = (uint16_t)(x ^ (x >> 16) ^ (x >> 32) ^ (x >> 48));
		ts.tv_nsec++;
	} while (fc_cfg.key_nonce == 0);
	pthread_atfork(NULL, NULL, fc_atfork_child);
	if (fc_cfg.disabled) {
		fc_log("disabled (FABNET_CONTRACT_DISABLE): pure pass-through");
		return;
	}
	{
		uint64_t rng = fc_mix64(fc_cfg.seed ^ ((uint64_t)getpid() << 20) ^ (uint64_t)ts.tv_nsec);
		fc_reg_join(&rng);
	}
	fc_log("EFA contract layer active: seed %" PRIu64 " (replay with FABNET_CONTRACT_SEED=%" PRIu64
	       "), max_msg %zu, max_rma %zu, reorder window %" PRIu64 ", eagain %" PRIu64
	       "%%, cq_error_every %" PRIu64,
	       fc_cfg.seed, fc_cfg.seed, fc_max_msg(), fc_max_rma(),
	       fc_env_u64("FABNET_CONTRACT_REORDER", 8), fc_env_u64("FABNET_CONTRACT_EAGAIN", 0),
	       fc_env_u64("FABNET_CONTRACT_CQ_ERROR_EVERY", 0));
}

void fc_init(void)
{
	pthread_once(&fc_once, fc_do_init);
}

/* ---- the real libfabric ---------------------------------------------------------- */

static void *fc_sym(const char *name, const char *ver)
{
	const char *forced = getenv("FABNET_CONTRACT_FI_ABI");
	void *p = NULL, *h;

	if (forced && *forced && ver && strcmp(name, "fi_fabric") && strcmp(name, "fi_fabric2") &&
	    strcmp(name, "fi_strerror"))
		ver = forced;
	if (ver)
		p = dlvsym(RTLD_NEXT, name, ver);
	if (!p)
		p = dlsym(RTLD_NEXT, name);
	if (p)
		return p;
	/* The plugin may have loaded libfabric with RTLD_LOCAL: find it by soname. */
	h = dlopen("libfabric.so.1", RTLD_LAZY | RTLD_NOLOAD);
	if (!h)
		return NULL;
	if (ver)
		p = dlvsym(h, name, ver);
	if (!p)
		p = dlsym(h, name);
	dlclose(h);
	return p;
}

/* dlsym() gives an object pointer; copy it into a function pointer without
 * the cast ISO C frowns upon. */
#define FC_SYM(dst, name, ver)                                \
	do {                                                  \
		void *p_ = fc_sym(name, ver);                 \
		memcpy(&(dst), &p_, sizeof(p_));              \
	} while (0)

static pthread_mutex_t fc_resolve_lock = PTHREAD_MUTEX_INITIALIZER;
static int fc_resolved;

int fc_resolve(void)
{
	struct fc_real r;
	unsigned (*version)(void) = NULL;
	unsigned v;
	int rc = 0;

	if (__atomic_load_n(&fc_resolved, __ATOMIC_ACQUIRE))
		return 0;
	pthread_mutex_lock(&fc_resolve_lock);
	if (fc_resolved)
		goto out;
	memset(&r, 0, sizeof(r));
	FC_SYM(r.getinfo, "fi_getinfo", FC_INFO_ABI);
	FC_SYM(r.freeinfo, "fi_freeinfo", FC_INFO_ABI);
	FC_SYM(r.dupinfo, "fi_dupinfo", FC_INFO_ABI);
	FC_SYM(r.fabric, "fi_fabric", "FABRIC_1.1");
#if FC_LIBFABRIC_2
	FC_SYM(r.fabric2, "fi_fabric2", "FABRIC_1.8");
#endif
	FC_SYM(r.strerror, "fi_strerror", "FABRIC_1.0");
	if (!r.getinfo || !r.freeinfo || !r.dupinfo || !r.fabric) {
		fc_log("cannot find libfabric's fi_getinfo/fi_fabric (%s); is libfabric loaded?",
		       dlerror());
		rc = -1;
		goto out;
	}
	fc_real = r;
	__atomic_store_n(&fc_resolved, 1, __ATOMIC_RELEASE);
	FC_SYM(version, "fi_version", NULL);
	v = version ? version() : 0;
	fc_vlog("libfabric %u.%u at run time, layer built against %d.%d, fi_info ABI %s",
		FI_MAJOR(v), FI_MINOR(v), FI_MAJOR_VERSION, FI_MINOR_VERSION,
		FC_INFO_ABI ? FC_INFO_ABI : "(default)");
	if (v && (FI_MAJOR(v) != FI_MAJOR_VERSION ||
		  FI_VERSION_LT(v, FI_VERSION(FI_MAJOR_VERSION, FI_MINOR_VERSION))))
		fc_log("warning: libfabric %u.%u is loaded but the layer was built against %d.%d: "
		       "build the layer against the libfabric the code under test uses",
		       FI_MAJOR(v), FI_MINOR(v), FI_MAJOR_VERSION, FI_MINOR_VERSION);
out:
	pthread_mutex_unlock(&fc_resolve_lock);
	return rc;
}

/* Calls made by libfabric itself (a utility provider such as ofi_rxm opening
 * its core provider) must see the real thing. */
static int fc_from_libfabric(const void *ret)
{
	Dl_info caller, lib;

	if (!ret || !dladdr(ret, &caller))
		return 0;
	if (dladdr((void *)(uintptr_t)fc_real.getinfo, &lib) && caller.dli_fbase == lib.dli_fbase)
		return 1;
	return caller.dli_fname && strstr(caller.dli_fname, "/libfabric/") != NULL;
}

/* ---- what the real provider granted ------------------------------------------------ */

struct fc_granted {
	char prov[64];
	char dom[64];
	int hmem;
	uint64_t added;
};
static struct fc_granted fc_granted[128];
static unsigned fc_ngranted, fc_granted_next;
static pthread_mutex_t fc_granted_lock = PTHREAD_MUTEX_INITIALIZER;

static struct fc_granted *fc_granted_find(const struct fi_info *info)
{
	const char *prov = info->fabric_attr && info->fabric_attr->prov_name
				   ? info->fabric_attr->prov_name : "";
	const char *dom = info->domain_attr && info->domain_attr->name ? info->domain_attr->name : "";
	int hmem = !!(info->caps & FI_HMEM);

	for (unsigned i = 0; i < fc_ngranted; i++)
		if (fc_granted[i].hmem == hmem && !strncmp(fc_granted[i].prov, prov, 63) &&
		    !strncmp(fc_granted[i].dom, dom, 63))
			return &fc_granted[i];
	return NULL;
}

void fc_remember_real(const struct fi_info *info, uint64_t added)
{
	struct fc_granted *g;

	pthread_mutex_lock(&fc_granted_lock);
	g = fc_granted_find(info);
	if (!g) {
		if (fc_ngranted < sizeof(fc_granted) / sizeof(fc_granted[0]))
			g = &fc_granted[fc_ngranted++];
		else
			g = &fc_granted[fc_granted_next++ % fc_ngranted];
		snprintf(g->prov, sizeof(g->prov), "%s",
			 info->fabric_attr && info->fabric_attr->prov_name
				 ? info->fabric_attr->prov_name : "");
		snprintf(g->dom, sizeof(g->dom), "%s",
			 info->domain_attr && info->domain_attr->name ? info->domain_attr->name : "");
		g->hmem = !!(info->caps & FI_HMEM);
	}
	g->added = added;
	pthread_mutex_unlock(&fc_granted_lock);
}

uint64_t fc_added_mr_mode(const struct fi_info *info)
{
	struct fc_granted *g;
	uint64_t added = FI_MR_LOCAL | FI_MR_PROV_KEY | FI_MR_ALLOCATED;

	pthread_mutex_lock(&fc_granted_lock);
	g = fc_granted_find(info);
	if (g)
		added = g->added;
	pthread_mutex_unlock(&fc_granted_lock);
	return added;
}

/* ---- keys ------------------------------------------------------------------------------ */
/* key = nonce(16) | tag(16) | (rid ^ pad(nonce))(32). Any process can decode
 * it (the constants are fixed) but an application cannot guess one: a key it
 * chose (requested_key) fails the tag check. */
#define FC_KEY_PAD 0x6a09e667f3bcc908ull
#define FC_KEY_TAG 0xbb67ae8584caa73bull

static uint32_t fc_key_pad(uint16_t n)
{
	return (uint32_t)fc_mix64(n ^ FC_KEY_PAD);
}

static uint16_t fc_key_tag(uint16_t n, uint32_t r)
{
	return (uint16_t)(fc_mix64((((uint64_t)n << 32) | r) ^ FC_KEY_TAG) >> 17);
}

uint64_t fc_key_encode(uint32_t r)
{
	uint16_t n = fc_cfg.key_nonce;

	return ((uint64_t)n << 48) | ((uint64_t)fc_key_tag(n, r) << 32) | (uint32_t)(r ^ fc_key_pad(n));
}

int fc_key_decode(uint64_t key, uint16_t *nonce, uint32_t *r)
{
	uint16_t n = (uint16_t)(key >> 48);
	uint32_t v;

	if (!n)
		return -1;
	v = (uint32_t)key ^ fc_key_pad(n);
	if (fc_key_tag(n, v) != (uint16_t)(key >> 32))
		return -1;
	*nonce = n;
	*r = v;
	return 0;
}

static uint32_t fc_rid_counter;

uint32_t fc_next_rid(void)
{
	uint32_t r;

	do
		r = __atomic_add_fetch(&fc_rid_counter, 1, __ATOMIC_RELAXED);
	while (r == 0);
	return r;
}

/* ---- fi_getinfo ------------------------------------------------------------------------ */

#define FC_MR_BASIC_BIT 1 /* FI_MR_BASIC, spelled as a number: deprecated in 2.x */

static const char *fc_reject(uint32_t version, const struct fi_info *hints, char *why, size_t len)
{
	if (!hints)
		return NULL;
	if (!(hints->mode & FI_CONTEXT2)) {
		snprintf(why, len, "the hints do not accept FI_CONTEXT2 mode");
		return why;
	}
	if (hints->domain_attr && FI_VERSION_GE(version, FI_VERSION(1, 5))) {
		uint64_t have = (uint64_t)(unsigned)hints->domain_attr->mr_mode;
		uint64_t lack;
		if (have & FC_MR_BASIC_BIT)
			have |= FI_MR_PROV_KEY | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED;
		lack = FC_EFA_MR_MODE & ~have;
		if (lack) {
			snprintf(why, len, "hints->domain_attr->mr_mode lacks%s%s%s%s",
				 lack & FI_MR_LOCAL ? " FI_MR_LOCAL" : "",
				 lack & FI_MR_PROV_KEY ? " FI_MR_PROV_KEY" : "",
				 lack & FI_MR_VIRT_ADDR ? " FI_MR_VIRT_ADDR" : "",
				 lack & FI_MR_ALLOCATED ? " FI_MR_ALLOCATED" : "");
			return why;
		}
	}
	if (hints->domain_attr && hints->domain_attr->cq_data_size > FC_CQ_DATA_SIZE) {
		snprintf(why, len, "the hints ask for %zu bytes of CQ data (EFA: %d)",
			 hints->domain_attr->cq_data_size, FC_CQ_DATA_SIZE);
		return why;
	}
	if (hints->ep_attr && hints->ep_attr->max_msg_size > fc_max_msg()) {
		snprintf(why, len, "the hints ask for max_msg_size %zu (cap %zu)",
			 hints->ep_attr->max_msg_size, fc_max_msg());
		return why;
	}
	if (hints->caps & (FI_ATOMIC | FI_COLLECTIVE)) {
		snprintf(why, len, "the layer does not wrap FI_ATOMIC / FI_COLLECTIVE");
		return why;
	}
	return NULL;
}

static size_t fc_min(size_t a, size_t b)
{
	return a < b ? a : b;
}

static void fc_rewrite(const struct fi_info *hints, struct fi_info *fi)
{
	uint64_t add = FC_EFA_MR_MODE, added;
	size_t max_msg = fc_max_msg();

	if (hints && hints->domain_attr && (hints->domain_attr->mr_mode & FI_MR_HMEM) &&
	    (fi->caps & FI_HMEM))
		add |= FI_MR_HMEM;
	added = add & ~(uint64_t)(unsigned)fi->domain_attr->mr_mode;
	fc_remember_real(fi, added);
	fi->domain_attr->mr_mode |= (int)add;
	fi->domain_attr->cq_data_size = fc_min(fi->domain_attr->cq_data_size, FC_CQ_DATA_SIZE);
	fi->domain_attr->mr_iov_limit = fc_min(fi->domain_attr->mr_iov_limit, FC_MR_IOV_LIMIT);
	fi->mode |= FI_CONTEXT2;
	fi->caps &= ~(uint64_t)(FI_ATOMIC | FI_COLLECTIVE);
	if (fi->ep_attr)
		fi->ep_attr->max_msg_size = fc_min(fi->ep_attr->max_msg_size, max_msg);
	if (fi->tx_attr) {
		fi->tx_attr->mode |= FI_CONTEXT2;
		fi->tx_attr->caps &= ~(uint64_t)(FI_ATOMIC | FI_COLLECTIVE);
		fi->tx_attr->inject_size = fc_min(fi->tx_attr->inject_size, max_msg);
		fi->tx_attr->iov_limit = fc_min(fi->tx_attr->iov_limit, FC_MAX_IOV);
		fi->tx_attr->rma_iov_limit = fc_min(fi->tx_attr->rma_iov_limit, FC_RMA_IOV_LIMIT);
	}
	if (fi->rx_attr) {
		fi->rx_attr->mode |= FI_CONTEXT2;
		fi->rx_attr->caps &= ~(uint64_t)(FI_ATOMIC | FI_COLLECTIVE);
		fi->rx_attr->iov_limit = fc_min(fi->rx_attr->iov_limit, FC_MAX_IOV);
	}
}

FC_EXPORT int fi_getinfo(uint32_t version, const char *node, const char *service, uint64_t flags,
			 const struct fi_info *hints, struct fi_info **info)
{
	const void *ret = __builtin_return_address(0);
	struct fi_info *list = NULL, **pp, *it;
	const char *why_last = NULL;
	char why[160];
	int rc, kept = 0, dropped = 0;

	fc_init();
	if (fc_resolve())
		return -FI_ENOSYS;
	if (fc_cfg.disabled || fc_from_libfabric(ret))
		return fc_real.getinfo(version, node, service, flags, hints, info);
	rc = fc_real.getinfo(version, node, service, flags, hints, &list);
	if (rc || !list) {
		*info = list;
		return rc;
	}
	pp = &list;
	while ((it = *pp)) {
		const char *why_not = fc_reject(version, hints, why, sizeof(why));
		if (why_not || !it->domain_attr) {
			*pp = it->next;
			it->next = NULL;
			fc_real.freeinfo(it);
			dropped++;
			why_last = why_not;
			continue;
		}
		fc_rewrite(hints, it);
		kept++;
		pp = &it->next;
	}
	fc_count(FC_infos_rewritten, (uint64_t)kept);
	fc_count(FC_infos_dropped, (uint64_t)dropped);
	if (dropped)
		fc_vlog("fi_getinfo: dropped %d info%s as a strict provider would: %s", dropped,
			dropped == 1 ? "" : "s", why_last ? why_last : "no domain attributes");
	*info = list;
	return list ? 0 : -FI_ENODATA;
}

FC_EXPORT int fi_fabric(struct fi_fabric_attr *attr, struct fid_fabric **fabric, void *context)
{
	const void *ret = __builtin_return_address(0);
	struct fid_fabric *real = NULL;
	int rc;

	fc_init();
	if (fc_resolve())
		return -FI_ENOSYS;
	if (fc_cfg.disabled || fc_from_libfabric(ret))
		return fc_real.fabric(attr, fabric, context);
	rc = fc_real.fabric(attr, &real, context);
	if (rc)
		return rc;
	return fc_wrap_fabric(real, context, fabric);
}

#if FC_LIBFABRIC_2
FC_EXPORT int fi_fabric2(struct fi_info *info, struct fid_fabric **fabric, uint64_t flags,
			 void *context)
{
	const void *ret = __builtin_return_address(0);
	struct fid_fabric *real = NULL;
	int rc;

	fc_init();
	if (fc_resolve() || !fc_real.fabric2)
		return -FI_ENOSYS;
	if (fc_cfg.disabled || fc_from_libfabric(ret))
		return fc_real.fabric2(info, fabric, flags, context);
	rc = fc_real.fabric2(info, &real, flags, context);
	if (rc)
		return rc;
	return fc_wrap_fabric(real, context, fabric);
}
#endif

/* ---- counters for tests ------------------------------------------------------------------ */

FC_EXPORT uint64_t fabnet_contract_counter(const char *name)
{
	for (int i = 0; i < FC_NCOUNTERS; i++)
		if (!strcmp(name, fc_counter_names[i]))
			return __atomic_load_n(&fc_counters[i], __ATOMIC_RELAXED);
	return UINT64_MAX;
}

FC_EXPORT uint64_t fabnet_contract_seed(void)
{
	fc_init();
	return fc_cfg.seed;
}

static const char *fc_report_name(int i)
{
	return i == FC_in_flight ? "in_flight_at_exit" : fc_counter_names[i];
}

/* Adds this process's counters to the report file (several processes may share
 * one: the file holds the sums; "%p" in the name gives one file per process). */
static void fc_write_report(const char *tmpl)
{
	char path[4096], data[8192], out[8192];
	char keys[64][48];
	uint64_t vals[64];
	int nkeys = 0, fd, len = 0;
	ssize_t got;
	size_t j = 0;

	for (const char *s = tmpl; *s && j < sizeof(path) - 16; s++) {
		if (s[0] == '%' && s[1] == 'p') {
			j += (size_t)snprintf(path + j, sizeof(path) - j, "%d", (int)getpid());
			s++;
		} else {
			path[j++] = *s;
		}
	}
	path[j] = '\0';
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		fc_log("cannot write the report %s: %s", path, strerror(errno));
		return;
	}
	if (flock(fd, LOCK_EX) == 0) {
		got = read(fd, data, sizeof(data) - 1);
		data[got > 0 ? got : 0] = '\0';
		for (char *line = strtok(data, "\n"); line && nkeys < 64; line = strtok(NULL, "\n")) {
			unsigned long long v;
			if (sscanf(line, "%47s %llu", keys[nkeys], &v) == 2)
				vals[nkeys++] = v;
		}
		for (int i = -1; i < FC_NCOUNTERS; i++) {
			const char *k = i < 0 ? "processes" : fc_report_name(i);
			uint64_t v = i < 0 ? 1 : __atomic_load_n(&fc_counters[i], __ATOMIC_RELAXED);
			int found = 0;
			for (int x = 0; x < nkeys; x++)
				if (!strcmp(keys[x], k)) {
					vals[x] += v;
					found = 1;
				}
			if (!found && nkeys < 64) {
				snprintf(keys[nkeys], sizeof(keys[nkeys]), "%s", k);
				vals[nkeys++] = v;
			}
		}
		for (int x = 0; x < nkeys && len < (int)sizeof(out) - 80; x++)
			len += snprintf(out + len, sizeof(out) - (size_t)len, "%s %" PRIu64 "\n",
					keys[x], vals[x]);
		if (ftruncate(fd, 0) == 0 && lseek(fd, 0, SEEK_SET) == 0 &&
		    write(fd, out, (size_t)len) != len)
			fc_log("short write to the report %s", path);
		flock(fd, LOCK_UN);
	}
	close(fd);
}

static int fc_finished;

static void fc_finish(void)
{
	const char *report = getenv("FABNET_CONTRACT_REPORT");

	/* A vfork()ed child shares our memory but is not us: leave it alone. */
	if (fc_cfg.disabled || (int)getpid() != fc_cfg.pid ||
	    __atomic_exchange_n(&fc_finished, 1, __ATOMIC_ACQ_REL))
		return;
	fc_reg_leave();
	if (!__atomic_load_n(&fc_resolved, __ATOMIC_ACQUIRE))
		return; /* never used in this process */
	if (fc_cfg.verbose) {
		char line[1024];
		int len = 0;
		for (int i = 0; i < FC_NCOUNTERS && len < (int)sizeof(line) - 48; i++)
			len += snprintf(line + len, sizeof(line) - (size_t)len, " %s=%" PRIu64,
					fc_report_name(i), fc_counters[i]);
		fc_log("counters:%s", line);
	}
	if (report && *report)
		fc_write_report(report);
}

__attribute__((destructor)) static void fc_fini(void)
{
	fc_finish();
}

/* Test drivers often end forked ranks with _exit(), which skips destructors:
 * the report must be written anyway. */
static void fc_real_exit(const char *name, int status) __attribute__((noreturn));
static void fc_real_exit(const char *name, int status)
{
	void (*real)(int) = NULL;
	void *p = dlsym(RTLD_NEXT, name);

	memcpy(&real, &p, sizeof(p));
	if (real)
		real(status);
	syscall(SYS_exit_group, status);
	for (;;)
		pause();
}

FC_EXPORT void _exit(int status)
{
	fc_finish();
	fc_real_exit("_exit", status);
}

FC_EXPORT void _Exit(int status)
{
	fc_finish();
	fc_real_exit("_Exit", status);
}
