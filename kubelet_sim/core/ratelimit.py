"""The registry pull throttle: a token bucket that never waits.

Models ``pkg/kubelet/images/helpers.go`` (``throttleImagePulling``) over client-go's
``flowcontrol.NewTokenBucketRateLimiter(qps, burst)``: the bucket starts full, refills at ``qps``
tokens per second up to ``burst``, and ``try_accept`` takes a token or fails at once. With
``qps == 0`` there is no throttle at all.
"""

from __future__ import annotations

from dataclasses import dataclass

QPS_EXCEEDED = "pull QPS exceeded"


@dataclass(slots=True)
class TokenBucket:
    """A non-blocking token bucket; every call takes ``now`` (monotonic seconds)."""

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
        if self.unlimited:
            self.accepted += 1
            return True
        if self._last is not None and now > self._last:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
        if self._last is None or now > self._last:
            self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self.accepted += 1
            return True
        self.rejected += 1
        return False

    def tokens(self, now: float) -> float:
        """Tokens available at ``now`` (without taking one)."""
        if self.unlimited:
            return float("inf")
        if self._last is None or now <= self._last:
            return self._tokens
        return min(float(self.burst), self._tokens + (now - self._last) * self.qps)
