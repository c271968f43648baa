"""Built-in general prompts for replay: everyday requests in English and Chinese that the base model
answers itself (self-distillation), so that training can keep rehearsing what the base already does.

Disjoint from the retention set (loraflow.evaluate.retention) by construction and by test: no
arithmetic, unit conversions, capitals, world-fact questions or word games here, and none of the
retention set's countries or answers appear, so replay never rehearses what retention measures.
"""

from __future__ import annotations

import itertools

# (English noun phrase, Chinese noun phrase): everyday activities
_TOPICS = (
    ("gardening", "园艺"),
    ("cooking rice", "煮米饭"),
    ("learning a new language", "学习一门新语言"),
    ("saving money", "存钱"),
    ("sleeping well", "睡个好觉"),
    ("writing an email", "写电子邮件"),
    ("running", "跑步"),
    ("reading books", "读书"),
    ("staying hydrated", "多喝水"),
    ("team meetings", "团队会议"),
    ("public speaking", "公开演讲"),
    ("time management", "时间管理"),
    ("recycling", "垃圾分类"),
    ("cycling to work", "骑车上班"),
    ("taking photos", "拍照"),
    ("learning to code", "学习编程"),
    ("baking bread", "烤面包"),
    ("keeping a diary", "写日记"),
    ("visiting a museum", "参观博物馆"),
    ("caring for a cat", "养猫"),
    ("packing for a trip", "出行打包"),
    ("cleaning the kitchen", "打扫厨房"),
    ("studying for an exam", "准备考试"),
    ("working from home", "在家办公"),
)
# (English, Chinese): everyday things to explain
_THINGS = (
    ("an umbrella", "雨伞"),
    ("a library", "图书馆"),
    ("a calendar", "日历"),
    ("a ladder", "梯子"),
    ("a spreadsheet", "电子表格"),
    ("a password", "密码"),
    ("a recipe", "菜谱"),
    ("a map", "地图"),
    ("a thermometer", "温度计"),
    ("a budget", "预算"),
    ("an orchestra", "管弦乐队"),
    ("a compass", "指南针"),
    ("a backpack", "背包"),
    ("a bicycle helmet", "自行车头盔"),
    ("a shopping list", "购物清单"),
    ("a smoke alarm", "烟雾报警器"),
)
_TOPIC_TEMPLATES = (
    ("Give one practical tip about {en}.", "请给出一条关于{zh}的实用建议。"),
    ("Write one friendly sentence about {en}.", "请写一句关于{zh}的友好的话。"),
    ("List two benefits of {en}.", "请列出{zh}的两个好处。"),
)
_THING_TEMPLATES = (
    ("Explain in one sentence what {en} is used for.", "请用一句话解释{zh}有什么用。"),
    ("Describe {en} to a child in one simple sentence.", "请用一句简单的话向孩子描述{zh}。"),
)


def build_prompts() -> list[dict]:
    """Every prompt, English and Chinese interleaved (so the first N stay balanced): {id, lang, prompt};
    ids `gen-<lang>-<k>`."""
    pairs = [
        (t_en.format(en=en), t_zh.format(zh=zh))
        for (t_en, t_zh), (en, zh) in itertools.product(_TOPIC_TEMPLATES, _TOPICS)
    ]
    pairs += [
        (t_en.format(en=en), t_zh.format(zh=zh))
        for (t_en, t_zh), (en, zh) in itertools.product(_THING_TEMPLATES, _THINGS)
    ]
    out = []
    for k, (en, zh) in enumerate(pairs):
        out.append({"id": f"gen-en-{k:03d}", "lang": "en", "prompt": en})
        out.append({"id": f"gen-zh-{k:03d}", "lang": "zh", "prompt": zh})
    return out
