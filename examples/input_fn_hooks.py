"""TPUEstimator style through tpufit: `input_fn(ctx)`, session hooks and `host_call`.

One `input_fn(ctx)` builds the `tf.data` pipeline for every mode, as a TPUEstimator
`input_fn(params)` did; tpufit calls it once per input pipeline with a
`tpufit.TPUContext` (the mode, this pipeline's shard, the per-replica batch size).
A hook of our own asks for one more per-step value from inside the device loop
(`host_call`: the gradient norm) and sees every step's loss in the outfeed.

Run:  python examples/input_fn_hooks.py            (well under a minute on two CPU cores)
      python examples/input_fn_hooks.py --smoke    (a few steps: checks that it runs)
Needs no download (scikit-learn's bundled digits).
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads

import keras
import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import tpufit


def make_input_fn(x: np.ndarray, y: np.ndarray | None):
    """Returns an `input_fn(ctx)` over `(x, y)`: shuffled and endless when training.

    Args:
        x: features, one row per example.
        y: labels, or `None` for prediction.
    """

    def input_fn(ctx: tpufit.TPUContext) -> tf.data.Dataset:
        dataset = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y))
        dataset = ctx.shard(dataset)  # this pipeline's share (one per worker)
        if ctx.mode == "train":
            dataset = dataset.shuffle(len(x), seed=0).repeat()
        return dataset.batch(ctx.per_replica_batch_size).prefetch(tf.data.AUTOTUNE)

    return input_fn


class GradientWatch(tpufit.Hook):
    """Collects every training step's loss and gradient norm, loop by loop."""

    def __init__(self, report_every: int) -> None:
        self.report_every = report_every
        self.losses: list[float] = []
        self.grad_norms: list[float] = []

    def host_call(self, mode: str) -> dict:
        return {"grad_norm": self.grad_norm} if mode == "train" else {}

    def grad_norm(self, t: tpufit.StepTensors) -> tf.Tensor:
        # Runs inside every step on the device; its value reaches after_run per step.
        return tf.linalg.global_norm(t.gradients)

    def after_run(self, ctx: tpufit.RunContext, values: tpufit.RunValues) -> None:
        self.losses.extend(values.outfeed["loss"].tolist())
        self.grad_norms.extend(values.outfeed["grad_norm"].tolist())
        step_after_loop = ctx.global_step + ctx.steps  # ctx.global_step: before the loop
        if step_after_loop % self.report_every == 0:
            print(
                f"step {step_after_loop:4d}: loss {self.losses[-1]:.4f}, "
                f"gradient norm {self.grad_norms[-1]:.4f}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="train a few steps only")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=0, stratify=y
    )

    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    tm = tpufit.TPUModel(model, iterations_per_loop=25)
    tm.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    # TPUEstimator's train(input_fn, max_steps=...): the input is endless, the step
    # budget ends training.
    max_steps = 50 if args.smoke else 1000
    watch = GradientWatch(report_every=25 if args.smoke else 250)
    tm.fit(
        make_input_fn(x_train, y_train),
        batch_size=64,
        max_steps=max_steps,
        hooks=[watch],
        verbose=0,
    )

    # evaluate and predict read their input_fn once to its end, exactly.
    scores = tm.evaluate(make_input_fn(x_test, y_test), batch_size=128, return_dict=True, verbose=0)
    logits = tm.predict(input_fn=make_input_fn(x_test, None), batch_size=128, verbose=0)
    acc_predict = float(np.mean(np.argmax(logits, axis=-1) == y_test))

    if len(watch.losses) != tm.global_step:
        print(
            f"FAIL: the hook saw {len(watch.losses)} step losses, trained {tm.global_step}",
            file=sys.stderr,
        )
        return 1
    if len(logits) != len(x_test) or abs(acc_predict - scores["accuracy"]) > 0.5 / len(y_test):
        print("FAIL: evaluate and predict disagree", file=sys.stderr)
        return 1
    if not args.smoke and scores["accuracy"] < 0.95:
        print(f"FAIL: accuracy {scores['accuracy']:.4f} < 0.95", file=sys.stderr)
        return 1
    print(
        f"input_fn + hooks: {tm.global_step} steps, {len(watch.losses)} per-step losses "
        f"and gradient norms seen by the hook; test accuracy {scores['accuracy']:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
