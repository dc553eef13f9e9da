# The two commands: `make demo` and `make test`. Both create or reuse .venv, install the project
# (editable, so Ray's processes import it) and generate the protobuf code first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.twinray-installed
PROTOS := $(wildcard protos/twinray/v1/*.proto)
PROTO_OUT := $(PROTOS:.proto=_pb2.py)

export RAY_USAGE_STATS_ENABLED ?= 0
export RAY_AUTH_MODE ?= disabled

.PHONY: install proto demo check test benchmark clean

install: $(STAMP) proto

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

proto: $(PROTO_OUT)

protos/twinray/v1/%_pb2.py: protos/twinray/v1/%.proto $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=protos --pyi_out=protos --grpc_python_out=protos $<

demo: install
	$(BIN)/twinray demo

# Lint, format and the import layers (contracts in pyproject.toml), then the whole suite.
check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

test: check
	$(BIN)/python -m pytest -q tests

benchmark: install
	$(BIN)/python -m benchmarks.segmentation_serving
	$(BIN)/python -m benchmarks.normal_synthesis_serving
	$(BIN)/python -m benchmarks.detection_serving
	$(BIN)/python -m benchmarks.defect_generation

clean:
	rm -rf $(VENV) .twinray reports .import_linter_cache protos/twinray/v1/*_pb2*.py protos/twinray/v1/*_pb2.pyi
