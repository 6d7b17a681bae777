"""The Python half of benchmarks/gpu.sh: the GPU benchmark's installer, measurements and summary.

Subcommands (each writes JSON under the output folder; gpu.sh runs each under its own timeout):
  install    the wheels of benchmarks/gpu_prepare.sh that the machine's Python lacks, into a private
             folder (pip --target, or unpacked where there is no pip), never into the machine's Python;
             plus distillset's metadata there, so that src/ on PYTHONPATH imports as the installed package
  env        Python, torch, CUDA, cuDNN, the device, and where each dependency was imported from
  engine-ipc the engine harness (benchmarks/engine_bench.py) at another IPC: `engine.py` measures 100
             images (IPC 10, batch_syn all); this adds a MODELS entry of IPC x classes images and runs
             the same `run_benchmark`, one subprocess per cell
  precision  the adjoint engine's meta-gradient (images, lr) on random inputs as the harness sets them
             up, in float32, with TF32 and under bf16 autocast: relative error and cosine against
             float32, seconds per iteration
  experts    seconds per expert epoch: a bare training loop (benchmarks/expert_epoch.py) against the
             library's own `distillset experts`, and experts per hour; then experts per hour one by one
             against trained together (experts.ensemble off / on, benchmarks/expert_ensemble.py)
  run        `distillset run ... --json` without the run report (whose figures need matplotlib)
  summary    OUT/summary.md from everything the parts left in OUT

    python benchmarks/gpu_bench.py precision --device cuda --model big --steps 20 --out gpu-out/precision.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The published anchor: A100, CIFAR-100 IPC 10 (1,000 images), as reported for TESLA (Cui et al. 2023).
ANCHOR = {"unroll": (1.92, 61.6), "tesla": (5.71, 10.3)}
ANCHOR_NAMES = {"unroll": "MTT (unroll)", "tesla": "TESLA"}
ANCHOR_LINE = "A100, CIFAR-100 IPC 10 (published): MTT 1.92 s/it at 61.6 GB, TESLA 5.71 s/it at 10.3 GB."

# Dependencies of the library that nothing the GPU run executes imports (k-means initialisation and the
# digits data; the run report's figures, which part D leaves out where matplotlib is absent).
NOT_NEEDED = {"scikit-learn", "matplotlib"}

# module -> distribution, for the environment record
MODULES = {
    "numpy": "numpy",
    "PIL": "pillow",
    "yaml": "pyyaml",
    "pydantic": "pydantic",
    "pydantic_core": "pydantic-core",
    "click": "click",
    "tqdm": "tqdm",
    "safetensors": "safetensors",
    "matplotlib": "matplotlib",
    "sklearn": "scikit-learn",
    "distillset": "distillset",
}

PARTS = {
    "install": "install (wheels the machine lacks)",
    "env": "environment",
    "A": "A: engines at CIFAR shapes (IPC 10)",
    "B": "B: precision of the adjoint meta-gradient",
    "C": "C: expert-training throughput",
    "D": "D: Fashion-MNIST end to end",
    "A2": "A2: engines at a larger IPC",
}


# ------------------------------------------------------------------------------------------------
# install (standard library only: it runs before the dependencies are there)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _vtuple(v: str) -> tuple[int, ...]:
    parts = []
    for piece in v.split("."):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group()))
    return tuple(parts)


def _satisfies(version: str, spec: str) -> bool:
    """Does `version` meet a comma-separated specifier such as '>=2.5,<3' (numeric parts only)?"""
    have = _vtuple(version)
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        m = re.match(r"(~=|==|!=|>=|<=|>|<)\s*(\S+)", clause)
        if not m:
            continue
        op, want_s = m.groups()
        want = _vtuple(want_s.rstrip(".*"))
        n = max(len(have), len(want))
        a, b = have + (0,) * (n - len(have)), want + (0,) * (n - len(want))
        ok = {
            "==": a == b if not want_s.endswith(".*") else have[: len(want)] == want,
            "!=": a != b,
            ">=": a >= b,
            "<=": a <= b,
            ">": a > b,
            "<": a < b,
            "~=": a >= b and have[: len(want) - 1] == want[:-1],
        }[op]
        if not ok:
            return False
    return True


def _wheel_tags_fit(filename: str) -> bool:
    """Whether a wheel's tags fit this interpreter (CPython on Linux x86_64, or pure Python)."""
    parts = filename[:-4].split("-")
    pys, abi, plat = parts[-3].split("."), parts[-2], parts[-1]
    major, minor = sys.version_info[:2]
    if plat != "any" and not ("linux" in plat and platform.machine() in plat):
        return False
    for py in pys:
        if py in ("py3", f"py{major}{minor}") and abi == "none":
            return True
        m = re.fullmatch(r"cp(\d)(\d+)", py)
        if m and int(m.group(1)) == major:
            if abi == "abi3" and int(m.group(2)) <= minor:
                return True
            if int(m.group(2)) == minor and abi in (f"cp{major}{minor}", "none"):
                return True
    return False


def _wheel_requires(path: Path) -> list[tuple[str, str, str]]:
    """(name, specifier, marker) of each Requires-Dist of a wheel, extras left out."""
    with zipfile.ZipFile(path) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    out = []
    for line in re.findall(r"^Requires-Dist:\s*(.+)$", text, re.MULTILINE):
        req, _, marker = line.partition(";")
        if "extra" in marker:
            continue
        m = re.match(r"([A-Za-z0-9_.\-]+)\s*(?:\[[^\]]*\])?\s*\(?([^)]*)\)?", req.strip())
        if m:
            out.append((_norm(m.group(1)), m.group(2).strip(), marker.strip()))
    return out


def _project_requires() -> list[tuple[str, str]]:
    """distillset's own dependencies (name, specifier) from pyproject.toml, torch left to the machine."""
    text = (REPO / "pyproject.toml").read_text()
    block = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", text, re.MULTILINE | re.DOTALL)
    reqs = []
    for item in re.findall(r'^\s*"([^"]+)"', block.group(1) if block else "", re.MULTILINE):
        m = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", item)
        if m and _norm(m.group(1)) != "torch":
            reqs.append((_norm(m.group(1)), m.group(2).strip()))
    return reqs


def _installed(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def cmd_install(args: argparse.Namespace) -> int:
    wheelhouse, site = Path(args.wheelhouse), Path(args.site)
    needs = re.search(r'^requires-python\s*=\s*">=\s*([\d.]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    if needs and sys.version_info[:2] < _vtuple(needs.group(1))[:2]:
        print(
            f"python {platform.python_version()} ({sys.executable}) is older than distillset's "
            f"requires-python >={needs.group(1)}; set PYTHON to a newer one",
            file=sys.stderr,
        )
        return 1
    site.mkdir(parents=True, exist_ok=True)
    wheels: dict[str, list[tuple[str, Path]]] = {}
    for w in sorted(wheelhouse.glob("*.whl")):
        name, ver = w.name.split("-")[:2]
        if _wheel_tags_fit(w.name):
            wheels.setdefault(_norm(name), []).append((ver, w))
    print(
        f"python {platform.python_version()} ({sys.executable}); {sum(map(len, wheels.values()))} "
        f"wheels of {wheelhouse} fit it"
    )
    # The machine's own packages where they satisfy the requirement; ours where they are missing or too
    # old, with whatever our wheel in turn requires (pydantic pins its pydantic-core, for instance).
    todo = list(_project_requires())
    chosen: dict[str, Path] = {}
    kept, missing = {}, []
    while todo:
        name, spec = todo.pop(0)
        if name in chosen or name in kept:
            continue
        have = _installed(name)
        if have is not None and _satisfies(have, spec):
            kept[name] = have
            continue
        fits = [(v, p) for v, p in wheels.get(name, []) if _satisfies(v, spec)]
        if not fits:
            if name in NOT_NEEDED:
                print(f"  absent, not needed by this benchmark: {name}{spec} (have {have or 'none'})")
            else:
                missing.append(f"{name}{spec} (have {have or 'none'})")
            continue
        ver, path = max(fits, key=lambda vp: _vtuple(vp[0]))
        chosen[name] = path
        for dep, dep_spec, marker in _wheel_requires(path):
            if marker and dep not in wheels:  # a platform's extra (colorama on Windows, ...)
                continue
            todo.append((dep, dep_spec))
    for name, ver in sorted(kept.items()):
        print(f"  machine's own: {name} {ver}")
    for path in sorted(chosen.values()):
        print(f"  from the wheelhouse: {path.name}")
    if chosen:
        paths = [str(p) for p in chosen.values()]
        has_pip = (
            subprocess.run(
                [sys.executable, "-m", "pip", "--version"], capture_output=True, text=True
            ).returncode
            == 0
        )
        if has_pip:
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--no-index",
                "--no-deps",
                "--disable-pip-version-check",
                "--target",
                str(site),
                *paths,
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            print(proc.stdout.strip()[-2000:])
            if proc.returncode != 0:
                print(proc.stderr.strip()[-2000:], file=sys.stderr)
                return proc.returncode
        else:  # a wheel is a zip of the files as they lie in site-packages
            print("  no pip: unpacking the wheels")
            for p in paths:
                with zipfile.ZipFile(p) as z:
                    z.extractall(site)
                for data in site.glob("*.data"):
                    for sub in ("purelib", "platlib"):
                        if (data / sub).is_dir():
                            shutil.copytree(data / sub, site, dirs_exist_ok=True)
                    shutil.rmtree(data)
    # What `pip install -e .` would add besides the path: the metadata distillset reads its version from.
    if _installed("distillset") is None:
        ver = re.search(r'^version\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
        info = site / f"distillset-{ver}.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: distillset\nVersion: {ver}\n")
        (info / "INSTALLER").write_text("benchmarks/gpu_bench.py\n")
        print(f"  distillset {ver}: src/ on PYTHONPATH, its metadata in {info}")
    if missing:
        hint = ""
        if any(m.startswith("numpy") for m in missing):
            v = f"{sys.version_info[0]}.{sys.version_info[1]}"
            hint = f"; numpy's wheel: NUMPY=1 PYTHONS={v} bash benchmarks/gpu_prepare.sh"
        print(f"missing, with no fitting wheel: {', '.join(missing)}{hint}", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------------------------------------
# env


def cmd_env(args: argparse.Namespace) -> int:
    info: dict = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    import torch

    info.update(
        torch=torch.__version__,
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        cuda_available=torch.cuda.is_available(),
    )
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(
            gpu=p.name,
            gpu_memory_gb=round(p.total_memory / 2**30, 1),
            capability=f"{p.major}.{p.minor}",
            bf16_supported=torch.cuda.is_bf16_supported(),
            device_count=torch.cuda.device_count(),
        )
    modules = {}
    for mod, dist in MODULES.items():
        try:
            m = __import__(mod)
            modules[mod] = {"version": _installed(dist), "file": getattr(m, "__file__", None)}
        except Exception as e:  # noqa: BLE001 (recorded, not fatal)
            modules[mod] = {"error": f"{type(e).__name__}: {e}"[:300]}
    info["modules"] = modules
    try:
        from distillset.provenance import provenance

        info["provenance"] = provenance()
    except Exception as e:  # noqa: BLE001
        info["provenance_error"] = f"{type(e).__name__}: {e}"[:300]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(info, indent=2) + "\n")
    for k, v in info.items():
        if k == "modules":
            for mod, m in v.items():
                print(f"module {mod}: " + (m.get("error") or f"{m['version']} from {m['file']}"))
        else:
            print(f"{k}: {v}")
    absent = [m for m, r in modules.items() if "error" in r]
    print(
        f"python {info['python']}, torch {info['torch']}, CUDA {info['cuda']}, "
        f"{info.get('gpu') or 'no GPU'}; not importable: {', '.join(absent) or 'none'}"
    )
    return 0 if modules["distillset"].get("error") is None else 1


# ------------------------------------------------------------------------------------------------
# engine-ipc


def cmd_engine_ipc(args: argparse.Namespace) -> int:
    import engine_bench as eb

    base = eb.MODELS[args.model]
    name = f"{args.model}-ipc{args.ipc}"
    eb.MODELS[name] = {
        **base,
        "label": f"{base['label']}, IPC {args.ipc}",
        "images": args.ipc * int(base["classes"]),
    }
    results = eb.run_benchmark(
        [name],
        [int(s) for s in args.steps.split(",")],
        args.engines.split(","),
        str(args.iters),
        args.device,
        threads=args.threads,
        timeout=args.timeout,
        quiet_wait=0.0,
        retries=0,
        on_result=lambda r: eb.save(r, args.out),
    )
    eb.save(results, args.out)
    print(eb.write_markdown(results))
    return 0 if any(eb._is_ok(m) for m in results["measurements"]) else 1


# ------------------------------------------------------------------------------------------------
# precision


def cmd_precision(args: argparse.Namespace) -> int:
    import contextlib

    import torch
    from engine_bench import MODELS, _sync

    from distillset.inner import Student, meta_loss, sample_plan
    from distillset.models import build_model
    from distillset.models.params import flat_params
    from distillset.objectives.trajectory import ParameterMatch
    from distillset.utils import resolve_device

    spec = MODELS[args.model]
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    shape, classes = tuple(spec["shape"]), int(spec["classes"])
    n, steps = args.ipc * classes, args.steps
    # The harness's setup (engine_bench.measure): a seeded ConvNet, a perturbed copy of its parameters
    # as the expert's target, random images, hard labels, lr 0.01, DSA on every step, batch_syn all.
    torch.manual_seed(args.seed)
    model = build_model("convnet", shape, classes, width=int(spec["width"]), depth=int(spec["depth"]))
    model = model.to(device)
    student = Student.of(model, momentum=0.0)
    gen = torch.Generator().manual_seed(args.seed)
    theta0 = flat_params(model)
    target = theta0 + 0.01 * torch.randn(theta0.shape, generator=gen).to(device)
    match = ParameterMatch(theta0, target)
    images0 = torch.randn((n, *shape), generator=gen).to(device)
    labels = (torch.arange(n) % classes).to(device)
    # One plan (batches and DSA draws) for every mode, so that they compute the same function.
    plan = sample_plan(n, steps, n, shape[1:], spec.get("strategy"), gen, device)

    def set_tf32(on: bool) -> None:
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on

    def run(mode: str) -> dict:
        set_tf32(mode == "tf32")
        autocast = (
            torch.autocast(device.type, dtype=torch.bfloat16)
            if mode == "bf16-autocast"
            else contextlib.nullcontext()
        )
        images = images0.clone().requires_grad_(True)
        lr = torch.tensor(0.01, device=device, requires_grad=True)

        def once() -> tuple[float, float]:
            images.grad = lr.grad = None
            _sync(device)
            t0 = time.perf_counter()
            with autocast:
                loss = meta_loss(args.engine, student, theta0, images, labels, lr, plan, {steps: match})
                loss.backward()
            _sync(device)
            return time.perf_counter() - t0, float(loss.detach())

        once()  # warm-up: one-time costs
        timed = [once() for _ in range(args.iters)]
        return {
            "seconds": [t for t, _ in timed],
            "seconds_per_iteration": sum(t for t, _ in timed) / len(timed),
            "loss": timed[-1][1],
            "grad_images": images.grad.detach().float().clone(),
            "grad_lr": float(lr.grad),
            "grad_dtype": str(images.grad.dtype),
        }

    modes = ["float32", "float32-repeat", "tf32", "bf16-autocast"]
    rows: dict[str, dict] = {}
    for mode in modes:
        try:
            rows[mode] = run(mode)
        except Exception as e:  # noqa: BLE001 (recorded per mode)
            rows[mode] = {"error": f"{type(e).__name__}: {e}"[:500]}
        print(
            f"{mode}: " + (rows[mode].get("error") or f"{rows[mode]['seconds_per_iteration']:.3f} s/it"),
            flush=True,
        )
    set_tf32(False)
    ref = rows["float32"]
    g32 = ref.get("grad_images")
    for r in rows.values():
        g = r.pop("grad_images", None)
        if g is None or g32 is None:
            continue
        norm32 = float(g32.norm())
        r["images_rel_error"] = float((g - g32).norm()) / norm32 if norm32 > 0 else None
        r["images_cosine"] = float(torch.nn.functional.cosine_similarity(g.flatten(), g32.flatten(), dim=0))
        lr32 = ref["grad_lr"]
        r["lr_rel_error"] = abs(r["grad_lr"] - lr32) / abs(lr32) if lr32 else None
        r["finite"] = bool(torch.isfinite(g).all()) and math.isfinite(r["grad_lr"])
    result = {
        "engine": args.engine,
        "model": f"ConvNet-{spec['width']}-{spec['depth']}, {'x'.join(map(str, shape))}",
        "images": n,
        "ipc": args.ipc,
        "syn_steps": steps,
        "iters": args.iters,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "note": "float32: TF32 off for matmul and cuDNN (cuDNN's TF32 is on by default); tf32: both on; "
        "bf16-autocast: meta_loss and backward() inside torch.autocast(bfloat16). float32-repeat is the "
        "run-to-run noise floor of float32 itself.",
        "modes": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(
        "; ".join(
            f"{m} "
            + (
                r["error"][:60]
                if "error" in r
                else f"{r['seconds_per_iteration']:.3f} s/it, error {_f(r.get('images_rel_error'), '.1e')}"
            )
            for m, r in rows.items()
        )
    )
    return 0 if "error" not in ref else 1


# ------------------------------------------------------------------------------------------------
# experts


def cmd_experts(args: argparse.Namespace) -> int:
    import expert_ensemble
    import expert_epoch

    overrides = [f"device={args.device}", f"data.root={args.root}", *args.set]
    result: dict = {
        "preset": args.preset,
        "overrides": overrides,
        "experts": args.experts,
        "epochs": args.epochs,
    }

    def save() -> None:  # after each measurement: a part cut short by its timeout keeps the earlier ones
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    # One network in a bare loop of the library's train_epoch (benchmarks/expert_epoch.py), on the
    # random preset with the DATM preset's network and data (width 32, 10,000 training images).
    from distillset.config import load_config

    cfg = load_config(args.preset, overrides)
    bare = [
        f"model.width={cfg.model.width}",
        f"model.depth={cfg.model.depth}",
        f"data.train_limit={cfg.data.train_limit}",
        *overrides,
    ]
    try:
        # One epoch more than the library's: the minimum leaves out the first one's one-time costs.
        result["bare_loop"] = expert_epoch.measure("fashion-mnist", bare, args.epochs + 1)
    except Exception as e:  # noqa: BLE001
        result["bare_loop"] = {"error": f"{type(e).__name__}: {e}"[:500]}
    save()
    # Single against ensemble: the same experts one by one and trained together, in this process.
    try:
        result["ensemble"] = expert_ensemble.measure(
            args.preset, overrides, args.ensemble_experts, args.epochs, args.ensemble_repeats
        )
    except Exception as e:  # noqa: BLE001
        result["ensemble"] = {"error": f"{type(e).__name__}: {e}"[:500]}
    save()
    # The library's own training: `distillset experts` in a fresh process (experts.ensemble=auto).
    run = Path(args.out).with_suffix("")
    shutil.rmtree(run, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "distillset",
        "experts",
        args.preset,
        *overrides,
        f"experts.num_experts={args.experts}",
        f"experts.train_epochs={args.epochs}",
        "--out",
        str(run),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    (run.parent / f"{run.name}.log").write_text(proc.stdout + proc.stderr)
    lib: dict = {
        "command": " ".join(cmd),
        "wall_seconds": wall,
        "returncode": proc.returncode,
        "ensemble": load_config(args.preset, overrides).experts.ensemble,
    }
    manifest = run / "experts" / "manifest.json"
    if proc.returncode == 0 and manifest.exists():
        recs = json.loads(manifest.read_text())["experts"]
        per = [s for r in recs.values() for s in r["seconds"]]
        later = [s for r in recs.values() for s in r["seconds"][1:]] or per
        lib.update(
            epoch_seconds=per,
            seconds_per_epoch=sum(later) / len(later),
            first_epoch_seconds=[r["seconds"][0] for r in recs.values()],
            final_val_acc=[r["val_acc"][-1] for r in recs.values()],
            experts_per_hour_wall=3600 * len(recs) / wall,
        )
    else:
        lib["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    result["library"] = lib
    full = load_config(args.preset).experts.train_epochs
    result["preset_train_epochs"] = full
    for rec in (result["bare_loop"], lib):
        s = rec.get("seconds_per_epoch")
        if s:
            rec["experts_per_hour_at_preset_epochs"] = 3600 / (s * full)
    save()
    print(json.dumps(result, indent=2)[:3000])
    ens = result["ensemble"]
    print(
        f"s per expert epoch: bare loop {_f(result['bare_loop'].get('seconds_per_epoch'))}, "
        f"distillset experts {_f(lib.get('seconds_per_epoch'))} ({lib['wall_seconds']:.1f} s wall); "
        f"together {_f(ens.get('ratio'))}x the experts per hour of one by one"
    )
    return 0 if "error" not in lib and "error" not in ens else 1


# ------------------------------------------------------------------------------------------------
# run (without the report)


def cmd_run(args: argparse.Namespace) -> int:
    from distillset.config import load_config
    from distillset.pipeline import check, run_pipeline

    source = next((i for i in args.items if "=" not in i), None)
    cfg = load_config(source, [i for i in args.items if "=" in i])
    check(cfg)
    result = run_pipeline(cfg, args.out, progress=False, report=False)
    print(json.dumps(result.report))
    return 0


# ------------------------------------------------------------------------------------------------
# summary


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _f(v: float | None, fmt: str = ".2f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _engine_table(res: dict | None, anchor: bool) -> list[str]:
    if res is None:
        return ["No results file."]
    lines = [
        "| model | images | syn_steps | engine | s / it | peak GB | iters | status |",
        "|---|---:|---:|---|---:|---:|---:|---|",
    ]
    models = res.get("settings", {}).get("models", {})
    for m in res.get("measurements", []):
        spec = models.get(m["model"], {})
        ok = "seconds_per_iteration" in m
        status = (
            "ok"
            if ok
            else (
                m.get("skipped")
                or (f"timeout {m['timeout']:.0f} s" if "timeout" in m else m.get("error", "?"))
            )
        )
        lines.append(
            f"| {m['model']} | {spec.get('images', '?')} | {m['syn_steps']} | {m['engine']} | "
            f"{_f(m.get('seconds_per_iteration'), '.3f')} | "
            f"{_f(m['peak_mb'] / 1024 if ok else None)} | {m.get('iters', '')} | {str(status)[:90]} |"
        )
    if anchor:
        lines += [
            "",
            f"Anchor: {ANCHOR_LINE} The anchor distils 1,000 images (100 classes) on an A100; these rows "
            "distil CIFAR-shaped random images of 10 classes, so compare the growth with syn_steps and the "
            "ratios between engines rather than the absolute figures.",
            "",
            "| anchor | s / it | GB |",
            "|---|---:|---:|",
            *(f"| {ANCHOR_NAMES[e]} | {s} | {gb} |" for e, (s, gb) in ANCHOR.items()),
        ]
    return lines


def cmd_summary(args: argparse.Namespace) -> int:
    out = Path(args.out)
    status: dict[str, list[str]] = {}
    if (out / "status.tsv").exists():
        for line in (out / "status.tsv").read_text().splitlines():
            cols = line.split("\t")
            status[cols[0]] = cols[1:]
    env = _load(out / "env.json") or {}
    mode = "CPU smoke run (tiny sizes: checks the plumbing, measures nothing)" if args.smoke else "GPU run"
    lines = [
        "# GPU benchmark",
        "",
        f"{mode}. Python {env.get('python', '?')}, torch {env.get('torch', '?')}, CUDA {env.get('cuda')}, "
        f"cuDNN {env.get('cudnn')}, device {env.get('gpu') or 'cpu'}"
        + (f" ({env['gpu_memory_gb']} GB)" if env.get("gpu_memory_gb") else "")
        + f", {env.get('cpu_count', '?')} CPU cores. Details in env.txt; each part's log in logs/.",
        "",
        "| part | status | seconds | budget s |",
        "|---|---|---:|---:|",
    ]
    for key, label in PARTS.items():
        st = status.get(key)
        if st is None:
            lines.append(f"| {label} | not run | | |")
        else:
            word, secs, budget, *note = st + [""] * 3
            text = word if not note or not note[0] else f"{word}: {note[0]}"
            lines.append(f"| {label} | {text.replace('|', '/')[:160]} | {secs} | {budget} |")
    lines += ["", "## A: engines at CIFAR shapes, IPC 10 (benchmarks/engine.py)", ""]
    lines += _engine_table(_load(out / "engine" / "engine.json"), anchor=True)
    a2 = _load(out / "engine-ipc" / "engine.json")
    spec = next(iter((a2 or {}).get("settings", {}).get("models", {}).values()), {})
    ipc = spec.get("images", 0) // max(1, spec.get("classes", 10)) if spec else "?"
    lines += [
        "",
        f"## A2: engines at IPC {ipc} (gpu_bench.py engine-ipc: engine.py has no IPC option, so this runs "
        "its harness with one more model entry)",
        "",
    ]
    lines += _engine_table(a2, anchor=False)

    lines += ["", "## B: precision of the adjoint meta-gradient", ""]
    prec = _load(out / "precision.json")
    if prec is None:
        lines.append("No results file.")
    else:
        lines += [
            f"{prec['engine']} engine, {prec['model']}, {prec['images']} random images (IPC {prec['ipc']}), "
            f"syn_steps {prec['syn_steps']}, {prec['iters']} timed iterations; {prec['note']}",
            "",
            "| mode | s / it | images: rel. error | images: cosine | lr: rel. error | status |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for mode, r in prec["modes"].items():
            cells = [
                _f(r.get("seconds_per_iteration"), ".3f"),
                _f(r.get("images_rel_error"), ".2e"),
                _f(r.get("images_cosine"), ".6f"),
                _f(r.get("lr_rel_error"), ".2e"),
                (r.get("error") or "ok").replace("|", "/")[:160],
            ]
            lines.append(f"| {mode} | {' | '.join(cells)} |")
        lines.append("")
        lines.append(
            "Under autocast the adjoint's backward sweep is a custom autograd Function's backward, which "
            "PyTorch runs without the caller's autocast state unless the Function declares custom_bwd."
        )

    lines += ["", "## C: expert-training throughput", ""]
    ex = _load(out / "experts.json")
    if ex is None:
        lines.append("No results file.")
    else:
        bare, lib = ex.get("bare_loop", {}), ex.get("library", {})
        lines += [
            f"Preset {ex['preset']} ({' '.join(ex['overrides'])}): {ex['experts']} experts x {ex['epochs']} "
            f"epochs; experts per hour at the preset's {ex['preset_train_epochs']} epochs. The library's "
            "epoch also holds the validation pass and the snapshot of the parameters; with "
            f"experts.ensemble={lib.get('ensemble', 'auto')} (auto: together on CUDA) an expert's epoch "
            "is its share of its group's. The preset's own comment: an expert epoch near 5 s on two CPU "
            "cores.",
            "",
            "| how | s / expert epoch | experts / hour | note |",
            "|---|---:|---:|---|",
            f"| bare loop (expert_epoch.py, fastest of {ex['epochs'] + 1} epochs) | "
            f"{_f(bare.get('seconds_per_epoch'), '.2f')} | "
            f"{_f(bare.get('experts_per_hour_at_preset_epochs'), '.0f')} | "
            f"{(bare.get('error') or 'train_epoch only').replace('|', '/')[:120]} |",
            "| distillset experts (mean of epochs after the first) | "
            f"{_f(lib.get('seconds_per_epoch'), '.2f')} | "
            f"{_f(lib.get('experts_per_hour_at_preset_epochs'), '.0f')} | "
            + (
                f"wall {lib['wall_seconds']:.1f} s for {ex['experts']} experts, first epochs "
                f"{', '.join(f'{s:.2f}' for s in lib.get('first_epoch_seconds', []))} s"
                if "error" not in lib
                else " ".join(lib["error"]).replace("|", "/")[:160]
            )
            + " |",
        ]
        ens = ex.get("ensemble")
        if ens is not None:
            lines += [
                "",
                "Single against ensemble (experts.ensemble off / on, benchmarks/expert_ensemble.py):",
                "",
            ]
            if "error" in ens:
                lines.append(f"failed: {ens['error'].replace('|', '/')[:200]}")
            else:
                lines += [
                    f"{ens['experts']} experts x {ens['epochs']} epochs on {ens['train_images']} images, "
                    f"the fastest of {ens['repeats']} runs each way in one process.",
                    "",
                    "| how | experts / hour | ratio | largest difference |",
                    "|---|---:|---:|---:|",
                    f"| one by one | {_f(ens['per_hour']['off'], '.0f')} | 1.00x | |",
                    f"| together | {_f(ens['per_hour']['on'], '.0f')} | {_f(ens['ratio'])}x | "
                    f"{ens['max_rel_difference']:.1e} |",
                ]

    lines += ["", "## D: Fashion-MNIST end to end (distillset run)", ""]
    ev = _load(out / "fashion" / "evaluation.json")
    meta = _load(out / "fashion.json") or {}
    if ev is None:
        lines.append("No evaluation.json.")
    else:
        rows = [("distilled", ev.get("results", {}))]
        rows += [(k, ev.get(k, {})) for k in ("random_baseline", "soft_random_baseline") if k in ev]
        lines += [
            f"Command: `{meta.get('command', '?')}` ({meta.get('how', '?')}), "
            f"wall {_f(meta.get('wall_seconds'), '.1f')} s; "
            f"distillation {_f(ev.get('compute', {}).get('distill_seconds'), '.1f')} s"
            + (
                f", {_f(meta.get('distill_seconds_per_iteration'), '.3f')} s per iteration after the first"
                if meta.get("distill_seconds_per_iteration")
                else ""
            )
            + f". IPC {ev.get('ipc')}, {ev.get('protocol', {}).get('runs')} evaluation runs of "
            f"{ev.get('protocol', {}).get('epochs')} epochs.",
            "",
            "| set | model | test accuracy | std |",
            "|---|---|---:|---:|",
        ]
        for name, res in rows:
            for model, r in res.items():
                if isinstance(r, dict) and "mean" in r:
                    lines.append(f"| {name} | {model} | {_f(r['mean'], '.4f')} | {_f(r.get('std'), '.4f')} |")
    lines.append("")
    (out / "summary.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def cmd_fashion_meta(args: argparse.Namespace) -> int:
    """fashion.json: the command, how it ran and its wall time, plus the distillation's seconds/it."""
    meta = {"command": args.command, "how": args.how, "wall_seconds": args.wall}
    metrics = Path(args.run) / "metrics.jsonl"
    if metrics.exists():
        secs = []
        for line in metrics.read_text().splitlines():
            rec = json.loads(line)
            if "it" in rec and "seconds" in rec and rec.get("event") is None:
                secs.append(rec["seconds"])
        if len(secs) > 1:
            meta["distill_seconds_per_iteration"] = sum(secs[1:]) / len(secs[1:])
            meta["distill_iterations"] = len(secs)
    Path(args.out).write_text(json.dumps(meta, indent=2) + "\n")
    ev = _load(Path(args.run) / "evaluation.json")
    if ev is not None:
        acc = {k: ev.get(k, {}).get("convnet", {}).get("mean") for k in ("results", "random_baseline")}
        print(
            f"test accuracy {_f(acc['results'], '.4f')} (random real {_f(acc['random_baseline'], '.4f')}), "
            f"wall {args.wall:.1f} s"
        )
    return 0


# ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("install")
    s.add_argument("--wheelhouse", default=str(REPO / "wheelhouse"))
    s.add_argument("--site", required=True)
    s = sub.add_parser("env")
    s.add_argument("--out", required=True)
    s = sub.add_parser("engine-ipc")
    s.add_argument("--model", default="big")
    s.add_argument("--ipc", type=int, default=50)
    s.add_argument("--steps", default="20,40")
    s.add_argument("--engines", default="unroll,tesla,adjoint")
    s.add_argument("--iters", type=int, default=3)
    s.add_argument("--device", default="cuda")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--timeout", type=float, default=60.0)
    s.add_argument("--out", required=True)
    s = sub.add_parser("precision")
    s.add_argument("--model", default="big")
    s.add_argument("--engine", default="adjoint")
    s.add_argument("--ipc", type=int, default=10)
    s.add_argument("--steps", type=int, default=20)
    s.add_argument("--iters", type=int, default=3)
    s.add_argument("--device", default="cuda")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True)
    s = sub.add_parser("experts")
    s.add_argument("--preset", default="datm-fashion-mnist")
    s.add_argument("--device", default="cuda")
    s.add_argument("--root", default=str(REPO / "gpudata" / "fashion-mnist"))
    s.add_argument("--experts", type=int, default=2)
    s.add_argument("--epochs", type=int, default=2)
    s.add_argument("--ensemble-experts", type=int, default=4, help="experts one by one, then together")
    s.add_argument("--ensemble-repeats", type=int, default=2)
    s.add_argument("--set", action="append", default=[], help="another key=value override")
    s.add_argument("--out", required=True)
    s = sub.add_parser("run")
    s.add_argument("items", nargs="+")
    s.add_argument("--out", required=True)
    s = sub.add_parser("fashion-meta")
    s.add_argument("--command", required=True)
    s.add_argument("--how", required=True)
    s.add_argument("--wall", type=float, required=True)
    s.add_argument("--run", required=True)
    s.add_argument("--out", required=True)
    s = sub.add_parser("summary")
    s.add_argument("--out", required=True)
    s.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    return {
        "install": cmd_install,
        "env": cmd_env,
        "engine-ipc": cmd_engine_ipc,
        "precision": cmd_precision,
        "experts": cmd_experts,
        "run": cmd_run,
        "fashion-meta": cmd_fashion_meta,
        "summary": cmd_summary,
    }[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
