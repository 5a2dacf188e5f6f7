"""Command line of the reference miner: `python -m miner --port P [options]`."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from miner.server import MinerConfig, serve


def _non_negative(value: str) -> float:
    number = float(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return number


def _rate(value: str) -> float:
    number = float(value)
    if not 0 <= number <= 1:
        raise argparse.ArgumentTypeError(f"must be in 0..1, got {value}")
    return number


def _variant(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return number


def parse_args(argv: Sequence[str] | None = None) -> MinerConfig:
    """Parse the command line into a `MinerConfig`."""
    parser = argparse.ArgumentParser(
        prog="python -m miner", description="Reference miner: prompt image + seed -> GLB."
    )
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument(
        "--delay", type=_non_negative, default=0.0, help="seconds each generation takes"
    )
    parser.add_argument(
        "--fail-rate", type=_rate, default=0.0, help="probability (0..1) of answering HTTP 500"
    )
    parser.add_argument(
        "--startup", type=_non_negative, default=0.0, help="seconds before /health says ready"
    )
    parser.add_argument(
        "--variant", type=_variant, default=0, help="model variant (non-zero: other meshes)"
    )
    parser.add_argument("--call-log", type=Path, default=None, help="append-only JSONL call log")
    parser.add_argument(
        "--die-after",
        type=_variant,
        default=None,
        help="answer this many generations, then exit half-way through the next (a pod dying)",
    )
    args = parser.parse_args(argv)
    return MinerConfig(
        port=args.port,
        host=args.host,
        delay=args.delay,
        fail_rate=args.fail_rate,
        startup=args.startup,
        variant=args.variant,
        call_log=args.call_log,
        die_after=args.die_after,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Run the reference miner until SIGTERM/SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
