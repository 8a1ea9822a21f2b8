"""Load test of ``POST /v1/suggest``: concurrent typists against a real ``rnnlab serve`` process.

Starts ``rnnlab serve DIR`` on 127.0.0.1 (a free port; loopback only), then runs N clients, each
typing a different passage of the corpus one character at a time and asking for suggestions after
every keystroke (the whole text so far, with its own client id, so the server's incremental state
cache is exercised as a real keyboard would). Each client sends at most M requests; the run stops
at the time limit whatever is left. Reports latency percentiles, throughput and errors.

    python benchmarks/load_suggest.py runs/tm-lstm256 --clients 16 --requests 500 --time-limit 300
    python benchmarks/load_suggest.py runs/tm-lstm256 --clients 16 --requests 500 --words on --mixed 4

``--words compare`` (the default) starts two servers of the same checkpoint, the served word search
(``rnnlab serve DIR``) and the plain character beam (``rnnlab serve DIR --words off``), and lets the
same typists type the same passages on both, alternating every ``--chunk`` keystrokes (which goes
first alternates too), so that both are measured under the same machine load; it reports both
and the ratio of their p95 latencies (the target: at most 1.5x, and at most 25 ms where the plain
beam's p95 is at most 15 ms). ``--words on`` / ``off`` measures one server.

``--mixed N`` adds N clients that, while the typists type, keep sending the largest valid requests
(4,000 characters of ASCII, CJK, emoji or corpus text, k = 20, each a new text): errors are
counted for everyone, and the typists' latency is reported separately from theirs.

The client is a small keep-alive HTTP/1.1 client on asyncio (one connection per typist), so that
the load generator spends as little of the machine's CPU as possible.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def percentile(xs: list[float], q: float) -> float:
    """The q-th percentile (0-100) by the nearest-rank method."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))]


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads Content-Length responses."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, path: str, obj: dict) -> tuple[int, bytes]:
        body = json.dumps(obj).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        length, close = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
            elif name.strip().lower() == "connection" and value.strip().lower() == "close":
                close = True
        data = await self.reader.readexactly(length)
        if close:
            await self.close()
            await self.open()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass


async def typist(i: int, passage: str, args, port: int, deadline: float, out: dict, lo: int = 1,
                 hi: int | None = None) -> None:
    """Type keystrokes ``lo..hi`` of ``passage`` (one request each, the whole text so far)."""
    conn = Connection("127.0.0.1", port)
    await conn.open()
    hi = min(args.requests, len(passage)) if hi is None else min(hi, args.requests, len(passage))
    try:
        for n in range(lo, hi + 1):
            if time.perf_counter() > deadline:
                out["stopped_by_time"] = True
                break
            req = {"text": passage[:n], "k": args.k, "client": f"typist-{i}"}
            start = time.perf_counter()
            try:
                status, data = await asyncio.wait_for(conn.post("/v1/suggest", req), args.request_timeout)
                elapsed = (time.perf_counter() - start) * 1e3
                if status != 200:
                    out["errors"].append(f"HTTP {status}: {data[:200]!r}")
                    continue
                body = json.loads(data)
                out["latency_ms"].append(elapsed)
                out["server_ms"].append(body["elapsed_ms"])
                out["beam_steps"].append(body["beam_steps"])
                out["context_tokens"].append(body["context_tokens"])
            except (OSError, asyncio.TimeoutError, ValueError, KeyError, asyncio.IncompleteReadError) as e:
                out["errors"].append(f"{type(e).__name__}: {e}")
                await conn.close()
                await conn.open()
            if args.think_ms:
                await asyncio.sleep(args.think_ms / 1e3)
    finally:
        await conn.close()


LONG_TEXTS = ["x" * 4000, "分" * 4000, "😀" * 4000, "é€ the " * 571]


async def heavy_client(i: int, corpus_text: str, args, port: int, stop: asyncio.Event, out: dict) -> None:
    """The mixed workload: the largest valid requests, back to back, until the typists are done."""
    conn = Connection("127.0.0.1", port)
    await conn.open()
    rng = random.Random(args.seed + 1000 + i)
    texts = LONG_TEXTS + [corpus_text[s:s + 4000] for s in rng.sample(range(max(1, len(corpus_text) - 4000)), 4)]
    n = 0
    try:
        while not stop.is_set():
            req = {"text": rng.choice(texts)[: 4000 - (n % 7)], "k": 20, "client": f"heavy-{i}-{n}"}
            n += 1
            start = time.perf_counter()
            try:
                status, data = await asyncio.wait_for(conn.post("/v1/suggest", req), args.request_timeout)
                if status != 200:
                    out["errors"].append(f"HTTP {status}: {data[:200]!r}")
                    continue
                json.loads(data)
                out["latency_ms"].append((time.perf_counter() - start) * 1e3)
            except (OSError, asyncio.TimeoutError, ValueError, asyncio.IncompleteReadError) as e:
                out["errors"].append(f"{type(e).__name__}: {e}")
                await conn.close()
                await conn.open()
    finally:
        await conn.close()


def passages(text: str, n: int, length: int, seed: int) -> list[str]:
    """``n`` different passages of ``length`` characters, each starting at the start of a line."""
    starts = [m.end() for m in re.finditer(r"\n(?=[A-Za-z])", text) if m.end() + length <= len(text)]
    rng = random.Random(seed)
    return [text[s:s + length] for s in rng.sample(starts, n)]


def start_server(args, words: str = "on") -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "rnnlab", "serve", str(args.checkpoint), "--host", "127.0.0.1", "--port", "0",
           "--threads", str(args.threads), "--max-batch", str(args.max_batch), "--suggest-worker", args.suggest_worker,
           "--words", words]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = ""
    for _ in range(20):  # notices (e.g. no word model) may come first
        line = proc.stdout.readline()
        seen += line
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if m or not line:
            break
    if not m:
        proc.kill()
        raise SystemExit(f"the server did not start: {seen}{proc.stdout.read()}")
    if seen.count("\n") > 1:
        print(seen.rsplit("\n", 2)[0], file=sys.stderr)
    port = int(m.group(1))
    for _ in range(100):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not answer /healthz")


async def warm_up(port: int, text: str, k: int) -> None:
    """Not measured: one short typed word, under a client id that will not be reused."""
    warm = Connection("127.0.0.1", port)
    await warm.open()
    for n in range(1, 30):
        await warm.post("/v1/suggest", {"text": text[:n], "k": k, "client": "warm-up"})
    await warm.close()


async def run(args, port: int, texts: list[str], corpus_text: str = "") -> dict:
    results = [{"latency_ms": [], "server_ms": [], "beam_steps": [], "context_tokens": [], "errors": []}
               for _ in texts]
    await warm_up(port, texts[0], args.k)
    start = time.perf_counter()
    deadline = start + args.time_limit
    stop = asyncio.Event()
    heavy = [{"latency_ms": [], "errors": []} for _ in range(args.mixed)]
    heavies = [asyncio.ensure_future(heavy_client(i, corpus_text, args, port, stop, h)) for i, h in enumerate(heavy)]
    await asyncio.gather(*(typist(i, t, args, port, deadline, r) for i, (t, r) in enumerate(zip(texts, results))))
    stop.set()
    await asyncio.gather(*heavies)
    wall = time.perf_counter() - start
    lat = [x for r in results for x in r["latency_ms"]]
    srv = [x for r in results for x in r["server_ms"]]
    errors = [e for r in results for e in r["errors"]] + [e for h in heavy for e in h["errors"]]
    heavy_lat = [x for h in heavy for x in h["latency_ms"]]
    return {
        "mixed_clients": args.mixed, "mixed_completed": len(heavy_lat),
        "mixed_latency_ms": {"p50": round(percentile(heavy_lat, 50), 2), "p95": round(percentile(heavy_lat, 95), 2)}
        if heavy_lat else None,
        "clients": args.clients, "threads": args.threads, "max_batch": args.max_batch, "suggest_worker": args.suggest_worker, "requests_per_client": args.requests, "think_ms": args.think_ms, "k": args.k,
        "completed": len(lat), "errors": len(errors), "error_samples": errors[:5],
        "stopped_by_time": any(r.get("stopped_by_time") for r in results),
        "wall_s": round(wall, 2), "throughput_rps": round(len(lat) / wall, 1),
        "latency_ms": {"p50": round(percentile(lat, 50), 2), "p95": round(percentile(lat, 95), 2),
                       "p99": round(percentile(lat, 99), 2), "max": round(max(lat, default=float("nan")), 2),
                       "mean": round(statistics.fmean(lat), 2) if lat else None},
        "server_ms": {"p50": round(percentile(srv, 50), 2), "p95": round(percentile(srv, 95), 2),
                      "p99": round(percentile(srv, 99), 2)},
        "mean_beam_steps": round(statistics.fmean(x for r in results for x in r["beam_steps"]), 2) if lat else None,
        "context_tokens_per_request": round(statistics.fmean(x for r in results for x in r["context_tokens"]), 3)
        if lat else None,
    }


def summary(lat: list[float]) -> dict:
    return {"requests": len(lat), "p50": round(percentile(lat, 50), 2), "p95": round(percentile(lat, 95), 2),
            "p99": round(percentile(lat, 99), 2), "max": round(max(lat, default=float("nan")), 2)}


async def compare(args, ports: dict[str, int], texts: list[str]) -> dict:
    """The same typists on both servers, ``args.chunk`` keystrokes at a time, alternating."""
    results = {name: [{"latency_ms": [], "server_ms": [], "beam_steps": [], "context_tokens": [], "errors": []}
                      for _ in texts] for name in ports}
    for port in ports.values():
        await warm_up(port, texts[0], args.k)
    start = time.perf_counter()
    deadline = start + args.time_limit
    names = list(ports)
    for c, lo in enumerate(range(1, args.requests + 1, args.chunk)):
        hi = lo + args.chunk - 1
        for name in (names if c % 2 == 0 else names[::-1]):
            await asyncio.gather(*(typist(i, t, args, ports[name], deadline, r, lo, hi)
                                   for i, (t, r) in enumerate(zip(texts, results[name]))))
        if time.perf_counter() > deadline:
            break
    out: dict = {"clients": args.clients, "requests_per_client": args.requests, "chunk": args.chunk, "k": args.k,
                 "threads": args.threads, "max_batch": args.max_batch, "suggest_worker": args.suggest_worker,
                 "wall_s": round(time.perf_counter() - start, 2)}
    for name in names:
        lat = [x for r in results[name] for x in r["latency_ms"]]
        errors = [e for r in results[name] for e in r["errors"]]
        out[name] = {**summary(lat), "errors": len(errors), "error_samples": errors[:5],
                     "mean_beam_steps": round(statistics.fmean(x for r in results[name] for x in r["beam_steps"]), 2)
                     if lat else None}
    served, plain = out["served"], out["plain"]
    out["p95_ratio"] = round(served["p95"] / plain["p95"], 3) if plain["p95"] else None
    out["target_met"] = (served["errors"] == 0 and plain["errors"] == 0 and out["p95_ratio"] is not None
                         and out["p95_ratio"] <= 1.5 and (plain["p95"] > 15 or served["p95"] <= 25))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="checkpoint directory to serve")
    p.add_argument("--corpus", type=Path, default=None,
                   help="text the typists type (default: the checkpoint's training corpus)")
    p.add_argument("--clients", type=int, default=16, help="concurrent typists")
    p.add_argument("--requests", type=int, default=500, help="suggest requests per typist (one per keystroke)")
    p.add_argument("--time-limit", type=float, default=300.0, help="stop after this many seconds")
    p.add_argument("--think-ms", type=float, default=0.0, help="pause between keystrokes (0 = as fast as possible)")
    p.add_argument("--request-timeout", type=float, default=10.0)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    p.add_argument("--max-batch", type=int, default=64, help="the server's --max-batch (1 = no batching)")
    p.add_argument("--suggest-worker", choices=("process", "thread"), default="process",
                   help="the server's --suggest-worker (a process of its own, or a thread sharing the GIL)")
    p.add_argument("--mixed", type=int, default=0,
                   help="extra clients sending the largest valid requests (4,000 characters, k = 20) meanwhile")
    p.add_argument("--words", choices=("compare", "on", "off"), default="compare",
                   help="compare: the served word search and the plain character beam, alternating in one run; "
                        "on / off: one server with the word search or without it")
    p.add_argument("--chunk", type=int, default=50, help="--words compare: keystrokes per client before switching")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    from machine import describe

    machine = describe()
    print(machine, flush=True)  # which machine the figures come from
    if not (1 <= args.clients <= 256 and 1 <= args.requests <= 10000 and 0 < args.time_limit <= 3600):
        p.error("keep the load bounded: 1-256 clients, 1-10000 requests each, a time limit of at most 3600 s")
    corpus = args.corpus
    if corpus is None:
        cfg = json.loads((args.checkpoint / "config.json").read_text())
        corpus = Path(cfg["info"]["source"])
    text = corpus.read_text(encoding="utf-8")
    texts = passages(text, args.clients, args.requests, args.seed)
    if args.words == "compare" and args.mixed:
        p.error("--mixed measures one server: give --words on or --words off with it")
    servers = {"served": "on", "plain": "off"} if args.words == "compare" else {args.words: args.words}
    procs, ports = [], {}
    try:
        for name, words in servers.items():
            proc, ports[name] = start_server(args, words)
            procs.append(proc)
        if args.words == "compare":
            result = asyncio.run(compare(args, ports, texts))
            ok = result["served"]["errors"] == 0 and result["plain"]["errors"] == 0
        else:
            result = asyncio.run(run(args, ports[args.words], texts, text))
            result["words"] = args.words
            ok = result["errors"] == 0
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    result.update({"checkpoint": str(args.checkpoint), "cpu_count": os.cpu_count(), "machine": machine})
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
