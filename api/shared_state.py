"""State the workers of one `rag serve --workers N` share: rate-limit buckets and
conversations, in one SQLite file (WAL) in the server's state folder.

In process memory each worker would keep its own: a follow-up answered by another worker
would lose its conversation, and a client would get N times its rate limit (or, on one
keep-alive connection, 1/N of it). The state is as short-lived as the in-memory kind (the
folder is made per server run), so durability is traded for speed (`synchronous=OFF`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from api.conversations import ConversationStore
from api.followup import Turn

STATE_FILE = "shared-state.sqlite3"
SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (key TEXT PRIMARY KEY, tokens REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS conversations (id TEXT PRIMARY KEY, turns TEXT NOT NULL, chars INTEGER NOT NULL, touched REAL NOT NULL);
CREATE INDEX IF NOT EXISTS conversations_touched ON conversations (touched);
"""


class SharedDatabase:
    """One connection per thread (sqlite3 connections are not shared between threads)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / STATE_FILE
        self._local = threading.local()
        self._connection().executescript(SCHEMA)  # its own transaction (executescript commits first)

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=OFF")
            self._local.db = db
        return db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE takes the write lock first, so a read-modify-
        write by one worker never interleaves with another's."""
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


def refill(tokens: float, updated: float, now: float, rate: float, burst: int) -> float:
    return min(float(burst), tokens + max(0.0, now - updated) * rate)


class SharedTokenBuckets:
    """`api.middleware.TokenBuckets` over the shared database (same `take` contract)."""

    def __init__(self, db: SharedDatabase, prefix: str, rate_per_minute: float, burst: int) -> None:
        self.db = db
        self.prefix = prefix
        self.rate = rate_per_minute / 60.0
        self.burst = burst
        self._takes = 0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str) -> float:
        """0 if a request may pass now, else the seconds until it may."""
        now, key = time.time(), f"{self.prefix}{key}"
        with self.db.transaction() as db:
            row = db.execute("SELECT tokens, updated FROM buckets WHERE key = ?", (key,)).fetchone()
            tokens = refill(*row, now, self.rate, self.burst) if row else float(self.burst)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            db.execute("INSERT OR REPLACE INTO buckets VALUES (?, ?, ?)", (key, tokens - 1 if not wait else tokens, now))
            self._takes += 1
            if self._takes % 1000 == 0:  # a bucket full again is the same as no bucket
                db.execute("DELETE FROM buckets WHERE key LIKE ? AND updated < ?", (f"{self.prefix}%", now - self.burst / self.rate))
        return wait


class SharedConversationStore(ConversationStore):
    """`ConversationStore` (same bounds: turns, idle expiry, count and character caps) kept
    in the shared database."""

    def __init__(self, db: SharedDatabase, max_turns: int, ttl_seconds: float, max_conversations: int, max_chars: int = 8_000_000) -> None:
        super().__init__(max_turns, ttl_seconds, max_conversations, max_chars)
        self.db = db

    def turns(self, conversation_id: str) -> list[Turn]:
        with self.db.transaction() as db:
            db.execute("DELETE FROM conversations WHERE touched < ?", (time.time() - self.ttl_seconds,))
            row = db.execute("SELECT turns FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        return [Turn(**t) for t in json.loads(row[0])] if row else []

    def append(self, conversation_id: str, turn: Turn) -> None:
        with self.db.transaction() as db:
            row = db.execute("SELECT turns FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
            turns = [*(json.loads(row[0]) if row else []), vars(turn)][-self.max_turns :]
            chars = sum(len(t["question"]) + len(t["short_answer"] or "") + len(t["answer"] or "") for t in turns)
            db.execute(
                "INSERT OR REPLACE INTO conversations VALUES (?, ?, ?, ?)", (conversation_id, json.dumps(turns, ensure_ascii=False), chars, time.time())
            )
            self._drop_oldest_beyond_bounds(db, conversation_id)

    def _drop_oldest_beyond_bounds(self, db: sqlite3.Connection, keep: str) -> None:
        count, chars = db.execute("SELECT COUNT(*), COALESCE(SUM(chars), 0) FROM conversations").fetchone()
        while count > self.max_conversations or (chars > self.max_chars and count > 1):
            oldest = db.execute("SELECT id, chars FROM conversations WHERE id != ? ORDER BY touched LIMIT 1", (keep,)).fetchone()
            if oldest is None:
                return
            db.execute("DELETE FROM conversations WHERE id = ?", (oldest[0],))
            count, chars = count - 1, chars - oldest[1]

    def __len__(self) -> int:
        with self.db.transaction() as db:
            return int(db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0])

    @property
    def chars(self) -> int:
        with self.db.transaction() as db:
            return int(db.execute("SELECT COALESCE(SUM(chars), 0) FROM conversations").fetchone()[0])
