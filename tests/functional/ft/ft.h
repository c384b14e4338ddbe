/*
 * fabnet-ft's harness: what every scenario file shares. The pieces that other
 * test programs need too live in tools/ (pattern, control channel, plugin
 * loader, log capture, process helpers); this header holds the test context
 * and the calls that know about it.
 *
 *   ft_core.c    global state, crash and watchdog handlers, failures, parts
 *                of scenarios (sub) and the verdict lines
 *   ft_ctl.c     control messages between the two ranks, verdict exchange
 *   ft_rank.c    one rank's run, the forked pair of ranks, scenario selection
 *   ft_buf.c     registered buffers (malloc, mmap, memfd dma-buf)
 *   ft_xfer.c    operations, comm pairs, batches of verified messages
 *   ft_helper.c  helper processes (fabnet-ft --helper ROLE) and their channel
 *   ft_solo.c    plugin calls in one process without a control channel
 *   ft_proxy.c   nccl-proxy's engine: channels run as NCCL's proxy thread (ft_proxy.h)
 *   scen_*.c     the scenarios; main.c has their table and the options
 */
#ifndef FABNET_FT_H
#define FABNET_FT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../../../tools/ctl.h"
#include "../../../tools/pattern.h"
#include "../../../tools/plugin_loader.h"

#define MiB (1024u * 1024u)
#define CANARY_PAD 4096
#define MAX_GROUP 8
#define MAX_PAIRS 64
#define REASON_MAX 900
#define FT_MAX_SCENARIOS 32 /* the ranks compare their selection as a 32-bit mask */

/* ---- global state (also read by the signal handlers) ------------------------ */

struct shared_tally {
	volatile int passed;
	volatile int failed;
	volatile int crashed; /* a rank died inside a scenario and counted it */
	volatile int reported; /* scenario verdicts printed (crashes included) */
	volatile int setup_failed;
};

extern struct shared_tally *g_tally; /* shared by the forked ranks */
extern int g_forked;                 /* ranks are children of one fabnet-ft */
extern volatile int g_rank;
extern const char *volatile g_scen;  /* the scenario, for crash reports */
extern const char *volatile g_step;  /* the plugin call in progress */
extern const char *volatile g_phase; /* the part of the scenario */
extern int g_verbose;
extern unsigned g_watchdog_s;

/* ---- the test context ------------------------------------------------------- */

struct qmsg; /* a control message received ahead (ft_ctl.c) */

struct ft {
	struct pl_net base;   /* the table chosen by --abi / newest */
	struct pl_net *net;   /* the table in use (abi swaps it) */
	struct pl_props props;
	int rank;
	int dev;
	struct ctl ctl;
	const char *plugin;
	int abi;
	uint64_t seed;
	int op_timeout_ms;

	/* the scenario in progress */
	uint16_t scen;
	const char *scen_name;
	char why[REASON_MAX];  /* our failure */
	const char *phase;     /* part of the scenario, prefixed to failures */
	int subs;              /* parts run with sub() in this scenario */
	char subfail[2 * REASON_MAX]; /* their failures */
	struct qmsg *q;        /* DATA messages received ahead */
	int peer_done, peer_ok;
	char peer_why[REASON_MAX];
	int peer_gone;
	char gone_why[300];
	int64_t last_peer_poll;

	/* fbuf_alloc registers through regMrDmaBuf with a memfd when set */
	int dmabuf;
	size_t dmabuf_off;   /* page-aligned offset of the buffer in its memfd */
};

struct opts {
	const char *plugin;
	int abi;
	int dev;
	const char *scenario;
	int rank;
	const char *ctl_path;
	uint64_t seed;
	const char *helper;  /* --helper ROLE: a helper process (see helper_spawn) */
	const char *part;
	int helper_fd;
};

struct scenario {
	const char *name;
	int (*fn)(struct ft *);
	int in_all;   /* run by --scenario all */
};

/* The table of scenarios, in the order they run (main.c). */
extern const struct scenario ft_scenarios[];
extern const int ft_nscenarios;

/* ---- ft_core.c: failures, watchdog, parts, verdicts -------------------------- */

/* chain: 1 to remember the handlers in place now (after the plugin loaded
 * libfabric) and call them after ours. */
void install_handlers(int chain);
/* Re-arms the watchdog: a plugin call that does not return in time is a hang. */
void wd_kick(void);
/* A progress note on stderr with --verbose. */
void vnote(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Records the first failure of the unit in ft->why; returns -1. */
int fail(struct ft *ft, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define CALL(ft, expr, what)                                                            \
	do {                                                                            \
		ncclResult_t r_ = (expr);                                               \
		if (r_ != ncclSuccess)                                                  \
			return fail((ft), "%s returned %d (%s)", (what), (int)r_,       \
				    pl_result_str(r_));                                 \
	} while (0)

/* Runs one part of a scenario as its own unit: both ranks exchange verdicts
 * at its end, so a failed part is reported and the next part still runs.
 * Failures accumulate in ft->subfail. Returns 1 if both ranks passed. */
int sub(struct ft *ft, const char *name, int (*fn)(struct ft *, const void *), const void *arg);
/* Rank 0 prints the verdict line of a scenario ("PASS name", "FAIL name: ..."). */
void report(int rank, const char *name, int ok, const char *why0, const char *why1,
	    const char *subfail);

/* ---- ft_ctl.c: the control channel between the ranks ------------------------ */

/* Starts a unit of work whose verdicts the ranks exchange. */
void begin_unit(struct ft *ft);
/* Reads one message if one arrives within wait_ms. 1: got one, 0: none, -1: gone. */
int ctl_pump(struct ft *ft, int wait_ms);
/* Non-blocking: has the peer given up on this scenario (or died)? */
int peer_failed(struct ft *ft);
int ft_send(struct ft *ft, const void *buf, uint32_t len);
int ft_recv(struct ft *ft, void *buf, uint32_t len);
int ft_sync(struct ft *ft);
/* Sends our verdict, waits for the peer's. Returns 1 if both passed. */
int ft_finish(struct ft *ft, int ok);

/* ---- ft_rank.c: running the ranks ------------------------------------------- */

/* Marks the scenarios named in spec ("all" or a comma-separated list). */
/* FI_VERSION(major, minor) of the libfabric the plugin runs on, or 0. */
uint32_t ft_libfabric_version(void);
int select_scenarios(const char *spec, int *sel);
/* Runs one rank. Returns its exit status. */
int run_rank(const struct opts *o);
/* Forks both ranks and waits for them. */
int run_forked(struct opts *o);

/* ---- ft_buf.c: registered buffers ------------------------------------------- */

struct fbuf {
	uint8_t *p;
	size_t cap;
	void *mh;
	void *comm;
	int mapped;     /* 1: anonymous mmap; 2: memfd mapping at map */
	uint8_t *map;   /* mapped == 2: the whole memfd */
	size_t maplen;
};

/* A registered buffer of cap bytes (through regMrDmaBuf when ft->dmabuf). */
int fbuf_alloc(struct ft *ft, void *comm, size_t cap, struct fbuf *b);
/* Deregisters (unless dereg is 0) and frees. Returns -1 if deregMr failed. */
int fbuf_free(struct ft *ft, struct fbuf *b, int dereg);

/* ---- ft_xfer.c: operations, pairs, transfers -------------------------------- */

enum { OP_SEND = 1, OP_RECV = 2 };

struct xop {
	int kind;
	void *comm;
	int n;
	void *data[MAX_GROUP];
	size_t size[MAX_GROUP]; /* send: bytes to send; recv: buffer sizes posted */
	int tag[MAX_GROUP];
	void *mh[MAX_GROUP];
	void *req;
	int posted, done;
	int got[MAX_GROUP];     /* sizes reported by test() */
	int prev;               /* previous op on the same comm, or -1 */
	int label;              /* for messages */
};

int op_post(struct ft *ft, struct xop *op);
int op_test(struct ft *ft, struct xop *op);
/* Posts ops in list order per comm and tests them all to completion. */
int run_ops(struct ft *ft, struct xop *ops, int nops);

struct pair {
	void *lcomm;   /* rank 0: listen comm */
	void *comm;    /* rank 0: recv comm; rank 1: send comm */
	uint8_t handle[NCCL_NET_HANDLE_MAXSIZE];
};

/* Connects/accepts until every comm is non-NULL, interleaved, as NCCL does. */
int connect_all(struct ft *ft, struct pair *p, int n, int close_listen);
/* n listens on rank 0, handles to rank 1, connect/accept. */
int pairs_open(struct ft *ft, struct pair *p, int n, int close_listen);
/* closeRecv on rank 0, closeSend on rank 1. */
int close_comm(struct ft *ft, void *comm);
int pairs_close(struct ft *ft, struct pair *p, int n);

/* One message, described the same way on both ranks. */
struct msg {
	int comm;          /* index into the pairs */
	size_t size;       /* bytes sent */
	size_t cap;        /* receive buffer size posted (>= size) */
	int tag;
	uint64_t iter;     /* pattern iteration */
};

/* Checks one received buffer: reported size, data, canary. */
int check_recv(struct ft *ft, const char *what, const struct fbuf *buf, size_t sent,
	       uint64_t iter, int reported);
/* Transfers messages received in groups (group_start) and sent in send_order. */
int transfer(struct ft *ft, struct pair *pairs, const struct msg *m, int nmsg,
	     const int *group_start, int ngroups, const int *send_order, const char *what);
/* One message per group (n = 1), sent in order. */
int transfer_simple(struct ft *ft, struct pair *pairs, const struct msg *m, int nmsg,
		    const char *what);
/* v = a seeded permutation of 0..n-1. */
void shuffle(int *v, int n, uint64_t seed);

/* ---- ft_helper.c: helper processes ------------------------------------------ */

enum { HM_NOTE = 1, HM_RESULT, HM_TOKEN, HM_HANDLE };

struct helper {
	pid_t pid;
	struct ctl ch;
};

/* A role that `fabnet-ft --helper ROLE --part PART` plays (table in main.c).
 * verdict: the role sends its verdict to the parent (a victim does not). */
struct helper_role {
	const char *name;
	int (*fn)(struct ft *ft, struct ctl *up, const char *part);
	int verdict;
};

int hput(struct ctl *c, uint32_t kind, const void *p, uint32_t len);
int hnote(struct ctl *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Receives one message of at most cap bytes (a NUL is added after it). */
int hget(struct ctl *c, uint32_t *kind, void *p, uint32_t cap, uint32_t *len, int timeout_ms);
/* Waits for the token `want`, calling poll(arg) meanwhile (non-zero stops). */
int hwait_token(struct ft *ft, struct ctl *c, const char *want, int timeout_ms,
		int (*poll)(struct ft *, void *), void *arg);

#define HS_NEWPIDNS 1 /* in a new pid namespace, as if on another node */

/* Starts `fabnet-ft --helper role --part part`; 0, -1 (failed) or 1 (no pid
 * namespace allowed here). */
int helper_spawn(struct ft *ft, const char *role, const char *part,
		 const char *const *env_extra, int err_fd, int flags, struct helper *h);
/* Waits up to timeout_ms for the helper to exit: 0 and its status, or -1. */
int helper_reap(struct helper *h, int timeout_ms, int *status);
void helper_kill(struct helper *h);
/* Runs a helper to its verdict: notes it sends are printed by rank 0. */
int helper_run(struct ft *ft, const char *role, const char *part, const char *const *env_extra,
	       int timeout_ms);
/* Entry point of --helper: a fresh process, o->helper_fd its channel to the parent. */
int helper_main(const struct opts *o, const struct helper_role *roles, int nroles);

/* ---- ft_solo.c: one process, no control channel ----------------------------- */

/* dlopen, init, devices, getProperties of ft->plugin. */
int h_init(struct ft *ft);
/* A buffer of its own pages, registered. */
int h_buf(struct ft *ft, void *comm, size_t cap, struct fbuf *b);
/* Posts until the plugin hands out a request (NULL means "retry"). */
int h_irecv(struct ft *ft, void *comm, int n, void **data, const size_t *sizes, const int *tags,
	    void **mh, void **req, int timeout_ms);
/* Tests until done; the result test() gave in *res, or -1 on a hang. */
int h_wait(struct ft *ft, void *req, int *sizes, int timeout_ms, ncclResult_t *res);
/* One process, connected to itself: listen, then connect and accept in turn. */
int h_loopback(struct ft *ft, void **lcomm, void **scomm, void **rcomm, uint8_t *handle);
/* Sends n buffers to a group receive of n in the same process; verifies. */
int h_transfer(struct ft *ft, void *scomm, void *rcomm, int n, const size_t *sz, uint64_t iter0,
	       struct fbuf *rb, int *got);

/* ---- the scenarios (scen_*.c) and the helper roles they use ------------------ */

int scen_sizes(struct ft *ft);
int scen_larger_recv(struct ft *ft);
int scen_outstanding(struct ft *ft);
int scen_grouped(struct ft *ft);
int scen_many_comms(struct ft *ft);
int scen_reuse(struct ft *ft);
int scen_close(struct ft *ft);
int scen_garbage_handle(struct ft *ft);
int scen_abi(struct ft *ft);
int scen_dmabuf(struct ft *ft);
int scen_flush(struct ft *ft);
int scen_peer_death(struct ft *ft);
int scen_threads(struct ft *ft);
int scen_soak(struct ft *ft);
int scen_nccl(struct ft *ft);
int scen_proxy(struct ft *ft);

int helper_flush(struct ft *ft, struct ctl *up, const char *part);
int helper_survivor(struct ft *ft, struct ctl *up, const char *part);
int helper_victim(struct ft *ft, struct ctl *ch, const char *part);
int helper_proxy_flush(struct ft *ft, struct ctl *up, const char *part);

#endif
