"""`optiserve optimize`: build an artifact from a trained model."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", nargs="?", default="optimize.demo_digits:trained_digits_classifier",
        help="'package.module:function' returning a ModelSource or an EmbeddingSource "
             "(default: the digits demo; optimize.demo_minilm:minilm_source for all-MiniLM-L6-v2)",
    )
    parser.add_argument("--out", type=Path, required=True, help="artifact directory to write")
    parser.add_argument("--latency-repeats", type=int, default=None,
                        help="timed runs per candidate and batch size (default: OPTISERVE_OPTIMIZE_LATENCY_REPEATS)")


def main(args: argparse.Namespace) -> int:
    from optimize.embedding import EmbeddingSource, optimize_embedding_model
    from optimize.pipeline import optimize_model
    from optimize.settings import OptimizeSettings
    from optimize.source import load_source

    overrides = {"latency_repeats": args.latency_repeats} if args.latency_repeats else {}
    settings = OptimizeSettings(**overrides)
    source = load_source(args.source)
    if isinstance(source, EmbeddingSource):
        optimize_embedding_model(source, args.out, settings)
    else:
        optimize_model(source, args.out, settings)
    return 0
