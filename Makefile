# The two commands of microforge. Both set up whatever is missing first.
VENV := .venv
BIN := $(VENV)/bin
DEMO_MODEL := models/mlperf_tiny/kws_ref_model_int8.tflite
DEMO_INPUT := models/mlperf_tiny/kws_sample_input_int8_49x10.bin

.PHONY: setup run test bench clean

setup:
	@scripts/setup.sh

run: setup
	@$(BIN)/microforge analyze $(DEMO_MODEL)
	@$(BIN)/microforge plan $(DEMO_MODEL)
	@$(BIN)/microforge run $(DEMO_MODEL) --input $(DEMO_INPUT)
	@$(BIN)/microforge validate $(DEMO_MODEL) --target qemu-m4 --input $(DEMO_INPUT)

test: setup
	@$(BIN)/python -m pytest

bench: setup
	@$(BIN)/python benchmarks/reference_speed.py
	@$(BIN)/python benchmarks/memory.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
