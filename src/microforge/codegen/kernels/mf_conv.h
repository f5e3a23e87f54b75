/* CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED kernels of microforge's generated C (int8 and float32).
 *
 * Bit-exact with the reference interpreter (src/microforge/reference/conv.py) and so with TFLite Micro.
 * Layouts: activations NHWC. Weights are re-laid-out at generation time (see each params struct).
 *
 * The input zero point is folded into the bias at generation time: every int8 kernel computes
 *     acc = bias[oc] + sum(x * w)      with bias[oc] = bias_tflm[oc] + input_offset * sum(w[oc])
 * where positions outside the input read x = input_zero_point (= -input_offset), so that they contribute
 * (x + input_offset) * w = 0 exactly as TFLM's skipped taps do. Sums of int8 products stay far inside
 * int32 (the code generator checks the depth); the bias is added with two's-complement wrap-around, the
 * behaviour of TFLM's int32 accumulator, without undefined behaviour.
 *
 * Cortex-M4/M7: with __ARM_FEATURE_DSP the inner products use SXTB16 + SMLAD (two 16-bit MACs per
 * instruction), giving the same integers. MF_CONV_EMULATE_DSP runs that path on any host (for tests).
 */
#ifndef MF_CONV_H
#define MF_CONV_H

#include "mf_common.h"

/* Requantization of one int8 op's accumulators. */
typedef struct {
    const int32_t *bias;        /* [out_c] folded bias (see above) */
    const int32_t *multiplier;  /* [out_c] if per_channel else [1] */
    const int32_t *shift;       /* same */
    int32_t per_channel;        /* 0 or 1 */
    int32_t output_offset;      /* output zero point */
    int32_t act_min, act_max;   /* fused activation clamp, in output units */
    /* NULL, or [out_c][6] = {bias, multiplier, L, E, H, M} when the generator proved |acc| << L < 2^31 for
     * every input: then out = ((r + H + ((r >> 31) & M)) >> E) with r = SMMULR(acc << L, multiplier) is
     * TFLite's requantization exactly (L = max(shift, 0) + 1, E = max(-shift, 0), H = 2^E / 2, M = -(E > 0)). */
    const int32_t *fq;
    /* The Cortex-M4/M7 kernels' constants, [out_c][6] = {bias, multiplier, L, E, K, M} (NULL for other
     * targets): the accumulator starts at the bias and out = SMMLAR(acc << L, multiplier, K + ((acc >> 31) & M))
     * >> E, clamped, with K = H + (output_offset << E). The generator proved that nothing overflows; the sign
     * of acc stands in for that of the product (they differ only where the product rounds to 0, and then
     * both give output_offset). */
    const int32_t *dq;
} mf_requant_s8;

/* CONV_2D and DEPTHWISE_CONV_2D geometry and parameters (int8 and float32). */
typedef struct {
    const void *weights;  /* conv: [out_c][kh][kw][in_c / groups] (TFLite's); depthwise: [out_c][kh][kw] */
    int32_t batches, in_h, in_w, in_c;
    int32_t out_h, out_w, out_c;
    int32_t kh, kw, stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left;
    int32_t groups;            /* conv: in_c / weights' input depth */
    int32_t depth_multiplier;  /* depthwise: out_c / in_c */
    int32_t input_zero_point;  /* int8: the value read outside the input */
    int32_t backward;          /* 3x3 depthwise: last output pixel first (the output lies over the input's top) */
    const int8_t *zero_row;    /* 3x3 depthwise on Cortex-M4/M7: in_c bytes of the input zero point */
    const int32_t *split;      /* mf_conv_s8_dsp with shared weights: `weights` holds only their words, this
                                * the {bias, multiplier, L, E, K, M} of each channel (as mf_fc_params) */
    mf_requant_s8 q;           /* int8 */
    const float *fbias;        /* float32: [out_c] or NULL */
    float fmin, fmax;          /* float32: activation clamp */
} mf_conv_params;

/* FULLY_CONNECTED (and 1x1 stride-1 convolution): rows x in_features -> rows x out_features. */
typedef struct {
    const void *weights;  /* [out_features][in_features] */
    int32_t rows, in_features, out_features;
    /* int8 (mf_fc_s8): bytes from one weight row to the next; 0 means in_features. More when the rows are
     * the first columns of a wider matrix (the narrow widths of a weight-shared family, dynamic/image.py) */
    int32_t weight_pitch;
    /* mf_fc_s8_dsp over rows > 1 with shared weights: `weights` holds only the words of rows of
     * weight_pitch values (dsp_words), and this the {bias, multiplier, L, E, K, M} of each channel */
    const int32_t *split;
    mf_requant_s8 q;
    const float *fbias;
    float fmin, fmax;
} mf_fc_params;

/* General int8 convolution: any kernel, stride, dilation, padding, groups. `scratch` holds two input
 * patches: 2 * kh * kw * (in_c / groups) bytes (mf_conv_s8_scratch_bytes). */
void mf_conv_s8(const mf_conv_params *p, const int8_t *input, int8_t *output, int8_t *scratch);

/* Matrix product over rows: FULLY_CONNECTED, and 1x1 stride-1 ungrouped CONV_2D (rows = pixels). */
void mf_fc_s8(const mf_fc_params *p, const int8_t *input, int8_t *output);

/* Cortex-M4/M7 (DSP extension) matrix product, chosen by the code generator for those targets when its
 * requantization is proven exact: p->weights is the int32 stream of weights and constants described in
 * mf_conv.c (q.dq unused; q.act_min/act_max the clamp). `scratch` (4-aligned) holds the widened rows of a
 * block: 64 * ceil(in_features / 8) bytes for blocks of four rows (rows > 1), 16 * ceil(in_features / 8)
 * for a single row, or none (NULL) for a single row of in_features % 8 == 0 that is then widened word by
 * word in every pass, read while the outputs are written. Otherwise each block (four rows; the last one
 * the rows left) is read entirely before its outputs are written. */
void mf_fc_s8_dsp(const mf_fc_params *p, const int8_t *input, int8_t *output, int32_t *scratch);

/* Cortex-M4/M7 convolution with one group (weights a stream as for mf_fc_s8_dsp over patches of depth
 * kh * 4 * run, each kernel row's kw * in_c values padded to run = ceil(kw * in_c / 4) words): four output
 * pixels at a time in raster order, their patches widened into scratch before any of their outputs is
 * written. scratch: 64 * ceil(depth / 8) + 4 * run bytes. */
void mf_conv_s8_dsp(const mf_conv_params *p, const int8_t *input, int8_t *output, int32_t *scratch);

/* mf_fc_s8_dsp (rows > 1) and mf_conv_s8_dsp on shared weights: p->weights holds only weight words (the
 * rows of a wider matrix, p->weight_pitch values each, for mf_fc), p->split each channel's constants. */
void mf_fc_s8_split_dsp(const mf_fc_params *p, const int8_t *input, int8_t *output, int32_t *scratch);
void mf_conv_s8_split_dsp(const mf_conv_params *p, const int8_t *input, int8_t *output, int32_t *scratch);

/* General int8 depthwise convolution (any kernel, depth multiplier, stride, dilation, padding). */
void mf_dwconv_s8(const mf_conv_params *p, const int8_t *input, int8_t *output);

/* 3x3 depthwise, depth multiplier 1: the nine taps unrolled for the pixels whose window is inside the
 * input; the border pixels go through the general path. Weights [out_c][3][3]. Pixels in raster order,
 * or from the last to the first with p->backward; channels always in increasing order. */
void mf_dwconv_3x3_s8(const mf_conv_params *p, const int8_t *input, int8_t *output);

/* Cortex-M4/M7 3x3 depthwise, multiplier 1, in_c % 4 == 0, q.dq set ([in_c / 4][20], see mf_conv.c);
 * weights int16 pairs [in_c / 4][9][2]. Writes each pixel's channels after reading its window, in raster
 * order, or in reverse raster order with p->backward (as mf_dwconv_3x3_s8). */
void mf_dwconv_3x3_s8_dsp(const mf_conv_params *p, const int8_t *input, int8_t *output);

/* Accumulators instead of int8 outputs, for dynamic fixed point (mf_dfp.c): the Cortex-M4/M7 kernels above
 * with the same inner loops, weight layouts and order of reading, but the weight stream holds zero biases
 * and no requantization constants (mf_fc_acc_dsp, mf_conv_acc_dsp), and the depthwise weights are not
 * scaled (q unused). After every block (1 to 4 rows or pixels; one pixel for the depthwise) the raw int32
 * sums of its output segments, out_c (out_features) values each, are in `acc` and handed to the sink, in
 * increasing order; the sink writes the outputs. acc: 16 * out_c bytes (4 * out_c, rounded up to 4
 * channels, for a single row; 4 * in_c for the depthwise). The input is read only before the sink gets the block that needed it, so the outputs
 * may overlap the input as for the int8 kernels (the depthwise runs forward only). */
typedef struct mf_acc_sink {
    void (*take)(struct mf_acc_sink *self, const int32_t *acc, int32_t count);
} mf_acc_sink;
void mf_fc_acc_dsp(const mf_fc_params *p, const int8_t *input, int32_t *acc, int32_t *scratch, mf_acc_sink *sink);
void mf_conv_acc_dsp(const mf_conv_params *p, const int8_t *input, int32_t *acc, int32_t *scratch,
                     mf_acc_sink *sink);
void mf_dwconv_3x3_acc_dsp(const mf_conv_params *p, const int8_t *input, int32_t *acc, mf_acc_sink *sink);

/* int8 layers on the accumulator kernels above with TFLite's requantization in full (q's bias, multiplier
 * and shift; dq unused): the Cortex-M4/M7 path of the layers whose short requantization (mf_requant_s8.dq)
 * is not proven exact. The weights are laid out as for mf_fc_acc_dsp and co, the input zero point is
 * folded into q.bias as everywhere; acc as for those, scratch the kernel's own. The batch must be 1
 * for the convolutions. */
void mf_fc_s8_exact_dsp(const mf_fc_params *p, const int8_t *input, int8_t *output, int32_t *acc, int32_t *scratch);
void mf_conv_s8_exact_dsp(const mf_conv_params *p, const int8_t *input, int8_t *output, int32_t *acc,
                          int32_t *scratch);
void mf_dwconv_3x3_s8_exact_dsp(const mf_conv_params *p, const int8_t *input, int8_t *output, int32_t *acc);

/* float32 versions (weights float32; hybrid int8 weights are dequantized at generation time). */
void mf_conv_f32(const mf_conv_params *p, const float *input, float *output);
void mf_fc_f32(const mf_fc_params *p, const float *input, float *output);

#endif /* MF_CONV_H */
