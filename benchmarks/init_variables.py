"""Time the ways to get EfficientHRNet H-4 variables on CPU, one way per process (cold caches):
`python benchmarks/init_variables.py init_variables|eager_384|jit_default_32|eval_shape_per_leaf`."""
import json
import os
import sys
import time

import jax
import jax.numpy as jnp

from efficienthrnet.nn import EfficientHRNet, init_variables
from efficienthrnet.scaling import generate_config

way = sys.argv[1]
model = EfficientHRNet(generate_config(-4, rule="reference"))
key = jax.random.key(0)
t = time.perf_counter(); c = time.process_time()
if way == "init_variables":
    v = init_variables(model, key)
elif way == "jit_default_32":
    v = jax.jit(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False))(key)
elif way == "eager_384":
    v = model.init(key, jnp.zeros((1, 384, 384, 3)), train=False)
elif way == "eval_shape_per_leaf":
    shapes = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False), key)
    leaves, tree = jax.tree_util.tree_flatten(shapes)
    keys = jax.random.split(key, len(leaves))
    init = jax.nn.initializers.normal(0.001)  # other draws than model.init: for timing only
    v = jax.tree_util.tree_unflatten(tree, [init(k, l.shape, l.dtype) for k, l in zip(keys, leaves)])
jax.block_until_ready(v)
print(json.dumps({"way": way, "seconds": round(time.perf_counter() - t, 1), "cpu_s": round(time.process_time() - c, 1), "cpus": os.cpu_count(),
                  "load1": os.getloadavg()[0], "jax": jax.__version__}))
