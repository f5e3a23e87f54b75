/* Dynamic fixed point kernels (see mf_dfp.h and src/microforge/reference/dynamic.py). */
#include "mf_dfp.h"

#include <math.h>

#include "mf_activations.h"

#define MF_DFP_EXPONENT_MIN (-24)
#define MF_DFP_EXPONENT_MAX 40
#define MF_DFP_ADD_ALIGN_LIMIT 24
#define MF_DFP_MAX_STEPS 34 /* the running shift grows from 0 to at most 25, one step at a time at least */

/* x * 2^-shift: a rounding shift right (halves away from zero) for shift > 0, a saturating shift left
 * otherwise; in 64 bits, as the reference computes it. */
static int32_t mf_dfp_shift_to(int32_t x, int32_t shift) {
    if (shift > 0) {
        const int k = shift > 62 ? 62 : shift;
        const int64_t v = x;
        const int64_t half = ((int64_t)1 << k) >> 1;
        return (int32_t)((v + half - (v < 0 ? 1 : 0)) >> k);
    }
    const int k = -shift > 31 ? 31 : -shift;
    const int64_t v = (int64_t)x * ((int64_t)1 << k);
    return v > INT32_MAX ? INT32_MAX : (v < INT32_MIN ? INT32_MIN : (int32_t)v);
}

static int mf_dfp_bits(uint32_t m) {
    int bits = 0;
    while (m) {
        ++bits;
        m >>= 1;
    }
    return bits;
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

static void mf_dfp_rule_segment(mf_dfp_rule *r, int32_t index, const int32_t *acc, int8_t *out, int32_t len) {
    uint32_t m = 0;
    for (int32_t i = 0; i < len; ++i) {
        const uint32_t a = acc[i] < 0 ? 0u - (uint32_t)acc[i] : (uint32_t)acc[i];
        if (a > m) m = a;
    }
    const int32_t need = mf_max_i32(0, mf_dfp_bits(m) - 7);
    if (need > r->running) {
        r->running = need;
        if (r->first_segment[r->steps - 1] == index) {
            r->shift[r->steps - 1] = need;
        } else {
            r->first_segment[r->steps] = index;
            r->shift[r->steps] = need;
            ++r->steps;
        }
    }
    for (int32_t i = 0; i < len; ++i)
        out[i] = (int8_t)mf_clamp_i32(mf_rounding_divide_by_pot(acc[i], (int)r->running), -128, 127);
}

/* Shift every segment written with a smaller shift to the final one; returns the final shift. */
static int32_t mf_dfp_rule_end(const mf_dfp_rule *r, int8_t *out, int32_t segments, int32_t len) {
    for (int32_t k = 0; k < r->steps; ++k) {
        const int d = (int)(r->running - r->shift[k]);
        if (d == 0) continue;
        const int32_t end = (k + 1 < r->steps ? r->first_segment[k + 1] : segments) * len;
        for (int32_t i = r->first_segment[k] * len; i < end; ++i)
            out[i] = (int8_t)mf_rounding_divide_by_pot(out[i], d);
    }
    return r->running;
}

static void mf_dfp_biases(const int32_t *bias, int32_t bias_exponent, int32_t ea, int32_t count, int32_t *aligned) {
    for (int32_t c = 0; c < count; ++c) aligned[c] = bias ? mf_dfp_shift_to(bias[c], bias_exponent - ea) : 0;
}

static void mf_dfp_activate(int32_t *acc, int32_t count, int32_t activation, int32_t ea) {
    if (activation == MF_DFP_NONE) return;
    const int32_t six = activation == MF_DFP_RELU6 ? mf_dfp_shift_to(6, -ea) : INT32_MAX;
    for (int32_t i = 0; i < count; ++i) acc[i] = acc[i] < 0 ? 0 : (acc[i] > six ? six : acc[i]);
}

/* ---- layers ---------------------------------------------------------------------------------------- */

void mf_dfp_conv(const mf_dfp_conv_params *p, const int8_t *in, int32_t in_exponent, int8_t *out,
                 int32_t *out_exponent, int32_t *scratch) {
    const int32_t ea = in_exponent + p->weight_exponent;
    int32_t *acc = scratch, *bias = scratch + p->out_c;
    mf_dfp_biases(p->bias, p->bias_exponent, ea, p->out_c, bias);
    mf_dfp_rule rule;
    mf_dfp_rule_begin(&rule);
    for (int32_t oy = 0; oy < p->out_h; ++oy) {
        for (int32_t ox = 0; ox < p->out_w; ++ox) {
            for (int32_t oc = 0; oc < p->out_c; ++oc) {
                uint32_t sum = 0; /* int32 with wrap-around, kept defined in uint32 */
                for (int32_t ky = 0; ky < p->kh; ++ky) {
                    const int32_t iy = oy * p->stride_h - p->pad_top + ky * p->dilation_h;
                    if (iy < 0 || iy >= p->in_h) continue;
                    for (int32_t kx = 0; kx < p->kw; ++kx) {
                        const int32_t ix = ox * p->stride_w - p->pad_left + kx * p->dilation_w;
                        if (ix < 0 || ix >= p->in_w) continue;
                        const int8_t *x = in + (iy * p->in_w + ix) * p->in_c;
                        if (p->depth_multiplier) {
                            const int32_t w = p->weights[(ky * p->kw + kx) * p->out_c + oc];
                            sum += (uint32_t)(x[oc / p->depth_multiplier] * w);
                        } else {
                            const int8_t *w = p->weights + ((oc * p->kh + ky) * p->kw + kx) * p->in_c;
                            for (int32_t ic = 0; ic < p->in_c; ++ic) sum += (uint32_t)(x[ic] * w[ic]);
                        }
                    }
                }
                acc[oc] = (int32_t)(sum + (uint32_t)bias[oc]);
            }
            mf_dfp_activate(acc, p->out_c, p->activation, ea);
            const int32_t segment = oy * p->out_w + ox;
            mf_dfp_rule_segment(&rule, segment, acc, out + segment * p->out_c, p->out_c);
        }
    }
    *out_exponent = ea - mf_dfp_rule_end(&rule, out, p->out_h * p->out_w, p->out_c);
}

void mf_dfp_fc(const mf_dfp_fc_params *p, const int8_t *in, int32_t in_exponent, int8_t *out,
               int32_t *out_exponent, int32_t *scratch) {
    const int32_t ea = in_exponent + p->weight_exponent;
    int32_t *acc = scratch, *bias = scratch + p->out_features;
    mf_dfp_biases(p->bias, p->bias_exponent, ea, p->out_features, bias);
    mf_dfp_rule rule;
    mf_dfp_rule_begin(&rule);
    for (int32_t r = 0; r < p->rows; ++r) {
        const int8_t *x = in + r * p->in_features;
        for (int32_t o = 0; o < p->out_features; ++o) {
            const int8_t *w = p->weights + o * p->in_features;
            uint32_t sum = 0;
            for (int32_t i = 0; i < p->in_features; ++i) sum += (uint32_t)(x[i] * w[i]);
            acc[o] = (int32_t)(sum + (uint32_t)bias[o]);
        }
        mf_dfp_activate(acc, p->out_features, p->activation, ea);
        mf_dfp_rule_segment(&rule, r, acc, out + r * p->out_features, p->out_features);
    }
    *out_exponent = ea - mf_dfp_rule_end(&rule, out, p->rows, p->out_features);
}

void mf_dfp_add(const int8_t *a, int32_t a_exponent, const int8_t *b, int32_t b_exponent, int8_t *out,
                int32_t *out_exponent, int32_t count, int32_t depth, int32_t activation, int32_t *scratch) {
    const int32_t high = mf_max_i32(a_exponent, b_exponent), low = mf_min_i32(a_exponent, b_exponent);
    const int32_t ea = mf_min_i32(high, low + MF_DFP_ADD_ALIGN_LIMIT);
    mf_dfp_rule rule;
    mf_dfp_rule_begin(&rule);
    const int32_t segments = count / depth;
    for (int32_t s = 0; s < segments; ++s) {
        for (int32_t i = 0; i < depth; ++i) {
            const int32_t k = s * depth + i;
            scratch[i] = mf_dfp_shift_to(a[k], a_exponent - ea) + mf_dfp_shift_to(b[k], b_exponent - ea);
        }
        mf_dfp_activate(scratch, depth, activation, ea);
        mf_dfp_rule_segment(&rule, s, scratch, out + s * depth, depth);
    }
    *out_exponent = ea - mf_dfp_rule_end(&rule, out, segments, depth);
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
    for (int32_t d = 0; d < 256; ++d)
        scratch[d] = -d >= row[2] ? mf_dfp_exp_on_negative_values(mf_requantize(-d, row[0], row[1])) : 0;
    const mf_softmax_s8_params table = {p->rows_count, p->depth, scratch};
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
        const float v = in[i] * scale;
        const float r = v != v ? 0.0f : roundf(v); /* NaN reads as 0 */
        out[i] = (int8_t)(r > 127.0f ? 127 : (r < -128.0f ? -128 : (int32_t)r));
    }
    *out_exponent = e;
}

void mf_dfp_dequantize(const int8_t *in, int32_t in_exponent, int32_t count, float *out) {
    for (int32_t i = 0; i < count; ++i) out[i] = ldexpf((float)in[i], (int)-in_exponent);
}
