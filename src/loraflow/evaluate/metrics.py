"""Text and classification metrics that are right for Chinese, English and mixed text.

No torch and no model hub: BLEU is sacrebleu's corpus BLEU (its `zh` tokenizer whenever the
references contain CJK text, else `13a`: decided on the references alone, so every system scored on
the same test rows gets the same tokenisation and their BLEU scores stay comparable); ROUGE is
rouge-score with `CJKTokenizer`, which keeps every CJK character as a token (rouge-score's default
tokenizer drops them and scores any Chinese pair 0.0).
All scores are on a 0-100 scale.
"""

from __future__ import annotations

import itertools
import math
import re
import unicodedata
from functools import lru_cache

# CJK ideographs (URO, Ext A, Ext B-H, compatibility + supplement), 々 and 〇, Hiragana, Katakana
# (incl. phonetic extensions; the middle dot ・ U+30FB is punctuation and left out), Hangul jamo,
# compatibility jamo and syllables.
_CJK_CLASS = (
    "\u3005\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
    "\u3041-\u30fa\u30fc-\u30ff\u31f0-\u31ff"
    "\u1100-\u11ff\u3131-\u318e\uac00-\ud7af"
)
_CJK = re.compile(f"[{_CJK_CLASS}]")
# One CJK character, or a run of letters/digits (no underscore) that contains no CJK character.
_TOKEN = re.compile(f"[{_CJK_CLASS}]|(?:(?![{_CJK_CLASS}])[^\\W_])+")
_TRAILING_PUNCT = re.compile(r"[\s.!?,;:。！？，；：、…]+$")
_ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


def has_cjk(text: str) -> bool:
    """True if `text` contains a CJK ideograph, kana or Hangul."""
    return bool(_CJK.search(text))


class CJKTokenizer:
    """rouge-score tokenizer: NFKC + lowercase; each CJK character is a token, letter/digit runs are
    words ("qwen2.5中文" -> ["qwen2", "5", "中", "文"]); punctuation and whitespace are dropped."""

    def tokenize(self, text: str) -> list[str]:
        return _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(_ROUGE_KEYS), tokenizer=CJKTokenizer())


def _check(hyps: list, refs: list) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"length mismatch: {len(hyps)} hypotheses/predictions but {len(refs)} references/labels")


def bleu_tokenize(refs: list[str]) -> str:
    """sacrebleu tokenizer for a test set: `zh` when any reference has CJK text, else `13a`."""
    return "zh" if any(has_cjk(t) for t in refs) else "13a"


def bleu(hyps: list[str], refs: list[str]) -> float:
    """sacrebleu corpus BLEU; 0.0 for an empty corpus (empty hypotheses are fine)."""
    import sacrebleu

    _check(hyps, refs)
    if not hyps:
        return 0.0
    return float(sacrebleu.corpus_bleu(list(hyps), [list(refs)], tokenize=bleu_tokenize(refs)).score)


def rouge(hyps: list[str], refs: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 over (hyp, ref) pairs."""
    _check(hyps, refs)
    if not hyps:
        return dict.fromkeys(_ROUGE_KEYS, 0.0)
    scores = [_scorer().score(r, h) for h, r in zip(hyps, refs)]
    return {k: 100 * sum(s[k].fmeasure for s in scores) / len(scores) for k in _ROUGE_KEYS}


def normalize_answer(text: str) -> str:
    """NFKC, casefold, collapse whitespace, strip trailing punctuation (incl. 。！？)."""
    text = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return _TRAILING_PUNCT.sub("", text)


def exact_match(hyps: list[str], refs: list[str]) -> float:
    """Percent of pairs equal after `normalize_answer`."""
    _check(hyps, refs)
    if not hyps:
        return 0.0
    return 100 * sum(normalize_answer(h) == normalize_answer(r) for h, r in zip(hyps, refs)) / len(hyps)


def perplexity(mean_nll: float) -> float:
    """exp(mean NLL), inf past 700 where exp would overflow."""
    return math.exp(mean_nll) if mean_nll <= 700 else float("inf")


def accuracy_macro_f1(preds: list, labels: list) -> dict[str, float]:
    """Accuracy and macro-F1 over the classes seen in labels or predictions."""
    _check(preds, labels)
    if not labels:
        return {"accuracy": 0.0, "macro_f1": 0.0}
    pairs = list(zip(preds, labels))
    f1s = []
    for cls in set(labels) | set(preds):  # every class here has support or predictions
        tp = sum(p == cls and y == cls for p, y in pairs)
        fp = sum(p == cls and y != cls for p, y in pairs)
        fn = sum(p != cls and y == cls for p, y in pairs)
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return {"accuracy": 100 * sum(p == y for p, y in pairs) / len(pairs), "macro_f1": 100 * sum(f1s) / len(f1s)}


def pairwise_agreement(answers: list[str]) -> float:
    """Mean pairwise ROUGE-L F1 among K answers to one question (1 -> 100.0, 0 -> nan)."""
    if not answers:
        return float("nan")
    if len(answers) == 1:
        return 100.0
    pairs = list(itertools.combinations(answers, 2))
    return 100 * sum(_scorer().score(a, b)["rougeL"].fmeasure for a, b in pairs) / len(pairs)


def row_scores(hyps: list[str], refs: list[str]) -> list[dict]:
    """Per-row scores whose means are `text_metrics` (ROUGE F1 and exact match, 0-100) plus sacrebleu's
    per-sentence BLEU statistics (`bleu_stats`), from which the table stage bootstraps corpus BLEU."""
    from loraflow.report.stats import bleu_stats

    _check(hyps, refs)
    if not hyps:
        return []
    stats = bleu_stats(hyps, refs, bleu_tokenize(refs))
    out = []
    for h, r, st in zip(hyps, refs, stats):
        s = _scorer().score(r, h)
        out.append(
            {
                **{k: 100 * s[k].fmeasure for k in _ROUGE_KEYS},
                "exact_match": 100.0 * (normalize_answer(h) == normalize_answer(r)),
                "bleu_stats": [int(x) for x in st],
            }
        )
    return out


def text_metrics(hyps: list[str], refs: list[str]) -> dict[str, float]:
    """bleu, rouge1, rouge2, rougeL and exact_match in one dict."""
    _check(hyps, refs)
    return {"bleu": bleu(hyps, refs), **rouge(hyps, refs), "exact_match": exact_match(hyps, refs)}
