/*
 * Capturing this process's stderr, where the plugin logs (NCCL's logger in the
 * loader prints there), so that a test can assert what was logged: stderr goes
 * to an unlinked temporary file until logcap_stop, which copies everything
 * captured back to the real stderr so that nothing is lost from the output.
 */
#ifndef FABNET_TOOLS_LOGCAP_H
#define FABNET_TOOLS_LOGCAP_H

#include <stddef.h>
#include <sys/types.h>

struct logcap {
	int fd;       /* our stderr goes here */
	int saved;    /* the original stderr */
	off_t mark;   /* where the part of interest starts */
};

/* Redirects fd 2 into a temporary file. Returns 0, or -1 (nothing changed). */
int logcap_start(struct logcap *lc);
/* What was logged since lc->mark, NUL-terminated (malloc'ed), or NULL. */
char *logcap_since_mark(struct logcap *lc);
/* Copies everything captured to the original stderr and restores it. */
void logcap_stop(struct logcap *lc);
/* 1 and the line in `line` if a line of log contains every one of the words
 * (NULL-terminated); 0 if none does. */
int log_has_line(const char *log, const char *const *words, char *line, size_t linelen);

#endif
