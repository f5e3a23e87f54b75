/* Shared definitions of microforge's generated kernels: TFLite's integer requantization in C99.
 *
 * Same arithmetic as the reference interpreter (src/microforge/reference/fixedpoint.py), which is
 * bit-exact with TFLite Micro: a real multiplier M is an int32 significand in [2^30, 2^31) and a shift,
 * M = significand * 2^(shift - 31); applying it is a rounding doubling high multiply followed by a
 * rounding right shift, both rounding half away from zero ("double rounding", TFLM's default).
 */
#ifndef MF_COMMON_H
#define MF_COMMON_H

#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#define MF_INLINE static inline __attribute__((always_inline))
#define MF_ALIGNED(n) __attribute__((aligned(n)))
#else
#define MF_INLINE static inline
#define MF_ALIGNED(n)
#endif

MF_INLINE int32_t mf_min_i32(int32_t a, int32_t b) { return a < b ? a : b; }
MF_INLINE int32_t mf_max_i32(int32_t a, int32_t b) { return a > b ? a : b; }
MF_INLINE int32_t mf_clamp_i32(int32_t x, int32_t lo, int32_t hi) { return x < lo ? lo : (x > hi ? hi : x); }

/* gemmlowp SaturatingRoundingDoublingHighMul: (a * b * 2 + 2^31 rounding) >> 32, saturating the one
 * overflowing case. For both signs gemmlowp's nudge-and-truncate equals add 2^30 and shift right. */
MF_INLINE int32_t mf_doubling_high_mul(int32_t a, int32_t b) {
    if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
    int64_t product = (int64_t)a * (int64_t)b;
    return (int32_t)((product + ((int64_t)1 << 30)) >> 31);
}

/* gemmlowp RoundingDivideByPOT: x / 2^exponent rounded half away from zero (exponent in 0..31). */
MF_INLINE int32_t mf_rounding_divide_by_pot(int32_t x, int exponent) {
    const int32_t mask = (int32_t)((1ll << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* TFLite MultiplyByQuantizedMultiplier. A positive shift first multiplies x by 2^shift in int32
 * (wrapping as TFLM's int32 arithmetic does: done in uint32 to stay defined behaviour in C). */
MF_INLINE int32_t mf_requantize(int32_t x, int32_t significand, int32_t shift) {
    const int left = shift > 0 ? shift : 0;
    const int right = shift > 0 ? 0 : -shift;
    const int32_t shifted = (int32_t)((uint32_t)x << left);
    return mf_rounding_divide_by_pot(mf_doubling_high_mul(shifted, significand), right);
}

/* (acc * 2^32 + a * b + 2^31) >> 32, the top word of a rounded 64-bit multiply-accumulate: one SMMLAR on
 * cores with the DSP extension. The short requantizations built on it are proven exact by the generator. */
#if defined(__ARM_FEATURE_DSP)
MF_INLINE int32_t mf_smmlar(int32_t a, int32_t b, int32_t acc) {
    int32_t r;
    __asm__("smmlar %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
    return r;
}
#else
MF_INLINE int32_t mf_smmlar(int32_t a, int32_t b, int32_t acc) {
    return (int32_t)(((int64_t)acc * ((int64_t)1 << 32) + (int64_t)a * b + ((int64_t)1 << 31)) >> 32);
}
#endif

/* Leading zero bits of x (32 for 0). */
MF_INLINE int mf_count_leading_zeros32(uint32_t x) {
#if defined(__GNUC__)
    return x == 0 ? 32 : __builtin_clz(x);
#else
    int n = 0;
    if (x == 0) return 32;
    while (!(x & 0x80000000u)) { x <<= 1; ++n; }
    return n;
#endif
}

/* d rounded half away from zero, in float32 alone (Cortex-M4/M7 have no double-precision FPU), for
 * |d| < 2^31: with t = (int)|d|, |d| - t is exact in float and floor(|d| + 0.5) = t + (|d| - t >= 0.5). */
MF_INLINE int32_t mf_round_half_away_f32(float d) {
    const float magnitude = d < 0.0f ? -d : d;
    const int32_t whole = (int32_t)magnitude;
    const int32_t rounded = whole + (magnitude - (float)whole >= 0.5f ? 1 : 0);
    return d < 0.0f ? -rounded : rounded;
}

/* The taps (ky, kx) of output pixel (oy, ox) that lie inside the input, in kernel order, for any params
 * struct p with the window fields (kh, kw, stride_*, dilation_*, pad_top, pad_left, in_h, in_w): the body
 * runs with ky, kx, iy, ix set. The portable kernels that skip outside taps (their zero point is 0) share it. */
#define MF_FOR_EACH_INSIDE_TAP(p, oy, ox, ...)                                                      \
    for (int32_t ky = 0; ky < (p)->kh; ++ky) {                                                      \
        const int32_t iy = (oy) * (p)->stride_h - (p)->pad_top + ky * (p)->dilation_h;              \
        if (iy < 0 || iy >= (p)->in_h) continue;                                                     \
        for (int32_t kx = 0; kx < (p)->kw; ++kx) {                                                  \
            const int32_t ix = (ox) * (p)->stride_w - (p)->pad_left + kx * (p)->dilation_w;          \
            if (ix < 0 || ix >= (p)->in_w) continue;                                                 \
            __VA_ARGS__                                                                             \
        }                                                                                           \
    }

#endif /* MF_COMMON_H */
