/* fdio: see fdio.h. */
#include "fdio.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

int64_t fdio_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int fdio_left_ms(int64_t deadline)
{
	int64_t left = deadline - fdio_now_ms();

	return left < 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int)left;
}

int fdio_wait(int fd, short events, int64_t deadline, const char *what, char *err, size_t errlen)
{
	for (;;) {
		struct pollfd p = {.fd = fd, .events = events};
		int rc = poll(&p, 1, fdio_left_ms(deadline));

		if (rc < 0 && errno == EINTR)
			continue;
		if (rc < 0) {
			snprintf(err, errlen, "poll: %s", strerror(errno));
			return -1;
		}
		if (rc == 0) {
			snprintf(err, errlen, "timed out %s", what);
			return -1;
		}
		return 0;
	}
}

int fdio_send_all(int fd, const void *buf, size_t len, int64_t deadline, const char *who,
		  char *err, size_t errlen)
{
	const uint8_t *p = buf;
	char what[96];

	snprintf(what, sizeof(what), "sending to %s", who);
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n > 0) {
			p += n;
			len -= (size_t)n;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (fdio_wait(fd, POLLOUT, deadline, what, err, errlen))
				return -1;
		} else {
			snprintf(err, errlen, "send to %s: %s", who,
				 n < 0 ? strerror(errno) : "nothing written");
			return -1;
		}
	}
	return 0;
}

int fdio_recv_all(int fd, void *buf, size_t len, int64_t deadline, const char *who, char *err,
		  size_t errlen)
{
	uint8_t *p = buf;
	char what[96];

	snprintf(what, sizeof(what), "receiving from %s", who);
	while (len) {
		ssize_t n = recv(fd, p, len, 0);

		if (n > 0) {
			p += n;
			len -= (size_t)n;
		} else if (n == 0) {
			snprintf(err, errlen, "%s closed the control channel (exited or crashed)", who);
			return -1;
		} else if (errno == EINTR) {
			continue;
		} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
			if (fdio_wait(fd, POLLIN, deadline, what, err, errlen))
				return -1;
		} else {
			snprintf(err, errlen, "recv from %s: %s", who, strerror(errno));
			return -1;
		}
	}
	return 0;
}
