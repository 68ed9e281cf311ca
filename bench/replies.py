"""Reply corpus for bench/first_segment.py.

Replies a smart-home voice assistant's LLM typically streams back, in Chinese and
English: short confirmations that open with an interjection, states with numbers,
times, decimals, ranges and thousands separators, lists, markdown the model used
despite being told not to, code, URLs, e-mail addresses, abbreviations, quotes,
mixed scripts and emojis. Written to be representative, not to favour a splitter.
"""

ZH_REPLIES: tuple[str, ...] = (
    "好的，客厅的灯已经为你打开了。",
    "好，已经把空调调到26度了。",
    "已经帮你关掉卧室的灯啦~还有什么需要吗？",
    "现在室内温度是23.5度，湿度百分之四十五，挺舒服的。",
    "明天北京晴转多云，气温18~27度，东南风3级，适合出门哦。",
    "嗯，我看了一下，厨房的窗户还开着，要我帮你关上吗？",
    "😊好的，已为你播放周杰伦的《晴天》。",
    "现在是下午3:45，你下午4点有个会议，记得提前准备哦。",
    "本月用电量是1,286度，比上个月少了大约12%。",
    "**当前设备状态：**\n- 客厅灯：开\n- 空调：制冷，26℃\n- 扫地机器人：充电中",
    "没问题！我已经设置了明天早上7:30的闹钟。",
    "扫地机器人已经开始打扫客厅了，预计需要35分钟。",
    "抱歉，我没有找到名叫“书房台灯”的设备，你可以在Home Assistant里确认一下名称。",
    "给你推荐几个睡前的设置：\n1. 把卧室灯调到暖光，亮度30%；\n2. 空调设为睡眠模式；\n3. 打开白噪音。\n需要我一键帮你设置吗？",
    "当前固件版本是v1.6.2，已经是最新版本了。",
    "好嘞！门锁已经锁好了，晚安~🌙",
    "外面现在下着小雨，PM2.5是35，空气质量良。出门记得带伞哦！",
    "热水器已经加热到了55℃，可以洗澡啦。",
    "我想想……你上次换滤网是在3月12日，已经过去大约两个月了，建议这周更换一下。",
    "行，电视音量已经调到20了。",
    "今天的日程有三项：上午10:00部门例会，下午2:30看牙医，晚上7点和朋友吃饭。",
    "窗帘已经拉开一半了。需要全部打开的话，跟我说一声就好。",
    "根据传感器的数据，过去24小时里，你家的平均温度是22.3℃，最高25.1℃，最低19.8℃。",
    "可以的！你可以访问 https://www.home-assistant.io 了解更多自动化的写法。",
    (
        "这是一个简单的自动化示例：\n```yaml\nalias: 回家开灯\ntrigger:\n  - platform: state\n"
        "    entity_id: person.xiaoming\n    to: home\naction:\n  - service: "
        "light.turn_on\n    target:\n      entity_id: light.living_room\n"
        "```\n你可以把它粘贴到 automations.yaml 里。"
    ),
    "哎呀，洗衣机显示错误代码E21，可能是排水不畅，建议检查一下排水管有没有堵住。",
    "已经把客厅、卧室和书房的灯都关掉了。",
    "现在的电价是0.56元每度，晚上11点以后会降到0.3元。",
    "## 今日天气\n上海，多云，气温20到26度。\n湿度：65%\n建议穿薄外套。",
    "嗯嗯，收到！空气净化器已经切换到自动模式啦😄",
    "你说的“关灯”是指客厅的灯，还是所有的灯呢？",
    "好的。我已经把提醒设置在今天晚上8点，内容是“给妈妈打电话”。",
    "已经把Wi-Fi密码发到你的邮箱 xiaoming@example.com 了，注意查收。",
)

EN_REPLIES: tuple[str, ...] = (
    "Sure, I've turned on the living room lights.",
    "The living room is currently 21.5°C with 45% humidity.",
    "OK, the thermostat is now set to 72 degrees.",
    "Done! The front door is locked and the porch light is on.",
    "It's 3:45 p.m. right now. Your next meeting starts at 4:00.",
    (
        "You used 1,286 kWh of electricity this month, which is about "
        "12% less than last month."
    ),
    (
        "Here's what's on today:\n- 10:00 a.m. team standup\n- 2:30 p.m. "
        "dentist appointment\n- 7 p.m. dinner with Sarah"
    ),
    (
        'I couldn\'t find a device called "desk lamp". Could you check '
        "the name in Home Assistant?"
    ),
    "The washing machine has about 25 minutes left in its cycle.",
    (
        "Tomorrow will be partly cloudy with a high of 24 and a low of "
        "15. There's a 30% chance of rain in the afternoon."
    ),
    ("Your robot vacuum finished cleaning at 11:20 and is back on its dock."),
    "**Good news:** all windows are closed and the alarm is armed.",
    (
        "Hmm, the garage door sensor hasn't reported anything for 3.5 "
        "hours. It might need a new battery."
    ),
    "Yes! I've added milk, eggs, and bread to your shopping list.",
    (
        "The firmware on your hallway sensor is version 2.4.1, which "
        "is the latest release."
    ),
    (
        "Good morning! It's 7:05 a.m., 16°C outside, and the coffee machine "
        "is warming up ☕"
    ),
    (
        "To set up the automation, open Settings > Automations & Scenes, "
        'then tap "Create automation".'
    ),
    ("Mr. Chen's package was delivered at 2:14 p.m. and is at the front door."),
    ("Sure thing. I'll remind you to water the plants at 6 p.m. every day."),
    (
        "The air quality index is 42, which is good. No need to run the "
        "purifier right now."
    ),
    "I've dimmed the bedroom lights to 30%. Sleep well! 😴",
    "Your energy bill for May was $84.50, about $6 less than April.",
    (
        "Here are a few ideas for a movie night scene:\n1. Dim the living "
        "room lights to 10%.\n2. Close the blinds.\n3. Turn on the TV and "
        "the soundbar.\nWant me to create it?"
    ),
    ("The kitchen timer is set for 12 minutes. I'll let you know when it's done."),
    (
        "There's a firmware update for the Aqara hub (v4.0.2). You can "
        "read the release notes at https://www.aqara.com/en/news. Should "
        "I install it tonight?"
    ),
    (
        "It looks like a heater is still on upstairs, e.g. in the guest "
        "room. Do you want me to turn it off?"
    ),
    (
        "No problem. The sprinklers will skip tomorrow's run because "
        "8 mm of rain is expected."
    ),
    (
        "I can't reach the bedroom speaker right now... it may be offline. "
        "Try unplugging it for 10 seconds."
    ),
    ("Your U.S. order from Best Buy is out for delivery and should arrive by 5 p.m."),
    (
        "The humidity in the bathroom went up to 78%, so I turned on "
        "the exhaust fan for 15 minutes."
    ),
    ("Got it, the guest Wi-Fi password is now sunflower2024. I'll text it to you."),
    (
        "Oh no, the fridge door has been open for 2 minutes. Please close "
        "it to keep the food cold!"
    ),
    "I've sent this month's energy report to alex@example.com.",
)

REPLIES: tuple[tuple[str, str], ...] = tuple(
    [("zh", text) for text in ZH_REPLIES] + [("en", text) for text in EN_REPLIES]
)
