/*
 * nccl-e2e: collectives through real NCCL between ranks on one GPU that NCCL
 * treats as separate nodes (each rank gets its own NCCL_HOSTID), every result
 * checked on the GPU against nccl_e2e_check.h, with bandwidths per size.
 *
 * The process forks the ranks before anything touches CUDA (CUDA does not
 * survive fork) and only supervises them: it relays rank 0's ncclUniqueId
 * through pipes, and kills every rank when one fails or the deadline passes,
 * so a hung collective cannot hang the run. Which network NCCL uses is up to
 * the environment (NCCL_NET, NCCL_NET_PLUGIN); run under scripts/gpu-e2e.sh.
 *
 * Each (operation, size): inputs filled from a hash of (rank, index, seed),
 * outputs poisoned; one run, then a check of the output, the canary behind it
 * and the send buffer; warm-up runs; the output poisoned again; `iters` timed
 * runs; the same check again. Wrong elements are summed over the ranks.
 *
 * Built by scripts/gpu-e2e.sh with nvcc (static CUDA runtime), linked against
 * libnccl.so.2, which is found at run time through LD_LIBRARY_PATH.
 * Exit: 0 every element verified, 1 failed, 77 no GPU.
 */
#include <cuda_runtime.h>
#include <nccl.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nccl_e2e_check.h"

#define SKIP 77
#define MAX_RANKS 8

struct opts {
	int nranks, gpu, warmup, max_iters, timeout_s, stall_s, probe;
	size_t min_bytes, max_bytes, budget;
	unsigned ops;
	const char *csv, *label;
};

static char me[64] = "nccl-e2e";

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

#define CUDA_TRY(call)                                                                   \
	do {                                                                             \
		cudaError_t e_ = (call);                                                 \
		if (e_ != cudaSuccess) {                                                 \
			say("%s failed: %s (%d)", #call, cudaGetErrorString(e_), (int)e_); \
			return -1;                                                       \
		}                                                                        \
	} while (0)

#define NCCL_TRY(call)                                                                   \
	do {                                                                             \
		ncclResult_t r_ = (call);                                                \
		if (r_ != ncclSuccess) {                                                 \
			say("%s failed: %s (%d); NCCL_DEBUG=INFO says why", #call,       \
			    ncclGetErrorString(r_), (int)r_);                            \
			return -1;                                                       \
		}                                                                        \
	} while (0)

/* ---- kernels --------------------------------------------------------------------- */

__global__ void fill_input(float *in, size_t n, int rank, unsigned seed)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x)
		in[i] = e2e_input(rank, i, seed);
}

/* counts[0]: wrong elements; counts[1]: the first one (see e2e_elem_ok) */
__global__ void check_elems(const uint32_t *out, const uint32_t *in, struct e2e_case c,
			    size_t n_out, size_t n_in, unsigned long long *counts)
{
	size_t total = n_out + E2E_CANARY + n_in;

	for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < total;
	     k += (size_t)gridDim.x * blockDim.x) {
		uint32_t got = k < n_out + E2E_CANARY ? out[k] : in[k - n_out - E2E_CANARY];
		uint32_t want;
		if (!e2e_elem_ok(&c, n_out, k, got, &want)) {
			atomicAdd(&counts[0], 1ull);
			atomicMin(&counts[1], (unsigned long long)k);
		}
	}
}

/* ---- one rank ---------------------------------------------------------------------- */

/* Rank 0 tells the supervisor after each (operation, size): a run that stops
 * making progress is a hang, and the supervisor can say where. */
struct progress {
	int op;
	size_t bytes;
};

struct rank_ctx {
	const struct opts *o;
	int rank, progress_fd;
	ncclComm_t comm;
	cudaStream_t stream;
	cudaEvent_t t0, t1;
	float *send, *recv;
	unsigned long long *counts; /* device: [0] wrong, [1] first, [2] sum over ranks */
	FILE *csv;
};

static int launch_op(struct rank_ctx *x, const struct e2e_case *c, size_t in_e, size_t out_e)
{
	int n = x->o->nranks, next = (x->rank + 1) % n, prev = (x->rank + n - 1) % n;
	ncclComm_t comm = x->comm;
	cudaStream_t s = x->stream;

	switch (c->op) {
	case E2E_ALL_REDUCE:
		NCCL_TRY(ncclAllReduce(x->send, x->recv, out_e, ncclFloat, ncclSum, comm, s));
		break;
	case E2E_ALL_GATHER:
		NCCL_TRY(ncclAllGather(x->send, x->recv, c->chunk, ncclFloat, comm, s));
		break;
	case E2E_REDUCE_SCATTER:
		NCCL_TRY(ncclReduceScatter(x->send, x->recv, c->chunk, ncclFloat, ncclSum, comm,
					   s));
		break;
	case E2E_BROADCAST:
		NCCL_TRY(ncclBroadcast(x->send, x->recv, out_e, ncclFloat, c->root, comm, s));
		break;
	default:
		NCCL_TRY(ncclGroupStart());
		NCCL_TRY(ncclSend(x->send, in_e, ncclFloat, next, comm, s));
		NCCL_TRY(ncclRecv(x->recv, out_e, ncclFloat, prev, comm, s));
		NCCL_TRY(ncclGroupEnd());
	}
	return 0;
}

/* Says what element k of the checked space holds and should hold. */
static int report_wrong(struct rank_ctx *x, const struct e2e_case *c, size_t out_e, size_t k,
			unsigned long long wrong, const char *when)
{
	const uint32_t *at = (const uint32_t *)x->recv + k;
	const char *where = "output";
	size_t index = k;
	uint32_t got = 0, want = 0;

	if (k >= out_e + E2E_CANARY) {
		index = k - out_e - E2E_CANARY;
		at = (const uint32_t *)x->send + index;
		where = "send buffer";
	} else if (k >= out_e) {
		index = k - out_e;
		where = "canary (past the output)";
	}
	CUDA_TRY(cudaMemcpy(&got, at, sizeof(got), cudaMemcpyDeviceToHost));
	e2e_elem_ok(c, out_e, k, got, &want);
	say("%s of %zu elements (%s): %llu wrong; the first is %s element %zu: %#x, expected %#x",
	    e2e_op_names[c->op], out_e, when, wrong, where, index, got, want);
	return 0;
}

/* Checks this rank's buffers; returns the wrong elements summed over all
 * ranks (through NCCL), or -1. Says where this rank's first wrong one is. */
static long long check(struct rank_ctx *x, const struct e2e_case *c, size_t in_e, size_t out_e,
		       const char *when)
{
	unsigned long long init[3] = {0, ~0ull, 0}, host[3];
	const uint32_t *out = (const uint32_t *)x->recv, *in = (const uint32_t *)x->send;

	CUDA_TRY(cudaMemcpyAsync(x->counts, init, sizeof(init), cudaMemcpyHostToDevice, x->stream));
	check_elems<<<1024, 256, 0, x->stream>>>(out, in, *c, out_e, in_e, x->counts);
	CUDA_TRY(cudaGetLastError());
	NCCL_TRY(ncclAllReduce(x->counts, x->counts + 2, 1, ncclUint64, ncclSum, x->comm,
			       x->stream));
	CUDA_TRY(cudaMemcpyAsync(host, x->counts, sizeof(host), cudaMemcpyDeviceToHost, x->stream));
	CUDA_TRY(cudaStreamSynchronize(x->stream));
	if (host[0] && report_wrong(x, c, out_e, (size_t)host[1], host[0], when))
		return -1;
	return (long long)host[2];
}

/* Rank 0: the row on stdout and in the CSV, and the progress record. */
static void report_row(struct rank_ctx *x, const struct e2e_case *c, size_t bytes, size_t eff,
		       size_t out_e, size_t iters, double us, double algbw, long long wrong)
{
	const struct opts *o = x->o;
	const char *name = e2e_op_names[c->op];
	double busbw = algbw * e2e_busbw_factor(c->op, o->nranks);
	int root = c->op == E2E_BROADCAST ? c->root : -1;
	struct progress p = {c->op, bytes};

	printf("%-15s %12zu %11zu %5d %6zu %12.1f %9.3f %9.3f %8lld\n", name, eff, out_e, root,
	       iters, us, algbw, busbw, wrong);
	fflush(stdout);
	if (x->csv) {
		fprintf(x->csv, "%s,%s,%zu,%zu,%d,%zu,%.2f,%.4f,%.4f,%lld\n", o->label, name, eff,
			out_e, root, iters, us, algbw, busbw, wrong);
		fflush(x->csv); /* rows survive a later hang */
	}
	if (write(x->progress_fd, &p, sizeof(p)) != (ssize_t)sizeof(p))
		say("telling the supervisor about progress: %s", strerror(errno));
}

static int run_case(struct rank_ctx *x, int op, size_t bytes, int index, int *bad)
{
	const struct opts *o = x->o;
	struct e2e_case c = {op, x->rank, o->nranks, index % o->nranks, 0,
			     (unsigned)(op * 1000 + index + 1)};
	size_t in_e, out_e, eff, iters;
	long long w1, w2;
	float ms = 0;
	double us, algbw;

	if (!e2e_geometry(&c, bytes, &in_e, &out_e))
		return 0; /* fewer elements than ranks */
	eff = (in_e > out_e ? in_e : out_e) * sizeof(float);
	fill_input<<<1024, 256, 0, x->stream>>>(x->send, in_e, x->rank, c.seed);
	CUDA_TRY(cudaGetLastError());
	CUDA_TRY(cudaMemsetAsync(x->recv, 0xff, (out_e + E2E_CANARY) * sizeof(float), x->stream));
	if (launch_op(x, &c, in_e, out_e))
		return -1;
	if ((w1 = check(x, &c, in_e, out_e, "first run")) < 0)
		return -1;
	for (int i = 0; i < o->warmup; i++)
		if (launch_op(x, &c, in_e, out_e))
			return -1;
	/* poisoned again: the timed runs must write the whole output themselves */
	CUDA_TRY(cudaMemsetAsync(x->recv, 0xff, (out_e + E2E_CANARY) * sizeof(float), x->stream));
	iters = o->budget / eff;
	iters = iters < 1 ? 1 : iters > (size_t)o->max_iters ? (size_t)o->max_iters : iters;
	CUDA_TRY(cudaEventRecord(x->t0, x->stream));
	for (size_t i = 0; i < iters; i++)
		if (launch_op(x, &c, in_e, out_e))
			return -1;
	CUDA_TRY(cudaEventRecord(x->t1, x->stream));
	CUDA_TRY(cudaEventSynchronize(x->t1));
	CUDA_TRY(cudaEventElapsedTime(&ms, x->t0, x->t1));
	if ((w2 = check(x, &c, in_e, out_e, "after the timed runs")) < 0)
		return -1;
	*bad |= w1 || w2;
	us = ms * 1000.0 / (double)iters;
	algbw = (double)eff / (us * 1e-6) / 1e9;
	if (x->rank == 0)
		report_row(x, &c, bytes, eff, out_e, iters, us, algbw, w1 + w2);
	return 0;
}

static int rank_body(struct rank_ctx *x, const ncclUniqueId *id)
{
	const struct opts *o = x->o;
	size_t elems = o->max_bytes / sizeof(float);
	cudaDeviceProp prop;
	char bus[32] = "?";
	int version = 0, bad = 0;

	CUDA_TRY(cudaSetDevice(o->gpu));
	CUDA_TRY(cudaGetDeviceProperties(&prop, o->gpu));
	cudaDeviceGetPCIBusId(bus, sizeof(bus), o->gpu);
	CUDA_TRY(cudaStreamCreateWithFlags(&x->stream, cudaStreamNonBlocking));
	CUDA_TRY(cudaEventCreate(&x->t0));
	CUDA_TRY(cudaEventCreate(&x->t1));
	CUDA_TRY(cudaMalloc(&x->send, (elems + 1) * sizeof(float)));
	CUDA_TRY(cudaMalloc(&x->recv, (elems + 1 + E2E_CANARY) * sizeof(float)));
	CUDA_TRY(cudaMalloc(&x->counts, 3 * sizeof(unsigned long long)));
	NCCL_TRY(ncclCommInitRank(&x->comm, o->nranks, *id, x->rank));
	ncclGetVersion(&version);
	if (x->rank == 0) {
		printf("# nccl-e2e: NCCL %d.%d.%d, %d ranks on GPU %d (%s, %s), NCCL_NET=%s, "
		       "NCCL_NET_PLUGIN=%s, label %s\n", version / 10000, version / 100 % 100,
		       version % 100, o->nranks, o->gpu, prop.name, bus,
		       getenv("NCCL_NET") ? getenv("NCCL_NET") : "(unset)",
		       getenv("NCCL_NET_PLUGIN") ? getenv("NCCL_NET_PLUGIN") : "(unset)", o->label);
		printf("%-15s %12s %11s %5s %6s %12s %9s %9s %8s\n", "# op", "bytes", "elements",
		       "root", "iters", "time(us)", "algbw", "busbw", "wrong");
		fflush(stdout);
	}
	for (int op = 0; op < E2E_NOPS; op++) {
		int index = 0;
		if (!(o->ops & (1u << op)))
			continue;
		for (size_t b = o->min_bytes; b <= o->max_bytes; b *= 2, index++)
			if (run_case(x, op, b, index, &bad))
				return -1;
	}
	NCCL_TRY(ncclCommDestroy(x->comm));
	x->comm = NULL;
	return bad;
}

static int rank_main(int rank, const struct opts *o, int id_fd)
{
	struct rank_ctx x;
	ncclUniqueId id;
	const char *base = getenv("NCCL_HOSTID");
	char host[128] = "host", hostid[200];
	int rc;

	memset(&x, 0, sizeof(x));
	x.o = o;
	x.rank = rank;
	snprintf(me, sizeof(me), "nccl-e2e[rank %d]", rank);
	/* a node of its own for NCCL: no P2P or SHM path between the ranks */
	if (!base) {
		gethostname(host, sizeof(host) - 1);
		base = host;
	}
	snprintf(hostid, sizeof(hostid), "%s-e2e-rank%d", base, rank);
	setenv("NCCL_HOSTID", hostid, 1);
	if (rank == 0) {
		NCCL_TRY(ncclGetUniqueId(&id));
		if (write(id_fd, &id, sizeof(id)) != (ssize_t)sizeof(id)) {
			say("handing the NCCL unique id to the supervisor: %s", strerror(errno));
			return 1;
		}
		x.progress_fd = id_fd; /* the same pipe */
	} else {
		if (read(id_fd, &id, sizeof(id)) != (ssize_t)sizeof(id)) {
			say("no NCCL unique id from the supervisor (rank 0 failed?)");
			return 1;
		}
		close(id_fd);
	}
	if (rank == 0 && o->csv && !(x.csv = fopen(o->csv, "a"))) {
		say("cannot append to %s: %s", o->csv, strerror(errno));
		return 1;
	}
	rc = rank_body(&x, &id);
	if (x.csv)
		fclose(x.csv);
	if (rc < 0 && x.comm)
		ncclCommAbort(x.comm);
	return rc ? 1 : 0;
}

/* ---- the supervisor ----------------------------------------------------------------- */

/* In a child: is there a GPU? 0, or SKIP with the reason. */
static int probe_gpu(const struct opts *o)
{
	cudaDeviceProp prop;
	cudaError_t e;
	int n = 0;

	if ((e = cudaGetDeviceCount(&n)) != cudaSuccess || n == 0) {
		say("SKIP: no GPU: cudaGetDeviceCount: %s (no NVIDIA driver or GPU here)",
		    e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
		return SKIP;
	}
	if (o->gpu >= n) {
		say("--gpu %d: there are %d GPU(s)", o->gpu, n);
		return 1;
	}
	if ((e = cudaGetDeviceProperties(&prop, o->gpu)) != cudaSuccess) {
		say("cudaGetDeviceProperties(%d): %s", o->gpu, cudaGetErrorString(e));
		return 1;
	}
	printf("nccl-e2e: GPU %d of %d: %s (compute %d.%d, %.1f GiB)\n", o->gpu, n, prop.name,
	       prop.major, prop.minor, (double)prop.totalGlobalMem / (1 << 30));
	fflush(stdout);
	return 0;
}

static int exit_status(int st)
{
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

static pid_t spawn_probe(const struct opts *o)
{
	pid_t pid;

	fflush(stdout);
	if ((pid = fork()) == 0)
		_exit(probe_gpu(o));
	return pid;
}

struct ranks {
	int n, up;              /* up: rank 0's pipe to the supervisor (id, progress) */
	int down[MAX_RANKS];    /* the supervisor's pipes to ranks 1.. (the id) */
	pid_t pid[MAX_RANKS];
	int status[MAX_RANKS];  /* exit status, -1 while running */
};

/* Forks the ranks; 0 or -1. */
static int spawn_ranks(const struct opts *o, struct ranks *k)
{
	int up[2], down[2] = {-1, -1};

	if (pipe(up))
		return say("pipe: %s", strerror(errno)), -1;
	k->n = o->nranks;
	for (int r = 0; r < k->n; r++) {
		if (r && pipe(down))
			return say("pipe: %s", strerror(errno)), -1;
		fflush(stdout);
		if ((k->pid[r] = fork()) < 0)
			return say("fork: %s", strerror(errno)), -1;
		if (k->pid[r] == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the supervisor */
			close(up[0]);
			for (int q = 1; q < r; q++)
				close(k->down[q]);
			if (r)
				close(up[1]), close(down[1]);
			_exit(rank_main(r, o, r ? down[0] : up[1]));
		}
		if (r) {
			close(down[0]);
			k->down[r] = down[1];
		}
		k->status[r] = -1;
	}
	close(up[1]);
	k->up = up[0];
	return 0;
}

/* Rank 0's unique id to the others; 0 or -1. */
static int relay_id(struct ranks *k)
{
	struct pollfd pfd = {k->up, POLLIN, 0};
	ncclUniqueId id;
	int rc = 0;

	if (poll(&pfd, 1, 120 * 1000) != 1 || read(k->up, &id, sizeof(id)) != (ssize_t)sizeof(id)) {
		say("rank 0 sent no NCCL unique id in 120 s");
		rc = -1;
	}
	for (int r = 1; r < k->n; r++) {
		if (!rc && write(k->down[r], &id, sizeof(id)) != (ssize_t)sizeof(id))
			rc = -1;
		close(k->down[r]); /* on failure: the rank reads EOF and exits */
	}
	return rc;
}

/* Drains rank 0's progress records; 1 if there was one. Closes the pipe at EOF. */
static int read_progress(int *fd, struct progress *done)
{
	struct pollfd pfd = {*fd, POLLIN, 0};
	struct progress p;
	int got = 0;

	while (*fd >= 0 && poll(&pfd, 1, 0) == 1) {
		if (read(*fd, &p, sizeof(p)) != (ssize_t)sizeof(p)) {
			close(*fd); /* rank 0 is gone: waitpid tells how */
			*fd = -1;
			break;
		}
		*done = p;
		got = 1;
	}
	return got;
}

/* 1 when the run stalled or ran out of time (said why), else 0. */
static int overdue(const struct opts *o, time_t start, time_t last, const struct progress *done)
{
	time_t now = time(NULL);

	if (now - start > o->timeout_s) {
		say("FAIL: the run took more than %d s (--timeout)", o->timeout_s);
		return 1;
	}
	if (now - last <= o->stall_s)
		return 0;
	if (done->op < 0)
		say("FAIL: no operation finished in %d s (--stall): NCCL init or the first "
		    "collective hung", o->stall_s);
	else
		say("FAIL: nothing finished for %d s (--stall) after %s of %zu bytes: the next "
		    "collective hung", o->stall_s, e2e_op_names[done->op], done->bytes);
	return 1;
}

/* Waits for every rank; on the first failure, hang or timeout kills the rest.
 * Returns the run's exit code. */
static int wait_ranks(const struct opts *o, struct ranks *k, int rc)
{
	time_t start = time(NULL), last = start;
	struct progress done = {-1, 0};
	int live = k->n, st;
	pid_t p;

	while (live > 0) {
		if (read_progress(&k->up, &done))
			last = time(NULL);
		if (!rc && overdue(o, start, last, &done))
			rc = 1;
		while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
			for (int r = 0; r < k->n; r++) {
				if (k->pid[r] != p)
					continue;
				k->status[r] = exit_status(st);
				live--;
				if (k->status[r] && !rc) {
					say("rank %d exited %d: stopping the others", r,
					    k->status[r]);
					rc = 1;
				}
			}
		}
		if (rc)
			for (int r = 0; r < k->n; r++)
				if (k->status[r] < 0)
					kill(k->pid[r], SIGKILL);
		usleep(20 * 1000);
	}
	return rc;
}

static int supervise(const struct opts *o)
{
	struct ranks k;

	memset(&k, 0, sizeof(k));
	if (spawn_ranks(o, &k))
		return 1; /* ranks already forked die with us (PR_SET_PDEATHSIG) */
	return wait_ranks(o, &k, relay_id(&k) ? 1 : 0);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: nccl-e2e [--nranks N] [--gpu G] [--min BYTES] [--max BYTES] [--ops LIST]\n"
		"                [--iters N] [--warmup N] [--budget BYTES] [--csv FILE] [--label TEXT]\n"
		"                [--timeout S] [--stall S] [--probe]\n"
		"  Runs all_reduce, all_gather, reduce_scatter, broadcast and sendrecv (--ops: all, or\n"
		"  a comma-separated list) through NCCL between N ranks (default 2) on GPU G, each its\n"
		"  own node for NCCL, at sizes from --min (8) to --max (1G) doubling, and checks every\n"
		"  result on the GPU. Timed runs per size: BUDGET/size (default 2G) between 1 and\n"
		"  --iters (20), after --warmup (1). --csv appends rank 0's rows. The run fails when\n"
		"  no (operation, size) finished for --stall seconds (60) or it took --timeout (600).\n"
		"  --probe only looks for the GPU. Exit 0 verified, 1 failed, 77 no GPU.\n");
}

static int parse(int argc, char **argv, struct opts *o)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		char *end = NULL;
		long n = v ? strtol(v, &end, 10) : 0;
		int num_ok = v && *v && end && !*end;

		if (!strcmp(a, "--probe")) {
			o->probe = 1;
			continue;
		}
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			exit(0);
		}
		if (!v) {
			say("%s: %s (see --help)", a, a[0] == '-' ? "needs a value" : "unknown argument");
			return -1;
		}
		i++;
		if (!strcmp(a, "--nranks") && num_ok && n >= 1 && n <= MAX_RANKS)
			o->nranks = (int)n;
		else if (!strcmp(a, "--gpu") && num_ok && n >= 0 && n < 1024)
			o->gpu = (int)n;
		else if (!strcmp(a, "--iters") && num_ok && n >= 1 && n <= 100000)
			o->max_iters = (int)n;
		else if (!strcmp(a, "--warmup") && num_ok && n >= 0 && n <= 1000)
			o->warmup = (int)n;
		else if (!strcmp(a, "--timeout") && num_ok && n >= 1 && n <= 86400)
			o->timeout_s = (int)n;
		else if (!strcmp(a, "--stall") && num_ok && n >= 1 && n <= 86400)
			o->stall_s = (int)n;
		else if (!strcmp(a, "--min") && !e2e_parse_size(v, &o->min_bytes) && o->min_bytes)
			;
		else if (!strcmp(a, "--max") && !e2e_parse_size(v, &o->max_bytes) && o->max_bytes)
			;
		else if (!strcmp(a, "--budget") && !e2e_parse_size(v, &o->budget) && o->budget)
			;
		else if (!strcmp(a, "--ops") && !e2e_parse_ops(v, &o->ops))
			;
		else if (!strcmp(a, "--csv"))
			o->csv = v;
		else if (!strcmp(a, "--label") && *v && !strpbrk(v, ",\n"))
			o->label = v;
		else {
			say("%s %s: %s (see --help)", a, v,
			    strncmp(a, "--", 2) ? "unknown argument" : "not a valid value or option");
			return -1;
		}
	}
	if (o->min_bytes > o->max_bytes) {
		say("--min %zu is larger than --max %zu", o->min_bytes, o->max_bytes);
		return -1;
	}
	if (o->max_bytes > (size_t)1 << 36) {
		say("--max %zu: at most 64G", o->max_bytes);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o = {2, 0, 1, 20, 600, 60, 0, 8, (size_t)1 << 30, (size_t)2 << 30,
			 (1u << E2E_NOPS) - 1, NULL, "nccl-e2e"};
	int st = 0, rc;

	if (parse(argc, argv, &o))
		return 1;
	/* CUDA only in children: the supervisor must be able to fork */
	if (waitpid(spawn_probe(&o), &st, 0) < 0)
		return say("waiting for the GPU probe: %s", strerror(errno)), 1;
	if ((rc = exit_status(st)) != 0 || o.probe)
		return rc;
	rc = supervise(&o);
	if (rc == 0)
		printf("nccl-e2e: PASS: %s: every element of every operation at every size verified "
		       "on %d ranks\n", o.label, o.nranks);
	else
		say("FAIL: %s", o.label);
	return rc;
}
