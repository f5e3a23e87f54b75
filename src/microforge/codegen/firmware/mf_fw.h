/* What the Python side generates for each firmware build (mf_fw_config.c and mf_fw_samples.S). */
#ifndef MF_FW_H
#define MF_FW_H

#include <stdint.h>

/* mf_fw_config.c: the model's input and output sizes, from model.h. */
extern const uint32_t mf_fw_num_inputs;
extern const uint32_t mf_fw_input_bytes[];
extern const uint32_t mf_fw_num_outputs;
extern const uint32_t mf_fw_output_bytes[];

/* mf_fw_samples.S (section .mf_inputs): the sample count, then every sample's inputs back to back
 * (input 0, input 1, ... of sample 0, then of sample 1, ...). */
extern const uint32_t mf_fw_num_samples;
extern const uint8_t mf_fw_samples[];

#endif
