/* On-chip out-of-distribution scores (the ops robust.ood.onchip appends to a classifier): integer only,
 * equal byte for byte to src/microforge/reference/ood.py, whose docstring defines each score.
 * Every score reads `count` int8 values (the logits or the penultimate features) and writes one int32,
 * higher = more likely out of distribution; mf_ood_flag compares it with the fitted threshold. */
#ifndef MF_OOD_H
#define MF_OOD_H

#include "mf_common.h"

typedef struct {
    int32_t count, zero_point;
    int32_t table_length;     /* entries of exp_table; differences past it count 0 */
    const uint16_t *exp_table; /* E[d] = round(2^15 exp(-scale d / T)) */
    int32_t log_weight;       /* energy only: round(64 T ln 2 / scale) */
} mf_ood_softmax_params;

typedef struct {
    int32_t classes, features;
    const int16_t *means;     /* classes x features, in 1/16 of a feature's integer step */
    const uint16_t *weights;  /* features: the diagonal precision in the score's units */
    int32_t shift;            /* applied to each class's sum so the nearest fits int32 */
} mf_ood_distance_params;

typedef struct {
    int32_t classes, features, zero_point;
    const int8_t *weights;    /* classes x features */
    const uint32_t *norms;    /* classes: each row's norm in 1/256 */
} mf_ood_cosine_params;

void mf_ood_maxlogit(int32_t count, int32_t zero_point, const int8_t *logits, int32_t *score);
void mf_ood_msp(const mf_ood_softmax_params *p, const int8_t *logits, int32_t *score);
void mf_ood_energy(const mf_ood_softmax_params *p, const int8_t *logits, int32_t *score);
void mf_ood_distance(const mf_ood_distance_params *p, const int8_t *features, int32_t *score);
void mf_ood_cosine(const mf_ood_cosine_params *p, const int8_t *features, int32_t *score);
void mf_ood_squared_error(int32_t count, const int8_t *a, const int8_t *b, int32_t *score);
void mf_ood_flag(int32_t threshold, const int32_t *score, int8_t *flag);

#endif /* MF_OOD_H */
