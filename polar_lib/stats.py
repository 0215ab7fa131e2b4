"""Honest statistics and computed verdicts for notebooks 01 (stable rank) and 03 (accuracy).

Accuracy (notebook 03), one 0/1 ``correct`` value per question:

- ``wilson_interval(successes, trials)`` / ``accuracy_interval(correct)``: Wilson score interval.
- ``paired_comparison(correct_a, correct_b)``: two methods on the same questions — exact McNemar test
  and Newcombe's paired score interval for acc_b − acc_a; 2-D input (seeds × questions) pairs seed
  row i of A with row i of B and pools the discordant pairs over the seed pairs.
- ``minimal_detectable_difference(n_questions, discordance)`` and its inverse ``questions_needed``:
  what a paired design can resolve (Connor 1987).
- ``seed_summary(accuracies)``: mean, sd (ddof = 1) and number of seeds.

Verdicts, each a ``Verdict`` (``holds``, a one-sentence ``statement`` with the numbers, ``evidence``):

- over a stable-rank table with columns ``STABLE_RANK_COLUMNS`` = method, r, seed, step, module,
  layer, stable_rank — one row per adapted layer (module, layer) per logged step of each run
  (method, r, seed): ``stays_far_below_rank``, ``grows_with_rank``, ``grows_with_training``,
  ``exceeds``. Every one first takes, per run and step, the **median over layers**; "final" is a
  run's last logged step. Seeds are never averaged away: a rule holds only if it holds beyond the
  spread over seeds, as each function states.
- over a per-question table with columns ``PER_QUESTION_COLUMNS`` = task, method, seed, question,
  correct (0/1) — one row per question per run: ``beats``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from ._checks import check_choice, check_open_unit

__all__ = ["STABLE_RANK_COLUMNS", "PER_QUESTION_COLUMNS", "Verdict", "PairedComparison", "SeedSummary",
           "wilson_interval", "accuracy_interval", "paired_comparison", "minimal_detectable_difference",
           "questions_needed", "seed_summary", "stays_far_below_rank", "grows_with_rank",
           "grows_with_training", "exceeds", "beats"]

STABLE_RANK_COLUMNS = ("method", "r", "seed", "step", "module", "layer", "stable_rank")
PER_QUESTION_COLUMNS = ("task", "method", "seed", "question", "correct")


@dataclass(frozen=True, eq=False)
class Verdict:
    """A claim checked against data: ``holds``, one ``statement`` with its numbers, the ``evidence``."""

    holds: bool
    statement: str
    evidence: pd.DataFrame | dict

    def __bool__(self) -> bool:
        return self.holds

    def __str__(self) -> str:
        return self.statement


# ---------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------

def _zero_one(values, name: str, ndims: tuple[int, ...]) -> np.ndarray:
    """``values`` as an int array of 0s and 1s with ``ndim`` in ``ndims``, else a ValueError."""
    array = np.asarray(values)
    if array.ndim not in ndims or array.size == 0:
        raise ValueError(f"{name} must be a non-empty {' or '.join(f'{d}-D' for d in ndims)} array, "
                         f"got shape {array.shape}")
    bad = np.setdiff1d(np.unique(array), [0, 1])
    if bad.size:
        raise ValueError(f"{name} must contain only 0 and 1 (or booleans), got {bad[:5].tolist()}")
    return array.astype(np.int64)


def _check_columns(table: pd.DataFrame, name: str, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{name} is missing column(s) {missing}; expected columns {list(columns)}")
    key = list(columns[:-1])
    duplicated = int(table.duplicated(key).sum())
    if duplicated:
        raise ValueError(f"{name} has {duplicated} duplicated ({', '.join(key)}) rows; expected one row each")


# ---------------------------------------------------------------------------------------------
# Accuracy over questions
# ---------------------------------------------------------------------------------------------

def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """(p̂, low, high): the Wilson (1927) score interval for a binomial proportion.

    With p̂ = k/n and z = Φ⁻¹((1 + confidence)/2), the interval is the set of p whose score test
    |p̂ − p| ≤ z·√(p(1−p)/n) accepts:
    (p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n).
    Unlike p̂ ± z·√(p̂(1−p̂)/n) it stays in [0, 1] and keeps near-nominal coverage for small n and
    extreme p (Newcombe 1998, Statist. Med. 17:857, method 3).
    """
    if int(trials) != trials or trials < 1:
        raise ValueError(f"trials must be a positive integer, got {trials!r}")
    if int(successes) != successes or not 0 <= successes <= trials:
        raise ValueError(f"successes must be an integer in [0, trials={trials}], got {successes!r}")
    check_open_unit("confidence", confidence)
    z = stats.norm.ppf((1 + confidence) / 2)
    p = successes / trials
    shrink = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / shrink
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / shrink
    # the interval holds p̂ (its score statistic is 0); at k = 0 or n rounding could leave p̂ just outside it
    return p, max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def accuracy_interval(correct, confidence: float = 0.95) -> tuple[float, float, float]:
    """(accuracy, low, high) of one run from its 0/1 ``correct`` per question: ``wilson_interval``."""
    correct = _zero_one(correct, "correct", (1,))
    return wilson_interval(int(correct.sum()), correct.size, confidence)


@dataclass(frozen=True)
class PairedComparison:
    """Method B against method A on the same questions; ``difference`` = accuracy_b − accuracy_a.

    ``only_a_correct`` (b) and ``only_b_correct`` (c) are the discordant pairs; ``low``, ``high``
    the (1 − α) interval of the difference; ``significant``: exact McNemar ``p_value`` < α.
    """

    accuracy_a: float
    accuracy_b: float
    difference: float
    low: float
    high: float
    only_a_correct: int
    only_b_correct: int
    n_pairs: int
    p_value: float
    significant: bool

    @property
    def discordance(self) -> float:
        """Fraction of the pairs on which A and B disagree, (b + c)/n."""
        return (self.only_a_correct + self.only_b_correct) / self.n_pairs


def paired_comparison(correct_a, correct_b, alpha: float = 0.05) -> PairedComparison:
    """Exact McNemar test and Newcombe's paired interval for acc_b − acc_a on the same questions.

    ``correct_a``, ``correct_b``: 0/1 arrays of equal shape, either (questions,) or (seeds, questions)
    where row i of A and row i of B are one seed pair. Over all pairs, let both, b (A only right),
    c (B only right), neither be the cell counts and n their sum; the difference is (c − b)/n.

    Test (McNemar 1947, exact form): under H0 (acc_a = acc_b) each discordant pair is equally likely
    either way, so c ~ Binomial(b + c, ½); p is the two-sided binomial test (``scipy.stats.binomtest``;
    p = 1 when b + c = 0). E.g. b = 0, c = 6: p = 2·½⁶ = 0.03125.

    Interval: Newcombe (1998, Statist. Med. 17:2635, method 10), square-and-add of the Wilson
    intervals [lᵢ, uᵢ] of the two accuracies pᵢ with their correlation φ = (both·neither − b·c) /
    √(product of the four margins) (φ := 0 when a margin is 0); for D = p_B − p_A:
    D − √((p_B − l_B)² − 2φ(p_B − l_B)(u_A − p_A) + (u_A − p_A)²) to
    D + √((p_A − l_A)² − 2φ(p_A − l_A)(u_B − p_B) + (u_B − p_B)²).

    Seeds: summing the cells over seed pairs is the stratified (Mantel–Haenszel-type) McNemar test;
    it is exact given the questions, the seed pairs being independent runs. It treats every (seed,
    question) pair as one observation, so a question appears once per seed pair: read it as evidence
    about these questions over training seeds, not as if there were seeds × questions questions.
    """
    check_open_unit("alpha", alpha)
    a = _zero_one(correct_a, "correct_a", (1, 2))
    b = _zero_one(correct_b, "correct_b", (1, 2))
    if a.shape != b.shape:
        raise ValueError(f"correct_a and correct_b must have the same shape (row i of each is seed pair i), "
                         f"got {a.shape} and {b.shape}")
    both, neither = int(np.sum(a & b)), int(np.sum((1 - a) & (1 - b)))
    only_a, only_b = int(np.sum(a & (1 - b))), int(np.sum((1 - a) & b))
    n = a.size
    discordant = only_a + only_b
    p_value = stats.binomtest(only_b, discordant, 0.5).pvalue if discordant else 1.0
    accuracy_a, low_a, high_a = wilson_interval(both + only_a, n, 1 - alpha)
    accuracy_b, low_b, high_b = wilson_interval(both + only_b, n, 1 - alpha)
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    phi = (both * neither - only_a * only_b) / math.sqrt(margins) if margins else 0.0
    difference = (only_b - only_a) / n

    def spread(x: float, y: float) -> float:
        return math.sqrt(max(0.0, x * x - 2 * phi * x * y + y * y))

    return PairedComparison(
        accuracy_a=accuracy_a, accuracy_b=accuracy_b, difference=difference,
        low=difference - spread(accuracy_b - low_b, high_a - accuracy_a),
        high=difference + spread(accuracy_a - low_a, high_b - accuracy_b),
        only_a_correct=only_a, only_b_correct=only_b, n_pairs=n,
        p_value=float(p_value), significant=bool(p_value < alpha))


def _z_values(alpha: float, power: float) -> tuple[float, float]:
    check_open_unit("alpha", alpha)
    check_open_unit("power", power)
    return stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)


def _check_discordance(discordance: float) -> None:
    if not 0 < discordance <= 1:
        raise ValueError(f"discordance must be in (0, 1], got {discordance!r}")


def questions_needed(difference: float, discordance: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Paired questions needed for McNemar's test to detect ``difference`` (Connor 1987).

    Connor (1987, Biometrics 43:207), normal approximation: with ψ the discordant proportion
    (b + c)/n and δ the paired difference (c − b)/n, the estimate of δ has variance ψ/n under H0
    and (ψ − δ²)/n under H1, so a two-sided level-α test has the requested power when
    n = (z_{1−α/2}·√ψ + z_{power}·√(ψ − δ²))² / δ²; rounded up. Requires 0 < δ ≤ ψ ≤ 1.
    """
    z_alpha, z_power = _z_values(alpha, power)
    _check_discordance(discordance)
    if not 0 < difference <= discordance:
        raise ValueError(f"difference must be in (0, discordance={discordance}], got {difference!r}")
    root_n = (z_alpha * math.sqrt(discordance) + z_power * math.sqrt(discordance - difference ** 2)) / difference
    return math.ceil(root_n ** 2)


def minimal_detectable_difference(n_questions: int, discordance: float, alpha: float = 0.05,
                                  power: float = 0.8) -> float:
    """Smallest paired difference δ that McNemar's test on ``n_questions`` pairs detects; inverse of
    ``questions_needed``.

    Solving Connor's √n·δ = z_a·√ψ + z_b·√(ψ − δ²) (z_a = z_{1−α/2}, z_b = z_{power}) for δ: squaring
    gives (n + z_b²)δ² − 2√n·z_a·√ψ·δ + (z_a² − z_b²)ψ = 0, whose root on the right branch is
    δ = √ψ·(√n·z_a + z_b·√(n − z_a² + z_b²)) / (n + z_b²) ≈ (z_a + z_b)·√(ψ/n) for large n.
    Returns inf when no δ ≤ ψ is detectable (n ≤ z_a², or the root exceeds ψ).
    With seeds pooled as in ``paired_comparison``, n is the number of (seed, question) pairs.
    """
    z_alpha, z_power = _z_values(alpha, power)
    _check_discordance(discordance)
    if int(n_questions) != n_questions or n_questions < 1:
        raise ValueError(f"n_questions must be a positive integer, got {n_questions!r}")
    n = n_questions
    if n <= z_alpha ** 2:
        return math.inf
    root = math.sqrt(n - z_alpha ** 2 + z_power ** 2)
    delta = math.sqrt(discordance) * (math.sqrt(n) * z_alpha + z_power * root) / (n + z_power ** 2)
    return float(delta) if delta <= discordance else math.inf


class SeedSummary(NamedTuple):
    mean: float
    sd: float
    n_seeds: int


def seed_summary(accuracies) -> SeedSummary:
    """Mean, sample sd (ddof = 1; NaN for one seed) and count of per-seed results."""
    values = np.asarray(accuracies, dtype=float)
    if values.ndim != 1 or values.size == 0 or not np.isfinite(values).all():
        raise ValueError(f"accuracies must be a non-empty 1-D array of finite numbers, got {values.tolist()}")
    sd = float(values.std(ddof=1)) if values.size > 1 else math.nan
    return SeedSummary(float(values.mean()), sd, int(values.size))


# ---------------------------------------------------------------------------------------------
# Stable-rank verdicts
# ---------------------------------------------------------------------------------------------

def _run_medians(table: pd.DataFrame, method: str) -> pd.Series:
    """Median stable rank over layers per (r, seed, step) of ``method``."""
    _check_columns(table, "table", STABLE_RANK_COLUMNS)
    known = sorted(table.loc[table.stable_rank.notna(), "method"].unique())
    check_choice("method", method, known, " (methods of table with stable ranks)")
    rows = table[(table.method == method) & table.stable_rank.notna()]
    return rows.groupby(["r", "seed", "step"]).stable_rank.median()


def _final(medians: pd.Series) -> pd.Series:
    """Each run's median at its last logged step, indexed (r, seed)."""
    return medians.groupby(["r", "seed"]).last()  # sorted by step within each run


def _seed_spread(values: pd.Series) -> pd.DataFrame:
    """Per r: mean, min and max over seeds of per-seed values indexed (r, seed)."""
    return values.groupby("r").agg(["mean", "min", "max"])


def stays_far_below_rank(table: pd.DataFrame, method: str, fraction: float = 0.5) -> Verdict:
    """"``method``'s stable rank stays far below r": in every seed, the final median stable rank over
    layers is ≤ fraction·r, at every r. ``table``: columns ``STABLE_RANK_COLUMNS``."""
    check_open_unit("fraction", fraction)
    evidence = _seed_spread(_final(_run_medians(table, method)))
    evidence["limit"] = fraction * evidence.index.to_numpy(dtype=float)
    below = evidence["max"] <= evidence["limit"]
    holds = bool(below.all())
    parts = [f"{row['max']:.1f} {'≤' if ok else '>'} {row.limit:.1f} (r={r})"
             for (r, row), ok in zip(evidence.iterrows(), below)]
    statement = (f"{method}'s final median stable rank {'stays' if holds else 'does not stay'} at or below "
                 f"{fraction:g}·r at every r (largest seed): {', '.join(parts)}")
    return Verdict(holds, statement, evidence.reset_index())


def _separated(high: pd.Series, low: pd.Series) -> bool:
    """Every value of ``high`` above every value of ``low``: beyond the spread over seeds.

    With S seeds on each side and the 2S values exchangeable (no effect), this happens with
    probability 1/C(2S, S) — the exact one-sided Mann–Whitney p at U = 0: 0.05 for S = 3.
    """
    return bool(high.min() > low.max())


def grows_with_rank(table: pd.DataFrame, method: str) -> Verdict:
    """"``method``'s stable rank grows with r", when both hold:

    - Spearman ρ between r and the final median stable rank (mean over seeds) is > 0
      (ρ := 0 when those means are all equal);
    - at the largest r every seed's final median exceeds every seed's at the smallest r
      (``_separated``: beyond the spread over seeds).

    ``table``: columns ``STABLE_RANK_COLUMNS``; at least two values of r.
    """
    final = _final(_run_medians(table, method))
    evidence = _seed_spread(final)
    ranks = evidence.index.to_numpy()
    if ranks.size < 2:
        raise ValueError(f"r must take at least two values for method {method!r}, got {ranks.tolist()}")
    means = evidence["mean"].to_numpy()
    rho = float(stats.spearmanr(ranks, means).statistic) if np.ptp(means) > 0 else 0.0
    separated = _separated(final.xs(ranks[-1], level="r"), final.xs(ranks[0], level="r"))
    holds = rho > 0 and separated
    chain = " → ".join(f"{m:.1f} (r={r})" for r, m in zip(ranks, means))
    low, high = evidence.iloc[0], evidence.iloc[-1]
    statement = (f"{method}'s final median stable rank {'grows' if holds else 'does not grow'} with r: {chain}, "
                 f"Spearman ρ = {rho:.2f}; seeds {high['min']:.2f}–{high['max']:.2f} at r={ranks[-1]} "
                 f"{'clear of' if separated else 'overlap'} {low['min']:.2f}–{low['max']:.2f} at r={ranks[0]}")
    return Verdict(holds, statement, evidence.reset_index())


def grows_with_training(table: pd.DataFrame, method: str) -> Verdict:
    """"``method``'s stable rank grows during training": at every r, every seed's median stable rank at
    its last logged step exceeds every seed's at its first logged step after step 0 (``_separated``).

    Step 0 is skipped: a zero-initialised update (LoRA, PoLAR) has sr := 0 there, which would make
    any growth trivial. ``table``: columns ``STABLE_RANK_COLUMNS``, at least two logged steps > 0.
    """
    medians = _run_medians(table, method)
    medians = medians[medians.index.get_level_values("step") > 0]
    if medians.index.get_level_values("step").nunique() < 2:
        raise ValueError(f"table must log at least two steps > 0 for method {method!r}")
    first = medians.groupby(["r", "seed"]).first()
    final = _final(medians)
    rows = []
    for r in final.index.unique("r"):
        rows.append({"r": r, "first": first.xs(r, level="r").mean(), "final": final.xs(r, level="r").mean(),
                     "grows": _separated(final.xs(r, level="r"), first.xs(r, level="r"))})
    evidence = pd.DataFrame(rows)
    holds = bool(evidence.grows.all())
    parts = [f"{row.first:.1f} → {row.final:.1f} (r={row.r}{'' if row.grows else ', within seed spread'})"
             for row in evidence.itertuples()]
    statement = (f"{method}'s median stable rank {'grows' if holds else 'does not grow'} during training at "
                 f"every r (first logged step after 0 → last): {', '.join(parts)}")
    return Verdict(holds, statement, evidence)


def exceeds(table: pd.DataFrame, method: str, baseline: str) -> Verdict:
    """"``method``'s stable rank exceeds ``baseline``'s": at every r both have, the final median
    stable rank of ``method`` is above ``baseline``'s in every seed they share (paired on seed).
    ``table``: columns ``STABLE_RANK_COLUMNS``."""
    ours = _final(_run_medians(table, method))
    theirs = _final(_run_medians(table, baseline))
    paired = pd.concat({"method": ours, "baseline": theirs}, axis=1, join="inner")
    if paired.empty:
        raise ValueError(f"method {method!r} and baseline {baseline!r} share no (r, seed) run in table")
    paired["difference"] = paired["method"] - paired["baseline"]
    evidence = paired.groupby("r").agg(method=("method", "mean"), baseline=("baseline", "mean"),
                                       smallest_difference=("difference", "min"), seeds=("difference", "size"))
    holds = bool((evidence.smallest_difference > 0).all())
    parts = [f"{row['method']:.1f} vs {row['baseline']:.1f} (r={r}, smallest seed difference "
             f"{row['smallest_difference']:+.2f})" for r, row in evidence.iterrows()]
    statement = (f"{method}'s final median stable rank {'exceeds' if holds else 'does not exceed'} {baseline}'s "
                 f"at every r in every seed: {', '.join(parts)}")
    return Verdict(holds, statement, evidence.reset_index())


# ---------------------------------------------------------------------------------------------
# Accuracy verdict
# ---------------------------------------------------------------------------------------------

def _answers(rows: pd.DataFrame, method: str, task: str) -> pd.DataFrame:
    """seeds × questions 0/1 matrix of ``method`` on ``task``."""
    matrix = rows[rows.method == method].pivot(index="seed", columns="question", values="correct")
    if matrix.isna().to_numpy().any():
        raise ValueError(f"every seed of method {method!r} must answer the same questions of task {task!r}")
    return matrix


def beats(per_question: pd.DataFrame, method: str, baseline: str, task: str, alpha: float = 0.05) -> Verdict:
    """"``method`` beats ``baseline`` on ``task``": ``paired_comparison`` (exact McNemar over the seed
    pairs they share, seed i with seed i) is significant at ``alpha`` and the difference is positive.

    ``per_question``: columns ``PER_QUESTION_COLUMNS`` (task, method, seed, question, correct 0/1),
    both methods scored on the same questions. When the verdict fails, the statement adds the
    smallest difference this design detects with 80 % power at the observed discordance.
    """
    _check_columns(per_question, "per_question", PER_QUESTION_COLUMNS)
    check_choice("task", task, sorted(per_question.task.unique()), " (tasks of per_question)")
    rows = per_question[per_question.task == task]
    _zero_one(rows.correct, "per_question.correct", (1,))
    methods = sorted(rows.method.unique())
    check_choice("method", method, methods, f" (methods of per_question on task {task!r})")
    check_choice("baseline", baseline, methods, f" (methods of per_question on task {task!r})")
    ours, theirs = _answers(rows, method, task), _answers(rows, baseline, task)
    if set(ours.columns) != set(theirs.columns):
        raise ValueError(f"method {method!r} and baseline {baseline!r} must be scored on the same questions "
                         f"of task {task!r}, got {ours.shape[1]} and {theirs.shape[1]} questions")
    seeds = ours.index.intersection(theirs.index)
    if seeds.empty:
        raise ValueError(f"method {method!r} and baseline {baseline!r} share no seed on task {task!r}")
    questions = ours.columns
    result = paired_comparison(theirs.loc[seeds, questions].to_numpy(), ours.loc[seeds, questions].to_numpy(),
                               alpha)
    holds = result.significant and result.difference > 0
    detectable = (minimal_detectable_difference(result.n_pairs, result.discordance, alpha)
                  if result.discordance > 0 else math.inf)
    statement = (f"{method} {'beats' if holds else 'does not beat'} {baseline} on {task}: "
                 f"{100 * result.accuracy_b:.1f} vs {100 * result.accuracy_a:.1f} %, difference "
                 f"{100 * result.difference:+.1f} points ({100 * (1 - alpha):g} % CI {100 * result.low:+.1f} to "
                 f"{100 * result.high:+.1f}), exact McNemar p = {result.p_value:.2g} over {len(seeds)} seed "
                 f"pair(s) × {len(questions)} questions ({result.only_b_correct} won, {result.only_a_correct} lost)")
    if not holds and math.isfinite(detectable):
        statement += (f"; at {100 * result.discordance:.0f} % discordance this design detects differences of "
                      f"{100 * detectable:.1f} points or more (80 % power)")
    evidence = asdict(result) | {"seed_pairs": len(seeds), "questions": len(questions),
                                 "minimal_detectable_difference": detectable}
    return Verdict(holds, statement, evidence)
