# kiln — the README's two commands live here.
#   make        build (Release) into build/
#   make test   install what is missing, build, run the whole test suite
#   make demo   install what is missing, build, compile + run the bundled example
#   make install    build, then install the CLI, libraries, headers and CMake package under PREFIX
#                   (default /usr/local; make install PREFIX=~/.local)
#   make sanitize   ASan+UBSan build (clang) in build-san, then its C++ and CLI tests (docs/SECURITY.md)
#   make fuzz       libFuzzer targets in build-fuzz, FUZZ_SECONDS each (default 60; docs/SECURITY.md)
BUILD ?= build
JOBS  ?= $(shell nproc)
CMAKE_FLAGS ?=
PREFIX ?= /usr/local

.PHONY: all build deps test demo install gpu-test clean fixtures sanitize fuzz

all: build

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

deps:
	@scripts/install_deps.sh

test: deps
	$(MAKE) build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

demo: deps
	$(MAKE) build
	@scripts/demo.sh $(BUILD)

# bin/kiln, lib/libkiln_*.a, include/kiln/, lib/cmake/kiln/ (find_package(kiln); README's "C++").
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

# On the GPU machine: builds with CUDA and PyTorch 2.x's libtorch, then runs the GPU tests.
gpu-test:
	@scripts/gpu_test.sh

# Sanitized build: every ASan/UBSan report ends the test that triggered it (-fno-sanitize-recover).
# No Python module: Debian's torch cannot run under a preloaded libasan (docs/SECURITY.md).
SAN_BUILD ?= build-san
sanitize: deps
	@test -f $(SAN_BUILD)/build.ninja || cmake -S . -B $(SAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DKILN_SANITIZE=ON \
	  -DKILN_WITH_CUDA=OFF -DKILN_WITH_PYTHON=OFF $(CMAKE_FLAGS)
	cmake --build $(SAN_BUILD) -j $(JOBS)
	cd $(SAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -j $(JOBS) -E '^cli_bad_input_fuzz$$'

# Fuzzing: FUZZ_SECONDS per target (FUZZ_TARGETS: pt2_fuzz kiln_fuzz npy_fuzz); the corpus grows in
# $(FUZZ_BUILD)/fuzz-corpus across runs; reproducers land in $(FUZZ_BUILD)/fuzz-artifacts.
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
fuzz: deps
	FUZZ_JOBS=$(JOBS) fuzz/run.sh -k -b $(FUZZ_BUILD) -s $(FUZZ_SECONDS) $(FUZZ_TARGETS)

clean:
	rm -rf $(BUILD)
