#!/usr/bin/env bash
# Builds the torch side of qlorad on the GPU machine (no gRPC there): configures build-gpu once and
# builds the given targets. Shared by tests/gpu/trainer.sh and bench/e2e/run.sh.
# Usage: tests/gpu/build_torch_side.sh OUT_DIR TARGET...   (configure.log and build.log go to OUT_DIR)
# Exits non-zero, after printing the log's errors, when configuring or building fails.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="$1"
shift
BUILD="$ROOT/build-gpu"
mkdir -p "$OUT"

# PCRE2 headers for the tokenizer: see run.sh (carry .whl/debs).
for deb in "$ROOT"/.whl/debs/*.deb; do [ -e "$deb" ] && dpkg -x "$deb" /; done
# ICU (the tokenizer's NFC normalizer): the GPU machine has ICU's library but no headers or
# pkg-config file. Carry Debian's ICU headers (libicu-dev's usr/include/unicode, into
# .whl/icu/include). They are described in build-gpu/icu-shim, beside the build whose CMake cache
# records their path, so that a later call on the same machine (whatever its OUT_DIR) finds them
# there; their symbol version is set to the installed library's (the C and C++ API
# the normalizer uses is the same across these versions), and a pkg-config file describes both.
SHIM="$BUILD/icu-shim"
if ! pkg-config --exists icu-uc 2>/dev/null; then
  icu_lib="$(ls /usr/lib/x86_64-linux-gnu/libicuuc.so.[0-9]* 2>/dev/null | sort | head -1)"
  icu_major="$(basename "$icu_lib" | sed -E 's/libicuuc\.so\.([0-9]+).*/\1/')"
  if [ -f "$SHIM/pkgconfig/icu-uc.pc" ]; then
    # Made by an earlier call on this machine: untouched, so that nothing rebuilds.
    export PKG_CONFIG_PATH="$SHIM/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  elif [ -n "$icu_lib" ] && [ -d "$ROOT/.whl/icu/include/unicode" ]; then
    rm -rf "$SHIM" && mkdir -p "$SHIM/pkgconfig" && cp -r "$ROOT/.whl/icu/include" "$SHIM/"
    sed -i -E "s/^#define U_ICU_VERSION_MAJOR_NUM [0-9]+/#define U_ICU_VERSION_MAJOR_NUM $icu_major/; \
               s/^#define U_ICU_VERSION_SUFFIX _[0-9]+/#define U_ICU_VERSION_SUFFIX _$icu_major/" \
      "$SHIM/include/unicode/uvernum.h"
    # -L/-l rather than the library's path: CMake would pass a path as a link option, ahead of
    # the objects, where --as-needed drops it.
    mkdir -p "$SHIM/lib" && ln -sf "$icu_lib" "$SHIM/lib/libicuuc.so"
    printf 'Name: icu-uc\nDescription: ICU (described by build_torch_side.sh)\nVersion: %s\nCflags: -isystem %s\nLibs: -L%s -licuuc\n' \
      "$icu_major" "$SHIM/include" "$SHIM/lib" > "$SHIM/pkgconfig/icu-uc.pc"
    export PKG_CONFIG_PATH="$SHIM/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  else
    echo "no ICU headers (carry .whl/icu/include) or library here: the tokenizer cannot build"
  fi
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DQLORAD_WITH_SERVICE=OFF -DQLORAD_CUDA_ARCHS=90 \
  -DQLORAD_PYTHON="$(command -v python3)" -DCMAKE_BUILD_TYPE=Release -DQLORAD_WERROR=OFF \
  > "$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
ninja -C "$BUILD" -j "$(nproc)" "$@" > "$OUT/build.log" 2>&1 \
  || { grep -E "error|FAILED" "$OUT/build.log" | head -40; exit 1; }
