"""Train into a `model_dir`, stop, resume, export a SavedModel and serve it without tpufit.

1. Train 3 epochs with `model_dir=...`: tpufit writes checkpoints there.
2. "Restart": a new model and `TPUModel` on the same `model_dir` restore the
   global step, weights and optimizer state; `fit(epochs=6)` trains epochs 3..5,
   continuing the global step, and ends with the weights of an uninterrupted run.
3. `tm.export(...)` writes a SavedModel; a separate Python process that imports
   only TensorFlow loads it and calls its `serving_default` signature, and its
   outputs equal `tm.predict`'s, bit for bit.

Run:  python examples/model_dir_resume_export.py            (about a minute on two CPU cores)
      python examples/model_dir_resume_export.py --smoke    (a few steps: checks that it runs)
Needs no download (scikit-learn's bundled digits); writes into a temporary directory.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads

import keras
import numpy as np
from sklearn.datasets import load_digits

import tpufit

# What a serving process runs: TensorFlow only, no tpufit, no Keras model code.
SERVE = """
import sys
import numpy as np
import tensorflow as tf

served = tf.saved_model.load(sys.argv[1])
serve = served.signatures["serving_default"]
outputs = serve(tf.constant(np.load(sys.argv[2])))  # a dict: {"output_0": ...}
np.save(sys.argv[3], outputs["output_0"].numpy())
print("tpufit imported by the server:", "tpufit" in sys.modules)
"""


def wrapped(model_dir: Path | None) -> tpufit.TPUModel:
    """Returns a new model of the same architecture (same initial weights), compiled.

    Args:
        model_dir: where checkpoints go, or `None` for none.
    """
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(10),
        ]
    )
    config = tpufit.RunConfig(seed=0, save_checkpoints_steps=20)
    tm = tpufit.TPUModel(model, iterations_per_loop=10, model_dir=model_dir, config=config)
    tm.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return tm


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="train a few steps only")
    args = parser.parse_args()

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    if args.smoke:
        x, y = x[:200], y[:200]
    x_train, y_train, x_test = x[:-100], y[:-100], x[-100:]
    first_epochs, all_epochs = (1, 2) if args.smoke else (3, 6)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "run"

        tm = wrapped(model_dir)
        tm.fit(x_train, y_train, batch_size=32, epochs=first_epochs, verbose=0)
        stopped_at = tm.global_step
        print(f"trained {first_epochs} epochs, global step {stopped_at}; stopping")
        del tm

        # As a restarted job would: build everything anew on the same model_dir.
        tm = wrapped(model_dir)
        print(f"restored from {model_dir.name}/: global step {tm.global_step}")
        history = tm.fit(x_train, y_train, batch_size=32, epochs=all_epochs, verbose=0)
        print(f"resumed: trained epochs {history.epoch}, global step {tm.global_step}")

        straight = wrapped(None)
        straight.fit(x_train, y_train, batch_size=32, epochs=all_epochs, verbose=0)
        same = all(
            np.array_equal(a, b)
            for a, b in zip(tm.model.get_weights(), straight.model.get_weights(), strict=True)
        )
        print(f"weights equal to an uninterrupted run's: {same}")

        export_dir = Path(tmp) / "serving" / "1"
        tm.export(export_dir, batch_size=32)
        np.save(Path(tmp) / "requests.npy", x_test)
        served = subprocess.run(
            [
                sys.executable,
                "-c",
                SERVE,
                str(export_dir),
                str(Path(tmp) / "requests.npy"),
                str(Path(tmp) / "served.npy"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        print(served.stdout.strip())
        from_server = np.load(Path(tmp) / "served.npy")
    predicted = tm.predict(x_test, batch_size=32, verbose=0)
    bit_equal = np.array_equal(from_server, predicted)

    if tm.global_step <= stopped_at or history.epoch[0] != first_epochs:
        print("FAIL: the resumed run did not continue", file=sys.stderr)
        return 1
    if not (same and bit_equal):
        print(
            f"FAIL: resumed equals uninterrupted: {same}; served equals predict: {bit_equal}",
            file=sys.stderr,
        )
        return 1
    print(
        f"model_dir: resumed at step {stopped_at}, ended at step {tm.global_step} with an "
        f"uninterrupted run's weights; SavedModel served {len(from_server)} rows "
        "bit-equal to tm.predict"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
