/* AVERAGE_POOL_2D and MAX_POOL_2D, NHWC, int8 and int16 (bit-exact with TFLite Micro) and float32.
 *
 * Padded positions are never part of a window: averages divide by the number of in-bounds elements
 * (int8: rounding half away from zero), maxima start from the type's lowest value. The fused
 * activation is a clamp: act_min/act_max for int8 and int16, f_min/f_max (possibly infinite) for float32.
 */
#ifndef MF_POOL_H
#define MF_POOL_H

#include "mf_common.h"

typedef struct {
    int32_t batches, in_h, in_w, channels, out_h, out_w;
    int32_t filter_h, filter_w, stride_h, stride_w, pad_top, pad_left;
    int32_t act_min, act_max; /* integer kernels */
    float f_min, f_max;       /* float32 kernels */
} mf_pool_params;

void mf_avg_pool_s8(const mf_pool_params *p, const int8_t *in, int8_t *out);
void mf_max_pool_s8(const mf_pool_params *p, const int8_t *in, int8_t *out);
void mf_avg_pool_s16(const mf_pool_params *p, const int16_t *in, int16_t *out);
void mf_max_pool_s16(const mf_pool_params *p, const int16_t *in, int16_t *out);
void mf_avg_pool_f32(const mf_pool_params *p, const float *in, float *out);
void mf_max_pool_f32(const mf_pool_params *p, const float *in, float *out);

#endif /* MF_POOL_H */
