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
	default:
		break;
	}
	return 0;
}
