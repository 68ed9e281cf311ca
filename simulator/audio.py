"""Audio in and out of the simulator: WAV files, espeak-ng, a local player.

What the device says is 16 kHz mono s16le PCM (the firmware's microphone format):
read from any PCM WAV file (resampled and downmixed with the integration's
protocol/codec.py) or synthesized by ``espeak-ng``. What it hears back is saved
as WAV and, on request, played with the first player found.
"""

import asyncio
from collections.abc import Sequence
import contextlib
from pathlib import Path
import shutil
from typing import Final

import numpy as np

from custom_components.xiaozhi.protocol.codec import (
    CodecError,
    PcmResampler,
    parse_wav,
    pcm_to_wav,
)
from custom_components.xiaozhi.protocol.firmware import UPLINK_SAMPLE_RATE

from .errors import SimulatorError

UPLINK_RATE: Final = UPLINK_SAMPLE_RATE
ESPEAK: Final = "espeak-ng"
ESPEAK_INSTALL_HINT: Final = (
    "espeak-ng is not installed: install it (Debian/Ubuntu: `sudo apt-get install"
    " espeak-ng`, macOS: `brew install espeak-ng`) or pass a recording with --wav FILE"
)
# Players tried in turn, each reading a WAV file from standard input.
PLAYERS: Final[Sequence[tuple[str, ...]]] = (
    ("paplay",),
    ("aplay", "-q"),
    ("ffplay", "-nodisp", "-autoexit", "-loglevel", "quiet", "-"),
)
# A 60 ms frame is speech when louder than this (dBFS of its RMS).
SPEECH_THRESHOLD_DBFS: Final = -45.0


def wav_to_uplink_pcm(data: bytes) -> bytes:
    """Return a PCM WAV file's audio as 16 kHz mono s16le.

    Raises:
        SimulatorError: Not a PCM WAV file, or it holds no audio.
    """
    try:
        wav = parse_wav(data)
        resampler = PcmResampler(
            wav.rate, UPLINK_RATE, channels_in=wav.channels, width_in=wav.width
        )
        pcm = resampler.resample(wav.pcm) + resampler.flush()
    except (CodecError, ValueError) as err:
        raise SimulatorError(f"cannot use this audio: {err}") from None
    if not pcm:
        raise SimulatorError("the audio is empty")
    return pcm


async def load_wav(path: Path) -> bytes:
    """Read a WAV file (any rate, channels, integer width) as 16 kHz mono PCM.

    Raises:
        SimulatorError: Unreadable or not a PCM WAV file.
    """
    try:
        data = await asyncio.to_thread(path.read_bytes)
    except OSError as err:
        raise SimulatorError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        return await asyncio.to_thread(wav_to_uplink_pcm, data)
    except SimulatorError as err:
        raise SimulatorError(f"{path}: {err}") from None


async def _communicate(
    process: asyncio.subprocess.Process, data: bytes | None = None
) -> tuple[bytes, bytes]:
    """Return the process's output; a cancelled caller takes the process along."""
    try:
        return await process.communicate(data)
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise


def espeak_voice(language: str) -> str:
    """Return the espeak-ng voice for a language tag (Mandarin for ``zh-CN``)."""
    tag = language.strip().lower().replace("_", "-")
    if tag in ("zh-hk", "zh-mo", "yue") or tag.startswith("zh-yue"):
        return "yue"
    if tag == "zh" or tag.startswith("zh-"):
        return "cmn"
    return tag or "en"


async def synthesize(text: str, language: str, *, program: str = ESPEAK) -> bytes:
    """Speak ``text`` with espeak-ng; returns the WAV file it writes.

    Raises:
        SimulatorError: espeak-ng is not installed or failed.
    """
    executable = shutil.which(program)
    if executable is None:
        raise SimulatorError(ESPEAK_INSTALL_HINT)
    process = await asyncio.create_subprocess_exec(
        executable,
        "-v",
        espeak_voice(language),
        "--stdout",
        text,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    wav, errors = await _communicate(process)
    if process.returncode != 0 or not wav:
        detail = errors.decode(errors="replace").strip() or f"exit {process.returncode}"
        raise SimulatorError(f"espeak-ng failed: {detail}")
    return wav


async def say(text: str, language: str) -> bytes:
    """Return ``text`` spoken by espeak-ng as 16 kHz mono PCM.

    Raises:
        SimulatorError: espeak-ng is missing or failed.
    """
    return await asyncio.to_thread(wav_to_uplink_pcm, await synthesize(text, language))


def speech_frames(pcm: bytes, frame_bytes: int) -> int:
    """Return how many frames of ``pcm`` it takes to include its last speech frame.

    A frame is speech when its level exceeds ``SPEECH_THRESHOLD_DBFS``; 0 when
    there is none. The end of speech the timing line counts from is the moment
    that frame is sent: silence at the end of a recording is not speech.
    """
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2")
    per_frame = frame_bytes // 2
    count = -(-len(samples) // per_frame)
    padded = np.zeros(count * per_frame, dtype=np.float64)
    padded[: len(samples)] = samples
    rms = np.sqrt(np.mean(np.square(padded.reshape(count, per_frame)), axis=1))
    threshold = 32768.0 * 10 ** (SPEECH_THRESHOLD_DBFS / 20)
    loud = np.flatnonzero(rms > threshold)
    return int(loud[-1]) + 1 if len(loud) else 0


def find_player() -> tuple[str, ...] | None:
    """Return the command of the first audio player installed, if any."""
    for command in PLAYERS:
        if executable := shutil.which(command[0]):
            return (executable, *command[1:])
    return None


async def play_wav(wav: bytes) -> str:
    """Play a WAV file with the first player found; returns the player's name.

    Raises:
        SimulatorError: No player is installed, or it failed.
    """
    command = find_player()
    if command is None:
        names = ", ".join(player[0] for player in PLAYERS)
        raise SimulatorError(f"no audio player found ({names}); listen to the WAV file")
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, errors = await _communicate(process, wav)
    name = Path(command[0]).name
    if process.returncode != 0:
        detail = errors.decode(errors="replace").strip() or f"exit {process.returncode}"
        raise SimulatorError(f"{name} could not play the audio: {detail}")
    return name


async def write_wav(path: Path, pcm: bytes, rate: int) -> None:
    """Save mono s16le PCM as a WAV file.

    Raises:
        SimulatorError: The file cannot be written.
    """
    try:
        await asyncio.to_thread(path.write_bytes, pcm_to_wav(pcm, rate))
    except OSError as err:
        raise SimulatorError(f"cannot write {path}: {err.strerror or err}") from None
