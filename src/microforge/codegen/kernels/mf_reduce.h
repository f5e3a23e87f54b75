/* MEAN over any set of axes: int8 and int16 (TFLite Micro's QuantizedMeanOrSum, bit-exact) and float32.
 *
 * The generator splits the input into merged "kept" and "reduced" dimension groups (element strides in
 * the input). Each output element (kept dimensions, row-major, which is the output's layout) sums its
 * reduced elements in input order. int8 and int16: int32 sum (wrapping like TFLM), minus zp_in * count, rescaled by
 * s_in / s_out with 1/count folded into the multiplier, plus zp_out, saturated. float32: sum in input
 * order in float32, divided by the count.
 */
#ifndef MF_REDUCE_H
#define MF_REDUCE_H

#include "mf_common.h"

#define MF_REDUCE_MAX_DIMS 8

typedef struct {
    int32_t kept_rank, reduced_rank; /* 1..MF_REDUCE_MAX_DIMS each */
    int32_t kept_dims[MF_REDUCE_MAX_DIMS], kept_strides[MF_REDUCE_MAX_DIMS];
    int32_t reduced_dims[MF_REDUCE_MAX_DIMS], reduced_strides[MF_REDUCE_MAX_DIMS];
    int32_t in_zp_times_count; /* zp_in * count, wrapped to int32 */
    int32_t multiplier, shift, out_zero_point;
    float count; /* float32 */
} mf_mean_params;

void mf_mean_s8(const mf_mean_params *p, const int8_t *in, int8_t *out);
void mf_mean_s16(const mf_mean_params *p, const int16_t *in, int16_t *out);
void mf_mean_f32(const mf_mean_params *p, const float *in, float *out);

#endif /* MF_REDUCE_H */
