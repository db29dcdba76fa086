"""Feature logic, kept apart from the pipeline so its unit tests need no workspace."""

import pandas as pd

FEATURES = ["tenure", "monthly", "plan_pro", "support_calls", "charge_per_month"]


def add_features(df: pd.DataFrame) -> pd.DataFrame:
    """One-hot the plan and derive the total charge per month of tenure."""
    out = df.copy()
    out["plan_pro"] = (out["plan"] == "pro").astype(float)
    out["charge_per_month"] = out["monthly"] / out["tenure"].clip(lower=1)
    return out
