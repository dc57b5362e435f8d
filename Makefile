# Two commands do all set-up on a fresh machine:
#   make demo   create .venv, install, train on ELPV solar cells, export, detect, report
#   make test   create .venv, install, run the test suite (CPU; GPU tests skip without a GPU)
#   make peers  anomalib's FastFlow vs ffrt, timed side by side (its own venv; not part of CI;
#               benchmarks/README.md "Peers")
# torch 2.14.1 / torchvision 0.29.1 are pinned in the `train` extra (the trainer and the
# exporter need them; the runtime `ffrt` never imports torch).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test install clean peers

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[cpu,openvino,train,demo,dev,client,metrics]"
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(PY) demo/elpv_demo.py --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

peers:
	$(PYTHON) benchmarks/peers/run_peers.py

clean:
	rm -rf runs .pytest_cache
