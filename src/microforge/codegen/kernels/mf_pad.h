/* PAD and PADV2 (a copy, exact): fill the output with the padding value, then copy the input's rows.
 *
 * The generator merges every dimension whose inner neighbour is not padded into it, so `rank` is small
 * and rows are as long as possible. Sizes and strides are in bytes for the last dimension's elements:
 * row_bytes is one input row, out_strides the output strides (bytes) of dimensions 0..rank-2.
 */
#ifndef MF_PAD_H
#define MF_PAD_H

#include "mf_common.h"

#define MF_PAD_MAX_DIMS 8

typedef struct {
    int32_t rank;                          /* merged dimensions, 1..MF_PAD_MAX_DIMS */
    int32_t in_dims[MF_PAD_MAX_DIMS];      /* input sizes of dimensions 0..rank-2 (the last is a row) */
    int32_t out_strides[MF_PAD_MAX_DIMS];  /* output byte strides of dimensions 0..rank-2 */
    int32_t first_offset;                  /* output byte offset of the input's first element */
    int32_t row_bytes;                     /* bytes of one input row (the merged last dimension) */
    int32_t out_elements;                  /* elements of the output */
} mf_pad_params;

void mf_pad_s8(const mf_pad_params *p, const int8_t *in, int8_t *out, int8_t value);
void mf_pad_s16(const mf_pad_params *p, const int16_t *in, int16_t *out, int16_t value);
void mf_pad_f32(const mf_pad_params *p, const float *in, float *out, float value);

#endif /* MF_PAD_H */
