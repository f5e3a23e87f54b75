/* Board support for the MPS2 FPGA images QEMU emulates: mps2-an386 (Cortex-M4) and mps2-an500
 * (Cortex-M7). Both share the AN385 peripheral map (QEMU hw/arm/mps2.c; Arm AN385/AN386/AN500):
 *
 *   UART0  CMSDK APB UART  at 0x40004000  (QEMU's first -serial / serial_hd(0))
 *   TIMER0 CMSDK APB timer at 0x40000000
 *
 * both clocked by the 25 MHz system clock (SYSCLK_FRQ in QEMU). Register layouts from the Cortex-M
 * System Design Kit TRM (Arm DDI 0479) as modelled by QEMU's cmsdk-apb-uart.c and cmsdk-apb-timer.c.
 *
 * Under `qemu-system-arm -icount shift=0` QEMU's virtual clock advances 1 ns per executed guest
 * instruction, and the timer counts 25 MHz ticks of that virtual clock: one tick is 40 instructions
 * and one microsecond is 1000 instructions, whatever the host's speed.
 */
#include "mf_bsp.h"
#include "mf_semihost.h"

#define MF_MPS2_SYSCLK_HZ 25000000u
#define MF_MPS2_TICKS_PER_US (MF_MPS2_SYSCLK_HZ / 1000000u)
#define MF_MPS2_BAUD 115200u

#define MF_REG(addr) (*(volatile uint32_t *)(addr))

/* CMSDK APB UART0 */
#define MF_UART0_BASE 0x40004000u
#define MF_UART_DATA MF_REG(MF_UART0_BASE + 0x00u)
#define MF_UART_STATE MF_REG(MF_UART0_BASE + 0x04u)
#define MF_UART_CTRL MF_REG(MF_UART0_BASE + 0x08u)
#define MF_UART_BAUDDIV MF_REG(MF_UART0_BASE + 0x10u)
#define MF_UART_STATE_TXFULL (1u << 0)
#define MF_UART_STATE_RXFULL (1u << 1)
#define MF_UART_STATE_OVERRUNS (3u << 2) /* TX and RX overrun, write 1 to clear */
#define MF_UART_CTRL_TXEN (1u << 0)
#define MF_UART_CTRL_RXEN (1u << 1)

/* CMSDK APB TIMER0: a 32-bit down-counter that reloads from RELOAD when it reaches zero. */
#define MF_TIMER0_BASE 0x40000000u
#define MF_TIMER_CTRL MF_REG(MF_TIMER0_BASE + 0x00u)
#define MF_TIMER_VALUE MF_REG(MF_TIMER0_BASE + 0x04u)
#define MF_TIMER_RELOAD MF_REG(MF_TIMER0_BASE + 0x08u)
#define MF_TIMER_CTRL_ENABLE (1u << 0)

/* The hardware counter wraps every 2^32 / 25 MHz = 171.8 s; mf_bsp_time_us folds the ticks elapsed
 * since its previous call into a microsecond count, carrying the sub-microsecond remainder, so it only
 * needs calling once per 171 s. Only 32-bit arithmetic: the Cortex-M divides those in hardware, keeping
 * the cost of a timestamp to a few instructions. */
static uint32_t mf_last_ticks;
static uint32_t mf_us;
static uint32_t mf_leftover_ticks;

void mf_bsp_init(void) {
    MF_UART_CTRL = 0u;
    /* QEMU ignores a divider below 16; 25 MHz / 217 = 115207 baud. */
    MF_UART_BAUDDIV = MF_MPS2_SYSCLK_HZ / MF_MPS2_BAUD;
    MF_UART_STATE = MF_UART_STATE_OVERRUNS;
    MF_UART_CTRL = MF_UART_CTRL_TXEN | MF_UART_CTRL_RXEN;

    MF_TIMER_CTRL = 0u;
    MF_TIMER_RELOAD = 0xFFFFFFFFu;
    MF_TIMER_VALUE = 0xFFFFFFFFu;
    MF_TIMER_CTRL = MF_TIMER_CTRL_ENABLE;
    mf_last_ticks = MF_TIMER_VALUE;
    mf_us = 0u;
    mf_leftover_ticks = 0u;
}

void mf_bsp_putc(char c) {
    while (MF_UART_STATE & MF_UART_STATE_TXFULL) {
    }
    MF_UART_DATA = (uint32_t)(uint8_t)c;
}

char mf_bsp_getc(void) {
    while (!(MF_UART_STATE & MF_UART_STATE_RXFULL)) {
    }
    return (char)(MF_UART_DATA & 0xFFu);
}

uint32_t mf_bsp_time_us(void) {
    uint32_t now = MF_TIMER_VALUE;
    uint32_t ticks = (mf_last_ticks - now) + mf_leftover_ticks; /* down-counter: elapsed = last - now */
    mf_last_ticks = now;
    mf_us += ticks / MF_MPS2_TICKS_PER_US;
    mf_leftover_ticks = ticks % MF_MPS2_TICKS_PER_US;
    return mf_us;
}

void mf_bsp_halt(int status) {
    /* Semihosting SYS_EXIT ends QEMU, so the host sees the connection close instead of a silent hang. */
    mf_sh_exit(status);
}
