/*
 * fabnet-info --doctor: a preflight that says, per finding, what is wrong,
 * why it matters and what to do (docs/troubleshooting.md lists every id).
 *
 * The checks run in four groups, each in its own file:
 *   doctor_env.c     settings: NCCL_NET, NCCL_IB_*, FABNET_*, FI_PROVIDER, FI_EFA_*
 *   doctor_system.c  the machine: /dev/infiniband, memlock, fork safety,
 *                    hugepages, cross-memory attach, /dev/shm
 *   doctor_nccl.c    what NCCL would load (mirroring its loader) and the live
 *                    loopback self-test; both run in fabnet-doctor-probe, a
 *                    fresh process that links no libfabric, as NCCL's does not
 *   doctor_fabric.c  libfabric at build and at run time, providers, fabnet's
 *                    choice, accelerator and NIC affinity per rail group
 * Every check adds exactly one finding under a stable id, also when it does
 * not apply (then as info), so that scripts can look ids up.
 */
#ifndef FABNET_TOOLS_DOCTOR_H
#define FABNET_TOOLS_DOCTOR_H

#include <stddef.h>
#include <stdint.h>

enum doc_severity { DOC_OK = 0, DOC_INFO = 1, DOC_WARN = 2, DOC_ERROR = 3 };

struct doc_finding {
	char id[32];
	enum doc_severity severity;
	char *what; /* what is wrong (or what was found) */
	char *why;  /* why it matters */
	char *fix;  /* what to do */
};

/* A child process whose output is being collected (doc_spawn). */
struct doc_proc {
	int pid, fd_out, fd_err;
	int64_t deadline;
	char err[128];
};

/* What the checks learn and share (filled as the doctor goes). */
struct doc_ctx {
	/* The provider fabnet would use, when known ("" otherwise), and whether
	 * the job looks like an EFA job (named, present in libfabric, or EFA
	 * NICs on the PCI bus). */
	char provider[64];
	int efa_wanted;
	int efa_pci_nics;    /* EFA functions on the PCI bus */
	int ndevs;           /* fabnet devices (NICs) found, 0 when unknown */
	char probe[4200];    /* path of fabnet-doctor-probe, "" when not found */
	char nccl_lib[4200]; /* the fabnet library NCCL would load, "" when none */
	/* What the self-test process loaded: the plugin's libfabric as NCCL
	 * would get it, and how many copies of libfabric / libibverbs. */
	char plugin_fabric[4096];
	char plugin_fabric_ver[16];
	int nfabric, nverbs;
	/* The self-test, started early and collected last. */
	int no_selftest;
	struct doc_proc selftest;
	char selftest_lib[4300];

	struct doc_finding *f;
	int nf, cap;
};

/* Adds a finding; what, why and fix are printf formats sharing one argument
 * list each (use doc_add with already formatted strings when in doubt). */
void doc_add(struct doc_ctx *c, const char *id, enum doc_severity sev, const char *what,
	     const char *why, const char *fix);
void doc_addf(struct doc_ctx *c, const char *id, enum doc_severity sev, const char *why,
	      const char *fix, const char *what_fmt, ...) __attribute__((format(printf, 6, 7)));

/* A growing string for findings with several lines. */
struct doc_buf {
	char *s;
	size_t len, cap;
};
void doc_buf_printf(struct doc_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *doc_buf_str(const struct doc_buf *b);
void doc_buf_free(struct doc_buf *b);

/* The value of a test-only override variable, or def when it is unset. */
const char *doc_path(const char *override_var, const char *def);

/* Runs argv with a deadline; its stdout and stderr (merged when err is NULL)
 * are collected. Returns the wait status, or -1 (why in out) when it could not
 * start; *timed_out is set when it was killed at the deadline. */
int doc_run(char *const argv[], int timeout_ms, struct doc_buf *out, struct doc_buf *err,
	    int *timed_out);
/* The same in two halves, so that a child runs while the doctor goes on. */
int doc_spawn(char *const argv[], int timeout_ms, int merge_err, struct doc_proc *p);
int doc_collect(struct doc_proc *p, struct doc_buf *out, struct doc_buf *err, int *timed_out);

/* One line per check group, in the order the doctor runs them. */
void doc_check_settings(struct doc_ctx *c);      /* doctor_env.c */
void doc_check_libfabric_settings(struct doc_ctx *c);
void doc_check_efa_device(struct doc_ctx *c);    /* doctor_system.c */
void doc_check_memlock(struct doc_ctx *c);
void doc_check_fork_safety(struct doc_ctx *c);
void doc_check_hugepages(struct doc_ctx *c);
void doc_check_shm_cma(struct doc_ctx *c);
void doc_check_dev_shm(struct doc_ctx *c);
void doc_check_nccl_loads(struct doc_ctx *c);    /* doctor_nccl.c */
void doc_start_selftest(struct doc_ctx *c);     /* runs while the other checks do */
void doc_check_selftest(struct doc_ctx *c);
void doc_check_fabric(struct doc_ctx *c);        /* doctor_fabric.c */
void doc_check_rail_affinity(struct doc_ctx *c);
void doc_check_libfabric_version(struct doc_ctx *c); /* after the self-test: its libfabric */

/* Counts EFA functions under /sys/bus/pci/devices (vendor 0x1d0f, EFA ids). */
int doc_count_efa_pci(void);

/* The entry point behind `fabnet-info --doctor [--json]`. */
int fabnet_doctor_main(int argc, char **argv);

#endif
