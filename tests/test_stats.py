"""Bootstrap, p-values, seeds and main effects on constructed data whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loraflow.report import stats as st


def test_bootstrap_is_reproducible_from_its_seed():
    x = np.random.default_rng(0).normal(50, 10, size=(120, 1))
    stats = np.hstack([x, np.ones_like(x)])
    metric = st.mean_metric("score")
    a = st.replicates(metric, stats, st.resample_counts(120, 1000, seed=7))
    b = st.replicates(metric, stats, st.resample_counts(120, 1000, seed=7))
    c = st.replicates(metric, stats, st.resample_counts(120, 1000, seed=8))
    assert a[0] == pytest.approx(x.mean()) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    counts = st.resample_counts(120, 1000, seed=7)
    assert counts.shape == (1000, 120) and (counts.sum(1) == 120).all()


def test_paired_difference_is_right_on_a_case_with_known_truth():
    """Run b = run a + 3 points on every row, plus a small per-row noise: a paired interval is narrow
    around 3 although each run's own interval is wide (the rows differ a lot in difficulty)."""
    rng = np.random.default_rng(1)
    difficulty = rng.uniform(0, 100, 200)
    a = difficulty
    b = difficulty + 3 + rng.normal(0, 1, 200)
    counts = st.resample_counts(200, 2000, seed=3)
    ra = st.replicates(st.mean_metric("a"), np.c_[a, np.ones(200)], counts)
    rb = st.replicates(st.mean_metric("b"), np.c_[b, np.ones(200)], counts)
    c = st.compare(rb, ra)
    assert c.diff == pytest.approx(np.mean(b - a))
    assert c.lo < 3 < c.hi and c.hi - c.lo < 0.5 and c.p < 0.01
    lo, hi = st.interval(rb[1])
    assert hi - lo > 5  # unpaired, the same difference would drown in the row-to-row spread
    same = st.compare(ra, ra)
    assert (same.diff, same.lo, same.hi, same.p) == (0.0, 0.0, 0.0, 1.0)


def test_interval_coverage_and_p_value_calibration():
    """Over 200 simulated test sets, the 95 % interval of a paired difference covers the true
    difference about 95 % of the time, and under no true difference p < 0.05 about 5 % of the time."""
    rng = np.random.default_rng(2)
    n, true, sims = 100, 2.0, 200
    covered, rejected = 0, 0
    for k in range(sims):
        base = rng.uniform(0, 100, n)
        a = np.c_[base + rng.normal(true, 8, n), np.ones(n)]
        b = np.c_[base + rng.normal(0, 8, n), np.ones(n)]
        null = np.c_[base + rng.normal(0, 8, n), np.ones(n)]
        counts = st.resample_counts(n, 1000, seed=k)
        m = st.mean_metric("x")
        c = st.compare(st.replicates(m, a, counts), st.replicates(m, b, counts))
        covered += c.lo <= true <= c.hi
        rejected += st.compare(st.replicates(m, null, counts), st.replicates(m, b, counts)).p < 0.05
    assert 0.89 <= covered / sims <= 0.99
    assert rejected / sims <= 0.11


def test_loss_is_token_weighted_like_the_stage():
    stats = np.array([[10.0, 5], [2.0, 1], [30.0, 10]])
    point, _ = st.replicates(st.LOSS, stats, st.resample_counts(3, 1000, 0))
    assert point == pytest.approx(42 / 16)
    assert st.replicates(st.PERPLEXITY, stats, st.resample_counts(3, 10, 0))[0] == pytest.approx(math.exp(42 / 16))


def test_bleu_replicates_are_sacrebleus_paired_bootstrap(monkeypatch):
    import sacrebleu
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import _bootstrap_resample

    hyps = [
        "the cat sat on a mat",
        "a quick brown fox",
        "it rains today",
        "hello there world",
        "one two three four five",
    ] * 8
    refs = [
        "the cat sat on the mat",
        "the quick brown fox jumps",
        "it is raining today",
        "hello world",
        "one two three four",
    ] * 8
    stats = st.bleu_stats(hyps, refs, "13a")
    point, reps = st.replicates(st.BLEU, stats, st.resample_counts(len(hyps), 1000, seed=12345))
    assert point == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    monkeypatch.setenv("SACREBLEU_SEED", "12345")
    _, theirs = _bootstrap_resample(
        BLEU(tokenize="13a")._extract_corpus_statistics(hyps, [refs]), BLEU(tokenize="13a"), 1000
    )
    assert np.allclose(reps, [s.score for s in theirs], atol=1e-4)


def test_t_quantile_and_seed_interval():
    assert st.t_quantile(0.975, 1) == pytest.approx(12.706, abs=1e-3)
    assert st.t_quantile(0.975, 2) == pytest.approx(4.303, abs=1e-3)
    assert st.t_quantile(0.975, 30) == pytest.approx(2.042, abs=1e-3)
    lo, hi = st.t_interval([30.0, 40.0])
    assert (lo + hi) / 2 == pytest.approx(35.0) and hi - lo == pytest.approx(
        2 * 12.706 * 7.0711 / math.sqrt(2), rel=1e-3
    )
    assert all(math.isnan(v) for v in st.t_interval([3.0]))


def test_seed_average_adds_the_spread_across_seeds():
    counts = st.resample_counts(100, 1000, 0)
    rows = np.random.default_rng(0).uniform(0, 100, 100)
    m = st.mean_metric("x")
    seeds = [st.replicates(m, np.c_[rows + shift, np.ones(100)], counts) for shift in (-10, 0, 10)]
    point, reps = st.seed_average(seeds, 1000, seed=0)
    assert point == pytest.approx(rows.mean())
    assert np.std(reps) > 1.5 * np.std(seeds[1][1])  # seed-to-seed variation widens the interval


CELLS = {(4, 16): 40.0, (4, 32): 46.0, (16, 16): 41.0, (16, 32): 49.0}


def constructed_points(noise: float = 0.0):
    counts = st.resample_counts(50, 1000, 0)
    rng = np.random.default_rng(5)
    points, reps = {}, {}
    for (r, a), value in CELLS.items():
        name = f"r{r}_a{a}"
        points[name] = {"r": r, "alpha": float(a), "targets": "qv"}
        x = value + rng.normal(0, noise, 50) if noise else np.full(50, value)
        x = x - x.mean() + value  # exact means
        reps[name] = st.replicates(st.mean_metric("x"), np.c_[x, np.ones(50)], counts)
    return points, reps


def test_main_effects_equal_hand_computed_marginal_means():
    points, reps = constructed_points(noise=5.0)
    rows = st.main_effects(points, ["r", "alpha", "targets"], reps)
    got = {(r["axis"], r["level"]): r for r in rows}
    assert {r["axis"] for r in rows} == {"r", "alpha"}  # one target choice: no effect row
    assert got[("alpha", 16.0)]["mean"] == pytest.approx((40 + 41) / 2)
    assert got[("alpha", 32.0)]["mean"] == pytest.approx((46 + 49) / 2)
    assert got[("r", 4)]["mean"] == pytest.approx((40 + 46) / 2)
    assert got[("r", 16)]["mean"] == pytest.approx((41 + 49) / 2)
    assert got[("alpha", 32.0)]["effect"] == pytest.approx(47.5 - 40.5) and got[("alpha", 32.0)]["vs"] == 16.0
    assert got[("r", 16)]["effect"] == pytest.approx(45.0 - 43.0)
    assert got[("alpha", 32.0)]["effect_lo"] < 7 < got[("alpha", 32.0)]["effect_hi"]
    inter = st.interaction(points, reps, "r", "alpha")
    assert inter["contrast"] == pytest.approx((49 - 46) - (41 - 40))


def test_main_effects_without_noise_have_zero_width():
    points, reps = constructed_points()
    rows = {(r["axis"], r["level"]): r for r in st.main_effects(points, ["alpha"], reps)}
    r = rows[("alpha", 32.0)]
    assert r["effect_lo"] == pytest.approx(7.0) and r["effect_hi"] == pytest.approx(7.0) and r["p"] < 0.01


# --- probability of being best, clustered bootstrap -------------------------------------------------


def _mean_reps(values: np.ndarray, counts: np.ndarray) -> tuple[float, np.ndarray]:
    return st.replicates(st.mean_metric("x"), np.c_[values, np.ones(len(values))], counts)


def test_prob_best_is_one_for_a_clear_winner_and_shared_between_twins():
    rng = np.random.default_rng(4)
    difficulty = rng.uniform(0, 100, 150)
    counts = st.resample_counts(150, 1000, seed=5)
    a = _mean_reps(difficulty + 10 + rng.normal(0, 1, 150), counts)  # 10 points better on every row, noise 1
    b = _mean_reps(difficulty, counts)
    twin = _mean_reps(difficulty, counts)  # identical to b
    p = st.prob_best(np.stack([a[1], b[1], twin[1]]))
    assert p[0] == pytest.approx(1.0) and p[1] == p[2] == pytest.approx(0.0) and p.sum() == pytest.approx(1.0)
    assert list(st.prob_best(np.stack([b[1], twin[1]]))) == [0.5, 0.5]  # a tie in every replicate is shared
    # lower is better (a loss): the run with the lower values wins
    assert st.prob_best(np.stack([a[1], b[1]]), lower_is_better=True)[1] == pytest.approx(1.0)


def test_prob_best_of_two_runs_equal_in_truth_is_near_a_half_and_sums_to_one():
    rng = np.random.default_rng(6)
    n = 400
    base = rng.uniform(0, 100, n)
    counts = st.resample_counts(n, 2000, seed=1)
    reps = np.stack([_mean_reps(base + rng.normal(0, 5, n), counts)[1] for _ in range(3)])
    p = st.prob_best(reps)
    assert p.sum() == pytest.approx(1.0) and (p > 0.02).all()  # no run is called best on noise alone


def test_cluster_counts_resample_whole_groups_paired():
    groups = ["a"] * 3 + ["b"] * 2 + ["c"] * 4
    counts = st.cluster_counts(groups, 500, seed=3)
    assert counts.shape == (500, 9)
    for members in ([0, 1, 2], [3, 4], [5, 6, 7, 8]):  # every row of a group has its group's multiplicity
        assert (counts[:, members] == counts[:, members[:1]]).all()
    per_group = counts[:, [0, 3, 5]]
    assert (per_group.sum(1) == 3).all()  # three groups drawn per replicate
    assert np.array_equal(counts, st.cluster_counts(groups, 500, seed=3))  # seeded: every run gets the same (paired)
    singletons = st.cluster_counts([str(i) for i in range(9)], 500, seed=3)
    assert np.array_equal(singletons, st.resample_counts(9, 500, seed=3))  # one row per group: the row bootstrap


def test_clustered_interval_is_wider_on_perfectly_correlated_clusters():
    """40 groups of 10 rows that share one score: the information is 40 values, not 400. The clustered
    interval matches the bootstrap of the 40 group values; the row-wise one is about sqrt(10) too narrow."""
    rng = np.random.default_rng(7)
    group_scores = rng.uniform(0, 100, 40)
    values = np.repeat(group_scores, 10)
    groups = np.repeat(np.arange(40), 10).tolist()
    clustered = st.interval(_mean_reps(values, st.cluster_counts(groups, 4000, seed=2))[1])
    rowwise = st.interval(_mean_reps(values, st.resample_counts(400, 4000, seed=2))[1])
    truth = st.interval(_mean_reps(group_scores, st.resample_counts(40, 4000, seed=2))[1])
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(clustered) == pytest.approx(width(truth), rel=1e-9)  # the same draws of groups
    assert 2.5 < width(clustered) / width(rowwise) < 4.0  # ~ sqrt(10) = 3.16
