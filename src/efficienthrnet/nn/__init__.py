"""Flax modules of EfficientHRNet: fast ops, the compact EfficientNet, the HR network, the head."""

from efficienthrnet.nn.efficientnet import EfficientNet, EfficientNetClassifier, MBConv
from efficienthrnet.nn.head import Head
from efficienthrnet.nn.hrnet import HRNet
from efficienthrnet.nn.layers import INIT_SCHEMES, kernel_inits
from efficienthrnet.nn.model import EfficientHRNet, count_params, init_shapes, init_variables
from efficienthrnet.nn.ops import conv_transpose_torch, depthwise_conv2d, resolve_depthwise_impl

__all__ = [
    "INIT_SCHEMES",
    "EfficientHRNet",
    "EfficientNet",
    "EfficientNetClassifier",
    "HRNet",
    "Head",
    "MBConv",
    "conv_transpose_torch",
    "count_params",
    "depthwise_conv2d",
    "init_shapes",
    "init_variables",
    "kernel_inits",
    "resolve_depthwise_impl",
]
