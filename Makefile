# Keel — the two commands: `make run` and `make test`. Each installs missing Debian packages first.
JOBS ?= 2
SHELL := /bin/bash

.PHONY: all deps build run test asan-build test-asan test-tsan fuzz-build fuzz fuzz-ci ci bench-deps bench clean

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

# The suite under ASan+UBSan (clang 14, build-asan/; the same build holds the libFuzzer
# targets), and the threaded code's tests (label "threads": NBD server, engine, C API) under TSan
# (build-tsan/). The crash explorer, fault sweep and kill tests run at a smaller size there;
# make test runs them at full size. `make ci` is what CI runs (.ci/run).
SAN_ENV = KEEL_CRASH_STATES=1500 KEEL_CRASH_QEMU=2 KEEL_FAULT_INDICES=60 KEEL_KILLS=40 \
          KEEL_NBD_KILLS=20 KEEL_MUTATION_ITERS=100 KEEL_OVERLAP_EVERY=5 KEEL_AMEND_RC_CLUSTER=4k

asan-build: deps
	cmake --preset asan-ubsan >/dev/null
	cmake --build --preset asan-ubsan -j $(JOBS)

test-asan: asan-build
	$(SAN_ENV) ctest --preset asan-ubsan

test-tsan: deps
	cmake --preset tsan >/dev/null
	cmake --build --preset tsan -j $(JOBS)
	$(SAN_ENV) ctest --preset tsan

# libFuzzer targets (docs/security.md), built in build-asan/. `make fuzz FUZZ_SECONDS=1800` runs
# each target that long; fuzz-ci is the short bounded pass CI runs (fails on any finding).
FUZZ_SECONDS ?= 60
FUZZ_CI_SECONDS ?= 20

fuzz-build: deps
	cmake --preset asan-ubsan >/dev/null
	cmake --build --preset asan-ubsan -j $(JOBS) --target fuzzers

fuzz: fuzz-build
	bash tests/fuzz/run_fuzz.sh build-asan $(FUZZ_SECONDS)

fuzz-ci: fuzz-build
	FUZZ_JOBS=$(JOBS) bash tests/fuzz/run_fuzz.sh build-asan $(FUZZ_CI_SECONDS)

ci: test test-asan fuzz-ci test-tsan

# Benchmarks, Keel vs QEMU (bench/, docs/performance.md): ~17 min, never part of make test.
bench-deps: deps
	@bash scripts/install-deps.sh bench

bench: build bench-deps
	bash bench/run_all.sh build/keel

clean:
	rm -rf build build-*
