/* Padding kernels: see mf_pad.h. */
#include "mf_pad.h"

static void mf_pad_copy_rows(const mf_pad_params *p, const uint8_t *in, uint8_t *out) {
    int32_t index[MF_PAD_MAX_DIMS] = {0};
    const int32_t outer = p->rank - 1;
    int32_t offset = p->first_offset;
    for (;;) {
        memcpy(out + offset, in, (size_t)p->row_bytes);
        in += p->row_bytes;
        int32_t d = outer - 1;
        for (; d >= 0; --d) { /* next row: odometer over the outer dimensions */
            offset += p->out_strides[d];
            if (++index[d] < p->in_dims[d]) break;
            offset -= p->out_strides[d] * p->in_dims[d];
            index[d] = 0;
        }
        if (d < 0) return;
    }
}

void mf_pad_s8(const mf_pad_params *p, const int8_t *in, int8_t *out, int8_t value) {
    memset(out, (uint8_t)value, (size_t)p->out_elements);
    if (p->row_bytes > 0) mf_pad_copy_rows(p, (const uint8_t *)in, (uint8_t *)out);
}

void mf_pad_s16(const mf_pad_params *p, const int16_t *in, int16_t *out, int16_t value) {
    for (int32_t i = 0; i < p->out_elements; ++i) out[i] = value;
    if (p->row_bytes > 0) mf_pad_copy_rows(p, (const uint8_t *)in, (uint8_t *)out);
}

void mf_pad_f32(const mf_pad_params *p, const float *in, float *out, float value) {
    for (int32_t i = 0; i < p->out_elements; ++i) out[i] = value;
    if (p->row_bytes > 0) mf_pad_copy_rows(p, (const uint8_t *)in, (uint8_t *)out);
}
