/*
 * GPU memory through regMrDmaBuf, as NCCL does it, between two processes.
 *
 * Each rank allocates device memory with cuMemAlloc, exports it as a dma-buf
 * (cuMemGetHandleForAddressRange, CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD),
 * registers it through the plugin's regMrDmaBuf (NCCL_PTR_CUDA, the buffer's
 * offset in the dma-buf) and closes the fd right after the call. Rank 1 copies
 * a pattern to its device buffer and sends it; rank 0 receives into its
 * device buffer, flushes, copies it back with cuMemcpyDtoH and checks every
 * byte, plus a canary after the message that must stay untouched.
 *
 * The CUDA driver is loaded with dlopen("libcuda.so.1"); no CUDA header or
 * library is needed to build this. Without a driver or a GPU it exits 77
 * (automake's "skipped") and says why. CUDA is not fork-safe, so the driver
 * is probed in a child and the parent never initialises it.
 *
 * usage: gpu-dmabuf [--plugin PATH] [--dev N] [--gpu N] [--size BYTES]
 *                   [--offset BYTES] [--allow-fallback] [--probe]
 * exit: 0 all bytes verified, 1 failure, 77 skipped (no driver, GPU or dma-buf
 * support in the driver).
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../tools/ctl.h"
#include "../../tools/plugin_loader.h"

#define SKIP 77
#define MiB (1024ul * 1024ul)
#define CANARY 4096ul     /* bytes after the message that must keep their value */
#define CANARY_BYTE 0xa5
#define TAG 7
#define DEADLINE_S 60

/* ---- the few driver API declarations we need (values from cuda.h) ----------- */
typedef int CUresult;
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef unsigned long long CUdeviceptr;
#define CUDA_SUCCESS 0
#define CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED 124
#define CU_POINTER_ATTRIBUTE_SYNC_MEMOPS 6
#define CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD 1

static struct {
	CUresult (*init)(unsigned);
	CUresult (*device_count)(int *);
	CUresult (*device_get)(CUdevice *, int);
	CUresult (*device_attr)(int *, int, CUdevice);
	CUresult (*primary_retain)(CUcontext *, CUdevice);
	CUresult (*ctx_set_current)(CUcontext);
	CUresult (*mem_alloc)(CUdeviceptr *, size_t);
	CUresult (*mem_free)(CUdeviceptr);
	CUresult (*memset8)(CUdeviceptr, unsigned char, size_t);
	CUresult (*htod)(CUdeviceptr, const void *, size_t);
	CUresult (*dtoh)(void *, CUdeviceptr, size_t);
	CUresult (*ptr_set_attr)(const void *, int, CUdeviceptr);
	CUresult (*get_handle)(void *, CUdeviceptr, size_t, int, unsigned long long);
	CUresult (*error_string)(CUresult, const char **);
} cu;

static const char *me = "gpu-dmabuf";

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", me);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static const char *cu_err(CUresult r)
{
	const char *s = NULL;

	if (cu.error_string && cu.error_string(r, &s) == CUDA_SUCCESS && s)
		return s;
	return "unknown CUDA error";
}

/* Loads the driver and picks the GPU. Returns 0, SKIP (said why) or 1. */
static int cuda_open(int gpu, CUdevice *dev)
{
	void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	CUcontext ctx;
	CUresult r;
	int n = 0, dmabuf = 0;

	if (!h) {
		say("SKIP: libcuda.so.1 could not be loaded (%s): no NVIDIA driver here", dlerror());
		return SKIP;
	}
#define SYM(field, name)                                                        \
	do {                                                                    \
		*(void **)&cu.field = dlsym(h, name);                           \
		if (!cu.field) {                                                \
			say("SKIP: libcuda.so.1 has no %s: the driver is too old " \
			    "for dma-buf export (needs CUDA 11.7 or later)", name); \
			return SKIP;                                            \
		}                                                               \
	} while (0)
	SYM(init, "cuInit");
	SYM(error_string, "cuGetErrorString");
	SYM(device_count, "cuDeviceGetCount");
	SYM(device_get, "cuDeviceGet");
	SYM(device_attr, "cuDeviceGetAttribute");
	SYM(primary_retain, "cuDevicePrimaryCtxRetain");
	SYM(ctx_set_current, "cuCtxSetCurrent");
	SYM(mem_alloc, "cuMemAlloc_v2");
	SYM(mem_free, "cuMemFree_v2");
	SYM(memset8, "cuMemsetD8_v2");
	SYM(htod, "cuMemcpyHtoD_v2");
	SYM(dtoh, "cuMemcpyDtoH_v2");
	SYM(ptr_set_attr, "cuPointerSetAttribute");
	SYM(get_handle, "cuMemGetHandleForAddressRange");
#undef SYM
	if ((r = cu.init(0)) != CUDA_SUCCESS) {
		say("SKIP: cuInit failed: %s (%d); no usable GPU or driver", cu_err(r), r);
		return SKIP;
	}
	if ((r = cu.device_count(&n)) != CUDA_SUCCESS || n <= 0) {
		say("SKIP: the CUDA driver sees no GPU (%s)", r ? cu_err(r) : "0 devices");
		return SKIP;
	}
	if (gpu < 0 || gpu >= n) {
		say("--gpu %d: there are %d GPU(s)", gpu, n);
		return 1;
	}
	if ((r = cu.device_get(dev, gpu)) != CUDA_SUCCESS) {
		say("cuDeviceGet(%d) failed: %s (%d)", gpu, cu_err(r), r);
		return 1;
	}
	r = cu.device_attr(&dmabuf, CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED, *dev);
	if (r != CUDA_SUCCESS || !dmabuf) {
		say("SKIP: GPU %d cannot export dma-bufs (CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED is "
		    "%s): needs the open kernel modules or a recent driver, and Linux 5.12+", gpu,
		    r ? cu_err(r) : "0");
		return SKIP;
	}
	if ((r = cu.primary_retain(&ctx, *dev)) != CUDA_SUCCESS ||
	    (r = cu.ctx_set_current(ctx)) != CUDA_SUCCESS) {
		say("making GPU %d's primary context current failed: %s (%d)", gpu, cu_err(r), r);
		return 1;
	}
	return 0;
}

/* ---- one rank ---------------------------------------------------------------- */

struct opts {
	const char *plugin;
	int dev, gpu, allow_fallback;
	size_t size, offset;
	char ctl_path[108];
};

/* A device buffer exported as a dma-buf and registered at offset bytes into it,
 * as NCCL registers a buffer inside a larger allocation. */
struct gbuf {
	CUdeviceptr base, data;
	size_t alloc;
	void *mh;
};

static int gbuf_reg(struct pl_net *net, void *comm, size_t len, size_t offset, struct gbuf *b)
{
	long ps = sysconf(_SC_PAGESIZE);
	size_t page = ps > 0 ? (size_t)ps : 4096;
	ncclResult_t nr;
	CUresult r;
	int fd = -1, one = 1;

	memset(b, 0, sizeof(*b));
	/* dma-buf export wants a page-aligned start and length */
	b->alloc = (offset + len + CANARY + 2 * MiB - 1) / (2 * MiB) * (2 * MiB);
	if ((r = cu.mem_alloc(&b->base, b->alloc)) != CUDA_SUCCESS) {
		say("cuMemAlloc(%zu bytes) failed: %s (%d); free GPU memory or use a smaller --size",
		    b->alloc, cu_err(r), r);
		return -1;
	}
	if (b->base % page) {
		say("cuMemAlloc returned %#llx, not aligned to the %zu-byte page dma-buf export "
		    "needs", b->base, page);
		return -1;
	}
	b->data = b->base + offset;
	/* as NCCL: synchronous copies must not overtake RDMA into this memory */
	if ((r = cu.ptr_set_attr(&one, CU_POINTER_ATTRIBUTE_SYNC_MEMOPS, b->base)) != CUDA_SUCCESS)
		say("note: cuPointerSetAttribute(SYNC_MEMOPS) failed: %s (%d)", cu_err(r), r);
	r = cu.get_handle(&fd, b->base, b->alloc, CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD, 0);
	if (r != CUDA_SUCCESS || fd < 0) {
		say("cuMemGetHandleForAddressRange(DMA_BUF_FD, %zu bytes) failed: %s (%d); the "
		    "kernel or driver cannot export this memory as a dma-buf", b->alloc, cu_err(r), r);
		return -1;
	}
	nr = pl_reg_mr_dmabuf(net, comm, (void *)(uintptr_t)b->data, len, NCCL_PTR_CUDA, offset, fd,
			      &b->mh);
	close(fd); /* as NCCL does: right after the call */
	if (nr != ncclSuccess || !b->mh) {
		say("regMrDmaBuf(%zu bytes of GPU memory, offset %zu) returned %d (%s)%s; run "
		    "fabnet-info for the plugin's reasons", len, offset, (int)nr, pl_result_str(nr),
		    nr == ncclSuccess ? " and a NULL handle" : "");
		return -1;
	}
	return 0;
}

static void gbuf_free(struct pl_net *net, void *comm, struct gbuf *b)
{
	if (b->mh)
		pl_dereg_mr(net, comm, b->mh);
	if (b->base)
		cu.mem_free(b->base);
	memset(b, 0, sizeof(*b));
}

static uint8_t pat(size_t i, size_t size)
{
	uint64_t x = (uint64_t)i * 0x9e3779b97f4a7c15ull + size;
	return (uint8_t)(x >> 29 ^ x >> 7);
}

static int expired(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec - start->tv_sec > DEADLINE_S;
}

/* Tests req until done; returns the size test() reported, -1 on error. */
static int wait_req(struct pl_net *net, void *req, const char *what)
{
	struct timespec start;
	ncclResult_t nr;
	int done = 0, size = -1;

	clock_gettime(CLOCK_MONOTONIC, &start);
	while (!done) {
		if ((nr = pl_test(net, req, &done, &size)) != ncclSuccess) {
			say("test() on the %s returned %d (%s)", what, (int)nr, pl_result_str(nr));
			return -1;
		}
		if (!done && expired(&start)) {
			say("the %s did not complete in %d s", what, DEADLINE_S);
			return -1;
		}
	}
	return size;
}

static int rank_main(int rank, const struct opts *o)
{
	uint8_t handle[NCCL_NET_HANDLE_MAXSIZE];
	struct pl_net net;
	struct pl_props props;
	struct ctl ctl = {.fd = -1};
	struct gbuf b = {0};
	struct timespec start;
	void *lcomm = NULL, *comm = NULL, *req = NULL;
	uint8_t *host = NULL;
	ncclResult_t nr;
	CUdevice cdev;
	CUresult r;
	int rc = 1, ndev = 0, got;

	me = rank ? "gpu-dmabuf[sender]" : "gpu-dmabuf[receiver]";
	if ((rc = cuda_open(o->gpu, &cdev)) != 0)
		return rc;
	rc = 1;
	if (pl_open(&net, o->plugin, 0)) {
		say("cannot load the plugin: %s", net.err);
		return 1;
	}
	if ((nr = pl_init(&net)) != ncclSuccess || (nr = pl_devices(&net, &ndev)) != ncclSuccess ||
	    o->dev >= ndev || (nr = pl_get_properties(&net, o->dev, &props)) != ncclSuccess) {
		say("plugin init, devices or getProperties failed (%d, %s; %d device(s), --dev %d)",
		    (int)nr, pl_result_str(nr), ndev, o->dev);
		goto out;
	}
	if (!(props.ptrSupport & NCCL_PTR_CUDA)) {
		say("device %d (%s) does not advertise NCCL_PTR_CUDA (ptrSupport %#x): the provider "
		    "cannot register GPU memory; fabnet-info says why", o->dev, props.name,
		    (unsigned)props.ptrSupport);
		goto out;
	}
	if (!(props.ptrSupport & NCCL_PTR_DMABUF)) {
		if (!o->allow_fallback) {
			say("device %d (%s) does not advertise NCCL_PTR_DMABUF (ptrSupport %#x): "
			    "regMrDmaBuf would register by address; fabnet-info says why "
			    "(--allow-fallback tests that path)", o->dev, props.name,
			    (unsigned)props.ptrSupport);
			goto out;
		}
		say("note: NCCL_PTR_DMABUF not advertised: testing the by-address fallback");
	}
	if (ctl_open(&ctl, o->ctl_path, rank, DEADLINE_S * 1000)) {
		say("control channel %s: %s", o->ctl_path, ctl.err);
		goto out;
	}
	clock_gettime(CLOCK_MONOTONIC, &start);
	if (rank == 0) {
		if ((nr = pl_listen(&net, o->dev, handle, &lcomm)) != ncclSuccess || !lcomm) {
			say("listen returned %d (%s)", (int)nr, pl_result_str(nr));
			goto out;
		}
		if (ctl_send(&ctl, handle, sizeof(handle))) {
			say("sending the handle: %s", ctl.err);
			goto out;
		}
		while (!comm) {
			if ((nr = pl_accept(&net, lcomm, &comm)) != ncclSuccess) {
				say("accept returned %d (%s)", (int)nr, pl_result_str(nr));
				goto out;
			}
			if (!comm && expired(&start)) {
				say("no connection within %d s", DEADLINE_S);
				goto out;
			}
		}
	} else {
		if (ctl_recv(&ctl, handle, sizeof(handle))) {
			say("receiving the handle: %s", ctl.err);
			goto out;
		}
		while (!comm) {
			if ((nr = pl_connect(&net, o->dev, handle, &comm)) != ncclSuccess) {
				say("connect returned %d (%s)", (int)nr, pl_result_str(nr));
				goto out;
			}
			if (!comm && expired(&start)) {
				say("no connection within %d s", DEADLINE_S);
				goto out;
			}
		}
	}
	if (gbuf_reg(&net, comm, o->size, o->offset, &b))
		goto out;
	host = malloc(o->size + CANARY);
	if (!host) {
		say("out of memory for a %zu-byte host copy", o->size + CANARY);
		goto out;
	}
	if (rank == 1) {
		for (size_t i = 0; i < o->size; i++)
			host[i] = pat(i, o->size);
		if ((r = cu.htod(b.data, host, o->size)) != CUDA_SUCCESS) {
			say("cuMemcpyHtoD of %zu bytes failed: %s (%d)", o->size, cu_err(r), r);
			goto out;
		}
		if (ctl_barrier(&ctl)) { /* the receiver's buffer is ready */
			say("barrier: %s", ctl.err);
			goto out;
		}
		while (!req) {
			if ((nr = pl_isend(&net, comm, (void *)(uintptr_t)b.data, o->size, TAG, b.mh,
					   &req)) != ncclSuccess) {
				say("isend of %zu bytes returned %d (%s)", o->size, (int)nr,
				    pl_result_str(nr));
				goto out;
			}
			if (!req && expired(&start)) {
				say("isend found no matching receive within %d s", DEADLINE_S);
				goto out;
			}
		}
		if ((got = wait_req(&net, req, "isend")) < 0)
			goto out;
		if ((size_t)got != o->size) {
			say("test() on the isend reported %d bytes, not %zu", got, o->size);
			goto out;
		}
		if (ctl_barrier(&ctl)) { /* the receiver verified */
			say("barrier: %s", ctl.err);
			goto out;
		}
	} else {
		size_t cap = o->size + CANARY;
		void *data = (void *)(uintptr_t)b.data;
		int tag = TAG, isize = (int)o->size;
		void *freq = NULL;

		/* the message lands in front of a canary that must survive */
		if ((r = cu.memset8(b.data, CANARY_BYTE, cap)) != CUDA_SUCCESS) {
			say("cuMemsetD8 of %zu bytes failed: %s (%d)", cap, cu_err(r), r);
			goto out;
		}
		if (ctl_barrier(&ctl)) {
			say("barrier: %s", ctl.err);
			goto out;
		}
		while (!req) {
			if ((nr = pl_irecv(&net, comm, 1, &data, &o->size, &tag, &b.mh, &req)) !=
			    ncclSuccess) {
				say("irecv of %zu bytes returned %d (%s)", o->size, (int)nr,
				    pl_result_str(nr));
				goto out;
			}
			if (!req && expired(&start)) {
				say("irecv could not be posted within %d s", DEADLINE_S);
				goto out;
			}
		}
		if ((got = wait_req(&net, req, "irecv")) < 0)
			goto out;
		if ((size_t)got != o->size) {
			say("test() on the irecv reported %d bytes, %zu were sent", got, o->size);
			goto out;
		}
		/* data written by the NIC into GPU memory is visible after a flush */
		if ((nr = pl_iflush(&net, comm, 1, &data, &isize, &b.mh, &freq)) != ncclSuccess) {
			say("iflush returned %d (%s)", (int)nr, pl_result_str(nr));
			goto out;
		}
		if (freq && wait_req(&net, freq, "iflush") < 0)
			goto out;
		if ((r = cu.dtoh(host, b.data, cap)) != CUDA_SUCCESS) {
			say("cuMemcpyDtoH of %zu bytes failed: %s (%d)", cap, cu_err(r), r);
			goto out;
		}
		for (size_t i = 0; i < o->size; i++) {
			if (host[i] != pat(i, o->size)) {
				say("byte %zu of %zu is %#x, expected %#x: the data did not arrive in "
				    "GPU memory intact", i, o->size, host[i], pat(i, o->size));
				goto out;
			}
		}
		for (size_t i = o->size; i < cap; i++) {
			if (host[i] != CANARY_BYTE) {
				say("byte %zu after the %zu-byte message changed (%#x): a write went "
				    "past the buffer", i - o->size, o->size, host[i]);
				goto out;
			}
		}
		if (ctl_barrier(&ctl)) {
			say("barrier: %s", ctl.err);
			goto out;
		}
		printf("PASS gpu-dmabuf: %zu bytes from GPU to GPU through regMrDmaBuf (%s, "
		       "offset %zu, fd closed after registration) verified\n", o->size,
		       props.ptrSupport & NCCL_PTR_DMABUF ? "dma-buf" : "by-address fallback",
		       o->offset);
		fflush(stdout);
	}
	rc = 0;
out:
	free(host);
	if (comm)
		gbuf_free(&net, comm, &b);
	if (comm)
		rank ? pl_close_send(&net, comm) : pl_close_recv(&net, comm);
	if (lcomm)
		pl_close_listen(&net, lcomm);
	ctl_close(&ctl);
	pl_finalize(&net);
	pl_close(&net);
	return rc;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: gpu-dmabuf [--plugin PATH] [--dev N] [--gpu N] [--size BYTES] "
		"[--offset BYTES]\n"
		"                  [--allow-fallback] [--probe]\n"
		"  Registers cuMemAlloc memory through regMrDmaBuf in two processes and moves\n"
		"  --size bytes (default 8M+5) between them. --probe only checks for a driver.\n"
		"  Exit 0 verified, 1 failed, 77 skipped (no driver, GPU or dma-buf export).\n");
}

static int probe_child(const struct opts *o)
{
	CUdevice d;

	return cuda_open(o->gpu, &d);
}

/* rank -1: only the driver probe. Returns the child's pid, -1 if fork failed. */
static pid_t spawn(int rank, const struct opts *o)
{
	pid_t pid = fork();

	if (pid < 0)
		say("fork: %s", strerror(errno));
	if (pid == 0) {
		fflush(stdout);
		_exit(rank < 0 ? probe_child(o) : rank_main(rank, o));
	}
	return pid;
}

static int status_of(pid_t pid)
{
	int st;

	if (pid < 0 || waitpid(pid, &st, 0) < 0)
		return 1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}

int main(int argc, char **argv)
{
	struct opts o = {.plugin = getenv("FABNET_PLUGIN"), .gpu = 0, .size = 8 * MiB + 5,
			 .offset = 4096};
	int probe = 0, s0, s1;
	pid_t p0, p1;

	if (!o.plugin)
		o.plugin = "./.libs/libnccl-net-fabnet.so";
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--plugin") && v)
			o.plugin = argv[++i];
		else if (!strcmp(a, "--dev") && v)
			o.dev = atoi(argv[++i]);
		else if (!strcmp(a, "--gpu") && v)
			o.gpu = atoi(argv[++i]);
		else if (!strcmp(a, "--size") && v) {
			if (pl_parse_size(argv[++i], &o.size) || !o.size || o.size > INT32_MAX) {
				say("--size %s: a byte count from 1 to 2G-1 (K, M, G allowed)", argv[i]);
				return 1;
			}
		} else if (!strcmp(a, "--offset") && v) {
			if (pl_parse_size(argv[++i], &o.offset)) {
				say("--offset %s: a byte count", argv[i]);
				return 1;
			}
		} else if (!strcmp(a, "--allow-fallback"))
			o.allow_fallback = 1;
		else if (!strcmp(a, "--probe"))
			probe = 1;
		else {
			usage();
			return strcmp(a, "--help") && strcmp(a, "-h") ? 1 : 0;
		}
	}
	/* the driver is initialised only in children: CUDA does not survive fork */
	s0 = status_of(spawn(-1, &o));
	if (s0 != 0 || probe) {
		if (s0 == 0)
			printf("gpu-dmabuf: a GPU that exports dma-bufs is present\n");
		return s0;
	}
	snprintf(o.ctl_path, sizeof(o.ctl_path), "/tmp/fabnet-gpu-dmabuf.%d.sock", (int)getpid());
	p0 = spawn(0, &o);
	p1 = spawn(1, &o);
	s0 = status_of(p0);
	s1 = status_of(p1);
	if (s0 == 0 && s1 == 0)
		return 0;
	say("FAIL: receiver exited %d, sender exited %d", s0, s1);
	return s0 == SKIP && s1 == SKIP ? SKIP : 1;
}
