"""Tests of the benchmark's arithmetic: spreads, rounds, targets and verdicts (no servers).

make test PYTEST_ARGS="bench/test_report.py -q"
"""

from __future__ import annotations

import pytest

from bench import report


def row(mode="throughput", kind="roomcast", sockets=1000, runner="daphne", round=0, **figures):
    """One result row as bench/run.py writes it."""
    return {
        "mode": mode,
        "server": kind,
        "kind": kind,
        "runner": runner,
        "sockets": sockets,
        "processes": 1,
        "rooms": 1,
        "round": round,
        "key": report.key(mode, kind, sockets, runner),
        **figures,
    }


def plan(**changes) -> dict:
    values = {
        "rounds": 3,
        "small": 100,
        "large": 1000,
        "idle": 1000,
        "stall_live": 100,
        "stalled": 20,
        "stall_messages": 300,
        "many_rooms": 1000,
        "per_room": 5,
        "runners": ["daphne"],
    }
    return {**values, **changes}


def speed_rows(roomcast: list[float], bare: list[float]) -> list[dict]:
    rows = []
    for n, (a, b) in enumerate(zip(roomcast, bare, strict=True)):
        rows += [row(round=n, frames_per_s=a), row(kind="bare", round=n, frames_per_s=b)]
    return rows


def test_spread_swing_is_max_over_min():
    assert report.spread([2.0, 6.0, 3.0]) == {"min": 2.0, "median": 3.0, "max": 6.0, "swing": 3.0}


def test_per_round_divides_rows_of_the_same_round():
    rows = speed_rows([10.0, 20.0], [40.0, 25.0])
    a, b = report.key("throughput", "roomcast", 1000), report.key("throughput", "bare", 1000)
    assert report.per_round(rows, a, b, lambda r: r["frames_per_s"]) == [0.25, 0.8]


def test_per_round_failed_round_is_none():
    rows = speed_rows([10.0, 20.0], [40.0, 25.0])
    rows[2]["error"] = "the server dropped socket 3"
    a, b = report.key("throughput", "roomcast", 1000), report.key("throughput", "bare", 1000)
    assert report.per_round(rows, a, b, lambda r: r["frames_per_s"]) == [0.25, None]


def test_target_worst_round_decides():
    verdict = report.target("x", [0.95, 0.85, 1.2], ">=", 0.9, "slow")
    assert (verdict["worst"], verdict["verdict"]) == (0.85, "MISS")


def test_target_every_round_passing_is_a_pass():
    verdict = report.target("x", [1.1, 1.3, 1.4], "<=", 1.5, "slow")
    assert (verdict["worst"], verdict["verdict"]) == (1.4, "PASS")


def test_target_failed_round_is_a_miss():
    assert report.target("x", [1.0, None, 1.0], ">=", 0.9, "slow")["verdict"] == "MISS"


def test_target_report_only_is_info():
    assert report.target("x", [0.5], "info", 1, "cost")["verdict"] == "INFO"


def test_stall_bound_without_outbox_limit_is_slack_plus_a_quarter_of_missed():
    bound, _ = report.stall_bound(stalled=20, messages=400, frame=3 * 2**17, limit=None)
    assert bound == 8 + 0.25 * 20 * 400 * 3 * 2**17 / 2**20


def test_stall_bound_with_small_outbox_limit_is_capped_by_it():
    bound, _ = report.stall_bound(stalled=20, messages=400, frame=2**20, limit=10)
    assert bound == 8 + 20 * 10


def test_figures_flag_a_threefold_swing():
    rows = [row(round=n, frames_per_s=v) for n, v in enumerate([21000.0, 19000.0, 1950.0])]
    found = report.figures({"rows": rows})
    speed = next(f for f in found if f["name"] == "frames/s")
    assert speed["swings"] is True


def test_targets_swing_on_noisy_rounds_is_not_counted():
    rows = [
        row(round=n, frames_per_s=v, server_core_busy=1.0, server_cpu=0.3)
        for n, v in enumerate([21000.0, 19000.0, 1950.0])
    ]
    results = {"rows": rows, "plan": plan()}
    results["figures"] = report.figures(results)
    swings = next(t for t in report.targets(results) if t["what"].startswith("figures whose"))
    assert swings["values"] == [0]


def test_figures_steady_rounds_do_not_swing():
    rows = [row(round=n, frames_per_s=v) for n, v in enumerate([21000.0, 19000.0, 15000.0])]
    speed = next(f for f in report.figures({"rows": rows}) if f["name"] == "frames/s")
    assert speed["swings"] is False


def test_targets_bare_ratio_uses_each_rounds_pair():
    results = {"rows": speed_rows([27.0, 18.0, 30.0], [30.0, 30.0, 30.0]), "plan": plan()}
    results["figures"] = report.figures(results)
    bare = next(t for t in report.targets(results) if t["what"].startswith("Roomcast / bare"))
    assert bare["values"] == pytest.approx([0.9, 0.6, 1.0])


def test_targets_lost_message_fails_correctness():
    rows = [row(frames_per_s=1.0, lost=1, duplicated=0, reordered=0)]
    results = {"rows": rows, "plan": plan(), "figures": []}
    faults = next(t for t in report.targets(results) if t["what"].startswith("Roomcast lost"))
    assert faults["verdict"] == "MISS"


def test_targets_stall_growth_past_bound_is_a_miss():
    stall = {"growth_clean_kib": 1024, "growth_stalled_kib": 26 * 1024, "frame_bytes": 3400}
    rows = [row(mode="stall", sockets=100, round=n, **stall) for n in range(3)]
    results = {"rows": rows, "plan": plan(), "figures": []}
    growth = next(t for t in report.targets(results) if "RSS growth" in t["what"])
    assert (growth["worst"], growth["verdict"]) == (26.0, "MISS")


def test_recommendation_prefers_bounded_memory_over_speed():
    results = {
        "plan": plan(runners=["daphne", "granian"]),
        "targets": [
            {"what": "stalled clients: extra RSS growth MiB, daphne", "verdict": "MISS"},
            {"what": "stalled clients: extra RSS growth MiB, granian", "verdict": "PASS"},
        ],
        "figures": [
            {"key": report.key("throughput", "roomcast", 1000, r), "name": "frames/s", "median": v}
            for r, v in (("daphne", 30000.0), ("granian", 20000.0))
        ],
    }
    assert report.recommendation(results).startswith("granian")
