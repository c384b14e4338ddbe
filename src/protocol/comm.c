/*
 * Comms: ids, lifetime, posting on a comm's behalf, control messages,
 * failure and the peer's liveness.
 *
 * A comm is freed only once the provider has returned every operation it
 * owned (ops_inflight): until then a closed comm waits on the zombie list.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>

#include <rdma/fi_domain.h>
#include <rdma/fi_errno.h>

#include "core/config.h"
#include "core/log.h"
#include "protocol/internal.h"

/* This process, as peers see it: pid, and a host id that changes with the
 * boot and the pid namespace, so equal ids mean kill(pid, 0) is meaningful. */
const struct fabnet_proc *fabnet_self_proc(void)
{
	static struct fabnet_proc me;
	char buf[256] = "";
	uint64_t h = 1469598103934665603ull;
	ssize_t n;
	FILE *f;

	if (me.pid == (uint32_t)getpid())
		return &me;
	f = fopen("/proc/sys/kernel/random/boot_id", "r");
	if (f) {
		if (!fgets(buf, sizeof(buf) / 2, f))
			buf[0] = '\0';
		fclose(f);
	}
	n = readlink("/proc/self/ns/pid", buf + strlen(buf), sizeof(buf) / 2 - 1);
	if (n <= 0 || !buf[0]) {
		me.host = 0; /* unknown: never compare */
	} else {
		for (const char *s = buf; *s; s++)
			h = (h ^ (uint8_t)*s) * 1099511628211ull;
		me.host = h ? h : 1;
	}
	me.pid = (uint32_t)getpid();
	return &me;
}

/* A process of our pid namespace: 1 alive (*start: its start time, clock
 * ticks after boot, field 22 of /proc/PID/stat, which tells it from a later
 * process under the same pid), 0 gone or a zombie nobody reaped yet (our own
 * child, in tests), -1 cannot tell (/proc hidden). */
static int proc_state(uint32_t pid, uint64_t *start)
{
	char path[64], stat[512];
	const char *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%u/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kill((pid_t)pid, 0) == -1 && errno == ESRCH ? 0 : -1;
	n = read(fd, stat, sizeof(stat) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	stat[n] = '\0';
	p = strrchr(stat, ')'); /* the command name may hold anything */
	if (!p || p[1] != ' ' || !p[2])
		return -1;
	if (p[2] == 'Z' || p[2] == 'X')
		return 0;
	p += 2; /* field 3, the state */
	for (int field = 3; field < 22 && p; field++) {
		p = strchr(p, ' ');
		p = p ? p + 1 : NULL;
	}
	*start = p ? strtoull(p, NULL, 10) : 0;
	return 1;
}

static int same_pid_ns(const struct fabnet_proc *peer)
{
	const struct fabnet_proc *me = fabnet_self_proc();

	return peer->host && peer->host == me->host && peer->pid;
}

/* The peer's process as its CONNECT or ACK names it (which only a holder of
 * the listener's handle can send). Where it runs beside us its pid tells its
 * death sooner than keepalives can, on providers that cannot see it at all
 * (shm): but only a pid that names a live process now counts, with that
 * process's start time, so that a wrong or forged pid cannot fail a live
 * comm, and a pid issued again after the peer exited cannot keep it alive. */
void fabnet_comm_set_peer_proc(struct fabnet_comm *c, const struct fabnet_proc *proc)
{
	uint64_t start = 0;

	c->peer_proc = *proc;
	c->peer_start = 0;
	if (!same_pid_ns(proc))
		return;
	switch (proc_state(proc->pid, &start)) {
	case 1:
		c->peer_start = start;
		break;
	case 0:
		FN_INFO(NCCL_NET, "fabnet: %s comm %u on %s: the peer names process %u of this "
			"host, which is not alive: its keepalives alone tell whether it is",
			c->kind == FABNET_SEND ? "send" : "recv", c->id, c->dev->name, proc->pid);
		c->peer_proc.pid = 0;
		break;
	default:
		break;
	}
}

static int peer_exited(const struct fabnet_comm *c)
{
	uint64_t start = 0;
	int st;

	if (!same_pid_ns(&c->peer_proc))
		return 0;
	st = proc_state(c->peer_proc.pid, &start);
	return st == 0 || (st == 1 && c->peer_start && start != c->peer_start);
}

int fabnet_drop_log_ok(struct fabnet_dev *dev)
{
	struct fabnet_proto_dev *pd = PD(dev);
	uint64_t ms = fabnet_now_ms();

	if (ms - pd->drop_window_ms >= 1000) {
		if (pd->drop_suppressed)
			FN_WARN("fabnet: %u more dropped messages or writes from peers on %s were not "
				"logged (at most %d a second)", pd->drop_suppressed, dev->name,
				FABNET_DROP_LOG_BURST);
		pd->drop_window_ms = ms;
		pd->drop_logged = 0;
		pd->drop_suppressed = 0;
	}
	if (pd->drop_logged < FABNET_DROP_LOG_BURST) {
		pd->drop_logged++;
		return 1;
	}
	pd->drop_suppressed++;
	return 0;
}

uint64_t fabnet_now_ms(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
}

uint64_t fabnet_elapsed_ms(const struct timespec *since)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (uint64_t)(now.tv_sec - since->tv_sec) * 1000 +
	       (uint64_t)((now.tv_nsec - since->tv_nsec) / 1000000);
}

/* The device lock is the caller's (the API layer takes it around every call).
 * A wait on the peer gives it up between two looks, so the other comms of
 * the device, driven by other threads (NCCL's proxy threads of other
 * communicators), go on meanwhile; what the wait looks at is read afresh
 * after each pause. */
void fabnet_proto_wait_pause(struct fabnet_dev *dev)
{
	const struct timespec nap = {0, 20000};

	pthread_mutex_unlock(&dev->lock);
	nanosleep(&nap, NULL);
	pthread_mutex_lock(&dev->lock);
}

uint64_t fabnet_random64(void)
{
	uint64_t v = 0;

	if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != (ssize_t)sizeof(v)) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		v = (uint64_t)ts.tv_nsec * 6364136223846793005ull ^ (uint64_t)ts.tv_sec ^
		    (uint64_t)(uintptr_t)&v;
	}
	return v ? v : 1;
}

/* ---- ids ------------------------------------------------------------------
 * Freed ids wait in a FIFO and fresh ids are used first, so an id comes back
 * only after all others: a late message for a closed comm almost never finds
 * a new comm under its id, and when it does the peer id and sequence checks
 * reject it. */
static int alloc_id(struct fabnet_proto_dev *pd, struct fabnet_comm *c)
{
	uint32_t id;

	if (pd->next_fresh <= FABNET_MAX_COMMS) {
		id = pd->next_fresh++;
	} else if (pd->nfree) {
		id = pd->free_ids[pd->free_head];
		pd->free_head = (pd->free_head + 1) % (FABNET_MAX_COMMS + 1);
		pd->nfree--;
	} else {
		return -1;
	}
	if (id >= pd->cap) {
		uint32_t cap = pd->cap ? pd->cap : 256;
		while (cap <= id)
			cap *= 2;
		if (cap > FABNET_MAX_COMMS + 1)
			cap = FABNET_MAX_COMMS + 1;
		struct fabnet_comm **t = realloc(pd->table, cap * sizeof(*t));
		if (!t)
			return -1;
		memset(t + pd->cap, 0, (cap - pd->cap) * sizeof(*t));
		pd->table = t;
		pd->cap = cap;
	}
	pd->table[id] = c;
	c->id = (uint16_t)id;
	/* The token's low bits count the id's issues: what an earlier comm under
	 * this id was sent (writes whose immediate data has only 5 bits for it
	 * included) no longer matches. */
	c->token = (fabnet_random64() & ~(uint64_t)FABNET_IMM_GEN_MASK) |
		   (pd->id_gen[id]++ & FABNET_IMM_GEN_MASK);
	return 0;
}

static void free_id(struct fabnet_proto_dev *pd, uint16_t id)
{
	if (!id || id >= pd->cap)
		return;
	pd->table[id] = NULL;
	pd->free_ids[(pd->free_head + pd->nfree) % (FABNET_MAX_COMMS + 1)] = id;
	pd->nfree++;
}

struct fabnet_comm *fabnet_proto_lookup(struct fabnet_dev *dev, uint32_t id)
{
	struct fabnet_proto_dev *pd = PD(dev);

	return id && id < pd->cap ? pd->table[id] : NULL;
}

void fabnet_comm_free(struct fabnet_comm *c)
{
	struct fabnet_proto_dev *pd = PD(c->dev);

	free_id(pd, c->id);
	if (c->kind == FABNET_LISTEN)
		free(c->u.listen.pending);
	else
		fabnet_pool_fini(&c->reqs);
	if (c->kind == FABNET_SEND) {
		free(c->u.send.cts);
		free(c->u.send.cts_rails);
	}
	if (c->kind == FABNET_RECV && c->u.recv.store) {
		/* early.c's store: nothing of it is with the provider any more */
		for (unsigned i = 0; i < c->credits_max; i++) {
			if (c->u.recv.store[i].mr)
				fabnet_mr_dereg(c->u.recv.store[i].mr);
			free(c->u.recv.store[i].data);
		}
		free(c->u.recv.store);
	}
	if (c->kind != FABNET_LISTEN)
		fabnet_tags_free(&c->tags);
	c->magic = 0;
	free(c);
}

/* ---- posting ------------------------------------------------------------------ */
int fabnet_proto_post_on(struct fabnet_comm *comm, struct fabnet_dev *rail, struct fabnet_op *op)
{
	int rc = fabnet_dev_post(rail, op);

	if (rc == 0)
		comm->ops_inflight++;
	return rc;
}

int fabnet_proto_post(struct fabnet_comm *comm, struct fabnet_op *op)
{
	return fabnet_proto_post_on(comm, comm->dev, op);
}

static void reap_zombie(struct fabnet_comm *comm)
{
	struct fabnet_proto_dev *pd = PD(comm->dev);
	struct fabnet_comm **pp = &pd->zombies;

	while (*pp && *pp != comm)
		pp = &(*pp)->next;
	if (*pp)
		*pp = comm->next;
	fabnet_comm_free(comm);
}

void fabnet_proto_op_done(struct fabnet_comm *comm)
{
	if (comm->ops_inflight)
		comm->ops_inflight--;
	if (comm->closing && comm->ops_inflight == 0)
		reap_zombie(comm);
}

struct fabnet_comm *fabnet_comm_new(struct fabnet_dev *dev, uint8_t kind)
{
	struct fabnet_comm *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->magic = FABNET_COMM_MAGIC;
	c->kind = kind;
	c->dev = dev;
	if (alloc_id(PD(dev), c)) {
		FN_WARN("fabnet: no comm id left on %s (%d in use). Close comms you no longer "
			"need.", dev->name, FABNET_MAX_COMMS);
		free(c);
		return NULL;
	}
	/* Requests: a few now, up to NCCL's 32 as the comm needs them. comm_free
	 * undoes whatever part of the rest succeeded. */
	if (kind != FABNET_LISTEN &&
	    fabnet_pool_init_growing(&c->reqs, sizeof(struct fabnet_req),
				     FABNET_NREQS + FABNET_FLUSH_REQS, 4))
		goto fail;
	if (kind == FABNET_SEND) {
		c->u.send.cts = calloc(FABNET_NSLOTS, sizeof(*c->u.send.cts));
		if (!c->u.send.cts)
			goto fail;
	}
	c->nrails = 1;
	if (kind == FABNET_RECV && dev->nrails > 1)
		c->nrails = (uint8_t)dev->nrails;
	if (kind == FABNET_SEND && dev->nrails > 1) {
		/* Room for the receiver's keys on our other rails: more is never used. */
		c->u.send.cts_rails_max = (uint8_t)(dev->nrails - 1);
		c->u.send.cts_rails = calloc((size_t)FABNET_NSLOTS * FABNET_MAX_RECVS *
						     c->u.send.cts_rails_max,
					     sizeof(*c->u.send.cts_rails));
		if (!c->u.send.cts_rails)
			goto fail;
	}
	return c;
fail:
	fabnet_comm_free(c);
	return NULL;
}

void fabnet_proto_fail_comm(struct fabnet_comm *comm, const char *why)
{
	char raw[FABNET_ADDR_MAX], peer[128] = "unknown address";
	size_t rawlen = sizeof(raw), plen = sizeof(peer);

	if (comm->state == FABNET_FAILED)
		return;
	if (fi_av_lookup(comm->dev->av, comm->peer, raw, &rawlen) == 0 && rawlen <= sizeof(raw))
		fi_av_straddr(comm->dev->av, raw, peer, &plen);
	FN_WARN("fabnet: %s comm %u on %s, peer comm %u at %s, failed: %s. Requests on it "
		"return ncclRemoteError; check the peer process and its log.",
		comm->kind == FABNET_SEND ? "send" : "recv", comm->id, comm->dev->name,
		comm->peer_id, peer, why);
	comm->state = FABNET_FAILED;
	fabnet_proto_drop_stalled(comm); /* their writes will never be posted */
}

/* ---- control-message ops -------------------------------------------------- */
static void ctl_sent(struct fabnet_op *op, int err, const struct fi_cq_data_entry *e)
{
	struct fabnet_comm *c = op->owner;

	fabnet_dev_txbuf_put(op->dev, op->buf);
	op->buf = NULL;
	if (op == &c->ping_op)
		c->ping_pending = 0;
	if (err && !c->closing) {
		if (c->kind == FABNET_SEND && c->state == FABNET_CONNECTING) {
			FN_WARN("fabnet: connect on %s (comm %u): the CONNECT message could not be "
				"delivered: %s. Is the listening process alive and reachable with "
				"provider %s?", c->dev->name, c->id, fi_strerror(err),
				c->dev->prov_name);
			c->state = FABNET_FAILED;
		} else {
			fabnet_proto_fail_comm(c, fi_strerror(err));
		}
	}
	fabnet_proto_op_done(c);
}

/* best_effort: failure is expected (a CLOSE may find the peer gone already). */
int fabnet_ctl_send(struct fabnet_comm *c, struct fabnet_op *op, void *buf, size_t len,
		    int best_effort)
{
	memset(op, 0, sizeof(*op));
	op->kind = FABNET_OP_SEND;
	op->best_effort = (uint8_t)best_effort;
	op->cb = ctl_sent;
	op->owner = c;
	op->buf = buf;
	op->len = len;
	op->desc = fabnet_dev_txbuf_desc(c->dev);
	op->peer = c->peer;
	return fabnet_proto_post(c, op);
}

static void loose_sent(struct fabnet_op *op, int err, const struct fi_cq_data_entry *e)
{
	(void)err;
	(void)e;
	fabnet_dev_txbuf_put(op->dev, op->buf);
	fabnet_pool_put(&PD(op->dev)->wops, op);
}

int fabnet_ctl_send_loose(struct fabnet_dev *dev, fi_addr_t peer, void *buf, size_t len)
{
	struct fabnet_op *op = fabnet_pool_get(&PD(dev)->wops);

	if (!op)
		return -1;
	memset(op, 0, sizeof(*op));
	op->kind = FABNET_OP_SEND;
	op->best_effort = 1;
	op->cb = loose_sent;
	op->buf = buf;
	op->len = len;
	op->desc = fabnet_dev_txbuf_desc(dev);
	op->peer = peer;
	if (fabnet_dev_post(dev, op)) {
		fabnet_pool_put(&PD(dev)->wops, op);
		return -1;
	}
	return 0;
}

int fabnet_peer_silent(const struct fabnet_proto_dev *pd, fi_addr_t peer)
{
	for (unsigned i = 0; i < pd->nsilent; i++)
		if (pd->silent[i] == peer)
			return 1;
	return 0;
}

void fabnet_peer_mark_silent(struct fabnet_proto_dev *pd, fi_addr_t peer)
{
	if (fabnet_peer_silent(pd, peer))
		return;
	if (pd->nsilent == FABNET_SILENT_PEERS) { /* the oldest goes */
		memmove(&pd->silent[0], &pd->silent[1], (FABNET_SILENT_PEERS - 1) * sizeof(peer));
		pd->nsilent--;
	}
	pd->silent[pd->nsilent++] = peer;
}

void fabnet_peer_heard(struct fabnet_proto_dev *pd, fi_addr_t peer)
{
	for (unsigned i = 0; i < pd->nsilent; i++)
		if (pd->silent[i] == peer) {
			pd->silent[i] = pd->silent[--pd->nsilent];
			return;
		}
}

void fabnet_comm_send_revoke(struct fabnet_comm *c, int confirm, uint32_t seq)
{
	void *buf = fabnet_dev_txbuf_get(c->dev);
	size_t len;

	if (!buf) {
		FN_WARN("fabnet: no send buffer for a %s of seq %u on comm %u (%s): the peer waits "
			"for it until FABNET_PEER_TIMEOUT_MS", confirm ? "REVOKED" : "REVOKE", seq,
			c->id, c->dev->name);
		return;
	}
	len = fabnet_msg_encode_revoke(buf, c->dev->buf_size, c->peer_id, c->id, seq, confirm);
	if (len)
		fabnet_msg_set_token(buf, c->peer_token);
	if (!len || fabnet_ctl_send_loose(c->dev, c->peer, buf, len))
		fabnet_dev_txbuf_put(c->dev, buf);
}

struct fabnet_comm *fabnet_op_comm(const struct fabnet_op *op)
{
	if (op->cb == loose_sent)
		return NULL;
	/* Comms and requests both begin with their magic: control messages and
	 * early.c's loopback writes belong to a comm, the rest to a request. */
	if (op->cb == ctl_sent || *(const uint32_t *)op->owner == FABNET_COMM_MAGIC)
		return op->owner;
	return ((struct fabnet_req *)op->owner)->comm;
}

void fabnet_proto_check_peer_now(struct fabnet_comm *c)
{
	unsigned timeout = fabnet_config()->peer_timeout_ms;
	unsigned interval = timeout / 4;
	void *buf;
	size_t len;

	if (c->kind == FABNET_LISTEN || c->state != FABNET_READY || c->closing || c->peer_closed)
		return;
	if (c->checked.tv_sec && fabnet_elapsed_ms(&c->checked) < interval / 2)
		return; /* cheap: at most a few checks per interval */
	clock_gettime(CLOCK_MONOTONIC, &c->checked);
	if (peer_exited(c)) {
		char why[64];
		snprintf(why, sizeof(why), "the peer process %u has exited", c->peer_proc.pid);
		fabnet_proto_fail_comm(c, why);
		return;
	}
	/* A keepalive goes out at most `interval` after the last good one; waiting
	 * timeout - interval for it keeps detection within the timeout. Providers
	 * whose sends complete only when the peer's software answers (rxd) cannot
	 * tell a silent peer from a dead one this way: there only a failed
	 * keepalive or the process check counts. */
	if (c->ping_pending) {
		if (!c->dev->delivery_needs_peer && fabnet_elapsed_ms(&c->ping_sent) > timeout - interval) {
			char why[96];
			snprintf(why, sizeof(why), "the peer did not take a keepalive within %u ms "
				 "(FABNET_PEER_TIMEOUT_MS)", timeout);
			fabnet_proto_fail_comm(c, why);
		}
		return;
	}
	if (c->ping_sent.tv_sec && fabnet_elapsed_ms(&c->ping_sent) < interval)
		return;
	buf = fabnet_dev_txbuf_get(c->dev);
	if (!buf)
		return;
	len = fabnet_msg_encode_ping(buf, c->dev->buf_size, c->peer_id, c->id, c->token,
				     c->dev->addr, (uint8_t)c->dev->addrlen);
	if (len)
		fabnet_msg_set_token(buf, c->peer_token);
	clock_gettime(CLOCK_MONOTONIC, &c->ping_sent);
	if (!len || fabnet_ctl_send(c, &c->ping_op, buf, len, 1)) {
		fabnet_dev_txbuf_put(c->dev, buf);
		return;
	}
	c->ping_pending = 1;
}

static void msg_sent(struct fabnet_op *op, int err, const struct fi_cq_data_entry *e)
{
	struct fabnet_req *r = op->owner;
	struct fabnet_comm *comm = r->comm;

	fabnet_dev_txbuf_put(op->dev, op->buf);
	op->buf = NULL;
	r->msg_pending = 0;
	if (err) {
		if (!comm->closing) {
			char why[160];
			snprintf(why, sizeof(why), "the %s of seq %u was not delivered: %s",
				 r->kind == FABNET_REQ_RECV ? "CTS" : "send message", r->seq,
				 fi_strerror(err));
			fabnet_proto_fail_comm(comm, why);
		}
		r->failed = ncclRemoteError;
	}
	fabnet_req_release_abandoned(r);
	fabnet_proto_op_done(comm);
}

/* Sends buf (a bounce buffer of rail k) to the peer's rail k. */
int fabnet_proto_self(struct fabnet_dev *dev, int k)
{
	struct fabnet_proto_dev *pd = PD(dev);
	struct fabnet_dev *rd = fabnet_rail(dev, k);

	if (pd->self_ready & (1u << k))
		return 0;
	if (fabnet_dev_peer(rd, rd->addr, rd->addrlen, &pd->self[k]))
		return -1;
	pd->self_ready |= 1u << k;
	return 0;
}

int fabnet_post_msg(struct fabnet_req *r, int k, void *buf, size_t len)
{
	struct fabnet_comm *comm = r->comm;
	struct fabnet_dev *rd = fabnet_rail(comm->dev, k);
	struct fabnet_op *op = &r->msg_op;

	fabnet_msg_set_token(buf, comm->peer_token); /* CTS, EAGER, FIN: the peer's */
	memset(op, 0, sizeof(*op));
	op->kind = FABNET_OP_SEND;
	op->cb = msg_sent;
	op->owner = r;
	op->buf = buf;
	op->len = len;
	op->desc = fabnet_dev_txbuf_desc(rd);
	op->peer = k ? comm->rail_peer[k] : comm->peer;
	if (fabnet_proto_post_on(comm, rd, op))
		return -1;
	r->msg_pending = 1;
	return 0;
}

ncclResult_t fabnet_comm_usable(struct fabnet_comm *comm, const char *call)
{
	if (comm->state == FABNET_FAILED) {
		FN_WARN("fabnet: %s on failed comm %u (%s)", call, comm->id, comm->dev->name);
		return ncclRemoteError;
	}
	/* A closed peer: isend and irecv tell, from what its CLOSE says, which
	 * of their transfers can still complete. */
	return ncclSuccess;
}
