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
import random
import warnings

from loraflow.data.builtin.catalogue import make_catalogue, make_policy
from loraflow.data.builtin.dirt import DIRTY_KINDS, DUP_KINDS, MAKERS, dirty_counts, make_row
from loraflow.data.builtin.pool import build_pool, fact_index, with_facts
from loraflow.io import write_jsonl

__all__ = ["DIRTY_KINDS", "generate_dataset", "main"]


def _take(pool: list, start: int, k: int) -> list:
    """k items from `pool` starting at `start`, wrapping round if the pool runs out."""
    return [pool[(start + j) % len(pool)] for j in range(k)]


def _warn_if_pool_too_small(pool: dict, used: dict, counts: dict) -> None:
    """Beyond the pool size questions repeat; say so instead of failing."""
    fresh_dirty = sum(n for kind, n in counts.items() if kind not in DUP_KINDS)
    needed = sum(used.values()) + fresh_dirty
    available = sum(len(pairs) for pairs in pool.values())
    if needed > available:
        warnings.warn(
            f"synthetic QA pool has {available} distinct pairs but {needed} were asked for; "
            "some questions repeat (unmarked duplicates)",
            stacklevel=3,
        )


def _select_rows(
    pool: dict, n_clean: int, counts: dict, rng: random.Random, facts: dict | None = None
) -> tuple[list, list]:
    """(clean rows, [(kind, dirty row, source row or None)]), unshuffled.

    Fixable and rejected kinds use questions not among the clean rows, so a cleaned
    row is never an accidental duplicate; the dup kinds copy clean rows. `facts`
    ((lang, answer) -> facts, see `fact_index`) gives every row the facts of its pair.
    """
    facts = facts or {}
    shuffled = {lang: rng.sample(pairs, len(pairs)) for lang, pairs in pool.items()}
    n_en = n_clean // 2
    clean = [with_facts(make_row("en", q, a), facts.get(("en", a))) for q, a in _take(shuffled["en"], 0, n_en)]
    clean += [
        with_facts(make_row("zh", q, a), facts.get(("zh", a))) for q, a in _take(shuffled["zh"], 0, n_clean - n_en)
    ]
    used = {"en": n_en, "zh": n_clean - n_en}
    _warn_if_pool_too_small(pool, used, counts)

    dup_sources = rng.sample(clean, min(len(clean), sum(counts[k] for k in DUP_KINDS)))
    dirty: list[tuple[str, dict, dict | None]] = []
    for kind in DIRTY_KINDS:
        for i in range(counts[kind]):
            if kind in DUP_KINDS:
                source = dup_sources.pop() if dup_sources else rng.choice(clean)
                dirty.append((kind, with_facts(MAKERS[kind](source, rng, i), source.get("facts")), source))
                continue
            lang = "zh" if i % 2 == 0 else "en"
            q, a = _take(shuffled[lang], used[lang], 1)[0]
            used[lang] += 1
            # i // 2: each language cycles through all of the maker's variants
            dirty.append(
                (kind, with_facts(MAKERS[kind](make_row(lang, q, a), rng, i // 2), facts.get((lang, a))), None)
            )
    return clean, dirty


def generate_dataset(
    out_path: str, n_rows: int = 1500, seed: int = 0, dirty_fraction: float = 0.08, n_products: int = 40
) -> dict:
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

    products = make_catalogue(catalogue_rng, n_products)
    policy = make_policy(catalogue_rng)
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

    write_jsonl(out_path, [_ordered(row) for _, row, _ in entries])
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
    parser.add_argument("--products", type=int, default=40, help="invented products (default 40)")
    parser.add_argument("--dirty-fraction", type=float, default=0.08, help="share of dirty rows (default 0.08)")
    args = parser.parse_args(argv)
    summary = generate_dataset(
        args.out, n_rows=args.rows, seed=args.seed, dirty_fraction=args.dirty_fraction, n_products=args.products
    )
    n_dirty = {kind: len(ids) for kind, ids in summary["dirty"].items()}
    print(f"wrote {summary['rows']} rows ({summary['clean']} clean) to {args.out}; dirty: {n_dirty}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
