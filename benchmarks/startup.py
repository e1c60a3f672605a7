"""Where a training run's start-up goes, as one JSON line: imports, train-state init, step lowering and
compilation, first step, then the steady step time.

    .venv/bin/python benchmarks/startup.py                       # phi=-4, 256 px, batch 8
    .venv/bin/python benchmarks/startup.py --depthwise native    # XLA's grouped conv instead of shifted taps
    .venv/bin/python benchmarks/startup.py --opt-level 3         # the step at another LLVM level (its own: 1 on CPU)
    .venv/bin/python benchmarks/startup.py --compile-profile     # where XLA spends the step's compile

Each phase is timed on its own (``lower`` / ``compile`` / first call), unlike `train_step.py`, which
times the whole launch through the training loop.
"""

from __future__ import annotations

import time

LAUNCHED = time.perf_counter()  # before the heavy imports: they are part of a launch

import argparse
import json
import tempfile
from pathlib import Path

import jax
import numpy as np


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--phi", type=float, default=-4)
    p.add_argument("--rule", default="efficienthrnet")
    p.add_argument("--input-size", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--depthwise", default="auto", choices=("auto", "native", "shifted"))
    p.add_argument("--opt-level", type=int, default=None, help="xla_backend_optimization_level of the step (default: the step's own, 1 on CPU)")
    p.add_argument("--steps", type=int, default=5, help="steady steps timed after the first")
    p.add_argument("--compile-profile", action="store_true",
                   help="trace the step's compile (jax.profiler) and add XLA's phases and kernel counts")
    return p.parse_args(argv)


#: XLA's own trace events of a CPU compile, summed per phase (seconds; codegen runs on a pool).
COMPILE_PHASES = {
    "hlo_passes_s": ("HLO passes through layout assignment", "HLO passes after layout assignment"),
    "backend_s": ("CpuCompiler::RunBackend",),
    "thunk_emission_s": ("ThunkEmitter::EmitEntryComputation", "ThunkEmitter::ConsumeKernels"),
    "codegen_wall_s": ("JitCompiler::Compile",),
}


def compile_phases(trace_dir: str, hlo_text: str) -> dict:
    """Seconds per compile phase from a jax.profiler trace, and the optimized program's size."""
    from jax.profiler import ProfileData

    files = sorted(Path(trace_dir).glob("**/*.xplane.pb"))
    profile = ProfileData.from_file(str(files[-1]))
    totals = {key: 0.0 for key in COMPILE_PHASES}
    kernels = 0
    for plane in profile.planes:
        for line in plane.lines:
            for event in line.events:
                for key, prefixes in COMPILE_PHASES.items():
                    if event.name.startswith(prefixes):
                        totals[key] += event.duration_ns / 1e9
                kernels += event.name == "FusionCompiler::Compile"
    entry = hlo_text[hlo_text.find("ENTRY"):]
    return {**{k: round(v, 2) for k, v in totals.items()}, "kernels_compiled": kernels,
            "entry_fusions": entry.count(" fusion("), "hlo_chars": len(hlo_text)}


def main(argv=None) -> dict:
    from efficienthrnet import train as T
    from efficienthrnet.data.synthetic import make_synthetic_dataset
    from efficienthrnet.scaling import generate_config
    from efficienthrnet.training.parallel import make_mesh

    imported = time.perf_counter() - LAUNCHED
    args = parse_args(argv)
    config = T.TrainConfig(steps=args.steps + 1, batch_size=args.batch, input_size=args.input_size, progress=False)
    model_config = T.effective_model_config(generate_config(args.phi, rule=args.rule), config)
    model = T.build_model(model_config, config.compute_dtype, config.init_scheme)
    if args.depthwise != "auto":
        model = model.clone(depthwise_impl=args.depthwise)
    t = time.perf_counter()
    state = jax.block_until_ready(T.create_train_state(model, model_config, config))
    state_s = time.perf_counter() - t
    mesh = make_mesh()
    with tempfile.TemporaryDirectory() as tmp:
        make_synthetic_dataset(Path(tmp), num_images=10, image_size=args.input_size, seed=0)
        loader = T.make_train_loader(f"synthetic:{tmp}", model_config, config)
        batch = T.shard_batch(next(iter(loader)), mesh)
    step = T.make_train_step(config, mesh)
    t = time.perf_counter()
    lowered = step.lower(state, batch)
    lower_s = time.perf_counter() - t
    options = None if args.opt_level is None else {"xla_backend_optimization_level": args.opt_level}
    trace = tempfile.TemporaryDirectory() if args.compile_profile else None
    if trace:
        jax.profiler.start_trace(trace.name)
    t = time.perf_counter()
    compiled = lowered.compile(compiler_options=options)
    compile_s = time.perf_counter() - t
    profile = {}
    if trace:
        jax.profiler.stop_trace()
        profile = {"compile_profile": compile_phases(trace.name, compiled.as_text())}
        trace.cleanup()
    t = time.perf_counter()
    state, metrics = jax.block_until_ready(compiled(state, batch))
    first_s = time.perf_counter() - t
    launch_to_first_step = time.perf_counter() - LAUNCHED
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        state, metrics = jax.block_until_ready(compiled(state, batch))
        times.append(time.perf_counter() - t)
    record = {
        "benchmark": "startup", "backend": jax.default_backend(), "phi": args.phi, "rule": args.rule,
        "input_size": args.input_size, "batch": args.batch, "depthwise": args.depthwise, "opt_level": args.opt_level,
        "params_leaves": len(jax.tree.leaves(state.params)),
        "import_s": round(imported, 2), "state_init_s": round(state_s, 2), "step_lower_s": round(lower_s, 2),
        "step_compile_s": round(compile_s, 2), "first_step_s": round(first_s, 2),
        "launch_to_first_step_s": round(launch_to_first_step, 2),
        "step_ms": round(1000 * float(np.median(times)), 1), "loss": float(metrics["loss"]), **profile,
    }
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main()
