/* int16x8 kernels: see mf_s16.h for the arithmetic. */
#include "mf_s16.h"

#include "mf_dsp.h"

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

/* sum(x[i] * w[i]) for i < n, exactly: each product is at most 2^22 in magnitude, so an int32 holds 256 of
 * them; the int64 total holds any realistic depth. With the DSP extension, four products take two SMLAD
 * on the input's int16 pairs with the weights widened to pairs by SXTB16 and repacked (PKHBT/PKHTB). */
MF_INLINE int64_t mf_s16_dot(const int16_t *x, const int8_t *w, int32_t n) {
    int64_t dot = 0;
    int32_t i = 0;
#if defined(MF_CONV_DSP)
    for (const int32_t whole = n & ~3; i < whole;) {
        const int32_t stop = whole - i > 256 ? i + 256 : whole;
        int32_t part = 0;
        for (; i < stop; i += 4) {
            int32_t x01, x23;
            memcpy(&x01, x + i, 4); /* (x0, x1) */
            memcpy(&x23, x + i + 2, 4);
            const int32_t wv = mf_conv_load4(w + i);
            const int32_t w02 = mf_conv_sxtb16(wv), w13 = mf_conv_sxtb16_ror8(wv);
            part = mf_conv_smlad(x01, mf_conv_pack_low(w02, w13), part);   /* (w0, w1) */
            part = mf_conv_smlad(x23, mf_conv_pack_high(w02, w13), part);  /* (w2, w3) */
        }
        dot += part;
    }
#endif
    int32_t part = 0;
    for (int32_t k = 0; i < n; ++i, ++k) {
        part += (int32_t)x[i] * w[i];
        if ((k & 255) == 255) {
            dot += part;
            part = 0;
        }
    }
    return dot + part;
}

/* bias + dot, requantized and clamped: output channel ch of an op whose sums of products are `dot`. */
MF_INLINE int16_t mf_s16_finish(const mf_requant_s16 *q, int64_t dot, int32_t ch) {
    const int32_t m = q->per_channel ? ch : 0;
    int32_t out;
    if (q->int32_accumulator) {
        /* TFLM's int32 accumulator: the sum and bias wrap modulo 2^32. */
        const int32_t acc = mf_s16_wrap32((uint32_t)dot + (uint32_t)q->bias32[ch]);
        out = mf_requantize(acc, q->multiplier[m], q->shift[m]);
    } else {
        const uint64_t acc = (uint64_t)dot + (q->bias64 ? (uint64_t)q->bias64[ch] : 0u);
        out = mf_s16_requantize64(acc, q->multiplier[m], q->shift[m]);
    }
    return (int16_t)mf_clamp_i32(out, q->act_min, q->act_max);
}

void mf_fc_s16(const mf_fc_s16_params *p, const int16_t *input, int16_t *output) {
    const int32_t in_f = p->in_features, out_f = p->out_features;
    for (int32_t r = 0; r < p->rows; ++r) {
        const int16_t *x = input + (size_t)r * in_f;
        int16_t *y = output + (size_t)r * out_f;
        for (int32_t oc = 0; oc < out_f; ++oc) {
            const int8_t *w = p->weights + (size_t)oc * in_f;
            y[oc] = mf_s16_finish(&p->q, mf_s16_dot(x, w, in_f), oc);
        }
    }
}

/* CONV_2D (groups >= 1): per output pixel and group, its patch (kh x kw x in_c / groups, in the weights'
 * order, 0 where a tap lies outside the input: the zero point) is gathered into scratch, then every output
 * channel of the group is one dot product over it. */
void mf_conv_s16(const mf_conv_s16_params *p, const int16_t *input, int16_t *output, int16_t *scratch) {
    const int32_t group_in = p->in_c / p->groups, group_out = p->out_c / p->groups;
    const int32_t depth = p->kh * p->kw * group_in;
    for (int32_t b = 0; b < p->batches; ++b) {
        const int16_t *image = input + (size_t)b * p->in_h * p->in_w * p->in_c;
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            for (int32_t ox = 0; ox < p->out_w; ++ox, output += p->out_c) {
                for (int32_t g = 0; g < p->groups; ++g) {
                    memset(scratch, 0, (size_t)depth * sizeof *scratch);
                    MF_FOR_EACH_INSIDE_TAP(p, oy, ox, {
                        memcpy(scratch + (ky * p->kw + kx) * group_in,
                               image + ((size_t)iy * p->in_w + ix) * p->in_c + g * group_in,
                               (size_t)group_in * sizeof *scratch);
                    })
                    for (int32_t oc = g * group_out; oc < (g + 1) * group_out; ++oc)
                        output[oc] = mf_s16_finish(&p->q, mf_s16_dot(scratch, p->weights + (size_t)oc * depth, depth), oc);
                }
            }
        }
    }
}

/* DEPTHWISE_CONV_2D: per output pixel, the offsets of its taps inside the input (into scratch), then each
 * output channel sums over them; at most 256 taps of 2^22 each fit its int32 sum (the generator checks). */
void mf_dwconv_s16(const mf_conv_s16_params *p, const int16_t *input, int16_t *output, int32_t *scratch) {
    const int32_t mult = p->depth_multiplier;
    for (int32_t b = 0; b < p->batches; ++b) {
        const int16_t *image = input + (size_t)b * p->in_h * p->in_w * p->in_c;
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            for (int32_t ox = 0; ox < p->out_w; ++ox, output += p->out_c) {
                int32_t taps = 0; /* scratch: [taps][2] = {input offset, weight row} */
                MF_FOR_EACH_INSIDE_TAP(p, oy, ox, {
                    scratch[2 * taps] = (iy * p->in_w + ix) * p->in_c;
                    scratch[2 * taps + 1] = (ky * p->kw + kx) * p->out_c;
                    ++taps;
                })
                for (int32_t oc = 0; oc < p->out_c; ++oc) {
                    const int16_t *x = image + oc / mult;
                    const int8_t *w = p->weights + oc;
                    int32_t sum = 0;
                    for (int32_t t = 0; t < taps; ++t) sum += (int32_t)x[scratch[2 * t]] * w[scratch[2 * t + 1]];
                    output[oc] = mf_s16_finish(&p->q, sum, oc);
                }
            }
        }
    }
}
