"""Fault injection for the learner, with the real components: ``python -m l0_learner.run`` stopped
by SIGTERM / SIGINT in the middle of an iteration, and a disk that fills up while a checkpoint is
written (a real size-limited tmpfs). Every case must end in a clear message, no leftover processes
or half-written files, and a ``--resume`` that finishes exactly like an uninterrupted run.

The env's own faults are in ``tests/test_faults.py``; the search server's in
``tests/test_faults_search.py``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch

from l0_learner.runs import RunDir, find_checkpoints, load_checkpoint

from .cli import cli_args

ROOT = Path(__file__).resolve().parents[2]
ITERATIONS = 5


@pytest.fixture(autouse=True)
def sigint_delivered():
    """SIGINT handled as in a terminal, also when pytest runs as a background job of a script,
    which starts with SIGINT ignored: the learner keeps an ignored signal ignored on purpose, and
    the learners these tests start would inherit it."""
    before = signal.getsignal(signal.SIGINT)
    if before is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def metrics_lines(out: Path) -> list[dict[str, Any]]:
    """Every line of ``metrics.jsonl`` (a torn or invalid line fails the test)."""
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def comparable(line: dict[str, Any]) -> dict[str, Any]:
    """A metrics line without its timings (wall-clock numbers differ between runs)."""
    return {k: v for k, v in line.items() if not k.startswith("perf/") or k.endswith("_tokens")}


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(checkpoint / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), f"{name} differs between {a} and {b}"


def assert_no_partial_files(out: Path) -> None:
    leftovers = [p.name for p in (out / "checkpoints").iterdir() if ".tmp" in p.name]
    assert not leftovers, f"temporary checkpoint folders left behind: {leftovers}"
    assert not [p.name for p in out.glob(".*.*")], "a temporary file of an atomic write was left behind"
    for ckpt in find_checkpoints(out):
        assert sorted(p.name for p in ckpt.iterdir()) == [
            "model.safetensors",
            "optimizer.pt",
            "rng.pt",
            "trainer_state.json",
        ]


@pytest.fixture(scope="module")
def reference(tiny_path: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of ITERATIONS iterations on the toy env, every checkpoint kept."""
    from l0_learner.run import main

    out = tmp_path_factory.mktemp("reference") / "run"
    main(cli_args(tiny_path, out, "--iterations", str(ITERATIONS), "--keep-checkpoints", "100"))
    return out


def subprocess_env() -> dict[str, str]:
    # One thread, as the test process uses (conftest): the same float sums, bit for bit.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def start_learner(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "l0_learner.run", *args],
        cwd=ROOT,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(predicate: Any, proc: subprocess.Popen[str], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the learner ended (rc {proc.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_mid_iteration_then_resume_matches_an_uninterrupted_run(
    tiny_path: str, tmp_path: Path, reference: Path, sig: signal.Signals
) -> None:
    from l0_learner.run import main

    out = tmp_path / "run"
    args = cli_args(tiny_path, out, "--iterations", str(ITERATIONS), "--keep-checkpoints", "100")
    proc = start_learner(args)
    # Iteration 1 is committed (metrics line + checkpoint): the learner is inside iteration 2 now.
    wait_for(lambda: (out / "checkpoints" / "iter_000001").is_dir(), proc, 120, "the first checkpoint")
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, (proc.returncode, stdout, stderr)
    name = signal.Signals(sig).name
    assert f"interrupted by {name} at iteration" in stderr, stderr
    assert "Resume with: python -m l0_learner.run" in stderr and "--resume" in stderr, stderr
    assert "Traceback" not in stderr, stderr

    # Nothing half-written; the log holds exactly the checkpointed iterations.
    assert_no_partial_files(out)
    done = len(find_checkpoints(out))
    assert 1 <= done < ITERATIONS, "the signal should land before the run ends"
    lines = metrics_lines(out)
    assert [x["iteration"] for x in lines] == list(range(1, done + 1))

    result = main([*args, "--resume"])
    assert result["iterations"] == ITERATIONS
    lines = metrics_lines(out)
    assert [x["iteration"] for x in lines] == list(range(1, ITERATIONS + 1)), "duplicated or missing lines"
    assert [comparable(x) for x in lines] == [comparable(x) for x in metrics_lines(reference)]
    for k in range(1, ITERATIONS + 1):
        assert_same_weights(
            out / "checkpoints" / f"iter_{k:06d}", reference / "checkpoints" / f"iter_{k:06d}"
        )
    assert_no_partial_files(out)


def test_a_signal_during_a_commit_waits_for_it_and_a_second_one_is_ignored(capsys) -> None:
    """In-process: a signal inside ``critical()`` lands right after the block; once stopping, a
    second Ctrl-C does not break the cleanup; the previous handlers come back."""
    from l0_learner.interrupt import Interrupted, StopOnSignals, critical

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    steps = []
    with pytest.raises(Interrupted) as info, StopOnSignals():
        with critical():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler runs here, sees the commit and waits
            steps.append("commit written")
        steps.append("next iteration")
    assert steps == ["commit written"] and info.value.exit_code == 143

    cleaned = False
    with StopOnSignals():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            pytest.fail("SIGINT did not interrupt")
        except Interrupted as exc:
            assert exc.exit_code == 130
            os.kill(os.getpid(), signal.SIGINT)  # pressed again while the envs close
            time.sleep(0.05)
            cleaned = True
    assert cleaned
    assert "SIGINT received while stopping" in capsys.readouterr().err
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_signal_whose_exception_was_swallowed_stops_the_run_at_the_next_commit() -> None:
    """The handler raises in whatever frame runs; an asyncio callback there (seen in CI: an HTTP
    connection's teardown during a vLLM run) logs the exception and goes on. The next commit's end
    raises it again, so the run stops there instead of finishing every iteration."""
    from l0_learner.interrupt import Interrupted, StopOnSignals, critical

    steps = []
    with pytest.raises(Interrupted) as info, StopOnSignals():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
        except Interrupted:
            steps.append("swallowed")  # what asyncio's callback error handler does
        for i in range(3):
            with critical():
                steps.append(f"commit {i}")
    assert steps == ["swallowed", "commit 0"] and info.value.exit_code == 143


def test_resume_drops_metrics_logged_after_the_checkpoint(
    tiny_path: str, tmp_path: Path, reference: Path
) -> None:
    """``--save-every 2`` logs iterations that no checkpoint holds; a stop after iteration 3 must
    not leave line 3 twice once iteration 3 is redone (a torn last line from a full disk goes too)."""
    from l0_learner.run import main

    out = tmp_path / "run"
    args = cli_args(tiny_path, out, "--keep-checkpoints", "100", "--save-every", "2")
    main([*args, "--iterations", "2"])
    # What a run stopped during iteration 4 leaves: line 3 logged, its checkpoint not written yet,
    # and a sample notebook of iteration 3; plus a line cut short by a full disk.
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"iteration": 3, "charts/reward": 0.0}) + "\n" + '{"iteration": 4, "cha')
    (out / "notebooks").mkdir(exist_ok=True)
    (out / "notebooks" / "iter_000003_ep0.ipynb").write_text("{}")
    main([*args, "--iterations", str(ITERATIONS), "--resume"])
    lines = metrics_lines(out)
    assert [x["iteration"] for x in lines] == list(range(1, ITERATIONS + 1))
    assert [comparable(x) for x in lines] == [comparable(x) for x in metrics_lines(reference)]
    stale = out / "notebooks" / "iter_000003_ep0.ipynb"
    assert not stale.exists() or stale.read_text() != "{}", "the stale notebook is dropped (or redone)"
    assert_same_weights(out / "checkpoints" / "iter_000004", reference / "checkpoints" / "iter_000004")


@pytest.mark.slow
def test_sigterm_with_the_notebook_env_closes_every_kernel_and_resumes(
    tiny_path: str, tmp_path: Path
) -> None:
    """The real notebook env (sandboxed kernels): SIGTERM mid-iteration leaves no process behind."""
    from l0_learner.run import main

    out = tmp_path / "run"
    args = cli_args(tiny_path, out, "--iterations", "3", env="notebook")
    proc = start_learner(args)
    wait_for(lambda: (out / "metrics.jsonl").exists(), proc, 180, "the first metrics line")
    kernels = psutil.Process(proc.pid).children(recursive=True)
    assert kernels, "the notebook env should have started kernel processes"
    names = {p.name() for p in kernels}
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 143, (stdout, stderr)
    assert "interrupted by SIGTERM" in stderr and "--resume" in stderr, stderr
    _, alive = psutil.wait_procs(kernels, timeout=15)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes left behind: {alive} (started: {names})"
    assert_no_partial_files(out)
    done = len(find_checkpoints(out))
    assert [x["iteration"] for x in metrics_lines(out)] == list(range(1, done + 1))

    result = main([*args, "--resume"])
    assert result["iterations"] == 3
    assert [x["iteration"] for x in metrics_lines(out)] == [1, 2, 3]
    assert_no_partial_files(out)


# -- disk full ------------------------------------------------------------------------------------


def mount_tmpfs(path: Path, size: str) -> None:
    """Mount a size-limited tmpfs at ``path`` (root only), or skip the test saying why."""
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a size-limited filesystem")
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here (needs root): {res.stderr.strip()}")


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A real 8 MiB filesystem (tmpfs) and a way to fill it to a given free space."""
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "8m")
    filler = disk / "filler"

    def fill(leave_bytes: int) -> None:
        filler.unlink(missing_ok=True)
        free = shutil.disk_usage(disk).free
        with open(filler, "wb") as fh:
            fh.write(b"\0" * max(0, free - leave_bytes))
        assert abs(shutil.disk_usage(disk).free - leave_bytes) < 64 << 10

    def free_space() -> None:
        filler.unlink(missing_ok=True)

    try:
        yield disk, fill, free_space
    finally:
        unmount(disk)


@pytest.mark.parametrize("leave_kb", [600, 40], ids=["in-optimizer-state", "in-weights"])
def test_disk_full_while_a_checkpoint_is_written(small_disk: Any, leave_kb: int) -> None:
    """ENOSPC mid-write: a clear OSError, no partial checkpoint, the previous one loads, and the
    same checkpoint is written once space is free."""
    disk, fill, free_space = small_disk
    torch.manual_seed(0)
    model = torch.nn.Linear(300, 300)  # 360 KB of weights, 720 KB of AdamW state
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)

    def step() -> None:
        model(torch.randn(4, 300)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()

    run = RunDir(disk / "run", tensorboard=False)
    step()
    first = run.save_checkpoint(1, model=model, optimizer=optimizer, trainer_state={"iteration": 1})
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    run.log_metrics(1, {"charts/reward": 0.5})
    step()
    fill(leave_kb << 10)
    with pytest.raises(OSError) as info:
        run.save_checkpoint(2, model=model, optimizer=optimizer, trainer_state={"iteration": 2})
    err = info.value
    assert err.errno == errno.ENOSPC
    message = str(err)
    assert (
        "No space left on device" in message and str(disk / "run" / "checkpoints" / "iter_000002") in message
    )
    assert str(first) in message and "--resume" in message, message
    assert [p.name for p in (disk / "run" / "checkpoints").iterdir()] == ["iter_000001"], "partial files left"
    assert run.latest_checkpoint() == first

    # The previous checkpoint is intact: it loads and gives back the weights it saved.
    fresh = torch.nn.Linear(300, 300)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    assert load_checkpoint(first, model=fresh, optimizer=fresh_opt) == {"iteration": 1}
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, saved[k])

    # A metrics line on a full disk: an error; a line cut short is dropped on resume (rollback).
    fill(0)
    with pytest.raises(OSError) as info:
        run.log_metrics(2, {"charts/reward": 0.25, "pad": "x" * 8192})
    assert info.value.errno == errno.ENOSPC or "disk full" in str(info.value)

    # Space freed: the run resumes from the intact checkpoint and writes the next one.
    free_space()
    run.rollback_to(1)
    metrics = (disk / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in metrics] == [1]
    second = run.save_checkpoint(2, model=model, optimizer=optimizer, trainer_state={"iteration": 2})
    assert run.latest_checkpoint() == second
    assert load_checkpoint(second, model=fresh, optimizer=fresh_opt) == {"iteration": 2}
    for (name, p), q in zip(model.named_parameters(), fresh.parameters(), strict=True):
        assert torch.equal(p, q), name


def test_disk_full_stops_the_cli_clearly_and_resume_finishes_the_run(
    tiny_path: str, small_disk: Any, reference: Path
) -> None:
    """The whole CLI on a disk that fills up at iteration 2's checkpoint (1.2 MB each)."""
    from l0_learner.run import main

    disk, fill, free_space = small_disk
    out = disk / "run"
    args = cli_args(tiny_path, out, "--keep-checkpoints", "100")
    main([*args, "--iterations", "1"])
    fill(700 << 10)  # room for the metrics line and the weights, not the optimizer state
    with pytest.raises(SystemExit) as info:
        main([*args, "--iterations", "3", "--resume"])
    message = str(info.value.code)
    assert message.startswith("error: [Errno 28] No space left on device"), message
    assert "iter_000002" in message and "stopped at iteration 1 of 3" in message and "--resume" in message
    assert [p.name for p in find_checkpoints(out)] == ["iter_000001"]
    assert_no_partial_files(out)

    free_space()
    result = main([*args, "--iterations", "3", "--resume"])
    assert result["iterations"] == 3
    lines = metrics_lines(out)
    assert [x["iteration"] for x in lines] == [1, 2, 3]
    assert [comparable(x) for x in lines] == [comparable(x) for x in metrics_lines(reference)[:3]]
    assert_same_weights(out / "checkpoints" / "iter_000003", reference / "checkpoints" / "iter_000003")
