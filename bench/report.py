"""What a benchmark run means: each figure's spread over the rounds, the targets of issues 11
and 15 as measured / target / verdict, the printed table and the SVG chart.

Pure functions of the results dict bench/run.py builds; nothing here runs a server.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from bench.servers import LABELS

# A core busier than its processes by more than this ran something else too (a noisy result).
NOISE = 0.12
# A figure whose best round is this many times its worst is a bug to find, not noise.
SWING = 3.0
# The stalled-client memory bound: slack for allocator noise, and the share of the bytes the
# stalled clients did not read that the server may hold (a server that keeps them all, as
# daphne's Twisted buffers do, holds ~100%).
STALL_SLACK_MIB = 8.0
STALL_SHARE = 0.25


def stall_bound(stalled: int, messages: int, frame: int, limit: int | None) -> tuple[float, str]:
    """MiB the stalled clients may grow the server by, and how that was worked out.

    What they missed: `stalled` x `messages` x `frame` bytes. The outbox limit caps what the
    app may queue (`limit` events per socket, at most a frame each); the server's own buffer
    must not keep a copy of everything missed either, so the bound is the smaller of the two
    (the outbox cap is not reached within a short run), plus slack.
    """
    missed = stalled * messages * frame / 2**20
    share = STALL_SHARE * missed
    if limit:
        cap = stalled * limit * frame / 2**20
        how = (
            f"{STALL_SLACK_MIB:g} MiB + min(outbox {limit} events x {stalled} stalled x {frame} B"
            f" = {cap:.0f} MiB, {STALL_SHARE:.0%} of the {missed:.0f} MiB they missed)"
        )
        return round(STALL_SLACK_MIB + min(cap, share), 1), how
    how = (
        f"{STALL_SLACK_MIB:g} MiB + {STALL_SHARE:.0%} of the {missed:.0f} MiB the stalled clients"
        " missed; no ROOMCAST_OUTBOX_LIMIT setting"
    )
    return round(STALL_SLACK_MIB + share, 1), how


# The figures whose swing between rounds is checked: one per scenario, what it measures.
PRIMARY = {"frames/s", "p99 ms", "live p99 ms, stalled clients", "KiB per idle socket"}


def key(mode: str, kind: str, sockets: int, runner="daphne", processes=1, rooms=1) -> str:
    """A scenario's key, as bench.run.Spec.key spells it."""
    return f"{mode}/{kind}/{runner}/{sockets}/{processes}p/{rooms}r"


def dig(row: dict, path: str) -> Any:
    """row["a"]["b"] for path "a.b", or None."""
    value: Any = row
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def stall_growth_mib(row: dict) -> float | None:
    """Memory growth while clients stalled (to when every live socket had every message).

    Not minus the clean phase's growth: early growth (allocator arenas, caches) goes on into
    the stalled phase or stops, either way; the clean phase's figure is printed beside it.
    """
    return kib_mib(row, "growth_stalled_kib")


def frames_per_core_s(row: dict) -> float | None:
    if row.get("frames_per_s") and row.get("server_cpu"):
        return row["frames_per_s"] / row["server_cpu"]
    return None


# What each mode's figures are: (name, how to read it from a row, unit, format).
METRICS: dict[str, list[tuple[str, Callable[[dict], float | None], str, str]]] = {
    "throughput": [
        ("frames/s", lambda r: r.get("frames_per_s"), "frames/s", ",.0f"),
        ("messages/s", lambda r: r.get("messages_per_s"), "msgs/s", ",.0f"),
        ("frames per server CPU-second", frames_per_core_s, "frames/cpu-s", ",.0f"),
        ("Redis commands per message", lambda r: r.get("redis_commands_per_message"), "", ".2f"),
        ("sockets connected per second", lambda r: connects(r), "sockets/s", ",.0f"),
    ],
    "latency": [
        ("p50 ms", lambda r: r.get("p50_ms"), "ms", ".1f"),
        ("p99 ms", lambda r: r.get("p99_ms"), "ms", ".1f"),
    ],
    "stall": [
        ("live p99 ms, no stalled client", lambda r: dig(r, "phases.clean.p99_ms"), "ms", ".1f"),
        ("live p99 ms, stalled clients", lambda r: dig(r, "phases.stalled.p99_ms"), "ms", ".1f"),
        (
            "RSS growth MiB, no stalled client",
            lambda r: kib_mib(r, "growth_clean_kib"),
            "MiB",
            ".1f",
        ),
        (
            "RSS growth MiB, stalled clients",
            lambda r: kib_mib(r, "growth_stalled_kib"),
            "MiB",
            ".1f",
        ),
    ],
    "memory": [
        ("KiB per idle socket", lambda r: r.get("kib_per_socket"), "KiB", ".1f"),
        ("sockets connected per second", lambda r: connects(r), "sockets/s", ",.0f"),
    ],
}


def connects(row: dict) -> float | None:
    """Sockets opened (and, for Roomcast, synced) per second while the room filled."""
    return row["sockets"] / row["connect_s"] if row.get("connect_s") else None


def kib_mib(row: dict, name: str) -> float | None:
    return row[name] / 1024 if row.get(name) is not None else None


def spread(values: list[float]) -> dict:
    if not values:
        return {"min": None, "median": None, "max": None, "swing": None}
    low, high = min(values), max(values)
    swing = high / low if low > 0 else (None if high <= 0 else float("inf"))
    return {"min": low, "median": statistics.median(values), "max": high, "swing": swing}


def figures(results: dict) -> list[dict]:
    """Every figure of every scenario with its value in each round and their spread."""
    by_key: dict[str, list[dict]] = {}
    for row in results["rows"]:
        by_key.setdefault(row["key"], []).append(row)
    out = []
    for scenario, rows in by_key.items():
        mode = rows[0]["mode"]
        for name, read, unit, spec in METRICS[mode]:
            values = [read(r) for r in rows]
            if all(v is None for v in values) and not any(r.get("error") for r in rows):
                continue  # not a figure of this scenario (no Redis, say)
            clean = [v for v in values if v is not None]
            swing_checked = name in PRIMARY  # the others derive from these, or may be ~0
            item = {
                "key": scenario,
                "what": f"{describe(rows[0])}: {name}",
                "mode": mode,
                "name": name,
                "unit": unit,
                "format": spec,
                "values": values,
                **spread(clean),
                "errors": [r["error"] for r in rows if r.get("error")],
                "noisy_rounds": [r["round"] for r in rows if disturbed(r)],
                "core0": median_of(rows, "server_core_busy"),
                "core1": median_of(rows, "loadgen_core_busy"),
            }
            item["swings"] = bool(
                swing_checked and item["swing"] is not None and item["swing"] >= SWING
            )
            out.append(item)
    return out


def median_of(rows: list[dict], name: str) -> float | None:
    values = [r[name] for r in rows if r.get(name) is not None]
    return statistics.median(values) if values else None


def describe(row: dict) -> str:
    where = row["runner"] + (f" x{row['processes']} processes" if row["processes"] > 1 else "")
    if row["rooms"] > 1:
        size = f"{row['rooms']} rooms of {row['sockets'] // row['rooms']}"
    elif row["mode"] == "stall":
        size = f"{row['sockets']} live sockets"
    else:
        size = f"{row['sockets']} sockets"
    return f"{LABELS[row['server']]}, {where}, {size}"


def disturbed(row: dict) -> bool:
    """Whether something besides the servers and the load generator used their cores."""
    pairs = [("server_core_busy", "server_cpu"), ("loadgen_core_busy", "loadgen_cpu")]
    return any(
        row.get(core) is not None and row.get(own) is not None and row[core] - row[own] > NOISE
        for core, own in pairs
    )


# Targets ---------------------------------------------------------------------------------------


def per_round(rows: list[dict], key_a: str, key_b: str | None, read, read_b=None) -> list:
    """read(a) / read_b(b) for the rows of the same round (or read(a) alone); None if missing."""
    read_b = read_b or read
    rounds = sorted({r["round"] for r in rows})
    found = []
    for number in rounds:
        a = next((r for r in rows if r["key"] == key_a and r["round"] == number), None)
        if a is None:
            continue
        value_a = None if a.get("error") else read(a)
        if key_b is None:
            found.append(value_a)
            continue
        b = next((r for r in rows if r["key"] == key_b and r["round"] == number), None)
        value_b = None if b is None or b.get("error") else read_b(b)
        found.append(value_a / value_b if value_a is not None and value_b else None)
    return found


def target(what, values, op, limit, means, spec=".2f", skip=None, note=None) -> dict:
    """A target: its value in each round; the worst one decides (targets hold in every run)."""
    values = list(values)
    clean = [v for v in values if v is not None]
    if skip:
        verdict, worst = "SKIP", None
    elif not values or len(clean) < len(values):
        verdict, worst = "MISS", None  # a failed run counts against the target
    else:
        worst = min(clean) if op == ">=" else max(clean)
        verdict = "PASS" if (worst >= limit if op == ">=" else worst <= limit) else "MISS"
    if op == "info":  # a figure to report, not a limit: its median stands for it
        verdict = "INFO" if not skip else "SKIP"
        worst = statistics.median(clean) if clean and not skip else None
    return {
        "what": what,
        "values": values,
        **spread(clean),
        "worst": worst,
        "target": f"{op} {limit:g}" if op != "info" else "(report)",
        "verdict": verdict,
        "means": means,
        "note": note or skip,
        "format": spec,
    }


def targets(results: dict) -> list[dict]:
    """The targets of issue 11 (speed) and issue 15 (scale), each over every round."""
    rows, plan = results["rows"], results["plan"]
    small, large, live = plan["small"], plan["large"], plan["stall_live"]
    rooms, many = plan["many_rooms"], plan["many_rooms"] * plan["per_room"]
    present = {r["key"] for r in rows}

    def fps(row: dict) -> float | None:
        return row.get("frames_per_s")

    def have(*keys: str) -> bool:
        return all(k in present for k in keys)

    out = []
    for runner in plan["runners"]:
        a, b = (
            key("throughput", "roomcast", large, runner),
            key("throughput", "bare", large, runner),
        )
        if have(a, b):
            out.append(
                target(
                    f"Roomcast / bare ASGI, {large} sockets, {runner}",
                    per_round(rows, a, b, fps),
                    ">=",
                    0.9,
                    "Roomcast adds per-frame work above what the server itself costs",
                )
            )
    a, b = key("throughput", "roomcast", large), key("throughput", "tutorial", large)
    if have(a, b):
        out.append(
            target(
                f"Roomcast / tutorial consumer, {large} sockets",
                per_round(rows, a, b, fps),
                ">=",
                8,
                "fan-out pays per socket what should be paid once per event",
            )
        )
    a, b = key("throughput", "roomcast", large), key("throughput", "roomcast", small)
    if have(a, b):
        out.append(
            target(
                f"Roomcast {large} / {small} sockets",
                per_round(rows, a, b, fps),
                ">=",
                0.85,
                "the cost per frame grows with the room",
            )
        )
    a, b = key("latency", "roomcast", large), key("latency", "bare", large)
    if have(a, b):
        out.append(
            target(
                f"Roomcast p99 / bare p99, {large * 10} frames/s offered",
                per_round(rows, a, b, lambda r: r.get("p99_ms")),
                "<=",
                1.5,
                "events wait in Roomcast (queues, batching delay) beyond the server's own time",
            )
        )
    limit = results.get("outbox_limit")
    stalled = plan["stalled"]
    for runner in plan["runners"]:
        k = key("stall", "roomcast", live, runner)
        if not have(k):
            continue
        lost = [dig(r, "phases.stalled.lost") for r in rows if r["key"] == k]
        note = f"live deliveries lost with stalled clients: {lost}" if any(lost) else None
        p99 = per_round(
            rows,
            k,
            k,
            lambda r: dig(r, "phases.stalled.p99_ms"),
            lambda r: dig(r, "phases.clean.p99_ms"),
        )
        if any(lost):
            p99 = [None if n else v for v, n in zip(p99, lost, strict=False)]
        out.append(
            target(
                f"stalled clients: live p99 with / without, {runner}",
                p99,
                "<=",
                1.5,
                "a client that never reads slows the others (or they lost messages)",
                note=note,
            )
        )
        frame = max((r.get("frame_bytes") or 0 for r in rows if r["key"] == k), default=0)
        bound, how = stall_bound(stalled, plan["stall_messages"], frame or 3500, limit)
        out.append(
            target(
                f"stalled clients: RSS growth MiB while they stall, {runner}",
                per_round(rows, k, None, stall_growth_mib),
                "<=",
                round(bound, 1),
                "the server buffers what a stalled client does not read, without bound",
                spec=".1f",
                note=how,
            )
        )
    a, b = key("throughput", "roomcast+redis", large), key("throughput", "roomcast", large)
    if have(a, b):
        out.append(
            target(
                f"Roomcast Redis / in-memory layer, {large} sockets",
                per_round(rows, a, b, fps),
                ">=",
                0.8,
                "the Redis layer costs per socket, not once per event and process",
            )
        )
    a, b = (
        key("throughput", "roomcast+pg", large, processes=2),
        key("throughput", "roomcast+pg", large),
    )
    if have(a, b):
        out.append(
            target(
                f"two processes / one, one room of {large} (PostgreSQL+Redis, same core)",
                per_round(rows, a, b, fps),
                "info",
                1,
                "the cost of crossing processes: below 1.0, what a second process costs",
            )
        )
    a = key("throughput", "roomcast", many, rooms=rooms)
    b = key("throughput", "roomcast+redis", many, rooms=rooms)
    if have(a, b):
        out.append(
            target(
                f"{rooms} rooms of {plan['per_room']}: Redis / in-memory layer, messages/s",
                per_round(rows, b, a, lambda r: r.get("messages_per_s")),
                "info",
                1,
                "the cost of the Redis layer when every message goes to another room",
            )
        )
    a, b = key("memory", "roomcast", plan["idle"]), key("memory", "tutorial", plan["idle"])
    if have(a, b):
        out.append(
            target(
                "Roomcast / tutorial memory per idle socket",
                per_round(rows, a, b, lambda r: r.get("kib_per_socket")),
                "<=",
                1,
                "each socket keeps more state than the tutorial consumer's",
            )
        )
    # Stalled-client runs report their live sockets' losses in their own target: an open loop
    # that outruns a stuck server loses deliveries by design there.
    checked = [
        r
        for r in rows
        if r["server"].startswith("roomcast") and r["mode"] not in ("memory", "stall")
    ]
    faults = [
        None
        if r.get("lost") is None
        else r["lost"] + r.get("duplicated", 0) + r.get("reordered", 0)
        for r in checked
    ]
    out.append(
        target(
            "Roomcast lost + duplicated + reordered, every run",
            [sum(faults)] if None not in faults else [None],
            "<=",
            0,
            "a message went missing, twice, or out of order: a correctness bug",
            spec="d",
        )
    )
    swinging = [f for f in results.get("figures", []) if f["swings"]]
    quiet = [f["what"] for f in swinging if not f["noisy_rounds"]]
    noisy = [f["what"] for f in swinging if f["noisy_rounds"]]
    note = "; ".join(
        part
        for part in (
            ", ".join(quiet),
            f"not counted, their rounds were NOISY: {', '.join(noisy)}" if noisy else "",
        )
        if part
    )
    out.append(
        target(
            f"figures whose quiet rounds differ by {SWING:g}x or more",
            [len(quiet)],
            "<=",
            0,
            "a run collapsed on a quiet machine: a bug to find (see the WARNING lines)",
            spec="d",
            note=note or None,
        )
    )
    return out


def recommendation(results: dict) -> str | None:
    """The server to deploy with: bounded memory and steady p99 under stalled clients first,
    then the fastest median Roomcast throughput at the large room."""
    best = None
    large = results["plan"]["large"]
    for runner in results["plan"]["runners"]:
        stall = [
            t
            for t in results["targets"]
            if t["what"].startswith("stalled clients") and t["what"].endswith(f", {runner}")
        ]
        safe = bool(stall) and all(t["verdict"] == "PASS" for t in stall)
        speed = next(
            (
                f["median"]
                for f in results["figures"]
                if f["key"] == key("throughput", "roomcast", large, runner)
                and f["name"] == "frames/s"
            ),
            None,
        )
        if speed is not None and (best is None or (safe, speed) > best[0]):
            best = ((safe, speed), runner)
    if best is None:
        return None
    (safe, speed), runner = best
    why = (
        "memory bounded and live p99 steady beside stalled clients"
        if safe
        else ("NO server kept memory bounded and p99 steady beside stalled clients; fastest")
    )
    return f"{runner} ({why}; Roomcast median {speed:,.0f} frames/s at the large room)"


# Printing --------------------------------------------------------------------------------------


def summary(row: dict) -> str:
    """One progress line's figure."""
    if row["mode"] == "throughput":
        if row.get("rooms", 1) > 1:
            return f"{row['messages_per_s']:,.0f} msgs/s, {row['frames_per_s']:,.0f} frames/s"
        return f"{row['frames_per_s']:,.0f} frames/s"
    if row["mode"] == "latency":
        return f"p99 {row['p99_ms']:,.1f} ms"
    if row["mode"] == "stall":
        clean, stalled = dig(row, "phases.clean.p99_ms"), dig(row, "phases.stalled.p99_ms")
        return (
            f"live p99 {fmt(clean, '.1f')} -> {fmt(stalled, '.1f')} ms, RSS growth "
            f"{fmt(kib_mib(row, 'growth_clean_kib'), '+.1f')} -> "
            f"{fmt(stall_growth_mib(row), '+.1f')} MiB"
        )
    return f"{row['kib_per_socket']:.1f} KiB per socket"


def fmt(value, spec: str = ".0f", width: int = 0) -> str:
    text = format(value, spec) if isinstance(value, int | float) else "-"
    return f"{text:>{width}}"


def share(value) -> str:
    return f"{value:>6.0%}" if isinstance(value, int | float) else f"{'-':>6}"


def table(r: dict) -> str:
    """The report of a run, as printed."""
    plan = r["plan"]
    pinning = (
        f"servers on core {r['cores']['server']}, load generator on core {r['cores']['loadgen']}"
        if r["cores"]["pinned"]
        else "NOT pinned (fewer than 2 usable cores)"
    )
    quick = (
        " QUICK RUN: small rooms, one round; ratios are a smoke test only." if r["quick"] else ""
    )
    out = [
        f"Roomcast benchmark, {r['when']} on {r['host']}: {pinning}.{quick}",
        f"{plan['rounds']} rounds; frames of {r['frame_bytes']} bytes; Redis: {r.get('redis')}; "
        f"outbox limit setting: {r.get('outbox_limit')}.",
        "Each figure: its value in every round, then min / median / max. core 0 / core 1: how busy "
        "the servers' core and the load generator's core were (median); the one near 100% is the "
        "limit.",
        "",
        f"{'figure':66}{'rounds':>28}{'min':>9}{'median':>9}{'max':>9}{'core0':>7}{'core1':>7}",
    ]
    for f in r["figures"]:
        rounds = " ".join(fmt(v, f["format"]) for v in f["values"])
        out.append(
            f"{f['what'][:66]:66}{rounds[-28:]:>28}"
            + fmt(f["min"], f["format"], 9)
            + fmt(f["median"], f["format"], 9)
            + fmt(f["max"], f["format"], 9)
            + share(f["core0"]).rjust(7)
            + share(f["core1"]).rjust(7)
            + (" NOISY" if f["noisy_rounds"] else "")
            + (" ERROR" if f["errors"] else "")
        )
    for f in r["figures"]:
        if f["swings"]:
            swing_rounds = ", ".join(fmt(v, f["format"]) for v in f["values"])
            noisy = ", ".join(str(n + 1) for n in f["noisy_rounds"])
            why = (
                f"but round(s) {noisy} were NOISY (other work on the cores): rerun when quiet"
                if noisy
                else "on quiet cores: a bug to find, not noise (see the server log, the JSON)"
            )
            out.append(f"WARNING: {f['what']} swings {f['swing']:.1f}x ({swing_rounds}) {why}")
    noisy_keys = sorted({f["key"] for f in r["figures"] if f["noisy_rounds"]})
    if noisy_keys:
        out.append(
            f"NOISY (other processes used the cores in some rounds): {len(noisy_keys)} scenarios"
        )
    out += ["", f"{'target':66}{'rounds':>24}{'worst':>9}  {'target':<8}  verdict"]
    for t in r["targets"]:
        rounds = " ".join(fmt(v, t["format"]) for v in t["values"])
        out.append(
            f"{t['what'][:66]:66}{rounds[-24:]:>24}{fmt(t['worst'], t['format'], 9)}  "
            f"{t['target']:<8}  {t['verdict']}"
        )
        if t["verdict"] == "MISS":
            out.append(f"{'':6}MISS means: {t['means']}")
        if t["note"]:
            out.append(f"{'':6}({t['note']})")
    best = recommendation(r)
    if best:
        out += ["", f"Server to deploy with, by this run: {best}"]
    return "\n".join(out)


def svg_chart(r: dict) -> str:
    """Median frames per second of the throughput scenarios, min-max whiskers, as bars."""
    colors = {
        "roomcast": "#2563eb",
        "roomcast+redis": "#60a5fa",
        "roomcast+pg": "#93c5fd",
        "tutorial": "#9ca3af",
        "bare": "#111827",
    }
    bars = [f for f in r["figures"] if f["name"] == "frames/s" and f["median"]]
    top = max((f["max"] for f in bars), default=1)
    width, bar, gap, left, top_margin = 820, 18, 6, 380, 46
    height = top_margin + len(bars) * (bar + gap) + 34
    title = "Frames delivered per second, servers on one core (median, min-max)"
    if r["quick"]:
        title += " (quick run)"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
        f'<text x="10" y="20" font-size="15" font-weight="bold">{title}</text>',
        f'<text x="10" y="37" fill="#4b5563">{r["frame_bytes"]}-byte frames; '
        f"{r['plan']['rounds']} rounds, {r['when']}; compare bars within one chart</text>",
    ]
    scale = (width - left - 90) / top
    for i, f in enumerate(bars):
        y = top_margin + i * (bar + gap)
        kind = f["key"].split("/")[1]
        label = f["what"].removesuffix(": frames/s")
        w = scale * f["median"]
        parts += [
            f'<text x="{left - 8}" y="{y + 13}" text-anchor="end">{label}</text>',
            f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar}" fill="{colors[kind]}">'
            f"<title>{f['median']:,.0f} frames/s</title></rect>",
            f'<line x1="{left + scale * f["min"]:.1f}" x2="{left + scale * f["max"]:.1f}" '
            f'y1="{y + bar / 2}" y2="{y + bar / 2}" stroke="#f59e0b" stroke-width="2"/>',
            f'<text x="{left + scale * f["max"] + 6:.1f}" y="{y + 13}">{f["median"]:,.0f}</text>',
        ]
    footer = top_margin + len(bars) * (bar + gap) + 18
    passed = sum(t["verdict"] == "PASS" for t in r["targets"])
    missed = sum(t["verdict"] == "MISS" for t in r["targets"])
    parts.append(
        f'<text x="10" y="{footer}" fill="#4b5563" font-size="11">targets: {passed} PASS, '
        f"{missed} MISS (bench/README.md says what each means)</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
