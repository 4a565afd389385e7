# The two promises of the README:
#   make demo   install and open the app on the built-in simulated exchange
#   make test   install everything the tests need and run them
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stamp-install

.PHONY: demo test install system-test system-demo lint check-core pytest soak bench bench-quick package clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

system-test:
	PYTHON=$(PYTHON) scripts/setup-system.sh test

system-demo:
	PYTHON=$(PYTHON) scripts/setup-system.sh demo

demo: system-demo install
	$(BIN)/guard-app demo

lint: install
	$(BIN)/ruff check guard_app tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/vulture guard_app tests benchmarks vulture_allow.py --min-confidence 60

pytest: install
	scripts/with-keyring.sh $(BIN)/python -m pytest -q -m "not soak"

test: system-test install lint pytest

soak: install
	scripts/with-keyring.sh $(BIN)/python -m pytest -q -m soak

# The kill benchmark stores keys in the OS keyring: both run in a throwaway one.
bench: install
	scripts/with-keyring.sh $(BIN)/python benchmarks/run_all.py

bench-quick: install
	scripts/with-keyring.sh $(BIN)/python benchmarks/run_all.py --quick --out benchmarks/RESULTS-quick.md

# One-folder desktop build in dist/guard-app/ (PyInstaller), then a start-up check.
package: install
	$(BIN)/python -m pip install -q -e '.[package]'
	$(BIN)/pyinstaller --noconfirm --clean --distpath dist --workpath build/pyinstaller packaging/guard-app.spec
	QT_QPA_PLATFORM=offscreen dist/guard-app/guard-app --version
	QT_QPA_PLATFORM=offscreen dist/guard-app/guard-app run --once --config /nonexistent/guard-app.toml; \
	    test $$? -eq 2 || { echo "packaged app did not start its CLI" >&2; exit 1; }
	du -sh dist/guard-app

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
