"""The ``circuits`` command line."""

from __future__ import annotations

import argparse
import sys

from circuits.convert.errors import CheckpointError
from circuits.models.config import ConfigError
from circuits.models.sharding import MeshError, parse_mesh

USER_ERRORS = (CheckpointError, ConfigError, MeshError, FileNotFoundError, FileExistsError, ValueError)


def _convert(args: argparse.Namespace) -> None:
    from circuits.convert.orbax_cache import save_cache
    from circuits.loading import load

    model = load(args.source, dtype=args.dtype)
    destination = save_cache(model, args.destination, overwrite=args.force)
    print(f"wrote {destination}")


def _info(args: argparse.Namespace) -> None:
    from circuits.loading import load

    model = load(args.model, dtype=args.dtype, mesh=parse_mesh(args.mesh) if args.mesh else None)
    for key, value in model.config.to_dict().items():
        print(f"{key:>26}: {value}")
    print(f"{'dtype':>26}: {model.dtype}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="circuits", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser("convert", help="convert a checkpoint once into a fast Orbax cache")
    convert.add_argument("source", help="HF directory, safetensors index, or cache")
    convert.add_argument("destination", help="new directory for the Orbax cache")
    convert.add_argument("--dtype", default=None, help="store as this dtype (default: the checkpoint's)")
    convert.add_argument("--force", action="store_true", help="replace an existing destination")
    convert.set_defaults(run=_convert)

    info = commands.add_parser("info", help="load a checkpoint and print its configuration")
    info.add_argument("model")
    info.add_argument("--dtype", default=None)
    info.add_argument("--mesh", default=None, help="e.g. data=1,model=8")
    info.set_defaults(run=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
