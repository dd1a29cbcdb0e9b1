"""Benchmark datasets: SQuAD / CMRC 2018 JSON and JSON Lines question files.

Every problem is reported as one line naming the file and the record, e.g.
``cmrc.json: data[3].paragraphs[0].qas[2] (id TRIAL_3_QUERY_2): 'question' must be a non-empty string``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.types import Document


class DatasetError(ValueError):
    """A dataset file that cannot be evaluated; the message names the file and the record."""


@dataclass(frozen=True)
class EvalQuestion:
    qid: str
    question: str
    answers: tuple[str, ...]  # acceptable answers; any one counts
    answerable: bool
    evidence: str | None = None  # a string of the corpus that supports the answer
    gold_doc_ids: frozenset[str] = frozenset()


@dataclass
class Dataset:
    path: Path
    format: str  # "squad" or "jsonl"
    questions: list[EvalQuestion]
    # SQuAD/CMRC only: every paragraph context as a document (what --build-index indexes).
    documents: list[Document] = field(default_factory=list)
    # (question id, reason) of records left out, e.g. the two blank questions of the CMRC 2018 trial set.
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.stem

    def limited(self, limit: int | None) -> Dataset:
        """The first `limit` questions (documents are kept: they are the retrieval corpus)."""
        if limit is None:
            return self
        return Dataset(self.path, self.format, self.questions[:limit], self.documents, self.skipped)


def load_dataset(path: Path) -> Dataset:
    """Load a SQuAD/CMRC ``.json`` file or a ``.jsonl`` question file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".jsonl"):
        raise DatasetError(f"{path}: unknown dataset format {suffix or '(no suffix)'!r}: expected SQuAD/CMRC .json or .jsonl")
    text = _read(path)
    dataset = load_squad(path, text) if suffix == ".json" else load_jsonl(path, text)
    if not dataset.questions:
        raise DatasetError(f"{path}: no questions" + (f" ({len(dataset.skipped)} blank)" if dataset.skipped else ""))
    _check_unique_ids(path, dataset.questions)
    return dataset


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a directory, expected a dataset file") from None
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot read ({err.strerror})") from None


def _check_unique_ids(path: Path, questions: list[EvalQuestion]) -> None:
    seen: set[str] = set()
    for q in questions:
        if q.qid in seen:
            raise DatasetError(f"{path}: duplicate question id {q.qid!r}")
        seen.add(q.qid)


# ---------------------------------------------------------------- SQuAD / CMRC 2018


def load_squad(path: Path, text: str) -> Dataset:
    """``data[].paragraphs[].{id?, context, qas[].{id, question, answers[].text, is_impossible?}}``;
    each paragraph context becomes a Document whose doc_id is the gold passage of its questions."""
    try:
        root = json.loads(text)
    except json.JSONDecodeError as err:
        hint = " (several JSON values: is it JSON Lines? name it .jsonl)" if err.msg == "Extra data" else ""
        raise DatasetError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}{hint}") from None
    except RecursionError:  # json.loads recurses once per nesting level
        raise DatasetError(f"{path}: invalid JSON (nested too deeply)") from None
    if not isinstance(root, dict) or not isinstance(root.get("data"), list):
        raise DatasetError(f'{path}: not a SQuAD/CMRC file: expected an object with a "data" list')
    dataset = Dataset(path, "squad", [])
    keys: set[str] = set()
    for i, article in enumerate(root["data"]):
        where = f"data[{i}]"
        article = _expect_object(path, where, article)
        article_title = article.get("title")
        if article_title is not None and not isinstance(article_title, str):
            raise DatasetError(f"{path}: {where}: 'title' must be a string")
        for j, paragraph in enumerate(_expect_list(path, where, article, "paragraphs")):
            p_where = f"{where}.paragraphs[{j}]"
            doc = _paragraph_document(path, p_where, _expect_object(path, p_where, paragraph), article_title, keys)
            dataset.documents.append(doc)
            for k, qa in enumerate(_expect_list(path, p_where, paragraph, "qas")):
                _add(dataset, _squad_question(path, f"{p_where}.qas[{k}]", qa, doc.doc_id))
    return dataset


def _add(dataset: Dataset, question: EvalQuestion) -> None:
    # A blank question is a data slip, not a format error: keep going and report it.
    if question.question:
        dataset.questions.append(question)
    else:
        dataset.skipped.append((question.qid, "blank question"))


def _paragraph_document(path: Path, where: str, paragraph: dict[str, Any], article_title: str | None, keys: set[str]) -> Document:
    context = paragraph.get("context")
    if not isinstance(context, str) or not context.strip():
        raise DatasetError(f"{path}: {where}: 'context' must be a non-empty string")
    pid = paragraph.get("id")
    pid = str(pid) if isinstance(pid, str | int) and str(pid).strip() else None
    title = (article_title or "").strip() or pid or where
    # The key identifies the paragraph across re-indexing; positional when ids repeat or are missing.
    key = f"{path.name}#{pid}" if pid else f"{path.name}#{where}"
    if key in keys:
        key = f"{path.name}#{where}"
    keys.add(key)
    return Document(title=title, text=context.strip(), key=key, source=path.name)


def _squad_question(path: Path, where: str, qa: object, doc_id: str) -> EvalQuestion:
    qa = _expect_object(path, where, qa)
    raw_id = qa.get("id")
    qid = str(raw_id).strip() if isinstance(raw_id, str | int) else ""
    if qid:
        where = f"{where} (id {qid})"
    question = qa.get("question")
    if not isinstance(question, str):
        raise DatasetError(f"{path}: {where}: 'question' must be a string")
    impossible = qa.get("is_impossible", False)
    if not isinstance(impossible, bool):
        raise DatasetError(f"{path}: {where}: 'is_impossible' must be true or false")
    answers: list[str] = []
    for n, answer in enumerate(_expect_list(path, where, qa, "answers")):
        if not isinstance(answer, dict) or not isinstance(answer.get("text"), str):
            raise DatasetError(f"{path}: {where}: answers[{n}] must be an object with a string 'text'")
        if answer["text"].strip() and answer["text"].strip() not in answers:
            answers.append(answer["text"].strip())
    if not impossible and not answers:
        raise DatasetError(f'{path}: {where}: no non-empty answer (mark it "is_impossible": true if it has none)')
    gold = frozenset() if impossible else frozenset({doc_id})
    return EvalQuestion(qid or where, question.strip(), tuple(answers), not impossible, None, gold)


def _expect_object(path: Path, where: str, value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DatasetError(f"{path}: {where}: expected a JSON object, got {type(value).__name__}")
    return value


def _expect_list(path: Path, where: str, obj: dict[str, Any], name: str) -> list[Any]:
    value = obj.get(name)
    if not isinstance(value, list):
        raise DatasetError(f"{path}: {where}: '{name}' must be a list")
    return value


# ---------------------------------------------------------------- JSON Lines


def load_jsonl(path: Path, text: str) -> Dataset:
    """One object per line: ``question``, ``answers`` (list of strings), optional ``id``,
    ``evidence``, ``doc_id`` (string or list) and ``answerable`` (default: answers non-empty).
    Only a record with ``"answerable": false`` may leave ``answers`` out."""
    dataset = Dataset(path, "jsonl", [])
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{path}:{line_no}: invalid JSON ({err.msg} at column {err.colno})") from None
        except RecursionError:
            raise DatasetError(f"{path}:{line_no}: invalid JSON (nested too deeply)") from None
        _add(dataset, jsonl_question(record, f"{path}:{line_no}", f"line{line_no}"))
    return dataset


def jsonl_question(record: object, where: str, default_id: str) -> EvalQuestion:
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(record).__name__}")
    qid = record.get("id")
    if qid is not None and not isinstance(qid, str | int):
        raise DatasetError(f"{where}: 'id' must be a string or a number")
    if qid is not None:
        where = f"{where} (id {qid})"
    question = record.get("question")
    if not isinstance(question, str):
        raise DatasetError(f"{where}: 'question' must be a string")
    answers = _answers_field(record, where)
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise DatasetError(f"{where}: 'answers' must be a list of strings")
    answers = [a.strip() for a in answers if a.strip()]
    answerable = record.get("answerable", bool(answers))
    if not isinstance(answerable, bool):
        raise DatasetError(f"{where}: 'answerable' must be true or false")
    if answerable and not answers:
        raise DatasetError(f"{where}: answerable question without 'answers'")
    evidence = record.get("evidence")
    if evidence is not None and not isinstance(evidence, str):
        raise DatasetError(f"{where}: 'evidence' must be a string or null")
    return EvalQuestion(
        qid=default_id if qid is None else str(qid),
        question=question.strip(),
        answers=tuple(dict.fromkeys(answers)),
        answerable=answerable,
        evidence=evidence.strip() if evidence and evidence.strip() else None,
        gold_doc_ids=_doc_ids(record.get("doc_id"), where),
    )


def _answers_field(record: dict[str, Any], where: str) -> object:
    """`answers`, which only an explicitly unanswerable question may leave out: a misspelt
    field would otherwise turn every question into an unanswerable one, silently."""
    if "answer" in record:  # the likeliest slip: one answer, so a singular name
        raise DatasetError(f"{where}: unknown field 'answer': use 'answers' (a list of strings)")
    if "answers" not in record and "answerable" not in record:
        raise DatasetError(f"{where}: 'answers' is missing: give a list of strings, or \"answerable\": false for a question without one")
    return record.get("answers", [])  # "answerable": true without answers is refused by the caller


def _doc_ids(value: object, where: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset({value})
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(value)
    raise DatasetError(f"{where}: 'doc_id' must be a string or a list of strings")
