"""Follow-up rewriting, conversation memory and answer streaming pieces (no server needed)."""

from __future__ import annotations

import time

import pytest

from api.answering import CitationEvent, Delta, Done, answer_events, split_pieces
from api.conversations import ConversationStore
from api.followup import Turn, rewrite, turns_from_messages
from rag.types import Answer, Citation

CHANGDU = "昌都市有多少名市级以上领导带头抓党建促乡村振兴？"
RANWU = "八宿县然乌镇然乌村的党支部书记是谁？"


@pytest.mark.parametrize(
    ("follow_up", "previous", "expected"),
    [
        ("那阿里地区呢？", CHANGDU, "阿里地区有多少名市级以上领导带头抓党建促乡村振兴？"),
        ("阿里地区呢", CHANGDU, "阿里地区有多少名市级以上领导带头抓党建促乡村振兴？"),
        ("那林芝呢？", CHANGDU, "林芝市有多少名市级以上领导带头抓党建促乡村振兴？"),  # the level suffix is kept
        ("那山南市呢？", "林芝市委组织部开展的“三访”指的是哪三项工作？", "山南市委组织部开展的“三访”指的是哪三项工作？"),
        ("那来古村呢？", RANWU, "八宿县然乌镇来古村的党支部书记是谁？"),  # same level: the village, not the county
        ("那2022年呢？", "拉萨政务服务大厅2020年办理了多少件事项？", "拉萨政务服务大厅2022年办理了多少件事项？"),
        ("What about Ngari?", "How many leaders in Chamdo took the lead?", "How many leaders in Ngari took the lead?"),
    ],
)
def test_ellipsis_swaps_the_entity_of_the_same_kind(follow_up: str, previous: str, expected: str) -> None:
    assert rewrite(follow_up, [Turn(previous)]) == expected


def test_references_resolve_to_the_previous_place_or_answer() -> None:
    assert rewrite("该村有多少户？", [Turn(RANWU)]) == "然乌村有多少户？"
    assert rewrite("当地有什么产业？", [Turn(RANWU)]) == "然乌村有什么产业？"
    assert rewrite("他带领村民做了什么？", [Turn(RANWU, short_answer="蒋雄")]) == "蒋雄带领村民做了什么？"
    # A pronoun after a question that did not ask for a person is left alone.
    assert rewrite("他带领村民做了什么？", [Turn(CHANGDU, short_answer="44名")]) is None


@pytest.mark.parametrize(
    "question",
    [
        "白玛岗社区一共收集了多少个“微心愿”呢？",  # a full question that happens to end in 呢
        "阿里地区排查认定了多少个软弱涣散基层党组织？",
        "那是什么呢？",
    ],
)
def test_standalone_questions_are_not_rewritten(question: str) -> None:
    assert rewrite(question, [Turn(CHANGDU)]) is None


def test_nothing_to_resolve_against() -> None:
    assert rewrite("那阿里地区呢？", []) is None


def test_history_resolves_chains_of_follow_ups() -> None:
    messages = [("user", CHANGDU), ("assistant", "……[1]"), ("user", "那阿里地区呢？"), ("assistant", "……")]
    turns = turns_from_messages(messages)
    assert [t.question for t in turns] == [CHANGDU, "阿里地区有多少名市级以上领导带头抓党建促乡村振兴？"]
    # The next follow-up is resolved against the already rewritten question.
    assert rewrite("那林芝市呢？", turns) == "林芝市有多少名市级以上领导带头抓党建促乡村振兴？"


def test_conversation_store_is_bounded_and_expires() -> None:
    store = ConversationStore(max_turns=2, ttl_seconds=0.2, max_conversations=2)
    for i in range(3):
        store.append("a", Turn(f"q{i}"))
    assert [t.question for t in store.turns("a")] == ["q1", "q2"]  # oldest turn dropped
    store.append("b", Turn("x"))
    store.append("c", Turn("y"))
    assert store.turns("a") == [] and len(store) == 2  # least recently used conversation dropped
    time.sleep(0.25)
    assert store.turns("b") == [] and store.turns("c") == []  # idle conversations expire
    assert len(ConversationStore.new_id()) >= 16


def test_stream_pieces_rebuild_the_answer_and_isolate_markers() -> None:
    text = "为强化基层班子领导力建设，昌都市建立“市县乡村”四级书记抓党建促乡村振兴工作机制，全市44名市级以上领导带头。[1]然乌村党支部书记蒋雄如是说。[2]"
    pieces = split_pieces(text)
    assert "".join(pieces) == text
    assert "[1]" in pieces and "[2]" in pieces
    assert all(len(p) <= 24 for p in pieces) and len(pieces) >= 5


def test_answer_events_put_each_citation_right_after_its_marker() -> None:
    citations = [Citation(n, f"d{n}", f"t{n}", f"d{n}:0", 0, 5, "quote", 0.9) for n in (1, 2)]
    answer = Answer("q", "第一句。[1]第二句，很长的第二句。[2]", "x", False, citations)
    events = list(answer_events(answer))
    assert isinstance(events[-1], Done) and events[-1].answer is answer
    for i, event in enumerate(events):
        if isinstance(event, CitationEvent):
            previous = events[i - 1]
            assert isinstance(previous, Delta) and previous.text == f"[{event.citation.n}]"
    assert [e.citation.n for e in events if isinstance(e, CitationEvent)] == [1, 2]
    assert "".join(e.text for e in events if isinstance(e, Delta)) == answer.answer
