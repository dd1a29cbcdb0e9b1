"""Request and response models of the HTTP API (the wire format, separate from core types)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

from index.store import Filters
from rag.dates import calendar_date

# The schema's limits; `ApiSettings.max_question_chars` may lower the question limit further.
MAX_QUESTION_CHARS = 500
MAX_TOP_K = 20
MAX_HISTORY = 20
ID_PATTERN = r"^[A-Za-z0-9_:.-]{1,64}$"
CONVERSATION_ID_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"


class Strict(BaseModel):
    """Unknown fields and loose types (true for 1, 0 for a date) are errors."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _json_integer(value: object) -> int:
    """JSON Schema's integer: 4 and 4.0, but not true, "4" or 4.5."""
    if isinstance(value, bool) or not isinstance(value, int | float) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError("expected an integer")
    return int(value)


JsonInt = Annotated[int, BeforeValidator(_json_integer)]
TopK = Annotated[int, Field(ge=1, le=MAX_TOP_K), BeforeValidator(_json_integer)]
DocId = Annotated[str, Field(min_length=1, max_length=64)]
IsoDate = Annotated[str, Field(json_schema_extra={"format": "date"}), AfterValidator(calendar_date)]


class FieldError(BaseModel):
    field: str = Field(description="dotted path of the offending field, e.g. `filters.date_to`")
    message: str
    type: str


class ErrorBody(BaseModel):
    error: str = Field(description="machine-readable code, e.g. invalid_request, not_found, rate_limited")
    message: str
    fields: list[FieldError] = Field(default_factory=list)
    request_id: str | None = None


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorBody(BaseModel):
    """Errors under /v1/ take OpenAI's shape so OpenAI clients can show them."""

    error: OpenAIErrorDetail
    fields: list[FieldError] = Field(default_factory=list)
    request_id: str | None = None


_OPENAI_ERROR_TEXTS = (
    (400, "invalid request (OpenAI's invalid_request_error); `error.param` names the offending field"),
    (401, "missing or unknown API key"),
    (403, "the key may not use this endpoint or origin"),
    (404, "unknown model (`error.code`: model_not_found)"),
    (413, "request body too large"),
    (415, "unsupported content type"),
    (429, "rate limited; see Retry-After"),
)
_ERROR_TEXTS = (
    (400, "the body could not be parsed"),
    (401, "missing or unknown API key"),
    (403, "the key may not use this endpoint or origin"),
    (413, "request body too large"),
    (415, "unsupported content type"),
    (422, "invalid request; `fields` names each offending field"),
    (429, "rate limited; see Retry-After"),
)
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody, "description": text} for code, text in _ERROR_TEXTS}
OPENAI_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": OpenAIErrorBody, "description": text} for code, text in _OPENAI_ERROR_TEXTS
}


# ---------------------------------------------------------------- questions


class FiltersIn(Strict):
    doc_ids: list[DocId] | None = Field(None, max_length=200, description="only these documents")
    exclude_doc_ids: list[DocId] | None = Field(None, max_length=200, description="never these documents")
    title_contains: str | None = Field(None, min_length=1, max_length=200)
    date_from: IsoDate | None = Field(None, description="documents dated on or after (YYYY-MM-DD)")
    date_to: IsoDate | None = Field(None, description="documents dated on or before (YYYY-MM-DD)")

    @field_validator("date_to")
    @classmethod
    def range_is_ordered(cls, value: str | None, info: ValidationInfo) -> str | None:
        start = info.data.get("date_from")
        if value is not None and start is not None and value < start:
            raise ValueError("date_to is before date_from")
        return value

    def to_filters(self) -> Filters:
        return Filters(
            doc_ids=frozenset(self.doc_ids) if self.doc_ids is not None else None,
            exclude_doc_ids=frozenset(self.exclude_doc_ids) if self.exclude_doc_ids is not None else None,
            title_contains=self.title_contains,
            date_from=self.date_from,
            date_to=self.date_to,
        )


class HistoryMessage(Strict):
    role: Literal["user", "assistant"]
    content: str = Field(max_length=20_000)


class QuestionIn(Strict):
    question: str = Field(
        min_length=1, max_length=MAX_QUESTION_CHARS, pattern=r"\S", examples=["昌都市有多少名市级以上领导带头抓党建促乡村振兴？"]
    )
    top_k: TopK | None = Field(None, description="passages to retrieve (default: server setting)")
    filters: FiltersIn | None = None

    def filters_or_none(self) -> Filters:
        return self.filters.to_filters() if self.filters else Filters()


class AskRequest(QuestionIn):
    conversation_id: str | None = Field(
        None, pattern=CONVERSATION_ID_PATTERN, description="continue a server-side conversation (follow-ups are rewritten)"
    )
    history: list[HistoryMessage] | None = Field(
        None, max_length=MAX_HISTORY, description="earlier turns, oldest first; used instead of the server-side conversation"
    )


class SearchRequest(QuestionIn):
    mode: Literal["hybrid", "dense", "lexical"] = "hybrid"


# ---------------------------------------------------------------- answers


class CitationOut(BaseModel):
    n: int
    doc_id: str
    title: str
    chunk_id: str
    start: int = Field(description="offset of the quote in the document text")
    end: int
    quote: str
    score: float
    source_start: int | None = Field(None, description="offset of the quote in the original file")
    source_end: int | None = None
    field: str | None = Field(
        None,
        description="null: the quote is document text[start:end]; a metadata field (byline, title, date, dateline, source, credit): "
        "the quote is what the field was read from and quote[start:end] is its value",
    )


class PassageOut(BaseModel):
    chunk_id: str
    doc_id: str
    title: str
    start: int
    end: int
    text: str
    date: str | None = None
    score: float = Field(description="fused (reciprocal-rank) score")
    dense_rank: int | None = None
    dense_score: float | None = None
    lexical_rank: int | None = None
    lexical_score: float | None = None


class SentenceOut(BaseModel):
    text: str
    citations: list[int]
    supported: bool = Field(description="a generated sentence its cited passage supports (unsupported ones are left out of `answer`)")
    rule: str = Field(description="what decided: extractive, cited, reattached, attached, refusal, no_claim, unsupported_number, ...")


class ShortAnswerSpanOut(BaseModel):
    doc_id: str
    start: int
    end: int
    citation: int = Field(description="n of the citation whose quote holds the span")


class AskResponse(BaseModel):
    question: str = Field(description="the question as asked")
    rewritten_question: str | None = Field(None, description="the standalone question actually answered, when a follow-up was rewritten")
    rewritten_by: Literal["llm", "rules"] | None = Field(None, description="what rewrote the follow-up: the configured LLM or the rules")
    conversation_id: str
    conversation_reset: bool = Field(False, description="the conversation_id sent was unknown or expired: this is a new one")
    answer: str = Field(description="answer text with [n] citation markers")
    short_answer: str | None
    short_answer_span: ShortAnswerSpanOut | None = Field(None, description="where short_answer sits: document text[start:end], inside citation n")
    refused: bool
    confidence: float
    citations: list[CitationOut]
    sentences: list[SentenceOut]
    passages: list[PassageOut]
    timings_ms: dict[str, float] = Field(description="retrieve, compose, total (and rewrite when a follow-up was rewritten)")
    fallback: Literal["extractive"] | None = Field(None, description="set when the configured LLM's answer could not be used")
    fallback_reason: str | None = Field(None, description="why, e.g. `timeout: …`, `http_500: …`, `unsupported: …`")


class SearchResponse(BaseModel):
    question: str
    mode: str
    hits: list[PassageOut]
    timings_ms: dict[str, float]


# ---------------------------------------------------------------- documents


class DocumentIn(Strict):
    title: str = Field(min_length=1, max_length=500, pattern=r"\S")
    text: str = Field(min_length=1, max_length=2_000_000, pattern=r"\S")
    date: IsoDate | None = None
    url: str | None = Field(None, min_length=1, max_length=2000, description="identity for replacement: same url = new version")
    source: str | None = Field(None, min_length=1, max_length=200)


class DocumentSummary(BaseModel):
    doc_id: str
    title: str
    source: str
    date: str | None
    url: str | None
    chars: int
    chunks: int


class DocumentList(BaseModel):
    total: int
    offset: int
    limit: int
    documents: list[DocumentSummary]


class DocumentDetail(DocumentSummary):
    key: str
    text: str
    byline: str | None
    dateline: str | None
    subtitle: str | None


class FileReport(BaseModel):
    name: str
    format: Literal["txt", "markdown", "html", "jsonl", "pdf", "docx"]
    encoding: str | None = Field(description="the text encoding detected (utf-8, utf-16, gb18030, big5, ...); null for pdf and docx")
    documents: int = Field(description="articles read from the file")


class ChangeResponse(BaseModel):
    added: list[str]
    replaced: list[str]
    unchanged: list[str]
    removed: list[str]
    documents: list[DocumentSummary] = Field(default_factory=list, description="the documents the request named, as now indexed")
    files: list[FileReport] = Field(
        default_factory=list, description="an uploaded file's detected format and encoding (empty for a JSON article)"
    )


# ---------------------------------------------------------------- feedback and health


class FeedbackIn(Strict):
    rating: Literal["up", "down"]
    question: str | None = Field(None, max_length=2000)
    answer: str | None = Field(None, max_length=20_000)
    conversation_id: str | None = Field(None, pattern=CONVERSATION_ID_PATTERN)
    citations: list[JsonInt] | None = Field(None, max_length=50)
    comment: str | None = Field(None, max_length=2000)


class FeedbackOut(BaseModel):
    id: str
    stored: bool


class HealthOut(BaseModel):
    status: Literal["ok"]
    worker: int = Field(description="process id of the worker that answered (`rag serve --workers N` runs N)")


class ReadyOut(BaseModel):
    status: Literal["ready"]
    documents: int
    chunks: int
    embedder: str
    reader: str = Field(description="the span reader answering (onnx:<sha256 prefix>), or 'none' for the heuristic composer")
    index_kind: str
    corpus_hash: str | None


# ---------------------------------------------------------------- OpenAI-compatible


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    role: Literal["system", "user", "assistant", "tool", "developer", "function"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content or [] if part.type in {"text", "input_text"})


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    include_usage: bool | None = Field(None, description="end the stream with a chunk carrying `usage` and no `choices`")


class ChatRequest(BaseModel):
    """The OpenAI chat request. Sampling parameters (temperature, top_p, ...) are accepted and
    ignored: the service's settings, not the client, decide how an answer is made."""

    model_config = ConfigDict(extra="allow", strict=True)
    model: str = Field("rag-extractive", max_length=200, description="an id GET /v1/models lists, or its alias `rag`")
    messages: list[ChatMessage] = Field(min_length=1, max_length=100)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(None, description="answers per request: only 1 (the default) is supported")
    max_tokens: int | None = Field(None, ge=1, description="cut the content after this many tokens (a token is a character here)")
    max_completion_tokens: int | None = Field(None, ge=1, description="the newer name of `max_tokens`; the smaller one wins")
    top_k: TopK | None = Field(None, description="extension: passages to retrieve")

    @property
    def token_budget(self) -> int | None:
        limits = [v for v in (self.max_tokens, self.max_completion_tokens) if v is not None]
        return min(limits) if limits else None


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatChoiceMessage
    finish_reason: str


class ChatUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage
    citations: list[CitationOut] = Field(description="extension: the sources behind the [n] markers in the content")
    refused: bool
    rewritten_question: str | None = None
    rewritten_by: Literal["llm", "rules"] | None = None
    sentences: list[SentenceOut] | None = Field(None, description="extension: each answer sentence with its verification verdict")
    fallback: Literal["extractive"] | None = Field(None, description="extension: set when the configured LLM's answer could not be used")
    fallback_reason: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]
