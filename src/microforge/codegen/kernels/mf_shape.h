/* Data movement: CONCATENATION copies each input's slices into the output. (RESHAPE, SQUEEZE and
 * EXPAND_DIMS need no kernel: one memmove when input and output storage differ, nothing when the planner
 * aliased them.)
 */
#ifndef MF_SHAPE_H
#define MF_SHAPE_H

#include "mf_common.h"

/* Copy `outer` slices of `slice_bytes` from the contiguous `in` to `out`, consecutive slices
 * `out_stride_bytes` apart (out already points at this input's first slice). */
void mf_copy_slices(const void *in, void *out, int32_t outer, int32_t slice_bytes, int32_t out_stride_bytes);

#endif /* MF_SHAPE_H */
