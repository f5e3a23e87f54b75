/* Board support for the ST NUCLEO-L4R5ZI (STM32L4R5ZI, Cortex-M4F, 2 MiB flash, 640 KiB SRAM).
 *
 * Console: LPUART1 on PG7 (TX) / PG8 (RX), alternate function 8, which the board wires to the ST-LINK
 * virtual COM port (/dev/ttyACM* on the host) per the NUCLEO-144 user manual (UM2179). 115200 8N1.
 * Timer:   TIM2, a 32-bit general-purpose timer, prescaled to tick once per microsecond, so its counter
 *          is the timestamp itself and wraps after 2^32 us (71.6 minutes), like the protocol's value.
 * Clock:   HSI16 (16 MHz) by default: no PLL and no flash wait states, nothing that can go wrong before
 *          the console is up. Define MF_NUCLEO_SYSCLK_120MHZ for the 120 MHz (range 1 boost) setting
 *          the MLPerf Tiny reference results were measured at.
 *
 * Register addresses and bit positions: STM32L4+ reference manual RM0432 (memory map, RCC, PWR, FLASH,
 * GPIO, LPUART, TIM2 chapters). No vendor headers are needed.
 */
#include "mf_bsp.h"

#define MF_REG(addr) (*(volatile uint32_t *)(addr))

/* RCC (reset and clock control) at 0x40021000 */
#define MF_RCC_BASE 0x40021000u
#define MF_RCC_CR MF_REG(MF_RCC_BASE + 0x00u)
#define MF_RCC_CFGR MF_REG(MF_RCC_BASE + 0x08u)
#define MF_RCC_PLLCFGR MF_REG(MF_RCC_BASE + 0x0Cu)
#define MF_RCC_AHB2ENR MF_REG(MF_RCC_BASE + 0x4Cu)
#define MF_RCC_APB1ENR1 MF_REG(MF_RCC_BASE + 0x58u)
#define MF_RCC_APB1ENR2 MF_REG(MF_RCC_BASE + 0x5Cu)
#define MF_RCC_CCIPR MF_REG(MF_RCC_BASE + 0x88u)
#define MF_RCC_CR_HSION (1u << 8)
#define MF_RCC_CR_HSIRDY (1u << 10)
#define MF_RCC_CR_PLLON (1u << 24)
#define MF_RCC_CR_PLLRDY (1u << 25)
#define MF_RCC_CFGR_SW_MASK (3u << 0)
#define MF_RCC_CFGR_SW_HSI16 (1u << 0)
#define MF_RCC_CFGR_SW_PLL (3u << 0)
#define MF_RCC_CFGR_SWS_MASK (3u << 2)
#define MF_RCC_CFGR_SWS_HSI16 (1u << 2)
#define MF_RCC_CFGR_SWS_PLL (3u << 2)
#define MF_RCC_CFGR_HPRE_MASK (0xFu << 4)
#define MF_RCC_CFGR_HPRE_DIV2 (0x8u << 4)
#define MF_RCC_AHB2ENR_GPIOGEN (1u << 6)
#define MF_RCC_APB1ENR1_TIM2EN (1u << 0)
#define MF_RCC_APB1ENR1_PWREN (1u << 28)
#define MF_RCC_APB1ENR2_LPUART1EN (1u << 0)
#define MF_RCC_CCIPR_LPUART1SEL_MASK (3u << 10)
#define MF_RCC_CCIPR_LPUART1SEL_HSI16 (2u << 10)

/* PWR at 0x40007000: PG[15:2] sit in the VDDIO2 domain, which is isolated until IOSV is set. */
#define MF_PWR_BASE 0x40007000u
#define MF_PWR_CR2 MF_REG(MF_PWR_BASE + 0x04u)
#define MF_PWR_SR2 MF_REG(MF_PWR_BASE + 0x14u)
#define MF_PWR_CR5 MF_REG(MF_PWR_BASE + 0x80u)
#define MF_PWR_CR2_IOSV (1u << 9)
#define MF_PWR_SR2_VOSF (1u << 10)
#define MF_PWR_CR5_R1MODE (1u << 8)

/* FLASH interface at 0x40022000 */
#define MF_FLASH_ACR MF_REG(0x40022000u)
#define MF_FLASH_ACR_LATENCY_MASK 0xFu
#define MF_FLASH_ACR_PRFTEN (1u << 8)
#define MF_FLASH_ACR_ICEN (1u << 9)
#define MF_FLASH_ACR_DCEN (1u << 10)

/* GPIOG at 0x48001800 */
#define MF_GPIOG_BASE 0x48001800u
#define MF_GPIOG_MODER MF_REG(MF_GPIOG_BASE + 0x00u)
#define MF_GPIOG_AFRL MF_REG(MF_GPIOG_BASE + 0x20u)
#define MF_GPIOG_AFRH MF_REG(MF_GPIOG_BASE + 0x24u)
#define MF_GPIO_MODE_AF 2u
#define MF_LPUART1_AF 8u

/* LPUART1 at 0x40008000 */
#define MF_LPUART1_BASE 0x40008000u
#define MF_LPUART1_CR1 MF_REG(MF_LPUART1_BASE + 0x00u)
#define MF_LPUART1_BRR MF_REG(MF_LPUART1_BASE + 0x0Cu)
#define MF_LPUART1_ISR MF_REG(MF_LPUART1_BASE + 0x1Cu)
#define MF_LPUART1_ICR MF_REG(MF_LPUART1_BASE + 0x20u)
#define MF_LPUART1_RDR MF_REG(MF_LPUART1_BASE + 0x24u)
#define MF_LPUART1_TDR MF_REG(MF_LPUART1_BASE + 0x28u)
#define MF_LPUART_CR1_UE (1u << 0)
#define MF_LPUART_CR1_RE (1u << 2)
#define MF_LPUART_CR1_TE (1u << 3)
#define MF_LPUART_ISR_ORE (1u << 3)
#define MF_LPUART_ISR_RXNE (1u << 5)
#define MF_LPUART_ISR_TXE (1u << 7)
#define MF_LPUART_ICR_ORECF (1u << 3)

/* TIM2 at 0x40000000 */
#define MF_TIM2_BASE 0x40000000u
#define MF_TIM2_CR1 MF_REG(MF_TIM2_BASE + 0x00u)
#define MF_TIM2_EGR MF_REG(MF_TIM2_BASE + 0x14u)
#define MF_TIM2_CNT MF_REG(MF_TIM2_BASE + 0x24u)
#define MF_TIM2_PSC MF_REG(MF_TIM2_BASE + 0x28u)
#define MF_TIM2_ARR MF_REG(MF_TIM2_BASE + 0x2Cu)
#define MF_TIM_CR1_CEN (1u << 0)
#define MF_TIM_EGR_UG (1u << 0)

#define MF_HSI16_HZ 16000000u
#define MF_BAUD 115200u

#ifdef MF_NUCLEO_SYSCLK_120MHZ
#define MF_SYSCLK_HZ 120000000u
#else
#define MF_SYSCLK_HZ MF_HSI16_HZ
#endif

static void mf_start_hsi16(void) {
    MF_RCC_CR |= MF_RCC_CR_HSION;
    while (!(MF_RCC_CR & MF_RCC_CR_HSIRDY)) {
    }
}

#ifdef MF_NUCLEO_SYSCLK_120MHZ
/* A few microseconds at any clock up to 120 MHz: the AHB prescaler must stay at /2 for at least 1 us
 * after switching to a clock above 80 MHz (RM0432, "Range 1 boost mode"). */
static void mf_spin(uint32_t loops) {
    while (loops-- != 0u) {
        __asm__ __volatile__("nop");
    }
}

/* SYSCLK = HSI16 / M(2) * N(30) / R(2) = 120 MHz, which needs range 1 boost and 5 flash wait states. */
static void mf_start_120mhz(void) {
    MF_PWR_CR5 &= ~MF_PWR_CR5_R1MODE; /* 0 selects boost mode */
    while (MF_PWR_SR2 & MF_PWR_SR2_VOSF) {
    }
    MF_FLASH_ACR = (MF_FLASH_ACR & ~MF_FLASH_ACR_LATENCY_MASK) | 5u | MF_FLASH_ACR_PRFTEN | MF_FLASH_ACR_ICEN |
                   MF_FLASH_ACR_DCEN;
    while ((MF_FLASH_ACR & MF_FLASH_ACR_LATENCY_MASK) != 5u) {
    }
    MF_RCC_CR &= ~MF_RCC_CR_PLLON;
    while (MF_RCC_CR & MF_RCC_CR_PLLRDY) {
    }
    /* PLLSRC = HSI16 (2 << 0), PLLM = 2 (field M-1 at bit 4), PLLN = 30 (bit 8), PLLR = 2 (0 at bit 25),
     * PLLREN (bit 24) enables the R output that feeds SYSCLK. */
    MF_RCC_PLLCFGR = (2u << 0) | ((2u - 1u) << 4) | (30u << 8) | (0u << 25) | (1u << 24);
    MF_RCC_CR |= MF_RCC_CR_PLLON;
    while (!(MF_RCC_CR & MF_RCC_CR_PLLRDY)) {
    }
    MF_RCC_CFGR = (MF_RCC_CFGR & ~MF_RCC_CFGR_HPRE_MASK) | MF_RCC_CFGR_HPRE_DIV2;
    MF_RCC_CFGR = (MF_RCC_CFGR & ~MF_RCC_CFGR_SW_MASK) | MF_RCC_CFGR_SW_PLL;
    while ((MF_RCC_CFGR & MF_RCC_CFGR_SWS_MASK) != MF_RCC_CFGR_SWS_PLL) {
    }
    mf_spin(200u);
    MF_RCC_CFGR &= ~MF_RCC_CFGR_HPRE_MASK;
}
#endif

void mf_bsp_init(void) {
    MF_RCC_APB1ENR1 |= MF_RCC_APB1ENR1_PWREN | MF_RCC_APB1ENR1_TIM2EN;
    (void)MF_RCC_APB1ENR1; /* read back: the enable takes effect before the first PWR/TIM2 access */
    mf_start_hsi16();
#ifdef MF_NUCLEO_SYSCLK_120MHZ
    mf_start_120mhz();
#else
    MF_RCC_CFGR = (MF_RCC_CFGR & ~MF_RCC_CFGR_SW_MASK) | MF_RCC_CFGR_SW_HSI16;
    while ((MF_RCC_CFGR & MF_RCC_CFGR_SWS_MASK) != MF_RCC_CFGR_SWS_HSI16) {
    }
#endif

    /* PG7/PG8 -> LPUART1 TX/RX */
    MF_PWR_CR2 |= MF_PWR_CR2_IOSV;
    MF_RCC_AHB2ENR |= MF_RCC_AHB2ENR_GPIOGEN;
    (void)MF_RCC_AHB2ENR;
    MF_GPIOG_MODER = (MF_GPIOG_MODER & ~((3u << (7u * 2u)) | (3u << (8u * 2u)))) |
                     (MF_GPIO_MODE_AF << (7u * 2u)) | (MF_GPIO_MODE_AF << (8u * 2u));
    MF_GPIOG_AFRL = (MF_GPIOG_AFRL & ~(0xFu << 28)) | (MF_LPUART1_AF << 28); /* pin 7: bits 31:28 */
    MF_GPIOG_AFRH = (MF_GPIOG_AFRH & ~0xFu) | MF_LPUART1_AF;                 /* pin 8: bits 3:0 */

    /* LPUART1 clocked from HSI16 whatever SYSCLK is: BRR = 256 * f / baud (RM0432 LPUART baud rate). */
    MF_RCC_CCIPR = (MF_RCC_CCIPR & ~MF_RCC_CCIPR_LPUART1SEL_MASK) | MF_RCC_CCIPR_LPUART1SEL_HSI16;
    MF_RCC_APB1ENR2 |= MF_RCC_APB1ENR2_LPUART1EN;
    (void)MF_RCC_APB1ENR2;
    MF_LPUART1_CR1 = 0u;
    MF_LPUART1_BRR = (uint32_t)(((uint64_t)MF_HSI16_HZ * 256u + MF_BAUD / 2u) / MF_BAUD);
    MF_LPUART1_CR1 = MF_LPUART_CR1_TE | MF_LPUART_CR1_RE | MF_LPUART_CR1_UE;

    /* TIM2: APB1 runs undivided, so the timer clock is SYSCLK; divide it down to 1 MHz. */
    MF_TIM2_CR1 = 0u;
    MF_TIM2_PSC = MF_SYSCLK_HZ / 1000000u - 1u;
    MF_TIM2_ARR = 0xFFFFFFFFu;
    MF_TIM2_EGR = MF_TIM_EGR_UG; /* load the prescaler now rather than at the first overflow */
    MF_TIM2_CNT = 0u;
    MF_TIM2_CR1 = MF_TIM_CR1_CEN;
}

void mf_bsp_putc(char c) {
    while (!(MF_LPUART1_ISR & MF_LPUART_ISR_TXE)) {
    }
    MF_LPUART1_TDR = (uint32_t)(uint8_t)c;
}

char mf_bsp_getc(void) {
    for (;;) {
        uint32_t isr = MF_LPUART1_ISR;
        if (isr & MF_LPUART_ISR_RXNE) {
            return (char)(MF_LPUART1_RDR & 0xFFu);
        }
        /* An overrun (a byte arrived while a command ran) blocks reception until cleared; the lost
         * byte shows up to the host as a malformed or unanswered command. */
        if (isr & MF_LPUART_ISR_ORE) {
            MF_LPUART1_ICR = MF_LPUART_ICR_ORECF;
        }
    }
}

uint32_t mf_bsp_time_us(void) {
    return MF_TIM2_CNT;
}

void mf_bsp_halt(int status) {
    (void)status; /* no host to report to without a debugger: park the core */
    for (;;) {
        __asm__ __volatile__("wfi");
    }
}

/* startup.S calls mf_sh_exit (semihosting on the emulated boards) should main ever return; without a
 * debugger attached a semihosting call would fault, so here it simply halts. */
void mf_sh_exit(int status) __attribute__((noreturn));
void mf_sh_exit(int status) {
    mf_bsp_halt(status);
}
