/* CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED kernels (see mf_conv.h for the arithmetic contract). */
#include "mf_conv.h"

#include "mf_dsp.h"

/* Output byte of channel oc from the sum of x * w (zero point already folded into the bias). */
MF_INLINE int8_t mf_conv_out_s8(const mf_requant_s8 *q, int32_t oc, int32_t sum) {
    const int32_t i = oc * q->per_channel;
    int32_t acc = mf_conv_wrap((uint32_t)sum + (uint32_t)q->bias[oc]);
    acc = mf_requantize(acc, q->multiplier[i], q->shift[i]);
    /* clamp(acc + offset, lo, hi) without the addition overflowing */
    acc = mf_clamp_i32(acc, q->act_min - q->output_offset, q->act_max - q->output_offset);
    return (int8_t)(acc + q->output_offset);
}

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
/* Four products of the int8 words x (rows x, x + stride) and w (weight rows w, w + pitch) into a00..a11. */
#define MF_CONV_MAC4(x, w, stride, pitch, a00, a01, a10, a11)                                           \
    do {                                                                                                \
        const int32_t wa_ = mf_conv_load4(w), wb_ = mf_conv_load4((w) + (pitch));                        \
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

/* Two rows (x, x + depth) of a matrix product against all weight rows (`pitch` bytes apart: depth, or more
 * when the rows are the first columns of a wider matrix), with q->fq: y0 and y0 + outs. */
#if defined(__GNUC__) && !defined(__clang__)
/* gcc's pre-allocation scheduling hoists all loads of the unrolled loop and spills the accumulators. */
__attribute__((optimize("no-schedule-insns")))
#endif
static void mf_fc_2rows_fast(const int8_t *x, int8_t *y0, int32_t depth, const int8_t *w, int32_t pitch,
                             int32_t outs, const mf_requant_s8 *q) {
    const int32_t off = q->output_offset, lo = q->act_min, hi = q->act_max;
    const int32_t *f = q->fq;
    int8_t *y1 = y0 + outs;
    int32_t oc = 0;
    for (; oc + 2 <= outs; oc += 2, w += 2 * pitch, f += 12, y0 += 2, y1 += 2) {
        int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0;
        const int8_t *xp = x, *wp = w;
        int32_t k = depth;
#if defined(MF_CONV_DSP)
        for (; k >= 8; k -= 8, xp += 8, wp += 8) {
            MF_CONV_MAC4(xp, wp, depth, pitch, a00, a01, a10, a11);
            MF_CONV_MAC4(xp + 4, wp + 4, depth, pitch, a00, a01, a10, a11);
        }
        if (k >= 4) {
            MF_CONV_MAC4(xp, wp, depth, pitch, a00, a01, a10, a11);
            k -= 4, xp += 4, wp += 4;
        }
#endif
        for (; k > 0; --k, ++xp, ++wp) {
            const int32_t xa = xp[0], xb = xp[depth], wa = wp[0], wb = wp[pitch];
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
                              const int8_t *w, int32_t pitch, int32_t oc_begin, int32_t oc_end, const mf_requant_s8 *q) {
    const int32_t off = q->output_offset, lo = q->act_min, hi = q->act_max;
    const int32_t *f = q->fq + 6 * oc_begin;
    int32_t acc[4];
    int32_t oc = oc_begin;
    if (x1) {
        for (; oc + 2 <= oc_end; oc += 2, w += 2 * pitch, f += 12, y0 += 2, y1 += 2) {
            mf_conv_dot_2x2(x0, x1, w, w + pitch, depth, acc);
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
    for (; oc + 2 <= oc_end; oc += 2, w += 2 * pitch, f += 12, y0 += 2) {
        mf_conv_dot_1x2(x0, w, w + pitch, depth, acc);
        y0[0] = mf_conv_fast_out(f, acc[0], lo, hi, off);
        y0[1] = mf_conv_fast_out(f + 6, acc[1], lo, hi, off);
    }
    if (oc < oc_end) {
        mf_conv_dot_1x2(x0, w, w, depth, acc);
        y0[0] = mf_conv_fast_out(f, acc[0], lo, hi, off);
    }
}

/* y_r[oc - oc_begin] for rows r < (x1 ? 2 : 1) and oc in [oc_begin, oc_end): the output of channel oc for
 * the input row x_r of `depth` values; w points at the weight row of oc_begin, the next rows `pitch` bytes
 * apart. */
static void mf_conv_rows_s8(const int8_t *x0, const int8_t *x1, int8_t *y0, int8_t *y1, int32_t depth,
                            const int8_t *w, int32_t pitch, int32_t oc_begin, int32_t oc_end, const mf_requant_s8 *params) {
    /* a local copy: the int8 output stores may alias anything, so fields read through a pointer would be
     * reloaded after every store */
    const mf_requant_s8 rq = *params, *q = &rq;
    if (rq.fq) {
        mf_conv_rows_fast(x0, x1, y0, y1, depth, w, pitch, oc_begin, oc_end, q);
        return;
    }
    int32_t acc[4];
    int32_t oc = oc_begin;
    for (; oc + 2 <= oc_end; oc += 2, w += 2 * pitch, y0 += 2) {
        if (x1) {
            mf_conv_dot_2x2(x0, x1, w, w + pitch, depth, acc);
            y1[0] = mf_conv_out_s8(q, oc, acc[2]);
            y1[1] = mf_conv_out_s8(q, oc + 1, acc[3]);
            y1 += 2;
        } else {
            mf_conv_dot_1x2(x0, w, w + pitch, depth, acc);
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
    const int32_t pitch = p->weight_pitch ? p->weight_pitch : depth;
    const int8_t *w = (const int8_t *)p->weights;
    int32_t r = 0;
    for (; r + 2 <= p->rows; r += 2) {
        const int8_t *x = input + r * depth;
        int8_t *y = output + r * outs;
        if (p->q.fq)
            mf_fc_2rows_fast(x, y, depth, w, pitch, outs, &p->q);
        else
            mf_conv_rows_s8(x, x + depth, y, y + outs, depth, w, pitch, 0, outs, &p->q);
    }
    if (r < p->rows) mf_conv_rows_s8(input + r * depth, 0, output + r * outs, 0, depth, w, pitch, 0, outs, &p->q);
}

/* ------------------------------------------------------------------------------------------------------
 * Cortex-M4/M7 kernels (*_dsp): the code generator picks them for those targets only, when its checks
 * prove the short requantization below exact (mf_requant_s8.dq).
 *
 * SMLAD multiplies two pairs of int16, so int8 data must be widened first (SXTB16: two instructions per
 * word). The input rows of a block (four rows or four gathered patches; one row for a single-row matrix
 * product) are widened once into scratch, so that costs once per input value instead of once per output
 * channel; the weights stay int8 in flash (half the size of int16) and are widened as they are loaded.
 *
 * Rows kernel (mf_mm_rows4: matrices of two rows or more, convolutions): four rows x one channel a pass,
 * each widened weight word serving the four rows. Per 8 depths: one LDRD of two weight words, 4 SXTB16,
 * 4 LDM of 4 widened words and 16 SMLAD for 32 MACs (two rows x two channels take 14 instructions for 16
 * MACs; more rows or channels than these four accumulators do not fit the 14 registers).
 * Cols kernel (mf_mm_cols4: a single row, e.g. FULLY_CONNECTED on one sample, where each weight is used
 * once): one row x four channels a pass sharing each load of the widened row; per 4 depths one LDRD of the
 * row, one LDM of the 4 channels' weight words, 8 SXTB16 and 8 SMLAD for 16 MACs. Its *_int8 variants
 * read the int8 row itself (no scratch) and widen it in every pass: one LDR and 2 SXTB16 for the LDRD.
 *
 * Scratch: per group of 4 depths g (an even number of groups, zeros past the depth), for each row of the
 * block the int16 pairs (4g, 4g + 2) and (4g + 1, 4g + 3) of that row; SXTB16 of a weight word and of it
 * rotated by 8 pair its bytes the same way.
 *
 * Weights and requantization constants are one stream of int32 words (laid out by the generator,
 * ops/conv.py dsp_stream), read once per block of rows, in order:
 *   rows kernel: per output channel, its bias 4 times (where the 4 accumulators start), its weight words
 *     (int8 depths 4g .. 4g + 3, little-endian; zeros past the depth), then {multiplier, L, E, K, M};
 *   cols kernel: per block of 4 channels (the last channel repeated to fill the last block), the 4 biases,
 *     per group the 4 channels' weight words, then {multiplier, L, E, K, M} of each channel.
 * Requantization (see mf_requant_s8.dq): out = clamp(SMMLAR(acc << L, multiplier, K + ((acc >> 31) & M)) >> E). */

/* r clamped to [lo, hi] (full_range: that range is all of int8), for the portable C of the *_dsp kernels;
 * their assembly clamps with SSAT, or SSUB8/SEL. */
MF_INLINE int32_t mf_dsp_clamp(int32_t r, int32_t lo, int32_t hi, int full_range) {
    if (full_range)
        return r < -128 ? -128 : (r > 127 ? 127 : r);
    r = r < lo ? lo : r;
    return r > hi ? hi : r;
}

/* Groups of 4 depths of a widened row of `depth` values: an even number (the kernels take two a step). */
MF_INLINE int32_t mf_mm_groups(int32_t depth) {
    return ((depth + 7) >> 3) << 1;
}

/* Widen `words` words of int8 at x into s in the scratch order above: the two words of group g at
 * s + g * stride (stride = 2 * the rows of the block); returns s past them. */
MF_INLINE int32_t *mf_mm_widen_words(const int8_t *x, int32_t words, int32_t *s, int32_t stride) {
#if defined(__ARM_FEATURE_DSP)
    if (stride == 8 && words > 0) { /* a block of 4 rows (6 instructions a word, gcc's loop takes 10) */
        int32_t v, a, b;
        /* volatile: it writes through s, and callers may ignore the pointer returned */
        __asm__ volatile("1: ldr    %[v], [%[x]], #4\n\t"
                         "sxtb16 %[a], %[v]\n\t"
                         "sxtb16 %[b], %[v], ror #8\n\t"
                         "strd   %[a], %[b], [%[s]], #32\n\t"
                         "subs   %[n], %[n], #1\n\t"
                         "bne    1b"
                         : [v] "=&r"(v), [a] "=&r"(a), [b] "=&r"(b), [x] "+r"(x), [s] "+r"(s), [n] "+r"(words)
                         :
                         : "cc", "memory");
        return s;
    }
#endif
    for (; words > 0; --words, x += 4, s += stride) {
        const int32_t v = mf_conv_load4(x);
        s[0] = mf_conv_sxtb16(v);
        s[1] = mf_conv_sxtb16_ror8(v);
    }
    return s;
}

/* Widen row x (depth values) into s, as mf_mm_widen_words, with zeros past the depth up to `groups`
 * groups. */
static void mf_mm_widen(const int8_t *x, int32_t depth, int32_t groups, int32_t *s, int32_t stride) {
    int32_t *const end = s + groups * stride;
    s = mf_mm_widen_words(x, depth >> 2, s, stride);
    if (depth & 3) { /* the last 1-3 values, then zeros */
        int8_t t[4] = {0, 0, 0, 0};
        memcpy(t, x + (depth & ~3), (size_t)(depth & 3));
        s = mf_mm_widen_words(t, 1, s, stride);
    }
    for (; s != end; s += stride) s[0] = s[1] = 0;
}

/* How a pass leaves its 4 results: requantized to int8 and clamped to [lo, hi] or to all of int8, or as the
 * raw int32 accumulators (for dynamic fixed point: y then addresses int32 values, d1..d3 in bytes, and
 * the stream holds no requantization constants). */
enum { MF_MM_CLAMP = 0, MF_MM_FULL = 1, MF_MM_ACC = 2 };

/* One call of a kernel: the widened rows s, the loop count, and where the outputs go. A pass writes its 4
 * results to y, y + d1, y + d2, y + d3 (the rows kernel: one channel of 4 rows; the cols kernel: 4
 * channels of the row), then advances y by 1 (rows) or 4 (cols), until y_end. The assembly copies the
 * fields up to hi, in this order. */
typedef struct {
    const int32_t *s;
    int32_t iters;        /* groups / 2, or groups / 4 with x2 */
    int8_t *y;
    int32_t d1, d2, d3;
    const int8_t *y_end;
    int32_t lo, hi;
    int32_t x2;           /* the loop takes 4 groups a step (groups % 4 == 0), not 2 */
    /* The split rows kernel (mf_mm_rows4s_*): the stream holds only weight words, `skip` bytes of wider
     * rows' words after each channel's (a narrow width of a weight-shared family), and the constants
     * {bias, multiplier, L, E, K, M} of each channel come from `consts`. */
    int32_t skip;
    const int32_t *consts;
} mf_mm_job;

/* A job over the widened rows s of `groups` groups. */
MF_INLINE mf_mm_job mf_mm_job_of(int32_t *s, int32_t groups, const mf_requant_s8 *q) {
    const int x2 = (groups & 3) == 0;
    const mf_mm_job job = {s, groups >> (1 + x2), 0, 0, 0, 0, 0, q->act_min, q->act_max, x2, 0, 0};
    return job;
}

#if defined(__ARM_FEATURE_DSP)
/* The kernels in assembly: gcc's code for them spills the accumulators and the pass's pointers; in
 * assembly every pass keeps the 4 accumulators, the widened words and both pointers in registers and its
 * own state in a stack copy of the job. *_full: [lo, hi] is all of int8 (one SSAT), *_clamp otherwise. */
void mf_mm_rows4_full(const int32_t *stream, const mf_mm_job *job);
void mf_mm_rows4_clamp(const int32_t *stream, const mf_mm_job *job);
void mf_mm_rows4x2_full(const int32_t *stream, const mf_mm_job *job); /* *x2: job.x2 (4 groups a step) */
void mf_mm_rows4x2_clamp(const int32_t *stream, const mf_mm_job *job);
void mf_mm_cols4_full(const int32_t *stream, const mf_mm_job *job);
void mf_mm_cols4_clamp(const int32_t *stream, const mf_mm_job *job);
void mf_mm_cols4x2_full(const int32_t *stream, const mf_mm_job *job);
void mf_mm_cols4x2_clamp(const int32_t *stream, const mf_mm_job *job);
void mf_mm_cols4_int8_full(const int32_t *stream, const mf_mm_job *job); /* *_int8: job.s is the int8 row */
void mf_mm_cols4_int8_clamp(const int32_t *stream, const mf_mm_job *job);
void mf_mm_cols4x2_int8_full(const int32_t *stream, const mf_mm_job *job);
void mf_mm_cols4x2_int8_clamp(const int32_t *stream, const mf_mm_job *job);
void mf_mm_rows4_acc(const int32_t *stream, const mf_mm_job *job); /* *_acc: MF_MM_ACC */
void mf_mm_rows4s_full(const int32_t *stream, const mf_mm_job *job); /* *s: the split stream (job.skip, consts) */
void mf_mm_rows4s_clamp(const int32_t *stream, const mf_mm_job *job);
void mf_mm_rows4sx2_full(const int32_t *stream, const mf_mm_job *job);
void mf_mm_rows4sx2_clamp(const int32_t *stream, const mf_mm_job *job);
void mf_mm_rows4x2_acc(const int32_t *stream, const mf_mm_job *job);
void mf_mm_cols4_acc(const int32_t *stream, const mf_mm_job *job);
void mf_mm_cols4x2_acc(const int32_t *stream, const mf_mm_job *job);
void mf_mm_cols4_int8_acc(const int32_t *stream, const mf_mm_job *job);
void mf_mm_cols4x2_int8_acc(const int32_t *stream, const mf_mm_job *job);

__asm__(
    "    .syntax unified\n"
    "    .thumb\n"
    /* Requantize accumulator \a with r4-r8 = {multiplier, L, E, K, M}, r9 as scratch; clamped to
     * [r10, r11] if \clamp, else saturated to int8. 6 instructions (10 clamped). */
    "    .macro mf_mm_req a, clamp\n"
    "    and    r9, r8, \\a, asr #31\n"
    "    add    r9, r9, r7\n"
    "    lsl    \\a, \\a, r5\n"
    "    smmlar \\a, \\a, r4, r9\n"
    "    asr    \\a, \\a, r6\n"
    "    .if \\clamp\n"
    "    cmp    \\a, r10\n"
    "    it     lt\n"
    "    movlt  \\a, r10\n"
    "    cmp    \\a, r11\n"
    "    it     gt\n"
    "    movgt  \\a, r11\n"
    "    .else\n"
    "    ssat   \\a, #8, \\a\n"
    "    .endif\n"
    "    .endm\n"
    /* Entry: r0 = stream, r1 = job. The job is copied below the saved registers: [sp] s, iters, y, d1,
     * d2, d3, y_end, lo, hi. */
    "    .macro mf_mm_entry name\n"
    "    .pushsection .text.\\name, \"ax\", %progbits\n"
    "    .p2align 2\n"
    "    .global \\name\n"
    "    .type \\name, %function\n"
    "    .thumb_func\n"
    "\\name:\n"
    "    push   {r4-r11, lr}\n"
    "    ldm    r1, {r2-r10}\n"
    "    push   {r2-r10}\n"
    "    mov    r12, r0\n"
    "    .endm\n"
    /* Store r0-r3 at y, y + d1, y + d2, y + d3 (\\store: strb, or str for accumulators), advance y by
     * \\step; loop to 1b until y_end; return. */
    "    .macro mf_mm_exit name, step, store, frame=36\n"
    "    ldrd   r4, r5, [sp, #8]\n"
    "    ldrd   r6, r7, [sp, #16]\n"
    "    \\store   r1, [r4, r5]\n"
    "    \\store   r2, [r4, r6]\n"
    "    \\store   r3, [r4, r7]\n"
    "    \\store   r0, [r4], #\\step\n"
    "    ldr    r5, [sp, #24]\n"
    "    str    r4, [sp, #8]\n"
    "    cmp    r4, r5\n"
    "    bne    1b\n"
    "    add    sp, sp, #\\frame\n"
    "    pop    {r4-r11, pc}\n"
    "    .size \\name, . - \\name\n"
    "    .popsection\n"
    "    .endm\n"
    /* Rows kernel, one group: r8 holds the channel's weight word, widened into r10 (depths 0, 2) and r8
     * (1, 3); two LDM bring rows 0, 1 then 2, 3 (r4-r7). */
    "    .macro mf_mm_rows_group wr\n"
    "    sxtb16 r10, \\wr\n"
    "    sxtb16 \\wr, \\wr, ror #8\n"
    "    ldm    r11!, {r4-r7}\n"
    "    smlad  r0, r4, r10, r0\n"
    "    smlad  r0, r5, \\wr, r0\n"
    "    smlad  r1, r6, r10, r1\n"
    "    smlad  r1, r7, \\wr, r1\n"
    "    ldm    r11!, {r4-r7}\n"
    "    smlad  r2, r4, r10, r2\n"
    "    smlad  r2, r5, \\wr, r2\n"
    "    smlad  r3, r6, r10, r3\n"
    "    smlad  r3, r7, \\wr, r3\n"
    "    .endm\n"
    /* \\steps: two-group steps per loop iteration (job.iters = groups / (2 * steps)) */
    "    .macro mf_mm_rows4 name, clamp, steps\n"
    "    mf_mm_entry \\name\n"
    "1:  ldm    r12!, {r0-r3}\n"         /* the 4 accumulators start at the channel's bias */
    "    ldrd   r11, lr, [sp]\n"          /* the widened rows, the loop count */
    "2:\n"
    "    .rept \\steps\n"
    "    ldrd   r8, r9, [r12], #8\n"      /* the weight words of two groups */
    "    mf_mm_rows_group r8\n"
    "    mf_mm_rows_group r9\n"
    "    .endr\n"
    "    subs   lr, lr, #1\n"
    "    bne    2b\n"
    "    .if \\clamp == 2\n"              /* accumulators: no constants in the stream */
    "    mf_mm_exit \\name, 4, str\n"
    "    .else\n"
    "    ldm    r12!, {r4-r8}\n"
    "    .if \\clamp\n"
    "    ldrd   r10, r11, [sp, #28]\n"
    "    .endif\n"
    "    mf_mm_req r0, \\clamp\n"
    "    mf_mm_req r1, \\clamp\n"
    "    mf_mm_req r2, \\clamp\n"
    "    mf_mm_req r3, \\clamp\n"
    "    mf_mm_exit \\name, 1, strb\n"
    "    .endif\n"
    "    .endm\n"
    /* Split rows kernel: the job is copied with its skip and consts ([sp, #36], [sp, #40]); per channel the
     * bias and constants {bias, multiplier, L, E, K, M} are read from consts, the weight words from the
     * stream, which then skips the wider rows' words. */
    "    .macro mf_mm_rows4s name, clamp, steps\n"
    "    .pushsection .text.\\name, \"ax\", %progbits\n"
    "    .p2align 2\n"
    "    .global \\name\n"
    "    .type \\name, %function\n"
    "    .thumb_func\n"
    "\\name:\n"
    "    push   {r4-r11, lr}\n"
    "    ldr    r11, [r1, #40]\n"
    "    ldr    lr, [r1, #44]\n"
    "    ldm    r1, {r2-r10}\n"
    "    push   {r2-r11, lr}\n"
    "    mov    r12, r0\n"
    "1:  ldr    r9, [sp, #40]\n"
    "    ldr    r0, [r9], #4\n"         /* the 4 accumulators start at the channel's bias */
    "    str    r9, [sp, #40]\n"
    "    mov    r1, r0\n"
    "    mov    r2, r0\n"
    "    mov    r3, r0\n"
    "    ldrd   r11, lr, [sp]\n"
    "2:\n"
    "    .rept \\steps\n"
    "    ldrd   r8, r9, [r12], #8\n"
    "    mf_mm_rows_group r8\n"
    "    mf_mm_rows_group r9\n"
    "    .endr\n"
    "    subs   lr, lr, #1\n"
    "    bne    2b\n"
    "    ldr    r9, [sp, #36]\n"
    "    add    r12, r12, r9\n"
    "    ldr    r9, [sp, #40]\n"
    "    ldm    r9!, {r4-r8}\n"
    "    str    r9, [sp, #40]\n"
    "    .if \\clamp\n"
    "    ldrd   r10, r11, [sp, #28]\n"
    "    .endif\n"
    "    mf_mm_req r0, \\clamp\n"
    "    mf_mm_req r1, \\clamp\n"
    "    mf_mm_req r2, \\clamp\n"
    "    mf_mm_req r3, \\clamp\n"
    "    mf_mm_exit \\name, 1, strb, 44\n"
    "    .endm\n"
    /* Cols kernel, one group: r4, r5 = the row's widened words, r6-r9 the 4 channels' weight words. */
    "    .macro mf_mm_cols_mac acc, wr\n"
    "    sxtb16 r10, \\wr\n"
    "    sxtb16 \\wr, \\wr, ror #8\n"
    "    smlad  \\acc, r4, r10, \\acc\n"
    "    smlad  \\acc, r5, \\wr, \\acc\n"
    "    .endm\n"
    "    .macro mf_mm_cols_group narrow\n"
    "    .if \\narrow\n"
    "    ldr    r5, [r11], #4\n"
    "    sxtb16 r4, r5\n"
    "    sxtb16 r5, r5, ror #8\n"
    "    .else\n"
    "    ldrd   r4, r5, [r11], #8\n"
    "    .endif\n"
    "    ldm    r12!, {r6-r9}\n"
    "    mf_mm_cols_mac r0, r6\n"
    "    mf_mm_cols_mac r1, r7\n"
    "    mf_mm_cols_mac r2, r8\n"
    "    mf_mm_cols_mac r3, r9\n"
    "    .endm\n"
    "    .macro mf_mm_cols4 name, clamp, steps, narrow\n"
    "    mf_mm_entry \\name\n"
    "1:  ldm    r12!, {r0-r3}\n"
    "    ldrd   r11, lr, [sp]\n"
    "2:\n"
    "    .rept 2 * \\steps\n"
    "    mf_mm_cols_group \\narrow\n"
    "    .endr\n"
    "    subs   lr, lr, #1\n"
    "    bne    2b\n"
    "    .if \\clamp == 2\n"
    "    mf_mm_exit \\name, 16, str\n"
    "    .else\n"
    "    .if \\clamp\n"
    "    ldrd   r10, r11, [sp, #28]\n"
    "    .endif\n"
    "    ldm    r12!, {r4-r8}\n"
    "    mf_mm_req r0, \\clamp\n"
    "    ldm    r12!, {r4-r8}\n"
    "    mf_mm_req r1, \\clamp\n"
    "    ldm    r12!, {r4-r8}\n"
    "    mf_mm_req r2, \\clamp\n"
    "    ldm    r12!, {r4-r8}\n"
    "    mf_mm_req r3, \\clamp\n"
    "    mf_mm_exit \\name, 4, strb\n"
    "    .endif\n"
    "    .endm\n"
    "    mf_mm_rows4 mf_mm_rows4_full, 0, 1\n"
    "    mf_mm_rows4 mf_mm_rows4_clamp, 1, 1\n"
    "    mf_mm_rows4 mf_mm_rows4x2_full, 0, 2\n"
    "    mf_mm_rows4 mf_mm_rows4x2_clamp, 1, 2\n"
    "    mf_mm_cols4 mf_mm_cols4_full, 0, 1, 0\n"
    "    mf_mm_cols4 mf_mm_cols4_clamp, 1, 1, 0\n"
    "    mf_mm_cols4 mf_mm_cols4x2_full, 0, 2, 0\n"
    "    mf_mm_cols4 mf_mm_cols4x2_clamp, 1, 2, 0\n"
    "    mf_mm_cols4 mf_mm_cols4_int8_full, 0, 1, 1\n"
    "    mf_mm_cols4 mf_mm_cols4_int8_clamp, 1, 1, 1\n"
    "    mf_mm_cols4 mf_mm_cols4x2_int8_full, 0, 2, 1\n"
    "    mf_mm_cols4 mf_mm_cols4x2_int8_clamp, 1, 2, 1\n"
    "    mf_mm_rows4 mf_mm_rows4_acc, 2, 1\n"
    "    mf_mm_rows4 mf_mm_rows4x2_acc, 2, 2\n"
    "    mf_mm_cols4 mf_mm_cols4_acc, 2, 1, 0\n"
    "    mf_mm_cols4 mf_mm_cols4x2_acc, 2, 2, 0\n"
    "    mf_mm_cols4 mf_mm_cols4_int8_acc, 2, 1, 1\n"
    "    mf_mm_cols4 mf_mm_cols4x2_int8_acc, 2, 2, 1\n"
    "    mf_mm_rows4s mf_mm_rows4s_full, 0, 1\n"
    "    mf_mm_rows4s mf_mm_rows4s_clamp, 1, 1\n"
    "    mf_mm_rows4s mf_mm_rows4sx2_full, 0, 2\n"
    "    mf_mm_rows4s mf_mm_rows4sx2_clamp, 1, 2\n");

MF_INLINE void mf_mm_rows4(const int32_t *stream, const mf_mm_job *job, int mode) {
    const int full_range = mode == MF_MM_FULL; /* mode is a constant where this is inlined */
    if (mode == MF_MM_ACC)
        (job->x2 ? mf_mm_rows4x2_acc : mf_mm_rows4_acc)(stream, job);
    else if (job->x2)
        (full_range ? mf_mm_rows4x2_full : mf_mm_rows4x2_clamp)(stream, job);
    else
        (full_range ? mf_mm_rows4_full : mf_mm_rows4_clamp)(stream, job);
}

MF_INLINE void mf_mm_rows4s(const int32_t *stream, const mf_mm_job *job, int mode) {
    if (job->x2)
        (mode == MF_MM_FULL ? mf_mm_rows4sx2_full : mf_mm_rows4sx2_clamp)(stream, job);
    else
        (mode == MF_MM_FULL ? mf_mm_rows4s_full : mf_mm_rows4s_clamp)(stream, job);
}

MF_INLINE void mf_mm_cols4(const int32_t *stream, const mf_mm_job *job, int mode, int narrow) {
    const int full_range = mode == MF_MM_FULL;
    if (mode == MF_MM_ACC && narrow)
        (job->x2 ? mf_mm_cols4x2_int8_acc : mf_mm_cols4_int8_acc)(stream, job);
    else if (mode == MF_MM_ACC)
        (job->x2 ? mf_mm_cols4x2_acc : mf_mm_cols4_acc)(stream, job);
    else if (narrow && job->x2)
        (full_range ? mf_mm_cols4x2_int8_full : mf_mm_cols4x2_int8_clamp)(stream, job);
    else if (narrow)
        (full_range ? mf_mm_cols4_int8_full : mf_mm_cols4_int8_clamp)(stream, job);
    else if (job->x2)
        (full_range ? mf_mm_cols4x2_full : mf_mm_cols4x2_clamp)(stream, job);
    else
        (full_range ? mf_mm_cols4_full : mf_mm_cols4_clamp)(stream, job);
}
#else
/* The same kernels in portable C (their reference, and what host builds of the *_dsp kernels run). */

/* The output of accumulator a with k = {multiplier, L, E, K, M}. */
MF_INLINE int32_t mf_mm_req(const int32_t *k, int32_t a, const mf_mm_job *job, int mode) {
    const int32_t r = mf_smmlar(mf_conv_wrap((uint32_t)a << k[1]), k[0], k[3] + ((a >> 31) & k[4])) >> k[2];
    return mf_dsp_clamp(r, job->lo, job->hi, mode == MF_MM_FULL);
}

MF_INLINE void mf_mm_store(const mf_mm_job *job, int8_t *y, const int32_t out[4], int mode) {
    if (mode == MF_MM_ACC) {
        memcpy(y + job->d1, &out[1], 4);
        memcpy(y + job->d2, &out[2], 4);
        memcpy(y + job->d3, &out[3], 4);
        memcpy(y, &out[0], 4);
        return;
    }
    y[job->d1] = (int8_t)out[1];
    y[job->d2] = (int8_t)out[2];
    y[job->d3] = (int8_t)out[3];
    y[0] = (int8_t)out[0];
}

static void mf_mm_rows4(const int32_t *w, const mf_mm_job *job, int mode) {
    for (int8_t *y = job->y; y != job->y_end; y += mode == MF_MM_ACC ? 4 : 1) {
        int32_t a[4] = {w[0], w[1], w[2], w[3]};
        w += 4;
        const int32_t *s = job->s;
        for (int32_t g = job->iters << (1 + job->x2); g > 0; --g, ++w, s += 8) {
            const int32_t w02 = mf_conv_sxtb16(w[0]), w13 = mf_conv_sxtb16_ror8(w[0]);
            for (int r = 0; r < 4; ++r) a[r] = mf_conv_smlad(s[2 * r + 1], w13, mf_conv_smlad(s[2 * r], w02, a[r]));
        }
        int32_t out[4];
        for (int r = 0; r < 4; ++r) out[r] = mode == MF_MM_ACC ? a[r] : mf_mm_req(w, a[r], job, mode);
        w += mode == MF_MM_ACC ? 0 : 5;
        mf_mm_store(job, y, out, mode);
    }
}

static void mf_mm_rows4s(const int32_t *w, const mf_mm_job *job, int mode) {
    const int32_t *k = job->consts;
    for (int8_t *y = job->y; y != job->y_end; ++y, k += 6) {
        int32_t a[4] = {k[0], k[0], k[0], k[0]};
        const int32_t *s = job->s;
        for (int32_t g = job->iters << (1 + job->x2); g > 0; --g, ++w, s += 8) {
            const int32_t w02 = mf_conv_sxtb16(w[0]), w13 = mf_conv_sxtb16_ror8(w[0]);
            for (int r = 0; r < 4; ++r) a[r] = mf_conv_smlad(s[2 * r + 1], w13, mf_conv_smlad(s[2 * r], w02, a[r]));
        }
        w += job->skip / 4;
        int32_t out[4];
        for (int r = 0; r < 4; ++r) out[r] = mf_mm_req(k + 1, a[r], job, mode);
        mf_mm_store(job, y, out, mode);
    }
}

static void mf_mm_cols4(const int32_t *w, const mf_mm_job *job, int mode, int narrow) {
    for (int8_t *y = job->y; y != job->y_end; y += mode == MF_MM_ACC ? 16 : 4) {
        int32_t a[4] = {w[0], w[1], w[2], w[3]};
        w += 4;
        const int32_t *s = job->s;
        for (int32_t g = job->iters << (1 + job->x2); g > 0; --g, w += 4, s += narrow ? 1 : 2) {
            const int32_t s0 = narrow ? mf_conv_sxtb16(s[0]) : s[0], s1 = narrow ? mf_conv_sxtb16_ror8(s[0]) : s[1];
            for (int c = 0; c < 4; ++c)
                a[c] = mf_conv_smlad(s1, mf_conv_sxtb16_ror8(w[c]), mf_conv_smlad(s0, mf_conv_sxtb16(w[c]), a[c]));
        }
        int32_t out[4];
        for (int c = 0; c < 4; ++c, w += mode == MF_MM_ACC ? 0 : 5)
            out[c] = mode == MF_MM_ACC ? a[c] : mf_mm_req(w, a[c], job, mode);
        mf_mm_store(job, y, out, mode);
    }
}
#endif

/* The job of a block of n <= 4 rows whose outputs start at y, `pitch` bytes apart (a block of fewer rows
 * repeats its last: the repeats compute the same bytes again, onto the same place). */
MF_INLINE void mf_mm_rows_job(mf_mm_job *job, int8_t *y, int32_t n, int32_t pitch, int32_t outs) {
    job->y = y;
    job->d1 = (n > 1 ? 1 : n - 1) * pitch;
    job->d2 = (n > 2 ? 2 : n - 1) * pitch;
    job->d3 = (n - 1) * pitch;
    job->y_end = y + outs;
}

/* The matrix product; with MF_MM_ACC, output is the int32 block buffer `acc` of mf_fc_acc_dsp, handed to
 * the sink after each block. */
MF_INLINE void mf_fc_s8_dsp_body(const mf_fc_params *p, const int8_t *input, int8_t *output, int32_t *scratch,
                                 int mode, mf_acc_sink *sink, int split) {
    const int32_t depth = p->in_features, outs = p->out_features, rows = p->rows, groups = mf_mm_groups(depth);
    const int32_t *const stream = (const int32_t *)p->weights;
    const int32_t u = mode == MF_MM_ACC ? 4 : 1; /* bytes per result */
    mf_mm_job job = mf_mm_job_of(scratch, groups, &p->q);
    if (rows == 1) { /* widened once (or, without scratch, word by word in every pass), four channels a pass */
        const int narrow = scratch == 0; /* then in_features % 8 == 0: no zero groups to read */
        if (narrow)
            job.s = (const int32_t *)(const void *)input;
        else
            mf_mm_widen(input, depth, groups, scratch, 2);
        const int32_t whole = outs & ~3, last = outs - whole;
        job.y = output, job.d1 = u, job.d2 = 2 * u, job.d3 = 3 * u, job.y_end = output + u * whole;
        if (whole) mf_mm_cols4(stream, &job, mode, narrow);
        if (last) { /* 1-3 channels, then repeats of the last one (the same bytes onto the same place) */
            job.y = output + u * whole, job.d1 = u * (last > 1), job.d2 = u * (last > 2 ? 2 : last - 1);
            job.d3 = u * (last - 1), job.y_end = job.y + 4 * u;
            mf_mm_cols4(stream + (whole >> 2) * ((mode == MF_MM_ACC ? 4 : 24) + 4 * groups), &job, mode, narrow);
        }
        if (mode == MF_MM_ACC) sink->take(sink, (const int32_t *)(const void *)output, 1);
        return;
    }
    /* Blocks of four rows, each read whole (widened into scratch) before its outputs are written. */
    if (split) { /* weight words of wider rows (p->weight_pitch values each), constants apart */
        job.skip = 4 * (mf_mm_groups(p->weight_pitch) - groups);
        job.consts = p->split;
    }
    for (int32_t r = 0; r < rows; r += 4) {
        const int32_t n = rows - r < 4 ? rows - r : 4;
        for (int32_t k = 0; k < 4; ++k)
            mf_mm_widen(input + (r + (k < n ? k : n - 1)) * depth, depth, groups, scratch + 2 * k, 8);
        mf_mm_rows_job(&job, mode == MF_MM_ACC ? output : output + r * outs, n, u * outs, u * outs);
        if (split)
            mf_mm_rows4s(stream, &job, mode);
        else
            mf_mm_rows4(stream, &job, mode);
        if (mode == MF_MM_ACC) sink->take(sink, (const int32_t *)(const void *)output, n);
    }
}

/* The int8 matrix product in the clamp mode its range needs (split: a constant where this is inlined). */
MF_INLINE void mf_fc_s8_dsp_clamped(const mf_fc_params *p, const int8_t *input, int8_t *output, int32_t *scratch,
                                    int split) {
    if (p->q.act_min == -128 && p->q.act_max == 127)
        mf_fc_s8_dsp_body(p, input, output, scratch, MF_MM_FULL, 0, split);
    else
        mf_fc_s8_dsp_body(p, input, output, scratch, MF_MM_CLAMP, 0, split);
}

void mf_fc_s8_dsp(const mf_fc_params *p, const int8_t *input, int8_t *output, int32_t *scratch) {
    mf_fc_s8_dsp_clamped(p, input, output, scratch, 0);
}

void mf_fc_s8_split_dsp(const mf_fc_params *p, const int8_t *input, int8_t *output, int32_t *scratch) {
    mf_fc_s8_dsp_clamped(p, input, output, scratch, 1);
}

void mf_fc_acc_dsp(const mf_fc_params *p, const int8_t *input, int32_t *acc, int32_t *scratch, mf_acc_sink *sink) {
    mf_fc_s8_dsp_body(p, input, (int8_t *)(void *)acc, scratch, MF_MM_ACC, sink, 0);
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
                mf_conv_rows_s8(x0, x1, y0, two ? y0 + p->out_c : 0, depth, w + g * gout * depth, depth, g * gout,
                                (g + 1) * gout, &p->q);
            }
        }
    }
}

/* Cortex-M4/M7 convolution (groups = 1): the patches of four output pixels are widened into scratch, then
 * go through the rows kernel above. A patch is its kernel rows in order, each row's kw * in_c values
 * [kx][c] followed by zeros up to a whole number of words (`run` words; the weights are zero there, see
 * ops/conv.py lower_conv_2d), so that a kernel row inside the input is widened straight from it, its
 * last word reading up to 3 bytes past the row (any values: they meet zero weights). Rows that leave the
 * input are first gathered as int8 into scratch, with the input zero point outside it. */

/* n bytes from s to d, a word at a time (unaligned LDR/STR); returns d past them. A library call costs more
 * for the few bytes of a tap. */
MF_INLINE int8_t *mf_conv_copy(int8_t *d, const int8_t *s, int32_t n) {
    for (; n >= 4; n -= 4, d += 4, s += 4) {
        const int32_t v = mf_conv_load4(s);
        memcpy(d, &v, 4);
    }
    for (; n > 0; --n) *d++ = *s++;
    return d;
}

/* Widen the patch of output pixel `pixel` of image x (x_end: its end) into slot d (the scratch + 2 * its
 * row in the block), then zeros up to `groups` groups; tmp: 4 * run bytes for a kernel row to gather. */
static void mf_conv_widen_patch(const mf_conv_params *p, const int8_t *x, const int8_t *x_end, int32_t pixel,
                                int32_t *d, int32_t groups, int8_t *tmp) {
    int32_t *const end = d + 8 * groups;
    const int32_t oy = pixel / p->out_w, ox = pixel - oy * p->out_w;
    const int32_t iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
    const int32_t in_c = p->in_c, in_h = p->in_h, in_w = p->in_w, kw = p->kw, run = (kw * in_c + 3) >> 2;
    const int32_t zp = p->input_zero_point;
    const int32_t zw = mf_conv_wrap(((uint32_t)zp & 0xffffu) | ((uint32_t)zp << 16));
    const int inside_w = p->dilation_w == 1 && ix0 >= 0 && ix0 + kw <= in_w; /* a kernel row is one run */
    for (int32_t ky = 0; ky < p->kh; ++ky) {
        const int32_t iy = iy0 + ky * p->dilation_h;
        if (iy < 0 || iy >= in_h) { /* all the zero point (and zeros' partners past the row: any value) */
            for (int32_t k = 0; k < run; ++k, d += 8) d[0] = d[1] = zw;
            continue;
        }
        const int8_t *const row = x + iy * in_w * in_c;
        const int8_t *src = row + ix0 * in_c;
        if (!inside_w || src + 4 * run > x_end) { /* gathered first: taps outside, or the image's last bytes */
            int8_t *t = tmp;
            for (int32_t kx = 0; kx < kw; ++kx) {
                const int32_t ix = ix0 + kx * p->dilation_w;
                if (ix >= 0 && ix < in_w)
                    t = mf_conv_copy(t, row + ix * in_c, in_c);
                else
                    for (int8_t *const stop = t + in_c; t != stop; ++t) *t = (int8_t)zp;
            }
            src = tmp;
        }
        d = mf_mm_widen_words(src, run, d, 8);
    }
    for (; d != end; d += 8) d[0] = d[1] = 0; /* an odd number of groups: one more, of zeros */
}

/* The patches of the 4 pixels from `pixel` into the 4 slots at d, when they are on one output row and
 * every kernel row of theirs is one run inside the image (most blocks): the geometry once per block, the
 * 4 runs of a kernel row one after another. Returns 0 (nothing written) for other blocks. */
static int mf_conv_widen_block(const mf_conv_params *p, const int8_t *x, const int8_t *x_end, int32_t pixel,
                               int32_t *d, int32_t groups) {
    const int32_t oy = pixel / p->out_w, ox = pixel - oy * p->out_w;
    const int32_t in_c = p->in_c, run = (p->kw * in_c + 3) >> 2, step = p->stride_w * in_c;
    const int32_t iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
    if (ox + 3 >= p->out_w || p->dilation_w != 1 || ix0 < 0 || ix0 + 3 * p->stride_w + p->kw > p->in_w)
        return 0;
    int32_t ky_end = p->kh; /* the kernel rows inside the image are ky_begin .. ky_end - 1 */
    while (ky_end > 0 && iy0 + (ky_end - 1) * p->dilation_h >= p->in_h) --ky_end;
    if (ky_end > 0 && x + ((iy0 + (ky_end - 1) * p->dilation_h) * p->in_w + ix0) * in_c + 3 * step + 4 * run > x_end)
        return 0; /* the last run would read past the image */
    const int32_t zp = p->input_zero_point;
    const int32_t zw = mf_conv_wrap(((uint32_t)zp & 0xffffu) | ((uint32_t)zp << 16));
    int32_t *const end = d + 8 * groups;
    for (int32_t ky = 0; ky < p->kh; ++ky) {
        const int32_t iy = iy0 + ky * p->dilation_h;
        if (iy < 0 || iy >= p->in_h) {
            for (int32_t *const stop = d + 8 * run; d != stop; ++d) *d = zw;
            continue;
        }
        const int8_t *const src = x + (iy * p->in_w + ix0) * in_c;
        for (int32_t k = 0; k < 4; ++k) mf_mm_widen_words(src + k * step, run, d + 2 * k, 8);
        d += 8 * run;
    }
    for (; d != end; ++d) *d = 0; /* an odd number of groups: one more, of zeros */
    return 1;
}

MF_INLINE void mf_conv_s8_dsp_body(const mf_conv_params *p, const int8_t *input, int8_t *output, int32_t *scratch,
                                   int mode, mf_acc_sink *sink, int split) {
    const int32_t run = (p->kw * p->in_c + 3) >> 2, groups = mf_mm_groups(4 * run * p->kh);
    const int32_t pixels = p->out_h * p->out_w, outs = p->out_c, image = p->in_h * p->in_w * p->in_c;
    int8_t *const tmp = (int8_t *)(scratch + 8 * groups);
    mf_mm_job job = mf_mm_job_of(scratch, groups, &p->q);
    if (split) job.consts = p->split; /* shared weight words, the constants apart (no skip: whole patches) */
    for (int32_t b = 0; b < p->batches; ++b) {
        const int8_t *x = input + b * image;
        int8_t *y = output + b * pixels * outs;
        for (int32_t pix = 0; pix < pixels; pix += 4) {
            /* a last block of n < 4 pixels repeats its last pixel (the same bytes onto the same place) */
            const int32_t n = pixels - pix < 4 ? pixels - pix : 4;
            if (n < 4 || !mf_conv_widen_block(p, x, x + image, pix, scratch, groups))
                for (int32_t k = 0; k < 4; ++k)
                    mf_conv_widen_patch(p, x, x + image, pix + (k < n ? k : n - 1), scratch + 2 * k, groups, tmp);
            if (mode == MF_MM_ACC) { /* output: the block's int32 accumulators (mf_conv_acc_dsp) */
                mf_mm_rows_job(&job, output, n, 4 * outs, 4 * outs);
                mf_mm_rows4((const int32_t *)p->weights, &job, mode);
                sink->take(sink, (const int32_t *)(const void *)output, n);
            } else {
                mf_mm_rows_job(&job, y + pix * outs, n, outs, outs);
                if (split)
                    mf_mm_rows4s((const int32_t *)p->weights, &job, mode);
                else
                    mf_mm_rows4((const int32_t *)p->weights, &job, mode);
            }
        }
    }
}

MF_INLINE void mf_conv_s8_dsp_clamped(const mf_conv_params *p, const int8_t *input, int8_t *output,
                                      int32_t *scratch, int split) {
    if (p->q.act_min == -128 && p->q.act_max == 127)
        mf_conv_s8_dsp_body(p, input, output, scratch, MF_MM_FULL, 0, split);
    else
        mf_conv_s8_dsp_body(p, input, output, scratch, MF_MM_CLAMP, 0, split);
}

void mf_conv_s8_dsp(const mf_conv_params *p, const int8_t *input, int8_t *output, int32_t *scratch) {
    mf_conv_s8_dsp_clamped(p, input, output, scratch, 0);
}

void mf_conv_s8_split_dsp(const mf_conv_params *p, const int8_t *input, int8_t *output, int32_t *scratch) {
    mf_conv_s8_dsp_clamped(p, input, output, scratch, 1);
}

void mf_conv_acc_dsp(const mf_conv_params *p, const int8_t *input, int32_t *acc, int32_t *scratch,
                     mf_acc_sink *sink) {
    mf_conv_s8_dsp_body(p, input, (int8_t *)(void *)acc, scratch, MF_MM_ACC, sink, 0);
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

/* The pixel loops of both 3x3 depthwise kernels, in the order their declared safe distances assume:
 * raster order, or reverse raster order with p->backward (the plan put the output over the top of the
 * input). For each output pixel, y its output, x the batch's input and iy0, ix0 its window's top-left
 * tap: INSIDE runs where the window lies in the input (r0: its first tap), BORDER elsewhere. */
#define MF_DW3_FOR_EACH_PIXEL(p, input, output, y_pitch, INSIDE, BORDER)                                   \
    do {                                                                                                  \
        const int32_t dir_ = (p)->backward ? -1 : 1, y_step_ = dir_ * (y_pitch);                          \
        const int32_t pixels_ = (p)->out_h * (p)->out_w;                                                  \
        for (int32_t b_ = 0; b_ < (p)->batches; ++b_) {                                                   \
            const int8_t *const x = (input) + b_ * (p)->in_h * (p)->in_w * (p)->in_c;                     \
            int8_t *y = (output) + (b_ * pixels_ + ((p)->backward ? pixels_ - 1 : 0)) * (y_pitch);        \
            for (int32_t i_ = 0, oy_ = (p)->backward ? (p)->out_h - 1 : 0; i_ < (p)->out_h; ++i_, oy_ += dir_) { \
                const int32_t iy0 = oy_ * (p)->stride_h - (p)->pad_top;                                   \
                const int rows_inside_ = iy0 >= 0 && iy0 + 2 * (p)->dilation_h < (p)->in_h;               \
                for (int32_t j_ = 0, ox_ = (p)->backward ? (p)->out_w - 1 : 0; j_ < (p)->out_w;           \
                     ++j_, ox_ += dir_, y += y_step_) {                                                   \
                    const int32_t ix0 = ox_ * (p)->stride_w - (p)->pad_left;                              \
                    if (rows_inside_ && ix0 >= 0 && ix0 + 2 * (p)->dilation_w < (p)->in_w) {              \
                        const int8_t *const r0 = x + (iy0 * (p)->in_w + ix0) * (p)->in_c;                 \
                        INSIDE;                                                                           \
                    } else {                                                                              \
                        BORDER;                                                                           \
                    }                                                                                     \
                }                                                                                         \
            }                                                                                             \
        }                                                                                                 \
    } while (0)

/* Channels of a border pixel are gathered this many at a time (with the zero point outside the input). */
#define MF_DW_CHUNK 32

/* A border pixel of mf_dwconv_3x3_s8: its taps gathered MF_DW_CHUNK channels at a time into patch. */
static void mf_dwconv_3x3_border(const mf_conv_params *p, const int8_t *x, int32_t iy0, int32_t ix0, int8_t *y,
                                 int8_t *patch) {
    const int8_t *w = (const int8_t *)p->weights;
    const int8_t pad = (int8_t)p->input_zero_point;
    for (int32_t c0 = 0; c0 < p->in_c; c0 += MF_DW_CHUNK) {
        const int32_t n = p->in_c - c0 < MF_DW_CHUNK ? p->in_c - c0 : MF_DW_CHUNK;
        for (int32_t t = 0; t < 9; ++t) {
            const int32_t iy = iy0 + (t / 3) * p->dilation_h, ix = ix0 + (t % 3) * p->dilation_w;
            int8_t *dst = patch + t * n;
            if (iy >= 0 && iy < p->in_h && ix >= 0 && ix < p->in_w)
                memcpy(dst, x + (iy * p->in_w + ix) * p->in_c + c0, (size_t)n);
            else
                memset(dst, pad, (size_t)n);
        }
        mf_dwconv_3x3_channels(patch, patch + 3 * n, patch + 6 * n, n, w + 9 * c0, n, y + c0, &p->q, c0);
    }
}

void mf_dwconv_3x3_s8(const mf_conv_params *p, const int8_t *input, int8_t *output) {
    const int32_t row = p->dilation_h * p->in_w * p->in_c; /* from one kernel row to the next */
    const int32_t col = p->dilation_w * p->in_c;            /* from one kernel column to the next */
    const int8_t *w = (const int8_t *)p->weights;
    int8_t patch[9 * MF_DW_CHUNK];
    MF_DW3_FOR_EACH_PIXEL(p, input, output, p->in_c,
                          mf_dwconv_3x3_channels(r0, r0 + row, r0 + 2 * row, col, w, p->in_c, y, &p->q, 0),
                          mf_dwconv_3x3_border(p, x, iy0, ix0, y, patch));
}

/* ------------------------------------------------------------------------------------------------------
 * Cortex-M4/M7 3x3 depthwise (multiplier 1, in_c % 4 == 0). Without the sum of a pair of products that
 * SMLAD needs, each product is one SMLABB or SMLATT: one input word (4 channels) is widened into the pairs
 * (c0, c2) and (c1, c3), and the weights are int16 in flash, per group of 4 channels and per tap the words
 * (w_c0, w_c2) and (w_c1, w_c3), read with one LDRD: per tap and 4 channels, 8 instructions for 4 MACs.
 * Weights and bias of channel c are pre-multiplied by 2^L_c (no shift left per output; the generator
 * checked that they still fit), so the requantization constants (mf_requant_s8.dq) are per group of 4
 * channels the 4 biases, then {multiplier, E, K, M} of each channel. Pixels whose window leaves the input
 * read their outside taps from p->zero_row, in_c bytes of the zero point (a table of 9 tap pointers
 * instead of two strides). */

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

#if defined(__ARM_FEATURE_DSP)
/* Requantize accumulator a (a register name in the asm) with its channel's {multiplier, E, K, M} at byte
 * offsets o, o + 4, o + 8, o + 12 of f: 7 instructions. */
#define MF_DW3_ASM_OUT(a, o, o8)                         \
    "ldrd %[m], %[e], [%[f], #" #o "]\n\t"               \
    "ldrd %[k], %[n], [%[f], #" #o8 "]\n\t"              \
    "and %[n], %[n], %[" a "], asr #31\n\t"              \
    "add %[k], %[k], %[n]\n\t"                           \
    "smmlar %[" a "], %[" a "], %[m], %[k]\n\t"          \
    "asr %[" a "], %[" a "], %[e]\n\t"                   \
    "ssat %[" a "], #8, %[" a "]\n\t"

/* lo4, hi4: the clamp bounds in every byte of a word, for MF_DW3_STORE. */
#define MF_DW3_BOUNDS4(lo, hi)                                                \
    const int32_t lo4 = (int32_t)((uint32_t)(uint8_t)(lo) * 0x01010101u),   \
                  hi4 = (int32_t)((uint32_t)(uint8_t)(hi) * 0x01010101u)

/* The 4 outputs of a0..a3 (channels c..c + 3) as one word: requantized, packed by 3 BFI, clamped to
 * [lo, hi] on all four bytes at once by SSUB8/SEL against lo4 and hi4 (lo and hi in every byte) unless the
 * range is all of int8 (then SSAT has clamped), stored by one STR (volatile: its only effect is the store). */
#define MF_DW3_ASM_PACK                                                                                \
    MF_DW3_ASM_OUT("a0", 16, 24) MF_DW3_ASM_OUT("a1", 32, 40) MF_DW3_ASM_OUT("a2", 48, 56)               \
    MF_DW3_ASM_OUT("a3", 64, 72)                                                                       \
    "bfi %[a0], %[a1], #8, #8\n\t"                                                                     \
    "bfi %[a0], %[a2], #16, #8\n\t"                                                                    \
    "bfi %[a0], %[a3], #24, #8\n\t"
#define MF_DW3_ASM_CLAMP                                                                               \
    "ssub8 %[m], %[a0], %[lo4]\n\t"                                                                    \
    "sel %[a0], %[a0], %[lo4]\n\t"                                                                     \
    "ssub8 %[m], %[hi4], %[a0]\n\t"                                                                    \
    "sel %[a0], %[a0], %[hi4]\n\t"
#define MF_DW3_ASM_RESULTS                                                                             \
    [a0] "+&r"(a0), [a1] "+&r"(a1), [a2] "+&r"(a2), [a3] "+&r"(a3), [m] "=&r"(m_), [e] "=&r"(e_),        \
        [k] "=&r"(k_), [n] "=&r"(n_)
#define MF_DW3_STORE()                                                                                 \
    do {                                                                                               \
        int32_t m_, e_, k_, n_;                                                                        \
        if (full_range)                                                                                \
            __asm__ volatile(MF_DW3_ASM_PACK "str %[a0], [%[y]]\n\t"                                   \
                             : MF_DW3_ASM_RESULTS : [f] "r"(f), [y] "r"(y) : "memory");                \
        else                                                                                           \
            __asm__ volatile(MF_DW3_ASM_PACK MF_DW3_ASM_CLAMP "str %[a0], [%[y]]\n\t"                  \
                             : MF_DW3_ASM_RESULTS : [f] "r"(f), [y] "r"(y), [lo4] "r"(lo4), [hi4] "r"(hi4) \
                             : "cc", "memory");                                                        \
    } while (0)
#else
/* Output byte of accumulator a with the constants f = {multiplier, E, K, M} of its channel. */
MF_INLINE int32_t mf_dw_out(const int32_t *f, int32_t a, int32_t lo, int32_t hi, int full_range) {
    return mf_dsp_clamp(mf_smmlar(a, f[0], f[2] + ((a >> 31) & f[3])) >> f[1], lo, hi, full_range);
}

#define MF_DW3_BOUNDS4(lo, hi) (void)0
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
#endif

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

/* The 4 accumulators of channels c .. c + 3 as int32 at y (MF_MM_ACC), or their requantized outputs. */
#define MF_DW3_LEAVE(mode)                                 \
    do {                                                   \
        if ((mode) == MF_MM_ACC) {                         \
            const int32_t a_[4] = {a0, a1, a2, a3};        \
            memcpy(y, a_, sizeof a_);                      \
        } else {                                           \
            const int full_range = (mode) == MF_MM_FULL;   \
            MF_DW3_STORE();                                \
        }                                                  \
    } while (0)

/* Channels [0, n) of one output pixel whose window is inside the input: the tap (ky, kx) of channel c is
 * at r0 + ky * row + kx * col + c. With MF_MM_ACC, y is an int32 buffer of n accumulators and f unused. */
MF_INLINE void mf_dw3_inside(const int8_t *r0, int32_t row, int32_t col, const int32_t *w, const int32_t *f,
                             int32_t n, int8_t *y, int32_t lo, int32_t hi, int mode) {
    MF_DW3_BOUNDS4(lo, hi);
    const int32_t u = mode == MF_MM_ACC ? 4 : 1, f_step = mode == MF_MM_ACC ? 0 : 20;
    for (int8_t *const end = y + u * n; y != end; r0 += 4, f += f_step, y += 4 * u) {
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        if (mode != MF_MM_ACC) a0 = f[0], a1 = f[1], a2 = f[2], a3 = f[3];
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
        MF_DW3_LEAVE(mode);
    }
}

/* The same with a pointer per tap (tap k of channel c at t[k] + c), for pixels at the border: outside taps
 * point at p->zero_row, in_c bytes of the input zero point, so that every tap advances with the channels
 * alike. One more instruction per tap than inside (its pointer is loaded from t). */
MF_INLINE void mf_dw3_border(const int8_t *const t[9], const int32_t *w, const int32_t *f, int32_t n, int8_t *y,
                             int32_t lo, int32_t hi, int mode) {
    MF_DW3_BOUNDS4(lo, hi);
    const int32_t u = mode == MF_MM_ACC ? 4 : 1, f_step = mode == MF_MM_ACC ? 0 : 20;
    for (int32_t c = 0; c < n; c += 4, f += f_step, y += 4 * u) {
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        if (mode != MF_MM_ACC) a0 = f[0], a1 = f[1], a2 = f[2], a3 = f[3];
#if defined(__ARM_FEATURE_DSP)
        int32_t v, e, wa, wb;
        const int8_t *tap;
#define MF_DW3_ASM_BORDER_TAP(k) "ldr %[tap], [%[t], #" #k " * 4]\n\t" MF_DW3_ASM_TAP("[%[tap], %[c]]")
        __asm__(MF_DW3_ASM_BORDER_TAP(0) MF_DW3_ASM_BORDER_TAP(1) MF_DW3_ASM_BORDER_TAP(2)
                MF_DW3_ASM_BORDER_TAP(3) MF_DW3_ASM_BORDER_TAP(4) MF_DW3_ASM_BORDER_TAP(5)
                MF_DW3_ASM_BORDER_TAP(6) MF_DW3_ASM_BORDER_TAP(7) MF_DW3_ASM_BORDER_TAP(8)
                : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [w] "+r"(w), [v] "=&r"(v),
                  [e] "=&r"(e), [wa] "=&r"(wa), [wb] "=&r"(wb), [tap] "=&r"(tap)
                : [t] "r"(t), [c] "r"(c)
                : "memory");
#undef MF_DW3_ASM_BORDER_TAP
#else
        for (int32_t k = 0; k < 9; ++k)
            MF_DW3_TAP(t[k] + c, w[2 * k], w[2 * k + 1]);
        w += 18;
#endif
        MF_DW3_LEAVE(mode);
    }
}

/* The tap pointers of a border pixel (outside taps: the zero-point row), then mf_dw3_border. */
MF_INLINE void mf_dw3_border_pixel(const mf_conv_params *p, const int8_t *x, int32_t iy0, int32_t ix0, int8_t *y,
                                   int mode) {
    const int8_t *t[9];
    for (int32_t k = 0; k < 9; ++k) {
        const int32_t iy = iy0 + (k / 3) * p->dilation_h, ix = ix0 + (k % 3) * p->dilation_w;
        const int inside = iy >= 0 && iy < p->in_h && ix >= 0 && ix < p->in_w;
        t[k] = inside ? x + (iy * p->in_w + ix) * p->in_c : p->zero_row;
    }
    mf_dw3_border(t, (const int32_t *)p->weights, p->q.dq, p->in_c, y, p->q.act_min, p->q.act_max, mode);
}

MF_INLINE void mf_dwconv_3x3_s8_dsp_body(const mf_conv_params *p, const int8_t *input, int8_t *output, int mode) {
    const int32_t c_count = p->in_c, lo = p->q.act_min, hi = p->q.act_max;
    const int32_t row = p->dilation_h * p->in_w * c_count, col = p->dilation_w * c_count;
    const int32_t *const w = (const int32_t *)p->weights, *const f = p->q.dq;
    MF_DW3_FOR_EACH_PIXEL(p, input, output, c_count, mf_dw3_inside(r0, row, col, w, f, c_count, y, lo, hi, mode),
                          mf_dw3_border_pixel(p, x, iy0, ix0, y, mode));
}

void mf_dwconv_3x3_s8_dsp(const mf_conv_params *p, const int8_t *input, int8_t *output) {
    if (p->q.act_min == -128 && p->q.act_max == 127)
        mf_dwconv_3x3_s8_dsp_body(p, input, output, MF_MM_FULL);
    else
        mf_dwconv_3x3_s8_dsp_body(p, input, output, MF_MM_CLAMP);
}

void mf_dwconv_3x3_acc_dsp(const mf_conv_params *p, const int8_t *input, int32_t *acc, mf_acc_sink *sink) {
    const int32_t c_count = p->in_c, row = p->dilation_h * p->in_w * c_count, col = p->dilation_w * c_count;
    const int32_t *const w = (const int32_t *)p->weights;
    int8_t *const block = (int8_t *)(void *)acc;
    /* every pixel's accumulators go to acc (a y pitch of 0), then to the sink; always forward */
    MF_DW3_FOR_EACH_PIXEL(p, input, block, 0,
                          {
                              mf_dw3_inside(r0, row, col, w, 0, c_count, y, 0, 0, MF_MM_ACC);
                              sink->take(sink, acc, 1);
                          },
                          {
                              mf_dw3_border_pixel(p, x, iy0, ix0, y, MF_MM_ACC);
                              sink->take(sink, acc, 1);
                          });
}

/* ------------------------------------------------------------------------------------------------------
 * int8 with TFLite's requantization in full (mf_requant_s8 bias, multiplier, shift) on the accumulator
 * kernels: for the layers whose short requantization could not be proven exact. */

typedef struct {
    mf_acc_sink sink; /* first: the kernels call sink.take */
    const mf_requant_s8 *q;
    int8_t *out;
    int32_t depth;
    int32_t next, step; /* the next segment to write, and +1 forward or -1 backward */
} mf_s8_writer;

static void mf_s8_take(mf_acc_sink *sink, const int32_t *acc, int32_t count) {
    mf_s8_writer *w = (mf_s8_writer *)(void *)sink;
    for (int32_t k = 0; k < count; ++k, acc += w->depth, w->next += w->step) {
        int8_t *const y = w->out + w->next * w->depth;
        for (int32_t c = 0; c < w->depth; ++c) y[c] = mf_conv_out_s8(w->q, c, acc[c]);
    }
}

MF_INLINE mf_s8_writer mf_s8_writer_of(const mf_requant_s8 *q, int8_t *out, int32_t depth, int32_t first, int32_t step) {
    const mf_s8_writer w = {{mf_s8_take}, q, out, depth, first, step};
    return w;
}

void mf_fc_s8_exact_dsp(const mf_fc_params *p, const int8_t *input, int8_t *output, int32_t *acc, int32_t *scratch) {
    mf_s8_writer w = mf_s8_writer_of(&p->q, output, p->out_features, 0, 1);
    mf_fc_acc_dsp(p, input, acc, scratch, &w.sink);
}

void mf_conv_s8_exact_dsp(const mf_conv_params *p, const int8_t *input, int8_t *output, int32_t *acc, int32_t *scratch) {
    mf_s8_writer w = mf_s8_writer_of(&p->q, output, p->out_c, 0, 1);
    mf_conv_acc_dsp(p, input, acc, scratch, &w.sink);
}

void mf_dwconv_3x3_s8_exact_dsp(const mf_conv_params *p, const int8_t *input, int8_t *output, int32_t *acc) {
    const int32_t pixels = p->out_h * p->out_w;
    mf_s8_writer w = mf_s8_writer_of(&p->q, output, p->out_c, p->backward ? pixels - 1 : 0, p->backward ? -1 : 1);
    mf_dwconv_3x3_acc_dsp(p, input, acc, &w.sink);
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
