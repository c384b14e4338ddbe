/*
 * The accelerator runtime, loaded with dlopen and never linked: fabnet builds
 * and runs without CUDA. Only the few driver calls fabnet needs beyond what
 * NCCL hands it are declared here (device of a pointer, a probe allocation,
 * the GPUDirect flush call). Everything fails cleanly when the driver is
 * absent, and says why.
 */
#ifndef FABNET_TRANSPORT_ACCEL_H
#define FABNET_TRANSPORT_ACCEL_H

#include <stddef.h>
#include <stdint.h>

/* Loads libcuda.so.1 once. Returns 0, or -1 with why (static text). */
int fabnet_cuda_load(const char **why);
/* CUDA device ordinal owning ptr, or -1. */
int fabnet_cuda_device_of(const void *ptr);
/* Allocates / frees device memory on device 0 for capability probes. */
int fabnet_cuda_probe_alloc(size_t len, void **ptr, const char **why);
void fabnet_cuda_probe_free(void *ptr);
/* A dma-buf fd for device memory [ptr, ptr + len) from the driver
 * (cuMemGetHandleForAddressRange): 0, or -1 with why (static text). */
int fabnet_cuda_dmabuf_fd(void *ptr, size_t len, int *fd, const char **why);
/* Copies host bytes into device memory: 0, or -1. */
int fabnet_cuda_copy_to_device(void *dst, const void *src, size_t len);
/* cuFlushGPUDirectRDMAWrites: 0 on success, -1 when unavailable or failed. */
int fabnet_cuda_flush_rdma_writes(void);

#endif
