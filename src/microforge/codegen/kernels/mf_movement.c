/* Data movement kernels: see mf_movement.h. */
#include "mf_movement.h"

void mf_strided_copy(const mf_strided_copy_params *p, const void *in, void *out) {
    const uint8_t *src = (const uint8_t *)in;
    uint8_t *dst = (uint8_t *)out;
    int32_t index[MF_MOVE_MAX_DIMS] = {0};
    /* offsets, not pointers: a negative stride may step before the buffer between rows */
    int32_t in_pos = p->in_offset, out_pos = p->out_offset;
    for (;;) {
        /* memmove: a forward slice may write over its own dying input (see mf_movement.h) */
        memmove(dst + out_pos, src + in_pos, (size_t)p->row_bytes);
        int32_t d = p->rank - 1;
        for (; d >= 0; --d) { /* next position: odometer over the dimensions */
            in_pos += p->in_strides[d];
            out_pos += p->out_strides[d];
            if (++index[d] < p->dims[d]) break;
            in_pos -= p->in_strides[d] * p->dims[d];
            out_pos -= p->out_strides[d] * p->dims[d];
            index[d] = 0;
        }
        if (d < 0) return;
    }
}

void mf_gather(const mf_gather_params *p, const void *params, const int32_t *indices, void *out, const void *zero) {
    const uint8_t *src = (const uint8_t *)params;
    uint8_t *dst = (uint8_t *)out;
    for (int32_t b = 0; b < p->batches; ++b) {
        const int32_t *index = indices + (size_t)b * (size_t)p->coords;
        for (int32_t o = 0; o < p->outer; ++o) {
            const uint8_t *slices = src + ((size_t)b * (size_t)p->outer + (size_t)o) * (size_t)p->axis_size
                                              * (size_t)p->inner_bytes;
            for (int32_t c = 0; c < p->coords; ++c, dst += p->inner_bytes) {
                const int32_t i = index[c];
                if (i >= 0 && i < p->axis_size) {
                    memcpy(dst, slices + (size_t)i * (size_t)p->inner_bytes, (size_t)p->inner_bytes);
                } else {
                    for (int32_t k = 0; k < p->inner_bytes; k += p->item_bytes) {
                        memcpy(dst + k, zero, (size_t)p->item_bytes);
                    }
                }
            }
        }
    }
}

/* Strict comparison from the first element on: ties (and NaN) keep the earlier index, as TFLM. */
#define MF_ARG_KERNEL(name, type, better)                                                              \
    void name(const mf_arg_params *p, const type *in, int32_t *out) {                                  \
        for (int32_t o = 0; o < p->outer; ++o) {                                                       \
            const type *row = in + (size_t)o * (size_t)p->axis_size * (size_t)p->inner;                \
            for (int32_t i = 0; i < p->inner; ++i) {                                                   \
                type best = row[i];                                                                    \
                int32_t at = 0;                                                                        \
                for (int32_t k = 1; k < p->axis_size; ++k) {                                           \
                    const type v = row[(size_t)k * (size_t)p->inner + (size_t)i];                      \
                    if (v better best) { best = v; at = k; }                                           \
                }                                                                                      \
                *out++ = at;                                                                           \
            }                                                                                          \
        }                                                                                              \
    }

MF_ARG_KERNEL(mf_arg_max_s8, int8_t, >)
MF_ARG_KERNEL(mf_arg_min_s8, int8_t, <)
MF_ARG_KERNEL(mf_arg_max_f32, float, >)
MF_ARG_KERNEL(mf_arg_min_f32, float, <)

void mf_fill(void *out, const void *value, int32_t item_bytes, int32_t count) {
    uint8_t *dst = (uint8_t *)out;
    for (int32_t i = 0; i < count; ++i) memcpy(dst + (size_t)i * (size_t)item_bytes, value, (size_t)item_bytes);
}
