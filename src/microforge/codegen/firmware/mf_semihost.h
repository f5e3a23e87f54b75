/* Minimal Arm semihosting for the microforge firmware (no newlib stdio). */
#ifndef MF_SEMIHOST_H
#define MF_SEMIHOST_H

/* Write a NUL-terminated string to the host console (SYS_WRITE0). */
void mf_sh_write0(const char *text);
/* Stop the emulator: status 0 reports success (ADP_Stopped_ApplicationExit), anything else a run-time
 * error, which QEMU turns into exit status 1. Never returns. */
void mf_sh_exit(int status) __attribute__((noreturn));

#endif
