/* Float32 training kernels: see mf_train.h and src/microforge/learn/layers.py.
 *
 * Written for the Cortex-M4F, whose FPU has no float SIMD: speed is instructions per multiply-add.
 * - Multiply-adds are fused (mf_train_fma): one VFMA instead of VMUL + VADD, which ISO C mode (the
 *   firmware is built with -std=c99) would otherwise keep apart.
 * - Blocks of accumulators stay in registers for a whole reduction, so that each value loaded feeds
 *   several multiply-adds (4 x 4 blocks in the matrix products, 8 channels in the per-channel ones).
 * - Inner loops run over channels, contiguous in NHWC: VLDR takes only an immediate offset, so a
 *   contiguous block costs one load per value and no address arithmetic.
 * - Window bounds are clipped once per output row, column or tap (mf_train_clip), so that no loop
 *   tests its indices.
 * The sums run in another order than layers.py's; results agree to float tolerance. */
#include "mf_train.h"

#include <math.h>
#include <string.h>

/* The blocks below rely on being inlined where their shape and strides are constants. */
#if defined(__GNUC__)
#define MF_INLINE static inline __attribute__((always_inline))
#else
#define MF_INLINE static inline
#endif

#if defined(__FP_FAST_FMAF) || defined(FP_FAST_FMAF)
MF_INLINE float mf_train_fma(float a, float b, float c) { return fmaf(a, b, c); }
#else  /* without a fused instruction, fmaf would be a slow library call */
MF_INLINE float mf_train_fma(float a, float b, float c) { return a * b + c; }
#endif

MF_INLINE float mf_train_activate(int32_t activation, float z) {
    if (activation == MF_ACT_RELU) return z > 0.0f ? z : 0.0f;
    if (activation == MF_ACT_RELU6) return z > 0.0f ? (z < 6.0f ? z : 6.0f) : 0.0f;
    return z;
}

/* A result's pre-activation into z and, when y is given, its activation into y. */
MF_INLINE void mf_train_put(float *z, float *y, int32_t activation, float v) {
    *z = v;
    if (y) *y = mf_train_activate(activation, v);
}

/* The sub-range [*first, *end) of t in [0, count) whose index step * t + offset (step >= 1) lies in
 * [0, size). Every window bound of this file comes from here:
 * - taps of an output o (step 1, offset o * stride - pad, count the window): forward and pooling;
 * - outputs whose tap k reads the input (step stride, offset k - pad): the weight gradients;
 * - outputs whose window holds input i, tap k = i + pad - o * stride (step stride, offset
 *   window - 1 - i - pad, size the window): the input gradients, gathered per input element. */
MF_INLINE void mf_train_clip(int32_t step, int32_t offset, int32_t size, int32_t count, int32_t *first,
                             int32_t *end) {
    /* t >= ceil(-offset / step), t < ceil((size - offset) / step); C's division truncates towards
     * zero, so each is taken where its numerator is positive */
    int32_t lo = offset >= 0 ? 0 : (step - 1 - offset) / step;
    int32_t hi = size - offset <= 0 ? 0 : (size - offset + step - 1) / step;
    if (hi > count) hi = count;
    if (lo > hi) lo = hi;
    *first = lo;
    *end = hi;
}

/* ---- Per-channel products (depthwise convolutions, pooling) ----
 *
 * One block of n (8, 4 or 1) channels, summed over a rows x cols grid of window taps (or positions):
 *     out0[j] = init0[j] (0 without init) + sum_{r, q} s[r * sr + q * sq + j] * t[r * tr + q * tq + j]
 * and with `pair` a second output of the same s and t shifted by d,
 *     out1[j] = init1[j] + sum_{r, q} s[r * sr + q * sq + j] * t[r * tr + q * tq + d + j],
 * so that each value of s loaded feeds two multiply-adds (two neighbouring outputs share the weights, two
 * neighbouring taps the output gradient). With `broadcast`, s is one value for all channels (s[r * sr +
 * q * sq]). Without `product` the sums are of t alone (pooling). The activation goes to y0, y1 when
 * given. n, pair, broadcast and product are constants where inlined. */
#define MF_EACH8(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7)

MF_INLINE void mf_train_lanes(int32_t n, int32_t pair, int32_t broadcast, int32_t product, int32_t rows,
                              int32_t cols, const float *s, int32_t sr, int32_t sq, const float *t, int32_t tr,
                              int32_t tq, int32_t d, const float *init0, const float *init1, float *out0, float *out1,
                              float *y0, float *y1, int32_t activation) {
#define MF_INIT(j)                                                    \
    float c##j = (j < n && init0) ? init0[j] : 0.0f;                  \
    float e##j = (j < n && pair && init1) ? init1[j] : 0.0f;
    MF_EACH8(MF_INIT)
#undef MF_INIT
    for (int32_t r = 0; r < rows; ++r) {
        for (int32_t q = 0; q < cols; ++q) {
            const float *pt = t + r * tr + q * tq;
            if (!product) {
#define MF_ADD(j) if (j < n) c##j += pt[j];
                MF_EACH8(MF_ADD)
#undef MF_ADD
                continue;
            }
            const float *ps = s + r * sr + q * sq, *pu = pt + d;
#define MF_MAC(j)                                                     \
    if (j < n) {                                                      \
        const float v = ps[broadcast ? 0 : j];                        \
        c##j = mf_train_fma(v, pt[j], c##j);                          \
        if (pair) e##j = mf_train_fma(v, pu[j], e##j);                \
    }
            MF_EACH8(MF_MAC)
#undef MF_MAC
        }
    }
#define MF_STORE(j)                                                                   \
    if (j < n) {                                                                      \
        mf_train_put(out0 + j, y0 ? y0 + j : 0, activation, c##j);                    \
        if (pair) mf_train_put(out1 + j, y1 ? y1 + j : 0, activation, e##j);          \
    }
    MF_EACH8(MF_STORE)
#undef MF_STORE
}

/* mf_train_lanes over `channels` channels, in blocks of 8, then 4, then 1. */
MF_INLINE void mf_train_channels(int32_t channels, int32_t pair, int32_t broadcast, int32_t product, int32_t rows,
                                 int32_t cols, const float *s, int32_t sr, int32_t sq, const float *t, int32_t tr,
                                 int32_t tq, int32_t d, const float *init0, const float *init1, float *out0,
                                 float *out1, float *y0, float *y1, int32_t activation) {
#define MF_CALL(n)                                                                                              \
    mf_train_lanes(n, pair, broadcast, product, rows, cols, product ? (broadcast ? s : s + c) : 0, sr, sq,     \
                   t + c, tr, tq, d, init0 ? init0 + c : 0, init1 ? init1 + c : 0, out0 + c,                   \
                   pair ? out1 + c : 0, y0 ? y0 + c : 0, y1 ? y1 + c : 0, activation)
    int32_t c = 0;
    for (; c + 8 <= channels; c += 8) MF_CALL(8);
    if (c + 4 <= channels) {
        MF_CALL(4);
        c += 4;
    }
    for (; c < channels; ++c) MF_CALL(1);
#undef MF_CALL
}

/* out[r * dr + q * dq + j] = g[j] * scale over a rows x cols grid, channels j < n (8, 4 or 1): one window's
 * share of the pooling gradient, loaded once and stored to each of its elements. */
MF_INLINE void mf_train_fill_lanes(int32_t n, int32_t rows, int32_t cols, float *out, int32_t dr, int32_t dq,
                                   const float *g, float scale) {
#define MF_SHARE(j) const float v##j = j < n ? g[j] * scale : 0.0f;
    MF_EACH8(MF_SHARE)
#undef MF_SHARE
    for (int32_t r = 0; r < rows; ++r) {
        for (int32_t q = 0; q < cols; ++q) {
            float *o = out + r * dr + q * dq;
#define MF_PUT(j) if (j < n) o[j] = v##j;
            MF_EACH8(MF_PUT)
#undef MF_PUT
        }
    }
}

static void mf_train_fill(int32_t channels, int32_t rows, int32_t cols, float *out, int32_t dr, int32_t dq,
                          const float *g, float scale) {
    int32_t c = 0;
    for (; c + 8 <= channels; c += 8) mf_train_fill_lanes(8, rows, cols, out + c, dr, dq, g + c, scale);
    if (c + 4 <= channels) {
        mf_train_fill_lanes(4, rows, cols, out + c, dr, dq, g + c, scale);
        c += 4;
    }
    for (; c < channels; ++c) mf_train_fill_lanes(1, rows, cols, out + c, dr, dq, g + c, scale);
}

/* ---- Matrix products (dense layers, pointwise convolutions, the general convolution's runs) ----
 *
 * One register block: for i < 4 and j < 4
 *     out[i * oi + j * oj] = init[i * ii + j * ij] (0 without init) + sum_{k < len} a_i[k] b_j[k]
 * with a_i[k] = a[i * ai + k * ak] and b_j[k] = b[j * bj + k * bk]; the activation goes to y (same
 * layout as out) when y is given. A 4 x 4 block loads 8 values per 16 multiply-adds. */
#define MF_EACH4(M) M(0) M(1) M(2) M(3)
#define MF_EACH44(M) \
    M(0, 0) M(0, 1) M(0, 2) M(0, 3) M(1, 0) M(1, 1) M(1, 2) M(1, 3) \
    M(2, 0) M(2, 1) M(2, 2) M(2, 3) M(3, 0) M(3, 1) M(3, 2) M(3, 3)

MF_INLINE void mf_train_block44(int32_t len, const float *a, int32_t ai, int32_t ak, const float *b, int32_t bj,
                                int32_t bk, const float *init, int32_t ii, int32_t ij, float *out, int32_t oi,
                                int32_t oj, float *y, int32_t activation) {
    /* a row pointer per i, so that the j of a row (oj, ij constants where inlined) are immediate offsets */
#define MF_ROWS(i)                                                              \
    const float *a##i = a + i * ai, *b##i = b + i * bj;                         \
    const float *init##i = init ? init + i * ii : 0;                            \
    float *out##i = out + i * oi, *y##i = y ? y + i * oi : 0;
    MF_EACH4(MF_ROWS)
#undef MF_ROWS
#define MF_INIT(i, j) float c##i##j = init##i ? init##i[j * ij] : 0.0f;
    MF_EACH44(MF_INIT)
#undef MF_INIT
    for (int32_t k = 0; k < len; ++k) {
#define MF_LOAD(i) const float x##i = a##i[k * ak], w##i = b##i[k * bk];
        MF_EACH4(MF_LOAD)
#undef MF_LOAD
#define MF_MAC(i, j) c##i##j = mf_train_fma(x##i, w##j, c##i##j);
        MF_EACH44(MF_MAC)
#undef MF_MAC
    }
#define MF_STORE(i, j) mf_train_put(out##i + j * oj, y##i ? y##i + j * oj : 0, activation, c##i##j);
    MF_EACH44(MF_STORE)
#undef MF_STORE
}

/* The block of one row a against n (8, 4, 2 or 1) rows b: out[j * oj] = init[j * ij] + sum_k a[k * ak] b_j[k].
 * (4 x 1 is 1 x 4 with the operands and strides swapped.) */
MF_INLINE void mf_train_block1n(int32_t n, int32_t len, const float *a, int32_t ak, const float *b, int32_t bj,
                                int32_t bk, const float *init, int32_t ij, float *out, int32_t oj, float *y,
                                int32_t activation) {
#define MF_ROWS(j) const float *b##j = b + (j < n ? j : 0) * bj; float c##j = (j < n && init) ? init[j * ij] : 0.0f;
    MF_EACH8(MF_ROWS)
#undef MF_ROWS
    for (int32_t k = 0; k < len; ++k) {
        const float x = a[k * ak];
#define MF_MAC(j) if (j < n) c##j = mf_train_fma(x, b##j[k * bk], c##j);
        MF_EACH8(MF_MAC)
#undef MF_MAC
    }
#define MF_STORE(j) if (j < n) mf_train_put(out + j * oj, y ? y + j * oj : 0, activation, c##j);
    MF_EACH8(MF_STORE)
#undef MF_STORE
}

/* One position (a dense layer's row, a convolution window's run): z[o] = init[o] + sum_c x[c] w[o][c] for
 * o < O, w rows ws apart, in blocks of 8, 4, 2, then 1 weight rows; y = activation(z) when y is given. */
static void mf_train_row_forward(int32_t C, int32_t O, const float *x, const float *w, int32_t ws, const float *init,
                                 float *z, float *y, int32_t activation) {
    int32_t o = 0;
#define MF_BLOCK(n) mf_train_block1n(n, C, x, 1, w + o * ws, ws, 1, init + o, 1, z + o, 1, y ? y + o : 0, activation)
    for (; o + 8 <= O; o += 8) MF_BLOCK(8);
    if (o + 4 <= O) {
        MF_BLOCK(4);
        o += 4;
    }
    if (o + 2 <= O) {
        MF_BLOCK(2);
        o += 2;
    }
    if (o < O) MF_BLOCK(1);
#undef MF_BLOCK
}

/* z[p][o] = b[o] + sum_c x[p][c] w[o][c], y[p][o] = activation(z[p][o]) for p < P, o < O: x, w rows C apart,
 * z, y rows O apart. */
static void mf_train_rows_forward(int32_t P, int32_t C, int32_t O, const float *x, const float *w, const float *b,
                                  float *z, float *y, int32_t activation) {
    int32_t p = 0;
    for (; p + 4 <= P; p += 4) {
        const float *xp = x + p * C;
        float *zp = z + p * O, *yp = y + p * O;
        int32_t o = 0;
        for (; o + 4 <= O; o += 4)
            mf_train_block44(C, xp, C, 1, w + o * C, C, 1, b + o, 0, 1, zp + o, O, 1, yp + o, activation);
        for (; o < O; ++o)  /* one weight row against four positions */
            mf_train_block1n(4, C, w + o * C, 1, xp, C, 1, b + o, 0, zp + o, O, yp + o, activation);
    }
    for (; p < P; ++p) mf_train_row_forward(C, O, x + p * C, w, C, b, z + p * O, y + p * O, activation);
}

/* dw[o][c..c+n) += g[o] x[c..c+n) for o < O (n = 16, 8, 4 or 1): the weight gradient of a single row, its
 * n inputs held in registers across the outputs, two outputs a loop; with db (a constant where inlined),
 * also db[o] += g[o] (the bias gradient, from the values loaded anyway). Each gradient is loaded,
 * multiply-added and stored: 3 instructions per multiply-add at best. */
#define MF_EACH16(M) MF_EACH8(M) M(8) M(9) M(10) M(11) M(12) M(13) M(14) M(15)

MF_INLINE void mf_train_rank1_lanes(int32_t n, int32_t O, const float *g, const float *x, float *dw, int32_t dws,
                                    float *db) {
#define MF_LOAD(j) const float x##j = j < n ? x[j] : 0.0f;
    MF_EACH16(MF_LOAD)
#undef MF_LOAD
#define MF_MAC(j) if (j < n) d[j] = mf_train_fma(v, x##j, d[j]), e[j] = mf_train_fma(u, x##j, e[j]);
#define MF_MAC1(j) if (j < n) d[j] = mf_train_fma(v, x##j, d[j]);
    int32_t o = 0;
    for (; o + 2 <= O; o += 2) {
        const float v = g[o], u = g[o + 1];
        float *d = dw + o * dws, *e = d + dws;
        MF_EACH16(MF_MAC)
        if (db) db[o] += v, db[o + 1] += u;
    }
    if (o < O) {
        const float v = g[o];
        float *d = dw + o * dws;
        MF_EACH16(MF_MAC1)
        if (db) db[o] += v;
    }
#undef MF_MAC
#undef MF_MAC1
}

/* dw[o][c] += sum_p dz[p][o] x[p][c] for o < O, c < C, p < P: dz rows dzs apart, x rows xs apart, dw rows
 * dws apart; for P = 1 with db given, also db[o] += dz[o]. */
static void mf_train_rows_weight_grad(int32_t P, int32_t C, int32_t O, const float *dz, int32_t dzs, const float *x,
                                      int32_t xs, float *dw, int32_t dws, float *db) {
    if (P == 1) {  /* no sum over rows to block: each gradient's load and store is the cost */
        int32_t c = 0;
        if (db && C >= 16) {
            mf_train_rank1_lanes(16, O, dz, x, dw, dws, db);
            c = 16, db = 0;
        }
        for (; c + 16 <= C; c += 16) mf_train_rank1_lanes(16, O, dz, x + c, dw + c, dws, 0);
        if (c + 8 <= C) {
            mf_train_rank1_lanes(8, O, dz, x + c, dw + c, dws, 0);
            c += 8;
        }
        if (c + 4 <= C) {
            mf_train_rank1_lanes(4, O, dz, x + c, dw + c, dws, 0);
            c += 4;
        }
        for (; c < C; ++c) mf_train_rank1_lanes(1, O, dz, x + c, dw + c, dws, 0);
        if (db)  /* fewer than 16 inputs */
            for (int32_t o = 0; o < O; ++o) db[o] += dz[o];
        return;
    }
    int32_t o = 0;
    for (; o + 4 <= O; o += 4) {
        float *d = dw + o * dws;
        int32_t c = 0;
        for (; c + 4 <= C; c += 4)
            mf_train_block44(P, dz + o, 1, dzs, x + c, 1, xs, d + c, dws, 1, d + c, dws, 1, 0, MF_ACT_NONE);
        for (; c < C; ++c)  /* one input channel against four outputs */
            mf_train_block1n(4, P, x + c, xs, dz + o, 1, dzs, d + c, dws, d + c, dws, 0, MF_ACT_NONE);
    }
    for (; o < O; ++o) {
        float *d = dw + o * dws;
        int32_t c = 0;
        for (; c + 4 <= C; c += 4)
            mf_train_block1n(4, P, dz + o, dzs, x + c, 1, xs, d + c, 1, d + c, 1, 0, MF_ACT_NONE);
        for (; c < C; ++c) mf_train_block1n(1, P, dz + o, dzs, x + c, 1, xs, d + c, 1, d + c, 1, 0, MF_ACT_NONE);
    }
}

/* dx[p][c] = (dx[p][c] if accumulate) + sum_o dz[p][o] w[o][c] for p < P, c < C, o < O: dz rows dzs apart,
 * w rows ws apart, dx rows dxs apart. */
static void mf_train_rows_input_grad(int32_t P, int32_t C, int32_t O, const float *dz, int32_t dzs, const float *w,
                                     int32_t ws, float *dx, int32_t dxs, int32_t accumulate) {
    int32_t p = 0;
    for (; p + 4 <= P; p += 4) {
        const float *g = dz + p * dzs;
        float *d = dx + p * dxs;
        int32_t c = 0;
        for (; c + 4 <= C; c += 4)
            mf_train_block44(O, g, dzs, 1, w + c, 1, ws, accumulate ? d + c : 0, dxs, 1, d + c, dxs, 1, 0,
                             MF_ACT_NONE);
        for (; c < C; ++c)  /* one input channel against four positions */
            mf_train_block1n(4, O, w + c, ws, g, dzs, 1, accumulate ? d + c : 0, dxs, d + c, dxs, 0, MF_ACT_NONE);
    }
    for (; p < P; ++p) {  /* one position: dz[p][o] times a block of channels of w's row o, summed over o */
        float *d = dx + p * dxs;
        mf_train_channels(C, 0, 1, 1, O, 1, dz + p * dzs, 1, 0, w, ws, 0, 0, accumulate ? d : 0, 0, d, 0, 0, 0,
                          MF_ACT_NONE);
    }
}

/* ---- Activations and bias gradients ---- */

/* dy through the activation (TensorFlow's gradients: 1 on 0 < z for RELU, 0 < z < 6 for RELU6) into dz in
 * place. */
static void mf_train_mask(int32_t activation, int32_t count, const float *z, float *dy) {
    /* a store only where the derivative is 0: no load of dy, no branch (a conditional store) */
    if (activation == MF_ACT_RELU) {
        int32_t i = 0;
        for (; i + 4 <= count; i += 4) {  /* four at a time: the loop's own instructions were a third */
            if (!(z[i] > 0.0f)) dy[i] = 0.0f;
            if (!(z[i + 1] > 0.0f)) dy[i + 1] = 0.0f;
            if (!(z[i + 2] > 0.0f)) dy[i + 2] = 0.0f;
            if (!(z[i + 3] > 0.0f)) dy[i + 3] = 0.0f;
        }
        for (; i < count; ++i)
            if (!(z[i] > 0.0f)) dy[i] = 0.0f;
    } else if (activation == MF_ACT_RELU6) {
        for (int32_t i = 0; i < count; ++i)
            if (!(z[i] > 0.0f && z[i] < 6.0f)) dy[i] = 0.0f;
    }
}

/* The mask, then db[o] += the sum of dz over the P rows of O values (a block of channels in registers). */
static void mf_train_mask_bias(int32_t activation, int32_t P, int32_t O, const float *z, float *dy, float *db) {
    mf_train_mask(activation, P * O, z, dy);
    mf_train_channels(O, 0, 0, 0, P, 1, 0, 0, 0, dy, O, 0, 0, db, 0, db, 0, 0, 0, MF_ACT_NONE);
}

/* ---- Layers ---- */

/* A 1 x 1 convolution of stride 1 without padding is a dense layer over the positions. */
static int mf_train_pointwise(const mf_train_window *p) {
    return p->k_h == 1 && p->k_w == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_top == 0 && p->pad_left == 0;
}

/* The taps [k0, k1) of output o's window inside an input of `size` along one axis, and the input index
 * of tap k0. */
typedef struct {
    int32_t k0, k1, i0;
} mf_train_span;

MF_INLINE mf_train_span mf_train_window_span(int32_t o, int32_t stride, int32_t pad, int32_t size, int32_t window) {
    mf_train_span s;
    mf_train_clip(1, o * stride - pad, size, window, &s.k0, &s.k1);
    s.i0 = o * stride - pad + s.k0;
    return s;
}

/* The outputs [k0, k1) (named so for the struct's sake) whose window holds input i, and the tap that
 * output k0 reads it with; each next output reads it with the tap `stride` lower. */
MF_INLINE mf_train_span mf_train_gather_span(int32_t i, int32_t stride, int32_t pad, int32_t window, int32_t outputs) {
    mf_train_span s;
    mf_train_clip(stride, window - 1 - i - pad, window, outputs, &s.k0, &s.k1);
    s.i0 = i + pad - s.k0 * stride;
    return s;
}

void mf_train_conv_forward(const mf_train_window *p, int32_t rows, const float *x, const float *w, const float *b,
                           float *z, float *y) {
    const int32_t C = p->in_c, O = p->out_c, in_size = p->in_h * p->in_w * C, out_size = p->out_h * p->out_w * O;
    const int32_t ws = p->k_h * p->k_w * C;  /* between output channels' weights */
    if (mf_train_pointwise(p)) {
        mf_train_rows_forward(rows * p->out_h * p->out_w, C, O, x, w, b, z, y, p->activation);
        return;
    }
    for (int32_t n = 0; n < rows; ++n) {
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            const mf_train_span sy = mf_train_window_span(oy, p->stride_h, p->pad_top, p->in_h, p->k_h);
            for (int32_t ox = 0; ox < p->out_w; ++ox) {
                const mf_train_span sx = mf_train_window_span(ox, p->stride_w, p->pad_left, p->in_w, p->k_w);
                const int32_t at = n * out_size + (oy * p->out_w + ox) * O;
                /* a window row's valid taps are one contiguous run of (kx1 - kx0) * C values, in x as in w */
                const int32_t run = (sx.k1 - sx.k0) * C;
                if (sy.k1 == sy.k0 || run == 0) {  /* a window wholly in the padding: the bias */
                    for (int32_t o = 0; o < O; ++o) mf_train_put(z + at + o, y + at + o, p->activation, b[o]);
                    continue;
                }
                for (int32_t ky = sy.k0; ky < sy.k1; ++ky) {
                    const float *xr = x + n * in_size + ((sy.i0 + ky - sy.k0) * p->in_w + sx.i0) * C;
                    const float *wr = w + (ky * p->k_w + sx.k0) * C;
                    const int32_t first = ky == sy.k0, last = ky == sy.k1 - 1;
                    mf_train_row_forward(run, O, xr, wr, ws, first ? b : z + at, z + at, last ? y + at : 0,
                                         p->activation);
                }
            }
        }
    }
}

void mf_train_conv_backward(const mf_train_window *p, int32_t rows, const float *x, const float *w, const float *z,
                            float *dy, float *dw, float *db, float *dx) {
    const int32_t C = p->in_c, O = p->out_c, in_size = p->in_h * p->in_w * C, out_size = p->out_h * p->out_w * O;
    const int32_t ws = p->k_h * p->k_w * C;
    mf_train_mask_bias(p->activation, rows * p->out_h * p->out_w, O, z, dy, db);
    if (mf_train_pointwise(p)) {
        const int32_t positions = rows * p->out_h * p->out_w;
        mf_train_rows_weight_grad(positions, C, O, dy, O, x, C, dw, C, 0);
        if (dx) mf_train_rows_input_grad(positions, C, O, dy, O, w, C, dx, C, 0);
        return;
    }
    /* weights: per tap, a matrix product over the outputs whose tap reads the input, a rectangle */
    for (int32_t ky = 0; ky < p->k_h; ++ky) {
        int32_t oy0, oy1;
        mf_train_clip(p->stride_h, ky - p->pad_top, p->in_h, p->out_h, &oy0, &oy1);
        for (int32_t kx = 0; kx < p->k_w; ++kx) {
            int32_t ox0, ox1;
            mf_train_clip(p->stride_w, kx - p->pad_left, p->in_w, p->out_w, &ox0, &ox1);
            if (ox1 == ox0) continue;
            for (int32_t n = 0; n < rows; ++n) {
                for (int32_t oy = oy0; oy < oy1; ++oy) {
                    const int32_t iy = oy * p->stride_h - p->pad_top + ky, ix = ox0 * p->stride_w - p->pad_left + kx;
                    mf_train_rows_weight_grad(ox1 - ox0, C, O, dy + n * out_size + (oy * p->out_w + ox0) * O, O,
                                              x + n * in_size + (iy * p->in_w + ix) * C, p->stride_w * C,
                                              dw + (ky * p->k_w + kx) * C, ws, 0);
                }
            }
        }
    }
    if (!dx) return;
    /* inputs: gathered per input element from the outputs whose window holds it */
    for (int32_t n = 0; n < rows; ++n) {
        for (int32_t iy = 0; iy < p->in_h; ++iy) {
            const mf_train_span sy = mf_train_gather_span(iy, p->stride_h, p->pad_top, p->k_h, p->out_h);
            for (int32_t ix = 0; ix < p->in_w; ++ix) {
                const mf_train_span sx = mf_train_gather_span(ix, p->stride_w, p->pad_left, p->k_w, p->out_w);
                float *d = dx + n * in_size + (iy * p->in_w + ix) * C;
                int32_t first = 1;
                for (int32_t oy = sy.k0; oy < sy.k1; ++oy) {
                    const int32_t ky = sy.i0 - (oy - sy.k0) * p->stride_h;
                    for (int32_t ox = sx.k0; ox < sx.k1; ++ox) {
                        const int32_t kx = sx.i0 - (ox - sx.k0) * p->stride_w;
                        mf_train_rows_input_grad(1, C, O, dy + n * out_size + (oy * p->out_w + ox) * O, 0,
                                                 w + (ky * p->k_w + kx) * C, ws, d, 0, !first);
                        first = 0;
                    }
                }
                if (first) memset(d, 0, sizeof(float) * (size_t)C);  /* under no window */
            }
        }
    }
}

void mf_train_depthwise_forward(const mf_train_window *p, int32_t rows, const float *x, const float *w,
                                const float *b, float *z, float *y) {
    const int32_t C = p->in_c, O = p->out_c, m = p->multiplier;
    const int32_t in_size = p->in_h * p->in_w * C, out_size = p->out_h * p->out_w * O;
    for (int32_t n = 0; n < rows; ++n) {
        const float *xn = x + n * in_size;
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            const mf_train_span sy = mf_train_window_span(oy, p->stride_h, p->pad_top, p->in_h, p->k_h);
            /* Multiplier 1: channel c of the window times channel c of the weights, two outputs at a time
             * whose windows have the same taps, so that they share every weight loaded: the output below
             * (all but the border rows), else the next one in the row. */
            int32_t rows_paired = 0;
            if (m == 1 && oy + 1 < p->out_h) {
                const mf_train_span ny = mf_train_window_span(oy + 1, p->stride_h, p->pad_top, p->in_h, p->k_h);
                rows_paired = ny.k0 == sy.k0 && ny.k1 == sy.k1;
            }
            for (int32_t ox = 0; ox < p->out_w; ++ox) {
                const mf_train_span sx = mf_train_window_span(ox, p->stride_w, p->pad_left, p->in_w, p->k_w);
                const int32_t at = n * out_size + (oy * p->out_w + ox) * O;
                const float *xw = xn + (sy.i0 * p->in_w + sx.i0) * C, *ww = w + (sy.k0 * p->k_w + sx.k0) * O;
                const int32_t kh = sy.k1 - sy.k0, kw = sx.k1 - sx.k0, xr = p->in_w * C, wr = p->k_w * O;
                if (m == 1) {
                    int32_t next = 0;  /* the output next in the row, when not paired with the one below */
                    if (!rows_paired && ox + 1 < p->out_w) {
                        const mf_train_span nx = mf_train_window_span(ox + 1, p->stride_w, p->pad_left, p->in_w,
                                                                      p->k_w);
                        next = nx.k0 == sx.k0 && nx.k1 == sx.k1;
                    }
                    const int32_t other = rows_paired ? p->out_w * O : O;  /* the pair's second output */
                    if (rows_paired || next) {
                        mf_train_channels(C, 1, 0, 1, kh, kw, ww, wr, O, xw, xr, C,
                                          rows_paired ? p->stride_h * xr : p->stride_w * C, b, b, z + at,
                                          z + at + other, y + at, y + at + other, p->activation);
                        ox += next;
                    } else {
                        mf_train_channels(C, 0, 0, 1, kh, kw, ww, wr, O, xw, xr, C, 0, b, 0, z + at, 0, y + at, 0,
                                          p->activation);
                    }
                    continue;
                }
                /* output o = c * m + q reads input channel c: per output, the window's sum */
                for (int32_t o = 0; o < O; ++o) {
                    float acc = b[o];
                    for (int32_t r = 0; r < kh; ++r)
                        for (int32_t q = 0; q < kw; ++q)
                            acc = mf_train_fma(xw[r * xr + q * C + o / m], ww[r * wr + q * O + o], acc);
                    mf_train_put(z + at + o, y + at + o, p->activation, acc);
                }
            }
            oy += rows_paired;
        }
    }
}

/* dw[tap (ky, kx)] += its products over outputs [oy0, oy1) x [ox0, ox1) of one sample (multiplier 1); with
 * `pair` also dw[tap (ky, kx + 1)] (at d + out_c) over the same outputs. */
static void mf_train_depthwise_taps(const mf_train_window *p, const float *g, const float *x, int32_t ky, int32_t kx,
                                    int32_t oy0, int32_t oy1, int32_t ox0, int32_t ox1, int32_t pair, float *d) {
    if (oy1 <= oy0 || ox1 <= ox0) return;
    const int32_t C = p->in_c, O = p->out_c;
    const int32_t iy = oy0 * p->stride_h - p->pad_top + ky, ix = ox0 * p->stride_w - p->pad_left + kx;
    const float *s = g + (oy0 * p->out_w + ox0) * O, *t = x + (iy * p->in_w + ix) * C;
    int32_t nr = oy1 - oy0, nq = ox1 - ox0, sr = p->out_w * O, sq = O, tr = p->stride_h * p->in_w * C,
            tq = p->stride_w * C;
    if (nr > nq) {  /* the longer side innermost (a sum in any order): fewer loop entries */
        int32_t v = nr;
        nr = nq, nq = v, v = sr, sr = sq, sq = v, v = tr, tr = tq, tq = v;
    }
    if (pair)
        mf_train_channels(C, 1, 0, 1, nr, nq, s, sr, sq, t, tr, tq, C, d, d + O, d, d + O, 0, 0, MF_ACT_NONE);
    else
        mf_train_channels(C, 0, 0, 1, nr, nq, s, sr, sq, t, tr, tq, 0, d, 0, d, 0, 0, 0, MF_ACT_NONE);
}

/* The same for a depth multiplier m > 1: output channel o reads input channel o / m. */
static void mf_train_depthwise_tap(const mf_train_window *p, const float *g, const float *x, int32_t ky, int32_t kx,
                                   int32_t oy0, int32_t oy1, int32_t ox0, int32_t ox1, float *d) {
    const int32_t C = p->in_c, O = p->out_c, m = p->multiplier;
    for (int32_t o = 0; o < O; ++o) {
        float acc = d[o];
        for (int32_t oy = oy0; oy < oy1; ++oy) {
            const int32_t iy = oy * p->stride_h - p->pad_top + ky;
            for (int32_t ox = ox0; ox < ox1; ++ox) {
                const int32_t ix = ox * p->stride_w - p->pad_left + kx;
                acc = mf_train_fma(g[(oy * p->out_w + ox) * O + o], x[(iy * p->in_w + ix) * C + o / m], acc);
            }
        }
        d[o] = acc;
    }
}

void mf_train_depthwise_backward(const mf_train_window *p, int32_t rows, const float *x, const float *w,
                                 const float *z, float *dy, float *dw, float *db, float *dx) {
    const int32_t C = p->in_c, O = p->out_c, m = p->multiplier;
    const int32_t in_size = p->in_h * p->in_w * C, out_size = p->out_h * p->out_w * O;
    mf_train_mask_bias(p->activation, rows * p->out_h * p->out_w, O, z, dy, db);
    /* weights: per tap, the products of the outputs whose tap reads the input (a rectangle of outputs) */
    for (int32_t ky = 0; ky < p->k_h; ++ky) {
        int32_t oy0, oy1;
        mf_train_clip(p->stride_h, ky - p->pad_top, p->in_h, p->out_h, &oy0, &oy1);
        if (oy1 == oy0) continue;
        for (int32_t kx = 0; kx < p->k_w; ++kx) {
            int32_t ox0, ox1;
            mf_train_clip(p->stride_w, kx - p->pad_left, p->in_w, p->out_w, &ox0, &ox1);
            float *d = dw + (ky * p->k_w + kx) * O;
            if (m != 1) {
                for (int32_t n = 0; n < rows; ++n)
                    mf_train_depthwise_tap(p, dy + n * out_size, x + n * in_size, ky, kx, oy0, oy1, ox0, ox1, d);
                continue;
            }
            /* With the next tap of the row, over the outputs both read, each output gradient loaded feeds
             * both (the next tap reads the next input element). That tap reads one element further right,
             * so its outputs [nx0, nx1) start and end no later: both read [ox0, nx1), tap kx alone
             * [nx1, ox1) and tap kx + 1 alone [nx0, ox0). */
            int32_t nx0 = 0, nx1 = 0;
            if (kx + 1 < p->k_w) mf_train_clip(p->stride_w, kx + 1 - p->pad_left, p->in_w, p->out_w, &nx0, &nx1);
            const int32_t paired = nx1 > ox0;
            for (int32_t n = 0; n < rows; ++n) {
                const float *gn = dy + n * out_size, *xn = x + n * in_size;
                if (!paired) {
                    mf_train_depthwise_taps(p, gn, xn, ky, kx, oy0, oy1, ox0, ox1, 0, d);
                    continue;
                }
                mf_train_depthwise_taps(p, gn, xn, ky, kx, oy0, oy1, ox0, nx1, 1, d);
                mf_train_depthwise_taps(p, gn, xn, ky, kx, oy0, oy1, nx1, ox1, 0, d);
                mf_train_depthwise_taps(p, gn, xn, ky, kx + 1, oy0, oy1, nx0, ox0, 0, d + O);
            }
            if (paired) ++kx;  /* the next tap's columns are all done */
        }
    }
    if (!dx) return;
    /* inputs: gathered per input element from the outputs whose window holds it */
    for (int32_t n = 0; n < rows; ++n) {
        for (int32_t iy = 0; iy < p->in_h; ++iy) {
            const mf_train_span sy = mf_train_gather_span(iy, p->stride_h, p->pad_top, p->k_h, p->out_h);
            for (int32_t ix = 0; ix < p->in_w; ++ix) {
                const mf_train_span sx = mf_train_gather_span(ix, p->stride_w, p->pad_left, p->k_w, p->out_w);
                float *d = dx + n * in_size + (iy * p->in_w + ix) * C;
                if (sy.k1 == sy.k0 || sx.k1 == sx.k0) {  /* under no window */
                    memset(d, 0, sizeof(float) * (size_t)C);
                    continue;
                }
                const float *g = dy + n * out_size + (sy.k0 * p->out_w + sx.k0) * O;
                const float *wt = w + (sy.i0 * p->k_w + sx.i0) * O;  /* the taps go down as the outputs go up */
                const int32_t gr = p->out_w * O, wr = -p->stride_h * p->k_w * O, wq = -p->stride_w * O;
                if (m == 1) {
                    mf_train_channels(C, 0, 0, 1, sy.k1 - sy.k0, sx.k1 - sx.k0, wt, wr, wq, g, gr, O, 0, 0, 0, d, 0, 0,
                                      0, MF_ACT_NONE);
                    continue;
                }
                for (int32_t c = 0; c < C; ++c) {
                    float acc = 0.0f;
                    for (int32_t r = 0; r < sy.k1 - sy.k0; ++r)
                        for (int32_t q = 0; q < sx.k1 - sx.k0; ++q)
                            for (int32_t j = 0; j < m; ++j)
                                acc = mf_train_fma(g[r * gr + q * O + c * m + j], wt[r * wr + q * wq + c * m + j], acc);
                    d[c] = acc;
                }
            }
        }
    }
}

/* Valid input elements under a window (SAME pooling averages only those). */
MF_INLINE float mf_train_pool_scale(mf_train_span sy, mf_train_span sx) {
    const int32_t count = (sy.k1 - sy.k0) * (sx.k1 - sx.k0);
    return count > 0 ? 1.0f / (float)count : 0.0f;
}

void mf_train_avgpool_forward(const mf_train_window *p, int32_t rows, const float *x, float *y) {
    const int32_t C = p->in_c, in_size = p->in_h * p->in_w * C, out_size = p->out_h * p->out_w * C;
    for (int32_t n = 0; n < rows; ++n) {
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            const mf_train_span sy = mf_train_window_span(oy, p->stride_h, p->pad_top, p->in_h, p->k_h);
            for (int32_t ox = 0; ox < p->out_w; ++ox) {
                const mf_train_span sx = mf_train_window_span(ox, p->stride_w, p->pad_left, p->in_w, p->k_w);
                float *out = y + n * out_size + (oy * p->out_w + ox) * C;
                mf_train_channels(C, 0, 0, 0, sy.k1 - sy.k0, sx.k1 - sx.k0, 0, 0, 0,
                                  x + n * in_size + (sy.i0 * p->in_w + sx.i0) * C, p->in_w * C, C, 0, 0, 0, out, 0, 0,
                                  0, MF_ACT_NONE);
                const float scale = mf_train_pool_scale(sy, sx);
                for (int32_t c = 0; c < C; ++c) out[c] *= scale;
            }
        }
    }
}

void mf_train_avgpool_backward(const mf_train_window *p, int32_t rows, const float *dy, float *dx) {
    const int32_t C = p->in_c, in_size = p->in_h * p->in_w * C, out_size = p->out_h * p->out_w * C;
    if (p->stride_h >= p->k_h && p->stride_w >= p->k_w) {
        /* windows apart (the usual pooling): an input element is under one window at most, whose share is
         * stored there; the zeros first unless the windows tile the whole input */
        const int32_t tiled = p->stride_h == p->k_h && p->stride_w == p->k_w &&
                              (p->out_h - 1) * p->stride_h - p->pad_top + p->k_h >= p->in_h &&
                              (p->out_w - 1) * p->stride_w - p->pad_left + p->k_w >= p->in_w;
        if (!tiled) memset(dx, 0, sizeof(float) * (size_t)(rows * in_size));
        for (int32_t n = 0; n < rows; ++n) {
            for (int32_t oy = 0; oy < p->out_h; ++oy) {
                const mf_train_span sy = mf_train_window_span(oy, p->stride_h, p->pad_top, p->in_h, p->k_h);
                for (int32_t ox = 0; ox < p->out_w; ++ox) {
                    const mf_train_span sx = mf_train_window_span(ox, p->stride_w, p->pad_left, p->in_w, p->k_w);
                    mf_train_fill(C, sy.k1 - sy.k0, sx.k1 - sx.k0, dx + n * in_size + (sy.i0 * p->in_w + sx.i0) * C,
                                  p->in_w * C, C, dy + n * out_size + (oy * p->out_w + ox) * C,
                                  mf_train_pool_scale(sy, sx));
                }
            }
        }
        return;
    }
    /* overlapping windows: gathered per input element, the shares of the windows that hold it */
    for (int32_t n = 0; n < rows; ++n) {
        for (int32_t iy = 0; iy < p->in_h; ++iy) {
            const mf_train_span gy = mf_train_gather_span(iy, p->stride_h, p->pad_top, p->k_h, p->out_h);
            for (int32_t ix = 0; ix < p->in_w; ++ix) {
                const mf_train_span gx = mf_train_gather_span(ix, p->stride_w, p->pad_left, p->k_w, p->out_w);
                float *d = dx + n * in_size + (iy * p->in_w + ix) * C;
                int32_t first = 1;
                for (int32_t oy = gy.k0; oy < gy.k1; ++oy) {
                    const mf_train_span sy = mf_train_window_span(oy, p->stride_h, p->pad_top, p->in_h, p->k_h);
                    for (int32_t ox = gx.k0; ox < gx.k1; ++ox) {
                        const mf_train_span sx = mf_train_window_span(ox, p->stride_w, p->pad_left, p->in_w, p->k_w);
                        const float scale = mf_train_pool_scale(sy, sx);
                        const float *g = dy + n * out_size + (oy * p->out_w + ox) * C;
                        if (first) {
                            for (int32_t c = 0; c < C; ++c) d[c] = g[c] * scale;
                        } else {
                            for (int32_t c = 0; c < C; ++c) d[c] = mf_train_fma(g[c], scale, d[c]);
                        }
                        first = 0;
                    }
                }
                if (first) memset(d, 0, sizeof(float) * (size_t)C);  /* under no window */
            }
        }
    }
}

void mf_train_dense_forward(int32_t rows, int32_t inputs, int32_t outputs, int32_t activation, const float *x,
                            const float *w, const float *b, float *z, float *y) {
    mf_train_rows_forward(rows, inputs, outputs, x, w, b, z, y, activation);
}

void mf_train_dense_backward(int32_t rows, int32_t inputs, int32_t outputs, int32_t activation, const float *x,
                             const float *w, const float *z, float *dy, float *dw, float *db, float *dx) {
    if (rows == 1) {  /* the bias gradient with the weights' */
        mf_train_mask(activation, outputs, z, dy);
        mf_train_rows_weight_grad(1, inputs, outputs, dy, outputs, x, inputs, dw, inputs, db);
    } else {
        mf_train_mask_bias(activation, rows, outputs, z, dy, db);
        mf_train_rows_weight_grad(rows, inputs, outputs, dy, outputs, x, inputs, dw, inputs, 0);
    }
    if (dx) mf_train_rows_input_grad(rows, inputs, outputs, dy, outputs, w, inputs, dx, inputs, 0);
}

/* e^x for x <= 0 (the softmax's shifted logits), within 1 ulp of the exact value (0.87 at worst, checked
 * against double precision over [-87, 0]); 0 below -87 (e^x < 2e-38 beside a sum >= 1), NaN kept. About
 * 20 instructions on the M4F, where newlib's expf takes some 85: the per-class cost of a small back's
 * whole update. x = k ln 2 + r with |r| <= ln 2 / 2 (k rounded by adding 1.5 * 2^23, ln 2 in two parts so
 * that r is exact to a float), e^r by a degree-6 polynomial fitted for relative error (4e-9), 2^k added
 * to the exponent bits. */
static float mf_train_exp(float x) {
    if (!(x >= -87.0f)) return x != x ? x : 0.0f;
    const float shifter = 12582912.0f;
    const float t = mf_train_fma(x, 1.44269504f, shifter), k = t - shifter;
    float r = mf_train_fma(-k, 0.693145752f, x);
    r = mf_train_fma(-k, 1.42860677e-06f, r);
    float e = 0.00137539534f;
    e = mf_train_fma(e, r, 0.00836891308f);
    e = mf_train_fma(e, r, 0.0416694880f);
    e = mf_train_fma(e, r, 0.166665182f);
    e = mf_train_fma(e, r, 0.499999881f);
    e = mf_train_fma(e, r, 1.0f);
    e = mf_train_fma(e, r, 1.0f);
    uint32_t tb, eb;
    memcpy(&tb, &t, sizeof tb);
    memcpy(&eb, &e, sizeof eb);
    eb += (tb - 0x4B400000u) << 23;  /* t's low mantissa bits are k; unsigned, as k < 0 */
    memcpy(&e, &eb, sizeof e);
    return e;
}

float mf_train_softmax_cross_entropy(int32_t rows, int32_t classes, const float *logits, const uint8_t *labels,
                                     int32_t batch_rows, float *dlogits) {
    float total = 0.0f;
    for (int32_t n = 0; n < rows; ++n) {
        const float *z = logits + n * classes;
        float *g = dlogits + n * classes;
        float top = z[0], sum = 0.0f;
        for (int32_t k = 1; k < classes; ++k) top = z[k] > top ? z[k] : top;
        /* one exponential per class (the costly part): kept in g, then normalised */
        for (int32_t k = 0; k < classes; ++k) {
            g[k] = mf_train_exp(z[k] - top);
            sum += g[k];
        }
        total += logf(sum) - (z[labels[n]] - top);
        const float scale = 1.0f / (sum * (float)batch_rows);
        for (int32_t k = 0; k < classes; ++k) g[k] *= scale;
        g[labels[n]] -= 1.0f / (float)batch_rows;
    }
    return total;
}

void mf_train_sgd(int32_t count, float learning_rate, float momentum, float *w, const float *g, float *v) {
    if (momentum == 0.0f) {
        for (int32_t i = 0; i < count; ++i) w[i] = mf_train_fma(-learning_rate, g[i], w[i]);
        return;
    }
    for (int32_t i = 0; i < count; ++i) {
        v[i] = mf_train_fma(-learning_rate, g[i], momentum * v[i]);
        w[i] += v[i];
    }
}

void mf_train_dequantize(int32_t count, int32_t zero_point, float scale, const int8_t *q, float *x) {
    int32_t i = 0;
    for (; i + 4 <= count; i += 4) {  /* four at a time: the loop's own instructions are most of the rest */
        x[i] = (float)(q[i] - zero_point) * scale;
        x[i + 1] = (float)(q[i + 1] - zero_point) * scale;
        x[i + 2] = (float)(q[i + 2] - zero_point) * scale;
        x[i + 3] = (float)(q[i + 3] - zero_point) * scale;
    }
    for (; i < count; ++i) x[i] = (float)(q[i] - zero_point) * scale;
}
