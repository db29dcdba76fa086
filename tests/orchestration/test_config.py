"""Trigger and rollout configuration: every mistake is one clear error naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

import mloop
from mloop.errors import ConfigurationError, MloopError, PipelineLoadError
from mloop.orchestration.config import LoopConfig, load_loop_config
from mloop.orchestration.triggers import validate_trigger
from mloop.settings import load_settings

RETRAIN = "mloop.steps.retrain:retrain"


def parse(**trigger: object) -> LoopConfig:
    return LoopConfig.parse({"triggers": [{"name": "t", "pipeline": RETRAIN, **trigger}]})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"lease_s": float("inf")}, "lease_s: Input should be a finite number"),
        ({"tick_s": 1e-300}, "tick_s: Input should be greater than or equal to 0.05"),
        ({"max_backoff_s": 1e9}, "max_backoff_s: Input should be less than or equal to 86400"),
        ({"rollout": [{"model": "m"}, {"model": "m", "mode": "manual"}]}, "one [[rollout]] per model"),
        ({"rollout": [{"model": "../evil"}]}, "model name '../evil'"),
    ],
)
def test_bad_scheduler_and_rollout_settings_are_refused(config: dict, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        LoopConfig.parse(config)
    assert message in info.value.message and not info.value.message.startswith("configuration: :")


def test_durations_may_be_numbers_of_seconds() -> None:
    config = LoopConfig.parse(
        {
            "triggers": [{"name": "t", "kind": "manual", "pipeline": RETRAIN, "cooldown": 3600}],
            "rollout": [{"model": "m", "budget": 90.5}],
        }
    )
    assert config.triggers[0].cooldown_td.total_seconds() == 3600
    assert config.rollout[0].budget_td.total_seconds() == 90.5
    with pytest.raises(ConfigurationError, match=r"budget 1e\+300 s is longer than any duration"):
        LoopConfig.parse({"rollout": [{"model": "m", "budget": 1e300}]})
    # a deployed pipeline's name may be one character (names are 1-128 characters)
    assert LoopConfig.parse({"triggers": [{"name": "t", "kind": "manual", "pipeline": "x"}]}).triggers


@pytest.mark.parametrize(
    ("trigger", "message"),
    [
        ({"kind": "schedule", "cron": "61 * * * *"}, "not a valid cron expression"),
        ({"kind": "schedule", "cron": "0 3 31 2 *"}, "never matches a date"),  # failed every pass
        ({"kind": "schedule", "cron": "* * * * * *"}, "not a valid cron expression"),  # six fields
        ({"kind": "schedule"}, "needs 'cron'"),
        ({"kind": "degradation", "model": "m", "metric": "happiness"}, "unknown metric 'happiness'"),
        ({"kind": "drift"}, "needs 'model'"),
        ({"kind": "sometimes"}, "kind"),
        ({"kind": "new_data"}, "either 'path'"),
        ({"kind": "drift", "model": "m", "window": "soon"}, "window"),
        ({"kind": "manual", "cooldown": "a while"}, "cooldown"),
        ({"kind": "manual", "colour": "red"}, "colour"),
        ({"kind": "degradation", "model": "m", "cadence": 1.5}, "cadence"),
        ({"kind": "degradation", "model": "m", "cadence": 0}, "cadence"),
        # settings that were accepted and then could never work
        ({"kind": "degradation", "model": "m", "window": 50}, "smaller than min_labelled 100"),
        ({"kind": "degradation", "model": "m", "threshold": float("nan")}, "finite number"),
        ({"kind": "degradation", "model": "m", "margin": float("inf")}, "finite number"),
        ({"kind": "drift", "model": "m", "window": True}, "number of rows or a duration"),
        ({"kind": "drift", "model": "m", "window": "1000000000d"}, "longer than a log's time can span"),
        ({"kind": "drift", "model": "../etc"}, "model name '../etc'"),
        ({"kind": "new_data", "path": ""}, "at least 1 character"),
        ({"kind": "manual", "name": "a\nb"}, "must be one line"),
        ({"kind": "manual", "cooldown": 1e20}, "cooldown 1e+20 s is longer than any duration can be"),
        ({"kind": "manual", "cooldown": "99999999999d"}, "longer than any duration can be"),
        ({"kind": "manual", "cooldown": True}, "cooldown must be seconds or a duration such as '1h'"),
        ({"kind": "new_data", "path": "in", "settle": "a bit"}, "settle"),
        ({"kind": "new_data", "path": "in", "settle": True}, "settle must be seconds or a duration"),
        # TOML's `true` is no number (pydantic would read it as 1)
        ({"kind": "degradation", "model": "m", "z": True}, "z: expected a number"),
        ({"kind": "degradation", "model": "m", "challenger_z": True}, "challenger_z: expected"),
        ({"kind": "degradation", "model": "m", "min_rows": False}, "min_rows: expected"),
        ({"kind": "degradation", "model": "m", "challenger_z": 0}, "challenger_z: Input should be greater"),
        ({"kind": "drift", "model": "m", "challenger_z": 3}, "challenger_z is a test of the degradation"),
        ({"kind": "degradation", "model": "m", "window": "1h", "challenger_z": 3}, "window of rows"),
    ],
)
def test_bad_triggers_are_refused_with_the_reason(trigger: dict, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse(**trigger)
    assert message in info.value.message and info.value.field


def test_names_are_unique_and_rollout_is_checked() -> None:
    twice = {"name": "t", "kind": "manual", "pipeline": RETRAIN}
    with pytest.raises(ConfigurationError, match="repeated"):
        LoopConfig.parse({"triggers": [twice, twice]})
    with pytest.raises(ConfigurationError, match="canary_fraction"):
        LoopConfig.parse({"rollout": [{"model": "m", "canary_fraction": 1.5}]})
    with pytest.raises(ConfigurationError, match="canary_fraction: expected a number"):
        LoopConfig.parse({"rollout": [{"model": "m", "canary_fraction": True}]})
    assert (
        not LoopConfig.parse({"rollout": [{"model": "m", "load_test": {"enabled": False}}]})
        .rollout[0]
        .load_test.enabled
    )  # a bool setting still takes a bool
    with pytest.raises(ConfigurationError, match="budget"):
        LoopConfig.parse({"rollout": [{"model": "m", "budget": "eventually"}]})
    with pytest.raises(
        ConfigurationError, match=r"rollout\.0\.load_test\.concurrency: .*greater than or equal to 1"
    ):
        LoopConfig.parse({"rollout": [{"model": "m", "load_test": {"concurrency": 0}}]})
    with pytest.raises(ConfigurationError, match=r"rollout\.0\.load_test\.p99: Extra inputs"):
        LoopConfig.parse({"rollout": [{"model": "m", "load_test": {"p99": 100}}]})


def test_toml_file(tmp_path: Path) -> None:
    (tmp_path / "mloop.toml").write_text(
        """
[mloop]
max_workers = 2

[scheduler]
tick_s = 2

[[triggers]]
name = "nightly"
kind = "schedule"
cron = "0 3 * * *"
pipeline = "mloop.steps.retrain:retrain"
params = { model_name = "m", target = "y" }

[[rollout]]
model = "m"
canary_fraction = 0.1

[rollout.load_test]
requests = 50
p99_ms = 120

[[rollout]]
model = "other"
"""
    )
    config = load_loop_config(tmp_path)
    assert config.tick_s == 2 and config.triggers[0].cron == "0 3 * * *"
    assert config.policy("m") is not None and config.policy("m").canary_fraction == 0.1
    gate = config.policy("m").load_test  # the table belongs to the [[rollout]] above it
    assert (gate.enabled, gate.requests, gate.concurrency, gate.p99_ms, gate.max_error_rate, gate.rounds) == (
        True, 50, 4, 120.0, 0.01, 3
    )  # fmt: skip
    defaults = config.policy("other").load_test
    assert (defaults.requests, defaults.concurrency, defaults.p99_ms, defaults.max_error_rate) == (
        200,
        4,
        250,
        0.01,
    )
    assert load_loop_config(tmp_path / "elsewhere") == LoopConfig()
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_loop_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[[triggers]\n")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_loop_config(tmp_path / "bad.toml")


def test_what_only_the_running_system_can_check(workspace: mloop.Workspace, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist") as info:
        validate_trigger(parse(kind="new_data", path=str(tmp_path / "nowhere")).triggers[0], workspace)
    assert info.value.field == "path"
    with pytest.raises(PipelineLoadError, match="does not exist"):
        validate_trigger(
            LoopConfig.parse(
                {"triggers": [{"name": "t", "kind": "manual", "pipeline": "gone.py:p"}]}
            ).triggers[0],
            workspace,
        )
    with pytest.raises(PipelineLoadError, match="no @pipeline"):
        validate_trigger(parse(kind="manual", pipeline="mloop.steps.retrain:nothing").triggers[0], workspace)
    with pytest.raises(MloopError, match="trigger 't': model 'unknown' not found"):
        validate_trigger(parse(kind="drift", model="unknown").triggers[0], workspace)
    # refused at the first firing (unknown), or dropped without a word (the new files' parameter)
    (tmp_path / "in").mkdir()
    with pytest.raises(ConfigurationError, match=r"params\.bogus is not a parameter of pipeline") as info:
        validate_trigger(parse(kind="manual", params={"bogus": 1}).triggers[0], workspace)
    assert info.value.field == "params.bogus"
    with pytest.raises(ConfigurationError, match="the new files would reach no run") as info:
        validate_trigger(
            parse(kind="new_data", path=str(tmp_path / "in"), param="files").triggers[0], workspace
        )
    assert info.value.field == "param"
    validate_trigger(parse(kind="new_data", path=str(tmp_path / "in"), param="data").triggers[0], workspace)
    rows = {"kind": "new_data", "table": "t", "column": "id"}
    for url in ("notaurl", "nosuchdb://x/y"):  # a traceback on every pass, before
        with pytest.raises(ConfigurationError, match="is not a database URL mloop can open") as info:
            validate_trigger(parse(**rows, url=url).triggers[0], workspace)
        assert info.value.field == "url"
    with pytest.raises(ConfigurationError, match="cannot watch nosuchproto://x/y") as info:
        validate_trigger(parse(kind="new_data", path="nosuchproto://x/y").triggers[0], workspace)
    assert info.value.field == "path"


def test_what_mloop_toml_cannot_be(tmp_path: Path) -> None:
    (tmp_path / "mloop.toml").mkdir()  # as `docker -v` makes of a missing file
    with pytest.raises(ConfigurationError, match=r"mloop\.toml is a folder, not a TOML file"):
        load_loop_config(tmp_path)
    (tmp_path / "mloop.toml").rmdir()
    (tmp_path / "mloop.toml").symlink_to(tmp_path / "gone.toml")
    for read in (load_loop_config, load_settings):
        with pytest.raises(ConfigurationError, match=r"mloop\.toml is a broken link"):
            read(tmp_path)
    (tmp_path / "mloop.toml").unlink()
    (tmp_path / "mloop.toml").write_text(
        '[scheduler]\ntriggers = []\n\n[[triggers]]\nname = "t"\nkind = "manual"\n'
    )
    with pytest.raises(ConfigurationError, match=r"\[scheduler\] has no key 'triggers'"):
        load_loop_config(tmp_path)
    # a file given by name is read whatever its name ends with, and checked for unknown tables
    (tmp_path / "loop.cfg").write_text(f'[[triggers]]\nname = "t"\nkind = "manual"\npipeline = "{RETRAIN}"\n')
    assert [t.name for t in load_loop_config(tmp_path / "loop.cfg").triggers] == ["t"]
    (tmp_path / "loop.toml").write_text(f'[[trigger]]\nname = "t"\nkind = "manual"\npipeline = "{RETRAIN}"\n')
    with pytest.raises(ConfigurationError, match="unknown table 'trigger'"):
        load_loop_config(tmp_path / "loop.toml")


def test_scheduler_keys_are_named_in_their_table_and_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    (tmp_path / "mloop.toml").write_bytes(b"\xef\xbb\xbf[scheduler]\ntick_s = 0\n")
    with pytest.raises(ConfigurationError, match=r"mloop\.toml: scheduler\.tick_s: Input should be") as info:
        load_loop_config(tmp_path)
    assert info.value.field == "scheduler.tick_s"
    (tmp_path / "mloop.toml").write_bytes(b"\xef\xbb\xbf[scheduler]\ntick_s = 2\n")
    assert load_loop_config(tmp_path).tick_s == 2


def test_a_misspelt_table_of_mloop_toml_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "mloop.toml").write_text(
        '[[trigger]]\nname = "t"\nkind = "manual"\npipeline = "p.py:p"\n\n[[rollout]]\nmodel = "m"\n'
    )
    with pytest.raises(ConfigurationError, match=r"unknown table 'trigger' \(did you mean 'triggers'\?"):
        load_loop_config(tmp_path)
    (tmp_path / "mloop.toml").write_text("[mloop]\nmax_workers = 2\n[serve]\nbatch_rows = 8\n[ci]\n")
    assert load_loop_config(tmp_path).triggers == []  # every table mloop reads is accepted


def test_a_metric_the_model_is_not_judged_by_is_refused_at_start(workspace: mloop.Workspace) -> None:
    from mloop.orchestration.scheduler import Scheduler

    workspace.register_model("prices", {"kind": "regressor"}, signature={"output": {"task": "regression"}})
    workspace.register_model(
        "species", {"kind": "iris"}, signature={"output": {"task": "classification", "classes": [0, 1, 2]}}
    )

    def scheduler(triggers: list[dict], rollout: list[dict]) -> Scheduler:
        return Scheduler(workspace, LoopConfig.parse({"triggers": triggers, "rollout": rollout}))

    pipeline = "mloop.steps.retrain:retrain"
    worse = {"name": "worse", "kind": "degradation", "model": "prices", "pipeline": pipeline}
    with pytest.raises(
        ConfigurationError,
        match=r"trigger 'worse': metric 'accuracy' is not measured on a "
        r"regression model's live predictions \(use one of: mae, rmse, r2, mape\)",
    ) as info:
        scheduler([worse], []).check()  # the default metric: such a trigger could never fire
    assert info.value.field == "metric"
    scheduler([{**worse, "metric": "mae"}], []).check()
    with pytest.raises(ConfigurationError, match=r"rollout 'prices': metric 'f1' is not measured"):
        scheduler([], [{"model": "prices", "metric": "f1"}]).check()  # every canary would roll back
    with pytest.raises(
        ConfigurationError, match=r"'brier' is measured live only for two classes .*; the model has 3"
    ):
        scheduler([], [{"model": "species", "metric": "brier"}]).check()
    with pytest.raises(ConfigurationError, match=r"'roc_auc' is measured live only for two classes"):
        scheduler([{**worse, "model": "species", "metric": "roc_auc", "threshold": 0.7}], []).check()
    workspace.register_model(
        "plain",  # a binary classifier that gives no probabilities (its evaluation has no log_loss)
        {"kind": "ridge"},
        signature={"output": {"task": "classification", "classes": [0, 1]}},
        metrics={"accuracy": 0.9},
    )
    with pytest.raises(ConfigurationError, match="needs probabilities, and the model gives none"):
        scheduler([], [{"model": "plain", "metric": "log_loss"}]).check()
    scheduler([], [{"model": "species"}, {"model": "prices", "metric": "rmse"}]).check()
    scheduler([], [{"model": "not-yet-trained", "metric": "mae"}]).check()  # its first version comes later


def test_a_loop_set_up_before_its_first_version(
    workspace: mloop.Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    """A file with a nightly training run and a degradation trigger on the model it trains starts
    before anything was trained (the trigger waits); a monitoring trigger alone, on a model nobody
    registered nor trains, is a typo and is refused."""
    from mloop.errors import NotFoundError
    from mloop.orchestration.scheduler import Scheduler

    pipeline = "mloop.steps.retrain:retrain"
    watch = {"name": "worse", "kind": "degradation", "model": "fresh", "pipeline": pipeline, "metric": "mae"}
    nightly = {"name": "nightly", "kind": "schedule", "cron": "0 3 * * *", "pipeline": pipeline}
    alone = Scheduler(workspace, LoopConfig.parse({"triggers": [watch]}))
    with pytest.raises(NotFoundError, match=r"trigger 'worse': .*fresh"):
        alone.check()
    with caplog.at_level("WARNING", logger="mloop"):
        both = Scheduler(workspace, LoopConfig.parse({"triggers": [nightly, watch]}))
        both.check()
    assert "model 'fresh' has no version yet" in caplog.text
    assert both.tick().checks["worse"] == "fresh has no production version yet"


def test_a_trigger_parameter_of_the_wrong_type_is_refused_at_start(workspace: mloop.Workspace) -> None:
    """``params = { max_rows = "lots" }`` would fail every firing, hours after the daemon started."""
    from mloop.orchestration.scheduler import Scheduler

    nightly = {
        "name": "nightly",
        "kind": "schedule",
        "cron": "0 3 * * *",
        "pipeline": "mloop.steps.retrain:retrain",
    }
    for params, problem in (
        ({"max_rows": "lots"}, "expected int, got 'lots'"),
        ({"refit": 3}, "expected bool, got 3"),
        ({"model_name": ["a", "b"]}, "expected str, got ['a', 'b']"),
    ):
        scheduler = Scheduler(workspace, LoopConfig.parse({"triggers": [{**nightly, "params": params}]}))
        with pytest.raises(ConfigurationError) as info:
            scheduler.check()
        key = next(iter(params))
        assert (
            info.value.message.startswith(f"trigger 'nightly': params.{key}: ")
            and problem in info.value.message
        )
        assert info.value.field == f"params.{key}"
    fine = {
        "max_rows": "500",
        "refit": True,
        "model_name": "m",
        "target": "y",
    }  # text is parsed, as on the CLI
    Scheduler(workspace, LoopConfig.parse({"triggers": [{**nightly, "params": fine}]})).check()
