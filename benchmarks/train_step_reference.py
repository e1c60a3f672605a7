"""Train-step throughput, launch-to-first-step time and peak memory of the authors' PyTorch
EfficientHRNet, on the same batch as `benchmarks/train_step.py`, as one JSON line.

The reference code is not part of this project: check out github.com/TeCSAR-UNCC/EfficientHRNet
into a folder of your own and pass that folder. Needs the `torch` extra and pyyaml.

    .venv/bin/python benchmarks/train_step_reference.py /path/to/EfficientHRNet            # H-4 @256, batch 8
    .venv/bin/python benchmarks/train_step_reference.py /path/to/EfficientHRNet --freeze

The step is the reference's: its model in train mode from "Example Configs/H-4.yaml", its
`MultiLossFactory` (heatmap loss at 1/4 and 1/2, associative-embedding push/pull at 1/4), each
stage's per-image losses averaged over the batch and summed, Adam (lr 1e-3) over all parameters;
with --freeze the backbone (`features`) gets requires_grad=False as the reference's trainer does.
The batch is the first batch of this library's training pipeline on a synthetic set (seed 0),
converted to the reference's NCHW layout and flattened tag indices, used for every step.
Only the reference's CUDA-only helper `core.loss.make_input` is replaced by a CPU one.
"""

from __future__ import annotations

import time

LAUNCHED = time.perf_counter()

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

import numpy as np


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("reference", type=Path, help="checkout of TeCSAR-UNCC/EfficientHRNet")
    p.add_argument("--config", default="Example Configs/H-4.yaml", help="model config inside the checkout")
    p.add_argument("--freeze", action="store_true", help="freeze the backbone, as the reference's trainer")
    p.add_argument("--input-size", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="measured steps (after the warm-up)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    args = p.parse_args(argv)
    config = args.reference / args.config
    if not (args.reference / "lib" / "models" / "pose_higher_hrnet.py").is_file() or not config.is_file():
        p.error(
            f"{args.reference} is not an EfficientHRNet checkout with {args.config}: expected "
            "lib/models/pose_higher_hrnet.py and the config file in it"
        )
    if args.warmup < 1 or args.steps < 1:
        p.error(f"--warmup {args.warmup} and --steps {args.steps} must both be >= 1")
    return args


class AttrDict(dict):
    """The reference reads its yacs config both as cfg.MODEL.X and cfg['MODEL']['X']."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _attrs(tree):
    if isinstance(tree, dict):
        return AttrDict({k: _attrs(v) for k, v in tree.items()})
    return tree


def load_config(path: Path):
    import yaml

    cfg = _attrs(yaml.safe_load(path.read_text()))
    cfg["VERBOSE"] = False
    return cfg


def first_batch(input_size: int, batch: int) -> dict[str, np.ndarray]:
    """This library's first training batch on a synthetic set (what benchmarks/train_step.py trains on)."""
    from efficienthrnet import train as T
    from efficienthrnet.data.synthetic import make_synthetic_dataset
    from efficienthrnet.scaling import generate_config

    with tempfile.TemporaryDirectory() as tmp:
        make_synthetic_dataset(Path(tmp) / "data", num_images=40, image_size=input_size, seed=0)
        config = T.TrainConfig(steps=1, batch_size=batch, input_size=input_size, progress=False)
        model_config = T.effective_model_config(generate_config(-4, rule="reference"), config)
        loader = T.make_train_loader(f"synthetic:{Path(tmp) / 'data'}", model_config, config)
        try:
            return next(iter(loader))
        finally:
            if hasattr(loader, "close"):
                loader.close()


def to_reference_batch(batch: dict[str, np.ndarray]):
    """NHWC -> NCHW; our per-joint cell index y*W + x -> the reference's j*H*W + y*W + x."""
    import torch

    size = batch["heatmaps_4"].shape[1]
    joints = batch["joints_4"].astype(np.int64).copy()
    num_joints = joints.shape[2]
    offsets = np.arange(num_joints)[None, None, :] * size * size
    joints[..., 0] = np.where(joints[..., 1] > 0, joints[..., 0] + offsets, 0)
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)).astype(np.float32))
    images = nchw(batch["image"])
    heatmaps = [nchw(batch["heatmaps_4"]), nchw(batch["heatmaps_2"])]
    masks = [torch.from_numpy(batch["mask_4"].astype(np.float32)), torch.from_numpy(batch["mask_2"].astype(np.float32))]
    return images, heatmaps, masks, [torch.from_numpy(joints), None]


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    # The reference's N(0, 0.001^2) init drives activations into denormal floats, which x86 CPUs
    # compute ~100x slower; XLA's CPU runtime flushes them to zero, so torch must as well.
    torch.set_flush_denormal(True)
    sys.path.insert(0, str(args.reference / "lib"))
    import core.loss as ref_loss
    from models.pose_higher_hrnet import get_pose_net

    ref_loss.make_input = lambda t, requires_grad=False, need_cuda=True: t.sum().requires_grad_(requires_grad)
    cfg = load_config(args.reference / args.config)
    model = get_pose_net(cfg, is_train=False)
    model.init_weights(pretrained="", verbose=False)  # the reference's N(0, 0.001^2) init
    model.train()
    if args.freeze:
        for p in model.features.parameters():
            p.requires_grad = False
    losses = ref_loss.MultiLossFactory(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images, heatmaps, masks, joints = to_reference_batch(first_batch(args.input_size, args.batch))

    def step() -> float:
        heat, push, pull = losses(model(images), heatmaps, masks, joints)
        total = sum(t.mean(dim=0) for t in (*heat, *push, *pull) if t is not None)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        return float(total.detach())

    loss = step()
    first_step = time.perf_counter() - LAUNCHED
    for _ in range(args.warmup - 1):
        step()
    started = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    elapsed = time.perf_counter() - started
    record = {
        "benchmark": "train_step_reference",
        "torch": torch.__version__,
        "threads": args.threads,
        "flush_denormal": True,
        "config": args.config,
        "freeze_backbone": args.freeze,
        "input_size": args.input_size,
        "batch": args.batch,
        "measured_steps": args.steps,
        "launch_to_first_step_s": round(first_step, 2),
        "images_per_s": round(args.steps * args.batch / elapsed, 3),
        "step_ms": round(1000 * elapsed / args.steps, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "final_loss": round(loss, 5),
    }
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main()
