"""EfficientHRNet: compact EfficientNet backbone -> high-resolution network -> HigherHRNet head.

    model = EfficientHRNet(generate_config(phi, rule="reference"))
    variables = model.init(key, x, train=False)              # x: [B, H, W, 3], H and W % 32 == 0
    out4, out2 = model.apply(variables, x, train=False)
    (out4, out2), updates = model.apply(variables, x, train=True, mutable=["batch_stats"],
                                        rngs={"dropout": key})
    taps = model.apply(variables, x, method=EfficientHRNet.backbone_taps)

Top-level submodules are `backbone`, `hrnet` and `head` (other tools count parameters per part).
`dtype` is the computation dtype (e.g. jnp.bfloat16); parameters stay float32 and the outputs
are returned as float32.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import traverse_util

from efficienthrnet.config import ModelConfig
from efficienthrnet.nn.efficientnet import EfficientNet
from efficienthrnet.nn.head import Head
from efficienthrnet.nn.hrnet import HRNet


def network_stride(config: ModelConfig) -> int:
    """The factor input height and width must be divisible by (the deepest tap's stride)."""
    return max(config.backbone.tap_strides)


def check_input(x: jax.Array, config: ModelConfig) -> None:
    """Raise a clear ValueError unless `x` is NHWC with H and W divisible by the network stride."""
    if x.ndim != 4:
        raise ValueError(f"EfficientHRNet expects NHWC input [B, H, W, C], got shape {tuple(x.shape)}")
    stride = network_stride(config)
    h, w = x.shape[1], x.shape[2]
    if h % stride or w % stride or h == 0 or w == 0:
        raise ValueError(
            f"input height and width must be positive multiples of {stride}, got {h}x{w}; "
            f"pad or resize the image to e.g. {-(-h // stride) * stride}x{-(-w // stride) * stride}"
        )


#: The reference's `init_weights` (run by get_pose_net before training): every conv and
#: transposed-conv kernel ~ N(0, 0.001^2), biases 0, BatchNorm scale 1 and bias 0.
REFERENCE_INIT_STD = 0.001
INIT_SCHEMES = ("reference", "he", "he_small_head")


def reference_training_init(params: dict, key: jax.Array, std: float = REFERENCE_INIT_STD,
                            only: Callable[[tuple[str, ...]], bool] | None = None) -> dict:
    """Params re-drawn as the reference initialises them for training.

    Only conv kernels (4-d leaves) change, and of those only the ones whose path `only` accepts
    (None: all): Flax already starts conv biases at 0 and BatchNorm at scale 1 / bias 0. Why it
    matters: with He-scaled kernels everywhere the untrained network predicts heatmaps of
    magnitude ~10; the first Adam steps then crush every output to zero and the network sits on
    the all-zero plateau of the heatmap loss for thousands of steps, while from near-zero outputs
    it starts fitting the peaks at once (measured on the synthetic data).
    """
    flat = traverse_util.flatten_dict(params)
    keys = dict(zip(sorted(flat), jax.random.split(key, len(flat))))
    redrawn = {
        path: std * jax.random.normal(keys[path], leaf.shape, leaf.dtype)
        if leaf.ndim == 4 and (only is None or only(path)) else leaf
        for path, leaf in flat.items()
    }
    return traverse_util.unflatten_dict(redrawn)


def is_output_conv(path: tuple[str, ...]) -> bool:
    """Whether a parameter path lies in one of the head's output convs (``head/final_*``)."""
    return len(path) > 1 and path[0] == "head" and path[1].startswith("final_")


class EfficientHRNet(nn.Module):
    """The full bottom-up pose network for one ModelConfig (any phi, any scaling rule).

    `init_scheme` "reference" (default) initialises as the authors' training does (kernels
    N(0, 0.001^2), see `reference_training_init`); "he" keeps He-normal (fan-out) kernels;
    "he_small_head" is He-normal everywhere except the head's output convs (``final_*``), which
    start at N(0, 0.001^2) as in the reference, so predictions start near zero. The reference
    starts from a pretrained backbone; trained from scratch, "he_small_head" learned faster in
    short CPU runs (phi=-4, 500 steps on synthetic data: AP 0.222 against 0.198).
    """

    config: ModelConfig
    dtype: Any = jnp.float32
    depthwise_impl: str = "auto"
    init_scheme: str = "reference"

    def init(self, rngs, *args, **kwargs):
        if self.init_scheme not in INIT_SCHEMES:
            raise ValueError(f"init_scheme={self.init_scheme!r}; use one of {INIT_SCHEMES}")
        variables = super().init(rngs, *args, **kwargs)
        if self.init_scheme == "he":
            return variables
        key = rngs["params"] if isinstance(rngs, dict) else rngs
        only = is_output_conv if self.init_scheme == "he_small_head" else None
        params = reference_training_init(variables["params"], jax.random.fold_in(key, 1), only=only)
        return {**variables, "params": params}

    def setup(self) -> None:
        self.backbone = EfficientNet(self.config.backbone, self.dtype, self.depthwise_impl)
        self.hrnet = HRNet(self.config.hrnet, self.dtype)
        self.head = Head(self.config.head, self.dtype)

    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, ...]:
        """(out4 [B,H/4,W/4,quarter_channels], out2 [B,H/2,W/2,half_channels]), float32."""
        check_input(x, self.config)
        taps = self.backbone(x, train)
        features = self.hrnet(taps, train)
        return tuple(o.astype(jnp.float32) for o in self.head(features, train))

    def backbone_taps(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, ...]:
        """The backbone features fed to the HR network (strides `config.backbone.tap_strides`)."""
        check_input(x, self.config)
        return tuple(t.astype(jnp.float32) for t in self.backbone(x, train))


def init_shapes(config: ModelConfig, input_size: int | None = None, **module_kwargs) -> dict:
    """The variables' shapes/dtypes of `EfficientHRNet(config)` without computing anything.

    Parameter shapes do not depend on the input size; a small one traces fastest. Cached per
    (config, size, module options); every call returns a fresh tree.
    """
    size = input_size or config.input_size
    shapes = _init_shapes_cached(config, size, tuple(sorted(module_kwargs.items())))
    return jax.tree_util.tree_map(lambda leaf: leaf, shapes)


@functools.lru_cache(maxsize=32)
def _init_shapes_cached(config: ModelConfig, size: int, module_kwargs: tuple) -> dict:
    model = EfficientHRNet(config, **dict(module_kwargs))
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    return jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(0), x)


def count_params(tree) -> int:
    """Number of scalars in a pytree of arrays or ShapeDtypeStructs."""
    total = 0
    for leaf in jax.tree_util.tree_leaves(tree):
        n = 1
        for d in leaf.shape:
            n *= int(d)
        total += n
    return total
