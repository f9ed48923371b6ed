"""tpufit/data/request.py: what a run asks of its input."""

from __future__ import annotations

from tpufit.config import Layout, Mode
from tpufit.data import InfeedRequest


def test_only_training_streams_are_endless_and_only_padded_layouts_pad():
    assert InfeedRequest(Mode.TRAIN, Layout.PADDED).endless
    assert not InfeedRequest(Mode.EVAL, Layout.PADDED).endless
    assert InfeedRequest(Mode.PREDICT, Layout.PADDED).padded
    assert not InfeedRequest(Mode.TRAIN, Layout.TRUE_SIZE).padded


def test_the_shuffle_seed_is_the_seed_only_when_shuffling():
    assert InfeedRequest(Mode.TRAIN, Layout.PADDED, shuffle=True, seed=7).shuffle_seed == 7
    assert InfeedRequest(Mode.TRAIN, Layout.PADDED, shuffle=False, seed=7).shuffle_seed is None
