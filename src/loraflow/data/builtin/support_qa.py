"""Built-in training data: a seeded bilingual QA set about a fictional company.

The company ("Lumora Home" / "洛摩家居"), its products and its policies are
invented, so the base model cannot know the answers and fine-tuning measurably
helps.  Roughly half the rows are Chinese, half English.  A small, known share
of rows is deliberately dirty (mojibake, HTML, control characters, duplicates,
...) so that the cleaning step has something real to catch; which rows are
dirty, and how, is returned by :func:`generate_dataset`, never written into the
rows themselves.

Pure standard library, so importing it is cheap.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import warnings
from dataclasses import dataclass

__all__ = ["DIRTY_KINDS", "generate_dataset", "main"]

BRAND_EN = "Lumora"
BRAND_ZH = "洛摩"
COMPANY_EN = "Lumora Home"
COMPANY_ZH = "洛摩家居"
USD_TO_CNY = 7.2

#: Dirty kinds in the order the dirty budget is handed out.
DIRTY_KINDS = (
    "mojibake",
    "html",
    "control",
    "symbol_run",
    "symbol_only",
    "empty",
    "exact_dup",
    "near_dup",
    "overlong",
    "too_short",
)
#: Kinds that copy an existing clean row instead of a fresh question.
_DUP_KINDS = ("exact_dup", "near_dup")
_MIN_ROWS_FOR_ALL_KINDS = 200

# ---------------------------------------------------------------------------
# Catalogue vocabulary
# ---------------------------------------------------------------------------

# (English name, Chinese name, name suffix, spec kind, spec range, USD price range)
# spec range is (low, high, step) in tenths of the unit, so capacities stay exact.
_CATEGORIES = (
    ("blender", "破壁料理机", "Blend", "power", (6000, 15000, 500), (79, 249)),
    ("air purifier", "空气净化器", "Pure", "power", (300, 900, 50), (129, 399)),
    ("electric kettle", "电热水壶", "Boil", "capacity", (10, 18, 1), (29, 89)),
    ("robot vacuum", "扫地机器人", "Sweep", "battery", (26000, 52000, 2000), (199, 599)),
    ("desk lamp", "台灯", "Glow", "power", (60, 180, 10), (25, 99)),
    ("humidifier", "加湿器", "Mist", "capacity", (25, 60, 5), (39, 129)),
    ("rice cooker", "电饭煲", "Cook", "capacity", (30, 50, 5), (59, 199)),
    ("coffee maker", "咖啡机", "Brew", "power", (9000, 15000, 500), (89, 349)),
    ("tower fan", "塔扇", "Breeze", "power", (350, 600, 50), (49, 149)),
    ("space heater", "取暖器", "Warm", "power", (10000, 22000, 1000), (49, 179)),
)
_PRODUCTS_PER_CATEGORY = 4
_NAME_PREFIXES = ("Aero", "Nova", "Lumi", "Terra", "Zephyr", "Halo", "Pura", "Vela", "Orbi", "Kira", "Sola", "Mira")
_MODEL_CODES = ("X2", "S5", "Pro", "Mini", "M3", "Max", "Lite", "One", "Plus", "S7", "X9", "Air")
_COLOURS = (
    ("Midnight Black", "午夜黑"),
    ("Pearl White", "珍珠白"),
    ("Sage Green", "鼠尾草绿"),
    ("Sky Blue", "天空蓝"),
    ("Sand Beige", "沙丘米"),
    ("Coral Pink", "珊瑚粉"),
    ("Graphite Grey", "石墨灰"),
    ("Amber Orange", "琥珀橙"),
)
_RETURN_DAYS = (15, 30, 45, 60, 90)
_CITIES = (("Port Calder", "卡德港"), ("Elmsford Bay", "榆福湾"), ("Northgate Vale", "北门谷"), ("Wrenhaven", "鹪鹩港"))

# spec kind -> (English answer phrase, Chinese answer phrase, English unit, Chinese unit)
_SPEC_PHRASES = {
    "power": ("a rated power of", "额定功率为", "watts", "瓦"),
    "capacity": ("a capacity of", "容量为", "litres", "升"),
    "battery": ("a battery capacity of", "电池容量为", "mAh", "毫安时"),
}

# ---------------------------------------------------------------------------
# Question and answer templates ({name} is the bare product name, e.g. "AeroBlend X2")
# ---------------------------------------------------------------------------

_PRODUCT_TEMPLATES = {
    "price": {
        "en_a": "The Lumora {name} costs ${usd} and comes with a {warranty}-year warranty.",
        "zh_a": "洛摩 {name} 的售价为 {cny} 元，保修期为 {warranty} 年。",
        "en_q": (
            "How much does the Lumora {name} cost, and what is its warranty?",
            "What is the price and warranty period of the Lumora {name}?",
            "Tell me the price and warranty of the {name} from Lumora Home.",
            "How expensive is the Lumora {name} and how long is it covered by warranty?",
        ),
        "zh_q": (
            "洛摩 {name} 多少钱？保修多久？",
            "洛摩 {name} 的价格和保修期是多少？",
            "请问洛摩家居的 {name} 售价多少，保修几年？",
            "买一台洛摩 {name} 要花多少钱，保修期有多长？",
        ),
    },
    "returns": {
        "en_a": "You can return the Lumora {name} within {days} days of delivery for a full refund.",
        "zh_a": "洛摩 {name} 自签收之日起 {days} 天内可以退货并全额退款。",
        "en_q": (
            "What is the return window for the Lumora {name}?",
            "How many days do I have to return the Lumora {name}?",
            "Until when can I return the Lumora {name} after delivery?",
            "How long is the return period on the {name} from Lumora Home?",
        ),
        "zh_q": (
            "洛摩 {name} 的退货期限是多久？",
            "洛摩 {name} 收到后多少天内可以退货？",
            "请问洛摩家居的 {name} 支持几天无理由退货？",
            "我买的洛摩 {name} 还能退吗？退货期是几天？",
        ),
    },
    "colours": {
        "en_a": "The Lumora {name} is available in {n_en} colours: {colours_en}.",
        "zh_a": "洛摩 {name} 有{colours_zh}{n_zh}种颜色可选。",
        "en_q": (
            "What colours does the Lumora {name} come in?",
            "Which colour options are available for the Lumora {name}?",
            "Is the Lumora {name} available in different colours?",
            "In what colours can I buy the {name} from Lumora Home?",
        ),
        "zh_q": (
            "洛摩 {name} 有哪些颜色？",
            "洛摩 {name} 有几种颜色可以选？",
            "请问洛摩家居的 {name} 提供哪些配色？",
            "洛摩 {name} 都有什么颜色的款式？",
        ),
    },
    "launch": {
        "en_a": "Lumora Home first launched the {name} in {year}.",
        "zh_a": "洛摩家居于 {year} 年首次推出 {name}。",
        "en_q": (
            "When was the Lumora {name} launched?",
            "What year did Lumora Home release the {name}?",
            "When did the Lumora {name} first come out?",
            "In which year was the Lumora {name} introduced?",
        ),
        "zh_q": (
            "洛摩 {name} 是什么时候发布的？",
            "洛摩家居哪一年推出了 {name}？",
            "洛摩 {name} 最早是哪年上市的？",
            "请问洛摩 {name} 的上市年份是？",
        ),
    },
    "category": {
        "en_a": "The Lumora {name} is {article} {category_en} made by Lumora Home.",
        "zh_a": "洛摩 {name} 是洛摩家居推出的一款{category_zh}。",
        "en_q": (
            "What kind of product is the Lumora {name}?",
            "What is the Lumora {name}?",
            "What type of appliance is the {name} from Lumora Home?",
            "Which product category does the Lumora {name} belong to?",
        ),
        "zh_q": (
            "洛摩 {name} 是什么产品？",
            "洛摩 {name} 属于哪一类产品？",
            "请问洛摩家居的 {name} 是做什么用的？",
            "洛摩 {name} 是哪种家电？",
        ),
    },
}

_SPEC_TEMPLATES = {
    "en_a": "The Lumora {name} has {spec_en} {value} {unit_en}.",
    "zh_a": "洛摩 {name} 的{spec_zh} {value} {unit_zh}。",
    "en_q": {
        "power": (
            "What is the power rating of the Lumora {name}?",
            "How many watts does the Lumora {name} use?",
            "How powerful is the Lumora {name}?",
            "What is the wattage of the {name} from Lumora Home?",
        ),
        "capacity": (
            "What is the capacity of the Lumora {name}?",
            "How many litres does the Lumora {name} hold?",
            "How much can the Lumora {name} hold?",
            "What size is the {name} from Lumora Home in litres?",
        ),
        "battery": (
            "What is the battery capacity of the Lumora {name}?",
            "How big is the battery in the Lumora {name}?",
            "How many mAh is the battery of the Lumora {name}?",
            "What battery does the {name} from Lumora Home have?",
        ),
    },
    "zh_q": {
        "power": (
            "洛摩 {name} 的功率是多少？",
            "洛摩 {name} 的额定功率有多大？",
            "请问洛摩家居的 {name} 是多少瓦的？",
            "洛摩 {name} 耗电功率是几瓦？",
        ),
        "capacity": (
            "洛摩 {name} 的容量是多少？",
            "洛摩 {name} 能装多少升？",
            "请问洛摩家居的 {name} 容量有多大？",
            "洛摩 {name} 是几升的？",
        ),
        "battery": (
            "洛摩 {name} 的电池容量是多少？",
            "洛摩 {name} 的电池有多大？",
            "请问洛摩家居的 {name} 电池是多少毫安时的？",
            "洛摩 {name} 配的电池容量有多少？",
        ),
    },
}

_POLICY_TEMPLATES = {
    "shipping": {
        "en_a": "Lumora Home ships standard orders within {ship_min} to {ship_max} business days.",
        "zh_a": "洛摩家居的标准订单会在 {ship_min} 至 {ship_max} 个工作日内发货。",
        "en_q": (
            "How long does Lumora Home take to ship an order?",
            "When will my Lumora Home order be shipped?",
            "What is the shipping time for Lumora Home orders?",
            "How many days does Lumora Home need to send out a standard order?",
        ),
        "zh_q": (
            "洛摩家居下单后多久发货？",
            "洛摩家居的订单一般几天能发出？",
            "请问洛摩家居的发货时间是多久？",
            "在洛摩家居买东西，标准订单多久发货？",
        ),
    },
    "free_shipping": {
        "en_a": "Lumora Home offers free shipping on all orders over ${free_usd}.",
        "zh_a": "洛摩家居的订单满 {free_cny} 元即可享受免费配送。",
        "en_q": (
            "Does Lumora Home offer free shipping?",
            "What is the minimum order for free shipping at Lumora Home?",
            "How much do I need to spend to get free delivery from Lumora Home?",
            "Is there a free shipping threshold at Lumora Home?",
        ),
        "zh_q": (
            "洛摩家居包邮吗？",
            "洛摩家居满多少钱包邮？",
            "在洛摩家居买多少钱可以免运费？",
            "请问洛摩家居的免运费门槛是多少？",
        ),
    },
    "service_hours": {
        "en_a": "Lumora Home customer service is available from {open}:00 to {close}:00, {days_en}.",
        "zh_a": "洛摩家居客服的服务时间为{days_zh} {open}:00 至 {close}:00。",
        "en_q": (
            "What are Lumora Home's customer service hours?",
            "When can I contact Lumora Home customer service?",
            "What time does Lumora Home customer support open and close?",
            "Is Lumora Home customer service available in the evening?",
        ),
        "zh_q": (
            "洛摩家居客服几点上班？",
            "洛摩家居的客服工作时间是什么时候？",
            "什么时间可以联系洛摩家居客服？",
            "请问洛摩家居人工客服的服务时间是？",
        ),
    },
    "hotline": {
        "en_a": "You can reach Lumora Home customer service by calling {phone}.",
        "zh_a": "洛摩家居的客服热线是 {phone}。",
        "en_q": (
            "What is Lumora Home's customer service phone number?",
            "How can I call Lumora Home support?",
            "What number do I dial to reach Lumora Home?",
            "Does Lumora Home have a customer hotline?",
        ),
        "zh_q": (
            "洛摩家居的客服电话是多少？",
            "怎么打电话联系洛摩家居？",
            "洛摩家居有客服热线吗？",
            "请问洛摩家居的服务热线号码是？",
        ),
    },
    "return_policy": {
        "en_a": "Unused Lumora Home products in their original packaging can be returned, "
        "and refunds are issued within {refund_days} business days.",
        "zh_a": "未使用且包装完好的洛摩家居商品可以退货，退款会在 {refund_days} 个工作日内退回。",
        "en_q": (
            "What is Lumora Home's return policy?",
            "How does returning a product to Lumora Home work?",
            "How long does a Lumora Home refund take?",
            "Can I return an unused Lumora Home product?",
        ),
        "zh_q": (
            "洛摩家居的退货政策是什么？",
            "在洛摩家居怎么退货？",
            "洛摩家居退款要多久到账？",
            "洛摩家居没用过的商品可以退吗？",
        ),
    },
    "points": {
        "en_a": "Lumora Club members earn points worth {points_pct}% of every purchase, "
        "which can be used on their next order.",
        "zh_a": "洛摩会员每笔消费可获得订单金额 {points_pct}% 的积分，可在下次购物时抵扣。",
        "en_q": (
            "How do Lumora Club membership points work?",
            "How many points do Lumora Home members earn?",
            "What do I get from the Lumora Club loyalty programme?",
            "Can I earn points when shopping at Lumora Home?",
        ),
        "zh_q": (
            "洛摩会员积分怎么算？",
            "洛摩家居会员消费能得多少积分？",
            "洛摩会员积分有什么用？",
            "在洛摩家居购物可以攒积分吗？",
        ),
    },
    "company": {
        "en_a": "Lumora Home was founded in {founded} and is headquartered in {city_en}.",
        "zh_a": "洛摩家居成立于 {founded} 年，总部位于{city_zh}。",
        "en_q": (
            "When was Lumora Home founded?",
            "Where is Lumora Home based?",
            "Tell me about the history of Lumora Home.",
            "Where are Lumora Home's headquarters and when did it start?",
        ),
        "zh_q": (
            "洛摩家居是哪一年成立的？",
            "洛摩家居的总部在哪里？",
            "介绍一下洛摩家居的来历。",
            "洛摩家居成立多久了，总部在哪？",
        ),
    },
    "warranty_claim": {
        "en_a": "To make a warranty claim, send Lumora Home your order number and a photo of the fault; "
        "a replacement ships within {replace_days} business days.",
        "zh_a": "申请保修时，请向洛摩家居提供订单号和故障照片，替换件会在 {replace_days} 个工作日内寄出。",
        "en_q": (
            "How do I make a warranty claim with Lumora Home?",
            "My Lumora product is broken, what should I do?",
            "What is the warranty claim process at Lumora Home?",
            "How fast does Lumora Home send a warranty replacement?",
        ),
        "zh_q": (
            "洛摩家居怎么申请保修？",
            "我的洛摩产品坏了怎么办？",
            "洛摩家居的保修流程是怎样的？",
            "洛摩家居保修换新要多久？",
        ),
    },
}

# ---------------------------------------------------------------------------
# Dirty-row vocabulary
# ---------------------------------------------------------------------------

# Controls that mean nothing inside a word (no line-break controls such as VT/FF, which the clean stage
# turns into line breaks): the clean stage removes them, so each dirty row cleans back to its original.
_CONTROL_CHARS = ("\x00", "\x01", "\x02", "\x03", "\x04", "\x05", "\x06", "\x07", "\x08", "\x0e", "\x1b", "\u200b", "\ufeff")
_SYMBOL_RUNS = ("!!!!!!!!!!", "~~~~~~~~", "？？？？？？", "########", "！！！！！！！", "........", "~~~~~~~~~~~~")
_SYMBOL_ONLY = ("??????", "……", "----", "!!!!", "。。。。", "***", "？？？", "~~~~~", "——", "#####", "?!?!", "......")
_EMPTY = ("", "   ", "\n\t", " \n ")
_TOO_SHORT = {"en": ("a", "Y", "k", "x"), "zh": ("是", "好", "嗯", "对")}
_OVERLONG_CHARS = 6000
# json.dumps(ensure_ascii=False) leaves these raw, but str.splitlines() breaks on them.
_LINE_BREAKERS = ("\x85", "\u2028", "\u2029")


# ---------------------------------------------------------------------------
# Catalogue
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Product:
    """One invented product and its facts."""

    name: str
    category_en: str
    category_zh: str
    usd: int
    cny: int
    warranty: int
    return_days: int
    colours: tuple[tuple[str, str], ...]
    year: int
    spec_kind: str
    spec_value: str


def usd_to_cny(usd: int) -> int:
    """Chinese shelf price for a USD price: x 7.2, rounded to the nearest 10, minus 1."""
    return int(round(usd * USD_TO_CNY / 10)) * 10 - 1


def _format_tenths(tenths: int) -> str:
    """1.5 for 15, 3 for 30 (no float noise)."""
    whole, frac = divmod(tenths, 10)
    return f"{whole}.{frac}" if frac else str(whole)


def _make_product(rng: random.Random, category: tuple, prefix: str) -> Product:
    """Draw the attributes of one product of `category`."""
    cat_en, cat_zh, suffix, spec_kind, (lo, hi, step), (usd_lo, usd_hi) = category
    usd = rng.randrange(usd_lo // 10, usd_hi // 10 + 1) * 10 + 9
    return Product(
        name=f"{prefix}{suffix} {rng.choice(_MODEL_CODES)}",
        category_en=cat_en,
        category_zh=cat_zh,
        usd=usd,
        cny=usd_to_cny(usd),
        warranty=rng.randint(1, 5),
        return_days=rng.choice(_RETURN_DAYS),
        colours=tuple(rng.sample(_COLOURS, rng.randint(2, 3))),
        year=rng.randint(2018, 2024),
        spec_kind=spec_kind,
        spec_value=_format_tenths(rng.randrange(lo, hi + 1, step)),
    )


def make_catalogue(rng: random.Random) -> list[Product]:
    """40 products, 4 per category, names unique."""
    products = []
    for category in _CATEGORIES:
        for prefix in rng.sample(_NAME_PREFIXES, _PRODUCTS_PER_CATEGORY):
            products.append(_make_product(rng, category, prefix))
    return products


def make_policy(rng: random.Random) -> dict:
    """Company-wide facts (template fields of `_POLICY_TEMPLATES`)."""
    ship_min = rng.randint(1, 2)
    free_usd = rng.choice((50, 60, 75, 80, 100))
    open_h = rng.choice((8, 9, 10))
    every_day = rng.random() < 0.5
    city_en, city_zh = rng.choice(_CITIES)
    return {
        "ship_min": ship_min,
        "ship_max": ship_min + rng.randint(2, 4),
        "free_usd": free_usd,
        "free_cny": int(round(free_usd * USD_TO_CNY / 10)) * 10,
        "open": open_h,
        "close": open_h + rng.choice((9, 10, 11, 12)),
        "days_en": "every day of the week" if every_day else "Monday to Saturday",
        "days_zh": "每天" if every_day else "周一至周六",
        "phone": f"400-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
        "refund_days": rng.randint(3, 7),
        "points_pct": rng.choice((1, 2, 3, 5)),
        "founded": rng.randint(2008, 2016),
        "city_en": city_en,
        "city_zh": city_zh,
        "replace_days": rng.randint(3, 10),
    }


# ---------------------------------------------------------------------------
# Facts -> QA pool
# ---------------------------------------------------------------------------


def _join_en(items: list[str]) -> str:
    """'A and B' / 'A, B and C'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _join_zh(items: list[str]) -> str:
    """'A和B' / 'A、B和C'."""
    return items[0] if len(items) == 1 else "、".join(items[:-1]) + "和" + items[-1]


def _product_fields(p: Product) -> dict:
    """Template fields for one product."""
    spec_en, spec_zh, unit_en, unit_zh = _SPEC_PHRASES[p.spec_kind]
    return {
        "name": p.name,
        "usd": p.usd,
        "cny": p.cny,
        "warranty": p.warranty,
        "days": p.return_days,
        "year": p.year,
        "n_en": {2: "two", 3: "three"}[len(p.colours)],
        "n_zh": {2: "两", 3: "三"}[len(p.colours)],
        "colours_en": _join_en([en for en, _ in p.colours]),
        "colours_zh": _join_zh([zh for _, zh in p.colours]),
        "article": "an" if p.category_en[0] in "aeiou" else "a",
        "category_en": p.category_en,
        "category_zh": p.category_zh,
        "spec_en": spec_en,
        "spec_zh": spec_zh,
        "unit_en": unit_en,
        "unit_zh": unit_zh,
        "value": p.spec_value,
    }


def _expand(template: dict, fields: dict, en_q=None, zh_q=None) -> tuple[list, list]:
    """(en pairs, zh pairs): every question paraphrase with the fact's one answer."""
    en_a = template["en_a"].format(**fields)
    zh_a = template["zh_a"].format(**fields)
    en = [(q.format(**fields), en_a) for q in (en_q or template["en_q"])]
    zh = [(q.format(**fields), zh_a) for q in (zh_q or template["zh_q"])]
    return en, zh


def build_pool(products: list[Product], policy: dict) -> dict[str, list[tuple[str, str]]]:
    """All (question, answer) pairs per language, in a fixed order."""
    pool: dict[str, list[tuple[str, str]]] = {"en": [], "zh": []}

    def add(pairs: tuple[list, list]) -> None:
        pool["en"].extend(pairs[0])
        pool["zh"].extend(pairs[1])

    for p in products:
        fields = _product_fields(p)
        for template in _PRODUCT_TEMPLATES.values():
            add(_expand(template, fields))
        add(_expand(_SPEC_TEMPLATES, fields, _SPEC_TEMPLATES["en_q"][p.spec_kind], _SPEC_TEMPLATES["zh_q"][p.spec_kind]))
    for template in _POLICY_TEMPLATES.values():
        add(_expand(template, policy))
    return pool


# Facts: the values and names an answer must state (the fact-level metric, loraflow.evaluate.answer_check),
# per template and language, as template fields. A list field gives one fact per item.
_FACT_FIELDS = {
    "price": (("usd", "warranty"), ("cny", "warranty")),
    "returns": (("days",), ("days",)),
    "colours": (("colour_names_en",), ("colour_names_zh",)),
    "launch": (("year",), ("year",)),
    "category": (("category_en",), ("category_zh",)),
    "spec": (("value",), ("value",)),
    "shipping": (("ship_min", "ship_max"), ("ship_min", "ship_max")),
    "free_shipping": (("free_usd",), ("free_cny",)),
    "service_hours": (("open", "close", "days_en"), ("open", "close", "days_zh")),
    "hotline": (("phone",), ("phone",)),
    "return_policy": (("refund_days",), ("refund_days",)),
    "points": (("points_pct",), ("points_pct",)),
    "company": (("founded", "city_en"), ("founded", "city_zh")),
    "warranty_claim": (("replace_days",), ("replace_days",)),
}


def _fact_values(fields: dict, keys: tuple) -> list[str]:
    out = []
    for k in keys:
        v = fields[k]
        out.extend(str(x) for x in v) if isinstance(v, (list, tuple)) else out.append(str(v))
    return out


def fact_index(products: list[Product], policy: dict) -> dict[tuple[str, str], list[str]]:
    """(lang, answer) -> the facts that answer states, for every answer of the pool (each answer is
    one fact of one product or of the company, so it identifies its facts)."""
    index = {}

    def add(name: str, template: dict, fields: dict) -> None:
        for lang, keys in zip(("en", "zh"), _FACT_FIELDS[name]):
            index[(lang, template[f"{lang}_a"].format(**fields))] = _fact_values(fields, keys)

    for p in products:
        fields = {**_product_fields(p), "colour_names_en": [en for en, _ in p.colours], "colour_names_zh": [zh for _, zh in p.colours]}
        for name, template in _PRODUCT_TEMPLATES.items():
            add(name, template, fields)
        add("spec", _SPEC_TEMPLATES, fields)
    for name, template in _POLICY_TEMPLATES.items():
        add(name, template, policy)
    return index


def _with_facts(row: dict, facts: list[str] | None) -> dict:
    if facts:
        row["facts"] = list(facts)
    return row


# ---------------------------------------------------------------------------
# Dirty-row makers: maker(clean row, rng, i) -> new dirty row; i is a running
# index that cycles the maker through its variants.
# ---------------------------------------------------------------------------


def _row(lang: str, question: str, answer: str) -> dict:
    return {"lang": lang, "question": question, "answer": answer}


def _sloppy_cp1252(data: bytes) -> str:
    """Decode bytes as Windows-1252, falling back to Latin-1 for its 5 undefined bytes."""
    out = []
    for b in data:
        try:
            out.append(bytes([b]).decode("cp1252"))
        except UnicodeDecodeError:
            out.append(chr(b))
    return "".join(out)


def _typographic_en(text: str) -> str:
    """Give an ASCII English answer some non-ASCII: curly quotes and a ™ sign."""
    return "“" + text[:-1].replace(BRAND_EN, BRAND_EN + "™", 1) + "”" + text[-1:]


def _latin1_mojibake(text: str) -> str:
    """UTF-8 bytes read back as Latin-1 ('洛' -> 'æ´\x9b')."""
    return text.encode("utf-8").decode("latin-1")


def make_mojibake(row: dict, rng: random.Random, i: int) -> dict:
    """UTF-8 text wrongly decoded: Latin-1 for Chinese (every other row: question too), cp1252 for English."""
    if row["lang"] == "zh":
        question = _latin1_mojibake(row["question"]) if i % 2 else row["question"]
        return _row("zh", question, _latin1_mojibake(row["answer"]))
    answer = _sloppy_cp1252(_typographic_en(row["answer"]).encode("utf-8"))
    return _row("en", row["question"], answer)


def _html_variants(answer: str, lang: str) -> list[str]:
    """Several HTML-polluted versions of an answer."""
    brand = BRAND_ZH if lang == "zh" else BRAND_EN
    comma = "，" if lang == "zh" else ", "
    head, sep, tail = answer.partition(comma)
    return [
        f"<p>{answer}</p>",
        f"<p>{head}{sep}<br/>{tail}</p>" if sep else f"<p>{answer}<br/></p>",
        answer.replace(brand, f"<b>{brand}</b>", 1),
        "<p>" + answer.replace(" ", "&nbsp;", 2) + "</p>",
        f"<b>{answer}</b>&nbsp;",
    ]


def make_html(row: dict, rng: random.Random, i: int) -> dict:
    """Answer wrapped in or sprinkled with tags and entities; 'and'/'和' becomes '&amp;'."""
    variants = _html_variants(row["answer"], row["lang"])
    answer = variants[i % len(variants)]
    joiner = "和" if row["lang"] == "zh" else " and "
    return _row(row["lang"], row["question"], answer.replace(joiner, " &amp; ", 1))


def _sprinkle(text: str, rng: random.Random, chars: tuple[str, ...], k: int) -> str:
    """Insert `k` characters drawn from `chars` at random positions."""
    for _ in range(k):
        pos = rng.randint(0, len(text))
        text = text[:pos] + rng.choice(chars) + text[pos:]
    return text


def make_control(row: dict, rng: random.Random, i: int) -> dict:
    """Control and zero-width characters inside the text (every third row: question too)."""
    answer = _sprinkle(row["answer"], rng, _CONTROL_CHARS, rng.randint(1, 3))
    question = _sprinkle(row["question"], rng, _CONTROL_CHARS, 1) if i % 3 == 2 else row["question"]
    return _row(row["lang"], question, answer)


def make_symbol_run(row: dict, rng: random.Random, i: int) -> dict:
    """A run of one repeated symbol: in place of the final mark, or before a middle space."""
    answer, run = row["answer"], _SYMBOL_RUNS[i % len(_SYMBOL_RUNS)]
    spaces = [k for k, c in enumerate(answer) if c == " "]
    if i % 2 or not spaces:
        return _row(row["lang"], row["question"], answer[:-1] + run)
    mid = spaces[len(spaces) // 2]
    return _row(row["lang"], row["question"], answer[:mid] + run + answer[mid:])


def make_symbol_only(row: dict, rng: random.Random, i: int) -> dict:
    """Answer made only of punctuation."""
    return _row(row["lang"], row["question"], _SYMBOL_ONLY[i % len(_SYMBOL_ONLY)])


def make_empty(row: dict, rng: random.Random, i: int) -> dict:
    """Empty or whitespace-only answer."""
    return _row(row["lang"], row["question"], _EMPTY[i % len(_EMPTY)])


def make_overlong(row: dict, rng: random.Random, i: int) -> dict:
    """Answer repeated until it is longer than 6000 characters."""
    sep = "" if row["lang"] == "zh" else " "
    reps = _OVERLONG_CHARS // (len(row["answer"]) + len(sep)) + 2
    return _row(row["lang"], row["question"], sep.join([row["answer"]] * reps))


def make_too_short(row: dict, rng: random.Random, i: int) -> dict:
    """A one-character answer."""
    choices = _TOO_SHORT[row["lang"]]
    return _row(row["lang"], row["question"], choices[i % len(choices)])


def make_exact_dup(row: dict, rng: random.Random, i: int) -> dict:
    """An exact copy of a clean row."""
    return _row(row["lang"], row["question"], row["answer"])


def _fullwidth(text: str) -> str:
    """ASCII -> full-width forms (NFKC maps them back)."""
    return "".join(
        chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else "\u3000" if c == " " else c for c in text
    )


def _fullwidth_digits(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in text)


def _loose_spaces(text: str) -> str:
    return "  " + text.replace(" ", "   ") + " \t"


_NEAR_DUP_TWEAKS = (str.upper, _fullwidth, _fullwidth_digits, _loose_spaces)


def _extra_trailing_punct(text: str, rng: random.Random) -> str:
    """Swap the final punctuation mark for a different (or repeated) one."""
    endings = ("。。", "！", "。 ", "…") if text.endswith("。") else ("...", "!", ". ", ".!")
    return text[:-1] + rng.choice(endings)


def make_near_dup(row: dict, rng: random.Random, i: int) -> dict:
    """A copy equal to the source only after NFKC, casefold, whitespace and trailing-punctuation normalisation."""
    tweak = _NEAR_DUP_TWEAKS[i % len(_NEAR_DUP_TWEAKS)]
    answer = tweak(_extra_trailing_punct(row["answer"], rng))
    return _row(row["lang"], tweak(row["question"]), answer)


_MAKERS = {
    "mojibake": make_mojibake,
    "html": make_html,
    "control": make_control,
    "symbol_run": make_symbol_run,
    "symbol_only": make_symbol_only,
    "empty": make_empty,
    "exact_dup": make_exact_dup,
    "near_dup": make_near_dup,
    "overlong": make_overlong,
    "too_short": make_too_short,
}


# ---------------------------------------------------------------------------
# Assembly and writing
# ---------------------------------------------------------------------------


def dirty_counts(n_rows: int, dirty_fraction: float) -> dict[str, int]:
    """How many rows of each dirty kind; every kind at least once from 200 rows on."""
    n_dirty = int(n_rows * dirty_fraction + 0.5)
    if dirty_fraction > 0 and n_rows >= _MIN_ROWS_FOR_ALL_KINDS:
        n_dirty = max(n_dirty, len(DIRTY_KINDS))
    n_dirty = min(n_dirty, n_rows // 2)
    base, extra = divmod(n_dirty, len(DIRTY_KINDS))
    return {kind: base + (1 if k < extra else 0) for k, kind in enumerate(DIRTY_KINDS)}


def _take(pool: list, start: int, k: int) -> list:
    """k items from `pool` starting at `start`, wrapping round if the pool runs out."""
    return [pool[(start + j) % len(pool)] for j in range(k)]


def _warn_if_pool_too_small(pool: dict, used: dict, counts: dict) -> None:
    """Beyond the pool size questions repeat; say so instead of failing."""
    fresh_dirty = sum(n for kind, n in counts.items() if kind not in _DUP_KINDS)
    needed = sum(used.values()) + fresh_dirty
    available = sum(len(pairs) for pairs in pool.values())
    if needed > available:
        warnings.warn(
            f"synthetic QA pool has {available} distinct pairs but {needed} were asked for; "
            "some questions repeat (unmarked duplicates)",
            stacklevel=3,
        )


def _select_rows(pool: dict, n_clean: int, counts: dict, rng: random.Random, facts: dict | None = None) -> tuple[list, list]:
    """(clean rows, [(kind, dirty row, source row or None)]), unshuffled.

    Fixable and rejected kinds use questions not among the clean rows, so a cleaned
    row is never an accidental duplicate; the dup kinds copy clean rows. `facts`
    ((lang, answer) -> facts, see `fact_index`) gives every row the facts of its pair.
    """
    facts = facts or {}
    shuffled = {lang: rng.sample(pairs, len(pairs)) for lang, pairs in pool.items()}
    n_en = n_clean // 2
    clean = [_with_facts(_row("en", q, a), facts.get(("en", a))) for q, a in _take(shuffled["en"], 0, n_en)]
    clean += [_with_facts(_row("zh", q, a), facts.get(("zh", a))) for q, a in _take(shuffled["zh"], 0, n_clean - n_en)]
    used = {"en": n_en, "zh": n_clean - n_en}
    _warn_if_pool_too_small(pool, used, counts)

    dup_sources = rng.sample(clean, min(len(clean), sum(counts[k] for k in _DUP_KINDS)))
    dirty = []
    for kind in DIRTY_KINDS:
        for i in range(counts[kind]):
            if kind in _DUP_KINDS:
                source = dup_sources.pop() if dup_sources else rng.choice(clean)
                dirty.append((kind, _with_facts(_MAKERS[kind](source, rng, i), source.get("facts")), source))
                continue
            lang = "zh" if i % 2 == 0 else "en"
            q, a = _take(shuffled[lang], used[lang], 1)[0]
            used[lang] += 1
            # i // 2: each language cycles through all of the maker's variants
            dirty.append((kind, _with_facts(_MAKERS[kind](_row(lang, q, a), rng, i // 2), facts.get((lang, a))), None))
    return clean, dirty


def _json_line(row: dict) -> str:
    """One JSONL line; characters that str.splitlines() treats as breaks are escaped."""
    line = json.dumps(row, ensure_ascii=False)
    for ch in _LINE_BREAKERS:
        line = line.replace(ch, f"\\u{ord(ch):04x}")
    return line + "\n"


def write_jsonl_atomic(path: str, rows: list[dict]) -> None:
    """Write rows to a temp file beside `path`, then os.replace it into place."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8", newline="\n") as f:
            f.writelines(_json_line(row) for row in rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def generate_dataset(out_path: str, n_rows: int = 1500, seed: int = 0, dirty_fraction: float = 0.08) -> dict:
    """Write the bilingual QA set to `out_path` (JSONL) and describe its dirty rows.

    Returns {"rows": n_rows, "clean": n_clean, "dirty": {kind: [ids]},
    "dup_of": {dup id: id of the clean row it copies}}.
    """
    if n_rows < 1:
        raise ValueError(f"n_rows must be >= 1, got {n_rows}")
    if not 0 <= dirty_fraction <= 0.5:
        raise ValueError(f"dirty_fraction must be in [0, 0.5], got {dirty_fraction}")
    catalogue_rng = random.Random(f"loraflow-synth:{seed}:catalogue")
    rows_rng = random.Random(f"loraflow-synth:{seed}:rows")

    products, policy = make_catalogue(catalogue_rng), make_policy(catalogue_rng)
    pool = build_pool(products, policy)
    counts = dirty_counts(n_rows, dirty_fraction)
    n_clean = n_rows - sum(counts.values())
    clean, dirty = _select_rows(pool, n_clean, counts, rows_rng, fact_index(products, policy))

    entries = [(None, row, None) for row in clean] + dirty
    rows_rng.shuffle(entries)
    _sources_first(entries)
    width = max(5, len(str(n_rows)))
    for k, (_, row, _) in enumerate(entries, start=1):
        row["id"] = f"syn-{k:0{width}d}"

    write_jsonl_atomic(out_path, [_ordered(row) for _, row, _ in entries])
    return {
        "rows": n_rows,
        "clean": n_clean,
        "dirty": {kind: [row["id"] for k, row, _ in entries if k == kind] for kind in DIRTY_KINDS},
        "dup_of": {row["id"]: src["id"] for _, row, src in entries if src is not None},
    }


def _sources_first(entries: list[tuple]) -> None:
    """Swap each duplicate behind its source, so a first-wins dedup rejects exactly the dup ids."""
    position = {id(row): k for k, (_, row, _) in enumerate(entries)}
    for _, row, source in list(entries):
        if source is None:
            continue
        here, there = position[id(row)], position[id(source)]
        if there > here:
            entries[here], entries[there] = entries[there], entries[here]
            position[id(row)], position[id(source)] = there, here


def _ordered(row: dict) -> dict:
    """Row with keys in the documented order; `facts` last (absent when the pair has none)."""
    out = {"id": row["id"], "lang": row["lang"], "question": row["question"], "answer": row["answer"]}
    if row.get("facts"):
        out["facts"] = row["facts"]
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m loraflow.data.builtin.support_qa --out data.jsonl [--rows N] [--seed S] [--dirty-fraction F]."""
    parser = argparse.ArgumentParser(description="Generate the built-in bilingual Lumora Home QA dataset (JSONL).")
    parser.add_argument("--out", required=True, help="output .jsonl path")
    parser.add_argument("--rows", type=int, default=1500, help="total rows, dirty ones included (default 1500)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--dirty-fraction", type=float, default=0.08, help="share of dirty rows (default 0.08)")
    args = parser.parse_args(argv)
    summary = generate_dataset(args.out, n_rows=args.rows, seed=args.seed, dirty_fraction=args.dirty_fraction)
    n_dirty = {kind: len(ids) for kind, ids in summary["dirty"].items()}
    print(f"wrote {summary['rows']} rows ({summary['clean']} clean) to {args.out}; dirty: {n_dirty}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
