/* Dynamic fixed point: int8 tensors whose power-of-two scale is chosen at run time, per inference.
 *
 * A tensor holds int8 q and an exponent e (an int32_t outside the arena): real = q * 2^-e. The rules are
 * those of src/microforge/reference/dynamic.py, to the bit:
 *
 * - QUANTIZE picks the finest e at which max|x| still rounds to at most 127; q = round(x * 2^e).
 * - Convolutions, fully connected layers and ADD compute int32 accumulators with exponent ea, then the
 *   segment rule: the output is written one segment (a pixel's channels, a row's features) at a time,
 *   each with the running shift S = the largest max(0, bits(max|acc|) - 7) seen so far; when the tensor
 *   is complete, segments written with a smaller shift are shifted again by the difference (rounding).
 *   Only one block of accumulators is ever held (the kernels' scratch) and the places where S grew. On
 *   Cortex-M4/M7 the accumulators come from the int8 kernels' own inner loops (mf_conv.h, MF_MM_ACC).
 * - Pools and reshapes keep the exponent; SOFTMAX builds TFLM's exp table for the input's exponent.
 */
#ifndef MF_DFP_H
#define MF_DFP_H

#include "mf_common.h"
#include "mf_conv.h"

enum { MF_DFP_NONE = 0, MF_DFP_RELU = 1, MF_DFP_RELU6 = 2 };

/* What a layer with accumulators adds to them and how it activates them. */
typedef struct {
    const int32_t *bias;     /* [depth] at 2^-bias_exponent, or 0 */
    int32_t weight_exponent, bias_exponent, activation;
    int32_t depth;           /* values per segment: the output channels (features) */
    int32_t reverse;         /* the segments are visited from the last to the first (a depthwise only) */
} mf_dfp_output;

/* Portable layers. */
typedef struct {
    const int8_t *weights;   /* conv [out][kh][kw][in]; depthwise [kh][kw][in * multiplier] */
    int32_t in_h, in_w, in_c, out_h, out_w, out_c;
    int32_t kh, kw, stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left;
    int32_t depth_multiplier; /* 0 for a convolution */
} mf_dfp_conv_params;

typedef struct {
    const int8_t *weights;   /* [out][in] */
    int32_t rows, in_features, out_features;
} mf_dfp_fc_params;

typedef struct {
    const int32_t *rows;     /* [exponents][3]: TFLM's multiplier, left shift and diff_min per exponent */
    int32_t lowest, highest; /* the exponents the rows cover; others are clamped into the range */
    int32_t rows_count, depth;
} mf_dfp_softmax_params;

/* scratch: 8 * out_c bytes (the aligned biases and one segment of accumulators) */
void mf_dfp_conv(const mf_dfp_output *o, const mf_dfp_conv_params *p, const int8_t *in, int32_t in_exponent,
                 int8_t *out, int32_t *out_exponent, int32_t *scratch);
/* scratch: 8 * out_features bytes */
void mf_dfp_fc(const mf_dfp_output *o, const mf_dfp_fc_params *p, const int8_t *in, int32_t in_exponent,
               int8_t *out, int32_t *out_exponent, int32_t *scratch);

/* Cortex-M4/M7 layers on the accumulator kernels of mf_conv.h (their weight layouts; p->q unused).
 * scratch: 4 * o->depth bytes of aligned biases, then the kernel's acc; the convolution's own scratch
 * follows (at scratch + 5 * o->depth); the matrix product's is kernel_scratch (0 for a narrow single row).
 * A single row (p->rows == 1) has no aligned biases: scratch is its acc. */
void mf_dfp_fc_dsp(const mf_dfp_output *o, const mf_fc_params *p, const int8_t *in, int32_t in_exponent,
                   int8_t *out, int32_t *out_exponent, int32_t *scratch, int32_t *kernel_scratch);
void mf_dfp_conv_dsp(const mf_dfp_output *o, const mf_conv_params *p, const int8_t *in, int32_t in_exponent,
                     int8_t *out, int32_t *out_exponent, int32_t *scratch);
void mf_dfp_dwconv_3x3_dsp(const mf_dfp_output *o, const mf_conv_params *p, const int8_t *in, int32_t in_exponent,
                           int8_t *out, int32_t *out_exponent, int32_t *scratch);
/* scratch: 4 * depth bytes; segments of `depth` values */
void mf_dfp_add(const int8_t *a, int32_t a_exponent, const int8_t *b, int32_t b_exponent, int8_t *out,
                int32_t *out_exponent, int32_t count, int32_t depth, int32_t activation, int32_t *scratch);
/* scratch: 256 int32 (the exp table) */
void mf_dfp_softmax(const mf_dfp_softmax_params *p, const int8_t *in, int32_t in_exponent, int8_t *out,
                    int32_t *scratch);
void mf_dfp_quantize(const float *in, int32_t count, int8_t *out, int32_t *out_exponent);
void mf_dfp_dequantize(const int8_t *in, int32_t in_exponent, int32_t count, float *out);

#endif /* MF_DFP_H */
