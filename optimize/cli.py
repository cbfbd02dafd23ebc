"""`optiserve optimize`: build an artifact from a trained model."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", nargs="?", default="optimize.demo_digits:trained_digits_classifier",
        help="'package.module:function' returning a ModelSource (default: the digits demo)",
    )
    parser.add_argument("--out", type=Path, required=True, help="artifact directory to write")


def main(args: argparse.Namespace) -> int:
    from optimize.pipeline import optimize_model
    from optimize.settings import OptimizeSettings
    from optimize.source import load_source

    settings = OptimizeSettings()
    source = load_source(args.source)
    optimize_model(source, args.out, settings)
    return 0
