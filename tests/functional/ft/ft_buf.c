/* Registered buffers: malloc, anonymous mmap, or a memfd through regMrDmaBuf. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../../tools/proc.h"
#include "ft.h"

/* A buffer backed by a memfd (a stand-in for a dma-buf exporter), registered
 * with regMrDmaBuf(type NCCL_PTR_HOST, offset). The fd is closed right after
 * the call, as NCCL does: the registration must not depend on it. */
static int fbuf_alloc_dmabuf(struct ft *ft, void *comm, size_t cap, struct fbuf *b)
{
	size_t off = ft->dmabuf_off, ps = page_size();
	size_t len = (off + cap + ps - 1) / ps * ps;
	ncclResult_t r;
	void *m;
	int fd;

	fd = memfd_create("fabnet-ft-dmabuf", MFD_CLOEXEC);
	if (fd < 0)
		return fail(ft, "memfd_create: %s", strerror(errno));
	if (ftruncate(fd, (off_t)len)) {
		close(fd);
		return fail(ft, "ftruncate of the memfd to %zu bytes: %s", len, strerror(errno));
	}
	m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		close(fd);
		return fail(ft, "mmap(MAP_SHARED) of the memfd (%zu bytes): %s", len, strerror(errno));
	}
	b->map = m;
	b->maplen = len;
	b->mapped = 2;
	b->p = (uint8_t *)m + off;
	b->cap = cap;
	b->comm = comm;
	g_step = "regMrDmaBuf";
	r = pl_reg_mr_dmabuf(ft->net, comm, b->p, cap, NCCL_PTR_HOST, off, fd, &b->mh);
	close(fd); /* as NCCL: right after the call */
	vnote("regMrDmaBuf(%p, %zu bytes, offset %zu, fd %d): memfd mapped at %p (%zu bytes)",
	      (void *)b->p, cap, off, fd, (void *)m, len);
	if (r != ncclSuccess) {
		munmap(m, len);
		memset(b, 0, sizeof(*b));
		return fail(ft, "regMrDmaBuf(%zu bytes, NCCL_PTR_HOST, offset %zu) returned %d (%s)",
			    cap, off, (int)r, pl_result_str(r));
	}
	if (!b->mh) {
		munmap(m, len);
		memset(b, 0, sizeof(*b));
		return fail(ft, "regMrDmaBuf(%zu bytes) returned ncclSuccess and a NULL mhandle", cap);
	}
	return 0;
}

int fbuf_alloc(struct ft *ft, void *comm, size_t cap, struct fbuf *b)
{
	memset(b, 0, sizeof(*b));
	if (cap == 0)
		cap = 64;
	if (ft->dmabuf)
		return fbuf_alloc_dmabuf(ft, comm, cap, b);
	if (cap >= MiB) {
		void *p = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return fail(ft, "mmap %zu bytes: %s", cap, strerror(errno));
		b->p = p;
		b->mapped = 1;
	} else {
		b->p = malloc(cap);
		if (!b->p)
			return fail(ft, "malloc %zu bytes failed", cap);
	}
	b->cap = cap;
	b->comm = comm;
	g_step = "regMr";
	{
		ncclResult_t r = pl_reg_mr(ft->net, comm, b->p, cap, NCCL_PTR_HOST, &b->mh);
		if (r != ncclSuccess) {
			if (b->mapped)
				munmap(b->p, cap);
			else
				free(b->p);
			b->p = NULL;
			return fail(ft, "regMr(%zu bytes, NCCL_PTR_HOST) returned %d (%s)", cap, (int)r,
				    pl_result_str(r));
		}
	}
	return 0;
}

/* Deregisters (unless dereg is 0) and frees. Returns -1 if deregMr failed. */
int fbuf_free(struct ft *ft, struct fbuf *b, int dereg)
{
	int rc = 0;

	if (!b->p)
		return 0;
	if (dereg && b->mh) {
		ncclResult_t r;
		g_step = "deregMr";
		r = pl_dereg_mr(ft->net, b->comm, b->mh);
		if (r != ncclSuccess)
			rc = fail(ft, "deregMr returned %d (%s)", (int)r, pl_result_str(r));
	}
	if (b->mapped == 2)
		munmap(b->map, b->maplen);
	else if (b->mapped)
		munmap(b->p, b->cap);
	else
		free(b->p);
	memset(b, 0, sizeof(*b));
	return rc;
}
