/* softefa verbs-level tests: two processes (forked) talk through the soft
 * device with the verbs and efadv API only, exchanging addresses over a
 * socketpair; every check names what failed. */
#ifndef SEFA_TEST_HARNESS_H
#define SEFA_TEST_HARNESS_H

#include <infiniband/efadv.h>
#include <infiniband/verbs.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond, ...)                                                                   \
	do {                                                                               \
		if (!(cond)) {                                                             \
			fprintf(stderr, "  [%d] %s:%d: check failed: %s: ", (int)getpid(), \
				__FILE__, __LINE__, #cond);                                \
			fprintf(stderr, __VA_ARGS__);                                      \
			fprintf(stderr, "\n");                                             \
			exit(1);                                                           \
		}                                                                          \
	} while (0)

#define SKIP_RC 77

struct node {
	int oob;		/* socketpair end to the other process */
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	struct ibv_cq_ex *cq;
	struct ibv_qp *qp;
	struct ibv_qp_ex *qpx;
	struct ibv_ah *ah;	/* to the peer */
	struct efadv_device_attr efa;
	struct ibv_port_attr port;
	union ibv_gid gid, peer_gid;
	uint32_t qkey, peer_qpn, peer_qkey;
	uint16_t ahn;		/* our AH number for the peer */
};

struct node_opts {
	int device;		/* index in the device list */
	uint32_t max_send_wr, max_recv_wr;
	uint64_t send_ops;	/* 0: everything the device has */
	bool unsolicited;	/* EFADV_QP_FLAGS_UNSOLICITED_WRITE_RECV */
	bool no_ah;		/* do not create an AH for the peer */
	int rnr_retry;		/* -1: leave the SRD default */
};

struct comp {
	uint64_t wr_id;
	enum ibv_wc_status status;
	uint32_t vendor_err, byte_len, imm, src_qp, qp_num, slid;
	enum ibv_wc_opcode opcode;
	bool has_imm, unsolicited, has_sgid;
	union ibv_gid sgid;
};

bool caps_have(uint32_t cap);
void node_default_opts(struct node_opts *o);
void node_open(struct node *n, int oob, const struct node_opts *o);
void node_close(struct node *n);
void oob_send(struct node *n, const void *buf, size_t len);
void oob_recv(struct node *n, void *buf, size_t len);
void oob_sync(struct node *n);
/* waits up to timeout_ms for one completion; false on timeout */
bool poll_one(struct node *n, struct comp *c, int timeout_ms);
struct comp poll_must(struct node *n, int timeout_ms);
int post_send(struct node *n, uint64_t wr_id, struct ibv_mr *mr, void *buf, uint32_t len, bool imm,
	      uint32_t imm_data);
int post_recv(struct node *n, uint64_t wr_id, struct ibv_mr *mr, void *buf, uint32_t len);
struct ibv_mr *reg(struct node *n, void *buf, size_t len, int access);
void fill_pattern(void *buf, size_t len, uint32_t seed);
size_t check_pattern(const void *buf, size_t len, uint32_t seed);	/* index of first bad byte or len */
double now_ms(void);

typedef void (*side_fn)(struct node *n, int side);
/* Runs fn in two forked processes (sides 0 and 1) with the extra SOFTEFA_*
 * settings of env ("NAME=VALUE;1:NAME=VALUE": a "0:" or "1:" prefix limits a
 * setting to one side); returns 0, 1 (failed) or 77. */
int run_pair(const char *name, const char *env, side_fn fn);
/* Runs fn in one forked process. */
int run_single(const char *name, int (*fn)(void));

struct scenario {
	const char *name;
	int (*run)(void);
};
extern const struct scenario basic_scenarios[], error_scenarios[], rdma_scenarios[];

#endif
