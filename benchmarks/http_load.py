"""A bounded loopback load on `semshare serve`: N search requests at C concurrent, latency p50 / p99, errors.

Starts the service as a subprocess on a free loopback port, waits for /health, sends text queries (captions of
the index's dataset, cycled) and item queries alternately from one asyncio httpx client, then stops it.

  python benchmarks/http_load.py INDEX_DIR [--requests 2000 --concurrency 8 -k 10] [--out docs/http_load.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def load(url: str, bodies: list[dict], concurrency: int) -> tuple[list[float], list[str]]:
    import httpx

    latencies, errors = [], []
    queue: asyncio.Queue = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def worker(client):
        while not queue.empty():
            body = queue.get_nowait()
            started = time.perf_counter()
            try:
                response = await client.post(url + "/search", json=body)
                if response.status_code != 200 or not response.json()["results"]:
                    errors.append(f"{response.status_code}: {response.text[:200]}")
            except httpx.HTTPError as exc:
                errors.append(repr(exc))
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return latencies, errors


def main() -> None:
    import httpx

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index_dir", type=Path)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--out", default="docs/http_load.json")
    args = parser.parse_args()

    from semshare.data.dataset import open_dataset
    from semshare.data.text import as_sentence

    manifest = json.loads((args.index_dir / "manifest.json").read_text())
    dataset = open_dataset(manifest["data_dir"], check_values=False)
    rng = np.random.default_rng(0)
    rows = rng.integers(0, dataset.num_items, args.requests)
    bodies = [{"text": as_sentence(dataset.captions[int(r)][0]), "k": args.k} if i % 2 == 0
              else {"item_id": int(r), "k": args.k} for i, r in enumerate(rows)]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "semshare.cli", "serve", str(args.index_dir),
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise SystemExit("the service did not start: " + server.stderr.read().decode()[-2000:])
        started = time.perf_counter()
        latencies, errors = asyncio.run(load(url, bodies, args.concurrency))
        seconds = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    ms = 1000 * np.array(latencies)
    report = {"index": str(args.index_dir), "gallery_size": manifest["size"], "kind": manifest["kind"],
              "requests": len(latencies), "concurrency": args.concurrency, "k": args.k, "errors": len(errors),
              "error_examples": errors[:5], "p50_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)),
              "requests_per_s": len(latencies) / seconds, "wall_s": seconds}
    print(json.dumps(report, indent=2))
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
