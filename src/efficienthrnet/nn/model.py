"""EfficientHRNet: compact EfficientNet backbone -> high-resolution network -> HigherHRNet head.

    model = EfficientHRNet(generate_config(phi, rule="reference"))
    variables = model.init(key, x, train=False)              # x: [B, H, W, 3], H and W % 32 == 0
                                                             # (fast: `init_variables(model, key)`)
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
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from efficienthrnet.config import ModelConfig
from efficienthrnet.nn.efficientnet import EfficientNet
from efficienthrnet.nn.head import Head
from efficienthrnet.nn.hrnet import HRNet
from efficienthrnet.nn.layers import INIT_SCHEMES, REFERENCE_INIT_STD, kernel_inits

__all__ = [
    "INIT_SCHEMES",
    "REFERENCE_INIT_STD",
    "EfficientHRNet",
    "check_input",
    "count_params",
    "init_shapes",
    "init_variables",
    "network_stride",
]


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


class EfficientHRNet(nn.Module):
    """The full bottom-up pose network for one ModelConfig (any phi, any scaling rule).

    `init_scheme` names the kernel initialisers (`nn.layers.kernel_inits`): "reference"
    (default) initialises as the authors' training does (every kernel N(0, 0.001^2)); "he"
    keeps He-normal (fan-out) kernels; "he_small_head" is He-normal everywhere except the head's
    output convs (``final_*``), which start at N(0, 0.001^2) as in the reference, so predictions
    start near zero. The reference starts from a pretrained backbone (see `backbone_init`);
    trained from scratch, "he_small_head" learned faster in short CPU runs (phi=-4, 500 steps
    on synthetic data: AP 0.222 against 0.198). Why near-zero outputs matter: with He-scaled
    kernels everywhere the untrained network predicts heatmaps of magnitude ~10; the first Adam
    steps then crush every output to zero and the network sits on the all-zero plateau of the
    heatmap loss for thousands of steps, while from near-zero outputs it fits the peaks at once.
    """

    config: ModelConfig
    dtype: Any = jnp.float32
    depthwise_impl: str = "auto"
    init_scheme: str = "reference"

    def setup(self) -> None:
        inits = kernel_inits(self.init_scheme)
        self.backbone = EfficientNet(
            self.config.backbone, dtype=self.dtype, depthwise_impl=self.depthwise_impl, kernel_init=inits.body
        )
        self.hrnet = HRNet(self.config.hrnet, dtype=self.dtype, kernel_init=inits.body)
        self.head = Head(
            self.config.head, dtype=self.dtype, kernel_init=inits.body, output_kernel_init=inits.output
        )

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


#: XLA options for compiling `init` on CPU: the unrolled random-number code of hundreds of
#: initialisers takes most of an optimised compile, and `init` runs once.
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def init_variables(model: EfficientHRNet, key: jax.Array, input_size: int | None = None) -> dict:
    """`model.init(key, x, train=False)`, the same values, fast: one compiled program at a small input.

    Parameters do not depend on the input size, so the smallest valid one (the network stride)
    is traced; the forward pass is dead code in the compiled program, which is built without
    LLVM optimisation on CPU (`INIT_COMPILER_OPTIONS`). Eager `model.init` of H-4 takes ~40 s
    on 2 CPU cores, op by op.
    """
    size = input_size or network_stride(model.config)
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    options = INIT_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
    init = jax.jit(lambda k, x: model.init(k, x, train=False)).lower(key, x).compile(compiler_options=options)
    return init(key, jnp.zeros(x.shape, x.dtype))


def count_params(tree) -> int:
    """Number of scalars in a pytree of arrays or ShapeDtypeStructs."""
    total = 0
    for leaf in jax.tree_util.tree_leaves(tree):
        n = 1
        for d in leaf.shape:
            n *= int(d)
        total += n
    return total
