# The two commands of microforge. Both set up whatever is missing first.
VENV := .venv
BIN := $(VENV)/bin
# The showcase: a spoken-digit DS-CNN trained on the Free Spoken Digit Dataset, benchmarked on its
# 300 test clips on this machine and on an emulated Cortex-M4.
DEMO_MODEL := models/fsdd/fsdd_dscnn_int8.tflite
FSDD := ../shared/data/fsdd/recordings

.PHONY: setup run test bench clean

setup:
	@scripts/setup.sh

run: setup
	@echo "Spoken digits: a DS-CNN trained on the Free Spoken Digit Dataset (Z. Jackson et al., CC BY-SA 4.0)"
	@$(BIN)/microforge dataset --task kws --fsdd --source $(FSDD) --indices 0-4 --model $(DEMO_MODEL) \
		-o build/fsdd_test
	@$(BIN)/microforge bench --task kws --model $(DEMO_MODEL) --dataset build/fsdd_test \
		--target host --target qemu-m4 --mode all --report build/fsdd_report

test: setup
	@$(BIN)/python -m pytest

bench: setup
	@$(BIN)/python benchmarks/reference_speed.py
	@$(BIN)/python benchmarks/memory.py
	@$(BIN)/python benchmarks/cortex_m.py
	@$(BIN)/microforge bench --suite --report benchmarks/results/mlperf_suite

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
