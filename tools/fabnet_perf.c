/*
 * fabnet-perf: bandwidth and latency of an NCCL net plugin between two
 * processes, through the plugin ABI (tools/plugin_loader.h).
 *
 *   fabnet-perf [--plugin PATH] [--abi N] [--dev D] [--min-bytes N] [--max-bytes N]
 *               [--iters N] [--warmup N] [--window N] [--lat-iters N]
 *               [--rank R --ctl SOCKPATH]
 *
 * Forks a receiver (rank 0) and runs the sender (rank 1) itself, unless
 * --rank is given (then start the other rank separately). Each size from
 * --min-bytes to --max-bytes (doubling) is sent --iters times with --window
 * isends/irecvs in flight; the time runs from a barrier to the receiver's
 * acknowledgement of the last message. Latency is half the median round trip
 * of an 8-byte ping-pong. Data are verified in every warm-up message and in
 * the last timed message of each size (received into a buffer filled with a
 * canary first), so no number comes from a corrupted transfer.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"
#include "plugin_loader.h"

#define RECV_MEM_CAP (1024ull * 1024 * 1024) /* receive slots, per rank */
#define OP_TIMEOUT_MS 60000

struct perf {
	struct pl_net net;
	struct pl_props props;
	struct ctl ctl;
	int rank, dev;
	size_t min_bytes, max_bytes;
	int iters, warmup, window, lat_iters;
	int iters_given;
	uint64_t seed;
	/* connections: fwd = rank 1 -> rank 0, bwd = rank 0 -> rank 1 */
	void *lcomm, *scomm, *rcomm;
	/* rank 1: the send buffer; rank 0: window + 1 receive slots */
	uint8_t *data;
	size_t data_len;
	void *data_mh;
	/* small buffers for acks and ping-pong, registered on both comms */
	uint8_t small_s[64], small_r[64];
	void *small_s_mh, *small_r_mh;
};

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static int die(const char *fmt, ...)
{
	va_list ap;
	char buf[1024];

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fprintf(stderr, "fabnet-perf: %s\n", buf);
	fflush(stderr);
	exit(1);
}

#define CHECK(expr, what)                                                           \
	do {                                                                        \
		ncclResult_t r_ = (expr);                                           \
		if (r_ != ncclSuccess)                                              \
			die("rank %d: %s returned %d (%s)", p->rank, (what), (int)r_, \
			    pl_result_str(r_));                                     \
	} while (0)

static uint64_t mix64(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void pat_fill(uint8_t *b, size_t len, uint64_t key)
{
	size_t k = 0;

	for (; k + 8 <= len; k += 8) {
		uint64_t w = mix64(key + k / 8);
		memcpy(b + k, &w, 8);
	}
	if (k < len) {
		uint64_t w = mix64(key + k / 8);
		memcpy(b + k, &w, len - k);
	}
}

/* Returns the first bad offset, or -1. */
static long long pat_check(const uint8_t *b, size_t len, uint64_t key)
{
	for (size_t k = 0; k < len; k += 8) {
		uint64_t w = mix64(key + k / 8);
		size_t n = len - k < 8 ? len - k : 8;
		if (memcmp(b + k, &w, n)) {
			for (size_t j = 0; j < n; j++)
				if (b[k + j] != ((const uint8_t *)&w)[j])
					return (long long)(k + j);
		}
	}
	return -1;
}

static uint64_t key_of(const struct perf *p, size_t size)
{
	return mix64(p->seed ^ ((uint64_t)size * 0x100000001b3ull));
}

/* Waits for one request; the test() sizes go to *got. */
static void wait_req(struct perf *p, void *req, int *got, const char *what)
{
	double deadline = now_us() + OP_TIMEOUT_MS * 1000.0;
	int done = 0, sizes[1] = {-1};

	for (;;) {
		CHECK(pl_test(&p->net, req, &done, sizes), "test");
		if (done)
			break;
		if (now_us() > deadline)
			die("rank %d: %s did not complete within %d s", p->rank, what,
			    OP_TIMEOUT_MS / 1000);
	}
	if (got)
		*got = sizes[0];
}

static void *post_send(struct perf *p, void *comm, void *buf, size_t size, void *mh)
{
	double deadline = now_us() + OP_TIMEOUT_MS * 1000.0;
	void *req = NULL;

	for (;;) {
		CHECK(pl_isend(&p->net, comm, buf, size, 0, mh, &req), "isend");
		if (req)
			return req;
		if (now_us() > deadline)
			die("rank %d: isend kept returning a NULL request for %d s", p->rank,
			    OP_TIMEOUT_MS / 1000);
	}
}

static void *post_recv(struct perf *p, void *comm, void *buf, size_t size, void *mh)
{
	double deadline = now_us() + OP_TIMEOUT_MS * 1000.0;
	void *req = NULL;
	int tag = 0;

	for (;;) {
		CHECK(pl_irecv(&p->net, comm, 1, &buf, &size, &tag, &mh, &req), "irecv");
		if (req)
			return req;
		if (now_us() > deadline)
			die("rank %d: irecv kept returning a NULL request for %d s", p->rank,
			    OP_TIMEOUT_MS / 1000);
	}
}

static void ctl_or_die(struct perf *p, int rc)
{
	if (rc)
		die("rank %d: control channel: %s", p->rank, p->ctl.err);
}

/* Both ranks listen, swap handles, connect to the other and accept. */
static void setup_comms(struct perf *p)
{
	uint8_t mine[NCCL_NET_HANDLE_MAXSIZE], theirs[NCCL_NET_HANDLE_MAXSIZE];
	double deadline = now_us() + OP_TIMEOUT_MS * 1000.0;

	memset(mine, 0, sizeof(mine));
	CHECK(pl_listen(&p->net, p->dev, mine, &p->lcomm), "listen");
	ctl_or_die(p, ctl_send(&p->ctl, mine, sizeof(mine)));
	ctl_or_die(p, ctl_recv(&p->ctl, theirs, sizeof(theirs)));
	while (!p->scomm || !p->rcomm) {
		if (!p->scomm)
			CHECK(pl_connect(&p->net, p->dev, theirs, &p->scomm), "connect");
		if (!p->rcomm)
			CHECK(pl_accept(&p->net, p->lcomm, &p->rcomm), "accept");
		if (now_us() > deadline)
			die("rank %d: connect/accept not done within %d s", p->rank,
			    OP_TIMEOUT_MS / 1000);
	}
	CHECK(pl_close_listen(&p->net, p->lcomm), "closeListen");
	p->lcomm = NULL;
	CHECK(pl_reg_mr(&p->net, p->scomm, p->small_s, sizeof(p->small_s), NCCL_PTR_HOST,
			&p->small_s_mh), "regMr");
	CHECK(pl_reg_mr(&p->net, p->rcomm, p->small_r, sizeof(p->small_r), NCCL_PTR_HOST,
			&p->small_r_mh), "regMr");
}

static int slots_for(const struct perf *p, size_t size)
{
	size_t w = (size_t)p->window;

	if (size && (w + 1) * size > RECV_MEM_CAP)
		w = RECV_MEM_CAP / size > 1 ? RECV_MEM_CAP / size - 1 : 1;
	return (int)w;
}

static int iters_for(const struct perf *p, size_t size)
{
	/* Without --iters, large sizes move about 1 GiB each. */
	if (!p->iters_given && size) {
		size_t cap = (1024ull * 1024 * 1024) / size;
		if (cap < 5)
			cap = 5;
		if ((size_t)p->iters > cap)
			return (int)cap;
	}
	return p->iters;
}

static void alloc_data(struct perf *p)
{
	size_t slot_max = p->max_bytes ? p->max_bytes : 1;

	if (p->rank == 1)
		p->data_len = slot_max;
	else
		p->data_len = slot_max * (size_t)(slots_for(p, p->max_bytes) + 1);
	p->data = mmap(NULL, p->data_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	if (p->data == MAP_FAILED)
		die("rank %d: mmap %zu bytes: %s", p->rank, p->data_len, strerror(errno));
	memset(p->data, 0xcd, p->data_len); /* fault the pages in */
	CHECK(pl_reg_mr(&p->net, p->rank == 1 ? p->scomm : p->rcomm, p->data, p->data_len,
			NCCL_PTR_HOST, &p->data_mh), "regMr");
}

/*
 * Moves n messages of size on the forward comm with up to window in flight.
 * Receiver: slot i % window, except that the last message of a timed run
 * (last_slot) lands in slot `window`. verify_each: canary and check every
 * message (warm-up). Returns the number of bad messages (receiver).
 */
static int stream(struct perf *p, size_t size, int n, int window, int verify_each,
		  int last_slot)
{
	void **reqs = calloc((size_t)window, sizeof(void *));
	int posted = 0, completed = 0, bad = 0;
	double deadline = now_us() + OP_TIMEOUT_MS * 1000.0;
	uint64_t key = key_of(p, size);

	if (!reqs)
		die("out of memory");
	while (completed < n) {
		while (posted < n && posted - completed < window) {
			void *req = NULL;
			if (p->rank == 1) {
				CHECK(pl_isend(&p->net, p->scomm, p->data, size, 0, p->data_mh, &req),
				      "isend");
			} else {
				int slot = (last_slot && posted == n - 1) ? window : posted % window;
				void *buf = p->data + (size_t)slot * size;
				size_t sz = size;
				int tag = 0;
				if (verify_each)
					memset(buf, 0x5a, size);
				CHECK(pl_irecv(&p->net, p->rcomm, 1, &buf, &sz, &tag, &p->data_mh, &req),
				      "irecv");
			}
			if (!req)
				break;
			reqs[posted % window] = req;
			posted++;
		}
		if (completed < posted) {
			int done = 0, got[1] = {-1};
			CHECK(pl_test(&p->net, reqs[completed % window], &done, got), "test");
			if (done) {
				if (got[0] != (int)size) {
					fprintf(stderr, "fabnet-perf: rank %d: message %d of %zu bytes: "
						"test() reported %d bytes\n", p->rank, completed, size,
						got[0]);
					bad++;
				}
				if (p->rank == 0 && verify_each) {
					long long off = pat_check(p->data + (size_t)(completed % window) *
								  size, size, key);
					if (off >= 0) {
						fprintf(stderr, "fabnet-perf: warm-up message %d of %zu "
							"bytes corrupted at offset %lld\n", completed, size, off);
						bad++;
					}
				}
				completed++;
				deadline = now_us() + OP_TIMEOUT_MS * 1000.0;
				continue;
			}
		}
		if (now_us() > deadline)
			die("rank %d: %zu-byte transfers: no progress for %d s (%d of %d done)",
			    p->rank, size, OP_TIMEOUT_MS / 1000, completed, n);
	}
	free(reqs);
	return bad;
}

struct result {
	double us_total;
	int32_t bad;
};

/* One size: warm-up with verification, barrier, timed stream, ack. */
static void run_size(struct perf *p, size_t size, struct result *res)
{
	int window = slots_for(p, size), iters = iters_for(p, size);
	int32_t bad = 0, peer_bad = 0;
	uint64_t key = key_of(p, size);
	void *ack = NULL;
	double t0, t1;

	if (p->rank == 1)
		pat_fill(p->data, size, key);
	ctl_or_die(p, ctl_barrier(&p->ctl));
	if (p->warmup > 0)
		bad += stream(p, size, p->warmup, window, 1, 0);
	if (p->rank == 0)
		memset(p->data + (size_t)window * size, 0x5a, size); /* the last message's slot */
	else
		ack = post_recv(p, p->rcomm, p->small_r, sizeof(p->small_r), p->small_r_mh);
	ctl_or_die(p, ctl_barrier(&p->ctl));
	t0 = now_us();
	bad += stream(p, size, iters, window, 0, 1);
	if (p->rank == 1) {
		wait_req(p, ack, NULL, "the receiver's acknowledgement");
	} else {
		void *req = post_send(p, p->scomm, p->small_s, 1, p->small_s_mh);
		wait_req(p, req, NULL, "the acknowledgement");
	}
	t1 = now_us();
	if (p->rank == 0) {
		long long off = pat_check(p->data + (size_t)window * size, size, key);
		if (off >= 0) {
			fprintf(stderr, "fabnet-perf: the last timed message of %zu bytes is corrupted "
				"at offset %lld\n", size, off);
			bad++;
		}
	}
	ctl_or_die(p, ctl_send(&p->ctl, &bad, sizeof(bad)));
	ctl_or_die(p, ctl_recv(&p->ctl, &peer_bad, sizeof(peer_bad)));
	res->us_total = t1 - t0;
	res->bad = bad + peer_bad;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* 8-byte ping-pong. Rank 1 fills rtt (microseconds) when not NULL. */
static int pingpong(struct perf *p, int n, double *rtt)
{
	void *req_r = NULL, *req_s;
	uint64_t v;
	int got, bad = 0;

	if (p->rank == 0)
		req_r = post_recv(p, p->rcomm, p->small_r, 8, p->small_r_mh);
	for (int i = 0; i < n; i++) {
		if (p->rank == 1) {
			double t0;
			req_r = post_recv(p, p->rcomm, p->small_r, 8, p->small_r_mh);
			v = (uint64_t)i * 2 + 1;
			memcpy(p->small_s, &v, 8);
			t0 = now_us();
			req_s = post_send(p, p->scomm, p->small_s, 8, p->small_s_mh);
			wait_req(p, req_s, NULL, "ping");
			wait_req(p, req_r, &got, "pong");
			if (rtt)
				rtt[i] = now_us() - t0;
			memcpy(&v, p->small_r, 8);
			if (got != 8 || v != (uint64_t)i * 2 + 2)
				bad++;
		} else {
			wait_req(p, req_r, &got, "ping");
			memcpy(&v, p->small_r, 8);
			if (got != 8 || v != (uint64_t)i * 2 + 1)
				bad++;
			if (i + 1 < n)
				req_r = post_recv(p, p->rcomm, p->small_r, 8, p->small_r_mh);
			v = (uint64_t)i * 2 + 2;
			memcpy(p->small_s, &v, 8);
			req_s = post_send(p, p->scomm, p->small_s, 8, p->small_s_mh);
			wait_req(p, req_s, NULL, "pong");
		}
	}
	return bad;
}

static void run(struct perf *p)
{
	int ndev = 0, failures = 0;
	double *rtt = NULL;

	CHECK(pl_init(&p->net), "init");
	CHECK(pl_devices(&p->net, &ndev), "devices");
	if (p->dev >= ndev)
		die("rank %d: device %d requested, the plugin reports %d", p->rank, p->dev, ndev);
	CHECK(pl_get_properties(&p->net, p->dev, &p->props), "getProperties");
	if (p->max_bytes > p->props.maxP2pBytes) {
		if (p->rank == 1)
			fprintf(stderr, "fabnet-perf: --max-bytes lowered to maxP2pBytes %zu\n",
				p->props.maxP2pBytes);
		p->max_bytes = p->props.maxP2pBytes;
	}
	setup_comms(p);
	alloc_data(p);
	if (p->rank == 1) {
		printf("# dev %d: %s, %d Mbps reported; window %d, warm-up %d (verified), iters %d%s;"
		       " the last timed message of each size is verified\n", p->dev, p->props.name,
		       p->props.speed, p->window, p->warmup, p->iters,
		       p->iters_given ? "" : " (fewer for large sizes)");
		fflush(stdout);
	}

	/* latency */
	if (p->lat_iters > 0) {
		int32_t bad, peer_bad = 0;
		int warm = p->lat_iters / 10 + 1;
		if (p->rank == 1 && !(rtt = calloc((size_t)p->lat_iters, sizeof(double))))
			die("out of memory");
		ctl_or_die(p, ctl_barrier(&p->ctl));
		bad = pingpong(p, warm, NULL);
		ctl_or_die(p, ctl_barrier(&p->ctl));
		bad += pingpong(p, p->lat_iters, rtt);
		ctl_or_die(p, ctl_send(&p->ctl, &bad, sizeof(bad)));
		ctl_or_die(p, ctl_recv(&p->ctl, &peer_bad, sizeof(peer_bad)));
		if (p->rank == 1) {
			qsort(rtt, (size_t)p->lat_iters, sizeof(double), cmp_double);
			if (bad + peer_bad)
				printf("# latency: %d of %d ping-pong messages CORRUPTED: no result\n",
				       bad + peer_bad, p->lat_iters);
			else
				printf("# latency (8-byte ping-pong, half round trip): median %.2f us, "
				       "min %.2f us, max %.2f us over %d round trips\n",
				       rtt[p->lat_iters / 2] / 2, rtt[0] / 2, rtt[p->lat_iters - 1] / 2,
				       p->lat_iters);
			failures += bad + peer_bad;
		}
	}

	if (p->rank == 1) {
		printf("#\n#%12s %8s %8s %12s %12s\n", "size", "iters", "window", "time(us)",
		       "algbw(GB/s)");
		fflush(stdout);
	}
	for (size_t size = p->min_bytes;;) {
		struct result res;
		run_size(p, size, &res);
		if (p->rank == 1) {
			int iters = iters_for(p, size);
			double per = res.us_total / iters;
			if (res.bad) {
				printf(" %12zu %8d %8d %12s %12s  (%d bad messages)\n", size, iters,
				       slots_for(p, size), "CORRUPT", "-", res.bad);
				failures++;
			} else {
				printf(" %12zu %8d %8d %12.2f %12.3f\n", size, iters, slots_for(p, size),
				       per, (double)size / per / 1e3);
			}
			fflush(stdout);
		}
		if (size >= p->max_bytes)
			break;
		size = size ? size * 2 : 1;
		if (size > p->max_bytes) /* end exactly on --max-bytes */
			size = p->max_bytes;
	}
	free(rtt);
	ctl_or_die(p, ctl_barrier(&p->ctl));
	pl_dereg_mr(&p->net, p->rank == 1 ? p->scomm : p->rcomm, p->data_mh);
	pl_dereg_mr(&p->net, p->scomm, p->small_s_mh);
	pl_dereg_mr(&p->net, p->rcomm, p->small_r_mh);
	ctl_or_die(p, ctl_barrier(&p->ctl));
	pl_close_send(&p->net, p->scomm);
	pl_close_recv(&p->net, p->rcomm);
	pl_finalize(&p->net);
	munmap(p->data, p->data_len);
	if (failures)
		die("rank %d: %d sizes had corrupted or mis-sized transfers", p->rank, failures);
}

static char tmp_dir[64], tmp_sock[128];

/* The forking rank removes the control socket's directory on any exit. */
static void remove_tmp(void)
{
	if (tmp_sock[0])
		unlink(tmp_sock);
	if (tmp_dir[0])
		rmdir(tmp_dir);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: fabnet-perf [--plugin PATH] [--abi N] [--dev D] [--min-bytes N]\n"
		"                   [--max-bytes N] [--iters N] [--warmup N] [--window N]\n"
		"                   [--lat-iters N] [--rank R --ctl SOCKPATH]\n"
		"  sizes take K, M, G suffixes; defaults: --plugin ./.libs/libnccl-net-fabnet.so\n"
		"  --min-bytes 8 --max-bytes 64M --iters 100 (fewer for large sizes unless given)\n"
		"  --warmup 5 --window 8 --lat-iters 1000\n");
}

int main(int argc, char **argv)
{
	struct perf p;
	const char *plugin = "./.libs/libnccl-net-fabnet.so", *ctl_path = NULL;
	int abi = 0, rank = -1;
	char dir[] = "/tmp/fabnet-perf.XXXXXX", path[128];
	pid_t child = -1;
	int status = 0;

	memset(&p, 0, sizeof(p));
	p.min_bytes = 8;
	p.max_bytes = 64ull << 20;
	p.iters = 100;
	p.warmup = 5;
	p.window = 8;
	p.lat_iters = 1000;
	p.seed = 0x5eedfab1ull;
	for (int i = 1; i < argc; i += 2) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		int takes = 1;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		}
		if (!v) {
			usage(stderr);
			return 2;
		}
		if (!strcmp(a, "--plugin"))
			plugin = v;
		else if (!strcmp(a, "--abi"))
			abi = atoi(v);
		else if (!strcmp(a, "--dev"))
			p.dev = atoi(v);
		else if (!strcmp(a, "--min-bytes") && !pl_parse_size(v, &p.min_bytes))
			;
		else if (!strcmp(a, "--max-bytes") && !pl_parse_size(v, &p.max_bytes))
			;
		else if (!strcmp(a, "--iters")) {
			p.iters = atoi(v);
			p.iters_given = 1;
		} else if (!strcmp(a, "--warmup"))
			p.warmup = atoi(v);
		else if (!strcmp(a, "--window"))
			p.window = atoi(v);
		else if (!strcmp(a, "--lat-iters"))
			p.lat_iters = atoi(v);
		else if (!strcmp(a, "--rank"))
			rank = atoi(v);
		else if (!strcmp(a, "--ctl"))
			ctl_path = v;
		else
			takes = 0;
		if (!takes) {
			fprintf(stderr, "fabnet-perf: bad option or value: %s %s\n", a, v);
			usage(stderr);
			return 2;
		}
	}
	if (p.iters < 1 || p.warmup < 0 || p.window < 1 || p.window > 1024 || p.lat_iters < 0 ||
	    p.min_bytes > p.max_bytes || (abi && (abi < PL_MIN_VERSION || abi > PL_MAX_VERSION)) ||
	    (rank >= 0 && (rank > 1 || !ctl_path))) {
		fprintf(stderr, "fabnet-perf: inconsistent options\n");
		usage(stderr);
		return 2;
	}
	if (rank < 0) {
		if (!mkdtemp(dir))
			die("mkdtemp: %s", strerror(errno));
		snprintf(path, sizeof(path), "%s/ctl.sock", dir);
		ctl_path = path;
		snprintf(tmp_dir, sizeof(tmp_dir), "%s", dir);
		snprintf(tmp_sock, sizeof(tmp_sock), "%s", path);
		atexit(remove_tmp);
		fflush(stdout);
		child = fork();
		if (child < 0)
			die("fork: %s", strerror(errno));
		rank = child == 0 ? 0 : 1;
		if (child == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			tmp_dir[0] = tmp_sock[0] = '\0'; /* the parent cleans up */
		}
	}
	p.rank = rank;
	if (ctl_open(&p.ctl, ctl_path, rank, OP_TIMEOUT_MS))
		die("rank %d: control channel: %s", rank, p.ctl.err);
	if (pl_open(&p.net, plugin, abi))
		die("rank %d: %s", rank, p.net.err);
	if (rank == 1) {
		printf("# fabnet-perf: %s (%s \"%s\"), dev %d\n", plugin, p.net.symbol, p.net.name,
		       p.dev);
		fflush(stdout);
	}
	run(&p);
	if (rank == 1) {
		if (child > 0 && waitpid(child, &status, 0) == child &&
		    !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
			die("the receiver rank failed (status 0x%x)", status);
	}
	return 0;
}
