# The two commands of the README. Both create .venv/ on first use and install everything into it.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
SHARED ?= ../shared

.PHONY: test test-all lint demo install clean-venv

install: $(STAMP)

# torch is pinned to the release this machine kind carries on disk; setuptools stays below 81
# because detectron2 (v0.6 and main) imports pkg_resources in model_zoo.
$(STAMP): setup.py tools/install_detectron2.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet "setuptools>=77.0.3,<81" wheel
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) tools/install_detectron2.py
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

test-all: $(STAMP)
	$(PY) -m pytest -q tests

# ruff.toml holds the rules (E, F, W, I, B; 120 columns). Separate from `test` on purpose.
lint: $(STAMP)
	$(PY) -m ruff check .

demo: $(STAMP)
	$(PY) tools/run_demo.py --output output/demo

clean-venv:
	rm -rf $(VENV)
