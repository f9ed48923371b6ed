"""How an infeed is split over workers and replicas, through `tf.distribute` only.

- Arrays are in memory on every worker: they are sharded by batch
  (`AutoShardPolicy.DATA`; see `infeed.py`).
- A user's `tf.data.Dataset`: in training, TensorFlow's `AUTO` policy (each
  worker reads its own files when the dataset reads files), unless the user
  set one; in evaluation and prediction, by batch (`DATA`), so every worker
  sees the same sequence of padded batches and stop signals — the
  results are then exact and in order, and every worker stops at the same step.
- An `input_fn` builds one pipeline per worker through
  `strategy.distribute_datasets_from_function`; it shards itself with its
  `TPUContext`, so TensorFlow does no auto-sharding.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tpufit.data import infeed

_POLICY = tf.data.experimental.AutoShardPolicy


def for_user_dataset(feed: infeed.Infeed, mode: str) -> infeed.Infeed:
    """Returns `feed` with the auto-shard policy a user's dataset needs in `mode`."""
    if mode == "train":
        return feed
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = _POLICY.DATA
    return dataclasses.replace(feed, dataset=feed.dataset.with_options(options))


def distribute(strategy: tf.distribute.Strategy, source: infeed.Infeed | tf.data.Dataset):
    """Returns the distributed dataset of an infeed (or of a plain stream such as a tail)."""
    if isinstance(source, infeed.Infeed):
        if source.dataset_fn is not None:
            return strategy.distribute_datasets_from_function(source.dataset_fn)
        source = source.dataset
    return strategy.experimental_distribute_dataset(source)
