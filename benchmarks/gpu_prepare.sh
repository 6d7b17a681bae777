#!/usr/bin/env bash
# Prepares what benchmarks/gpu.sh needs on a GPU machine that reaches no package registry, in two
# ignored folders to carry there beside the checkout:
#   wheelhouse/             the wheels of the library's dependencies except torch (the machine's own
#                           CUDA build is used), for CPython $PYTHONS on manylinux x86_64; gpu.sh installs
#                           only those the machine's Python lacks, into a private folder
#   gpudata/fashion-mnist/  the four Fashion-MNIST IDX files (from Debian's dataset-fashion-mnist)
# Run here, from anywhere in the checkout: bash benchmarks/gpu_prepare.sh
#
# Nothing the GPU run executes imports scikit-learn, SciPy or matplotlib (the run report's figures need
# matplotlib; gpu.sh leaves the report out where the machine has none), so their wheels are not taken.
# Pillow is: distillset.data.sources imports it at module import time. numpy is left out by default
# (about 16 MiB a Python version, more than the carry allows for three): NUMPY=1 adds it, best with
# PYTHONS set to the machine's one version. The library needs Python 3.11 or later (pyproject.toml), so
# PYTHONS defaults to 3.11 3.12 3.13; PYTHONS="3.10 3.11 3.12 3.13" takes 3.10 too.
#
#   PYTHONS="3.11 3.12 3.13"   CPython versions of the binary wheels
#   NUMPY=0                    1: numpy's wheels as well
#   PILLOW_VERSION=11.0.0      the smallest recent Pillow wheels (about 4 MiB each; 13.x: 7 MiB)
#   CARRY_LIMIT_MIB=64         what may travel in all

set -euo pipefail
cd "$(dirname "$0")/.."

PYTHONS=${PYTHONS:-3.11 3.12 3.13}
NUMPY=${NUMPY:-0}
PILLOW_VERSION=${PILLOW_VERSION:-11.0.0}
CARRY_LIMIT_MIB=${CARRY_LIMIT_MIB:-64}
WHEELS=wheelhouse
DATA=gpudata/fashion-mnist
FASHION_SRC=${FASHION_SRC:-/usr/share/datasets/fashion-mnist}
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

# The versions the development environment runs (so the GPU run imports what the tests pass with);
# the floors of pyproject.toml where a package is not installed here.
version_of() {
    "$PY" - "$1" "$2" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
try:
    print(version(sys.argv[1]))
except PackageNotFoundError:
    print(sys.argv[2])
EOF
}

PURE="click:8.1.7 tqdm:4.66.1 pydantic:2.5.0 annotated-types:0.6.0 typing-extensions:4.12.2 typing-inspection:0.4.0"
BINARY="pyyaml:6.0.1 pydantic-core:2.14.1 pillow:$PILLOW_VERSION"
ABI3="safetensors:0.4.0"
[ "$NUMPY" = 1 ] && BINARY="$BINARY numpy:2.0.0"

pin() {  # name:fallback -> name==version (Pillow keeps PILLOW_VERSION)
    local name=${1%%:*} fallback=${1#*:}
    if [ "$name" = pillow ]; then
        echo "pillow==$PILLOW_VERSION"
    else
        echo "$name==$(version_of "$name" "$fallback")"
    fi
}

download() {  # python version, requirement
    local log
    if ! log=$("$PY" -m pip download --quiet --disable-pip-version-check --only-binary=:all: --no-deps \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
        --python-version "$1" --implementation cp -d "$WHEELS" "$2" 2>&1); then
        printf '%s\n' "$log" >&2
        echo "no wheel of $2 for CPython $1 on manylinux x86_64" >&2
        exit 1
    fi
}

rm -rf "$WHEELS"
mkdir -p "$WHEELS"
echo "wheels into $WHEELS/ (CPython $PYTHONS):"
first=${PYTHONS%% *}
for spec in $PURE $ABI3; do
    download "$first" "$(pin "$spec")"
done
for v in $PYTHONS; do
    for spec in $BINARY; do
        download "$v" "$(pin "$spec")"
    done
done
# pydantic pins its pydantic-core exactly: the two must come as a pair.
core_want=$("$PY" - "$WHEELS"/pydantic-[0-9]*.whl <<'EOF'
import re
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    m = re.search(r"^Requires-Dist: pydantic[-_]core\s*\(?==\s*([^\s;)]+)", z.read(meta).decode(), re.M)
print(m.group(1) if m else "")
EOF
)
core_have=$(ls "$WHEELS" | sed -n 's/^pydantic_core-\([^-]*\)-.*/\1/p' | sort -u)
if [ -n "$core_want" ] && [ "$core_want" != "$core_have" ]; then
    echo "pydantic wants pydantic-core $core_want but $WHEELS holds $core_have" >&2
    exit 1
fi
for v in $PYTHONS; do
    tag="cp${v/./}"
    for pkg in pyyaml pydantic_core pillow; do
        ls "$WHEELS" | grep -q "^$pkg-.*-$tag-" || echo "warning: no $pkg wheel for CPython $v" >&2
    done
done
ls -l "$WHEELS" | awk 'NR > 1 {printf "  %8.1f KiB  %s\n", $5 / 1024, $9}'

# Fashion-MNIST: the file names distillset.data.sources reads (each plain or gzipped).
if [ ! -d "$FASHION_SRC" ]; then
    echo "installing Debian's dataset-fashion-mnist"
    apt-get install -y dataset-fashion-mnist >/dev/null 2>&1 \
        || { apt-get update >/dev/null && apt-get install -y dataset-fashion-mnist >/dev/null; }
fi
rm -rf "$DATA"
mkdir -p "$DATA"
for stem in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    if [ -f "$FASHION_SRC/$stem.gz" ]; then
        cp "$FASHION_SRC/$stem.gz" "$DATA/"
    elif [ -f "$FASHION_SRC/$stem" ]; then
        cp "$FASHION_SRC/$stem" "$DATA/"
    else
        echo "Fashion-MNIST file $FASHION_SRC/$stem(.gz) is missing" >&2
        exit 1
    fi
done
echo "Fashion-MNIST into $DATA/:"
ls -l "$DATA" | awk 'NR > 1 {printf "  %8.1f KiB  %s\n", $5 / 1024, $9}'

wheel_bytes=$(du -sb "$WHEELS" | cut -f1)
data_bytes=$(du -sb gpudata | cut -f1)
total=$((wheel_bytes + data_bytes))
awk -v w="$wheel_bytes" -v d="$data_bytes" -v t="$total" \
    'BEGIN {printf "size: wheelhouse %.1f MiB + gpudata %.1f MiB = %.1f MiB\n", w / 2^20, d / 2^20, t / 2^20}'
if [ "$total" -gt $((CARRY_LIMIT_MIB * 1024 * 1024)) ]; then
    echo "over the carry limit of $CARRY_LIMIT_MIB MiB: set PYTHONS to fewer versions (or NUMPY=0)" >&2
    exit 1
fi
echo 'carry: ["wheelhouse", "gpudata"]'
echo 'then, on the GPU machine: bash benchmarks/gpu.sh   (results under $OUT, default ./gpu-out)'
