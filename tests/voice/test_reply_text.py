"""The answer's text, taken from the Assist pipeline's events."""

import asyncio
from typing import Any

import pytest

from custom_components.xiaozhi.voice.reply_text import ReplyFailedError, ReplyText

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
