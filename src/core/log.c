#include <config.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"

static ncclDebugLogger_t nccl_logger;
static int stderr_level = -1;

void fabnet_log_set_logger(ncclDebugLogger_t logger)
{
	nccl_logger = logger;
}

/* Without NCCL, WARN always reaches stderr; FABNET_DEBUG (or NCCL_DEBUG) = INFO
 * or TRACE shows more. Read here rather than in config.c: logging must work
 * before, and while, the configuration is parsed. */
static int stderr_threshold(void)
{
	if (stderr_level < 0) {
		const char *v = getenv("FABNET_DEBUG");
		if (!v)
			v = getenv("NCCL_DEBUG");
		int lvl = NCCL_LOG_WARN;
		if (v && !strcasecmp(v, "INFO"))
			lvl = NCCL_LOG_INFO;
		else if (v && !strcasecmp(v, "TRACE"))
			lvl = NCCL_LOG_TRACE;
		else if (v && !strcasecmp(v, "NONE"))
			lvl = NCCL_LOG_NONE;
		stderr_level = lvl;
	}
	return stderr_level;
}

void fabnet_log(ncclDebugLogLevel level, unsigned long subsys, const char *file, int line,
		const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	if (!nccl_logger && (int)level > stderr_threshold())
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (nccl_logger) {
		nccl_logger(level, subsys, file, line, "%s", msg);
		return;
	}
	fprintf(stderr, "fabnet %s: %s\n",
		level == NCCL_LOG_WARN ? "WARN" : level == NCCL_LOG_INFO ? "INFO" : "TRACE", msg);
}
