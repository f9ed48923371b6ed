"""A training process for the crash tests (tests/test_crash.py): trains with a model_dir.

Run as `python crash_child.py MODEL_DIR OUT_DIR [--mark-loop N] [--pause-loop N]
[--interrupt-test]`. It trains a small MLP with Dropout and Adam on shuffled data
with checkpoints every few steps, and writes into OUT_DIR:

- `start.json`: the global step and checkpoint it resumed from;
- `loop-<n>`: a file written in `before_run` of its n-th loop when `--mark-loop n`
  (the parent kills it then, while that loop runs), and `loop-<n>-done` in its
  `after_run` (had the loop completed before the kill?);
- `paused`: written in `after_run` of loop `--pause-loop n`, after which it sleeps
  (the parent kills it between two loops);
- `final.npz`: the weights after a complete `fit`.

`--interrupt-test` catches the parent's SIGINT (KeyboardInterrupt) in a first
`fit`, records what the run left (`interrupted.json`, `interrupted.npz`), then
trains again to the end. `train()` is also imported by the tests for the
uninterrupted reference run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tpufit  # noqa: E402

ROWS, FEATURES, CLASSES = 600, 6, 3
BATCH, EPOCHS, LOOP, SAVE_EVERY = 20, 4, 10, 20  # 30 steps per epoch, 120 in all.
TOTAL_STEPS = ROWS // BATCH * EPOCHS


def build(model_dir: str | None, iterations_per_loop: int = LOOP):
    """The model (fixed initial weights) and data of every crash-test run, wrapped and compiled."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(CLASSES),
        ]
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, FEATURES)).astype("float32")
    y = rng.integers(0, CLASSES, size=ROWS)
    config = tpufit.RunConfig(save_checkpoints_steps=SAVE_EVERY, keep_checkpoint_max=3)
    tm = tpufit.TPUModel(
        model, iterations_per_loop=iterations_per_loop, model_dir=model_dir, config=config
    )
    tm.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        # The reference runs without a model_dir, where "auto" would time XLA against the
        # plain step in the first loops; one step function makes both runs comparable.
        jit_compile=True,
    )
    return tm, x, y


def train(model_dir: str | None, hooks=(), **fit_args) -> tpufit.TPUModel:
    """Builds and trains to the end (or to `fit_args`' max_steps); returns the TPUModel."""
    tm, x, y = build(model_dir)
    tm.fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0, hooks=list(hooks), **fit_args)
    return tm


class Markers(tpufit.Hook):
    """Tells the parent where this process is: marks a loop's start, or pauses after one."""

    def __init__(self, out_dir: str, mark_loop: int | None, pause_loop: int | None) -> None:
        self.out_dir = out_dir
        self.mark_loop = mark_loop
        self.pause_loop = pause_loop
        self.loops = 0
        self.ended_with: str | None = None

    def before_run(self, ctx):
        self.loops += 1
        if self.loops == self.mark_loop:
            _touch(os.path.join(self.out_dir, f"loop-{self.loops}"))

    def after_run(self, ctx, values):
        if self.loops == self.mark_loop:
            _touch(os.path.join(self.out_dir, f"loop-{self.loops}-done"))
        if self.loops == self.pause_loop:
            _touch(os.path.join(self.out_dir, "paused"))
            time.sleep(600)

    def end(self, run):
        self.ended_with = type(run.error).__name__ if run.error else "no error"


def _touch(path: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(str(time.time()))
    os.replace(path + ".tmp", path)


def _save_weights(tm: tpufit.TPUModel, path: str) -> None:
    np.savez(path, *tm.model.get_weights())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--mark-loop", type=int)
    parser.add_argument("--pause-loop", type=int)
    parser.add_argument("--interrupt-test", action="store_true")
    args = parser.parse_args()
    latest = tf.train.latest_checkpoint(args.model_dir) if os.path.isdir(args.model_dir) else None
    tm, x, y = build(args.model_dir)
    with open(os.path.join(args.out_dir, "start.json"), "w") as f:
        json.dump({"global_step": tm.global_step, "latest": latest}, f)
    markers = Markers(args.out_dir, args.mark_loop, args.pause_loop)
    fit = dict(batch_size=BATCH, epochs=EPOCHS, verbose=0)
    if args.interrupt_test:
        try:
            tm.fit(x, y, hooks=[markers], **fit)
        except KeyboardInterrupt:
            _save_weights(tm, os.path.join(args.out_dir, "interrupted.npz"))
            with open(os.path.join(args.out_dir, "interrupted.json"), "w") as f:
                json.dump({"global_step": tm.global_step, "end": markers.ended_with}, f)
        markers = Markers(args.out_dir, None, None)
    tm.fit(x, y, hooks=[markers], **fit)
    _save_weights(tm, os.path.join(args.out_dir, "final.npz"))


if __name__ == "__main__":
    main()
