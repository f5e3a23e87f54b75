/* On-chip out-of-distribution scores: see mf_ood.h and src/microforge/reference/ood.py. */
#include "mf_ood.h"

static int32_t mf_ood_max(int32_t count, const int8_t *x) {
    int32_t top = x[0];
    for (int32_t i = 1; i < count; ++i) top = x[i] > top ? x[i] : top;
    return top;
}

/* sum_i E[top - x_i]: at most count * 2^15, below 2^32 (the generator checks the count). */
static uint32_t mf_ood_exp_sum(const mf_ood_softmax_params *p, const int8_t *x, int32_t top) {
    uint32_t total = 0;
    for (int32_t i = 0; i < p->count; ++i) {
        const int32_t d = top - x[i];
        if (d < p->table_length) total += p->exp_table[d];
    }
    return total;
}

/* floor(2^16 log2 x), x >= 1: the mantissa as Q30 in [1, 2) squared 16 times, a square of 2 or more
 * giving the next fraction bit (one UMULL each). */
static int32_t mf_ood_log2_q16(uint32_t x) {
    const int32_t exponent = 31 - mf_count_leading_zeros32(x);
    uint32_t y = exponent <= 30 ? x << (30 - exponent) : x >> (exponent - 30);
    int32_t fraction = 0;
    for (int bit = 15; bit >= 0; --bit) {
        y = (uint32_t)(((uint64_t)y * y) >> 30);
        if (y >= 0x80000000u) {
            y >>= 1;
            fraction |= 1 << bit;
        }
    }
    return (exponent << 16) | fraction;
}

void mf_ood_maxlogit(int32_t count, int32_t zero_point, const int8_t *logits, int32_t *score) {
    *score = zero_point - mf_ood_max(count, logits);
}

void mf_ood_msp(const mf_ood_softmax_params *p, const int8_t *logits, int32_t *score) {
    const uint32_t total = mf_ood_exp_sum(p, logits, mf_ood_max(p->count, logits));
    *score = -(int32_t)((1u << 30) / total);
}

void mf_ood_energy(const mf_ood_softmax_params *p, const int8_t *logits, int32_t *score) {
    const int32_t top = mf_ood_max(p->count, logits);
    const int64_t excess = mf_ood_log2_q16(mf_ood_exp_sum(p, logits, top)) - (15 << 16);
    const int32_t log_term = (int32_t)((excess * p->log_weight + (1 << 15)) >> 16);
    *score = -((top - p->zero_point) * 64 + log_term);
}

void mf_ood_distance(const mf_ood_distance_params *p, const int8_t *features, int32_t *score) {
    uint64_t nearest = UINT64_MAX;
    const int16_t *mean = p->means;
    for (int32_t c = 0; c < p->classes; ++c) {
        uint64_t total = 0;
        for (int32_t j = 0; j < p->features; ++j) {
            const int32_t d = features[j] * 16 - mean[j];
            total += (uint64_t)p->weights[j] * (uint32_t)(d * d); /* one UMLAL */
        }
        total >>= p->shift;
        nearest = total < nearest ? total : nearest;
        mean += p->features;
    }
    *score = (int32_t)nearest;
}

/* floor(sqrt(x)), bit by bit. */
static uint32_t mf_ood_isqrt64(uint64_t x) {
    uint64_t root = 0, bit = (uint64_t)1 << 62;
    while (bit > x) bit >>= 2;
    while (bit != 0) {
        if (x >= root + bit) {
            x -= root + bit;
            root = (root >> 1) + bit;
        } else {
            root >>= 1;
        }
        bit >>= 2;
    }
    return (uint32_t)root;
}

void mf_ood_cosine(const mf_ood_cosine_params *p, const int8_t *features, int32_t *score) {
    uint32_t sum_squares = 0; /* features * 255^2 < 2^32 (the generator checks the count) */
    for (int32_t j = 0; j < p->features; ++j) {
        const int32_t c = features[j] - p->zero_point;
        sum_squares += (uint32_t)(c * c);
    }
    const uint64_t length = mf_ood_isqrt64((uint64_t)sum_squares << 16);
    if (length == 0) {
        *score = 0;
        return;
    }
    int64_t best = INT64_MIN;
    const int8_t *w = p->weights;
    for (int32_t k = 0; k < p->classes; ++k) {
        int32_t dot = 0;
        for (int32_t j = 0; j < p->features; ++j) dot += (features[j] - p->zero_point) * w[j];
        const uint64_t magnitude = (((uint64_t)(dot < 0 ? -(int64_t)dot : dot)) << 31) / (length * p->norms[k]);
        const int64_t cosine = dot < 0 ? -(int64_t)magnitude : (int64_t)magnitude;
        best = cosine > best ? cosine : best;
        w += p->features;
    }
    *score = (int32_t)-best;
}

void mf_ood_squared_error(int32_t count, const int8_t *a, const int8_t *b, int32_t *score) {
    int32_t total = 0; /* count * 255^2 < 2^31 (the generator checks the count) */
    for (int32_t j = 0; j < count; ++j) {
        const int32_t d = a[j] - b[j];
        total += d * d;
    }
    *score = total;
}

void mf_ood_flag(int32_t threshold, const int32_t *score, int8_t *flag) {
    *flag = *score > threshold ? 1 : 0;
}
