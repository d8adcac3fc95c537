#!/usr/bin/env bash
# Prints the path of the virtual environment of one CI lane, creating it first if needed:
#   bash .ci/lane_venv.sh main|torch1.5|torch1.8|torch1.11|torch2.1
# A lane's venv lives outside the checkout, in ${CI_VENV_ROOT:-~/.cache/shufflenetv2-ci}/<lane>-<hash>, the hash
# taken over its requirement files (.ci/lanes/<lane>.txt and every file it includes) and its Python version, so a
# second clone reuses it and a changed requirement builds a new one. Never installs into the Python that runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
lane=$1
case $lane in
    main) want=3.11 ;;
    torch1.5|torch1.8|torch1.11) want=3.7 ;;
    torch2.1) want=3.8 ;;
    *) echo "error: unknown lane '$lane' (main, torch1.5, torch1.8, torch1.11, torch2.1)" >&2; exit 2 ;;
esac
python=""
for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$want".*/bin/python"$want" "python$want"; do
    if "$candidate" --version >/dev/null 2>&1; then python=$candidate; break; fi
done
if [ -z "$python" ]; then
    echo "error: lane $lane needs Python $want (pyenv install $want)" >&2
    exit 3
fi
lane_file=.ci/lanes/$lane.txt
files=$(grep -o '^-r .*' "$lane_file" | cut -c4- | sed "s#^#.ci/lanes/#")
# only the requirement lines count: editing a comment does not rebuild gigabytes
hash=$( { "$python" --version 2>&1; cat "$lane_file" $files | sed 's/#.*//; s/[[:space:]]*$//; /^$/d'; } | sha256sum |
    cut -c1-12)
root=${CI_VENV_ROOT:-$HOME/.cache/shufflenetv2-ci}
venv=$root/$lane-$hash
if [ ! -f "$venv/ready" ]; then
    mkdir -p "$root"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    if [ "$lane" = main ]; then
        # this machine's pip config caps torch at the release that lies on its disk: keep it for the main lane
        "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$lane_file" >&2
        # the real plug-in, without its dependencies (CANN cannot be pip-installed, so its import fails here)
        "$venv/bin/python" -m pip install --disable-pip-version-check -q --no-deps torch-npu==2.14.0 >&2
    else
        PIP_CONFIG_FILE=/dev/null PIP_CONSTRAINT="" "$venv/bin/python" -m pip install --disable-pip-version-check \
            -q -r "$lane_file" >&2
    fi
    touch "$venv/ready"
    # older venvs of this lane (earlier requirement files) are left to the user: remove them with rm -r "$root"
fi
echo "$venv"
