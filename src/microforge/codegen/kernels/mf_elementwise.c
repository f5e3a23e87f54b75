/* Broadcasting binary kernels: see mf_elementwise.h. */
#include "mf_elementwise.h"

/* The odometer over all but the innermost dimension, calling NAME##_row for each innermost run. */
#define MF_BCAST_DRIVER(NAME, PT, TA, TB, TO)                                                             \
    void NAME(const PT *p, const mf_bcast *bc, const TA *a, const TB *b, TO *out) {                       \
        int32_t index[MF_BCAST_MAX_DIMS] = {0};                                                           \
        const int32_t last = bc->rank - 1;                                                                \
        const int32_t inner = bc->dims[last];                                                             \
        const int32_t sa = bc->a_strides[last], sb = bc->b_strides[last];                                 \
        int32_t ia = 0, ib = 0;                                                                           \
        for (;;) {                                                                                        \
            if (sa && sb) NAME##_row(p, a + ia, 1, b + ib, 1, out, inner);                                \
            else if (sa) NAME##_row(p, a + ia, 1, b + ib, 0, out, inner);                                 \
            else NAME##_row(p, a + ia, 0, b + ib, sb, out, inner);                                        \
            out += inner;                                                                                 \
            int32_t d = last - 1;                                                                         \
            for (; d >= 0; --d) {                                                                         \
                ia += bc->a_strides[d];                                                                   \
                ib += bc->b_strides[d];                                                                   \
                if (++index[d] < bc->dims[d]) break;                                                      \
                ia -= bc->a_strides[d] * bc->dims[d];                                                     \
                ib -= bc->b_strides[d] * bc->dims[d];                                                     \
                index[d] = 0;                                                                             \
            }                                                                                             \
            if (d < 0) return;                                                                            \
        }                                                                                                 \
    }

/* v + offset saturated to [lo, hi] without overflowing int32 (lo, hi and offset are int8-sized; TFLM adds
 * in int32, which overflows only for multipliers within 2^-24 of a power of two: the reference adds
 * without overflow and saturates, so do we). */
MF_INLINE int32_t mf_offset_clamp(int32_t v, int32_t offset, int32_t lo, int32_t hi) {
    return v < lo - offset ? lo : (v > hi - offset ? hi : v + offset);
}

/* ---- int8 ADD ---------------------------------------------------------------------------------------- */

MF_INLINE int32_t mf_add_s8_scale(int32_t x, int32_t offset, int32_t left_shift, int32_t multiplier,
                                  int32_t shift) {
    /* |x + offset| <= 255 with a shift of 20 (int8), <= 32768 with 15 (int16): no overflow; multiply, as
     * shifting negatives is UB */
    return mf_requantize((x + offset) * ((int32_t)1 << left_shift), multiplier, shift);
}

MF_INLINE int32_t mf_add_finish(const mf_add_s8_params *p, int32_t scaled_a, int32_t scaled_b) {
    const int32_t raw = mf_requantize(scaled_a + scaled_b, p->out_multiplier, p->out_shift);
    return mf_offset_clamp(raw, p->out_offset, p->act_min, p->act_max);
}

MF_INLINE int8_t mf_add_s8_finish(const mf_add_s8_params *p, int32_t scaled_a, int32_t scaled_b) {
    return (int8_t)mf_add_finish(p, scaled_a, scaled_b);
}

MF_INLINE int32_t mf_add_s8_scale_a(const mf_add_s8_params *p, int8_t x) {
    return mf_add_s8_scale(x, p->a_offset, p->left_shift, p->a_multiplier, p->a_shift);
}

MF_INLINE int32_t mf_add_s8_scale_b(const mf_add_s8_params *p, int8_t x) {
    return mf_add_s8_scale(x, p->b_offset, p->left_shift, p->b_multiplier, p->b_shift);
}

MF_INLINE void mf_add_s8_row(const mf_add_s8_params *p, const int8_t *a, int32_t sa, const int8_t *b,
                             int32_t sb, int8_t *out, int32_t n) {
    if (sa && sb) {
        for (int32_t i = 0; i < n; ++i) out[i] = mf_add_s8_finish(p, mf_add_s8_scale_a(p, a[i]), mf_add_s8_scale_b(p, b[i]));
    } else if (sa) {
        const int32_t y = mf_add_s8_scale_b(p, b[0]);
        for (int32_t i = 0; i < n; ++i) out[i] = mf_add_s8_finish(p, mf_add_s8_scale_a(p, a[i]), y);
    } else {
        const int32_t x = mf_add_s8_scale_a(p, a[0]);
        for (int32_t i = 0; i < n; ++i) out[i] = mf_add_s8_finish(p, x, mf_add_s8_scale_b(p, b[i * sb]));
    }
}

MF_BCAST_DRIVER(mf_add_s8, mf_add_s8_params, int8_t, int8_t, int8_t)

/* int16 ADD (int16x8 models): TFLM's general path with a left shift of 15, whatever the broadcast. */
MF_INLINE void mf_add_s16_row(const mf_add_s8_params *p, const int16_t *a, int32_t sa, const int16_t *b,
                              int32_t sb, int16_t *out, int32_t n) {
    for (int32_t i = 0; i < n; ++i) {
        const int32_t x = mf_add_s8_scale(a[i * sa], p->a_offset, p->left_shift, p->a_multiplier, p->a_shift);
        const int32_t y = mf_add_s8_scale(b[i * sb], p->b_offset, p->left_shift, p->b_multiplier, p->b_shift);
        out[i] = (int16_t)mf_add_finish(p, x, y);
    }
}

MF_BCAST_DRIVER(mf_add_s16, mf_add_s8_params, int16_t, int16_t, int16_t)

MF_INLINE void mf_add_s8_prescaled_row(const mf_add_s8_params *p, const int8_t *a, int32_t sa, const int32_t *b,
                                       int32_t sb, int8_t *out, int32_t n) {
    if (sa && sb) {
        for (int32_t i = 0; i < n; ++i) out[i] = mf_add_s8_finish(p, mf_add_s8_scale_a(p, a[i]), b[i]);
    } else if (sa) {
        const int32_t y = b[0];
        for (int32_t i = 0; i < n; ++i) out[i] = mf_add_s8_finish(p, mf_add_s8_scale_a(p, a[i]), y);
    } else {
        const int32_t x = mf_add_s8_scale_a(p, a[0]);
        for (int32_t i = 0; i < n; ++i) out[i] = mf_add_s8_finish(p, x, b[i * sb]);
    }
}

MF_BCAST_DRIVER(mf_add_s8_prescaled, mf_add_s8_params, int8_t, int32_t, int8_t)

void mf_add_s8_table(const mf_add_s8_table_params *p, const int8_t *a, const int8_t *b, int8_t *out) {
    const uint8_t *x = (const uint8_t *)a, *y = (const uint8_t *)b;
    const int32_t *const ta = p->a_table, *const tb = p->b_table;
    const int32_t multiplier = p->multiplier, left = p->left, right = p->right, k = p->k, m = p->m;
    const int32_t lo = p->act_min, hi = p->act_max;
    for (int32_t i = 0; i < p->count; ++i) {
        const int32_t s = ta[x[i]] + tb[y[i]];
        const int32_t r = mf_smmlar((int32_t)((uint32_t)s << left), multiplier, k + ((s >> 31) & m)) >> right;
        out[i] = (int8_t)mf_clamp_i32(r, lo, hi);
    }
}

/* ---- int8 MUL ---------------------------------------------------------------------------------------- */

MF_INLINE int8_t mf_mul_s8_one(const mf_mul_s8_params *p, int32_t x, int32_t y) {
    /* |x * y| <= 255 * 255: no overflow; mf_requantize wraps a left shift like TFLM's int32 */
    const int32_t raw = mf_requantize(x * y, p->multiplier, p->shift);
    return (int8_t)mf_offset_clamp(raw, p->out_offset, p->act_min, p->act_max);
}

MF_INLINE void mf_mul_s8_row(const mf_mul_s8_params *p, const int8_t *a, int32_t sa, const int8_t *b, int32_t sb,
                             int8_t *out, int32_t n) {
    if (sa && sb) {
        for (int32_t i = 0; i < n; ++i) out[i] = mf_mul_s8_one(p, a[i] + p->a_offset, b[i] + p->b_offset);
    } else if (sa) {
        const int32_t y = b[0] + p->b_offset;
        for (int32_t i = 0; i < n; ++i) out[i] = mf_mul_s8_one(p, a[i] + p->a_offset, y);
    } else {
        const int32_t x = a[0] + p->a_offset;
        for (int32_t i = 0; i < n; ++i) out[i] = mf_mul_s8_one(p, x, b[i * sb] + p->b_offset);
    }
}

MF_BCAST_DRIVER(mf_mul_s8, mf_mul_s8_params, int8_t, int8_t, int8_t)

/* ---- float32 ----------------------------------------------------------------------------------------- */

MF_INLINE float mf_clamp_f32(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

#define MF_F32_ROW(NAME, EXPR)                                                                            \
    MF_INLINE void NAME##_row(const mf_binary_f32_params *p, const float *a, int32_t sa, const float *b,  \
                              int32_t sb, float *out, int32_t n) {                                        \
        const float lo = p->f_min, hi = p->f_max;                                                         \
        if (sa && sb) {                                                                                   \
            for (int32_t i = 0; i < n; ++i) { const float x = a[i], y = b[i]; out[i] = mf_clamp_f32(EXPR, lo, hi); } \
        } else if (sa) {                                                                                  \
            const float y = b[0];                                                                         \
            for (int32_t i = 0; i < n; ++i) { const float x = a[i]; out[i] = mf_clamp_f32(EXPR, lo, hi); } \
        } else {                                                                                          \
            const float x = a[0];                                                                         \
            for (int32_t i = 0; i < n; ++i) { const float y = b[i * sb]; out[i] = mf_clamp_f32(EXPR, lo, hi); } \
        }                                                                                                 \
    }

MF_F32_ROW(mf_add_f32, x + y)
MF_BCAST_DRIVER(mf_add_f32, mf_binary_f32_params, float, float, float)
MF_F32_ROW(mf_mul_f32, x * y)
MF_BCAST_DRIVER(mf_mul_f32, mf_binary_f32_params, float, float, float)

/* ---- SUB, MAXIMUM, MINIMUM, SQUARED_DIFFERENCE, PRELU ---------------------------------------------- */

/* The row functions read element i * stride of each input; the driver calls them with literal strides
 * (1 or 0 for one of them), so once inlined the broadcast operand's work leaves the loop. */

MF_INLINE void mf_sub_s8_row(const mf_add_s8_params *p, const int8_t *a, int32_t sa, const int8_t *b, int32_t sb,
                             int8_t *out, int32_t n) {
    for (int32_t i = 0; i < n; ++i)
        out[i] = mf_add_s8_finish(p, mf_add_s8_scale_a(p, a[i * sa]), -mf_add_s8_scale_b(p, b[i * sb]));
}

MF_BCAST_DRIVER(mf_sub_s8, mf_add_s8_params, int8_t, int8_t, int8_t)

MF_INLINE void mf_squared_difference_s8_row(const mf_add_s8_params *p, const int8_t *a, int32_t sa, const int8_t *b,
                                            int32_t sb, int8_t *out, int32_t n) {
    for (int32_t i = 0; i < n; ++i) {
        /* each rescaled input is within 255 * 2^7 / 2, so the square of their difference fits int32 */
        const int32_t d = mf_add_s8_scale_a(p, a[i * sa]) - mf_add_s8_scale_b(p, b[i * sb]);
        const int32_t raw = mf_requantize(d * d, p->out_multiplier, p->out_shift);
        out[i] = (int8_t)mf_offset_clamp(raw, p->out_offset, -128, 127);
    }
}

MF_BCAST_DRIVER(mf_squared_difference_s8, mf_add_s8_params, int8_t, int8_t, int8_t)

MF_INLINE void mf_prelu_s8_row(const mf_prelu_s8_params *p, const int8_t *in, int32_t sa, const int8_t *alpha,
                               int32_t sb, int8_t *out, int32_t n) {
    for (int32_t i = 0; i < n; ++i) {
        const int32_t x = in[i * sa] + p->input_offset;
        const int32_t raw = x >= 0 ? mf_requantize(x, p->positive_multiplier, p->positive_shift)
                                   : mf_requantize(x * (alpha[i * sb] + p->alpha_offset), p->negative_multiplier,
                                                   p->negative_shift);
        out[i] = (int8_t)mf_offset_clamp(raw, p->out_offset, -128, 127);
    }
}

MF_BCAST_DRIVER(mf_prelu_s8, mf_prelu_s8_params, int8_t, int8_t, int8_t)

/* A row of out = EXPR(x, y) for kernels without parameters. */
#define MF_PLAIN_ROW(NAME, T, EXPR)                                                                       \
    MF_INLINE void NAME##_row(const void *p, const T *a, int32_t sa, const T *b, int32_t sb, T *out,     \
                              int32_t n) {                                                               \
        (void)p;                                                                                          \
        for (int32_t i = 0; i < n; ++i) { const T x = a[i * sa], y = b[i * sb]; out[i] = (T)(EXPR); }      \
    }

MF_PLAIN_ROW(mf_maximum_s8, int8_t, x > y ? x : y)
MF_BCAST_DRIVER(mf_maximum_s8, void, int8_t, int8_t, int8_t)
MF_PLAIN_ROW(mf_minimum_s8, int8_t, x < y ? x : y)
MF_BCAST_DRIVER(mf_minimum_s8, void, int8_t, int8_t, int8_t)

MF_F32_ROW(mf_sub_f32, x - y)
MF_BCAST_DRIVER(mf_sub_f32, mf_binary_f32_params, float, float, float)
/* TFLM's order: a NaN in the first input loses the comparison, so the second is taken */
MF_PLAIN_ROW(mf_maximum_f32, float, x > y ? x : y)
MF_BCAST_DRIVER(mf_maximum_f32, void, float, float, float)
MF_PLAIN_ROW(mf_minimum_f32, float, x < y ? x : y)
MF_BCAST_DRIVER(mf_minimum_f32, void, float, float, float)
MF_PLAIN_ROW(mf_squared_difference_f32, float, (x - y) * (x - y))
MF_BCAST_DRIVER(mf_squared_difference_f32, void, float, float, float)
MF_PLAIN_ROW(mf_prelu_f32, float, x >= 0.0f ? x : x * y)
MF_BCAST_DRIVER(mf_prelu_f32, void, float, float, float)
