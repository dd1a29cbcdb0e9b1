"""Server-side conversation memory for follow-ups: bounded turns, idle expiry, an LRU cap
on the number of conversations and on the characters they hold together."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from api.followup import Turn


@dataclass
class Conversation:
    turns: deque[Turn]
    touched: float = field(default_factory=time.monotonic)

    @property
    def chars(self) -> int:
        return sum(len(t.question) + len(t.short_answer or "") + len(t.answer or "") for t in self.turns)


class ConversationStore:
    def __init__(self, max_turns: int, ttl_seconds: float, max_conversations: int, max_chars: int = 8_000_000) -> None:
        self.max_turns = max_turns
        self.ttl_seconds = ttl_seconds
        self.max_conversations = max_conversations
        self.max_chars = max_chars  # ~4 bytes a character in memory: 8M characters ≈ 32 MB
        self._items: OrderedDict[str, Conversation] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()

    @staticmethod
    def new_id() -> str:
        return secrets.token_urlsafe(12)

    def turns(self, conversation_id: str) -> list[Turn]:
        """Earlier turns; an unknown or expired id is an empty conversation."""
        with self._lock:
            self._expire()
            conversation = self._items.get(conversation_id)
            return list(conversation.turns) if conversation else []

    def append(self, conversation_id: str, turn: Turn) -> None:
        with self._lock:
            conversation = self._items.pop(conversation_id, None) or Conversation(deque(maxlen=self.max_turns))
            self._chars -= conversation.chars
            conversation.turns.append(turn)
            conversation.touched = time.monotonic()
            self._chars += conversation.chars
            self._items[conversation_id] = conversation  # most recently used last
            while len(self._items) > self.max_conversations or (self._chars > self.max_chars and len(self._items) > 1):
                self._drop_oldest()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def chars(self) -> int:
        """Characters held by all conversations (what the memory bound counts)."""
        return self._chars

    def _drop_oldest(self) -> None:
        _, oldest = self._items.popitem(last=False)
        self._chars -= oldest.chars

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.ttl_seconds
        while self._items:
            oldest = next(iter(self._items.values()))
            if oldest.touched >= cutoff:
                break
            self._drop_oldest()
