"""`optiserve optimize`: build an artifact from a trained model."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from optimize.settings import CANDIDATES

# OptimizeSettings fields with a flag of their own (the flag is the field's name with dashes); the rest are
# OPTISERVE_OPTIMIZE_* environment variables only.
SETTINGS_FLAGS = {name: f"--{name.replace('_', '-')}" for name in (
    "auto", "candidates", "accept_batch_deviation", "calibration_method", "latency_repeats", "target", "gpu_runtime",
)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", nargs="?", default="optimize.demos.digits:trained_digits_classifier",
        help="'package.module:function' returning a ModelSource, EmbeddingSource or TextClassifierSource "
             "(default: the digits demo; optimize.demos.minilm:minilm_source for all-MiniLM-L6-v2), "
             "or a model file: .onnx or TorchScript .pt, with --data, or a Hugging Face model directory "
             "(save_pretrained: config.json, weights, tokenizer.json) with --data sentences.jsonl",
    )
    parser.add_argument("--data", help="labelled validation data for a model file: .npz (inputs/x or one array per "
                                       "model input, labels/y) or 'package.module:function' returning (inputs, "
                                       "labels); for a Hugging Face directory, .jsonl lines {\"text\", \"label\"}")
    parser.add_argument("--name", help="model name for a model file or directory (default: the file's stem)")
    parser.add_argument("--out", type=Path, required=True, help="artifact directory to write")
    parser.add_argument("--auto", action="store_true", default=None,
                        help="build every candidate that applies, time each at batch sizes 1..serving maximum on "
                             "this machine, ship the fastest within tolerance that is faster than fp32 beyond the "
                             "measured spread (optimize/speed.py)")
    parser.add_argument("--candidates", nargs="+", default=None,
                        help=f"candidates to build besides fp32 (default int8_dynamic): {' '.join(CANDIDATES)}")
    parser.add_argument("--accept-batch-deviation", action="store_true", default=None,
                        help="let a candidate whose answers move with their batch (dynamic int8) win over "
                             "batch-invariant ones")
    parser.add_argument("--calibration-method", choices=["minmax", "entropy", "percentile"], default=None,
                        help="static int8 calibration (default minmax)")
    parser.add_argument("--target", choices=["cpu", "gpu"], default=None,
                        help="device the artifact is for (default cpu); gpu ships fp16 judged on accuracy (CPU "
                             "timings do not rank it) and, where TensorRT and a GPU are present, a TensorRT engine")
    parser.add_argument("--gpu-runtime", choices=["onnxruntime", "torch"], default=None,
                        help="with --target gpu: fp16 ONNX (default) or a torch.export program run by PyTorch "
                             "on CUDA under fp16/bf16 autocast")
    parser.add_argument("--latency-repeats", type=int, default=None,
                        help="timed runs per candidate and batch size (default: OPTISERVE_OPTIMIZE_LATENCY_REPEATS)")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error in the source or its data, not just its one line")


# What a mistake in the source, its data or the settings raises while they are loaded and checked: told in one
# line (exit code 2), the traceback only with --debug. Errors later, in the pipeline itself, are bugs: traceback.
USER_ERRORS = (ValueError, TypeError, ImportError, AttributeError, OSError)


def main(args: argparse.Namespace) -> int:
    from optimize.pipeline import optimize_model

    try:
        settings, source = _settings_and_source(args)
    except USER_ERRORS as error:
        if args.debug:
            raise
        print(f"optiserve optimize: {_one_line(error, args.source)} (--debug shows the traceback)", file=sys.stderr)
        return 2
    optimize_model(source, args.out, settings)
    return 0


def _settings_and_source(args: argparse.Namespace):
    from optimize.dispatch import is_model_file, load_source
    from optimize.settings import OptimizeSettings

    settings = OptimizeSettings(**{name: getattr(args, name) for name in SETTINGS_FLAGS
                                   if getattr(args, name) is not None})
    if "" not in sys.path and os.getcwd() not in sys.path:  # `my_model:source` resolves from where you are
        sys.path.insert(0, os.getcwd())
    if is_model_file(args.source) and not args.data:
        raise ValueError(f"{args.source} is a model file; expected --data with labelled validation data too")
    return settings, load_source(args.source, args.data, args.name)


def _one_line(error: Exception, source: str) -> str:
    if isinstance(error, ModuleNotFoundError):
        return (f"cannot import {error.name!r} for {source!r}: expected a module in the current directory or on "
                "PYTHONPATH")
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        return "; ".join(f"{'.'.join(map(str, problem['loc'])) or 'settings'}: {problem['msg']}, got "
                         f"{problem['input']!r}" for problem in error.errors())
    text = " ".join(str(error).split())
    return text if isinstance(error, ValueError) else f"{type(error).__name__}: {text}"
