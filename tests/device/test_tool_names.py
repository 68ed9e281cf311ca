"""Which device tools a model sees, under which names, with which descriptions."""

import re

from custom_components.xiaozhi.device.tool_names import (
    MAX_DESCRIPTION_CHARS,
    MAX_NAME_CHARS,
    exposed_names,
    exposed_tools,
    is_offered,
    split_description,
)
from custom_components.xiaozhi.protocol.mcp import McpTool, parse_tool
from simulator.board import OttoBoard

# OpenAI's and Qwen's rule for function names.
VALID_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def otto_tools() -> list[McpTool]:
    import json

    tools = [parse_tool(json.loads(tool.to_json())) for tool in OttoBoard().tools()]
    return [tool for tool in tools if tool is not None]


def test_the_otto_robot_is_offered_its_tools_but_not_the_dangerous_ones() -> None:
    exposed = {tool.tool.name: tool for tool in exposed_tools(otto_tools())}

    assert exposed["self.otto.action"].name == "self_otto_action"
    assert exposed["self.audio_speaker.set_volume"].name == (
        "self_audio_speaker_set_volume"
    )
    # Off its Wi-Fi, and the user-only reboot, are never offered.
    assert "self.system.reconfigure_wifi" not in exposed
    assert "self.reboot" not in exposed
    assert len(exposed) == 12
    for tool in exposed.values():
        assert VALID_NAME.match(tool.name)
        assert len(tool.name) + len("xiaozhi-device__") <= 64
        assert len(tool.description) <= MAX_DESCRIPTION_CHARS


def test_tool_names_in_descriptions_become_the_names_offered() -> None:
    exposed = {tool.tool.name: tool for tool in exposed_tools(otto_tools())}

    volume = exposed["self.audio_speaker.set_volume"].description
    assert "call self_get_device_status first" in volume
    assert "self.get_device_status" not in volume
    # Tool names run into punctuation and back quotes too.
    [tool] = exposed_tools(
        [
            McpTool("self.a", "Try `self.a` or self.a.b, then self.a."),
            McpTool("self.a.b", ""),
        ]
    )[:1]
    assert tool.description == "Try `self_a` or self_a_b, then self_a."


def test_a_long_description_keeps_its_tail_for_the_prompt() -> None:
    exposed = {tool.tool.name: tool for tool in exposed_tools(otto_tools())}

    sequences = exposed["self.otto.servo_sequences"]
    assert sequences.overflow
    assert len(sequences.description) <= MAX_DESCRIPTION_CHARS
    # Cut after a sentence or clause, nothing lost.
    assert sequences.description.endswith((".", ";"))
    [original] = [
        tool.description
        for tool in otto_tools()
        if tool.name == "self.otto.servo_sequences"
    ]
    rewritten = original.replace("self.otto.action", "self_otto_action")
    assert f"{sequences.description} {sequences.overflow}" == rewritten
    assert exposed["self.otto.action"].overflow == ""


def test_a_description_without_a_sentence_end_is_cut_at_the_limit() -> None:
    head, tail = split_description("x" * 1500)

    assert (len(head), len(tail)) == (1024, 476)
    assert split_description("short") == ("short", "")


def test_names_are_valid_unique_bounded_and_stable() -> None:
    long_name = "self." + "very_long_part." * 5 + "set"
    names = exposed_names(
        ["self.a-b", "self.a_b", "self.a.b", long_name, "1st.tool", "self.light.设置"]
    )

    assert len(set(names.values())) == len(names)
    for name in names.values():
        assert VALID_NAME.match(name)
        assert len(name) <= MAX_NAME_CHARS
    # Names that would collide all get the hash of their MCP name.
    assert names["self.a_b"].startswith("self_a_b_")
    assert names["self.a-b"] == "self_a-b"
    assert names["1st.tool"] == "t_1st_tool"
    assert names["self.light.设置"] == "self_light___"
    assert len(names[long_name]) == MAX_NAME_CHARS
    # The same tools get the same names on every connection, in any order.
    assert exposed_names(reversed(list(names))) == names


def test_a_shortened_name_meeting_a_plain_one_is_hashed_too() -> None:
    long_name = "a" * 60
    shortened = exposed_names([long_name])[long_name]
    names = exposed_names([long_name, shortened])

    assert len(set(names.values())) == 2
    assert names[long_name] == shortened
    assert names[shortened] != shortened


def test_user_only_and_hidden_tools_are_not_offered() -> None:
    assert not is_offered(McpTool("self.upgrade_firmware", user_only=True))
    assert not is_offered(McpTool("self.disp.network"))
    assert is_offered(McpTool("self.lamp.turn_on"))
    parsed = parse_tool({"name": "self.reboot", "annotations": {"audience": ["user"]}})
    assert parsed is not None
    assert parsed.user_only
    both = parse_tool(
        {"name": "self.x", "annotations": {"audience": ["user", "assistant"]}}
    )
    assert both is not None
    assert not both.user_only
    assert parse_tool({"name": "self.y", "annotations": "user"}) == McpTool("self.y")
