/* Benchmark markers of the microforge firmware (defined in startup.S).
 *
 * The QEMU instruction-counting plugin counts the guest instructions executed from the first instruction
 * of mf_bench_begin up to, not including, the first instruction of mf_bench_end. Each marker is a single
 * `bx lr`. */
#ifndef MF_BENCH_H
#define MF_BENCH_H

void mf_bench_begin(void);
void mf_bench_end(void);

/* Call `fn` (a void(void) function) between the two markers with nothing else in between: the region
 * then holds exactly  1 (bx lr of mf_bench_begin) + 1 (bl fn) + instructions(fn) + 1 (bl mf_bench_end),
 * so instructions(fn) = region - calibration - 1, where the calibration region is MF_BENCH_EMPTY()
 * = 1 (bx lr) + 1 (bl mf_bench_end). The clobbers are the AAPCS caller-saved registers. */
#if defined(__ARM_FP)
#define MF_BENCH_FP_CLOBBERS , "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", \
                               "s12", "s13", "s14", "s15"
#else
#define MF_BENCH_FP_CLOBBERS
#endif
#define MF_BENCH_CLOBBERS "r0", "r1", "r2", "r3", "r12", "lr", "cc", "memory" MF_BENCH_FP_CLOBBERS

#define MF_BENCH_CALL(fn) \
    __asm__ __volatile__("bl mf_bench_begin\n\tbl " #fn "\n\tbl mf_bench_end" ::: MF_BENCH_CLOBBERS)
#define MF_BENCH_EMPTY() \
    __asm__ __volatile__("bl mf_bench_begin\n\tbl mf_bench_end" ::: MF_BENCH_CLOBBERS)

#endif
