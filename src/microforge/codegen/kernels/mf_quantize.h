/* QUANTIZE and DEQUANTIZE.
 *
 * int8 -> int8 QUANTIZE (requantize) uses mf_lut_s8 from mf_activations.h with a table the generator
 * computes with the reference kernel; DEQUANTIZE int8 -> float32 is a 256-entry float table built the
 * same way (exact: TFLM computes scale * (q - zp) in double and rounds once to float, as numpy does).
 * float32 -> int8 QUANTIZE divides by the scale in float32 and rounds half away from zero in double
 * like TFLM; NaN becomes 0 and values beyond the int32 range saturate (what Arm cores do).
 * int16 (int16x8 models): float32 -> int16 the same way; int8 -> int16 is a 256-entry int16 table from the
 * reference; int16 -> int8 or int16 requantizes with TFLite's MultiplyByQuantizedMultiplier (mf_requantize);
 * int16 -> float32 computes scale * (q - zp) in double and rounds once to float, as TFLM does.
 */
#ifndef MF_QUANTIZE_H
#define MF_QUANTIZE_H

#include "mf_common.h"

typedef struct {
    int32_t input_zero_point, output_zero_point;
    int32_t multiplier, shift; /* input scale / output scale, as TFLite's QuantizeMultiplier gives it */
} mf_requantize_params;

void mf_lut_s8_f32(const float table[256], const int8_t *in, float *out, int32_t count);
void mf_quantize_f32_s8(const float *in, int8_t *out, int32_t count, float scale, int32_t zero_point);
void mf_quantize_f32_s16(const float *in, int16_t *out, int32_t count, float scale, int32_t zero_point);
void mf_lut_s8_s16(const int16_t table[256], const int8_t *in, int16_t *out, int32_t count);
void mf_requantize_s16_s8(const int16_t *in, int8_t *out, int32_t count, const mf_requantize_params *p);
void mf_requantize_s16_s16(const int16_t *in, int16_t *out, int32_t count, const mf_requantize_params *p);
void mf_dequantize_s16_f32(const int16_t *in, float *out, int32_t count, double scale, int32_t zero_point);

#endif /* MF_QUANTIZE_H */
