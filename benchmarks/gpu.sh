#!/usr/bin/env bash
# The GPU benchmark, one command on a machine with one CUDA GPU and no package registry:
#   bash benchmarks/gpu.sh               from the repository root, results under $OUT (default ./gpu-out)
#   bash benchmarks/gpu.sh --cpu-smoke   every part on the CPU at tiny sizes (checks the plumbing; the
#                                        install step only with PYTHON set to another Python than .venv's)
#   GPU_BENCH_PARTS="A D"                run only these parts (install and env always run)
#   PYTHON=python3.12                    the Python to use (default: the first of python, python3,
#                                        python3.13, python3.12, python3.11 that is 3.11+ and has torch)
# Prepare first, on a machine with PyPI: bash benchmarks/gpu_prepare.sh, then carry wheelhouse and gpudata.
#
# Parts, each in its own process under its own timeout (a failing or hanging part is logged in
# $OUT/logs/PART.log and the next one runs); the whole stays under $GPU_BENCH_SECONDS (450 s on the GPU):
#   install  the wheels of wheelhouse/ that the machine's Python lacks, into a private temporary folder
#            (never into the machine's Python); src/ on PYTHONPATH (`python -m distillset`)
#   env      nvidia-smi, Python, torch, CUDA and cuDNN into $OUT/env.txt (and env.json)
#   A        benchmarks/engine.py: ConvNet-128-3 on 3x32x32, IPC 10, syn_steps 20/40/80, the three engines
#   B        gpu_bench.py precision: the adjoint's meta-gradient in float32, TF32 and bf16 autocast
#   C        gpu_bench.py experts: seconds per expert epoch, bare loop against `distillset experts`, and
#            experts per hour one by one against trained together (experts.ensemble off / on)
#   D        distillset run datm-fashion-mnist on the GPU, evaluation included
#   A2       gpu_bench.py engine-ipc: part A's harness at IPC 50, syn_steps 20/40 (last: it gets the rest)
# and $OUT/summary.md, one table per part with each part's status.

set -u
cd "$(dirname "$0")/.." || exit 1
REPO=$(pwd)
SELF="$REPO/benchmarks/gpu.sh"

part_install() {
    "$PY" benchmarks/gpu_bench.py install --wheelhouse "$REPO/wheelhouse" --site "$GPU_SITE"
}

part_env() {
    {
        echo "# date"
        date -u
        echo
        echo "# nvidia-smi"
        nvidia-smi 2>&1 || echo "nvidia-smi: not available"
        echo
        echo "# CPU and memory"
        (lscpu 2>/dev/null | grep -E "^(Model name|CPU\(s\)|Thread|Core|Socket)") || nproc
        free -g 2>/dev/null || true
        echo
        echo "# Python, torch, CUDA, modules (PYTHONPATH=$PYTHONPATH)"
    } >>"$OUT/env.txt"
    "$PY" benchmarks/gpu_bench.py env --out "$OUT/env.json" >>"$OUT/env.txt" 2>&1
    local rc=$?
    cat "$OUT/env.txt"
    return $rc
}

engine_ok() {  # an engine.json with at least one measured cell
    "$PY" - "$1" <<'EOF'
import json
import sys

cells = json.load(open(sys.argv[1]))["measurements"]
ok = [m for m in cells if "seconds_per_iteration" in m]
print(f"{len(ok)} of {len(cells)} cells measured")
sys.exit(0 if ok else 1)
EOF
}

part_A() {
    "$PY" benchmarks/engine.py --device "$DEVICE" --models "$ENGINE_MODEL" --steps "$A_STEPS" \
        --engines unroll,tesla,adjoint --out "$OUT/engine" --iters "$ITERS" --timeout "$CELL_TIMEOUT" \
        --retries 0 --quiet-wait 0 --threads "$THREADS" || return $?
    engine_ok "$OUT/engine/engine.json"
}

part_B() {
    "$PY" benchmarks/gpu_bench.py precision --device "$DEVICE" --model "$ENGINE_MODEL" --ipc "$B_IPC" \
        --steps "$B_STEPS" --iters "$ITERS" --threads "$THREADS" --out "$OUT/precision.json"
}

part_C() {
    # shellcheck disable=SC2086 (C_SET, C_ENS: option words)
    "$PY" benchmarks/gpu_bench.py experts --device "$DEVICE" --root "$DATA_ROOT" --experts "$C_EXPERTS" \
        --epochs "$C_EPOCHS" $C_SET $C_ENS --out "$OUT/experts.json"
}

part_D() {
    local items how t0 t1 rc
    # shellcheck disable=SC2206 (D_OVERRIDES: key=value words)
    items=(datm-fashion-mnist "device=$DEVICE" "data.root=$DATA_ROOT" $D_OVERRIDES)
    rm -rf "$OUT/fashion"
    if "$PY" -c "import matplotlib" 2>/dev/null; then
        how="distillset run, with its report"
        cmd=("$PY" -m distillset run "${items[@]}" --out "$OUT/fashion" --json)
    else
        how="gpu_bench.py run: distillset run without the report (no matplotlib here)"
        cmd=("$PY" benchmarks/gpu_bench.py run "${items[@]}" --out "$OUT/fashion")
    fi
    echo "${cmd[*]}"
    t0=$(date +%s.%N)
    "${cmd[@]}" >"$OUT/fashion.stdout" 2>"$OUT/fashion.stderr"
    rc=$?
    t1=$(date +%s.%N)
    "$PY" benchmarks/gpu_bench.py fashion-meta --command "${cmd[*]}" --how "$how" \
        --wall "$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" --run "$OUT/fashion" --out "$OUT/fashion.json"
    if [ ! -f "$OUT/fashion/evaluation.json" ]; then
        tr '\r' '\n' <"$OUT/fashion.stderr" | grep -v '^\s*$' | tail -n 3
        echo "no evaluation.json"
        [ $rc -ne 0 ] || rc=1
    fi
    return $rc
}

part_A2() {
    "$PY" benchmarks/gpu_bench.py engine-ipc --device "$DEVICE" --model "$ENGINE_MODEL" --ipc "$A2_IPC" \
        --steps "$A2_STEPS" --engines "$A2_ENGINES" --iters "$ITERS" --threads "$THREADS" \
        --timeout "$CELL_TIMEOUT" --out "$OUT/engine-ipc" || return $?
    engine_ok "$OUT/engine-ipc/engine.json"
}

# A part in its own process (so that `timeout` ends it and its children): bash gpu.sh --part NAME.
if [ "${1:-}" = "--part" ]; then
    "part_$2"
    exit $?
fi

START=$(date +%s)
SMOKE=0
case "${1:-}" in
    --cpu-smoke) SMOKE=1 ;;
    "") ;;
    *) echo "usage: bash benchmarks/gpu.sh [--cpu-smoke]" >&2; exit 2 ;;
esac

OUT=${OUT:-gpu-out}
mkdir -p "$OUT/logs" || exit 1
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT/status.tsv" "$OUT/env.txt" "$OUT/summary.md"

if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
elif [ $SMOKE = 1 ] && [ -x .venv/bin/python ]; then
    PY="$REPO/.venv/bin/python"
else
    PY=
    for c in python python3 python3.13 python3.12 python3.11; do
        if command -v "$c" >/dev/null 2>&1 \
            && "$c" -c 'import sys, torch; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
            PY=$c
            break
        fi
    done
    [ -n "$PY" ] || { command -v python >/dev/null 2>&1 && PY=python || PY=python3; }
fi

DATA_ROOT="$REPO/gpudata/fashion-mnist"
[ -d "$DATA_ROOT" ] || [ ! -d /usr/share/datasets/fashion-mnist ] || DATA_ROOT=/usr/share/datasets/fashion-mnist
if [ $SMOKE = 1 ]; then
    # One torch thread: other processes on a small machine stall two spinning OpenMP threads.
    DEVICE=cpu THREADS=1 ITERS=1 CELL_TIMEOUT=40 TOTAL_S=${GPU_BENCH_SECONDS:-90}
    ENGINE_MODEL=small A_STEPS=2 B_STEPS=3 B_IPC=1 A2_IPC=2 A2_STEPS=2 A2_ENGINES=adjoint
    C_EXPERTS=1 C_EPOCHS=1 C_SET="--set data.train_limit=200 --set data.val_size=100"
    C_ENS="--ensemble-experts 2 --ensemble-repeats 1"
    D_OVERRIDES="data.train_limit=200 data.val_size=100 distill.iterations=2 distill.syn_steps=3
        distill.expert_epochs=1 distill.max_start_epoch=1 distill.current_max_start_epoch=1
        distill.eval_epochs=2 experts.num_experts=2 experts.train_epochs=2 eval.runs=1 eval.epochs=2"
    BUDGET_install=20 BUDGET_env=15 BUDGET_A=35 BUDGET_B=15 BUDGET_C=40 BUDGET_D=30 BUDGET_A2=15
else
    DEVICE=cuda THREADS=16 ITERS=3 CELL_TIMEOUT=60 TOTAL_S=${GPU_BENCH_SECONDS:-450}
    ENGINE_MODEL=big A_STEPS=20,40,80 B_STEPS=20 B_IPC=10
    A2_IPC=50 A2_STEPS=20,40 A2_ENGINES=unroll,tesla,adjoint
    C_EXPERTS=2 C_EPOCHS=2 C_SET="" C_ENS="--ensemble-experts 4 --ensemble-repeats 2"
    # The DATM preset's window (start epochs up to 10) would reach past 4 expert epochs: 2 + 2 <= 4.
    D_OVERRIDES="distill.iterations=20 experts.num_experts=2 experts.train_epochs=4 eval.runs=2
        eval.epochs=50 distill.max_start_epoch=2 distill.current_max_start_epoch=2"
    BUDGET_install=40 BUDGET_env=20 BUDGET_A=150 BUDGET_B=45 BUDGET_C=75 BUDGET_D=100 BUDGET_A2=90
fi
DEADLINE=$((START + TOTAL_S))
GPU_SITE=$(mktemp -d "${TMPDIR:-/tmp}/distillset-gpu-site.XXXXXX")
trap 'rm -rf "$GPU_SITE"' EXIT
export PY OUT REPO DEVICE THREADS ITERS CELL_TIMEOUT ENGINE_MODEL A_STEPS B_STEPS B_IPC A2_IPC A2_STEPS A2_ENGINES
export C_EXPERTS C_EPOCHS C_SET C_ENS D_OVERRIDES DATA_ROOT GPU_SITE
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10

record() {  # part, status, seconds, budget, note
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$(printf '%s' "$5" | tr '\t|' '  ' | cut -c1-200)" \
        >>"$OUT/status.tsv"
    echo "== $1: $2 ($3 s) $5"
}

last_line() {
    tr '\r' '\n' <"$1" | grep -v '^\s*$' | tail -n 1
}

run_part() {  # part, budget in seconds
    local key=$1 budget=$2 left t rc t0 secs log="$OUT/logs/$1.log"
    left=$((DEADLINE - $(date +%s) - 5))
    if [ "$left" -lt 10 ]; then
        record "$key" skipped 0 "$budget" "no time left of the $TOTAL_S s"
        return
    fi
    t=$((budget < left ? budget : left))
    echo "== $key: up to $t s"
    t0=$(date +%s.%N)
    timeout -k 5 "$t" bash "$SELF" --part "$key" >"$log" 2>&1
    rc=$?
    secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
    if [ $rc -eq 0 ]; then
        record "$key" ok "$secs" "$t" "$(last_line "$log")"
    elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        record "$key" "timed out after $t s" "$secs" "$t" "$(last_line "$log")"
    else
        record "$key" "failed (exit $rc)" "$secs" "$t" "$(last_line "$log")"
    fi
}

echo "GPU benchmark: $([ $SMOKE = 1 ] && echo "CPU smoke run" || echo "device $DEVICE"), python $PY, out $OUT, at most $TOTAL_S s"
if [ "$PY" = "$REPO/.venv/bin/python" ]; then
    record install skipped 0 0 "the development environment has every dependency"
else
    run_part install "$BUDGET_install"
fi
export PYTHONPATH="$GPU_SITE:$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
run_part env "$BUDGET_env"
for part in A B C D A2; do
    case " ${GPU_BENCH_PARTS:-A B C D A2} " in
        *" $part "*) budget=BUDGET_$part && run_part "$part" "${!budget}" ;;
        *) record "$part" skipped 0 0 "not in GPU_BENCH_PARTS" ;;
    esac
done

smoke_flag=()
[ $SMOKE = 1 ] && smoke_flag=(--smoke)
if ! "$PY" benchmarks/gpu_bench.py summary --out "$OUT" "${smoke_flag[@]}" >"$OUT/logs/summary.log" 2>&1; then
    { echo "# GPU benchmark"; echo; echo "The summary could not be written:"; echo; tail -n 5 "$OUT/logs/summary.log"
      echo; echo "| part | status | seconds | budget s | last line |"; echo "|---|---|---:|---:|---|"
      awk -F'\t' '{printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5}' "$OUT/status.tsv"; } >"$OUT/summary.md"
fi
echo
cat "$OUT/summary.md"
echo
echo "total $(($(date +%s) - START)) s; everything under $OUT"
