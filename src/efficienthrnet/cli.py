"""The `efficienthrnet` command. Each subcommand is a thin wrapper over a library call."""

from __future__ import annotations

import argparse
import errno
import json
import sys
import traceback
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


# ----------------------------------------------------------------------------- keypoint schema


def _add_keypoints_option(p, from_run: bool = False) -> None:
    """--keypoints NAME: a registered keypoint schema (from_run: default the run's stored one)."""
    default = "the run's own" if from_run else "coco17"

    def schema_name(text: str) -> str:
        from .keypoints import get_schema

        try:
            return get_schema(text).name
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    p.add_argument("--keypoints", type=schema_name, default=None, metavar="NAME",
                   help=f"keypoint schema: coco17, crowdpose or a registered one (default: {default})")


def _keypoints(args) -> str:
    """The schema name a command writes with: --keypoints, else COCO-17."""
    return args.keypoints or "coco17"


# ----------------------------------------------------------------------------- config


def _add_config(sub) -> Callable:
    p = sub.add_parser("config", help="print the architecture that a phi resolves to under a scaling rule")
    p.add_argument("--phi", type=float, required=True, help="compound coefficient (any real in the rule's range)")
    p.add_argument("--rule", default="efficienthrnet", help="rule name in scaling_rules/ or a path to a .toml")
    p.add_argument("--json", action="store_true", help="print the ModelConfig as JSON")
    _add_keypoints_option(p)
    return _run_config


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4f}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _run_config(args) -> int:
    from .scaling import explain, generate_config

    cfg = generate_config(args.phi, args.rule, keypoints=_keypoints(args))
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
    _add_keypoints_option(p)
    return _run_make_synthetic


def _run_make_synthetic(args) -> int:
    from .data.synthetic import make_synthetic_dataset

    summary = make_synthetic_dataset(
        out_dir=args.out, num_images=args.images, image_size=args.size, seed=args.seed,
        val_fraction=args.val_fraction, max_people=args.max_people, min_height=args.min_height,
        schema=_keypoints(args),
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
    _add_keypoints_option(p)
    return _run_profile


def _run_profile(args) -> int:
    from .complexity import profile_command

    print(profile_command(args.phi, args.rule, args.input_size, as_json=args.json, keypoints=_keypoints(args)))
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
    _add_keypoints_option(p)
    return _run_train


def _run_train(args) -> int:
    from pathlib import Path

    from .scaling import generate_config
    from .train import CONFIG_FILE, TrainConfig, read_run_config, restore_run_schema, train

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
        from .backbone_init import check_compatible, load_backbone_weights

        weights = load_backbone_weights(args.backbone, model_config)
        check_compatible(weights, model_config)  # before the run folder is touched
    summary = train(model_config, config, args.data, args.out, resume=args.resume, init_from=weights)
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
    _add_keypoints_option(p, from_run=True)


def _predictor(args):
    from .decode import DecodeConfig
    from .predict import PredictConfig, Predictor
    from .train import load_for_inference

    model_config, model, variables = load_for_inference(args.checkpoint, args.step, keypoints=args.keypoints)
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
    from .files import atomic_path, check_output_file, write_text_atomic

    out = args.out or str(Path(args.checkpoint) / f"results_{args.split}.json")
    metrics_path = Path(out).with_name(Path(out).stem + "_metrics.json")
    check_output_file(out, "--out")
    check_output_file(metrics_path, "metrics file")
    predictor, _ = _predictor(args)
    with atomic_path(out) as tmp:
        metrics = evaluate_dataset(predictor, args.data, args.split, limit=args.limit, out_json=tmp)
    write_text_atomic(metrics_path, json.dumps(metrics, indent=2, default=float))
    print(json.dumps(metrics, indent=2, default=float))
    print(f"results: {out}\nmetrics: {metrics_path}", file=sys.stderr)
    return 0


def _add_predict(sub) -> Callable:
    p = sub.add_parser("predict", help="draw the people found in one image")
    p.add_argument("image", help="an image file")
    _add_predict_options(p)
    p.add_argument("--out", required=True, help="output PNG with skeletons")
    p.add_argument("--maps", default=None, help="also write a heatmap/tag figure (PNG) here")
    return _run_predict


def _read_image(path: str):
    """RGB pixels of an image file, or an error naming the file and why it cannot be read."""
    from .files import check_input_file
    from .predict import read_image

    check_input_file(path, "image")
    return read_image(path)  # refuses truncated, non-image and oversized files before decoding


def _run_predict(args) -> int:
    from .files import atomic_path, check_output_file
    from .visualize import save_debug_png, save_people_png

    image = _read_image(args.image)
    check_output_file(args.out, "--out")
    if args.maps:
        check_output_file(args.maps, "--maps")
    predictor, _ = _predictor(args)
    found = predictor(image)
    with atomic_path(args.out) as tmp:
        save_people_png(tmp, image, found.keypoints, scores=found.scores, schema=predictor.schema)
    if args.maps:
        heat, tags, _ = predictor.maps(image)
        with atomic_path(args.maps) as tmp:
            save_debug_png(tmp, image, heat, tags)
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
    p.add_argument("--no-compilation-cache", action="store_true",
                   help="do not keep JAX's persistent compilation cache (default: OUT/.jax_cache)")
    return _run_sweep


def _run_sweep(args) -> int:
    import dataclasses

    from .pareto import plot_sweep
    from .sweep import load_spec, run_sweep

    spec = load_spec(args.spec)
    if args.no_compilation_cache:
        spec = spec.replace(device=dataclasses.replace(spec.device, compilation_cache=False))
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
    _add_keypoints_option(p)
    return _run_convert


def _run_convert(args) -> int:
    from pathlib import Path

    from flax import serialization

    from .convert import load_torch_checkpoint
    from .files import check_output_file, write_bytes_atomic, write_text_atomic
    from .scaling import generate_config

    cfg = generate_config(args.phi, args.rule, keypoints=_keypoints(args))
    config_path = Path(args.out).with_suffix(".config.json")
    check_output_file(args.out, "--out")
    check_output_file(config_path, "config file")
    variables = load_torch_checkpoint(args.checkpoint, cfg, backbone_only=args.backbone_only)
    write_bytes_atomic(args.out, serialization.msgpack_serialize(variables))
    write_text_atomic(config_path, cfg.to_json(indent=2))
    print(f"wrote {args.out} and {config_path}")
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
    from .files import check_output_dir
    from .scaling import generate_config

    check_output_dir(args.out, "--out")
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


DEBUG_HELP = "on an error, show the Python traceback too"


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable]]:
    parser = argparse.ArgumentParser(prog="efficienthrnet", description=__doc__, epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    runners = {}
    for add in COMMANDS:
        before = set(sub.choices)
        runner = add(sub)
        (name,) = set(sub.choices) - before
        # Also after the command name; SUPPRESS keeps a --debug given before it.
        sub.choices[name].add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        runners[name] = runner
    return parser, runners


def main(argv: Sequence[str] | None = None) -> int:
    parser, runners = build_parser()
    args = parser.parse_args(argv)
    return run_command(args.command, runners[args.command], args, debug=args.debug)


# ----------------------------------------------------------------------------- errors

EXIT_CODES = """exit codes: 0 done; 1 an internal error (rerun with --debug and report it), or a sweep
with failed trials; 2 a bad input (the message names it and says what to do); 130 interrupted."""

EXIT_USER_ERROR, EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED = 2, 1, 130
# Errors in what the user gave (arguments, files, folders, the installation), as opposed to bugs.
USER_ERRORS = (ValueError, OSError, ImportError)
# Optional extras (pyproject.toml) by the module that needs them.
EXTRAS = {"torch": "torch", "ray": "ray", "tensorflow_datasets": "tfds", "tensorflow": "tfds-prepare",
          "tensorboardX": "tensorboard"}
OS_HINTS = {
    errno.EACCES: "check its permissions or choose another location",
    errno.EPERM: "check its permissions or choose another location",
    errno.ENOENT: "check the path",
    errno.EISDIR: "it is a folder: give a file path",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "it already exists: choose another path or delete it",
    errno.ENOSPC: "the disk is full: free some space",
    errno.EROFS: "the file system is read-only: choose another location",
}


def run_command(command: str, runner: Callable, args, debug: bool = False) -> int:
    """Run one subcommand; any error becomes one line on stderr and an exit code (EXIT_CODES)."""
    try:
        return runner(args) or 0
    except KeyboardInterrupt:
        return _report(command, "interrupted", EXIT_INTERRUPTED, debug)
    except USER_ERRORS as err:
        return _report(command, f"error: {describe_error(err)}", EXIT_USER_ERROR, debug)
    except Exception as err:
        message = (f"internal error: {type(err).__name__}: {err}; "
                   f"rerun with --debug to see the traceback, and please report it")
        return _report(command, message, EXIT_INTERNAL_ERROR, debug)


def _report(command: str, message: str, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    line = " ".join(message.split())  # one line, whatever the exception's text holds
    if len(line) > 2000:
        line = line[:1997] + "..."
    print(f"efficienthrnet {command}: {line}", file=sys.stderr)
    return code


def describe_error(err: BaseException) -> str:
    """The user-facing text of an error: our own messages as they are; a missing module names its
    extra; a bare OS error names the file and says what to do."""
    if isinstance(err, ImportError):
        return _missing_module(err)
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        hint = OS_HINTS.get(err.errno, "")
        return f"{err.filename}: {err.strerror.lower()}" + (f"; {hint}" if hint else "")
    return str(err) or type(err).__name__


def _missing_module(err: ImportError) -> str:
    text = str(err)
    if "pip install" in text:  # our own message already names the extra
        return text
    top = (err.name or "").split(".")[0]
    if top in EXTRAS:
        return f"this needs {top}, which is not installed: pip install 'efficienthrnet[{EXTRAS[top]}]'"
    return f"{text}: the installation is incomplete; reinstall it (pip install --force-reinstall efficienthrnet)"


if __name__ == "__main__":
    sys.exit(main())
