/* ADD and MUL with numpy broadcasting: int8 (bit-exact with TFLite Micro) and float32; ADD also int16.
 * SUB, MAXIMUM, MINIMUM, SQUARED_DIFFERENCE and PRELU likewise, int8 and float32 (see the end of this file).
 *
 * Broadcasting is resolved at generation time into an mf_bcast: the output's dimensions, with size-1
 * dimensions dropped and neighbours that broadcast alike merged, and per input the element stride of
 * each (0 where the input is broadcast). Same-shape inputs become one dimension with strides 1 and 1;
 * a per-channel constant becomes [outer, C] with strides [C, 1] and [0, 1]. The innermost dimension
 * runs in a tight loop specialised for strides (1, 1), (1, 0) and (0, 1).
 *
 * int8 ADD follows TFLM: each input is centred, shifted left by 20 bits and rescaled to twice the larger
 * input scale, the sum is rescaled to the output. When the second input is a constant the generator
 * stores it already rescaled (int32, mf_add_s8_prescaled). int8 MUL rescales the product of the centred
 * inputs once. int16 ADD (int16x8) is TFLM's general path with a left shift of 15 and int16 clamps, in
 * mf_add_s8_params. float32 clamps to [f_min, f_max] (finite: TFLM clamps to the float range even for NONE).
 */
#ifndef MF_ELEMENTWISE_H
#define MF_ELEMENTWISE_H

#include "mf_common.h"

#define MF_BCAST_MAX_DIMS 8

typedef struct {
    int32_t rank; /* 1..MF_BCAST_MAX_DIMS */
    int32_t dims[MF_BCAST_MAX_DIMS];
    int32_t a_strides[MF_BCAST_MAX_DIMS]; /* elements; 0 = broadcast along this dimension */
    int32_t b_strides[MF_BCAST_MAX_DIMS];
} mf_bcast;

typedef struct {
    int32_t a_offset, b_offset;   /* minus the zero points */
    int32_t left_shift;           /* 20 (int8), 15 (int16) */
    int32_t a_multiplier, a_shift;
    int32_t b_multiplier, b_shift;
    int32_t out_multiplier, out_shift;
    int32_t out_offset;           /* output zero point */
    int32_t act_min, act_max;
} mf_add_s8_params;

typedef struct {
    int32_t a_offset, b_offset;
    int32_t multiplier, shift;
    int32_t out_offset;
    int32_t act_min, act_max;
} mf_mul_s8_params;

typedef struct {
    float f_min, f_max;
} mf_binary_f32_params;

void mf_add_s8(const mf_add_s8_params *p, const mf_bcast *bc, const int8_t *a, const int8_t *b, int8_t *out);
void mf_add_s16(const mf_add_s8_params *p, const mf_bcast *bc, const int16_t *a, const int16_t *b, int16_t *out);

/* int8 ADD of two same-shape inputs through tables: an input's rescaled value depends on its byte alone,
 * so it is read from a 256-entry table (indexed by the byte as unsigned); the sum s of the two is
 * requantized as clamp(SMMLAR(s << left, multiplier, k + ((s >> 31) & m)) >> right), a form the generator
 * checked against TFLM's arithmetic on all 65,536 input pairs. */
typedef struct {
    const int32_t *a_table, *b_table; /* [256] */
    int32_t count;
    int32_t multiplier, left, right, k, m;
    int32_t act_min, act_max;
} mf_add_s8_table_params;

void mf_add_s8_table(const mf_add_s8_table_params *p, const int8_t *a, const int8_t *b, int8_t *out);
/* b holds the second input already centred, shifted and rescaled (one int32 per element). */
void mf_add_s8_prescaled(const mf_add_s8_params *p, const mf_bcast *bc, const int8_t *a, const int32_t *b,
                         int8_t *out);
void mf_mul_s8(const mf_mul_s8_params *p, const mf_bcast *bc, const int8_t *a, const int8_t *b, int8_t *out);
void mf_add_f32(const mf_binary_f32_params *p, const mf_bcast *bc, const float *a, const float *b, float *out);
void mf_mul_f32(const mf_binary_f32_params *p, const mf_bcast *bc, const float *a, const float *b, float *out);

/* ---- SUB, MAXIMUM, MINIMUM, SQUARED_DIFFERENCE, PRELU ----------------------------------------------------
 *
 * int8 SUB is TFLM's sub: ADD's arithmetic (mf_add_s8_params, left shift 20) with the rescaled second input
 * subtracted; with a constant second input the generator stores it rescaled and negated and calls
 * mf_add_s8_prescaled, and same-shape inputs go through mf_add_s8_table with a negated second table.
 * int8 SQUARED_DIFFERENCE is TFLM's recipe in mf_add_s8_params (left shift 7, act_min/act_max unused): the
 * difference of the two rescaled inputs squared in int32 and requantized to the output (any shift).
 * int8 PRELU (input a, alpha b): x >= 0 rescaled by s_in / s_out, x < 0 times alpha by s_in * s_alpha / s_out.
 * MAXIMUM and MINIMUM compare the raw values (int8 with one quantization throughout, as TFLM assumes);
 * they, the float32 SQUARED_DIFFERENCE and PRELU take no parameters: their first argument, the slot the
 * broadcast driver passes along, is unused (pass 0). float32 SUB clamps like ADD; the others do not. */
typedef struct {
    int32_t input_offset, alpha_offset;      /* minus the zero points */
    int32_t positive_multiplier, positive_shift; /* s_in / s_out */
    int32_t negative_multiplier, negative_shift; /* s_in * s_alpha / s_out */
    int32_t out_offset;
} mf_prelu_s8_params;

void mf_sub_s8(const mf_add_s8_params *p, const mf_bcast *bc, const int8_t *a, const int8_t *b, int8_t *out);
void mf_squared_difference_s8(const mf_add_s8_params *p, const mf_bcast *bc, const int8_t *a, const int8_t *b,
                              int8_t *out);
void mf_prelu_s8(const mf_prelu_s8_params *p, const mf_bcast *bc, const int8_t *in, const int8_t *alpha, int8_t *out);
void mf_maximum_s8(const void *unused, const mf_bcast *bc, const int8_t *a, const int8_t *b, int8_t *out);
void mf_minimum_s8(const void *unused, const mf_bcast *bc, const int8_t *a, const int8_t *b, int8_t *out);
void mf_sub_f32(const mf_binary_f32_params *p, const mf_bcast *bc, const float *a, const float *b, float *out);
void mf_maximum_f32(const void *unused, const mf_bcast *bc, const float *a, const float *b, float *out);
void mf_minimum_f32(const void *unused, const mf_bcast *bc, const float *a, const float *b, float *out);
void mf_squared_difference_f32(const void *unused, const mf_bcast *bc, const float *a, const float *b, float *out);
void mf_prelu_f32(const void *unused, const mf_bcast *bc, const float *in, const float *alpha, float *out);

#endif /* MF_ELEMENTWISE_H */
