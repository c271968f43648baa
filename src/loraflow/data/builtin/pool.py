"""The built-in data set's question-answer pool: every template filled in for every product, and the facts
each answer states."""

from __future__ import annotations

from loraflow.data.builtin.catalogue import SPEC_PHRASES, Product
from loraflow.data.builtin.templates import POLICY_TEMPLATES, PRODUCT_TEMPLATES, SPEC_TEMPLATES

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
    spec_en, spec_zh, unit_en, unit_zh = SPEC_PHRASES[p.spec_kind]
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
        for template in PRODUCT_TEMPLATES.values():
            add(_expand(template, fields))
        add(_expand(SPEC_TEMPLATES, fields, SPEC_TEMPLATES["en_q"][p.spec_kind], SPEC_TEMPLATES["zh_q"][p.spec_kind]))
    for template in POLICY_TEMPLATES.values():
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
    out: list[str] = []
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
        fields = {
            **_product_fields(p),
            "colour_names_en": [en for en, _ in p.colours],
            "colour_names_zh": [zh for _, zh in p.colours],
        }
        for name, template in PRODUCT_TEMPLATES.items():
            add(name, template, fields)
        add("spec", SPEC_TEMPLATES, fields)
    for name, template in POLICY_TEMPLATES.items():
        add(name, template, policy)
    return index


def with_facts(row: dict, facts: list[str] | None) -> dict:
    if facts:
        row["facts"] = list(facts)
    return row
