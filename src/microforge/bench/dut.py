"""The EEMBC / MLPerf Tiny device-under-test (DUT) protocol: a host-side client, the DUT firmware build,
and connections to a real board (a serial port) or to an emulated one (QEMU).

The DUT firmware (microforge/codegen/firmware/dut/dut.c, documented there) wraps a generated model
folder in the command protocol of the MLPerf Tiny reference firmware: ASCII commands ending in '%'
(`name`, `profile`, `db load N`, `db <hex>`, `infer N W`, `results`, ...), each answered by lines
ending in "\\r\\n" and finally `m-ready`; errors are lines `e-[...]`. One microforge extension,
`mf-results`, returns the outputs' raw bytes as hex (`m-results-hex-[...]`), since the official
`results` prints three decimals and loses bits. Boards plug in through four functions
(firmware/bsp/mf_bsp.h); shipped are the QEMU MPS2 boards and the ST NUCLEO-L4R5ZI.

    from microforge.bench.dut import qemu_dut, open_serial_dut
    with qemu_dut("out/kws", board="qemu-m4") as dut:        # builds, boots QEMU, connects
        dut.load(sample)                                       # db load + db chunks
        run = dut.infer(10, warmup=1)                          # run.elapsed_us, run.results
        raw = dut.results_raw()                                # bytes of all outputs, bit-exact
    with open_serial_dut("/dev/ttyACM0") as dut:              # a flashed board
        print(dut.name(), dut.profile())

Every reply is awaited with a deadline: a device that stops answering raises DeviceError (a
TargetError) naming the command and the last bytes received; it never hangs.

Time under QEMU. qemu_dut runs `qemu-system-arm -icount shift=0`: QEMU then derives its virtual clock
from the number of guest instructions executed, 2^shift = 1 ns per instruction, instead of from the
host's clock. The MPS2 timer the firmware reads (CMSDK APB TIMER0) counts the board's 25 MHz clock in
that virtual time, so one timer tick is 40 instructions and one microsecond is exactly 1000
instructions, whatever the speed or load of the host: lap times are deterministic and measure
instructions, `elapsed_us * 1000 ~= instructions` (not `elapsed_us * 25 MHz`: the emulated core retires
one instruction per virtual nanosecond, it has no notion of cycles). tests/test_dut.py checks this
against the exact per-inference counts of the TCG plugin in `run_on_qemu`. The timed window of
`infer N` holds N times (copy the inputs from the db buffer + mf_invoke) plus a few dozen
instructions of loop and timer reads, and the timestamps are truncated to whole microseconds. Outside
that window the firmware busy-polls its UART, so the virtual time that passes between commands depends
on the host; only differences of laps taken within one `infer` are reproducible.
"""

from __future__ import annotations

import collections
import fcntl
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import termios
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from microforge.codegen.targets.qemu import (
    BOARDS,
    FIRMWARE_DIR,
    Board,
    FirmwareParts,
    build_firmware,
    read_interface,
)
from microforge.errors import DeviceError, InputError, TargetError

# The reference firmware's command buffer (EE_CMD_SIZE): longer commands are not accepted.
MAX_COMMAND_CHARS = 80
# Input bytes per `db` command: "db " + 2 hex digits per byte must fit the command buffer.
MAX_CHUNK_BYTES = (MAX_COMMAND_CHARS - len("db ")) // 2
DEFAULT_CHUNK_BYTES = 32
# A reply line longer than this is garbage, not a slow device.
MAX_LINE_BYTES = 1 << 20
_LAP_WRAP = 1 << 32  # m-lap-us values are 32-bit microsecond counters

DUT_SOURCES = ("dut/dut.c",)
DUT_ASM = ("startup.S",)


# --------------------------------------------------------------------------------------------------
# Boards


@dataclass(frozen=True)
class DutBoard:
    """A board the DUT firmware is built for: the Board (flags, linker script) and its BSP sources."""

    board: Board
    bsp_sources: tuple[str, ...]  # relative to the firmware folder
    emulated: bool


NUCLEO_L4R5ZI = Board("nucleo-l4r5zi", "", "STM32L4R5ZI (Cortex-M4F)",
                      ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
                      str(FIRMWARE_DIR / "bsp" / "nucleo_l4r5zi.ld"), 2 << 20, 640 << 10)

DUT_BOARDS: dict[str, DutBoard] = {
    # Semihosting is linked on the emulated boards only: it lets a faulting firmware end QEMU.
    "qemu-m4": DutBoard(BOARDS["qemu-m4"], ("bsp/mps2.c", "mf_semihost.c"), True),
    "qemu-m7": DutBoard(BOARDS["qemu-m7"], ("bsp/mps2.c", "mf_semihost.c"), True),
    "nucleo-l4r5zi": DutBoard(NUCLEO_L4R5ZI, ("bsp/nucleo_l4r5zi.c",), False),
}


def _c_string(text: str) -> str:
    """`text` restricted to characters that are safe both in a C string and inside the protocol's
    m-model-[...] brackets."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", text)[:40] or "model"


def _dut_config_c(n_inputs: int, n_outputs: int, model_name: str) -> str:
    inputs = [f"MF_INPUT{i}_BYTES" for i in range(n_inputs)]
    total = " + ".join(inputs) or "0"
    lines = ["/* Generated by microforge for the DUT firmware. */", '#include "model.h"', '#include "mf_dut.h"', "",
             f"const uint32_t mf_dut_num_inputs = {n_inputs};  /* MF_NUM_INPUTS, or a learner's first */",
             f"const uint32_t mf_dut_input_bytes[{max(n_inputs, 1)}] = {{{', '.join(inputs) or '0'}}};",
             f"const uint32_t mf_dut_input_total = {total};",
             f"uint8_t mf_dut_db_buffer[({total}) > 0 ? ({total}) : 1] __attribute__((aligned(16)));",
             f"const uint32_t mf_dut_num_outputs = {n_outputs};",
             f"const mf_dut_output_t mf_dut_outputs[{n_outputs}] = {{"]
    for i in range(n_outputs):
        t = f"MF_OUTPUT{i}_TYPE"
        # The element type's properties as constant expressions, so that model.h stays the only source.
        lines.append(f"    {{MF_OUTPUT{i}_BYTES, (uint8_t)sizeof({t}), (uint8_t)(({t})0.5f != ({t})0), "
                     f"(uint8_t)(({t})-1 < ({t})0),")
        lines += [f"#ifdef MF_OUTPUT{i}_SCALE",
                  f"     1u, (float)(MF_OUTPUT{i}_SCALE), (int32_t)(MF_OUTPUT{i}_ZERO_POINT)}},",
                  "#else", "     0u, 0.0f, 0},", "#endif"]
    lines += ["};", f'const char mf_dut_model_name[] = "{_c_string(model_name)}";', ""]
    return "\n".join(lines)


def dut_parts(model_dir: str | Path, board: str, model_name: str | None = None) -> FirmwareParts:
    """The DUT firmware's sources and generated configuration for a model folder and board."""
    spec = _dut_board(board)
    model_dir = Path(model_dir)
    input_bytes, output_bytes = read_interface(model_dir)
    if _is_learner(model_dir):  # the learner image (learn.onchip): a classifier's input 0 and output 0
        input_bytes, output_bytes = input_bytes[:1], output_bytes[:1]
    return FirmwareParts(
        c_sources=tuple(FIRMWARE_DIR / s for s in (*DUT_SOURCES, *spec.bsp_sources)),
        asm_sources=tuple(FIRMWARE_DIR / s for s in DUT_ASM),
        config_name="mf_dut_config.c",
        config_text=_dut_config_c(len(input_bytes), len(output_bytes), model_name or model_dir.name),
        include_dirs=(FIRMWARE_DIR / "bsp", FIRMWARE_DIR / "dut"),
    )


def _is_learner(model_dir: Path) -> bool:
    header = model_dir / "model.h"
    return header.is_file() and re.search(r"^\s*#\s*define\s+MF_LEARN\s+1\b", header.read_text(), re.M) is not None


def _dut_board(board: str) -> DutBoard:
    if board not in DUT_BOARDS:
        raise TargetError(f"unknown DUT board {board!r}; choose one of {', '.join(DUT_BOARDS)}")
    return DUT_BOARDS[board]


def build_dut_firmware(model_dir: str | Path, board: str, build_dir: str | Path, *,
                       cflags: list[str] | None = None, model_name: str | None = None) -> Path:
    """Compile and link the DUT firmware around a generated model folder; returns the ELF
    (`build_dir/dut.elf`). `model_name` is what `profile%` reports (default: the folder's name)."""
    spec = _dut_board(board)
    firmware = build_firmware(model_dir, spec.board, build_dir, dut_parts(model_dir, board, model_name),
                              cflags=cflags, need_qemu=spec.emulated)
    return firmware.link("dut", None)


# --------------------------------------------------------------------------------------------------
# The client


@dataclass
class InferResult:
    """One `infer N W` exchange. elapsed_us = end_us - start_us (modulo 2^32): the N timed inferences."""

    iterations: int
    warmup: int
    start_us: int
    end_us: int
    elapsed_us: int
    results: list[float]
    lines: list[str] = field(default_factory=list)

    @property
    def us_per_inference(self) -> float:
        return self.elapsed_us / self.iterations


_NAME = re.compile(r"^m-name-dut-\[([^\]]*)\]$")
_BRACKETED = re.compile(r"^m-([a-z0-9-]+?)-\[([^\]]*)\]$")
_EXPECTING = re.compile(r"^m-\[Expecting (\d+) bytes\]$")
_LAP = re.compile(r"^m-lap-us-(\d+)$")
_RESULTS = re.compile(r"^m-results-\[([^\]]*)\]$")
_RESULTS_HEX = re.compile(r"^m-results-hex-\[([^\]]*)\]$")
_STAGED = re.compile(r"^m-learn-staged-(\d+)$")
_LEARNED = re.compile(r"^m-learn-done-(\d+)$")


class DutClient:
    """Talks the DUT protocol over `port`, any object with pyserial's `write(bytes)` and `read(n)`
    (returning what arrived within the port's own short timeout, possibly nothing); `in_waiting` is
    used when present. Every command waits at most `timeout_s` (or its own timeout_s argument) for its
    final `m-ready`."""

    def __init__(self, port, timeout_s: float = 10.0, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 poll_s: float = 0.05):
        if not 1 <= chunk_bytes <= MAX_CHUNK_BYTES:
            raise InputError(f"chunk_bytes must be 1..{MAX_CHUNK_BYTES} (a db command holds at most "
                             f"{MAX_COMMAND_CHARS} characters), not {chunk_bytes}")
        if timeout_s <= 0:
            raise InputError(f"timeout_s must be > 0, not {timeout_s}")
        self.port = port
        self.timeout_s = float(timeout_s)
        self.chunk_bytes = chunk_bytes
        self.transcript: collections.deque[str] = collections.deque(maxlen=200)  # recent lines, both ways
        self.boot_lines: list[str] = []
        self.process: subprocess.Popen | None = None  # the emulator behind the port, if any (qemu_dut)
        self._pending = bytearray()
        self._out_of_step = False
        self._output_sizes: list[int] | None = None
        self._input_sizes: list[int] | None = None
        try:  # keep each read short so that our own deadlines decide, not the port's timeout
            port.timeout = poll_s
        except (AttributeError, ValueError, OSError):
            pass

    # ---- transport

    def _last_received(self) -> str:
        tail = "".join(f"{line}\n" for line in list(self.transcript)[-6:] if not line.startswith("> "))
        tail += self._pending.decode("ascii", "replace")
        return repr(tail[-300:]) if tail else "nothing"

    def _read_some(self, what: str) -> None:
        try:
            waiting = int(getattr(self.port, "in_waiting", 0) or 0)
            data = self.port.read(max(1, min(waiting, 65536)))
        except OSError as exc:
            self._out_of_step = True
            raise DeviceError(f"{what}: the connection failed: {exc}; last received: {self._last_received()}") \
                from exc
        if data:
            self._pending += data

    def _read_line(self, what: str, deadline: float, waited: float) -> str:
        while True:
            end = self._pending.find(b"\n")
            if end >= 0:
                raw = bytes(self._pending[:end])
                del self._pending[:end + 1]
                line = raw.decode("ascii", "replace").rstrip("\r")
                self.transcript.append(line)
                return line
            if len(self._pending) > MAX_LINE_BYTES:
                self._out_of_step = True
                raise DeviceError(f"{what}: over {MAX_LINE_BYTES} bytes without a line end; "
                                  f"last received: {self._last_received()}")
            if time.monotonic() > deadline:
                self._out_of_step = True
                raise DeviceError(f"{what}: no 'm-ready' within {waited:g} s (the device stopped "
                                  f"answering); last received: {self._last_received()}")
            self._read_some(what)

    def _collect(self, what: str, timeout_s: float) -> list[str]:
        deadline = time.monotonic() + timeout_s
        lines = []
        while True:
            line = self._read_line(what, deadline, timeout_s)
            if line == "m-ready":
                return lines
            lines.append(line)

    def _write(self, what: str, data: bytes) -> None:
        try:
            self.port.write(data)
            flush = getattr(self.port, "flush", None)
            if flush is not None:
                flush()
        except OSError as exc:
            self._out_of_step = True
            raise DeviceError(f"{what}: writing to the device failed: {exc}") from exc

    def wait_ready(self, timeout_s: float | None = None) -> list[str]:
        """Wait for an unprompted `m-ready` (the end of the boot messages); returns the lines before it."""
        lines = self._collect("waiting for the device to boot", timeout_s or self.timeout_s)
        self.boot_lines = lines
        return lines

    def sync(self, timeout_s: float | None = None, quiet_s: float = 0.2) -> None:
        """Bring host and device back in step: drop unread input, end any half-sent command with '%',
        and read replies until `m-ready` is followed by `quiet_s` of silence."""
        reset = getattr(self.port, "reset_input_buffer", None)
        if reset is not None:
            try:
                reset()
            except OSError:
                pass
        self._pending.clear()
        what = "resynchronising"
        self._write(what, b"%")
        self.transcript.append("> %")
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        self._collect(what, max(0.0, deadline - time.monotonic()))
        while True:
            quiet_until = time.monotonic() + quiet_s
            while not self._pending and time.monotonic() < quiet_until:
                self._read_some(what)
            if not self._pending:
                break
            self._collect(what, max(0.0, deadline - time.monotonic()))
        self._out_of_step = False

    def command(self, text: str, timeout_s: float | None = None) -> list[str]:
        """Send one command (without its '%') and return the reply lines before `m-ready`. A reply
        with an `e-...` line raises DeviceError."""
        if not isinstance(text, str) or not text.isascii() or "%" in text or len(text) > MAX_COMMAND_CHARS:
            raise InputError(f"not a DUT command (ASCII, no '%', at most {MAX_COMMAND_CHARS} characters): "
                             f"{text!r}")
        if self._out_of_step:
            self.sync(timeout_s)
        what = f"command {text[:40]!r}" + ("..." if len(text) > 40 else "")
        self._write(what, text.encode("ascii") + b"%")
        self.transcript.append(f"> {text}%")
        lines = self._collect(what, self.timeout_s if timeout_s is None else timeout_s)
        errors = [line for line in lines if line.startswith("e-")]
        if errors:
            raise DeviceError(f"{what}: the device reported {'; '.join(errors)}")
        return lines

    @staticmethod
    def _one(lines: list[str], pattern: re.Pattern, what: str, expected: str) -> re.Match:
        found = [m for m in map(pattern.match, lines) if m]
        if len(found) != 1:
            got = "no" if not found else f"{len(found)}"
            raise DeviceError(f"{what}: malformed reply, {got} '{expected}' lines in {lines!r}")
        return found[0]

    # ---- the protocol

    def name(self) -> str:
        """The `m-name-dut-[NAME]` of `name%`."""
        lines = self.command("name")
        return self._one(lines, _NAME, "command 'name'", "m-name-dut-[...]").group(1)

    def profile(self) -> dict[str, str]:
        """Every `m-KEY-[VALUE]` line of `profile%` as {KEY: VALUE}: at least `profile` (firmware
        version) and `model`; microforge firmware adds `mf-inputs` and `mf-outputs` (byte sizes)."""
        lines = self.command("profile")
        info = {m.group(1): m.group(2) for m in map(_BRACKETED.match, lines) if m}
        for key in ("profile", "model"):
            if key not in info:
                raise DeviceError(f"command 'profile': malformed reply, no 'm-{key}-[...]' line in {lines!r}")
        try:
            if "mf-inputs" in info:
                self._input_sizes = [int(v) for v in info["mf-inputs"].split(",") if v]
            if "mf-outputs" in info:
                self._output_sizes = [int(v) for v in info["mf-outputs"].split(",") if v]
        except ValueError as exc:
            raise DeviceError(f"command 'profile': malformed sizes in {lines!r}") from exc
        return info

    def timestamp(self) -> int:
        """The device's microsecond clock (`timestamp%`)."""
        lines = self.command("timestamp")
        return int(self._one(lines, _LAP, "command 'timestamp'", "m-lap-us-<us>").group(1))

    def load(self, data: bytes) -> None:
        """Send one input: `db load N`, then `db <hex>` commands of chunk_bytes bytes each."""
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        elif hasattr(data, "tobytes") and not isinstance(data, bytes):
            data = data.tobytes()
        if not isinstance(data, bytes) or not data:
            raise InputError(f"load: expected a non-empty bytes-like input, got {type(data).__name__} "
                             f"of length {len(data) if hasattr(data, '__len__') else '?'}")
        if self._input_sizes is not None and len(data) != sum(self._input_sizes):
            raise InputError(f"load: {len(data)} bytes, but the model on the device takes {sum(self._input_sizes)} "
                             f"({' + '.join(map(str, self._input_sizes))})")
        what = f"command 'db load {len(data)}'"
        lines = self.command(f"db load {len(data)}")
        expecting = int(self._one(lines, _EXPECTING, what, "m-[Expecting N bytes]").group(1))
        if expecting != len(data):
            raise DeviceError(f"{what}: the device expects {expecting} bytes, not {len(data)}")
        for offset in range(0, len(data), self.chunk_bytes):
            chunk = data[offset:offset + self.chunk_bytes]
            lines = self.command(f"db {chunk.hex()}")
            done = "m-load-done" in lines
            last = offset + len(chunk) == len(data)
            if done != last:
                state = "finished" if done else "did not finish"
                raise DeviceError(f"db load: the device {state} loading after {offset + len(chunk)} of "
                                  f"{len(data)} bytes")

    def infer(self, count: int = 1, warmup: int = 0, timeout_s: float | None = None) -> InferResult:
        """`infer count warmup`: warmup untimed inferences, then count timed ones between two m-lap-us
        timestamps; returns the laps and the results printed with them."""
        if not isinstance(count, int) or count < 1:
            raise InputError(f"infer: count must be an integer >= 1, not {count!r}")
        if not isinstance(warmup, int) or warmup < 0:
            raise InputError(f"infer: warmup must be an integer >= 0, not {warmup!r}")
        what = f"command 'infer {count} {warmup}'"
        lines = self.command(f"infer {count} {warmup}", timeout_s)
        for expected in (f"m-warmup-start-{warmup}", "m-warmup-done", f"m-infer-start-{count}", "m-infer-done"):
            if expected not in lines:
                raise DeviceError(f"{what}: malformed reply, no '{expected}' line in {lines!r}")
        laps = [int(m.group(1)) for m in map(_LAP.match, lines) if m]
        if len(laps) != 2:
            raise DeviceError(f"{what}: malformed reply, {len(laps)} 'm-lap-us-<us>' lines instead of 2 in {lines!r}")
        start, end = laps
        results = self._parse_results(lines, what)
        return InferResult(count, warmup, start, end, (end - start) % _LAP_WRAP, results, lines)

    def _parse_results(self, lines: list[str], what: str) -> list[float]:
        text = self._one(lines, _RESULTS, what, "m-results-[...]").group(1)
        try:
            return [float(v) for v in text.split(",")] if text.strip() else []
        except ValueError as exc:
            raise DeviceError(f"{what}: malformed results {text[:200]!r}") from exc

    def results(self) -> list[float]:
        """`results%`: every output element, dequantized, as the device printed it (three decimals)."""
        return self._parse_results(self.command("results"), "command 'results'")

    def learn(self, sample, label: int) -> int:
        """Stage one new sample of class `label` on a learner image: `db load` it, then `mf-learn L%`;
        returns the number of samples staged so far."""
        if isinstance(label, bool) or not isinstance(label, int) or label < 0:
            raise InputError(f"learn: the label must be a class index >= 0, not {label!r}")
        self.load(sample)
        what = f"command 'mf-learn {label}'"
        return int(self._one(self.command(f"mf-learn {label}"), _STAGED, what, "m-learn-staged-<n>").group(1))

    def learn_run(self, timeout_s: float | None = None) -> tuple[int, int]:
        """`mf-learn-run%`: every SGD step on the staged samples and replays, then the buffer's update;
        returns (steps, elapsed microseconds between the two laps)."""
        what = "command 'mf-learn-run'"
        lines = self.command("mf-learn-run", timeout_s)
        steps = int(self._one(lines, _LEARNED, what, "m-learn-done-<steps>").group(1))
        laps = [int(m.group(1)) for m in map(_LAP.match, lines) if m]
        if len(laps) != 2:
            raise DeviceError(f"{what}: malformed reply, {len(laps)} 'm-lap-us-<us>' lines instead of 2 in {lines!r}")
        return steps, (laps[1] - laps[0]) % _LAP_WRAP

    def results_raw(self) -> bytes:
        """`mf-results%` (microforge extension): the bytes of all outputs in order, exactly."""
        what = "command 'mf-results'"
        text = self._one(self.command("mf-results"), _RESULTS_HEX, what, "m-results-hex-[...]").group(1)
        if len(text) % 2 or not re.fullmatch(r"[0-9a-fA-F]*", text):
            raise DeviceError(f"{what}: malformed hex {text[:200]!r}")
        data = bytes.fromhex(text)
        if self._output_sizes is None:
            self.profile()  # learns the output sizes, when the firmware reports them
        if self._output_sizes is not None and len(data) != sum(self._output_sizes):
            raise DeviceError(f"{what}: {len(data)} bytes, but the device's outputs take {sum(self._output_sizes)}")
        return data


# --------------------------------------------------------------------------------------------------
# Connections


class SocketPort:
    """A connected stream socket with the parts of pyserial's interface that DutClient uses. A closed
    connection raises ConnectionError (with `describe_eof()` appended: e.g. why QEMU ended)."""

    def __init__(self, sock: socket.socket, describe_eof: Callable[[], str] | None = None):
        self._sock = sock
        self._describe_eof = describe_eof
        self._timeout = 0.05
        sock.settimeout(self._timeout)

    @property
    def timeout(self) -> float:
        return self._timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._timeout = value
        self._sock.settimeout(value)

    @property
    def in_waiting(self) -> int:
        """Bytes ready to read now (FIONREAD), so that a read takes them all at once."""
        try:
            raw = fcntl.ioctl(self._sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return 0
        return struct.unpack("i", raw)[0]

    def read(self, size: int = 1) -> bytes:
        try:
            data = self._sock.recv(size)
        except TimeoutError:
            return b""
        if not data:
            extra = self._describe_eof() if self._describe_eof else ""
            raise ConnectionError("the device closed the connection" + (f" ({extra})" if extra else ""))
        return data

    def write(self, data: bytes) -> int:
        self._sock.sendall(data)
        return len(data)

    def close(self) -> None:
        self._sock.close()


def _socket_folder() -> str:
    """A private folder for QEMU's UART socket: AF_UNIX paths are limited to about 100 bytes, so fall
    back to /tmp when $TMPDIR is deep."""
    folder = tempfile.mkdtemp(prefix="mfdut-")
    if len(folder) > 80:
        os.rmdir(folder)
        folder = tempfile.mkdtemp(prefix="mfdut-", dir="/tmp")
    return folder


@contextmanager
def qemu_dut(model_dir: str | Path, board: str = "qemu-m4", timeout_s: float = 30.0, *,
             build_dir: str | Path | None = None, cflags: list[str] | None = None,
             model_name: str | None = None, boot_timeout_s: float = 15.0) -> Iterator[DutClient]:
    """Build the DUT firmware for a generated model folder, boot it under QEMU with deterministic
    virtual time (-icount shift=0) and its UART on a Unix socket, and yield a connected DutClient
    (its boot messages in .boot_lines). QEMU is killed on exit, whatever happened."""
    spec = _dut_board(board)
    if not spec.emulated:
        raise TargetError(f"{board} is a physical board: flash build_dut_firmware's ELF and use open_serial_dut")
    qemu = shutil.which("qemu-system-arm")
    if qemu is None:
        raise TargetError(f"{board}: 'qemu-system-arm' not found; install the Debian package qemu-system-arm")
    with ExitStack() as cleanup:  # unwinds in reverse: socket, QEMU, log, socket folder, build folder
        if build_dir is None:
            work = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix=f"microforge-dut-{board}-")))
        else:
            work = Path(build_dir)
        elf = build_dut_firmware(model_dir, board, work, cflags=cflags, model_name=model_name)
        sock_dir = _socket_folder()
        cleanup.callback(shutil.rmtree, sock_dir, ignore_errors=True)
        sock_path = os.path.join(sock_dir, "uart")
        cmd = [qemu, "-M", spec.board.machine, "-nographic", "-monitor", "none", "-icount", "shift=0",
               "-chardev", f"socket,id=mfdut,path={sock_path.replace(',', ',,')},server=on,wait=on",
               "-serial", "chardev:mfdut",
               "-semihosting-config", "enable=on,target=native",
               "-kernel", str(elf)]
        log_path = work / "qemu.log"
        log = cleanup.enter_context(open(log_path, "wb"))
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=work)
        cleanup.callback(_stop, proc)

        def describe() -> str:
            try:  # the socket closes a moment before QEMU has exited
                status = proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                return "QEMU is still running"
            log.flush()
            text = log_path.read_text(errors="replace")[-1500:].strip()
            return f"QEMU exited with status {status}" + (f": {text}" if text else "")

        # With wait=on QEMU listens before starting the guest, so nothing the firmware prints is lost.
        deadline = time.monotonic() + boot_timeout_s
        while True:
            if proc.poll() is not None:
                raise TargetError(f"{board} ({spec.board.machine}): QEMU did not start: {describe()}\n"
                                  f"{' '.join(cmd)}")
            client_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                client_sock.connect(sock_path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                client_sock.close()
            if time.monotonic() > deadline:
                raise TargetError(f"{board}: QEMU's UART socket did not appear within {boot_timeout_s:g} s")
            time.sleep(0.02)
        cleanup.callback(client_sock.close)
        client = DutClient(SocketPort(client_sock, describe), timeout_s)
        client.process = proc
        client.wait_ready(boot_timeout_s)
        yield client


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


@contextmanager
def open_serial_dut(port: str, baudrate: int = 115200, timeout_s: float = 10.0) -> Iterator[DutClient]:
    """A flashed board on a serial port (e.g. /dev/ttyACM0, the NUCLEO's ST-LINK virtual COM port),
    resynchronised and ready for commands; the port is closed on exit."""
    try:
        import serial  # pyserial
    except ImportError as exc:
        raise TargetError("open_serial_dut needs pyserial (pip install pyserial)") from exc
    try:
        # serial_for_url also takes pyserial URLs: socket://host:port, rfc2217://host:port (network bridges)
        connection = serial.serial_for_url(port, baudrate=baudrate, timeout=0.05)
    except (serial.SerialException, ValueError) as exc:
        raise TargetError(f"cannot open serial port {port!r} at {baudrate} baud: {exc}") from exc
    try:
        client = DutClient(connection, timeout_s)
        client.sync()
        yield client
    finally:
        connection.close()
