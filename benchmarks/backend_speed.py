"""Training and inference speed of zoo models under each Keras backend on this machine.

Keras picks its backend once, at import, so every (model, backend) pair runs in its own
subprocess, the backends alternating model by model so that a change in the machine's load
touches both sides of a comparison alike. For each model: median seconds of
``train_on_batch`` over ``--steps`` steps after ``--warmup`` steps, and of
``predict_on_batch``, on one random ``(B, H, W, 1)`` float32 batch with 3 classes (the
workshop's 176 x 208 axial slices by default). The 1-minute load average before and after
each measurement is reported: on a shared machine, numbers taken under load > cores are
not comparable.

Usage::

    python benchmarks/backend_speed.py                       # torch and jax, if installed
    python benchmarks/backend_speed.py --backends torch --models unet --steps 5
    python benchmarks/backend_speed.py --json out.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

BACKENDS = ("torch", "jax")


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS))
    parser.add_argument("--models", nargs="+", default=["model_0_0", "unet"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, nargs=2, default=(176, 208), metavar=("H", "W"))
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--loss", default="categorical_crossentropy")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _median_times(fn, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()  # both calls return numpy values, so the step has finished
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _worker(args: argparse.Namespace) -> dict:
    """Measure every model under the backend already set in KERAS_BACKEND."""
    os.environ["KERAS_BACKEND"] = args.worker
    import keras
    from _common import conv_flops_per_slice, matmul_gflops, peak_rss_mb

    from minc_keras.models import build_model, get_loss, make_metrics

    rng = np.random.default_rng(0)
    height, width = args.size
    x = rng.random((args.batch, height, width, 1), dtype=np.float32)
    y = np.eye(args.classes, dtype=np.float32)[rng.integers(0, args.classes, x.shape[:3])]
    result = {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "load_before": os.getloadavg()[0],
        "matmul_gflops": round(matmul_gflops(), 1),
        "models": {},
    }
    for name in args.models:
        keras.utils.set_random_seed(0)
        model = build_model(name, num_classes=args.classes)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-4),
            loss=get_loss(args.loss),
            metrics=make_metrics(args.classes),
        )
        train = _median_times(lambda m=model: m.train_on_batch(x, y), args.steps, args.warmup)
        infer = _median_times(lambda m=model: m.predict_on_batch(x), args.steps, args.warmup)
        flops = conv_flops_per_slice(model, height, width)
        result["models"][name] = {
            "parameters": int(model.count_params()),
            "train_step_s": train,
            "train_steps_per_s": 1.0 / train,
            "train_slices_per_s": args.batch / train,
            "infer_batch_s": infer,
            "infer_slices_per_s": args.batch / infer,
            "forward_gflop_per_slice": flops / 1e9,
            "infer_gflops": flops * args.batch / infer / 1e9,
        }
    result["peak_rss_mb"] = round(peak_rss_mb())
    result["load_after"] = os.getloadavg()[0]
    return result


def _run_backend(backend: str, args: argparse.Namespace, model: str) -> dict | None:
    env = {**os.environ, "KERAS_BACKEND": backend}
    command = [
        sys.executable,
        __file__,
        "--models",
        model,
        "--worker",
        backend,
        "--batch",
        str(args.batch),
        "--size",
        *map(str, args.size),
        "--classes",
        str(args.classes),
        "--loss",
        args.loss,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        print(f"{backend} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _table(results: list[dict], args: argparse.Namespace) -> str:
    lines = [
        f"batch {args.batch} x {args.size[0]} x {args.size[1]} x 1 float32, "
        f"{args.classes} classes, loss {args.loss}, median of {args.steps} steps after "
        f"{args.warmup} warm-up, {os.cpu_count()} CPU cores",
        f"{'backend':<8}{'model':<11}{'train steps/s':>14}{'train slices/s':>16}"
        f"{'infer slices/s':>16}{'infer GFLOP/s':>15}{'matmul GFLOP/s':>16}"
        f"{'load before/after':>19}",
    ]
    by_model: dict[str, dict[str, dict]] = {}
    for res in results:
        for name, m in res["models"].items():
            by_model.setdefault(name, {})[res["backend"]] = m
            lines.append(
                f"{res['backend']:<8}{name:<11}{m['train_steps_per_s']:>14.3f}"
                f"{m['train_slices_per_s']:>16.2f}{m['infer_slices_per_s']:>16.2f}"
                f"{m['infer_gflops']:>15.1f}{res['matmul_gflops']:>16.1f}"
                f"{res['load_before']:>11.1f} / {res['load_after']:.1f}"
            )
    for name, runs in by_model.items():
        first = next(b for b in args.backends if b in runs)
        base = runs[first]
        for backend, m in runs.items():
            if backend == first:
                continue
            lines.append(
                f"{backend}/{first} {name}: training "
                f"{m['train_steps_per_s'] / base['train_steps_per_s']:.2f}x, "
                f"inference {m['infer_slices_per_s'] / base['infer_slices_per_s']:.2f}x"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark for each backend and print a table."""
    args = _parse(argv)
    if args.worker:
        print(json.dumps(_worker(args)))
        return 0
    backends = []
    for backend in args.backends:
        if importlib.util.find_spec(backend) is None:
            print(f"skipping {backend}: not installed", file=sys.stderr)
        else:
            backends.append(backend)
    results = []
    for i, model in enumerate(dict.fromkeys(args.models)):
        order = backends if i % 2 == 0 else backends[::-1]
        results += [r for r in (_run_backend(b, args, model) for b in order) if r]
    print(_table(results, args))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "results": results}, handle, indent=1)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
