/* Float32 training kernels: see mf_train.h and src/microforge/learn/layers.py. */
#include "mf_train.h"

#include <math.h>
#include <string.h>

static float mf_train_activate(int32_t activation, float z) {
    if (activation == MF_ACT_RELU) return z > 0.0f ? z : 0.0f;
    if (activation == MF_ACT_RELU6) return z > 0.0f ? (z < 6.0f ? z : 6.0f) : 0.0f;
    return z;
}

/* The derivative's mask, as TensorFlow's gradients: 1 on 0 < z (RELU), 0 < z < 6 (RELU6). */
static void mf_train_mask(int32_t activation, int32_t count, const float *z, float *dy) {
    if (activation == MF_ACT_NONE) return;
    for (int32_t i = 0; i < count; ++i) {
        const int keep = activation == MF_ACT_RELU ? z[i] > 0.0f : (z[i] > 0.0f && z[i] < 6.0f);
        if (!keep) dy[i] = 0.0f;
    }
}


/* The matrix products of a dense layer over P rows (a pointwise convolution's positions are rows too):
 * z = x w' + b, dw += dz' x, dx = dz w, with x (P, C), w (O, C), dz (P, O). Four outputs (or inputs) at a
 * time in registers, so each loaded value feeds four multiply-adds. */
static void mf_train_rows_forward(int32_t P, int32_t C, int32_t O, const float *x, const float *w, const float *b,
                                  float *z) {
    for (int32_t p = 0; p < P; ++p) {
        const float *xp = x + p * C;
        int32_t o = 0;
        for (; o + 4 <= O; o += 4) {
            const float *w0 = w + o * C, *w1 = w0 + C, *w2 = w1 + C, *w3 = w2 + C;
            float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
            for (int32_t c = 0; c < C; ++c) {
                const float v = xp[c];
                a0 += v * w0[c];
                a1 += v * w1[c];
                a2 += v * w2[c];
                a3 += v * w3[c];
            }
            z[p * O + o] = a0 + b[o];
            z[p * O + o + 1] = a1 + b[o + 1];
            z[p * O + o + 2] = a2 + b[o + 2];
            z[p * O + o + 3] = a3 + b[o + 3];
        }
        for (; o < O; ++o) {
            float a = 0.0f;
            for (int32_t c = 0; c < C; ++c) a += xp[c] * w[o * C + c];
            z[p * O + o] = a + b[o];
        }
    }
}

static void mf_train_rows_weight_grad(int32_t P, int32_t C, int32_t O, const float *dz, const float *x, float *dw,
                                      float *db) {
    for (int32_t o = 0; o < O; ++o) {
        float g = 0.0f;
        for (int32_t p = 0; p < P; ++p) g += dz[p * O + o];
        db[o] += g;
    }
    for (int32_t o = 0; o < O; ++o) {
        int32_t c = 0;
        for (; c + 4 <= C; c += 4) {
            float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
            for (int32_t p = 0; p < P; ++p) {
                const float g = dz[p * O + o];
                const float *xp = x + p * C + c;
                a0 += g * xp[0];
                a1 += g * xp[1];
                a2 += g * xp[2];
                a3 += g * xp[3];
            }
            dw[o * C + c] += a0;
            dw[o * C + c + 1] += a1;
            dw[o * C + c + 2] += a2;
            dw[o * C + c + 3] += a3;
        }
        for (; c < C; ++c) {
            float a = 0.0f;
            for (int32_t p = 0; p < P; ++p) a += dz[p * O + o] * x[p * C + c];
            dw[o * C + c] += a;
        }
    }
}

static void mf_train_rows_input_grad(int32_t P, int32_t C, int32_t O, const float *dz, const float *w, float *dx) {
    for (int32_t p = 0; p < P; ++p) {
        const float *dzp = dz + p * O;
        int32_t c = 0;
        for (; c + 4 <= C; c += 4) {
            float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
            for (int32_t o = 0; o < O; ++o) {
                const float g = dzp[o];
                const float *wo = w + o * C + c;
                a0 += g * wo[0];
                a1 += g * wo[1];
                a2 += g * wo[2];
                a3 += g * wo[3];
            }
            dx[p * C + c] = a0;
            dx[p * C + c + 1] = a1;
            dx[p * C + c + 2] = a2;
            dx[p * C + c + 3] = a3;
        }
        for (; c < C; ++c) {
            float a = 0.0f;
            for (int32_t o = 0; o < O; ++o) a += dzp[o] * w[o * C + c];
            dx[p * C + c] = a;
        }
    }
}

/* A 1 x 1 convolution of stride 1 without padding is a dense layer over the positions. */
static int mf_train_pointwise(const mf_train_window *p) {
    return p->k_h == 1 && p->k_w == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_top == 0 && p->pad_left == 0;
}

static void mf_train_activate_all(int32_t activation, int32_t count, const float *z, float *y) {
    for (int32_t i = 0; i < count; ++i) y[i] = mf_train_activate(activation, z[i]);
}

void mf_train_conv_forward(const mf_train_window *p, int32_t rows, const float *x, const float *w, const float *b,
                           float *z, float *y) {
    const int32_t in_size = p->in_h * p->in_w * p->in_c, out_size = p->out_h * p->out_w * p->out_c;
    if (mf_train_pointwise(p)) {
        mf_train_rows_forward(rows * p->out_h * p->out_w, p->in_c, p->out_c, x, w, b, z);
        mf_train_activate_all(p->activation, rows * out_size, z, y);
        return;
    }
    for (int32_t n = 0; n < rows; ++n) {
        const float *xn = x + n * in_size;
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            for (int32_t ox = 0; ox < p->out_w; ++ox) {
                for (int32_t o = 0; o < p->out_c; ++o) {
                    float acc = 0.0f;
                    for (int32_t ky = 0; ky < p->k_h; ++ky) {
                        const int32_t iy = oy * p->stride_h - p->pad_top + ky;
                        if (iy < 0 || iy >= p->in_h) continue;
                        for (int32_t kx = 0; kx < p->k_w; ++kx) {
                            const int32_t ix = ox * p->stride_w - p->pad_left + kx;
                            if (ix < 0 || ix >= p->in_w) continue;
                            const float *xv = xn + (iy * p->in_w + ix) * p->in_c;
                            const float *wv = w + ((o * p->k_h + ky) * p->k_w + kx) * p->in_c;
                            for (int32_t c = 0; c < p->in_c; ++c) acc += xv[c] * wv[c];
                        }
                    }
                    const int32_t at = n * out_size + (oy * p->out_w + ox) * p->out_c + o;
                    z[at] = acc + b[o];
                    y[at] = mf_train_activate(p->activation, z[at]);
                }
            }
        }
    }
}

void mf_train_conv_backward(const mf_train_window *p, int32_t rows, const float *x, const float *w, const float *z,
                            float *dy, float *dw, float *db, float *dx) {
    const int32_t in_size = p->in_h * p->in_w * p->in_c, out_size = p->out_h * p->out_w * p->out_c;
    mf_train_mask(p->activation, rows * out_size, z, dy);
    if (mf_train_pointwise(p)) {
        const int32_t positions = rows * p->out_h * p->out_w;
        mf_train_rows_weight_grad(positions, p->in_c, p->out_c, dy, x, dw, db);
        if (dx) mf_train_rows_input_grad(positions, p->in_c, p->out_c, dy, w, dx);
        return;
    }
    if (dx) memset(dx, 0, sizeof(float) * (size_t)(rows * in_size));
    for (int32_t n = 0; n < rows; ++n) {
        const float *xn = x + n * in_size;
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            for (int32_t ox = 0; ox < p->out_w; ++ox) {
                for (int32_t o = 0; o < p->out_c; ++o) {
                    const float g = dy[n * out_size + (oy * p->out_w + ox) * p->out_c + o];
                    db[o] += g;
                    for (int32_t ky = 0; ky < p->k_h; ++ky) {
                        const int32_t iy = oy * p->stride_h - p->pad_top + ky;
                        if (iy < 0 || iy >= p->in_h) continue;
                        for (int32_t kx = 0; kx < p->k_w; ++kx) {
                            const int32_t ix = ox * p->stride_w - p->pad_left + kx;
                            if (ix < 0 || ix >= p->in_w) continue;
                            const int32_t xo = (iy * p->in_w + ix) * p->in_c;
                            const int32_t wo = ((o * p->k_h + ky) * p->k_w + kx) * p->in_c;
                            for (int32_t c = 0; c < p->in_c; ++c) dw[wo + c] += g * xn[xo + c];
                            if (dx) {
                                float *dxv = dx + n * in_size + xo;
                                for (int32_t c = 0; c < p->in_c; ++c) dxv[c] += g * w[wo + c];
                            }
                        }
                    }
                }
            }
        }
    }
}

void mf_train_depthwise_forward(const mf_train_window *p, int32_t rows, const float *x, const float *w,
                                const float *b, float *z, float *y) {
    const int32_t in_size = p->in_h * p->in_w * p->in_c, out_size = p->out_h * p->out_w * p->out_c;
    const int32_t m = p->multiplier;
    for (int32_t n = 0; n < rows; ++n) {
        const float *xn = x + n * in_size;
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            for (int32_t ox = 0; ox < p->out_w; ++ox) {
                float *zp = z + n * out_size + (oy * p->out_w + ox) * p->out_c;
                for (int32_t o = 0; o < p->out_c; ++o) zp[o] = 0.0f;
                /* window position outermost, channels innermost: both contiguous in x and w */
                for (int32_t ky = 0; ky < p->k_h; ++ky) {
                    const int32_t iy = oy * p->stride_h - p->pad_top + ky;
                    if (iy < 0 || iy >= p->in_h) continue;
                    for (int32_t kx = 0; kx < p->k_w; ++kx) {
                        const int32_t ix = ox * p->stride_w - p->pad_left + kx;
                        if (ix < 0 || ix >= p->in_w) continue;
                        const float *xv = xn + (iy * p->in_w + ix) * p->in_c;
                        const float *wv = w + (ky * p->k_w + kx) * p->out_c;
                        if (m == 1) {
                            for (int32_t c = 0; c < p->in_c; ++c) zp[c] += xv[c] * wv[c];
                        } else {
                            for (int32_t o = 0; o < p->out_c; ++o) zp[o] += xv[o / m] * wv[o];
                        }
                    }
                }
                for (int32_t o = 0; o < p->out_c; ++o) zp[o] += b[o];
            }
        }
    }
    mf_train_activate_all(p->activation, rows * out_size, z, y);
}

void mf_train_depthwise_backward(const mf_train_window *p, int32_t rows, const float *x, const float *w,
                                 const float *z, float *dy, float *dw, float *db, float *dx) {
    const int32_t in_size = p->in_h * p->in_w * p->in_c, out_size = p->out_h * p->out_w * p->out_c;
    const int32_t m = p->multiplier;
    mf_train_mask(p->activation, rows * out_size, z, dy);
    if (dx) memset(dx, 0, sizeof(float) * (size_t)(rows * in_size));
    for (int32_t n = 0; n < rows; ++n) {
        const float *xn = x + n * in_size;
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            for (int32_t ox = 0; ox < p->out_w; ++ox) {
                const float *gp = dy + n * out_size + (oy * p->out_w + ox) * p->out_c;
                for (int32_t o = 0; o < p->out_c; ++o) db[o] += gp[o];
                for (int32_t ky = 0; ky < p->k_h; ++ky) {
                    const int32_t iy = oy * p->stride_h - p->pad_top + ky;
                    if (iy < 0 || iy >= p->in_h) continue;
                    for (int32_t kx = 0; kx < p->k_w; ++kx) {
                        const int32_t ix = ox * p->stride_w - p->pad_left + kx;
                        if (ix < 0 || ix >= p->in_w) continue;
                        const int32_t xo = (iy * p->in_w + ix) * p->in_c;
                        const float *xv = xn + xo;
                        const float *wv = w + (ky * p->k_w + kx) * p->out_c;
                        float *dwv = dw + (ky * p->k_w + kx) * p->out_c;
                        if (m == 1) {
                            for (int32_t c = 0; c < p->in_c; ++c) dwv[c] += gp[c] * xv[c];
                            if (dx) {
                                float *dxv = dx + n * in_size + xo;
                                for (int32_t c = 0; c < p->in_c; ++c) dxv[c] += gp[c] * wv[c];
                            }
                        } else {
                            for (int32_t o = 0; o < p->out_c; ++o) dwv[o] += gp[o] * xv[o / m];
                            if (dx) {
                                float *dxv = dx + n * in_size + xo;
                                for (int32_t o = 0; o < p->out_c; ++o) dxv[o / m] += gp[o] * wv[o];
                            }
                        }
                    }
                }
            }
        }
    }
}

/* Valid input elements under the window of output (oy, ox). */
static int32_t mf_train_window_count(const mf_train_window *p, int32_t oy, int32_t ox) {
    int32_t count = 0;
    for (int32_t ky = 0; ky < p->k_h; ++ky) {
        const int32_t iy = oy * p->stride_h - p->pad_top + ky;
        for (int32_t kx = 0; kx < p->k_w; ++kx) {
            const int32_t ix = ox * p->stride_w - p->pad_left + kx;
            count += iy >= 0 && iy < p->in_h && ix >= 0 && ix < p->in_w;
        }
    }
    return count;
}

void mf_train_avgpool_forward(const mf_train_window *p, int32_t rows, const float *x, float *y) {
    const int32_t in_size = p->in_h * p->in_w * p->in_c, out_size = p->out_h * p->out_w * p->out_c;
    for (int32_t n = 0; n < rows; ++n) {
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            for (int32_t ox = 0; ox < p->out_w; ++ox) {
                const float count = (float)mf_train_window_count(p, oy, ox);
                for (int32_t c = 0; c < p->in_c; ++c) {
                    float acc = 0.0f;
                    for (int32_t ky = 0; ky < p->k_h; ++ky) {
                        const int32_t iy = oy * p->stride_h - p->pad_top + ky;
                        if (iy < 0 || iy >= p->in_h) continue;
                        for (int32_t kx = 0; kx < p->k_w; ++kx) {
                            const int32_t ix = ox * p->stride_w - p->pad_left + kx;
                            if (ix < 0 || ix >= p->in_w) continue;
                            acc += x[n * in_size + (iy * p->in_w + ix) * p->in_c + c];
                        }
                    }
                    y[n * out_size + (oy * p->out_w + ox) * p->out_c + c] = acc / count;
                }
            }
        }
    }
}

void mf_train_avgpool_backward(const mf_train_window *p, int32_t rows, const float *dy, float *dx) {
    const int32_t in_size = p->in_h * p->in_w * p->in_c, out_size = p->out_h * p->out_w * p->out_c;
    memset(dx, 0, sizeof(float) * (size_t)(rows * in_size));
    for (int32_t n = 0; n < rows; ++n) {
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            for (int32_t ox = 0; ox < p->out_w; ++ox) {
                const float count = (float)mf_train_window_count(p, oy, ox);
                for (int32_t c = 0; c < p->in_c; ++c) {
                    const float share = dy[n * out_size + (oy * p->out_w + ox) * p->out_c + c] / count;
                    for (int32_t ky = 0; ky < p->k_h; ++ky) {
                        const int32_t iy = oy * p->stride_h - p->pad_top + ky;
                        if (iy < 0 || iy >= p->in_h) continue;
                        for (int32_t kx = 0; kx < p->k_w; ++kx) {
                            const int32_t ix = ox * p->stride_w - p->pad_left + kx;
                            if (ix < 0 || ix >= p->in_w) continue;
                            dx[n * in_size + (iy * p->in_w + ix) * p->in_c + c] += share;
                        }
                    }
                }
            }
        }
    }
}

void mf_train_dense_forward(int32_t rows, int32_t inputs, int32_t outputs, int32_t activation, const float *x,
                            const float *w, const float *b, float *z, float *y) {
    mf_train_rows_forward(rows, inputs, outputs, x, w, b, z);
    mf_train_activate_all(activation, rows * outputs, z, y);
}

void mf_train_dense_backward(int32_t rows, int32_t inputs, int32_t outputs, int32_t activation, const float *x,
                             const float *w, const float *z, float *dy, float *dw, float *db, float *dx) {
    mf_train_mask(activation, rows * outputs, z, dy);
    mf_train_rows_weight_grad(rows, inputs, outputs, dy, x, dw, db);
    if (dx) mf_train_rows_input_grad(rows, inputs, outputs, dy, w, dx);
}

float mf_train_softmax_cross_entropy(int32_t rows, int32_t classes, const float *logits, const uint8_t *labels,
                                     int32_t batch_rows, float *dlogits) {
    float total = 0.0f;
    for (int32_t n = 0; n < rows; ++n) {
        const float *z = logits + n * classes;
        float *g = dlogits + n * classes;
        float top = z[0], sum = 0.0f;
        for (int32_t k = 1; k < classes; ++k) top = z[k] > top ? z[k] : top;
        for (int32_t k = 0; k < classes; ++k) sum += expf(z[k] - top);
        const float log_sum = logf(sum);
        for (int32_t k = 0; k < classes; ++k) g[k] = expf(z[k] - top - log_sum);
        total += -(z[labels[n]] - top - log_sum);
        g[labels[n]] -= 1.0f;
        for (int32_t k = 0; k < classes; ++k) g[k] /= (float)batch_rows;
    }
    return total;
}

void mf_train_sgd(int32_t count, float learning_rate, float momentum, float *w, const float *g, float *v) {
    if (momentum == 0.0f) {
        for (int32_t i = 0; i < count; ++i) w[i] -= learning_rate * g[i];
        return;
    }
    for (int32_t i = 0; i < count; ++i) {
        v[i] = momentum * v[i] - learning_rate * g[i];
        w[i] += v[i];
    }
}

void mf_train_dequantize(int32_t count, int32_t zero_point, float scale, const int8_t *q, float *x) {
    for (int32_t i = 0; i < count; ++i) x[i] = ((float)q[i] - (float)zero_point) * scale;
}
