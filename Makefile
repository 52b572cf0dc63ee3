# `make serve` and `make test` set up .venv themselves on first use (and again when
# pyproject.toml changes), so a fresh clone needs nothing else.
VENV := .venv
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: serve test bench gpu-check clean

$(STAMP): pyproject.toml scripts/setup_venv.sh
	bash scripts/setup_venv.sh test
	touch $@

serve: $(STAMP)
	$(VENV)/bin/sana-stream serve $(ARGS)

test: $(STAMP)
	bash scripts/ensure_chromium.sh
	bash scripts/ensure_gstreamer.sh
	bash scripts/ensure_coturn.sh
	bash scripts/ensure_netns.sh
	$(VENV)/bin/python -m pytest $(ARGS)

# on a machine with an NVIDIA GPU: the GPU tests and the real-size benchmark in under 10 minutes (docs/gpu.md);
# ARGS="--dry-run" checks the script on any machine
gpu-check: $(STAMP)
	bash scripts/gpu_check.sh $(ARGS)

bench: $(STAMP)
	for b in engine pipeline server backends controlnet taesana scale; do $(VENV)/bin/python -m benchmarks.$$b $(ARGS) || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache tests/artifacts
