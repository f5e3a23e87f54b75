/* int16x8 kernels: see mf_s16.h for the arithmetic. */
#include "mf_s16.h"

/* The int32 whose two's-complement bits are u (what a wrapping int32, or C's cast of an int64 on every
 * two's-complement target, holds), without the implementation-defined conversion. */
MF_INLINE int32_t mf_s16_wrap32(uint32_t u) {
    int32_t out;
    memcpy(&out, &u, sizeof out);
    return out;
}

/* TFLite's int64 MultiplyByQuantizedMultiplier on the two's-complement bits of acc: multiply by the Q15
 * significand, add half of 2^s, shift right by s rounding toward minus infinity, keep the low 32 bits.
 * uint64 arithmetic wraps exactly as int64 two's complement would, with no undefined behaviour; the
 * right shift of a negative value is a logical shift with the sign bits filled in by hand (s in 1..63). */
MF_INLINE int32_t mf_s16_requantize64(uint64_t acc, int32_t multiplier, int32_t s) {
    const uint64_t sum = acc * (uint64_t)multiplier + ((uint64_t)1 << (s - 1));
    uint64_t shifted = sum >> s;
    if (sum >> 63) shifted |= ~(uint64_t)0 << (64 - s);
    return mf_s16_wrap32((uint32_t)shifted);
}

void mf_fc_s16(const mf_fc_s16_params *p, const int16_t *input, int16_t *output) {
    const int32_t in_f = p->in_features, out_f = p->out_features;
    for (int32_t r = 0; r < p->rows; ++r) {
        const int16_t *x = input + (size_t)r * in_f;
        int16_t *y = output + (size_t)r * out_f;
        for (int32_t oc = 0; oc < out_f; ++oc) {
            const int8_t *w = p->weights + (size_t)oc * in_f;
            /* Each product is at most 2^22 in magnitude: int64 holds any realistic sum exactly. */
            int64_t dot = 0;
            for (int32_t i = 0; i < in_f; ++i) dot += (int32_t)x[i] * (int32_t)w[i];
            const int32_t ch = p->per_channel ? oc : 0;
            int32_t out;
            if (p->int32_accumulator) {
                /* TFLM's int32 accumulator: the sum and bias wrap modulo 2^32. */
                const int32_t acc = mf_s16_wrap32((uint32_t)dot + (uint32_t)p->bias32[oc]);
                out = mf_requantize(acc, p->multiplier[ch], p->shift[ch]);
            } else {
                const uint64_t acc = (uint64_t)dot + (p->bias64 ? (uint64_t)p->bias64[oc] : 0u);
                out = mf_s16_requantize64(acc, p->multiplier[ch], p->shift[ch]);
            }
            y[oc] = (int16_t)mf_clamp_i32(out, p->act_min, p->act_max);
        }
    }
}
