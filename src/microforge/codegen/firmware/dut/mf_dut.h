/* What the Python side generates for each DUT firmware build (mf_dut_config.c), from model.h. */
#ifndef MF_DUT_H
#define MF_DUT_H

#include <stdint.h>

/* How to print one output tensor's elements as numbers for `results%`. */
typedef struct {
    uint32_t bytes;        /* MF_OUTPUTi_BYTES */
    uint8_t element_bytes; /* sizeof(MF_OUTPUTi_TYPE) */
    uint8_t is_float;      /* MF_OUTPUTi_TYPE is float */
    uint8_t is_signed;     /* MF_OUTPUTi_TYPE is a signed integer */
    uint8_t quantized;     /* MF_OUTPUTi_SCALE / _ZERO_POINT exist (per-tensor quantization) */
    float scale;
    int32_t zero_point;
} mf_dut_output_t;

extern const uint32_t mf_dut_num_inputs;
extern const uint32_t mf_dut_input_bytes[];
extern const uint32_t mf_dut_num_outputs;
extern const mf_dut_output_t mf_dut_outputs[];

/* The `db` staging buffer: every input back to back, mf_dut_input_total bytes. */
extern uint8_t mf_dut_db_buffer[];
extern const uint32_t mf_dut_input_total;

/* Reported by `profile%` as m-model-[...]. */
extern const char mf_dut_model_name[];

#endif
