/* Data movement kernels: see mf_shape.h. */
#include "mf_shape.h"

void mf_copy_slices(const void *in, void *out, int32_t outer, int32_t slice_bytes, int32_t out_stride_bytes) {
    const uint8_t *src = (const uint8_t *)in;
    uint8_t *dst = (uint8_t *)out;
    if (outer == 1 || slice_bytes == out_stride_bytes) { /* one contiguous block */
        if (dst != src) memmove(dst, src, (size_t)slice_bytes * (size_t)outer);
        return;
    }
    for (int32_t i = 0; i < outer; ++i) memmove(dst + (size_t)i * (size_t)out_stride_bytes,
                                                src + (size_t)i * (size_t)slice_bytes, (size_t)slice_bytes);
}
