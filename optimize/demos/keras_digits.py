"""The Keras demo: a tf_keras MLP trained on digits, pruned to 75% sparsity with tfmot.

`optiserve optimize optimize.demos.keras_digits:pruned_keras_digits --out artifacts/digits-keras`
exports it with tf2onnx and optimizes it like any other model. Needs the `tf`
extra (`pip install .[tf]`).
"""

from __future__ import annotations

import numpy as np

from optimize.demos.digits import SEED, load_split
from optimize.keras_source import PruningSettings, import_tf, keras_source
from optimize.source import ModelSource

# 1,347 training rows in batches of 64 are 22 steps an epoch: sparsity reaches 75% at step 200 (epoch 10).
PRUNING = PruningSettings(final_sparsity=0.75, begin_step=0, end_step=200, frequency=100, epochs=10, seed=SEED)


def train_keras_classifier(train_x: np.ndarray, train_y: np.ndarray, epochs: int = 20):
    """A 64-256-256-10 MLP returning logits, trained with Adam."""
    t = import_tf()
    keras = t.keras
    keras.utils.set_random_seed(SEED)
    model = keras.Sequential([
        keras.layers.Input((64,), name="input"),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(10, name="logits"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train_x, train_y, epochs=epochs, batch_size=64, verbose=0)
    return model


def pruned_keras_digits() -> ModelSource:
    """Entry point for `optiserve optimize optimize.demos.keras_digits:pruned_keras_digits`."""
    train_x, train_y, test_x, test_y = load_split()
    model = train_keras_classifier(train_x, train_y)
    return keras_source(model, (test_x, test_y), "digits-keras", pruning=PRUNING, train_data=(train_x, train_y))
