/* Runtime manager of a dynamic (slimmable) network: picks the operating point (member x clock) that
 * meets the current budgets. Equal, index for index, to microforge.dynamic.manager.Manager, whose
 * docstring defines the rule and the integer arithmetic; this is its C form.
 *
 * The tables are generated (microforge.dynamic.manager.manager_c_tables) into a separate source that
 * defines the const symbols declared below. Their names carry a prefix, "mf" unless this file and
 * mf_manager.c are compiled with -DMF_MANAGER_TABLES=<prefix> (the generated source sets it itself).
 * The generator never writes an empty table, and every latency_us is at least 1.
 *
 * Units: latency in microseconds, energy in nanojoules, power in microwatts, accuracy in 1e-4, fixed
 * point factors in Q16 (65536 = 1.0). Not reentrant: one manager per image, its load factor a static. */
#ifndef MF_MANAGER_H
#define MF_MANAGER_H

#include <stdint.h>

#ifndef MF_MANAGER_TABLES
#define MF_MANAGER_TABLES mf
#endif
#define MF_MANAGER_JOIN_(prefix, name) prefix##_manager_##name
#define MF_MANAGER_JOIN(prefix, name) MF_MANAGER_JOIN_(prefix, name)
#define MF_MANAGER_TABLE(name) MF_MANAGER_JOIN(MF_MANAGER_TABLES, name)

#define MF_MANAGER_NO_BUDGET (-1)
#define MF_MANAGER_Q16_ONE 65536

extern const int32_t MF_MANAGER_TABLE(point_count);
extern const int32_t MF_MANAGER_TABLE(member_count);  /* members: widths, or (width, depth) pairs */
extern const int32_t MF_MANAGER_TABLE(feedback);       /* 0: observations are ignored */
extern const int32_t MF_MANAGER_TABLE(smoothing_q16);  /* EMA weight of the newest observation */
extern const int32_t MF_MANAGER_TABLE(headroom_q16);   /* margin on every predicted latency */
extern const int32_t MF_MANAGER_TABLE(width_permille)[]; /* per member: its width, 1/1000 */
extern const int32_t MF_MANAGER_TABLE(depth)[];        /* per member: blocks run, 0 for all */
extern const int32_t MF_MANAGER_TABLE(member_index)[]; /* per point: its member 0..M-1, the image's operating point */
extern const int32_t MF_MANAGER_TABLE(mhz)[];
extern const int32_t MF_MANAGER_TABLE(latency_us)[];   /* at no background load */
extern const int32_t MF_MANAGER_TABLE(energy_nj)[];
extern const int32_t MF_MANAGER_TABLE(power_uw)[];
extern const int32_t MF_MANAGER_TABLE(accuracy)[];

/* The most accurate point meeting every budget (a negative budget = no budget); ties: lower energy,
 * then lower predicted latency, then lower index. Latency is predicted with the headroom, and if no
 * point fits so, without it. Returns the point's index (>= 0), or, when no point meets the budgets,
 * -(index + 1) of the cheapest point (lowest energy), which the caller may still run. */
int32_t mf_manager_select(int32_t latency_budget_us, int32_t energy_budget_nj, int32_t power_cap_uw,
                          int32_t min_accuracy);

/* One measured latency of an inference run at point `index`: updates the load factor (an EMA of
 * measured / table latency) when the tables enable feedback. Ignored for an index out of range or a
 * negative latency. */
void mf_manager_observe(int32_t index, int32_t measured_latency_us);

/* Load factor back to 1.0 (as at start-up). */
void mf_manager_reset(void);

/* The current load factor, Q16. */
int32_t mf_manager_load_factor_q16(void);

/* A point's member (0..M-1: the k of mf_set_operating_point) and clock (MHz); -1 for an index out of range. */
int32_t mf_manager_point_member(int32_t index);
int32_t mf_manager_point_mhz(int32_t index);

#endif /* MF_MANAGER_H */
