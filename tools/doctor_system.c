/*
 * The doctor's machine checks: EFA's device files, the memlock limit against
 * what NCCL's buffers need, fork safety and hugepages (efa), cross-memory
 * attach and /dev/shm (shm, and efa's own shm path).
 *
 * Test-only overrides (docs/troubleshooting.md): FABNET_DOCTOR_DEV_DIR,
 * FABNET_DOCTOR_PCI_DIR, FABNET_DOCTOR_PTRACE_SCOPE, FABNET_DOCTOR_SHM_DIR
 * name another directory or file to read instead of the machine's.
 */
#include <config.h>

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/config.h"
#include "doctor.h"

#define MiB (1024.0 * 1024.0)

static int read_hex_file(const char *path, unsigned *out)
{
	FILE *f = fopen(path, "r");
	int ok;

	if (!f)
		return -1;
	ok = fscanf(f, "%x", out) == 1;
	fclose(f);
	return ok ? 0 : -1;
}

int doc_count_efa_pci(void)
{
	const char *dir = doc_path("FABNET_DOCTOR_PCI_DIR", "/sys/bus/pci/devices");
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	if (!d)
		return 0;
	while ((e = readdir(d))) {
		char path[4096];
		unsigned vendor, device;
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s/vendor", dir, e->d_name);
		if (read_hex_file(path, &vendor) || vendor != 0x1d0f)
			continue;
		snprintf(path, sizeof(path), "%s/%s/device", dir, e->d_name);
		/* EFA functions are 1d0f:efa0 .. efa3 (ENA, 1d0f:ec20 etc., is not RDMA) */
		if (!read_hex_file(path, &device) && (device & 0xfff0) == 0xefa0)
			n++;
	}
	closedir(d);
	return n;
}

/* Bit cap of the effective capability set (/proc/self/status CapEff). */
static int have_cap(int cap)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	unsigned long long eff = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "CapEff: %llx", &eff) == 1)
			break;
	fclose(f);
	return (int)((eff >> cap) & 1);
}
#define CAP_IPC_LOCK_BIT 14
#define CAP_SYS_PTRACE_BIT 19

static const char *why_efa(const struct doc_ctx *c, char *buf, size_t len)
{
	if (c->efa_pci_nics)
		snprintf(buf, len, "%d EFA NIC%s on the PCI bus", c->efa_pci_nics,
			 c->efa_pci_nics == 1 ? "" : "s");
	else
		snprintf(buf, len, "fabnet would use provider %s", c->provider[0] ? c->provider : "efa");
	return buf;
}

/* ---- efa-device ------------------------------------------------------------------- */

struct uverbs_scan {
	struct doc_buf bad, good;
	int nbad, ngood, nodriver, denied;
};

/* Opens every uverbs device of dir read-write, as the efa provider does. */
static void scan_uverbs(DIR *d, const char *dir, struct uverbs_scan *u)
{
	for (struct dirent *e; (e = readdir(d));) {
		char path[4096];
		struct stat st;
		int fd;
		if (strncmp(e->d_name, "uverbs", 6))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (stat(path, &st) || !S_ISCHR(st.st_mode)) {
			doc_buf_printf(&u->bad, "%s%s is not a character device", u->nbad++ ? "; " : "",
				       path);
			continue;
		}
		fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0) {
			doc_buf_printf(&u->bad, "%s%s: open: %s", u->nbad++ ? "; " : "", path,
				       strerror(errno));
			u->nodriver += errno == ENXIO || errno == ENODEV;
			u->denied += errno == EACCES || errno == EPERM;
			continue;
		}
		close(fd);
		doc_buf_printf(&u->good, "%s%s", u->ngood++ ? ", " : "", e->d_name);
	}
}

void doc_check_efa_device(struct doc_ctx *c)
{
	const char *dir = doc_path("FABNET_DOCTOR_DEV_DIR", "/dev/infiniband");
	struct uverbs_scan u;
	char ctx[96];
	DIR *d = opendir(dir);

	if (!c->efa_wanted && !c->efa_pci_nics) {
		doc_addf(c, "efa-device", DOC_INFO, "the EFA checks apply to EFA jobs only", NULL,
			 "no EFA NIC on the PCI bus and fabnet would not use efa (provider %s): "
			 "%s not checked", c->provider[0] ? c->provider : "unknown", dir);
		if (d)
			closedir(d);
		return;
	}
	why_efa(c, ctx, sizeof(ctx));
	if (!d) {
		doc_addf(c, "efa-device", DOC_ERROR,
			 "libfabric's efa provider reaches each NIC through /dev/infiniband/uverbsN; "
			 "without them it finds no device and fabnet cannot use EFA",
			 "in a container pass the devices (podman/docker: --device "
			 "/dev/infiniband/uverbs0 and so on, one per NIC); on the host load "
			 "the driver (modprobe efa) or install the EFA software",
			 "%s: %s (%s)", dir, strerror(errno), ctx);
		return;
	}
	memset(&u, 0, sizeof(u));
	scan_uverbs(d, dir, &u);
	closedir(d);
	if (u.nbad) {
		doc_addf(c, "efa-device", DOC_ERROR,
			 "a uverbs device fabnet cannot open is a NIC it cannot use: the efa "
			 "provider skips it, or finds no device at all",
			 u.denied ? "give the job's user read-write access (the rdma group, or a udev "
				  "rule); in a container, pass the device with --device"
			 : u.nodriver ? "the node exists but no driver serves it: load the efa driver "
				      "(modprobe efa) on the host and pass the host's /dev/infiniband"
				    : "recreate the device nodes: pass the host's /dev/infiniband",
			 "%s (%s)", doc_buf_str(&u.bad), ctx);
	} else if (!u.ngood) {
		doc_addf(c, "efa-device", DOC_ERROR,
			 "libfabric's efa provider reaches each NIC through a uverbs device; with "
			 "none it finds no NIC",
			 "pass the devices into the container (--device /dev/infiniband/uverbsN per NIC), "
			 "or load the efa driver on the host",
			 "%s has no uverbs device (%s)", dir, ctx);
	} else if (c->efa_pci_nics > u.ngood) {
		doc_addf(c, "efa-device", DOC_WARN,
			 "only NICs with a uverbs device reach fabnet: the job runs on fewer NICs "
			 "than the machine has",
			 "pass every /dev/infiniband/uverbsN into the container",
			 "%d uverbs device%s (%s) for %d EFA NICs on the PCI bus", u.ngood,
			 u.ngood == 1 ? "" : "s", doc_buf_str(&u.good), c->efa_pci_nics);
	} else {
		doc_addf(c, "efa-device", DOC_OK, NULL, NULL, "%s: %d uverbs device%s open read-write "
			 "(%s; %s)", dir, u.ngood, u.ngood == 1 ? "" : "s", doc_buf_str(&u.good), ctx);
	}
	doc_buf_free(&u.bad);
	doc_buf_free(&u.good);
}

/* ---- memlock ------------------------------------------------------------------------ */

static uint64_t env_bytes(const char *name, uint64_t def)
{
	const char *v = getenv(name);
	char *end;
	long long x;

	if (!v || !*v)
		return def;
	x = strtoll(v, &end, 10);
	return *end || x < 0 ? def : (uint64_t)x;
}

/* NCCL's per-connection buffers, from its source (src/init.cc DEFAULT_*_BUFFSIZE,
 * src/include/device.h): LL = 8 lines x 512 threads x 8 steps x 16 bytes,
 * LL128 = 120 elements x 640 threads x 8 steps x 8 bytes, SIMPLE = 4 MiB; the
 * NCCL_*BUFFSIZE variables replace them. The net transport (src/transport/net.cc)
 * keeps LL in host memory always, and LL128 and SIMPLE too without GPUDirect. */
struct nccl_need {
	uint64_t ll, ll128, simple;
	unsigned channels;
	uint64_t host, gdr, fabnet;
};

static const char *env_lookup(const char *name)
{
	return getenv(name);
}

static const char *no_lookup(const char *name)
{
	(void)name;
	return NULL;
}

static void nccl_need(struct nccl_need *n, int ndevs)
{
	struct fabnet_config cfg;
	char err[256];
	uint64_t per_dev;

	n->ll = env_bytes("NCCL_LL_BUFFSIZE", 8ull * 512 * 8 * 16);
	n->ll128 = env_bytes("NCCL_LL128_BUFFSIZE", 120ull * 640 * 8 * 8);
	n->simple = env_bytes("NCCL_BUFFSIZE", 1ull << 22);
	/* MAXCHANNELS (64) is the most NCCL opens; NCCL_MAX_NCHANNELS lowers it.
	 * Each channel of a ring has one send and one receive connection. */
	n->channels = (unsigned)env_bytes("NCCL_MAX_NCHANNELS", 64);
	if (n->channels == 0 || n->channels > 64)
		n->channels = 64;
	n->host = 2ull * n->channels * (n->ll + n->ll128 + n->simple);
	n->gdr = 2ull * n->channels * n->ll;
	/* an invalid setting is fabnet-config's finding: count with the defaults */
	if (fabnet_config_parse(&cfg, env_lookup, err, sizeof(err)))
		fabnet_config_parse(&cfg, no_lookup, err, sizeof(err));
	/* fabnet's own bounce buffers: header + eager payload each, per NIC */
	per_dev = (uint64_t)(cfg.rx_buffers + cfg.tx_buffers) * (cfg.eager_max + 256);
	n->fabnet = per_dev * (uint64_t)(ndevs > 0 ? ndevs : 1);
}

void doc_check_memlock(struct doc_ctx *c)
{
	struct rlimit rl;
	struct nccl_need n;
	char lim[64], need[512];
	int pins = c->efa_wanted || !strncmp(c->provider, "verbs", 5);
	int ipc_lock = have_cap(CAP_IPC_LOCK_BIT);

	nccl_need(&n, c->ndevs);
	if (getrlimit(RLIMIT_MEMLOCK, &rl)) {
		doc_addf(c, "memlock", DOC_WARN, "registrations pin memory against this limit",
			 "check `ulimit -l`", "getrlimit(RLIMIT_MEMLOCK): %s", strerror(errno));
		return;
	}
	if (rl.rlim_cur == RLIM_INFINITY)
		snprintf(lim, sizeof(lim), "unlimited");
	else
		snprintf(lim, sizeof(lim), "%.1f MiB", (double)rl.rlim_cur / MiB);
	snprintf(need, sizeof(need),
		 "a ring over %u channel%s pins %.0f MiB per process with host buffers "
		 "(2 x %u connections x (LL %.2f + LL128 %.2f + SIMPLE %.2f MiB), NCCL's defaults "
		 "from src/init.cc and src/include/device.h), %.0f MiB with GPUDirect RDMA (LL "
		 "only), plus %.1f MiB of fabnet bounce buffers for %d NIC%s",
		 n.channels, n.channels == 1 ? "" : "s", (double)n.host / MiB, n.channels, (double)n.ll / MiB,
		 (double)n.ll128 / MiB, (double)n.simple / MiB, (double)n.gdr / MiB,
		 (double)n.fabnet / MiB, c->ndevs > 0 ? c->ndevs : 1, c->ndevs > 1 ? "s" : "");
	if (!pins) {
		doc_addf(c, "memlock", DOC_INFO, "providers that pin registered memory (efa, verbs) "
			 "count it against RLIMIT_MEMLOCK", NULL,
			 "RLIMIT_MEMLOCK %s; provider %s does not pin registrations, so it does not "
			 "matter here. For EFA: %s", lim, c->provider[0] ? c->provider : "unknown", need);
		return;
	}
	if (rl.rlim_cur == RLIM_INFINITY || ipc_lock) {
		doc_addf(c, "memlock", DOC_OK, NULL, NULL, "RLIMIT_MEMLOCK %s%s; %s", lim,
			 ipc_lock && rl.rlim_cur != RLIM_INFINITY
				 ? ", but this process has CAP_IPC_LOCK, so the limit does not apply"
				 : "", need);
		return;
	}
	uint64_t have = rl.rlim_cur;
	const char *fix = "raise it to unlimited: `ulimit -l unlimited` (or memlock in "
			  "/etc/security/limits.conf); in a container --ulimit memlock=-1:-1";
	if (have < n.gdr + n.fabnet)
		doc_addf(c, "memlock", DOC_ERROR,
			 "EFA pins every registration against RLIMIT_MEMLOCK: registrations fail "
			 "once it is reached, and NCCL fails the connection",
			 fix, "RLIMIT_MEMLOCK %s is below even the GPUDirect need: %s", lim, need);
	else if (have < n.host + n.fabnet)
		doc_addf(c, "memlock", DOC_WARN,
			 "EFA pins every registration against RLIMIT_MEMLOCK: enough only when NCCL "
			 "keeps LL128 and SIMPLE buffers in GPU memory (GPUDirect RDMA)",
			 fix, "RLIMIT_MEMLOCK %s: %s", lim, need);
	else
		doc_addf(c, "memlock", DOC_OK, NULL, NULL, "RLIMIT_MEMLOCK %s: %s", lim, need);
}

/* ---- fork safety and hugepages (efa) ------------------------------------------------ */

static int env_on(const char *name)
{
	const char *v = getenv(name);
	int on = 0;

	if (!v)
		return 0;
	return fabnet_parse_bool(v, &on) == 0 ? on : 1;
}

/* rdma-core's view: 0 disabled, 1 enabled, 2 unneeded (copy-on-fork kernel); -1 unknown. */
static int ibv_fork_status(char *why, size_t len)
{
	void *h = dlopen("libibverbs.so.1", RTLD_NOW | RTLD_LOCAL);
	int (*fn)(void);
	int st;

	if (!h) {
		snprintf(why, len, "libibverbs.so.1 not loadable: %s", dlerror());
		return -1;
	}
	*(void **)&fn = dlsym(h, "ibv_is_fork_initialized");
	if (!fn) {
		snprintf(why, len, "libibverbs has no ibv_is_fork_initialized (rdma-core < 35)");
		dlclose(h);
		return -1;
	}
	st = fn();
	dlclose(h);
	snprintf(why, len, "rdma-core reports fork support %s", st == 2 ? "unneeded (the kernel "
		 "copies registered pages on fork)" : st == 1 ? "enabled" : "disabled (the kernel "
		 "did not report copy-on-fork)");
	return st;
}

void doc_check_fork_safety(struct doc_ctx *c)
{
	int requested = env_on("FI_EFA_FORK_SAFE") || getenv("RDMAV_FORK_SAFE") ||
			getenv("IBV_FORK_SAFE");
	int huge = getenv("FI_EFA_USE_HUGE_PAGE") ? env_on("FI_EFA_USE_HUGE_PAGE") : -1;
	char st_why[160];
	int st = ibv_fork_status(st_why, sizeof(st_why));

	if (!c->efa_wanted) {
		doc_addf(c, "fork-safety", DOC_INFO, "fork safety matters to the efa provider only",
			 NULL, "not an EFA job; %s", st_why);
		return;
	}
	if (st == 2) {
		doc_addf(c, "fork-safety", DOC_OK, NULL, NULL, "%s: fork() is safe", st_why);
	} else if (requested && huge == 1) {
		doc_add(c, "fork-safety", DOC_ERROR,
			"fork support (FI_EFA_FORK_SAFE, RDMAV_FORK_SAFE or IBV_FORK_SAFE) is on "
			"together with FI_EFA_USE_HUGE_PAGE=1",
			"libfabric's efa provider aborts the process at init on this combination",
			"unset FI_EFA_USE_HUGE_PAGE (or the fork-safety variable if nothing forks)");
	} else if (requested && getenv("RDMAV_HUGEPAGES_SAFE")) {
		doc_add(c, "fork-safety", DOC_ERROR,
			"fork support is on together with RDMAV_HUGEPAGES_SAFE",
			"libfabric's efa provider refuses to initialise (-FI_EINVAL) with both",
			"unset RDMAV_HUGEPAGES_SAFE");
	} else if (requested) {
		doc_addf(c, "fork-safety", DOC_OK, NULL, NULL,
			 "fork support requested by the environment; %s", st_why);
	} else {
		doc_addf(c, "fork-safety", DOC_WARN,
			 "when the kernel does not copy registered pages on fork, libfabric's efa "
			 "provider aborts any process that forks after it opened the NIC "
			 "(data-loader workers, subprocess calls)",
			 "set FI_EFA_FORK_SAFE=1 if the job forks, or run a kernel >= 5.13 with "
			 "rdma-core >= 35",
			 "no fork support requested and %s", st_why);
	}
}

static long meminfo(const char *key)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[256];
	long v = -1;
	size_t n = strlen(key);

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, n) && line[n] == ':') {
			v = strtol(line + n + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

void doc_check_hugepages(struct doc_ctx *c)
{
	long total = meminfo("HugePages_Total"), freep = meminfo("HugePages_Free");
	long size_kb = meminfo("Hugepagesize");
	int disabled = (getenv("FI_EFA_USE_HUGE_PAGE") && !env_on("FI_EFA_USE_HUGE_PAGE")) ||
		       env_on("FI_EFA_FORK_SAFE");

	if (!c->efa_wanted)
		doc_addf(c, "hugepages", DOC_INFO, "only the efa provider uses huge pages (for its "
			 "internal bounce buffers)", NULL, "not an EFA job; %ld huge pages of %ld kB, "
			 "%ld free", total, size_kb, freep);
	else if (disabled)
		doc_add(c, "hugepages", DOC_INFO, "efa's huge pages are off (FI_EFA_USE_HUGE_PAGE=0 "
			"or fork support)", "the provider uses regular pages for its bounce "
			"buffers: a small cost", "nothing, unless the job never forks");
	else if (freep <= 0)
		doc_addf(c, "hugepages", DOC_INFO,
			 "efa puts its internal bounce buffers on huge pages when it can and falls "
			 "back to regular pages (a small performance cost) when none are free",
			 "reserve some (sysctl vm.nr_hugepages=N) if you want the last bit of speed",
			 "%ld huge pages of %ld kB, %ld free", total, size_kb, freep);
	else
		doc_addf(c, "hugepages", DOC_OK, NULL, NULL, "%ld huge pages of %ld kB, %ld free",
			 total, size_kb, freep);
}

/* ---- cross-memory attach and /dev/shm ------------------------------------------------- */

/* Does process_vm_readv work between two siblings, as between two ranks that
 * a launcher started? Returns 0, or an errno. */
static int sibling_cma(void)
{
	static char buf[4096];
	int hold[2], res[2], err = 0;
	pid_t owner, reader;

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (char)(i * 7 + 1);
	if (pipe(hold) || pipe(res))
		return errno;
	fflush(NULL);
	owner = fork();
	if (owner == 0) { /* keeps buf mapped until the parent closes the pipe */
		char x;
		close(hold[1]);
		while (read(hold[0], &x, 1) < 0 && errno == EINTR)
			;
		_exit(0);
	}
	reader = owner > 0 ? fork() : -1;
	if (reader == 0) {
		static char got[sizeof(buf)];
		struct iovec l = {got, sizeof(got)}, r = {buf, sizeof(buf)};
		ssize_t n = process_vm_readv(owner, &l, 1, &r, 1, 0);
		int e = n < 0 ? errno : n != (ssize_t)sizeof(buf) || memcmp(got, buf, sizeof(buf)) ? EIO : 0;
		if (write(res[1], &e, sizeof(e)) < 0)
			_exit(1);
		_exit(0);
	}
	if (owner < 0 || reader < 0)
		err = errno;
	else if (read(res[0], &err, sizeof(err)) != sizeof(err))
		err = ECHILD;
	close(hold[0]);
	close(hold[1]);
	close(res[0]);
	close(res[1]);
	if (reader > 0)
		waitpid(reader, NULL, 0);
	if (owner > 0)
		waitpid(owner, NULL, 0);
	return err;
}

void doc_check_shm_cma(struct doc_ctx *c)
{
	const char *scope_file = doc_path("FABNET_DOCTOR_PTRACE_SCOPE",
					  "/proc/sys/kernel/yama/ptrace_scope");
	int relevant = !strcmp(c->provider, "shm") || c->efa_wanted;
	int err = sibling_cma(), scope = -1, cap = have_cap(CAP_SYS_PTRACE_BIT);
	FILE *f = fopen(scope_file, "r");
	char scope_txt[160];
	enum doc_severity bad = relevant ? DOC_WARN : DOC_INFO;

	if (f) {
		if (fscanf(f, "%d", &scope) != 1)
			scope = -1;
		fclose(f);
	}
	if (scope < 0)
		snprintf(scope_txt, sizeof(scope_txt), "no Yama ptrace scope (%s absent)", scope_file);
	else
		snprintf(scope_txt, sizeof(scope_txt), "Yama ptrace_scope %d (%s)%s", scope, scope_file,
			 cap ? ", and this process has CAP_SYS_PTRACE" : "");
	const char *why = "libfabric's shm provider (and efa for ranks on one node) copies large "
			  "messages with process_vm_readv/writev; without it, it falls back to "
			  "copies through shared memory: slower, more CPU";
	if (err)
		doc_addf(c, "shm-cma", bad, why,
			 err == EPERM ? "in a container: allow process_vm_readv (docker/podman "
					"--cap-add SYS_PTRACE, or a seccomp profile permitting "
					"it); on the host: sysctl kernel.yama.ptrace_scope=0"
				      : "use a kernel with CONFIG_CROSS_MEMORY_ATTACH",
			 "process_vm_readv between two sibling processes failed: %s; %s",
			 strerror(err), scope_txt);
	else if (scope >= 1 && !cap)
		doc_addf(c, "shm-cma", bad, why,
			 "sysctl kernel.yama.ptrace_scope=0, or grant the ranks CAP_SYS_PTRACE",
			 "%s: ranks started by a launcher are siblings, and scope %d lets a process "
			 "read only its descendants", scope_txt, scope);
	else
		doc_addf(c, "shm-cma", DOC_OK, NULL, NULL,
			 "process_vm_readv between two sibling processes works; %s", scope_txt);
}

void doc_check_dev_shm(struct doc_ctx *c)
{
	const char *dir = doc_path("FABNET_DOCTOR_SHM_DIR", "/dev/shm");
	char probe[4096];
	struct statvfs vfs;
	int fd;

	if (statvfs(dir, &vfs)) {
		doc_addf(c, "dev-shm", DOC_ERROR, "NCCL and libfabric's shm provider share memory "
			 "between the ranks of a node through files in /dev/shm",
			 "mount a tmpfs there (containers: --shm-size=1g or --ipc=host)",
			 "%s: %s", dir, strerror(errno));
		return;
	}
	snprintf(probe, sizeof(probe), "%s/fabnet-doctor-XXXXXX", dir);
	fd = mkstemp(probe);
	if (fd < 0) {
		doc_addf(c, "dev-shm", DOC_ERROR, "NCCL and libfabric's shm provider create their "
			 "shared segments there",
			 "make it writable for the job's user (it is normally mode 1777)",
			 "%s is not writable: %s", dir, strerror(errno));
		return;
	}
	close(fd);
	unlink(probe);
	double total = (double)vfs.f_blocks * vfs.f_frsize / MiB;
	double avail = (double)vfs.f_bavail * vfs.f_frsize / MiB;
	if (total < 1024)
		doc_addf(c, "dev-shm", DOC_WARN,
			 "NCCL maps its host buffers and intra-node transport there and fails with a "
			 "bus error when it fills; 64 MiB, the container default, is too small "
			 "(NVIDIA's containers ask for --shm-size=1g)",
			 "give it at least 1 GiB: --shm-size=1g or --ipc=host for containers, or "
			 "remount (mount -o remount,size=1G /dev/shm)",
			 "%s is %.0f MiB (%.0f MiB free)", dir, total, avail);
	else
		doc_addf(c, "dev-shm", DOC_OK, NULL, NULL, "%s is %.0f MiB (%.0f MiB free), "
			 "writable", dir, total, avail);
}
