/* Runtime manager of a dynamic network: see mf_manager.h and src/microforge/dynamic/manager.py.
 * Every operand of a shift or a division below is non-negative, so the results are those of Python's
 * >> and // on the same integers. */
#include "mf_manager.h"

#define MF_MANAGER_FACTOR_MIN (MF_MANAGER_Q16_ONE / 16)
#define MF_MANAGER_FACTOR_MAX (64 * MF_MANAGER_Q16_ONE)

static int32_t mf_manager_factor_q16 = MF_MANAGER_Q16_ONE;

/* Table latency x load factor x (1 + headroom), each product rounded half up to whole us; in 64 bits,
 * as it may exceed int32 (the comparison with a budget is then simply false). */
static int64_t mf_manager_predicted_us(int32_t i, int32_t headroom_q16) {
    const int64_t loaded = ((int64_t)MF_MANAGER_TABLE(latency_us)[i] * mf_manager_factor_q16 + (1 << 15)) >> 16;
    return (loaded * (MF_MANAGER_Q16_ONE + headroom_q16) + (1 << 15)) >> 16;
}

/* The best point meeting the budgets with this headroom, or -1. */
static int32_t mf_manager_best(int32_t latency_budget_us, int32_t energy_budget_nj, int32_t power_cap_uw,
                               int32_t min_accuracy, int32_t headroom_q16) {
    const int32_t *energy = MF_MANAGER_TABLE(energy_nj);
    const int32_t *accuracy = MF_MANAGER_TABLE(accuracy);
    int32_t best = -1;
    int64_t best_latency = 0;
    for (int32_t i = 0; i < MF_MANAGER_TABLE(point_count); ++i) {
        const int64_t latency = mf_manager_predicted_us(i, headroom_q16);
        if (latency_budget_us >= 0 && latency > latency_budget_us) continue;
        if (energy_budget_nj >= 0 && energy[i] > energy_budget_nj) continue;
        if (power_cap_uw >= 0 && MF_MANAGER_TABLE(power_uw)[i] > power_cap_uw) continue;
        if (min_accuracy >= 0 && accuracy[i] < min_accuracy) continue;
        if (best < 0 || accuracy[i] > accuracy[best] ||
            (accuracy[i] == accuracy[best] &&
             (energy[i] < energy[best] || (energy[i] == energy[best] && latency < best_latency)))) {
            best = i;
            best_latency = latency;
        }
    }
    return best;
}

int32_t mf_manager_select(int32_t latency_budget_us, int32_t energy_budget_nj, int32_t power_cap_uw,
                          int32_t min_accuracy) {
    const int32_t headroom = MF_MANAGER_TABLE(headroom_q16);
    int32_t best = mf_manager_best(latency_budget_us, energy_budget_nj, power_cap_uw, min_accuracy, headroom);
    if (best < 0 && headroom > 0) {
        /* the margin is a preference, not a budget */
        best = mf_manager_best(latency_budget_us, energy_budget_nj, power_cap_uw, min_accuracy, 0);
    }
    if (best >= 0) return best;
    const int32_t *energy = MF_MANAGER_TABLE(energy_nj);
    int32_t cheapest = 0;
    int64_t cheapest_latency = mf_manager_predicted_us(0, headroom);
    for (int32_t i = 1; i < MF_MANAGER_TABLE(point_count); ++i) {
        const int64_t latency = mf_manager_predicted_us(i, headroom);
        if (energy[i] < energy[cheapest] || (energy[i] == energy[cheapest] && latency < cheapest_latency)) {
            cheapest = i;
            cheapest_latency = latency;
        }
    }
    return -(cheapest + 1);
}

void mf_manager_observe(int32_t index, int32_t measured_latency_us) {
    if (!MF_MANAGER_TABLE(feedback) || index < 0 || index >= MF_MANAGER_TABLE(point_count)) return;
    if (measured_latency_us < 0) return;
    int64_t ratio = ((int64_t)measured_latency_us << 16) / MF_MANAGER_TABLE(latency_us)[index];
    if (ratio < MF_MANAGER_FACTOR_MIN) ratio = MF_MANAGER_FACTOR_MIN;
    if (ratio > MF_MANAGER_FACTOR_MAX) ratio = MF_MANAGER_FACTOR_MAX;
    /* EMA with weight s on the new ratio; both weights and both values non-negative */
    const int64_t s = MF_MANAGER_TABLE(smoothing_q16);
    const int64_t mixed = (int64_t)mf_manager_factor_q16 * (MF_MANAGER_Q16_ONE - s) + ratio * s;
    mf_manager_factor_q16 = (int32_t)((mixed + (1 << 15)) >> 16);
}

void mf_manager_reset(void) { mf_manager_factor_q16 = MF_MANAGER_Q16_ONE; }

int32_t mf_manager_load_factor_q16(void) { return mf_manager_factor_q16; }

int32_t mf_manager_point_member(int32_t index) {
    return index >= 0 && index < MF_MANAGER_TABLE(point_count) ? MF_MANAGER_TABLE(member_index)[index] : -1;
}

int32_t mf_manager_point_mhz(int32_t index) {
    return index >= 0 && index < MF_MANAGER_TABLE(point_count) ? MF_MANAGER_TABLE(mhz)[index] : -1;
}
