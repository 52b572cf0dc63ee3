# `make serve` and `make test` set up .venv themselves on first use (and again when
# pyproject.toml changes), so a fresh clone needs nothing else.
VENV := .venv
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: serve test bench gpu-check device-check clean

$(STAMP): pyproject.toml scripts/setup_venv.sh
	bash scripts/setup_venv.sh test
	touch $@

serve: $(STAMP)
	$(VENV)/bin/sana-stream serve $(ARGS)

test: $(STAMP)
	bash scripts/ensure_chromium.sh
	bash scripts/ensure_gstreamer.sh
	bash scripts/ensure_coturn.sh
	bash scripts/ensure_xvfb.sh
	bash scripts/ensure_cxx.sh
	bash scripts/ensure_netns.sh
	$(VENV)/bin/python -m pytest $(ARGS)

# on a machine with an NVIDIA GPU: the GPU tests and the real-size benchmark in under 10 minutes (docs/gpu.md);
# ARGS="--dry-run" checks the script on any machine
gpu-check: $(STAMP)
	bash scripts/gpu_check.sh $(ARGS)

# on an offline GPU machine with a CUDA PyTorch: its own python3, wheels from .whl/ (scripts/device_wheels.sh), at
# most 8 minutes (docs/gpu.md); ARGS="--dry-run" runs the same steps on the CPU with .venv, results in a temp folder
device-check:
	@case " $(ARGS) " in *" --dry-run "*) $(MAKE) --no-print-directory $(STAMP) && \
		PYTHON=$(VENV)/bin/python bash scripts/device_check.sh $(ARGS) ;; \
		*) bash scripts/device_check.sh $(ARGS) ;; esac

bench: $(STAMP)
	for b in engine pipeline server backends controlnet taesana scale; do $(VENV)/bin/python -m benchmarks.$$b $(ARGS) || exit 1; done

clean:
	rm -rf $(VENV) .venv-gui-cv2 .pytest_cache tests/artifacts
