"""One exception hierarchy for everything microforge reports to its users.

Every error names what is wrong and where (file, op index and type, tensor name), so a user can act on
it without reading a traceback.
"""


class MicroforgeError(Exception):
    """Base class of every error microforge raises on purpose."""


class ModelError(MicroforgeError):
    """The model file or graph is malformed: a bad index, offset, length, shape or value."""


class UnsupportedError(MicroforgeError):
    """The model is valid but uses ops or options microforge does not implement (all listed at once)."""


class InputError(MicroforgeError):
    """Data handed to a model does not fit it: wrong size, dtype or shape."""


class PlanError(MicroforgeError):
    """A memory plan could not be made or failed validation."""


class TargetError(MicroforgeError):
    """Building or running on a target (host compiler, emulator, board) failed."""


class DeviceError(TargetError):
    """A device under test (a board or an emulator on a serial line) answered wrongly or not at all."""
