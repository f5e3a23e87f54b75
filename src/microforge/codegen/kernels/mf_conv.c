/* CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED kernels (see mf_conv.h for the arithmetic contract). */
#include "mf_conv.h"

/* ------------------------------------------------------------------------------------------------------
 * Dual 16-bit MAC primitives: the Cortex-M DSP extension, or a host emulation of it for tests. */
#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#define MF_CONV_DSP 1
MF_INLINE int32_t mf_conv_sxtb16(int32_t x) { return __sxtb16(x); }
MF_INLINE int32_t mf_conv_smlad(int32_t a, int32_t b, int32_t acc) { return __smlad(a, b, acc); }
MF_INLINE int32_t mf_conv_smlabb(int32_t a, int32_t b, int32_t acc) { return __smlabb(a, b, acc); }
MF_INLINE int32_t mf_conv_smlatt(int32_t a, int32_t b, int32_t acc) { return __smlatt(a, b, acc); }
/* SXTB16 of x rotated by 8 (bytes 1 and 3) in one instruction: gcc does not fold the rotation itself. */
MF_INLINE int32_t mf_conv_sxtb16_ror8(int32_t x) {
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
#else
/* Portable C of the instructions: the generic kernels use it (through MF_CONV_DSP) when
 * MF_CONV_EMULATE_DSP is defined, and the *_dsp kernels (generated only for Cortex-M4/M7) always do when
 * they are compiled without the DSP extension, e.g. on a host for tests. */
#if defined(MF_CONV_EMULATE_DSP)
#define MF_CONV_DSP 1
#endif
/* Bytes 0 and 2 of x, sign-extended into the two halves of the result. */
MF_INLINE int32_t mf_conv_sxtb16(int32_t x) {
    const uint32_t u = (uint32_t)x;
    const uint32_t lo = (uint32_t)(((int32_t)(u & 0xffu) ^ 0x80) - 0x80) & 0xffffu;
    const uint32_t hi = (uint32_t)(((int32_t)((u >> 16) & 0xffu) ^ 0x80) - 0x80) & 0xffffu;
    return (int32_t)(lo | (hi << 16));
}
MF_INLINE int32_t mf_conv_wrap_add(int32_t a, int32_t b) {
    const uint32_t sum = (uint32_t)a + (uint32_t)b;
    int32_t out;
    memcpy(&out, &sum, sizeof out);
    return out;
}
MF_INLINE int32_t mf_conv_half(int32_t x, int upper) {
    const uint32_t h = ((uint32_t)x >> (upper ? 16 : 0)) & 0xffffu;
    return ((int32_t)h ^ 0x8000) - 0x8000;
}
/* acc + a.lo * b.lo and acc + a.hi * b.hi, wrapping like the instructions. */
MF_INLINE int32_t mf_conv_smlabb(int32_t a, int32_t b, int32_t acc) {
    return mf_conv_wrap_add(acc, mf_conv_half(a, 0) * mf_conv_half(b, 0));
}
MF_INLINE int32_t mf_conv_smlatt(int32_t a, int32_t b, int32_t acc) {
    return mf_conv_wrap_add(acc, mf_conv_half(a, 1) * mf_conv_half(b, 1));
}
/* acc + a.lo * b.lo + a.hi * b.hi, wrapping like the instruction. */
MF_INLINE int32_t mf_conv_smlad(int32_t a, int32_t b, int32_t acc) {
    const uint32_t sum = (uint32_t)acc + (uint32_t)(mf_conv_half(a, 0) * mf_conv_half(b, 0)) +
                         (uint32_t)(mf_conv_half(a, 1) * mf_conv_half(b, 1));
    int32_t out;
    memcpy(&out, &sum, sizeof out);
    return out;
}
#endif

#if !defined(__ARM_FEATURE_DSP)
MF_INLINE int32_t mf_conv_sxtb16_ror8(int32_t x) {
    const uint32_t u = (uint32_t)x;
    const uint32_t r = (u >> 8) | (u << 24);
    int32_t out;
    memcpy(&out, &r, sizeof out);
    return mf_conv_sxtb16(out);
}
#endif

MF_INLINE int32_t mf_conv_load4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4); /* one (unaligned) LDR on Cortex-M4/M7 */
    return v;
}

/* Two's-complement int32 of a uint32 (what the int32 accumulator of TFLM holds after wrapping). */
MF_INLINE int32_t mf_conv_wrap(uint32_t u) {
    int32_t out;
    memcpy(&out, &u, sizeof out);
    return out;
}

/* Output byte of channel oc from the sum of x * w (zero point already folded into the bias). */
MF_INLINE int8_t mf_conv_out_s8(const mf_requant_s8 *q, int32_t oc, int32_t sum) {
    const int32_t i = oc * q->per_channel;
    int32_t acc = mf_conv_wrap((uint32_t)sum + (uint32_t)q->bias[oc]);
    acc = mf_requantize(acc, q->multiplier[i], q->shift[i]);
    /* clamp(acc + offset, lo, hi) without the addition overflowing */
    acc = mf_clamp_i32(acc, q->act_min - q->output_offset, q->act_max - q->output_offset);
    return (int8_t)(acc + q->output_offset);
}

/* (a * b + 2^31) >> 32: SMMULR on Cortex-M4/M7. */
#if defined(__ARM_FEATURE_DSP)
MF_INLINE int32_t mf_conv_smmulr(int32_t a, int32_t b) {
    int32_t r;
    __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
#else
MF_INLINE int32_t mf_conv_smmulr(int32_t a, int32_t b) {
    return (int32_t)(((int64_t)a * b + ((int64_t)1 << 31)) >> 32);
}
#endif

/* mf_conv_out_s8 with the constants f = q->fq + 6 * oc (see mf_requant_s8.fq; the generator proved that
 * nothing overflows here); lo, hi = act_min, act_max and off = output_offset. */
MF_INLINE int8_t mf_conv_fast_out(const int32_t *f, int32_t sum, int32_t lo, int32_t hi, int32_t off) {
    const int32_t a = mf_conv_wrap((uint32_t)sum + (uint32_t)f[0]);
    int32_t r = mf_conv_smmulr(mf_conv_wrap((uint32_t)a << f[2]), f[1]);
    r = ((r + f[4] + ((r >> 31) & f[5])) >> f[3]) + off;
    r = r < lo ? lo : r;
    return (int8_t)(r > hi ? hi : r);
}

/* ------------------------------------------------------------------------------------------------------
 * Inner products of int8 rows. acc[r * 2 + o] = x_r . w_o over n values. */

MF_INLINE void mf_conv_dot_2x2(const int8_t *x0, const int8_t *x1, const int8_t *w0, const int8_t *w1, int32_t n,
                            int32_t acc[4]) {
    int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0;
    int32_t k = 0;
#if defined(MF_CONV_DSP)
    for (; k + 4 <= n; k += 4) {
        const int32_t xa = mf_conv_load4(x0 + k), xb = mf_conv_load4(x1 + k);
        const int32_t wa = mf_conv_load4(w0 + k), wb = mf_conv_load4(w1 + k);
        const int32_t xa02 = mf_conv_sxtb16(xa), xa13 = mf_conv_sxtb16_ror8(xa);
        const int32_t xb02 = mf_conv_sxtb16(xb), xb13 = mf_conv_sxtb16_ror8(xb);
        const int32_t wa02 = mf_conv_sxtb16(wa), wa13 = mf_conv_sxtb16_ror8(wa);
        const int32_t wb02 = mf_conv_sxtb16(wb), wb13 = mf_conv_sxtb16_ror8(wb);
        a00 = mf_conv_smlad(xa13, wa13, mf_conv_smlad(xa02, wa02, a00));
        a01 = mf_conv_smlad(xa13, wb13, mf_conv_smlad(xa02, wb02, a01));
        a10 = mf_conv_smlad(xb13, wa13, mf_conv_smlad(xb02, wa02, a10));
        a11 = mf_conv_smlad(xb13, wb13, mf_conv_smlad(xb02, wb02, a11));
    }
#endif
    for (; k < n; ++k) {
        const int32_t xa = x0[k], xb = x1[k], wa = w0[k], wb = w1[k];
        a00 += xa * wa;
        a01 += xa * wb;
        a10 += xb * wa;
        a11 += xb * wb;
    }
    acc[0] = a00;
    acc[1] = a01;
    acc[2] = a10;
    acc[3] = a11;
}

MF_INLINE void mf_conv_dot_1x2(const int8_t *x0, const int8_t *w0, const int8_t *w1, int32_t n, int32_t acc[2]) {
    int32_t a0 = 0, a1 = 0;
    int32_t k = 0;
#if defined(MF_CONV_DSP)
    for (; k + 4 <= n; k += 4) {
        const int32_t x = mf_conv_load4(x0 + k);
        const int32_t wa = mf_conv_load4(w0 + k), wb = mf_conv_load4(w1 + k);
        const int32_t x02 = mf_conv_sxtb16(x), x13 = mf_conv_sxtb16_ror8(x);
        a0 = mf_conv_smlad(x13, mf_conv_sxtb16_ror8(wa), mf_conv_smlad(x02, mf_conv_sxtb16(wa), a0));
        a1 = mf_conv_smlad(x13, mf_conv_sxtb16_ror8(wb), mf_conv_smlad(x02, mf_conv_sxtb16(wb), a1));
    }
#endif
    for (; k < n; ++k) {
        const int32_t x = x0[k];
        a0 += x * w0[k];
        a1 += x * w1[k];
    }
    acc[0] = a0;
    acc[1] = a1;
}

#if defined(MF_CONV_DSP)
/* Four products of the int8 words x (rows x, x + stride) and w (weight rows w, w + stride) into a00..a11. */
#define MF_CONV_MAC4(x, w, stride, a00, a01, a10, a11)                                                  \
    do {                                                                                                \
        const int32_t wa_ = mf_conv_load4(w), wb_ = mf_conv_load4((w) + (stride));                       \
        const int32_t wa02_ = mf_conv_sxtb16(wa_), wa13_ = mf_conv_sxtb16_ror8(wa_);                     \
        const int32_t wb02_ = mf_conv_sxtb16(wb_), wb13_ = mf_conv_sxtb16_ror8(wb_);                     \
        const int32_t xa_ = mf_conv_load4(x), xb_ = mf_conv_load4((x) + (stride));                       \
        const int32_t xa02_ = mf_conv_sxtb16(xa_), xa13_ = mf_conv_sxtb16_ror8(xa_);                     \
        a00 = mf_conv_smlad(xa13_, wa13_, mf_conv_smlad(xa02_, wa02_, a00));                             \
        a01 = mf_conv_smlad(xa13_, wb13_, mf_conv_smlad(xa02_, wb02_, a01));                             \
        const int32_t xb02_ = mf_conv_sxtb16(xb_), xb13_ = mf_conv_sxtb16_ror8(xb_);                     \
        a10 = mf_conv_smlad(xb13_, wa13_, mf_conv_smlad(xb02_, wa02_, a10));                             \
        a11 = mf_conv_smlad(xb13_, wb13_, mf_conv_smlad(xb02_, wb02_, a11));                             \
    } while (0)
#endif

/* Two rows (x, x + depth) of a matrix product against all weight rows, with q->fq: y0 and y0 + outs. */
#if defined(__GNUC__) && !defined(__clang__)
/* gcc's pre-allocation scheduling hoists all loads of the unrolled loop and spills the accumulators. */
__attribute__((optimize("no-schedule-insns")))
#endif
static void mf_fc_2rows_fast(const int8_t *x, int8_t *y0, int32_t depth, const int8_t *w, int32_t outs,
                             const mf_requant_s8 *q) {
    const int32_t off = q->output_offset, lo = q->act_min, hi = q->act_max;
    const int32_t *f = q->fq;
    int8_t *y1 = y0 + outs;
    int32_t oc = 0;
    for (; oc + 2 <= outs; oc += 2, w += 2 * depth, f += 12, y0 += 2, y1 += 2) {
        int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0;
        const int8_t *xp = x, *wp = w;
        int32_t k = depth;
#if defined(MF_CONV_DSP)
        for (; k >= 8; k -= 8, xp += 8, wp += 8) {
            MF_CONV_MAC4(xp, wp, depth, a00, a01, a10, a11);
            MF_CONV_MAC4(xp + 4, wp + 4, depth, a00, a01, a10, a11);
        }
        if (k >= 4) {
            MF_CONV_MAC4(xp, wp, depth, a00, a01, a10, a11);
            k -= 4, xp += 4, wp += 4;
        }
#endif
        for (; k > 0; --k, ++xp, ++wp) {
            const int32_t xa = xp[0], xb = xp[depth], wa = wp[0], wb = wp[depth];
            a00 += xa * wa;
            a01 += xa * wb;
            a10 += xb * wa;
            a11 += xb * wb;
        }
        y0[0] = mf_conv_fast_out(f, a00, lo, hi, off);
        y0[1] = mf_conv_fast_out(f + 6, a01, lo, hi, off);
        y1[0] = mf_conv_fast_out(f, a10, lo, hi, off);
        y1[1] = mf_conv_fast_out(f + 6, a11, lo, hi, off);
    }
    if (oc < outs) {
        int32_t acc[4];
        mf_conv_dot_2x2(x, x + depth, w, w, depth, acc);
        y0[0] = mf_conv_fast_out(f, acc[0], lo, hi, off);
        y1[0] = mf_conv_fast_out(f, acc[2], lo, hi, off);
    }
}

/* mf_conv_rows_s8 with q->fq. */
static void mf_conv_rows_fast(const int8_t *x0, const int8_t *x1, int8_t *y0, int8_t *y1, int32_t depth,
                              const int8_t *w, int32_t oc_begin, int32_t oc_end, const mf_requant_s8 *q) {
    const int32_t off = q->output_offset, lo = q->act_min, hi = q->act_max;
    const int32_t *f = q->fq + 6 * oc_begin;
    int32_t acc[4];
    int32_t oc = oc_begin;
    if (x1) {
        for (; oc + 2 <= oc_end; oc += 2, w += 2 * depth, f += 12, y0 += 2, y1 += 2) {
            mf_conv_dot_2x2(x0, x1, w, w + depth, depth, acc);
            y0[0] = mf_conv_fast_out(f, acc[0], lo, hi, off);
            y0[1] = mf_conv_fast_out(f + 6, acc[1], lo, hi, off);
            y1[0] = mf_conv_fast_out(f, acc[2], lo, hi, off);
            y1[1] = mf_conv_fast_out(f + 6, acc[3], lo, hi, off);
        }
        if (oc < oc_end) {
            mf_conv_dot_2x2(x0, x1, w, w, depth, acc);
            y0[0] = mf_conv_fast_out(f, acc[0], lo, hi, off);
            y1[0] = mf_conv_fast_out(f, acc[2], lo, hi, off);
        }
        return;
    }
    for (; oc + 2 <= oc_end; oc += 2, w += 2 * depth, f += 12, y0 += 2) {
        mf_conv_dot_1x2(x0, w, w + depth, depth, acc);
        y0[0] = mf_conv_fast_out(f, acc[0], lo, hi, off);
        y0[1] = mf_conv_fast_out(f + 6, acc[1], lo, hi, off);
    }
    if (oc < oc_end) {
        mf_conv_dot_1x2(x0, w, w, depth, acc);
        y0[0] = mf_conv_fast_out(f, acc[0], lo, hi, off);
    }
}

/* y_r[oc - oc_begin] for rows r < (x1 ? 2 : 1) and oc in [oc_begin, oc_end): the output of channel oc for
 * the input row x_r of `depth` values; w points at the weight row of oc_begin (rows are contiguous). */
static void mf_conv_rows_s8(const int8_t *x0, const int8_t *x1, int8_t *y0, int8_t *y1, int32_t depth,
                            const int8_t *w, int32_t oc_begin, int32_t oc_end, const mf_requant_s8 *params) {
    /* a local copy: the int8 output stores may alias anything, so fields read through a pointer would be
     * reloaded after every store */
    const mf_requant_s8 rq = *params, *q = &rq;
    if (rq.fq) {
        mf_conv_rows_fast(x0, x1, y0, y1, depth, w, oc_begin, oc_end, q);
        return;
    }
    int32_t acc[4];
    int32_t oc = oc_begin;
    for (; oc + 2 <= oc_end; oc += 2, w += 2 * depth, y0 += 2) {
        if (x1) {
            mf_conv_dot_2x2(x0, x1, w, w + depth, depth, acc);
            y1[0] = mf_conv_out_s8(q, oc, acc[2]);
            y1[1] = mf_conv_out_s8(q, oc + 1, acc[3]);
            y1 += 2;
        } else {
            mf_conv_dot_1x2(x0, w, w + depth, depth, acc);
        }
        y0[0] = mf_conv_out_s8(q, oc, acc[0]);
        y0[1] = mf_conv_out_s8(q, oc + 1, acc[1]);
    }
    if (oc < oc_end) { /* an odd last channel: its row twice */
        if (x1) {
            mf_conv_dot_2x2(x0, x1, w, w, depth, acc);
            y1[0] = mf_conv_out_s8(q, oc, acc[2]);
        } else {
            mf_conv_dot_1x2(x0, w, w, depth, acc);
        }
        y0[0] = mf_conv_out_s8(q, oc, acc[0]);
    }
}

/* ------------------------------------------------------------------------------------------------------
 * FULLY_CONNECTED / 1x1 convolution: two rows at a time against two weight rows at a time. */

void mf_fc_s8(const mf_fc_params *p, const int8_t *input, int8_t *output) {
    const int32_t depth = p->in_features, outs = p->out_features;
    const int8_t *w = (const int8_t *)p->weights;
    int32_t r = 0;
    for (; r + 2 <= p->rows; r += 2) {
        const int8_t *x = input + r * depth;
        int8_t *y = output + r * outs;
        if (p->q.fq)
            mf_fc_2rows_fast(x, y, depth, w, outs, &p->q);
        else
            mf_conv_rows_s8(x, x + depth, y, y + outs, depth, w, 0, outs, &p->q);
    }
    if (r < p->rows) mf_conv_rows_s8(input + r * depth, 0, output + r * outs, 0, depth, w, 0, outs, &p->q);
}

/* ------------------------------------------------------------------------------------------------------
 * Cortex-M4/M7 kernels (*_dsp): the code generator picks them for those targets only, when its checks
 * prove the short requantization below exact (mf_requant_s8.dq).
 *
 * SMLAD multiplies two pairs of int16, so int8 data must be widened first (SXTB16: two instructions per
 * word). The rows of a block (two input rows, or two gathered patches) are widened once into scratch, so
 * that costs once per input value instead of once per output channel; the weights stay int8 in flash (half
 * the size of int16) and are widened as they are loaded, each widened weight word then serving both rows.
 * Per 4 depths and 2 rows x 2 channels: one LDM of 4 widened words, one LDRD of 2 weight words, 4 SXTB16
 * and 8 SMLAD for 16 MACs.
 *
 * Weights (int32 words, re-laid-out at generation time): for each pair of channels (2j, 2j + 1; a zero
 * channel completes an odd count) and each group of 4 depths (zeros past the depth, up to an even number
 * of groups), the word of channel
 * 2j then that of 2j + 1, holding the bytes of depths 4g .. 4g + 3 in little-endian order.
 * Scratch rows: per group, row 0's int16 pairs (depths 4g, 4g + 2) and (4g + 1, 4g + 3), then row 1's;
 * SXTB16 of a weight word and of it rotated by 8 pair its bytes the same way.
 *
 * Requantization (dq = [out_c][6] {bias, multiplier, L, E, K, M}, see mf_requant_s8): the accumulator
 * starts at the bias; out = clamp(SMMLAR(acc << L, multiplier, K + ((acc >> 31) & M)) >> E). */

/* (acc * 2^32 + a * b + 2^31) >> 32: SMMLAR. */
#if defined(__ARM_FEATURE_DSP)
MF_INLINE int32_t mf_conv_smmlar(int32_t a, int32_t b, int32_t acc) {
    int32_t r;
    __asm__("smmlar %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
    return r;
}
#else
MF_INLINE int32_t mf_conv_smmlar(int32_t a, int32_t b, int32_t acc) {
    return (int32_t)(((int64_t)acc * ((int64_t)1 << 32) + (int64_t)a * b + ((int64_t)1 << 31)) >> 32);
}
#endif

/* r clamped to [lo, hi]; full_range: that range is all of int8, one SSAT on the DSP. */
MF_INLINE int32_t mf_dsp_clamp(int32_t r, int32_t lo, int32_t hi, int full_range) {
    if (full_range) {
#if defined(__ARM_FEATURE_DSP)
        return __ssat(r, 8);
#else
        return r < -128 ? -128 : (r > 127 ? 127 : r);
#endif
    }
    r = r < lo ? lo : r;
    return r > hi ? hi : r;
}

/* Output byte of accumulator a (bias included) with the channel constants f (dq + 6 * oc). */
MF_INLINE int32_t mf_dsp_out(const int32_t *f, int32_t a, int32_t lo, int32_t hi, int full_range) {
    return mf_dsp_clamp(mf_conv_smmlar(mf_conv_wrap((uint32_t)a << f[2]), f[1], f[4] + ((a >> 31) & f[5])) >> f[3],
                        lo, hi, full_range);
}

/* Widen rows x0 and x1 (depth values each) into s in the scratch order above, with zeros past the depth up
 * to a multiple of 8 (an even number of groups, which the inner loop takes two at a time). */
static void mf_mm_widen2(const int8_t *x0, const int8_t *x1, int32_t depth, int32_t *s) {
    const int32_t used = (depth + 3) >> 2;
    if (used & 1) { /* an odd number of groups: one more, of zeros */
        int32_t *z = s + 4 * used;
        z[0] = z[1] = z[2] = z[3] = 0;
    }
    int32_t k = 0;
    for (; k + 4 <= depth; k += 4, s += 4) {
        const int32_t a = mf_conv_load4(x0 + k), b = mf_conv_load4(x1 + k);
        s[0] = mf_conv_sxtb16(a);
        s[1] = mf_conv_sxtb16_ror8(a);
        s[2] = mf_conv_sxtb16(b);
        s[3] = mf_conv_sxtb16_ror8(b);
    }
    if (k < depth) { /* the last 1-3 values, then zeros */
        int8_t ta[4] = {0, 0, 0, 0}, tb[4] = {0, 0, 0, 0};
        memcpy(ta, x0 + k, (size_t)(depth - k));
        memcpy(tb, x1 + k, (size_t)(depth - k));
        const int32_t a = mf_conv_load4(ta), b = mf_conv_load4(tb);
        s[0] = mf_conv_sxtb16(a);
        s[1] = mf_conv_sxtb16_ror8(a);
        s[2] = mf_conv_sxtb16(b);
        s[3] = mf_conv_sxtb16_ror8(b);
    }
}

#if defined(__ARM_FEATURE_DSP)
/* One group: 16 MACs into a00 (row 0, channel 0), a10 (row 1, channel 0), a01, a11. r8-r11 hold the widened
 * rows, r12 and lr the two weight words. */
#define MF_MM_GROUP                                     \
    "ldm %[s]!, {r8, r9, r10, r11}\n\t"                 \
    "ldrd r12, lr, [%[w]], #8\n\t"                      \
    "sxtb16 %[t], r12\n\t"                              \
    "sxtb16 r12, r12, ror #8\n\t"                       \
    "smlad %[a00], r8, %[t], %[a00]\n\t"                \
    "smlad %[a10], r10, %[t], %[a10]\n\t"               \
    "sxtb16 %[t], lr\n\t"                               \
    "smlad %[a00], r9, r12, %[a00]\n\t"                 \
    "smlad %[a10], r11, r12, %[a10]\n\t"                \
    "sxtb16 lr, lr, ror #8\n\t"                         \
    "smlad %[a01], r8, %[t], %[a01]\n\t"                \
    "smlad %[a11], r10, %[t], %[a11]\n\t"               \
    "smlad %[a01], r9, lr, %[a01]\n\t"                  \
    "smlad %[a11], r11, lr, %[a11]\n\t"
#endif

/* acc[0..3] (= a00, a01, a10, a11) += the products of `groups` (even, > 0) groups of the widened rows s and
 * the weight words w of one channel pair; returns w past them. gcc's own code for this loop needs a third
 * more instructions (no LDM, separate pointer increments), hence the assembly. */
MF_INLINE const int32_t *mf_mm_pair(const int32_t *s, const int32_t *w, int32_t groups, int32_t acc[4]) {
#if defined(__ARM_FEATURE_DSP)
    int32_t a00 = acc[0], a01 = acc[1], a10 = acc[2], a11 = acc[3], t;
    int32_t n = groups >> 1;
    __asm__("1:\n\t" MF_MM_GROUP MF_MM_GROUP
            "subs %[n], %[n], #1\n\t"
            "bne 1b\n\t"
            : [a00] "+r"(a00), [a01] "+r"(a01), [a10] "+r"(a10), [a11] "+r"(a11), [s] "+r"(s), [w] "+r"(w),
              [n] "+r"(n), [t] "=&r"(t)
            :
            : "r8", "r9", "r10", "r11", "r12", "lr", "cc", "memory");
    acc[0] = a00, acc[1] = a01, acc[2] = a10, acc[3] = a11;
#else
    int32_t a00 = acc[0], a01 = acc[1], a10 = acc[2], a11 = acc[3];
    for (int32_t g = groups; g > 0; --g, s += 4, w += 2) {
        int32_t w02 = mf_conv_sxtb16(w[0]), w13 = mf_conv_sxtb16_ror8(w[0]);
        a00 = mf_conv_smlad(s[1], w13, mf_conv_smlad(s[0], w02, a00));
        a10 = mf_conv_smlad(s[3], w13, mf_conv_smlad(s[2], w02, a10));
        w02 = mf_conv_sxtb16(w[1]);
        w13 = mf_conv_sxtb16_ror8(w[1]);
        a01 = mf_conv_smlad(s[1], w13, mf_conv_smlad(s[0], w02, a01));
        a11 = mf_conv_smlad(s[3], w13, mf_conv_smlad(s[2], w02, a11));
    }
    acc[0] = a00, acc[1] = a01, acc[2] = a10, acc[3] = a11;
#endif
    return w;
}

#if defined(__ARM_FEATURE_DSP)
/* One group of one int8 row, widened on the fly: 8 MACs into a0 (channel 0) and a1 (channel 1). */
#define MF_MM1_GROUP                                    \
    "ldr r8, [%[x]], #4\n\t"                            \
    "ldrd r12, lr, [%[w]], #8\n\t"                      \
    "sxtb16 r9, r8, ror #8\n\t"                         \
    "sxtb16 r8, r8\n\t"                                 \
    "sxtb16 %[t], r12\n\t"                              \
    "sxtb16 r12, r12, ror #8\n\t"                       \
    "smlad %[a0], r8, %[t], %[a0]\n\t"                  \
    "smlad %[a0], r9, r12, %[a0]\n\t"                   \
    "sxtb16 %[t], lr\n\t"                               \
    "sxtb16 lr, lr, ror #8\n\t"                         \
    "smlad %[a1], r8, %[t], %[a1]\n\t"                  \
    "smlad %[a1], r9, lr, %[a1]\n\t"
#endif

/* acc[0..1] += the products of `blocks` (> 0) blocks of 8 int8 values of x with the weight words w of one
 * channel pair; returns w past them. */
MF_INLINE const int32_t *mf_mm_pair1(const int8_t *x, const int32_t *w, int32_t blocks, int32_t acc[2]) {
    int32_t a0 = acc[0], a1 = acc[1];
#if defined(__ARM_FEATURE_DSP)
    int32_t t;
    __asm__("1:\n\t" MF_MM1_GROUP MF_MM1_GROUP
            "subs %[n], %[n], #1\n\t"
            "bne 1b\n\t"
            : [a0] "+r"(a0), [a1] "+r"(a1), [x] "+r"(x), [w] "+r"(w), [n] "+r"(blocks), [t] "=&r"(t)
            :
            : "r8", "r9", "r12", "lr", "cc", "memory");
#else
    for (int32_t g = 2 * blocks; g > 0; --g, x += 4, w += 2) {
        const int32_t v = mf_conv_load4(x), x02 = mf_conv_sxtb16(v), x13 = mf_conv_sxtb16_ror8(v);
        a0 = mf_conv_smlad(x13, mf_conv_sxtb16_ror8(w[0]), mf_conv_smlad(x02, mf_conv_sxtb16(w[0]), a0));
        a1 = mf_conv_smlad(x13, mf_conv_sxtb16_ror8(w[1]), mf_conv_smlad(x02, mf_conv_sxtb16(w[1]), a1));
    }
#endif
    acc[0] = a0, acc[1] = a1;
    return w;
}

/* Every output channel of one int8 row x of `depth` values into y0, without scratch: each input word is
 * widened once per channel pair (single rows, e.g. FULLY_CONNECTED on one sample, use every weight once
 * anyway). The last depth % 8 values go through a zero-padded copy (no read past the row). */
MF_INLINE void mf_mm_row(const int8_t *x, int32_t depth, const int32_t *w, const int32_t *f, int32_t outs,
                         int8_t *y0, int32_t lo, int32_t hi, int full_range) {
    const int32_t blocks = depth >> 3, rest = depth & 7;
    int8_t tail[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    memcpy(tail, x + 8 * blocks, (size_t)rest);
    for (int32_t oc = 0; oc < outs; oc += 2, f += 12) {
        int32_t acc[2] = {f[0], oc + 1 < outs ? f[6] : 0};
        if (blocks) w = mf_mm_pair1(x, w, blocks, acc);
        if (rest) w = mf_mm_pair1(tail, w, 1, acc);
        const int32_t o0 = mf_dsp_out(f, acc[0], lo, hi, full_range);
        y0[oc] = (int8_t)o0;
        if (oc + 1 < outs) y0[oc + 1] = (int8_t)mf_dsp_out(f + 6, acc[1], lo, hi, full_range);
    }
}

/* Every output channel of the two widened rows s: y0[oc] and y1[oc] (y1 may equal y0: the same row twice). */
MF_INLINE void mf_mm_rows(const int32_t *s, int32_t groups, const int32_t *w, const int32_t *f, int32_t outs,
                          int8_t *y0, int8_t *y1, int32_t lo, int32_t hi, int full_range) {
    int8_t *const end = y0 + (outs & ~1);
    for (; y0 != end; y0 += 2, y1 += 2, f += 12) {
        int32_t acc[4] = {f[0], f[6], f[0], f[6]};
        w = mf_mm_pair(s, w, groups, acc);
        /* every result before the first store: the int8 stores may alias the constants */
        const int32_t o00 = mf_dsp_out(f, acc[0], lo, hi, full_range);
        const int32_t o10 = mf_dsp_out(f, acc[2], lo, hi, full_range);
        const int32_t o01 = mf_dsp_out(f + 6, acc[1], lo, hi, full_range);
        const int32_t o11 = mf_dsp_out(f + 6, acc[3], lo, hi, full_range);
        y0[0] = (int8_t)o00;
        y0[1] = (int8_t)o01;
        y1[0] = (int8_t)o10;
        y1[1] = (int8_t)o11;
    }
    if (outs & 1) { /* the last channel, paired with the zero channel of the weights */
        int32_t acc[4] = {f[0], 0, f[0], 0};
        mf_mm_pair(s, w, groups, acc);
        const int32_t o00 = mf_dsp_out(f, acc[0], lo, hi, full_range);
        const int32_t o10 = mf_dsp_out(f, acc[2], lo, hi, full_range);
        y0[0] = (int8_t)o00;
        y1[0] = (int8_t)o10;
    }
}

MF_INLINE void mf_fc_s8_dsp_body(const mf_fc_params *p, const int8_t *input, int8_t *output, int32_t *scratch,
                                 int full_range) {
    const int32_t depth = p->in_features, outs = p->out_features, rows = p->rows;
    const int32_t groups = ((depth + 7) >> 3) << 1, lo = p->q.act_min, hi = p->q.act_max;
    const int32_t *const weights = (const int32_t *)p->weights, *const dq = p->q.dq;
    int32_t r = 0;
    for (; r + 2 <= rows; r += 2) {
        const int8_t *x0 = input + r * depth;
        mf_mm_widen2(x0, x0 + depth, depth, scratch);
        int8_t *y0 = output + r * outs;
        mf_mm_rows(scratch, groups, weights, dq, outs, y0, y0 + outs, lo, hi, full_range);
    }
    if (r < rows) /* a single or odd last row */
        mf_mm_row(input + r * depth, depth, weights, dq, outs, output + r * outs, lo, hi, full_range);
}

void mf_fc_s8_dsp(const mf_fc_params *p, const int8_t *input, int8_t *output, int32_t *scratch) {
    if (p->q.act_min == -128 && p->q.act_max == 127)
        mf_fc_s8_dsp_body(p, input, output, scratch, 1);
    else
        mf_fc_s8_dsp_body(p, input, output, scratch, 0);
}

/* ------------------------------------------------------------------------------------------------------
 * General convolution: per output pixel, its input patch of group g (kh x kw x in_c/groups, in the
 * weights' order) is either read in place (when it is one contiguous run of the input) or gathered into
 * scratch with the input zero point outside the image; two pixels share each pass over the weights. */

static const int8_t *mf_conv_patch(const mf_conv_params *p, const int8_t *x, int32_t pixel, int32_t g,
                                   int8_t *patch) {
    const int32_t gin = p->in_c / p->groups;
    const int32_t oy = pixel / p->out_w, ox = pixel % p->out_w;
    const int32_t iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
    const int8_t pad = (int8_t)p->input_zero_point;
    const int32_t row_bytes = p->kw * gin;
    /* taps kx in [kx_lo, kx_hi) are inside the image horizontally */
    int32_t kx_lo = 0, kx_hi = p->kw;
    while (kx_lo < p->kw && ix0 + kx_lo * p->dilation_w < 0) ++kx_lo;
    while (kx_hi > kx_lo && ix0 + (kx_hi - 1) * p->dilation_w >= p->in_w) --kx_hi;
    if (p->kh == 1 && p->groups == 1 && (p->kw == 1 || p->dilation_w == 1) && kx_lo == 0 && kx_hi == p->kw &&
        iy0 >= 0 && iy0 < p->in_h) {
        return x + (iy0 * p->in_w + ix0) * p->in_c; /* contiguous: no copy */
    }
    for (int32_t ky = 0; ky < p->kh; ++ky) {
        const int32_t iy = iy0 + ky * p->dilation_h;
        int8_t *dst = patch + ky * row_bytes;
        if (iy < 0 || iy >= p->in_h || kx_lo >= kx_hi) {
            memset(dst, pad, (size_t)row_bytes);
            continue;
        }
        memset(dst, pad, (size_t)(kx_lo * gin));
        const int8_t *src = x + (iy * p->in_w + ix0) * p->in_c + g * gin;
        if (p->dilation_w == 1 && p->groups == 1) {
            memcpy(dst + kx_lo * gin, src + kx_lo * gin, (size_t)((kx_hi - kx_lo) * gin));
        } else {
            for (int32_t kx = kx_lo; kx < kx_hi; ++kx)
                memcpy(dst + kx * gin, src + kx * p->dilation_w * p->in_c, (size_t)gin);
        }
        memset(dst + kx_hi * gin, pad, (size_t)((p->kw - kx_hi) * gin));
    }
    return patch;
}

void mf_conv_s8(const mf_conv_params *p, const int8_t *input, int8_t *output, int8_t *scratch) {
    const int32_t gin = p->in_c / p->groups, gout = p->out_c / p->groups;
    const int32_t depth = p->kh * p->kw * gin;
    const int32_t pixels = p->out_h * p->out_w;
    const int8_t *w = (const int8_t *)p->weights;
    for (int32_t b = 0; b < p->batches; ++b) {
        const int8_t *x = input + b * p->in_h * p->in_w * p->in_c;
        int8_t *y = output + b * pixels * p->out_c;
        for (int32_t pix = 0; pix < pixels; pix += 2) {
            const int two = pix + 1 < pixels;
            for (int32_t g = 0; g < p->groups; ++g) {
                const int8_t *x0 = mf_conv_patch(p, x, pix, g, scratch);
                const int8_t *x1 = two ? mf_conv_patch(p, x, pix + 1, g, scratch + depth) : 0;
                int8_t *y0 = y + pix * p->out_c + g * gout;
                mf_conv_rows_s8(x0, x1, y0, two ? y0 + p->out_c : 0, depth, w + g * gout * depth, g * gout,
                                (g + 1) * gout, &p->q);
            }
        }
    }
}

/* Cortex-M4/M7 convolution (groups = 1): the patches of two output pixels are widened into scratch, in
 * the weights' order [ky][kx][c], then go through the matrix product above. With in_c a multiple of 4
 * each tap's channels are whole groups, widened straight from the input (the zero point's pair outside
 * it); otherwise the patches are first gathered as int8 (mf_conv_gather) after the widened rows. */

/* The int8 patch of output pixel `pixel` into d ([ky][kx][c], the zero point outside the input): a byte
 * loop, cheaper than a library call per tap for the few channels this is used for. */
static void mf_conv_gather(const mf_conv_params *p, const int8_t *x, int32_t pixel, int8_t *d) {
    int8_t *const start = d;
    const int32_t oy = pixel / p->out_w, ox = pixel - oy * p->out_w;
    const int32_t iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
    const int32_t in_c = p->in_c, in_h = p->in_h, in_w = p->in_w, kw = p->kw;
    const int8_t zp = (int8_t)p->input_zero_point;
    for (int32_t ky = 0; ky < p->kh; ++ky) {
        const int32_t iy = iy0 + ky * p->dilation_h;
        if (iy < 0 || iy >= in_h) {
            for (int8_t *const end = d + kw * in_c; d != end; ++d) *d = zp;
            continue;
        }
        const int8_t *row = x + iy * in_w * in_c;
        if (p->dilation_w == 1 && ix0 >= 0 && ix0 + kw <= in_w) { /* the whole row of taps is one run */
            const int8_t *src = row + ix0 * in_c;
            for (int8_t *const end = d + kw * in_c; d != end; ++d, ++src) *d = *src;
            continue;
        }
        for (int32_t kx = 0; kx < kw; ++kx) {
            const int32_t ix = ix0 + kx * p->dilation_w;
            if (ix >= 0 && ix < in_w) {
                const int8_t *src = row + ix * in_c;
                for (int8_t *const end = d + in_c; d != end; ++d, ++src) *d = *src;
            } else {
                for (int8_t *const end = d + in_c; d != end; ++d) *d = zp;
            }
        }
    }
    /* zeros up to a multiple of 8 (the weights' padding), so that the rows widen without a tail */
    for (int8_t *const end = start + ((d - start + 7) & ~7); d != end; ++d) *d = 0;
}

/* Widen the patch of output pixel `pixel` into slot d (the scratch, + 2 for the second row); in_c % 4 == 0. */
static void mf_conv_widen_taps(const mf_conv_params *p, const int8_t *x, int32_t pixel, int32_t *d) {
    const int32_t oy = pixel / p->out_w, ox = pixel - oy * p->out_w;
    const int32_t iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
    const int32_t in_c = p->in_c, in_h = p->in_h, in_w = p->in_w;
    const int32_t zp = p->input_zero_point;
    const int32_t zw = mf_conv_wrap(((uint32_t)zp & 0xffffu) | ((uint32_t)zp << 16));
    for (int32_t ky = 0; ky < p->kh; ++ky) {
        const int32_t iy = iy0 + ky * p->dilation_h;
        const int row_inside = iy >= 0 && iy < in_h;
        for (int32_t kx = 0; kx < p->kw; ++kx) {
            const int32_t ix = ix0 + kx * p->dilation_w;
            if (row_inside && ix >= 0 && ix < in_w) {
                const int8_t *src = x + (iy * in_w + ix) * in_c, *const end = src + in_c;
                for (; src != end; src += 4, d += 4) {
                    const int32_t v = mf_conv_load4(src);
                    d[0] = mf_conv_sxtb16(v);
                    d[1] = mf_conv_sxtb16_ror8(v);
                }
            } else {
                for (int32_t c = 0; c < in_c; c += 4, d += 4) d[0] = d[1] = zw;
            }
        }
    }
}

MF_INLINE void mf_conv_s8_dsp_body(const mf_conv_params *p, const int8_t *input, int8_t *output, int32_t *scratch,
                                   int full_range) {
    const int32_t depth = p->kh * p->kw * p->in_c, groups = ((depth + 7) >> 3) << 1;
    const int32_t pixels = p->out_h * p->out_w, outs = p->out_c, lo = p->q.act_min, hi = p->q.act_max;
    const int32_t *const weights = (const int32_t *)p->weights, *const dq = p->q.dq;
    int8_t *const patch = (int8_t *)(scratch + 4 * groups); /* two int8 patches, when in_c % 4 != 0 */
    const int32_t padded = 4 * groups;                       /* their length, zeros past the depth */
    const int whole = (p->in_c & 3) == 0;
    for (int32_t b = 0; b < p->batches; ++b) {
        const int8_t *x = input + b * p->in_h * p->in_w * p->in_c;
        int8_t *y = output + b * pixels * outs;
        for (int32_t pix = 0; pix < pixels; pix += 2) {
            /* an odd last pixel is paired with itself: both results land on the same bytes */
            const int32_t next = pix + 1 < pixels ? pix + 1 : pix;
            if (whole) {
                mf_conv_widen_taps(p, x, pix, scratch);
                mf_conv_widen_taps(p, x, next, scratch + 2);
                if ((depth >> 2) & 1) { /* an odd number of groups: one more, of zeros */
                    int32_t *z = scratch + depth;
                    z[0] = z[1] = z[2] = z[3] = 0;
                }
            } else {
                mf_conv_gather(p, x, pix, patch);
                mf_conv_gather(p, x, next, patch + padded);
                mf_mm_widen2(patch, patch + padded, padded, scratch);
            }
            mf_mm_rows(scratch, groups, weights, dq, outs, y + pix * outs, y + next * outs, lo, hi, full_range);
        }
    }
}

void mf_conv_s8_dsp(const mf_conv_params *p, const int8_t *input, int8_t *output, int32_t *scratch) {
    if (p->q.act_min == -128 && p->q.act_max == 127)
        mf_conv_s8_dsp_body(p, input, output, scratch, 1);
    else
        mf_conv_s8_dsp_body(p, input, output, scratch, 0);
}

/* ------------------------------------------------------------------------------------------------------
 * Depthwise convolution. Weights [out_c][kh][kw]; output channel c * depth_multiplier + m reads input
 * channel c. */

/* One output pixel through the general path (any window, taps outside the image read the zero point). */
static void mf_dwconv_pixel_s8(const mf_conv_params *p, const int8_t *x, int8_t *y, int32_t oy, int32_t ox) {
    const int32_t iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
    const int32_t taps = p->kh * p->kw, mult = p->depth_multiplier;
    const int32_t pad = p->input_zero_point;
    const int8_t *w = (const int8_t *)p->weights;
    const mf_requant_s8 q = p->q;
    for (int32_t c = 0; c < p->in_c; ++c) {
        for (int32_t m = 0; m < mult; ++m) {
            const int32_t oc = c * mult + m;
            const int8_t *wo = w + oc * taps;
            int32_t sum = 0;
            for (int32_t ky = 0; ky < p->kh; ++ky) {
                const int32_t iy = iy0 + ky * p->dilation_h;
                const int row_inside = iy >= 0 && iy < p->in_h;
                for (int32_t kx = 0; kx < p->kw; ++kx) {
                    const int32_t ix = ix0 + kx * p->dilation_w;
                    const int32_t v = row_inside && ix >= 0 && ix < p->in_w ? x[(iy * p->in_w + ix) * p->in_c + c] : pad;
                    sum += v * wo[ky * p->kw + kx];
                }
            }
            y[oc] = mf_conv_out_s8(&q, oc, sum);
        }
    }
}

void mf_dwconv_s8(const mf_conv_params *p, const int8_t *input, int8_t *output) {
    for (int32_t b = 0; b < p->batches; ++b) {
        const int8_t *x = input + b * p->in_h * p->in_w * p->in_c;
        int8_t *y = output + b * p->out_h * p->out_w * p->out_c;
        for (int32_t oy = 0; oy < p->out_h; ++oy)
            for (int32_t ox = 0; ox < p->out_w; ++ox)
                mf_dwconv_pixel_s8(p, x, y + (oy * p->out_w + ox) * p->out_c, oy, ox);
    }
}

/* Channels [c0, c0 + n) of one 3x3 output pixel: channel c's taps are rows r_k (k = 0..2) at c, c + col and
 * c + 2 * col; w points at channel c0's nine weights; y at the output of channel c0. */
static void mf_dwconv_3x3_channels(const int8_t *r0, const int8_t *r1, const int8_t *r2, int32_t col,
                                   const int8_t *w, int32_t n, int8_t *y, const mf_requant_s8 *params,
                                   int32_t c0) {
    const mf_requant_s8 q = *params;
    const int32_t col2 = 2 * col;
    if (q.fq) {
        const int32_t off = q.output_offset, lo = q.act_min, hi = q.act_max;
        const int32_t *f = q.fq + 6 * c0;
        for (int32_t c = 0; c < n; ++c, w += 9, f += 6) {
            int32_t sum = r0[c] * w[0] + r0[c + col] * w[1] + r0[c + col2] * w[2];
            sum += r1[c] * w[3] + r1[c + col] * w[4] + r1[c + col2] * w[5];
            sum += r2[c] * w[6] + r2[c + col] * w[7] + r2[c + col2] * w[8];
            y[c] = mf_conv_fast_out(f, sum, lo, hi, off);
        }
        return;
    }
    for (int32_t c = 0; c < n; ++c, w += 9) {
        int32_t sum = r0[c] * w[0] + r0[c + col] * w[1] + r0[c + col2] * w[2];
        sum += r1[c] * w[3] + r1[c + col] * w[4] + r1[c + col2] * w[5];
        sum += r2[c] * w[6] + r2[c + col] * w[7] + r2[c + col2] * w[8];
        y[c] = mf_conv_out_s8(&q, c0 + c, sum);
    }
}

/* Channels of a border pixel are gathered this many at a time (with the zero point outside the input). */
#define MF_DW_CHUNK 32

void mf_dwconv_3x3_s8(const mf_conv_params *p, const int8_t *input, int8_t *output) {
    const int32_t c_count = p->in_c;
    const int32_t row = p->dilation_h * p->in_w * c_count; /* from one kernel row to the next */
    const int32_t col = p->dilation_w * c_count;            /* from one kernel column to the next */
    const int8_t *w = (const int8_t *)p->weights;
    const int8_t pad = (int8_t)p->input_zero_point;
    int8_t patch[9 * MF_DW_CHUNK];
    for (int32_t b = 0; b < p->batches; ++b) {
        const int8_t *x = input + b * p->in_h * p->in_w * c_count;
        int8_t *y = output + b * p->out_h * p->out_w * p->out_c;
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            const int32_t iy0 = oy * p->stride_h - p->pad_top;
            const int rows_inside = iy0 >= 0 && iy0 + 2 * p->dilation_h < p->in_h;
            for (int32_t ox = 0; ox < p->out_w; ++ox, y += p->out_c) {
                const int32_t ix0 = ox * p->stride_w - p->pad_left;
                if (rows_inside && ix0 >= 0 && ix0 + 2 * p->dilation_w < p->in_w) {
                    const int8_t *r0 = x + (iy0 * p->in_w + ix0) * c_count;
                    mf_dwconv_3x3_channels(r0, r0 + row, r0 + 2 * row, col, w, c_count, y, &p->q, 0);
                    continue;
                }
                for (int32_t c0 = 0; c0 < c_count; c0 += MF_DW_CHUNK) {
                    const int32_t n = c_count - c0 < MF_DW_CHUNK ? c_count - c0 : MF_DW_CHUNK;
                    for (int32_t t = 0; t < 9; ++t) {
                        const int32_t iy = iy0 + (t / 3) * p->dilation_h, ix = ix0 + (t % 3) * p->dilation_w;
                        int8_t *dst = patch + t * n;
                        if (iy >= 0 && iy < p->in_h && ix >= 0 && ix < p->in_w)
                            memcpy(dst, x + (iy * p->in_w + ix) * c_count + c0, (size_t)n);
                        else
                            memset(dst, pad, (size_t)n);
                    }
                    mf_dwconv_3x3_channels(patch, patch + 3 * n, patch + 6 * n, n, w + 9 * c0, n, y + c0, &p->q,
                                           c0);
                }
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------------------
 * Cortex-M4/M7 3x3 depthwise (multiplier 1, in_c % 4 == 0). Without the sum of a pair of products that
 * SMLAD needs, each product is one SMLABB or SMLATT: one input word (4 channels) is widened into the pairs
 * (c0, c2) and (c1, c3), and the weights are int16 in flash, per group of 4 channels and per tap the words
 * (w_c0, w_c2) and (w_c1, w_c3), read with one LDRD: per tap and 4 channels, 8 instructions for 4 MACs.
 * Weights and bias of channel c are pre-multiplied by 2^L_c (no shift left per output; the generator
 * checked that they still fit), so the requantization constants (mf_requant_s8.dq) are per group of 4
 * channels the 4 biases, then {multiplier, E, K, M} of each channel. Pixels whose window leaves the input read their outside taps from a buffer of the
 * zero point (a table of 9 tap pointers instead of two strides). */

/* The 4 channels at tap pointer offset c: acc a0..a3 += the tap's products with weight words w[0], w[1]. */
#define MF_DW3_TAP(ptr, wa, wb)                       \
    do {                                              \
        const int32_t v_ = mf_conv_load4(ptr);        \
        const int32_t e_ = mf_conv_sxtb16(v_);        \
        const int32_t o_ = mf_conv_sxtb16_ror8(v_);   \
        a0 = mf_conv_smlabb(e_, wa, a0);              \
        a2 = mf_conv_smlatt(e_, wa, a2);              \
        a1 = mf_conv_smlabb(o_, wb, a1);              \
        a3 = mf_conv_smlatt(o_, wb, a3);              \
    } while (0)

/* Output byte of accumulator a with the constants f = {multiplier, E, K, M} of its channel. */
MF_INLINE int32_t mf_dw_out(const int32_t *f, int32_t a, int32_t lo, int32_t hi, int full_range) {
    return mf_dsp_clamp(mf_conv_smmlar(a, f[0], f[2] + ((a >> 31) & f[3])) >> f[1], lo, hi, full_range);
}

#define MF_DW3_STORE()                                                  \
    do {                                                                \
        const int32_t o0_ = mf_dw_out(f + 4, a0, lo, hi, full_range);   \
        const int32_t o1_ = mf_dw_out(f + 8, a1, lo, hi, full_range);   \
        const int32_t o2_ = mf_dw_out(f + 12, a2, lo, hi, full_range);  \
        const int32_t o3_ = mf_dw_out(f + 16, a3, lo, hi, full_range);  \
        y[0] = (int8_t)o0_;                                             \
        y[1] = (int8_t)o1_;                                             \
        y[2] = (int8_t)o2_;                                             \
        y[3] = (int8_t)o3_;                                             \
    } while (0)

#if defined(__ARM_FEATURE_DSP)
/* One tap of 4 channels at address `at`: 8 instructions for 4 MACs. */
#define MF_DW3_ASM_TAP(at)                      \
    "ldr %[v], " at "\n\t"                     \
    "ldrd %[wa], %[wb], [%[w]], #8\n\t"        \
    "sxtb16 %[e], %[v]\n\t"                    \
    "sxtb16 %[v], %[v], ror #8\n\t"            \
    "smlabb %[a0], %[e], %[wa], %[a0]\n\t"     \
    "smlatt %[a2], %[e], %[wa], %[a2]\n\t"     \
    "smlabb %[a1], %[v], %[wb], %[a1]\n\t"     \
    "smlatt %[a3], %[v], %[wb], %[a3]\n\t"
#endif

/* Channels [0, n) of one output pixel whose window is inside the input: the tap (ky, kx) of channel c is
 * at r0 + ky * row + kx * col + c. */
MF_INLINE void mf_dw3_inside(const int8_t *r0, int32_t row, int32_t col, const int32_t *w, const int32_t *f,
                             int32_t n, int8_t *y, int32_t lo, int32_t hi, int full_range) {
    for (int8_t *const end = y + n; y != end; r0 += 4, f += 20, y += 4) {
        int32_t a0 = f[0], a1 = f[1], a2 = f[2], a3 = f[3];
#if defined(__ARM_FEATURE_DSP)
        /* gcc spills around this many live values; with the taps addressed as [row pointer, col << k] it fits */
        int32_t v, e, wa, wb;
        const int8_t *t;
        __asm__(MF_DW3_ASM_TAP("[%[r]]") MF_DW3_ASM_TAP("[%[r], %[col]]") MF_DW3_ASM_TAP("[%[r], %[col], lsl #1]")
                "add %[t], %[r], %[row]\n\t"
                MF_DW3_ASM_TAP("[%[t]]") MF_DW3_ASM_TAP("[%[t], %[col]]") MF_DW3_ASM_TAP("[%[t], %[col], lsl #1]")
                "add %[t], %[t], %[row]\n\t"
                MF_DW3_ASM_TAP("[%[t]]") MF_DW3_ASM_TAP("[%[t], %[col]]") MF_DW3_ASM_TAP("[%[t], %[col], lsl #1]")
                : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [w] "+r"(w), [v] "=&r"(v),
                  [e] "=&r"(e), [wa] "=&r"(wa), [wb] "=&r"(wb), [t] "=&r"(t)
                : [r] "r"(r0), [row] "r"(row), [col] "r"(col)
                : "memory");
#else
        const int8_t *r = r0;
        MF_DW3_TAP(r, w[0], w[1]);
        MF_DW3_TAP(r + col, w[2], w[3]);
        MF_DW3_TAP(r + 2 * col, w[4], w[5]);
        r += row;
        MF_DW3_TAP(r, w[6], w[7]);
        MF_DW3_TAP(r + col, w[8], w[9]);
        MF_DW3_TAP(r + 2 * col, w[10], w[11]);
        r += row;
        MF_DW3_TAP(r, w[12], w[13]);
        MF_DW3_TAP(r + col, w[14], w[15]);
        MF_DW3_TAP(r + 2 * col, w[16], w[17]);
        w += 18;
#endif
        MF_DW3_STORE();
    }
}

/* The same with a pointer per tap (t[k] + c), for pixels at the border; outside taps point at the zero
 * point buffer and advance with the channels only while they are inside (step[k] = 4 or 0). */
MF_INLINE void mf_dw3_border(const int8_t *const t[9], const int32_t step[9], const int32_t *w,
                             const int32_t *f, int32_t n, int8_t *y, int32_t lo, int32_t hi, int full_range) {
    int32_t off[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
    for (int8_t *const end = y + n; y != end; w += 18, f += 20, y += 4) {
        int32_t a0 = f[0], a1 = f[1], a2 = f[2], a3 = f[3];
        for (int32_t k = 0; k < 9; ++k) {
            MF_DW3_TAP(t[k] + off[k], w[2 * k], w[2 * k + 1]);
            off[k] += step[k];
        }
        MF_DW3_STORE();
    }
}

MF_INLINE void mf_dwconv_3x3_s8_dsp_body(const mf_conv_params *p, const int8_t *input, int8_t *output,
                                        int full_range) {
    const int32_t c_count = p->in_c, lo = p->q.act_min, hi = p->q.act_max;
    const int32_t row = p->dilation_h * p->in_w * c_count, col = p->dilation_w * c_count;
    const int32_t *const w = (const int32_t *)p->weights, *const f = p->q.dq;
    const int8_t zp = (int8_t)p->input_zero_point;
    int8_t zeros[4];
    memset(zeros, zp, sizeof zeros);
    for (int32_t b = 0; b < p->batches; ++b) {
        const int8_t *x = input + b * p->in_h * p->in_w * c_count;
        int8_t *y = output + b * p->out_h * p->out_w * p->out_c;
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            const int32_t iy0 = oy * p->stride_h - p->pad_top;
            const int rows_inside = iy0 >= 0 && iy0 + 2 * p->dilation_h < p->in_h;
            for (int32_t ox = 0; ox < p->out_w; ++ox, y += c_count) {
                const int32_t ix0 = ox * p->stride_w - p->pad_left;
                if (rows_inside && ix0 >= 0 && ix0 + 2 * p->dilation_w < p->in_w) {
                    mf_dw3_inside(x + (iy0 * p->in_w + ix0) * c_count, row, col, w, f, c_count, y, lo, hi,
                                  full_range);
                    continue;
                }
                const int8_t *t[9];
                int32_t step[9];
                for (int32_t k = 0; k < 9; ++k) {
                    const int32_t iy = iy0 + (k / 3) * p->dilation_h, ix = ix0 + (k % 3) * p->dilation_w;
                    const int inside = iy >= 0 && iy < p->in_h && ix >= 0 && ix < p->in_w;
                    t[k] = inside ? x + (iy * p->in_w + ix) * c_count : zeros;
                    step[k] = inside ? 4 : 0;
                }
                mf_dw3_border(t, step, w, f, c_count, y, lo, hi, full_range);
            }
        }
    }
}

void mf_dwconv_3x3_s8_dsp(const mf_conv_params *p, const int8_t *input, int8_t *output) {
    if (p->q.act_min == -128 && p->q.act_max == 127)
        mf_dwconv_3x3_s8_dsp_body(p, input, output, 1);
    else
        mf_dwconv_3x3_s8_dsp_body(p, input, output, 0);
}

/* ------------------------------------------------------------------------------------------------------
 * float32: TFLM's reference order (taps, then channels; the bias added after the sum), float accumulators. */

MF_INLINE float mf_conv_clamp_f32(float v, float lo, float hi) {
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
}

void mf_conv_f32(const mf_conv_params *p, const float *input, float *output) {
    const int32_t gin = p->in_c / p->groups, gout = p->out_c / p->groups;
    const float *w = (const float *)p->weights;
    for (int32_t b = 0; b < p->batches; ++b) {
        const float *x = input + b * p->in_h * p->in_w * p->in_c;
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            for (int32_t ox = 0; ox < p->out_w; ++ox) {
                const int32_t iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
                for (int32_t oc = 0; oc < p->out_c; ++oc) {
                    const int32_t g = oc / gout;
                    const float *wo = w + oc * p->kh * p->kw * gin;
                    float total = 0.0f;
                    for (int32_t ky = 0; ky < p->kh; ++ky) {
                        const int32_t iy = iy0 + ky * p->dilation_h;
                        if (iy < 0 || iy >= p->in_h) continue;
                        for (int32_t kx = 0; kx < p->kw; ++kx) {
                            const int32_t ix = ix0 + kx * p->dilation_w;
                            if (ix < 0 || ix >= p->in_w) continue;
                            const float *xs = x + (iy * p->in_w + ix) * p->in_c + g * gin;
                            const float *ws = wo + (ky * p->kw + kx) * gin;
                            for (int32_t ic = 0; ic < gin; ++ic) total += xs[ic] * ws[ic];
                        }
                    }
                    if (p->fbias) total += p->fbias[oc];
                    *output++ = mf_conv_clamp_f32(total, p->fmin, p->fmax);
                }
            }
        }
    }
}

void mf_fc_f32(const mf_fc_params *p, const float *input, float *output) {
    const float *w = (const float *)p->weights;
    const int32_t depth = p->in_features;
    for (int32_t r = 0; r < p->rows; ++r) {
        const float *x = input + r * depth;
        for (int32_t o = 0; o < p->out_features; ++o) {
            const float *wo = w + o * depth;
            float total = 0.0f;
            for (int32_t k = 0; k < depth; ++k) total += x[k] * wo[k];
            if (p->fbias) total += p->fbias[o];
            *output++ = mf_conv_clamp_f32(total, p->fmin, p->fmax);
        }
    }
}
