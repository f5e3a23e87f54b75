/* MEAN kernels: see mf_reduce.h. */
#include "mf_reduce.h"

/* v + offset saturated to [lo, hi] without overflowing int32 (lo, hi and offset are int16-sized; TFLM adds
 * in int32, which overflows only for multipliers within 2^-24 of a power of two: the reference adds
 * without overflow and saturates, so do we). */
MF_INLINE int32_t mf_offset_clamp(int32_t v, int32_t offset, int32_t lo, int32_t hi) {
    return v < lo - offset ? lo : (v > hi - offset ? hi : v + offset);
}

/* Advance an odometer over `rank` dimensions; adds the strides to *offset; 0 once it wraps around. */
MF_INLINE int mf_reduce_next(int32_t *index, const int32_t *dims, const int32_t *strides, int32_t rank,
                             int32_t *offset) {
    for (int32_t d = rank - 1; d >= 0; --d) {
        *offset += strides[d];
        if (++index[d] < dims[d]) return 1;
        *offset -= strides[d] * dims[d];
        index[d] = 0;
    }
    return 0;
}

/* The integer MEAN, int8 or (wide) int16 in and out: TFLM takes the same steps for both. */
MF_INLINE void mf_mean_int(const mf_mean_params *p, const void *in, void *out, int wide) {
    int32_t kept[MF_REDUCE_MAX_DIMS] = {0};
    int32_t base = 0, k = 0;
    const int32_t lo = wide ? -32768 : -128, hi = wide ? 32767 : 127;
    do {
        int32_t reduced[MF_REDUCE_MAX_DIMS] = {0};
        int32_t offset = base;
        uint32_t total = 0; /* TFLM's int32 sum, wrapping */
        do {
            const int32_t value = wide ? ((const int16_t *)in)[offset] : ((const int8_t *)in)[offset];
            total += (uint32_t)value; /* modulo 2^32, like int32 wrapping */
        } while (mf_reduce_next(reduced, p->reduced_dims, p->reduced_strides, p->reduced_rank, &offset));
        const int32_t centred = (int32_t)(total - (uint32_t)p->in_zp_times_count);
        const int32_t result = mf_offset_clamp(mf_requantize(centred, p->multiplier, p->shift), p->out_zero_point,
                                               lo, hi);
        if (wide)
            ((int16_t *)out)[k++] = (int16_t)result;
        else
            ((int8_t *)out)[k++] = (int8_t)result;
    } while (mf_reduce_next(kept, p->kept_dims, p->kept_strides, p->kept_rank, &base));
}

void mf_mean_s8(const mf_mean_params *p, const int8_t *in, int8_t *out) { mf_mean_int(p, in, out, 0); }

void mf_mean_s16(const mf_mean_params *p, const int16_t *in, int16_t *out) { mf_mean_int(p, in, out, 1); }

void mf_mean_f32(const mf_mean_params *p, const float *in, float *out) {
    int32_t kept[MF_REDUCE_MAX_DIMS] = {0};
    int32_t base = 0;
    do {
        int32_t reduced[MF_REDUCE_MAX_DIMS] = {0};
        int32_t offset = base;
        float total = 0.0f;
        do {
            total += in[offset];
        } while (mf_reduce_next(reduced, p->reduced_dims, p->reduced_strides, p->reduced_rank, &offset));
        *out++ = total / p->count;
    } while (mf_reduce_next(kept, p->kept_dims, p->kept_strides, p->kept_rank, &base));
}
