"""Built-in data of task seq_cls: a seeded bilingual (English + Chinese) product-review sentiment set.

Each review is stitched from an optional opener, two or three aspect clauses (sound, battery, build,
delivery, service, price, set-up ...) and an optional verdict. The label is the overall sentiment;
what keeps the task from being trivial:

- mixed reviews: a third of them carry one aspect of the opposite sentiment ("but", "虽然…但是");
- negation: "not bad at all" / "一点也不差" are positive, "not worth it" / "不值这个价" negative;
- no verdict in about 40 % of the reviews, so no single closing phrase gives the label away.

Roughly half the rows are Chinese. A few rows are deliberately dirty (empty text, missing or empty
label, exact duplicates, an overlong review, HTML line breaks) so the clean stage has something to
catch. Pure standard library; the same seed gives the same file.
"""

from __future__ import annotations

import random
from typing import Any

from loraflow.io import write_jsonl

LABELS = ("negative", "positive")

# Aspect clauses are (tag, positive text, negative text): "" fits every product, "audio" / "power" only
# products with that tag.
_EN: dict[str, Any] = {
    "products": [
        ("wireless headphones", "audio power"),
        ("electric kettle", "heat"),
        ("desk lamp", "power"),
        ("backpack", ""),
        ("phone case", ""),
        ("coffee grinder", "power"),
        ("running shoes", ""),
        ("bluetooth speaker", "audio power"),
        ("air fryer", "heat"),
        ("office chair", ""),
        ("water bottle", ""),
        ("keyboard", "power"),
    ],
    "openers": [
        "I bought the {p} last month.",
        "Got the {p} as a gift.",
        "We have used the {p} for a few weeks now.",
        "Ordered the {p} after reading the reviews.",
        "Bought the {p} from this shop again.",
        "",
        "",
        "",
    ],
    "clauses": [
        ("audio", "the sound is crisp and clear", "the sound is muffled"),
        ("audio", "the bass is rich and deep", "it crackles at high volume"),
        ("power", "the battery lasts for days", "the battery dies within hours"),
        ("power", "it charges in under an hour", "it takes all night to charge"),
        ("", "it feels solid and well made", "it feels cheap and flimsy"),
        ("", "the finish is neat and strong", "the plastic cracked after a week"),
        ("", "it arrived a day early", "it arrived two weeks late"),
        ("", "delivery was quick and the box was intact", "the box was crushed when it arrived"),
        ("", "customer service replaced a part without fuss", "customer service never answered my emails"),
        ("", "support answered within minutes", "support kept me on hold for an hour"),
        ("", "it is worth every penny", "it is overpriced for what you get"),
        ("", "it is great value for the price", "it was a waste of money"),
        ("", "setup took two minutes", "the setup was a nightmare"),
        ("", "it is easy to use", "it is confusing to use"),
        ("", "it looks even better than in the photos", "it looks nothing like the photos"),
        ("", "it is not bad at all", "it is not worth it"),
        ("", "I have no complaints", "it is not what I expected"),
        ("", "it was not a disappointment", "it stopped working after three days"),
        ("heat", "it heats up in no time", "it takes ages to heat up"),
        ("heat", "it never gets too hot on the outside", "the outside gets too hot to touch"),
        ("", "the material feels soft and comfortable", "the material is scratchy and smells of chemicals"),
    ],
    "intensifiers": ["", "", "", "honestly, ", "to be fair, ", "frankly, "],
    "and": [" and ", ", ", "; also "],
    # contra before the main clauses ("contra, but main") or after them ("main, although contra")
    "contra_first": ["{c}, but {m}", "{c}. Still, {m}", "sure, {c}, but {m}"],
    "contra_last": ["{m}, although {c}", "{m}, even if {c}", "{m}; the only downside is that {c}"],
    "verdicts": {
        "positive": [
            "I would buy it again.",
            "Highly recommended.",
            "Five stars.",
            "Very happy with it.",
            "Love it!",
            "Overall a great purchase.",
        ],
        "negative": [
            "I want a refund.",
            "Would not recommend.",
            "One star.",
            "Very disappointed.",
            "Returning it.",
            "Overall a bad purchase.",
        ],
    },
}

_ZH: dict[str, Any] = {
    "products": [
        ("无线耳机", "audio power"),
        ("电热水壶", "heat"),
        ("台灯", "power"),
        ("双肩包", ""),
        ("手机壳", ""),
        ("咖啡磨豆机", "power"),
        ("跑鞋", ""),
        ("蓝牙音箱", "audio power"),
        ("空气炸锅", "heat"),
        ("办公椅", ""),
        ("水杯", ""),
        ("键盘", "power"),
    ],
    "openers": [
        "上个月买的{p}。",
        "朋友送的{p}。",
        "这款{p}用了几个星期了。",
        "看了评价才下单的{p}。",
        "第二次在这家店买{p}了。",
        "",
        "",
        "",
    ],
    "clauses": [
        ("audio", "音质清晰", "音质发闷"),
        ("audio", "低音很饱满", "声音一大就有杂音"),
        ("power", "续航很长，能用好几天", "电池几个小时就没电了"),
        ("power", "一个小时就能充满", "充一晚上都充不满"),
        ("", "做工扎实", "做工粗糙"),
        ("", "细节处理得很好", "塑料用了一周就裂了"),
        ("", "物流很快，提前一天到了", "快递晚了两个星期"),
        ("", "快递很快，包装完好", "收到时盒子都压坏了"),
        ("", "客服很爽快地给换了配件", "客服一直不回消息"),
        ("", "客服几分钟就回复了", "客服让我等了一个小时"),
        ("", "性价比很高", "价格太贵了"),
        ("", "价格很实惠", "白花钱"),
        ("", "安装两分钟就搞定了", "安装特别麻烦"),
        ("", "用起来很方便", "用起来很别扭"),
        ("", "实物比图片还好看", "实物和图片差太多"),
        ("", "一点也不差", "不值这个价"),
        ("", "挑不出毛病", "跟描述的不一样"),
        ("", "没有让我失望", "用了三天就坏了"),
        ("heat", "加热很快", "加热特别慢"),
        ("heat", "外壳一点都不烫", "外壳烫得没法碰"),
        ("", "材质柔软舒服", "材质粗糙还有异味"),
    ],
    "intensifiers": ["", "", "", "说实话", "确实", "真的"],
    "and": ["，", "，而且", "，还有"],
    "contra_first": ["虽然{c}，但是{m}", "{c}，不过{m}", "尽管{c}，{m}"],
    "contra_last": ["{m}，就是{c}", "{m}，唯一的缺点是{c}", "{m}，只可惜{c}"],
    "verdicts": {
        "positive": ["会回购的。", "强烈推荐！", "五星好评。", "非常满意。", "很喜欢！", "总体来说很值。"],
        "negative": ["要求退款。", "不推荐。", "一星差评。", "非常失望。", "已经退货了。", "总体来说很差。"],
    },
}

for _lang in (_EN, _ZH):  # the clauses of each sentiment, in order: [(tag, text)]
    _lang["positive"] = [(tag, pos) for tag, pos, _ in _lang["clauses"]]
    _lang["negative"] = [(tag, neg) for tag, _, neg in _lang["clauses"]]


def _clauses(v: dict, sentiment: str, tags: str) -> list[str]:
    return [text for tag, text in v[sentiment] if not tag or tag in tags.split()]


def _review(rng: random.Random, lang: str, label: str) -> str:
    """One review with overall sentiment `label`."""
    v = _EN if lang == "en" else _ZH
    other = LABELS[1 - LABELS.index(label)]
    product, tags = rng.choice(v["products"])
    n_main = rng.choice((1, 2, 2, 3))
    main = rng.sample(_clauses(v, label, tags), n_main)
    body = rng.choice(v["intensifiers"]) + main[0] + "".join(rng.choice(v["and"]) + c for c in main[1:])
    mixed = rng.random() < 0.35
    if mixed:  # one aspect of the opposite sentiment; the main clauses carry the emphasis
        form = rng.choice(v["contra_first"] + v["contra_last"])
        body = form.format(c=rng.choice(_clauses(v, other, tags)), m=body)
    verdict = rng.choice(v["verdicts"][label]) if rng.random() < 0.6 else ""
    opener = rng.choice(v["openers"]).format(p=product)
    if lang == "en":
        sentence = body[0].upper() + body[1:] + rng.choice((".", ".", "!", "..."))
        text = " ".join(part for part in (opener, sentence, verdict) if part)
        return text.lower() if rng.random() < 0.1 else text
    return opener + body + rng.choice(("。", "。", "！", "…")) + verdict


def _dirty_rows(rng: random.Random, clean: list[dict], n: int) -> list[dict]:
    """`n` rows the clean stage must reject or fix, cycling through the kinds."""
    kinds = ["empty_text", "missing_label", "duplicate", "html", "empty_label", "duplicate", "overlong", "blank_text"]
    rows = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        source = clean[rng.randrange(len(clean))]
        if kind == "empty_text":
            rows.append({"text": "", "label": source["label"]})
        elif kind == "blank_text":
            rows.append({"text": " \t ", "label": source["label"]})
        elif kind == "missing_label":
            rows.append({"text": _review(rng, "en" if i % 2 else "zh", "positive") + " (unlabelled)"})
        elif kind == "empty_label":
            rows.append({"text": _review(rng, "zh" if i % 2 else "en", "negative") + " (no label)", "label": ""})
        elif kind == "duplicate":
            rows.append(dict(source))
        elif kind == "overlong":
            rows.append(
                {"text": " ".join([source["text"]] * (2400 // len(source["text"]) + 2)), "label": source["label"]}
            )
        else:  # html: fixable, kept after cleaning
            label = LABELS[i % 2]
            rows.append({"text": f"{_review(rng, 'en', label)}<br /><br />{_review(rng, 'en', label)}", "label": label})
    return rows


def make_reviews(n_rows: int, seed: int = 42, dirty_fraction: float = 0.04) -> list[dict]:
    """`n_rows` rows {"text", "label"}: balanced labels, half Chinese, a few dirty rows, shuffled."""
    rng = random.Random(seed)
    n_dirty = max(len(LABELS), round(n_rows * dirty_fraction)) if dirty_fraction > 0 else 0
    clean: list[dict] = []
    seen: set[str] = set()
    attempts = 0
    while len(clean) < n_rows - n_dirty:
        i = len(clean)
        label, lang = LABELS[i % 2], ("en", "zh")[(i // 2) % 2]
        text = _review(rng, lang, label)
        attempts += 1
        if text in seen and attempts < 50 * n_rows:  # keep generated reviews distinct
            continue
        seen.add(text)
        clean.append({"text": text, "label": label})
    rows = clean + _dirty_rows(rng, clean, n_dirty)
    rng.shuffle(rows)
    return rows


def generate_reviews(out_path: str, n_rows: int = 500, seed: int = 42) -> dict:
    """Stage entry point: write the generated set as JSONL."""
    rows = make_reviews(n_rows, seed)
    write_jsonl(out_path, rows)
    return {"rows": len(rows)}
