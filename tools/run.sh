#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment at .venv, install the package in
# editable mode with its test extras, then run the demo, the tests or the docs build.
#   bash tools/run.sh demo [args]   the offline end-to-end demo
#   bash tools/run.sh test [args]   the test suite (pytest arguments pass through)
#   bash tools/run.sh docs [args]   the documentation, offline, into docs/_build/html
#                                   (Sphinx; warnings are errors; arguments pass through)
# CANDLE_EXTRAS picks the optional dependencies installed with the package (default
# "test,demo"; docs adds "docs"); CI sets "all" so that the tests of optional features
# (hypothesis, ray, the docs build) run there too. Without them those tests skip, naming
# what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# torch/torchvision pair that installs from this project's machines' local disk (CPU and
# CUDA in one wheel); override with TORCH_SPEC="torch==X torchvision==Y" elsewhere.
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
EXTRAS=${CANDLE_EXTRAS:-test,demo}
if [ "${1:-}" = docs ]; then EXTRAS="$EXTRAS,docs"; fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# The stamp holds a hash of the set-up files and the extras installed with them: set-up
# runs again when those files change or when an extra is wanted that is not installed yet
# (so that "docs" after "test" installs the docs extra once, and "test" after "docs" does
# not run pip again).
stamp=.venv/.candle-setup
files=$(cat setup.cfg pyproject.toml tools/run.sh | sha256sum | cut -c1-16)
read -r had_files had_extras 2>/dev/null < "$stamp" || true
[ "${had_files:-}" = "$files" ] || had_extras=""
missing=""
for extra in ${EXTRAS//,/ }; do
    case ",${had_extras:-}," in *",$extra,"*|*",all,"*) ;; *) missing="$missing $extra" ;; esac
done
if [ -n "$missing" ]; then
    EXTRAS=$(echo "${had_extras:+$had_extras,}$EXTRAS" | tr ',' '\n' | sort -u | paste -sd, -)
    echo "Setting up .venv (torch and open_clip: about 2 minutes the first time)..." >&2
    log=.venv/setup.log
    # shellcheck disable=SC2086
    if ! { .venv/bin/python -m pip install -q --upgrade pip &&
           .venv/bin/python -m pip install -q $TORCH_SPEC -e ".[$EXTRAS]"; } >"$log" 2>&1; then
        grep -v "is ignored" "$log" >&2
        echo "set-up failed; full log in $log" >&2
        exit 1
    fi
    .venv/bin/python -c "import candle_sklearn, torch, open_clip, pytest"
    echo "$files $EXTRAS" > "$stamp"
fi

export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
case "${1:-}" in
    demo) shift; exec .venv/bin/python -m candle_sklearn demo "$@" ;;
    test) shift; exec .venv/bin/python -m pytest "$@" ;;
    docs) shift; exec .venv/bin/python -m sphinx -b html -W --keep-going "$@" docs docs/_build/html ;;
    *) echo "usage: bash tools/run.sh {demo|test|docs} [args...]" >&2; exit 2 ;;
esac
