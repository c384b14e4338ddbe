/* NCCL's tag rule for grouped receives: each send matches the first entry of
 * the receiver's current group that carries its tag and is not yet taken. */
#ifndef FABNET_CORE_MATCH_H
#define FABNET_CORE_MATCH_H

#include <stdint.h>

/* Returns the index (0..n-1) for tag, or -1 when no free entry carries it. */
int fabnet_match_tag(int n, const int32_t *tags, uint32_t taken_mask, int32_t tag);

#endif
