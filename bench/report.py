"""The printed report of a run: one section a scenario (`SECTIONS`), then the targets (`bench.targets`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from bench import masking
from bench.common import fixed
from bench.targets import AIRFLOW_TRIGGER, OURS

__all__ = ["SECTIONS", "render", "table"]


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> str:
    """A plain text table; `align` is one letter per column, `l` or `r` (default: first l, others r)."""
    body = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    align = align or "l" + "r" * (len(headers) - 1)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(list(headers)), rule, *(line(r) for r in body)])


def render(results: Mapping[str, Any]) -> str:
    """The printed report: one section a scenario that ran (see `SECTIONS`), then the targets."""
    return "\n".join(line for section in SECTIONS for line in section(results))


def _render_header(results: Mapping[str, Any]) -> list[str]:
    machine = results["machine"]
    load = ", ".join(f"{x:.2f}" for x in machine["load_average"] or [])
    return [
        f"airflow-custom-token bench, {results['timestamp']}{' (quick)' if results['quick'] else ''}",
        f"{machine['cpu_model']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"Python {machine['python']}, load average {load}",
        f"server: {results['server']['kind']} ({results['server']['description']}), own process, 127.0.0.1",
        "",
    ]


def _render_per_request(results: Mapping[str, Any]) -> list[str]:
    """Section 1: the cost of one authenticated request, per client."""
    per_request = results.get("per_request")
    if not per_request:
        return []
    proxy = per_request.get("proxy_check") or {}
    rows = [
        [
            r["client"],
            fixed(r["wall_us"]),
            fixed(r["cpu_us"]),
            f"{r['cpu_ratio']:.2f}x",
            f"{r['wall_ratio']:.2f}x",
            "-" if r["env_lookups_per_request"] is None else f"{r['env_lookups_per_request']:.2f}",
            f"{proxy[r['client']]}/{proxy['requests']}" if r["client"] in proxy else "-",
        ]
        for r in per_request["rows"]
    ]
    headers = [
        "client",
        "wall us",
        "CPU us",
        "CPU/floor",
        "wall/floor",
        "env lookups/req",
        "via HTTP_PROXY",
    ]
    return [
        f"1. Per-request cost: {per_request['n']} authenticated GETs per round, median of "
        f"{per_request['rounds']} interleaved rounds, after {per_request['warmup']} warm-up requests",
        table(headers, rows),
        "   CPU: client process time (the server runs in its own process). env lookups/req: calls to",
        "   requests' proxy and .netrc helpers per request. via HTTP_PROXY: requests that went through a",
        "   loopback proxy named in HTTP_PROXY (urllib3 and http.client never read the environment).",
        "",
    ]


def _render_token_requests(results: Mapping[str, Any]) -> list[str]:
    """Section 2: token requests of many processes and threads, per refresh margin."""
    token_rows = results.get("token_requests")
    if not token_rows:
        return []
    first = token_rows[0]
    rows = [
        [
            f"refresh_margin {r['refresh_margin_s']:g} s" + ("" if r.get("is_target") else " (default)"),
            r["data_requests"],
            r["token_requests"],
            f"{r['lifetimes_elapsed']:.0f}",
            f"{r['token_requests_per_lifetime']:.2f}",
            f"{r['refresh_interval_s']:g} s",
            r["fewest_possible"],
            fixed(r["min_gap_s"], 2),
            r["server_rejected"],
        ]
        for r in token_rows
    ]
    headers = [
        "setting",
        "data requests",
        "token requests",
        "lifetimes",
        "per lifetime",
        "refresh every",
        "fewest possible",
        "min gap s",
        "401s",
    ]
    return [
        f"2. Token requests: {first['processes']} processes x {first['threads']} threads, "
        f"hook.run() in a loop for {first['duration_s']:.0f} s, "
        f"token lifetime {first['lifetime_s']:g} s, host cache on",
        table(headers, rows),
        "   refresh every: lifetime less min(refresh_margin, lifetime / 2); fewest possible: the token",
        "   requests that interval allows in the run; min gap: shortest time between two token requests.",
        "",
    ]


def _render_get_token(results: Mapping[str, Any]) -> list[str]:
    """Section 3: get_token() from the caches, and its first call in a new process."""
    get_token = results.get("get_token")
    if not get_token:
        return []
    rows = [
        [
            "warm process cache",
            f"{get_token['process_cache_us']:.2f}",
            f"{get_token['process_cache_p90_us']:.2f}",
        ],
        [
            "warm host cache (process cache cleared)",
            f"{get_token['host_cache_us']:.0f}",
            f"{get_token['host_cache_p90_us']:.0f}",
        ],
    ]
    for label, key in (
        ("", "first_call"),
        (", requests already imported", "first_call_requests_imported"),
    ):
        first = get_token.get(key)
        if first:
            rows.append(
                [
                    f"first call in a new process{label}",
                    f"{first['first_us']:.0f}",
                    f"imports {', '.join(first['imported']) or 'none'}",
                ]
            )
    return ["3. get_token()", table(["case", "median us", "p90 us / note"], rows), ""]


def _render_imports(results: Mapping[str, Any]) -> list[str]:
    """Section 4: import time of our modules over an imported airflow.sdk."""
    imports = results.get("imports")
    if not imports:
        return []
    runs = results["parameters"]["import_runs"]
    out = [f"4. Import time over an imported airflow.sdk (median of {runs} fresh interpreters each)"]
    rows = []
    for r in imports:
        if not r["present"]:
            rows.append([r["module"], "-", "-", r["error"][:60], "-"])
            continue
        biggest = ", ".join(f"{b['module']} {b['cumulative_ms']:.0f}" for b in r["biggest_new_imports"][:3])
        rows.append(
            [
                r["module"],
                f"{r['median_ms']:.1f}"
                + ("" if len(r["samples_ms"]) == runs else f" ({len(r['samples_ms'])} runs)"),
                r["new_modules"],
                ", ".join(r["heavy_newly_imported"]) or "none",
                biggest or "-",
            ]
        )
    out.append(
        table(["module", "ms", "new modules", "heavy, newly imported", "biggest direct imports, ms"], rows)
    )
    sdk = imports[0].get("heavy_already_imported_by_sdk") if imports[0]["present"] else None
    if sdk:
        out.append(f"   already imported by airflow.sdk itself: {', '.join(sdk)}")
    out.append("")
    return out


def _render_deferrable(results: Mapping[str, Any]) -> list[str]:
    """Section 5: many sensor triggers in one event loop, ours and the http provider's."""
    deferrable = results.get("deferrable")
    if not deferrable:
        return []
    first = deferrable[0]
    rows = [
        [
            _deferrable_label(r),
            r["token_requests"],
            r["api_requests"],
            f"{r['elapsed_s']:.2f}",
            fixed(r.get("cpu_per_poke_us")),
            f"{r['loop_cpu_per_api_request_us']:.0f}",
            f"{r['median_lag_ms']:.1f}",
            f"{r['p99_lag_ms']:.1f}",
            f"{r['max_lag_ms']:.0f} @ {r['max_lag_at_s']:.2f}s",
            f"{r['longest_callback_ms']:.0f} / {r['longest_callback_cpu_ms']:.0f}",
            f"{r['memory_per_trigger_kib']:.1f}" if "memory_per_trigger_kib" in r else "-",
            ", ".join(f"{k}: {v}" for k, v in r["outcomes"].items()),
        ]
        for r in deferrable
    ]
    headers = [
        "run",
        "token req",
        "API req",
        "done in s",
        "CPU us/poke",
        "loop CPU us/poke",
        "lag p50 ms",
        "p99 ms",
        "max lag ms",
        "longest callback ms / CPU",
        "KiB/trigger",
        "outcomes",
    ]
    out = [
        f"5. Deferrable: {first['triggers']} sensor triggers in one event loop, "
        f"report ready after {first['ready_after_s']:g} s, poke every {first['poke_interval_s']:g} s; "
        f"{OURS} and, in the same run, the http provider's {AIRFLOW_TRIGGER} (fixed header)",
        table(headers, rows, "lrrrrrrrrrrl"),
        "   lag: how late a 10 ms ticker wakes (every callback queued ahead of it, and OS scheduling);",
        "   CPU us/poke: process CPU (every thread) per API request the server saw; loop CPU: the loop",
        "   thread's alone. longest callback: one piece of code holding the loop (wall / CPU).",
        "   KiB/trigger: peak resident memory while the triggers wait, less before they started.",
    ]
    for r in deferrable:
        if r["stalls"]:
            out.append(f"   where the loop stalled ({_deferrable_label(r)}; sampled stacks, ms):")
            out += [f"     {s['ms']:6.1f} ms  {s['where']}" for s in r["stalls"][:5]]
    out.append("")
    return out


def _deferrable_label(r: Mapping[str, Any]) -> str:
    trigger = r.get("trigger", OURS)
    label = trigger + (f", round {r['round'] + 1}" if "round" in r else "")
    if r.get("preimported"):
        label += ", preimported: " + ", ".join(r["preimported"])
    if r.get("stagger_s"):
        label += f", started over {r['stagger_s']:g} s"
    return label


def _render_shared_cache(results: Mapping[str, Any]) -> list[str]:
    """Section 6: the shared cache (Redis) across simulated hosts, skipped without Redis."""
    shared = results.get("shared_cache") or {}
    if not shared:
        return []
    if shared.get("skipped"):
        return [f"6. Shared cache (Redis): skipped, {shared['skipped']}", ""]
    return [
        *_render_shared_load(shared.get("load") or []),
        *_render_shared_warm(shared.get("warm")),
        *_render_shared_deferrable(shared.get("deferrable")),
        "",
    ]


def _render_shared_load(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    if not rows:
        return []
    first = rows[0]
    table_rows = [
        [
            "single-active-token API" if r["single_active"] else "tokens live side by side",
            "on" if r["shared_cache"] else "off",
            r["data_requests"],
            r["token_requests"],
            r["fewest_possible"],
            r["api_401s"],
            r["retried_after_401"],
            r["failed"],
        ]
        for r in rows
    ]
    headers = [
        "API",
        "shared cache",
        "data requests",
        "token requests",
        "fewest possible",
        "401 answers",
        "retried after 401",
        "failed",
    ]
    return [
        f"6. Shared cache (Redis): {first['hosts']} hosts x {first['processes']} processes, "
        f"hook.run() in a loop for {first['duration_s']:g} s, token lifetime {first['lifetime_s']:g} s "
        f"(refresh every {first['refresh_interval_s']:g} s), demo API",
        table(headers, table_rows, "llrrrrrr"),
        "   401 answers: what the API sent; retried after 401: requests that succeeded after the",
        "   refresh-once retry; failed: requests whose final answer was not 200.",
    ]


def _render_shared_warm(warm: Mapping[str, Any] | None) -> list[str]:
    if not warm:
        return []
    rows = [
        [
            "process and host caches cleared (Redis read, host file written)",
            f"{warm['shared_cache_us']:.0f}",
            f"{warm['shared_cache_p90_us']:.0f}",
            fixed(warm.get("shared_cache_cpu_us")),
        ],
        [
            "host cache off (Redis read only)",
            f"{warm['shared_only_us']:.0f}",
            f"{warm['shared_only_p90_us']:.0f}",
            fixed(warm.get("shared_only_cpu_us")),
        ],
        ["one Redis GET round trip, for comparison", f"{warm['redis_get_us']:.0f}", "-", "-"],
    ]
    return [
        f"   get_token() from the shared cache, {warm['calls']} calls each:",
        table(["case", "median us", "p90 us", "CPU us"], rows),
    ]


def _render_shared_deferrable(row: Mapping[str, Any] | None) -> list[str]:
    if not row:
        return []
    return [
        f"   Deferrable with the shared cache: {row['triggers']} sensor triggers in one event loop: "
        f"{row['token_requests']} token request(s), {row['api_requests']} API requests in "
        f"{row['elapsed_s']:.1f} s, max lag {row['max_lag_ms']:.0f} ms at {row['max_lag_at_s']:.2f} s "
        f"(after the first second {row['max_lag_after_first_second_ms']:.0f} ms), "
        f"{row['memory_per_trigger_kib']:.1f} KiB per waiting trigger"
    ]


def _render_masking(results: Mapping[str, Any]) -> list[str]:
    """Section 7, in `bench.masking` beside its scenario."""
    return masking.render(results.get("masking") or [], table)


def _render_targets(results: Mapping[str, Any]) -> list[str]:
    """Every target of `evaluate`, met or missed."""
    rows = [
        [t["name"], t["target"], t["measured"], {True: "met", False: "MISSED", None: "n/a"}[t["met"]]]
        for t in results["targets"]
    ]
    return ["Targets", table(["what", "target", "measured", ""], rows, "llll")]


#: The report's sections in order; each returns its lines ([] when its scenario did not run).
SECTIONS: tuple[Callable[[Mapping[str, Any]], list[str]], ...] = (
    _render_header,
    _render_per_request,
    _render_token_requests,
    _render_get_token,
    _render_imports,
    _render_deferrable,
    _render_shared_cache,
    _render_masking,
    _render_targets,
)
