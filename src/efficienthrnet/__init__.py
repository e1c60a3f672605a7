"""efficienthrnet: the EfficientHRNet design space in JAX/Flax."""

__version__ = "0.1.0"
