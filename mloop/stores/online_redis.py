"""The team online store: Redis, one string per (view, entity key), read in one MGET per view.

Every key starts with a prefix (one per workspace, or per test) so several workspaces share one
server and a test can drop exactly what it wrote. A write runs a small Lua script so an older row
never overwrites a newer one, the same rule the SQLite store keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mloop.errors import ConfigurationError, StoreUnavailableError

__all__ = ["RedisOnlineStore"]

# value = "<event time>|<payload>"; keep the stored value when it is newer. The last KEY is the view's
# newest-event-time key (a name no escaped entity key can take), raised to the newest time written.
_WRITE = """
local newest = tonumber(redis.call('GET', KEYS[#KEYS]) or '-inf')
for i = 1, #KEYS - 1 do
  local key = KEYS[i]
  local new = ARGV[i]
  local ts = tonumber(string.match(new, '^[^|]+'))
  local cur = redis.call('GET', key)
  if not cur or tonumber(string.match(cur, '^[^|]+')) <= ts then
    redis.call('SET', key, new)
  end
  if ts > newest then newest = ts end
end
if newest > -math.huge then redis.call('SET', KEYS[#KEYS], string.format('%.17g', newest)) end
return #KEYS - 1
"""
_NEWEST = "\x1enewest"


class RedisOnlineStore:
    """:class:`~mloop.stores.base.OnlineStore` on Redis (``redis://host:port/db``)."""

    def __init__(self, url: str, prefix: str) -> None:
        self._url = url
        self.url = _without_password(url)  # what messages and reports show
        self.prefix = prefix
        self._client: Any = None
        self._script: Any = None

    def _redis(self) -> Any:
        if self._client is None:
            try:
                import redis
            except ImportError as exc:
                raise ConfigurationError(
                    "online_url 'redis://…' needs redis-py: pip install 'mloop[redis]'", field="online_url"
                ) from exc
            try:
                client = redis.Redis.from_url(self._url, socket_connect_timeout=5, socket_timeout=30)
                client.ping()
            except (redis.RedisError, ValueError, OSError) as exc:
                detail = str(exc).replace(self._url, self.url)
                raise StoreUnavailableError(
                    f"cannot connect to the online store {self.url}: {detail}", field="online_url"
                ) from exc
            self._client = client
            self._script = client.register_script(_WRITE)
        return self._client

    def _key(self, view: str, key: str) -> str:
        return f"{self.prefix}{view}:{key}"

    def write(self, view: str, rows: Sequence[tuple[str, float, str]]) -> int:
        self._redis()
        for i in range(0, len(rows), 1000):
            chunk = rows[i : i + 1000]
            self._call(
                self._script,
                keys=[*(self._key(view, k) for k, _, _ in chunk), self._key(view, _NEWEST)],
                args=[f"{ts!r}|{p}" for _, ts, p in chunk],
            )
        return len(rows)

    def read(self, view: str, keys: Sequence[str]) -> list[tuple[float, str] | None]:
        client = self._redis()
        values = self._call(client.mget, [self._key(view, k) for k in keys])
        result: list[tuple[float, str] | None] = []
        for raw in values:
            if raw is None:
                result.append(None)
                continue
            ts, _, payload = raw.decode("utf-8").partition("|")
            result.append((float(ts), payload))
        return result

    def newest(self, view: str) -> float | None:
        raw = self._call(self._redis().get, self._key(view, _NEWEST))
        return None if raw is None else float(raw)

    def drop(self, view: str) -> None:
        client = self._redis()
        batch = list(client.scan_iter(match=f"{self.prefix}{view}:*", count=1000))
        for i in range(0, len(batch), 1000):
            self._call(client.delete, *batch[i : i + 1000])

    def drop_prefix(self) -> None:
        """Forget every key under this store's prefix (a test's cleanup; a workspace's reset)."""
        client = self._redis()
        batch = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
        for i in range(0, len(batch), 1000):
            self._call(client.delete, *batch[i : i + 1000])

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import redis

        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"online store {self.url}: {exc}", field="online_url") from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _without_password(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))
