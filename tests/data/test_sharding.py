"""tpufit/data/sharding.py: the auto-shard policy of every kind of input, and distributing."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_data
from user_inputs import Batches, batches

from tpufit.config import Layout, Mode
from tpufit.data import InfeedRequest, build_infeed, distribute

STRATEGY = tf.distribute.get_strategy()
DATA = tf.data.experimental.AutoShardPolicy.DATA
AUTO = tf.data.experimental.AutoShardPolicy.AUTO


def _policy(dataset: tf.data.Dataset):
    return dataset.options().experimental_distribute.auto_shard_policy


def _feed(x, mode: Mode, layout: Layout = Layout.PADDED, **request):
    return build_infeed(x, None, None, InfeedRequest(mode, layout, **request), STRATEGY)


@pytest.mark.parametrize("mode", list(Mode))
def test_arrays_shard_by_batch_their_stream_and_their_tail(mode):
    x, _ = tiny_data(10)
    feed = _feed(x, mode, Layout.TRUE_SIZE, batch_size=4)
    assert _policy(feed.dataset) == DATA
    assert _policy(feed.tail) == DATA


@pytest.mark.parametrize(
    "mode, policy", [(Mode.TRAIN, AUTO), (Mode.EVAL, DATA), (Mode.PREDICT, DATA)]
)
def test_a_users_dataset_keeps_auto_in_training_and_shards_by_batch_otherwise(mode, policy):
    feed = _feed(tf.data.Dataset.range(8).batch(4), mode)
    assert _policy(feed.dataset) == policy


def test_a_users_own_policy_is_kept_in_training():
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.FILE
    dataset = tf.data.Dataset.range(8).batch(4).with_options(options)
    assert (
        _policy(_feed(dataset, Mode.TRAIN).dataset)
        == options.experimental_distribute.auto_shard_policy
    )


@pytest.mark.parametrize("mode", list(Mode))
def test_python_sources_shard_by_batch(mode):
    x, _ = tiny_data(32)
    steps = 2 if mode == Mode.TRAIN else None
    assert _policy(_feed(batches(x), mode, steps=steps).dataset) == DATA
    assert _policy(_feed(Batches(x), mode).dataset) == DATA


def test_an_input_fn_shards_itself_and_is_distributed_through_its_dataset_fn():
    def input_fn(ctx):
        return tf.data.Dataset.from_tensor_slices(np.zeros((8, 2), "float32")).batch(4)

    feed = _feed(input_fn, Mode.PREDICT, batch_size=4)
    assert _policy(feed.dataset) == AUTO
    assert feed.dataset_fn is not None
    _, signals = next(iter(distribute(STRATEGY, feed)))
    assert signals["mask"].shape[0] == 4
