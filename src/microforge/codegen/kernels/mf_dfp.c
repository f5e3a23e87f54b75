/* Dynamic fixed point kernels (see mf_dfp.h and src/microforge/reference/dynamic.py). */
#include "mf_dfp.h"

#include <math.h>
#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#endif

#include "mf_activations.h"

#define MF_DFP_EXPONENT_MIN (-24)
#define MF_DFP_EXPONENT_MAX 40
#define MF_DFP_ADD_ALIGN_LIMIT 23
#define MF_DFP_MAX_STEPS 34 /* the running shift grows from 0 to at most 25, one step at a time at least */

/* x * 2^-shift: a rounding shift right (halves away from zero) for shift > 0, a saturating shift left
 * otherwise; as the reference computes it in 64 bits, here in 32 (gemmlowp's rounding divide is the same
 * rounding) but for shifts beyond 31. */
MF_INLINE int32_t mf_dfp_shift_to(int32_t x, int32_t shift) {
    if (shift > 0) {
        if (shift <= 31) return mf_rounding_divide_by_pot(x, (int)shift);
        const int k = shift > 62 ? 62 : shift;
        const int64_t v = x;
        const int64_t half = ((int64_t)1 << k) >> 1;
        return (int32_t)((v + half - (v < 0 ? 1 : 0)) >> k);
    }
    const int k = -shift > 31 ? 31 : -shift;
    if (x > (INT32_MAX >> k)) return INT32_MAX;
    if (x < (INT32_MIN >> k)) return INT32_MIN;
    return (int32_t)((uint32_t)x << k);
}

/* ---- the segment rule ------------------------------------------------------------------------------ */

typedef struct {
    int32_t running, steps;
    int32_t first_segment[MF_DFP_MAX_STEPS], shift[MF_DFP_MAX_STEPS];
} mf_dfp_rule;

static void mf_dfp_rule_begin(mf_dfp_rule *r) {
    r->running = 0;
    r->steps = 1;
    r->first_segment[0] = 0;
    r->shift[0] = 0;
}

/* Segment `index` needs shift `need` > the running shift. */
static void mf_dfp_rule_grow(mf_dfp_rule *r, int32_t index, int32_t need) {
    r->running = need;
    if (r->first_segment[r->steps - 1] == index) {
        r->shift[r->steps - 1] = need;
    } else {
        r->first_segment[r->steps] = index;
        r->shift[r->steps] = need;
        ++r->steps;
    }
}

/* Shift every segment written with a smaller shift to the final one; returns the final shift. The rule
 * counts segments in the order they were visited: from the last to the first if `reverse`. */
static int32_t mf_dfp_rule_end(const mf_dfp_rule *r, int8_t *out, int32_t segments, int32_t len, int reverse) {
    for (int32_t k = 0; k < r->steps; ++k) {
        const int d = (int)(r->running - r->shift[k]);
        if (d == 0) continue;
        int32_t first = r->first_segment[k], end = k + 1 < r->steps ? r->first_segment[k + 1] : segments;
        if (reverse) { /* visits [first, end) are the segments [segments - end, segments - first) */
            const int32_t t = segments - end;
            end = segments - first;
            first = t;
        }
        for (int32_t i = first * len; i < end * len; ++i) out[i] = (int8_t)mf_rounding_divide_by_pot(out[i], d);
    }
    return r->running;
}

/* ---- the output stage: accumulators -> int8 segments --------------------------------------------------
 * Every layer with accumulators hands them here one segment at a time, raw: the writer adds the bias
 * aligned to the accumulator's exponent, applies the activation and writes the segment with the running
 * shift S while it takes the segment's magnitude. Only when the segment needs more than S (the shift grows:
 * a few times a layer) is it written again with its own shift; the result is the rule's either way. */

typedef struct {
    mf_acc_sink sink;      /* first: the kernels of mf_conv.c call sink.take */
    mf_dfp_rule rule;
    const int32_t *bias;   /* [depth] aligned to the accumulators' exponent, or 0 */
    int32_t activation, six, depth, next;
    int8_t *out;
    int32_t last;            /* reverse: the last segment's index (visited first); -1 when forward */
    const int32_t *raw_bias; /* mf_dfp_take_aligning: the layer's bias, and the shift that aligns it */
    int32_t bias_shift;
} mf_dfp_writer;

MF_INLINE int32_t mf_dfp_saturating_add(int32_t a, int32_t b) {
#if defined(__ARM_FEATURE_DSP)
    return __qadd(a, b);
#else
    const int64_t s = (int64_t)a + b;
    return s > INT32_MAX ? INT32_MAX : (s < INT32_MIN ? INT32_MIN : (int32_t)s);
#endif
}

MF_INLINE int8_t mf_dfp_int8(int32_t v) {
#if defined(__ARM_FEATURE_DSP)
    return (int8_t)__ssat(v, 8);
#else
    return (int8_t)(v < -128 ? -128 : (v > 127 ? 127 : v));
#endif
}

/* The activated value of accumulator acc[i] plus bias[i] (int32 wrap-around, as the reference sums). */
MF_INLINE int32_t mf_dfp_value(const int32_t *acc, const int32_t *bias, int32_t i, int32_t activation,
                               int32_t six) {
    const int32_t v = bias ? (int32_t)((uint32_t)acc[i] + (uint32_t)bias[i]) : acc[i];
    if (activation == MF_DFP_NONE) return v;
    const int32_t r = v & ~(v >> 31); /* max(v, 0) */
    return activation == MF_DFP_RELU6 && r > six ? six : r;
}

#if defined(__ARM_FEATURE_DSP)
/* The loop of mf_dfp_segment for a biased RELU or RELU6 layer and 0 <= s < 24, two values a step (len
 * even): gcc's loop takes 15 instructions a value, this one 9 (10 with RELU6). Returns the OR of the
 * activated values. */
MF_INLINE uint32_t mf_dfp_relu_pairs(const int32_t *acc, const int32_t *bias, int8_t *out, int32_t len, int32_t half,
                                     int32_t s, int32_t six, int relu6) {
    uint32_t m = 0;
    const int32_t *const end = acc + len;
    int32_t v0, v1, b0, b1;
#define MF_DFP_PAIR_HEAD                               \
    "1: ldrd   %[v0], %[v1], [%[a]], #8\n\t"           \
    "ldrd   %[b0], %[b1], [%[b]], #8\n\t"              \
    "add    %[v0], %[v0], %[b0]\n\t"                   \
    "add    %[v1], %[v1], %[b1]\n\t"                   \
    "bic    %[v0], %[v0], %[v0], asr #31\n\t"          \
    "bic    %[v1], %[v1], %[v1], asr #31\n\t"
#define MF_DFP_PAIR_TAIL                               \
    "orr    %[m], %[m], %[v0]\n\t"                     \
    "orr    %[m], %[m], %[v1]\n\t"                     \
    "qadd   %[v0], %[v0], %[half]\n\t"                 \
    "qadd   %[v1], %[v1], %[half]\n\t"                 \
    "asr    %[v0], %[v0], %[s]\n\t"                    \
    "asr    %[v1], %[v1], %[s]\n\t"                    \
    "usat   %[v0], #7, %[v0]\n\t"                      \
    "usat   %[v1], #7, %[v1]\n\t"                      \
    "strb   %[v1], [%[o], #1]\n\t"                     \
    "strb   %[v0], [%[o]], #2\n\t"                     \
    "cmp    %[a], %[end]\n\t"                          \
    "bne    1b\n\t"
#define MF_DFP_PAIR_OPERANDS                                                                                  \
    : [v0] "=&r"(v0), [v1] "=&r"(v1), [b0] "=&r"(b0), [b1] "=&r"(b1), [a] "+r"(acc), [b] "+r"(bias), [o] "+r"(out), \
      [m] "+r"(m)                                                                                             \
    : [end] "r"(end), [half] "r"(half), [s] "r"(s), [six] "r"(six)                                            \
    : "cc", "memory"
    if (relu6)
        __asm__ volatile(MF_DFP_PAIR_HEAD
                         "cmp    %[v0], %[six]\n\t"
                         "it     gt\n\t"
                         "movgt  %[v0], %[six]\n\t"
                         "cmp    %[v1], %[six]\n\t"
                         "it     gt\n\t"
                         "movgt  %[v1], %[six]\n\t" MF_DFP_PAIR_TAIL MF_DFP_PAIR_OPERANDS);
    else
        __asm__ volatile(MF_DFP_PAIR_HEAD MF_DFP_PAIR_TAIL MF_DFP_PAIR_OPERANDS);
#undef MF_DFP_PAIR_HEAD
#undef MF_DFP_PAIR_TAIL
#undef MF_DFP_PAIR_OPERANDS
    return m;
}
#endif

/* Segment `index` (len values) with the running shift, then again with its own if it needs more. */
MF_INLINE void mf_dfp_segment(mf_dfp_rule *rule, int32_t index, const int32_t *acc, const int32_t *bias,
                              int32_t activation, int32_t six, int8_t *out, int32_t len) {
    const int32_t s = rule->running;
    uint32_t m = 0; /* the OR of the magnitudes: as many binary digits as the largest */
    if (s < 24) {
        /* round half away from zero: (v + 2^(s-1) - (v < 0)) >> s for s > 0; an overflowing sum saturates,
         * and INT32_MAX >> s (s < 24) is above 127 like the true quotient */
        const int32_t half = s ? (int32_t)1 << (s - 1) : 0, negative = s ? -1 : 0;
        int32_t i = 0;
#if defined(__ARM_FEATURE_DSP)
        if (bias && activation != MF_DFP_NONE && len >= 2) { /* the values are >= 0: USAT clamps to [0, 127] */
            i = len & ~1;
            m = mf_dfp_relu_pairs(acc, bias, out, i, half, s, six, activation == MF_DFP_RELU6);
        }
#endif
        for (; i < len; ++i) {
            const int32_t v = mf_dfp_value(acc, bias, i, activation, six);
            const int32_t t = mf_dfp_saturating_add(v, half);
            if (activation == MF_DFP_NONE) {
                m |= (uint32_t)(v ^ (v >> 31)) + (uint32_t)(v < 0);
                out[i] = mf_dfp_int8((t + ((v >> 31) & negative)) >> s);
            } else {
                m |= (uint32_t)v;
                out[i] = mf_dfp_int8(t >> s);
            }
        }
    } else {
        for (int32_t i = 0; i < len; ++i) {
            const int32_t v = mf_dfp_value(acc, bias, i, activation, six);
            m |= v < 0 ? 0u - (uint32_t)v : (uint32_t)v;
            out[i] = mf_dfp_int8(mf_rounding_divide_by_pot(v, (int)s));
        }
    }
    const int32_t need = mf_max_i32(0, 32 - mf_count_leading_zeros32(m) - 7); /* bits(m) - 7 */
    if (need <= s) return;
    mf_dfp_rule_grow(rule, index, need);
    for (int32_t i = 0; i < len; ++i)
        out[i] = mf_dfp_int8(mf_rounding_divide_by_pot(mf_dfp_value(acc, bias, i, activation, six), (int)need));
}

static void mf_dfp_take(mf_acc_sink *sink, const int32_t *acc, int32_t count) {
    mf_dfp_writer *w = (mf_dfp_writer *)(void *)sink;
    /* each case its own copy of the loops, with the bias and the activation known */
#define MF_DFP_SEGMENT(bias)                                                                               \
    do {                                                                                                   \
        if (w->activation == MF_DFP_RELU)                                                                  \
            mf_dfp_segment(&w->rule, w->next, acc, bias, MF_DFP_RELU, 0, out, w->depth);                   \
        else if (w->activation == MF_DFP_RELU6)                                                            \
            mf_dfp_segment(&w->rule, w->next, acc, bias, MF_DFP_RELU6, w->six, out, w->depth);             \
        else                                                                                               \
            mf_dfp_segment(&w->rule, w->next, acc, bias, MF_DFP_NONE, 0, out, w->depth);                   \
    } while (0)
    for (int32_t k = 0; k < count; ++k, acc += w->depth, ++w->next) {
        int8_t *const out = w->out + (w->last >= 0 ? w->last - w->next : w->next) * w->depth;
        if (w->bias)
            MF_DFP_SEGMENT(w->bias);
        else
            MF_DFP_SEGMENT((const int32_t *)0);
    }
#undef MF_DFP_SEGMENT
}

/* For a single row: its accumulators take the bias aligned value by value (a few instructions more per
 * value, but no table of aligned biases as long as the row); acc is the writer's own scratch. */
static void mf_dfp_take_aligning(mf_acc_sink *sink, const int32_t *acc, int32_t count) {
    mf_dfp_writer *w = (mf_dfp_writer *)(void *)sink;
    int32_t *a = (int32_t *)(uintptr_t)acc;
    for (int32_t k = 0; k < count; ++k, a += w->depth)
        for (int32_t i = 0; i < w->depth; ++i)
            a[i] = (int32_t)((uint32_t)a[i] + (uint32_t)mf_dfp_shift_to(w->raw_bias[i], w->bias_shift));
    mf_dfp_take(sink, acc, count);
}

/* A writer of `segments` segments of o->depth values to out, with the accumulators at exponent ea; aligned:
 * room for o's bias at ea (o->depth values), or 0. */
static void mf_dfp_writer_begin(mf_dfp_writer *w, const mf_dfp_output *o, int32_t ea, int32_t *aligned, int8_t *out,
                                int32_t segments) {
    w->sink.take = mf_dfp_take;
    mf_dfp_rule_begin(&w->rule);
    if (o->bias)
        for (int32_t c = 0; c < o->depth; ++c) aligned[c] = mf_dfp_shift_to(o->bias[c], o->bias_exponent - ea);
    w->bias = o->bias ? aligned : 0;
    w->activation = o->activation;
    w->six = o->activation == MF_DFP_RELU6 ? mf_dfp_shift_to(6, -ea) : INT32_MAX;
    w->depth = o->depth;
    w->next = 0;
    w->out = out;
    w->last = o->reverse ? segments - 1 : -1;
}

/* The output exponent, once every segment is written. */
static int32_t mf_dfp_writer_end(const mf_dfp_writer *w, int32_t ea) {
    return ea - mf_dfp_rule_end(&w->rule, w->out, w->next, w->depth, w->last >= 0);
}

/* ---- layers ---------------------------------------------------------------------------------------- */

void mf_dfp_conv(const mf_dfp_output *o, const mf_dfp_conv_params *p, const int8_t *in, int32_t in_exponent,
                 int8_t *out, int32_t *out_exponent, int32_t *scratch) {
    const int32_t ea = in_exponent + o->weight_exponent;
    int32_t *const acc = scratch + p->out_c;
    const int32_t pixels = p->out_h * p->out_w;
    mf_dfp_writer w;
    mf_dfp_writer_begin(&w, o, ea, scratch, out, pixels);
    for (int32_t visit = 0; visit < pixels; ++visit) {
        const int32_t pixel = o->reverse ? pixels - 1 - visit : visit, oy = pixel / p->out_w, ox = pixel % p->out_w;
        for (int32_t oc = 0; oc < p->out_c; ++oc) {
            uint32_t sum = 0; /* int32 with wrap-around, kept defined in uint32 */
            MF_FOR_EACH_INSIDE_TAP(p, oy, ox, {
                const int8_t *x = in + (iy * p->in_w + ix) * p->in_c;
                if (p->depth_multiplier) {
                    const int32_t wt = p->weights[(ky * p->kw + kx) * p->out_c + oc];
                    sum += (uint32_t)(x[oc / p->depth_multiplier] * wt);
                } else {
                    const int8_t *wt = p->weights + ((oc * p->kh + ky) * p->kw + kx) * p->in_c;
                    for (int32_t ic = 0; ic < p->in_c; ++ic) sum += (uint32_t)(x[ic] * wt[ic]);
                }
            })
            acc[oc] = (int32_t)sum;
        }
        mf_dfp_take(&w.sink, acc, 1);
    }
    *out_exponent = mf_dfp_writer_end(&w, ea);
}

void mf_dfp_fc(const mf_dfp_output *o, const mf_dfp_fc_params *p, const int8_t *in, int32_t in_exponent,
               int8_t *out, int32_t *out_exponent, int32_t *scratch) {
    const int32_t ea = in_exponent + o->weight_exponent;
    int32_t *const acc = scratch + p->out_features;
    mf_dfp_writer w;
    mf_dfp_writer_begin(&w, o, ea, scratch, out, p->rows);
    for (int32_t r = 0; r < p->rows; ++r) {
        const int8_t *x = in + r * p->in_features;
        for (int32_t k = 0; k < p->out_features; ++k) {
            const int8_t *wt = p->weights + k * p->in_features;
            uint32_t sum = 0;
            for (int32_t i = 0; i < p->in_features; ++i) sum += (uint32_t)(x[i] * wt[i]);
            acc[k] = (int32_t)sum;
        }
        mf_dfp_take(&w.sink, acc, 1);
    }
    *out_exponent = mf_dfp_writer_end(&w, ea);
}

/* The Cortex-M4/M7 layers: mf_conv.c's accumulator kernels feed the writer. scratch: the aligned biases
 * (o->depth int32), the kernel's accumulators, then the kernel's own scratch. */
void mf_dfp_fc_dsp(const mf_dfp_output *o, const mf_fc_params *p, const int8_t *in, int32_t in_exponent,
                   int8_t *out, int32_t *out_exponent, int32_t *scratch, int32_t *kernel_scratch) {
    const int32_t ea = in_exponent + o->weight_exponent;
    mf_dfp_writer w;
    if (p->rows == 1) { /* no table of aligned biases: scratch is the accumulators */
        const mf_dfp_output unbiased = {0, o->weight_exponent, 0, o->activation, o->depth, o->reverse};
        mf_dfp_writer_begin(&w, &unbiased, ea, 0, out, 1);
        if (o->bias) {
            w.sink.take = mf_dfp_take_aligning;
            w.raw_bias = o->bias;
            w.bias_shift = o->bias_exponent - ea;
        }
        mf_fc_acc_dsp(p, in, scratch, kernel_scratch, &w.sink);
    } else {
        mf_dfp_writer_begin(&w, o, ea, scratch, out, p->rows);
        mf_fc_acc_dsp(p, in, scratch + o->depth, kernel_scratch, &w.sink);
    }
    *out_exponent = mf_dfp_writer_end(&w, ea);
}

void mf_dfp_conv_dsp(const mf_dfp_output *o, const mf_conv_params *p, const int8_t *in, int32_t in_exponent,
                     int8_t *out, int32_t *out_exponent, int32_t *scratch) {
    const int32_t ea = in_exponent + o->weight_exponent;
    mf_dfp_writer w;
    mf_dfp_writer_begin(&w, o, ea, scratch, out, p->out_h * p->out_w);
    mf_conv_acc_dsp(p, in, scratch + o->depth, scratch + 5 * o->depth, &w.sink);
    *out_exponent = mf_dfp_writer_end(&w, ea);
}

void mf_dfp_dwconv_3x3_dsp(const mf_dfp_output *o, const mf_conv_params *p, const int8_t *in, int32_t in_exponent,
                           int8_t *out, int32_t *out_exponent, int32_t *scratch) {
    const int32_t ea = in_exponent + o->weight_exponent;
    mf_dfp_writer w;
    mf_dfp_writer_begin(&w, o, ea, scratch, out, p->out_h * p->out_w); /* p->backward: o->reverse */
    mf_dwconv_3x3_acc_dsp(p, in, scratch + o->depth, &w.sink);
    *out_exponent = mf_dfp_writer_end(&w, ea);
}

void mf_dfp_add(const int8_t *a, int32_t a_exponent, const int8_t *b, int32_t b_exponent, int8_t *out,
                int32_t *out_exponent, int32_t count, int32_t depth, int32_t activation, int32_t *scratch) {
    const int32_t high = mf_max_i32(a_exponent, b_exponent), low = mf_min_i32(a_exponent, b_exponent);
    const int32_t ea = mf_min_i32(high, low + MF_DFP_ADD_ALIGN_LIMIT);
    const mf_dfp_output o = {0, 0, 0, activation, depth, 0};
    mf_dfp_writer w;
    mf_dfp_writer_begin(&w, &o, ea, 0, out, count / depth);
    const int32_t sa = a_exponent - ea, sb = b_exponent - ea;
    for (int32_t k = 0; k < count; k += depth) {
        if (sa <= 0 && sb <= 0) { /* both shifted left (the usual case), by at most 23: no saturation */
            for (int32_t i = 0; i < depth; ++i)
                scratch[i] = (int32_t)(((uint32_t)a[k + i] << -sa) + ((uint32_t)b[k + i] << -sb));
        } else {
            for (int32_t i = 0; i < depth; ++i)
                scratch[i] = mf_dfp_shift_to(a[k + i], sa) + mf_dfp_shift_to(b[k + i], sb);
        }
        mf_dfp_take(&w.sink, scratch, 1);
    }
    *out_exponent = mf_dfp_writer_end(&w, ea);
}

/* ---- SOFTMAX: gemmlowp's exp for the input's exponent, then TFLM's int8 softmax ---------------------- */

static int32_t mf_dfp_multiply_by_pot(int32_t x, int exponent) {
    if (exponent < 0) return mf_rounding_divide_by_pot(x, -exponent);
    const int32_t threshold = (int32_t)(((int64_t)1 << (31 - exponent)) - 1);
    return x > threshold ? INT32_MAX : (x < -threshold ? INT32_MIN : (int32_t)((uint32_t)x << exponent));
}

static int32_t mf_dfp_exp_quarter(int32_t a) { /* exp(a) for Q0 a in [-1/4, 0), Taylor around -1/8 */
    const int32_t constant_term = 1895147668, one_third = 715827883;
    const int32_t x = a + (1 << 28);
    const int32_t x2 = mf_doubling_high_mul(x, x);
    const int32_t x3 = mf_doubling_high_mul(x2, x);
    const int32_t x4 = mf_doubling_high_mul(x2, x2);
    const int32_t x4_over_4 = mf_rounding_divide_by_pot(x4, 2);
    const int32_t poly = mf_rounding_divide_by_pot(mf_doubling_high_mul(x4_over_4 + x3, one_third) + x2, 1);
    return constant_term + mf_doubling_high_mul(constant_term, x + poly);
}

/* gemmlowp exp_on_negative_values for Q5.26 a <= 0 -> Q0 */
static int32_t mf_dfp_exp_on_negative_values(int32_t a) {
    static const int32_t multipliers[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242};
    const int32_t one_quarter = 1 << 24;
    const int32_t a_mod_quarter_minus_quarter = (a & (one_quarter - 1)) - one_quarter;
    int32_t result = mf_dfp_exp_quarter(mf_dfp_multiply_by_pot(a_mod_quarter_minus_quarter, 5));
    const int32_t remainder = a_mod_quarter_minus_quarter - a;
    for (int k = -2; k <= 4; ++k)
        if (remainder & (1 << (26 + k))) result = mf_doubling_high_mul(result, multipliers[k + 2]);
    return a == 0 ? INT32_MAX : result;
}

void mf_dfp_softmax(const mf_dfp_softmax_params *p, const int8_t *in, int32_t in_exponent, int8_t *out,
                    int32_t *scratch) {
    const int32_t e = mf_clamp_i32(in_exponent, p->lowest, p->highest);
    const int32_t *row = p->rows + 3 * (e - p->lowest);
#define MF_DFP_EXP_ENTRY(d) ((-(d)) >= row[2] ? mf_dfp_exp_on_negative_values(mf_requantize(-(d), row[0], row[1])) : 0)
    if (p->rows_count * p->depth < 256) { /* a short input reads few entries: only those are computed */
        for (const int8_t *x = in, *const end = in + p->rows_count * p->depth; x != end; x += p->depth) {
            int32_t max = -128;
            for (int32_t i = 0; i < p->depth; ++i) max = mf_max_i32(max, x[i]);
            for (int32_t i = 0; i < p->depth; ++i) scratch[max - x[i]] = MF_DFP_EXP_ENTRY(max - x[i]);
        }
    } else {
        for (int32_t d = 0; d < 256; ++d) scratch[d] = MF_DFP_EXP_ENTRY(d);
    }
#undef MF_DFP_EXP_ENTRY
    const mf_softmax_s8_params table = {p->rows_count, p->depth, 256, scratch};
    mf_softmax_s8(&table, in, out);
}

/* ---- the model's edges ----------------------------------------------------------------------------- */

void mf_dfp_quantize(const float *in, int32_t count, int8_t *out, int32_t *out_exponent) {
    float m = 0.0f;
    for (int32_t i = 0; i < count; ++i) {
        const float a = fabsf(in[i]);
        if (a > m && a <= 3.402823466e38f) m = a; /* NaN and infinities take no part in the range */
    }
    int32_t e = 0;
    if (m > 0.0f) {
        int k;
        const float fraction = frexpf(m, &k);
        e = mf_clamp_i32(7 - k - (fraction * 128.0f >= 127.5f ? 1 : 0), MF_DFP_EXPONENT_MIN, MF_DFP_EXPONENT_MAX);
    }
    const float scale = ldexpf(1.0f, (int)e);
    for (int32_t i = 0; i < count; ++i) {
        float v = in[i] * scale; /* exact: a power of two */
        if (v != v) v = 0.0f;   /* NaN reads as 0 */
        v = v > 127.0f ? 127.0f : (v < -128.0f ? -128.0f : v); /* clamping first rounds the same */
        out[i] = (int8_t)mf_round_half_away_f32(v);
    }
    *out_exponent = e;
}

void mf_dfp_dequantize(const int8_t *in, int32_t in_exponent, int32_t count, float *out) {
    if (in_exponent < -126 || in_exponent > 126) { /* 2^-e itself would leave the normal floats */
        for (int32_t i = 0; i < count; ++i) out[i] = ldexpf((float)in[i], (int)-in_exponent);
        return;
    }
    /* q * 2^-e rounds like ldexpf(q, -e): both are the exact product rounded once */
    const float scale = ldexpf(1.0f, (int)-in_exponent);
    for (int32_t i = 0; i < count; ++i) out[i] = (float)in[i] * scale;
}
