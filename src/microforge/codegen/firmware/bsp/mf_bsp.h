/* microforge board support: everything the DUT firmware (dut/dut.c) needs from a board.
 *
 * A new board is one C file implementing these five functions (plus, if its memory map differs from
 * the MPS2 boards, a linker script that defines FLASH and RAM and includes sections.ld). Everything is
 * polled: the firmware enables no interrupts, so the vector table in startup.S serves every board.
 */
#ifndef MF_BSP_H
#define MF_BSP_H

#include <stdint.h>

/* Clocks, the console UART (115200 baud, 8N1) and the microsecond timer. Called once, first thing. */
void mf_bsp_init(void);

/* Send one byte on the console UART; waits while the transmitter is busy. */
void mf_bsp_putc(char c);

/* Receive one byte from the console UART; waits (forever) until one arrives. */
char mf_bsp_getc(void);

/* Microseconds since mf_bsp_init, wrapping modulo 2^32 (about 71 minutes). Must be cheap and must not
 * miss counter wrap-arounds as long as it is called at least once per wrap period of the hardware
 * counter it reads (each board states that period). */
uint32_t mf_bsp_time_us(void);

/* Stop for good after a fatal error (status != 0) or at the end (status 0). Never returns. */
void mf_bsp_halt(int status) __attribute__((noreturn));

#endif
