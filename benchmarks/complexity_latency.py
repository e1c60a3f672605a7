"""Exact complexity and measured forward latency per phi, one JSON line per model.

    python benchmarks/complexity_latency.py --phi 0 -1 -2 -3 -4 --rule reference [--batch 1]
        [--input-size S] [--warmup 3] [--repeats 10] [--xla] [--no-latency]

Each line: the config, params, MACs, FLOPs, the paper-counter figures, and (unless --no-latency)
`measure_latency`'s summary on JAX's default backend. With --xla it adds XLA's compiled cost
analysis of the whole forward pass (native depthwise) next to the walk's conv-only count, so the
share of elementwise work XLA adds on top of the convolutions shows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp

from efficienthrnet.complexity import measure_latency, profile
from efficienthrnet.scaling import generate_config


def xla_forward_flops(cfg, size: int, batch: int) -> float:
    """XLA's CPU cost-analysis FLOPs of the compiled inference forward pass (native depthwise convs)."""
    from efficienthrnet.nn.model import EfficientHRNet

    model = EfficientHRNet(cfg, depthwise_impl="native")
    # lowered for the CPU: on GPU the convs become cuDNN calls that the cost analysis leaves out
    cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
    x = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32, sharding=cpu)
    variables = jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(0), x)
    variables = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=cpu), variables)
    cost = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x).compile().cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phi", type=float, nargs="+", default=[0, -1, -2, -3, -4])
    parser.add_argument("--rule", default="reference")
    parser.add_argument("--input-size", type=int, default=None)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--depthwise-impl", default="auto")
    parser.add_argument("--xla", action="store_true", help="add XLA's whole-forward cost analysis")
    parser.add_argument("--no-latency", action="store_true")
    args = parser.parse_args(argv)
    for phi in args.phi:
        cfg = generate_config(phi, rule=args.rule)
        size = args.input_size or cfg.input_size
        p = profile(cfg, size)
        row = {"config": cfg.name, "input_size": size, "batch": args.batch, "params": p.params,
               "macs": p.macs, "flops": p.flops, "xla_conv_flops": p.xla_conv_flops,
               "paper_params": p.paper_params, "paper_macs": p.paper_macs, "device": str(jax.devices()[0])}
        if args.xla:
            start = time.perf_counter()
            row["xla_forward_flops"] = xla_forward_flops(cfg, size, args.batch)
            row["xla_compile_s"] = time.perf_counter() - start
            row["xla_elementwise_share"] = 1 - args.batch * p.xla_conv_flops / row["xla_forward_flops"]
        if not args.no_latency:
            timing = measure_latency(cfg, size, batch=args.batch, warmup=args.warmup, repeats=args.repeats,
                                     depthwise_impl=args.depthwise_impl)
            row.update({k: timing[k] for k in ("median_ms", "min_ms", "max_ms", "iqr_ms", "compile_s",
                                              "backend", "depthwise_impl")})
            row["achieved_gflops"] = args.batch * p.flops / (timing["median_ms"] * 1e6)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
