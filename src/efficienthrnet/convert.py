"""Import the authors' PyTorch weights (EfficientHRNet and compact EfficientNet) into Flax variables.

The mapping from PyTorch state-dict names to Flax paths comes from the network's description in
`topology.py` (each layer carries both names: `features.*` for the backbone, `trans<k>_branch<b>`,
`stage<k>.<m>.branches/fuse_layers`, `final_layers`, `deconv_layers`), and so do the expected
shapes; this module only knows how each layer kind stores its tensors. Conversion is strict: every
missing, unexpected or mis-shaped entry is collected and reported in one error.

Layouts: Conv2d OIHW -> HWIO; depthwise [C, 1, k, k] -> [k, k, 1, C] (the same transpose);
ConvTranspose2d IOHW -> [k, k, in, out] (see `nn.ops.conv_transpose_torch`); BatchNorm
weight/bias -> params scale/bias, running_mean/var -> batch_stats mean/var.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from efficienthrnet import topology
from efficienthrnet.config import BackboneConfig, ModelConfig
from efficienthrnet.topology import LayerSpec

IGNORED_SUFFIX = "num_batches_tracked"
WRAPPER_PREFIXES = ("module.",)

_CONV = (2, 3, 1, 0)  # OIHW -> HWIO (also depthwise [C,1,k,k] -> [k,k,1,C])
_DECONV = (2, 3, 0, 1)  # IOHW -> [k, k, in, out]
_KERNEL_LAYOUTS = {"conv": _CONV, "depthwise": _CONV, "deconv": _DECONV, "dense": (1, 0)}


@dataclass(frozen=True)
class Entry:
    """One PyTorch tensor and where it goes: collection ('params'/'batch_stats'), path, transpose."""

    torch_key: str
    collection: str
    path: tuple[str, ...]
    transpose: tuple[int, ...] | None = None


def _layer_entries(spec: LayerSpec) -> list[Entry]:
    """The PyTorch tensors of one layer and the Flax leaves they fill."""
    if spec.torch is None:
        raise ValueError(f"layer {spec.name} has no PyTorch counterpart in the reference")
    t, path = spec.torch, spec.path
    if spec.kind == "batchnorm":
        return [
            Entry(f"{t}.weight", "params", path + ("scale",)),
            Entry(f"{t}.bias", "params", path + ("bias",)),
            Entry(f"{t}.running_mean", "batch_stats", path + ("mean",)),
            Entry(f"{t}.running_var", "batch_stats", path + ("var",)),
        ]
    if spec.kind not in _KERNEL_LAYOUTS:
        raise ValueError(f"layer {spec.name}: no PyTorch layout for kind {spec.kind!r}")
    entries = [Entry(f"{t}.weight", "params", path + ("kernel",), _KERNEL_LAYOUTS[spec.kind])]
    if spec.bias:
        entries.append(Entry(f"{t}.bias", "params", path + ("bias",)))
    return entries


def entries_of(layers) -> list[Entry]:
    """Every PyTorch tensor of these layers, in their order."""
    return [entry for spec in layers for entry in _layer_entries(spec)]


def backbone_entries(cfg: BackboneConfig, root: tuple[str, ...] = ("backbone",)) -> list[Entry]:
    """`features.0` is the stem (pad, conv, BN); `features.<i+1>` is MBConv block i (see `topology`)."""
    return entries_of(topology.backbone_layers(cfg, root=root))


def model_entries(cfg: ModelConfig) -> list[Entry]:
    """Every PyTorch state-dict tensor of the reference model for `cfg`, in the model's order."""
    return entries_of(topology.pose_layers(cfg))


def _flatten(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, prefix + (key,)))
        else:
            flat[prefix + (key,)] = value
    return flat


def _nest(flat: Mapping[tuple[str, ...], Any]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


def _convert(
    state_dict: Mapping[str, Any],
    entries: list[Entry],
    expected: Mapping[str, Mapping],
    what: str,
    extra_ok=lambda key: False,
) -> dict[str, dict]:
    """Map `state_dict` through `entries`, checking against the `expected` shapes; strict."""
    expected_flat = {
        (collection,) + path: leaf
        for collection, tree in expected.items()
        for path, leaf in _flatten(tree).items()
    }
    wanted = {e.torch_key for e in entries}
    missing = [e.torch_key for e in entries if e.torch_key not in state_dict]
    unexpected = sorted(
        k for k in state_dict if k not in wanted and not k.endswith(IGNORED_SUFFIX) and not extra_ok(k)
    )
    misshaped, out = [], {}
    for e in entries:
        if e.torch_key not in state_dict:
            continue
        array = np.asarray(state_dict[e.torch_key], dtype=np.float32)
        if e.transpose is not None:
            if array.ndim != len(e.transpose):
                misshaped.append(f"{e.torch_key}: got shape {array.shape}, expected {len(e.transpose)} dims")
                continue
            array = array.transpose(e.transpose)
        want = tuple(expected_flat[(e.collection,) + e.path])
        if array.shape != want:
            # report the expected shape in PyTorch's layout, as the user's file has it
            back = want
            if e.transpose is not None:
                back = tuple(want[e.transpose.index(i)] for i in range(len(want)))
            got = tuple(np.shape(state_dict[e.torch_key]))
            misshaped.append(f"{e.torch_key}: got shape {got}, expected {back}")
            continue
        out[(e.collection,) + e.path] = np.ascontiguousarray(array)
    if missing or unexpected or misshaped:
        lines = [f"cannot load the PyTorch weights into {what}:"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                lines.append(f"  {len(items)} {title}: " + ", ".join(items))
        lines.append("  check that the checkpoint was made with the same phi and scaling rule as the config")
        raise ValueError("\n".join(lines))
    return _nest(out)


def variables_from_torch(state_dict: Mapping[str, Any], cfg: ModelConfig) -> dict[str, dict]:
    """{"params", "batch_stats"} for `EfficientHRNet(cfg)` from a reference PyTorch state dict.

    `state_dict` maps PyTorch names to arrays (numpy or anything `np.asarray` takes). Strict: any
    missing, unexpected or mis-shaped entry raises one ValueError listing them all;
    `num_batches_tracked` entries are accepted and ignored.
    """
    layers = topology.pose_layers(cfg)
    expected = topology.variable_shapes(layers)
    return _convert(state_dict, entries_of(layers), expected, f"EfficientHRNet({cfg.name})")


def backbone_variables_from_torch(
    state_dict: Mapping[str, Any], cfg: ModelConfig, ignore_non_backbone: bool = False
) -> dict[str, dict]:
    """{"params": {"backbone": ...}, "batch_stats": {"backbone": ...}} from `features.*` weights.

    For the authors' released compact EfficientNet checkpoints. Every `features.*` entry is checked
    strictly; other entries (e.g. a classifier head) raise unless `ignore_non_backbone=True`.
    Merge the result into a full model's variables to start from the pretrained backbone.
    """
    layers = topology.backbone_layers(cfg.backbone)
    expected = topology.variable_shapes(layers)
    extra_ok = (lambda k: not k.startswith("features.")) if ignore_non_backbone else (lambda k: False)
    what = f"the backbone of {cfg.name}"
    return _convert(state_dict, entries_of(layers), expected, what, extra_ok)


def unwrap_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The state dict inside a checkpoint: unwraps a 'state_dict' key and strips 'module.' prefixes."""
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"checkpoint must be a mapping of names to tensors, got {type(checkpoint).__name__}")
    if "state_dict" in checkpoint and isinstance(checkpoint["state_dict"], Mapping):
        checkpoint = checkpoint["state_dict"]
    state = {}
    for key, value in checkpoint.items():
        for prefix in WRAPPER_PREFIXES:
            key = key.removeprefix(prefix)
        if key in state:
            raise ValueError(f"checkpoint has '{key}' both with and without a 'module.' prefix")
        state[key] = value
    return state


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        return value.detach().cpu().numpy()
    return np.asarray(value)


def load_torch_checkpoint(path: str | Path, cfg: ModelConfig, backbone_only: bool = False) -> dict[str, dict]:
    """Read a PyTorch checkpoint file (.pth) and convert it for `EfficientHRNet(cfg)`.

    Needs torch (`pip install efficienthrnet[torch]`). Handles checkpoints that wrap the state
    dict in a 'state_dict' key or prefix names with 'module.' (DataParallel). With
    `backbone_only=True` only the `features.*` backbone weights are converted (other entries are
    ignored), for the released compact EfficientNet weights.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PyTorch checkpoint {path} does not exist")
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            "reading PyTorch checkpoints needs torch: install it with `pip install efficienthrnet[torch]`"
        ) from err
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: _to_numpy(v) for k, v in unwrap_state_dict(checkpoint).items()}
    if backbone_only:
        return backbone_variables_from_torch(state, cfg, ignore_non_backbone=True)
    return variables_from_torch(state, cfg)
