/* libFuzzer target: the immediate data of RMA writes. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fabnet_imm imm;
	uint64_t v = 0;

	memcpy(&v, data, size < sizeof(v) ? size : sizeof(v));
	if (fabnet_imm_unpack(v, &imm))
		return 0;
	if (imm.comm_id == 0 || imm.idx >= FABNET_MAX_RECVS ||
	    fabnet_imm_pack(imm.comm_id, imm.seq, imm.idx, imm.gen) != (uint32_t)v)
		__builtin_trap();
	return 0;
}
