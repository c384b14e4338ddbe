#include <config.h>

#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>

#include "transport/accel.h"

/* The driver API's own types, declared here so no CUDA header is needed. */
typedef int cu_result;
typedef int cu_device;
typedef unsigned long long cu_deviceptr;
typedef void *cu_context;
#define CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL 9
#define CU_FLUSH_GPU_DIRECT_RDMA_WRITES_TARGET_CURRENT_CTX 0
#define CU_FLUSH_GPU_DIRECT_RDMA_WRITES_TO_OWNER 100
#define CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD 1

static struct {
	pthread_once_t once;
	int loaded;
	const char *why;
	cu_result (*init)(unsigned);
	cu_result (*device_count)(int *);
	cu_result (*device_get)(cu_device *, int);
	cu_result (*primary_retain)(cu_context *, cu_device);
	cu_result (*ctx_set_current)(cu_context);
	cu_result (*mem_alloc)(cu_deviceptr *, size_t);
	cu_result (*mem_free)(cu_deviceptr);
	cu_result (*pointer_attr)(void *, int, cu_deviceptr);
	cu_result (*flush)(int, int);
	cu_result (*get_handle)(void *, cu_deviceptr, size_t, int, unsigned long long);
	cu_result (*copy_htod)(cu_deviceptr, const void *, size_t);
} cu = {.once = PTHREAD_ONCE_INIT};

static void load(void)
{
	void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	int n = 0;

	if (!h) {
		cu.why = "libcuda.so.1 could not be loaded (no NVIDIA driver on this machine)";
		return;
	}
	cu.init = (cu_result(*)(unsigned))dlsym(h, "cuInit");
	cu.device_count = (cu_result(*)(int *))dlsym(h, "cuDeviceGetCount");
	cu.device_get = (cu_result(*)(cu_device *, int))dlsym(h, "cuDeviceGet");
	cu.primary_retain = (cu_result(*)(cu_context *, cu_device))dlsym(h, "cuDevicePrimaryCtxRetain");
	cu.ctx_set_current = (cu_result(*)(cu_context))dlsym(h, "cuCtxSetCurrent");
	cu.mem_alloc = (cu_result(*)(cu_deviceptr *, size_t))dlsym(h, "cuMemAlloc_v2");
	cu.mem_free = (cu_result(*)(cu_deviceptr))dlsym(h, "cuMemFree_v2");
	cu.pointer_attr = (cu_result(*)(void *, int, cu_deviceptr))dlsym(h, "cuPointerGetAttribute");
	cu.flush = (cu_result(*)(int, int))dlsym(h, "cuFlushGPUDirectRDMAWrites");
	cu.get_handle = (cu_result(*)(void *, cu_deviceptr, size_t, int, unsigned long long))dlsym(
		h, "cuMemGetHandleForAddressRange");
	cu.copy_htod = (cu_result(*)(cu_deviceptr, const void *, size_t))dlsym(h, "cuMemcpyHtoD_v2");
	if (!cu.init || !cu.device_count || !cu.pointer_attr) {
		cu.why = "libcuda.so.1 lacks the driver API fabnet needs";
		return;
	}
	if (cu.init(0) != 0 || cu.device_count(&n) != 0 || n <= 0) {
		cu.why = "the CUDA driver found no usable device";
		return;
	}
	cu.loaded = 1;
}

int fabnet_cuda_load(const char **why)
{
	pthread_once(&cu.once, load);
	if (why)
		*why = cu.why;
	return cu.loaded ? 0 : -1;
}

int fabnet_cuda_device_of(const void *ptr)
{
	int ordinal = -1;

	if (fabnet_cuda_load(NULL))
		return -1;
	if (cu.pointer_attr(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
			    (cu_deviceptr)(uintptr_t)ptr) != 0)
		return -1;
	return ordinal;
}

int fabnet_cuda_probe_alloc(size_t len, void **ptr, const char **why)
{
	cu_device dev;
	cu_context ctx;
	cu_deviceptr p;

	if (fabnet_cuda_load(why))
		return -1;
	if (!cu.device_get || !cu.primary_retain || !cu.ctx_set_current || !cu.mem_alloc ||
	    cu.device_get(&dev, 0) || cu.primary_retain(&ctx, dev) || cu.ctx_set_current(ctx) ||
	    cu.mem_alloc(&p, len)) {
		if (why)
			*why = "could not allocate device memory for the probe";
		return -1;
	}
	*ptr = (void *)(uintptr_t)p;
	return 0;
}

void fabnet_cuda_probe_free(void *ptr)
{
	if (cu.loaded && cu.mem_free)
		cu.mem_free((cu_deviceptr)(uintptr_t)ptr);
}

int fabnet_cuda_dmabuf_fd(void *ptr, size_t len, int *fd, const char **why)
{
	if (fabnet_cuda_load(why))
		return -1;
	if (!cu.get_handle) {
		*why = "the CUDA driver has no cuMemGetHandleForAddressRange (needs CUDA 11.7 or later)";
		return -1;
	}
	if (cu.get_handle(fd, (cu_deviceptr)(uintptr_t)ptr, len, CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD, 0)) {
		*why = "the CUDA driver exports no dma-buf for device memory (kernel without dma-buf "
		       "support, or open kernel modules needed)";
		return -1;
	}
	return 0;
}

int fabnet_cuda_copy_to_device(void *dst, const void *src, size_t len)
{
	if (fabnet_cuda_load(NULL) || !cu.copy_htod)
		return -1;
	return cu.copy_htod((cu_deviceptr)(uintptr_t)dst, src, len) == 0 ? 0 : -1;
}

int fabnet_cuda_flush_rdma_writes(void)
{
	if (fabnet_cuda_load(NULL) || !cu.flush)
		return -1;
	return cu.flush(CU_FLUSH_GPU_DIRECT_RDMA_WRITES_TARGET_CURRENT_CTX,
			CU_FLUSH_GPU_DIRECT_RDMA_WRITES_TO_OWNER) == 0 ? 0 : -1;
}
