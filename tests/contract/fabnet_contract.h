/*
 * fabnet EFA-contract layer: what a test may ask the preloaded layer.
 *
 * The layer exports these functions; a test that is run under LD_PRELOAD finds
 * them with dlsym(RTLD_DEFAULT, ...), so it does not link against the layer.
 */
#ifndef FABNET_CONTRACT_H
#define FABNET_CONTRACT_H

#include <stdint.h>

/* The current value of a counter (see FC_COUNTERS in contract_int.h: posts,
 * violations, completions, error_completions, reordered, held_reads,
 * eagain_injected, eagain_posts, eagain_cq_reads, errors_injected,
 * mr_registrations, infos_rewritten, infos_dropped, objects_wrapped,
 * in_flight), or UINT64_MAX for an unknown name. */
uint64_t fabnet_contract_counter(const char *name);
typedef uint64_t (*fabnet_contract_counter_fn)(const char *name);

/* The seed this process uses (FABNET_CONTRACT_SEED, or the one it printed). */
uint64_t fabnet_contract_seed(void);

#endif
