#!/usr/bin/env bash
# Builds the whole service on the GPU machine (Ubuntu 24.04, no gRPC/protobuf/spdlog/... dev
# packages, no registry): coordinator `qlorad`, agent `qlorad-worker`, trainer `qlorad-train`
# (LibTorch + our CUDA kernels, arch 90) and `qloractl`, from the Debian 12 packages that
# fetch_debs.sh downloaded here and the run carried there.
#
# Each group of packages is unpacked (dpkg -x) into its own private prefix:
#   $PREFIX/base  yaml-cpp, nlohmann-json, CLI11, PCRE2, ICU, gloo: headers torch translation units
#                 may see. It stands in for Debian's /usr/include (CPLUS_INCLUDE_PATH: searched after
#                 every -isystem, torch's included), as on the development machine;
#   $PREFIX/svc   gRPC, protobuf, abseil, spdlog, fmt, SQLite, cpp-httplib: only the service targets
#                 get it (through pkg-config and CMake packages), never a torch target, so that no
#                 file sees both torch's bundled protobuf/fmt headers and Debian's. Checked below on
#                 compile_commands.json.
# CMake finds both through CMAKE_PREFIX_PATH and PKG_CONFIG_PATH (the .pc files are rewritten to
# their new prefix); protoc and grpc_cpp_plugin are the prefix's; LD_LIBRARY_PATH names both lib
# folders (Debian's libraries have no RUNPATH). $BUILD/deps-env.sh keeps that environment for
# demo.sh and for rebuilding by hand.
#
# Usage: tests/gpu/service/build.sh [BUILD_DIR] [LOG_DIR]   (defaults: build-gpu-svc, BUILD_DIR)
# Environment: QLORAD_SVC_DEBS (default .whl/svc), QLORAD_DEPS_PREFIX (default /opt/qlorad-deps),
#              QLORAD_WERROR (default OFF: Ubuntu's g++ 13 warns where Debian's g++ 12 did not),
#              QLORAD_SVC_TARGETS (default the four binaries), QLORAD_JOBS (default nproc),
#              QLORAD_PYTHON (default python3: the one with torch).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
BUILD="$(realpath -m "${1:-$ROOT/build-gpu-svc}")"
LOG="$(realpath -m "${2:-$BUILD}")"
DEBS="${QLORAD_SVC_DEBS:-$ROOT/.whl/svc}"
PREFIX="${QLORAD_DEPS_PREFIX:-/opt/qlorad-deps}"
ARCH="$(gcc -dumpmachine)"  # x86_64-linux-gnu: Debian's and Ubuntu's multiarch folder
mkdir -p "$BUILD" "$LOG"
step() { echo "=== $* ($(date -u +%H:%M:%S))"; }

step "unpacking $(ls "$DEBS"/base/*.deb "$DEBS"/svc/*.deb | wc -l) Debian packages into $PREFIX/{base,svc}"
for group in base svc; do
  rm -rf "${PREFIX:?}/$group"
  mkdir -p "$PREFIX/$group"
  for deb in "$DEBS/$group"/*.deb; do dpkg -x "$deb" "$PREFIX/$group"; done
done

# Library symlinks of the -dev packages: absolute ones (libz.so -> /lib/.../libz.so.1.2.13) are
# made to point into the prefix; those whose library the prefix lacks because Ubuntu has its own
# (libssl, libcrypto, zlib: same soname, fetch_debs.sh leaves them out) point at the system's
# soname; gloo's, whose library LibTorch carries, is dropped.
system_soname() {  # libz.so.1.2.13 -> /usr/lib/<arch>/libz.so.1 (the longest name that exists)
  local name="$1"
  while [[ "$name" == *.so* ]]; do
    for dir in /usr/lib/$ARCH /lib/$ARCH; do
      [[ -e "$dir/$name" ]] && { echo "$dir/$name"; return 0; }
    done
    [[ "$name" == *.so ]] && break
    name="${name%.*}"
  done
  return 1
}
for group in base svc; do
  while IFS= read -r link; do
    target="$(readlink "$link")"
    if [[ "$target" == /* && -e "$PREFIX/$group$target" ]]; then
      ln -sfn "$PREFIX/$group$target" "$link"
    elif [[ "$target" == /* || ! -e "$link" ]]; then
      if sys="$(system_soname "$(basename "$target")")"; then
        ln -sfn "$sys" "$link"
      else
        echo "note: dropping $link (-> $target: not in the prefix nor on this system)"
        rm -f "$link"
      fi
    fi
  done < <(find "$PREFIX/$group" -type l -name 'lib*.so*')
done

# pkg-config files name /usr; give each its prefix (prefix=, -I/usr/..., -L/usr/...).
for group in base svc; do
  find "$PREFIX/$group" -name '*.pc' -path '*/pkgconfig/*' -exec sed -i -E \
    -e "s#^([A-Za-z_]+ *= *)/usr(/|\$)#\1$PREFIX/$group/usr\2#" \
    -e "s#(-[IL])/usr/#\1$PREFIX/$group/usr/#g" {} +
done
# Torch targets may see base's headers but never protobuf's or fmt's.
for bad in google fmt spdlog grpcpp absl; do
  [[ ! -e "$PREFIX/base/usr/include/$bad" ]] || { echo "$PREFIX/base holds $bad headers" >&2; exit 1; }
done

cat > "$BUILD/deps-env.sh" <<EOF
# The private prefixes of tests/gpu/service/build.sh: source this before ninja or the binaries.
export PATH="$PREFIX/svc/usr/bin:$PREFIX/base/usr/bin:\$PATH"
export LD_LIBRARY_PATH="$PREFIX/base/usr/lib/$ARCH:$PREFIX/svc/usr/lib/$ARCH\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export PKG_CONFIG_PATH="$PREFIX/base/usr/lib/$ARCH/pkgconfig:$PREFIX/base/usr/share/pkgconfig:$PREFIX/svc/usr/lib/$ARCH/pkgconfig:$PREFIX/svc/usr/share/pkgconfig"
export CPLUS_INCLUDE_PATH="$PREFIX/base/usr/include" C_INCLUDE_PATH="$PREFIX/base/usr/include"
EOF
# shellcheck source=/dev/null
source "$BUILD/deps-env.sh"
"$PREFIX/svc/usr/bin/protoc" --version
[[ -x "$PREFIX/svc/usr/bin/grpc_cpp_plugin" ]] || { echo "no grpc_cpp_plugin in $PREFIX/svc" >&2; exit 1; }

step "configure (service + torch + CUDA arch 90) in $BUILD"
nvcc=()
[[ -x /usr/local/cuda/bin/nvcc ]] && nvcc=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
t0=$(date +%s)
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DQLORAD_WITH_SERVICE=ON -DQLORAD_WITH_TORCH=ON -DQLORAD_CUDA_ARCHS=90 "${nvcc[@]}" \
  -DQLORAD_PYTHON="${QLORAD_PYTHON:-$(command -v python3)}" -DQLORAD_BUILD_TESTS=OFF \
  -DQLORAD_WERROR="${QLORAD_WERROR:-OFF}" \
  -DCMAKE_PREFIX_PATH="$PREFIX/base/usr;$PREFIX/svc/usr" \
  -DQLORAD_PROTOC="$PREFIX/svc/usr/bin/protoc" -DGRPC_CPP_PLUGIN="$PREFIX/svc/usr/bin/grpc_cpp_plugin" \
  > "$LOG/configure.log" 2>&1 || { tail -40 "$LOG/configure.log"; exit 1; }
grep -E "^-- qlorad" "$LOG/configure.log" || true
echo "configure: $(($(date +%s) - t0)) s"

# No translation unit sees both torch's headers and the service prefix's.
python3 - "$BUILD/compile_commands.json" "$PREFIX/svc" <<'EOF'
import json, sys
commands, svc = json.load(open(sys.argv[1])), sys.argv[2]
torch_side = [c for c in commands if "/torch/include" in c.get("command", "")]
both = [c["file"] for c in torch_side if svc in c["command"]]
service_side = [c for c in commands if svc in c.get("command", "")]
print(f"compile_commands: {len(torch_side)} torch files, {len(service_side)} service files, "
      f"{len(both)} with both")
if both or not torch_side or not service_side:
    sys.exit("a file sees both torch's and the service prefix's headers: " + " ".join(both[:5]))
EOF

read -r -a targets <<< "${QLORAD_SVC_TARGETS:-qlorad qlorad-worker qloractl qlorad-train}"
step "build ${targets[*]}"
t0=$(date +%s)
ninja -C "$BUILD" -j "${QLORAD_JOBS:-$(nproc)}" "${targets[@]}" > "$LOG/build.log" 2>&1 \
  || { grep -E "error|FAILED" "$LOG/build.log" | head -40; exit 1; }
echo "build: $(($(date +%s) - t0)) s on $(nproc) cores; $(grep -c 'warning:' "$LOG/build.log" || true) warning lines"

for bin in "${targets[@]}"; do
  ldd "$BUILD/bin/$bin" > "$LOG/ldd-$bin.txt"
  ! grep "not found" "$LOG/ldd-$bin.txt" || exit 1
  echo "$bin: $(grep -c "$PREFIX" "$LOG/ldd-$bin.txt") libraries from $PREFIX"
done
echo "built in $BUILD/bin: ${targets[*]}"
