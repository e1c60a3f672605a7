"""COCO-format keypoint data: reader, synthetic generator, augmentation, targets, input pipeline."""

from efficienthrnet.data.augment import (
    AffineParams,
    AugmentConfig,
    apply_affine,
    draw_affine,
    normalize_image,
)
from efficienthrnet.data.coco import CocoFormatError, CocoKeypoints, PoseSample, resolve_dataset
from efficienthrnet.data.pipeline import TrainLoader, build_train_loader, iterate_eval, make_eval_example
from efficienthrnet.data.synthetic import make_synthetic_dataset
from efficienthrnet.data.targets import joint_indices, render_heatmaps

__all__ = [
    "AffineParams", "AugmentConfig", "CocoFormatError", "CocoKeypoints", "PoseSample", "TrainLoader",
    "apply_affine", "build_train_loader", "draw_affine", "iterate_eval", "joint_indices", "make_eval_example",
    "make_synthetic_dataset", "normalize_image", "render_heatmaps", "resolve_dataset",
]
