"""Import the authors' PyTorch weights (EfficientHRNet and compact EfficientNet) into Flax variables.

The mapping from PyTorch state-dict names to Flax paths is derived from the ModelConfig alone,
following the reference model's module layout (`features.*` for the backbone, `trans<k>_branch<b>`,
`stage<k>.<m>.branches/fuse_layers`, `final_layers`, `deconv_layers`). Conversion is strict: every
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

from efficienthrnet.config import BackboneConfig, HeadConfig, HRNetConfig, ModelConfig
from efficienthrnet.nn.model import init_shapes, network_stride

IGNORED_SUFFIX = "num_batches_tracked"
WRAPPER_PREFIXES = ("module.",)

_CONV = (2, 3, 1, 0)  # OIHW -> HWIO (also depthwise [C,1,k,k] -> [k,k,1,C])
_DECONV = (2, 3, 0, 1)  # IOHW -> [k, k, in, out]


@dataclass(frozen=True)
class Entry:
    """One PyTorch tensor and where it goes: collection ('params'/'batch_stats'), path, transpose."""

    torch_key: str
    collection: str
    path: tuple[str, ...]
    transpose: tuple[int, ...] | None = None


def _conv(torch_prefix: str, path: tuple[str, ...], bias: bool = False, layout=_CONV) -> list[Entry]:
    entries = [Entry(f"{torch_prefix}.weight", "params", path + ("kernel",), layout)]
    if bias:
        entries.append(Entry(f"{torch_prefix}.bias", "params", path + ("bias",)))
    return entries


def _bn(torch_prefix: str, path: tuple[str, ...]) -> list[Entry]:
    return [
        Entry(f"{torch_prefix}.weight", "params", path + ("scale",)),
        Entry(f"{torch_prefix}.bias", "params", path + ("bias",)),
        Entry(f"{torch_prefix}.running_mean", "batch_stats", path + ("mean",)),
        Entry(f"{torch_prefix}.running_var", "batch_stats", path + ("var",)),
    ]


def backbone_entries(cfg: BackboneConfig, root: tuple[str, ...] = ("backbone",)) -> list[Entry]:
    """`features.0` is the stem (pad, conv, BN); `features.<i+1>` is MBConv block i.

    Inside a block the Sequential `conv` holds, in order: [expand (pad, conv, BN, swish) when the
    expand ratio is not 1], depthwise (pad, conv, BN, swish), SE (pool, conv, swish, conv, sigmoid),
    project conv, project BN.
    """
    entries = _conv("features.0.1", root + ("stem_conv",)) + _bn("features.0.2", root + ("stem_bn",))
    block = 0
    for stage in cfg.stages:
        for _ in range(stage.repeats):
            t, p = f"features.{block + 1}.conv", root + (f"block_{block}",)
            idx = 0
            if stage.expand_ratio != 1:
                entries += _conv(f"{t}.0.1", p + ("expand_conv",)) + _bn(f"{t}.0.2", p + ("expand_bn",))
                idx = 1
            entries += _conv(f"{t}.{idx}.1", p + ("dw_conv",)) + _bn(f"{t}.{idx}.2", p + ("dw_bn",))
            if cfg.se_ratio > 0:
                entries += _conv(f"{t}.{idx + 1}.se.1", p + ("se", "reduce"), bias=True)
                entries += _conv(f"{t}.{idx + 1}.se.3", p + ("se", "expand"), bias=True)
            entries += _conv(f"{t}.{idx + 2}", p + ("project_conv",))
            entries += _bn(f"{t}.{idx + 3}", p + ("project_bn",))
            block += 1
    return entries


def hrnet_entries(cfg: HRNetConfig, root: tuple[str, ...] = ("hrnet",)) -> list[Entry]:
    entries: list[Entry] = []
    num_stages = len(cfg.modules_per_stage)
    for k, n in enumerate(cfg.branches_per_stage):
        for b in range(n):
            t, p = f"trans{k + 1}_branch{b + 1}", root + (f"transition{k + 1}", f"branch_{b}")
            entries += _conv(f"{t}.0", p + ("conv",), bias=cfg.transition_bias) + _bn(f"{t}.1", p + ("bn",))
        for m in range(cfg.modules_per_stage[k]):
            t, p = f"stage{k + 2}.{m}", root + (f"stage{k + 2}", f"module_{m}")
            for b in range(n):
                for blk in range(cfg.blocks_per_branch):
                    tb, pb = f"{t}.branches.{b}.{blk}", p + (f"branch_{b}_block_{blk}",)
                    for c in ("1", "2"):
                        entries += _conv(f"{tb}.conv{c}", pb + (f"conv{c}",))
                        entries += _bn(f"{tb}.bn{c}", pb + (f"bn{c}",))
            single = k == num_stages - 1 and m == cfg.modules_per_stage[k] - 1
            for i in range(1 if single else n):
                for j in range(n):
                    tf, pf = f"{t}.fuse_layers.{i}.{j}", p + (f"fuse_{i}_{j}",)
                    if j > i:
                        entries += _conv(f"{tf}.0", pf + ("conv",)) + _bn(f"{tf}.1", pf + ("bn",))
                    for s in range(i - j):
                        ps = pf + (f"down_{s}",)
                        entries += _conv(f"{tf}.{s}.0", ps + ("conv",)) + _bn(f"{tf}.{s}.1", ps + ("bn",))
    return entries


def head_entries(cfg: HeadConfig, root: tuple[str, ...] = ("head",)) -> list[Entry]:
    entries = _conv("final_layers.0", root + ("final_0",), bias=True)
    for d in range(cfg.num_deconvs):
        t, p = f"deconv_layers.{d}", root + (f"deconv_{d}",)
        entries += _conv(f"{t}.0.0", p + ("deconv",), layout=_DECONV) + _bn(f"{t}.0.1", p + ("bn",))
        for n in range(cfg.blocks_per_deconv):
            tb, pb = f"{t}.{n + 1}.0", p + (f"block_{n}",)
            for c in ("1", "2"):
                entries += _conv(f"{tb}.conv{c}", pb + (f"conv{c}",)) + _bn(f"{tb}.bn{c}", pb + (f"bn{c}",))
        entries += _conv(f"final_layers.{d + 1}", root + (f"final_{d + 1}",), bias=True)
    return entries


def model_entries(cfg: ModelConfig) -> list[Entry]:
    """Every PyTorch state-dict tensor of the reference model for `cfg`, in the model's order."""
    return backbone_entries(cfg.backbone) + hrnet_entries(cfg.hrnet) + head_entries(cfg.head)


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
        (collection,) + path: leaf.shape
        for collection, tree in expected.items()
        for path, leaf in _flatten(tree).items()
    }
    targets = {(e.collection,) + e.path for e in entries}
    uncovered = sorted("/".join(p) for p in expected_flat.keys() - targets)
    unknown = sorted("/".join(p) for p in targets - expected_flat.keys())
    if uncovered or unknown:  # a bug in this module, not in the user's file
        raise AssertionError(
            f"converter map out of sync with the model: uncovered {uncovered}, unknown {unknown}"
        )

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
    expected = init_shapes(cfg, 2 * network_stride(cfg))
    return _convert(state_dict, model_entries(cfg), expected, f"EfficientHRNet({cfg.name})")


def backbone_variables_from_torch(
    state_dict: Mapping[str, Any], cfg: ModelConfig, ignore_non_backbone: bool = False
) -> dict[str, dict]:
    """{"params": {"backbone": ...}, "batch_stats": {"backbone": ...}} from `features.*` weights.

    For the authors' released compact EfficientNet checkpoints. Every `features.*` entry is checked
    strictly; other entries (e.g. a classifier head) raise unless `ignore_non_backbone=True`.
    Merge the result into a full model's variables to start from the pretrained backbone.
    """
    full = init_shapes(cfg, 2 * network_stride(cfg))
    expected = {c: {"backbone": full[c]["backbone"]} for c in ("params", "batch_stats")}
    extra_ok = (lambda k: not k.startswith("features.")) if ignore_non_backbone else (lambda k: False)
    what = f"the backbone of {cfg.name}"
    return _convert(state_dict, backbone_entries(cfg.backbone), expected, what, extra_ok)


def unwrap_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The state dict inside a checkpoint: unwraps a 'state_dict' key and strips 'module.' prefixes."""
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"checkpoint must be a mapping of names to tensors, got {type(checkpoint).__name__}")
    if "state_dict" in checkpoint and isinstance(checkpoint["state_dict"], Mapping):
        checkpoint = checkpoint["state_dict"]
    state = {}
    for key, value in checkpoint.items():
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
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
