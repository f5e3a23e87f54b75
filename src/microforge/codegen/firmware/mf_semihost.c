/* Minimal Arm semihosting: the two calls the firmware needs, through `bkpt 0xab` (Thumb, M-profile). */
#include "mf_semihost.h"

#define MF_SYS_WRITE0 0x04
#define MF_SYS_EXIT 0x18
#define MF_ADP_STOPPED_APPLICATION_EXIT 0x20026
#define MF_ADP_STOPPED_RUNTIME_ERROR 0x20023

static int mf_semihost_call(int op, const void *arg) {
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ __volatile__("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void mf_sh_write0(const char *text) {
    (void)mf_semihost_call(MF_SYS_WRITE0, text);
}

void mf_sh_exit(int status) {
    /* On AArch32 SYS_EXIT takes the reason code itself in r1 (not a parameter block). */
    unsigned int reason = status == 0 ? MF_ADP_STOPPED_APPLICATION_EXIT : MF_ADP_STOPPED_RUNTIME_ERROR;
    (void)mf_semihost_call(MF_SYS_EXIT, (const void *)reason);
    for (;;) {
    }
}
