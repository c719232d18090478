# Shared by scripts/test and scripts/demo (sourced, not run): cd to the repo root, make
# sure .venv exists and has this checkout installed (editable, with the test extra).
# The install is redone only when pyproject.toml changed since the last one; the
# sha256 of the pyproject.toml that was installed is kept in .venv/.handsoff-installed.

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

_hx_find_python() {
    local py
    for py in python3.13 python3.12 python3.11 python3; do
        # pyenv shims exist for versions that are not installed; running them fails.
        if command -v "$py" >/dev/null 2>&1 &&
            "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
            echo "$py"
            return 0
        fi
    done
    return 1
}

if [ ! -x .venv/bin/python ]; then
    if ! _hx_py=$(_hx_find_python); then
        echo "error: need Python >= 3.11 (tried python3.13, python3.12, python3.11, python3)" >&2
        exit 1
    fi
    echo "==> creating .venv with $("$_hx_py" --version 2>&1)"
    "$_hx_py" -m venv .venv || exit 1
    unset _hx_py
fi

_hx_stamp=.venv/.handsoff-installed
_hx_hash=$(.venv/bin/python -c \
    'import hashlib; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())') ||
    exit 1
if [ ! -f "$_hx_stamp" ] || [ "$(cat "$_hx_stamp")" != "$_hx_hash" ]; then
    echo "==> pip install -e '.[test]' (pyproject.toml changed or first run)"
    rm -f "$_hx_stamp"
    .venv/bin/python -m pip install -q -e '.[test]' || exit 1
    echo "$_hx_hash" >"$_hx_stamp"
fi
unset _hx_stamp _hx_hash
