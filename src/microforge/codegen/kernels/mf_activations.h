/* Activations: SOFTMAX, and the elementwise LOGISTIC, HARD_SWISH, RELU, RELU6; int8 and float32.
 *
 * int8 LOGISTIC, HARD_SWISH and RELU (and QUANTIZE int8->int8, DEQUANTIZE, see mf_quantize.h) are
 * 256-entry lookup tables that the generator fills by running the reference kernel, which is bit-exact
 * with TFLite Micro, on every int8 input: exact by construction. Tables are indexed by the input byte
 * read as uint8 (table[(uint8_t)x]). int8 RELU6 is a clamp to the input's quantized 0 and 6 (as TFLM).
 *
 * int8 SOFTMAX follows TFLM row by row: each input's difference to the row maximum (0..255) indexes a
 * table of gemmlowp exp values (Q0, zero where the difference is below diff_min), whose Q12 sum gives a
 * fixed-point reciprocal that scales every exp to the output (scale 1/256, zero point -128). The table
 * stops at its last nonzero entry: larger differences have an exp of 0.
 *
 * float32 SOFTMAX and LOGISTIC follow TFLM's float reference kernels step by step with the C library's
 * expf (libm: link with -lm); RELU, RELU6 and HARD_SWISH are direct loops.
 */
#ifndef MF_ACTIVATIONS_H
#define MF_ACTIVATIONS_H

#include "mf_common.h"

void mf_lut_s8(const int8_t table[256], const int8_t *in, int8_t *out, int32_t count);
void mf_clamp_s8(const int8_t *in, int8_t *out, int32_t count, int32_t lo, int32_t hi);
/* int16 (zero points 0): RELU6 clamps the raw input to its quantized 0 and 6, as for int8; RELU requantizes
 * to the output scale (TFLite's MultiplyByQuantizedMultiplier) and clamps below at 0. */
void mf_clamp_s16(const int16_t *in, int16_t *out, int32_t count, int32_t lo, int32_t hi);
void mf_relu_s16(const int16_t *in, int16_t *out, int32_t count, int32_t multiplier, int32_t shift, int32_t lo);

typedef struct {
    int32_t rows, depth;
    int32_t exp_count;        /* entries in exp_table, 1..256 */
    const int32_t *exp_table; /* [exp_count]: exp of the rescaled difference -d for d = 0.. (Q0); 0 beyond */
} mf_softmax_s8_params;

void mf_softmax_s8(const mf_softmax_s8_params *p, const int8_t *in, int8_t *out);

/* int16 -> int16 SOFTMAX (int16x8), TFLM's SoftmaxInt16: differences to the row maximum rescaled so that
 * [-10, 0] spans 65535 steps, exp from an interpolated 513-entry table (Q0.15), the row's int32 sum normalised
 * by its leading zeros and inverted through a second table of 1/(1+x), each exp times that shifted back with
 * rounding into [0, 32767]. The generator builds both tables with the reference's float32 recipe. */
typedef struct {
    int32_t rows, depth;
    int32_t multiplier, shift;          /* beta * input_scale / (10 / 65535) */
    const int16_t *exp_table, *recip_table; /* [513] each */
} mf_softmax_s16_params;

void mf_softmax_s16(const mf_softmax_s16_params *p, const int16_t *in, int16_t *out);

typedef struct {
    int32_t rows, depth;
    float beta;
} mf_softmax_f32_params;

void mf_softmax_f32(const mf_softmax_f32_params *p, const float *in, float *out);
void mf_logistic_f32(const float *in, float *out, int32_t count);
void mf_relu_f32(const float *in, float *out, int32_t count);
void mf_relu6_f32(const float *in, float *out, int32_t count);
void mf_hard_swish_f32(const float *in, float *out, int32_t count);
/* TANH, LEAKY_RELU and RSQRT: int8 through mf_lut_s8 (tables filled by the reference kernels); float32 as TFLM's
 * reference: the C library's tanhf (close to the reference, not always to the bit), x > 0 ? x : alpha * x,
 * and 1.0f / sqrtf(x) (exact: both correctly rounded). */
void mf_tanh_f32(const float *in, float *out, int32_t count);
void mf_leaky_relu_f32(const float *in, float *out, int32_t count, float alpha);
void mf_rsqrt_f32(const float *in, float *out, int32_t count);

#endif /* MF_ACTIVATIONS_H */
