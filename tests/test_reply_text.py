"""The pieces of a voice turn that need no Home Assistant: reply text, utterance audio."""

import asyncio
from typing import Any

import pytest

from custom_components.xiaozhi.voice.reply_text import ReplyFailedError, ReplyText
from custom_components.xiaozhi.voice.utterance import UtteranceAudio

TIMEOUT = 5.0


async def read_all(reply: ReplyText) -> list[str | None]:
    async with asyncio.timeout(TIMEOUT):
        return [delta async for delta in reply.deltas()]


def feed(reply: ReplyText, *deltas: dict[str, Any]) -> None:
    for delta in deltas:
        reply.add_delta(delta)


# ---------------------------------------------------------------- reply text


async def test_streamed_text_is_passed_on_with_a_pause_at_each_tool_call() -> None:
    reply = ReplyText()
    feed(
        reply,
        {"role": "assistant"},
        {"content": "好的，"},
        {"thinking_content": "the user wants light"},
        {"tool_calls": [object()]},
        {"role": "tool_result", "tool_call_id": "1", "content": "not spoken"},
        {"role": "assistant"},
        {"content": "灯开了。"},
    )
    reply.finish("灯开了。")
    assert await read_all(reply) == ["好的，", None, None, None, "灯开了。"]
    assert reply.text == "好的，灯开了。"
    assert reply.ended


async def test_a_role_delta_may_carry_content() -> None:
    reply = ReplyText()
    feed(reply, {"role": "assistant", "content": "Sorry, the service failed."})
    reply.fail("intent-failed")
    assert await read_all(reply) == ["Sorry, the service failed."]


async def test_an_answer_that_was_not_streamed_is_spoken_at_the_end() -> None:
    reply = ReplyText()
    reply.finish("Turned on the light")
    assert await read_all(reply) == ["Turned on the light"]


async def test_a_final_answer_other_than_the_streamed_one_follows_it() -> None:
    reply = ReplyText()
    feed(reply, {"role": "assistant", "content": "One moment."})
    reply.finish("Here is the answer.")
    assert await read_all(reply) == ["One moment.", None, "Here is the answer."]


async def test_an_empty_answer_says_nothing() -> None:
    reply = ReplyText()
    feed(reply, {"role": "assistant"}, {"content": ""})
    reply.finish("  ")
    assert await read_all(reply) == []
    assert reply.text == ""


async def test_failure_before_any_text_raises_for_the_apology() -> None:
    reply = ReplyText()
    feed(reply, {"role": "assistant"})
    reply.fail("intent-failed")
    reply.finish("ignored")
    with pytest.raises(ReplyFailedError, match="intent-failed"):
        await read_all(reply)


async def test_nothing_is_taken_after_the_end() -> None:
    reply = ReplyText()
    feed(reply, {"role": "assistant", "content": "Half"})
    reply.end()
    feed(reply, {"content": " more"})
    reply.finish("other")
    reply.fail("late")
    assert await read_all(reply) == ["Half"]
    assert reply.text == "Half"


async def test_deltas_arrive_while_they_are_read() -> None:
    reply = ReplyText()
    read = asyncio.create_task(read_all(reply))
    await asyncio.sleep(0)
    assert not read.done()
    feed(reply, {"role": "assistant", "content": "a"})
    reply.finish("a")
    assert await read == ["a"]


# ---------------------------------------------------------------- utterance audio


async def test_utterance_audio_streams_until_its_end() -> None:
    audio = UtteranceAudio()
    audio.put(b"\x01\x00" * 4)
    audio.put(b"")
    chunks: list[bytes] = []

    async def read() -> None:
        chunks.extend([chunk async for chunk in audio.stream()])

    reader = asyncio.create_task(read())
    await asyncio.sleep(0)
    audio.put(b"\x02\x00")
    audio.end()
    audio.end()
    audio.put(b"\x03\x00")  # after the end: dropped
    async with asyncio.timeout(TIMEOUT):
        await reader
    assert chunks == [b"\x01\x00" * 4, b"\x02\x00"]
    assert audio.ended
    assert audio.dropped_bytes == 0


async def test_utterance_audio_drops_what_the_buffer_cannot_hold() -> None:
    audio = UtteranceAudio(max_buffered_bytes=4)
    audio.put(b"abcd")
    audio.put(b"ef")
    audio.end()
    async with asyncio.timeout(TIMEOUT):
        assert [chunk async for chunk in audio.stream()] == [b"abcd"]
    assert audio.dropped_bytes == 2
