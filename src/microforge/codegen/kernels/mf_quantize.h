/* QUANTIZE and DEQUANTIZE.
 *
 * int8 -> int8 QUANTIZE (requantize) uses mf_lut_s8 from mf_activations.h with a table the generator
 * computes with the reference kernel; DEQUANTIZE int8 -> float32 is a 256-entry float table built the
 * same way (exact: TFLM computes scale * (q - zp) in double and rounds once to float, as numpy does).
 * float32 -> int8 QUANTIZE divides by the scale in float32 and rounds half away from zero in double
 * like TFLM; NaN becomes 0 and values beyond the int32 range saturate (what Arm cores do).
 */
#ifndef MF_QUANTIZE_H
#define MF_QUANTIZE_H

#include "mf_common.h"

void mf_lut_s8_f32(const float table[256], const int8_t *in, float *out, int32_t count);
void mf_quantize_f32_s8(const float *in, int8_t *out, int32_t count, float scale, int32_t zero_point);

#endif /* MF_QUANTIZE_H */
