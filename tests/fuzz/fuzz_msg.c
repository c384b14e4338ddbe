/* libFuzzer target: every message a peer can send into our bounce buffers. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fabnet_msg m;

	if (fabnet_msg_decode(data, size, &m))
		return 0;
	/* A decoded message must keep its pointers inside the bytes we got. */
	switch (m.type) {
	case FABNET_MSG_CONNECT:
		if (m.u.connect.addr < data || m.u.connect.addr + m.u.connect.addrlen > data + size ||
		    m.u.connect.addrlen == 0 || m.u.connect.addrlen > FABNET_ADDR_MAX)
			__builtin_trap();
		break;
	case FABNET_MSG_EAGER:
		if (m.u.eager.payload < data || m.u.eager.payload + m.u.eager.size > data + size ||
		    m.u.eager.idx >= FABNET_MAX_RECVS)
			__builtin_trap();
		break;
	case FABNET_MSG_CTS:
		if (m.u.cts.n == 0 || m.u.cts.n > FABNET_MAX_RECVS)
			__builtin_trap();
		break;
	case FABNET_MSG_FIN:
		if (m.u.fin.idx >= FABNET_MAX_RECVS)
			__builtin_trap();
		break;
	case FABNET_MSG_EARLY:
		if (m.u.early.payload < data || m.u.early.payload + m.u.early.size > data + size)
			__builtin_trap();
		break;
	case FABNET_MSG_CLOSE:
		if (m.u.close.ntags > FABNET_CLOSE_MAX_TAGS ||
		    m.u.close.tags + (size_t)m.u.close.ntags * FABNET_CLOSE_TAG_SIZE > data + size)
			__builtin_trap();
		for (uint32_t i = 0; i < m.u.close.ntags; i++) {
			int32_t tag;
			uint32_t count;
			fabnet_msg_close_tag(&m, i, &tag, &count);
		}
		break;
	default:
		break;
	}
	return 0;
}
