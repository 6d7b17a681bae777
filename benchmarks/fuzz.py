"""A long run of the fuzz tests (tests/test_fuzz.py, tests/test_fuzz_stored.py): N generated cases per
target instead of the suite's default, each target in its own pytest process under a memory limit (a
case that tries to allocate gigabytes fails with MemoryError instead of waking the machine's OOM killer).

    python benchmarks/fuzz.py --examples 2000 [--targets idx,npz] [--memory-gb 4] [--out fuzz.md]

Writes benchmarks/results/fuzz.md (or --out, under benchmarks/results/): per target, the cases run and
the share that loaded or were refused.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

from distillset.provenance import describe, provenance

ROOT = Path(__file__).resolve().parent.parent
TARGETS = [
    "overrides",
    "yaml_files",
    "command_line_overrides",
    "idx",
    "cifar_batches",
    "imagenet_downsampled",
    "npz",
    "image_folders",
    "tinyimagenet",
]
# the files distillset writes and reads back (tests/test_fuzz_stored.py)
STORED = [
    "artifact_manifests",
    "artifact_headers",
    "store_manifests",
    "expert_shard_headers",
    "checkpoint_headers",
]


def run_target(target: str, examples: int, memory_gb: float) -> tuple[bool, str]:
    def limit() -> None:
        cap = int(memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    env = {**os.environ, "DISTILLSET_FUZZ_EXAMPLES": str(examples), "PYTHONPATH": str(ROOT / "src")}
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--hypothesis-show-statistics"]
    file = "test_fuzz_stored.py" if target in STORED else "test_fuzz.py"
    argv += [str(ROOT / "tests" / file), "-k", f"test_fuzz_{target}"]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, preexec_fn=limit, cwd=ROOT)
    return proc.returncode == 0, proc.stdout + proc.stderr


def summary(output: str) -> str:
    cases = re.search(r"(\d+) passing, (\d+) failing", output)
    events = re.findall(r"\* ([\d.]+%), (works|refused: \w+)", output)
    shares = ", ".join(f"{what} {share}" for share, what in events)
    return f"{cases.group(1) if cases else '?'} cases; {shares}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="cases per target")
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS + STORED),
        help="comma-separated, of: " + ", ".join(TARGETS + STORED),
    )
    parser.add_argument("--out", default="fuzz.md", help="the results file's name")
    parser.add_argument("--memory-gb", type=float, default=4.0, help="address-space limit per target")
    args = parser.parse_args()
    rows, failed = [], []
    for target in args.targets.split(","):
        ok, output = run_target(target, args.examples, args.memory_gb)
        line = f"| {target} | {'passed' if ok else 'FAILED'} | {summary(output)} |"
        print(line, flush=True)
        rows.append(line)
        if not ok:
            failed.append(target)
            print(output[-4000:], file=sys.stderr)
    made = provenance(sys.argv)
    md = [
        "# Fuzzing: configs, data files, and the files distillset writes and reads back",
        "",
        f"{args.examples} generated cases per target, derandomized; {describe(made)}.",
        "",
        "| target | result | cases and outcomes |",
        "|---|---|---|",
        *rows,
        "",
    ]
    out = ROOT / "benchmarks" / "results" / args.out
    out.write_text("\n".join(md))
    print(f"written to {out}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
