"""Fixtures shared by the Keras tests: the digits split and a Keras classifier trained on it (seeded)."""

import pytest

from optimize.keras_source import missing_tf_message


@pytest.fixture(scope="module")
def digits():
    from optimize.demos.digits import load_split

    return load_split()


@pytest.fixture(scope="module")
def keras_model(digits):
    for module in ("tensorflow", "tf_keras", "tensorflow_model_optimization", "tf2onnx"):
        pytest.importorskip(module, reason=missing_tf_message(module))
    from optimize.demos.keras_digits import train_keras_classifier

    return train_keras_classifier(digits[0], digits[1])  # seeded inside (keras.utils.set_random_seed)
