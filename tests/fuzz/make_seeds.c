/* Writes a starting corpus of valid encodings for each fuzz target. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/wire.h"

static void put(const char *dir, const char *name, const void *buf, size_t len)
{
	char path[512];
	FILE *f;

	mkdir(dir, 0755);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (f) {
		fwrite(buf, 1, len, f);
		fclose(f);
	}
}

int main(int argc, char **argv)
{
	const char *top = argc > 1 ? argv[1] : "corpus";
	char dir[256];
	uint8_t buf[1024];
	struct fabnet_handle h = {.listen_id = 7, .nonce = 0x1234, .addrlen = 16};
	struct fabnet_cts_entry e[8];
	struct fabnet_proc proc = {.host = 99, .pid = 1234};
	uint32_t imm;
	size_t n;

	mkdir(top, 0755);
	snprintf(dir, sizeof(dir), "%s/handle", top);
	for (int i = 0; i < 16; i++)
		h.addr[i] = (uint8_t)i;
	fabnet_handle_encode(&h, buf, FABNET_HANDLE_SIZE);
	put(dir, "tcp", buf, FABNET_HANDLE_SIZE);

	snprintf(dir, sizeof(dir), "%s/msg", top);
	n = fabnet_msg_encode_connect(buf, sizeof(buf), 1, 2, 3, &proc, h.addr, 16, 8192);
	fabnet_msg_set_credits(buf, 16);
	put(dir, "connect", buf, n);
	n = fabnet_msg_encode_ack(buf, sizeof(buf), 1, 2, 3, &proc);
	fabnet_msg_set_credits(buf, 16);
	fabnet_msg_set_token(buf, 0x1122334455667788ull);
	put(dir, "ack", buf, n);
	memset(e, 0, sizeof(e));
	for (int i = 0; i < 8; i++) {
		e[i].addr = 0x10000u * (unsigned)i;
		e[i].size = 4096;
		e[i].key = 5;
		e[i].tag = i;
		e[i].flags = FABNET_CTS_EAGER_OK;
		e[i].tagseq = 40u + (unsigned)i;
	}
	n = fabnet_msg_encode_cts(buf, sizeof(buf), 1, 2, 3, 8, e);
	fabnet_msg_set_credits(buf, 4);
	fabnet_msg_set_token(buf, 0x1122334455667788ull);
	put(dir, "cts8", buf, n);
	n = fabnet_msg_encode_eager(buf, sizeof(buf), 1, 2, 3, 0, 0, 5);
	memcpy(buf + n - 5, "hello", 5);
	fabnet_msg_set_token(buf, 0x1122334455667788ull);
	put(dir, "eager", buf, n);
	n = fabnet_msg_encode_fin(buf, sizeof(buf), 1, 2, 3, 1, 0, 2, 100000);
	fabnet_msg_set_token(buf, 0x1122334455667788ull);
	put(dir, "fin", buf, n);
	n = fabnet_msg_encode_close(buf, sizeof(buf), 1, 2, 9);
	fabnet_msg_set_token(buf, 0x1122334455667788ull);
	put(dir, "close", buf, n);
	n = fabnet_msg_encode_revoke(buf, sizeof(buf), 1, 2, 9, 0);
	fabnet_msg_set_token(buf, 0x1122334455667788ull);
	put(dir, "revoke", buf, n);
	n = fabnet_msg_encode_early(buf, sizeof(buf), 1, 2, 100, 3, 5);
	memcpy(buf + n - 5, "early", 5);
	fabnet_msg_set_token(buf, 0x1122334455667788ull);
	put(dir, "early", buf, n);
	n = fabnet_msg_encode_rts(buf, sizeof(buf), 1, 2, 100, 4);
	fabnet_msg_set_token(buf, 0x1122334455667788ull);
	put(dir, "rts", buf, n);
	n = fabnet_msg_encode_credit(buf, sizeof(buf), 1, 2, 8);
	fabnet_msg_set_token(buf, 0x1122334455667788ull);
	put(dir, "credit", buf, n);
	{
		static const int32_t tags[2] = {100, 101};
		static const uint32_t counts[2] = {7, 0};
		n = fabnet_msg_encode_close_tags(buf, sizeof(buf), 1, 2, 9, 2, tags, counts);
		fabnet_msg_set_token(buf, 0x1122334455667788ull);
		put(dir, "close_tags", buf, n);
	}
	n = fabnet_msg_encode_ping(buf, sizeof(buf), 1, 2, 0x99, h.addr, 16);
	fabnet_msg_set_token(buf, 0x1122334455667788ull);
	put(dir, "ping", buf, n);

	snprintf(dir, sizeof(dir), "%s/imm", top);
	imm = fabnet_imm_pack(300, 17, 3, 9);
	put(dir, "imm", &imm, sizeof(imm));
	return 0;
}
