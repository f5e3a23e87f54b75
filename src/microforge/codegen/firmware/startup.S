/* microforge firmware: vector table, reset handler and the two benchmark markers.
 *
 * Written for the Armv7-M profile (Cortex-M4F on mps2-an386, Cortex-M7 on mps2-an500). The reset
 * handler is assembly so that nothing can touch the FPU before it is enabled: the toolchain's hard-float
 * ABI may use FP registers anywhere in C code.
 */
    .syntax unified
    .thumb

/* ---- Vector table: initial SP, reset, and the 14 system exceptions. No device IRQs are enabled. ---- */
    .section .vectors, "a", %progbits
    .balign 4
    .globl mf_vectors
    .type mf_vectors, %object
mf_vectors:
    .word __stack_top__          /* initial main stack pointer */
    .word Reset_Handler
    .word mf_fault_handler       /* NMI */
    .word mf_fault_handler       /* HardFault */
    .word mf_fault_handler       /* MemManage */
    .word mf_fault_handler       /* BusFault */
    .word mf_fault_handler       /* UsageFault */
    .word 0, 0, 0, 0             /* reserved */
    .word mf_fault_handler       /* SVCall */
    .word mf_fault_handler       /* DebugMonitor */
    .word 0                      /* reserved */
    .word mf_fault_handler       /* PendSV */
    .word mf_fault_handler       /* SysTick */
    .size mf_vectors, . - mf_vectors

/* ---- Reset: enable the FPU, copy .data from flash, zero .bss, run main, exit via semihosting. ---- */
    .section .text.Reset_Handler, "ax", %progbits
    .balign 2
    .globl Reset_Handler
    .thumb_func
    .type Reset_Handler, %function
Reset_Handler:
    ldr   r0, =__stack_top__
    mov   sp, r0
    /* CPACR (0xE000ED88): full access to CP10 and CP11, i.e. the FPU. */
    ldr   r0, =0xE000ED88
    ldr   r1, [r0]
    orr   r1, r1, #(0xF << 20)
    str   r1, [r0]
    dsb
    isb
    /* .data: copy word by word from its load address (the linker keeps both ends 4-aligned). */
    ldr   r0, =__data_start__
    ldr   r1, =__data_end__
    ldr   r2, =__data_load__
1:  cmp   r0, r1
    bhs   2f
    ldr   r3, [r2], #4
    str   r3, [r0], #4
    b     1b
2:  /* .bss: zero word by word. */
    ldr   r0, =__bss_start__
    ldr   r1, =__bss_end__
    movs  r2, #0
3:  cmp   r0, r1
    bhs   4f
    str   r2, [r0], #4
    b     3b
4:  bl    main
    bl    mf_sh_exit             /* r0 = main's return value */
5:  b     5b
    .pool
    .size Reset_Handler, . - Reset_Handler

/* ---- Benchmark markers. The QEMU plugin counts the guest instructions executed from the first
 * instruction of mf_bench_begin up to (not including) the first instruction of mf_bench_end. They are
 * assembly so that their size is fixed and the compiler can neither inline nor merge them. ---- */
    .section .text.mf_bench_begin, "ax", %progbits
    .balign 4
    .globl mf_bench_begin
    .thumb_func
    .type mf_bench_begin, %function
mf_bench_begin:
    bx    lr
    .size mf_bench_begin, . - mf_bench_begin

    .section .text.mf_bench_end, "ax", %progbits
    .balign 4
    .globl mf_bench_end
    .thumb_func
    .type mf_bench_end, %function
mf_bench_end:
    bx    lr
    .size mf_bench_end, . - mf_bench_end

/* Per-op profile marker: a model compiled with -DMF_PROFILE calls it before each op and after the last;
 * the plugin (argument mark=) notes the count at its first instruction. Costs 2 instructions a call
 * (bl, bx lr). */
    .section .text.mf_profile_mark, "ax", %progbits
    .balign 4
    .globl mf_profile_mark
    .thumb_func
    .type mf_profile_mark, %function
mf_profile_mark:
    bx    lr
    .size mf_profile_mark, . - mf_profile_mark
