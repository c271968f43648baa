"""Built-in bilingual retention set: general prompts with known answers, to measure what tuning cost.

Fine-tuning on a narrow task can make a model forget general skills ("LoRA Learns Less and Forgets
Less", Biderman et al., 2024). The retention set asks the base model and every run the same general
questions, in English and Chinese, of four kinds: arithmetic, unit conversion, world facts and simple
instructions. Every item is generated here, seeded, with its answer known, and checked automatically:

- `numeric`: the expected number is among the numbers of the answer (items are built so that the
  expected number never occurs in the question);
- `contains`: one of the accepted strings occurs in the answer (case-insensitive, whole words);
- `cased`: the same, case-sensitive (for "write it in capital letters");
- `first_number`: the first number of the answer is the expected one (for "which is larger");
- `sequence`: the expected numbers occur in the answer consecutively, in order (counting, sorting).

An answer that loops (answer_check.is_loop) is wrong for the number checks, whatever numbers it holds;
the word checks keep it ("Repeat the word 'lamp'" may fairly be answered "lamp lamp lamp").

Measured on the items the base model answers correctly: the base job scores every item, a run is
asked only the items the base got right, and `retention` is the share it still gets right (so the
base is 100 by construction and Δ retention is what the tuning lost). Small base models answer few
Chinese items; the set adapts to whatever the configured base model can do.

Two parts, as for the task rows: `retention_part` puts every item in `val` or `test` by a hash of its
id (about half each, the same for every run, seed and model), so a run can be chosen on its validation
retention (table.retention_floor) without spending the test part the table reports.

`python -m loraflow.evaluate.retention` prints the set as JSONL.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import sys
from collections.abc import Sequence

from loraflow.evaluate.answer_check import is_loop, numbers_in, states_number, states_text

KINDS = ("arithmetic", "units", "facts", "instructions")
CHECKS = ("numeric", "contains", "cased", "first_number", "sequence")

# (English unit from, unit to, Chinese from, Chinese to, factor)
_UNITS = (
    ("metres", "centimetres", "米", "厘米", 100),
    ("kilograms", "grams", "千克", "克", 1000),
    ("hours", "minutes", "小时", "分钟", 60),
    ("minutes", "seconds", "分钟", "秒", 60),
    ("weeks", "days", "周", "天", 7),
    ("kilometres", "metres", "千米", "米", 1000),
    ("litres", "millilitres", "升", "毫升", 1000),
    ("days", "hours", "天", "小时", 24),
)
# (country en, country zh, capital en, capital zh)
_CAPITALS = (
    ("France", "法国", "Paris", "巴黎"),
    ("Japan", "日本", "Tokyo", "东京"),
    ("Italy", "意大利", "Rome", "罗马"),
    ("Germany", "德国", "Berlin", "柏林"),
    ("Spain", "西班牙", "Madrid", "马德里"),
    ("the United Kingdom", "英国", "London", "伦敦"),
    ("China", "中国", "Beijing", "北京"),
    ("Russia", "俄罗斯", "Moscow", "莫斯科"),
    ("Egypt", "埃及", "Cairo", "开罗"),
    ("Canada", "加拿大", "Ottawa", "渥太华"),
    ("Australia", "澳大利亚", "Canberra", "堪培拉"),
    ("Greece", "希腊", "Athens", "雅典"),
    ("South Korea", "韩国", "Seoul", "首尔"),
    ("Thailand", "泰国", "Bangkok", "曼谷"),
    ("Portugal", "葡萄牙", "Lisbon", "里斯本"),
    ("Ireland", "爱尔兰", "Dublin", "都柏林"),
    ("Norway", "挪威", "Oslo", "奥斯陆"),
    ("Kenya", "肯尼亚", "Nairobi", "内罗毕"),
    ("Austria", "奥地利", "Vienna", "维也纳"),
    ("Poland", "波兰", "Warsaw", "华沙"),
)
# (question en, question zh, check, accepted en, accepted zh); a Chinese question also accepts the English answer
_FACTS = (
    ("How many days are there in a week?", "一周有几天？", "numeric", ["7"], ["7"]),
    ("How many legs does a spider have?", "蜘蛛有几条腿？", "numeric", ["8"], ["8"]),
    ("How many continents are there on Earth?", "地球上有几个大洲？", "numeric", ["7"], ["7"]),
    ("How many hours are there in a day?", "一天有多少个小时？", "numeric", ["24"], ["24"]),
    ("How many months are there in a year?", "一年有几个月？", "numeric", ["12"], ["12"]),
    ("How many minutes are there in an hour?", "一小时有多少分钟？", "numeric", ["60"], ["60"]),
    ("How many sides does a triangle have?", "三角形有几条边？", "numeric", ["3"], ["3"]),
    (
        "At what temperature in degrees Celsius does water boil at sea level?",
        "在海平面上，水在多少摄氏度沸腾？",
        "numeric",
        ["100"],
        ["100"],
    ),
    (
        "What is the largest planet in our solar system?",
        "太阳系中最大的行星是哪一颗？",
        "contains",
        ["Jupiter"],
        ["木星"],
    ),
    ("Which planet is known as the Red Planet?", "哪颗行星被称为红色星球？", "contains", ["Mars"], ["火星"]),
    ("What is the chemical formula of water?", "水的化学式是什么？", "contains", ["H2O", "H₂O"], ["H2O", "H₂O"]),
    ("What colour is the sky on a clear day?", "晴朗的白天，天空是什么颜色的？", "contains", ["blue"], ["蓝"]),
    ("What is the opposite of hot?", "“热”的反义词是什么？", "contains", ["cold"], ["冷"]),
    ("Who wrote Romeo and Juliet?", "《罗密欧与朱丽叶》的作者是谁？", "contains", ["Shakespeare"], ["莎士比亚"]),
    ("What is the largest ocean on Earth?", "地球上最大的海洋是哪个？", "contains", ["Pacific"], ["太平洋"]),
    (
        "Which gas do plants take in from the air to make food?",
        "植物从空气中吸收哪种气体来进行光合作用？",
        "contains",
        ["carbon dioxide", "CO2"],
        ["二氧化碳", "CO2"],
    ),
    (
        "Which animal is known as the king of the jungle?",
        "哪种动物被称为“森林之王”？",
        "contains",
        ["lion"],
        ["狮", "虎"],
    ),
    (
        "What is the tallest mountain in the world?",
        "世界上最高的山峰是哪座？",
        "contains",
        ["Everest"],
        ["珠穆朗玛", "珠峰"],
    ),
    ("What is the freezing point of water in degrees Fahrenheit?", "水的冰点是多少华氏度？", "numeric", ["32"], ["32"]),
    (
        "Which language has the most native speakers in the world?",
        "世界上母语使用者最多的语言是哪种？",
        "contains",
        ["Chinese", "Mandarin"],
        ["汉语", "中文", "普通话"],
    ),
)
_WORDS = (
    ("apple", "苹果"),
    ("river", "河流"),
    ("garden", "花园"),
    ("window", "窗户"),
    ("music", "音乐"),
    ("yellow", "黄色"),
    ("bridge", "桥梁"),
    ("pencil", "铅笔"),
    ("forest", "森林"),
    ("coffee", "咖啡"),
    ("summer", "夏天"),
    ("planet", "行星"),
)


def _item(lang: str, kind: str, prompt: str, check: str, answers: Sequence[object]) -> dict:
    return {"lang": lang, "kind": kind, "prompt": prompt, "check": check, "answers": [str(a) for a in answers]}


def _arithmetic(rng: random.Random, n: int) -> list[dict]:
    items: list[dict] = []
    while len(items) < n:
        op = ("+", "-", "*")[len(items) % 3]
        if op == "*":
            a, b = rng.randint(2, 12), rng.randint(2, 12)
            c = a * b
        else:
            a, b = rng.randint(10, 99), rng.randint(2, 49)
            a, b = (a, b) if op == "+" or a > b else (b, a)
            c = a + b if op == "+" else a - b
        if c in (a, b) or c <= 0:
            continue
        en_op, zh_op = {"+": ("plus", "加"), "-": ("minus", "减"), "*": ("times", "乘以")}[op]
        items.append(_item("en", "arithmetic", f"What is {a} {en_op} {b}? Reply with just the number.", "numeric", [c]))
        items.append(_item("zh", "arithmetic", f"{a} {zh_op} {b} 等于多少？请只回答数字。", "numeric", [c]))
    return items


def _units(rng: random.Random, n: int) -> list[dict]:
    items = []
    for k in range(n):
        en_from, en_to, zh_from, zh_to, factor = _UNITS[k % len(_UNITS)]
        x = rng.randint(2, 9)
        items.append(
            _item(
                "en",
                "units",
                f"How many {en_to} are in {x} {en_from}? Reply with just the number.",
                "numeric",
                [x * factor],
            )
        )
        items.append(_item("zh", "units", f"{x} {zh_from}等于多少{zh_to}？请只回答数字。", "numeric", [x * factor]))
    return items


def _facts() -> list[dict]:
    items = []
    for country_en, country_zh, city_en, city_zh in _CAPITALS:
        items.append(_item("en", "facts", f"What is the capital of {country_en}?", "contains", [city_en]))
        items.append(_item("zh", "facts", f"{country_zh}的首都是哪座城市？", "contains", [city_zh, city_en]))
    for q_en, q_zh, check, a_en, a_zh in _FACTS:
        items.append(_item("en", "facts", q_en, check, a_en))
        items.append(_item("zh", "facts", q_zh, check, a_zh if check == "numeric" else [*a_zh, *a_en]))
    return items


def _instructions(rng: random.Random, n: int) -> list[dict]:
    items = []
    for k in range(n):
        en, zh = _WORDS[k % len(_WORDS)]
        form = k % 5
        if form == 0:
            items.append(_item("en", "instructions", f"Repeat the word '{en}' and nothing else.", "contains", [en]))
            items.append(_item("zh", "instructions", f"请重复这个词：{zh}。不要说别的。", "contains", [zh]))
        elif form == 1:
            items.append(
                _item("en", "instructions", f"Write the word '{en}' in capital letters.", "cased", [en.upper()])
            )
            items.append(_item("zh", "instructions", f"请把“{zh}”翻译成英文。", "contains", [en]))
        elif form == 2:
            m = rng.randint(3, 7)
            seq = [str(i) for i in range(1, m + 1)]
            items.append(_item("en", "instructions", f"Count from 1 to {m}, separated by commas.", "sequence", seq))
            items.append(_item("zh", "instructions", f"请从 1 数到 {m}，用逗号隔开。", "sequence", seq))
        elif form == 3:
            a, b = rng.sample(range(11, 99), 2)
            items.append(
                _item(
                    "en",
                    "instructions",
                    f"Which number is larger, {a} or {b}? Reply with just the number.",
                    "first_number",
                    [max(a, b)],
                )
            )
            items.append(
                _item("zh", "instructions", f"{a} 和 {b} 哪个数更大？请只回答数字。", "first_number", [max(a, b)])
            )
        else:
            nums = rng.sample(range(1, 50), 3)
            while nums == sorted(nums):
                rng.shuffle(nums)
            joined = ", ".join(map(str, nums))
            items.append(
                _item(
                    "en",
                    "instructions",
                    f"Sort these numbers from smallest to largest: {joined}.",
                    "sequence",
                    sorted(nums),
                )
            )
            items.append(
                _item(
                    "zh",
                    "instructions",
                    f"请把这些数字从小到大排列：{'、'.join(map(str, nums))}。",
                    "sequence",
                    sorted(nums),
                )
            )
    return items


def build_items(seed: int = 0) -> list[dict]:
    """The whole set (380 items, 190 per language: 50 arithmetic, 50 unit conversions, 40 world facts and
    50 simple instructions each), interleaved by language and kind so
    that the first N items stay balanced; ids `ret-<lang>-<kind>-<k>`."""
    rng = random.Random(f"loraflow-retention:{seed}")
    groups = {
        "arithmetic": _arithmetic(rng, 100),
        "units": _units(rng, 50),
        "facts": _facts(),
        "instructions": _instructions(rng, 50),
    }
    streams = []
    for kind in KINDS:
        for lang in ("en", "zh"):
            stream = [it for it in groups[kind] if it["lang"] == lang]
            for k, it in enumerate(stream):
                it["id"] = f"ret-{lang}-{kind}-{k:03d}"
            streams.append(stream)
    items = [it for batch in itertools.zip_longest(*streams) for it in batch if it is not None]
    return [{"id": it["id"], **{k: v for k, v in it.items() if k != "id"}} for it in items]


PARTS = ("val", "test")


def retention_part(item_id: str) -> str:
    """`val` or `test`: the part of the retention set an item belongs to, from a hash of its id alone
    (deterministic, independent of the order, the number of items asked and the model)."""
    return PARTS[hashlib.sha256(f"loraflow-retention-part:{item_id}".encode()).digest()[0] % 2]


def load_items(n: int = 0, seed: int = 0) -> list[dict]:
    """The first `n` items (0 = all)."""
    items = build_items(seed)
    return items[:n] if n else items


def is_correct(item: dict, answer: str) -> bool:
    """Whether `answer` answers `item` correctly (see the module docstring for the checks)."""
    check, answers = item["check"], item["answers"]
    if check in ("numeric", "first_number", "sequence") and is_loop(answer):
        return False  # a loop of numbers would "state" the right one by chance
    if check == "numeric":
        return any(states_number(answer, float(a)) for a in answers)
    if check == "contains":
        return any(states_text(answer, a) for a in answers)
    if check == "cased":
        return any(a in answer for a in answers)
    found = numbers_in(answer)
    want = [float(a) for a in answers]
    if check == "first_number":
        return bool(found) and found[0] in want
    if check == "sequence":
        return any(found[i : i + len(want)] == want for i in range(len(found) - len(want) + 1))
    raise ValueError(f"unknown retention check {check!r}")


def main() -> int:
    for item in build_items():
        sys.stdout.write(json.dumps(item, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
