"""mloop.testing: helpers and a pytest plugin for testing your own pipelines (pipeline CI).

```python
from mloop.testing import assert_artifacts, assert_converges, integration_run, sample_from_schema

def test_training(mloop_workspace):                     # fixture from the mloop pytest plugin
    sample = sample_from_schema("schema.json", rows=500)  # types, ranges, vocabularies, nulls
    run = integration_run(mloop_workspace, training, sample=sample)  # lineage + finiteness checked
    assert_converges(run, step="train")
    assert_artifacts(run, {"split": {"train": pd.DataFrame}, "train": LogisticRegression})
```
"""

from mloop.testing.checks import (
    CheckFailed,
    assert_artifacts,
    assert_converges,
    assert_finite,
    assert_lineage,
)
from mloop.testing.fixtures import integration_run, run_pipeline, run_step, temp_workspace
from mloop.testing.sample import sample_from_file, sample_from_schema, write_sample

__all__ = [
    "CheckFailed",
    "assert_artifacts",
    "assert_converges",
    "assert_finite",
    "assert_lineage",
    "integration_run",
    "run_pipeline",
    "run_step",
    "sample_from_file",
    "sample_from_schema",
    "temp_workspace",
    "write_sample",
]
