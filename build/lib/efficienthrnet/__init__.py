"""efficienthrnet: the EfficientHRNet design space in JAX/Flax.

The two entry points most sessions start from are re-exported here (both import no JAX):

    from efficienthrnet import generate_config, profile
    cfg = generate_config(phi=-2.5)              # the architecture, from a scaling rule
    profile(cfg).params, profile(cfg).macs       # exact costs, without building the model
"""

from .complexity import profile
from .config import ModelConfig
from .scaling import generate_config

__version__ = "0.1.0"

__all__ = ["ModelConfig", "__version__", "generate_config", "profile"]
