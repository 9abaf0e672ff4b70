# The commands of the README. Each creates .venv/ on first use and installs what it needs into it.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
TEST_STAMP := $(VENV)/.test-installed-stamp
SHARED ?= ../shared

.PHONY: test test-all lint demo pipeline install install-test clean-venv

# `make install` / `make demo`: what running needs. `make test` adds the test extra (TensorFlow for
# the TF-slim converter tests, Ray, timm: several GB) on top.
install: $(STAMP)
install-test: $(TEST_STAMP)

# torch is pinned to the release this machine kind carries on disk; setuptools stays below 81
# because detectron2 (v0.6 and main) imports pkg_resources in model_zoo. opencv-python is added
# only when no OpenCV provides cv2 yet (opencv-python-headless and opencv-python both write cv2/).
$(STAMP): setup.py tools/install_detectron2.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet "setuptools>=77.0.3,<81" wheel
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	if $(PY) -c "import cv2" 2>/dev/null; then $(PY) -m pip install --quiet -e .; \
	else $(PY) -m pip install --quiet -e ".[opencv]"; fi
	$(PY) tools/install_detectron2.py
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(TEST_STAMP)

test: lint
	$(PY) -m pytest -q -m "not slow" tests

test-all: $(TEST_STAMP)
	$(PY) -m pytest -q tests

# ruff.toml holds the rules (E, F, W, I, B; 120 columns); `make test` runs it first, so CI does.
lint: $(TEST_STAMP)
	$(PY) -m ruff check .

demo: $(STAMP)
	$(PY) tools/run_demo.py --output output/demo

clean-venv:
	rm -rf $(VENV)

# `make pipeline`: search -> pretrain (searched, NASNet-A, random) -> export -> detect -> report
# (docs/pipeline.md); rerunning it continues the run in output/pipeline, skipping finished stages.
pipeline: $(STAMP)
	$(PY) tools/run_pipeline.py --config-file configs/pipeline/cifar10_cpu.yaml --output output/pipeline --resume
