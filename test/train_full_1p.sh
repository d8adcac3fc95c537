#!/usr/bin/env bash
# Accuracy run (240 epochs, needs --data_path=DIR) on 1p, ModelZoo hyperparameters (training/recipes.py).
# All logic is in training/launch/modelzoo.py (via tools/modelzoo_launch.py); usage: bash test/train_full_1p.sh --help
TEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=${PYTHON:-python3}
command -v "${PYTHON}" >/dev/null || { echo "error: PYTHON=${PYTHON}: no such interpreter" >&2; exit 2; }
# shellcheck disable=SC1091
source "${TEST_DIR}/env_npu.sh"
REPO_ROOT=$(dirname "${TEST_DIR}")
export PYTHONPATH="${REPO_ROOT}${PYTHONPATH:+:${PYTHONPATH}}"  # this clone's training/ and models/, installed or not
exec "${PYTHON}" "${REPO_ROOT}/tools/modelzoo_launch.py" --mode full --scale 1p "$@"
