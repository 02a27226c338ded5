import pytest

from clara.evaluation.metrics import (answer_scores, cover_em, exact_match, f1, keyword_match,
                                      normalize, precision_at_k, recall_at_k)


def test_normalize_follows_squad_rules():
    assert normalize("The  Eiffel Tower!") == "eiffel tower"
    assert normalize("True") == "yes" and normalize("False") == "no"
    assert normalize("an apple, a pear") == "apple pear"


def test_exact_match_and_f1_on_hand_made_cases():
    assert exact_match("the Eiffel tower.", "Eiffel Tower") == 1.0
    assert exact_match("Eiffel", "Eiffel Tower") == 0.0
    # pred {paris, france}, gold {paris}: precision 1/2, recall 1 -> 2/3
    assert f1("Paris, France", "Paris") == pytest.approx(2 / 3)
    assert f1("London", "Paris") == 0.0
    # yes/no answers never get partial credit
    assert f1("yes it is", "no") == 0.0 and f1("no", "no") == 1.0


def test_cover_em_needs_every_gold_token():
    assert cover_em("It was founded in 1931 in Ohio", "Ohio 1931") == 1.0
    assert cover_em("It was founded in Ohio", "Ohio 1931") == 0.0
    assert cover_em("anything", "") == 0.0


def test_keyword_and_retrieval_metrics():
    assert keyword_match("Built by Alia in 1801", ["alia", "1801", "mill"]) == pytest.approx(2 / 3)
    assert keyword_match("x", []) is None
    assert recall_at_k([4, 1, 7], [1, 9], 1) == 0.0
    assert recall_at_k([4, 1, 7], [1, 9], 3) == 0.5
    assert recall_at_k([4, 1, 7], [], 3) == 0.0
    assert precision_at_k([4, 1, 7], [1, 7], 3) == pytest.approx(2 / 3)
    scores = answer_scores("Ohio", "ohio", ["Ohio"])
    assert scores == {"em": 1.0, "f1": 1.0, "cover_em": 1.0, "keyword": 1.0}
