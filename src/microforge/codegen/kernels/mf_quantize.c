/* Quantization kernels: see mf_quantize.h. */
#include "mf_quantize.h"

void mf_lut_s8_f32(const float table[256], const int8_t *in, float *out, int32_t count) {
    for (int32_t i = 0; i < count; ++i) out[i] = table[(uint8_t)in[i]];
}

void mf_quantize_f32_s8(const float *in, int8_t *out, int32_t count, float scale, int32_t zero_point) {
    for (int32_t i = 0; i < count; ++i) {
        const float scaled = in[i] / scale; /* float32 division, as TFLM */
        const double d = (double)scaled;
        int32_t rounded;
        if (d != d) {
            rounded = 0; /* NaN */
        } else if (d >= 1024.0) {
            rounded = 1024; /* saturates whatever the zero point; avoids an out-of-range cast */
        } else if (d <= -1024.0) {
            rounded = -1024;
        } else {
            /* std::round in double: floor(|d| + 0.5) with the sign of d (the cast truncates = floor) */
            const int32_t magnitude = (int32_t)((d < 0.0 ? -d : d) + 0.5);
            rounded = d < 0.0 ? -magnitude : magnitude;
        }
        out[i] = (int8_t)mf_clamp_i32(rounded + zero_point, -128, 127);
    }
}
