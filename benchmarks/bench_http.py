"""HTTP service load on loopback: box requests/s at saturation and latency at a fixed
rate, against `similar-articles serve` on an index you give.

    .venv/bin/python benchmarks/bench_http.py --index /tmp/bench100k/100000-auto --workers 2

Saturation is measured with wrk (Debian's `wrk`: C, so the load generator takes little
of the two cores the server shares with it), each request a random indexed id's box.
The fixed-rate run is an open-loop asyncio client on raw sockets (requests are sent on
schedule whether or not earlier ones have answered, so a slow server cannot slow the
clock and hide its queueing): p50/p99 at --rate requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_machine, print_table  # noqa: E402

WRK_SCRIPT = """
local ids = {}
for line in io.lines("%s") do ids[#ids + 1] = line end
math.randomseed(7)
request = function()
  return wrk.format("GET", "/v1/articles/" .. ids[math.random(#ids)] .. "/similar?k=2")
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index: str, port: int, workers: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "similar_articles.cli", "serve", "--index", index,
                                "--port", str(port), "--workers", str(workers)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    import httpx
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.5)
    raise SystemExit("the server did not become ready in 300 s")


def saturation(port: int, ids_file: str, seconds: int, connections: int) -> dict[str, float]:
    """wrk, 1 thread, ``connections`` keep-alive connections."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % ids_file)
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name,
                          f"http://127.0.0.1:{port}"], capture_output=True, text=True, check=True).stdout
    os.unlink(script.name)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
    return {"rps": rate, "p99_ms": float(p99.group(1)) * scale, "errors": int(errors.group(1)) if errors else 0}


async def fixed_rate(port: int, ids: list[str], rate: int, seconds: int, connections: int = 32) -> np.ndarray:
    """Open-loop: request i is due at i / rate; latency counts from when it was due."""
    rng = np.random.default_rng(11)
    total = rate * seconds
    queue: asyncio.Queue = asyncio.Queue()
    latencies: list[float] = []
    failures = [0]

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while True:
            due, article = await queue.get()
            if article is None:
                writer.close()
                return
            writer.write(f"GET /v1/articles/{article}/similar?k=2 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                failures[0] += 1
            latencies.append(time.perf_counter() - due)

    workers = [asyncio.create_task(connection()) for _ in range(connections)]
    start = time.perf_counter() + 0.1
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((due, ids[int(rng.integers(len(ids)))]))
    for _ in workers:
        queue.put_nowait((0, None))
    await asyncio.gather(*workers)
    if failures[0]:
        print(f"  {failures[0]} requests failed")
    return np.array(latencies) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", required=True, help="an index folder (e.g. one bench_recommend.py --keep made)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=16, help="wrk connections at saturation")
    parser.add_argument("--rate", type=int, default=1000, help="requests/s of the fixed-rate run")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk")
    from similar_articles import Recommender
    ids = Recommender.load(args.index, reload_interval=None).ids()
    sample = [ids[i] for i in np.random.default_rng(3).choice(len(ids), size=min(20_000, len(ids)), replace=False)]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as ids_file:
        ids_file.write("\n".join(sample))
    port = free_port()
    server = start_server(args.index, port, args.workers)
    try:
        saturation(port, ids_file.name, 3, args.connections)  # warm the page cache and the workers
        sat = saturation(port, ids_file.name, args.seconds, args.connections)
        ms = asyncio.run(fixed_rate(port, sample, args.rate, args.seconds))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        os.unlink(ids_file.name)
    print_machine("bench_http")
    print(f"index {args.index}: {len(ids):,} articles; {args.workers} workers; {args.seconds} s a run")
    print_table(["run", "requests/s", "p50 ms", "p99 ms", "non-2xx"], [
        [f"saturation (wrk, {args.connections} connections)", round(sat["rps"]), "", round(sat["p99_ms"], 2),
         sat["errors"]],
        [f"fixed rate {args.rate}/s (open loop)", round(len(ms) / args.seconds),
         round(float(np.percentile(ms, 50)), 2), round(float(np.percentile(ms, 99)), 2), ""],
    ])
    print(json.dumps({"saturation_rps": sat["rps"], "fixed_rate": args.rate,
                      "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}))


if __name__ == "__main__":
    main()
