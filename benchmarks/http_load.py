"""A bounded loopback load on `semshare serve`: N search requests at C concurrent, latency p50 / p99, errors.

Starts the service as a subprocess on a free loopback port, waits for /health, sends text queries (captions of
the index's dataset, cycled) and item queries alternately from one asyncio httpx client, then stops it.

  python benchmarks/http_load.py INDEX_DIR [--requests 2000 --concurrency 8 -k 10] [--out docs/http_load.json]
  python benchmarks/http_load.py INDEX_DIR --concurrency 500 --compare-max-batch 1   # batched vs one at a time

With --compare-max-batch B the same load also runs against a server started with `--max-batch B` (one
query at a time for B = 1), in the same run, and the report gives both and their ratios.
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
    """`concurrency` keep-alive connections, each sending its share of the bodies one after the other.

    A minimal HTTP/1.1 client on asyncio streams: httpx's connection pool costs grow with the number of
    connections (measured here: /health alone fell from 1,035 requests/s at 8 connections to 90 at 500),
    which would make the client, not the server, the thing measured."""
    host, port = url.removeprefix("http://").split(":")
    latencies, errors = [], []
    queue: asyncio.Queue = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(json.dumps(body).encode())

    async def worker():
        reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 20)
        try:
            while not queue.empty():
                payload = queue.get_nowait()
                started = time.perf_counter()
                writer.write(b"POST /search HTTP/1.1\r\nhost: " + host.encode() + b"\r\ncontent-type: application/json"
                             b"\r\ncontent-length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
                await writer.drain()
                status, headers = await _read_head(reader)
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if status != 200 or not json.loads(body)["results"]:
                    errors.append(f"{status}: {body[:200]!r}")
                latencies.append(time.perf_counter() - started)
        except (OSError, asyncio.IncompleteReadError) as exc:
            errors.append(repr(exc))
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


async def _read_head(reader) -> tuple[int, dict]:
    status_line = await reader.readline()
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


def measure(index_dir: Path, bodies: list[dict], concurrency: int, serve_args: list[str]) -> dict:
    """Start `semshare serve` with `serve_args`, send the load, stop it; latency and error figures."""
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "semshare.cli", "serve", str(index_dir), "--port", str(port),
                               *serve_args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
        latencies, errors = asyncio.run(load(url, bodies, concurrency))
        seconds = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    ms = 1000 * np.array(latencies)
    return {"serve_args": serve_args, "errors": len(errors), "error_examples": errors[:5],
            "p50_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)),
            "requests_per_s": len(latencies) / seconds, "wall_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index_dir", type=Path)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--out", default="docs/http_load.json")
    parser.add_argument("--compare-max-batch", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="the server's torch threads (default: its cores)")
    args = parser.parse_args()

    from semshare.data.dataset import open_dataset
    from semshare.data.text import as_sentence

    from semshare.training.run_folder import recorded_path

    manifest = json.loads((args.index_dir / "manifest.json").read_text())
    dataset = open_dataset(recorded_path(args.index_dir, manifest, "data_dir"), check_values=False)
    rng = np.random.default_rng(0)
    rows = rng.integers(0, dataset.num_items, args.requests)
    bodies = [{"text": as_sentence(dataset.captions[int(r)][0]), "k": args.k} if i % 2 == 0
              else {"item_id": int(r), "k": args.k} for i, r in enumerate(rows)]
    report = {"index": str(args.index_dir), "gallery_size": manifest["size"], "kind": manifest["kind"],
              "requests": len(bodies), "concurrency": args.concurrency, "k": args.k,
              "default": measure(args.index_dir, bodies, args.concurrency, [] if not args.threads else
                                 ["--threads", str(args.threads)])}
    if args.compare_max_batch:
        other = measure(args.index_dir, bodies, args.concurrency, ["--max-batch", str(args.compare_max_batch)]
                        + ([] if not args.threads else ["--threads", str(args.threads)]))
        report[f"max_batch_{args.compare_max_batch}"] = other
        report["ratios_default_over_other"] = {
            key: round(report["default"][key] / other[key], 3) for key in ("p50_ms", "p99_ms", "requests_per_s")}
    print(json.dumps(report, indent=2))
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
