/*
 * fabnet EFA-contract layer: a same-host registry of memory regions.
 *
 * Every region registered through the layer is published in a small table in
 * shared memory (/dev/shm/fabnet-contract-v1-<uid>, FABNET_CONTRACT_REGISTRY
 * to change, "off" to disable). An initiator that decodes a remote key can
 * then see the target region's base, length and access flags, which lets the
 * layer
 *   - refuse RMA outside the target region (EFA fails it remotely; lenient
 *     providers may drop it silently and report success),
 *   - complete RMA to a region already closed with an error, as EFA would,
 *   - translate virtual addresses to offsets for providers that ignore the
 *     FI_MR_VIRT_ADDR we ask for (ofi_rxm re-derives its core's mr_mode).
 * Processes on other hosts are not in the table: their keys are forwarded.
 *
 * TEST ONLY: see README.md in this directory.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "contract_int.h"

#define FC_REG_MAGIC 0x6663726567763031ull /* "fcregv01" */
#define FC_REG_PROCS 1024
#define FC_REG_MRS 65536
#define FC_ID_FREE 0
#define FC_ID_TOMB 1
#define FC_ID_BUSY 2

struct fc_reg_proc {
	uint64_t word; /* pid << 16 | nonce, 0 = free */
};

struct fc_reg_mr {
	uint64_t id;   /* nonce << 32 | region id, or FC_ID_* */
	uint64_t base;
	uint64_t len;
	uint64_t access;
	uint64_t real_key;
	uint32_t pid;
	uint32_t pad;
};

struct fc_reg {
	uint64_t magic;
	uint64_t size;
	struct fc_reg_proc procs[FC_REG_PROCS];
	struct fc_reg_mr mrs[FC_REG_MRS];
};

static struct fc_reg *fc_reg;
static long fc_reg_proc_slot = -1;

static int fc_pid_alive(uint32_t pid)
{
	return pid && (kill((pid_t)pid, 0) == 0 || errno != ESRCH);
}

static int fc_reg_attach(void)
{
	const char *path = getenv("FABNET_CONTRACT_REGISTRY");
	char def[128];
	struct stat st;
	void *p;
	int fd;

	if (path && !strcmp(path, "off"))
		return -1;
	if (!path || !*path) {
		snprintf(def, sizeof(def), "/dev/shm/fabnet-contract-v1-%u", (unsigned)getuid());
		path = def;
	}
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		fc_log("no region registry (%s: %s): remote checks and address translation are off",
		       path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == 0 && (size_t)st.st_size < sizeof(struct fc_reg) &&
	    ftruncate(fd, sizeof(struct fc_reg))) {
		fc_log("cannot size the region registry %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	p = mmap(NULL, sizeof(struct fc_reg), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED) {
		fc_log("cannot map the region registry %s: %s", path, strerror(errno));
		return -1;
	}
	fc_reg = p;
	{
		uint64_t zero = 0;
		__atomic_compare_exchange_n(&fc_reg->magic, &zero, FC_REG_MAGIC, 0, __ATOMIC_ACQ_REL,
					    __ATOMIC_ACQUIRE);
	}
	if (__atomic_load_n(&fc_reg->magic, __ATOMIC_ACQUIRE) != FC_REG_MAGIC) {
		fc_log("%s is not a registry of this layer version; remote checks are off", path);
		munmap(p, sizeof(struct fc_reg));
		fc_reg = NULL;
		return -1;
	}
	return 0;
}

/* Drops what processes that died left behind. */
static void fc_reg_sweep(void)
{
	uint32_t dead[16], alive[16];
	unsigned nd = 0, na = 0;

	for (size_t i = 0; i < FC_REG_PROCS; i++) {
		uint64_t w = __atomic_load_n(&fc_reg->procs[i].word, __ATOMIC_ACQUIRE);
		if (w && !fc_pid_alive((uint32_t)(w >> 16)))
			__atomic_compare_exchange_n(&fc_reg->procs[i].word, &w, 0, 0, __ATOMIC_ACQ_REL,
						    __ATOMIC_RELAXED);
	}
	for (size_t i = 0; i < FC_REG_MRS; i++) {
		struct fc_reg_mr *s = &fc_reg->mrs[i];
		uint64_t id = __atomic_load_n(&s->id, __ATOMIC_ACQUIRE);
		uint32_t pid;
		int is_dead = -1;
		if (id <= FC_ID_BUSY)
			continue;
		pid = s->pid;
		for (unsigned k = 0; k < nd && is_dead < 0; k++)
			if (dead[k] == pid)
				is_dead = 1;
		for (unsigned k = 0; k < na && is_dead < 0; k++)
			if (alive[k] == pid)
				is_dead = 0;
		if (is_dead < 0) {
			is_dead = !fc_pid_alive(pid);
			if (is_dead && nd < 16)
				dead[nd++] = pid;
			else if (!is_dead && na < 16)
				alive[na++] = pid;
		}
		if (is_dead)
			__atomic_compare_exchange_n(&s->id, &id, FC_ID_TOMB, 0, __ATOMIC_ACQ_REL,
						    __ATOMIC_RELAXED);
	}
}

static int fc_reg_nonce_taken(uint16_t nonce)
{
	for (size_t i = 0; i < FC_REG_PROCS; i++) {
		uint64_t w = __atomic_load_n(&fc_reg->procs[i].word, __ATOMIC_ACQUIRE);
		if (w && (uint16_t)w == nonce && fc_pid_alive((uint32_t)(w >> 16)))
			return 1;
	}
	return 0;
}

/* Called once per process (and again in a forked child): picks a nonce no live
 * process on this host uses and announces it. */
void fc_reg_join(uint64_t *rng)
{
	uint64_t word;

	if (!fc_reg && fc_reg_attach())
		return;
	fc_reg_sweep();
	for (int tries = 0; tries < 64; tries++) {
		if (!fc_reg_nonce_taken(fc_cfg.key_nonce))
			break;
		do
			fc_cfg.key_nonce = (uint16_t)fc_rand(rng);
		while (!fc_cfg.key_nonce);
	}
	word = ((uint64_t)(uint32_t)getpid() << 16) | fc_cfg.key_nonce;
	fc_reg_proc_slot = -1;
	for (size_t i = 0; i < FC_REG_PROCS; i++) {
		uint64_t zero = 0;
		if (__atomic_compare_exchange_n(&fc_reg->procs[i].word, &zero, word, 0,
						__ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
			fc_reg_proc_slot = (long)i;
			break;
		}
	}
	if (fc_reg_proc_slot < 0)
		fc_log("the region registry's process table is full; remote checks may miss");
}

void fc_reg_leave(void)
{
	uint32_t pid = (uint32_t)getpid();

	if (!fc_reg)
		return;
	for (size_t i = 0; i < FC_REG_MRS; i++) {
		struct fc_reg_mr *s = &fc_reg->mrs[i];
		uint64_t id = __atomic_load_n(&s->id, __ATOMIC_ACQUIRE);
		if (id > FC_ID_BUSY && s->pid == pid && (uint16_t)(id >> 32) == fc_cfg.key_nonce)
			__atomic_compare_exchange_n(&s->id, &id, FC_ID_TOMB, 0, __ATOMIC_ACQ_REL,
						    __ATOMIC_RELAXED);
	}
	if (fc_reg_proc_slot >= 0) {
		uint64_t w = __atomic_load_n(&fc_reg->procs[fc_reg_proc_slot].word, __ATOMIC_ACQUIRE);
		if ((uint32_t)(w >> 16) == pid)
			__atomic_store_n(&fc_reg->procs[fc_reg_proc_slot].word, 0, __ATOMIC_RELEASE);
		fc_reg_proc_slot = -1;
	}
}

static size_t fc_reg_hash(uint64_t id)
{
	return (size_t)(fc_mix64(id) % FC_REG_MRS);
}

int fc_reg_publish(uint32_t rid, uint64_t real_key, const void *base, size_t len, uint64_t access)
{
	uint64_t id = ((uint64_t)fc_cfg.key_nonce << 32) | rid;
	size_t h;

	if (!fc_reg)
		return -1;
	h = fc_reg_hash(id);
	for (size_t i = 0; i < FC_REG_MRS; i++) {
		struct fc_reg_mr *s = &fc_reg->mrs[(h + i) % FC_REG_MRS];
		uint64_t v = __atomic_load_n(&s->id, __ATOMIC_ACQUIRE);
		if (v != FC_ID_FREE && v != FC_ID_TOMB)
			continue;
		if (!__atomic_compare_exchange_n(&s->id, &v, FC_ID_BUSY, 0, __ATOMIC_ACQ_REL,
						 __ATOMIC_RELAXED))
			continue;
		s->base = (uint64_t)(uintptr_t)base;
		s->len = len;
		s->access = access;
		s->real_key = real_key;
		s->pid = (uint32_t)getpid();
		__atomic_store_n(&s->id, id, __ATOMIC_RELEASE);
		return 0;
	}
	fc_log("the region registry is full; remote checks miss this region");
	return -1;
}

void fc_reg_withdraw(uint32_t rid)
{
	uint64_t id = ((uint64_t)fc_cfg.key_nonce << 32) | rid;
	size_t h;

	if (!fc_reg)
		return;
	h = fc_reg_hash(id);
	for (size_t i = 0; i < FC_REG_MRS; i++) {
		struct fc_reg_mr *s = &fc_reg->mrs[(h + i) % FC_REG_MRS];
		uint64_t v = __atomic_load_n(&s->id, __ATOMIC_ACQUIRE);
		if (v == FC_ID_FREE)
			return;
		if (v == id) {
			__atomic_store_n(&s->id, FC_ID_TOMB, __ATOMIC_RELEASE);
			return;
		}
	}
}

int fc_reg_lookup(uint16_t nonce, uint32_t rid, struct fc_region *out)
{
	uint64_t id = ((uint64_t)nonce << 32) | rid;
	size_t h;

	if (!fc_reg)
		return FC_REGION_UNKNOWN;
	h = fc_reg_hash(id);
	for (size_t i = 0; i < FC_REG_MRS; i++) {
		struct fc_reg_mr *s = &fc_reg->mrs[(h + i) % FC_REG_MRS];
		uint64_t v = __atomic_load_n(&s->id, __ATOMIC_ACQUIRE);
		if (v == FC_ID_FREE)
			break;
		if (v != id)
			continue;
		out->base = s->base;
		out->len = s->len;
		out->access = s->access;
		out->real_key = s->real_key;
		if (__atomic_load_n(&s->id, __ATOMIC_ACQUIRE) != id)
			break; /* withdrawn while we read it */
		return FC_REGION_LIVE;
	}
	return fc_reg_nonce_taken(nonce) ? FC_REGION_CLOSED : FC_REGION_UNKNOWN;
}
