/*
 * fabnet-hostile: what a confused or hostile peer can do to a receive.
 *
 * One process, linked with the plugin's core library: device 0 is connected
 * to itself (listen, then connect and accept in turn), a receive buffer full
 * of a canary is registered and an irecv posted, and then messages and
 * immediate data are forged with the wire encoders and injected exactly where
 * the transport delivers them (fabnet_proto_on_msg / fabnet_proto_on_imm on
 * the comm's device, under the device lock), as if the peer had sent them.
 *
 * After each case: no byte of the receive buffers changed, and the request is
 * either still pending (the forgery was dropped) or failed with an error; it
 * never completes successfully. Then the genuine sender completes the
 * receive (a pending one must then deliver exactly the genuine bytes) or
 * consumes the sequence (a failed one), so that every case starts from a
 * healthy pair of comms; at the end genuine transfers of every kind are
 * verified on the same comms.
 *
 * The cases live by what they attack: recv.c (a posted receive), conn.c (the
 * send side and the connection), teardown.c (comms failed, closed and
 * deregistered under requests); harness.c holds what they share (hostile.h).
 *
 *   fabnet-hostile [--verbose] [--seed S]
 * Environment: FABNET_PROVIDER etc. as for the plugin. Prints "PASS name" or
 * "FAIL name: reason" per case and "N passed, M failed"; exit status 1 if any
 * case failed.
 */
#include "hostile.h"

/* ---- genuine traffic at the end ----------------------------------------------------- */

static void final_case(const char *name, int n, const size_t *sizes)
{
	struct posted p;

	begin(name);
	forged = 0;
	canary_reset();
	if (post_recv(&p, n, sizes) == 0)
		genuine_complete(&p, 0);
	report(name);
}

static void final_many(const char *name, int count)
{
	begin(name);
	forged = 0;
	span = 2 * SLOT;
	for (int i = 0; i < count && !why[0]; i++) {
		struct posted p;
		size_t sz[2] = {(size_t)(i * 977) % 20000, (size_t)(i * 131) % 9000};
		int n = i % 3 == 0 ? 2 : 1;
		canary_reset();
		if (post_recv(&p, n, sz) == 0)
			genuine_complete(&p, 0);
		alarm(60);
	}
	report(name);
}

int main(int argc, char **argv)
{
	uint8_t handle[NCCL_NET_HANDLE_MAXSIZE];
	void *l = NULL, *s = NULL, *r = NULL;
	int64_t deadline;
	int ndev = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--verbose") || !strcmp(argv[i], "-v"))
			verbose = 1;
		else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
			seed = strtoull(argv[++i], NULL, 0);
		else {
			fprintf(stderr, "usage: fabnet-hostile [--verbose] [--seed S]\n");
			return 2;
		}
	}
	if (getenv("FABNET_HOSTILE_VERBOSE"))
		verbose = 1;
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGSEGV, on_crash);
	signal(SIGBUS, on_crash);
	signal(SIGABRT, on_crash);
	signal(SIGALRM, on_crash);
	signal(SIGPIPE, SIG_IGN);
	alarm(120);

	/* set-up: device 0 connected to itself */
	if (fabnet_api_init(logger) != ncclSuccess || fabnet_api_devices(&ndev) != ncclSuccess ||
	    ndev < 1) {
		printf("FAIL setup: init found no device (%s)\n", firstlog);
		printf("0 passed, 1 failed\n");
		return 1;
	}
	if (fabnet_api_listen(0, handle, &l) != ncclSuccess || !l) {
		printf("FAIL setup: listen failed (%s)\n", firstlog);
		printf("0 passed, 1 failed\n");
		return 1;
	}
	deadline = now_ms() + 30000;
	while (!s || !r) {
		if ((!s && fabnet_api_connect(0, handle, &s) != ncclSuccess) ||
		    (!r && fabnet_api_accept(l, &r) != ncclSuccess) || now_ms() > deadline) {
			printf("FAIL setup: connecting device 0 to itself failed (%s)\n", firstlog);
			printf("0 passed, 1 failed\n");
			return 1;
		}
	}
	lc = l;
	sc = s;
	rc = r;
	dev = rc->dev;
	rbuf = mmap(NULL, RBUF, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	sbuf = mmap(NULL, SBUF, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (rbuf == MAP_FAILED || sbuf == MAP_FAILED ||
	    fabnet_api_reg_mr(rc, rbuf, RBUF, NCCL_PTR_HOST, &rmh) != ncclSuccess ||
	    fabnet_api_reg_mr(sc, sbuf, SBUF, NCCL_PTR_HOST, &smh) != ncclSuccess) {
		printf("FAIL setup: buffers (%s)\n", firstlog);
		printf("0 passed, 1 failed\n");
		return 1;
	}
	printf("# fabnet-hostile: provider %s, device %s (eager up to %zu bytes): recv comm %u, "
	       "send comm %u, listener %u\n", dev->prov_name, dev->name, dev->eager_max, rc->id,
	       sc->id, lc->id);
	fflush(stdout);

	/* a genuine transfer first: the set-up works */
	{
		size_t one[1] = {5000};
		final_case("genuine transfer before any forgery", 1, one);
	}

	hostile_recv_cases();

	/* the send comm and the listener */
	hostile_conn_cases(handle);

	/* sends before their receives (sender-initiated eager) */
	hostile_early_cases();

	/* genuine traffic on the same comms */
	{
		static const size_t s0[1] = {0}, s1[1] = {1}, s4k[1] = {4096}, s64k[1] = {65539},
				    s1m[1] = {MiB};
		static const size_t g3[3] = {7000, 0, 300000};
		static const size_t g8[8] = {1, 2, 9000, 4, 70000, 6, 7, 8192};
		final_case("genuine transfer: 0 bytes", 1, s0);
		final_case("genuine transfer: 1 byte", 1, s1);
		final_case("genuine transfer: 4096 bytes", 1, s4k);
		final_case("genuine transfer: 65539 bytes", 1, s64k);
		final_case("genuine transfer: 1 MiB", 1, s1m);
		final_case("genuine transfer: group of 3", 3, g3);
		final_case("genuine transfer: group of 8", 8, g8);
		final_many("genuine transfers: 300 more (past the 32 slots and the 8-bit sequence "
			   "wrap)", 300);
	}
	hostile_teardown_cases(handle);

	cur_case = "teardown";
	fabnet_api_dereg_mr(rc, rmh);
	fabnet_api_dereg_mr(sc, smh);
	fabnet_api_close(sc, 2);
	fabnet_api_close(rc, 3);
	fabnet_api_close(lc, 1);
	fabnet_api_fini();
	alarm(0);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
