"""`TPUContext`: what an `input_fn` is told about the pipeline it builds.

TPUEstimator called `input_fn(params)` with `params["batch_size"]` and
`params["context"]`; tpufit calls `input_fn(ctx)` once per input pipeline
(one per worker) through `strategy.distribute_datasets_from_function`, with
the numbers that pipeline needs to read its own shard and batch it.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class TPUContext:
    """The context an `input_fn(ctx)` receives.

    Attributes:
        mode: The run's `tpufit.config.Mode`, a `str`: "train", "eval" or "predict".
        num_replicas: Replicas in sync over all workers.
        global_batch_size: Rows per step over all replicas (`batch_size`).
        per_replica_batch_size: Rows each replica gets per step: batch the
            dataset by this.
        input_pipeline_id: This pipeline's index, in `[0, num_input_pipelines)`.
        num_input_pipelines: Pipelines in all (one per worker).

    Example:
        >>> def input_fn(ctx):
        ...     ds = tf.data.Dataset.range(100).map(lambda i: tf.fill([4], tf.cast(i, tf.float32)))
        ...     ds = ctx.shard(ds)  # this pipeline's share
        ...     return ds.batch(ctx.per_replica_batch_size)
    """

    mode: str
    num_replicas: int
    global_batch_size: int
    per_replica_batch_size: int
    input_pipeline_id: int = 0
    num_input_pipelines: int = 1

    @property
    def replicas_per_pipeline(self) -> int:
        """Replicas this pipeline feeds (those of its worker)."""
        return self.num_replicas // self.num_input_pipelines

    def shard(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """Returns this pipeline's share of `dataset` (every `num_input_pipelines`-th element)."""
        if self.num_input_pipelines == 1:
            return dataset
        return dataset.shard(self.num_input_pipelines, self.input_pipeline_id)

    @classmethod
    def from_input_context(
        cls, input_context: tf.distribute.InputContext, *, mode: str, global_batch_size: int
    ) -> TPUContext:
        """Builds the context of one pipeline from `tf.distribute`'s `InputContext`."""
        return cls(
            mode=mode,
            num_replicas=input_context.num_replicas_in_sync,
            global_batch_size=global_batch_size,
            per_replica_batch_size=input_context.get_per_replica_batch_size(global_batch_size),
            input_pipeline_id=input_context.input_pipeline_id,
            num_input_pipelines=input_context.num_input_pipelines,
        )
