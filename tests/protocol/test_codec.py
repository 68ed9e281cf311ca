"""Tests of the Opus / PCM / WAV codec layer."""

import io
import struct
import wave

import av
from hypothesis import HealthCheck, given, settings, strategies as st
import numpy as np
import pytest

from custom_components.xiaozhi.protocol.codec import (
    MAX_OPUS_PACKET_BYTES,
    CodecError,
    OpusDecoder,
    OpusEncoder,
    PcmResampler,
    WavIncompleteError,
    WavInfo,
    parse_wav,
    pcm_to_wav,
    wav_header,
)

fuzz = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# Frame sizes in ms of the 32 Opus configurations (RFC 6716, table 2).
_CONFIG_FRAME_MS = (
    [10, 20, 40, 60] * 3 + [10, 20] * 2 + [2.5, 5, 10, 20] * 4  # SILK, hybrid, CELT
)


def opus_packet_info(packet: bytes) -> tuple[float, bool]:
    """Return (duration in ms, stereo) from an Opus TOC, independent of PyAV."""
    toc = packet[0]
    frame_ms = _CONFIG_FRAME_MS[toc >> 3]
    code = toc & 0x03
    frames = {0: 1, 1: 2, 2: 2}.get(code) or packet[1] & 0x3F
    return frame_ms * frames, bool(toc & 0x04)


def tone(freq: float, rate: int, seconds: float, amplitude: int = 8000) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * amplitude).astype("<i2").tobytes()


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def dominant_hz(pcm: bytes, rate: int) -> float:
    """Dominant frequency of the middle half of the signal (skips codec edges)."""
    x = samples(pcm)
    x = x[len(x) // 4 : -len(x) // 4]
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def rms(pcm: bytes) -> float:
    x = samples(pcm)
    x = x[len(x) // 4 : -len(x) // 4]
    return float(np.sqrt(np.mean(x**2)))


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def encode_all(encoder: OpusEncoder, pcm: bytes, chunk: int = 1001) -> list[bytes]:
    packets: list[bytes] = []
    for part in chunked(pcm, chunk):
        packets.extend(encoder.encode(part))
    return packets + encoder.flush()


def decode_all(decoder: OpusDecoder, packets: list[bytes]) -> bytes:
    return b"".join(decoder.decode(p) for p in packets) + decoder.flush()


# ---------------------------------------------------------------- encoder


def test_downlink_packets_are_60ms_mono_and_carry_the_tone() -> None:
    pcm = tone(440, 24000, 1.0)
    encoder = OpusEncoder()
    assert (encoder.sample_rate, encoder.frame_ms, encoder.frame_samples) == (
        24000,
        60,
        1440,
    )
    packets = encode_all(encoder, pcm)
    # 24000 samples = 16 whole frames + 960 padded, then the lookahead packet.
    assert len(packets) == 18
    for packet in packets:
        assert opus_packet_info(packet) == (60, False)

    # The firmware decodes at 24 kHz mono: so does this check.
    out = decode_all(OpusDecoder(24000), packets)
    assert len(out) == 18 * 1440 * 2
    assert dominant_hz(out, 24000) == pytest.approx(440, abs=5)
    assert rms(out) == pytest.approx(rms(pcm), rel=0.2)


def test_packets_come_out_as_soon_as_a_frame_is_complete() -> None:
    encoder = OpusEncoder()
    pcm = tone(440, 24000, 0.12)  # two frames
    assert encoder.encode(pcm[:2879]) == []
    assert len(encoder.encode(pcm[2879:2880])) == 1
    assert len(encoder.encode(pcm[2880:])) == 1


def test_chunking_does_not_change_the_packets() -> None:
    pcm = tone(300, 24000, 0.5)
    whole = encode_all(OpusEncoder(), pcm, chunk=len(pcm))
    odd = encode_all(OpusEncoder(), pcm, chunk=333)  # splits samples in half
    assert whole == odd


def test_flush_without_audio_returns_nothing() -> None:
    assert OpusEncoder().flush() == []


def test_flush_pads_a_partial_frame_and_encoder_is_reusable() -> None:
    encoder = OpusEncoder()
    assert encoder.encode(tone(440, 24000, 0.01)) == []
    tail = encoder.flush()
    assert len(tail) == 2  # padded frame + lookahead
    assert all(opus_packet_info(p) == (60, False) for p in tail)

    again = encode_all(encoder, tone(440, 24000, 0.5))
    out = decode_all(OpusDecoder(24000), again)
    assert dominant_hz(out, 24000) == pytest.approx(440, abs=5)


def test_flush_drops_a_trailing_odd_byte() -> None:
    encoder = OpusEncoder()
    assert encoder.encode(tone(440, 24000, 0.06) + b"\x01") != []
    assert len(encoder.flush()) == 1  # only the lookahead: the odd byte is no sample


def test_reset_drops_buffered_audio() -> None:
    encoder = OpusEncoder()
    encoder.encode(tone(440, 24000, 0.05))
    encoder.reset()
    assert encoder.flush() == []


@pytest.mark.parametrize("input_rate", [8000, 16000, 22050, 24000, 44100, 48000])
def test_encoder_resamples_other_input_rates(input_rate: int) -> None:
    packets = encode_all(OpusEncoder(input_rate=input_rate), tone(440, input_rate, 1))
    assert all(opus_packet_info(p) == (60, False) for p in packets)
    assert len(packets) in {17, 18}  # 1 s of audio, padding, lookahead
    out = decode_all(OpusDecoder(24000), packets)
    assert dominant_hz(out, 24000) == pytest.approx(440, abs=5)


def test_encoder_reset_also_resets_its_resampler() -> None:
    encoder = OpusEncoder(input_rate=16000)
    encoder.encode(tone(440, 16000, 0.05))
    encoder.reset()
    assert encoder.flush() == []


@pytest.mark.parametrize("frame_ms", [10, 20, 40, 60, 120])
def test_encoder_frame_durations(frame_ms: int) -> None:
    packets = encode_all(OpusEncoder(16000, frame_ms), tone(440, 16000, 0.5))
    assert {opus_packet_info(p) for p in packets} == {(frame_ms, False)}


def test_bitrate_option_takes_effect() -> None:
    pcm = tone(440, 24000, 1) + bytes(np.random.default_rng(1).bytes(48000))
    low = encode_all(OpusEncoder(bitrate=12000), pcm)
    high = encode_all(OpusEncoder(bitrate=64000), pcm)
    assert sum(map(len, low)) < sum(map(len, high)) / 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sample_rate": 22050}, "cannot encode at 22050"),
        ({"frame_ms": 30}, "frame duration 30"),
        ({"bitrate": 0}, "bit rate must be positive"),
        ({"input_rate": 0}, "sample rates must be positive"),
    ],
)
def test_encoder_rejects_bad_parameters(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OpusEncoder(**kwargs)


# ---------------------------------------------------------------- decoder


@pytest.mark.parametrize("frame_ms", [20, 40, 60])
def test_decode_uplink_frames_to_16k(frame_ms: int) -> None:
    """What devices and other clients send: 16 kHz mono, 20/40/60 ms packets."""
    packets = encode_all(OpusEncoder(16000, frame_ms), tone(440, 16000, 1))
    decoder = OpusDecoder()
    assert decoder.sample_rate_out == 16000
    pieces = [decoder.decode(p) for p in packets]
    frame_bytes = 16 * frame_ms * 2
    # Past the resampler's start-up delay every packet yields exactly its duration.
    assert {len(p) for p in pieces[1:]} == {frame_bytes}
    assert len(pieces[0]) <= frame_bytes
    out = b"".join(pieces) + decoder.flush()
    assert len(out) == len(packets) * frame_bytes
    assert dominant_hz(out, 16000) == pytest.approx(440, abs=5)
    assert rms(out) == pytest.approx(rms(tone(440, 16000, 1)), rel=0.2)


def test_decode_at_48k_passes_through() -> None:
    packets = encode_all(OpusEncoder(16000), tone(1000, 16000, 0.5))
    decoder = OpusDecoder(48000)
    out = b"".join(decoder.decode(p) for p in packets)
    assert len(out) == len(packets) * 2880 * 2
    assert decoder.flush() == b""
    assert dominant_hz(out, 48000) == pytest.approx(1000, abs=10)


def test_decode_stereo_packet_to_mono() -> None:
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = 48000
    codec.layout = "stereo"
    codec.format = "s16"
    frame = av.AudioFrame.from_ndarray(
        np.repeat(samples(tone(440, 48000, 0.02)).astype("<i2"), 2).reshape(1, -1),
        format="s16",
        layout="stereo",
    )
    frame.sample_rate = 48000
    frame.pts = 0
    packets = [bytes(p) for p in codec.encode(frame)] + [
        bytes(p) for p in codec.encode(None)
    ]
    assert opus_packet_info(packets[0])[1]  # really stereo
    decoder = OpusDecoder()
    out = b"".join(decoder.decode(p) for p in packets) + decoder.flush()
    assert len(out) == len(packets) * 320 * 2  # 20 ms each, one channel


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (b"", "empty Opus packet"),
        (b"\xff", "invalid Opus packet"),
        (b"\xff\xff", "invalid Opus packet"),
        (bytes(MAX_OPUS_PACKET_BYTES + 1), "too large"),
    ],
)
def test_decode_garbage_raises_and_decoder_recovers(
    packet: bytes, message: str
) -> None:
    good = encode_all(OpusEncoder(16000), tone(440, 16000, 0.6))
    decoder = OpusDecoder()
    first = decoder.decode(good[0])
    with pytest.raises(CodecError, match=message):
        decoder.decode(packet)
    rest = b"".join(decoder.decode(p) for p in good[1:]) + decoder.flush()
    assert dominant_hz(first + rest, 16000) == pytest.approx(440, abs=5)


@fuzz
@given(packet=st.binary(min_size=1, max_size=400))
def test_decode_random_bytes_never_crashes(packet: bytes) -> None:
    decoder = OpusDecoder()
    try:
        out = decoder.decode(packet)
    except CodecError:
        return
    assert len(out) % 2 == 0
    assert len(out) <= 16 * 120 * 2


def test_decoder_reset_drops_the_tail() -> None:
    packets = encode_all(OpusEncoder(16000), tone(440, 16000, 0.3))
    decoder = OpusDecoder()
    for packet in packets:
        decoder.decode(packet)
    decoder.reset()
    assert decoder.flush() == b""


def test_decoder_rejects_bad_rate() -> None:
    with pytest.raises(ValueError, match="sample rate must be positive"):
        OpusDecoder(0)


# ---------------------------------------------------------------- resampler


@pytest.mark.parametrize(
    ("rate_in", "rate_out"),
    [
        (48000, 16000),
        (16000, 24000),
        (22050, 24000),
        (44100, 24000),
        (24000, 16000),
        (8000, 48000),
    ],
)
def test_resampler_lengths_and_tone(rate_in: int, rate_out: int) -> None:
    pcm = tone(440, rate_in, 1)
    resampler = PcmResampler(rate_in, rate_out)
    out = b"".join(resampler.resample(c) for c in chunked(pcm, 777))
    out += resampler.flush()
    assert abs(len(out) // 2 - rate_out) <= 2
    assert len(out) % 2 == 0
    assert dominant_hz(out, rate_out) == pytest.approx(440, abs=3)
    assert rms(out) == pytest.approx(rms(pcm), rel=0.05)


def test_resampler_passthrough_keeps_bytes_and_realigns_samples() -> None:
    resampler = PcmResampler(24000, 24000)
    assert resampler.resample(b"\x01\x02\x03") == b"\x01\x02"
    assert resampler.resample(b"\x04") == b"\x03\x04"
    assert resampler.resample(b"") == b""
    assert resampler.flush() == b""


def test_resampler_keeps_state_across_odd_chunks() -> None:
    pcm = tone(440, 22050, 0.5)
    one = PcmResampler(22050, 16000)
    whole = one.resample(pcm) + one.flush()
    many = PcmResampler(22050, 16000)
    pieces = b"".join(many.resample(c) for c in chunked(pcm, 101)) + many.flush()
    assert len(pieces) == len(whole)
    # Different chunking, same filter state: sample values agree closely.
    assert np.max(np.abs(samples(pieces) - samples(whole))) <= 2


def test_resampler_is_reusable_after_flush() -> None:
    resampler = PcmResampler(48000, 16000)
    first = resampler.resample(tone(440, 48000, 0.2)) + resampler.flush()
    second = resampler.resample(tone(440, 48000, 0.2)) + resampler.flush()
    assert first == second


def test_resampler_downmixes_stereo() -> None:
    mono = samples(tone(440, 44100, 0.5)).astype("<i2")
    stereo = np.repeat(mono, 2).tobytes()
    resampler = PcmResampler(44100, 16000, channels_in=2)
    out = resampler.resample(stereo) + resampler.flush()
    assert abs(len(out) // 2 - 8000) <= 2
    assert dominant_hz(out, 16000) == pytest.approx(440, abs=3)


@pytest.mark.parametrize(
    ("width", "dtype", "scale", "offset"),
    [(1, "u1", 1 / 256, 128), (4, "<i4", 65536, 0)],
)
def test_resampler_converts_sample_widths(
    width: int, dtype: str, scale: float, offset: int
) -> None:
    source = samples(tone(440, 16000, 0.5)) * scale + offset
    resampler = PcmResampler(16000, 16000, width_in=width)
    out = resampler.resample(source.astype(dtype).tobytes()) + resampler.flush()
    assert len(out) == 16000
    assert dominant_hz(out, 16000) == pytest.approx(440, abs=3)
    assert rms(out) == pytest.approx(rms(tone(440, 16000, 0.5)), rel=0.05)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((0, 16000), {}, "sample rates must be positive"),
        ((16000, -1), {}, "sample rates must be positive"),
        ((16000, 16000), {"channels_in": 0}, "channel count"),
        ((16000, 16000), {"width_in": 3}, "unsupported sample width 3"),
    ],
)
def test_resampler_rejects_bad_parameters(
    args: tuple[int, int], kwargs: dict[str, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        PcmResampler(*args, **kwargs)


# ---------------------------------------------------------------- WAV


def test_pcm_to_wav_reads_back_with_wave_module() -> None:
    pcm = tone(440, 16000, 0.1)
    wav = pcm_to_wav(pcm, 16000)
    with wave.open(io.BytesIO(wav)) as reader:
        assert reader.getframerate() == 16000
        assert reader.getnchannels() == 1
        assert reader.getsampwidth() == 2
        assert reader.readframes(reader.getnframes()) == pcm
    assert parse_wav(wav) == WavInfo(16000, 1, 2, pcm)


def test_wav_round_trip_stereo_and_odd_8bit() -> None:
    stereo = bytes(range(200)) * 4
    assert parse_wav(pcm_to_wav(stereo, 44100, 2)) == (44100, 2, 2, stereo)
    odd = b"\x80\x81\x82"
    wav = pcm_to_wav(odd, 8000, width=1)
    assert len(wav) == 44 + 4  # RIFF pads odd chunks
    assert struct.unpack_from("<I", wav, 4) == (36 + 4,)
    assert parse_wav(wav) == (8000, 1, 1, odd)


def test_parse_python_wave_output() -> None:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(22050)
        writer.writeframes(b"\x01\x00" * 100)
    assert parse_wav(buffer.getvalue()) == (22050, 1, 2, b"\x01\x00" * 100)


def test_streaming_header_unknown_size() -> None:
    header = wav_header(24000)
    assert len(header) == 44
    assert struct.unpack_from("<I", header, 4) == (0xFFFFFFFF,)
    assert struct.unpack_from("<I", header, 40) == (0xFFFFFFFF,)
    assert parse_wav(header) == (24000, 1, 2, b"")
    assert parse_wav(header + b"\x01\x02\x03") == (24000, 1, 2, b"\x01\x02\x03")


def test_streaming_header_zero_size_and_truncated_body() -> None:
    zero = bytearray(wav_header(16000, data_size=0))
    assert parse_wav(bytes(zero) + b"abcd").pcm == b"abcd"
    declared = wav_header(16000, data_size=1000)
    assert parse_wav(declared + b"abcd").pcm == b"abcd"


def test_parse_trailing_chunks_after_data_are_ignored() -> None:
    wav = pcm_to_wav(b"\x01\x00\x02\x00", 16000) + b"LIST\x04\x00\x00\x00abcd"
    assert parse_wav(wav).pcm == b"\x01\x00\x02\x00"


def build_wav(*chunks: tuple[bytes, bytes]) -> bytes:
    body = b"WAVE" + b"".join(
        cid + struct.pack("<I", len(data)) + data + bytes(len(data) % 2)
        for cid, data in chunks
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


def fmt(tag: int = 1, channels: int = 1, rate: int = 16000, bits: int = 16) -> bytes:
    align = channels * bits // 8
    return struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)


def test_parse_skips_unknown_and_odd_chunks() -> None:
    wav = build_wav((b"LIST", b"odd"), (b"fmt ", fmt()), (b"data", b"\x05\x00"))
    assert parse_wav(wav) == (16000, 1, 2, b"\x05\x00")


def test_parse_wave_format_extensible() -> None:
    guid_pcm = struct.pack("<H", 1) + bytes.fromhex("00000000001000800000aa00389b71")
    extensible = fmt(tag=0xFFFE, channels=2, rate=48000) + struct.pack(
        "<HHI", 22, 16, 3
    )
    wav = build_wav((b"fmt ", extensible + guid_pcm), (b"data", b"\x00" * 8))
    assert parse_wav(wav) == (48000, 2, 2, b"\x00" * 8)


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"", WavIncompleteError, "incomplete"),
        (b"RI", WavIncompleteError, "incomplete"),
        (b"RIFF\x00\x00", WavIncompleteError, "incomplete"),
        (wav_header(16000)[:20], WavIncompleteError, "incomplete"),
        (wav_header(16000)[:30], WavIncompleteError, "fmt chunk cut"),
        (wav_header(16000)[:40], WavIncompleteError, "no data chunk yet"),
        (b"ID3\x04" + bytes(40), CodecError, "not a WAV file"),
        (b"OggS" + bytes(4), CodecError, "not a WAV file"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", CodecError, "not a WAV file"),
        (build_wav((b"data", b"xx")), CodecError, "data chunk before fmt"),
        (build_wav((b"fmt ", fmt()[:14])), CodecError, "too short"),
        (
            build_wav((b"fmt ", fmt(tag=3, bits=32)), (b"data", b"")),
            CodecError,
            "format tag 0x3",
        ),
        (build_wav((b"fmt ", fmt(channels=0))), CodecError, "invalid WAV format"),
        (build_wav((b"fmt ", fmt(bits=12))), CodecError, "invalid WAV format"),
    ],
)
def test_parse_wav_rejects(data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        parse_wav(data)


def test_incomplete_is_a_codec_error() -> None:
    assert issubclass(WavIncompleteError, CodecError)
    assert issubclass(CodecError, ValueError)


@fuzz
@given(data=st.binary(max_size=120))
def test_parse_wav_garbage_only_raises_codec_error(data: bytes) -> None:
    try:
        info = parse_wav(b"RIFF" + data)
    except CodecError:
        return
    assert info.rate > 0
    assert info.channels > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0,), "invalid WAV format"),
        ((16000, 0), "invalid WAV format"),
        ((16000, 1, 0), "invalid WAV format"),
        ((16000, 1, 2, -1), "invalid WAV data size"),
        ((16000, 1, 2, 2**32), "invalid WAV data size"),
    ],
)
def test_wav_header_rejects(args: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        wav_header(*args)
