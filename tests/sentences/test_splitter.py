"""Tests for the streaming sentence splitter that feeds TTS."""

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Unpack

from hypothesis import HealthCheck, given, settings, strategies as st
import pytest

from custom_components.xiaozhi.sentences.splitter import (
    DEFAULT_FIRST_MIN_CJK,
    DEFAULT_FIRST_MIN_LATIN,
    DEFAULT_MAX_CHARS,
    Segment,
    SentenceSplitter,
    SplitterOptions,
    clean_for_speech,
    split_stream,
)

SPEAKABLE_SYMBOLS = "%‰°℃℉$€£¥"


def speakable(text: str) -> bool:
    return any(ch.isalnum() or ch in SPEAKABLE_SYMBOLS for ch in text)


def run(
    deltas: Iterable[str | None], **options: Unpack[SplitterOptions]
) -> tuple[list[Segment], tuple[str, ...]]:
    """Feed the deltas, flush, return the segments and the trailing emojis."""
    splitter = SentenceSplitter(**options)
    segments: list[Segment] = []
    for delta in deltas:
        segments += splitter.feed(delta)
    segments += splitter.flush()
    return segments, splitter.trailing_emojis


def by_char(text: str, **options: Unpack[SplitterOptions]) -> list[Segment]:
    return run(list(text), **options)[0]


def texts(segments: list[Segment]) -> list[str]:
    return [segment.text for segment in segments]


def assert_tiles(text: str, segments: list[Segment]) -> None:
    """Segments are consecutive pieces of the cleaned text, whitespace between."""
    rest = clean_for_speech(text)
    for segment in segments:
        rest = rest.lstrip()
        assert rest.startswith(segment.text), (segment.text, rest)
        rest = rest[len(segment.text) :]
    assert not speakable(rest), rest


# Real-looking replies and the exact segments expected (default options).
ZH_CASES = [
    ("好的，客厅的灯已经打开了。", ["好的，", "客厅的灯已经打开了。"]),
    (
        "好，空调已经调到26度了。还需要别的吗？",
        ["好，", "空调已经调到26度了。", "还需要别的吗？"],
    ),
    ("现在室内温度是23.5度，湿度45%。", ["现在室内温度是23.5度，", "湿度45%。"]),
    ("明天气温18~27度，适合出门。", ["明天气温18~27度，", "适合出门。"]),
    ("本月用电1,286度，比上月少12%。", ["本月用电1,286度，", "比上月少12%。"]),
    ("现在是下午3:45，你4点有个会议。", ["现在是下午3:45，", "你4点有个会议。"]),
    ("会议在12：30开始，别迟到。", ["会议在12：30开始，", "别迟到。"]),
    ("当前固件版本是v1.6.2，已是最新。", ["当前固件版本是v1.6.2，", "已是最新。"]),
    (
        "已经把客厅、卧室和书房的灯都关掉了。",
        ["已经把客厅、", "卧室和书房的灯都关掉了。"],
    ),
    ("我想想……你上次换滤网是在3月12日。", ["我想想……你上次换滤网是在3月12日。"]),
    (
        "他说：“好的。我们走吧。”然后就走了。",
        ["他说：", "“好的。", "我们走吧。”", "然后就走了。"],
    ),
    (
        "他说：“（好的。）”然后走了。",
        ["他说：", "“（好的。）”", "然后走了。"],
    ),
    (
        "抱歉，没有找到“书房台灯”。请再试一次！",
        ["抱歉，", "没有找到“书房台灯”。", "请再试一次！"],
    ),
    ("这是什么？！真的吗？？", ["这是什么？", "真的吗？"]),
    ("好嘞！！门锁好了~晚安。", ["好嘞！", "门锁好了~晚安。"]),
    ("已经关掉啦~还有什么需要吗？", ["已经关掉啦~", "还有什么需要吗？"]),
    (
        "访问 https://www.home-assistant.io/docs?a=1 了解更多。",
        ["访问 https://www.home-assistant.io/docs?a=1 了解更多。"],
    ),
    (
        "邮件已发到 xiaoming@example.com ，请查收。",
        ["邮件已发到 xiaoming@example.com，", "请查收。"],
    ),
    ("已将Wi-Fi密码改为sunflower2024。", ["已将Wi-Fi密码改为sunflower2024。"]),
    ("（注：已关闭）好的。", ["（注：", "已关闭）好的。"]),
    ("“好的”，他说。", ["“好的”，", "他说。"]),
    ("1，2，3，开始。", ["1，2，", "3，开始。"]),
]

EN_CASES = [
    ("Sure, I've turned on the lights.", ["Sure,", "I've turned on the lights."]),
    (
        "OK, the thermostat is set to 72 degrees. Anything else?",
        ["OK,", "the thermostat is set to 72 degrees.", "Anything else?"],
    ),
    (
        "It's 3:45 p.m. right now. Your meeting starts at 4:00.",
        ["It's 3:45 p.m. right now.", "Your meeting starts at 4:00."],
    ),
    (
        "You used 1,286 kWh this month, about 12% less.",
        ["You used 1,286 kWh this month,", "about 12% less."],
    ),
    ("The index is 42, which is good.", ["The index is 42,", "which is good."]),
    (
        "Your bill was $84.50, about $6 less than April.",
        ["Your bill was $84.50,", "about $6 less than April."],
    ),
    (
        "Version 2.4.1 is installed. No update needed.",
        ["Version 2.4.1 is installed.", "No update needed."],
    ),
    (
        "Mr. Smith called, e.g. about the U.S. trip. Call him back.",
        ["Mr. Smith called,", "e.g. about the U.S. trip.", "Call him back."],
    ),
    (
        "Your U.S. order arrives today. It's at 5 p.m. Thanks!",
        ["Your U.S. order arrives today.", "It's at 5 p.m.", "Thanks!"],
    ),
    (
        "I'll check at 7 a.m. tomorrow. Then I'll tell you.",
        ["I'll check at 7 a.m. tomorrow.", "Then I'll tell you."],
    ),
    ("Wait... let me check. Done!", ["Wait... let me check.", "Done!"]),
    ("Lights, fans, etc., are off.", ["Lights,", "fans, etc., are off."]),
    (
        'I couldn\'t find "desk lamp." Try again?',
        ['I couldn\'t find "desk lamp."', "Try again?"],
    ),
    (
        "Open https://example.com/a?b=1&c=2, then log in. Mail a.b@example.co.uk.",
        [
            "Open https://example.com/a?b=1&c=2,",
            "then log in.",
            "Mail a.b@example.co.uk.",
        ],
    ),
    (
        "Go to http://homeassistant.local:8123/config now: it's there.",
        ["Go to http://homeassistant.local:8123/config now:", "it's there."],
    ),
    ("Hmm, 3.5 hours. That's long!", ["Hmm,", "3.5 hours.", "That's long!"]),
    ("Really?! Wow.", ["Really?", "Wow."]),
    ("Step 1. Open the app.", ["Step 1.", "Open the app."]),
    ("I said no. Then room No. 5 lit up.", ["I said no.", "Then room No. 5 lit up."]),
    ("A, b, c. Yes.", ["A, b,", "c.", "Yes."]),
    ("It takes ~5 minutes, roughly.", ["It takes ~5 minutes,", "roughly."]),
    ("Sure~ the light is on.", ["Sure~", "the light is on."]),
    ("By the end of 2024, we had 3 lamps.", ["By the end of 2024,", "we had 3 lamps."]),
    ("Hello :) bye", ["Hello:", "bye"]),
]

MARKDOWN_CASES = [
    (
        "**当前设备状态：**\n- 客厅灯：开\n- 空调：制冷，26℃",
        ["当前设备状态：", "客厅灯：开", "空调：制冷，26℃"],
    ),
    (
        "## 今日天气\n上海，多云。\n\n\n湿度：65%",
        ["今日天气", "上海，多云。", "湿度：65%"],
    ),
    (
        "步骤如下：\n1. 打开App；\n2. 点击设置。\n3、选择设备\n4.确认",
        ["步骤如下：", "打开App；", "点击设置。", "选择设备", "确认"],
    ),
    ("示例：\n```yaml\nalias: test\n```\n完成。", ["示例：", "完成。"]),
    ("| 房间 | 温度 |\n|---|---|\n| 客厅 | 25℃ |", ["房间 温度", "客厅 25℃"]),
    (
        "Here's the plan:\n- Dim lights to 10%.\n- Close the blinds\n\nEnjoy!",
        ["Here's the plan:", "Dim lights to 10%.", "Close the blinds", "Enjoy!"],
    ),
    (
        "See [the docs](https://example.com/x_(y)) for details. Also [1] and [a]b.",
        ["See the docs for details.", "Also [1] and [a]b."],
    ),
    (
        "Use `light.turn_on` with **brightness** set to *50*.",
        ["Use light.turn_on with brightness set to 50."],
    ),
    ("Yes!\n\n\nNo.", ["Yes!", "No."]),
    ("> Note: it's off.\n* * *\n***Done***", ["Note:", "it's off.", "Done"]),
    ("-5 degrees outside.\n#3 is on.", ["-5 degrees outside.", "#3 is on."]),
    ("3.5 hours left\n2024年到了", ["3.5 hours left", "2024年到了"]),
    ("Title\n=====\nBody.", ["Title", "Body."]),
    ("- \n1.\n---\n……\n好的。", ["……\n好的。"]),
    ("[unfinished link text\nnext", ["[unfinished link text", "next"]),
    ("Tab\there,\r\nnew\u3000line\u200b.", ["Tab here,", "new line."]),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    ZH_CASES + EN_CASES + MARKDOWN_CASES,
    ids=[case[0][:24] for case in ZH_CASES + EN_CASES + MARKDOWN_CASES],
)
def test_replies_split_as_expected(text: str, expected: list[str]) -> None:
    whole, _ = run([text])
    assert texts(by_char(text)) == expected
    assert texts(whole) == expected
    assert_tiles(text, whole)


def test_punctuation_only_tail_is_carried_into_the_next_segment() -> None:
    # The line of "……" cannot be spoken alone; it leads the next segment.
    assert texts(by_char("好。\n……\n好的。")) == ["好。", "……\n好的。"]


@pytest.mark.parametrize(
    ("text", "expected", "trailing"),
    [
        (
            "😊好的，已为你播放音乐。",
            [("好的，", ("😊",)), ("已为你播放音乐。", ())],
            (),
        ),
        (
            "好的😊，已为你播放音乐。",
            [("好的，", ("😊",)), ("已为你播放音乐。", ())],
            (),
        ),
        (
            "好的，😊已为你播放音乐。",
            [("好的，", ()), ("已为你播放音乐。", ("😊",))],
            (),
        ),
        ("已经打开啦~😄", [("已经打开啦~", ())], ("😄",)),
        ("已经打开啦😄", [("已经打开啦", ("😄",))], ()),
        ("Sleep well! 😴", [("Sleep well!", ())], ("😴",)),
        ("Done.😀 Anything else?", [("Done.", ()), ("Anything else?", ("😀",))], ()),
        ("Mr.😀 Smith", [("Mr. Smith", ("😀",))], ()),
        ("OK👍Done", [("OK Done", ("👍",))], ()),
        (
            "Great job 👍🏻! 👨\u200d👩\u200d👧 family time 🇨🇳 ok",
            [
                ("Great job!", ("👍🏻",)),
                ("family time ok", ("👨\u200d👩\u200d👧", "🇨🇳")),
            ],
            (),
        ),
        ("我说“好的。😀”", [("我说“好的。”", ("😀",))], ()),
        ("😀😀", [], ("😀", "😀")),
        ("❤\ufe0f好\u200d的⌚\ufe0f", [("好的", ("❤\ufe0f", "⌚\ufe0f"))], ()),
        ("好\u20e3的\U0001f3fb。", [("好的。", ())], ()),
    ],
)
def test_emojis_are_removed_and_reported(
    text: str, expected: list[tuple[str, tuple[str, ...]]], trailing: tuple[str, ...]
) -> None:
    for deltas in ([text], list(text)):
        segments, trailing_emojis = run(deltas)
        assert [(s.text, s.emojis) for s in segments] == expected
        assert trailing_emojis == trailing


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("**粗体**和`代码`", "粗体和代码"),
        ("# 标题\n正文", "标题\n正文"),
        ("a\n\n\n\nb", "a\nb"),
        ("a  \n  b", "a\nb"),
        ("  leading and trailing  ", "leading and trailing"),
        ("x\u3000\u3000y", "x y"),
        ("[链接](http://x.y)文字", "链接文字"),
        ("[a](http://x.y", "a"),
        ("[a](http://x.y\nb", "a\nb"),
        ("(" * 10 + "a" + ")" * 10, "(" * 10 + "a" + ")" * 8),  # depth is capped
        ("好的）谢谢", "好的谢谢"),
        ("wow!!! really?!", "wow! really?"),
        ("```\ncode only", ""),
        ("``inline``", "inline"),
        ("- `code` here\n  ```\n  x\n  ```\ndone", "code here\ndone"),
        ("好的 ，谢谢 ！", "好的，谢谢！"),
        ("use .NET", "use .NET"),
        ("😊", ""),
        ("", ""),
    ],
)
def test_clean_for_speech(text: str, cleaned: str) -> None:
    assert clean_for_speech(text) == cleaned


def test_first_segment_minimum_is_configurable() -> None:
    assert texts(by_char("好的，客厅灯开了。", first_min_cjk=4)) == [
        "好的，客厅灯开了。"
    ]
    assert texts(by_char("好的，客厅灯开了，空调也开了。", first_min_cjk=4)) == [
        "好的，客厅灯开了，",
        "空调也开了。",
    ]
    assert texts(by_char("Sure, the lights are on.", first_min_latin=12)) == [
        "Sure, the lights are on."
    ]
    # Mixed scripts count each script as a share of its own minimum.
    assert texts(
        by_char("打开Wi-Fi，然后重启。", first_min_cjk=4, first_min_latin=12)
    ) == ["打开Wi-Fi，然后重启。"]
    assert texts(
        by_char("打开Wi-Fi网络，然后重启。", first_min_cjk=4, first_min_latin=12)
    ) == ["打开Wi-Fi网络，", "然后重启。"]
    assert texts(by_char("好，行。", first_min_cjk=0, first_min_latin=0)) == [
        "好，",
        "行。",
    ]


def test_later_segments_prefer_whole_sentences() -> None:
    reply = "好的，客厅的灯打开了，亮度是百分之八十，色温是暖光。"
    assert texts(by_char(reply)) == [
        "好的，",
        "客厅的灯打开了，亮度是百分之八十，色温是暖光。",
    ]


@pytest.mark.parametrize(
    ("text", "max_chars", "expected"),
    [
        (
            "一二三四五六七八九十一二三四五六七八九十一二三",
            10,
            ["一二三四五六七八九", "十一二三四五六七八", "九十一二三"],
        ),
        (
            "the quick brown fox jumps over the lazy dog and keeps running",
            20,
            ["the quick brown fox", "jumps over the lazy", "dog and keeps", "running"],
        ),
        (
            "好。今天天气很好，阳光明媚，适合出去走走，也可以在家里看书，或者做点别的。",
            20,
            [
                "好。",
                "今天天气很好，阳光明媚，适合出去走走，",
                "也可以在家里看书，或者做点别的。",
            ],
        ),
        # A clause break too early in the segment loses to a later word boundary.
        (
            "好。嗯，今天天气很好阳光明媚适合出去走走也可以在家里看书。",
            12,
            ["好。", "嗯，今天天气很好阳光明", "媚适合出去走走也可以在", "家里看书。"],
        ),
        # No word boundary: the long token is kept whole rather than cut inside.
        (
            "Open https://example.com/a/very/long/path/to/somewhere now.",
            12,
            ["Open", "https://example.com/a/very/long/path/to/somewhere", "now."],
        ),
        (
            "，，，，，，，，，，，，，，好",
            6,
            ["，，，，，，，，，，，，，，好"],
        ),
    ],
)
def test_long_segments_are_cut(text: str, max_chars: int, expected: list[str]) -> None:
    assert texts(by_char(text, max_chars=max_chars)) == expected
    assert texts(run([text], max_chars=max_chars)[0]) == expected


def test_defaults_and_invalid_options() -> None:
    assert (DEFAULT_FIRST_MIN_CJK, DEFAULT_FIRST_MIN_LATIN) == (1, 2)
    assert DEFAULT_MAX_CHARS == 100
    invalid: list[SplitterOptions] = [
        {"first_min_cjk": -1},
        {"first_min_latin": -1},
        {"max_chars": 0},
    ]
    for options in invalid:
        with pytest.raises(ValueError, match="max_chars"):
            SentenceSplitter(**options)


def test_empty_and_none_deltas_emit_nothing() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed(None) == []
    assert splitter.feed("") == []
    assert splitter.feed("好的，") == [Segment("好的，")]
    assert splitter.feed(None) == []
    assert splitter.flush() == []
    assert splitter.flush() == []


def test_one_delta_with_several_sentences() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("好的，灯开了。空调也开了！还有吗") == [
        Segment("好的，"),
        Segment("灯开了。"),
        Segment("空调也开了！"),
    ]
    assert splitter.flush() == [Segment("还有吗")]


def test_segment_is_emitted_as_soon_as_it_is_complete() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("好的") == []
    assert splitter.feed("，") == [Segment("好的，")]
    assert splitter.feed("温度是23") == []
    assert splitter.feed(".") == []  # "23." may be "23.5"
    assert splitter.feed("5度。") == [Segment("温度是23.5度。")]
    assert splitter.feed("It is 3") == []
    assert splitter.feed(".") == []
    assert splitter.feed(" Ok") == [Segment("It is 3.")]
    assert splitter.flush() == [Segment("Ok")]


def test_flush_resets_for_the_next_reply() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("好的，第一条。") == [Segment("好的，"), Segment("第一条。")]
    assert splitter.feed("还有，") == []  # later segments wait for a full sentence
    assert splitter.flush() == [Segment("还有，")]
    # A new reply starts again with the fast first segment.
    assert splitter.feed("行，") == [Segment("行，")]
    assert splitter.flush() == []


def test_trailing_emojis_reset_on_next_reply() -> None:
    splitter = SentenceSplitter()
    splitter.feed("好。😴")
    splitter.flush()
    after_first_reply = splitter.trailing_emojis
    splitter.feed("好")
    after_next_delta = splitter.trailing_emojis
    assert (after_first_reply, after_next_delta) == (("😴",), ())
    assert splitter.flush() == [Segment("好")]


async def _deltas(items: Iterable[str | None]) -> AsyncIterator[str | None]:
    for item in items:
        await asyncio.sleep(0)
        yield item


async def test_split_stream_handles_none_and_flushes_tail() -> None:
    segments = [
        segment
        async for segment in split_stream(
            _deltas(["😊好", None, "的，客厅", "", "灯开了。还有", "吗"])
        )
    ]
    assert segments == [
        Segment("好的，", ("😊",)),
        Segment("客厅灯开了。"),
        Segment("还有吗"),
    ]


async def test_split_stream_passes_options() -> None:
    segments = [
        s async for s in split_stream(_deltas(["好的，灯开了。"]), first_min_cjk=4)
    ]
    assert segments == [Segment("好的，灯开了。")]


async def test_split_stream_yields_before_the_reply_ends() -> None:
    release = asyncio.Event()

    async def deltas() -> AsyncIterator[str]:
        yield "好的，"
        yield "客厅"
        await release.wait()
        yield "灯开了。"

    segments = split_stream(deltas())
    # Blocks forever (and times out) if the splitter waited for the whole reply.
    async with asyncio.timeout(10):
        assert await anext(segments) == Segment("好的，")
    release.set()
    assert [s async for s in segments] == [Segment("客厅灯开了。")]


def test_long_replies_are_processed_per_character() -> None:
    # Guards against quadratic rescans: these finish instantly when feed() is
    # linear in the new text, and take minutes otherwise.
    lines = "——\n" * 20_000 + "好的。"
    segments = by_char(lines)
    assert len(segments) <= 2
    assert_tiles(lines, segments)
    prose = "今天天气很好，" * 5_000 + "。"
    segments = by_char(prose)
    assert "".join(texts(segments)) == prose
    assert max(len(s.text) for s in segments) <= DEFAULT_MAX_CHARS


# Property tests -------------------------------------------------------------

FRAGMENTS = [
    *("好的", "客厅", "灯", "已经", "打开", "了", "温度", "嗯", "Sure", "the"),
    *(" light", " is", " on", "OK", "I", "e.g.", "Mr.", "U.S.", "p.m.", "etc."),
    *("3.5", "1,000", "12:30", "12：30", "18~25", "v1.6.2", "42", "2024"),
    *("https://x.io/a?b=1,c", "www.example.com", "a@b.co", "...", "……", "…"),
    *("。", "，", "、", "！", "？", "；", "：", ".", ",", "!", "?", ";", ":"),
    *("~", "～", " ", "  ", "\n", "\n\n", "\t", "\r\n", "**", "*", "`", "```"),
    *("#", "## ", "- ", "1. ", "2、", "> ", "|", "---", "[", "]", "(", ")"),
    *("[docs](http://u)", "“", "”", "「", "」", "（", "）", '"', "'", "😊"),
    *("👍🏻", "👨\u200d👩\u200d👧", "🇨🇳", "\u200b", "\ufe0f", "_", "$", "%"),
    *("℃", "Wi-Fi", "—", "A", "a"),
]

replies = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=3)), max_size=40
).map("".join)
option_sets = st.fixed_dictionaries(
    {},
    optional={
        "first_min_cjk": st.integers(0, 6),
        "first_min_latin": st.integers(0, 14),
        "max_chars": st.integers(1, 60),
    },
)
PROPERTY_SETTINGS = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(text=replies, options=option_sets)
def test_segments_tile_the_cleaned_text(text: str, options: SplitterOptions) -> None:
    segments, _ = run([text], **options)
    assert_tiles(text, segments)


@PROPERTY_SETTINGS
@given(text=replies, options=option_sets)
def test_no_segment_is_empty_or_punctuation_only(
    text: str, options: SplitterOptions
) -> None:
    for segment in run([text], **options)[0]:
        assert segment.text
        assert segment.text == segment.text.strip()
        assert speakable(segment.text)


@PROPERTY_SETTINGS
@given(text=replies, options=option_sets, data=st.data())
def test_segments_do_not_depend_on_chunking(
    text: str, options: SplitterOptions, data: st.DataObject
) -> None:
    cuts = sorted(
        data.draw(st.lists(st.integers(0, len(text)), max_size=12), label="cuts")
    )
    chunks: list[str | None] = [
        text[start:end]
        for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True)
    ]
    chunks.insert(data.draw(st.integers(0, len(chunks)), label="none at"), None)
    whole = run([text], **options)
    assert run(chunks, **options) == whole
    assert run(list(text), **options) == whole


@PROPERTY_SETTINGS
@given(
    text=st.lists(
        st.sampled_from(
            ["好", "天气", " hello", " world", "好，", "天气。", " ok,", " fine."]
        ),
        max_size=60,
    ).map("".join),
    max_chars=st.integers(6, 40),
)
def test_segments_respect_max_chars(text: str, max_chars: int) -> None:
    for segment in run([text], max_chars=max_chars)[0]:
        assert len(segment.text) <= max_chars
