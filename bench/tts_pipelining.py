"""Benchmark: sequential per-sentence synthesis vs. the look-ahead TTS pipeline.

A 10-sentence reply is spoken through the TTS entity's real code path
(`custom_components.xiaozhi.tts.speak`: sentence splitter, `synthesize_in_order`,
the real ``openai`` client streaming ``audio/speech``, PCM formatting), against the
local OpenAI-compatible test server, which simulates a provider: a delay before
the first audio byte of every request, then audio paced faster than real time.

Two modes, the same code with a different look-ahead:

* sequential: look-ahead 0, each sentence requested after the previous one's
  audio is complete (what a naive per-sentence loop does);
* ours: look-ahead 1, the next sentence's request runs while the current one's
  audio streams out.

For each, the time to the first audio byte and the total time until the last
byte are measured (median of ``--runs`` runs). The last line is
``tts pipelining speedup: X.XX``, defined as the sequential total time divided
by ours.

Run from the repository root: ``python bench/tts_pipelining.py``.
"""

import argparse
import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
import statistics
import sys
import time

import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from custom_components.xiaozhi.provider.speech import VoiceSettings, audio_output, speak
from fake_provider import FakeProvider

# A typical reply of a voice assistant, in the language Xiaozhi devices speak.
REPLY = (
    "好的，我已经把客厅的灯打开了。",
    "现在室内温度是二十三度，湿度百分之四十五。",
    "明天白天多云转晴，最高气温二十六度。",
    "晚上可能会有小雨，出门记得带伞。",
    "您明天早上八点有一个会议。",
    "我已经帮您设好了七点的闹钟。",
    "厨房的窗户还开着，要不要提醒您关上？",
    "洗衣机大概还有二十分钟洗完。",
    "今天的步数是六千八百步，比昨天多一些。",
    "还有什么需要我帮忙的吗？",
)
PCM_BYTES_PER_SECOND = 24000 * 2  # the provider's 24 kHz mono s16le


@dataclass(frozen=True, slots=True)
class Timing:
    """When the audio of one spoken reply arrived, in seconds from the start."""

    first_byte: float
    total: float
    audio_bytes: int


async def llm_deltas(text: str, size: int = 4) -> AsyncGenerator[str]:
    """Yield the reply in small pieces, as an LLM streams it."""
    for start in range(0, len(text), size):
        yield text[start : start + size]


async def time_reply(provider: FakeProvider, lookahead: int) -> Timing:
    """Speak the reply once and time it."""
    output = audio_output({})
    settings = VoiceSettings(model="tts-1", voice="alloy")
    async with provider.client() as client:
        await warm_up(client)
        started = time.perf_counter()
        first_byte: float | None = None
        received = 0
        audio = speak(
            client, settings, llm_deltas("".join(REPLY)), output, lookahead=lookahead
        )
        async for chunk in audio:
            if first_byte is None:
                first_byte = time.perf_counter() - started
            received += len(chunk)
        total = time.perf_counter() - started
    assert first_byte is not None
    return Timing(first_byte, total, received)


async def warm_up(client: openai.AsyncOpenAI) -> None:
    """Open the connection and fill the SDK's caches outside the measurement."""
    await client.models.list()


def median_timing(timings: list[Timing]) -> Timing:
    """Return the median first byte and total of several runs."""
    return Timing(
        statistics.median(t.first_byte for t in timings),
        statistics.median(t.total for t in timings),
        timings[0].audio_bytes,
    )


async def run(args: argparse.Namespace) -> None:
    """Measure both modes and print the comparison."""
    async with FakeProvider() as provider:
        provider.speech.first_byte_delay = args.first_byte_ms / 1000
        provider.speech.bytes_per_second = PCM_BYTES_PER_SECOND * args.realtime_factor
        provider.speech.seconds_per_char = args.seconds_per_char
        provider.speech.chunk_size = PCM_BYTES_PER_SECOND // 20  # 50 ms of audio
        results: dict[int, list[Timing]] = {0: [], 1: []}
        for _ in range(args.runs):
            for lookahead, timings in results.items():
                timings.append(await time_reply(provider, lookahead))
        requests = len(provider.speech_requests) // (2 * args.runs)
    sequential, ours = median_timing(results[0]), median_timing(results[1])
    assert sequential.audio_bytes == ours.audio_bytes
    audio_seconds = sequential.audio_bytes / PCM_BYTES_PER_SECOND
    print(
        f"reply: {len(REPLY)} sentences, {len(''.join(REPLY))} characters, "
        f"{requests} TTS requests, {audio_seconds:.2f} s of audio"
    )
    print(
        f"provider: {args.first_byte_ms:.0f} ms to first byte, audio streamed at "
        f"{args.realtime_factor:.1f}x real time; median of {args.runs} runs"
    )
    print(f"{'mode':<28}{'first byte':>12}{'total':>10}")
    for name, timing in (
        ("sequential (look-ahead 0)", sequential),
        ("ours (look-ahead 1)", ours),
    ):
        print(f"{name:<28}{timing.first_byte:>10.3f} s{timing.total:>8.3f} s")
    print(f"tts pipelining speedup: {sequential.total / ours.total:.2f}")


def main() -> None:
    """Parse the options and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--first-byte-ms", type=float, default=150.0)
    parser.add_argument(
        "--realtime-factor",
        type=float,
        default=3.0,
        help="how many times faster than real time the provider streams audio",
    )
    parser.add_argument(
        "--seconds-per-char",
        type=float,
        default=0.2,
        help="audio length per character (Mandarin is about 0.2 s)",
    )
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
