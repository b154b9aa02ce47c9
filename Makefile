# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# nanopyx (tests/test_resolution_nanopyx.py) gets its own environment: it installs opencv-python, whose bundled
# Qt libraries break napari's PyQt5 when both load in one process.
NANOPYX_VENV := .venv-nanopyx
NANOPYX_STAMP := $(NANOPYX_VENV)/.installed-stamp
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONHASHSEED := 0

.PHONY: demo test test-slow benchmark install clean xvfb-deps

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[cpu,test,napari]"
	touch $(STAMP)

$(NANOPYX_STAMP): tests/nanopyx-requirements.txt
	test -x $(NANOPYX_VENV)/bin/python || $(PYTHON) -m venv $(NANOPYX_VENV)
	$(NANOPYX_VENV)/bin/python -m pip install --quiet -r tests/nanopyx-requirements.txt
	touch $(NANOPYX_STAMP)

# The napari widget test (tests/test_napari.py) needs an X server and Qt's xcb libraries (docs/napari.md).
xvfb-deps:
	command -v Xvfb >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y xvfb libxcb-icccm4 libxcb-keysyms1 \
		libxcb-xinerama0 libxcb-image0 libxcb-render-util0 libxkbcommon-x11-0 libxcb-shape0)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/dfcan demo

test: $(STAMP) $(NANOPYX_STAMP) xvfb-deps
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow" tests

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow tests

benchmark: $(STAMP)
	$(BIN)/dfcan benchmark all

clean:
	rm -rf $(VENV) $(NANOPYX_VENV) build *.egg-info
