# The two commands of the README, and their parts. Each installs what it needs (scripts/deps.sh).
#   make demo   a demo fine-tuning job through coordinator, worker and trainer (GPU if present)
#   make test   every test that runs without a GPU (what CI runs)
# Both share one build folder, so the second is incremental after the first.

BUILD ?= build
VENV ?= $(HOME)/.cache/qlorad/venv
# One CUDA architecture keeps CI builds short: the GPU's own when there is one, else Hopper.
CUDA_ARCHS ?= $(shell nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d . | grep -E '^[0-9]+$$' || echo 90)
# nvcc is often installed without being on PATH.
NVCC ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CMAKE_FLAGS ?=
JOBS ?= $(shell nproc)

export QLORAD_VENV := $(VENV)
# Lets ccache share objects between clones of the repository (CI builds a fresh clone).
export CCACHE_BASEDIR := $(CURDIR)
export CCACHE_NOHASHDIR := 1
# The torch side compiles against a precompiled header, which ccache caches only with these.
export CCACHE_SLOPPINESS := pch_defines,time_macros,include_file_mtime,include_file_ctime

.PHONY: demo test deps configure build install unit-test py-test format clean

demo: build
	scripts/demo.sh $(BUILD)

test: build
	scripts/test.sh $(BUILD)

deps:
	scripts/deps.sh >/dev/null

# LibTorch's CMake config prints warnings we cannot act on; its output is kept in the build
# folder and shown only when configuring fails.
configure: deps
	@mkdir -p $(BUILD)
	@cmake -S . -B $(BUILD) -G Ninja -DQLORAD_PYTHON=$(VENV)/bin/python \
	  -DQLORAD_CUDA_ARCHS="$(CUDA_ARCHS)" $(if $(NVCC),-DCMAKE_CUDA_COMPILER=$(NVCC)) \
	  $(CMAKE_FLAGS) >$(BUILD)/configure.log 2>&1 || { cat $(BUILD)/configure.log; exit 1; }
	@echo "configured $(BUILD) (CUDA archs $(CUDA_ARCHS); log in $(BUILD)/configure.log)"

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# make install PREFIX=/opt/qlorad [VENV=/opt/qlorad/venv]: the programs into PREFIX/bin; LibTorch is
# reached through PREFIX/lib/qlorad (cmake/QloradInstall.cmake). Installing LibTorch into a VENV the
# service's user can read (not a home folder) keeps the installed trainer runnable by that user.
PREFIX ?= /usr/local
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

format:
	git ls-files '*.h' '*.cc' '*.cu' '*.cuh' | xargs clang-format -i

clean:
	rm -rf $(BUILD)
