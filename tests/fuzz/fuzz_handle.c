/* libFuzzer target: connection handles, as connect() receives them from NCCL. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t buf[FABNET_HANDLE_SIZE], again[FABNET_HANDLE_SIZE];
	struct fabnet_handle h;

	memset(buf, 0, sizeof(buf));
	memcpy(buf, data, size < sizeof(buf) ? size : sizeof(buf));
	if (fabnet_handle_decode(buf, size < sizeof(buf) ? size : sizeof(buf), &h))
		return 0;
	/* Whatever decodes must re-encode to a handle that decodes the same. */
	if (fabnet_handle_encode(&h, again, sizeof(again)) ||
	    fabnet_handle_decode(again, sizeof(again), &h))
		__builtin_trap();
	return 0;
}
