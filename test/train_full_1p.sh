#!/usr/bin/env bash
# Accuracy run on one device (ImageNet, 240 epochs): bash test/train_full_1p.sh --data_path=/path/to/imagenet
# Defaults below are the ModelZoo original's hyperparameters (workers: for the whole node, capped at its cores);
# everything else (arguments, device, processes, summary) is shared code in test/launcher_common.sh.
# Usage: bash test/train_full_1p.sh --help

LAUNCH_MODE=full
LAUNCH_SCALE=1p
DEFAULT_BATCH_SIZE=1536
DEFAULT_EPOCHS=240
DEFAULT_LR=0.75
DEFAULT_WARMUP=1
DEFAULT_MOMENTUM=0
DEFAULT_WD=3.0517578125e-05
DEFAULT_WORKERS=128

# shellcheck disable=SC1091
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/launcher_common.sh"
launcher_main "$@"
