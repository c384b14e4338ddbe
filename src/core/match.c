#include <config.h>

#include "core/match.h"

int fabnet_match_tag(int n, const int32_t *tags, uint32_t taken_mask, int32_t tag)
{
	for (int i = 0; i < n && i < 32; i++)
		if (!(taken_mask & (1u << i)) && tags[i] == tag)
			return i;
	return -1;
}
