#!/usr/bin/env bash
# Creates .venv with the pinned requirements and every lib and service of this repo, editable.
# Idempotent: pip skips what is already installed at the pinned version.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
python=${PYTHON_FOR_VENV:-python3}

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if [ ! -x .venv/bin/python ]; then
  step "python: creating .venv with $($python --version)"
  if ! "$python" -m venv .venv 2>/dev/null; then
    # Debian splits venv support out of the interpreter package.
    step "python: installing python3-venv"
    deploy/local/apt-install.sh python3-venv
    rm -rf .venv
    "$python" -m venv .venv
  fi
fi
step "python: installing pinned requirements (requirements/dev.txt)"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --progress-bar off -r requirements/dev.txt
step "python: installing the repo's libs and services (editable)"
mapfile -t pkgs < <(ls -d libs/*/ services/*/ | sed 's|/$||')
args=()
for p in "${pkgs[@]}"; do args+=(-e "$p"); done
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation "${args[@]}"
step "python: ready (${#pkgs[@]} packages)"
