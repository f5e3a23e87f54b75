"""Targets the generated C is built for and measured on: emulated Cortex-M boards (qemu)."""
