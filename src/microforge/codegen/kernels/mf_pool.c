/* Pooling kernels: see mf_pool.h. One output pixel at a time; the window is cut to the input. */
#include "mf_pool.h"

/* The in-bounds part [*y0, *y1) x [*x0, *x1) of the window of output pixel (oy, ox), in input rows and
 * columns. */
MF_INLINE void mf_pool_window(const mf_pool_params *p, int32_t oy, int32_t ox, int32_t *y0, int32_t *y1,
                              int32_t *x0, int32_t *x1) {
    const int32_t top = oy * p->stride_h - p->pad_top;
    const int32_t left = ox * p->stride_w - p->pad_left;
    *y0 = mf_max_i32(top, 0);
    *y1 = mf_min_i32(top + p->filter_h, p->in_h);
    *x0 = mf_max_i32(left, 0);
    *x1 = mf_min_i32(left + p->filter_w, p->in_w);
}

MF_INLINE float mf_pool_clamp_f32(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

/* The four integer poolings: one body, inlined into each kernel with `average` and `wide` (int16 rather than
 * int8) constant, so each compiles to its own loop. Average: TFLM's rounding of the window sum (half away
 * from zero; an int16 window sum stays far inside int32); max: the largest value. */
MF_INLINE void mf_pool_int(const mf_pool_params *p, const void *in, void *out, int average, int wide) {
    const int32_t row = p->in_w * p->channels;
    int32_t o = 0;
    for (int32_t b = 0; b < p->batches; ++b) {
        const int32_t image = b * p->in_h * row;
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            for (int32_t ox = 0; ox < p->out_w; ++ox) {
                int32_t y0, y1, x0, x1;
                mf_pool_window(p, oy, ox, &y0, &y1, &x0, &x1);
                const int32_t count = (y1 - y0) * (x1 - x0);
                for (int32_t c = 0; c < p->channels; ++c) {
                    int32_t value = average ? 0 : (wide ? -32768 : -128);
                    for (int32_t y = y0; y < y1; ++y) {
                        for (int32_t x = x0; x < x1; ++x) {
                            const int32_t i = image + y * row + x * p->channels + c;
                            const int32_t v = wide ? ((const int16_t *)in)[i] : ((const int8_t *)in)[i];
                            value = average ? value + v : mf_max_i32(value, v);
                        }
                    }
                    if (average) /* C division truncates: round half away from zero on either sign */
                        value = count <= 0 ? 0 : value > 0 ? (value + count / 2) / count : (value - count / 2) / count;
                    value = mf_clamp_i32(value, p->act_min, p->act_max);
                    if (wide) ((int16_t *)out)[o++] = (int16_t)value;
                    else ((int8_t *)out)[o++] = (int8_t)value;
                }
            }
        }
    }
}

void mf_avg_pool_s8(const mf_pool_params *p, const int8_t *in, int8_t *out) { mf_pool_int(p, in, out, 1, 0); }

void mf_max_pool_s8(const mf_pool_params *p, const int8_t *in, int8_t *out) { mf_pool_int(p, in, out, 0, 0); }

void mf_avg_pool_s16(const mf_pool_params *p, const int16_t *in, int16_t *out) { mf_pool_int(p, in, out, 1, 1); }

void mf_max_pool_s16(const mf_pool_params *p, const int16_t *in, int16_t *out) { mf_pool_int(p, in, out, 0, 1); }

/* Both float32 poolings, as mf_pool_s8: average sums in float32 in window order (as TFLM), then divides. */
MF_INLINE void mf_pool_f32(const mf_pool_params *p, const float *in, float *out, int average) {
    const int32_t row = p->in_w * p->channels;
    for (int32_t b = 0; b < p->batches; ++b) {
        const float *image = in + b * p->in_h * row;
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            for (int32_t ox = 0; ox < p->out_w; ++ox) {
                int32_t y0, y1, x0, x1;
                mf_pool_window(p, oy, ox, &y0, &y1, &x0, &x1);
                const float count = (float)((y1 - y0) * (x1 - x0));
                for (int32_t c = 0; c < p->channels; ++c) {
                    float value = average ? 0.0f : -3.40282347e+38f; /* lowest float32 */
                    for (int32_t y = y0; y < y1; ++y) {
                        const float *src = image + y * row + c;
                        for (int32_t x = x0; x < x1; ++x) {
                            const float v = src[x * p->channels];
                            value = average ? value + v : (v > value ? v : value);
                        }
                    }
                    *out++ = mf_pool_clamp_f32(average ? value / count : value, p->f_min, p->f_max);
                }
            }
        }
    }
}

void mf_avg_pool_f32(const mf_pool_params *p, const float *in, float *out) { mf_pool_f32(p, in, out, 1); }

void mf_max_pool_f32(const mf_pool_params *p, const float *in, float *out) { mf_pool_f32(p, in, out, 0); }
