/* Activation kernels: see mf_activations.h. */
#include "mf_activations.h"

#include <float.h>
#include <math.h> /* expf: the generated code links libm (-lm) */

void mf_lut_s8(const int8_t table[256], const int8_t *in, int8_t *out, int32_t count) {
    for (int32_t i = 0; i < count; ++i) out[i] = table[(uint8_t)in[i]];
}

void mf_clamp_s8(const int8_t *in, int8_t *out, int32_t count, int32_t lo, int32_t hi) {
    for (int32_t i = 0; i < count; ++i) out[i] = (int8_t)mf_clamp_i32(in[i], lo, hi);
}

void mf_clamp_s16(const int16_t *in, int16_t *out, int32_t count, int32_t lo, int32_t hi) {
    for (int32_t i = 0; i < count; ++i) out[i] = (int16_t)mf_clamp_i32(in[i], lo, hi);
}

void mf_relu_s16(const int16_t *in, int16_t *out, int32_t count, int32_t multiplier, int32_t shift, int32_t lo) {
    for (int32_t i = 0; i < count; ++i) out[i] = (int16_t)mf_clamp_i32(mf_requantize(in[i], multiplier, shift), lo, 32767);
}

/* ---- gemmlowp fixed point, as reference/activations.py --------------------------------------------- */

MF_INLINE int32_t mf_wrapping_add(int32_t a, int32_t b) { return (int32_t)((uint32_t)a + (uint32_t)b); }

/* SaturatingRoundingMultiplyByPOT: exponent > 0 saturating left shift, exponent < 0 rounding right shift. */
MF_INLINE int32_t mf_multiply_by_pot(int32_t x, int exponent) {
    if (exponent < 0) return mf_rounding_divide_by_pot(x, -exponent);
    const int32_t threshold = (int32_t)(((int64_t)1 << (31 - exponent)) - 1);
    if (x > threshold) return INT32_MAX;
    if (x < -threshold) return INT32_MIN;
    return x * ((int32_t)1 << exponent);
}

/* RoundingHalfSum: (a + b + sign) / 2, truncating. */
MF_INLINE int32_t mf_rounding_half_sum(int32_t a, int32_t b) {
    const int64_t sum = (int64_t)a + (int64_t)b;
    return (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
}

/* one_over_one_plus_x_for_x_in_0_1: Q0 a -> Q0 1/(1+a), Newton-Raphson in Q2. */
static int32_t mf_one_over_one_plus_x(int32_t a) {
    const int32_t half_denominator = mf_rounding_half_sum(a, INT32_MAX);
    int32_t x = mf_wrapping_add(1515870810, mf_doubling_high_mul(half_denominator, -1010580540));
    for (int i = 0; i < 3; ++i) {
        const int32_t one_minus = (int32_t)((uint32_t)1 << 29) - mf_doubling_high_mul(half_denominator, x);
        x = mf_wrapping_add(x, mf_multiply_by_pot(mf_doubling_high_mul(x, one_minus), 2));
    }
    return mf_multiply_by_pot(x, 1);
}


static inline int32_t mf_softmax_exp(const mf_softmax_s8_params *p, int32_t difference) {
    return difference < p->exp_count ? p->exp_table[difference] : 0;
}

void mf_softmax_s8(const mf_softmax_s8_params *p, const int8_t *in, int8_t *out) {
    for (int32_t r = 0; r < p->rows; ++r, in += p->depth, out += p->depth) {
        int32_t max_value = -128;
        for (int32_t i = 0; i < p->depth; ++i) max_value = mf_max_i32(max_value, in[i]);
        uint32_t sum = 0; /* Q12.19, wrapping like TFLM's int32 */
        for (int32_t i = 0; i < p->depth; ++i)
            sum += (uint32_t)mf_rounding_divide_by_pot(mf_softmax_exp(p, max_value - in[i]), 12);
        const int headroom_plus_one = mf_count_leading_zeros32((sum & 0x80000000u) ? 0xFFFFFFFFu : sum);
        const int num_bits_over_unit = 12 - headroom_plus_one;
        const int32_t shifted_sum_minus_one = (int32_t)((headroom_plus_one >= 32 ? 0u : sum << headroom_plus_one)
                                                        - 0x80000000u);
        const int32_t reciprocal = mf_one_over_one_plus_x(shifted_sum_minus_one);
        /* TFLM aborts when a row's sum of exps reaches 512 (exponent > 31); we stay defined instead */
        const int exponent = (int)mf_clamp_i32(num_bits_over_unit + 31 - 8, 0, 31);
        for (int32_t i = 0; i < p->depth; ++i) {
            const int32_t scaled = mf_rounding_divide_by_pot(mf_doubling_high_mul(reciprocal,
                                                                                  mf_softmax_exp(p, max_value - in[i])),
                                                             exponent);
            out[i] = (int8_t)mf_clamp_i32(scaled - 128, -128, 127);
        }
    }
}

/* ---- float32 ----------------------------------------------------------------------------------------- */

void mf_relu_f32(const float *in, float *out, int32_t count) {
    for (int32_t i = 0; i < count; ++i) out[i] = in[i] < 0.0f ? 0.0f : in[i];
}

void mf_relu6_f32(const float *in, float *out, int32_t count) {
    for (int32_t i = 0; i < count; ++i) {
        const float x = in[i];
        out[i] = x > 6.0f ? 6.0f : (x < 0.0f ? 0.0f : x);
    }
}

void mf_hard_swish_f32(const float *in, float *out, int32_t count) {
    for (int32_t i = 0; i < count; ++i) {
        const float x = in[i];
        const float shifted = x + 3.0f;
        const float relu6 = shifted > 6.0f ? 6.0f : (shifted < 0.0f ? 0.0f : shifted);
        out[i] = x * relu6 / 6.0f;
    }
}

/* TFLM's reference order: the row maximum (from -FLT_MAX, so NaNs never win), exp((x - max) * beta) kept in
 * the output while their float sum runs left to right, then one division each. Subtracting the maximum
 * keeps every exp in [0, 1] for beta > 0 (no overflow, and the largest term is exactly 1). */
void mf_softmax_f32(const mf_softmax_f32_params *p, const float *in, float *out) {
    for (int32_t r = 0; r < p->rows; ++r, in += p->depth, out += p->depth) {
        float max_value = -FLT_MAX;
        for (int32_t i = 0; i < p->depth; ++i) max_value = max_value < in[i] ? in[i] : max_value;
        float sum = 0.0f;
        for (int32_t i = 0; i < p->depth; ++i) {
            const float e = expf((in[i] - max_value) * p->beta);
            out[i] = e;
            sum += e;
        }
        for (int32_t i = 0; i < p->depth; ++i) out[i] = out[i] / sum;
    }
}

/* TFLM's reference with its two cutoffs, which the reference interpreter keeps too: 1 above 16.619...,
 * exp(x) below -9 (TFLM's approximation there, off by a relative exp(x) < 1.3e-4), else 1 / (1 + exp(-x)).
 * exp's argument stays below 9, so it never overflows; exp(x) underflows to 0 for very negative x. */
void mf_logistic_f32(const float *in, float *out, int32_t count) {
    for (int32_t i = 0; i < count; ++i) {
        const float x = in[i];
        out[i] = x > 16.619047164916992188f ? 1.0f : (x < -9.0f ? expf(x) : 1.0f / (1.0f + expf(-x)));
    }
}

/* ---- int16 SOFTMAX ------------------------------------------------------------------------------------ */

/* x >> n rounding toward minus infinity, for negative x too, without relying on how C shifts negatives. */
MF_INLINE int64_t mf_floor_shift_i64(int64_t x, int n) {
    return x >= 0 ? x >> n : -(((-x) + (((int64_t)1 << n) - 1)) >> n);
}

MF_INLINE int32_t mf_wrap_i16(int32_t x) { return ((x + 32768) & 0xFFFF) - 32768; }

/* TFLite's int16 LUTLookup: the top 9 bits of value pick a step, the low 7 interpolate with rounding;
 * the arithmetic wraps to int16 as TFLite's does. */
MF_INLINE int32_t mf_lut_lookup_s16(const int16_t *table, int32_t value) {
    const int32_t index = (value + 32768) >> 7; /* = 256 + floor(value / 128), value in [-32768, 32767] */
    const int32_t base = table[index];
    const int32_t slope = mf_wrap_i16(table[index + 1] - base);
    const int32_t step = (int32_t)mf_floor_shift_i64((int64_t)slope * (value & 0x7F) + 64, 7);
    return mf_wrap_i16(base + step);
}

void mf_softmax_s16(const mf_softmax_s16_params *p, const int16_t *in, int16_t *out) {
    for (int32_t r = 0; r < p->rows; ++r, in += p->depth, out += p->depth) {
        int32_t max = -32768;
        for (int32_t i = 0; i < p->depth; ++i) max = mf_max_i32(max, in[i]);
        int32_t total = 0; /* the generator checked that depth * 32767 fits */
        for (int32_t i = 0; i < p->depth; ++i) {
            const int32_t scaled = mf_requantize(in[i] - max, p->multiplier, p->shift);
            const int32_t e = mf_lut_lookup_s16(p->exp_table, mf_clamp_i32(scaled + 32767, -32768, 32767));
            out[i] = (int16_t)e; /* kept until the sum is known (each out[i] is written after in[i] is read) */
            total += e;
        }
        const int32_t headroom_plus_one = mf_count_leading_zeros32((uint32_t)total);
        /* total << (headroom_plus_one - 1) is below 2^31: shifted, below 2^17, fits int32 */
        const int32_t shifted = (int32_t)(((((int64_t)total) << (headroom_plus_one - 1)) + (1 << 13)) >> 14);
        const int32_t reciprocal = mf_lut_lookup_s16(
            p->recip_table, mf_clamp_i32(shifted - ((1 << 15) + (1 << 16)), -32768, 32767));
        const int32_t right_shift = 31 - headroom_plus_one;
        for (int32_t i = 0; i < p->depth; ++i) {
            const int64_t y = mf_floor_shift_i64((int64_t)out[i] * reciprocal + ((int64_t)1 << (right_shift - 1)), right_shift);
            out[i] = (int16_t)(y < 0 ? 0 : y > 32767 ? 32767 : y);
        }
    }
}

/* ---- TANH, LEAKY_RELU, RSQRT (float32) ---------------------------------------------------------------- */

void mf_tanh_f32(const float *in, float *out, int32_t count) {
    for (int32_t i = 0; i < count; ++i) out[i] = tanhf(in[i]);
}

/* alpha may exceed 1 or be negative, so this is no max(x, alpha * x) */
void mf_leaky_relu_f32(const float *in, float *out, int32_t count, float alpha) {
    for (int32_t i = 0; i < count; ++i) out[i] = in[i] > 0.0f ? in[i] : in[i] * alpha;
}

void mf_rsqrt_f32(const float *in, float *out, int32_t count) {
    for (int32_t i = 0; i < count; ++i) out[i] = 1.0f / sqrtf(in[i]);
}
