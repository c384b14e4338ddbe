/* Logging through NCCL's logger, or stderr when the plugin runs without NCCL. */
#ifndef FABNET_CORE_LOG_H
#define FABNET_CORE_LOG_H

#include "nccl_net_abi.h"

/* Installs NCCL's logger (NULL: stderr, filtered by FABNET_DEBUG / NCCL_DEBUG). */
void fabnet_log_set_logger(ncclDebugLogger_t logger);
void fabnet_log(ncclDebugLogLevel level, unsigned long subsys, const char *file, int line,
		const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#define FN_WARN(...) fabnet_log(NCCL_LOG_WARN, NCCL_NET, __FILE__, __LINE__, __VA_ARGS__)
#define FN_INFO(sub, ...) fabnet_log(NCCL_LOG_INFO, (sub), __FILE__, __LINE__, __VA_ARGS__)
#define FN_TRACE(...) fabnet_log(NCCL_LOG_TRACE, NCCL_NET, __FILE__, __LINE__, __VA_ARGS__)

/* A libfabric call failed: logs the call, fi_strerror's text and a hint. */
#define FN_FI_WARN(call, rc, hint)                                                    \
	FN_WARN("fabnet: %s failed: %s (%d). %s", (call), fi_strerror((int)-(rc)), (int)(rc), \
		(hint))

#endif
