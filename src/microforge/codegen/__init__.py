"""The C backend: planned graph -> model-specific C99, built for the host or an emulated Cortex-M."""

from microforge.codegen.emit import TARGETS, GeneratedModel, generate

__all__ = ["TARGETS", "GeneratedModel", "generate", "compile_host"]


def compile_host(*args, **kwargs):
    """See microforge.codegen.host.compile_host."""
    from microforge.codegen.host import compile_host as build

    return build(*args, **kwargs)
