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

void mf_train_conv_forward(const mf_train_window *p, int32_t rows, const float *x, const float *w, const float *b,
                           float *z, float *y) {
    const int32_t in_size = p->in_h * p->in_w * p->in_c, out_size = p->out_h * p->out_w * p->out_c;
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
    for (int32_t n = 0; n < rows; ++n) {
        const float *xn = x + n * in_size;
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            for (int32_t ox = 0; ox < p->out_w; ++ox) {
                for (int32_t o = 0; o < p->out_c; ++o) {
                    const int32_t c = o / p->multiplier;
                    float acc = 0.0f;
                    for (int32_t ky = 0; ky < p->k_h; ++ky) {
                        const int32_t iy = oy * p->stride_h - p->pad_top + ky;
                        if (iy < 0 || iy >= p->in_h) continue;
                        for (int32_t kx = 0; kx < p->k_w; ++kx) {
                            const int32_t ix = ox * p->stride_w - p->pad_left + kx;
                            if (ix < 0 || ix >= p->in_w) continue;
                            acc += xn[(iy * p->in_w + ix) * p->in_c + c] * w[(ky * p->k_w + kx) * p->out_c + o];
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

void mf_train_depthwise_backward(const mf_train_window *p, int32_t rows, const float *x, const float *w,
                                 const float *z, float *dy, float *dw, float *db, float *dx) {
    const int32_t in_size = p->in_h * p->in_w * p->in_c, out_size = p->out_h * p->out_w * p->out_c;
    mf_train_mask(p->activation, rows * out_size, z, dy);
    if (dx) memset(dx, 0, sizeof(float) * (size_t)(rows * in_size));
    for (int32_t n = 0; n < rows; ++n) {
        const float *xn = x + n * in_size;
        for (int32_t oy = 0; oy < p->out_h; ++oy) {
            for (int32_t ox = 0; ox < p->out_w; ++ox) {
                for (int32_t o = 0; o < p->out_c; ++o) {
                    const int32_t c = o / p->multiplier;
                    const float g = dy[n * out_size + (oy * p->out_w + ox) * p->out_c + o];
                    db[o] += g;
                    for (int32_t ky = 0; ky < p->k_h; ++ky) {
                        const int32_t iy = oy * p->stride_h - p->pad_top + ky;
                        if (iy < 0 || iy >= p->in_h) continue;
                        for (int32_t kx = 0; kx < p->k_w; ++kx) {
                            const int32_t ix = ox * p->stride_w - p->pad_left + kx;
                            if (ix < 0 || ix >= p->in_w) continue;
                            const int32_t xo = (iy * p->in_w + ix) * p->in_c + c;
                            const int32_t wo = (ky * p->k_w + kx) * p->out_c + o;
                            dw[wo] += g * xn[xo];
                            if (dx) dx[n * in_size + xo] += g * w[wo];
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
    for (int32_t n = 0; n < rows; ++n) {
        for (int32_t o = 0; o < outputs; ++o) {
            float acc = 0.0f;
            for (int32_t i = 0; i < inputs; ++i) acc += x[n * inputs + i] * w[o * inputs + i];
            z[n * outputs + o] = acc + b[o];
            y[n * outputs + o] = mf_train_activate(activation, z[n * outputs + o]);
        }
    }
}

void mf_train_dense_backward(int32_t rows, int32_t inputs, int32_t outputs, int32_t activation, const float *x,
                             const float *w, const float *z, float *dy, float *dw, float *db, float *dx) {
    mf_train_mask(activation, rows * outputs, z, dy);
    if (dx) memset(dx, 0, sizeof(float) * (size_t)(rows * inputs));
    for (int32_t n = 0; n < rows; ++n) {
        for (int32_t o = 0; o < outputs; ++o) {
            const float g = dy[n * outputs + o];
            db[o] += g;
            for (int32_t i = 0; i < inputs; ++i) dw[o * inputs + i] += g * x[n * inputs + i];
            if (dx) {
                for (int32_t i = 0; i < inputs; ++i) dx[n * inputs + i] += g * w[o * inputs + i];
            }
        }
    }
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
