"""Seconds to save and restore one training checkpoint (the whole train state), as one JSON line.

A sweep saves every ``checkpoint_every`` steps and at the end of each trial, so on a small model
the save is a visible share of a trial. Saves through `efficienthrnet.training.checkpoints` (what
the training loop calls) and, for comparison, orbax with the state's jax arrays handed over as
they are (``--jax-leaves``).

    .venv/bin/python benchmarks/checkpoint.py                  # phi=-3.01 (the demo's), Adam
    .venv/bin/python benchmarks/checkpoint.py --jax-leaves     # orbax given the jax arrays
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import jax
import numpy as np


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--phi", type=float, default=-3.01)
    p.add_argument("--rule", default="efficienthrnet")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--jax-leaves", action="store_true", help="hand orbax the jax arrays (the old path)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from efficienthrnet import generate_config
    from efficienthrnet.train import TrainConfig
    from efficienthrnet.train_step import build_model, create_train_state
    from efficienthrnet.training import checkpoints

    model_config = generate_config(phi=args.phi, rule=args.rule)
    state = create_train_state(build_model(model_config), model_config, TrainConfig(steps=1))
    leaves = jax.tree.leaves(checkpoints._state_tree(state))
    if args.jax_leaves:
        checkpoints._on_host = lambda tree: tree  # the path before numpy leaves
    saves, restores = [], []
    with tempfile.TemporaryDirectory() as tmp:
        manager = checkpoints.checkpoint_manager(Path(tmp))
        for i in range(args.repeats):
            started = time.perf_counter()
            checkpoints.save_checkpoint(manager, state.replace(step=state.step + i), model_config, None)
            saves.append(time.perf_counter() - started)
            started = time.perf_counter()
            restored, _ = checkpoints.restore_checkpoint(manager, state, model_config, step=i)
            jax.block_until_ready(restored.params)
            restores.append(time.perf_counter() - started)
        manager.close()
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(restored.params), jax.tree.leaves(state.params)))
    result = {
        "benchmark": "checkpoint",
        "phi": args.phi,
        "rule": args.rule,
        "leaves": len(leaves),
        "megabytes": round(sum(x.nbytes for x in leaves) / 1e6, 1),
        "jax_leaves": args.jax_leaves,
        "save_s": round(statistics.median(saves), 3),
        "restore_s": round(statistics.median(restores), 3),
        "restored_equal": bool(same),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
