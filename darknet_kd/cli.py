"""The `darknet-kd` console script.

Each subcommand lives in the module that implements it and exposes
``add_parser(subparsers)``, which registers the command and sets ``func``.
Add a new command by adding its module to COMMAND_MODULES.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import DarknetKDError

COMMAND_MODULES = [
    "darknet_kd.model.info",
    "darknet_kd.eval.evaluate",
    "darknet_kd.data.check",
    "darknet_kd.data.convert",
    "darknet_kd.data.drivesim.cli",
    "darknet_kd.train.trainer",
    "darknet_kd.detect",
    "darknet_kd.train.distill",
    "darknet_kd.train.pseudo",
    "darknet_kd.pipeline",
    "darknet_kd.train.adapt",
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="darknet-kd", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return p


def dispatch(prog: str, parser: argparse.ArgumentParser, argv=None) -> int:
    """Parse and run a subcommand; bad input (DarknetKDError) becomes one line on stderr, exit 2.
    Shared by the `darknet-kd` and `domain-transfer` console scripts."""
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DarknetKDError as e:
        print(f"{prog} {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `darknet-kd info ... | head`
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv=None) -> int:
    return dispatch("darknet-kd", build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
