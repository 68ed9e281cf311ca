"""Hostile peers: floods across reconnects, refused handshakes, slow readers (issue 17).

Home Assistant runs in-process (bench/harness.py) with one paired device; every
peer talks to it over real sockets on 127.0.0.1:

* **flood**: the paired device sends messages as fast as it can for
  ``--seconds``, reconnecting whenever it is closed (the firmware's own rate is
  at most 50 messages a second). Reported: messages the server accepted (handed
  to the device's link), per second, and the connections made.
* **refusals**: a peer without the token opens handshakes as fast as it can for
  ``--seconds``. Reported: handshakes per second, and log lines about refusals
  per second.
* **slow reader**: the device says hello, then never reads again while a reply
  of real-time paced 60 ms, 32 kbit/s frames (240 bytes, what the downlink
  encoder makes) plays to it. Reported: the seconds from the reply's start
  until the server drops the connection (capped at ``--slow-cap``). Twice: with
  the receive buffer of an ESP32 (lwIP's default TCP window, 5,760 bytes: the
  firmware's sdkconfig keeps it) and with Linux's default (whose kernel keeps
  taking, and acknowledging, what its application does not read: no server
  can see that data waits).

``--baseline REV`` runs the same measurements against the integration of git
revision ``REV`` (extracted with ``git archive`` into a temporary directory, run
in a subprocess) and prints both side by side with their ratio.
"""

import argparse
import asyncio
import base64
from collections.abc import Callable
import json
import logging
import os
from pathlib import Path
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, cast

BENCH = Path(__file__).resolve()
REPO = Path(os.environ.get("HOSTILE_BENCH_REPO", BENCH.parents[1]))
sys.path.insert(0, str(REPO))

from harness import PairedDevice, free_port, home_assistant  # noqa: E402

ESP32_RCVBUF = 5760
FRAME_BYTES = 240
FRAME_S = 0.06


class Counter(logging.Handler):
    """Counts the integration's log records whose message contains ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.count += 1


async def flood(
    url: str, headers: dict[str, str], seconds: float, links: list[Any]
) -> dict[str, float]:
    import aiohttp

    connections = 0
    first = len(links)
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                ws = await http.ws_connect(url, headers=headers)
            except aiohttp.ClientError:
                continue  # refused before the upgrade
            connections += 1
            closed = asyncio.Event()

            async def read(ws: Any = ws, closed: asyncio.Event = closed) -> None:
                async for _ in ws:
                    pass
                closed.set()

            reader = asyncio.create_task(read())
            # A binary frame before the hello: the link counts it as bad input.
            while not closed.is_set() and time.monotonic() < deadline:
                try:
                    await ws.send_bytes(b"\0" * 20)
                except ConnectionError:
                    break
                await asyncio.sleep(0)
            await ws.close()
            await reader
    for link in links[first:]:
        await link.async_wait_closed()
    accepted = sum(
        link.bad_input.get("audio before hello", 0) for link in links[first:]
    )
    return {"accepted_per_s": accepted / seconds, "connections": connections}


async def refusals(
    url: str, headers: dict[str, str], seconds: float, lines: Counter
) -> dict[str, float]:
    import aiohttp

    before = lines.count
    handshakes = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            handshakes += 1
            try:
                ws = await http.ws_connect(url, headers=headers)
            except aiohttp.ClientError:
                continue
            async for _ in ws:
                pass
    return {
        "handshakes_per_s": handshakes / seconds,
        "log_lines_per_s": (lines.count - before) / seconds,
    }


def _ws_frame(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


async def slow_reader(
    hass: Any, port: int, headers: dict[str, str], rcvbuf: int | None, cap: float
) -> float:
    """Return the seconds until a device that stopped reading is dropped."""
    from custom_components.xiaozhi.const import DOMAIN, WEBSOCKET_PATH
    from custom_components.xiaozhi.transport.base import EndReason
    from tests.helpers.devices import MAC

    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    writer.write(
        f"GET {WEBSOCKET_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{lines}\r\n".encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    writer.write(_ws_frame('{"type":"hello","version":1,"transport":"websocket"}'))
    await writer.drain()
    head = await reader.readexactly(2)
    await reader.readexactly(head[1] & 0x7F)  # the server's hello
    cast(
        asyncio.Transport, writer.transport
    ).pause_reading()  # then never read (asyncio would buffer 128 KiB)
    [entry] = [
        e for e in hass.config_entries.async_entries(DOMAIN) if e.unique_id == MAC
    ]
    runtime = entry.runtime_data
    changed = asyncio.Event()
    unsubscribe = runtime.async_add_listener(changed.set)
    while runtime.session is None:
        changed.clear()
        await changed.wait()
    unsubscribe()
    session = runtime.session
    link = session.link
    frames = [os.urandom(FRAME_BYTES) for _ in range(int(cap / FRAME_S) + 100)]
    started = time.monotonic()
    play = asyncio.create_task(session.playback.play_opus(frames))
    try:
        async with asyncio.timeout(cap):
            await link.async_wait_closed()
        dropped = time.monotonic() - started
    except TimeoutError:
        dropped = float("inf")
        link.end(EndReason.NORMAL, "bench over")
        await link.async_wait_closed()
    play.cancel()
    await asyncio.gather(play, return_exceptions=True)
    writer.close()
    return dropped


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from custom_components.xiaozhi.const import WEBSOCKET_PATH
    from custom_components.xiaozhi.server.registry import (
        XiaozhiServer,
        async_get_server,
    )
    from fake_provider import FakeProvider
    from tests.helpers.devices import MAC, TOKEN

    port = free_port()
    links: list[Any] = []
    register = XiaozhiServer.async_register_link

    def recording(self: XiaozhiServer, link: Any) -> None:
        links.append(link)
        register(self, link)

    XiaozhiServer.async_register_link = recording  # type: ignore[method-assign]
    lines = Counter("Refused device connection")
    logging.getLogger("custom_components.xiaozhi").addHandler(lines)
    logging.getLogger("custom_components.xiaozhi").setLevel(logging.INFO)
    url = f"http://127.0.0.1:{port}{WEBSOCKET_PATH}"
    good = {
        "Authorization": f"Bearer {TOKEN}",
        "Device-Id": MAC,
        "Protocol-Version": "1",
    }
    bad = {**good, "Authorization": "Bearer wrong"}
    results: dict[str, Any] = {}
    async with (
        FakeProvider() as provider,
        home_assistant(
            _endpoint(provider), port, [PairedDevice(MAC, TOKEN, "Kitchen speaker")]
        ) as hass,
    ):
        _ = async_get_server(hass)
        results["flood"] = await flood(url, good, args.seconds, links)
        results["refusals"] = await refusals(url, bad, args.seconds, lines)
        # Let the device's limits refill before it is measured as a reader.
        await asyncio.sleep(3)
        results["slow_esp32"] = await slow_reader(
            hass, port, good, ESP32_RCVBUF, args.slow_cap
        )
        await asyncio.sleep(3)
        results["slow_linux"] = await slow_reader(hass, port, good, None, args.slow_cap)
    return results


def _endpoint(provider: Any) -> Any:
    from harness import ProviderEndpoint

    return ProviderEndpoint(provider.base_url, provider.api_key, provider.models)


def _baseline(rev: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tree:
        archive = subprocess.run(
            ["git", "-C", str(BENCH.parents[1]), "archive", rev],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
        out = subprocess.run(
            [
                sys.executable,
                str(BENCH),
                "--json",
                "--seconds",
                str(args.seconds),
                "--slow-cap",
                str(args.slow_cap),
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "HOSTILE_BENCH_REPO": tree, "PYTHONPATH": tree},
            cwd=tree,
        ).stdout
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


ROWS: list[tuple[str, Callable[[dict[str, Any]], float], str]] = [
    (
        "flood: messages/s accepted from one device",
        lambda r: r["flood"]["accepted_per_s"],
        "/s",
    ),
    ("flood: connections made", lambda r: r["flood"]["connections"], ""),
    (
        "refusals: handshakes/s answered",
        lambda r: r["refusals"]["handshakes_per_s"],
        "/s",
    ),
    ("refusals: log lines/s", lambda r: r["refusals"]["log_lines_per_s"], "/s"),
    ("slow reader (ESP32 window): s to drop", lambda r: r["slow_esp32"], " s"),
    ("slow reader (Linux window): s to drop", lambda r: r["slow_linux"], " s"),
]


def _shown(value: float, unit: str, cap: float) -> str:
    """Format a value; a slow reader never dropped shows as over the cap."""
    if value == float("inf"):
        return f"> {cap:g}{unit}".rjust(12)
    return f"{value:10.1f}{unit}"


def main() -> None:
    """Measure, and compare with ``--baseline`` when given."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per flood")
    parser.add_argument(
        "--slow-cap", type=float, default=120.0, help="longest slow-reader wait"
    )
    parser.add_argument("--baseline", help="git revision to compare with")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    results = asyncio.run(measure(args))
    if args.json:
        print(json.dumps(results))
        return
    before = _baseline(args.baseline, args) if args.baseline else None
    cap = args.slow_cap
    for label, value, unit in ROWS:
        now = value(results)
        if before is None:
            print(f"{label:45} {_shown(now, unit, cap)}")
            continue
        then = value(before)
        finite = now not in (0, float("inf")) and then != float("inf")
        ratio = f"  (before/after {then / now:.1f}x)" if finite else ""
        print(
            f"{label:45} before {_shown(then, unit, cap)}"
            f"  after {_shown(now, unit, cap)}{ratio}"
        )


if __name__ == "__main__":
    main()
