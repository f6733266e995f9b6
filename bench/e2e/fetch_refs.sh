#!/usr/bin/env bash
# Downloads the reference libraries of bench/e2e (Unsloth, bitsandbytes and what they import that
# the GPU machine lacks) as PyPI wheels for the GPU machine's Python 3.12 on x86_64, installs them
# into one folder, drops what the benchmark never loads and tars that folder into
# .whl/e2e/refs.tar.gz, the one file run.sh needs there. Runs on the development machine (the GPU
# machine has no registry). The carry to the GPU machine is 64 MiB in all, so the tarball must stay
# small: the loose wheels stay in a cache outside the repository.
# Usage: bash bench/e2e/fetch_refs.sh        (WHEELS=DIR to keep the wheels elsewhere)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PIP="${PIP:-$HOME/.cache/qlorad/venv/bin/pip}"
WHEELS="${WHEELS:-$HOME/.cache/qlorad/e2e-wheels}"
DEST="$ROOT/.whl/e2e"
# torch, transformers, peft, accelerate, safetensors, tokenizers and triton are on the GPU machine
# (GPU.md), and so are requests, pandas, pyarrow and xxhash, which datasets and unsloth_zoo import
# (run.sh says if one is missing). These versions were seen to import and train there with its
# torch 2.11. unsloth caps trl at 1.15 and datasets below 5; dill and multiprocess follow datasets.
REFS=(unsloth==2026.10.9 unsloth_zoo==2026.10.9 trl==1.15.0 "datasets>=4.8,<4.9" "dill<0.4.2"
      "multiprocess<0.70.20" tyro docstring-parser typeguard shtab cut_cross_entropy torchao msgspec
      structlog json5 nest-asyncio pydantic pydantic-core annotated-types typing-inspection einops
      bitsandbytes==0.50.2 xformers==0.0.35)
PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none
          --platform any --platform manylinux2014_x86_64)
# pip takes each manylinux tag literally: list every glibc up to the GPU machine's 2.39.
for glibc in $(seq 17 39); do PLATFORM+=(--platform "manylinux_2_${glibc}_x86_64"); done

mkdir -p "$WHEELS" "$DEST"
"$PIP" download --no-deps "${PLATFORM[@]}" -d "$WHEELS" "${REFS[@]}"

STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
"$PIP" install --no-deps --no-compile "${PLATFORM[@]}" --target "$STAGE/site" "${REFS[@]}" \
  --no-index --find-links "$WHEELS" > "$STAGE/install.log"
# unsloth's studio/ (installed at the top level) is a web app of 82 MB; bitsandbytes ships one
# library per CUDA version and the GPU machine's torch is cu130; pip's scripts and the byte-code
# caches are of no use on PYTHONPATH.
rm -rf "$STAGE/site/studio" "$STAGE/site/bin"
find "$STAGE/site" -name 'libbitsandbytes_*.so' ! -name 'libbitsandbytes_cpu.so' \
  ! -name 'libbitsandbytes_cuda130.so' -delete
find "$STAGE/site" -name __pycache__ -type d -prune -exec rm -rf {} +
rm -f "$DEST"/*.whl
tar -C "$STAGE/site" -czf "$DEST/refs.tar.gz" .
du -h "$DEST/refs.tar.gz"
