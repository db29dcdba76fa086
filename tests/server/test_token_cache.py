"""The token cache behind every team-server request: a valid token is read from the store at most once
per ``seconds``; a revoked one is refused no later than ``seconds`` after the revocation; nothing a
caller sends (unknown, malformed, revoked tokens) is kept."""

from __future__ import annotations

import pytest

import mloop
from mloop.auth import TOKEN_CACHE_SECONDS, TokenCache, bearer_hash, check_token, hash_token
from mloop.entities import ApiToken
from mloop.errors import UnauthorizedError

SECRET = "mloop_" + "x" * 43


class Store:
    """The workspace's real token store, counting reads; ``during_read`` runs inside a read (a
    concurrent revocation, or a slow database)."""

    def __init__(self, ws: mloop.Workspace) -> None:
        self.tokens = ws.tokens
        self.reads = 0
        self.during_read = lambda: None

    def token_by_hash(self, token_hash: str) -> ApiToken | None:
        self.reads += 1
        self.during_read()
        return self.tokens.token_by_hash(token_hash)

    def add(self, secret: str, name: str) -> None:
        self.tokens.add_token(name, "viewer", hash_token(secret), created_by="test")

    def revoke(self, secret: str) -> None:
        token = self.tokens.token_by_hash(hash_token(secret))
        assert token is not None
        self.tokens.revoke_token(token.id)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(workspace: mloop.Workspace) -> Store:
    s = Store(workspace)
    s.add(SECRET, "ci")
    return s


def test_a_valid_token_is_read_once_per_period(store: Store) -> None:
    clock = Clock()
    cache = TokenCache(store, 1.0, clock=clock)
    for _ in range(5):
        assert check_token(cache, f"Bearer {SECRET}", roles=("viewer",)).name == "ci"
        clock.now += 0.125
    assert store.reads == 1
    clock.now += 0.375  # 1.0 s after the read began
    check_token(cache, f"Bearer {SECRET}", roles=("viewer",))
    assert store.reads == 2


def test_a_revoked_token_is_refused_within_the_period(store: Store) -> None:
    clock = Clock()
    cache = TokenCache(store, 1.0, clock=clock)
    check_token(cache, f"Bearer {SECRET}", roles=("viewer",))
    clock.now += 0.25
    store.revoke(SECRET)  # committed 0.25 s after the read began
    check_token(cache, f"Bearer {SECRET}", roles=("viewer",))  # still trusted: inside the bound
    clock.now += 0.75  # the read that found it valid began 1.0 s ago: 0.75 s after the revocation
    for _ in range(3):
        with pytest.raises(UnauthorizedError, match="revoked"):
            check_token(cache, f"Bearer {SECRET}", roles=("viewer",))
    assert store.reads == 4  # a revoked token is not kept: every request asks the store


def test_an_entry_counts_its_age_from_before_the_read(store: Store) -> None:
    clock = Clock()
    cache = TokenCache(store, 1.0, clock=clock)

    def slow_read() -> None:
        clock.now += 0.75  # the store answers 0.75 s after being asked

    store.during_read = slow_read
    check_token(cache, f"Bearer {SECRET}", roles=("viewer",))
    store.during_read = lambda: None
    clock.now += 0.25
    assert cache.cached(hash_token(SECRET)) is None


def test_unknown_and_malformed_tokens_are_never_kept(store: Store) -> None:
    cache = TokenCache(store, 60.0)
    for _ in range(3):
        with pytest.raises(UnauthorizedError):
            check_token(cache, "Bearer mloop_" + "y" * 43)
        with pytest.raises(UnauthorizedError):
            check_token(cache, "Bearer forged")
    assert store.reads == 3 and cache.cached(bearer_hash("Bearer mloop_" + "y" * 43)) is None


def test_clear_forgets_and_a_read_begun_before_it_is_not_kept(store: Store) -> None:
    cache = TokenCache(store, 60.0)
    check_token(cache, f"Bearer {SECRET}", roles=("viewer",))
    cache.clear()  # what the server does after revoking through its API
    assert cache.cached(hash_token(SECRET)) is None
    store.during_read = cache.clear  # a revocation by this process while a read was under way
    cache.token_by_hash(hash_token(SECRET))
    assert cache.cached(hash_token(SECRET)) is None


def test_the_cache_holds_at_most_size_tokens(store: Store) -> None:
    secrets = [f"mloop_{i:043d}" for i in range(10)]
    for i, secret in enumerate(secrets):
        store.add(secret, f"n{i}")
    cache = TokenCache(store, 60.0, size=4)
    for secret in secrets:
        cache.token_by_hash(hash_token(secret))
        assert len(cache._entries) <= 4


def test_the_stated_bound_is_short() -> None:
    assert 0 < TOKEN_CACHE_SECONDS <= 1.0
