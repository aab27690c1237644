"""(k) ``actwh serve`` under load: concurrent clients over random neuron and prompt pages.

The server runs as a user runs it (``actwh serve WH --port P --workers W``, its own processes;
W is this machine's cores unless ``--workers`` says); ``--clients`` threads (20) each fetch, for
``--seconds`` (60), a random neuron page (any layer, any neuron of the base run's model) or a
random prompt page (any prompt of the base run or of its teacher-forced pair), one after
another, waiting ``--pause`` seconds (0) after each answer. Recorded: requests, errors, p50 / p95
/ max latency per kind, and the servers' resident memory (all processes) a tenth of the way in
and at the end (flat: no growth per request).

Goal (issue 42): p95 ≤ 300 ms on this machine, no errors, memory flat.
Run: ``python -m bench.serve demo-out/wh [--pause 1]``.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import actwh
from bench.report import record, table


def process_tree(pid: int) -> list[int]:
    """Process ``pid`` and its descendants (the server's workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid] + [p for child in children for p in process_tree(int(child))]


def rss_mb(pid: int) -> float:
    """The resident memory of process ``pid`` and its workers, in MB."""
    total = 0.0
    for each in process_tree(pid):
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` and its workers, in seconds."""
    total = 0.0
    for each in process_tree(pid):
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def pages(warehouse: str) -> tuple[list[str], list[str]]:
    """Every neuron page of the base run's model and every prompt page of the pair's runs."""
    with actwh.open(warehouse) as wh:
        pair = wh.sql(
            "select r.source_run as base, r.name as tuned from runs r join runs s "
            "on s.name = r.source_run where r.mode = 'teacher_forced' and r.model <> s.model "
            "order by r.created_at limit 1"
        ).row(0, named=True)
        model, layers, width = wh.sql(
            "select m.name, m.n_layers, m.d_mlp from runs r join models m on m.name = r.model "
            "where r.name = $r",
            {"r": pair["base"]},
        ).row(0)
        prompts = wh.sql("select prompt from generations where run = $r", {"r": pair["base"]})
    neurons = [f"/neuron/{model}/{layer}/{n}" for layer in range(layers) for n in range(width)]
    views = [f"/prompt/{run}/{p}" for run in pair.values() for p in prompts["prompt"]]
    return neurons, views


def load(
    base: str,
    neurons: list[str],
    views: list[str],
    clients: int,
    seconds: float,
    pause: float = 0.0,
    at_tenth=None,
) -> tuple[dict[str, list[float]], list[str]]:
    """``clients`` threads fetching random pages for ``seconds``, each waiting ``pause`` s after
    an answer: latencies by kind, errors."""
    results: dict[str, list[float]] = {"neuron": [], "prompt": []}
    errors: list[str] = []
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def client(seed: float) -> None:
        mine = random.Random(seed)
        while time.monotonic() < stop:
            kind = mine.choice(("neuron", "prompt"))
            path = mine.choice(neurons if kind == "neuron" else views)
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(base + path, timeout=60) as answer:
                    answer.read()
                    ok = answer.status == 200
            except OSError as error:
                ok, path = False, f"{path}: {error}"
            with lock:
                if ok:
                    results[kind].append(time.perf_counter() - started)
                else:
                    errors.append(path)
            time.sleep(pause)

    rng = random.Random(clients)
    threads = [threading.Thread(target=client, args=(rng.random(),)) for _ in range(clients)]
    for t in threads:
        t.start()
    time.sleep(seconds / 10)
    if at_tenth is not None:
        at_tenth()
    for t in threads:
        t.join()
    return results, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("warehouse")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--pause", type=float, default=0.0, help="each client's wait per page")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    neurons, views = pages(args.warehouse)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    actwh_cli = str(Path(sys.executable).with_name("actwh"))
    server = subprocess.Popen(
        [actwh_cli, "serve", args.warehouse, "--port", str(port), "--workers", str(args.workers)],
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/", timeout=5).close()
                break
            except OSError:
                time.sleep(0.2)
        for _ in range(4 * args.workers):  # each worker's FAISS index and readout
            urllib.request.urlopen(base + neurons[0], timeout=60).close()
        alone, _ = load(base, neurons, views, 1, args.seconds / 6)
        early: list[float] = []
        cpu_before = cpu_seconds(server.pid)
        results, errors = load(
            base,
            neurons,
            views,
            args.clients,
            args.seconds,
            args.pause,
            lambda: early.append(rss_mb(server.pid)),
        )
        late = rss_mb(server.pid)
        cpu = cpu_seconds(server.pid) - cpu_before
    finally:
        server.terminate()
        server.wait(timeout=30)
    rows = []
    for kind, times in results.items():
        ms = sorted(t * 1000 for t in times)
        rows.append(
            {
                "pages": kind,
                "requests": len(ms),
                "p50 ms": f"{statistics.median(ms):.0f}",
                "p95 ms": f"{ms[int(0.95 * (len(ms) - 1))]:.0f}",
                "max ms": f"{ms[-1]:.0f}",
            }
        )
    every = sorted(t * 1000 for times in results.values() for t in times)
    rate = len(every) / args.seconds
    p95 = every[int(0.95 * (len(every) - 1))]
    clients = f"{args.clients} clients" + (
        f" waiting {args.pause:g} s after each page" if args.pause else " that never pause"
    )
    body = (
        f"{clients}, for {args.seconds:g} s, over {len(neurons):,} neuron pages and "
        f"{len(views)} prompt pages; `actwh serve --workers {args.workers}`.\n\n"
        + table(rows)
        + f"\n\nAll pages: p95 {p95:.0f} ms (goal ≤ 300 ms: {'met' if p95 <= 300 else 'NOT met'}); "
        f"{len(errors)} errors{(' (first: ' + errors[0] + ')') if errors else ''}; servers' memory "
        f"{early[0]:.0f} MB after {args.seconds / 10:g} s, {late:.0f} MB at the end. One client "
        f"alone ({args.seconds / 6:g} s): neuron pages p50 {_p50(alone['neuron'])} ms, prompt "
        f"pages {_p50(alone['prompt'])} ms. Throughput {rate:.1f} pages/s; the servers used "
        f"{cpu / max(len(every), 1) * 1000:.0f} ms of CPU per page ({cpu / args.seconds:.2f} "
        f"cores of {os.cpu_count()}; the clients use the rest). By Little's law, {args.clients} "
        f"clients at {rate:.1f} pages/s wait {args.clients / rate - args.pause:.2f} s a page on "
        "average, however the server orders its queue."
    )
    key = "serve" if not args.pause else "serve-pause"
    record(key, f"(k) actwh serve under load: random neuron and prompt pages, {clients}", body)
    print(body)


def _p50(times: list[float]) -> str:
    return f"{statistics.median(times) * 1000:.0f}" if times else "-"


if __name__ == "__main__":
    main()
