#!/usr/bin/env bash
# The package as a user gets it: builds the sdist and, from it, the wheel; installs the
# wheel into a fresh virtual environment outside the checkout (torch first, as TORCH_SPEC,
# so that no other torch build is pulled); then, from a folder outside the checkout with
# an empty home folder (no build cache, no MovieLens cache), runs .ci/wheel_check.py:
# the README's five lines, one example, the shipped data and the C kernel built from the
# wheel's source. Run by `make wheel-check` (which .ci/run calls after `make test`).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
python=${PYTHON:-python3}
build_python=${BUILD_PYTHON:-.venv/bin/python}
torch_spec=${TORCH_SPEC:-torch==2.13.0}
work=$(mktemp -d "${TMPDIR:-/tmp}/tabembed-wheel-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
started=$(date +%s)

echo "wheel-check: building the sdist and, from it, the wheel"
if ! "$build_python" -m build --no-isolation --outdir "$work/dist" . >"$work/build.log" 2>&1; then
    cat "$work/build.log"
    exit 1
fi
wheel=$(ls "$work"/dist/*.whl)
sdist=$(ls "$work"/dist/*.tar.gz)
echo "wheel-check: $(basename "$wheel") $(du -k "$wheel" | cut -f1) KiB," \
     "$(basename "$sdist") $(du -k "$sdist" | cut -f1) KiB"

echo "wheel-check: installing it into a fresh virtual environment ($torch_spec first)"
"$python" -m venv "$work/venv"
built=$(date +%s)
# --no-compile: byte-compiling torch's files would double the install's time.
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check --no-compile "$torch_spec"
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check --no-compile "$wheel"
installed=$(date +%s)

mkdir "$work/run" "$work/home"
cp README.md "$work/run/README.md"
cp examples/movielens_recommender.py "$work/run/example.py"
cp .ci/wheel_check.py "$work/run/wheel_check.py"
cd "$work/run"
env -u TABEMBED_DATA -u TABEMBED_NATIVE -u PYTHONPATH HOME="$work/home" \
    OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" \
    "$work/venv/bin/python" wheel_check.py "$wheel" "$root"
finished=$(date +%s)
echo "wheel-check: passed in $((finished - started)) s" \
     "(build $((built - started)) s, install $((installed - built)) s," \
     "checks $((finished - installed)) s)"
