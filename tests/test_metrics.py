"""Pinned metric values on small hand-checked pairs (English, Chinese, mixed)."""

from __future__ import annotations

import math

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from loraflow.evaluate.metrics import (
    CJKTokenizer,
    accuracy_macro_f1,
    bleu,
    exact_match,
    has_cjk,
    normalize_answer,
    pairwise_agreement,
    perplexity,
    rouge,
    text_metrics,
)

EN_REFS = ["the cat sat on the mat", "a quick brown fox jumps over the lazy dog", "it is raining today"]
EN_HYPS = ["the cat was sitting on the mat", "the quick brown fox jumped over a lazy dog", "today it rains"]
ZH_REFS = ["猫坐在垫子上。", "今天天气很好，我们去公园散步吧。", "北京是中国的首都"]
ZH_HYPS = ["猫坐在地上", "今天天气不错，我们去公园走走。", "中国的首都是北京"]


def test_has_cjk():
    for text in ["中文", "ひらがな", "カタカナ", "한국어", "㐀", "\uf900", "\U00020000", "abc 中 def"]:
        assert has_cjk(text), text
    for text in ["", "hello world 129", "ＡＢＣ１２３", "café, naïve!"]:
        assert not has_cjk(text), text


def test_tokenizer():
    tok = CJKTokenizer()
    assert tok.tokenize("Hello, World! x2 costs 129.") == ["hello", "world", "x2", "costs", "129"]
    assert tok.tokenize("猫坐在垫子上。") == list("猫坐在垫子上")
    # product names/numbers stay words even when glued to Chinese; full-width is NFKC-normalised
    assert tok.tokenize("Qwen2.5-7B模型售价１２９元") == ["qwen2", "5", "7b", "模", "型", "售", "价", "129", "元"]
    assert tok.tokenize("  ，。！ ") == []


def test_english_identical():
    m = text_metrics(EN_REFS, EN_REFS)
    assert m == pytest.approx({"bleu": 100.0, "rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0, "exact_match": 100.0})


def test_english_partial_rouge_by_hand():
    # hyp: the cat was sitting on the mat (7 tokens) / ref: the cat sat on the mat (6 tokens)
    # ROUGE-1: overlap the x2, cat, on, mat = 5      -> F1 = 2*5/(7+6) = 10/13
    # ROUGE-2: overlap the-cat, on-the, the-mat = 3 of 6 hyp / 5 ref bigrams -> F1 = 2*3/(6+5) = 6/11
    # ROUGE-L: LCS "the cat on the mat" = 5         -> F1 = 10/13
    r = rouge([EN_HYPS[0]], [EN_REFS[0]])
    assert r == pytest.approx({"rouge1": 1000 / 13, "rouge2": 600 / 11, "rougeL": 1000 / 13})


def test_english_bleu_matches_sacrebleu():
    assert bleu(EN_HYPS, EN_REFS) == pytest.approx(sacrebleu.corpus_bleu(EN_HYPS, [EN_REFS]).score)
    assert 0 < bleu(EN_HYPS, EN_REFS) < 100


def test_chinese_rouge_by_hand_and_default_tokenizer_bug():
    hyp, ref = "猫坐在地上", "猫坐在垫子上。"
    # the bug: rouge-score's default tokenizer drops every CJK character
    default = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"]).score(ref, hyp)
    assert all(default[k].fmeasure == 0.0 for k in default)
    # characters: hyp 猫坐在地上 (5), ref 猫坐在垫子上 (6; 。 dropped)
    # ROUGE-1: 猫 坐 在 上 = 4                       -> F1 = 2*4/(5+6) = 8/11
    # ROUGE-2: 猫坐, 坐在 = 2 of 4 hyp / 5 ref bigrams -> F1 = 2*2/(4+5) = 4/9
    # ROUGE-L: LCS 猫坐在上 = 4                       -> F1 = 8/11
    assert rouge([hyp], [ref]) == pytest.approx({"rouge1": 800 / 11, "rouge2": 400 / 9, "rougeL": 800 / 11})


def test_chinese_bleu_matches_sacrebleu_zh():
    expected = sacrebleu.corpus_bleu(ZH_HYPS, [ZH_REFS], tokenize="zh").score
    assert bleu(ZH_HYPS, ZH_REFS) == pytest.approx(expected)
    assert expected > 0
    assert bleu(ZH_REFS, ZH_REFS) == pytest.approx(100.0)


def test_mixed_chinese_english():
    hyp, ref = "iPhone 15 Pro 售价 7999 元", "iPhone 15 Pro 的售价是 7999 元"
    # tokens hyp: iphone 15 pro 售 价 7999 元 (7) / ref: iphone 15 pro 的 售 价 是 7999 元 (9)
    # ROUGE-1: all 7 hyp tokens match                -> F1 = 2*7/(7+9) = 7/8
    # ROUGE-2: iphone-15, 15-pro, 售-价, 7999-元 = 4 of 6 hyp / 8 ref -> F1 = 2*4/(6+8) = 4/7
    # ROUGE-L: LCS = 7                               -> F1 = 7/8
    assert rouge([hyp], [ref]) == pytest.approx({"rouge1": 87.5, "rouge2": 400 / 7, "rougeL": 87.5})
    # any CJK text in the corpus switches BLEU to the zh tokenizer
    hyps, refs = [hyp, "the price is 129 dollars"], [ref, "it costs 129 dollars"]
    assert bleu(hyps, refs) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], tokenize="zh").score)


def test_empty_inputs():
    assert bleu([], []) == 0.0
    assert rouge([], []) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    assert exact_match([], []) == 0.0
    hyps, refs = ["", "the cat sat on the mat"], ["a b c", "the cat sat on the mat"]
    assert bleu(hyps, refs) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert rouge(hyps, refs) == pytest.approx({"rouge1": 50.0, "rouge2": 50.0, "rougeL": 50.0})


def test_exact_match_normalisation():
    assert normalize_answer("  The   Answer. ") == "the answer"
    assert normalize_answer("北京。") == "北京"
    pairs = [
        ("Paris.", "paris"),  # case + trailing period
        ("ＡＢＣ１２３", "abc123"),  # full-width -> ASCII
        ("北京。", "北京"),  # trailing Chinese full stop
        ("是的！", "是的"),  # trailing full-width ! (NFKC -> !)
        (" the  answer ", "the answer"),  # whitespace
        ("Paris", "London"),  # genuinely different
        ("北京", "南京"),  # genuinely different
        ("straße", "STRASSE"),  # casefold
    ]
    hyps, refs = zip(*pairs)
    assert exact_match(list(hyps), list(refs)) == pytest.approx(100 * 6 / 8)


def test_length_mismatch():
    with pytest.raises(ValueError, match=r"2 .* 3"):
        text_metrics(["a", "b"], ["a", "b", "c"])
    for fn in (bleu, rouge, exact_match, accuracy_macro_f1):
        with pytest.raises(ValueError):
            fn(["a"], [])


def test_perplexity():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(7.5)) == pytest.approx(7.5)
    assert perplexity(1000.0) == float("inf")


def test_accuracy_macro_f1():
    # labels a a b b c / preds a b b b a: accuracy 3/5
    # F1 a: tp1 fp1 fn1 -> 0.5; b: tp2 fp1 fn0 -> 0.8; c: tp0 fp0 fn1 -> 0 => macro (0.5+0.8+0)/3
    m = accuracy_macro_f1(["a", "b", "b", "b", "a"], ["a", "a", "b", "b", "c"])
    assert m == pytest.approx({"accuracy": 60.0, "macro_f1": 130 / 3})
    # a predicted-only class counts (F1 0): x: tp1 fp0 fn1 -> 2/3; d: 0 => macro 1/3
    assert accuracy_macro_f1(["x", "d"], ["x", "x"]) == pytest.approx({"accuracy": 50.0, "macro_f1": 100 / 3})
    assert accuracy_macro_f1([1, 0, 1], [1, 0, 1]) == {"accuracy": 100.0, "macro_f1": 100.0}


def test_pairwise_agreement():
    assert pairwise_agreement(["the same answer"] * 3) == pytest.approx(100.0)
    assert pairwise_agreement(["red apple", "blue sky", "green grass"]) == 0.0
    assert pairwise_agreement(["only one"]) == 100.0
    assert math.isnan(pairwise_agreement([]))
    # pairs: (1,2) 8/11 [see the Chinese ROUGE-L above], (1,3) 1, (2,3) 8/11 -> mean 9/11
    assert pairwise_agreement(["猫坐在垫子上", "猫坐在地上", "猫坐在垫子上"]) == pytest.approx(900 / 11)
