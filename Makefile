# Keel — the two commands: `make run` and `make test`. Each installs missing Debian packages first.
JOBS ?= 2
SHELL := /bin/bash

.PHONY: all deps build run test test-asan clean

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	cmake --preset release >/dev/null
	cmake --build --preset release -j $(JOBS)

run: build
	@bash scripts/demo.sh

test: build
	@set -o pipefail; ctest --preset release 2>&1 | tee build/ctest.out; rc=$$?; \
	  bash scripts/test-summary.sh build; echo; tail -n 3 build/ctest.out; exit $$rc

test-asan: deps
	cmake --preset asan-ubsan >/dev/null
	cmake --build --preset asan-ubsan -j $(JOBS)
	ctest --preset asan-ubsan

clean:
	rm -rf build build-*
