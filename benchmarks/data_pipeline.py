"""How fast, and in how much memory, ``python -m l0_env.data build`` turns 1M QA rows into a task file.

Synthesises a training file (JSON Lines, our schema) and an evaluation file, then runs the real
command line on them once per output format, each in its own process, and reports wall time,
input rows per second and the build process's peak RSS (``wait4``'s ``ru_maxrss``: the exact
peak, not a sample).

The synthetic data exercises every stage: questions of 6-20 words drawn Zipf-like from a 50k-word
vocabulary (so shingles have a realistic mix of common and rare words), 1-3 answers of 1-4 words
(some yes/no, numbers, years), 5% exact repeats of earlier questions (re-cased, re-punctuated),
0.5% evaluation questions verbatim and 0.5% with one word changed (decontamination must catch
them), and 10k evaluation questions in the index. No LLM filter (it is bounded by the server).

    python benchmarks/data_pipeline.py                      # 1M rows, 10k eval, parquet + jsonl
    python benchmarks/data_pipeline.py --rows 100000 --formats parquet --sample 20000
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import load_line, machine_line, markdown_table, uptime, versions, versions_line

WH = ["who", "what", "when", "where", "which", "how many", "in what year", "what is the name of"]


def vocabulary(rng: random.Random, size: int) -> list[str]:
    syllables = [
        "ka",
        "lo",
        "mi",
        "ran",
        "te",
        "sul",
        "vo",
        "ne",
        "dri",
        "pa",
        "xo",
        "bel",
        "qui",
        "ar",
        "en",
    ]
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))))
    return sorted(words)


def synthesise(path: Path, eval_path: Path, rows: int, n_eval: int, seed: int) -> None:
    rng = random.Random(seed)
    vocab = vocabulary(rng, 50_000)
    weights = [1.0 / (i + 1) for i in range(len(vocab))]  # Zipf-like: a few words are everywhere
    cumulative = list(itertools.accumulate(weights))

    def words(k: int) -> list[str]:
        return rng.choices(vocab, cum_weights=cumulative, k=k)

    def question() -> str:
        return f"{rng.choice(WH)} {' '.join(words(rng.randint(5, 19)))}?"

    def answer() -> list[str]:
        r = rng.random()
        if r < 0.05:
            return [rng.choice(["yes", "no"])]
        if r < 0.15:
            return [str(rng.randint(1000, 2020))]
        return [" ".join(words(rng.randint(1, 4))).title() for _ in range(rng.randint(1, 3))]

    evals = []
    while len(evals) < n_eval:
        q = question()
        if len(q.split()) >= 10:  # long enough that one changed word stays above the threshold
            evals.append(q)
    with open(eval_path, "w", encoding="utf-8") as f:
        for i, q in enumerate(evals):
            f.write(json.dumps({"id": f"dev_{i}", "question": q, "answers": answer()}) + "\n")
    recent: list[str] = []
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            r = rng.random()
            if r < 0.05 and recent:
                q = rng.choice(recent).upper().replace("?", " ?")
            elif r < 0.055:
                q = rng.choice(evals)
            elif r < 0.06:
                ws = rng.choice(evals).split()
                ws[len(ws) // 2] = "zzyzx"
                q = " ".join(ws)
            else:
                q = question()
                if len(recent) < 10_000:
                    recent.append(q)
                else:
                    recent[rng.randrange(len(recent))] = q
            f.write(json.dumps({"id": f"syn_{i}", "question": q, "answers": answer()}) + "\n")


def run_build(args: list[str]) -> tuple[float, float, int]:
    """Run the CLI; return (seconds, peak RSS MiB, exit status)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "l0_env.data", *args], stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    print(proc.stdout.read() if proc.stdout else "", end="")
    return seconds, usage.ru_maxrss / 1024, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--eval", type=int, default=10_000, dest="n_eval")
    parser.add_argument(
        "--formats", default="parquet,jsonl", help="comma-separated: parquet, jsonl, jsonl.gz"
    )
    parser.add_argument(
        "--sample", type=int, default=None, help="also pass --sample N (exercises the spill file)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the data goes (default: a temp dir)"
    )
    args = parser.parse_args()

    load_start = os.getloadavg()[0]
    print(machine_line())
    print(versions_line(versions("pyarrow", "numpy")))
    print(f"uptime:   {uptime()}")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        train, dev = work / "train_in.jsonl", work / "dev.jsonl"
        t0 = time.perf_counter()
        synthesise(train, dev, args.rows, args.n_eval, args.seed)
        print(
            f"inputs:   {args.rows:,} synthetic rows ({train.stat().st_size / 2**20:.0f} MiB JSONL), "
            f"{args.n_eval:,} evaluation questions; written in {time.perf_counter() - t0:.0f} s"
        )
        table = []
        for fmt in args.formats.split(","):
            out = work / f"train.{fmt}"
            cli = ["build", "-i", f"{train}:syn", "-x", f"{dev}:dev", "-o", str(out), "--no-progress"]
            if args.sample:
                cli += ["--sample", str(args.sample)]
            print(f"\n$ python -m l0_env.data {' '.join(cli)}")
            seconds, rss, status = run_build(cli)
            if status != 0:
                print(f"build failed with status {status}", file=sys.stderr)
                return 1
            report = json.loads((work / "train.report.json").read_text())
            (work / "train.report.json").unlink()
            (work / "train.report.md").unlink()
            stages = {s["stage"]: s for s in report["stages"]}
            table.append(
                [
                    fmt,
                    f"{args.rows:,}",
                    f"{report['output']['rows']:,}",
                    f"{stages['dedupe']['in'] - stages['dedupe']['kept']:,}",
                    f"{stages['decontaminate']['in'] - stages['decontaminate']['kept']:,}",
                    f"{seconds:.1f}",
                    f"{args.rows / seconds:,.0f}",
                    f"{rss:.0f}",
                    f"{out.stat().st_size / 2**20:.0f}",
                ]
            )
            out.unlink()
    print()
    print(
        markdown_table(
            [
                "output",
                "rows in",
                "rows out",
                "dupes dropped",
                "contaminated dropped",
                "wall s",
                "rows/s",
                "peak RSS MiB",
                "output MiB",
            ],
            table,
        )
    )
    print(load_line(load_start, os.getloadavg()[0]))
    print(f"uptime:   {uptime()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
