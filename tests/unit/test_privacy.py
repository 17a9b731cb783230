"""Privacy metrics (core/evaluation/privacy.py) against values worked out by hand, with the
arithmetic in each docstring, and against scikit-learn / scipy where those define the metric."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from scipy.stats import ks_2samp
from sklearn.metrics import roc_auc_score

from lethe.core.evaluation import privacy


# ------------------------------------------------------------------ extraction
def test_normalise_folds_case_whitespace_and_punctuation():
    assert privacy.normalise("  J.Smith@Mail.COM\n") == "j smith mail com"
    assert privacy.normalise("42 Oak  Street,\tSpringfield") == "42 oak street springfield"
    assert privacy.normalise("Ｆｕｌｌ-width") == "full width"  # NFKC folds full-width letters


@pytest.mark.parametrize(
    ("text", "secret", "kind"),
    [
        ("Write to j.smith@mail.com today", "j.smith@mail.com", "exact"),
        ("Write to J.Smith@MAIL.com.", "j.smith@mail.com", "normalised"),
        ("She lives at 42 oak street,  springfield.", "42 Oak Street, Springfield", "normalised"),
        ("call (555) 010 2345 after six", "+1 555-010-2345", "digits"),
        ("call +1.555.010.2345", "555-010-2345", "normalised"),
        ("call +1 (555) 0102345", "555-010-2345", "digits"),
        ("dial 5550102345", "+1 555 010 2345", "digits"),  # without the country code
        ("Joann Leeds", "Ann Lee", None),  # word boundaries: no match inside other words
        ("42 Oak Street", "42 Oak Street, Springfield", None),  # part of an address is not it
        ("born 1985-03-12, room 555", "+1 555-198-5031", None),  # digits of separate spans not joined
        ("room 0102345", "+1 555-010-2345", None),  # the local part alone is not the number
    ],
)
def test_match_kind(text, secret, kind):
    assert privacy.match_kind(text, secret) == kind


def test_empty_secret_is_an_error():
    with pytest.raises(ValueError):
        privacy.match_kind("anything", "  ")


def test_leak_rate_counts_samples_holding_any_secret():
    """4 samples, one holds the e-mail, one the phone (punctuated differently): 2/4."""
    samples = ["a@b.org is hers", "no idea", "call 555 010 2345", "She likes tea."]
    assert privacy.leak_rate(samples, ["A@b.org", "555-010-2345"]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        privacy.leak_rate([], ["x"])


def test_accuracy_pairs_answers_with_their_truths():
    answers, truths = ["Acme Corp.", "in Paris", "no"], ["acme corp", "Lyon", "yes"]
    assert privacy.accuracy(answers, truths) == pytest.approx(1 / 3)


# ------------------------------------------------------------------ membership scores
LOGPS = [-0.1, -2.0, -0.5, -3.0, -0.2]


def test_loss_score_is_the_mean_log_prob():
    """(-0.1 - 2 - 0.5 - 3 - 0.2) / 5 = -1.16."""
    assert privacy.loss_score(LOGPS) == pytest.approx(-1.16)


def test_min_k_takes_the_lowest_share_of_tokens():
    """k = 0.4 of 5 tokens: the 2 lowest, -3 and -2, mean -2.5; k = 0.2: only -3;
    k = 0.1 still keeps one token (floor 0.5 → at least 1)."""
    assert privacy.min_k_score(LOGPS, 0.4) == pytest.approx(-2.5)
    assert privacy.min_k_score(LOGPS, 0.2) == pytest.approx(-3.0)
    assert privacy.min_k_score(LOGPS, 0.1) == pytest.approx(-3.0)
    assert privacy.min_k_score(LOGPS, 1.0) == pytest.approx(-1.16)


def test_min_k_plus_plus_standardises_by_the_next_token_distribution():
    """z = ((-1 + 1.5)/0.5, (-2 + 1)/2) = (1, -0.5): k = 0.5 keeps -0.5, k = 1 averages to 0.25."""
    args = ([-1.0, -2.0], [-1.5, -1.0], [0.5, 2.0])
    assert privacy.min_k_plus_plus_score(*args, k=0.5) == pytest.approx(-0.5)
    assert privacy.min_k_plus_plus_score(*args, k=1.0) == pytest.approx(0.25)


def test_zlib_score_divides_by_the_compressed_length():
    text = "Ada Lovelace was born in London."
    assert privacy.zlib_score([-1.0, -3.0], text) == pytest.approx(-2.0 / len(zlib.compress(text.encode())))


def test_scores_need_tokens():
    for call in (lambda: privacy.loss_score([]), lambda: privacy.min_k_score([], 0.2)):
        with pytest.raises(ValueError):
            call()


# ------------------------------------------------------------------ AUC, PrivLeak, KS
def test_roc_auc_on_a_toy_ranking_with_a_tie():
    """members (0.9, 0.8, 0.4) vs non-members (0.5, 0.4, 0.1): 0.9 and 0.8 beat all three (6),
    0.4 beats 0.1 (1) and ties 0.4 (½): 7.5 of 9 pairs = 0.8333."""
    members, nonmembers = [0.9, 0.8, 0.4], [0.5, 0.4, 0.1]
    assert privacy.roc_auc(members, nonmembers) == pytest.approx(7.5 / 9)
    labels = [1] * 3 + [0] * 3
    assert privacy.roc_auc(members, nonmembers) == pytest.approx(roc_auc_score(labels, members + nonmembers))
    assert privacy.roc_auc([1.0], [1.0]) == 0.5
    assert privacy.roc_auc([0.0, 0.1], [0.5]) == 0.0


def test_privleak_follows_muse():
    """Ours 1.0 (forget set recognised) → MUSE AUC 0 → (0 - 0.5)/0.5 = -1; ours 0.5 → 0;
    ours 0.25 → (0.75 - 0.5)/0.5 = +0.5; with a retrain AUC of 0.6: (0.3 - 0.4)/0.4 = -0.25."""
    assert privacy.privleak(1.0) == pytest.approx(-1.0)
    assert privacy.privleak(0.5) == pytest.approx(0.0)
    assert privacy.privleak(0.25) == pytest.approx(0.5)
    assert privacy.privleak(0.7, 0.6) == pytest.approx(-0.25)


def test_ks_statistic_by_hand_and_against_scipy():
    """a = (1, 2, 3), b = (2.5, 4): at x = 2, F_a = 2/3 and F_b = 0, the largest gap."""
    a, b = [1.0, 2.0, 3.0], [2.5, 4.0]
    assert privacy.ks_statistic(a, b) == pytest.approx(2 / 3)
    statistic, pvalue = privacy.ks_test(a, b)
    assert statistic == pytest.approx(ks_2samp(a, b).statistic)
    assert pvalue == pytest.approx(ks_2samp(a, b).pvalue)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=40), rng.normal(0.5, size=30)
    assert privacy.ks_statistic(x, y) == pytest.approx(ks_2samp(x, y).statistic)
    assert privacy.ks_test(x, x)[1] == pytest.approx(1.0)
