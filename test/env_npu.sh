#!/usr/bin/env bash
# Ascend environment for the launchers: sources CANN's set_env.sh and exports the variables the ModelZoo original
# exports. On a machine without CANN (GPU or CPU) it does nothing and prints nothing, so every launcher can source it.

# ASCEND_INSTALL_INFO only exists so that tests can point at a fake installation.
_ascend_info=${ASCEND_INSTALL_INFO:-/etc/Ascend/ascend_cann_install.info}
_ascend_root=/usr/local/Ascend
if [ -f "${_ascend_info}" ]; then
    _ascend_path=$(sed -n 's/^Install_Path=//p' "${_ascend_info}" | head -n 1)
    if [ -n "${_ascend_path}" ]; then
        _ascend_root=${_ascend_path}
    fi
fi

_ascend_env=""
if [ -f "${_ascend_root}/ascend-toolkit/set_env.sh" ]; then
    _ascend_env="${_ascend_root}/ascend-toolkit/set_env.sh"
elif [ -f "${_ascend_root}/nnae/set_env.sh" ]; then
    _ascend_env="${_ascend_root}/nnae/set_env.sh"
fi

if [ -n "${_ascend_env}" ]; then
    # shellcheck disable=SC1090
    source "${_ascend_env}"
    # Host logs to files only, errors and above, no event logs: printing them slows training.
    export ASCEND_SLOG_PRINT_TO_STDOUT=0
    export ASCEND_GLOBAL_LOG_LEVEL=3
    export ASCEND_GLOBAL_EVENT_ENABLE=0
    # Task queue on (newer ModelZoo models use 1; the original used 0), fused copy and combined ops on.
    export TASK_QUEUE_ENABLE=${TASK_QUEUE_ENABLE:-1}
    export PTCOPY_ENABLE=1
    export COMBINED_ENABLE=1
    # Let HCCL accept any peer address (single-node and multi-node launches without a whitelist file).
    export HCCL_WHITELIST_DISABLE=1
fi

unset _ascend_info _ascend_root _ascend_path _ascend_env
