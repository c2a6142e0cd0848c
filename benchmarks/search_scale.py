"""BM25 at scale: a 1M-passage corpus, embedded and through the retrieval server with 16 clients.

    python scripts/make_big_corpus.py --size 1000000 --out ~/.cache/l0_env/bench/big-1000000.jsonl
    python benchmarks/search_scale.py --corpus ~/.cache/l0_env/bench/big-1000000.jsonl

(The corpus is generated first if ``--corpus`` does not exist; ``--size`` sets its size.)

Measured, each in a fresh process so memory numbers are that step's own:

1. build: a real build into an empty cache folder: wall time, peak RSS, index size on disk;
2. embedded: load time, RSS after load, single-query latency (each question alone, p50/p99),
   batched latency (batches of 32, per batch p50/p99 and per query), RSS after the queries;
3. server: ``python -m l0_env.tools.search_server`` on 127.0.0.1 over the same cached index, RSS
   after load; 16 client threads (each its own `HTTPSearch`, like 16 env workers) send the
   questions single and in batches of 32, k=10: latency p50/p99, throughput, server RSS after.

Queries: the 1,245 bundled HotpotQA dev questions (their gold paragraphs are real passages of
the corpus). Recall is by passage id (distractors may share title words), with the issue's four
columns; embedded and server results must be identical.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from common import markdown_table  # noqa: E402
from search_common import machine_line, recall_row  # noqa: E402

from l0_env.tasks import load_tasks  # noqa: E402
from l0_env.tools.bm25 import BM25Search, default_cache_dir  # noqa: E402
from l0_env.tools.search import bundled_corpus_path, iter_passages  # noqa: E402

BATCH = 32
CLIENTS = 16


def rss_mib(pid: int | None = None) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def anon_mib(pid: int | None = None) -> float:
    """RSS minus file-backed pages (the memory-mapped index and passages, which the kernel can drop)."""
    import psutil

    info = psutil.Process(pid).memory_info()
    return (info.rss - info.shared) / 2**20


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def questions() -> tuple[list[str], list[set[str]]]:
    """Question texts and, for each, the ids of its gold passages in the bundled corpus."""
    id_of = {p.title: p.id for p in iter_passages(bundled_corpus_path())}
    tasks = load_tasks(split="dev")
    return [t.question for t in tasks], [{id_of[t] for t in task.supporting_titles} for task in tasks]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


# -- the three steps, each run as a child process ----------------------------------------------


def step_build(corpus: Path, cache: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    backend = BM25Search.from_corpus(corpus, cache_dir=cache, show_progress=True)
    build_s = time.perf_counter() - t0
    assert backend.built, f"{cache} already holds this index: give an empty --cache-dir to time a build"
    folder = backend.cache_path
    sizes = {p.name: p.stat().st_size for p in folder.iterdir()}
    passages = sizes.get("passages.arrow", 0)
    meta = json.loads((folder / "l0_meta.json").read_text())
    return {
        "build_s": build_s,
        "peak_rss_mib": peak_rss_mib(),
        "index_mib": (sum(sizes.values()) - passages) / 2**20,
        "passages_mib": passages / 2**20,
        "num_docs": backend.num_docs,
        "vocab": meta["vocab_size"],
        "nnz": meta["nnz"],
        "folder": str(folder),
    }


PLAIN = {"stemmer": None, "title_weight": 1, "k1": 1.5, "title_boost": 0.0}  # = the plain bm25s


def step_embedded(corpus: Path, cache: Path, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    qs, gold = questions()
    if settings:  # a comparison variant: build it first, outside the measurements
        BM25Search.from_corpus(corpus, cache_dir=cache, **settings)
    base_rss = rss_mib()
    t0 = time.perf_counter()
    backend = BM25Search.from_corpus(corpus, cache_dir=cache, **(settings or {}))
    load_s = time.perf_counter() - t0
    assert not backend.built, "run the build step first"
    rss_load = rss_mib()
    backend.search(qs[:20], k=10)  # warm-up
    single, ranked = [], []
    for q in qs:
        t0 = time.perf_counter()
        hits = backend.search([q], k=10)[0]
        single.append((time.perf_counter() - t0) * 1000)
        ranked.append([h.doc_id for h in hits])
    batched = []
    for start in range(0, len(qs), BATCH):
        t0 = time.perf_counter()
        backend.search(qs[start : start + BATCH], k=10)
        batched.append((time.perf_counter() - t0) * 1000)
    return {
        "load_s": load_s,
        "rss_python_mib": base_rss,
        "rss_load_mib": rss_load,
        "rss_after_mib": rss_mib(),
        "anon_after_mib": anon_mib(),
        "single_p50": pct(single, 50),
        "single_p99": pct(single, 99),
        "batch_p50": pct(batched, 50),
        "batch_p99": pct(batched, 99),
        "batch_per_query": sum(batched) / len(qs),
        "single_mean": sum(single) / len(single),
        "recall": recall_row(gold, ranked),
        "ranked": ranked,
    }


def step_server(corpus: Path, cache: Path, workers: int) -> dict[str, Any]:
    import socket

    from l0_env.tools.remote import HTTPSearch
    from l0_env.tools.search import SearchUnavailable

    qs, gold = questions()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "l0_env.tools.search_server",
        "--corpus",
        str(corpus),
        "--cache-dir",
        str(cache),
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--workers",
        str(workers),
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        probe = HTTPSearch(url, retries=0, timeout=5)
        while True:
            try:
                probe.health()
                break
            except SearchUnavailable:
                if proc.poll() is not None or time.perf_counter() - t0 > 600:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.1)
        ready_s = time.perf_counter() - t0
        time.sleep(1.0)  # let worker processes finish importing

        def server_rss() -> float:
            """RSS of the server, or with several workers the sum of their PSS (shared pages split)."""
            import psutil

            p = psutil.Process(proc.pid)
            procs = [p, *p.children(recursive=True)]
            if len(procs) == 1:
                return rss_mib(proc.pid)
            return sum(c.memory_full_info().pss for c in procs) / 2**20

        def server_anon() -> float:
            import psutil

            p = psutil.Process(proc.pid)
            return sum(anon_mib(c.pid) for c in [p, *p.children(recursive=True)])

        rss_load = server_rss()
        probe.search(qs[:20], k=10)

        def run(batch: int) -> tuple[list[float], float, list[list[str]]]:
            jobs = [qs[i : i + batch] for i in range(0, len(qs), batch)]
            lat: list[float] = []
            out: dict[int, list[list[str]]] = {}
            lock = threading.Lock()
            next_job = iter(range(len(jobs)))

            def client() -> None:
                backend = HTTPSearch(url, timeout=60, retries=0)
                while True:
                    with lock:
                        j = next(next_job, None)
                    if j is None:
                        break
                    t = time.perf_counter()
                    res = backend.search(jobs[j], k=10)
                    dt = (time.perf_counter() - t) * 1000
                    with lock:
                        lat.append(dt)
                        out[j] = [[h.doc_id for h in hits] for hits in res]
                backend.close()

            threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
            t = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            wall = time.perf_counter() - t
            ranked = [r for j in range(len(jobs)) for r in out[j]]
            return lat, len(qs) / wall, ranked

        single, single_qps, ranked = run(1)
        batched, batched_qps, ranked_b = run(BATCH)
        assert ranked == ranked_b
        return {
            "ready_s": ready_s,
            "rss_load_mib": rss_load,
            "rss_after_mib": server_rss(),
            "anon_after_mib": server_anon(),
            "single_p50": pct(single, 50),
            "single_p99": pct(single, 99),
            "single_qps": single_qps,
            "batch_p50": pct(batched, 50),
            "batch_p99": pct(batched, 99),
            "batch_qps": batched_qps,
            "recall": recall_row(gold, ranked),
            "ranked": ranked,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def child(step: str, corpus: Path, cache: Path, workers: int, settings: dict | None = None) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--step",
        step,
        "--corpus",
        str(corpus),
        "--cache-dir",
        str(cache),
        "--workers",
        str(workers),
        "--settings",
        json.dumps(settings or {}),
    ]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--size", type=int, default=1_000_000, help="passages, when the corpus is generated")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: a fresh temporary folder")
    parser.add_argument("--workers", default="1", help="server worker processes, e.g. '1,2' to compare")
    parser.add_argument(
        "--no-plain", action="store_true", help="skip the plain-bm25s-settings comparison row"
    )
    parser.add_argument("--step", choices=["build", "embedded", "server"], help=argparse.SUPPRESS)
    parser.add_argument("--settings", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    corpus = args.corpus or default_cache_dir() / "bench" / f"big-{args.size}.jsonl"

    if args.step:  # child process
        if args.step == "build":
            res = step_build(corpus, args.cache_dir)
        elif args.step == "embedded":
            res = step_embedded(corpus, args.cache_dir, json.loads(args.settings))
        else:
            res = step_server(corpus, args.cache_dir, int(args.workers))
        print(json.dumps(res))
        return

    print(machine_line())
    if not corpus.exists():
        print(f"generating {corpus} ({args.size:,} passages) ...", flush=True)
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "make_big_corpus.py"),
                "--size",
                str(args.size),
                "--out",
                str(corpus),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        print(f"  generated in {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"corpus: {corpus} ({corpus.stat().st_size / 2**20:,.0f} MiB)")
    tmp = None
    if args.cache_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="l0-scale-")
        args.cache_dir = Path(tmp.name)
    try:
        build = child("build", corpus, args.cache_dir, 1)
        print(f"build: {json.dumps(build)}", flush=True)
        emb = child("embedded", corpus, args.cache_dir, 1)
        print("embedded: " + json.dumps({k: v for k, v in emb.items() if k != "ranked"}), flush=True)
        plain = None
        if not args.no_plain:
            plain = child("embedded", corpus, args.cache_dir, 1, PLAIN)
            print("plain: " + json.dumps({k: v for k, v in plain.items() if k != "ranked"}), flush=True)
        servers = {}
        for w in [int(x) for x in args.workers.split(",")]:
            servers[w] = child("server", corpus, args.cache_dir, w)
            print(
                f"server x{w}: " + json.dumps({k: v for k, v in servers[w].items() if k != "ranked"}),
                flush=True,
            )
            if servers[w]["ranked"] != emb["ranked"]:
                print(f"WARNING: server x{w} results differ from embedded results")
    finally:
        if tmp is not None:
            tmp.cleanup()

    print()
    print(f"{build['num_docs']:,} passages; vocabulary {build['vocab']:,} terms; {build['nnz']:,} postings")
    print()
    print(
        markdown_table(
            ["build (s)", "peak RSS while building (MiB)", "index on disk (MiB)", "passages on disk (MiB)"],
            [
                [
                    f"{build['build_s']:.0f}",
                    f"{build['peak_rss_mib']:.0f}",
                    f"{build['index_mib']:.0f}",
                    f"{build['passages_mib']:.0f}",
                ]
            ],
        )
    )
    print()
    rows = [
        [
            "embedded (1 thread)",
            f"{emb['load_s']:.2f}",
            f"{emb['rss_load_mib']:.0f}",
            f"{emb['rss_after_mib']:.0f} ({emb['anon_after_mib']:.0f})",
            f"{emb['single_p50']:.1f} / {emb['single_p99']:.1f}",
            f"{emb['batch_p50']:.0f} / {emb['batch_p99']:.0f}",
            f"{1000 / emb['single_mean']:.0f} ({1000 / emb['batch_per_query']:.0f} batched)",
            *[f"{emb['recall'][c]:.3f}" for c in ("any@1", "any@5", "both@5", "both@10")],
        ]
    ]
    if plain is not None:
        rows.append(
            [
                "embedded, plain bm25s settings",
                f"{plain['load_s']:.2f}",
                "-",  # this process built the variant first: its memory is not comparable
                "-",
                f"{plain['single_p50']:.1f} / {plain['single_p99']:.1f}",
                f"{plain['batch_p50']:.0f} / {plain['batch_p99']:.0f}",
                f"{1000 / plain['single_mean']:.0f} ({1000 / plain['batch_per_query']:.0f} batched)",
                *[f"{plain['recall'][c]:.3f}" for c in ("any@1", "any@5", "both@5", "both@10")],
            ]
        )
    for w, s in servers.items():
        rows.append(
            [
                f"server x{w} worker{'s' * (w > 1)}, {CLIENTS} clients",
                f"{s['ready_s']:.1f}",
                f"{s['rss_load_mib']:.0f}",
                f"{s['rss_after_mib']:.0f} ({s['anon_after_mib']:.0f})",
                f"{s['single_p50']:.1f} / {s['single_p99']:.1f}",
                f"{s['batch_p50']:.0f} / {s['batch_p99']:.0f}",
                f"{s['single_qps']:.0f} ({s['batch_qps']:.0f} batched)",
                *[f"{s['recall'][c]:.3f}" for c in ("any@1", "any@5", "both@5", "both@10")],
            ]
        )
    print(
        markdown_table(
            [
                "mode",
                "load / ready (s)",
                "RSS after load (MiB)",
                "RSS after queries (anon) (MiB)",
                "single p50 / p99 (ms)",
                f"batch of {BATCH} p50 / p99 (ms)",
                "queries/s",
                "any@1",
                "any@5",
                "both@5",
                "both@10",
            ],
            rows,
        )
    )
    print(
        f"\nembedded batched: {emb['batch_per_query']:.1f} ms/query; python interpreter alone: "
        f"{emb['rss_python_mib']:.0f} MiB RSS"
    )


if __name__ == "__main__":
    main()
