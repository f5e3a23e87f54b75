/* Quantization kernels: see mf_quantize.h. */
#include "mf_quantize.h"

void mf_lut_s8_f32(const float table[256], const int8_t *in, float *out, int32_t count) {
    for (int32_t i = 0; i < count; ++i) out[i] = table[(uint8_t)in[i]];
}

/* TFLM's AffineQuantize before the zero point: in / scale in float32, rounded half away from zero (TFLM
 * rounds the float in double: floor(|d| + 0.5) with d's sign; mf_round_half_away_f32 gives the same
 * integer). NaN becomes 0; beyond +-2^20 (far outside int16 whatever the zero point) it saturates. */
static int32_t mf_round_scaled(float value, float scale) {
    const float d = value / scale; /* float32 division, as TFLM */
    if (d != d) return 0;
    if (d >= 1048576.0f) return 1048576;
    if (d <= -1048576.0f) return -1048576;
    return mf_round_half_away_f32(d);
}

void mf_quantize_f32_s8(const float *in, int8_t *out, int32_t count, float scale, int32_t zero_point) {
    for (int32_t i = 0; i < count; ++i)
        out[i] = (int8_t)mf_clamp_i32(mf_round_scaled(in[i], scale) + zero_point, -128, 127);
}

void mf_quantize_f32_s16(const float *in, int16_t *out, int32_t count, float scale, int32_t zero_point) {
    for (int32_t i = 0; i < count; ++i)
        out[i] = (int16_t)mf_clamp_i32(mf_round_scaled(in[i], scale) + zero_point, -32768, 32767);
}

void mf_lut_s8_s16(const int16_t table[256], const int8_t *in, int16_t *out, int32_t count) {
    for (int32_t i = 0; i < count; ++i) out[i] = table[(uint8_t)in[i]];
}

void mf_requantize_s16_s8(const int16_t *in, int8_t *out, int32_t count, const mf_requantize_params *p) {
    for (int32_t i = 0; i < count; ++i) {
        const int32_t q = mf_requantize(in[i] - p->input_zero_point, p->multiplier, p->shift);
        out[i] = (int8_t)mf_clamp_i32(q + p->output_zero_point, -128, 127);
    }
}

void mf_requantize_s16_s16(const int16_t *in, int16_t *out, int32_t count, const mf_requantize_params *p) {
    for (int32_t i = 0; i < count; ++i) {
        const int32_t q = mf_requantize(in[i] - p->input_zero_point, p->multiplier, p->shift);
        out[i] = (int16_t)mf_clamp_i32(q + p->output_zero_point, -32768, 32767);
    }
}

void mf_dequantize_s16_f32(const int16_t *in, float *out, int32_t count, double scale, int32_t zero_point) {
    for (int32_t i = 0; i < count; ++i) out[i] = (float)(scale * (double)(in[i] - zero_point));
}
