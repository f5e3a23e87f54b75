"""Board power models: what one inference of a measured width costs at each clock of a board.

The emulator gives exact executed instructions per inference. A board turns them into time and energy:

    latency = instructions x cycles_per_instruction / f
    power   = scale x supply_v x (static_ma + ua_per_mhz[range] / 1000 x f)      (f in MHz)
    energy  = power x latency

`ua_per_mhz` is the datasheet's typical run-mode current per MHz in the voltage range (STM32L4) or
voltage scale (STM32F7) the clock needs; it falls with the core voltage because the core's dynamic
current is C x VCORE x f and the LDO passes that current through. `static_ma` is the part that does not
scale with the clock (regulator, flash, PLL, leakage). `scale` calibrates the datasheet's current to a
measured power when there is one (the Cortex-M4 board) and is 1 otherwise.

Where the constants come from. The currents below are ST's datasheet typicals, rounded; each says which
table it stands for (check them against the datasheet revision of your part). For the Cortex-M4 board only their ratios
matter, because the 120 MHz point is calibrated to the measured 40.7 mW of src/microforge/bench/energy.py;
for the Cortex-M7 board the absolute values are used as they are (no measured power exists here), so
its energies are datasheet estimates with "all peripherals disabled" and read low next to a real board
(the Cortex-M4's measured power is 1.48 x its datasheet current).
"""

from __future__ import annotations

from dataclasses import dataclass

from microforge.errors import InputError


@dataclass(frozen=True)
class Clock:
    """One clock a board runs the inference at, with the regulator setting that clock needs."""
    mhz: int
    regulator: str      # the voltage range / scale, as the reference manual names it
    vcore: float        # nominal core voltage of that range, V
    ua_per_mhz: float   # datasheet typical run-mode current per MHz in that range, µA/MHz


@dataclass(frozen=True)
class Board:
    """A board's clocks and power model for one core; see the module docstring for the formulas.

    If `reference_mhz` and `reference_mw` are set, the datasheet current is scaled so that the model
    gives exactly `reference_mw` at `reference_mhz` (a measured power); the other clocks keep the
    datasheet's ratios to it.
    """
    core: str
    name: str
    supply_v: float                 # V
    static_ma: float                # mA, the clock-independent current
    cycles_per_instruction: float
    clocks: tuple[Clock, ...]       # fastest first
    reference_mhz: int | None = None
    reference_mw: float | None = None

    def __post_init__(self):
        if len(self.clocks) < 4:
            raise InputError(f"board {self.name}: give at least 4 clocks, got {len(self.clocks)}")
        if self.reference_mhz is not None:
            self.clock(self.reference_mhz)

    @property
    def frequencies(self) -> tuple[int, ...]:
        """The board's clocks in MHz, fastest first."""
        return tuple(c.mhz for c in self.clocks)

    def clock(self, mhz) -> Clock:
        """The clock point at `mhz`; InputError naming the board's clocks if it has none there."""
        for c in self.clocks:
            if c.mhz == mhz:
                return c
        raise InputError(f"{self.name} ({self.core}) has no {mhz} MHz clock point; it has "
                         f"{', '.join(f'{f} MHz' for f in self.frequencies)}")

    def _datasheet_ma(self, mhz) -> float:
        return self.static_ma + self.clock(mhz).ua_per_mhz * mhz / 1000.0

    @property
    def scale(self) -> float:
        """Measured power / datasheet power at the reference clock (1 without a reference)."""
        if self.reference_mhz is None or self.reference_mw is None:
            return 1.0
        return self.reference_mw / (self.supply_v * self._datasheet_ma(self.reference_mhz))

    def power_mw(self, mhz) -> float:
        """Power while inferring at `mhz`, mW."""
        return self.scale * self.supply_v * self._datasheet_ma(mhz)

    def latency_ms(self, instructions, mhz) -> float:
        """Time of `instructions` executed instructions at `mhz`, ms."""
        self.clock(mhz)
        return instructions * self.cycles_per_instruction / (mhz * 1000.0)

    def energy_uj(self, instructions, mhz) -> float:
        """Energy of `instructions` executed instructions at `mhz`, µJ (mW x ms = µJ)."""
        return self.power_mw(mhz) * self.latency_ms(instructions, mhz)


# STM32L4R5ZI on NUCLEO-L4R5ZI, the MLPerf Tiny reference board (Cortex-M4F, up to 120 MHz).
# Clocks and ranges: RM0432 (STM32L4+ reference manual), section "Dynamic voltage scaling management":
# range 1 boost mode up to 120 MHz (VCORE 1.28 V), range 1 normal mode up to 80 MHz (1.20 V), range 2 up
# to 26 MHz (1.00 V); 48 MHz is a range 1 normal clock (range 2 stops at 26 MHz).
# Currents: DS12023 (STM32L4R5xx/L4S5xx datasheet), section 6.3.5 "Supply current characteristics",
# table "Current consumption in Run mode, code with data processing running from Flash, ART enable
# (Cache ON Prefetch OFF)", typical at 25 °C: of the order of 125 / 115 / 100 µA/MHz in range 1 boost /
# range 1 / range 2 (ST's headline figure for the series is 110 µA/MHz) and a few hundred µA not scaling
# with the clock, read from the low-frequency rows. Datasheet typicals, rounded.
# Calibration: src/microforge/bench/energy.py uses 40.7 mW measured at 120 MHz and VDD = 1.8 V (the
# mean of MLPerf Tiny v0.5's reference energy runs), about 1.48 x the datasheet figure, because the
# board runs real code with its peripherals on; the model is scaled to it, so the 120 MHz point here
# equals energy.py's REFERENCE_BOARD and the lower clocks follow the datasheet's current ratios.
# One cycle per instruction, as energy.py assumes: single-cycle ALU/MAC from zero-wait-state memory (the
# ART accelerator hides most flash wait states); it is optimistic for loads and taken branches.
STM32L4R5 = Board(
    core="cortex-m4",
    name="NUCLEO-L4R5ZI (STM32L4R5, Cortex-M4F)",
    supply_v=1.8,
    static_ma=0.3,
    cycles_per_instruction=1.0,
    clocks=(
        Clock(120, "range 1 boost", 1.28, 125.0),
        Clock(80, "range 1 normal", 1.20, 115.0),
        Clock(48, "range 1 normal", 1.20, 115.0),
        Clock(26, "range 2", 1.00, 100.0),
    ),
    reference_mhz=120,
    reference_mw=40.7,
)

# STM32F746 (e.g. NUCLEO-F746ZG, STM32F746G-DISCO; Cortex-M7, up to 216 MHz), VDD = 3.3 V.
# Clocks and scales: DS10916 (STM32F745xx/F746xx datasheet), table "General operating conditions":
# scale 1 up to 180 MHz, 216 MHz with over-drive; scale 2 up to 168 MHz (180 with over-drive); scale 3
# up to 144 MHz. VCORE: typical V12 of each scale from the same table, about 1.32 V (scale 1), 1.26 V
# (scale 2), 1.14 V (scale 3); over-drive raises scale 1 further (taken as 1.38 V).
# Currents: DS10916 section 5.3.6 "Supply current characteristics", table "Typical and maximum current
# consumption in Run mode, code with data processing running from Flash memory (ART ON, L1-cache ON),
# regulator ON", all peripherals disabled, typical at 25 °C: about 100 mA at 216 MHz, 72 mA at 168 MHz,
# 57 mA at 144 MHz, i.e. about 4 mA static plus 0.44 / 0.40 / 0.36 mA per MHz, scaling with VCORE.
# Datasheet typicals, rounded; not calibrated to a measurement.
# One cycle per instruction, as for the Cortex-M4, so the two cores' figures differ only by their
# instruction counts and power: the M7 dual-issues (CoreMark/MHz is about 1.5 x the M4's), which would
# lower it, but at 216 MHz the flash needs 7 wait states and cache misses stall, which raise it; with no
# cycle-accurate model of either we keep the same, documented assumption.
STM32F746 = Board(
    core="cortex-m7",
    name="STM32F746 (Cortex-M7)",
    supply_v=3.3,
    static_ma=4.0,
    cycles_per_instruction=1.0,
    clocks=(
        Clock(216, "scale 1 + over-drive", 1.38, 440.0),
        Clock(168, "scale 2", 1.26, 400.0),
        Clock(144, "scale 3", 1.14, 365.0),
        Clock(72, "scale 3", 1.14, 365.0),
    ),
)

BOARDS: dict[str, Board] = {"cortex-m4": STM32L4R5, "cortex-m7": STM32F746}


def board_for(core: str, boards: dict[str, Board] | None = None) -> Board:
    """The board of `core`; InputError naming the known cores if there is none."""
    boards = BOARDS if boards is None else boards
    if core not in boards:
        raise InputError(f"no board model for core '{core}'; known cores: {', '.join(sorted(boards))}")
    return boards[core]
