"""Start a pose model from a trained backbone: ours (a classifier run) or the authors' (PyTorch).

The paper initialises every EfficientHRNet H(phi) from the compact EfficientNet B(phi) trained
for classification (Table 2). A backbone only fits the pose model of the same phi and scaling
rule: widths and depths change with both, so anything else is refused with an error naming the
two architectures. Loading is strict: every backbone leaf (parameters and BatchNorm statistics)
of the pose model must be present with the same shape, nothing else may be left over, and the
classifier's head (`head_conv`, `head_bn`, `classifier`) is dropped by name, not by accident.

    weights = backbone_from_classifier_run("runs/b-4")               # or backbone_from_torch(...)
    variables = init_pose_variables(pose_config, weights)             # EfficientHRNet(pose_config)
    # or, for training: train(pose_config, TrainConfig(freeze_backbone=True), data, run_dir,
    #                         model=pose_model_with_backbone(pose_config, weights))

`TrainConfig(freeze_backbone=True)` is the reference's option of keeping the backbone fixed (its
BatchNorm statistics still update, as in the reference).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from efficienthrnet.config import ModelConfig
from efficienthrnet.nn.model import EfficientHRNet

#: Top-level submodule holding the feature extractor, in the classifier and in EfficientHRNet.
BACKBONE = "backbone"
#: Top-level submodules of `EfficientNetClassifier` that are not part of the backbone.
CLASSIFIER_HEAD = ("head_conv", "head_bn", "classifier")
COLLECTIONS = ("params", "batch_stats")


@dataclass(frozen=True, eq=False)
class BackboneWeights:
    """Trained backbone variables and the architecture they belong to.

    Attributes:
      variables: {"params": ..., "batch_stats": ...} of the `EfficientNet` feature extractor
        (keys `stem_conv`, `stem_bn`, `block_<i>`; no "backbone" prefix).
      model_config: the config it was trained under (its phi, rule and backbone matter).
      source: where the weights came from, for messages.
      dropped: the classifier-head submodules left out (empty for PyTorch backbones).
    """

    variables: Mapping[str, Any]
    model_config: ModelConfig
    source: str
    dropped: tuple[str, ...] = ()


def describe(config: ModelConfig) -> str:
    return f"phi={config.phi:g}, rule={config.rule!r}"


def backbone_from_classifier_variables(
    variables: Mapping[str, Any], model_config: ModelConfig, source: str = "classifier variables"
) -> BackboneWeights:
    """The backbone part of `EfficientNetClassifier` variables; the head is dropped by name.

    Raises ValueError when there is no backbone or an unknown top-level entry is present.
    """
    out, dropped = {}, set()
    for collection in COLLECTIONS:
        tree = variables.get(collection, {})
        if BACKBONE not in tree:
            raise ValueError(
                f"{source}: '{collection}' has no '{BACKBONE}' entry (top-level keys {sorted(tree)}); "
                f"expected EfficientNetClassifier variables"
            )
        unknown = sorted(set(tree) - {BACKBONE, *CLASSIFIER_HEAD})
        if unknown:
            raise ValueError(
                f"{source}: unexpected top-level '{collection}' entries {unknown}; a classifier has "
                f"only '{BACKBONE}' and the head {list(CLASSIFIER_HEAD)}"
            )
        out[collection] = tree[BACKBONE]
        dropped |= set(tree) - {BACKBONE}
    return BackboneWeights(out, model_config, source, tuple(sorted(dropped)))


def backbone_from_classifier_run(run_dir: str | os.PathLike, step: int | None = None) -> BackboneWeights:
    """The backbone of a `train_classifier` run's checkpoint (latest by default)."""
    from efficienthrnet.classify import load_classifier

    model_config, _, variables, _ = load_classifier(run_dir, step)
    where = f"classifier run {run_dir}" + ("" if step is None else f" step {step}")
    return backbone_from_classifier_variables(variables, model_config, where)


def backbone_from_torch(
    checkpoint: str | os.PathLike | Mapping[str, Any], model_config: ModelConfig
) -> BackboneWeights:
    """The authors' compact EfficientNet weights (a .pth file or a state dict) for `model_config`'s phi and rule.

    Conversion is strict on the `features.*` backbone entries (`efficienthrnet.convert`); the
    released checkpoints' classifier entries are ignored.
    """
    from efficienthrnet import convert

    if isinstance(checkpoint, Mapping):
        state = convert.unwrap_state_dict(checkpoint)
        converted = convert.backbone_variables_from_torch(state, model_config, ignore_non_backbone=True)
        source = "PyTorch state dict"
    else:
        converted = convert.load_torch_checkpoint(checkpoint, model_config, backbone_only=True)
        source = f"PyTorch checkpoint {checkpoint}"
    variables = {c: converted[c][BACKBONE] for c in COLLECTIONS}
    return BackboneWeights(variables, model_config, source)


def load_backbone_weights(
    source: str | os.PathLike, model_config: ModelConfig | None = None, step: int | None = None
) -> BackboneWeights:
    """A classifier run folder, or a PyTorch .pth/.pt file (which needs the `model_config` it was trained as)."""
    path = Path(source)
    if path.is_dir():
        return backbone_from_classifier_run(path, step)
    if path.is_file() and path.suffix in (".pth", ".pt"):
        if model_config is None:
            raise ValueError(
                f"{path} is a PyTorch checkpoint: pass the model config (phi and rule) it was trained with"
            )
        return backbone_from_torch(path, model_config)
    raise FileNotFoundError(
        f"backbone source {source} is neither a classifier run folder nor a .pth/.pt file"
    )


def check_compatible(weights: BackboneWeights, pose_config: ModelConfig) -> None:
    """Refuse a backbone of another phi or rule (or another backbone architecture), naming both."""
    trained = weights.model_config
    if (trained.phi, trained.rule) != (
        pose_config.phi,
        pose_config.rule,
    ) or trained.backbone != pose_config.backbone:
        raise ValueError(
            f"cannot load the backbone from {weights.source} (trained at {describe(trained)}) into a pose model at "
            f"{describe(pose_config)}: widths and depths differ between the two; train or convert a backbone at "
            f"{describe(pose_config)}, or build the pose model at {describe(trained)}"
        )


def _flat(tree: Mapping[str, Any]) -> dict[tuple[str, ...], Any]:
    return traverse_util.flatten_dict(dict(tree)) if tree else {}


def merge_backbone(
    pose_variables: Mapping[str, Any], weights: BackboneWeights, pose_config: ModelConfig
) -> dict:
    """`pose_variables` of `EfficientHRNet(pose_config)` with the backbone replaced by `weights`, strictly.

    Every leaf under "backbone" in params and batch_stats must be matched by a leaf of the same
    shape; a missing, unexpected or mis-shaped leaf raises one ValueError listing them all. The
    other leaves (HR network, head) are returned unchanged. Values take the pose leaves' dtypes.
    """
    check_compatible(weights, pose_config)
    problems, merged = [], {k: v for k, v in pose_variables.items()}
    for collection in COLLECTIONS:
        target = _flat(pose_variables.get(collection, {}).get(BACKBONE, {}))
        given = _flat(weights.variables.get(collection, {}))
        for path in sorted(target.keys() - given.keys()):
            problems.append(f"missing {collection}/{'/'.join(path)}")
        for path in sorted(given.keys() - target.keys()):
            problems.append(f"unexpected {collection}/{'/'.join(path)}")
        replaced = {}
        for path in sorted(target.keys() & given.keys()):
            want, have = tuple(target[path].shape), tuple(np.shape(given[path]))
            if want != have:
                problems.append(
                    f"mis-shaped {collection}/{'/'.join(path)}: {have}, the pose model needs {want}"
                )
                continue
            replaced[path] = jnp.asarray(given[path], dtype=target[path].dtype)
        if collection in pose_variables:
            subtree = dict(pose_variables[collection])
            subtree[BACKBONE] = traverse_util.unflatten_dict(replaced) if replaced else {}
            merged[collection] = subtree
    if problems:
        raise ValueError(
            f"cannot load the backbone from {weights.source} into the pose model at "
            f"{describe(pose_config)}:\n  " + "\n  ".join(problems)
        )
    return merged


def init_pose_variables(
    pose_config: ModelConfig,
    weights: BackboneWeights,
    key: jax.Array | None = None,
    input_size: int | None = None,
) -> dict:
    """Fresh `EfficientHRNet(pose_config)` variables (HR network and head from `key`) with the trained backbone."""
    check_compatible(weights, pose_config)  # before the (slow) init
    key = jax.random.PRNGKey(0) if key is None else key
    size = input_size or 2 * max(pose_config.backbone.tap_strides)  # parameters do not depend on the size
    model = EfficientHRNet(pose_config)
    variables = jax.jit(lambda k, x: model.init(k, x, train=False))(
        key, jnp.zeros((1, size, size, 3), jnp.float32)
    )
    return merge_backbone(variables, weights, pose_config)


class PretrainedBackboneHRNet(EfficientHRNet):
    """`EfficientHRNet` whose `init` puts a trained backbone in place (everything else is unchanged).

    Pass it as `train(..., model=pose_model_with_backbone(cfg, weights))`: the training loop's
    initialisation then starts from the backbone, and checkpoints, `apply` and inference are
    those of a plain `EfficientHRNet` (the parameter trees are identical).
    """

    backbone_weights: BackboneWeights | None = None

    def init(self, rngs, *args, **kwargs):
        variables = super().init(rngs, *args, **kwargs)
        if self.backbone_weights is None:
            raise ValueError(
                "PretrainedBackboneHRNet needs backbone_weights; use pose_model_with_backbone(cfg, weights)"
            )
        return merge_backbone(variables, self.backbone_weights, self.config)


def pose_model_with_backbone(
    pose_config: ModelConfig, weights: BackboneWeights, **module_kwargs
) -> EfficientHRNet:
    """The pose module for `train(model=...)` that initialises from `weights` (checked here, before training)."""
    check_compatible(weights, pose_config)
    return PretrainedBackboneHRNet(pose_config, backbone_weights=weights, **module_kwargs)
