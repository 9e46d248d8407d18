#!/usr/bin/env bash
# Set up a fresh machine of the project's kind: Fashion-MNIST from Debian, a venv in .venv with
# pinned dependencies, and robin_plugin installed editable. Safe to run again (it skips what is done).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=.venv/.robin-setup-$(sha256sum .ci/requirements.txt pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -r .ci/requirements.txt
  # torchattacks pins an old requests and ships a stale robustbench copy: install it alone.
  .venv/bin/pip install -q --disable-pip-version-check --no-deps torchattacks==3.5.1
  # the original AutoAttack (reference cross-check); it imports only torch and numpy
  .venv/bin/pip install -q --disable-pip-version-check --no-deps pyautoattack==0.2.0
  # RobustBench 1.1.1 (robin_plugin.eval.robustbench_compat): --no-deps, as its timm==1.0.9 pin would
  # downgrade timm; its import-time needs are in requirements.txt. After torchattacks, and forced, so
  # its files replace the old robustbench copy that torchattacks' wheel ships.
  .venv/bin/pip install -q --disable-pip-version-check --no-deps --force-reinstall robustbench==1.1.1
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
  touch "$stamp"
fi
