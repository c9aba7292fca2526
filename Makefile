# kiln — the README's two commands live here.
#   make        build (Release) into build/
#   make test   install what is missing, build, run the whole test suite
#   make demo   install what is missing, build, compile + run the bundled example
BUILD ?= build
JOBS  ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all build deps test demo gpu-test clean fixtures

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

# On the GPU machine: builds with CUDA and PyTorch 2.x's libtorch, then runs the GPU tests.
gpu-test:
	@scripts/gpu_test.sh

clean:
	rm -rf $(BUILD)
