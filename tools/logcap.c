/* Capturing this process's stderr (where the plugin logs): see logcap.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "logcap.h"

int logcap_start(struct logcap *lc)
{
	char path[] = "/tmp/fabnet-ft-log.XXXXXX";

	lc->fd = mkstemp(path);
	if (lc->fd < 0)
		return -1;
	unlink(path);
	fflush(stderr);
	lc->saved = dup(2);
	dup2(lc->fd, 2);
	lc->mark = 0;
	return 0;
}

char *logcap_since_mark(struct logcap *lc)
{
	off_t end;
	char *buf;
	ssize_t n;

	fflush(stderr);
	end = lseek(lc->fd, 0, SEEK_END);
	if (end < lc->mark)
		end = lc->mark;
	buf = malloc((size_t)(end - lc->mark) + 1);
	if (!buf)
		return NULL;
	n = pread(lc->fd, buf, (size_t)(end - lc->mark), lc->mark);
	buf[n > 0 ? n : 0] = '\0';
	return buf;
}

void logcap_stop(struct logcap *lc)
{
	char buf[8192];
	off_t off = 0;
	ssize_t n;

	fflush(stderr);
	while ((n = pread(lc->fd, buf, sizeof(buf), off)) > 0) {
		if (write(lc->saved, buf, (size_t)n) < 0)
			break;
		off += n;
	}
	dup2(lc->saved, 2);
	close(lc->saved);
	close(lc->fd);
}

int log_has_line(const char *log, const char *const *words, char *line, size_t linelen)
{
	const char *s = log;

	while (s && *s) {
		const char *e = strchr(s, '\n');
		size_t len = e ? (size_t)(e - s) : strlen(s);
		char tmp[2048];
		int all = 1;
		snprintf(tmp, sizeof(tmp), "%.*s", (int)(len < sizeof(tmp) - 1 ? len : sizeof(tmp) - 1), s);
		for (int i = 0; words[i]; i++)
			if (!strstr(tmp, words[i]))
				all = 0;
		if (all) {
			snprintf(line, linelen, "%s", tmp);
			return 1;
		}
		s = e ? e + 1 : NULL;
	}
	return 0;
}
