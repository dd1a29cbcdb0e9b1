"""Settings of the HTTP service: the core settings plus keys, origins, limits.

One class for everything (`RAG_` environment variables): `ApiSettings` extends the core
`Settings`, so the service built from it sees the same index path, embedder and top_k.
List values are given comma-separated, e.g. `RAG_API_KEYS=key1,key2`.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from rag.config import Settings

KeyList = Annotated[list[str], NoDecode]


class ApiSettings(Settings):
    api_keys: KeyList = Field(default_factory=list, description="bearer keys for reads; empty: reads need no key")
    admin_keys: KeyList = Field(default_factory=list, description="bearer keys for document writes; empty: writes only from loopback")
    public_key: str | None = Field(None, description="widget key: ask, stream and feedback only, from public_origins only")
    public_origins: KeyList = Field(default_factory=list, description="origins the public key works from (default: cors_origins)")
    cors_origins: KeyList = Field(default_factory=list, description="browser origins allowed to call the API ('*' for any)")

    ip_rate_per_minute: float = Field(120, ge=0, description="sustained requests per minute per client IP; 0 disables")
    ip_burst: int = Field(30, ge=1, description="requests an IP may make at once before the rate applies")
    key_rate_per_minute: float = Field(600, ge=0, description="sustained requests per minute per API key; 0 disables")
    key_burst: int = Field(60, ge=1)
    trust_forwarded_for: bool = Field(False, description="behind one proxy: same as forwarded_hops=1")
    forwarded_hops: int = Field(
        0, ge=0, le=10, description="proxies in front of the server; the client IP is the X-Forwarded-For entry this far from the right"
    )
    trusted_proxies: KeyList = Field(
        default_factory=list, description="addresses/networks of those proxies (e.g. 10.0.0.0/8); empty: any peer is taken as the proxy"
    )
    exempt_loopback: bool = Field(
        True, description="clients on this machine skip the per-IP limit (not behind a proxy: see forwarded_hops)"
    )
    public_max_top_k: int = Field(5, ge=1, le=50, description="most passages a public-widget-key question may retrieve")

    max_upload_bytes: int = Field(5 * 2**20, ge=1024, description="largest accepted POST /documents body")
    max_body_bytes: int = Field(2**20, ge=1024, description="largest accepted body on other endpoints")
    max_history_turns: int = Field(8, ge=1, le=100, description="turns kept per conversation")
    conversation_ttl_seconds: float = Field(1800, gt=0, description="a conversation idle this long is forgotten")
    max_conversations: int = Field(10_000, ge=1)
    max_conversation_chars: int = Field(
        8_000_000, ge=10_000, description="characters all conversations may hold together (~4 bytes each); the least recent go first"
    )
    feedback_path: Path | None = Field(None, description="JSONL file for widget feedback (default: <index_dir>/feedback.jsonl)")
    stream_delay_ms: float = Field(0, ge=0, le=1000, description="pause between streamed pieces (demo pacing); 0: none")
    workers: int | None = Field(
        None, ge=1, le=64, description="`rag serve` worker processes (default: 1 with the reader, one per core without; docs/performance.md)"
    )
    state_dir: Path | None = Field(
        None, description="folder for state the workers of one server share (conversations, rate limits); set by `rag serve --workers N`"
    )

    @field_validator("api_keys", "admin_keys", "public_origins", "cors_origins", "trusted_proxies", mode="before")
    @classmethod
    def split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def networks(cls, value: list[str]) -> list[str]:
        for net in value:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"{net!r} is not an IP address or network") from None
        return value

    @property
    def feedback_file(self) -> Path:
        return self.feedback_path or self.index_dir / "feedback.jsonl"

    @property
    def widget_origins(self) -> list[str]:
        return self.public_origins or self.cors_origins
