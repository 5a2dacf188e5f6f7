#!/usr/bin/env bash
# Install everything the project needs, idempotently, on a fresh clone of a fresh machine:
#   1. system libraries for headless EGL rendering (Mesa) and chromium (the report test), via
#      apt, only when missing and root;
#   2. a virtual environment in .venv (python3 >= 3.11);
#   3. torch==2.13.0 first (the CPU wheel; a looser pin pulls a multi-GB CUDA build),
#      then the project in editable mode with its dev extras (temporal CLI, test server, linters).
# A stamp (.venv/.installed, a hash of pyproject.toml and this script) makes re-runs instant.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV="${VENV:-.venv}"
TORCH_REQUIREMENT="torch==2.13.0"
APT_PACKAGES=(libegl1 libgl1 libgl1-mesa-dri libglx-mesa0 libegl-mesa0)
STAMP="$VENV/.installed"

log() { echo "install.sh: $*" >&2; }

has_library() { ldconfig -p 2>/dev/null | grep -qF "$1"; }

has_swrast_driver() {
    local dir
    for dir in /usr/lib/*/dri /usr/lib/dri /usr/lib64/dri; do
        if [[ -e "$dir/swrast_dri.so" ]]; then
            return 0
        fi
    done
    return 1
}

install_system_libraries() {
    local missing=()
    has_library libEGL.so.1 || missing+=("libEGL.so.1")
    has_library libEGL_mesa.so.0 || missing+=("libEGL_mesa.so.0")
    has_library libGL.so.1 || missing+=("libGL.so.1")
    has_swrast_driver || missing+=("swrast_dri.so")
    if [[ ${#missing[@]} -eq 0 ]]; then
        return 0
    fi
    if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null; then
        log "WARNING: missing ${missing[*]} (headless rendering will fail); as root run:"
        log "  apt-get update && apt-get install -y ${APT_PACKAGES[*]}"
        return 0
    fi
    log "installing ${APT_PACKAGES[*]} (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
}

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3 python3.11 python3.12 python3.13; do
        if [[ -n "$candidate" ]] && command -v "$candidate" >/dev/null &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    log "ERROR: no python3 >= 3.11 found (set PYTHON=/path/to/python3.11)"
    return 1
}

create_venv() {
    if [[ -x "$VENV/bin/python" ]]; then
        return 0
    fi
    local python
    python="$(find_python)"
    log "creating $VENV with $python ($("$python" --version 2>&1))"
    if ! "$python" -m venv "$VENV"; then
        if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null; then
            log "venv module missing; installing python3-venv"
            rm -rf "$VENV"
            DEBIAN_FRONTEND=noninteractive apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            "$python" -m venv "$VENV"
        else
            return 1
        fi
    fi
}

requirements_hash() {
    cat pyproject.toml scripts/install.sh | sha256sum | cut -d' ' -f1
}

install_packages() {
    local wanted
    wanted="$(requirements_hash)"
    if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$wanted" ]]; then
        log "Python packages up to date ($STAMP)"
        return 0
    fi
    local pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
    log "installing $TORCH_REQUIREMENT"
    "${pip[@]}" "$TORCH_REQUIREMENT"
    log "installing the project with dev extras"
    "${pip[@]}" -e '.[dev]'
    echo "$wanted" >"$STAMP"
}

# Headless Chromium renders the audit report in its test (tests/e2e/test_report.py); the
# report itself needs no browser, so only root with apt installs it here (the test skips
# without it, saying so).
install_chromium() {
    if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
        return 0
    fi
    if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null; then
        log "note: chromium missing (the report test will skip); as root: apt-get install -y chromium"
        return 0
    fi
    log "installing chromium (headless; the report test)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
}

install_system_libraries
install_chromium
create_venv
install_packages
log "done: $("$VENV/bin/python" --version 2>&1), $("$VENV/bin/temporal" --version 2>/dev/null || echo 'temporal CLI missing')"
