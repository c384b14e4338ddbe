/*
 * ctl.c: the unix-socket control channel between two test ranks. See ctl.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "fdio.h"

#define CTL_BARRIER_TOKEN 0xB7u

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static int fill_addr(struct ctl *c, struct sockaddr_un *sa, const char *path)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (!path || !*path || strlen(path) >= sizeof(sa->sun_path)) {
		snprintf(c->err, sizeof(c->err), "control socket path \"%s\" is empty or longer "
			 "than %zu bytes", path ? path : "", sizeof(sa->sun_path) - 1);
		return -1;
	}
	memcpy(sa->sun_path, path, strlen(path) + 1);
	return 0;
}

static int open_listener(struct ctl *c, const struct sockaddr_un *sa, int64_t deadline)
{
	int lfd, fd;
	struct stat st;

	/* A socket left behind by an earlier run: remove it, but nothing else. */
	if (lstat(sa->sun_path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(sa->sun_path);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0) {
		snprintf(c->err, sizeof(c->err), "socket: %s", strerror(errno));
		return -1;
	}
	if (bind(lfd, (const struct sockaddr *)sa, sizeof(*sa)) != 0 || listen(lfd, 4) != 0 ||
	    set_nonblock(lfd) != 0) {
		snprintf(c->err, sizeof(c->err), "bind/listen %s: %s", sa->sun_path,
			 strerror(errno));
		close(lfd);
		return -1;
	}
	for (;;) {
		struct pollfd p = {.fd = lfd, .events = POLLIN};
		int left = fdio_left_ms(deadline);
		int rc = poll(&p, 1, left);

		if (rc < 0 && errno == EINTR)
			continue;
		if (rc < 0) {
			snprintf(c->err, sizeof(c->err), "poll: %s", strerror(errno));
			break;
		}
		if (rc == 0) {
			snprintf(c->err, sizeof(c->err), "rank 1 did not connect to %s within %d ms",
				 sa->sun_path, c->timeout_ms);
			break;
		}
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
			    errno == ECONNABORTED)
				continue;
			snprintf(c->err, sizeof(c->err), "accept: %s", strerror(errno));
			break;
		}
		close(lfd);
		unlink(sa->sun_path);
		return fd;
	}
	close(lfd);
	unlink(sa->sun_path);
	return -1;
}

static int open_connector(struct ctl *c, const struct sockaddr_un *sa, int64_t deadline)
{
	int last = 0;

	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (fd < 0) {
			snprintf(c->err, sizeof(c->err), "socket: %s", strerror(errno));
			return -1;
		}
		if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0)
			return fd;
		last = errno;
		close(fd);
		if (last != ENOENT && last != ECONNREFUSED && last != EAGAIN && last != EINTR) {
			snprintf(c->err, sizeof(c->err), "connect %s: %s", sa->sun_path,
				 strerror(last));
			return -1;
		}
		if (fdio_left_ms(deadline) == 0) {
			snprintf(c->err, sizeof(c->err), "rank 0 not listening on %s within %d ms "
				 "(last error: %s)", sa->sun_path, c->timeout_ms, strerror(last));
			return -1;
		}
		usleep(20 * 1000);
	}
}

int ctl_open(struct ctl *c, const char *path, int rank, int timeout_ms)
{
	struct sockaddr_un sa;
	int64_t deadline;

	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->rank = rank;
	c->timeout_ms = timeout_ms > 0 ? timeout_ms : 60000;
	if (rank != 0 && rank != 1) {
		snprintf(c->err, sizeof(c->err), "rank must be 0 or 1, not %d", rank);
		return -1;
	}
	if (fill_addr(c, &sa, path))
		return -1;
	snprintf(c->path, sizeof(c->path), "%s", path);
	deadline = fdio_now_ms() + c->timeout_ms;
	c->fd = rank == 0 ? open_listener(c, &sa, deadline) : open_connector(c, &sa, deadline);
	if (c->fd < 0)
		return -1;
	if (set_nonblock(c->fd) != 0) {
		snprintf(c->err, sizeof(c->err), "fcntl: %s", strerror(errno));
		ctl_close(c);
		return -1;
	}
	return 0;
}

void ctl_close(struct ctl *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

int ctl_send_timeout(struct ctl *c, const void *buf, size_t len, int timeout_ms)
{
	int64_t deadline = fdio_now_ms() + (timeout_ms < 0 ? c->timeout_ms : timeout_ms);

	if (c->fd < 0) {
		snprintf(c->err, sizeof(c->err), "control channel closed");
		return -1;
	}
	return fdio_send_all(c->fd, buf, len, deadline, "the peer rank", c->err, sizeof(c->err));
}

int ctl_recv_timeout(struct ctl *c, void *buf, size_t len, int timeout_ms)
{
	int64_t deadline = fdio_now_ms() + (timeout_ms < 0 ? c->timeout_ms : timeout_ms);

	if (c->fd < 0) {
		snprintf(c->err, sizeof(c->err), "control channel closed");
		return -1;
	}
	return fdio_recv_all(c->fd, buf, len, deadline, "the peer rank", c->err, sizeof(c->err));
}

int ctl_send(struct ctl *c, const void *buf, size_t len)
{
	return ctl_send_timeout(c, buf, len, -1);
}

int ctl_recv(struct ctl *c, void *buf, size_t len)
{
	return ctl_recv_timeout(c, buf, len, -1);
}

int ctl_barrier(struct ctl *c)
{
	uint8_t out = CTL_BARRIER_TOKEN, in = 0;

	if (ctl_send(c, &out, 1) || ctl_recv(c, &in, 1))
		return -1;
	if (in != CTL_BARRIER_TOKEN) {
		snprintf(c->err, sizeof(c->err), "barrier: the peer sent 0x%02x, not a barrier "
			 "token (the ranks are out of step)", in);
		return -1;
	}
	return 0;
}

int ctl_readable(struct ctl *c)
{
	struct pollfd p = {.fd = c->fd, .events = POLLIN};
	int rc;

	if (c->fd < 0)
		return -1;
	do {
		rc = poll(&p, 1, 0);
	} while (rc < 0 && errno == EINTR);
	if (rc < 0)
		return -1;
	return rc > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR));
}
