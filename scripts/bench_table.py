#!/usr/bin/env python3
"""Summaries of the load tester's JSON reports, for scripts/bench.sh.

  bench_table.py show REPORT.json   one line about one run
  bench_table.py table DIR          the tables of every run in DIR, product vs
                                    floor side by side (files named
                                    <mode>-<transport>[-<subscribers>]-<product|floor>.json)
"""
import json
import os
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def cpu(report, key):
    return ((report or {}).get("server_cpu") or {}).get(key)


def num(value, digits=0):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def verdict(report):
    if report is None:
        return "no report"
    if "bytes_per_connection" in report:
        ok = (report["opened"] == report["asked"] and not report["failed"]
              and report["ended_early"] == 0)
    else:
        ok = (report["delivered"] == report["expected_deliveries"] and report["missing"] == 0
              and report["duplicates"] == 0 and not report["refused"])
    return "complete" if ok else "INCOMPLETE"


def show(path):
    r = load(path)
    if r is None:
        print(f"  (no report in {path})")
    elif "bytes_per_connection" in r:
        print(f"  {r['opened']} of {r['asked']} held, failed {r['failed']}, "
              f"ended early {r['ended_early']}: "
              f"{num((r['bytes_per_connection'] or 0) / 1024, 2)} KiB per connection "
              f"({verdict(r)})")
    else:
        print(f"  published {r['published']} ({num(r['publish_rate'])}/s), delivered "
              f"{r['delivered']} of {r['expected_deliveries']}, p99 "
              f"{num(r['delivery_latency_ms']['p99'], 1)} ms; server CPU "
              f"{num(cpu(r, 'cpu_seconds'), 2)} s: {num(cpu(r, 'deliveries_per_cpu_second'))} "
              f"deliveries/CPU-s, {num(cpu(r, 'cpu_us_per_message'), 1)} us/msg ({verdict(r)})")


def runs(directory):
    """{(mode, transport, subscribers): {side: report}}"""
    found = {}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json"):
            continue
        parts = name[:-5].split("-")
        mode, transport, side = parts[0], parts[1], parts[-1]
        subscribers = parts[2] if len(parts) == 4 else ""
        found.setdefault((mode, transport, subscribers), {})[side] = load(
            os.path.join(directory, name))
    return found


def ratio(product, floor):
    if product is None or floor is None or floor == 0:
        return "-"
    return f"{product / floor:.2f}"


def print_table(header, rows):
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for line in [header, ["-" * w for w in widths]] + rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths)) + " |")
    print()


def order(key):
    mode, transport, subscribers = key
    return (["longpoll", "sse", "ws"].index(transport) if transport in ["longpoll", "sse", "ws"]
            else 9, int(subscribers or 0))


def table(directory):
    found = runs(directory)
    by_mode = {}
    for key in sorted(found, key=order):
        by_mode.setdefault(key[0], []).append(key)

    if "compare" in by_mode:
        print("Deliveries per server CPU-second (product: service + Redis), product vs floor")
        rows = []
        for key in by_mode["compare"]:
            p, f = found[key].get("product"), found[key].get("floor")
            pd, fd = cpu(p, "deliveries_per_cpu_second"), cpu(f, "deliveries_per_cpu_second")
            rows.append([key[1], key[2], num(pd), num(fd), ratio(pd, fd),
                         num((p or {}).get("delivery_latency_ms", {}).get("p99"), 1),
                         num((f or {}).get("delivery_latency_ms", {}).get("p99"), 1),
                         f"{verdict(p)} / {verdict(f)}"])
        print_table(["transport", "subscribers", "product deliv/CPU-s", "floor deliv/CPU-s",
                     "ratio", "product p99 ms", "floor p99 ms", "verdict"], rows)

    if "publish" in by_mode:
        print("No subscribers: server CPU per published message")
        rows = []
        for key in by_mode["publish"]:
            p, f = found[key].get("product"), found[key].get("floor")
            procs = ", ".join(f"{u['name']} {u['cpu_seconds'] * 1e6 / max(p['published'], 1):.1f}"
                              for u in (cpu(p, "processes") or []))
            rows.append([key[1], num((p or {}).get("publish_rate")),
                         num(cpu(p, "cpu_us_per_message"), 1), procs or "-",
                         num((f or {}).get("publish_rate")), num(cpu(f, "cpu_us_per_message"), 1),
                         f"{verdict(p)} / {verdict(f)}"])
        print_table(["service", "product msg/s", "product us/msg", "of which (us/msg)",
                     "floor msg/s", "floor us/msg", "verdict"], rows)

    if "rooms" in by_mode:
        print("Small rooms, publishers as fast as answered")
        rows = []
        for key in by_mode["rooms"]:
            p, f = found[key].get("product"), found[key].get("floor")
            rows.append([key[1], f"{(p or f or {}).get('rooms', '-')} x "
                                 f"{((p or f or {}).get('subscribers', 0)) // max((p or f or {}).get('rooms', 1), 1)}",
                         num((p or {}).get("publish_rate")), num(cpu(p, "cpu_us_per_message"), 1),
                         num((p or {}).get("delivery_latency_ms", {}).get("p99"), 1),
                         num((f or {}).get("publish_rate")), num(cpu(f, "cpu_us_per_message"), 1),
                         f"{verdict(p)} / {verdict(f)}"])
        print_table(["transport", "rooms x subs", "product msg/s", "product us/msg",
                     "product p99 ms", "floor msg/s", "floor us/msg", "verdict"], rows)

    if "idle" in by_mode:
        print("Idle connections: server resident memory per connection")
        rows = []
        for key in by_mode["idle"]:
            p, f = found[key].get("product"), found[key].get("floor")

            def kib(r):
                b = (r or {}).get("bytes_per_connection")
                return "-" if b is None else f"{b / 1024:.2f}"

            def held(r):
                if r is None:
                    return "-"
                return f"{r['opened'] - r['ended_early']} of {r['asked']}"

            rows.append([key[1], held(p), kib(p), held(f), kib(f),
                         f"{verdict(p)} / {verdict(f)}"])
        print_table(["transport", "product held", "product KiB/conn", "floor held",
                     "floor KiB/conn", "verdict"], rows)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "show":
        show(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "table":
        table(sys.argv[2])
    else:
        sys.exit(__doc__)
