"""The token store contract (tokens by hash, revocation, audit trail), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mloop.auth import check_token, create_token, hash_token
from mloop.errors import ForbiddenError, NotFoundError, ParameterError, UnauthorizedError
from mloop.stores.sql import schema as t
from mloop.stores.sql.metadata import SqlMetadataStore
from mloop.stores.sql.tokens import SqlTokenStore


@pytest.fixture
def store(metadata_url: str) -> Iterator[SqlTokenStore]:
    meta = SqlMetadataStore.from_url(metadata_url)
    yield SqlTokenStore(meta.engine)
    meta.close()


def test_only_the_hash_is_stored(store: SqlTokenStore) -> None:
    secret, token = create_token(store, "ci-bot", "editor", created_by="alice")
    assert secret.startswith("mloop_") and len(secret) > 40
    with store.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(t.api_tokens.select()).mappings()]
    assert len(rows) == 1 and rows[0]["token_hash"] == hash_token(secret)
    assert secret not in repr(rows) and secret not in repr(token)
    assert store.token_by_hash(hash_token(secret)) == token
    assert store.token_by_hash(hash_token(secret + "x")) is None


def test_list_and_revoke(store: SqlTokenStore) -> None:
    _, a = create_token(store, "a", "viewer", created_by="x")
    _, b = create_token(store, "b", "admin", created_by="x")
    assert [tk.name for tk in store.list_tokens()] == ["a", "b"]
    revoked = store.revoke_token(a.id)
    assert revoked.revoked_at is not None
    assert store.revoke_token(a.id).revoked_at == revoked.revoked_at  # idempotent
    assert store.list_tokens()[1] == b
    with pytest.raises(NotFoundError):
        store.revoke_token("nope")


def test_bad_role_and_name_are_refused(store: SqlTokenStore) -> None:
    with pytest.raises(ParameterError, match="role"):
        create_token(store, "a", "root", created_by="x")
    with pytest.raises(ParameterError, match="name"):
        store.add_token("", "viewer", "0" * 64, created_by="x")


def test_check_token_statuses(store: SqlTokenStore) -> None:
    viewer, _ = create_token(store, "v", "viewer", created_by="x")
    feedback, fb = create_token(store, "f", "feedback", created_by="x")
    principal = check_token(store, f"Bearer {feedback}")
    assert (principal.name, principal.role, principal.token_id) == ("f", "feedback", fb.id)
    for header in (None, "", "Bearer", "Basic abc", f"Bearer {feedback}x", "Bearer mloop_' OR 1=1 --"):
        with pytest.raises(UnauthorizedError) as caught:
            check_token(store, header)
        assert caught.value.http_status == 401 and feedback not in caught.value.message
    with pytest.raises(ForbiddenError) as refused:
        check_token(store, f"Bearer {viewer}")
    assert refused.value.http_status == 403
    store.revoke_token(fb.id)
    with pytest.raises(UnauthorizedError, match="revoked"):
        check_token(store, f"Bearer {feedback}")


def test_audit_trail_pages_newest_first(store: SqlTokenStore) -> None:
    for i in range(5):
        store.record_audit("alice", "alias.move", f"model:churn@p{i % 2}", reason=f"r{i}", details={"i": i})
    entries = store.audit_entries()
    assert [e.reason for e in entries] == ["r4", "r3", "r2", "r1", "r0"]
    assert entries[0].details == {"i": 4} and entries[0].at.tzinfo is not None
    page = store.audit_entries(limit=2)
    assert [e.reason for e in store.audit_entries(before=page[-1].id, limit=2)] == ["r2", "r1"]
    assert [e.reason for e in store.audit_entries(target="model:churn@p1")] == ["r3", "r1"]
    assert store.audit_entries(action="token.revoke") == []
