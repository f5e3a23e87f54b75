"""The emulated Cortex-M targets (qemu-m4 on mps2-an386, qemu-m7 on mps2-an500) with hand-written stand-in
model folders that follow the generated model.h contract: outputs, exact instruction counts, sizes, stack,
timeouts and missing tools."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from microforge.codegen.targets.qemu import BOARDS, read_interface, run_on_qemu
from microforge.errors import InputError, TargetError

TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-nm", "arm-none-eabi-size", "qemu-system-arm", "gcc")
needs_qemu = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                                reason="needs gcc-arm-none-eabi, libnewlib-arm-none-eabi, qemu-system-arm and gcc")

HEADER = """#ifndef MF_MODEL_H
#define MF_MODEL_H
#include <stdint.h>
#define MF_ARENA_BYTES 64
#define MF_NUM_INPUTS 2
#define MF_INPUT0_BYTES 16
#define MF_INPUT1_BYTES 4
#define MF_NUM_OUTPUTS 2
#define MF_OUTPUT0_BYTES 16
#define MF_OUTPUT1_BYTES (4u)
void mf_init(void);
void mf_invoke(void);
void *mf_input(int index);
void *mf_output(int index);
#endif
"""

# A stand-in model: out0[i] = sat8(in0[i] * 3 + table[i] - in1[1 + i % 3]);
# out1[j] = in1[j] ^ 0x55 ^ big[in1[j]] (big = 1, 0, 0, ...). Then a busy loop of exactly
# 2 * (1 + (uint8)in1[0] * 8) instructions (subs + bne per iteration), and a 1000-byte local buffer that is
# written through (stack use). EXTRA is spliced into mf_invoke.
MODEL_C = """#include <string.h>
#include "model.h"
static uint8_t mf_arena[MF_ARENA_BYTES] __attribute__((aligned(16)));
static const int8_t mf_table[16] = {1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 11, -12, 13, -14, 15, -16};
static const uint8_t mf_big[256] = {1};
void mf_init(void) { memset(mf_arena, 0, sizeof mf_arena); }
void *mf_input(int index) { return index == 0 ? mf_arena : index == 1 ? mf_arena + 16 : 0; }
void *mf_output(int index) { return index == 0 ? mf_arena + 32 : index == 1 ? mf_arena + 48 : 0; }
static void __attribute__((noinline)) mf_touch(volatile uint8_t *buf, int n) {
    int i;
    for (i = 0; i < n; ++i) buf[i] = (uint8_t)i;
}
void mf_invoke(void) {
    const int8_t *in0 = (const int8_t *)mf_arena;
    const int8_t *in1 = (const int8_t *)(mf_arena + 16);
    int8_t *out0 = (int8_t *)(mf_arena + 32);
    uint8_t *out1 = mf_arena + 48;
    volatile uint8_t buf[1000];
    uint32_t n = 1u + (uint32_t)(uint8_t)in1[0] * 8u;
    int i;
    for (i = 0; i < 16; ++i) {
        int v = in0[i] * 3 + mf_table[i] - in1[1 + i % 3];
        out0[i] = (int8_t)(v > 127 ? 127 : v < -128 ? -128 : v);
    }
    for (i = 0; i < 4; ++i) out1[i] = (uint8_t)((uint8_t)in1[i] ^ 0x55u ^ mf_big[(uint8_t)in1[i]]);
    mf_touch(buf, (int)sizeof buf);
    __asm__ __volatile__("1: subs %0, %0, #1\\n\\tbne 1b" : "+r"(n) : : "cc");
    EXTRA
}
"""


def make_model(folder: Path, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.h").write_text(HEADER)
    (folder / "model.c").write_text(MODEL_C.replace("EXTRA", extra))
    return folder


def expected(sample: bytes) -> bytes:
    in0 = np.frombuffer(sample[:16], np.int8).astype(np.int32)
    in1 = np.frombuffer(sample[16:20], np.int8).astype(np.int32)
    table = np.array([1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 11, -12, 13, -14, 15, -16])
    out0 = np.clip(in0 * 3 + table - in1[1 + np.arange(16) % 3], -128, 127).astype(np.int8).tobytes()
    out1 = bytes(b ^ 0x55 ^ (b == 0) for b in sample[16:20])
    return out0 + out1


def samples(count: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, 20, dtype=np.int8).tobytes() for _ in range(count)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("standin") / "model")


def test_interface_is_read_from_model_h(model_dir):
    assert read_interface(model_dir) == ([16, 4], [16, 4])


@needs_qemu
@pytest.mark.parametrize("board", sorted(BOARDS))
def test_outputs_counts_sizes_and_stack(model_dir, board):
    data = samples(5)
    # Loop lengths: in1[0] picks 1 + k * 8 iterations of a 2-instruction loop.
    data[0] = data[0][:16] + bytes([0]) + data[0][17:]
    data[1] = data[0][:16] + bytes([100]) + data[0][17:]  # in1[0] only sets the loop length
    result = run_on_qemu(model_dir, board, data)
    assert result.board == board
    assert result.outputs == [expected(s) for s in data]
    assert [len(t) for t in result.output_tensors[0]] == [16, 4]
    assert len(result.instructions) == len(data)
    # Exact: the only difference between samples 0 and 1 is 800 more iterations of `subs; bne`.
    assert result.instructions[1] - result.instructions[0] == 2 * 800
    # Plausible: 16 saturating MACs, 4 xors and a 1000-iteration store loop take some thousands.
    assert 4000 < result.instructions[0] < 20000
    assert result.init_instructions is not None and 10 < result.init_instructions < 200
    # Deterministic: the same build, run again, counts the same.
    again = run_on_qemu(model_dir, board, data[:2])
    assert again.instructions == result.instructions[:2]
    assert again.outputs == result.outputs[:2]
    # Sizes: whole firmware without the compiled-in samples.
    assert result.flash_bytes == result.text + result.rodata + result.data
    assert result.ram_bytes == result.data + result.bss
    assert result.bss >= 64 and result.rodata >= 256 + 16
    model = result.breakdown["model"]
    assert model["bss"] == 64 and model["rodata"] >= 256 + 16 and model["text"] > 0
    assert result.model_flash_bytes < result.flash_bytes
    # Stack: the 1000-byte local buffer plus a few saved registers.
    assert 1000 <= result.stack_bytes < 1100
    assert result.stack_samples == 4 and result.firmware_runs == 1


@needs_qemu
def test_batches_across_runs_and_insn_mode_agree(model_dir):
    data = samples(5, seed=1)
    whole = run_on_qemu(model_dir, "qemu-m4", data)
    split = run_on_qemu(model_dir, "qemu-m4", [(s[:16], s[16:]) for s in data], max_samples_per_run=2,
                        plugin_mode="insn", stack_samples=1)
    assert split.firmware_runs == 3
    assert split.outputs == whole.outputs == [expected(s) for s in data]
    assert split.instructions == whole.instructions  # per-block and per-instruction counting agree
    assert split.flash_bytes == whole.flash_bytes and split.stack_bytes == whole.stack_bytes


@needs_qemu
def test_without_counting_and_without_samples(model_dir, tmp_path):
    result = run_on_qemu(model_dir, "qemu-m7", [], count_instructions=False, build_dir=tmp_path / "b")
    assert result.outputs == [] and result.instructions == [] and result.init_instructions is None
    assert result.flash_bytes > 0 and (tmp_path / "b" / "fw_0.elf").is_file()


@needs_qemu
def test_hanging_firmware_is_stopped(tmp_path):
    folder = make_model(tmp_path / "hang", extra="for (;;) { __asm__ __volatile__(\"\"); }")
    with pytest.raises(TargetError, match=r"qemu-m4 \(mps2-an386\).*did not finish within 2 s"):
        run_on_qemu(folder, "qemu-m4", samples(1), timeout_s=2)


@needs_qemu
def test_fault_is_reported(tmp_path):
    folder = make_model(tmp_path / "trap", extra="__builtin_trap();")
    with pytest.raises(TargetError, match=r"qemu-m7 \(mps2-an500\).*HardFault"):
        run_on_qemu(folder, "qemu-m7", samples(1), timeout_s=20)


@needs_qemu
def test_compile_errors_are_target_errors(tmp_path):
    folder = make_model(tmp_path / "warn", extra="int unused_variable;")
    with pytest.raises(TargetError, match="compiling model.c failed"):
        run_on_qemu(folder, "qemu-m4", samples(1))


def test_missing_compiler(model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    with pytest.raises(TargetError, match="arm-none-eabi-gcc.*gcc-arm-none-eabi"):
        run_on_qemu(model_dir, "qemu-m4", samples(1))


def test_bad_arguments(model_dir, tmp_path):
    with pytest.raises(TargetError, match="unknown board"):
        run_on_qemu(model_dir, "qemu-m3", [])
    with pytest.raises(InputError, match="sample 0: 3 bytes"):
        run_on_qemu(model_dir, "qemu-m4", [b"abc"])
    with pytest.raises(InputError, match="sample 0 input 1: 5 bytes"):
        run_on_qemu(model_dir, "qemu-m4", [(bytes(16), bytes(5))])
    with pytest.raises(TargetError, match="no model.h"):
        run_on_qemu(tmp_path, "qemu-m4", [])


def test_a_model_too_big_for_the_board_is_refused_before_building(tmp_path):
    import dataclasses

    import microforge
    from conftest import INT8_MODELS
    from microforge.codegen.emit import generate
    from microforge.codegen.targets.qemu import build_firmware, harness_parts

    generated = generate(microforge.load(INT8_MODELS["ad"]), tmp_path / "model", target="cortex-m4")
    assert f"#define MF_CONSTANT_BYTES {generated.constant_bytes} " in (tmp_path / "model" / "model.h").read_text()
    tiny = dataclasses.replace(BOARDS["qemu-m4"], flash_bytes=64 * 1024, ram_bytes=512)
    with pytest.raises(TargetError, match=r"does not fit: its activation arena needs 896 B of RAM, the board has "
                                          r"512 B; its constants need [\d,]+ B of flash, the board has 65,536 B"):
        build_firmware(generated.directory, tiny, tmp_path / "build", harness_parts(1, 1, 0))
    assert not list((tmp_path / "build").glob("*.o"))  # refused before compiling anything
