/* microforge instruction counter: a QEMU TCG plugin (plugin API version 1, as in QEMU 7.2).
 *
 * Counts the guest instructions executed from the first instruction at address `begin` (inclusive) up
 * to the first instruction at address `end` (exclusive), once per region, and appends one line per
 * completed region to the file `out`:
 *
 *     R <instructions>
 *
 * Arguments (comma separated after the plugin path):
 *     begin=<addr>,end=<addr>,out=<path>[,mode=tb|insn][,mark=<addr>]
 *
 * mark (optional, for per-op profiles): each time the first instruction at address `mark` executes
 * inside a region, the line
 *
 *     M <instructions>
 *
 * is appended first, with the instructions of the region executed before it; the region's R line
 * follows its M lines.
 *
 * mode=tb (default): one inline 64-bit add of the block's length when a translation block starts. A
 * TB on this single-core, interrupt-free guest runs to its end, so the count is exact; a marker that
 * is not the first instruction of its TB is corrected by the length of the TB's tail after it.
 * mode=insn: one inline add per instruction; slower, exact by construction, kept as a cross-check.
 *
 * Debian's QEMU 7.2 ships no qemu-plugin.h, so the few declarations used are written out below
 * against the documented plugin API (docs/devel/tcg-plugins.rst, version 1).
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- The plugin API, version 1 (only what this plugin uses). ---- */
#define MF_PLUGIN_EXPORT __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t; /* only ever passed by pointer here */
struct qemu_plugin_tb;
struct qemu_plugin_insn;

enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };

typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr,
                                              uint64_t imm);
void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *insn, enum qemu_plugin_op op,
                                                void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);

MF_PLUGIN_EXPORT int qemu_plugin_version = 1;
MF_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv);

/* ---- The counter. The boards are single-core, so one global counter is exact. ---- */
static uint64_t mf_executed;      /* instructions executed so far (see mode) */
static uint64_t mf_region_start;  /* mf_executed at the begin marker, corrected */
static bool mf_in_region;
static uint64_t mf_begin_addr, mf_end_addr, mf_mark_addr;
static bool mf_per_insn, mf_have_mark;
static FILE *mf_out;
static uint64_t mf_regions, mf_unmatched;

/* userdata = the number of instructions already added for the marker's TB that have not executed yet
 * when the marker runs (its TB's tail, marker included, in tb mode; 0 in insn mode, where a callback
 * runs before the same instruction's inline add). */
static void mf_on_begin(unsigned int vcpu_index, void *userdata) {
    (void)vcpu_index;
    if (mf_in_region) {
        ++mf_unmatched;
    }
    mf_region_start = mf_executed - (uint64_t)(uintptr_t)userdata;
    mf_in_region = true;
}

static void mf_on_end(unsigned int vcpu_index, void *userdata) {
    (void)vcpu_index;
    if (!mf_in_region) {
        ++mf_unmatched;
        return;
    }
    fprintf(mf_out, "R %" PRIu64 "\n", mf_executed - (uint64_t)(uintptr_t)userdata - mf_region_start);
    fflush(mf_out);
    ++mf_regions;
    mf_in_region = false;
}

static void mf_on_mark(unsigned int vcpu_index, void *userdata) {
    (void)vcpu_index;
    if (mf_in_region) {
        fprintf(mf_out, "M %" PRIu64 "\n", mf_executed - (uint64_t)(uintptr_t)userdata - mf_region_start);
    }
}

static void mf_on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    size_t n = qemu_plugin_tb_n_insns(tb);
    size_t i;
    (void)id;
    if (!mf_per_insn) {
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &mf_executed, n);
    }
    for (i = 0; i < n; ++i) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t vaddr = qemu_plugin_insn_vaddr(insn);
        uintptr_t tail = mf_per_insn ? 0u : (uintptr_t)(n - i);
        if (mf_per_insn) {
            qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &mf_executed, 1);
        }
        if (vaddr == mf_begin_addr) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, mf_on_begin, QEMU_PLUGIN_CB_NO_REGS, (void *)tail);
        } else if (vaddr == mf_end_addr) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, mf_on_end, QEMU_PLUGIN_CB_NO_REGS, (void *)tail);
        } else if (mf_have_mark && vaddr == mf_mark_addr) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, mf_on_mark, QEMU_PLUGIN_CB_NO_REGS, (void *)tail);
        }
    }
}

static void mf_on_exit(qemu_plugin_id_t id, void *userdata) {
    (void)id;
    (void)userdata;
    if (mf_out != NULL) {
        fprintf(mf_out, "T %" PRIu64 " %" PRIu64 " %d\n", mf_regions, mf_unmatched, mf_in_region ? 1 : 0);
        fclose(mf_out);
        mf_out = NULL;
    }
}

static bool mf_parse_u64(const char *text, uint64_t *value) {
    char *end = NULL;
    unsigned long long v = strtoull(text, &end, 0);
    if (end == text || *end != '\0') {
        return false;
    }
    *value = (uint64_t)v;
    return true;
}

int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
    const char *out_path = NULL;
    bool have_begin = false, have_end = false;
    int i;
    (void)info;
    for (i = 0; i < argc; ++i) {
        const char *arg = argv[i];
        if (strncmp(arg, "begin=", 6) == 0) {
            have_begin = mf_parse_u64(arg + 6, &mf_begin_addr);
        } else if (strncmp(arg, "end=", 4) == 0) {
            have_end = mf_parse_u64(arg + 4, &mf_end_addr);
        } else if (strncmp(arg, "mark=", 5) == 0) {
            mf_have_mark = mf_parse_u64(arg + 5, &mf_mark_addr);
            if (!mf_have_mark) {
                fprintf(stderr, "mf_count_plugin: bad address in '%s'\n", arg);
                return -1;
            }
        } else if (strncmp(arg, "out=", 4) == 0) {
            out_path = arg + 4;
        } else if (strcmp(arg, "mode=insn") == 0) {
            mf_per_insn = true;
        } else if (strcmp(arg, "mode=tb") == 0) {
            mf_per_insn = false;
        } else {
            fprintf(stderr, "mf_count_plugin: unknown argument '%s'\n", arg);
            return -1;
        }
    }
    if (!have_begin || !have_end || out_path == NULL) {
        fprintf(stderr, "mf_count_plugin: needs begin=<addr>,end=<addr>,out=<path>\n");
        return -1;
    }
    mf_out = fopen(out_path, "w");
    if (mf_out == NULL) {
        fprintf(stderr, "mf_count_plugin: cannot open '%s'\n", out_path);
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, mf_on_translate);
    qemu_plugin_register_atexit_cb(id, mf_on_exit, NULL);
    return 0;
}
