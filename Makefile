# Keel — the two commands: `make run` and `make test`. Each installs missing Debian packages first.
JOBS ?= 2
SHELL := /bin/bash

.PHONY: all deps build run test test-asan fuzz-build fuzz fuzz-ci bench-deps bench clean

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
	  bash scripts/test-summary.sh build; echo; \
	  grep -E 'tests passed|tests failed out of|Total Test time' build/ctest.out | tail -n 2; exit $$rc

test-asan: deps
	cmake --preset asan-ubsan >/dev/null
	cmake --build --preset asan-ubsan -j $(JOBS)
	ctest --preset asan-ubsan

# libFuzzer targets (clang, ASan+UBSan; docs/security.md). `make fuzz FUZZ_SECONDS=600` runs each
# target that long; fuzz-ci is the short bounded pass CI runs (fails on any finding).
FUZZ_SECONDS ?= 60
FUZZ_CI_SECONDS ?= 20

fuzz-build: deps
	cmake --preset fuzz >/dev/null
	cmake --build --preset fuzz -j $(JOBS)

fuzz: fuzz-build
	bash tests/fuzz/run_fuzz.sh build-fuzz $(FUZZ_SECONDS)

fuzz-ci: fuzz-build
	bash tests/fuzz/run_fuzz.sh build-fuzz $(FUZZ_CI_SECONDS)

# Benchmarks, Keel vs QEMU (bench/, docs/performance.md): ~17 min, never part of make test.
bench-deps: deps
	@bash scripts/install-deps.sh bench

bench: build bench-deps
	bash bench/run_all.sh build/keel

clean:
	rm -rf build build-*
