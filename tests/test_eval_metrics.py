"""Hand-computed expectations for rag.eval.metrics (token lists worked out by hand)."""

import math

import pytest

from rag.eval.metrics import (
    CitedSentence,
    answer_contains,
    citation_precision,
    citation_recall,
    cmrc_em,
    cmrc_f1,
    mixed_segmentation,
    mrr_at_k,
    ndcg_at_k,
    percentiles,
    quote_supports,
    recall_at_k,
    remove_punctuation,
)

# --- CMRC 2018 tokenisation -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("iPhone 15发布", ["iphone", "15", "发", "布"]),
        ("苹果iPhone15", ["苹", "果", "iphone15"]),
        ("3.14米", ["3.14", "米"]),
        ("1,000元", ["1,000", "元"]),
        ("50%的人", ["50", "%", "的", "人"]),
        ("U.S.", ["u.s", "."]),
        ("《三体》", ["三", "体"]),  # 《》 are on the official list
        (
            "2018-2019",
            ["20182019"],
        ),  # dropping "-" does not end the run (official quirk)
    ],
)
def test_mixed_segmentation_drops_listed_punctuation(text, tokens):
    assert mixed_segmentation(text, rm_punc=True) == tokens


def test_mixed_segmentation_keeps_listed_punctuation_as_tokens_without_rm_punc():
    assert mixed_segmentation("共1459个。A-b") == [
        "共",
        "1459",
        "个",
        "。",
        "a",
        "-",
        "b",
    ]


def test_remove_punctuation_uses_official_list_only():
    assert remove_punctuation(" 《三体》：第一部。 ") == "三体第一部"
    # ASCII "." and "," and inner spaces are not on the official list.
    assert remove_punctuation("Hi, Bob.") == "hi, bob."


# --- CMRC 2018 EM / F1 -------------------------------------------------------


def test_punctuation_difference_is_exact_match():
    assert cmrc_em("1459个。", ["1459个"]) == 1.0
    assert cmrc_f1("1459个。", ["1459个"]) == 1.0


def test_partial_overlap():
    # pred 全 市 共 建 成 1459 个 (7), gold 1459 个 (2), LCS 2: P=2/7, R=1.
    assert cmrc_em("全市共建成1459个", ["1459个"]) == 0.0
    assert cmrc_f1("全市共建成1459个", ["1459个"]) == pytest.approx(4 / 9)


def test_mixed_chinese_english():
    # pred iphone 15 发 布 (4), gold iphone 15 (2), LCS 2: P=1/2, R=1 -> F1=2/3.
    assert cmrc_f1("iPhone 15发布", ["iPhone 15"]) == pytest.approx(2 / 3)
    assert cmrc_em("iPhone 15发布", ["iPhone 15"]) == 0.0


def test_max_over_several_gold_answers():
    # pred 共 建 成 1459 个 (5).
    # gold 1459 个 (2): LCS 2, P=2/5, R=1 -> 4/7; gold 建 成 1459 个 (4): LCS 4, P=4/5, R=1 -> 8/9.
    assert cmrc_f1("共建成1459个", ["1459个", "建成1459个"]) == pytest.approx(8 / 9)
    assert cmrc_f1("共建成1459个", ["建成1459个", "1459个"]) == pytest.approx(8 / 9)
    assert cmrc_em("1459个", ["全市1459个", "1459个"]) == 1.0


def test_f1_uses_longest_common_substring_not_subsequence():
    # pred 北 京 大 学 图 书 馆 (7), gold 北 京 图 书 馆 (5): the common subsequence has 5
    # tokens (F1 would be 5/6) but the longest common substring is 图 书 馆 = 3:
    # P=3/7, R=3/5 -> F1 = 2*(9/35)/(36/35) = 1/2.
    assert cmrc_f1("北京大学图书馆", ["北京图书馆"]) == pytest.approx(1 / 2)


def test_case_insensitive():
    assert cmrc_em("IPHONE", ["iPhone"]) == 1.0
    assert cmrc_f1("IPHONE", ["iPhone"]) == 1.0


def test_empty_prediction_and_empty_answers():
    assert cmrc_em("", ["1459个"]) == 0.0
    assert cmrc_f1("", ["1459个"]) == 0.0
    assert cmrc_f1("。", ["1459个"]) == 0.0  # only punctuation: no tokens left
    assert cmrc_f1("1459个", []) == 0.0
    assert cmrc_em("1459个", []) == 0.0


def test_ascii_punctuation_counts_as_content_like_official_script():
    # "." is not on the official list: EM fails; pred 1459 个 . (3) vs 1459 个 (2):
    # LCS 2, P=2/3, R=1 -> F1 = 4/5.
    assert cmrc_em("1459个.", ["1459个"]) == 0.0
    assert cmrc_f1("1459个.", ["1459个"]) == pytest.approx(4 / 5)


def test_inner_whitespace_matters_like_official_script():
    # EM keeps spaces; F1 compares the tokens iphone15 vs iphone, 15: no overlap.
    assert cmrc_em("iPhone15", ["iPhone 15"]) == 0.0
    assert cmrc_f1("iPhone15", ["iPhone 15"]) == 0.0


# --- answer containment ------------------------------------------------------


def test_answer_contains_normalises_case_punctuation_and_whitespace():
    assert answer_contains("全市共建成 1459 个。", ["1459个"])
    assert answer_contains("新款IPHONE 15发布", ["iPhone15"])
    assert not answer_contains("全市共建成1459座", ["1459个"])


def test_answer_contains_ignores_empty_answers():
    assert not answer_contains("任何文本", ["", "。", "  "])


# --- retrieval ---------------------------------------------------------------

RANKED = ["d1", "d2", "d3", "d4", "d5"]


def test_single_relevant_at_rank_3():
    relevant = {"d3"}
    assert recall_at_k(RANKED, relevant, 2) == 0.0
    assert recall_at_k(RANKED, relevant, 3) == 1.0
    assert mrr_at_k(RANKED, relevant) == pytest.approx(1 / 3)
    assert mrr_at_k(RANKED, relevant, k=2) == 0.0
    # DCG = 1/log2(4) = 1/2, ideal DCG = 1/log2(2) = 1.
    assert ndcg_at_k(RANKED, relevant) == pytest.approx(1 / 2)


def test_several_relevant_one_never_retrieved():
    relevant = {"d2", "d5", "missing"}
    assert recall_at_k(RANKED, relevant, 5) == 1.0
    assert recall_at_k(RANKED, relevant, 5, fraction=True) == pytest.approx(2 / 3)
    assert recall_at_k(RANKED, relevant, 3, fraction=True) == pytest.approx(1 / 3)
    assert mrr_at_k(RANKED, relevant) == pytest.approx(1 / 2)
    # Hits at ranks 2 and 5; ideal has min(5, 3) = 3 hits at ranks 1..3.
    assert ndcg_at_k(RANKED, relevant, k=5) == pytest.approx(
        (1 / math.log2(3) + 1 / math.log2(6)) / (1 + 1 / math.log2(3) + 1 / 2)
    )
    # k=2: one hit at rank 2; ideal has min(2, 3) = 2 hits.
    assert ndcg_at_k(RANKED, relevant, k=2) == pytest.approx(
        (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    )


def test_perfect_ranking_and_duplicates():
    assert ndcg_at_k(["a", "b", "c"], {"a", "b"}) == 1.0
    # A repeated hit is counted once, so scores stay <= 1.
    assert ndcg_at_k(["a", "a"], {"a"}) == 1.0
    assert recall_at_k(["a", "a"], {"a", "b"}, 2, fraction=True) == 0.5


def test_empty_relevant_and_bad_k():
    assert recall_at_k(RANKED, set(), 3) == 0.0
    assert mrr_at_k(RANKED, set()) == 0.0
    assert ndcg_at_k(RANKED, set()) == 0.0
    with pytest.raises(ValueError):
        recall_at_k(RANKED, {"d1"}, 0)


# --- citations ---------------------------------------------------------------

EVIDENCE = "覆盖所有街道"
ANSWERS = ["1459个"]
SENTENCES = [
    CitedSentence(
        "全市共建成1459个社区食堂。",
        [
            "截至2023年底，全市共建成 1459 个社区食堂。",
            "社区食堂由街道负责运营。",
        ],  # supports (answer), no
    ),
    CitedSentence(
        "这些食堂覆盖所有街道。",
        ["食堂网络已覆盖所有街道。", "市民满意度达到95%。"],  # supports (evidence), no
    ),
    CitedSentence("市民评价很高。", []),
]


def test_citation_precision_and_recall():
    assert citation_precision(SENTENCES, EVIDENCE, ANSWERS) == pytest.approx(2 / 4)
    assert citation_recall(SENTENCES, EVIDENCE, ANSWERS) == pytest.approx(2 / 3)


def test_citations_without_quotes_or_sentences_score_zero():
    uncited = [CitedSentence("全市共建成1459个社区食堂。", [])]
    assert citation_precision(uncited, EVIDENCE, ANSWERS) == 0.0
    assert citation_recall(uncited, EVIDENCE, ANSWERS) == 0.0
    assert citation_precision([], EVIDENCE, ANSWERS) == 0.0
    assert citation_recall([], EVIDENCE, ANSWERS) == 0.0


def test_empty_evidence_does_not_support_everything():
    assert not quote_supports("任意文本", "", ["不存在的答案"])


# --- latency -----------------------------------------------------------------


def test_percentiles_linear_interpolation():
    # Positions (n-1)*p/100 = 1.5, 2.85, 2.97 in [10, 20, 30, 40].
    assert percentiles([40, 10, 30, 20]) == pytest.approx(
        {"p50": 25.0, "p95": 38.5, "p99": 39.7}
    )
    assert percentiles([7.0], ps=(0, 99.9)) == {"p0": 7.0, "p99.9": 7.0}


def test_percentiles_of_nothing_is_empty():
    assert percentiles([]) == {}
