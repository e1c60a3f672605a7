"""Commands that move weights across frameworks: ``convert`` (the authors' PyTorch checkpoint to
Flax) and ``export`` (the inference network as StableHLO or ONNX)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from .options import _add_keypoints_option, _keypoints


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

    from ..convert import load_torch_checkpoint
    from ..files import check_output_file, write_bytes_atomic, write_text_atomic
    from ..scaling import generate_config

    cfg = generate_config(args.phi, args.rule, keypoints=_keypoints(args))
    config_path = Path(args.out).with_suffix(".config.json")
    check_output_file(args.out, "--out")
    check_output_file(config_path, "config file")
    variables = load_torch_checkpoint(args.checkpoint, cfg, backbone_only=args.backbone_only)
    write_bytes_atomic(args.out, serialization.msgpack_serialize(variables))
    write_text_atomic(config_path, cfg.to_json(indent=2))
    print(f"wrote {args.out} and {config_path}")
    return 0

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
    from ..export import ONNX_OPSET, export_model

    if (args.checkpoint is None) == (args.phi is None):
        raise ValueError("give exactly one of --checkpoint RUN (trained weights) or --phi P (random weights)")
    meta = export_model(args.format, args.out, checkpoint=args.checkpoint, step=args.step, phi=args.phi,
                        rule=args.rule, input_size=args.input_size, batch=args.batch,
                        opset=args.opset or ONNX_OPSET, deconv=args.deconv)
    meta.pop("model_config")
    print(json.dumps(meta))
    return 0
