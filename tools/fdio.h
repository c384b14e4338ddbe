/*
 * fdio: whole-buffer I/O with a deadline on a non-blocking socket, shared by
 * the test tools' control channels (ctl.c: two ranks; group.c: N ranks).
 * Errors go into err as a sentence naming `who` ("the peer rank", "a rank").
 */
#ifndef FABNET_TOOLS_FDIO_H
#define FABNET_TOOLS_FDIO_H

#include <stddef.h>
#include <stdint.h>

int64_t fdio_now_ms(void);
/* Milliseconds until deadline, clamped to [0, INT32_MAX]. */
int fdio_left_ms(int64_t deadline);
/* Waits for events on fd; on timeout err says "timed out <what>". */
int fdio_wait(int fd, short events, int64_t deadline, const char *what, char *err, size_t errlen);
int fdio_send_all(int fd, const void *buf, size_t len, int64_t deadline, const char *who,
		  char *err, size_t errlen);
int fdio_recv_all(int fd, void *buf, size_t len, int64_t deadline, const char *who, char *err,
		  size_t errlen);

#endif
