"""Server-side conversation memory for follow-ups: bounded turns, idle expiry, LRU cap."""

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


class ConversationStore:
    def __init__(self, max_turns: int, ttl_seconds: float, max_conversations: int) -> None:
        self.max_turns = max_turns
        self.ttl_seconds = ttl_seconds
        self.max_conversations = max_conversations
        self._items: OrderedDict[str, Conversation] = OrderedDict()
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
            conversation.turns.append(turn)
            conversation.touched = time.monotonic()
            self._items[conversation_id] = conversation  # most recently used last
            while len(self._items) > self.max_conversations:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.ttl_seconds
        while self._items:
            oldest_id, oldest = next(iter(self._items.items()))
            if oldest.touched >= cutoff:
                break
            del self._items[oldest_id]
