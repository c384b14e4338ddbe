/*
 * The proxy engine of fabnet-ft's nccl-proxy scenario (ft_proxy.c): channels
 * progressed as NCCL's proxy thread progresses its connections
 * (src/transport/net.cc). See scen_proxy.c for what it takes from NCCL.
 */
#ifndef FABNET_FT_PROXY_H
#define FABNET_FT_PROXY_H

#include "ft.h"

#define NCCL_STEPS 8
#define SHARED_STEPS 16   /* net.cc's NCCL_SHARED_STEPS */
#define PROXY_MAX_SUBS 32 /* NCCL_PROXY_MAX_SUBS: the sizes array of a receive's test() */
#define OPTIONAL_RECV ((void *)0x1) /* NCCL_NET_OPTIONAL_RECV_COMPLETION */
#define CALL_MAX_MS 5000  /* one plugin call of the proxy loop, a close */
#define MAXCH 4
#define SIZE_UNSET (-12345)

enum { P_SIMPLE, P_LL, P_LL128, NPROTO };
extern const char *const proto_name[NPROTO];
extern const size_t step_size[NPROTO]; /* buffSize / NCCL_STEPS per protocol */

/* One proxy op on a connection: nsteps of one protocol. */
struct pop {
	int proto;
	int nsteps;
	int slice; /* sliceSteps: steps per message */
	int chunk; /* chunkSteps: the op's base rounds up to it */
};

enum { CH_WAIT, CH_CONNECT, CH_RUN, CH_DONE, CH_CLOSED };

struct psub {
	int tag;
	int pace;                 /* sender: a turn every pace-th pass */
	struct fbuf buf[NPROTO];
	int posted, done;         /* sender: steps of the current op */
	int filled;               /* sender: the next slot holds its pattern */
	void *req[NCCL_STEPS];    /* sender: by slot */
	size_t sent[NCCL_STEPS];
	int nulls;                /* NULL isends */
};

struct chan {
	int id, recv;
	uint64_t salt;            /* the part: its patterns differ */
	void *comm, *lcomm;
	uint8_t handle[NCCL_NET_HANDLE_MAXSIZE];
	int state, keep_listen, abortable, gdr;
	int nsubs, depth;
	struct psub sub[MAX_GROUP];
	const struct pop *ops;
	int nops, op, base, step, total; /* total: messages' steps done, all ops */
	int posted, received, done;      /* receiver: group steps of the op */
	int canaried;                    /* receiver: the next slot holds its canary */
	void *rreq[NCCL_STEPS], *freq[NCCL_STEPS];
	int got[NCCL_STEPS][MAX_GROUP];
	int conn_nulls, post_nulls, flush_reqs, flush_nulls, errors_after_abort;
	int64_t max_call_ms;
};

struct proxy {
	struct chan *ch;
	int nch;
	int (*hook)(struct ft *ft, struct proxy *px); /* once a pass: triggers */
	unsigned pass;
};

/* Steps of an op (halved with FABNET_FT_QUICK). */
int op_steps(const struct pop *op);
/* Steps posted and not yet done at the channel's end. */
int in_flight(const struct chan *ch);
/* NCCL's teardown of a connection: deregMr, free, close; each close timed. */
int chan_teardown(struct ft *ft, struct chan *ch);
/* A channel of nsubs subs (tags 0..nsubs-1) running ops; salt: the part. */
void chan_setup(struct chan *ch, int id, int recv, int nsubs, const struct pop *ops, int nops,
		uint64_t salt);
struct chan *chans_new(struct ft *ft, int n);
/* On the ranks, rank 0 listens for every channel and hands rank 1 the
 * handles; then one proxy loop connects and runs them all (hook once a pass),
 * and every channel is torn down the NCCL way. */
int run_chans(struct ft *ft, struct chan *ch, int n, int (*hook)(struct ft *, struct proxy *));

#endif
