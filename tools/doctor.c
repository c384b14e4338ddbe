/*
 * fabnet-info --doctor: runs the checks (see doctor.h), prints one block per
 * finding and a verdict, and exits 0 (only ok/info), 1 (a warning) or 2 (an
 * error: fabnet would not carry the job).
 */
#include <config.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "doctor.h"

static const char *const sev_names[] = {"ok", "info", "warn", "error"};

/* ---- small helpers shared by the checks ---------------------------------------- */

void doc_buf_printf(struct doc_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (b->len + (size_t)n + 1 > b->cap) {
		size_t cap = (b->len + (size_t)n + 1) * 2;
		char *s = realloc(b->s, cap);
		if (!s)
			return;
		b->s = s;
		b->cap = cap;
	}
	va_start(ap, fmt);
	vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

const char *doc_buf_str(const struct doc_buf *b)
{
	return b->s ? b->s : "";
}

void doc_buf_free(struct doc_buf *b)
{
	free(b->s);
	memset(b, 0, sizeof(*b));
}

const char *doc_path(const char *override_var, const char *def)
{
	const char *v = getenv(override_var);
	return v && *v ? v : def;
}

void doc_add(struct doc_ctx *c, const char *id, enum doc_severity sev, const char *what,
	     const char *why, const char *fix)
{
	if (c->nf == c->cap) {
		int cap = c->cap ? c->cap * 2 : 32;
		struct doc_finding *f = realloc(c->f, sizeof(*f) * (size_t)cap);
		if (!f)
			return;
		c->f = f;
		c->cap = cap;
	}
	struct doc_finding *f = &c->f[c->nf++];
	snprintf(f->id, sizeof(f->id), "%s", id);
	f->severity = sev;
	f->what = strdup(what && *what ? what : "-");
	f->why = strdup(why && *why ? why : "-");
	f->fix = strdup(fix && *fix ? fix : "nothing to do");
}

void doc_addf(struct doc_ctx *c, const char *id, enum doc_severity sev, const char *why,
	      const char *fix, const char *what_fmt, ...)
{
	char what[4096];
	va_list ap;

	va_start(ap, what_fmt);
	vsnprintf(what, sizeof(what), what_fmt, ap);
	va_end(ap);
	doc_add(c, id, sev, what, why, fix);
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Appends what fd has to b; returns 0 at end of file. */
static int drain(int fd, struct doc_buf *b)
{
	char chunk[4096];
	ssize_t n = read(fd, chunk, sizeof(chunk));

	if (n < 0)
		return errno == EINTR || errno == EAGAIN ? 1 : 0;
	if (n > 0 && b->len < (1u << 20)) /* a runaway child does not eat memory */
		doc_buf_printf(b, "%.*s", (int)n, chunk);
	return n > 0;
}

int doc_spawn(char *const argv[], int timeout_ms, int merge_err, struct doc_proc *p)
{
	int po[2], pe[2] = {-1, -1};

	memset(p, 0, sizeof(*p));
	p->fd_out = p->fd_err = -1;
	p->deadline = mono_ms() + timeout_ms;
	if (pipe(po) || (!merge_err && pipe(pe))) {
		snprintf(p->err, sizeof(p->err), "pipe: %s", strerror(errno));
		return -1;
	}
	fflush(NULL);
	p->pid = fork();
	if (p->pid < 0) {
		snprintf(p->err, sizeof(p->err), "fork: %s", strerror(errno));
		return -1;
	}
	if (p->pid == 0) {
		dup2(po[1], 1);
		dup2(merge_err ? po[1] : pe[1], 2);
		close(po[0]);
		close(po[1]);
		if (!merge_err) {
			close(pe[0]);
			close(pe[1]);
		}
		execv(argv[0], argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(po[1]);
	p->fd_out = po[0];
	if (!merge_err) {
		close(pe[1]);
		p->fd_err = pe[0];
	}
	return 0;
}

int doc_collect(struct doc_proc *p, struct doc_buf *out, struct doc_buf *err, int *timed_out)
{
	int status = 0;

	*timed_out = 0;
	if (p->pid <= 0) {
		doc_buf_printf(out, "%s", p->err);
		return -1;
	}
	while (p->fd_out >= 0 || p->fd_err >= 0) {
		struct pollfd pf[2] = {{p->fd_out, POLLIN, 0}, {p->fd_err, POLLIN, 0}};
		int left = (int)(p->deadline - mono_ms());
		if (left <= 0) {
			*timed_out = 1;
			kill(p->pid, SIGKILL);
			break;
		}
		if (poll(pf, 2, left) < 0 && errno != EINTR)
			break;
		for (int i = 0; i < 2; i++) {
			int *fd = i ? &p->fd_err : &p->fd_out;
			if (*fd >= 0 && (pf[i].revents & (POLLIN | POLLHUP | POLLERR)) &&
			    !drain(*fd, i && err ? err : out)) {
				close(*fd);
				*fd = -1;
			}
		}
	}
	if (p->fd_out >= 0)
		close(p->fd_out);
	if (p->fd_err >= 0)
		close(p->fd_err);
	p->fd_out = p->fd_err = -1;
	/* A child that closed its output may still run: it gets the same deadline. */
	for (;;) {
		pid_t r = waitpid(p->pid, &status, *timed_out ? 0 : WNOHANG);
		if (r == p->pid || (r < 0 && errno != EINTR))
			break;
		if (r == 0 && mono_ms() >= p->deadline) {
			*timed_out = 1;
			kill(p->pid, SIGKILL);
		} else if (r == 0) {
			usleep(10000);
		}
	}
	p->pid = 0;
	return status;
}

int doc_run(char *const argv[], int timeout_ms, struct doc_buf *out, struct doc_buf *err,
	    int *timed_out)
{
	struct doc_proc p;

	doc_spawn(argv, timeout_ms, err == NULL, &p);
	return doc_collect(&p, out, err, timed_out);
}

/* ---- output ----------------------------------------------------------------------- */

/* Findings are shown in this order, whatever order the checks ran in. */
static const char *const display_order[] = {
	"nccl-loads-plugin", "nccl-net", "nccl-ib-settings", "fabnet-config",
	"fabnet-unknown-settings", "fi-provider", "libfabric-settings", "libfabric-version",
	"providers", "efa-device", "memlock", "fork-safety", "hugepages", "shm-cma", "dev-shm",
	"rail-affinity", "selftest", NULL,
};

static int rank_of(const char *id)
{
	for (int i = 0; display_order[i]; i++)
		if (!strcmp(display_order[i], id))
			return i;
	return 1000;
}

static void sort_findings(struct doc_ctx *c)
{
	for (int i = 1; i < c->nf; i++) /* insertion sort: stable, and there are few */
		for (int j = i; j > 0 && rank_of(c->f[j - 1].id) > rank_of(c->f[j].id); j--) {
			struct doc_finding t = c->f[j];
			c->f[j] = c->f[j - 1];
			c->f[j - 1] = t;
		}
}

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch == '\n')
			printf("\\n");
		else if (ch < 0x20)
			printf("\\u%04x", ch);
		else
			putchar(ch);
	}
	putchar('"');
}

/* Prints s with every line after the first indented to the text column. */
static void text_field(const char *label, const char *s)
{
	printf("  %-5s ", label);
	for (; *s; s++) {
		putchar(*s);
		if (*s == '\n' && s[1])
			printf("        ");
	}
	putchar('\n');
}

static enum doc_severity worst(const struct doc_ctx *c)
{
	enum doc_severity w = DOC_OK;
	for (int i = 0; i < c->nf; i++)
		if (c->f[i].severity > w)
			w = c->f[i].severity;
	return w;
}

static void print_verdict_text(const struct doc_ctx *c, enum doc_severity w)
{
	int n[4] = {0};
	struct doc_buf ids = {0};

	for (int i = 0; i < c->nf; i++) {
		n[c->f[i].severity]++;
		if (c->f[i].severity == (w == DOC_ERROR ? DOC_ERROR : DOC_WARN))
			doc_buf_printf(&ids, "%s%s", ids.len ? ", " : "", c->f[i].id);
	}
	if (w == DOC_ERROR)
		printf("verdict: error: fabnet would not carry this job (%s)", doc_buf_str(&ids));
	else if (w == DOC_WARN)
		printf("verdict: warn: fabnet would carry this job, but %d finding%s deserve%s "
		       "attention (%s)", n[DOC_WARN], n[DOC_WARN] == 1 ? "" : "s",
		       n[DOC_WARN] == 1 ? "s" : "", doc_buf_str(&ids));
	else
		printf("verdict: ok: fabnet would carry this job");
	printf(" [%d ok, %d info, %d warn, %d error]\n", n[DOC_OK], n[DOC_INFO], n[DOC_WARN],
	       n[DOC_ERROR]);
	doc_buf_free(&ids);
}

static void print_findings(const struct doc_ctx *c, int json)
{
	enum doc_severity w = worst(c);

	if (json) {
		printf("{\"verdict\": \"%s\", \"findings\": [", w == DOC_ERROR ? "error"
							       : w == DOC_WARN ? "warn" : "ok");
		for (int i = 0; i < c->nf; i++) {
			const struct doc_finding *f = &c->f[i];
			printf("%s\n  {\"id\": ", i ? "," : "");
			json_str(f->id);
			printf(", \"severity\": \"%s\", \"what\": ", sev_names[f->severity]);
			json_str(f->what);
			printf(", \"why\": ");
			json_str(f->why);
			printf(", \"fix\": ");
			json_str(f->fix);
			printf("}");
		}
		printf("\n]}\n");
		return;
	}
	for (int i = 0; i < c->nf; i++) {
		const struct doc_finding *f = &c->f[i];
		printf("[%s] %s\n", sev_names[f->severity], f->id);
		text_field("what", f->what);
		if (f->severity >= DOC_INFO || strcmp(f->why, "-")) {
			text_field("why", f->why);
			text_field("fix", f->fix);
		}
		putchar('\n');
	}
	print_verdict_text(c, w);
}

static void usage(FILE *to)
{
	fprintf(to, "usage: fabnet-info --doctor [--json] [--no-selftest]\n"
		    "Checks whether NCCL would load fabnet and fabnet could carry the job here,\n"
		    "and says per finding what is wrong, why it matters and what to do.\n"
		    "--no-selftest skips the live loopback transfer through the plugin.\n"
		    "Exit status: 0 ok, 1 a warning, 2 an error (fabnet would not carry the job).\n"
		    "Every finding: docs/troubleshooting.md.\n");
}

int fabnet_doctor_main(int argc, char **argv)
{
	struct doc_ctx c;
	int json = 0;

	memset(&c, 0, sizeof(c));
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			json = 1;
		} else if (!strcmp(argv[i], "--no-selftest")) {
			c.no_selftest = 1;
		} else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return 0;
		} else if (strcmp(argv[i], "--doctor")) {
			fprintf(stderr, "fabnet-info --doctor: unknown option %s\n", argv[i]);
			usage(stderr);
			return 2;
		}
	}
	/* Order matters: the probes start in fresh processes before this one
	 * touches libfabric (the self-test runs meanwhile), the machine checks
	 * use what libfabric said, and the version check what the self-test
	 * process loaded. */
	doc_check_settings(&c);
	c.efa_pci_nics = doc_count_efa_pci();
	doc_check_nccl_loads(&c);
	doc_start_selftest(&c);
	doc_check_fabric(&c);
	doc_check_libfabric_settings(&c);
	doc_check_efa_device(&c);
	doc_check_memlock(&c);
	doc_check_fork_safety(&c);
	doc_check_hugepages(&c);
	doc_check_shm_cma(&c);
	doc_check_dev_shm(&c);
	doc_check_rail_affinity(&c);
	doc_check_selftest(&c);
	doc_check_libfabric_version(&c);

	sort_findings(&c);
	print_findings(&c, json);
	enum doc_severity w = worst(&c);
	for (int i = 0; i < c.nf; i++) {
		free(c.f[i].what);
		free(c.f[i].why);
		free(c.f[i].fix);
	}
	free(c.f);
	return w == DOC_ERROR ? 2 : w == DOC_WARN ? 1 : 0;
}
