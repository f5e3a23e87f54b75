/* CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED kernels (see mf_conv.h for the arithmetic contract). */
#include "mf_conv.h"

/* ------------------------------------------------------------------------------------------------------
 * Dual 16-bit MAC primitives: the Cortex-M DSP extension, or a host emulation of it for tests. */
#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#define MF_CONV_DSP 1
MF_INLINE int32_t mf_conv_sxtb16(int32_t x) { return __sxtb16(x); }
MF_INLINE int32_t mf_conv_smlad(int32_t a, int32_t b, int32_t acc) { return __smlad(a, b, acc); }
/* SXTB16 of x rotated by 8 (bytes 1 and 3) in one instruction: gcc does not fold the rotation itself. */
MF_INLINE int32_t mf_conv_sxtb16_ror8(int32_t x) {
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
#elif defined(MF_CONV_EMULATE_DSP)
#define MF_CONV_DSP 1
/* Bytes 0 and 2 of x, sign-extended into the two halves of the result. */
MF_INLINE int32_t mf_conv_sxtb16(int32_t x) {
    const uint32_t u = (uint32_t)x;
    const uint32_t lo = (uint32_t)(((int32_t)(u & 0xffu) ^ 0x80) - 0x80) & 0xffffu;
    const uint32_t hi = (uint32_t)(((int32_t)((u >> 16) & 0xffu) ^ 0x80) - 0x80) & 0xffffu;
    return (int32_t)(lo | (hi << 16));
}
MF_INLINE int32_t mf_conv_half(int32_t x, int upper) {
    const uint32_t h = ((uint32_t)x >> (upper ? 16 : 0)) & 0xffffu;
    return ((int32_t)h ^ 0x8000) - 0x8000;
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

#if defined(MF_CONV_EMULATE_DSP)
MF_INLINE int32_t mf_conv_sxtb16_ror8(int32_t x) {
    const uint32_t u = (uint32_t)x;
    const uint32_t r = (u >> 8) | (u << 24);
    int32_t out;
    memcpy(&out, &r, sizeof out);
    return mf_conv_sxtb16(out);
}
#endif

#if defined(MF_CONV_DSP)
MF_INLINE int32_t mf_conv_load4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4); /* one (unaligned) LDR on Cortex-M4/M7 */
    return v;
}
#endif

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

void mf_dwconv_f32(const mf_conv_params *p, const float *input, float *output) {
    const float *w = (const float *)p->weights;
    const int32_t taps = p->kh * p->kw;
    for (int32_t b = 0; b < p->batches; ++b) {
        const float *x = input + b * p->in_h * p->in_w * p->in_c;
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            for (int32_t ox = 0; ox < p->out_w; ++ox) {
                const int32_t iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
                for (int32_t oc = 0; oc < p->out_c; ++oc) {
                    const int32_t c = oc / p->depth_multiplier;
                    float total = 0.0f;
                    for (int32_t ky = 0; ky < p->kh; ++ky) {
                        const int32_t iy = iy0 + ky * p->dilation_h;
                        if (iy < 0 || iy >= p->in_h) continue;
                        for (int32_t kx = 0; kx < p->kw; ++kx) {
                            const int32_t ix = ix0 + kx * p->dilation_w;
                            if (ix < 0 || ix >= p->in_w) continue;
                            total += x[(iy * p->in_w + ix) * p->in_c + c] * w[oc * taps + ky * p->kw + kx];
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
