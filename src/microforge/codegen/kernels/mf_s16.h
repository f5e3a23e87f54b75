/* int16x8 kernels of microforge's generated C: int16 activations (zero point 0), int8 weights.
 *
 * Bit-exact with the reference interpreter (src/microforge/reference/conv.py, _int16x8_arithmetic) and
 * so with TFLite Micro. Everything constant (requantization multipliers and shifts, the clamp) is
 * computed by the code generator (codegen/ops/int16.py); the kernels do integer work only.
 *
 * Two accumulations, as TFLM has:
 *   int64 bias, or none: acc = bias + sum(x * w) in int64, then TFLite's int64 requantization:
 *       out = (int32)((acc * m15 + 2^(s - 1)) >> s)     (m15 the Q15 significand, s = 15 - shift)
 *     with >> rounding toward minus infinity. It is computed on the two's-complement bits in uint64, so
 *     it stays defined behaviour (and wraps like the reference's int64 where TFLM's precondition
 *     |acc| < 2^47 does not hold).
 *   int32 bias: acc = bias + sum(x * w) wrapping in int32, then the int32 rule of the int8 ops
 *     (mf_requantize).
 */
#ifndef MF_S16_H
#define MF_S16_H

#include "mf_common.h"

/* The requantization of one op's accumulators (either path above) and its fused-activation clamp. */
typedef struct {
    int32_t int32_accumulator;     /* 0: int64 path (bias64), 1: int32 path (bias32) */
    const int64_t *bias64;         /* int64 path: [channels] or NULL */
    const int32_t *bias32;         /* int32 path: [channels] */
    /* [channels] if per_channel else [1].
     * int64 path: Q15 significand and total right shift s (8..46).
     * int32 path: TFLite's Q31 significand and shift. */
    const int32_t *multiplier;
    const int32_t *shift;
    int32_t per_channel;           /* 0 or 1 */
    int32_t act_min, act_max;      /* fused activation clamp, within int16 */
} mf_requant_s16;

/* FULLY_CONNECTED, int16 input and output, int8 weights. */
typedef struct {
    const int8_t *weights;         /* [out_features][in_features] */
    int32_t rows, in_features, out_features;
    mf_requant_s16 q;
} mf_fc_s16_params;

/* rows x in_features -> rows x out_features. Input and output must not overlap. */
void mf_fc_s16(const mf_fc_s16_params *p, const int16_t *input, int16_t *output);

/* CONV_2D (any groups) and DEPTHWISE_CONV_2D, NHWC, int16 input and output, int8 weights. */
typedef struct {
    const int8_t *weights;     /* conv: [out_c][kh][kw][in_c / groups]; depthwise: [kh][kw][out_c] */
    int32_t batches, in_h, in_w, in_c;
    int32_t out_h, out_w, out_c;
    int32_t kh, kw, stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left;
    int32_t groups;            /* conv: in_c / the weights' input depth */
    int32_t depth_multiplier;  /* depthwise: out_c / in_c; 0 for CONV_2D */
    mf_requant_s16 q;
} mf_conv_s16_params;

/* CONV_2D; scratch: kh * kw * in_c / groups int16 (one patch). Each pixel is written after its patches are
 * read (ops/int16.py declares how the output may overlap the input). */
void mf_conv_s16(const mf_conv_s16_params *p, const int16_t *input, int16_t *output, int16_t *scratch);
/* DEPTHWISE_CONV_2D (kh * kw <= 256); scratch: 8 * kh * kw bytes. Each pixel is written after its taps
 * are read. */
void mf_dwconv_s16(const mf_conv_s16_params *p, const int16_t *input, int16_t *output, int32_t *scratch);

#endif /* MF_S16_H */
