PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-slow test-all demo lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	# RobustBench's architecture code is the reference of tests/test_robustbench.py; its own dependencies are not needed
	$(BIN)/python -m pip install -q --no-deps robustbench==1.1.1
	touch $(STAMP)

# the everyday suite (under 6 minutes on 2 CPU cores); the slow set holds larger models and longer runs
test: $(STAMP)
	$(BIN)/ruff check harden plugins tests benchmarks
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

test-all: test test-slow

demo: $(STAMP)
	$(BIN)/harden apply resnet18 --num-classes 10 --input-size 32 --upsample 2 --stride-mod -o demo-out/resnet18-rcm.safetensors --force
	$(BIN)/harden inspect demo-out/resnet18-rcm.safetensors
	$(BIN)/harden run recipes/quickstart-fmnist.yaml --out demo-out/quickstart-fmnist

lint: $(STAMP)
	$(BIN)/ruff check harden plugins tests benchmarks

clean:
	rm -rf $(VENV) demo-out .pytest_cache
