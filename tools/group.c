/*
 * group.c: the N-rank control channel of fabnet-perf. See group.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "group.h"
#include "fdio.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define GRP_MAGIC 0x66706772u /* "rgpf": a stray connection is refused */

struct hello {
	uint32_t magic;
	int32_t rank, size;
};

static int is_unix(const char *addr)
{
	return strchr(addr, '/') != NULL;
}

/* Splits HOST:PORT (the last colon, so "[::1]:5000" and "::1:5000" work). */
static int split_hostport(struct grp *g, const char *addr, char *host, size_t hlen, char *port,
			  size_t plen)
{
	const char *c = strrchr(addr, ':');
	size_t n;

	if (!c || !c[1] || strlen(c + 1) >= plen) {
		snprintf(g->err, sizeof(g->err), "control address \"%s\" is neither a socket path "
			 "(with a '/') nor HOST:PORT", addr);
		return -1;
	}
	n = (size_t)(c - addr);
	if (n && addr[0] == '[' && addr[n - 1] == ']') {
		addr++;
		n -= 2;
	}
	if (n >= hlen)
		n = hlen - 1;
	memcpy(host, addr, n);
	host[n] = '\0';
	snprintf(port, plen, "%s", c + 1);
	return 0;
}

static int wait_fd(struct grp *g, int fd, short ev, int64_t deadline, const char *what)
{
	return fdio_wait(fd, ev, deadline, what, g->err, sizeof(g->err));
}

static int send_all(struct grp *g, int fd, const void *buf, size_t len, int64_t deadline)
{
	return fdio_send_all(fd, buf, len, deadline, "a rank", g->err, sizeof(g->err));
}

static int recv_all(struct grp *g, int fd, void *buf, size_t len, int64_t deadline)
{
	return fdio_recv_all(fd, buf, len, deadline, "a rank", g->err, sizeof(g->err));
}

static void tune(int fd, int tcp)
{
	int one = 1, fl = fcntl(fd, F_GETFL);

	if (fl >= 0)
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	if (tcp) /* barriers are one byte each way: do not let Nagle hold them */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int bind_listener(struct grp *g)
{
	int fd;

	if (is_unix(g->addr)) {
		struct sockaddr_un sa;
		struct stat st;

		memset(&sa, 0, sizeof(sa));
		sa.sun_family = AF_UNIX;
		if (strlen(g->addr) >= sizeof(sa.sun_path)) {
			snprintf(g->err, sizeof(g->err), "socket path %s is too long", g->addr);
			return -1;
		}
		strcpy(sa.sun_path, g->addr);
		/* A socket left by an earlier run: remove it, but nothing else. */
		if (lstat(g->addr, &st) == 0 && S_ISSOCK(st.st_mode))
			unlink(g->addr);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 128)) {
			snprintf(g->err, sizeof(g->err), "bind %s: %s", g->addr, strerror(errno));
			if (fd >= 0)
				close(fd);
			return -1;
		}
		return fd;
	} else {
		char host[200], port[32];
		struct addrinfo hints, *res = NULL, *ai;
		int one = 1, rc;

		if (split_hostport(g, g->addr, host, sizeof(host), port, sizeof(port)))
			return -1;
		/* Every interface: HOST is how the others reach rank 0, which may be a
		 * name that does not resolve to a local address the same way here. */
		memset(&hints, 0, sizeof(hints));
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_PASSIVE;
		rc = getaddrinfo(NULL, port, &hints, &res);
		if (rc) {
			snprintf(g->err, sizeof(g->err), "port %s: %s", port, gai_strerror(rc));
			return -1;
		}
		fd = -1;
		/* Prefer IPv6 (dual stack), then IPv4. */
		for (int pass = 0; pass < 2 && fd < 0; pass++) {
			for (ai = res; ai && fd < 0; ai = ai->ai_next) {
				if ((pass == 0) != (ai->ai_family == AF_INET6))
					continue;
				fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
				if (fd < 0)
					continue;
				setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
				if (bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, 128)) {
					close(fd);
					fd = -1;
				}
			}
		}
		if (fd < 0)
			snprintf(g->err, sizeof(g->err), "bind port %s: %s", port, strerror(errno));
		freeaddrinfo(res);
		return fd;
	}
}

static int accept_all(struct grp *g, int lfd, int64_t deadline)
{
	int got = 0;

	tune(lfd, 0);
	while (got < g->size - 1) {
		struct hello h;
		int fd;

		if (wait_fd(g, lfd, POLLIN, deadline, "waiting for the other ranks to connect"))
			return -1;
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
				continue;
			snprintf(g->err, sizeof(g->err), "accept: %s", strerror(errno));
			return -1;
		}
		tune(fd, !is_unix(g->addr));
		if (recv_all(g, fd, &h, sizeof(h), deadline) || h.magic != GRP_MAGIC ||
		    h.size != g->size || h.rank < 1 || h.rank >= g->size || g->fds[h.rank] >= 0) {
			/* A stranger or a misconfigured rank: refuse it, keep waiting. */
			fprintf(stderr, "fabnet-perf: control channel: refused a connection (rank %d "
				"of %d, magic 0x%x)\n", h.rank, h.size, h.magic);
			close(fd);
			continue;
		}
		g->fds[h.rank] = fd;
		got++;
	}
	return 0;
}

static int connect_root(struct grp *g, int64_t deadline)
{
	struct hello h = {GRP_MAGIC, g->rank, g->size};

	for (;;) {
		int fd = -1, ok = 0, last = 0, tcp = !is_unix(g->addr);

		if (!tcp) {
			struct sockaddr_un sa;

			memset(&sa, 0, sizeof(sa));
			sa.sun_family = AF_UNIX;
			snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", g->addr);
			fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
			ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
			last = errno;
		} else {
			char host[200], port[32];
			struct addrinfo hints, *res = NULL, *ai;

			if (split_hostport(g, g->addr, host, sizeof(host), port, sizeof(port)))
				return -1;
			memset(&hints, 0, sizeof(hints));
			hints.ai_socktype = SOCK_STREAM;
			if (getaddrinfo(host, port, &hints, &res) == 0) {
				for (ai = res; ai && !ok; ai = ai->ai_next) {
					fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
					if (fd < 0)
						continue;
					ok = connect(fd, ai->ai_addr, ai->ai_addrlen) == 0;
					last = errno;
					if (!ok) {
						close(fd);
						fd = -1;
					}
				}
				freeaddrinfo(res);
			} else {
				last = EHOSTUNREACH;
			}
		}
		if (ok) {
			tune(fd, tcp);
			g->fd = fd;
			return send_all(g, fd, &h, sizeof(h), deadline);
		}
		if (fd >= 0)
			close(fd);
		if (!fdio_left_ms(deadline)) {
			snprintf(g->err, sizeof(g->err), "rank 0 not listening on %s (last error: %s)",
				 g->addr, strerror(last));
			return -1;
		}
		usleep(20 * 1000);
	}
}

int grp_open(struct grp *g, const char *addr, int rank, int size, int timeout_ms)
{
	int64_t deadline;
	int rc = 0;

	memset(g, 0, sizeof(*g));
	g->fd = -1;
	g->rank = rank;
	g->size = size;
	g->timeout_ms = timeout_ms > 0 ? timeout_ms : 60000;
	if (size < 1 || rank < 0 || rank >= size || !addr || !*addr ||
	    strlen(addr) >= sizeof(g->addr)) {
		snprintf(g->err, sizeof(g->err), "bad rank %d, size %d or address", rank, size);
		return -1;
	}
	snprintf(g->addr, sizeof(g->addr), "%s", addr);
	deadline = fdio_now_ms() + g->timeout_ms;
	if (size == 1)
		return 0;
	if (rank == 0) {
		int lfd;

		g->fds = malloc(sizeof(int) * (size_t)size);
		if (!g->fds) {
			snprintf(g->err, sizeof(g->err), "out of memory");
			return -1;
		}
		for (int r = 0; r < size; r++)
			g->fds[r] = -1;
		lfd = bind_listener(g);
		if (lfd < 0)
			return -1;
		rc = accept_all(g, lfd, deadline);
		close(lfd);
		if (is_unix(g->addr))
			unlink(g->addr);
	} else {
		rc = connect_root(g, deadline);
	}
	if (rc)
		grp_close(g);
	return rc;
}

void grp_close(struct grp *g)
{
	if (g->fd >= 0)
		close(g->fd);
	g->fd = -1;
	if (g->fds) {
		for (int r = 1; r < g->size; r++)
			if (g->fds[r] >= 0)
				close(g->fds[r]);
		free(g->fds);
		g->fds = NULL;
	}
}

int grp_allgather(struct grp *g, const void *mine, void *all, size_t len)
{
	int64_t deadline = fdio_now_ms() + g->timeout_ms;
	uint8_t *a = all;

	memcpy(a + (size_t)g->rank * len, mine, len);
	if (g->size == 1)
		return 0;
	if (g->rank != 0)
		return send_all(g, g->fd, mine, len, deadline) ||
		       recv_all(g, g->fd, all, len * (size_t)g->size, deadline) ? -1 : 0;
	for (int r = 1; r < g->size; r++)
		if (recv_all(g, g->fds[r], a + (size_t)r * len, len, deadline))
			return -1;
	for (int r = 1; r < g->size; r++)
		if (send_all(g, g->fds[r], all, len * (size_t)g->size, deadline))
			return -1;
	return 0;
}

int grp_barrier(struct grp *g)
{
	uint8_t one = 0xB7, *all = malloc((size_t)g->size);
	int rc;

	if (!all) {
		snprintf(g->err, sizeof(g->err), "out of memory");
		return -1;
	}
	rc = grp_allgather(g, &one, all, 1);
	for (int r = 0; rc == 0 && r < g->size; r++)
		if (all[r] != 0xB7) {
			snprintf(g->err, sizeof(g->err), "barrier: rank %d is out of step", r);
			rc = -1;
		}
	free(all);
	return rc;
}
