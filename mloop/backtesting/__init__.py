"""Backtesting the loop: replay a labelled history through the real prediction service, scheduler,
retraining pipeline and rollout (``replay.py``), and compare what the loop served with a model left
alone and with retraining before every window (``backtest.py``, ``report.py`` for the HTML page).

It sits above ``serving`` and ``orchestration``, which it drives together; neither imports it.
"""
