"""The network's layers as data: one description of the topology, read by the cost model and the converter.

`pose_layers(cfg, hw)` lists every parameterised layer of `EfficientHRNet(cfg)` at input size
`hw`, in the model's order: its Flax parameter path, its kind, its PyTorch module name in the
reference's state dict, its input/output sizes, widths, kernel, stride and padding.
`classifier_layers` does the same for the backbone-alone classifier.

- `complexity.py` costs each layer (params, MACs, the paper counter's figures);
- `convert.py` maps each layer's PyTorch tensors onto its Flax leaves;
- `variable_shapes(layers)` is the Flax variable tree the layers imply, which tests check
  leaf by leaf against `jax.eval_shape(model.init, ...)` of the Flax modules.

So a new block type is taught here once (its layers, their names on both sides) plus its Flax
module; the cost model and the converter only know layer kinds. Spatial sizes follow the model's
padding: TF-style fixed max(k - s, 0) in the backbone, PyTorch k // 2 in the HR network and head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from efficienthrnet.config import BackboneConfig, HeadConfig, HRNetConfig, ModelConfig

KINDS = ("conv", "depthwise", "deconv", "dense", "batchnorm")
PARTS = ("backbone", "transitions", "stage2", "stage3", "stage4", "head")
CLASSIFIER_PARTS = ("backbone", "classifier")

RGB_CHANNELS = 3
STEM_KERNEL = 3  # every EfficientNet stem is a 3x3 conv
HR_KERNEL = 3  # BasicBlocks, transitions and the stride-2 fuse convs
FUSE_UP_KERNEL = 1  # fuse projections from a lower-resolution branch
FINAL_KERNEL = 1  # the head's prediction convs
DECONV_STRIDE = 2  # each deconv doubles the resolution (1/4 -> 1/2)
# PyTorch (padding, output_padding) of a stride-2 ConvTranspose2d that exactly doubles the size.
DECONV_TORCH_PADDING = {2: (0, 0), 3: (1, 1), 4: (1, 0)}

HW = tuple[int, int]


@dataclass(frozen=True)
class LayerSpec:
    """One parameterised layer: a conv, a depthwise conv, a transposed conv, a dense or a BatchNorm.

    `pad` is the low-side zero padding per axis (h, w) of a conv; for a transposed conv it is
    PyTorch's `padding` (the size always doubles). `torch` is the module's name in the
    reference's PyTorch state dict (None where the reference has no such module).
    `in_mbconv` marks layers inside an MBConv block (the paper's counter counts them twice).
    """

    path: tuple[str, ...]
    kind: str
    part: str
    torch: str | None
    in_hw: HW
    out_hw: HW
    cin: int
    cout: int
    kernel: int = 1
    stride: int = 1
    bias: bool = False
    pad: HW = (0, 0)
    in_mbconv: bool = False

    @property
    def name(self) -> str:
        """The parameter path as "backbone/block_3/dw_conv"."""
        return "/".join(self.path)

    def variable_shapes(self) -> dict[str, dict[str, tuple[int, ...]]]:
        """{collection: {leaf: shape}} of this layer's Flax variables."""
        k = self.kernel
        if self.kind == "batchnorm":
            return {"params": {"scale": (self.cout,), "bias": (self.cout,)},
                    "batch_stats": {"mean": (self.cout,), "var": (self.cout,)}}
        if self.kind == "dense":
            return {"params": {"kernel": (self.cin, self.cout), "bias": (self.cout,)}}
        cin = 1 if self.kind == "depthwise" else self.cin  # [k, k, 1, C]: one input channel per group
        params = {"kernel": (k, k, cin, self.cout)}
        if self.bias:
            params["bias"] = (self.cout,)
        return {"params": params}


def variable_shapes(layers: Sequence[LayerSpec]) -> dict[str, dict]:
    """The nested {"params": ..., "batch_stats": ...} tree of shapes the layers imply."""
    tree: dict[str, dict] = {}
    for layer in layers:
        for collection, leaves in layer.variable_shapes().items():
            node = tree.setdefault(collection, {})
            for key in layer.path:
                node = node.setdefault(key, {})
            node.update(leaves)
    return tree


# ----------------------------------------------------------------------------- shape arithmetic


def tf_same(n_in: int, k: int, stride: int) -> tuple[int, int]:
    """(output size, low-side pad) of the model's TF-style padding (`nn.ops.tf_same_padding`).

    Like the reference, the total pad is fixed at max(k - s, 0), the low side getting the floor
    half; that is TF's SAME, out = ceil(in / stride), whenever the stride divides the size, and
    floor(in / stride) at odd sizes (the classifiers at 195, 169, 147), exactly as the model runs.
    """
    total = max(k - stride, 0)
    return (n_in + total - k) // stride + 1, total // 2


def torch_pad(n_in: int, k: int, stride: int) -> tuple[int, int]:
    """(output size, low-side pad) of PyTorch padding k // 2 on both sides (odd k: same size as TF)."""
    pad = k // 2
    return (n_in + 2 * pad - k) // stride + 1, pad


# ----------------------------------------------------------------------------- the builder


class _Builder:
    """Collects LayerSpecs; `part` and `in_mbconv` say where the walk currently is."""

    def __init__(self, part: str = "") -> None:
        self.layers: list[LayerSpec] = []
        self.part = part
        self.in_mbconv = False

    def _add(self, path, kind, torch, in_hw, out_hw, cin, cout, **geometry) -> None:
        self.layers.append(LayerSpec(tuple(path), kind, self.part, torch, in_hw, out_hw, cin, cout,
                                     in_mbconv=self.in_mbconv, **geometry))

    def conv(self, path, torch, hw: HW, cin: int, cout: int, k: int, stride: int = 1, *,
             depthwise: bool = False, bias: bool = False, padding: str = "tf_same") -> HW:
        shape = tf_same if padding == "tf_same" else torch_pad
        (oh, pad_h), (ow, pad_w) = shape(hw[0], k, stride), shape(hw[1], k, stride)
        kind = "depthwise" if depthwise else "conv"
        self._add(path, kind, torch, hw, (oh, ow), cin, cout, kernel=k, stride=stride, bias=bias, pad=(pad_h, pad_w))
        return oh, ow

    def deconv(self, path, torch, hw: HW, cin: int, cout: int, k: int) -> HW:
        if k not in DECONV_TORCH_PADDING:
            raise ValueError(f"deconv kernel {k}: supported kernels are {sorted(DECONV_TORCH_PADDING)}")
        pad, _ = DECONV_TORCH_PADDING[k]
        out = (hw[0] * DECONV_STRIDE, hw[1] * DECONV_STRIDE)
        self._add(path, "deconv", torch, hw, out, cin, cout, kernel=k, stride=DECONV_STRIDE, pad=(pad, pad))
        return out

    def batchnorm(self, path, torch, hw: HW, channels: int) -> None:
        self._add(path, "batchnorm", torch, hw, hw, channels, channels)

    def dense(self, path, torch, cin: int, cout: int) -> None:
        self._add(path, "dense", torch, (1, 1), (1, 1), cin, cout, bias=True)

    def conv_bn(self, path, torch, hw, cin, cout, k, stride=1, bias=False) -> HW:
        """`<path>/conv` + `<path>/bn` (PyTorch `<torch>.0` and `<torch>.1`), PyTorch padding."""
        hw = self.conv(path + ("conv",), f"{torch}.0", hw, cin, cout, k, stride, bias=bias, padding="torch")
        self.batchnorm(path + ("bn",), f"{torch}.1", hw, cout)
        return hw


# ----------------------------------------------------------------------------- backbone


def _mbconv(b: _Builder, path, torch, hw, cin, cout, expand, k, stride, se_ratio) -> HW:
    """Expand 1x1 (unless expand == 1), depthwise k x k, squeeze-excite, project 1x1; all with BN.

    PyTorch: the Sequential `<torch>` holds [expand (pad, conv, BN, swish)], depthwise (pad,
    conv, BN, swish), SE (pool, conv, swish, conv, sigmoid), project conv, project BN.
    """
    b.in_mbconv = True
    wide, idx = cin * expand, 0
    if expand != 1:
        b.conv(path + ("expand_conv",), f"{torch}.0.1", hw, cin, wide, 1)
        b.batchnorm(path + ("expand_bn",), f"{torch}.0.2", hw, wide)
        idx = 1
    out = b.conv(path + ("dw_conv",), f"{torch}.{idx}.1", hw, wide, wide, k, stride, depthwise=True)
    b.batchnorm(path + ("dw_bn",), f"{torch}.{idx}.2", out, wide)
    if se_ratio > 0:  # SE width from the block's input channels, as EfficientNet; on the pooled map
        reduced = max(1, int(cin * se_ratio))
        b.conv(path + ("se", "reduce"), f"{torch}.{idx + 1}.se.1", (1, 1), wide, reduced, 1, bias=True)
        b.conv(path + ("se", "expand"), f"{torch}.{idx + 1}.se.3", (1, 1), reduced, wide, 1, bias=True)
    b.conv(path + ("project_conv",), f"{torch}.{idx + 2}", out, wide, cout, 1)
    b.batchnorm(path + ("project_bn",), f"{torch}.{idx + 3}", out, cout)
    b.in_mbconv = False
    return out


def _backbone(b: _Builder, cfg: BackboneConfig, hw: HW, root: tuple[str, ...]) -> list[tuple[HW, int]]:
    """Stem (`features.0`) + MBConv blocks (`features.<i+1>`); returns (hw, channels) per stage output."""
    hw = b.conv(root + ("stem_conv",), "features.0.1", hw, RGB_CHANNELS, cfg.stem_channels, STEM_KERNEL,
                cfg.stem_stride)
    b.batchnorm(root + ("stem_bn",), "features.0.2", hw, cfg.stem_channels)
    channels, block, outputs = cfg.stem_channels, 0, []
    for stage in cfg.stages:
        for repeat in range(stage.repeats):
            stride = stage.stride if repeat == 0 else 1
            hw = _mbconv(b, root + (f"block_{block}",), f"features.{block + 1}.conv", hw, channels,
                         stage.channels, stage.expand_ratio, stage.kernel, stride, cfg.se_ratio)
            channels, block = stage.channels, block + 1
        outputs.append((hw, channels))
    return outputs


def backbone_layers(cfg: BackboneConfig, hw: HW | None = None,
                    root: tuple[str, ...] = ("backbone",)) -> tuple[LayerSpec, ...]:
    """The backbone's layers alone (by default at its smallest valid input size)."""
    stride = max(cfg.stage_strides)
    b = _Builder("backbone")
    _backbone(b, cfg, hw or (stride, stride), root)
    return tuple(b.layers)


# ----------------------------------------------------------------------------- HR network


def _basic_block(b: _Builder, path, torch, hw: HW, width: int) -> None:
    """Two 3x3 convs with BN; the identity residual needs no parameters."""
    for i in (1, 2):
        b.conv(path + (f"conv{i}",), f"{torch}.conv{i}", hw, width, width, HR_KERNEL, padding="torch")
        b.batchnorm(path + (f"bn{i}",), f"{torch}.bn{i}", hw, width)


def _fuse(b: _Builder, path, torch, hws: Sequence[HW], widths: Sequence[int], num_outputs: int) -> None:
    """SUM fusion: j > i is a 1x1 conv at branch j's resolution (then upsampled); j < i a chain of
    (i - j) stride-2 3x3 convs, keeping width j until the last one."""
    for i in range(num_outputs):
        for j, hw in enumerate(hws):
            pf, tf = path + (f"fuse_{i}_{j}",), f"{torch}.fuse_layers.{i}.{j}"
            if j > i:
                b.conv_bn(pf, tf, hw, widths[j], widths[i], FUSE_UP_KERNEL)
            for step in range(i - j):
                cout = widths[i] if step == i - j - 1 else widths[j]
                hw = b.conv_bn(pf + (f"down_{step}",), f"{tf}.{step}", hw, widths[j], cout, HR_KERNEL, 2)


def _hrnet(b: _Builder, cfg: HRNetConfig, taps: Sequence[tuple[HW, int]], root) -> tuple[HW, int]:
    """Transitions (`trans<k>_branch<b>`) and stages (`stage<k>.<m>`); returns the top branch's (hw, channels)."""
    if len(taps) != cfg.branches_per_stage[-1]:
        raise ValueError(
            f"the HR network needs {cfg.branches_per_stage[-1]} backbone taps, the config gives {len(taps)}"
        )
    branches: list[tuple[HW, int]] = []
    num_stages = len(cfg.modules_per_stage)
    for k, (modules, n) in enumerate(zip(cfg.modules_per_stage, cfg.branches_per_stage)):
        widths = cfg.branch_widths[:n]
        # existing branches continue from the previous stage; each new one starts at a backbone tap
        inputs = branches + list(taps[len(branches):n])
        b.part = "transitions"
        for i, ((hw, cin), width) in enumerate(zip(inputs, widths)):
            b.conv_bn(root + (f"transition{k + 1}", f"branch_{i}"), f"trans{k + 1}_branch{i + 1}", hw, cin,
                      width, HR_KERNEL, bias=cfg.transition_bias)
        b.part = f"stage{k + 2}"
        hws = [hw for hw, _ in inputs]
        for m in range(modules):
            path, torch = root + (f"stage{k + 2}", f"module_{m}"), f"stage{k + 2}.{m}"
            for i, (hw, width) in enumerate(zip(hws, widths)):
                for blk in range(cfg.blocks_per_branch):
                    _basic_block(b, path + (f"branch_{i}_block_{blk}",), f"{torch}.branches.{i}.{blk}", hw, width)
            single = k == num_stages - 1 and m == modules - 1
            _fuse(b, path, torch, hws, widths, 1 if single else len(hws))
        branches = list(zip(hws, widths))
    return branches[0]


# ----------------------------------------------------------------------------- head


def _head(b: _Builder, cfg: HeadConfig, hw: HW, channels: int, root) -> None:
    """`final_layers.0` at 1/4; per deconv (`deconv_layers.<d>`): concat, transposed conv + BN,
    BasicBlocks, then `final_layers.<d+1>`."""
    b.part = "head"
    b.conv(root + ("final_0",), "final_layers.0", hw, channels, cfg.quarter_channels, FINAL_KERNEL, bias=True)
    predicted = cfg.quarter_channels
    for d in range(cfg.num_deconvs):
        path, torch = root + (f"deconv_{d}",), f"deconv_layers.{d}"
        hw = b.deconv(path + ("deconv",), f"{torch}.0.0", hw, channels + predicted, cfg.deconv_channels,
                      cfg.deconv_kernel)
        b.batchnorm(path + ("bn",), f"{torch}.0.1", hw, cfg.deconv_channels)
        for n in range(cfg.blocks_per_deconv):
            _basic_block(b, path + (f"block_{n}",), f"{torch}.{n + 1}.0", hw, cfg.deconv_channels)
        b.conv(root + (f"final_{d + 1}",), f"final_layers.{d + 1}", hw, cfg.deconv_channels, cfg.half_channels,
               FINAL_KERNEL, bias=True)
        channels, predicted = cfg.deconv_channels, cfg.half_channels


# ----------------------------------------------------------------------------- whole networks


def pose_layers(cfg: ModelConfig, hw: HW | None = None) -> tuple[LayerSpec, ...]:
    """Every parameterised layer of `EfficientHRNet(cfg)` at input (h, w), in the model's order.

    By default at twice the network stride (parameters do not depend on the size)."""
    if hw is None:
        stride = max(cfg.backbone.tap_strides)
        hw = (2 * stride, 2 * stride)
    b = _Builder("backbone")
    stage_outputs = _backbone(b, cfg.backbone, hw, ("backbone",))
    taps = [stage_outputs[i - 1] for i in cfg.backbone.tap_stages]
    top_hw, top_channels = _hrnet(b, cfg.hrnet, taps, ("hrnet",))
    _head(b, cfg.head, top_hw, top_channels, ("head",))
    return tuple(b.layers)


def classifier_layers(cfg: BackboneConfig, num_classes: int, hw: HW) -> tuple[LayerSpec, ...]:
    """`EfficientNetClassifier`: the backbone, a 1x1 conv + BN to `classifier_head_channels`,
    global pooling, a dense layer with bias (no reference PyTorch names for the head)."""
    b = _Builder("backbone")
    last_hw, channels = _backbone(b, cfg, hw, ("backbone",))[-1]
    b.part = "classifier"
    b.conv(("head_conv",), None, last_hw, channels, cfg.classifier_head_channels, 1)
    b.batchnorm(("head_bn",), None, last_hw, cfg.classifier_head_channels)
    b.dense(("classifier",), None, cfg.classifier_head_channels, num_classes)
    return tuple(b.layers)
