"""The invented company of the built-in data set: its products and its company-wide policies."""

from __future__ import annotations

import random
from dataclasses import dataclass

BRAND_EN = "Lumora"
BRAND_ZH = "洛摩"
COMPANY_EN = "Lumora Home"
COMPANY_ZH = "洛摩家居"
USD_TO_CNY = 7.2

# ---------------------------------------------------------------------------
# Catalogue vocabulary
# ---------------------------------------------------------------------------

# (English name, Chinese name, name suffix, spec kind, spec range, USD price range)
# spec range is (low, high, step) in tenths of the unit, so capacities stay exact.
CATEGORIES = (
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
NAME_PREFIXES = ("Aero", "Nova", "Lumi", "Terra", "Zephyr", "Halo", "Pura", "Vela", "Orbi", "Kira", "Sola", "Mira")
MODEL_CODES = ("X2", "S5", "Pro", "Mini", "M3", "Max", "Lite", "One", "Plus", "S7", "X9", "Air")
COLOURS = (
    ("Midnight Black", "午夜黑"),
    ("Pearl White", "珍珠白"),
    ("Sage Green", "鼠尾草绿"),
    ("Sky Blue", "天空蓝"),
    ("Sand Beige", "沙丘米"),
    ("Coral Pink", "珊瑚粉"),
    ("Graphite Grey", "石墨灰"),
    ("Amber Orange", "琥珀橙"),
)
RETURN_DAYS = (15, 30, 45, 60, 90)
CITIES = (("Port Calder", "卡德港"), ("Elmsford Bay", "榆福湾"), ("Northgate Vale", "北门谷"), ("Wrenhaven", "鹪鹩港"))

# spec kind -> (English answer phrase, Chinese answer phrase, English unit, Chinese unit)
SPEC_PHRASES = {
    "power": ("a rated power of", "额定功率为", "watts", "瓦"),
    "capacity": ("a capacity of", "容量为", "litres", "升"),
    "battery": ("a battery capacity of", "电池容量为", "mAh", "毫安时"),
}


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
        name=f"{prefix}{suffix} {rng.choice(MODEL_CODES)}",
        category_en=cat_en,
        category_zh=cat_zh,
        usd=usd,
        cny=usd_to_cny(usd),
        warranty=rng.randint(1, 5),
        return_days=rng.choice(RETURN_DAYS),
        colours=tuple(rng.sample(COLOURS, rng.randint(2, 3))),
        year=rng.randint(2018, 2024),
        spec_kind=spec_kind,
        spec_value=_format_tenths(rng.randrange(lo, hi + 1, step)),
    )


def make_catalogue(rng: random.Random, n_products: int = 40) -> list[Product]:
    """`n_products` products spread over the categories in turn (40: 4 per category), names unique.

    Fewer products means more rows per fact: each fact is then asked in more of its phrasings, so a
    test question is more often about a fact the train split states in other words."""
    if not 1 <= n_products <= len(CATEGORIES) * len(NAME_PREFIXES):
        raise ValueError(f"n_products must be in [1, {len(CATEGORIES) * len(NAME_PREFIXES)}], got {n_products}")
    per_category, extra = divmod(n_products, len(CATEGORIES))
    products = []
    for k, category in enumerate(CATEGORIES):
        for prefix in rng.sample(NAME_PREFIXES, per_category + (k < extra)):
            products.append(_make_product(rng, category, prefix))
    return products


def make_policy(rng: random.Random) -> dict:
    """Company-wide facts (template fields of `POLICY_TEMPLATES`)."""
    ship_min = rng.randint(1, 2)
    free_usd = rng.choice((50, 60, 75, 80, 100))
    open_h = rng.choice((8, 9, 10))
    every_day = rng.random() < 0.5
    city_en, city_zh = rng.choice(CITIES)
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
