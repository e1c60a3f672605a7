"""Commands that train: ``train`` (a pose model) and ``classify`` (the backbone-alone classifier B(phi))."""

from __future__ import annotations

import json
from collections.abc import Callable

from .options import _add_keypoints_option, _keypoints


def _add_train(sub) -> Callable:
    p = sub.add_parser("train", help="train a pose model with optax (resumable, data parallel over local devices)")
    p.add_argument("--phi", type=float, required=True)
    p.add_argument("--rule", default="efficienthrnet")
    p.add_argument("--data", required=True, help="synthetic:DIR or coco:DIR")
    p.add_argument("--steps", type=int, required=True, help="optimizer steps of the whole run")
    p.add_argument("--batch", type=int, default=8, help="global batch size")
    p.add_argument("--input-size", type=int, default=None,
                   help="proxy resolution replacing the config's input size (cheap runs; not the paper's setting)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--weight-decay", type=float, default=0.0, help="0 = Adam without decay, as the reference")
    p.add_argument("--freeze-backbone", action="store_true", help="as the reference does")
    p.add_argument("--backbone", default=None,
                   help="initialise the backbone from a classifier run dir or a PyTorch checkpoint (same phi/rule)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 compute, float32 params and loss")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--keep", type=int, default=3, help="checkpoints to keep")
    p.add_argument("--workers", type=int, default=0, help="input pipeline worker processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--distributed", action="store_true", help="jax.distributed.initialize() first (multi-host)")
    p.add_argument("--out", required=True, help="run folder (config.json, metrics.jsonl, checkpoints/)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    _add_keypoints_option(p)
    return _run_train


def _run_train(args) -> int:
    from pathlib import Path

    from ..scaling import generate_config
    from ..train import CONFIG_FILE, TrainConfig, read_run_config, restore_run_schema, train

    keypoints = _keypoints(args)
    if args.resume and args.keypoints is None and (Path(args.out) / CONFIG_FILE).is_file():
        # Resuming continues with the run's own schema; an explicit --keypoints must match it.
        keypoints = restore_run_schema(read_run_config(Path(args.out)), Path(args.out))
    model_config = generate_config(args.phi, args.rule, keypoints=keypoints)
    config = TrainConfig(
        steps=args.steps, batch_size=args.batch, learning_rate=args.lr, warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay, freeze_backbone=args.freeze_backbone,
        compute_dtype="bfloat16" if args.bf16 else "float32", checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep, seed=args.seed, input_size=args.input_size, num_workers=args.workers,
        distributed=args.distributed,
    )
    weights = None
    if args.backbone:
        from ..backbone_init import check_compatible, load_backbone_weights

        weights = load_backbone_weights(args.backbone, model_config)
        check_compatible(weights, model_config)  # before the run folder is touched
    summary = train(model_config, config, args.data, args.out, resume=args.resume, init_from=weights)
    print(json.dumps(summary, indent=2, default=str))
    return 0

def _add_classify(sub) -> Callable:
    p = sub.add_parser("classify", help="train the backbone-alone classifier B(phi) (paper Table 2 recipe)")
    p.add_argument("--phi", type=float, required=True)
    p.add_argument("--rule", default="efficienthrnet")
    p.add_argument("--data", required=True, help="tfds:NAME:DATA_DIR (prepared, e.g. cifar100) or shapes[:K]")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--epochs", type=float, default=200.0)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05, help="peak SGD rate after the warm-up")
    p.add_argument("--resolution", type=int, default=None, help="default: 224 x 1.15^phi from the rule")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--precise-bn-batches", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    return _run_classify


def _run_classify(args) -> int:
    from ..classify import ClassifyConfig, train_classifier
    from ..files import check_output_dir
    from ..scaling import generate_config

    check_output_dir(args.out, "--out")
    config = ClassifyConfig(epochs=args.epochs, batch_size=args.batch, learning_rate=args.lr,
                            resolution=args.resolution, label_smoothing=args.label_smoothing,
                            precise_bn_batches=args.precise_bn_batches)
    summary = train_classifier(generate_config(args.phi, args.rule), config, args.data, args.out, resume=args.resume)
    print(json.dumps(summary, indent=2, default=str))
    return 0
