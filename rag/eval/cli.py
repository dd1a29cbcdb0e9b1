"""`rag eval` arguments and entry point (placeholder until the harness lands)."""

from __future__ import annotations

import argparse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset")


def run(args: argparse.Namespace) -> int:
    raise ValueError("rag eval is not available yet")
