/* Float32 training kernels of the on-device learner (microforge.learn): forward, weight gradient, input
 * gradient and the SGD update of the back's layers, for a mini-batch of `rows` samples, NHWC. Each
 * computes what src/microforge/learn/layers.py computes (equal to float tolerance: the order of the sums
 * differs). Shapes come in a const struct the generator bakes per layer. The learner runs a mini-batch in
 * tiles of a few rows (one by default), adding up the weight gradients, so its activations take one
 * tile's RAM whatever the batch size. */
#ifndef MF_TRAIN_H
#define MF_TRAIN_H

#include <stdint.h>

enum { MF_ACT_NONE = 0, MF_ACT_RELU = 1, MF_ACT_RELU6 = 2 };

typedef struct {
    int32_t in_h, in_w, in_c;       /* input per sample */
    int32_t out_h, out_w, out_c;    /* output per sample */
    int32_t k_h, k_w;               /* window */
    int32_t stride_h, stride_w;
    int32_t pad_top, pad_left;      /* padding before (SAME) */
    int32_t multiplier;             /* depthwise only: output channel c * multiplier + m reads input c */
    int32_t activation;             /* MF_ACT_* */
} mf_train_window;

/* CONV_2D, weights (out_c, k_h, k_w, in_c): z = pre-activation, y = activation(z). */
void mf_train_conv_forward(const mf_train_window *p, int32_t rows, const float *x, const float *w, const float *b,
                           float *z, float *y);
/* From dy (d loss / d y): dy is turned into d loss / d z in place; the weight and bias gradients are
 * added to dw, db (so a mini-batch can be run in tiles of rows, the caller zeroing them once per step);
 * dx (if not NULL) is set. */
void mf_train_conv_backward(const mf_train_window *p, int32_t rows, const float *x, const float *w, const float *z,
                            float *dy, float *dw, float *db, float *dx);
/* DEPTHWISE_CONV_2D, weights (1, k_h, k_w, in_c * multiplier). */
void mf_train_depthwise_forward(const mf_train_window *p, int32_t rows, const float *x, const float *w,
                                const float *b, float *z, float *y);
void mf_train_depthwise_backward(const mf_train_window *p, int32_t rows, const float *x, const float *w,
                                 const float *z, float *dy, float *dw, float *db, float *dx);
/* AVERAGE_POOL_2D: the mean of the window's valid elements (TFLite's SAME). */
void mf_train_avgpool_forward(const mf_train_window *p, int32_t rows, const float *x, float *y);
void mf_train_avgpool_backward(const mf_train_window *p, int32_t rows, const float *dy, float *dx);
/* FULLY_CONNECTED, weights (outputs, inputs). */
void mf_train_dense_forward(int32_t rows, int32_t inputs, int32_t outputs, int32_t activation, const float *x,
                            const float *w, const float *b, float *z, float *y);
void mf_train_dense_backward(int32_t rows, int32_t inputs, int32_t outputs, int32_t activation, const float *x,
                             const float *w, const float *z, float *dy, float *dw, float *db, float *dx);
/* Softmax cross-entropy of logits (rows, classes) against labels, summed over the rows; dlogits the
 * gradient of the mini-batch's mean loss (batch_rows samples in all, of which these are a tile). */
float mf_train_softmax_cross_entropy(int32_t rows, int32_t classes, const float *logits, const uint8_t *labels,
                                     int32_t batch_rows, float *dlogits);
/* v = momentum v - lr g; w = w + v (momentum 0: w = w - lr g, v unused). */
void mf_train_sgd(int32_t count, float learning_rate, float momentum, float *w, const float *g, float *v);
/* int8 latents to their real values: (q - zero_point) * scale. */
void mf_train_dequantize(int32_t count, int32_t zero_point, float scale, const int8_t *q, float *x);

#endif /* MF_TRAIN_H */
