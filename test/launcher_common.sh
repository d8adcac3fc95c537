#!/usr/bin/env bash
# The code the four ModelZoo launchers share: argument parsing, device detection, the per-rank process loop and the
# summary. A launcher sets its defaults (the original's hyperparameters) and calls `launcher_main "$@"`:
#
#   LAUNCH_MODE=full|performance   LAUNCH_SCALE=1p|8p
#   DEFAULT_BATCH_SIZE DEFAULT_EPOCHS DEFAULT_LR DEFAULT_WARMUP DEFAULT_MOMENTUM DEFAULT_WD DEFAULT_WORKERS
#
# Multi-process runs use the ModelZoo way: this shell starts one process per device itself, each with the torchrun
# environment (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and --local_rank, each writing its own log
# test/output/<rank>/train_<rank>.log. The loop watches them: when one fails, the others are stopped and the launch
# fails. Training itself is main.py; numbers in the summary come from tools/modelzoo_summary.py.

LAUNCHER_TEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "${LAUNCHER_TEST_DIR}/.." && pwd)
PYTHON=${PYTHON:-python3}
NETWORK="Shufflenetv2_ID0099_for_PyTorch"
ARCH="shufflenet_v2_x1_0"
SEED=49
EVAL_FREQ=5
# Paper recipe, last step: recompute BatchNorm statistics over one pass of ImageNet's 1,281,167 training images at
# batch 1024 (1251 batches, megvii's "one pass at lr 0"); it costs less than half an epoch of a 240-epoch run.
PAPER_BN_BATCHES=1251
# Performance runs on NPU/GPU: steps per epoch (the first steps are excluded from FPS@all by main.py).
PERF_STEPS=200
# Performance runs on CPU: shrunk so a launch ends in about a minute on a small machine.
CPU_PERF_BATCH_PER_PROCESS=8
CPU_PERF_STEPS=15
CPU_PERF_EPOCHS=1
CPU_DEFAULT_PROCESSES=2
# Seconds a rank gets to stop cleanly after SIGTERM before SIGKILL (tests shorten it). main.py stops at once, but a
# rank blocked in a collective whose peer died may never get back to Python to handle the signal.
STOP_GRACE_SECONDS=${LAUNCHER_STOP_GRACE_SECONDS:-20}

die() {
    echo "error: $*" >&2
    exit 1
}

say() {
    echo "[$(basename "$0")] $*"
}

usage() {
    local scale_flags data_default="required"
    if [ "${LAUNCH_SCALE}" = "1p" ]; then
        scale_flags="  --device_id=N              device index and output folder name (default \$ASCEND_DEVICE_ID or 0)"
    else
        scale_flags="  --nproc=N                  processes, one per device (default: 8 NPUs, up to 8 GPUs, 2 on CPU)
  --nnodes=N --node_rank=K   several nodes: run the script on every node with its K (0 on the master node)
  --master_addr=IP           address of node 0 (default \$MASTER_ADDR, else 127.0.0.1 on one node)"
    fi
    local batch_default="${DEFAULT_BATCH_SIZE}" lr_default="${DEFAULT_LR}"
    if [ "${LAUNCH_MODE}" = "performance" ]; then
        data_default="default: synthetic data, --dummy"
        batch_default="${DEFAULT_BATCH_SIZE}; on CPU ${CPU_PERF_BATCH_PER_PROCESS} per process"
        lr_default="${DEFAULT_LR}; on CPU scaled to the shrunk batch"
        [ "${LAUNCH_SCALE}" = "8p" ] && batch_default="${batch_default}; on other device counts 1024 per device"
    fi
    cat <<EOF
Usage: bash test/$(basename "$0") [--flag=value ...]

${LAUNCH_MODE} run on ${LAUNCH_SCALE}: main.py with the ModelZoo original's hyperparameters unless overridden.
  --data_path=DIR            ImageNet-style folder with train/ and val/ (${data_default})
  --batch_size=N             global batch size over all processes (default ${batch_default})
  --learning_rate=X          peak learning rate (default ${lr_default})
  --epochs=N                 epochs (default ${DEFAULT_EPOCHS})
  --precision_mode=MODE      allow_mix_precision (default: --amp --opt-level O2 --loss-scale 64)
                             or must_keep_origin_dtype (fp32)
  --device=D                 auto (default: npu if torch_npu works, else cuda, else cpu), npu, cuda, gpu or cpu
  --recipe=R                 modelzoo (default: the original's hyperparameters) or paper (ShuffleNetV2 paper /
                             megvii: batch 1024, lr 0.5 linear decay, momentum 0.9, wd 4e-5 not on BN/bias,
                             label smoothing 0.1, ColorJitter 0.4, 240 epochs, BN recalibration)
${scale_flags}
  --output_root=DIR          where the output folders go (default test/output)
  -h, --help                 this help
Any other --flag=value (or --flag) is passed to main.py unchanged and overrides the launcher's value,
e.g. --arch=shufflenet_v2_x0_5 --workers=8 --resume=test/output/0/checkpoint.pth.tar.
Environment: PYTHON (interpreter, default python3), MASTER_ADDR / MASTER_PORT (default 127.0.0.1 / a free port),
LAUNCHER_STOP_GRACE_SECONDS (after one rank fails or Ctrl-C, seconds the others get to stop before SIGKILL; 20).
EOF
}

# Fills the OPT_* variables and PASSTHROUGH from the command line.
parse_launcher_args() {
    OPT_DATA_PATH=""
    OPT_BATCH_SIZE=""
    OPT_LR=""
    OPT_EPOCHS=""
    OPT_DEVICE_ID="${ASCEND_DEVICE_ID:-0}"
    OPT_PRECISION="allow_mix_precision"
    OPT_DEVICE="auto"
    OPT_RECIPE="modelzoo"
    OPT_NPROC=""
    OPT_NNODES=1
    OPT_NODE_RANK=0
    OPT_MASTER_ADDR="${MASTER_ADDR}"
    OPT_OUTPUT_ROOT="${LAUNCHER_TEST_DIR}/output"
    PASSTHROUGH=()
    local arg value
    for arg in "$@"; do
        value="${arg#*=}"
        case "${arg%%=*}" in
            --data_path|--batch_size|--learning_rate|--epochs|--precision_mode|--device|--recipe|--output_root\
            |--device_id|--nproc|--nnodes|--node_rank|--master_addr)
                # `--flag VALUE` would pass VALUE to main.py as a stray argument; `--flag=` would set it empty.
                if [ "${arg}" = "${arg%%=*}" ] || [ -z "${value}" ]; then
                    die "${arg%%=*} needs a value: write ${arg%%=*}=VALUE"
                fi ;;
        esac
        case "${arg}" in
            -h|--help) usage; exit 0 ;;
            --data_path=*) OPT_DATA_PATH="${value}" ;;
            --batch_size=*) OPT_BATCH_SIZE="${value}" ;;
            --learning_rate=*) OPT_LR="${value}" ;;
            --epochs=*) OPT_EPOCHS="${value}" ;;
            --precision_mode=*) OPT_PRECISION="${value}" ;;
            --device=*) OPT_DEVICE="${value}" ;;
            --recipe=*) OPT_RECIPE="${value}" ;;
            --output_root=*) OPT_OUTPUT_ROOT="${value}" ;;
            --device_id=*)
                [ "${LAUNCH_SCALE}" = "1p" ] || die "--device_id is for the 1p scripts; use --nproc=N here"
                OPT_DEVICE_ID="${value}" ;;
            --nproc=*|--nnodes=*|--node_rank=*|--master_addr=*)
                [ "${LAUNCH_SCALE}" = "8p" ] || die "${arg%%=*} is for the 8p scripts"
                case "${arg}" in
                    --nproc=*) OPT_NPROC="${value}" ;;
                    --nnodes=*) OPT_NNODES="${value}" ;;
                    --node_rank=*) OPT_NODE_RANK="${value}" ;;
                    *) OPT_MASTER_ADDR="${value}" ;;
                esac ;;
            # The launcher must know these (process count, summary, data check): only its own flags set them.
            -b|-b=*|--batch-size|--batch-size=*) die "${arg%%=*}: use --batch_size=N" ;;
            --data|--data=*) die "${arg%%=*}: use --data_path=DIR" ;;
            --dummy) die "--dummy: the performance scripts use synthetic data when --data_path is not given" ;;
            *) PASSTHROUGH+=("${arg}") ;;
        esac
    done
    local name
    for name in OPT_BATCH_SIZE OPT_EPOCHS OPT_DEVICE_ID OPT_NPROC OPT_NNODES OPT_NODE_RANK; do
        value="${!name}"
        if [ -n "${value}" ] && ! [[ "${value}" =~ ^[0-9]+$ ]]; then
            die "--$(echo "${name#OPT_}" | tr 'A-Z' 'a-z')=${value} is not a whole number"
        fi
    done
    [[ "${STOP_GRACE_SECONDS}" =~ ^[0-9]+$ ]] \
        || die "LAUNCHER_STOP_GRACE_SECONDS=${STOP_GRACE_SECONDS} is not a whole number"
    if [ -n "${OPT_LR}" ] && ! [[ "${OPT_LR}" =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$ ]]; then
        die "--learning_rate=${OPT_LR} is not a number"
    fi
    if [ -n "${OPT_BATCH_SIZE}" ] && [ "${OPT_BATCH_SIZE}" -lt 1 ]; then
        die "--batch_size=${OPT_BATCH_SIZE}: need at least one image per step"
    fi
    if [ -n "${OPT_NPROC}" ] && [ "${OPT_NPROC}" -lt 1 ]; then
        die "--nproc=${OPT_NPROC}: need at least one process"
    fi
    if [ "${OPT_NNODES}" -lt 1 ] || [ "${OPT_NODE_RANK}" -ge "${OPT_NNODES}" ]; then
        die "--node_rank=${OPT_NODE_RANK} must be below --nnodes=${OPT_NNODES}"
    fi
    if [ "${OPT_NNODES}" -gt 1 ] && [ -z "${OPT_MASTER_ADDR}" ]; then
        die "--nnodes=${OPT_NNODES}: give node 0's address with --master_addr=IP (or MASTER_ADDR)"
    fi
    case "${OPT_PRECISION}" in
        allow_mix_precision) PRECISION_ARGS=(--amp --opt-level O2 --loss-scale 64) ;;
        must_keep_origin_dtype) PRECISION_ARGS=() ;;
        *) die "unknown --precision_mode=${OPT_PRECISION}:" \
               "use allow_mix_precision (AMP O2) or must_keep_origin_dtype (fp32)" ;;
    esac
    case "${OPT_DEVICE}" in
        auto|npu|cuda|gpu|cpu) ;;
        *) die "unknown --device=${OPT_DEVICE}: use auto, npu, cuda, gpu or cpu" ;;
    esac
    case "${OPT_RECIPE}" in
        modelzoo|paper) ;;
        *) die "unknown --recipe=${OPT_RECIPE}: use modelzoo (the original's hyperparameters) or paper" ;;
    esac
    if [ "${LAUNCH_MODE}" = "full" ] && [ -z "${OPT_DATA_PATH}" ]; then
        die "--data_path=DIR is required for ${LAUNCH_MODE} runs (an ImageNet-style folder with train/ and val/)"
    fi
    if [ -n "${OPT_DATA_PATH}" ]; then
        [ -d "${OPT_DATA_PATH}" ] || die "--data_path=${OPT_DATA_PATH}: no such directory"
        OPT_DATA_PATH=$(cd "${OPT_DATA_PATH}" && pwd)
    fi
    mkdir -p "${OPT_OUTPUT_ROOT}" 2>/dev/null || die "--output_root=${OPT_OUTPUT_ROOT}: cannot create it"
    OPT_OUTPUT_ROOT=$(cd "${OPT_OUTPUT_ROOT}" && pwd)
}

# Sets DEVICE (npu, cuda or cpu), DEVICE_COUNT and FREE_PORT (a TCP port free now) with one Python start, or dies
# saying why the asked-for device is unusable. The logic is main.py's own (training/device.py, distributed.py).
detect_device() {
    local probe
    command -v "${PYTHON}" >/dev/null || die "PYTHON=${PYTHON}: no such interpreter"
    probe=$(cd "${REPO_ROOT}" && "${PYTHON}" -c '
import sys
try:
    from training.device import device_count, resolve_device_type
    from training.distributed import free_port
    from training.errors import UserError
except ImportError as error:
    sys.exit("error: {} cannot load the modules of main.py ({}); set PYTHON=an interpreter with PyTorch".format(
        sys.executable, error))
try:
    kind = resolve_device_type(sys.argv[1])
except UserError as error:
    sys.exit("error: {}".format(error))
print(kind, device_count(kind), free_port())
' "${OPT_DEVICE}") || exit 1
    probe=${probe##*$'\n'}  # the last line: plug-ins may print banners first
    read -r DEVICE DEVICE_COUNT FREE_PORT <<< "${probe}"
}

# Hyperparameters: the original's, or the paper recipe's; explicit launcher flags win over both.
choose_hyperparameters() {
    RECIPE_ARGS=()
    BATCH_SIZE=${DEFAULT_BATCH_SIZE}
    EPOCHS=${DEFAULT_EPOCHS}
    LR=${DEFAULT_LR}
    WARMUP=${DEFAULT_WARMUP}
    MOMENTUM=${DEFAULT_MOMENTUM}
    WD=${DEFAULT_WD}
    if [ "${OPT_RECIPE}" = "paper" ]; then
        BATCH_SIZE=1024
        LR=0.5
        WARMUP=0
        MOMENTUM=0.9
        WD=4e-5
        [ "${LAUNCH_MODE}" = "full" ] && EPOCHS=240
        RECIPE_ARGS=(--lr-schedule linear --norm-weight-decay 0 --bias-weight-decay 0 --label-smoothing 0.1
                     --color-jitter 0.4 --bn-recalibrate "${PAPER_BN_BATCHES}")
    fi
    [ -n "${OPT_BATCH_SIZE}" ] && BATCH_SIZE=${OPT_BATCH_SIZE}
    [ -n "${OPT_EPOCHS}" ] && EPOCHS=${OPT_EPOCHS}
    [ -n "${OPT_LR}" ] && LR=${OPT_LR}
}

# Sets BATCH_SIZE to $1 and, unless --learning_rate was given, scales LR linearly with it: the full batch's
# learning rate on a batch of 8 makes the run diverge.
shrink_batch_on_cpu() {
    local new_batch=$1 old_lr=${LR}
    if [ -z "${OPT_LR}" ]; then
        LR=$(awk -v lr="${LR}" -v new="${new_batch}" -v old="${BATCH_SIZE}" 'BEGIN { printf "%.6g", lr * new / old }')
        say "CPU: learning rate scaled with the batch: ${old_lr} * ${new_batch} / ${BATCH_SIZE} = ${LR}" \
            "(--learning_rate=X to set it)"
    fi
    BATCH_SIZE=${new_batch}
}

# Sets NPROCS (processes on this node), WORLD (processes on all nodes) and DEVICE_IDS, and shrinks performance
# runs on CPU.
choose_processes() {
    if [ "${LAUNCH_SCALE}" = "1p" ]; then
        NPROCS=1
        DEVICE_IDS=("${OPT_DEVICE_ID}")
    else
        if [ -n "${OPT_NPROC}" ]; then
            NPROCS=${OPT_NPROC}
        elif [ "${DEVICE}" = "cpu" ]; then
            NPROCS=${CPU_DEFAULT_PROCESSES}
        else
            NPROCS=$(( DEVICE_COUNT < 8 ? DEVICE_COUNT : 8 ))
        fi
        if [ "${DEVICE}" != "cpu" ] && [ "${NPROCS}" -gt "${DEVICE_COUNT}" ]; then
            die "--nproc=${NPROCS} but only ${DEVICE_COUNT} ${DEVICE} device(s) are visible"
        fi
        DEVICE_IDS=()
        local rank
        for (( rank = 0; rank < NPROCS; rank++ )); do
            DEVICE_IDS+=("${rank}")
        done
    fi
    WORLD=$(( NPROCS * OPT_NNODES ))
    STEPS_ARGS=()
    if [ "${LAUNCH_MODE}" = "performance" ]; then
        if [ "${DEVICE}" = "cpu" ]; then
            if [ -z "${OPT_BATCH_SIZE}" ]; then
                shrink_batch_on_cpu $(( CPU_PERF_BATCH_PER_PROCESS * WORLD ))
            fi
            [ -z "${OPT_EPOCHS}" ] && EPOCHS=${CPU_PERF_EPOCHS}
            STEPS_ARGS=(--steps-per-epoch "${CPU_PERF_STEPS}")
            say "CPU: performance run shrunk to batch ${BATCH_SIZE}, ${EPOCHS} epoch(s) of ${CPU_PERF_STEPS} steps" \
                "unless overridden (about a minute); CPU figures, not comparable with NPU/GPU ones"
        else
            STEPS_ARGS=(--steps-per-epoch "${PERF_STEPS}")
            if [ "${LAUNCH_SCALE}" = "8p" ] && [ -z "${OPT_BATCH_SIZE}" ] && [ "${WORLD}" -ne 8 ]; then
                # Throughput is per device: keep the original's per-device batch (8192 / 8) on other counts.
                BATCH_SIZE=$(( BATCH_SIZE / 8 * WORLD ))
                say "${WORLD} processes: global batch ${BATCH_SIZE} keeps the original's $(( BATCH_SIZE / WORLD ))" \
                    "images per device"
            fi
        fi
    fi
    # The original's worker count is for the whole node; main.py's -j is per process. More loader workers than
    # cores only adds contention.
    local cores
    cores=$(nproc 2>/dev/null || echo 1)
    WORKERS=$(( (DEFAULT_WORKERS < cores ? DEFAULT_WORKERS : cores) / NPROCS ))
    [ "${WORKERS}" -lt 1 ] && WORKERS=1
    if [ $(( BATCH_SIZE % WORLD )) -ne 0 ]; then
        die "--batch_size=${BATCH_SIZE} is not divisible by ${WORLD} processes"
    fi
}

# MASTER_PORT from the environment, else (one node) the port the device probe found free, else (several nodes,
# which must agree without talking) main.py's default port.
choose_port() {
    if [ "${OPT_NNODES}" -gt 1 ]; then
        PORT=${MASTER_PORT:-29688}
    else
        PORT=${MASTER_PORT:-${FREE_PORT}}
    fi
}

# Moves the previous run's files out of the way, never deleting them: into <dir>/previous-<time>/ go its logs and
# summary and, unless this run resumes (--resume), its checkpoints and metrics.jsonl, which main.py would otherwise
# overwrite at the end of the first epoch.
set_aside_previous_run() {
    local stamp dir id file target arg moving_checkpoints=1
    local -a files
    for arg in "${PASSTHROUGH[@]}"; do
        case "${arg}" in
            --resume|--resume=*) moving_checkpoints=0 ;;
        esac
    done
    stamp=$(date +%Y%m%d-%H%M%S)
    for id in "${DEVICE_IDS[@]}"; do
        dir="${OPT_OUTPUT_ROOT}/${id}"
        mkdir -p "${dir}" || die "cannot create ${dir}"
        files=("${dir}/train_${id}.log" "${dir}/${CASE_NAME}.log")
        if [ "${id}" = "${DEVICE_IDS[0]}" ] && [ "${moving_checkpoints}" -eq 1 ]; then
            files+=("${dir}"/*.pth.tar "${dir}/metrics.jsonl")
        fi
        target=""
        for file in "${files[@]}"; do
            [ -f "${file}" ] || continue
            if [ -z "${target}" ]; then
                target="${dir}/previous-${stamp}"
                local count=1
                while [ -e "${target}" ]; do
                    target="${dir}/previous-${stamp}-${count}"
                    count=$(( count + 1 ))
                done
                mkdir -p "${target}" || die "cannot create ${target}"
            fi
            mv "${file}" "${target}/" || die "cannot move ${file} aside"
        done
        [ -n "${target}" ] && say "the previous run's files in ${dir} were moved to ${target}"
    done
}

build_main_args() {
    MAIN_ARGS=(-a "${ARCH}" --seed "${SEED}" --eval-freq "${EVAL_FREQ}" -j "${WORKERS}" -b "${BATCH_SIZE}"
               --lr "${LR}" --epochs "${EPOCHS}" --warm_up_epochs "${WARMUP}" --momentum "${MOMENTUM}" --wd "${WD}"
               --device "${DEVICE}" --output-dir "${OPT_OUTPUT_ROOT}/${DEVICE_IDS[0]}")
    if [ -n "${OPT_DATA_PATH}" ]; then
        MAIN_ARGS+=(--data "${OPT_DATA_PATH}")
    else
        MAIN_ARGS+=(--dummy)
    fi
    MAIN_ARGS+=("${PRECISION_ARGS[@]}" "${RECIPE_ARGS[@]}" "${STEPS_ARGS[@]}")
}

# SIGTERM to every rank still running (main.py stops cleanly; checkpoints are written atomically), SIGKILL to those
# still there after STOP_GRACE_SECONDS, then waits for all.
stop_ranks() {
    local pid alive ticks=0
    for pid in "${RANK_PIDS[@]}"; do
        kill -TERM "${pid}" 2>/dev/null
    done
    while :; do
        alive=()
        for pid in "${RANK_PIDS[@]}"; do
            kill -0 "${pid}" 2>/dev/null && alive+=("${pid}")
        done
        [ "${#alive[@]}" -eq 0 ] && break
        if [ "${ticks}" -ge $(( STOP_GRACE_SECONDS * 5 )) ]; then
            say "${#alive[@]} training process(es) still running ${STOP_GRACE_SECONDS} s after SIGTERM: killed"
            kill -KILL "${alive[@]}" 2>/dev/null
            break
        fi
        sleep 0.2
        ticks=$(( ticks + 1 ))
    done
    for pid in "${RANK_PIDS[@]}"; do
        wait "${pid}" 2>/dev/null
    done
}

on_interrupt() {
    say "interrupted: stopping ${#RANK_PIDS[@]} training process(es); checkpoints already written stay intact"
    stop_ranks
    exit 130
}

# Starts one main.py per rank and waits; returns 0 when all succeed, else stops the rest and returns non-zero.
run_ranks() {
    RANK_PIDS=()
    FAILED_RANK=""
    local rank id log cores_per_rank first command threads
    cores_per_rank=$(( $(nproc 2>/dev/null || echo 1) / NPROCS ))
    [ "${cores_per_rank}" -lt 1 ] && cores_per_rank=1
    threads=${OMP_NUM_THREADS:-${cores_per_rank}}
    trap on_interrupt INT TERM
    for (( rank = 0; rank < NPROCS; rank++ )); do
        id=${DEVICE_IDS[${rank}]}
        log="${OPT_OUTPUT_ROOT}/${id}/train_${id}.log"
        command=("${PYTHON}" "${REPO_ROOT}/main.py" "${MAIN_ARGS[@]}")
        if [ "${WORLD}" -gt 1 ]; then
            command+=(--local_rank "${rank}")
        else
            command+=(--gpu "${id}")
        fi
        command+=("${PASSTHROUGH[@]}")
        if [ "$(uname -m)" = "aarch64" ] && [ "${NPROCS}" -gt 1 ] && command -v taskset >/dev/null; then
            first=$(( rank * cores_per_rank ))
            command=(taskset -c "${first}-$(( first + cores_per_rank - 1 ))" "${command[@]}")
        fi
        if [ "${WORLD}" -gt 1 ]; then
            RANK=$(( OPT_NODE_RANK * NPROCS + rank )) LOCAL_RANK=${rank} WORLD_SIZE=${WORLD} \
                LOCAL_WORLD_SIZE=${NPROCS} MASTER_ADDR=${OPT_MASTER_ADDR:-127.0.0.1} MASTER_PORT=${PORT} \
                OMP_NUM_THREADS=${threads} "${command[@]}" > "${log}" 2>&1 &
        else
            OMP_NUM_THREADS=${threads} "${command[@]}" > "${log}" 2>&1 &
        fi
        RANK_PIDS+=($!)
    done
    local running=${NPROCS} rc pid
    local -a done_flags=()
    while [ "${running}" -gt 0 ]; do
        for (( rank = 0; rank < NPROCS; rank++ )); do
            [ -n "${done_flags[${rank}]}" ] && continue
            pid=${RANK_PIDS[${rank}]}
            if ! kill -0 "${pid}" 2>/dev/null; then
                wait "${pid}"
                rc=$?
                done_flags[${rank}]=1
                running=$(( running - 1 ))
                if [ "${rc}" -ne 0 ]; then
                    FAILED_RANK=${rank}
                    stop_ranks
                    trap - INT TERM
                    return "${rc}"
                fi
            fi
        done
        sleep 0.2
    done
    trap - INT TERM
    return 0
}

launcher_main() {
    parse_launcher_args "$@"
    # shellcheck disable=SC1091
    source "${LAUNCHER_TEST_DIR}/env_npu.sh"
    detect_device
    choose_hyperparameters
    choose_processes
    local mode=perf
    [ "${LAUNCH_MODE}" = "full" ] && mode=acc
    CASE_NAME="${NETWORK}_bs${BATCH_SIZE}_${WORLD}p_${mode}"
    set_aside_previous_run
    build_main_args
    [ "${WORLD}" -gt 1 ] && choose_port
    if [ -z "${OPT_DATA_PATH}" ]; then
        say "no --data_path: synthetic data (--dummy), for throughput only"
    fi
    say "device ${DEVICE}: ${NPROCS} process(es)$( [ "${OPT_NNODES}" -gt 1 ] && echo " on node ${OPT_NODE_RANK}" \
        "of ${OPT_NNODES} (${WORLD} in all, master ${OPT_MASTER_ADDR}:${PORT})"), global batch ${BATCH_SIZE}," \
        "recipe ${OPT_RECIPE}, precision ${OPT_PRECISION}"
    local id
    for id in "${DEVICE_IDS[@]}"; do
        say "log: ${OPT_OUTPUT_ROOT}/${id}/train_${id}.log"
    done
    say "follow the training with: tail -f ${OPT_OUTPUT_ROOT}/${DEVICE_IDS[0]}/train_${DEVICE_IDS[0]}.log"
    local start end rc
    start=$(date +%s)
    run_ranks
    rc=$?
    end=$(date +%s)
    if [ "${rc}" -ne 0 ]; then
        id=${DEVICE_IDS[${FAILED_RANK}]}
        echo "error: training failed on rank ${FAILED_RANK} (exit code ${rc}); no summary written." \
             "Last lines of ${OPT_OUTPUT_ROOT}/${id}/train_${id}.log:" >&2
        tail -n 20 "${OPT_OUTPUT_ROOT}/${id}/train_${id}.log" >&2
        exit "${rc}"
    fi
    if [ "${OPT_NODE_RANK}" -ne 0 ]; then
        say "node ${OPT_NODE_RANK} finished; the figures and the summary are on node 0"
        return 0
    fi
    id=${DEVICE_IDS[0]}
    "${PYTHON}" "${REPO_ROOT}/tools/modelzoo_summary.py" "${OPT_OUTPUT_ROOT}/${id}/train_${id}.log" \
        --network "${NETWORK}" --rank-size "${WORLD}" --batch-size "${BATCH_SIZE}" --mode "${mode}" \
        --e2e-seconds $(( end - start )) --output-dir "${OPT_OUTPUT_ROOT}/${id}" || exit 1
}
