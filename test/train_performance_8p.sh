#!/usr/bin/env bash
# Throughput run on 8 devices of one node; synthetic data unless --data_path is given: bash test/train_performance_8p.sh
# Defaults below are the ModelZoo original's hyperparameters (workers: for the whole node, capped at its cores);
# everything else (arguments, device, processes, summary) is shared code in test/launcher_common.sh.
# Usage: bash test/train_performance_8p.sh --help

LAUNCH_MODE=performance
LAUNCH_SCALE=8p
DEFAULT_BATCH_SIZE=8192
DEFAULT_EPOCHS=1
DEFAULT_LR=4
DEFAULT_WARMUP=5
DEFAULT_MOMENTUM=0
DEFAULT_WD=1e-4
DEFAULT_WORKERS=$(nproc)

# shellcheck disable=SC1091
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/launcher_common.sh"
launcher_main "$@"
