/* Data movement without arithmetic: TRANSPOSE, SLICE, STRIDED_SLICE, SPLIT, SPLIT_V, PACK and UNPACK as
 * one strided copy each (per output of SPLIT/SPLIT_V/UNPACK, per input of PACK), GATHER, ARG_MAX/ARG_MIN
 * and FILL. ZEROS_LIKE and SHAPE need no kernel (a memset, a memcpy of a constant).
 *
 * The generator turns each copy into dimensions with byte strides on both sides, drops size-1 dimensions
 * and merges neighbours that are contiguous on both sides, so the last dimension becomes rows copied by
 * memcpy where it can.
 */
#ifndef MF_MOVEMENT_H
#define MF_MOVEMENT_H

#include "mf_common.h"

#define MF_MOVE_MAX_DIMS 6

typedef struct {
    int32_t rank;                          /* dimensions looped over, 0..MF_MOVE_MAX_DIMS, outermost first */
    int32_t dims[MF_MOVE_MAX_DIMS];        /* their sizes */
    int32_t in_strides[MF_MOVE_MAX_DIMS];  /* input byte strides (negative: a reversed strided slice) */
    int32_t out_strides[MF_MOVE_MAX_DIMS]; /* output byte strides */
    int32_t in_offset;                     /* input byte offset of the first element copied */
    int32_t out_offset;                    /* output byte offset it goes to */
    int32_t row_bytes;                     /* bytes copied at each position: one element, or a whole row */
} mf_strided_copy_params;

/* out[out_offset + sum(i_d * out_strides[d])] = in[in_offset + sum(i_d * in_strides[d])], row_bytes each,
 * positions in raster order. When every input stride is positive and the output is contiguous (SLICE,
 * STRIDED_SLICE forward), output element j reads input element i >= j: the output may start at or below
 * its dying input (safe distance 0), each element read before anything lands on it. */
void mf_strided_copy(const mf_strided_copy_params *p, const void *in, void *out);

typedef struct {
    int32_t batches;     /* product of the batch_dims dimensions */
    int32_t outer;       /* product of the dimensions between batch_dims and the axis */
    int32_t axis_size;   /* size of the gathered dimension */
    int32_t coords;      /* indices per batch */
    int32_t inner_bytes; /* bytes of one gathered slice (the dimensions after the axis) */
    int32_t item_bytes;  /* bytes of one element */
} mf_gather_params;

/* An index outside [0, axis_size) (TFLM fails the inference) selects a slice of `zero`, one element of
 * real 0.0 repeated. */
void mf_gather(const mf_gather_params *p, const void *params, const int32_t *indices, void *out, const void *zero);

typedef struct {
    int32_t outer;     /* product of the dimensions before the axis */
    int32_t axis_size; /* size of the reduced dimension */
    int32_t inner;     /* product of the dimensions after it */
} mf_arg_params;

/* The first index of the largest (smallest) value along the axis, as TFLM's ArgMinMax. */
void mf_arg_max_s8(const mf_arg_params *p, const int8_t *in, int32_t *out);
void mf_arg_min_s8(const mf_arg_params *p, const int8_t *in, int32_t *out);
void mf_arg_max_f32(const mf_arg_params *p, const float *in, int32_t *out);
void mf_arg_min_f32(const mf_arg_params *p, const float *in, int32_t *out);

/* `count` copies of the `item_bytes` at `value`. */
void mf_fill(void *out, const void *value, int32_t item_bytes, int32_t count);

#endif /* MF_MOVEMENT_H */
