"""The demo model: a small MLP trained in seconds on scikit-learn's digits.

The digits dataset ships inside scikit-learn (1,797 8x8 images), so nothing is
downloaded. The split is fixed by a seed so the demo and tests can reuse it.
"""

from __future__ import annotations

import numpy as np

from optimize.source import ModelSource

SEED = 0
HELD_OUT_FRACTION = 0.25


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (train_x, train_y, test_x, test_y); pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    inputs = (digits.data / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        inputs, labels, test_size=HELD_OUT_FRACTION, random_state=SEED, stratify=labels
    )
    return train_x, train_y, test_x, test_y


def mlp():
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(64, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    )


def cnn():
    """A small CNN over the 8x8 image; it still takes the flat 64 pixels, so the API is the MLP's."""
    import torch

    return torch.nn.Sequential(
        torch.nn.Unflatten(1, (1, 8, 8)),
        torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(64 * 4 * 4, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 10),
    )


def train_classifier(train_x: np.ndarray, train_y: np.ndarray, epochs: int = 30, model=None):
    """Train `model` (default: a new MLP) with Adam; seeded and repeatable (optimize.train.repeatable)."""
    from optimize.train import build, fit

    model = model if model is not None else build(mlp)
    return fit(model, train_x, train_y, epochs, lr=1e-3, what="training the digits classifier")


def trained_digits_classifier() -> ModelSource:
    """Entry point for `optiserve optimize optimize.demos.digits:trained_digits_classifier`."""
    return _trained_digits("digits", mlp, epochs=30)


def trained_digits_cnn() -> ModelSource:
    """The CNN variant, for static quantization and structured pruning of convolutions."""
    return _trained_digits("digits-cnn", cnn, epochs=15)


def _trained_digits(name: str, architecture, epochs: int) -> ModelSource:
    from optimize.train import build

    train_x, train_y, test_x, test_y = load_split()
    return ModelSource(
        name=name,
        version="1",
        module=train_classifier(train_x, train_y, epochs=epochs, model=build(architecture)),
        example_input=train_x[:8],
        validation_inputs=test_x,
        validation_labels=test_y,
        train_inputs=train_x,
        train_labels=train_y,
    )
