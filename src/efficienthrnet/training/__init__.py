"""The training layer every task shares; a task (pose: `efficienthrnet.train`, classification:
`efficienthrnet.classify`) adds its model, loss, data and evaluation on top.

- `state`: the train state (params, BatchNorm statistics, optimizer state, step, dropout key)
  and its compiled initialisation.
- `step`: one optimizer update given the task's loss, and its jitted, sharded form.
- `parallel`: the data-parallel mesh, batch sharding, replication, multi-host start.
- `checkpoints`: orbax checkpoints with the model config and input position; exact resume;
  `CheckpointError` for damaged or foreign checkpoints.
- `run_dir`: config.json (atomic), which folders a run may write into.
- `metrics`: metric lines, the non-finite guard, the throughput meter.
- `loop`: `TrainingTask` and `run_training`, the loop itself.
"""

from efficienthrnet.training.checkpoints import (
    CHECKPOINT_DIR,
    CheckpointError,
    check_same_architecture,
    check_variables_fit,
    checkpoint_manager,
    checkpoint_steps,
    describe_model,
    load_variables,
    restore_checkpoint,
    save_checkpoint,
)
from efficienthrnet.training.loop import Cadence, TrainingTask, run_training
from efficienthrnet.training.metrics import MetricsWriter, ThroughputMeter, check_finite, truncate_metrics
from efficienthrnet.training.parallel import (
    check_batch_divisible,
    make_mesh,
    maybe_initialize_distributed,
    replicate,
    shard_batch,
)
from efficienthrnet.training.run_dir import (
    CONFIG_FILE,
    METRICS_FILE,
    check_run_dir,
    read_run_config,
    write_run_record,
)
from efficienthrnet.training.state import COMPUTE_DTYPES, TrainState, cast_floating, create_train_state
from efficienthrnet.training.step import jit_step, train_step

__all__ = [
    "CHECKPOINT_DIR", "COMPUTE_DTYPES", "CONFIG_FILE", "METRICS_FILE", "Cadence", "CheckpointError", "MetricsWriter",
    "ThroughputMeter", "TrainState", "TrainingTask", "cast_floating", "check_batch_divisible", "check_finite",
    "check_run_dir", "check_same_architecture", "check_variables_fit", "checkpoint_manager", "checkpoint_steps",
    "create_train_state", "describe_model", "jit_step", "load_variables", "make_mesh", "maybe_initialize_distributed",
    "read_run_config", "replicate", "restore_checkpoint", "run_training", "save_checkpoint", "shard_batch",
    "train_step", "truncate_metrics", "write_run_record",
]
