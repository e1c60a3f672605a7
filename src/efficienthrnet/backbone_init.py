"""Start a pose model from a trained backbone: ours (a classifier run) or the authors' (PyTorch).

The paper initialises every EfficientHRNet H(phi) from the compact EfficientNet B(phi) trained
for classification (Table 2). A backbone only fits the pose model of the same phi and scaling
rule: widths and depths change with both, so anything else is refused with an error naming the
two architectures. Loading is strict: every backbone leaf (parameters and BatchNorm statistics)
of the pose model must be present with the same shape, nothing else may be left over, and the
classifier's head (`head_conv`, `head_bn`, `classifier`) is dropped by name, not by accident.

    weights = backbone_from_classifier_run("runs/b-4")               # or backbone_from_torch(...)
    variables = init_pose_variables(pose_config, weights)             # EfficientHRNet(pose_config)
    variables = merge_backbone(variables, weights, pose_config)       # into variables you have
    # or, for training: train(pose_config, TrainConfig(freeze_backbone=True), data, run_dir,
    #                         init_from=weights)

Pretrained arrays are merged into the variables (params and BatchNorm statistics) by
`merge_pretrained`, never carried by the module: the module only describes the network, so
`init`, `init_with_output`, `lazy_init` and use as a submodule all behave alike.
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
from efficienthrnet.nn.model import EfficientHRNet, init_variables

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


def _subtree(tree: Mapping[str, Any], where: tuple[str, ...]) -> Mapping[str, Any]:
    for key in where:
        tree = tree.get(key, {}) if isinstance(tree, Mapping) else {}
    return tree


def _replace_subtree(tree: Mapping[str, Any], where: tuple[str, ...], value: Any) -> dict:
    if not where:
        return value
    out = dict(tree)
    out[where[0]] = _replace_subtree(tree.get(where[0], {}), where[1:], value)
    return out


def merge_pretrained(
    variables: Mapping[str, Any],
    pretrained: Mapping[str, Any],
    where: tuple[str, ...] = (BACKBONE,),
    source: str = "the pretrained weights",
    into: str = "the model",
) -> dict:
    """`variables` with their subtree at `where` replaced by `pretrained`, strictly, per collection.

    `pretrained` is {"params": ..., "batch_stats": ...} of that subtree alone (no `where`
    prefix). Every leaf under `where` must be matched by a pretrained leaf of the same shape; a
    missing, unexpected or mis-shaped leaf raises one ValueError whose first line names the first
    problem and which lists them all. Leaves outside `where` are returned unchanged; the merged
    values take the variables' dtypes. Pure: neither argument is modified.
    """
    problems, merged = [], dict(variables)
    for collection in COLLECTIONS:
        if collection not in variables and collection not in pretrained:
            continue
        target = _flat(_subtree(variables.get(collection, {}), where))
        given = _flat(pretrained.get(collection, {}))
        for path in sorted(target.keys() - given.keys()):
            problems.append(f"missing {collection}/{'/'.join(path)}")
        for path in sorted(given.keys() - target.keys()):
            problems.append(f"unexpected {collection}/{'/'.join(path)}")
        replaced = {}
        for path in sorted(target.keys() & given.keys()):
            want, have = tuple(target[path].shape), tuple(np.shape(given[path]))
            if want != have:
                problems.append(f"mis-shaped {collection}/{'/'.join(path)}: {have}, the model needs {want}")
                continue
            replaced[path] = jnp.asarray(given[path], dtype=target[path].dtype)
        if collection in variables:
            subtree = traverse_util.unflatten_dict(replaced) if replaced else {}
            merged[collection] = _replace_subtree(variables[collection], where, subtree)
    if problems:
        raise ValueError(
            f"cannot load {source} into '{'/'.join(where)}' of {into}: first {problems[0]} "
            f"({len(problems)} problem(s) in all):\n  " + "\n  ".join(problems)
        )
    return merged


def merge_backbone(
    pose_variables: Mapping[str, Any], weights: BackboneWeights, pose_config: ModelConfig
) -> dict:
    """`pose_variables` of `EfficientHRNet(pose_config)` with the backbone replaced by `weights`, strictly.

    Refuses a backbone of another phi or rule first (`check_compatible`), then merges with
    `merge_pretrained` (every leaf under "backbone" in params and batch_stats must match).
    """
    check_compatible(weights, pose_config)
    return merge_pretrained(
        pose_variables, weights.variables, (BACKBONE,), f"the backbone from {weights.source}",
        f"the pose model at {describe(pose_config)}",
    )


def start_from(state: Any, weights: BackboneWeights, pose_config: ModelConfig) -> Any:
    """A fresh flax train state (`params`, `batch_stats`) with the pretrained backbone merged in.

    What `train(..., init_from=weights)` does after initialising. The optimizer state is kept:
    Adam's moments start at zero whatever the parameter values.
    """
    variables = merge_backbone({"params": state.params, "batch_stats": state.batch_stats}, weights, pose_config)
    return state.replace(params=variables["params"], batch_stats=variables["batch_stats"])


def init_pose_variables(
    pose_config: ModelConfig,
    weights: BackboneWeights,
    key: jax.Array | None = None,
    init_scheme: str = "reference",
) -> dict:
    """Fresh `EfficientHRNet(pose_config)` variables (HR network and head from `key`) with the trained backbone."""
    check_compatible(weights, pose_config)  # before the (slow) init
    key = jax.random.PRNGKey(0) if key is None else key
    variables = init_variables(EfficientHRNet(pose_config, init_scheme=init_scheme), key)
    return merge_backbone(variables, weights, pose_config)
