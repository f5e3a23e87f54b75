/* microforge DUT firmware: a generated model behind the EEMBC / MLPerf Tiny device-under-test protocol.
 *
 * The host sends ASCII commands terminated by '%' over the console UART; the firmware answers with
 * lines ending in "\r\n": "m-..." for messages and results, "e-[...]" for errors, and always, last,
 * "m-ready". The command set and message texts follow the MLPerf Tiny reference firmware API
 * (mlcommons/tiny, api/internally_implemented.[ch] and api/submitter_implemented.h):
 *
 *   (boot)            m-timestamp-mode-performance, m-lap-us-<us>, m-init-done, m-ready
 *   name%             m-name-dut-[microforge]
 *   profile%          m-profile-[<firmware version>]  m-model-[<model>]
 *                     (+ m-mf-inputs-[<bytes>,...]  m-mf-outputs-[<bytes>,...], a microforge extension)
 *   timestamp%        m-lap-us-<us>
 *   db load N%        m-[Expecting N bytes]
 *   db HEX%           (hex byte pairs; as many commands as needed)  m-load-done once N bytes arrived
 *   db print%         m-buffer-xx-xx-... (8 bytes a line)
 *   infer N W%        m-warmup-start-W, m-warmup-done, m-infer-start-N, m-lap-us-<t0>, m-lap-us-<t1>,
 *                     m-infer-done, m-results-[...]     (N defaults to 1, W to 10, as in the reference)
 *   results%          m-results-[v0,v1,...]   every output element, dequantized, printed "%0.3f"
 *   help%             a summary of the commands
 * microforge extensions:
 *   mf-results%       m-results-hex-[<hex>]   the raw bytes of all outputs in order (bit-exact)
 * and, for a learner image (learn.onchip: model.h defines MF_LEARN), where `infer` predicts the loaded
 * sample's class:
 *   mf-learn L%       m-learn-staged-<n>      stage the loaded sample (exactly one model input) as a new
 *                                             sample of class L; n samples are staged now
 *   mf-learn-run%     m-learn-start, m-lap-us-<t0>, m-lap-us-<t1>, m-learn-done-<steps>
 *                                             learn from the staged samples and replays (every epoch),
 *                                             then keep their share in the replay buffer
 *   (a label outside the classes, a full staging area, a sample of the wrong size, nothing staged:
 *    e-[...])
 * and, for a weight-shared family with its runtime manager (dynamic.onchip: model.h defines MF_DYNAMIC):
 *   mf-request L E P B%  m-request-[<point>,<feasible>,<member>,<mhz>,<latency_us>,<switches>]
 *                        one request of a budget trace: latency budget L us, energy budget E nJ, power
 *                        cap P uW (each "-" for none) under a background load of B per mille (0..999).
 *                        The manager (mf_manager.c) picks the point, the image switches to its width if
 *                        it must, runs the loaded sample, plays the background task (below), reports the
 *                        latency at the point's clock and feeds it back to the manager; <switches>
 *                        counts the requests so far whose point differs from the one before.
 *
 * Commands are at most 80 characters (EE_CMD_SIZE) without the '%'; tokens are separated by spaces.
 * Carriage returns and line feeds are ignored so that the firmware can be driven from a terminal.
 *
 * Deliberate differences from the reference, all on paths the reference handles badly:
 * - An over-long command is rejected with an error instead of being silently truncated.
 * - `db load` above the buffer size, `db` data after all announced bytes have arrived, `infer`
 *   without exactly the model's input bytes loaded, and `results` before any inference answer with
 *   "e-[...]" (hex digits beyond the announced size within the final chunk are ignored, as there).
 * - `results` prints every output element for every model. (The reference AD firmware prints a
 *   single anomaly score computed from its input and output instead; a host can compute that score
 *   from these values.)
 * - The inputs are copied from the db buffer into the model before every inference (warm-up and
 *   timed): the memory planner may reuse an input's bytes once it has been read, so repeated
 *   inferences would otherwise run on clobbered data. The copy (a memcpy of the input bytes) is inside
 *   the timed window.
 * - The two m-lap-us timestamps are taken right before and after the timed loop and printed together
 *   afterwards, so the UART transfer of the first one is not part of the measurement.
 */
#include <stdint.h>
#include <string.h>

#include "mf_bsp.h"
#include "mf_dut.h"
#include "model.h"
#if defined(MF_DYNAMIC)
#include "mf_manager.h" /* the family's runtime manager, beside model.c (dynamic.onchip) */
#endif

#define MF_DUT_CMD_SIZE 80u /* EE_CMD_SIZE of the reference */
#define MF_DUT_MAX_TOKENS 5u
#define MF_DUT_FW_VERSION "ULPMark for tinyML Firmware V0.0.1" /* EE_FW_VERSION of the reference */
#define MF_DUT_VENDOR "microforge"
#define MF_DUT_DEFAULT_WARMUP 10u

static char mf_cmd[MF_DUT_CMD_SIZE + 1u];
static uint32_t mf_cmd_len;
static int mf_cmd_overflow;

static uint32_t mf_db_expected; /* announced by `db load` */
static uint32_t mf_db_received;
static int mf_have_results;

/* ---- Output ---------------------------------------------------------------------------------- */

static void mf_puts(const char *text) {
    while (*text != '\0') {
        mf_bsp_putc(*text++);
    }
}

static void mf_end_line(void) {
    mf_puts("\r\n");
}

static void mf_put_u64(uint64_t v) {
    char digits[20];
    int n = 0;
    do {
        digits[n++] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v != 0u);
    while (n > 0) {
        mf_bsp_putc(digits[--n]);
    }
}

static void mf_put_u32(uint32_t v) {
    mf_put_u64(v);
}

static void mf_put_hex_byte(uint8_t b) {
    static const char hex[] = "0123456789abcdef";
    mf_bsp_putc(hex[b >> 4]);
    mf_bsp_putc(hex[b & 0xFu]);
}

/* `v` as printf("%0.3f") shows it: sign, integer part, three rounded decimals. Magnitudes beyond what
 * 64 bits of thousandths hold (about 1.8e16) print as inf; dequantized outputs never get near. */
static void mf_put_fixed3(double v) {
    uint64_t thousandths;
    if (v != v) {
        mf_puts("nan");
        return;
    }
    if (v < 0.0) {
        mf_bsp_putc('-');
        v = -v;
    }
    if (v >= 1.8e16) {
        mf_puts("inf");
        return;
    }
    thousandths = (uint64_t)(v * 1000.0 + 0.5);
    mf_put_u64(thousandths / 1000u);
    mf_bsp_putc('.');
    mf_bsp_putc((char)('0' + (int)(thousandths / 100u % 10u)));
    mf_bsp_putc((char)('0' + (int)(thousandths / 10u % 10u)));
    mf_bsp_putc((char)('0' + (int)(thousandths % 10u)));
}

static void mf_error(const char *text) {
    mf_puts("e-[");
    mf_puts(text);
    mf_puts("]\r\n");
}

static void mf_lap(uint32_t us) {
    mf_puts("m-lap-us-");
    mf_put_u32(us);
    mf_end_line();
}

/* "<label>a,b,c]" with the byte sizes of `count` tensors. */
static void mf_put_size_list(const char *label, uint32_t count, uint32_t (*size_of)(uint32_t)) {
    uint32_t i;
    mf_puts(label);
    for (i = 0; i < count; ++i) {
        if (i != 0u) {
            mf_bsp_putc(',');
        }
        mf_put_u32(size_of(i));
    }
    mf_puts("]\r\n");
}

static uint32_t mf_input_size(uint32_t i) {
    return mf_dut_input_bytes[i];
}

static uint32_t mf_output_size(uint32_t i) {
    return mf_dut_outputs[i].bytes;
}

/* ---- Parsing ---------------------------------------------------------------------------------- */

static int mf_equal(const char *a, const char *b) {
    return strcmp(a, b) == 0;
}

/* A decimal number without sign, at most 2^32 - 1. Returns 0 on anything else. */
static int mf_parse_u32(const char *text, uint32_t *value) {
    uint32_t v = 0;
    if (text == 0 || *text == '\0') {
        return 0;
    }
    for (; *text != '\0'; ++text) {
        uint32_t digit = (uint32_t)(*text - '0');
        if (digit > 9u || v > (0xFFFFFFFFu - digit) / 10u) {
            return 0;
        }
        v = v * 10u + digit;
    }
    *value = v;
    return 1;
}

static int mf_hex_value(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Split `line` in place at spaces; returns the number of tokens (extra tokens are ignored). */
static uint32_t mf_tokenize(char *line, char *tokens[MF_DUT_MAX_TOKENS]) {
    uint32_t count = 0;
    while (*line != '\0' && count < MF_DUT_MAX_TOKENS) {
        while (*line == ' ') {
            *line++ = '\0';
        }
        if (*line == '\0') {
            break;
        }
        tokens[count++] = line;
        while (*line != '\0' && *line != ' ') {
            ++line;
        }
    }
    return count;
}

/* ---- The model -------------------------------------------------------------------------------- */

static void mf_restore_inputs(void) {
    const uint8_t *source = mf_dut_db_buffer;
    uint32_t k;
    for (k = 0; k < mf_dut_num_inputs; ++k) {
        memcpy(mf_input((int)k), source, mf_dut_input_bytes[k]);
        source += mf_dut_input_bytes[k];
    }
#if defined(MF_LEARN)
    {
        static const int32_t predict[2] = {0, 0}; /* the learner's request word: predict input 0 */
        memcpy(mf_input(1), predict, sizeof predict);
    }
#endif
}

static __attribute__((noinline)) void mf_run_inferences(uint32_t count) {
    while (count-- != 0u) {
        mf_restore_inputs();
        mf_invoke();
    }
}

static double mf_output_value(const mf_dut_output_t *out, const uint8_t *element) {
    double raw;
    if (out->is_float) {
        float f;
        memcpy(&f, element, sizeof f);
        return (double)f;
    }
    switch (out->element_bytes) {
    case 1:
        raw = out->is_signed ? (double)(int8_t)element[0] : (double)element[0];
        break;
    case 2: {
        uint16_t u;
        memcpy(&u, element, sizeof u);
        raw = out->is_signed ? (double)(int16_t)u : (double)u;
        break;
    }
    case 4: {
        uint32_t u;
        memcpy(&u, element, sizeof u);
        raw = out->is_signed ? (double)(int32_t)u : (double)u;
        break;
    }
    default: {
        uint64_t u;
        memcpy(&u, element, sizeof u);
        raw = out->is_signed ? (double)(int64_t)u : (double)u;
        break;
    }
    }
    if (out->quantized) {
        /* As the reference's DequantizeInt8ToFloat: (q - zero_point) * scale, in float. */
        return (double)((float)(raw - (double)out->zero_point) * out->scale);
    }
    return raw;
}

static void mf_print_results(void) {
    uint32_t k, i;
    int first = 1;
    mf_puts("m-results-[");
    for (k = 0; k < mf_dut_num_outputs; ++k) {
        const mf_dut_output_t *out = &mf_dut_outputs[k];
        const uint8_t *data = (const uint8_t *)mf_output((int)k);
        for (i = 0; i + out->element_bytes <= out->bytes; i += out->element_bytes) {
            if (!first) {
                mf_bsp_putc(',');
            }
            first = 0;
            mf_put_fixed3(mf_output_value(out, data + i));
        }
    }
    mf_puts("]\r\n");
}

static void mf_print_results_hex(void) {
    uint32_t k, i;
    mf_puts("m-results-hex-[");
    for (k = 0; k < mf_dut_num_outputs; ++k) {
        const uint8_t *data = (const uint8_t *)mf_output((int)k);
        for (i = 0; i < mf_dut_outputs[k].bytes; ++i) {
            mf_put_hex_byte(data[i]);
        }
    }
    mf_puts("]\r\n");
}

/* ---- Commands --------------------------------------------------------------------------------- */

static void mf_cmd_profile(void) {
    mf_puts("m-profile-[" MF_DUT_FW_VERSION "]\r\nm-model-[");
    mf_puts(mf_dut_model_name);
    mf_puts("]\r\n");
    mf_put_size_list("m-mf-inputs-[", mf_dut_num_inputs, mf_input_size);
    mf_put_size_list("m-mf-outputs-[", mf_dut_num_outputs, mf_output_size);
}

static void mf_cmd_help(void) {
    mf_puts(MF_DUT_FW_VERSION " (" MF_DUT_VENDOR ")\r\n"
            "name           the device's name\r\n"
            "profile        firmware version, model, input and output sizes\r\n"
            "timestamp      the microsecond clock\r\n"
            "db load N      expect N bytes of input\r\n"
            "db HH[HH]*     input bytes as hex, until N have arrived\r\n"
            "db print       the loaded bytes as hex\r\n"
            "infer N [W]    W warm-up inferences (default 10), then N timed ones\r\n"
            "results        the outputs, dequantized\r\n"
            "mf-results     the outputs' raw bytes as hex\r\n"
#if defined(MF_DYNAMIC)
            "mf-request L E P B  one request of a budget trace (us, nJ, uW or -, load per mille)\r\n"
#endif
#if defined(MF_LEARN)
            "mf-learn L     stage the loaded sample as a new sample of class L\r\n"
            "mf-learn-run   learn from the staged samples and the replay buffer\r\n"
#endif
            );
}

static void mf_cmd_db(char *tokens[], uint32_t count) {
    uint32_t i, size;
    const char *hex;
    if (count < 2u) {
        mf_error("Command 'db' requires a subcommand");
        return;
    }
    if (mf_equal(tokens[1], "load")) {
        if (count < 3u) {
            mf_error("Command 'db load' requires the # of bytes");
        } else if (!mf_parse_u32(tokens[2], &size) || size == 0u) {
            mf_error("Command 'db load' must be >0 bytes");
        } else if (size > mf_dut_input_total) {
            mf_puts("e-[Supplied buffer size ");
            mf_put_u32(size);
            mf_puts(" exceeds maximum of ");
            mf_put_u32(mf_dut_input_total);
            mf_puts("]\r\n");
        } else {
            mf_db_expected = size;
            mf_db_received = 0u;
            mf_have_results = 0;
            mf_puts("m-[Expecting ");
            mf_put_u32(size);
            mf_puts(" bytes]\r\n");
        }
        return;
    }
    if (mf_equal(tokens[1], "print")) {
        for (i = 0; i < mf_db_received; ++i) {
            mf_puts(i % 8u == 0u ? "m-buffer-" : "-");
            mf_put_hex_byte(mf_dut_db_buffer[i]);
            if (i % 8u == 7u || i + 1u == mf_db_received) {
                mf_end_line();
            }
        }
        return;
    }
    hex = tokens[1];
    if (mf_db_expected == 0u) {
        mf_error("No buffer: send 'db load N' first");
        return;
    }
    if (mf_db_received == mf_db_expected) {
        mf_error("Buffer already full");
        return;
    }
    size = (uint32_t)strlen(hex);
    if (size % 2u != 0u) {
        mf_error("Insufficient number of hex digits");
        return;
    }
    /* Check the whole chunk before storing any of it, so that a rejected chunk can be resent. */
    for (i = 0; i < size; ++i) {
        if (mf_hex_value(hex[i]) < 0) {
            mf_puts("e-[Invalid hex digit '");
            mf_bsp_putc(hex[i]);
            mf_puts("']\r\n");
            return;
        }
    }
    for (i = 0; i < size && mf_db_received < mf_db_expected; i += 2u) {
        mf_dut_db_buffer[mf_db_received++] = (uint8_t)(mf_hex_value(hex[i]) << 4 | mf_hex_value(hex[i + 1u]));
    }
    if (mf_db_received == mf_db_expected) {
        mf_puts("m-load-done\r\n"); /* digits beyond the announced size are ignored, as in the reference */
    }
}

static void mf_cmd_infer(char *tokens[], uint32_t count) {
    uint32_t iterations = 1u, warmup = MF_DUT_DEFAULT_WARMUP, start, stop;
    if (count >= 2u && (!mf_parse_u32(tokens[1], &iterations) || iterations == 0u)) {
        mf_error("Inference iterations must be >0");
        return;
    }
    if (count >= 3u && !mf_parse_u32(tokens[2], &warmup)) {
        mf_error("Inference warmup must be >=0");
        return;
    }
    if (mf_db_received != mf_dut_input_total || mf_db_expected != mf_dut_input_total) {
        mf_puts("e-[Input has ");
        mf_put_u32(mf_db_received);
        mf_puts(" bytes; the model takes ");
        mf_put_u32(mf_dut_input_total);
        mf_puts("]\r\n");
        return;
    }
    mf_puts("m-warmup-start-");
    mf_put_u32(warmup);
    mf_end_line();
    mf_run_inferences(warmup);
    mf_puts("m-warmup-done\r\nm-infer-start-");
    mf_put_u32(iterations);
    mf_end_line();
    start = mf_bsp_time_us();
    mf_run_inferences(iterations);
    stop = mf_bsp_time_us();
    mf_have_results = 1;
    mf_lap(start);
    mf_lap(stop);
    mf_puts("m-infer-done\r\n");
    mf_print_results();
}

#if defined(MF_LEARN)
static uint32_t mf_staged;

static void mf_cmd_learn(char *tokens[], uint32_t count) {
    uint32_t label;
    int32_t status;
    if (count < 2u || !mf_parse_u32(tokens[1], &label) || label >= (uint32_t)MF_LEARN_CLASSES) {
        mf_puts("e-[Command 'mf-learn' needs a label 0..");
        mf_put_u32((uint32_t)MF_LEARN_CLASSES - 1u);
        mf_puts("]\r\n");
        return;
    }
    if (mf_db_received != (uint32_t)MF_LEARN_SAMPLE_BYTES || mf_db_expected != (uint32_t)MF_LEARN_SAMPLE_BYTES) {
        mf_puts("e-[Sample has ");
        mf_put_u32(mf_db_received);
        mf_puts(" bytes; the model takes ");
        mf_put_u32((uint32_t)MF_LEARN_SAMPLE_BYTES);
        mf_puts("]\r\n");
        return;
    }
    status = mf_learn(mf_dut_db_buffer, (int32_t)label);
    if (status == MF_LEARN_FULL) {
        mf_puts("e-[Staging area full: ");
        mf_put_u32((uint32_t)MF_LEARN_MAX_NEW);
        mf_puts(" samples; send 'mf-learn-run' first]\r\n");
    } else if (status != MF_LEARN_OK) {
        mf_error("The learner refused the sample");
    } else {
        mf_staged += 1u;
        mf_puts("m-learn-staged-");
        mf_put_u32(mf_staged);
        mf_end_line();
    }
}

static void mf_cmd_learn_run(void) {
    uint32_t start, stop;
    int32_t steps;
    if (mf_staged == 0u) {
        mf_error("Nothing staged: send samples with 'mf-learn L' first");
        return;
    }
    mf_puts("m-learn-start\r\n");
    start = mf_bsp_time_us();
    steps = mf_learn_batch();
    stop = mf_bsp_time_us();
    mf_staged = 0u;
    mf_have_results = 0;
    if (steps < 0) {
        mf_error("The learning run failed");
        return;
    }
    mf_lap(start);
    mf_lap(stop);
    mf_puts("m-learn-done-");
    mf_put_u32((uint32_t)steps);
    mf_end_line();
}
#endif

#if defined(MF_DYNAMIC)
static uint32_t mf_switches;      /* requests whose point (member or clock) differs from the previous one's */
static int32_t mf_last_point = -1;

/* A budget token: "-" (no budget) or an unsigned integer below 2^31. */
static int mf_parse_budget(const char *text, int32_t *value) {
    uint32_t v;
    if (text[0] == '-' && text[1] == '\0') {
        *value = MF_MANAGER_NO_BUDGET;
        return 1;
    }
    if (!mf_parse_u32(text, &v) || v > 0x7fffffffu) {
        return 0;
    }
    *value = (int32_t)v;
    return 1;
}

/* The background task takes `load` per mille of the core while the inference runs, so the inference ends
 * inference_us * 1000 / (1000 - load) after it began: the firmware spins on its timer for the difference,
 * as if the task had preempted it. Under QEMU -icount one virtual microsecond is 1000 instructions, the
 * emulated core retiring one a nanosecond; at the point's clock of `mhz` with MF_DYNAMIC_CPI_PERMILLE
 * cycles per instruction the same instructions take total_us * MF_DYNAMIC_CPI_PERMILLE / mhz. */
static void mf_cmd_request(char *tokens[], uint32_t count) {
    int32_t latency_budget, energy_budget, power_cap, chosen, point, member, mhz;
    uint32_t load, start, inference, until, total, latency;
    if (count != 5u || !mf_parse_budget(tokens[1], &latency_budget) || !mf_parse_budget(tokens[2], &energy_budget) ||
        !mf_parse_budget(tokens[3], &power_cap) || !mf_parse_u32(tokens[4], &load) || load > 999u) {
        mf_error("Command 'mf-request' needs LATENCY_US ENERGY_NJ POWER_UW (each - for none) LOAD_PERMILLE (0..999)");
        return;
    }
    if (mf_db_received != mf_dut_input_total || mf_db_expected != mf_dut_input_total) {
        mf_error("Load the input first ('db load')");
        return;
    }
    chosen = mf_manager_select(latency_budget, energy_budget, power_cap, MF_MANAGER_NO_BUDGET);
    point = chosen >= 0 ? chosen : -(chosen + 1);
    member = mf_manager_point_member(point);
    mhz = mf_manager_point_mhz(point);
    if (mf_last_point >= 0 && point != mf_last_point) {
        mf_switches += 1u;
    }
    mf_last_point = point;
    if (member != mf_operating_point()) {
        (void)mf_set_operating_point(member);
    }
    start = mf_bsp_time_us();
    mf_run_inferences(1u);
    inference = mf_bsp_time_us() - start;
    until = (uint32_t)(((uint64_t)inference * 1000u) / (1000u - load));
    while ((total = mf_bsp_time_us() - start) < until) {
    }
    latency = (uint32_t)(((uint64_t)total * (uint32_t)MF_DYNAMIC_CPI_PERMILLE) / (uint32_t)mhz);
    mf_manager_observe(point, (int32_t)latency);
    mf_have_results = 1;
    mf_puts("m-request-[");
    mf_put_u32((uint32_t)point);
    mf_bsp_putc(',');
    mf_put_u32(chosen >= 0 ? 1u : 0u);
    mf_bsp_putc(',');
    mf_put_u32((uint32_t)member);
    mf_bsp_putc(',');
    mf_put_u32((uint32_t)mhz);
    mf_bsp_putc(',');
    mf_put_u32(latency);
    mf_bsp_putc(',');
    mf_put_u32(mf_switches);
    mf_puts("]\r\n");
}
#endif

static void mf_dispatch(char *line) {
    char *tokens[MF_DUT_MAX_TOKENS];
    uint32_t count = mf_tokenize(line, tokens);
    if (count == 0u) {
        return; /* an empty command (a bare '%') only asks for m-ready: hosts use it to resynchronise */
    }
    if (mf_equal(tokens[0], "name")) {
        mf_puts("m-name-dut-[" MF_DUT_VENDOR "]\r\n");
    } else if (mf_equal(tokens[0], "timestamp")) {
        mf_lap(mf_bsp_time_us());
    } else if (mf_equal(tokens[0], "profile")) {
        mf_cmd_profile();
    } else if (mf_equal(tokens[0], "help")) {
        mf_cmd_help();
    } else if (mf_equal(tokens[0], "db")) {
        mf_cmd_db(tokens, count);
    } else if (mf_equal(tokens[0], "infer")) {
        mf_cmd_infer(tokens, count);
#if defined(MF_DYNAMIC)
    } else if (mf_equal(tokens[0], "mf-request")) {
        mf_cmd_request(tokens, count);
#endif
#if defined(MF_LEARN)
    } else if (mf_equal(tokens[0], "mf-learn")) {
        mf_cmd_learn(tokens, count);
    } else if (mf_equal(tokens[0], "mf-learn-run")) {
        mf_cmd_learn_run();
#endif
    } else if (mf_equal(tokens[0], "results") || mf_equal(tokens[0], "mf-results")) {
        if (!mf_have_results) {
            mf_error("No results: run 'infer' after loading the input");
        } else if (tokens[0][0] == 'r') {
            mf_print_results();
        } else {
            mf_print_results_hex();
        }
    } else {
        mf_puts("e-[Unknown command: ");
        mf_puts(tokens[0]);
        mf_puts("]\r\n");
    }
}

static void mf_receive(char c) {
    if (c == '%') {
        if (mf_cmd_overflow) {
            mf_error("Command longer than 80 characters");
        } else {
            mf_cmd[mf_cmd_len] = '\0';
            mf_dispatch(mf_cmd);
        }
        mf_cmd_len = 0u;
        mf_cmd_overflow = 0;
        mf_puts("m-ready\r\n");
    } else if (c == '\r' || c == '\n') {
        /* ignored: terminals send them, the protocol does not use them */
    } else if (mf_cmd_len < MF_DUT_CMD_SIZE) {
        mf_cmd[mf_cmd_len++] = c;
    } else {
        mf_cmd_overflow = 1;
    }
}

/* Every exception but reset lands in mf_fault_handler (startup.S): say so on the console and stop.
 * The handler is a bare trampoline so that the stack pointer it passes on is the exception frame
 * itself (r0-r3, r12, lr, pc, xPSR; only MSP is ever used), not a frame the compiler has pushed to. */
static __attribute__((noreturn, used)) void mf_fault_report(const uint32_t *frame) {
    uint32_t ipsr, pc = frame[6];
    int shift;
    __asm__ __volatile__("mrs %0, ipsr" : "=r"(ipsr));
    mf_puts("e-[Fault: exception ");
    mf_put_u32(ipsr & 0x1FFu);
    mf_puts(" at pc=0x");
    for (shift = 24; shift >= 0; shift -= 8) {
        mf_put_hex_byte((uint8_t)(pc >> shift));
    }
    mf_puts("]\r\n");
    mf_bsp_halt(1);
}

void mf_fault_handler(void) __attribute__((naked));
void mf_fault_handler(void) {
    __asm__ __volatile__("mrs r0, msp\n\tb mf_fault_report");
}

int main(void) {
    mf_bsp_init();
    mf_init();
    mf_puts("m-timestamp-mode-performance\r\n");
    mf_lap(mf_bsp_time_us());
    mf_puts("m-init-done\r\nm-ready\r\n");
    for (;;) {
        mf_receive(mf_bsp_getc());
    }
}
