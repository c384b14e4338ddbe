/*
 * A control channel among N ranks of a benchmark, for fabnet-perf: rank 0
 * listens, every other rank connects to it (a star), and all collective
 * operations go through rank 0. It carries only connection handles, results
 * and barriers, never data, so its speed does not matter.
 *
 * The address is either a filesystem unix socket path (contains a '/': all
 * ranks on one host, the default of a fork launch) or HOST:PORT for TCP (rank
 * 0 binds PORT on every interface, the others connect to HOST:PORT): that is
 * how ranks started by mpirun on several hosts find each other without MPI.
 * Every call has a deadline: a dead or stuck rank gives an error, never a hang.
 */
#ifndef FABNET_TOOLS_GROUP_H
#define FABNET_TOOLS_GROUP_H

#include <stddef.h>

struct grp {
	int rank, size;
	int timeout_ms;
	int fd;        /* ranks > 0: the stream to rank 0 */
	int *fds;      /* rank 0: fds[r] is the stream from rank r (fds[0] unused) */
	char addr[108];  /* sizeof(sun_path): a HOST:PORT fits too */
	char err[512]; /* why the last call failed */
};

/* Rank 0 binds addr and waits for size - 1 ranks; the others connect,
 * retrying until timeout_ms. Each rank says who it is; duplicates, an out of
 * range rank or a different size are refused. Returns 0, or -1 with g->err. */
int grp_open(struct grp *g, const char *addr, int rank, int size, int timeout_ms);
void grp_close(struct grp *g);

/* all receives size * len bytes: rank r's mine at offset r * len. */
int grp_allgather(struct grp *g, const void *mine, void *all, size_t len);
int grp_barrier(struct grp *g);

#endif
