"""benchmarks/answer_convention.py: the length bound it reports really bounds the official metrics."""

from __future__ import annotations

import random

import pytest

from benchmarks.answer_convention import length_loss, placement_oracle, question_kind
from rag.eval.metrics import cmrc_em, cmrc_f1


def row(prediction: str | None, *answers: str) -> dict:
    return {"pred": prediction, "answers": list(answers), "em": cmrc_em(prediction or "", list(answers)), "f1": cmrc_f1(prediction or "", list(answers))}


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("為什麼此战奠定了霸权？", "why"),
        ("为什么他离开了？", "why"),
        ("塞内加尔国徽的图案是怎样的？", "how"),
        ("昌都市有多少名市级以上领导？", "how many"),
        ("谁宣布解散政府？", "who"),
        ("硝酰氟首先被誰制成？", "who"),
        ("《神圣十月》是由哪个杂志连载的？", "other"),
    ],
)
def test_question_kinds_in_both_scripts(question: str, kind: str) -> None:
    assert question_kind(question) == kind


def test_the_oracle_by_hand() -> None:
    rows = [
        row("大阪", "大阪"),  # 2 of 2 tokens: F1 1, EM 1
        row("踢爆", "生命数耗完即算为踢爆"),  # 2 against 10: F1 2*2/12
        row("三个", "十五万人次"),  # wrong place, same bound as if placed: 2 against 5
        row(None, "晋国"),  # refused: F1 0, EM 0
    ]
    oracle = placement_oracle(rows, "pred")
    assert oracle["em"] == pytest.approx(round(1 / 4, 3))
    assert oracle["f1"] == pytest.approx(round((1 + 4 / 12 + 4 / 7 + 0) / 4, 3))


def test_the_oracle_bounds_the_official_metrics_of_any_prediction() -> None:
    rng = random.Random(7)
    texts = ["生命数耗完即算为踢爆。", "MIT OpenCourseWare是由麻省理工学院在2002年创始的一项计划。", "白葡萄酒比红葡萄酒含有更多的亚硫酸盐", "《月刊Comic Blade》"]
    rows = []
    for _ in range(300):
        gold = rng.choice(texts)
        source = rng.choice(texts)
        start = rng.randrange(len(source))
        rows.append(row(source[start : start + rng.randint(1, 12)], gold, rng.choice(texts)))
    for one in rows:
        bound = placement_oracle([one], "pred")
        assert one["f1"] <= bound["f1"] + 1e-3
        assert one["em"] <= bound["em"]


def test_length_loss_counts_only_predictions_inside_a_longer_gold() -> None:
    rows = [row("踢爆", "生命数耗完即算为踢爆"), row("大阪", "大阪"), row("大阪商船", "大阪"), row("三个", "十五万人次")]
    loss = length_loss(rows, "pred", "em", "f1")
    assert loss["predictions_inside_gold"] == 1
    measured = sum(r["f1"] for r in rows) / 4
    assert loss["f1"] == pytest.approx(round(measured, 3))
    assert loss["f1_if_those_had_gold_length"] == pytest.approx(round(measured + (1 - rows[0]["f1"]) / 4, 3))
    assert loss["em_if_those_had_gold_length"] == pytest.approx(round((1 + 1) / 4, 3))
