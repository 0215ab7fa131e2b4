"""polar_lib.stats on constructed inputs whose answers are known."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from polar_lib.stats import (accuracy_interval, beats, exceeds, grows_with_rank, grows_with_training,
                             minimal_detectable_difference, paired_comparison, questions_needed, seed_summary,
                             stays_far_below_rank, wilson_interval)

# ---------------------------------------------------------------------------------------------
# Wilson interval
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k, n, low, high", [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605),
                                             (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)])
def test_wilson_matches_newcombe_1998_table(k, n, low, high):
    # Newcombe (1998), Statist. Med. 17:857, Table I, method 3 (score interval without correction).
    p, lo, hi = wilson_interval(k, n)
    assert p == k / n
    assert (round(lo, 4), round(hi, 4)) == (low, high)


def test_wilson_interval_holds_the_estimate_exactly_at_zero_and_all():
    """At k = 0 (k = n) the interval is [0, ·] ([·, 1]) exactly: p̂ lies in it, never a rounding error outside."""
    for n in range(1, 200):
        for confidence in (0.8, 0.9, 0.95, 0.99):
            assert wilson_interval(0, n, confidence)[1] == 0.0 and wilson_interval(n, n, confidence)[2] == 1.0


def test_wilson_is_the_set_the_score_test_accepts():
    # The bounds solve |p̂ − p| = z·√(p(1−p)/n) for p.
    k, n, z = 30, 70, scipy_stats.norm.ppf(0.975)
    p_hat, low, high = wilson_interval(k, n)
    for bound in (low, high):
        assert abs(p_hat - bound) == pytest.approx(z * math.sqrt(bound * (1 - bound) / n))


def test_accuracy_interval_covers_p():
    rng = np.random.default_rng(0)
    assert accuracy_interval(rng.random(20_000) < 0.3)[1] < 0.3 < accuracy_interval(rng.random(20_000) < 0.3)[2]
    hits = [low <= 0.3 <= high for low, high in
            (wilson_interval(k, 200)[1:] for k in rng.binomial(200, 0.3, size=1000))]
    assert 0.92 < np.mean(hits) < 0.98


def test_accuracy_interval_rejects_bad_input():
    with pytest.raises(ValueError, match=r"correct must contain only 0 and 1.*\[0\.5\]"):
        accuracy_interval([0, 1, 0.5])
    with pytest.raises(ValueError, match="correct must be a non-empty 1-D array"):
        accuracy_interval([[0, 1]])
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), got 95"):
        accuracy_interval([0, 1], confidence=95)


# ---------------------------------------------------------------------------------------------
# Paired comparison
# ---------------------------------------------------------------------------------------------

def _pairs(both, only_a, only_b, neither):
    """Two 0/1 arrays with the given cell counts."""
    a = np.repeat([1, 1, 0, 0], [both, only_a, only_b, neither])
    b = np.repeat([1, 0, 1, 0], [both, only_a, only_b, neither])
    return a, b


def test_mcnemar_exact_p_values():
    result = paired_comparison(*_pairs(10, 0, 6, 4))
    assert result.p_value == pytest.approx(2 * 0.5 ** 6)  # 0.03125
    assert result.significant and result.difference == pytest.approx(0.3)
    assert (result.only_a_correct, result.only_b_correct, result.n_pairs) == (0, 6, 20)
    # b = 1, c = 6: 2·P(X ≤ 1), X ~ Bin(7, ½) = 2·8/128.
    assert paired_comparison(*_pairs(10, 1, 6, 3)).p_value == pytest.approx(16 / 128)
    assert paired_comparison(*_pairs(10, 3, 3, 4)).p_value == 1.0
    identical = paired_comparison(*_pairs(5, 0, 0, 5))
    assert identical.p_value == 1.0 and not identical.significant and identical.low <= 0 <= identical.high


def test_paired_interval_covers_the_true_difference():
    rng = np.random.default_rng(1)
    cells = [0.5, 0.1, 0.15, 0.25]  # both, A only, B only, neither: true difference +0.05
    large = paired_comparison(*_pairs(*rng.multinomial(20_000, cells)))
    assert large.low < 0.05 < large.high and large.high - large.low < 0.02
    hits = [(r.low <= 0.05 <= r.high) for r in
            (paired_comparison(*_pairs(*counts)) for counts in rng.multinomial(200, cells, size=400))]
    assert 0.92 < np.mean(hits) < 0.98


def test_paired_interval_is_antisymmetric():
    a, b = _pairs(20, 3, 9, 8)
    forward, backward = paired_comparison(a, b), paired_comparison(b, a)
    assert (forward.low, forward.high) == pytest.approx((-backward.high, -backward.low))
    assert forward.p_value == pytest.approx(backward.p_value)


def test_seed_rows_are_paired_and_pooled():
    a1, b1 = _pairs(5, 0, 4, 1)
    a2, b2 = (x[::-1] for x in _pairs(4, 1, 3, 2))
    pooled = paired_comparison(np.stack([a1, a2]), np.stack([b1, b2]))
    flat = paired_comparison(np.concatenate([a1, a2]), np.concatenate([b1, b2]))
    assert pooled == flat
    assert (pooled.only_a_correct, pooled.only_b_correct, pooled.n_pairs) == (1, 7, 20)
    assert paired_comparison(np.stack([a1, a2]), np.stack([b2, b1])) != pooled  # row i pairs with row i


def test_paired_comparison_rejects_bad_input():
    with pytest.raises(ValueError, match=r"same shape .* got \(3,\) and \(4,\)"):
        paired_comparison([0, 1, 1], [0, 1, 1, 0])
    with pytest.raises(ValueError, match="correct_b must contain only 0 and 1"):
        paired_comparison([0, 1], [0, 2])
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\), got 0"):
        paired_comparison([0, 1], [0, 1], alpha=0)


# ---------------------------------------------------------------------------------------------
# Design: detectable difference, questions needed; seeds
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, discordance", [(40, 0.2), (263, 0.3), (1000, 0.1), (5000, 0.05)])
def test_detectable_difference_and_questions_needed_are_inverse(n, discordance):
    delta = minimal_detectable_difference(n, discordance)
    assert 0 < delta <= discordance
    assert questions_needed(delta * (1 + 1e-9), discordance) == n
    assert questions_needed(delta * (1 - 1e-6), discordance) == n + 1


def test_detectable_difference_limits():
    z = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)
    assert minimal_detectable_difference(10**6, 0.2) == pytest.approx(z * math.sqrt(0.2 / 10**6), rel=1e-3)
    assert minimal_detectable_difference(3, 0.2) == math.inf
    assert minimal_detectable_difference(10, 0.05) == math.inf  # needs more than all pairs discordant
    with pytest.raises(ValueError, match=r"discordance must be in \(0, 1\], got 0"):
        minimal_detectable_difference(100, 0)
    with pytest.raises(ValueError, match=r"difference must be in \(0, discordance=0.1\], got 0.2"):
        questions_needed(0.2, 0.1)
    with pytest.raises(ValueError, match=r"power must be in \(0, 1\), got 80"):
        questions_needed(0.05, 0.1, power=80)


def test_seed_summary():
    mean, sd, n_seeds = seed_summary([0.5, 0.6, 0.7])
    assert (mean, sd, n_seeds) == (pytest.approx(0.6), pytest.approx(0.1), 3)
    assert math.isnan(seed_summary([0.5]).sd)
    with pytest.raises(ValueError, match="accuracies must be a non-empty 1-D array"):
        seed_summary([])


# ---------------------------------------------------------------------------------------------
# Stable-rank verdicts
# ---------------------------------------------------------------------------------------------

RANKS = (4, 8, 16, 32)


def stable_rank_table(median, methods=("lora",), ranks=RANKS, seeds=(0, 1, 2), steps=(0, 10, 50)):
    """One row per layer (3 modules × 2 layers); per run and step the median over layers is
    ``median(method, r, seed, step)`` (layers at median ± 0.05, ± 0.1 and exactly the median)."""
    offsets = np.array([-0.1, -0.05, 0.0, 0.0, 0.05, 0.1])
    rows = []
    for method in methods:
        for r in ranks:
            for seed in seeds:
                for step in steps:
                    value = median(method, r, seed, step)
                    spread = offsets if value > 0 else np.zeros_like(offsets)  # sr(0) := 0 on every layer
                    for i, offset in enumerate(spread):
                        rows.append({"method": method, "r": r, "seed": seed, "step": step,
                                     "module": ("q_proj", "v_proj", "down_proj")[i % 3], "layer": i // 3,
                                     "stable_rank": value + offset})
    return pd.DataFrame(rows)


def from_step_one(values):
    """A median function: 0 at step 0, ``values(method, r, seed, step)`` after."""
    return lambda method, r, seed, step: 0.0 if step == 0 else values(method, r, seed, step)


def test_stays_far_below_rank():
    flat = stable_rank_table(from_step_one(lambda m, r, s, t: 1.5 + 0.01 * s))
    verdict = stays_far_below_rank(flat, "lora")
    assert verdict and bool(verdict) is True
    assert "stays at or below 0.5·r" in verdict.statement and "1.5 ≤ 2.0 (r=4)" in verdict.statement
    assert list(verdict.evidence.r) == list(RANKS)
    full = stable_rank_table(from_step_one(lambda m, r, s, t: float(r)))
    assert not stays_far_below_rank(full, "lora")
    one_seed_high = stable_rank_table(from_step_one(lambda m, r, s, t: 2.5 if (r, s) == (4, 2) else 1.5))
    verdict = stays_far_below_rank(one_seed_high, "lora")
    assert not verdict and "2.5 > 2.0 (r=4)" in verdict.statement


def test_grows_with_rank():
    finals = dict(zip(RANKS, (1.3, 1.6, 2.0, 2.4)))
    growing = stable_rank_table(from_step_one(lambda m, r, s, t: finals[r] + 0.05 * (s - 1)), methods=("polar",))
    verdict = grows_with_rank(growing, "polar")
    assert verdict
    assert "1.3 (r=4) → 1.6 (r=8) → 2.0 (r=16) → 2.4 (r=32), Spearman ρ = 1.00" in verdict.statement
    flat = stable_rank_table(from_step_one(lambda m, r, s, t: 1.5), methods=("polar",))
    assert not grows_with_rank(flat, "polar")
    # Means grow 1.3 → 1.5, but the seeds spread ±0.5: the growth is within the seed spread.
    noisy = stable_rank_table(from_step_one(lambda m, r, s, t: 1.3 + 0.2 * RANKS.index(r) / 3 + 0.5 * (s - 1)),
                              methods=("polar",))
    verdict = grows_with_rank(noisy, "polar")
    assert not verdict and "overlap" in verdict.statement
    shrinking = stable_rank_table(from_step_one(lambda m, r, s, t: 3.0 - finals[r]), methods=("polar",))
    assert not grows_with_rank(shrinking, "polar")
    with pytest.raises(ValueError, match=r"r must take at least two values for method 'polar', got \[8\]"):
        grows_with_rank(stable_rank_table(from_step_one(lambda *_: 1.5), methods=("polar",), ranks=(8,)), "polar")


def test_grows_with_training():
    growing = stable_rank_table(from_step_one(lambda m, r, s, t: (1.2 if t == 10 else 2.4) + 0.01 * s))
    verdict = grows_with_training(growing, "lora")
    assert verdict and "1.2 → 2.4 (r=4)" in verdict.statement
    # Flat after step 0: the zero update at step 0 must not count as growth.
    assert not grows_with_training(stable_rank_table(from_step_one(lambda *_: 1.5)), "lora")
    # Every seed grows by 0.2 but the seeds spread by 1.0: within the seed spread at every r.
    noisy = stable_rank_table(from_step_one(lambda m, r, s, t: (1.2 if t == 10 else 1.4) + 0.5 * s))
    verdict = grows_with_training(noisy, "lora")
    assert not verdict and "within seed spread" in verdict.statement
    with pytest.raises(ValueError, match="at least two steps > 0"):
        grows_with_training(stable_rank_table(from_step_one(lambda *_: 1.5), steps=(0, 10)), "lora")


def test_exceeds():
    level = {"polar": 2.4, "lora": 1.6}
    table = stable_rank_table(from_step_one(lambda m, r, s, t: level[m] + 0.1 * s), methods=("polar", "lora"))
    verdict = exceeds(table, "polar", "lora")
    assert verdict and "2.5 vs 1.7 (r=4, smallest seed difference +0.80)" in verdict.statement
    assert not exceeds(table, "lora", "polar")
    # Higher on average, but below the baseline in seed 2 (paired on seed).
    one_seed_lower = stable_rank_table(
        from_step_one(lambda m, r, s, t: 1.0 if (m, s) == ("polar", 2) else level[m]), methods=("polar", "lora"))
    assert not exceeds(one_seed_lower, "polar", "lora")


def test_stable_rank_verdicts_reject_bad_tables():
    table = stable_rank_table(from_step_one(lambda *_: 1.5))
    with pytest.raises(ValueError, match=r"method must be one of \('lora',\).*got 'polar'"):
        stays_far_below_rank(table, "polar")
    with pytest.raises(ValueError, match=r"table is missing column\(s\) \['seed'\]"):
        grows_with_rank(table.drop(columns="seed"), "lora")
    with pytest.raises(ValueError, match=r"table has 36 duplicated \(method, r, seed, step, module, layer\) rows"):
        grows_with_rank(pd.concat([table, table.head(36)]), "lora")
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\), got 2"):
        stays_far_below_rank(table, "lora", fraction=2)


# ---------------------------------------------------------------------------------------------
# Accuracy verdict
# ---------------------------------------------------------------------------------------------

def per_question_table(correct, task="arc_easy"):
    """``correct``: {method: seeds × questions 0/1 array} → the long per-question table."""
    rows = [{"task": task, "method": method, "seed": seed, "question": f"q{question}", "correct": int(value)}
            for method, matrix in correct.items()
            for (seed, question), value in np.ndenumerate(np.asarray(matrix))]
    return pd.DataFrame(rows)


def test_beats():
    lora = np.tile(np.arange(100) < 30, (3, 1))  # 30 of 100 right in each of 3 seeds
    polar = np.tile(np.arange(100) < 50, (3, 1))  # the same 30 plus 20 more: b = 0, c = 60
    table = per_question_table({"lora": lora, "polar": polar})
    verdict = beats(table, "polar", "lora", "arc_easy")
    assert verdict
    assert verdict.evidence["only_b_correct"] == 60 and verdict.evidence["only_a_correct"] == 0
    assert verdict.evidence["p_value"] == pytest.approx(2 * 0.5 ** 60)
    assert "50.0 vs 30.0 %, difference +20.0 points" in verdict.statement
    assert "3 seed pair(s) × 100 questions (60 won, 0 lost)" in verdict.statement
    worse = beats(table, "lora", "polar", "arc_easy")
    assert not worse and worse.evidence["significant"]  # significantly worse is not "beats"
    same = beats(per_question_table({"lora": lora, "polar": lora}), "polar", "lora", "arc_easy")
    assert not same and same.evidence["p_value"] == 1.0


def test_beats_small_difference_reports_what_is_detectable():
    rng = np.random.default_rng(2)
    lora = rng.random((3, 40)) < 0.6
    polar = lora.copy()
    polar[:, :10] = ~polar[:, :10]  # 30 discordant pairs over 120
    verdict = beats(per_question_table({"lora": lora, "polar": polar}), "polar", "lora", "arc_easy")
    assert not verdict and "this design detects differences of" in verdict.statement
    assert verdict.evidence["minimal_detectable_difference"] == pytest.approx(
        minimal_detectable_difference(120, 30 / 120))


def test_beats_rejects_bad_tables():
    table = per_question_table({"lora": np.ones((2, 5)), "polar": np.zeros((2, 5))})
    with pytest.raises(ValueError, match=r"method must be one of \('lora', 'polar'\).*got 'dora'"):
        beats(table, "dora", "lora", "arc_easy")
    with pytest.raises(ValueError, match=r"task must be one of \('arc_easy',\).*got 'boolq'"):
        beats(table, "polar", "lora", "boolq")
    with pytest.raises(ValueError, match=r"per_question is missing column\(s\) \['correct'\]"):
        beats(table.drop(columns="correct"), "polar", "lora", "arc_easy")
    with pytest.raises(ValueError, match="must be scored on the same questions"):
        beats(table[~((table.method == "polar") & (table.question == "q0"))], "polar", "lora", "arc_easy")
    with pytest.raises(ValueError, match="per_question.correct must contain only 0 and 1"):
        beats(table.assign(correct=table.correct * 2), "polar", "lora", "arc_easy")
