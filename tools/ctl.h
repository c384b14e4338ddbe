/*
 * A control channel between the two ranks of a test: one stream socket on a
 * filesystem unix socket path (not an abstract socket, not TCP), so it works
 * between processes in different network namespaces that share a filesystem.
 * Rank 0 binds and accepts, rank 1 connects, retrying until the timeout.
 * Every call has a deadline: a dead or stuck peer gives an error, never a hang.
 */
#ifndef FABNET_TOOLS_CTL_H
#define FABNET_TOOLS_CTL_H

#include <stddef.h>

struct ctl {
	int fd;          /* the connected stream, -1 when closed */
	int rank;        /* 0: the side that bound the path */
	int timeout_ms;  /* default deadline of each call */
	char path[108];  /* sizeof(sun_path) */
	char err[256];   /* why the last call failed */
};

/* Rank 0 removes a stale path, binds, listens and waits for rank 1 up to
 * timeout_ms; rank 1 connects, retrying while the path is missing or refuses,
 * up to timeout_ms. The path is unlinked once connected. Returns 0 or -1. */
int ctl_open(struct ctl *c, const char *path, int rank, int timeout_ms);
void ctl_close(struct ctl *c);

/* Send or receive exactly len bytes within c->timeout_ms. Returns 0, or -1
 * with c->err set (timeout, peer closed, I/O error). */
int ctl_send(struct ctl *c, const void *buf, size_t len);
int ctl_recv(struct ctl *c, void *buf, size_t len);
/* Same with an explicit deadline in milliseconds (-1: c->timeout_ms). */
int ctl_send_timeout(struct ctl *c, const void *buf, size_t len, int timeout_ms);
int ctl_recv_timeout(struct ctl *c, void *buf, size_t len, int timeout_ms);
/* Both ranks exchange a token: returns when the peer reached its barrier too. */
int ctl_barrier(struct ctl *c);
/* 1 if at least one byte can be read now (or the peer closed), 0 if not, -1 on error. */
int ctl_readable(struct ctl *c);

#endif
