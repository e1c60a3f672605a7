"""The `efficienthrnet` command. Each subcommand is a thin wrapper over a library call."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence


def _phi_list(text: str) -> list[float]:
    """'-4,-3.5' or '-4:0:0.5' (start:stop:step, the one range rule of `scaling.phi_range`) -> floats."""
    from .scaling import phi_range

    parts = text.split(":") if ":" in text else [v for v in text.split(",") if v.strip()]
    try:
        values = [float(v) for v in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of numbers ('-4,-2.5') or a range "
                                         "'start:stop:step' ('0:-4:1')") from None
    if ":" not in text:
        if not values:
            raise argparse.ArgumentTypeError(f"{text!r} holds no value; give e.g. '-4,-2.5' or '0:-4:1'")
        return values
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"range {text!r} needs exactly start:stop:step, e.g. '0:-4:1'")
    try:
        return list(phi_range(*values))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


# ----------------------------------------------------------------------------- config


def _add_config(sub) -> Callable:
    p = sub.add_parser("config", help="print the architecture that a phi resolves to under a scaling rule")
    p.add_argument("--phi", type=float, required=True, help="compound coefficient (any real in the rule's range)")
    p.add_argument("--rule", default="efficienthrnet", help="rule name in scaling_rules/ or a path to a .toml")
    p.add_argument("--json", action="store_true", help="print the ModelConfig as JSON")
    return _run_config


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4f}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _run_config(args) -> int:
    from .scaling import explain, generate_config

    cfg = generate_config(args.phi, args.rule)
    if args.json:
        print(json.dumps({"config": cfg.to_dict(), "scaling": explain(args.phi, args.rule)}, indent=2))
        return 0
    print(f"EfficientHRNet phi={cfg.phi:g} rule={cfg.rule} keypoints={cfg.keypoints}")
    print(f"input {cfg.input_size}x{cfg.input_size}  outputs {' '.join(map(str, cfg.output_sizes))}")
    rows = explain(args.phi, args.rule)
    width = max(len(r["quantity"]) for r in rows)
    print(f"\n{'quantity'.ljust(width)}  {'formula':>10}  {'used':>8}")
    for row in rows:
        print(f"{row['quantity'].ljust(width)}  {_fmt(row['raw']):>10}  {_fmt(row['used']):>8}")
    bb, hr = cfg.backbone, cfg.hrnet
    print(f"\nbackbone taps: stages {bb.tap_stages} -> channels {bb.tap_channels} at strides {bb.tap_strides}")
    print(f"HR branches {hr.branch_widths}, modules per stage {hr.modules_per_stage}, "
          f"{hr.blocks_per_branch} BasicBlocks per branch")
    print(f"head: {cfg.head.quarter_channels} channels at 1/4, deconv {cfg.head.deconv_channels}, "
          f"{cfg.head.half_channels} heatmaps at 1/2")
    return 0


# ----------------------------------------------------------------------------- make-synthetic


def _add_make_synthetic(sub) -> Callable:
    p = sub.add_parser("make-synthetic", help="write a synthetic multi-person dataset in COCO keypoints format")
    p.add_argument("--out", required=True, help="output folder (gets annotations/, train/, val/)")
    p.add_argument("--images", type=int, default=1000, help="number of images over both splits")
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of images in the val split")
    p.add_argument("--max-people", type=int, default=8, help="at most this many people per image (1..8)")
    p.add_argument("--min-height", type=float, default=0.35,
                   help="shortest person with keypoints, as a fraction of the image side (0.1..0.85)")
    return _run_make_synthetic


def _run_make_synthetic(args) -> int:
    from .data.synthetic import make_synthetic_dataset

    summary = make_synthetic_dataset(
        out_dir=args.out, num_images=args.images, image_size=args.size, seed=args.seed,
        val_fraction=args.val_fraction, max_people=args.max_people, min_height=args.min_height,
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0


# ----------------------------------------------------------------------------- profile


def _add_profile(sub) -> Callable:
    p = sub.add_parser("profile", help="exact params / MACs / FLOPs per part, beside the paper's as-reported figures")
    p.add_argument("--phi", type=_phi_list, default=[0.0, -1.0, -2.0, -3.0, -4.0],
                   help="phi values: '-4,-2.5' or a range 'start:stop:step' (default 0,-1,-2,-3,-4)")
    p.add_argument("--rule", default="efficienthrnet")
    p.add_argument("--input-size", type=int, default=None, help="square input (default: each config's own)")
    p.add_argument("--json", action="store_true")
    return _run_profile


def _run_profile(args) -> int:
    from .complexity import profile_command

    print(profile_command(args.phi, args.rule, args.input_size, as_json=args.json))
    return 0


# ----------------------------------------------------------------------------- train


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
    return _run_train


def _run_train(args) -> int:
    from .scaling import generate_config
    from .train import TrainConfig, train

    model_config = generate_config(args.phi, args.rule)
    config = TrainConfig(
        steps=args.steps, batch_size=args.batch, learning_rate=args.lr, warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay, freeze_backbone=args.freeze_backbone,
        compute_dtype="bfloat16" if args.bf16 else "float32", checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep, seed=args.seed, input_size=args.input_size, num_workers=args.workers,
        distributed=args.distributed,
    )
    model = None
    if args.backbone:
        from .backbone_init import load_backbone_weights, pose_model_with_backbone

        weights = load_backbone_weights(args.backbone, model_config)
        model = pose_model_with_backbone(model_config, weights)
    summary = train(model_config, config, args.data, args.out, resume=args.resume, model=model)
    print(json.dumps(summary, indent=2, default=str))
    return 0


# ----------------------------------------------------------------------------- evaluate / predict


def _add_predict_options(p) -> None:
    p.add_argument("--checkpoint", required=True, help="a training run folder")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument("--input-size", type=int, default=None, help="short side at test time (default: training size)")
    p.add_argument("--no-flip", action="store_true", help="turn the flip test off")
    p.add_argument("--scales", type=_phi_list, default=[1.0], help="test scales, e.g. 0.5,1,1.5")
    p.add_argument("--no-adjust", action="store_true")
    p.add_argument("--no-refine", action="store_true")


def _predictor(args):
    from .decode import DecodeConfig
    from .predict import PredictConfig, Predictor
    from .train import load_for_inference

    model_config, model, variables = load_for_inference(args.checkpoint, args.step)
    decode = DecodeConfig(adjust=not args.no_adjust, refine=not args.no_refine)
    config = PredictConfig(input_size=args.input_size or model_config.input_size, scales=tuple(args.scales),
                           flip=not args.no_flip, decode=decode)
    return Predictor(model, variables, model_config.keypoints, config), model_config


def _add_evaluate(sub) -> Callable:
    p = sub.add_parser("evaluate", help="COCO keypoint AP of a checkpoint on a COCO-format dataset (pycocotools)")
    _add_predict_options(p)
    p.add_argument("--data", required=True, help="synthetic:DIR or coco:DIR")
    p.add_argument("--split", default="val")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N images only")
    p.add_argument("--out", default=None, help="results JSON path (default: CHECKPOINT/eval_<split>.json)")
    return _run_evaluate


def _run_evaluate(args) -> int:
    from pathlib import Path

    from .evaluate import evaluate_dataset

    predictor, _ = _predictor(args)
    out = args.out or str(Path(args.checkpoint) / f"results_{args.split}.json")
    metrics = evaluate_dataset(predictor, args.data, args.split, limit=args.limit, out_json=out)
    metrics_path = Path(out).with_name(Path(out).stem + "_metrics.json")
    metrics_path.write_text(json.dumps(metrics, indent=2, default=float))
    print(json.dumps(metrics, indent=2, default=float))
    print(f"results: {out}\nmetrics: {metrics_path}", file=sys.stderr)
    return 0


def _add_predict(sub) -> Callable:
    p = sub.add_parser("predict", help="draw the people found in one image")
    p.add_argument("image", help="an image file")
    _add_predict_options(p)
    p.add_argument("--out", required=True, help="output PNG with skeletons")
    p.add_argument("--debug", default=None, help="also write a heatmap/tag debug figure here")
    return _run_predict


def _run_predict(args) -> int:
    import cv2

    from .visualize import save_debug_png, save_people_png

    bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image {args.image!r}: missing or not an image file")
    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    predictor, _ = _predictor(args)
    found = predictor(image)
    save_people_png(args.out, image, found.keypoints, scores=found.scores)
    if args.debug:
        heat, tags, _ = predictor.maps(image)
        save_debug_png(args.debug, image, heat, tags)
    people = [{"score": float(s), "keypoints": k.tolist()} for s, k in zip(found.scores, found.keypoints)]
    print(json.dumps({"image": args.image, "people": people, "out": args.out}, default=float))
    return 0


# ----------------------------------------------------------------------------- sweep / plot


def _add_sweep(sub) -> Callable:
    p = sub.add_parser("sweep", help="run a sweep spec (experiments/*.toml); re-running resumes")
    p.add_argument("spec", help="path of a sweep TOML")
    p.add_argument("--out", default=None, help="output folder (default: the spec's output)")
    p.add_argument("--executor", choices=("local", "ray"), default="local")
    p.add_argument("--no-plots", action="store_true")
    return _run_sweep


def _run_sweep(args) -> int:
    from .pareto import plot_sweep
    from .sweep import load_spec, run_sweep

    out = args.out or load_spec(args.spec).output
    df = run_sweep(args.spec, out, executor=args.executor)
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
    from .pareto import plot_sweep

    for path in plot_sweep(args.run_dir, metric=args.metric):
        print(path)
    return 0


def _add_compare(sub) -> Callable:
    p = sub.add_parser("compare", help="compare the rules of a sweep folder: AP difference, 95% CI, P(A>B)")
    p.add_argument("run_dir")
    p.add_argument("--metric", default="AP")
    p.add_argument("--cost", default="macs", help="cost column reported beside each side (default macs)")
    return _run_compare


def _run_compare(args) -> int:
    from .pareto import COMPARISON_CSV, RANK_AGREEMENT_CSV, compare_sweep

    comparison, agreement = compare_sweep(args.run_dir, metric=args.metric, cost=args.cost)
    print(comparison.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"wrote {args.run_dir}/{COMPARISON_CSV}")
    if agreement is not None:
        print(agreement.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        print(f"wrote {args.run_dir}/{RANK_AGREEMENT_CSV}")
    return 0


# ----------------------------------------------------------------------------- convert


def _add_convert(sub) -> Callable:
    p = sub.add_parser("convert", help="convert the authors' PyTorch checkpoint (.pth) to Flax variables")
    p.add_argument("checkpoint", help=".pth file (needs the 'torch' extra)")
    p.add_argument("--phi", type=float, required=True)
    p.add_argument("--rule", default="reference")
    p.add_argument("--backbone-only", action="store_true", help="a compact EfficientNet checkpoint")
    p.add_argument("--out", required=True, help="output .msgpack file (flax.serialization)")
    return _run_convert


def _run_convert(args) -> int:
    from pathlib import Path

    from flax import serialization

    from .convert import load_torch_checkpoint
    from .scaling import generate_config

    cfg = generate_config(args.phi, args.rule)
    variables = load_torch_checkpoint(args.checkpoint, cfg, backbone_only=args.backbone_only)
    Path(args.out).write_bytes(serialization.msgpack_serialize(variables))
    Path(args.out).with_suffix(".config.json").write_text(cfg.to_json(indent=2))
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.config.json')}")
    return 0


# ----------------------------------------------------------------------------- classify


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
    from .classify import ClassifyConfig, train_classifier
    from .scaling import generate_config

    config = ClassifyConfig(epochs=args.epochs, batch_size=args.batch, learning_rate=args.lr,
                            resolution=args.resolution, label_smoothing=args.label_smoothing,
                            precise_bn_batches=args.precise_bn_batches)
    summary = train_classifier(generate_config(args.phi, args.rule), config, args.data, args.out, resume=args.resume)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _add_table2(sub) -> Callable:
    p = sub.add_parser("table2", help="computed params / MACs of B0..B-4 beside the paper's Table 2")
    p.add_argument("--rule", default="reference")
    return _run_table2


def _run_table2(args) -> int:
    from .classify import table2_comparison

    print(table2_comparison(args.rule).to_string(index=False))
    return 0


# ----------------------------------------------------------------------------- export


def _batch(text: str) -> int | str:
    if text == "dynamic":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--batch {text!r} must be a positive int or 'dynamic'")
    return value


def _add_export(sub) -> Callable:
    p = sub.add_parser("export", help="export the inference network as StableHLO or ONNX (BN folded)")
    p.add_argument("--checkpoint", default=None, help="a training run folder (or give --phi for random weights)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument("--phi", type=float, default=None, help="export random weights of this phi instead")
    p.add_argument("--rule", default="efficienthrnet", help="scaling rule of --phi")
    p.add_argument("--format", choices=("stablehlo", "onnx"), required=True)
    p.add_argument("--out", required=True, help="artefact path; its description goes to OUT.json")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="input height and width, multiples of 32 (default: the config's square size)")
    p.add_argument("--batch", type=_batch, default=1, help="batch size, or 'dynamic' (default 1)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: efficienthrnet.export.ONNX_OPSET)")
    p.add_argument("--deconv", choices=("convtranspose", "phases"), default="convtranspose",
                   help="the head's transposed conv as one ConvTranspose or as its sub-pixel convs")
    return _run_export


def _run_export(args) -> int:
    from .export import ONNX_OPSET, export_model

    if (args.checkpoint is None) == (args.phi is None):
        raise ValueError("give exactly one of --checkpoint RUN (trained weights) or --phi P (random weights)")
    meta = export_model(args.format, args.out, checkpoint=args.checkpoint, step=args.step, phi=args.phi,
                        rule=args.rule, input_size=args.input_size, batch=args.batch,
                        opset=args.opset or ONNX_OPSET, deconv=args.deconv)
    meta.pop("model_config")
    print(json.dumps(meta))
    return 0


COMMANDS: list[Callable] = [
    _add_config, _add_profile, _add_make_synthetic, _add_train, _add_evaluate, _add_predict,
    _add_sweep, _add_plot, _add_compare, _add_convert, _add_classify, _add_table2, _add_export,
]


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable]]:
    parser = argparse.ArgumentParser(prog="efficienthrnet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    runners = {}
    for add in COMMANDS:
        before = set(sub.choices)
        runner = add(sub)
        (name,) = set(sub.choices) - before
        runners[name] = runner
    return parser, runners


def main(argv: Sequence[str] | None = None) -> int:
    parser, runners = build_parser()
    args = parser.parse_args(argv)
    try:
        return runners[args.command](args) or 0
    except (ValueError, FileNotFoundError) as err:
        print(f"efficienthrnet {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
