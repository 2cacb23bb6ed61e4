"""What stands before a password is checked: rate limits per client address and per login,
and a bound on concurrent password hashing. All in memory, per process, and answered with
429 + Retry-After before anything is read or written, so anonymous traffic costs neither
memory (argon2id takes 64 MiB per hash) nor database writes nor ledger entries.

The limits are per process: N replicas allow N times as much. The database lockout
(services/credentials.py) is the limit that holds across replicas; these bound what one
process spends.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from azdev_ica.errors import TooManyRequests

if TYPE_CHECKING:
    from azdev_ica.settings import Settings

# How long an attempt waits for a hashing slot before it is told to come back.
HASH_WAIT_SECONDS = 0.25
# Buckets kept per limiter; the least recently used go first (a forgotten bucket is full).
MAX_BUCKETS = 50_000


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per key: `per_minute` attempts, refilled evenly over a minute."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.refill = per_minute / 60.0
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> float | None:
        """Take one attempt for `key`: None when allowed, else the seconds until one is."""
        now = self.clock()
        with self._lock:
            bucket = self._buckets.pop(key, None) or _Bucket(self.capacity, now)
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.at) * self.refill)
            bucket.at = now
            self._buckets[key] = bucket
            while len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return None
            return (1.0 - bucket.tokens) / self.refill


class SignInGuard:
    """The per-process limits on signing in (see the module doc)."""

    def __init__(
        self,
        *,
        per_address: int,
        per_login: int,
        hash_concurrency: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.addresses = RateLimiter(per_address, clock=clock)
        self.logins = RateLimiter(per_login, clock=clock)
        self.hash_slots = threading.BoundedSemaphore(hash_concurrency)

    @classmethod
    def from_settings(cls, settings: Settings) -> SignInGuard:
        return cls(
            per_address=settings.signin_rate_per_address,
            per_login=settings.signin_rate_per_login,
            hash_concurrency=settings.signin_hash_concurrency,
        )

    @classmethod
    def unbounded(cls) -> SignInGuard:
        """No practical limit (services called by operators and tests, not by the web)."""
        return cls(per_address=10**9, per_login=10**9, hash_concurrency=10**6)

    def check_rate(self, address: str, login_key: str) -> None:
        """Count an attempt from `address` for the login `login_key`; TooManyRequests when
        either is over its rate."""
        wait = self.addresses.take("a:" + address)
        if wait is None:
            wait = self.logins.take("l:" + login_key)
        if wait is not None:
            raise TooManyRequests(
                "too many sign-in attempts; try again later",
                retry_after_seconds=int(wait) + 1,
            )

    @contextmanager
    def hashing(self) -> Iterator[None]:
        """Hold one of the hashing slots for the block; TooManyRequests when none frees up
        within a moment."""
        if not self.hash_slots.acquire(timeout=HASH_WAIT_SECONDS):
            raise TooManyRequests(
                "the server is busy checking other sign-ins; try again in a moment",
                retry_after_seconds=1,
            )
        try:
            yield
        finally:
            self.hash_slots.release()
