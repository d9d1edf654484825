"""Device sessions: who is logged in at which device. In memory on purpose — a session is a
convenience, not a record; after a restart or failover the user simply logs in again."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import NotFound

IDLE_TIMEOUT_SECS = 15 * 60
MAX_SESSIONS = 100_000


@dataclass(slots=True)
class Session:
    session_id: str
    username: str
    device_id: str
    last_used: float


@dataclass
class SessionRegistry:
    """Kept in least-recently-used order, so dropping idle sessions (and, when full, the oldest
    one) costs O(1) per login instead of a sweep of the whole table."""

    idle_timeout_secs: float = IDLE_TIMEOUT_SECS
    max_sessions: int = MAX_SESSIONS
    clock: Callable[[], float] = time.monotonic
    _sessions: OrderedDict[str, Session] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _drop_stale(self, now: float) -> None:
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if now - oldest.last_used < self.idle_timeout_secs and len(self._sessions) < self.max_sessions:
                return
            self._sessions.popitem(last=False)

    def open(self, username: str, device_id: str) -> Session:
        now = self.clock()
        s = Session(secrets.token_urlsafe(24), username, device_id, now)
        with self._lock:
            self._drop_stale(now)
            self._sessions[s.session_id] = s
        return s

    def get(self, session_id: str, device_id: str) -> Session:
        """A session works only at the device that opened it."""
        now = self.clock()
        with self._lock:
            s = self._sessions.get(session_id)
            if s is None or s.device_id != device_id or now - s.last_used >= self.idle_timeout_secs:
                if s is not None and s.device_id == device_id:
                    del self._sessions[session_id]
                raise NotFound("no such session at this device (log in again)")
            s.last_used = now
            self._sessions.move_to_end(session_id)
            return s

    def close(self, session_id: str, device_id: str) -> None:
        with self._lock:
            s = self._sessions.get(session_id)
            if s is not None and s.device_id == device_id:
                del self._sessions[session_id]

    def close_user(self, username: str) -> None:
        with self._lock:
            for sid in [k for k, v in self._sessions.items() if v.username == username]:
                del self._sessions[sid]

    def __len__(self) -> int:
        return len(self._sessions)
