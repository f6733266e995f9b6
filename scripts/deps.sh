#!/usr/bin/env bash
# Installs everything qlorad needs to build, run and test, on Debian 12 / Ubuntu 24.04.
# Idempotent and quick when all is present. Used by `make demo` and `make test`.
#   Debian packages: compilers, gRPC, protobuf, spdlog, SQLite, yaml-cpp, ... (apt-get)
#   Python: a virtualenv (QLORAD_VENV, default ~/.cache/qlorad/venv) with torch==2.11.0, whose
#           wheel carries LibTorch's headers, libraries and TorchConfig.cmake, plus grpcio, pytest,
#           the reference libraries the tests compare against, and the dashboard test's helpers.
set -euo pipefail

APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git python3 python3-venv
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev
  libspdlog-dev libfmt-dev libsqlite3-dev libyaml-cpp-dev nlohmann-json3-dev libcli11-dev
  libcpp-httplib-dev libpcre2-dev libicu-dev libgtest-dev libgmock-dev libbenchmark-dev
  libssl-dev  # tokens' SHA-256 and randomness, TLS certificate checks (server/auth_*.cc)
  openssl     # the CLI: tests/integration/test_tls.py makes its certificates at test time
  libgloo-dev  # headers only: LibTorch's ProcessGroupGloo needs them; its gloo is in libtorch_cpu
  chromium     # headless, for the dashboard's browser test (tests/integration/test_dashboard_browser.py)
  prometheus shellcheck  # promtool and shellcheck check deploy/ (tests/python/test_deploy_configs.py)
  clang libclang-rt-dev  # libFuzzer and the sanitizers' runtimes, for scripts/fuzz.sh (tests/fuzz)
)
# gguf is llama.cpp's own reader (gguf-py), which the GGUF export's tests read the file back with.
# websocket-client drives headless Chromium over the DevTools protocol in the dashboard's test;
# prometheus-client's parser reads /metrics in the tests; kubernetes-validate checks deploy/kubernetes
# against the Kubernetes schemas it bundles. grpcio-health-checking and grpcio-reflection are the
# stock clients that the coordinator's health and reflection services are tested with
# (tests/integration/test_ops.py). pandas and matplotlib are the Python client's optional
# DataFrame and plots; nbclient, nbformat and ipykernel execute examples/notebook.ipynb in a real
# kernel (tests/integration/test_notebook.py).
PY_PACKAGES=(torch==2.11.0 "grpcio>=1.60" "grpcio-tools>=1.60" "pytest>=7" numpy safetensors pyyaml
             tokenizers==0.23.3 bitsandbytes==0.50.2 transformers==5.17.0 peft==0.21.0
             gguf==0.19.0 websocket-client==1.9.2 prometheus-client==0.26.0
             kubernetes-validate==1.37.0 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1
             pandas==3.1.1 matplotlib==3.11.2 nbclient==0.11.0 nbformat==5.11.1 ipykernel==7.4.0)

VENV="${QLORAD_VENV:-$HOME/.cache/qlorad/venv}"

log() { printf '\033[1m[deps]\033[0m %s\n' "$*" >&2; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating the Python environment at $VENV"
  python3 -m venv "$VENV"
fi
stamp="$VENV/.qlorad-deps"
want="$(printf '%s\n' "${PY_PACKAGES[@]}")"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  log "installing Python packages (torch is large: a few minutes the first time)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "${PY_PACKAGES[@]}"
  printf '%s' "$want" >"$stamp"
fi
echo "$VENV"
