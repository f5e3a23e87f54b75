"""Published MLPerf Tiny results that our numbers are set beside in reports.

The closed-division reference submission of MLPerf Tiny v0.5 (2021): NUCLEO-L4R5ZI (STM32L4R5ZIT6,
Cortex-M4F at 120 MHz, operated at 1.8 V), TensorFlow Lite for Microcontrollers v2.3.1 on Mbed OS
bare-metal, GCC-ARM 6-2017-q2. Figures as the EEMBC runner logged them: the median throughput of the
performance run (latency = 1 / throughput), the median energy per inference of the energy run, and the
accuracy run's top-1 (AUC for anomaly detection). Source: the mlcommons/tiny_results_v0.5 repository,
closed/reference/results/Nucleo-L4R5ZI/<task>/{performance,energy,accuracy}/ and
closed/reference/systems/Nucleo_L4R5ZI_System_Description.json.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedResult:
    task: str
    system: str
    round: str
    framework: str
    throughput_ips: float
    energy_uj: float
    quality: float  # top-1 accuracy (fraction) or AUC
    source: str

    @property
    def latency_ms(self) -> float:
        return 1000.0 / self.throughput_ips


_SOURCE = "mlcommons/tiny_results_v0.5 closed/reference/results/Nucleo-L4R5ZI"
_SYSTEM = "NUCLEO-L4R5ZI (Cortex-M4F, 120 MHz)"
_FRAMEWORK = "TFLite Micro v2.3.1"

REFERENCE_V05: dict[str, PublishedResult] = {
    "kws": PublishedResult("kws", _SYSTEM, "v0.5", _FRAMEWORK, 5.497, 7373.704, 0.901, f"{_SOURCE}/kws"),
    "vww": PublishedResult("vww", _SYSTEM, "v0.5", _FRAMEWORK, 1.665, 24312.648, 0.854, f"{_SOURCE}/vww"),
    "ic": PublishedResult("ic", _SYSTEM, "v0.5", _FRAMEWORK, 1.420, 29207.010, 0.865, f"{_SOURCE}/ic"),
    "ad": PublishedResult("ad", _SYSTEM, "v0.5", _FRAMEWORK, 99.487, 416.312, 0.86, f"{_SOURCE}/ad"),
}


@dataclass(frozen=True)
class PeerInstructions:
    """Executed instructions per inference of a peer runtime on the same emulated board as ours."""

    task: str
    runtime: str
    board: str
    instructions: int
    arena_bytes: int
    source: str


# Not re-measured here (TFLM's C++ sources are not part of this project): the figures given with the
# C backend's performance targets.
_PEER_SOURCE = ("TFLM (2026 main) + CMSIS-NN, arm-none-eabi-gcc 12.2 -O2, executed instructions counted on "
                "the same QEMU mps2-an386 board")

TFLM_CMSIS_NN_M4: dict[str, PeerInstructions] = {
    "kws": PeerInstructions("kws", "TFLM + CMSIS-NN", "qemu-m4", 7_697_385, 22_820, _PEER_SOURCE),
    "vww": PeerInstructions("vww", "TFLM + CMSIS-NN", "qemu-m4", 24_101_944, 100_708, _PEER_SOURCE),
    "ic": PeerInstructions("ic", "TFLM + CMSIS-NN", "qemu-m4", 29_862_016, 54_996, _PEER_SOURCE),
    "ad": PeerInstructions("ad", "TFLM + CMSIS-NN", "qemu-m4", 582_904, 2_580, _PEER_SOURCE),
}
