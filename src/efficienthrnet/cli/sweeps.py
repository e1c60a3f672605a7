"""Commands over sweeps: ``sweep`` (run a spec, resumable), ``plot`` (Pareto plots) and ``compare``
(rules against each other)."""

from __future__ import annotations

from collections.abc import Callable


def _add_sweep(sub) -> Callable:
    p = sub.add_parser("sweep", help="run a sweep spec (experiments/*.toml); re-running resumes")
    p.add_argument("spec", help="path of a sweep TOML")
    p.add_argument("--out", default=None, help="output folder (default: the spec's output)")
    p.add_argument("--executor", choices=("local", "ray"), default="local")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-compilation-cache", action="store_true",
                   help="do not keep JAX's persistent compilation cache (default: OUT/.jax_cache)")
    p.add_argument("--no-compile-ahead", action="store_true",
                   help="do not compile the next design on a background thread while one trains (local executor)")
    return _run_sweep


def _run_sweep(args) -> int:
    import dataclasses

    from ..pareto import plot_sweep
    from ..sweep import load_spec, run_sweep

    spec = load_spec(args.spec)
    if args.no_compilation_cache:
        spec = spec.replace(device=dataclasses.replace(spec.device, compilation_cache=False))
    if args.no_compile_ahead:
        spec = spec.replace(device=dataclasses.replace(spec.device, compile_ahead=False))
    out = args.out or spec.output
    df = run_sweep(spec, out, executor=args.executor)
    paths = [] if args.no_plots else plot_sweep(out)
    print(f"{len(df)} trials; results: {out}/results.csv")
    for path in paths:
        print(f"plot: {path}")
    return 0 if (df["status"] == "done").all() else 1


def _add_plot(sub) -> Callable:
    p = sub.add_parser("plot", help="Pareto plots of a sweep folder (PNG and SVG)")
    p.add_argument("run_dir")
    p.add_argument("--metric", default="AP")
    return _run_plot


def _run_plot(args) -> int:
    from ..pareto import plot_sweep

    for path in plot_sweep(args.run_dir, metric=args.metric):
        print(path)
    return 0


def _add_compare(sub) -> Callable:
    p = sub.add_parser("compare", help="compare the rules of a sweep folder: AP difference, 95%% CI, P(A>B)")
    p.add_argument("run_dir")
    p.add_argument("--metric", default="AP")
    p.add_argument("--cost", default="macs", help="cost column reported beside each side (default macs)")
    return _run_compare


def _run_compare(args) -> int:
    from ..pareto import COMPARISON_CSV, RANK_AGREEMENT_CSV, compare_sweep

    comparison, agreement = compare_sweep(args.run_dir, metric=args.metric, cost=args.cost)
    print(comparison.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"wrote {args.run_dir}/{COMPARISON_CSV}")
    if agreement is not None:
        print(agreement.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        print(f"wrote {args.run_dir}/{RANK_AGREEMENT_CSV}")
    return 0
