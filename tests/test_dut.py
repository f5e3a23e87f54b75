"""The EEMBC / MLPerf Tiny DUT protocol: the host client against an in-test device simulator (correct and
misbehaving devices), and the real DUT firmware under QEMU with the AD and KWS models (bit-exact outputs,
lap times against exact instruction counts), a faulting firmware, and the NUCLEO-L4R5ZI build."""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import threading
import time
import tty
from pathlib import Path

import numpy as np
import pytest
from conftest import INT8_MODELS, KWS_SAMPLE

import microforge
from microforge.bench.dut import (
    DEFAULT_CHUNK_BYTES,
    MAX_COMMAND_CHARS,
    DutClient,
    build_dut_firmware,
    open_serial_dut,
    qemu_dut,
)
from microforge.codegen import generate
from microforge.codegen.targets.qemu import run_on_qemu
from microforge.errors import DeviceError, InputError, TargetError

TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-nm", "arm-none-eabi-size", "qemu-system-arm", "gcc")
needs_qemu = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                                reason="needs gcc-arm-none-eabi, libnewlib-arm-none-eabi, qemu-system-arm and gcc")
needs_arm_gcc = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="needs gcc-arm-none-eabi")


# --------------------------------------------------------------------------------------------------
# An in-test device: the protocol of firmware/dut/dut.c in Python, around a toy model
# (output byte i = input byte i xor 0x5a, an int8 tensor with scale 0.5 and zero point 3).


class FakeDut:
    """A serial-port stand-in that answers like the DUT firmware. The line is FIFO and the device
    sequential: each reply becomes readable `delay_s(command)` after the previous reply."""

    SCALE, ZERO_POINT = 0.5, 3

    def __init__(self, input_bytes: int = 40):
        self.input_bytes = input_bytes
        self.timeout = 1.0
        self.commands: list[str] = []
        self._typed = ""
        self._queue: list[tuple[float, bytes]] = []  # (readable from, bytes)
        self._last_release = 0.0
        self._buffer = b""
        self._expected = 0
        self._outputs: bytes | None = None
        self.clock_us = 1000

    # -- the serial-port side

    def write(self, data: bytes) -> int:
        for ch in data.decode("ascii"):
            if ch == "%":
                command, self._typed = self._typed, ""
                self.commands.append(command)
                lines = self.reply(command)
                if lines is not None:
                    release = max(time.monotonic(), self._last_release) + self.delay_s(command)
                    self._last_release = release
                    self._queue.append((release, "".join(f"{line}\r\n" for line in lines).encode()))
            else:
                self._typed += ch
        return len(data)

    def _ready(self) -> bytearray:
        out = bytearray()
        now = time.monotonic()
        while self._queue and self._queue[0][0] <= now:
            out += self._queue.pop(0)[1]
        if out:
            self._queue.insert(0, (0.0, bytes(out)))
        return out

    @property
    def in_waiting(self) -> int:
        return len(self._ready())

    def read(self, size: int = 1) -> bytes:
        if not self._ready():
            time.sleep(min(self.timeout, 0.01))
            if not self._ready():
                return b""
        data = self._queue.pop(0)[1]
        if len(data) > size:
            self._queue.insert(0, (0.0, data[size:]))
        return data[:size]

    # -- the device side

    def delay_s(self, command: str) -> float:
        return 0.0

    def model(self, data: bytes) -> bytes:
        return bytes(b ^ 0x5A for b in data)

    def reply(self, command: str) -> list[str] | None:
        """The reply lines (m-ready appended), or None for silence."""
        return self.answer(command.split()) + ["m-ready"]

    def answer(self, words: list[str]) -> list[str]:
        if not words:
            return []
        head, args = words[0], words[1:]
        if head == "name":
            return ["m-name-dut-[fake]"]
        if head == "profile":
            return ["m-profile-[fake firmware]", "m-model-[toy]", f"m-mf-inputs-[{self.input_bytes}]",
                    f"m-mf-outputs-[{self.input_bytes}]"]
        if head == "timestamp":
            return [f"m-lap-us-{self.clock_us}"]
        if head == "db" and args[:1] == ["load"]:
            self._expected, self._buffer = int(args[1]), b""
            return [f"m-[Expecting {self._expected} bytes]"]
        if head == "db":
            self._buffer += bytes.fromhex(args[0])
            return ["m-load-done"] if len(self._buffer) >= self._expected else []
        if head == "infer":
            count, warmup = int(args[0]), int(args[1])
            self._outputs = self.model(self._buffer[:self.input_bytes])
            start = self.clock_us
            self.clock_us = (self.clock_us + 250 * count) % (1 << 32)
            return [f"m-warmup-start-{warmup}", "m-warmup-done", f"m-infer-start-{count}", f"m-lap-us-{start}",
                    f"m-lap-us-{self.clock_us}", "m-infer-done", self.results_line()]
        if head == "results":
            return [self.results_line()]
        if head == "mf-results":
            return [f"m-results-hex-[{self._outputs.hex()}]"]
        return [f"e-[Unknown command: {head}]"]

    def results_line(self) -> str:
        values = [(v - self.ZERO_POINT) * self.SCALE for v in np.frombuffer(self._outputs, np.int8)]
        return "m-results-[" + ",".join(f"{v:0.3f}" for v in values) + "]"


def toy_input(n: int = 40) -> bytes:
    return np.random.default_rng(7).integers(-128, 128, n, dtype=np.int8).tobytes()


def test_protocol_against_a_correct_device():
    device = FakeDut()
    dut = DutClient(device, timeout_s=2)
    assert dut.name() == "fake"
    profile = dut.profile()
    assert profile["profile"] == "fake firmware" and profile["model"] == "toy" and profile["mf-inputs"] == "40"
    data = toy_input()
    dut.load(data)
    chunks = [c for c in device.commands if c.startswith("db ") and not c.startswith("db load")]
    assert device.commands[2] == "db load 40"
    assert len(chunks) == -(-len(data) // DEFAULT_CHUNK_BYTES)
    assert all(len(c) <= MAX_COMMAND_CHARS for c in device.commands)
    assert bytes.fromhex("".join(c[3:] for c in chunks)) == data
    run = dut.infer(4, warmup=2)
    assert device.commands[-1] == "infer 4 2"
    assert (run.iterations, run.warmup, run.elapsed_us, run.us_per_inference) == (4, 2, 1000, 250.0)
    expected = bytes(b ^ 0x5A for b in data)
    dequantized = (np.frombuffer(expected, np.int8).astype(np.float64) - 3) * 0.5
    assert run.results == pytest.approx(dequantized.tolist())
    assert dut.results() == run.results
    assert dut.results_raw() == expected
    assert dut.timestamp() == 2000


def test_lap_times_wrap_around_32_bits():
    device = FakeDut()
    device.clock_us = (1 << 32) - 100
    dut = DutClient(device, timeout_s=2)
    dut.load(toy_input())
    run = dut.infer(1, 0)
    assert run.start_us == (1 << 32) - 100 and run.end_us == 150 and run.elapsed_us == 250


def test_bad_arguments_are_refused_before_anything_is_sent():
    device = FakeDut()
    dut = DutClient(device, timeout_s=1)
    with pytest.raises(InputError, match="not a DUT command"):
        dut.command("name%")
    with pytest.raises(InputError, match="not a DUT command"):
        dut.command("x" * (MAX_COMMAND_CHARS + 1))
    with pytest.raises(InputError, match="count must be"):
        dut.infer(0)
    with pytest.raises(InputError, match="non-empty"):
        dut.load(b"")
    with pytest.raises(InputError, match="chunk_bytes"):
        DutClient(device, chunk_bytes=39)
    dut.profile()  # now the client knows the device takes 40 bytes
    with pytest.raises(InputError, match="the model on the device takes 40"):
        dut.load(b"\0" * 39)
    assert device.commands == ["profile"]


def test_error_replies_name_the_command_and_the_device_message():
    dut = DutClient(FakeDut(), timeout_s=1)
    with pytest.raises(DeviceError, match=r"'frobnicate'.*e-\[Unknown command: frobnicate\]"):
        dut.command("frobnicate")
    assert dut.name() == "fake"  # still in step afterwards


class SilentOnInfer(FakeDut):
    """Starts the inference, then never finishes: no m-infer-done, no m-ready."""

    def reply(self, command):
        if command.startswith("infer"):
            self._queue.append((time.monotonic(), b"m-warmup-start-0\r\nm-warmup-done\r\n"))
            return None
        return super().reply(command)


def test_a_device_that_stops_answering_raises_within_the_timeout():
    dut = DutClient(SilentOnInfer(), timeout_s=5)
    dut.load(toy_input())
    started = time.monotonic()
    with pytest.raises(DeviceError) as info:
        dut.infer(1, 0, timeout_s=0.3)
    waited = time.monotonic() - started
    assert 0.3 <= waited < 1.5
    message = str(info.value)
    assert "'infer 1 0'" in message and "no 'm-ready' within 0.3 s" in message
    assert "m-warmup-done" in message  # what was last received


class LateOnInfer(FakeDut):
    def delay_s(self, command):
        return 0.6 if command.startswith("infer") else 0.0


def test_after_a_timeout_the_next_command_resynchronises():
    device = LateOnInfer()
    dut = DutClient(device, timeout_s=2)
    dut.load(toy_input())
    with pytest.raises(DeviceError, match="no 'm-ready' within 0.2 s"):
        dut.infer(1, 0, timeout_s=0.2)
    # The late infer reply and its m-ready arrive now; the client must not take them for name's.
    assert dut.name() == "fake"
    assert device.commands[-2:] == ["", "name"]


class Garbled(FakeDut):
    """Replies that are wrong in one way each, chosen by the command."""

    def reply(self, command):
        words = command.split()
        if command == "name":
            return ["m-name-dut-fake", "m-ready"]  # no brackets
        if command == "results":
            return ["m-results-[0.500,abc]", "m-ready"]
        if command == "timestamp":
            self._queue.append((time.monotonic(), bytes(range(1, 10)) * 20))  # binary noise, no line end
            return None
        if words[:2] == ["db", "load"]:
            return [f"m-[Expecting {int(words[2]) + 2} bytes]", "m-ready"]
        if command == "mf-results":
            return ["m-results-hex-[0a0b0]", "m-ready"]  # odd digit count
        return super().reply(command)


def test_garbled_replies_are_reported_clearly():
    dut = DutClient(Garbled(), timeout_s=0.3)
    with pytest.raises(DeviceError, match=r"'name'.*malformed reply, no 'm-name-dut-\[...\]'"):
        dut.name()
    with pytest.raises(DeviceError, match="malformed results"):
        dut.results()
    with pytest.raises(DeviceError, match="device expects 42 bytes, not 40"):
        dut.load(toy_input())
    with pytest.raises(DeviceError, match="malformed hex"):
        dut.results_raw()
    with pytest.raises(DeviceError, match=r"'timestamp'.*no 'm-ready' within 0.3 s.*\\x01\\x02"):
        dut.timestamp()


class CountsWrong(FakeDut):
    """Says m-load-done one chunk early on 40-byte loads, and returns one output byte too many."""

    def answer(self, words):
        if words[:1] == ["db"] and words[1:2] != ["load"]:
            self._buffer += bytes.fromhex(words[1])
            early = 8 if self._expected == 40 else 0
            return ["m-load-done"] if len(self._buffer) >= self._expected - early else []
        if words == ["mf-results"]:
            return [f"m-results-hex-[{self._outputs.hex()}00]"]
        return super().answer(words)


def test_wrong_byte_counts_are_errors():
    dut = DutClient(CountsWrong(), timeout_s=1, chunk_bytes=8)
    with pytest.raises(DeviceError, match="finished loading after 32 of 40 bytes"):
        dut.load(toy_input())
    dut.load(toy_input(32))
    dut.infer(1, 0)
    with pytest.raises(DeviceError, match="33 bytes, but the device's outputs take 40"):
        dut.results_raw()
    never_done = DutClient(type("NeverDone", (FakeDut,), {"answer": lambda self, w: [] if w[:1] == ["db"] and
                                                          w[1:2] != ["load"] else FakeDut.answer(self, w)})(),
                           timeout_s=1)
    with pytest.raises(DeviceError, match="did not finish loading after 40 of 40 bytes"):
        never_done.load(toy_input())


def test_open_serial_dut_over_a_pseudo_terminal():
    """pyserial on a real tty: a thread plays the board on the other side of a pty pair, after some
    stale output and a half-typed command (open_serial_dut must resynchronise first)."""
    controller, device_fd = os.openpty()
    tty.setraw(device_fd)
    fake = FakeDut()
    stop = threading.Event()
    os.write(controller, b"m-lap-us-12\r\nm-ready\r\n")  # left over from an earlier session

    def board():
        typed = b"junk"  # a command cut off when the earlier session ended
        while not stop.is_set():
            ready, _, _ = select.select([controller], [], [], 0.05)
            if not ready:
                continue
            typed += os.read(controller, 1024)
            while b"%" in typed:
                command, typed = typed.split(b"%", 1)
                fake.commands.append(command.decode())
                reply = fake.reply(command.decode())
                os.write(controller, "".join(f"{line}\r\n" for line in reply).encode())

    worker = threading.Thread(target=board, daemon=True)
    worker.start()
    try:
        with open_serial_dut(os.ttyname(device_fd), timeout_s=2) as dut:
            assert dut.name() == "fake"
            dut.load(toy_input())
            assert dut.infer(2, 1).elapsed_us == 500
            assert dut.results_raw() == bytes(b ^ 0x5A for b in toy_input())
    finally:
        stop.set()
        worker.join()
        os.close(controller)
        os.close(device_fd)
    assert fake.commands[:2] == ["junk", "name"]  # the resynchronising '%' ended the cut-off command
    with pytest.raises(TargetError, match="cannot open serial port"), open_serial_dut("/nonexistent/tty"):
        pass


# --------------------------------------------------------------------------------------------------
# The firmware under QEMU


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("dut")
    return root


def generated(root: Path, name: str):
    graph = microforge.load(INT8_MODELS[name])
    folder = root / name
    if not folder.exists():
        generate(graph, folder, target="cortex-m4")
    return graph, folder


def dequantize(graph, raw: bytes) -> np.ndarray:
    values, offset = [], 0
    for t in graph.outputs:
        q = np.frombuffer(raw[offset:offset + t.nbytes], t.dtype).astype(np.float32)
        offset += t.nbytes
        values.append((q - np.float32(t.zero_point)) * np.float32(t.scale))
    return np.concatenate(values)


def check_on_qemu(graph, folder: Path, board: str, sample: bytes, build: Path) -> None:
    """The DUT firmware answers the protocol, computes exactly what the reference interpreter does, and
    its lap times are the instruction counts of run_on_qemu's TCG plugin, at 1000 instructions per us."""
    counted = run_on_qemu(folder, board, [sample]).instructions[0]
    x = np.frombuffer(sample, graph.inputs[0].dtype).reshape(graph.inputs[0].shape)
    expected = np.asarray(microforge.run(graph, x)).tobytes()
    input_bytes = len(sample)
    with qemu_dut(folder, board, timeout_s=60, build_dir=build) as dut:
        assert dut.boot_lines[0] == "m-timestamp-mode-performance" and dut.boot_lines[-1] == "m-init-done"
        assert dut.name() == "microforge"
        profile = dut.profile()
        assert profile["model"] == folder.name and profile["profile"] == "ULPMark for tinyML Firmware V0.0.1"
        assert profile["mf-inputs"] == str(input_bytes)
        assert profile["mf-outputs"] == ",".join(str(t.nbytes) for t in graph.outputs)
        with pytest.raises(DeviceError, match="e-\\[No results"):
            dut.results()
        dut.load(sample)
        run = dut.infer(1, 1)
        assert dut.results_raw() == expected
        # The official float results: the dequantized outputs, printed with three decimals.
        device_floats = np.array(run.results)
        assert device_floats.shape == (sum(t.nbytes for t in graph.outputs),)
        assert np.abs(device_floats - dequantize(graph, expected)).max() <= 0.0005 + 1e-6
        assert dut.results() == run.results
        # Lap times: each timestamp is floor(instructions / 1000) of the virtual clock, so the window of
        # N inferences holds N * (counted + input copy + loop) instructions, give or take 1000. The copy
        # is a memcpy of the input (at most ~1 instruction per byte, copying words) plus a call.
        assert 0 < run.start_us < run.end_us
        for n in (1, 3):
            timed = run if n == 1 else dut.infer(n, 0)
            low = n * counted - 1000
            high = n * (counted + input_bytes + 64) + 1000
            assert low <= timed.elapsed_us * 1000 <= high, (n, timed.elapsed_us, counted)
        # Deterministic up to the truncation of the two timestamps (their sub-microsecond phase depends
        # on how long the firmware polled the UART, i.e. on the host), and monotonic.
        again = dut.infer(1, 0)
        assert abs(again.elapsed_us - run.elapsed_us) <= 1 and again.start_us > run.end_us
        assert dut.results_raw() == expected  # the input is restored before every inference
        process = dut.process
    assert process.poll() is not None  # QEMU is gone


@needs_qemu
def test_ad_model_on_qemu_m4(folders, tmp_path):
    graph, folder = generated(folders, "ad")
    sample = np.random.default_rng(3).integers(-128, 128, graph.inputs[0].nbytes, dtype=np.int8).tobytes()
    check_on_qemu(graph, folder, "qemu-m4", sample, tmp_path / "build")


@needs_qemu
def test_kws_model_on_qemu_m7(folders, tmp_path):
    graph, folder = generated(folders, "kws")
    check_on_qemu(graph, folder, "qemu-m7", KWS_SAMPLE.read_bytes(), tmp_path / "build")


STANDIN_H = """#ifndef MF_MODEL_H
#define MF_MODEL_H
#include <stdint.h>
#define MF_NUM_INPUTS 1
#define MF_INPUT0_BYTES 4
#define MF_INPUT0_TYPE int8_t
#define MF_NUM_OUTPUTS 2
#define MF_OUTPUT0_BYTES 4
#define MF_OUTPUT0_TYPE int8_t
#define MF_OUTPUT0_SCALE 0.25f
#define MF_OUTPUT0_ZERO_POINT -2
#define MF_OUTPUT1_BYTES 8
#define MF_OUTPUT1_TYPE float
void mf_init(void);
void mf_invoke(void);
void *mf_input(int index);
void *mf_output(int index);
#endif
"""

# out0 = in * 2 (int8), out1 = {in[0] / 8, -in[1]} as floats; an input starting with 0x7f runs an
# undefined instruction (a UsageFault).
STANDIN_C = """#include "model.h"
static int8_t in[4];
static int8_t out0[4];
static float out1[2];
void mf_init(void) {}
void *mf_input(int index) { return index == 0 ? (void *)in : 0; }
void *mf_output(int index) { return index == 0 ? (void *)out0 : index == 1 ? (void *)out1 : 0; }
void mf_invoke(void) {
    int i;
    if (in[0] == 0x7f) __asm__ __volatile__("udf #0");
    for (i = 0; i < 4; ++i) out0[i] = (int8_t)(in[i] * 2);
    out1[0] = in[0] / 8.0f;
    out1[1] = -in[1];
}
"""


def symbol_extent(elf: Path, name: str) -> tuple[int, int]:
    nm = shutil.which("arm-none-eabi-nm") or "arm-none-eabi-nm"
    for line in subprocess.run([nm, "-S", str(elf)], capture_output=True, text=True, check=True).stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[3] == name:
            return int(parts[0], 16) & ~1, int(parts[1], 16)
    raise AssertionError(f"{name} not in {elf}")


@needs_qemu
def test_mixed_outputs_and_a_faulting_firmware(tmp_path):
    folder = tmp_path / "standin"
    folder.mkdir()
    (folder / "model.h").write_text(STANDIN_H)
    (folder / "model.c").write_text(STANDIN_C)
    with qemu_dut(folder, "qemu-m4", timeout_s=5, build_dir=tmp_path / "build", model_name="stand in]") as dut:
        assert dut.profile()["model"] == "stand_in_"  # sanitised: cannot break the brackets
        assert dut.profile()["mf-outputs"] == "4,8"
        with pytest.raises(DeviceError, match=r"Supplied buffer size 5 exceeds maximum of 4"):
            dut.command("db load 5")
        # Commands hold up to 80 characters (EE_CMD_SIZE); a longer one is refused, not truncated.
        assert dut.command("name" + " " * 76) == ["m-name-dut-[microforge]"]
        dut.port.write(b"name" + b" " * 77 + b"%")
        assert dut.wait_ready(5) == ["e-[Command longer than 80 characters]"]
        dut.command("db load 4")
        with pytest.raises(DeviceError, match=r"Invalid hex digit 'g'"):
            dut.command("db 0g")
        dut.load(bytes([12, 0xFD, 100, 0x80]))
        run = dut.infer(2, 0)
        # int8 dequantized as (q - zp) * scale; floats printed as they are
        assert run.results == [(24 + 2) * 0.25, (-6 + 2) * 0.25, (-56 + 2) * 0.25, (0 + 2) * 0.25, 1.5, 3.0]
        assert dut.results_raw() == bytes([24, 0xFA, 0xC8, 0]) + np.array([1.5, 3.0], np.float32).tobytes()
        dut.load(bytes([0x7F, 0, 0, 0]))
        started = time.monotonic()
        with pytest.raises(DeviceError) as info:
            dut.infer(1, 0)
        assert time.monotonic() - started < 4  # QEMU ended: no waiting for the timeout
        message = str(info.value)
        # UsageFault is not enabled, so the undefined instruction escalates to a HardFault (3).
        fault = re.search(r"e-\[Fault: exception (\d+) at pc=0x([0-9a-f]{8})\]", message)
        assert fault and fault.group(1) == "3"
        # ... and the reported pc is the udf inside mf_invoke
        start, size = symbol_extent(tmp_path / "build" / "dut.elf", "mf_invoke")
        assert start <= int(fault.group(2), 16) < start + size
        assert "closed the connection" in message and "QEMU exited with status 1" in message


@needs_qemu
def test_qemu_dut_rejects_unknown_boards_and_folders(tmp_path):
    with pytest.raises(TargetError, match="unknown DUT board 'qemu-m0'"), qemu_dut(tmp_path, "qemu-m0"):
        pass
    with pytest.raises(TargetError, match="physical board"), qemu_dut(tmp_path, "nucleo-l4r5zi"):
        pass
    with pytest.raises(TargetError, match="no model.h"), qemu_dut(tmp_path, "qemu-m4"):
        pass


@needs_arm_gcc
def test_nucleo_l4r5zi_firmware_links(folders, tmp_path):
    _graph, folder = generated(folders, "ad")
    elf = build_dut_firmware(folder, "nucleo-l4r5zi", tmp_path / "build")
    nm = shutil.which("arm-none-eabi-nm") or "arm-none-eabi-nm"
    symbols = {}
    for line in subprocess.run([nm, str(elf)], capture_output=True, text=True, check=True).stdout.splitlines():
        parts = line.split()
        if len(parts) == 3:
            symbols[parts[2]] = int(parts[0], 16)
    # The vector table opens the STM32's flash; the board's own drivers are in, semihosting is not.
    assert symbols["mf_vectors"] == 0x08000000
    assert {"main", "mf_bsp_init", "mf_bsp_getc", "mf_invoke", "mf_dut_db_buffer"} <= set(symbols)
    assert "mf_sh_write0" not in symbols
    assert 0x20000000 <= symbols["mf_dut_db_buffer"] < 0x20000000 + (640 << 10)
    # The 120 MHz clock setting compiles too (it is not the default, so the link above did not use it).
    source = Path(microforge.__file__).parent / "codegen" / "firmware" / "bsp" / "nucleo_l4r5zi.c"
    done = subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16",
                           "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-DMF_NUCLEO_SYSCLK_120MHZ",
                           "-I", str(source.parent), "-c", str(source), "-o", str(tmp_path / "bsp120.o")],
                          check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
