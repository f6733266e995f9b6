#!/usr/bin/env bash
# Downloads (here, on the Debian 12 development machine) the Debian packages that the whole
# service build needs on the GPU machine, which is Ubuntu 24.04 without gRPC, protobuf, spdlog,
# SQLite, ... C++ dev packages and without a package registry. build.sh unpacks them there.
#
# The list is scripts/deps.sh's APT_PACKAGES, less tools and test-only libraries, plus every
# library package they depend on (the closure of Depends/Pre-Depends), less what a stock Ubuntu
# 24.04 with build-essential already has (glibc, libstdc++, zlib, OpenSSL's runtime, ...; build.sh
# points the -dev symlinks of those at the system's own copies).
#
# Two groups, two folders, so that build.sh can keep them in two prefixes:
#   .whl/svc/base  headers that torch translation units may see (yaml-cpp, nlohmann-json, CLI11,
#                  PCRE2, ICU, gloo): none of them ships google/protobuf or fmt headers;
#   .whl/svc/svc   the service side's (gRPC, protobuf, abseil, spdlog, fmt, SQLite, cpp-httplib).
# Usage: tests/gpu/service/fetch_debs.sh [DEST]   (default .whl/svc; prints the total size)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
DEST="${1:-$ROOT/.whl/svc}"

# What deps.sh installs but the GPU machine either has (tools) or this build does not need
# (QLORAD_BUILD_TESTS=OFF there).
SKIP_TOP=(build-essential cmake ninja-build ccache pkg-config git python3 python3-venv
          libgtest-dev libgmock-dev libbenchmark-dev)
# Packages whose headers or libraries only the service side may see.
SERVICE_ONLY=(libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev libspdlog-dev libfmt-dev
              libsqlite3-dev libcpp-httplib-dev)
# Taken without their dependencies: libgloo-dev for its headers alone (LibTorch carries gloo
# itself; libgloo0 would bring ibverbs, hiredis and PAM along).
HEADERS_ONLY=(libgloo-dev)
# On every Ubuntu 24.04 with build-essential (newer or equal, same sonames), or not needed to build
# (catch2 comes with libspdlog-dev for its tests; pkgconf is the GPU machine's own pkg-config).
# Not followed further either: that keeps libc6-dev's tree (krb5, tirpc, nsl) out.
ON_UBUNTU=(libc6 libc6-dev libc-dev-bin linux-libc-dev libcrypt1 libcrypt-dev libnsl2 libnsl-dev
           libtirpc3 libtirpc-dev libtirpc-common rpcsvc-proto gcc-12-base libgcc-s1 libstdc++6
           libssl3 zlib1g libbz2-1.0 libselinux1 libaudit1 libaudit-common libcap-ng0 libdb5.3
           libcom-err2 libgssapi-krb5-2 libk5crypto3 libkeyutils1 libkrb5-3 libkrb5support0
           debconf adduser passwd pkgconf pkgconf-bin libpkgconf3 catch2)

# APT_PACKAGES=( ... ) from deps.sh, comments dropped, so that what others add there comes along.
mapfile -t wanted < <(sed -n '/^APT_PACKAGES=(/,/^)/p' "$ROOT/scripts/deps.sh" | sed -e 's/#.*//' \
  -e 's/APT_PACKAGES=(//' -e 's/)//' | tr ' ' '\n' | sed '/^$/d')

in_list() { local x="$1"; shift; local y; for y in "$@"; do [[ "$x" == "$y" ]] && return 0; done; return 1; }

# closure GROUP_ROOTS...: prints the roots and, breadth first, every package they depend on.
declare -A seen=()
closure() {
  local queue=("$@") p
  while ((${#queue[@]})); do
    p="${queue[0]}"
    queue=("${queue[@]:1}")
    [[ -n "${seen[$p]:-}" ]] && continue
    seen[$p]=1
    in_list "$p" "${ON_UBUNTU[@]}" && continue
    echo "$p"
    in_list "$p" "${HEADERS_ONLY[@]}" && continue
    # "|Depends: a" / "Depends: b": the first alternative is what apt would pick. Virtual names
    # (<...>) are skipped: every one met here also has a real package among the alternatives.
    mapfile -t -O "${#queue[@]}" queue < <(apt-cache depends --no-recommends --no-suggests \
      --no-conflicts --no-breaks --no-replaces --no-enhances "$p" \
      | awk '/^ *\|?(Pre)?Depends: [^<]/ {print $2}')
  done
}

base_roots=() svc_roots=()
for p in "${wanted[@]}"; do
  in_list "$p" "${SKIP_TOP[@]}" && continue
  if in_list "$p" "${SERVICE_ONLY[@]}"; then svc_roots+=("$p"); else base_roots+=("$p"); fi
done
mapfile -t base < <(closure "${base_roots[@]}")
mapfile -t svc < <(closure "${svc_roots[@]}")  # what base already has is not repeated

download() {
  local dir="$1"; shift
  rm -rf "$dir"
  mkdir -p "$dir"
  (cd "$dir" && apt-get download -qq -o APT::Sandbox::User=root "$@")
}
download "$DEST/base" "${base[@]}"
download "$DEST/svc" "${svc[@]}"

echo "base (${#base[@]}): ${base[*]}"
echo "svc (${#svc[@]}): ${svc[*]}"
du -sch "$DEST/base" "$DEST/svc"
