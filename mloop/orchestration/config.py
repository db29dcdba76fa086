"""The loop's configuration: triggers per deployed pipeline and rollout policies per model.

Declared in ``mloop.toml`` beside the workspace (``[[triggers]]`` and ``[[rollout]]`` tables) or built
in Python. Everything is checked when loaded, so a bad cron expression, an unknown metric or a
watched path that does not exist is one clear error at start-up, not a silent trigger that never fires.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mloop.errors import ConfigurationError, MloopError
from mloop.names import check_name
from mloop.settings import CONFIG_FILE, CONFIG_TABLES, config_file_there, read_config_file

__all__ = [
    "LoadTestPolicy",
    "LoopConfig",
    "RolloutPolicy",
    "TriggerSpec",
    "anchor_path_params",
    "load_loop_config",
    "parse_duration",
]

KINDS = ("manual", "schedule", "new_data", "drift", "degradation")

# monitoring and validation pull in pandas and scipy: imported where a value is checked, so that
# reading a model's rollout policy (``mloop serve`` does, before it answers) stays cheap


def _known_metrics() -> frozenset[str]:
    from mloop.validation.model import LOWER_IS_BETTER

    return frozenset({"accuracy", "precision", "recall", "f1", "roc_auc", "r2", *LOWER_IS_BETTER})


def _parse_window(spec: str | int | timedelta) -> int | timedelta:
    from mloop.monitoring.windows import parse_window

    return parse_window(spec)


def parse_duration(spec: str | float | int, field: str = "duration") -> timedelta:
    """``"90s"``, ``"15m"``, ``"1h"``, ``"7d"`` or a number of seconds."""
    if isinstance(spec, bool):
        raise ConfigurationError(
            f"{field} must be a duration such as '1h' or seconds, got {spec}", field=field
        )
    if isinstance(spec, int | float):
        if not spec >= 0:  # negative, or nan
            raise ConfigurationError(f"{field} must not be negative, got {spec}", field=field)
        try:
            return timedelta(seconds=spec)
        except OverflowError:
            raise ConfigurationError(
                f"{field} {spec} s is longer than any duration can be", field=field
            ) from None
    if str(spec).strip() in ("0", "0s", ""):
        return timedelta(0)
    try:
        value = _parse_window(str(spec))
    except MloopError as exc:
        if "longer than" in exc.message:
            raise ConfigurationError(
                f"{field} {spec!r} is longer than any duration can be", field=field
            ) from None
        raise ConfigurationError(
            f"{field} {spec!r} is not a duration like 90s, 15m, 1h, 7d", field=field
        ) from exc
    if not isinstance(value, timedelta):
        try:
            value = timedelta(seconds=value)
        except OverflowError:
            raise ConfigurationError(
                f"{field} {spec!r} is longer than any duration can be", field=field
            ) from None
    return value


def _checked(parse: Any, *args: Any) -> None:
    """Run an mloop parser inside a pydantic validator (which reports ValueErrors with the field)."""
    try:
        parse(*args)
    except MloopError as exc:
        raise ValueError(exc.message) from None


class _Strict(BaseModel):
    # no inf or nan: a lease, a tick or a threshold of infinity is never a setting that works
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value: Any, info: ValidationInfo) -> Any:
        # TOML's `true` is no z, margin or fraction (pydantic reads it as 1): only a bool field takes it
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if not _takes_bool(annotation):
                raise ValueError(f"expected a number, got {str(value).lower()}")
        return value


def _takes_bool(annotation: Any) -> bool:
    """Whether a field annotated ``annotation`` may hold True/False (bool, Any, or a union with one)."""
    if annotation is bool or annotation is Any:
        return True
    return any(_takes_bool(arg) for arg in get_args(annotation))


_DAY = 86_400.0  # upper bound of the scheduler's intervals, in seconds


class TriggerSpec(_Strict):
    """One trigger: when it fires, which pipeline it starts and with which parameters."""

    name: str = Field(min_length=1, max_length=200)
    kind: Literal["manual", "schedule", "new_data", "drift", "degradation"]
    pipeline: str = Field(min_length=1, description="file.py:name, package.module:name or a deployed NAME")
    params: dict[str, Any] = Field(default_factory=dict)
    cooldown: str | int | float = "0s"
    # schedule
    cron: str | None = None
    # new_data
    path: str | None = Field(None, min_length=1)
    pattern: str = "*"
    table: str | None = None
    column: str | None = None
    url: str | None = None
    param: str | None = Field(None, description="pipeline parameter that receives the new files")
    settle: str | int | float = "0s"  # a local file modified more recently than this is still being written
    # drift / degradation
    model: str | None = None
    window: str | int = 1000
    share: float = Field(0.5, gt=0, le=1)
    metric: str = "accuracy"
    threshold: float | None = None
    margin: float = Field(0.02, ge=0)
    z: float = Field(2.0, ge=0)
    windows: int = Field(1, ge=1)
    min_labelled: int = Field(100, ge=1)
    # degradation: a change point in the live loss (mloop.orchestration.changepoint) also fires, once
    # ``min_rows`` labelled rows followed it; the run trains on the rows since the change point
    detector: Literal["none", "adwin"] = "none"
    delta: float = Field(0.002, gt=0, lt=1, description="ADWIN's confidence parameter")
    min_rows: int = Field(0, ge=0, description="rows after a change point before retraining on them")
    # degradation: a steady rise of the live loss (its least-squares slope beyond ``trend_z`` standard
    # errors, rising by at least ``margin`` over the rows) also fires; the run trains on the newest rows
    trend_z: float | None = Field(None, gt=0, description="z of a rising loss trend that fires (None: off)")
    # degradation: drift that never stops. Once the last ``CADENCE_LIVES`` production versions each
    # degraded (the trigger fired on them) after L labelled rows, the version in production is retrained
    # when it has served ``cadence`` x their median L, before it degrades too; a scheduled candidate
    # that does not beat production ends the schedule until new versions degrade again
    cadence: float | None = Field(
        None, gt=0, le=1, description="share of recent versions' median life before a scheduled retrain"
    )
    # degradation: drift that never stops also shows in what production has not learnt. A challenger
    # (production's own recipe, fitted again on the labelled rows it served before the newest window)
    # that beats it on that window by more than ``challenger_z`` standard errors (paired) and ``margin``
    # fires; the run trains on the newest rows
    challenger_z: float | None = Field(
        None, gt=0, description="z of a challenger fitted on served rows beating production (None: off)"
    )

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            from croniter import CroniterBadDateError, croniter

            five = value.strip().startswith("@") or len(value.split()) == 5  # croniter also takes seconds
            if not five or not croniter.is_valid(value):
                raise ValueError(f"{value!r} is not a valid cron expression (minute hour day month weekday)")
            try:  # February 31st is valid syntax and never comes: the trigger would fail every pass
                croniter(value, datetime(2000, 1, 1)).get_next(datetime)
            except CroniterBadDateError:
                raise ValueError(f"{value!r} never matches a date: the trigger would never fire") from None
        return value

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        known = _known_metrics()
        if value not in known:
            raise ValueError(f"unknown metric {value!r} (known: {', '.join(sorted(known))})")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if any(ord(c) < 32 or ord(c) == 127 for c in value):  # it heads log lines and error lines
            raise ValueError(f"trigger name {value[:80]!r} must be one line, without control characters")
        return value

    @field_validator("model")
    @classmethod
    def _model(cls, value: str | None) -> str | None:
        if value is not None:
            _checked(check_name, value)
        return value

    @field_validator("window")
    @classmethod
    def _window(cls, value: str | int) -> str | int:
        _checked(_parse_window, value)
        return value

    @field_validator("cooldown", "settle")
    @classmethod
    def _duration(cls, value: str | int | float, info: ValidationInfo) -> str | int | float:
        _checked(parse_duration, value, info.field_name)
        return value

    @field_validator("window", "cooldown", "settle", mode="before")
    @classmethod
    def _not_a_bool(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool):  # TOML's true would otherwise be read as 1
            what = "a number of rows or" if info.field_name == "window" else "seconds or"
            raise ValueError(f"{info.field_name} must be {what} a duration such as '1h', got {value}")
        return value

    @model_validator(mode="after")
    def _needs(self) -> TriggerSpec:
        need = {"schedule": ["cron"], "drift": ["model"], "degradation": ["model"]}.get(self.kind, [])
        for name in need:
            if getattr(self, name) is None:
                raise ValueError(f"a {self.kind} trigger needs {name!r}")
        if self.kind == "new_data":
            if (self.path is None) == (self.table is None):
                raise ValueError(
                    "a new_data trigger needs either 'path' (files) or 'table' + 'column' (rows)"
                )
            if self.table is not None and (self.column is None or self.url is None):
                raise ValueError("a new_data trigger on a table needs 'url' (SQLAlchemy) and 'column'")
        # a window of fewer rows than min_labelled would never hold enough labels to be judged
        windowed = self.kind == "degradation" and isinstance(self.window, int)
        if windowed and isinstance(self.window, int) and self.window < self.min_labelled:
            raise ValueError(
                f"window {self.window} rows is smaller than min_labelled {self.min_labelled}: "
                "no window could be judged"
            )
        if self.challenger_z is not None:
            if self.kind != "degradation":
                raise ValueError("challenger_z is a test of the degradation trigger, not of a " + self.kind)
            if not isinstance(_parse_window(self.window), int):
                raise ValueError(
                    f"challenger_z needs a window of rows (a challenger is judged on the newest "
                    f"window's rows), not {self.window!r}"
                )
        return self

    @property
    def cooldown_td(self) -> timedelta:
        return parse_duration(self.cooldown, "cooldown")

    @property
    def settle_s(self) -> float:
        return parse_duration(self.settle, "settle").total_seconds()


class LoadTestPolicy(_Strict):
    """``[rollout.load_test]``: the gate a candidate passes before it takes canary traffic.

    The candidate is served on loopback in its own process and replayed the ``requests`` most recent
    logged requests at ``concurrency``; every answer must be a valid prediction (the prediction-service
    test) and at most ``max_error_rate`` may fail; its p99 latency must stay within ``p99_ms``. A p99
    over budget is measured again, up to ``rounds`` replays (each request's best latency counts), so
    a verdict does not depend on a moment's machine load. Backtests and the demo never run it.
    """

    enabled: bool = True
    requests: int = Field(
        200,
        ge=1,
        le=100_000,
        description="how many of the most recent logged requests to replay (a count; "
        "mloop.cicd.loadtest.load_test takes the list of requests itself)",
    )
    concurrency: int = Field(4, ge=1, le=256)
    p99_ms: float = Field(250.0, gt=0)
    max_error_rate: float = Field(0.01, ge=0, le=1)
    rounds: int = Field(3, ge=1, le=10)


class RolloutPolicy(_Strict):
    """How a newly validated version of ``model`` reaches production.

    ``auto``: it becomes ``canary`` (the service sends it ``canary_fraction`` of traffic); once
    ``min_labelled`` canary predictions have labels (or ``budget`` has passed), its live ``metric`` is
    compared with production's over the same period: promoted, or rolled back with the reason.
    ``manual``: nothing moves until someone runs ``mloop models promote``. With ``judge = "paired"``
    the two versions are compared on the same rows (``mloop.orchestration.rollout``). Before a
    candidate becomes ``canary`` the scheduler's load-test gate (``load_test``) must pass, else it is
    refused.
    """

    model: str = Field(min_length=1)
    mode: Literal["auto", "manual"] = "auto"
    canary_fraction: float = Field(0.2, gt=0, le=1)
    metric: str = "accuracy"
    min_labelled: int = Field(200, ge=1)
    min_labelled_at_budget: int = Field(30, ge=1)
    budget: str | int | float = "1h"
    max_degradation: float = Field(0.01, ge=0)
    z: float = Field(2.0, ge=0, description="noise allowance: standard errors a canary may trail by")
    # ``live``: each version judged on the traffic it answered itself; ``paired``: both versions
    # re-predict every labelled row since the canary started, from the logged inputs (twice the rows,
    # and the per-row difference cancels what the rows themselves make hard or easy)
    judge: Literal["live", "paired"] = "live"
    load_test: LoadTestPolicy = Field(default_factory=LoadTestPolicy)

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        return TriggerSpec._metric(value)

    @field_validator("budget", mode="before")
    @classmethod
    def _budget_not_a_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"budget must be seconds or a duration such as '1h', got {value}")
        return value

    @field_validator("budget")
    @classmethod
    def _budget(cls, value: str | int | float) -> str | int | float:
        _checked(parse_duration, value, "budget")
        return value

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        _checked(check_name, value)
        return value

    @property
    def budget_td(self) -> timedelta:
        return parse_duration(self.budget, "budget")


class LoopConfig(_Strict):
    """Every trigger and rollout policy of a workspace."""

    triggers: list[TriggerSpec] = Field(default_factory=list)
    # the folder of the configuration file: relative paths in it (a trigger's pipeline file, watched
    # path, and file parameters, the deployed version's included) are relative to it, not to the
    # current directory. None: built in Python, paths as given.
    root: str | None = None
    rollout: list[RolloutPolicy] = Field(default_factory=list)
    tick_s: float = Field(5.0, ge=0.05, le=_DAY)  # as `mloop scheduler run --tick`
    # [scheduler]: an event's lease, renewed every heartbeat_s while its run is prepared and runs;
    # another scheduler may take the event over only once the lease has expired
    lease_s: float = Field(30.0, ge=1, le=_DAY)
    heartbeat_s: float | None = Field(None, gt=0, le=_DAY, description="default: a third of lease_s")
    max_backoff_s: float = Field(60.0, gt=0, le=_DAY, description="longest wait between failing passes")

    @model_validator(mode="after")
    def _unique(self) -> LoopConfig:
        names = [t.name for t in self.triggers]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"trigger names must be unique; repeated: {sorted(dup)}")
        if self.heartbeat_s is not None and self.heartbeat_s >= self.lease_s:
            raise ValueError(f"heartbeat_s {self.heartbeat_s} must be shorter than lease_s {self.lease_s}")
        models = [p.model for p in self.rollout]
        dup = {m for m in models if models.count(m) > 1}
        if dup:  # the first would silently win
            raise ValueError(f"one [[rollout]] per model; repeated: {sorted(dup)}")
        return self

    @property
    def heartbeat(self) -> float:
        """Seconds between lease renewals."""
        return self.heartbeat_s if self.heartbeat_s is not None else self.lease_s / 3

    @classmethod
    def parse(cls, data: dict[str, Any], source: str = "configuration") -> LoopConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            message = str(first["msg"]).removeprefix("Value error, ")
            place = f"{source}: {where}" if where else source
            raise ConfigurationError(f"{place}: {message}", field=where or "config") from exc

    def policy(self, model: str) -> RolloutPolicy | None:
        return next((p for p in self.rollout if p.model == model), None)


def load_loop_config(location: Path) -> LoopConfig:
    """``[[triggers]]``, ``[[rollout]]`` and ``[scheduler]`` of a TOML file, or of ``mloop.toml`` in a
    directory (empty when the directory has none)."""
    named = location.suffix.lower() == ".toml" or (location.exists() and not location.is_dir())
    path = location if named else location / CONFIG_FILE
    if named and not path.exists():
        raise ConfigurationError(f"configuration file {path} does not exist", field="config")
    if not config_file_there(path):
        return LoopConfig()
    data = read_config_file(path, tables=CONFIG_TABLES)
    base = path.resolve().parent
    for key in ("triggers", "rollout"):
        if not isinstance(data.get(key, []), list):
            raise ConfigurationError(
                f"{path}: {key} must be a list of tables ([[{key}]]), got {type(data[key]).__name__}",
                field=key,
            )
    if not isinstance(data.get("scheduler", {}), dict):
        raise ConfigurationError(f"{path}: scheduler must be a table ([scheduler])", field="scheduler")
    for key in ("triggers", "rollout", "root"):  # the file's own lists and folder, not settings
        if key in data.get("scheduler", {}):
            raise ConfigurationError(
                f"{path}: [scheduler] has no key {key!r} ([[{key}]] tables hold triggers and rollouts)"
                if key != "root"
                else f"{path}: [scheduler] has no key 'root' (paths are relative to the file's folder)",
                field=f"scheduler.{key}",
            )
    triggers = [_anchored(t, base) if isinstance(t, dict) else t for t in data.get("triggers", [])]
    section: dict[str, Any] = {"triggers": triggers, "rollout": data.get("rollout", [])}
    if "scheduler" in data:
        section.update(data["scheduler"])
    section["root"] = str(base)
    try:
        return LoopConfig.parse(section, str(path))
    except ConfigurationError as exc:  # a [scheduler] key is validated among the file's top level
        key = (exc.field or "").split(".")[0]
        if key not in data.get("scheduler", {}):
            raise
        where = f"{path}: {exc.field}: "
        raise ConfigurationError(
            f"{path}: scheduler.{exc.field}: {exc.message.removeprefix(where)}",
            field=f"scheduler.{exc.field}",
        ) from exc


def _local_relative(value: Any) -> bool:
    return (
        isinstance(value, str)
        and bool(value)
        and "://" not in value
        and not Path(value).expanduser().is_absolute()
    )


def _anchored(trigger: dict[str, Any], base: Path) -> dict[str, Any]:
    """A trigger table with its pipeline file and watched path made absolute against ``base``."""
    trigger = dict(trigger)
    pipeline = trigger.get("pipeline")
    if isinstance(pipeline, str):
        file_part, sep, name = pipeline.rpartition(":")
        if sep and (file_part.endswith(".py") or "/" in file_part) and _local_relative(file_part):
            trigger["pipeline"] = f"{base / file_part}:{name}"
    if _local_relative(trigger.get("path")):
        trigger["path"] = str(base / trigger["path"])
    return trigger


def anchor_path_params(params: dict[str, Any], path_params: set[str], root: str | None) -> dict[str, Any]:
    """``params`` with the relative local paths of file parameters made absolute against ``root``
    (the configuration's folder); unchanged when ``root`` is None."""
    if root is None:
        return params
    return {
        k: str(Path(root) / v) if k in path_params and _local_relative(v) else v for k, v in params.items()
    }
