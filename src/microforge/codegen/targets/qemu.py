"""The emulated Cortex-M targets: `qemu-m4` (mps2-an386, Cortex-M4F) and `qemu-m7` (mps2-an500, Cortex-M7).

A generated model folder (model.h, model.c, kernels) is compiled with `arm-none-eabi-gcc` together with
our firmware harness (microforge/codegen/firmware: vector table, reset handler, linker script per board,
semihosting, a main that runs every compiled-in sample), run under `qemu-system-arm`, and measured:

- outputs: printed by the firmware over semihosting, as hex;
- instructions: exact guest instruction counts of each `mf_invoke` call (and of `mf_init`), from a small
  TCG plugin of ours that counts between the two marker functions `mf_bench_begin` / `mf_bench_end`;
- flash and RAM: from the ELF's sections (`arm-none-eabi-size -A`; the compiled-in samples are kept in a
  section of their own and excluded), with a per-part breakdown (model / harness / library) from the
  linker map;
- stack: the deepest stack the model used, by painting all free RAM below main's frame with a pattern
  before mf_init and the first inferences and scanning it afterwards.

The harness is one FirmwareParts set compiled around the model by `build_firmware`; the DUT firmware
of microforge.bench.dut (the MLPerf Tiny serial protocol) is another, built the same way.

Debian packages relied on: gcc-arm-none-eabi, binutils-arm-none-eabi (pulled in by gcc-arm-none-eabi),
libnewlib-arm-none-eabi (memcpy/memset, libm's expf and libgcc multilibs), qemu-system-arm (QEMU >= 7.2 with
plugin support), and the host gcc (builds the plugin).

    from microforge.codegen.targets.qemu import run_on_qemu
    result = run_on_qemu(model_dir, "qemu-m4", [sample0, sample1])
    result.outputs[0], result.instructions[0], result.flash_bytes, result.ram_bytes, result.stack_bytes
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from microforge.errors import InputError, TargetError

FIRMWARE_DIR = Path(str(resources.files("microforge.codegen") / "firmware"))
PLUGIN_SOURCE = FIRMWARE_DIR / "mf_count_plugin.c"
HARNESS_C = ("harness.c", "mf_semihost.c")
HARNESS_S = ("startup.S",)

WARNINGS = ("-std=c99", "-Wall", "-Wextra", "-Werror")
COMMON_CFLAGS = ("-ffunction-sections", "-fdata-sections")
DEFAULT_CFLAGS = ("-O2",)
# newlib's libm (the float kernels' expf), after every object: gcc appends libgcc and libc (nano.specs:
# --start-group -lgcc -lc_nano --end-group) behind it, which resolve libm's own references (errno).
LIBS = ("-lm",)


@dataclass(frozen=True)
class Board:
    """One emulated board: QEMU machine, compiler flags, linker script and memory sizes."""

    target: str
    machine: str
    cpu: str
    arch_flags: tuple[str, ...]
    linker_script: str
    flash_bytes: int
    ram_bytes: int


BOARDS: dict[str, Board] = {
    "qemu-m4": Board("qemu-m4", "mps2-an386", "Cortex-M4F",
                     ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
                     "mps2_an386.ld", 4 << 20, 4 << 20),
    "qemu-m7": Board("qemu-m7", "mps2-an500", "Cortex-M7",
                     ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"),
                     "mps2_an500.ld", 4 << 20, 4 << 20),
}

# tool -> Debian package that provides it
TOOLS = {
    "arm-none-eabi-gcc": "gcc-arm-none-eabi",
    "arm-none-eabi-nm": "binutils-arm-none-eabi",
    "arm-none-eabi-size": "binutils-arm-none-eabi",
    "qemu-system-arm": "qemu-system-arm",
}
HOST_CC = "gcc"

# Flash the firmware must leave free beyond its sections (alignment, the sample-count word).
_FLASH_SLACK = 256


@dataclass
class QemuResult:
    """What one `run_on_qemu` call measured. Sizes are bytes; the compiled-in samples are not counted.

    outputs[i]         all output tensors of sample i, concatenated in output order
    output_tensors[i]  the same, one bytes object per output tensor
    instructions[i]    guest instructions executed by mf_invoke() for sample i (its first instruction
                       through its return; the `bl` calling it is not counted). Empty when counting was off.
    init_instructions  the same for mf_init()
    op_instructions[i] with profile=True: instructions of each op of sample i, in the order mf_invoke
                       runs them (the generated model's plan schedule), the 2 of each marker call left
                       out; empty otherwise
    flash_bytes        text + rodata + data (whole firmware: model, harness, libc/libgcc)
    ram_bytes          data + bss (the stack is separate: stack_bytes)
    stack_bytes        deepest stack used below main's frame by mf_init and mf_invoke (measured on
                       mf_init and the first `stack_samples` inferences of each firmware run)
    breakdown          {"model"|"harness"|"library": {"text", "rodata", "data", "bss"}} from the map file
    """

    board: str
    outputs: list[bytes]
    output_tensors: list[tuple[bytes, ...]]
    instructions: list[int]
    init_instructions: int | None
    flash_bytes: int
    ram_bytes: int
    stack_bytes: int
    text: int
    rodata: int
    data: int
    bss: int
    breakdown: dict[str, dict[str, int]] = field(default_factory=dict)
    op_instructions: list[list[int]] = field(default_factory=list)
    stack_samples: int = 0
    firmware_runs: int = 0
    build_dir: Path | None = None

    @property
    def model_flash_bytes(self) -> int:
        """Flash of the model's own objects (code, constants, initialised data)."""
        part = self.breakdown.get("model", {})
        return part.get("text", 0) + part.get("rodata", 0) + part.get("data", 0)

    @property
    def model_ram_bytes(self) -> int:
        """Static RAM of the model's own objects (arena and any other data/bss)."""
        part = self.breakdown.get("model", {})
        return part.get("data", 0) + part.get("bss", 0)


# --------------------------------------------------------------------------------------------------
# Tools


def _require_tools(board: Board, count_instructions: bool, need_qemu: bool = True) -> dict[str, str]:
    tools = {}
    for tool, package in TOOLS.items():
        if tool == "qemu-system-arm" and not need_qemu:
            continue
        path = shutil.which(tool)
        if path is None:
            raise TargetError(f"{board.target}: '{tool}' not found; install the Debian package {package} "
                              f"(apt-get install --no-install-recommends {package})")
        tools[tool] = path
    if count_instructions:
        path = shutil.which(HOST_CC)
        if path is None:
            raise TargetError(f"{board.target}: the host C compiler '{HOST_CC}' (Debian package gcc) is needed to "
                              f"build the instruction-counting QEMU plugin; install it or pass "
                              f"count_instructions=False")
        tools[HOST_CC] = path
    return tools


def _run(cmd: list[str], what: str, board: Board, cwd: Path | None = None,
         timeout: float = 600) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(cmd, check=False, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise TargetError(f"{board.target}: {what} did not finish within {timeout:g} s") from exc
    except OSError as exc:
        raise TargetError(f"{board.target}: {what} could not start: {exc}") from exc
    if done.returncode != 0:
        raise TargetError(f"{board.target}: {what} failed (exit {done.returncode}):\n{' '.join(cmd)}\n"
                          f"{(done.stderr or done.stdout)[-4000:]}")
    return done


def _check_newlib(tools: dict[str, str], board: Board) -> None:
    """arm-none-eabi-gcc without newlib compiles nothing that includes <string.h>: say so up front."""
    done = subprocess.run([tools["arm-none-eabi-gcc"], *board.arch_flags, "--specs=nano.specs",
                           "-print-file-name=libc_nano.a"], check=False, capture_output=True, text=True)
    if done.returncode != 0 or not os.path.isabs(done.stdout.strip()):
        raise TargetError(f"{board.target}: newlib for arm-none-eabi ({' '.join(board.arch_flags)}) not found; "
                          f"install the Debian package libnewlib-arm-none-eabi")


def cache_dir() -> Path:
    """Where built helpers (the QEMU plugin) are kept: $MICROFORGE_CACHE, else $XDG_CACHE_HOME/microforge,
    else ~/.cache/microforge."""
    if os.environ.get("MICROFORGE_CACHE"):
        return Path(os.environ["MICROFORGE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "microforge"


def build_plugin(host_cc: str | None = None) -> Path:
    """The instruction-counting plugin as a shared object, built on first use and cached by a hash of
    its source (and the host machine type)."""
    cc = host_cc or shutil.which(HOST_CC)
    if cc is None:
        raise TargetError(f"the host C compiler '{HOST_CC}' (Debian package gcc) is needed to build the "
                          f"instruction-counting QEMU plugin")
    source = PLUGIN_SOURCE.read_bytes()
    key = hashlib.sha256(source + platform.machine().encode()).hexdigest()[:16]
    name = f"mf_count_plugin-{key}.so"
    for directory in (cache_dir(), Path(tempfile.gettempdir()) / f"microforge-{os.getuid()}"):
        target = directory / name
        if target.is_file():
            return target
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".mf_count_plugin-", suffix=".so", dir=directory)
            os.close(fd)
        except OSError:
            continue
        cmd = [cc, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o", tmp, str(PLUGIN_SOURCE)]
        done = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if done.returncode != 0:
            os.unlink(tmp)
            raise TargetError(f"building the QEMU instruction-counting plugin failed:\n{' '.join(cmd)}\n"
                              f"{done.stderr[-4000:]}")
        os.replace(tmp, target)  # atomic: concurrent builders each install a complete file
        return target
    raise TargetError(f"no writable cache directory for the QEMU plugin (tried {cache_dir()})")


# --------------------------------------------------------------------------------------------------
# The model's interface


_DEFINE = re.compile(r"^\s*#\s*define\s+(MF_(?:NUM_INPUTS|NUM_OUTPUTS|INPUT\d+_BYTES|OUTPUT\d+_BYTES|ARENA_BYTES|"
                     r"CONSTANT_BYTES))\s+(.*?)\s*$", re.MULTILINE)


def _int_macro(text: str) -> int | None:
    text = re.sub(r"/\*.*?\*/|//.*$", "", text).strip()
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    match = re.fullmatch(r"(0[xX][0-9a-fA-F]+|\d+)[uUlL]*", text)
    return int(match.group(1), 0) if match else None


def _model_macros(model_dir: Path) -> dict[str, int]:
    header = model_dir / "model.h"
    if not header.is_file():
        raise TargetError(f"{model_dir}: no model.h (not a generated model folder)")
    macros = {}
    for name, value in _DEFINE.findall(header.read_text(errors="replace")):
        number = _int_macro(value)
        if number is None:
            raise TargetError(f"{header}: {name} is not an integer literal ({value!r})")
        macros[name] = number
    return macros


def read_interface(model_dir: Path) -> tuple[list[int], list[int]]:
    """Input and output sizes in bytes, from the MF_* macros of model_dir/model.h."""
    header = model_dir / "model.h"
    macros = _model_macros(model_dir)
    sizes = {}
    for kind in ("INPUT", "OUTPUT"):
        count = macros.get(f"MF_NUM_{kind}S")
        if count is None:
            raise TargetError(f"{header}: MF_NUM_{kind}S is not defined")
        if count < (1 if kind == "OUTPUT" else 0):
            raise TargetError(f"{header}: MF_NUM_{kind}S = {count}")
        sizes[kind] = []
        for i in range(count):
            nbytes = macros.get(f"MF_{kind}{i}_BYTES")
            if nbytes is None:
                raise TargetError(f"{header}: MF_{kind}{i}_BYTES is not defined")
            sizes[kind].append(nbytes)
    return sizes["INPUT"], sizes["OUTPUT"]


def _as_bytes(value, where: str) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if hasattr(value, "tobytes"):
        return value.tobytes()
    raise InputError(f"{where}: expected bytes, got {type(value).__name__}")


def _pack_samples(inputs: Sequence, input_bytes: list[int]) -> list[bytes]:
    """Each sample as the concatenation of its inputs. A sample is one bytes-like object holding every
    input back to back, or a sequence with one bytes-like object per model input."""
    total = sum(input_bytes)
    packed = []
    for n, sample in enumerate(inputs):
        if isinstance(sample, (list, tuple)):
            if len(sample) != len(input_bytes):
                raise InputError(f"sample {n}: the model has {len(input_bytes)} inputs; got {len(sample)}")
            parts = [_as_bytes(x, f"sample {n} input {i}") for i, x in enumerate(sample)]
            for i, (part, want) in enumerate(zip(parts, input_bytes)):
                if len(part) != want:
                    raise InputError(f"sample {n} input {i}: {len(part)} bytes; the model takes {want}")
            packed.append(b"".join(parts))
        else:
            data = _as_bytes(sample, f"sample {n}")
            if len(data) != total:
                raise InputError(f"sample {n}: {len(data)} bytes; the model's inputs take {total} "
                                 f"({' + '.join(map(str, input_bytes)) or '0'})")
            packed.append(data)
    return packed


# --------------------------------------------------------------------------------------------------
# Building


def _config_c(n_inputs: int, n_outputs: int) -> str:
    ins = ", ".join(f"MF_INPUT{i}_BYTES" for i in range(n_inputs)) or "0"
    outs = ", ".join(f"MF_OUTPUT{i}_BYTES" for i in range(n_outputs))
    return ("/* Generated by microforge for the firmware harness. */\n"
            '#include "model.h"\n#include "mf_fw.h"\n\n'
            "const uint32_t mf_fw_num_inputs = MF_NUM_INPUTS;\n"
            f"const uint32_t mf_fw_input_bytes[{max(n_inputs, 1)}] = {{{ins}}};\n"
            "const uint32_t mf_fw_num_outputs = MF_NUM_OUTPUTS;\n"
            f"const uint32_t mf_fw_output_bytes[{n_outputs}] = {{{outs}}};\n")


def _samples_s(count: int, blob: str) -> str:
    incbin = f'    .incbin "{blob}"\n' if count else ""
    return ("/* Generated by microforge: the benchmark samples, in a section of their own. */\n"
            '    .section .mf_inputs, "a", %progbits\n    .balign 4\n'
            "    .globl mf_fw_num_samples\nmf_fw_num_samples:\n"
            f"    .word {count}\n    .balign 16\n    .globl mf_fw_samples\nmf_fw_samples:\n{incbin}")


@dataclass(frozen=True)
class FirmwareParts:
    """The firmware compiled around a model: our C and assembly sources, one configuration file generated
    from model.h, and extra preprocessor definitions and include folders for the firmware's own files.
    The benchmark harness is one such set (harness_parts); the DUT firmware (microforge.bench.dut) another."""

    c_sources: tuple[Path, ...]
    asm_sources: tuple[Path, ...]
    config_name: str
    config_text: str
    defines: tuple[str, ...] = ()
    include_dirs: tuple[Path, ...] = ()


def harness_parts(n_inputs: int, n_outputs: int, stack_samples: int) -> FirmwareParts:
    """The benchmark harness: runs the compiled-in samples and reports over semihosting."""
    return FirmwareParts(tuple(FIRMWARE_DIR / name for name in HARNESS_C),
                         tuple(FIRMWARE_DIR / name for name in HARNESS_S),
                         "mf_fw_config.c", _config_c(n_inputs, n_outputs),
                         (f"-DMF_STACK_SAMPLES={int(stack_samples)}",))


def check_fits(model_dir: Path, board: Board) -> None:
    """Refuse, before anything is compiled, a model whose arena or constants alone exceed the board's RAM
    or flash (the firmware adds code, stack and buffers on top; the linker has the final word)."""
    macros = _model_macros(model_dir)
    arena, constants = macros.get("MF_ARENA_BYTES", 0), macros.get("MF_CONSTANT_BYTES", 0)
    too_big = []
    if arena > board.ram_bytes:
        too_big.append(f"its activation arena needs {arena:,} B of RAM, the board has {board.ram_bytes:,} B")
    if constants > board.flash_bytes:
        too_big.append(f"its constants need {constants:,} B of flash, the board has {board.flash_bytes:,} B")
    if too_big:
        raise TargetError(f"{board.target} ({board.cpu}): the model does not fit: {'; '.join(too_big)}. "
                          f"Nothing was built.")


class _Firmware:
    """Objects of one model + firmware (by default the harness) for one board; links one ELF per batch
    of samples."""

    def __init__(self, model_dir: Path, board: Board, tools: dict[str, str], build_dir: Path,
                 cflags: Sequence[str], parts: FirmwareParts):
        self.board, self.tools, self.dir = board, tools, build_dir
        self.gcc = tools["arm-none-eabi-gcc"]
        sources = sorted(model_dir.glob("*.c"))
        if not any(s.name == "model.c" for s in sources):
            raise TargetError(f"{model_dir}: no model.c (not a generated model folder)")
        check_fits(model_dir, board)
        (build_dir / parts.config_name).write_text(parts.config_text)
        cc = [self.gcc, *board.arch_flags, *cflags, *WARNINGS, *COMMON_CFLAGS, "-I", str(model_dir),
              "-I", str(FIRMWARE_DIR)]
        for folder in parts.include_dirs:
            cc += ["-I", str(folder)]
        jobs = []
        self.model_objects, self.harness_objects = [], []
        for src in sources:
            obj = build_dir / f"model__{src.stem}.o"
            jobs.append(([*cc, "-c", str(src), "-o", str(obj)], f"compiling {src.name}"))
            self.model_objects.append(obj)
        firmware_cc = [*cc, *parts.defines]
        for path in parts.c_sources:
            obj = build_dir / f"fw__{path.stem}.o"
            jobs.append(([*firmware_cc, "-c", str(path), "-o", str(obj)], f"compiling {path.name}"))
            self.harness_objects.append(obj)
        obj = build_dir / f"fw__{Path(parts.config_name).stem}.o"
        jobs.append(([*firmware_cc, "-c", str(build_dir / parts.config_name), "-o", str(obj)],
                     "compiling the firmware configuration"))
        self.harness_objects.append(obj)
        for path in parts.asm_sources:
            obj = build_dir / f"fw__{path.stem}.o"
            jobs.append(([self.gcc, *board.arch_flags, "-c", str(path), "-o", str(obj)], f"assembling {path.name}"))
            self.harness_objects.append(obj)
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for future in [pool.submit(_run, cmd, what, board, build_dir) for cmd, what in jobs]:
                future.result()

    def link(self, name: str, samples: list[bytes] | None) -> Path:
        """Link an ELF; `samples` (None: firmware without compiled-in samples) go into .mf_inputs."""
        extra = []
        if samples is not None:
            blob = self.dir / f"{name}.bin"
            blob.write_bytes(b"".join(samples))
            asm = self.dir / f"{name}_samples.S"
            asm.write_text(_samples_s(len(samples), blob.name))
            sobj = self.dir / f"{name}_samples.o"
            _run([self.gcc, *self.board.arch_flags, "-I", str(self.dir), "-c", str(asm), "-o", str(sobj)],
                 "assembling the samples", self.board, self.dir)
            extra.append(str(sobj))
        elf = self.dir / f"{name}.elf"
        cmd = [self.gcc, *self.board.arch_flags, "-nostartfiles", "--specs=nano.specs", "-Wl,--gc-sections",
               "-L", str(FIRMWARE_DIR), "-T", self.board.linker_script, f"-Wl,-Map={elf.with_suffix('.map')}",
               *map(str, self.harness_objects), *map(str, self.model_objects), *extra, *LIBS, "-o", str(elf)]
        done = subprocess.run(cmd, check=False, cwd=self.dir, capture_output=True, text=True)
        if done.returncode != 0:
            reason = "it does not fit the board's memory" if "overflow" in done.stderr.lower() else "linking failed"
            raise TargetError(f"{self.board.target}: {reason}:\n{' '.join(cmd)}\n{done.stderr[-4000:]}")
        return elf

    def symbol(self, elf: Path, name: str) -> int:
        done = _run([self.tools["arm-none-eabi-nm"], str(elf)], "reading the symbol table", self.board)
        for line in done.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[2] == name:
                return int(parts[0], 16) & ~1  # Thumb: the instruction address is even
        raise TargetError(f"{self.board.target}: symbol {name} missing from {elf.name}")

    def sections(self, elf: Path) -> dict[str, tuple[int, int]]:
        done = _run([self.tools["arm-none-eabi-size"], "-A", "-d", str(elf)], "reading section sizes", self.board)
        sections = {}
        for line in done.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
                sections[parts[0]] = (int(parts[1]), int(parts[2]))
        return sections


def build_firmware(model_dir: str | Path, board: Board, build_dir: str | Path, parts: FirmwareParts, *,
                   cflags: Sequence[str] | None = None, need_qemu: bool = True) -> _Firmware:
    """Compile a generated model folder with `parts` for `board` into `build_dir` (after checking the
    tools); link ELFs from the result with `.link(name, None)`. The one build path of every firmware."""
    model_dir, build_dir = Path(model_dir), Path(build_dir)
    read_interface(model_dir)  # a clear error for a folder that is not a generated model
    tools = _require_tools(board, count_instructions=False, need_qemu=need_qemu)
    _check_newlib(tools, board)
    build_dir.mkdir(parents=True, exist_ok=True)
    return _Firmware(model_dir, board, tools, build_dir, list(cflags) if cflags is not None else list(DEFAULT_CFLAGS),
                     parts)


_SECTION_KIND = {".text": "text", ".rodata": "rodata", ".ARM.extab": "rodata", ".ARM.exidx": "rodata",
                 ".data": "data", ".bss": "bss"}


def _size_summary(sections: dict[str, tuple[int, int]]) -> dict[str, int]:
    sizes = {"text": 0, "rodata": 0, "data": 0, "bss": 0}
    for name, (size, _addr) in sections.items():
        kind = _SECTION_KIND.get(name)
        if kind:
            sizes[kind] += size
    return sizes


_MAP_ENTRY = re.compile(r"^ (\S+)\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+)(?:[ \t]+(.*))?$", re.MULTILINE)


def _map_breakdown(map_text: str) -> dict[str, dict[str, int]]:
    """Bytes per part (model / harness / library) and kind, from the input-section lines of a GNU ld map."""
    start = map_text.find("Linker script and memory map")
    stop = map_text.find("\nOUTPUT(", start)
    body = map_text[start:stop if stop > 0 else len(map_text)]
    parts = {p: {"text": 0, "rodata": 0, "data": 0, "bss": 0} for p in ("model", "harness", "library")}
    # Walk output sections in order: each starts at a line beginning with its name in column 0.
    chunks = re.split(r"^(?=\.\S|/DISCARD/)", body, flags=re.MULTILINE)
    for chunk in chunks:
        header = chunk.split(None, 1)[0] if chunk.strip() else ""
        current = _SECTION_KIND.get(header)
        if current is None:
            continue
        for name, _addr, size, origin in _MAP_ENTRY.findall(chunk):
            origin = (origin or "").strip()
            nbytes = int(size, 16)
            if not nbytes or name.startswith("0x"):
                continue
            if name == "*fill*" or origin == "linker stubs":
                part = "harness"
            elif ".a(" in origin or origin.endswith(".a"):
                part = "library"
            elif Path(origin).name.startswith("model__"):
                part = "model"
            else:
                part = "harness"
            parts[part][current] += nbytes
    return parts


# --------------------------------------------------------------------------------------------------
# Running


def _qemu_escape(path: Path) -> str:
    return str(path).replace(",", ",,")


_EXCEPTIONS = {2: "NMI", 3: "HardFault", 4: "MemManage fault", 5: "BusFault", 6: "UsageFault", 11: "SVCall",
               12: "DebugMonitor", 14: "PendSV", 15: "SysTick"}


def _run_qemu(board: Board, elf: Path, plugin: Path | None, begin: int, end: int, timeout_s: float,
              tag: str, plugin_mode: str, mark: int | None = None
              ) -> tuple[str, list[int] | None, list[list[int]] | None]:
    """Console text, then (with the plugin) each region's count and the counts at the marks inside it."""
    console = elf.with_name(f"{tag}_console.txt")
    counts = elf.with_name(f"{tag}_counts.txt")
    for stale in (console, counts):
        stale.unlink(missing_ok=True)
    cmd = [shutil.which("qemu-system-arm") or "qemu-system-arm", "-M", board.machine, "-nographic",
           "-monitor", "none", "-serial", "null",
           "-semihosting-config", "enable=on,target=native,chardev=mfconsole",
           "-chardev", f"file,id=mfconsole,path={_qemu_escape(console)}",
           "-kernel", str(elf)]
    if plugin is not None:
        args = f"begin={begin:#x},end={end:#x},out={_qemu_escape(counts)},mode={plugin_mode}"
        if mark is not None:
            args += f",mark={mark:#x}"
        cmd += ["-plugin", f"{_qemu_escape(plugin)},{args}"]
    try:
        done = subprocess.run(cmd, check=False, cwd=elf.parent, capture_output=True, text=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:  # subprocess.run has killed QEMU by now
        raise TargetError(f"{board.target} ({board.machine}): the firmware did not finish within {timeout_s:g} s; "
                          f"QEMU was stopped (a hang, or raise timeout_s)") from exc
    except OSError as exc:
        raise TargetError(f"{board.target} ({board.machine}): QEMU could not start: {exc}") from exc
    text = console.read_text(errors="replace") if console.is_file() else ""
    fault = re.search(r"^F (\d+) ([0-9a-f]+)$", text, re.MULTILINE)
    if fault:
        number = int(fault.group(1))
        raise TargetError(f"{board.target} ({board.machine}): the firmware stopped on exception {number} "
                          f"({_EXCEPTIONS.get(number, 'unexpected')}) at pc=0x{fault.group(2)}")
    if done.returncode != 0:
        raise TargetError(f"{board.target} ({board.machine}): QEMU exited with status {done.returncode}:\n"
                          f"{' '.join(cmd)}\n{done.stderr[-4000:]}\n{text[-2000:]}")
    if "MF:DONE" not in text:
        raise TargetError(f"{board.target} ({board.machine}): the firmware ended without finishing its runs:\n"
                          f"{text[-2000:]}")
    regions, marks = None, None
    if plugin is not None:
        raw = counts.read_text() if counts.is_file() else ""
        regions, marks, pending = [], [], []
        for kind, value in re.findall(r"^([RM]) (\d+)$", raw, re.MULTILINE):
            if kind == "M":
                pending.append(int(value))
            else:  # a region's marks come before its count
                regions.append(int(value))
                marks.append(pending)
                pending = []
        total = re.search(r"^T (\d+) (\d+) (\d+)$", raw, re.MULTILINE)
        if total and (int(total.group(2)) or int(total.group(3))):
            raise TargetError(f"{board.target}: the benchmark markers did not pair up ({raw[-500:]!r})")
    return text, regions, marks


def _parse_console(text: str, count: int, output_bytes: list[int], board: Board
                   ) -> tuple[list[tuple[bytes, ...]], tuple[int, int, int]]:
    chunks: dict[tuple[int, int], list[str]] = {}
    for sample, index, hexdata in re.findall(r"^O (\d+) (\d+) ([0-9a-f]*)$", text, re.MULTILINE):
        chunks.setdefault((int(sample), int(index)), []).append(hexdata)
    outputs = []
    for n in range(count):
        tensors = []
        for k, nbytes in enumerate(output_bytes):
            data = bytes.fromhex("".join(chunks.get((n, k), [])))
            if len(data) != nbytes:
                raise TargetError(f"{board.target}: sample {n} output {k}: got {len(data)} bytes, "
                                  f"expected {nbytes}")
            tensors.append(data)
        outputs.append(tuple(tensors))
    stack = re.search(r"^S (\d+) (\d+) (\d+)$", text, re.MULTILINE)
    if not stack:
        raise TargetError(f"{board.target}: the firmware reported no stack measurement")
    return outputs, (int(stack.group(1)), int(stack.group(2)), int(stack.group(3)))


def run_on_qemu(model_dir: str | Path, board: str, inputs: Sequence, *, cflags: Sequence[str] | None = None,
                timeout_s: float = 120.0, count_instructions: bool = True, stack_samples: int = 4,
                max_samples_per_run: int | None = None, build_dir: str | Path | None = None,
                plugin_mode: str = "tb", profile: bool = False, stateful: bool = False) -> QemuResult:
    """Build `model_dir` (a generated model folder) for `board` ("qemu-m4" | "qemu-m7"), run every sample
    of `inputs` under QEMU, and return outputs and measurements.

    inputs          one entry per sample: bytes holding all model inputs back to back, or a sequence with
                    one bytes-like object per model input (numpy arrays are taken by .tobytes())
    cflags          optimisation and extra flags (default -O2); the CPU/FPU flags of the board and
                    -std=c99 -Wall -Wextra -Werror are always added
    timeout_s       per QEMU run; on expiry QEMU is killed and TargetError raised
    stack_samples   inferences per firmware run whose stack use is measured (painting costs time)
    max_samples_per_run  cap on samples per firmware image; they are also split to fit the board's flash
    build_dir       keep the build there (default: a temporary folder, removed afterwards)
    plugin_mode     "tb" (one add per translated block; default) or "insn" (one per instruction; slower)
    profile         also count each op (QemuResult.op_instructions): the model is compiled with
                    -DMF_PROFILE, which calls a marker function between its ops (2 instructions each)
    stateful        the samples are requests to a model that keeps state between calls (the on-device
                    learner): they must all run in one firmware image, after one mf_init
    """
    if board not in BOARDS:
        raise TargetError(f"unknown board {board!r}; choose one of {', '.join(BOARDS)}")
    spec = BOARDS[board]
    if stack_samples < 0:
        raise TargetError(f"stack_samples must be >= 0, not {stack_samples}")
    if plugin_mode not in ("tb", "insn"):
        raise TargetError(f"plugin_mode must be 'tb' or 'insn', not {plugin_mode!r}")
    if profile and not count_instructions:
        raise TargetError("a profile needs count_instructions=True")
    model_dir = Path(model_dir)
    input_bytes, output_bytes = read_interface(model_dir)
    samples = _pack_samples(inputs, input_bytes)
    tools = _require_tools(spec, count_instructions)
    _check_newlib(tools, spec)
    plugin = build_plugin(tools.get(HOST_CC)) if count_instructions else None

    temp = None
    if build_dir is None:
        temp = tempfile.TemporaryDirectory(prefix=f"microforge-{board}-")
        work = Path(temp.name)
    else:
        work = Path(build_dir)
        work.mkdir(parents=True, exist_ok=True)
    try:
        flags = list(cflags) if cflags is not None else list(DEFAULT_CFLAGS)
        fw = _Firmware(model_dir, spec, tools, work, flags + (["-DMF_PROFILE"] if profile else []),
                       harness_parts(len(input_bytes), len(output_bytes), stack_samples))
        # An image without samples gives the sizes and how much flash is left for samples.
        bare = fw.link("fw_bare", [])
        sections = fw.sections(bare)
        sizes = _size_summary(sections)
        breakdown = _map_breakdown(bare.with_suffix(".map").read_text(errors="replace"))
        used_flash = sizes["text"] + sizes["rodata"] + sizes["data"] + sections.get(".mf_inputs", (0, 0))[0]
        stride = max(1, sum(input_bytes))
        per_run = (spec.flash_bytes - used_flash - _FLASH_SLACK) // stride
        if samples and per_run < 1:
            raise TargetError(f"{board}: one sample ({stride} bytes) does not fit in the {spec.flash_bytes} bytes "
                              f"of flash next to the firmware ({used_flash} bytes)")
        if max_samples_per_run is not None:
            per_run = max(1, min(per_run, int(max_samples_per_run)))
        batches = [samples[i:i + per_run] for i in range(0, len(samples), per_run)] or [[]]
        if stateful and len(batches) > 1:
            raise TargetError(f"{board}: the {len(samples)} requests ({stride} bytes each) do not fit in one image "
                              f"beside the firmware: {per_run} do")

        outputs: list[tuple[bytes, ...]] = []
        instructions: list[int] = []
        op_instructions: list[list[int]] = []
        init_instructions = None
        stack_bytes, stack_measured = 0, 0
        for b, batch in enumerate(batches):
            elf = fw.link(f"fw_{b}", batch)
            begin, end = fw.symbol(elf, "mf_bench_begin"), fw.symbol(elf, "mf_bench_end")
            mark = fw.symbol(elf, "mf_profile_mark") if profile else None
            text, regions, marks = _run_qemu(spec, elf, plugin, begin, end, timeout_s, f"run{b}", plugin_mode,
                                             mark)
            got, (stack, measured, window) = _parse_console(text, len(batch), output_bytes, spec)
            if stack >= window:
                raise TargetError(f"{board}: the stack overflowed into .bss (all {window} free bytes of RAM used)")
            outputs += got
            stack_bytes = max(stack_bytes, stack)
            stack_measured += measured
            if regions is not None:
                if len(regions) != 2 + len(batch):
                    raise TargetError(f"{board}: expected {2 + len(batch)} counted regions, got {len(regions)}")
                calibration = regions[0]
                if init_instructions is None:
                    init_instructions = regions[1] - calibration - 1
                instructions += [r - calibration - 1 for r in regions[2:]]
                for at in marks[2:] if profile else []:
                    if len(at) < 2:
                        raise TargetError(f"{board}: the profile markers were not reached (is model.c generated "
                                          f"by this version of microforge?)")
                    # op k runs between marks k and k + 1, which add their bx lr and the next bl
                    op_instructions.append([b - a - 2 for a, b in zip(at, at[1:])])
        return QemuResult(
            board=board,
            outputs=[b"".join(t) for t in outputs],
            output_tensors=outputs,
            instructions=instructions,
            init_instructions=init_instructions,
            flash_bytes=sizes["text"] + sizes["rodata"] + sizes["data"],
            ram_bytes=sizes["data"] + sizes["bss"],
            stack_bytes=stack_bytes,
            breakdown=breakdown,
            op_instructions=op_instructions,
            stack_samples=stack_measured,
            firmware_runs=len(batches),
            build_dir=None if temp is not None else work,
            **sizes,
        )
    finally:
        if temp is not None:
            temp.cleanup()
