/* microforge firmware harness: run a generated model on every compiled-in sample and report.
 *
 * Console protocol (semihosting SYS_WRITE0, one record a line):
 *   MF:START
 *   O <sample> <output> <hex>     output bytes of one sample, in chunks of up to 64 bytes
 *   S <bytes> <measured> <window> deepest stack used below main's frame by mf_init/mf_invoke, over
 *                                 mf_init and the first <measured> samples; <window> = bytes painted
 *   MF:DONE
 *   F <ipsr> <pc>                 (instead, on any fault or unexpected exception)
 * Benchmark regions (counted by the QEMU plugin): 0 = calibration (empty), 1 = mf_init, then one per
 * sample around mf_invoke.
 */
#include <stdint.h>
#include <string.h>

#include "mf_bench.h"
#include "mf_fw.h"
#include "mf_semihost.h"
#include "model.h"

/* How many inferences get the stack painted and scanned (the first ones; painting costs time). */
#ifndef MF_STACK_SAMPLES
#define MF_STACK_SAMPLES 4
#endif
#define MF_STACK_PATTERN 0x5AFEC0DEu
static const uint32_t mf_stack_samples = MF_STACK_SAMPLES;

extern uint32_t __bss_end__[];

static char mf_hex_digit(unsigned int v) {
    return (char)(v < 10 ? '0' + v : 'a' + (v - 10));
}

/* Decimal digits of v at out; returns the position after them. */
static char *mf_put_u32(char *out, uint32_t v) {
    char tmp[10];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v != 0u);
    while (n > 0) {
        *out++ = tmp[--n];
    }
    return out;
}

static char *mf_put_hex32(char *out, uint32_t v) {
    int shift;
    for (shift = 28; shift >= 0; shift -= 4) {
        *out++ = mf_hex_digit((v >> shift) & 0xFu);
    }
    return out;
}

static __attribute__((noinline)) void mf_print_output(uint32_t sample, uint32_t index, const uint8_t *data,
                                                      uint32_t nbytes) {
    char line[2 + 11 + 11 + 2 * 64 + 2];
    uint32_t pos = 0;
    do {
        uint32_t chunk = nbytes - pos < 64u ? nbytes - pos : 64u;
        uint32_t i;
        char *p = line;
        *p++ = 'O';
        *p++ = ' ';
        p = mf_put_u32(p, sample);
        *p++ = ' ';
        p = mf_put_u32(p, index);
        *p++ = ' ';
        for (i = 0; i < chunk; ++i) {
            *p++ = mf_hex_digit(data[pos + i] >> 4);
            *p++ = mf_hex_digit(data[pos + i] & 0xFu);
        }
        *p++ = '\n';
        *p = '\0';
        mf_sh_write0(line);
        pos += chunk;
    } while (pos < nbytes);
}

static __attribute__((noinline)) void mf_print_stack(uint32_t bytes, uint32_t measured, uint32_t window) {
    char line[48];
    char *p = line;
    *p++ = 'S';
    *p++ = ' ';
    p = mf_put_u32(p, bytes);
    *p++ = ' ';
    p = mf_put_u32(p, measured);
    *p++ = ' ';
    p = mf_put_u32(p, window);
    *p++ = '\n';
    *p = '\0';
    mf_sh_write0(line);
}

/* Every exception but reset lands here: report and stop with a failure status. */
void mf_fault_handler(void) {
    uint32_t ipsr, pc, sp;
    char line[40];
    char *p = line;
    __asm__ __volatile__("mrs %0, ipsr" : "=r"(ipsr));
    __asm__ __volatile__("mrs %0, msp" : "=r"(sp));
    /* The stacked PC of the interrupted code sits 24 bytes above the exception frame (no FP state
     * assumed; good enough for a diagnostic). */
    pc = ((const uint32_t *)sp)[6];
    *p++ = 'F';
    *p++ = ' ';
    p = mf_put_u32(p, ipsr & 0x1FFu);
    *p++ = ' ';
    p = mf_put_hex32(p, pc);
    *p++ = '\n';
    *p = '\0';
    mf_sh_write0(line);
    mf_sh_exit(1);
}

/* Stack painting works on [low, top): from the end of .bss up to main's own stack pointer. Everything
 * below main's stack pointer is free while main runs (no interrupts are enabled), and the loops are
 * inlined into main with volatile accesses so that they use no stack themselves and are not turned into
 * memset calls. */
static inline __attribute__((always_inline)) void mf_paint(volatile uint32_t *low, volatile uint32_t *top) {
    while (low < top) {
        *low++ = MF_STACK_PATTERN;
    }
}

static inline __attribute__((always_inline)) uint32_t mf_stack_used(volatile uint32_t *low,
                                                                     volatile uint32_t *top) {
    volatile uint32_t *p = low;
    while (p < top && *p == MF_STACK_PATTERN) {
        ++p;
    }
    return (uint32_t)((uintptr_t)top - (uintptr_t)p);
}

int main(void) {
    uintptr_t sp;
    volatile uint32_t *low, *top;
    uint32_t sample, k, deepest = 0, used;
    uint32_t count = mf_fw_num_samples;
    const uint8_t *src = mf_fw_samples;

    __asm__ __volatile__("mov %0, sp" : "=r"(sp));
    top = (volatile uint32_t *)(sp & ~(uintptr_t)3u);
    low = (volatile uint32_t *)(((uintptr_t)__bss_end__ + 3u) & ~(uintptr_t)3u);

    mf_sh_write0("MF:START\n");
    MF_BENCH_EMPTY();
    mf_paint(low, top);
    MF_BENCH_CALL(mf_init);
    used = mf_stack_used(low, top);
    deepest = used > deepest ? used : deepest;
    for (sample = 0; sample < count; ++sample) {
        for (k = 0; k < mf_fw_num_inputs; ++k) {
            memcpy(mf_input((int)k), src, mf_fw_input_bytes[k]);
            src += mf_fw_input_bytes[k];
        }
        if (sample < mf_stack_samples) {
            mf_paint(low, top);
        }
        MF_BENCH_CALL(mf_invoke);
        if (sample < mf_stack_samples) {
            used = mf_stack_used(low, top);
            deepest = used > deepest ? used : deepest;
        }
        for (k = 0; k < mf_fw_num_outputs; ++k) {
            mf_print_output(sample, k, (const uint8_t *)mf_output((int)k), mf_fw_output_bytes[k]);
        }
    }
    mf_print_stack(deepest, count < mf_stack_samples ? count : mf_stack_samples,
                   (uint32_t)((uintptr_t)top - (uintptr_t)low));
    mf_sh_write0("MF:DONE\n");
    return 0;
}
