"""Admin page logins: the admin token typed once into a page's login form buys a random login id,
kept in an HttpOnly cookie, and a form key that every form posts back (a page of another origin
cannot read it). Kept in memory only: a restart signs every admin out, nothing rests on disk.
Wrong tokens typed from one address are budgeted like a user's wrong PINs (`Lockout`: 5 within
15 min lock that address for 60 s, doubling up to an hour), so the form is no guessing oracle."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from siteserver.domain import Lockout, same_secret

#: a login lasts this long from when the token was typed
LOGIN_SECS = 8 * 3600
#: the most logins kept; the oldest is signed out to make room for a new one
MAX_LOGINS = 256


@dataclass(frozen=True, slots=True)
class AdminLogin:
    login_id: str
    form_key: str  # posted back by every form of the pages
    expires_at: float

    def form_key_matches(self, posted: str | None) -> bool:
        return posted is not None and same_secret(posted, self.form_key)


@dataclass
class AdminLogins:
    login_secs: float = LOGIN_SECS
    max_logins: int = MAX_LOGINS
    clock: Callable[[], float] = time.monotonic
    #: wrong tokens per client address
    guesses: Lockout = field(default_factory=Lockout)
    _logins: OrderedDict[str, AdminLogin] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def open(self) -> AdminLogin:
        login = AdminLogin(
            secrets.token_urlsafe(32), secrets.token_urlsafe(24), self.clock() + self.login_secs
        )
        with self._lock:
            self._logins[login.login_id] = login
            while len(self._logins) > self.max_logins:
                self._logins.popitem(last=False)
        return login

    def get(self, login_id: str | None) -> AdminLogin | None:
        """The login of a cookie's id while it lasts; None for an unknown or expired one."""
        if not login_id:
            return None
        with self._lock:
            login = self._logins.get(login_id)
            if login is not None and login.expires_at <= self.clock():
                del self._logins[login_id]
                return None
        return login

    def close(self, login_id: str) -> None:
        with self._lock:
            self._logins.pop(login_id, None)
