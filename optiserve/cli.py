"""The `optiserve` command: one entry point, a subcommand per stage."""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    from optimize import cli as optimize_cli
    from serve import cli as serve_cli

    parser = argparse.ArgumentParser(prog="optiserve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    optimize = commands.add_parser("optimize", help="turn a trained model into an artifact")
    optimize_cli.add_arguments(optimize)
    optimize.set_defaults(run=optimize_cli.main)
    serve = commands.add_parser("serve", help="serve artifacts over HTTP (KServe V2) with Ray Serve")
    serve_cli.add_arguments(serve)
    serve.set_defaults(run=serve_cli.main)
    ray_env = commands.add_parser(
        "ray-env", help="print the environment a Ray node needs for optiserve (eval before `ray start`)"
    )
    ray_env.set_defaults(run=_print_ray_env)
    for reference in ("settings", "metrics"):
        command = commands.add_parser(reference, help=f"print the {reference} reference (docs/reference/{reference}.md)")
        command.add_argument("--markdown", action="store_true", required=True,
                             help="as Markdown (the committed docs/reference file)")
        command.set_defaults(run=_print_reference, reference=reference)
    demo = commands.add_parser("demo", help="optimize the digits demo model, serve it, query it")
    demo.set_defaults(run=lambda _args: __import__("optiserve.demo", fromlist=["main"]).main())
    return parser


def _print_ray_env(_args: argparse.Namespace) -> int:
    import shlex

    from serve.on_ray.runner import ray_serve_environment
    from serve.settings import ServeSettings

    for name, value in ray_serve_environment(ServeSettings()).items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


def _print_reference(args: argparse.Namespace) -> int:
    from optiserve import reference

    print(reference.settings_markdown() if args.reference == "settings" else reference.metrics_markdown(), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
