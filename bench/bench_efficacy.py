"""Does the default loop retrain when it should, and only then, on streams it was not tuned on?

Protocol (issue 13): 13 drifting + 3 stationary synthetic streams (river's generators, several
drift kinds and schedules, one regression stream each way) and real time-ordered datasets that ship
inside installed packages (``efficacy_streams.py``). Each goes through ``mloop backtest`` (20 %
initial, 8 windows) with the default policy. The policy was tuned on seeds 0–2 of the synthetic
streams and on the rainfall data only; the table reports seeds 100–104 and the other real datasets.

Goals: on drifting streams the loop keeps on average ≥ 90 % of the gain retraining every window has
over a static model (no stream below 75 %) with at most half its retrains; 0 retrains on stationary
streams.

**No gain to keep** (the same rule for every drifting stream, synthetic or real). A kept share
(loop's gain / every window's gain) means something only when the denominator is a gain and not
noise. A stream's gain is the mean over its runs of every window's gain over static (signed so that
better is positive); its standard error is sqrt(max(between, within) / runs), where ``between`` is
the variance of that gain across the stream's runs (seeds) and ``within`` the mean squared
standard error of one run's gain from its own rows (``BacktestReport.gain_se``: a paired bootstrap
of the replayed rows within windows). Taking the larger of the two means neither a few seeds that
happen to agree nor a single run (a real dataset has one) can pass noise off as a gain. The stream
has a gain to keep when its mean gain exceeds **2 standard errors**; otherwise it is reported as
"no gain to keep", its runs leave the kept-gain average, and its goal is that the loop is not worse
than static beyond 2 standard errors of the loop's own gain (computed the same way). Its retrains
still count against the half-of-every-window budget.

Every (stream, seed) result is cached in ``bench/efficacy_results.json`` under a digest of the loop's
code, so an interrupted run resumes and ``--jobs 2`` runs two backtests at a time.

    .venv/bin/pip install -e '.[dev]'      # includes river
    .venv/bin/python bench/bench_efficacy.py --jobs 2                 # held-out table
    .venv/bin/python bench/bench_efficacy.py --seeds 0 1 2 --tuning   # what the policy was tuned on
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import efficacy_streams as streams

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(__file__).resolve().parent / "efficacy_results.json"
# the loop's policy and harness (wherever the retraining pipeline lives) and the streams
CODE = [
    "mloop/backtesting/*.py",
    "mloop/orchestration/*.py",
    "mloop/steps/retrain.py",
    "bench/efficacy_streams.py",
]


def code_digest() -> str:
    h = hashlib.sha256()
    for pattern in CODE:
        for path in sorted(ROOT.glob(pattern)):
            h.update(path.relative_to(ROOT).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def run_one(name: str, seed: int | None, rows: int) -> dict[str, Any]:
    """One backtest; the figures the table needs (run in a worker process)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from mloop.backtesting.backtest import backtest

    if seed is None:
        frame, target = streams.real(name)
    else:
        frame, target = streams.synthetic(name, rows, seed), "y"
    started = time.perf_counter()
    r = backtest(frame, target)
    m = r.metric
    return {
        "stream": name,
        "seed": seed,
        "rows": len(frame),
        "metric": m,
        "static": r.static.metrics.get(m),
        "every_window": r.every_window.metrics.get(m),
        "loop": r.loop.metrics.get(m),
        "kept": r.recovered,
        # the rows' sampling noise of each policy's gain over static (module docstring)
        "gain_se": r.gain_se,
        "retrains": r.loop.retrains,
        "every_retrains": r.every_window.retrains,
        "promotions": sum(e.kind == "promote" for e in r.events),
        "seconds": round(time.perf_counter() - started, 1),
        # what the loop did, and each policy per window: enough to say why a stream misses
        "events": [f"w{e.window} {e.kind} v{e.version}: {e.detail[:200]}" for e in r.events],
        "windows": {
            p: [round(w[m], 4) if m in w else None for w in getattr(r, p).windows]
            for p in ("static", "every_window", "loop")
        },
    }


def load_cache() -> dict[str, Any]:
    return json.loads(CACHE.read_text()) if CACHE.exists() else {}


RULE = (
    "No gain to keep: a stream whose mean gain of every window over static, across its runs, is "
    "within 2 standard errors of 0 (SE = sqrt(max(variance across runs, mean squared per-run "
    "bootstrap SE) / runs)); such streams leave the kept-gain average and must not be worse than "
    "static beyond 2 SE of the loop's gain."
)


def gain_noise(rs: list[dict[str, Any]], policy: str) -> tuple[float, float | None]:
    """Mean gain of ``policy`` (``every_window`` or ``loop``) over static across the runs ``rs``
    (better is positive) and its standard error (module docstring); None when no noise figure is
    known (a single run cached before the runs recorded ``gain_se``)."""
    lower = rs[0]["metric"] in LOWER
    gains = [(-1 if lower else 1) * (r[policy] - r["static"]) for r in rs]
    within = [r.get("gain_se", {}).get(policy) for r in rs]
    known = [w for w in within if w is not None]
    variances = [statistics.mean(w * w for w in known)] if len(known) == len(rs) else []
    if len(rs) > 1:
        variances.append(statistics.variance(gains))
    if not variances:
        return statistics.mean(gains), None
    return statistics.mean(gains), (max(variances) / len(rs)) ** 0.5


LOWER = ("mae", "rmse", "log_loss", "brier")


def summarise(results: list[dict[str, Any]], stationary: set[str], title: str) -> str:
    """The table (markdown): per stream mean ± std across seeds, then the totals against the goals."""
    if not results:
        return f"### {title}\n\n(no results)"
    by: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by.setdefault(r["stream"], []).append(r)

    def ms(values: list[float], fmt: str = "{:.3f}") -> str:
        if not values:
            return "-"
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return (fmt + " ± " + fmt).format(statistics.mean(values), sd)

    lines = [
        f"### {title}",
        "",
        "| stream | metric | runs | static | every window | loop | every window's gain | 2 SE "
        "| kept gain | retrains (loop / every) | goal |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    kept_all, loop_retrains, every_retrains, misses, still, none = [], 0, 0, [], 0, []
    for name, rs in by.items():
        lr, er = sum(r["retrains"] for r in rs), sum(r["every_retrains"] for r in rs)
        lower = rs[0]["metric"] in LOWER
        gain, se = gain_noise(rs, "every_window")
        has_gain = gain > 2 * se if se is not None else gain > 0
        kept = [r["kept"] for r in rs if r["kept"] is not None] if has_gain else []
        noise = f"{2 * se:.3f}" if se is not None else "?"
        if name in stationary:
            ok = lr == 0
            still += lr
            shown = "-"
        else:
            if has_gain:
                ok = statistics.mean(kept) >= 0.75 if kept else False
                shown = f"{ms([100 * k for k in kept], '{:.0f}')} % ({len(kept)}/{len(rs)} runs)"
            else:
                loop_gain, loop_se = gain_noise(rs, "loop")
                ok = loop_gain >= -2 * loop_se if loop_se is not None else loop_gain >= 0
                shown = f"no gain to keep (loop vs static {loop_gain:+.3f})"
                none.append(name)
            kept_all.extend(kept)
            loop_retrains += lr
            every_retrains += er
        if not ok:
            misses.append(name)
        lines.append(
            f"| {name} | {rs[0]['metric']} | {len(rs)} | {ms([r['static'] for r in rs])} | "
            f"{ms([r['every_window'] for r in rs])} | {ms([r['loop'] for r in rs])} | "
            f"{ms([(-1 if lower else 1) * (r['every_window'] - r['static']) for r in rs])} | {noise} | "
            f"{shown} | {lr / len(rs):.1f} / {er / len(rs):.1f} | {'met' if ok else 'NOT met'} |"
        )
    if loop_retrains or every_retrains or kept_all:
        mean = statistics.mean(kept_all) if kept_all else float("nan")
        streams = len({r["stream"] for r in results if r["stream"] not in stationary} - set(none))
        lines += [
            "",
            f"Drifting streams with a gain to keep ({streams}), all their runs ({len(kept_all)}): kept gain "
            f"{100 * mean:.0f} % ± {100 * statistics.pstdev(kept_all) if kept_all else 0:.0f} "
            f"(goal ≥ 90 %: {'met' if mean >= 0.9 else 'NOT met'}); no gain to keep: "
            f"{', '.join(none) or 'none'}; retrains {loop_retrains} vs "
            f"{every_retrains} every window = {loop_retrains / max(every_retrains, 1):.0%} "
            f"(goal ≤ 50 %: {'met' if loop_retrains <= every_retrains / 2 else 'NOT met'}); "
            f"stationary streams: {still if stationary & set(by) else 'none run,'} retrains (goal 0). "
            "Streams missing a goal: "
            f"{', '.join(misses) or 'none'}.",
            "",
            RULE,
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102, 103, 104])
    parser.add_argument("--tuning", action="store_true", help="the tuning set: rainfall, not the others")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=None, help="stream names to run (substring match)")
    parser.add_argument("--digest", help="summarise the cached results of this code digest")
    args = parser.parse_args()
    digest = args.digest or code_digest()
    cache = load_cache()
    # real data first, then seed by seed: a partial run still covers every stream
    todo: list[tuple[str, int | None]] = [
        (name, None) for name in ([streams.REAL_TUNING] if args.tuning else streams.REAL_HELD_OUT)
    ]
    todo += [(name, seed) for seed in args.seeds for name in streams.DRIFTING + streams.STATIONARY]
    if args.only:
        todo = [t for t in todo if any(o in t[0] for o in args.only)]

    def key(name: str, seed: int | None) -> str:
        return f"{digest}|{name}|{seed}|{args.rows if seed is not None else 'all'}"

    missing = [t for t in todo if key(*t) not in cache and not args.digest]
    done = sum(key(*t) in cache for t in todo)
    print(f"code {digest}: {done} of {len(todo)} results cached", flush=True)
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(run_one, name, seed, args.rows): (name, seed) for name, seed in missing}
        for future in as_completed(futures):
            name, seed = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # one failing stream is reported, the others still run
                result = {"stream": name, "seed": seed, "error": f"{type(exc).__name__}: {exc}"}
            cache = load_cache()
            cache[key(name, seed)] = result
            CACHE.write_text(json.dumps(cache, indent=1, sort_keys=True))
            print(json.dumps(result), flush=True)
    results = [cache[key(*t)] for t in todo if key(*t) in cache]
    errors = [r for r in results if "error" in r]
    for r in errors:
        print(f"error: {r['stream']} seed {r['seed']}: {r['error']}")
    good = [r for r in results if "error" not in r]
    stationary = set(streams.STATIONARY)
    seeds = ", ".join(str(s) for s in args.seeds)
    synth = [r for r in good if r["seed"] is not None]
    real = [r for r in good if r["seed"] is None]
    print(summarise(synth, stationary, f"synthetic streams, seeds {seeds}, {args.rows:,} rows each"))
    print()
    print(summarise(real, set(), "real datasets (one run each: no seed)"))
    print()
    print(summarise(synth + real, stationary, "all drifting streams and datasets together"))


if __name__ == "__main__":
    main()
