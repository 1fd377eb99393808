"""Machine facts, the terminal table, the JSON file and the PNG chart."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

__all__ = ["chart", "goals_table", "machine_info", "table"]


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
            check=False,
        )
    except OSError:
        return None
    return out.stdout.strip() or None


async def machine_info(client: Any) -> dict[str, Any]:
    import promptkit_async
    from promptkit_async import _codec

    server = await client.info("server")
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "promptkit_async": promptkit_async.__version__,
        "git_commit": _git_commit(),
        "redis_py": _version("redis"),
        "hiredis": _version("hiredis"),
        "redis_server": server.get("redis_version"),
        "httpx": _version("httpx"),
        "orjson": _version("orjson"),
        "msgspec": _version("msgspec"),
        # The library's hot-path record parser: msgspec with the ``fast`` extra.
        "record_decoder": "stdlib json"
        if getattr(_codec, "_fast_loads", None) is None
        else ("msgspec (fast extra)"),
        "openai-agents": _version("openai-agents"),
        "llama-index-storage-chat-store-redis": _version("llama-index-storage-chat-store-redis"),
    }


def _fmt(x: Any, digits: int = 0) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def _rows(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def table(results: dict[str, Any]) -> str:
    """The results as plain-text tables (also pasted into the README)."""
    parts: list[str] = []
    m = results["machine"]
    parts.append(
        f"{m['date']}  {m['cpu']} ({m['cores']} cores)  Python {m['python']}  "
        f"redis-py {m['redis_py']}  hiredis {m['hiredis']}  Redis {m['redis_server']}"
    )
    turns = results.get("turns")
    if turns:
        parts.append("\nTurn latency, sequential (" + turns["definition"] + ")")
        rows = []
        for name, s in turns["latency"].items():
            trips = turns["round_trips"].get(name, {})
            rows.append(
                [
                    name,
                    _fmt(s["min_us"]),
                    _fmt(s["p50_us"]),
                    _fmt(s["p99_us"]),
                    _fmt(s.get("ratio_to_floor_p50"), 2),
                    _fmt(s.get("paired_ratio_to_floor"), 2),
                    _fmt(s.get("ratio_to_ping_p50"), 1),
                    _fmt(s.get("ratio_to_ours_p50"), 2),
                    _fmt(trips.get("round_trips")),
                    _fmt(trips.get("server_commands")),
                ]
            )
        parts.append(
            _rows(
                [
                    "contestant",
                    "min µs",
                    "p50 µs",
                    "p99 µs",
                    "x floor",
                    "x floor (paired)",
                    "x PING",
                    "x ours",
                    "round trips",
                    "server cmds",
                ],
                rows,
            )
        )
        mixed = turns.get("latency_with_peers") or {}
        if mixed:
            ours = mixed["promptkit_async"]
            parts.append(
                "  peers run in a second interleaved set with floor and promptkit_async; their "
                "ratios come from it (promptkit_async there: "
                f"{ours['p50_us']:.0f} µs p50, x{ours['ratio_to_floor_p50']:.2f} floor)"
            )
        for name, s in (turns.get("latency_sqlite") or {}).items():
            parts.append(
                f"  {name}, a file in a temp dir: {_fmt(s.get('p50_us'))} µs p50, "
                f"{_fmt(s.get('p99_us'))} µs p99 (its own interleaved set)"
            )
        for name, reason in {
            **turns.get("peers_missing", {}),
            **turns.get("peers_not_runnable", {}),
        }.items():
            parts.append(f"  not run: {name}: {reason}")
    scaling = results.get("scaling")
    if scaling:
        parts.append("\nConcurrency: C sessions, one turn each, started at once")
        rows = []
        for level, by in scaling["concurrency"].items():
            for name, s in by.items():
                lat = s["turn_latency"]
                rows.append(
                    [
                        f"C={level} {name}",
                        _fmt(s["turns_per_s"]),
                        _fmt(s.get("throughput_ratio_to_floor"), 2),
                        _fmt(lat.get("p50_us")),
                        _fmt(lat.get("p99_us")),
                    ]
                )
        one = scaling["one_session"]
        for name, s in one["results"].items():
            lat = s["turn_latency"]
            rows.append(
                [
                    f"{one['requests']} on ONE session {name}",
                    _fmt(s["turns_per_s"]),
                    _fmt(s.get("throughput_ratio_to_floor"), 2),
                    _fmt(lat.get("p50_us")),
                    _fmt(lat.get("p99_us")),
                ]
            )
        parts.append(_rows(["scenario", "turns/s", "x floor", "p50 µs", "p99 µs"], rows))
        parts.append("\nHistory length x window (sequential turn, p50 µs)")
        rows = []
        for cell in scaling["history_window"].values():
            names = [k for k in cell if k not in ("history", "window")]
            rows.append(
                [f"history {cell['history']}, window {cell['window']}"]
                + [_fmt(cell[n]["p50_us"], 1 if "Memory" in n else 0) for n in names]
            )
        first = next(iter(scaling["history_window"].values()))
        parts.append(_rows(["", *[k for k in first if k not in ("history", "window")]], rows))
        kept = scaling.get("retention")
        if kept:
            parts.append(
                f"\nRetention: the same session turn after turn, window {kept['window']} (µs)"
            )
            rows = [
                [name, _fmt(s["p50_us"], 1), _fmt(s["p99_us"], 1), _fmt(s["kept"])]
                for name, s in kept.items()
                if isinstance(s, dict)
            ]
            parts.append(_rows(["session", "p50", "p99", "messages kept"], rows))
    streaming = results.get("streaming")
    if streaming and "skipped" not in streaming:
        parts.append("\nStreaming from a local SSE server (p50 µs)")
        rows = []
        for tokens, s in streaming.items():
            if not isinstance(s, dict) or "httpx" not in s:
                continue
            rows.append(
                [
                    f"{tokens} tokens",
                    _fmt(s["httpx"]["ttft"]["p50_us"]),
                    _fmt(s["promptkit_async"]["ttft"]["p50_us"]),
                    _fmt(s["httpx"]["total"]["p50_us"]),
                    _fmt(s["promptkit_async"]["total"]["p50_us"]),
                    _fmt(s["added_total_p50_us"]),
                ]
            )
        parts.append(
            _rows(
                ["reply", "httpx TTFT", "session TTFT", "httpx total", "session total", "added"],
                rows,
            )
        )
        if "added_per_token_us" in streaming:
            parts.append(
                f"  added cost: {streaming['added_per_turn_us']:.0f} µs per turn + "
                f"{streaming['added_per_token_us']:.2f} µs per token"
            )
    elif streaming:
        parts.append(f"\nStreaming: skipped ({streaming['skipped']})")
    corr = results.get("correctness")
    if corr:
        parts.append(
            f"\nCorrectness: {corr['turns']} concurrent turns on one session "
            f"({corr['think_s'] * 1000:.0f} ms model call each)"
        )
        rows = [
            [name, *(str(r[k]) for k in ("lost", "duplicated", "interleaved", "overlapping"))]
            for name, r in corr["results"].items()
        ]
        parts.append(
            _rows(
                ["contestant", "lost", "duplicated", "interleaved pairs", "overlapping turns"], rows
            )
        )
    codec = results.get("codec")
    if codec:
        parts.append(
            f"\nSerialization of a {codec['window']}-message window "
            f"({codec['message_chars']} chars each), p50 µs"
        )
        c = codec["codec"]
        rows = []
        for name in codec["encode_plus_decode_p50_us"]:
            if name == "library":
                rows.append(
                    [
                        "library today (json)",
                        "-",
                        "-",
                        _fmt(c["library encode"]["p50_us"], 1),
                        _fmt(c["library decode"]["p50_us"], 1),
                        _fmt(codec["encode_plus_decode_p50_us"][name], 1),
                    ]
                )
            else:
                rows.append(
                    [
                        name,
                        _fmt(c[f"{name} bare encode"]["p50_us"], 1),
                        _fmt(c[f"{name} bare decode"]["p50_us"], 1),
                        _fmt(c[f"{name} whole encode"]["p50_us"], 1),
                        _fmt(c[f"{name} whole decode"]["p50_us"], 1),
                        _fmt(codec["encode_plus_decode_p50_us"][name], 1),
                    ]
                )
        parts.append(
            _rows(["codec", "bare enc", "bare dec", "Message enc", "Message dec", "enc+dec"], rows)
        )
        above = next(iter(codec["compression"].values()))["compress_above"]
        parts.append(f"\nzlib (compress_above={above}), p50 µs")
        rows = []
        for z in codec["compression"].values():
            load = z["load"]
            cpu = z["cpu_per_message"]
            rows.append(
                [
                    f"{z['messages']} x {z['chars_per_message']} chars",
                    f"{z['bytes_saved_pct']:.0f}%",
                    _fmt(load["plain load(20)"]["p50_us"]) if "plain load(20)" in load else "-",
                    _fmt(load["zlib load(20)"]["p50_us"]) if "zlib load(20)" in load else "-",
                    _fmt(load["plain load(all)"]["p50_us"]),
                    _fmt(load["zlib load(all)"]["p50_us"]),
                    _fmt(cpu["encode zlib"]["p50_us"] - cpu["encode plain"]["p50_us"], 1),
                    _fmt(cpu["decode zlib"]["p50_us"] - cpu["decode plain"]["p50_us"], 1),
                ]
            )
        parts.append(
            _rows(
                [
                    "history",
                    "saved",
                    "load(20)",
                    "zlib load(20)",
                    "load(all)",
                    "zlib load(all)",
                    "+enc/msg",
                    "+dec/msg",
                ],
                rows,
            )
        )
    cache = (results.get("turns") or {}).get("near_cache")
    if cache and "skipped" not in cache:
        parts.append("\nSteady state: the same session turn after turn (no re-seeding)")
        rows = [
            [
                name,
                _fmt(s["p50_us"]),
                _fmt(s["p99_us"]),
                _fmt(s["paired_ratio_to_floor"], 2),
                _fmt(s["round_trips"]),
            ]
            for name, s in cache.items()
        ]
        parts.append(
            _rows(["contestant", "p50 µs", "p99 µs", "x floor (paired)", "round trips"], rows)
        )
    elif cache:
        parts.append(f"\nNear cache: {cache['skipped']}")
    by_codec = (results.get("codec") or {}).get("turns")
    if by_codec:
        parts.append(
            "\nThe RedisStore turn with each codec in promptkit_async._codec (one interleaved "
            "set with the floor)"
        )
        rows = []
        for name, s in by_codec["latency"].items():
            change = by_codec["by_codec"].get(name, {})
            rows.append(
                [
                    name,
                    _fmt(s["p50_us"]),
                    _fmt(s["p99_us"]),
                    _fmt(s["paired_ratio_to_floor"], 3),
                    _fmt(change.get("difference_to_json"), 3),
                    _fmt(change.get("paired_ratio_to_json"), 3),
                ]
            )
        parts.append(
            _rows(
                ["codec", "p50 µs", "p99 µs", "x floor (paired)", "- json turn", "x json turn"],
                rows,
            )
        )
        parts.append(_identity_lines(by_codec["identity"]))
    decoders = results.get("decoders")
    if decoders:
        parts.append(
            "\nStream decoders on one long line (time for 4x the input / time for 1x: "
            "4.0 is linear)"
        )
        rows = [
            [
                c["decoder"],
                _fmt(c["line_bytes"]),
                _fmt(c["chunk_bytes"]),
                _fmt(c["seconds"], 3),
                _fmt(c["mib_per_s"], 1),
                _fmt(c["ratio_4x_input"], 2),
            ]
            for c in decoders["cases"]
        ]
        parts.append(
            _rows(["decoder", "line bytes", "chunk bytes", "s", "MiB/s", "x for 4x input"], rows)
        )
    goals = results.get("goals")
    if goals:
        parts.append(goals_table(goals))
    return "\n".join(parts)


def _identity_lines(identity: dict[str, Any]) -> str:
    lines = []
    for name, real in identity.get("real_turn", {}).items():
        data = identity["turn_data"][name]
        edge = identity["edge_cases"][name]
        same = (
            "identical" if real["payloads_identical"] and data["bytes_identical"] else "DIFFERENT"
        )
        read = (
            "identical" if real["decoded_identical"] and data["decoded_identical"] else "DIFFERENT"
        )
        lines.append(
            f"  {name}: the turn's stored bytes {same}, decoded messages {read}; edge cases "
            f"whose bytes differ: {', '.join(edge['bytes_differ']) or 'none'}; whose decoding "
            f"differs: {', '.join(edge['decoded_differ']) or 'none'}"
        )
    return "\n".join(lines)


def _range(e: dict[str, Any], digits: int) -> str:
    if e["min"] is None:
        return "-"
    return f"{e['min']:.{digits}f} to {e['max']:.{digits}f}"


def goals_table(goals: dict[str, Any]) -> str:
    """The goals: each figure's median and range over the runs, the goal, met or not."""
    n = goals["runs"]
    rows = []
    for key, e in goals["goals"].items():
        digits = (
            0 if "round_trips" in key else 1 if key.endswith("_us") else 3 if "codec" in key else 2
        )
        if "decision" in e:
            status = e["decision"] or "-"
        elif e["met"] is None:
            status = "-" if e["target"] == "-" else "no data"
        else:
            status = "met" if e["met"] else "NOT met"
        rows.append(
            [
                f"{e['goal']}. {e['label']}",
                "-" if e["median"] is None else f"{e['median']:.{digits}f}",
                _range(e, digits),
                e["target"],
                status,
            ]
        )
    head = f"\nGoals: median and range (min-max) over {n} run{'s' if n != 1 else ''}"
    return "\n".join([head, _rows(["figure", "median", "range", "goal", "status"], rows)])


def chart(results: dict[str, Any], path: Path) -> str | None:
    """Latency and throughput vs concurrency, latency vs history; a note if no chart."""
    try:
        import matplotlib  # type: ignore[import-not-found,unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no chart"
    scaling = results.get("scaling")
    if not scaling:
        return "no scaling results: no chart"
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    levels = [int(c) for c in scaling["concurrency"]]
    names = list(next(iter(scaling["concurrency"].values())))
    ax = axes[0]
    for name in names:
        p50 = [
            scaling["concurrency"][str(c)][name]["turn_latency"]["p50_us"] / 1000 for c in levels
        ]
        p99 = [
            scaling["concurrency"][str(c)][name]["turn_latency"]["p99_us"] / 1000 for c in levels
        ]
        (line,) = ax.plot(levels, p50, marker="o", label=f"{name} p50")
        ax.plot(
            levels, p99, marker="x", linestyle="--", color=line.get_color(), label=f"{name} p99"
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("concurrent sessions")
    ax.set_ylabel("turn latency (ms)")
    ax.set_title("Latency vs concurrency")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    ax = axes[1]
    for name in names:
        tps = [scaling["concurrency"][str(c)][name]["turns_per_s"] for c in levels]
        ax.plot(levels, tps, marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("concurrent sessions")
    ax.set_ylabel("turns / s")
    ax.set_title("Throughput vs concurrency")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    ax = axes[2]
    grid = scaling["history_window"]
    histories = sorted({cell["history"] for cell in grid.values()})
    windows = sorted({cell["window"] for cell in grid.values()})
    styles = {"floor": "--", "promptkit_async": "-"}
    for name, style in styles.items():
        for w in windows:
            ys = [grid[f"h{h}_w{w}"][name]["p50_us"] for h in histories]
            ax.plot(histories, ys, marker="o", linestyle=style, label=f"{name}, window {w}")
    ax.set_xscale("log")
    ax.set_xlabel("stored history (messages)")
    ax.set_ylabel("turn latency p50 (µs)")
    ax.set_title("Latency vs history length (Redis)")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    m = results["machine"]
    fig.suptitle(
        f"promptkit_async {m['promptkit_async']} - {m['date'][:10]} - "
        f"{m['cpu']} ({m['cores']} cores), Python {m['python']}, "
        f"redis-py {m['redis_py']}, Redis {m['redis_server']}",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
