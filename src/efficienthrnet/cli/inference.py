"""Commands that run a trained model: ``evaluate`` (COCO keypoint AP) and ``predict`` (one image)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from .options import _add_keypoints_option, _phi_list


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
    from ..decode import DecodeConfig
    from ..predict import PredictConfig, Predictor
    from ..train import load_for_inference

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

    from ..evaluate import evaluate_dataset
    from ..files import atomic_path, check_output_file, write_text_atomic

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
    from ..files import check_input_file
    from ..predict import read_image

    check_input_file(path, "image")
    return read_image(path)  # refuses truncated, non-image and oversized files before decoding


def _run_predict(args) -> int:
    from ..files import atomic_path, check_output_file
    from ..visualize import save_debug_png, save_people_png

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
