# Sourced by bench/e2e/run.sh and bench/context/run.sh on the GPU machine (ROOT set): unpacks the
# reference libraries of .whl/e2e/refs.tar.gz (bench/e2e/fetch_refs.sh) onto PYTHONPATH for this
# shell, removed when it exits, and makes Hugging Face and Unsloth load everything from local folders.
echo "=== reference libraries ($(date -u +%H:%M:%S))"
REFS="$(mktemp -d)"
trap 'rm -rf "$REFS"' EXIT
if [ -f "$ROOT/.whl/e2e/refs.tar.gz" ]; then
  tar -C "$REFS" -xzf "$ROOT/.whl/e2e/refs.tar.gz"
  # First on the path: the carried pydantic and pydantic-core (and the rest) come as a matched set.
  export PYTHONPATH="$REFS${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "no .whl/e2e/refs.tar.gz (run bench/e2e/fetch_refs.sh and carry .whl/e2e): Unsloth and bitsandbytes will fail"
fi
# What the carried set takes from the machine rather than carrying (pyarrow alone is over 40 MB):
# a missing one fails Unsloth's import, and this line says which.
python3 -c "import importlib.util as u; m = [n for n in ('requests', 'pandas', 'pyarrow', 'xxhash', 'accelerate')
if not u.find_spec(n)]; print('not on this machine (Unsloth needs them):', m) if m else None"
# No registry or hub there: everything loads from local folders, and Unsloth sends no statistics.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 \
  TOKENIZERS_PARALLELISM=false

