"""Keras models into the optimizer: magnitude pruning with tfmot, then ONNX with tf2onnx.

tensorflow-model-optimization 0.8 does not support Keras 3, so this module
runs TensorFlow's legacy Keras (the `tf_keras` package, TF_USE_LEGACY_KERAS=1).
TensorFlow is imported only inside functions, so the rest of `optimize` never
needs it; install it with `pip install .[tf]`.

Unstructured pruning sets weights to zero but keeps them in the dense
matrices: onnxruntime multiplies them like any other weight. Its only gain is
a smaller file after compression, and that is all the manifest reports for it.
"""

from __future__ import annotations

import gzip
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from optimize.export import OPSET, ParityError
from optimize.manifest import Step
from optimize.source import ModelSource

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before TensorFlow is first imported: tf.keras is then tf_keras
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO and WARNING lines

INPUT_NAME = "input"
TF_PACKAGES = ("tensorflow", "tf_keras", "tensorflow-model-optimization", "tf2onnx")
NO_SPEEDUP = ("gzip -9 of the fp32 ONNX file: pruned zeros compress, but dense runtimes still multiply them, "
              "so this is a smaller download, not a speedup")


def missing_tf_message(missing: str) -> str:
    return (f"Keras models need {', '.join(TF_PACKAGES)}; {missing} is not installed. "
            "Install them with: pip install .[tf]")


def import_tf() -> SimpleNamespace:
    """TensorFlow with legacy Keras, tfmot and tf2onnx, or an ImportError saying how to install them."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    try:
        import tensorflow as tf
        import tensorflow_model_optimization as tfmot
        import tf2onnx
        import tf_keras as keras
    except ImportError as error:
        raise ImportError(missing_tf_message(error.name or str(error))) from error
    return SimpleNamespace(tf=tf, keras=keras, tfmot=tfmot, tf2onnx=tf2onnx)


@dataclass(frozen=True)
class PruningSettings:
    """tfmot magnitude pruning while fine-tuning.

    Sparsity rises from `initial_sparsity` at `begin_step` to `final_sparsity`
    at `end_step` (PolynomialDecay), masks updated every `frequency` training
    steps, over `epochs` of fine-tuning in batches of `batch_size`.
    """

    final_sparsity: float = 0.75
    initial_sparsity: float = 0.0
    begin_step: int = 0
    end_step: int = 200
    frequency: int = 100
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.initial_sparsity <= self.final_sparsity < 1:
            raise ValueError(f"pruning: expected 0 <= initial_sparsity <= final_sparsity < 1, got "
                             f"{self.initial_sparsity} and {self.final_sparsity}")
        if not 0 <= self.begin_step < self.end_step or (self.end_step - self.begin_step) % self.frequency:
            raise ValueError(f"pruning: expected 0 <= begin_step < end_step with end_step - begin_step a multiple "
                             f"of frequency {self.frequency} (else the final mask is never applied), got "
                             f"{self.begin_step} and {self.end_step}")

    def check_reachable(self, rows: int) -> None:
        steps = math.ceil(rows / self.batch_size) * self.epochs
        if steps <= self.end_step:
            raise ValueError(f"pruning: end_step {self.end_step} is never reached: {self.epochs} epochs of {rows} "
                             f"rows in batches of {self.batch_size} are {steps} steps")


def weight_sparsity(model) -> float:
    """Fraction of zeros over every kernel (the weights pruning acts on; biases are left alone)."""
    kernels = [w.numpy() for w in model.weights if "kernel" in w.name]
    return float(sum((k == 0).sum() for k in kernels) / sum(k.size for k in kernels))


def prune_keras(model, train_inputs: np.ndarray, train_labels: np.ndarray, settings: PruningSettings):
    """Fine-tune a pruned copy of `model`; return (the copy with pruning wrappers stripped, measured sparsity)."""
    t = import_tf()
    sparsity = t.tfmot.sparsity.keras
    settings.check_reachable(len(train_inputs))
    t.keras.utils.set_random_seed(settings.seed)
    schedule = sparsity.PolynomialDecay(
        initial_sparsity=settings.initial_sparsity, final_sparsity=settings.final_sparsity,
        begin_step=settings.begin_step, end_step=settings.end_step, frequency=settings.frequency,
    )
    copy = t.keras.models.clone_model(model)  # prune_low_magnitude wraps, and so prunes, the given layers
    copy.set_weights(model.get_weights())
    pruned = sparsity.prune_low_magnitude(copy, pruning_schedule=schedule)
    softmax = getattr(model.layers[-1], "activation", None) is t.keras.activations.softmax
    pruned.compile(optimizer=t.keras.optimizers.Adam(settings.learning_rate),
                   loss=t.keras.losses.SparseCategoricalCrossentropy(from_logits=not softmax))
    pruned.fit(train_inputs, train_labels, epochs=settings.epochs, batch_size=settings.batch_size, verbose=0,
               callbacks=[sparsity.UpdatePruningStep()])
    stripped = sparsity.strip_pruning(pruned)
    return stripped, weight_sparsity(stripped)


def keras_to_onnx(model, path: Path, input_name: str, check_inputs: np.ndarray, tolerance: float = 1e-4) -> float:
    """Export with tf2onnx, batch axis dynamic; return the max abs difference to Keras on `check_inputs`."""
    import onnxruntime as ort

    t = import_tf()
    if len(model.inputs) != 1:
        raise ValueError(f"keras model: expected one input, got {len(model.inputs)}")
    spec = (t.tf.TensorSpec((None, *model.input_shape[1:]), t.tf.float32, name=input_name),)
    t.tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET, output_path=str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_outputs = session.run(None, {input_name: check_inputs})[0]
    difference = float(np.max(np.abs(model(check_inputs, training=False).numpy() - onnx_outputs)))
    if not difference <= tolerance:
        raise ParityError(f"ONNX export differs from Keras: max abs diff {difference:.3g}, "
                          f"expected at most {tolerance:.3g}")
    return difference


def keras_source(
    model, data, name: str, pruning: PruningSettings | None = None,
    train_data: tuple[np.ndarray, np.ndarray] | None = None, version: str = "1", work_dir: Path | None = None,
) -> ModelSource:
    """A ModelSource from a tf_keras model (or a .keras/.h5 file), pruned first if `pruning` is given.

    `data` is labelled validation data: (inputs, labels), or a reference that
    optimize.data loads (.npz, 'package.module:function'). Pruning fine-tunes
    on `train_data`. The ONNX file goes to `work_dir` (default: a new temporary
    directory) and the pipeline takes it from there.
    """
    t = import_tf()
    if isinstance(model, (str, Path)):
        model = t.keras.models.load_model(str(model), compile=False)
    inputs, labels = _validation(data, model)
    work_dir = Path(work_dir or tempfile.mkdtemp(prefix="optiserve-keras-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    steps = []
    if pruning is not None:
        if train_data is None:
            raise ValueError("pruning: expected train_data (inputs, labels) to fine-tune on while pruning")
        model, prune_step = _prune_and_record(model, train_data, pruning, inputs, work_dir)
        steps.append(prune_step)
    onnx_file = work_dir / f"{name}.onnx"
    difference = keras_to_onnx(model, onnx_file, INPUT_NAME, inputs)
    steps.append(Step(name="export_keras_onnx", settings={
        "exporter": "tf2onnx.convert.from_keras", "opset": OPSET, "dynamic_axes": "batch (axis 0)",
        "parity_max_abs_diff": difference, **{package: _version(package) for package in TF_PACKAGES},
    }))
    import onnxruntime as ort

    output_name = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"]).get_outputs()[0].name
    return ModelSource(name, version, None, inputs[:1], inputs, labels, input_name=INPUT_NAME, output_name=output_name,
                       onnx_file=onnx_file, prior_steps=tuple(steps), keras_model=model)


def _validation(data, model) -> tuple[np.ndarray, np.ndarray]:
    from optimize.data import check_fits, clean, load_arrays

    inputs, labels = load_arrays(data) if isinstance(data, str) else (np.asarray(data[0]), np.asarray(data[1]))
    if labels is None:
        raise ValueError(f"data {data!r}: expected labels too, to measure top-1 accuracy")
    cleaned = clean(inputs, labels)
    print(f"validation data: {cleaned.describe()}")
    shape = tuple(-1 if d is None else d for d in model.input_shape)
    check_fits(cleaned.inputs, INPUT_NAME, shape, np.dtype(np.float32))
    return cleaned.inputs, cleaned.labels


def _prune_and_record(model, train_data, settings: PruningSettings, check_inputs, work_dir: Path):
    """Prune `model`; return it and a Step with the schedule, the measured sparsity and the compressed sizes."""
    before, after = work_dir / "before_pruning.onnx", work_dir / "after_pruning.onnx"
    keras_to_onnx(model, before, INPUT_NAME, check_inputs)
    pruned, measured = prune_keras(model, *train_data, settings)
    keras_to_onnx(pruned, after, INPUT_NAME, check_inputs)
    return pruned, Step(name="prune_magnitude_keras", settings={
        "method": "tfmot prune_low_magnitude, unstructured; fine-tuned with UpdatePruningStep, then strip_pruning",
        "schedule": "PolynomialDecay", **asdict(settings), "measured_sparsity": measured,
        "compressed_bytes_before_pruning": _gzip_size(before), "compressed_bytes_after_pruning": _gzip_size(after),
        "compressed_bytes_note": NO_SPEEDUP, "speedup": "none: dense runtimes compute the zeros",
    })


def _gzip_size(path: Path) -> int:
    return len(gzip.compress(path.read_bytes(), compresslevel=9, mtime=0))


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"
