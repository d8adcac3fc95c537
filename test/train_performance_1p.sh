#!/usr/bin/env bash
# Throughput run on one device; synthetic data unless --data_path is given: bash test/train_performance_1p.sh
# Defaults below are the ModelZoo original's hyperparameters (workers: for the whole node, capped at its cores);
# everything else (arguments, device, processes, summary) is shared code in test/launcher_common.sh.
# Usage: bash test/train_performance_1p.sh --help

LAUNCH_MODE=performance
LAUNCH_SCALE=1p
DEFAULT_BATCH_SIZE=1536
DEFAULT_EPOCHS=2
DEFAULT_LR=0.75
DEFAULT_WARMUP=1
DEFAULT_MOMENTUM=0
DEFAULT_WD=3.0517578125e-05
DEFAULT_WORKERS=128

# shellcheck disable=SC1091
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/launcher_common.sh"
launcher_main "$@"
