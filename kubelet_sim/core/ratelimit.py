"""The registry pull throttle: a token bucket that never waits.

Models ``pkg/kubelet/images/helpers.go`` (``throttleImagePulling``) over client-go's
``flowcontrol.NewTokenBucketRateLimiter(qps, burst)``, which is ``golang.org/x/time/rate``'s
``Limiter``: the bucket starts full, refills at ``qps`` tokens per second up to ``burst``, and
``try_accept`` takes a token or fails at once, leaving the bucket as it was (``rate.Limiter``
keeps its state on a refused reservation). A clock that steps back refills nothing. With
``qps == 0`` there is no throttle at all.

The one token bucket of the package: the event recorder's per-object spam filter
(client-go ``events_cache.go``, ``NewTokenBucketRateLimiterWithClock``) is the same limiter.
"""

from __future__ import annotations

from dataclasses import dataclass

QPS_EXCEEDED = "pull QPS exceeded"


@dataclass(slots=True)
class TokenBucket:
    """A non-blocking token bucket; every call takes ``now`` in seconds (any clock)."""

    qps: float
    burst: int
    _tokens: float = -1.0
    _last: float | None = None
    accepted: int = 0
    rejected: int = 0

    def __post_init__(self) -> None:
        if self.qps < 0 or self.burst < 0:
            raise ValueError(f"qps and burst must not be negative, got {self.qps}, {self.burst}")
        self._tokens = float(self.burst)

    @property
    def unlimited(self) -> bool:
        return self.qps == 0

    def try_accept(self, now: float) -> bool:
        """Take a token if one is available at ``now``."""
        qps = self.qps
        if qps == 0:
            self.accepted += 1
            return True
        # tokens(now), inline: the event recorder asks once per event.
        tokens, last = self._tokens, self._last
        if last is not None and now > last:
            tokens = min(float(self.burst), tokens + (now - last) * qps)
        if tokens < 1.0:
            self.rejected += 1
            return False
        self._tokens, self._last = tokens - 1.0, now
        self.accepted += 1
        return True

    def tokens(self, now: float) -> float:
        """Tokens available at ``now`` (without taking one)."""
        if self.unlimited:
            return float("inf")
        if self._last is None:
            return self._tokens
        refill = max(0.0, now - self._last) * self.qps
        return min(float(self.burst), self._tokens + refill)
