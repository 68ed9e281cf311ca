"""Serve the fake provider from the command line.

``python -m fake_provider --demo [--host 127.0.0.1] [--port 8765] [--parent-pid N]``
serves the demo (what ``scripts/develop --demo`` runs); without ``--demo`` it
serves scripted mode with its defaults (key ``sk-test``), for trying a client.
"""

import argparse
import asyncio
from collections.abc import Sequence
import logging
import os
import signal

from .demo import DEFAULT_HOST, DEFAULT_PORT
from .server import FakeProvider

LOGGER = logging.getLogger("fake_provider")


async def _exit_with_parent(parent_pid: int, stop: asyncio.Event) -> None:
    """Set ``stop`` once the process ``parent_pid`` is gone."""
    while True:
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            stop.set()
            return
        except PermissionError:
            pass  # alive, owned by someone else
        await asyncio.sleep(1)


def _announce(provider: FakeProvider) -> None:
    if provider.demo is None:
        LOGGER.info(
            "Fake provider (scripted mode) on %s, API key %s",
            provider.base_url,
            provider.api_key,
        )
        return
    LOGGER.info(
        "Xiaozhi DEMO provider on %s: canned replies, speech by %s, hears %s",
        provider.base_url,
        provider.demo.synthesizer.label,
        "its vocabulary"
        if provider.demo.listener.espeak
        else "nothing (espeak-ng is not installed)",
    )


async def run(provider: FakeProvider, parent_pid: int | None) -> None:
    """Serve until SIGINT/SIGTERM (or until ``parent_pid`` exits)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with provider:
        if provider.demo is not None:
            # Learnt before the first upload, which would otherwise wait for it.
            await provider.demo.listener.prepare()
        _announce(provider)
        watcher = (
            asyncio.create_task(_exit_with_parent(parent_pid, stop))
            if parent_pid
            else None
        )
        await stop.wait()
        if watcher is not None:
            watcher.cancel()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the fake provider from the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m fake_provider", description=__doc__.split("\n", 1)[0]
    )
    parser.add_argument("--demo", action="store_true", help="serve the demo mode")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--parent-pid", type=int, help="exit when this process exits")
    args = parser.parse_args(argv)
    logging.basicConfig(
        format="%(asctime)s fake-provider: %(message)s", level=logging.INFO
    )
    if args.demo:
        provider = FakeProvider.for_demo(host=args.host, port=args.port)
    else:
        provider = FakeProvider(host=args.host, port=args.port, history=False)
    asyncio.run(run(provider, args.parent_pid))


if __name__ == "__main__":
    main()
