/* Primitives of the Cortex-M DSP extension (SXTB16, SMLAD, SMLABB, SMLATT, SMMULR, PKHBT/PKHTB), or a host
 * emulation of them, for the generated kernels (mf_conv.c, mf_s16.c). MF_CONV_DSP is defined when the
 * kernels take their DSP paths: on cores with the extension, and on any host with MF_CONV_EMULATE_DSP
 * (for tests: the same integers). */
#ifndef MF_DSP_H
#define MF_DSP_H

#include "mf_common.h"

#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#define MF_CONV_DSP 1
MF_INLINE int32_t mf_conv_sxtb16(int32_t x) { return __sxtb16(x); }
MF_INLINE int32_t mf_conv_smlad(int32_t a, int32_t b, int32_t acc) { return __smlad(a, b, acc); }
MF_INLINE int32_t mf_conv_smlabb(int32_t a, int32_t b, int32_t acc) { return __smlabb(a, b, acc); }
MF_INLINE int32_t mf_conv_smlatt(int32_t a, int32_t b, int32_t acc) { return __smlatt(a, b, acc); }
/* SXTB16 of x rotated by 8 (bytes 1 and 3) in one instruction: gcc does not fold the rotation itself. */
MF_INLINE int32_t mf_conv_sxtb16_ror8(int32_t x) {
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
#else
/* Portable C of the instructions: the generic kernels use it (through MF_CONV_DSP) when
 * MF_CONV_EMULATE_DSP is defined, and the *_dsp kernels (generated only for Cortex-M4/M7) always do when
 * they are compiled without the DSP extension, e.g. on a host for tests. */
#if defined(MF_CONV_EMULATE_DSP)
#define MF_CONV_DSP 1
#endif
/* Bytes 0 and 2 of x, sign-extended into the two halves of the result. */
MF_INLINE int32_t mf_conv_sxtb16(int32_t x) {
    const uint32_t u = (uint32_t)x;
    const uint32_t lo = (uint32_t)(((int32_t)(u & 0xffu) ^ 0x80) - 0x80) & 0xffffu;
    const uint32_t hi = (uint32_t)(((int32_t)((u >> 16) & 0xffu) ^ 0x80) - 0x80) & 0xffffu;
    return (int32_t)(lo | (hi << 16));
}
MF_INLINE int32_t mf_conv_wrap_add(int32_t a, int32_t b) {
    const uint32_t sum = (uint32_t)a + (uint32_t)b;
    int32_t out;
    memcpy(&out, &sum, sizeof out);
    return out;
}
MF_INLINE int32_t mf_conv_half(int32_t x, int upper) {
    const uint32_t h = ((uint32_t)x >> (upper ? 16 : 0)) & 0xffffu;
    return ((int32_t)h ^ 0x8000) - 0x8000;
}
/* acc + a.lo * b.lo and acc + a.hi * b.hi, wrapping like the instructions. */
MF_INLINE int32_t mf_conv_smlabb(int32_t a, int32_t b, int32_t acc) {
    return mf_conv_wrap_add(acc, mf_conv_half(a, 0) * mf_conv_half(b, 0));
}
MF_INLINE int32_t mf_conv_smlatt(int32_t a, int32_t b, int32_t acc) {
    return mf_conv_wrap_add(acc, mf_conv_half(a, 1) * mf_conv_half(b, 1));
}
/* acc + a.lo * b.lo + a.hi * b.hi, wrapping like the instruction. */
MF_INLINE int32_t mf_conv_smlad(int32_t a, int32_t b, int32_t acc) {
    const uint32_t sum = (uint32_t)acc + (uint32_t)(mf_conv_half(a, 0) * mf_conv_half(b, 0)) +
                         (uint32_t)(mf_conv_half(a, 1) * mf_conv_half(b, 1));
    int32_t out;
    memcpy(&out, &sum, sizeof out);
    return out;
}
#endif

#if !defined(__ARM_FEATURE_DSP)
MF_INLINE int32_t mf_conv_sxtb16_ror8(int32_t x) {
    const uint32_t u = (uint32_t)x;
    const uint32_t r = (u >> 8) | (u << 24);
    int32_t out;
    memcpy(&out, &r, sizeof out);
    return mf_conv_sxtb16(out);
}
#endif

/* (a * b + 2^31) >> 32: SMMULR on Cortex-M4/M7. */
#if defined(__ARM_FEATURE_DSP)
MF_INLINE int32_t mf_conv_smmulr(int32_t a, int32_t b) {
    int32_t r;
    __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
#else
MF_INLINE int32_t mf_conv_smmulr(int32_t a, int32_t b) {
    return (int32_t)(((int64_t)a * b + ((int64_t)1 << 31)) >> 32);
}
#endif

/* The low halves of a and b as one pair (a.lo, b.lo), and the high halves (a.hi, b.hi): PKHBT and PKHTB. */
#if defined(__ARM_FEATURE_DSP)
MF_INLINE int32_t mf_conv_pack_low(int32_t a, int32_t b) {
    int32_t r;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
MF_INLINE int32_t mf_conv_pack_high(int32_t a, int32_t b) {
    int32_t r;
    __asm__("pkhtb %0, %2, %1, asr #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
#else
MF_INLINE int32_t mf_conv_pack_low(int32_t a, int32_t b) {
    const uint32_t r = ((uint32_t)a & 0xFFFFu) | ((uint32_t)b << 16);
    int32_t out;
    memcpy(&out, &r, sizeof out);
    return out;
}
MF_INLINE int32_t mf_conv_pack_high(int32_t a, int32_t b) {
    const uint32_t r = ((uint32_t)b & 0xFFFF0000u) | ((uint32_t)a >> 16);
    int32_t out;
    memcpy(&out, &r, sizeof out);
    return out;
}
#endif

MF_INLINE int32_t mf_conv_load4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4); /* one (unaligned) LDR on Cortex-M4/M7 */
    return v;
}

/* Two's-complement int32 of a uint32 (what the int32 accumulator of TFLM holds after wrapping). */
MF_INLINE int32_t mf_conv_wrap(uint32_t u) {
    int32_t out;
    memcpy(&out, &u, sizeof out);
    return out;
}

#endif /* MF_DSP_H */
