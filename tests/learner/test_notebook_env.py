"""The learner on the real sandboxed notebook env: tiny-model RL and SFT, and a SmolLM2 episode (slow)."""

from __future__ import annotations

import json

import pytest

from l0_learner.eval import evaluate, load_eval_tasks, markdown_table
from l0_learner.rollout import Job, run_episodes

from .cli import cli_args


def test_tiny_preset_on_the_notebook_env_writes_a_sample_notebook(tiny_path, tmp_path) -> None:
    import nbformat

    from l0_learner.run import main

    out = tmp_path / "tiny"
    result = main(cli_args(tiny_path, out, "--no-tensorboard", "--iterations", "1", env="notebook"))
    assert result["iterations"] == 1
    line = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert line["charts/episodes"] == 4 and line["charts/steps_per_episode"] == 2  # random text never submits
    assert line["charts/well_formed_rate"] == 0.0 and line["charts/reward"] == 0.0
    notebooks = list((out / "notebooks").glob("*.ipynb"))
    assert notebooks
    nbformat.validate(nbformat.read(str(notebooks[0]), as_version=4))


def test_oracle_demonstrations_and_sft_lower_the_loss(tiny_policy, tmp_path) -> None:
    from l0_learner.sft import load_samples, record_demonstrations, sft

    model, tok = tiny_policy
    path = tmp_path / "demos.jsonl"
    samples = record_demonstrations(4, max_steps=3, out_path=path, seed=1)
    assert len(samples) == 4 and [s["step"] for s in samples[:2]] == [0, 1]
    assert all("<code>" in s["action"] and s["messages"][0]["role"] == "system" for s in samples)
    assert load_samples(path) == json.loads("[" + ",".join(path.read_text().splitlines()) + "]")
    # The tiny BPE makes the real contexts long; SFT on a short context keeps this test fast.
    short = [
        {"messages": [{"role": "user", "content": s["messages"][1]["content"][:80]}], "action": s["action"]}
        for s in samples
    ]
    losses = sft(model, tok, short, epochs=6, batch_size=4, lr=1e-2, progress=False)
    assert losses[-1] < 0.8 * losses[0]


def test_sft_reads_env_episode_records(tmp_path) -> None:
    import gymnasium as gym

    import l0_env
    from l0_env.policies import OraclePolicy
    from l0_env.recording import append_jsonl
    from l0_learner.sft import load_samples

    env = gym.make(l0_env.ENV_ID, split="train", max_steps=3)
    policy = OraclePolicy("gold", read_steps=1)
    obs, info = env.reset(seed=0, options={"task_index": 3})
    seen = [obs]
    done = False
    while not done:
        obs, _, term, trunc, info = env.step(policy(obs, info))
        seen.append(obs)
        done = term or trunc
    append_jsonl(tmp_path / "eps.jsonl", env.unwrapped.episode.to_dict())
    env.close()
    samples = load_samples(tmp_path / "eps.jsonl", max_steps=3)
    assert len(samples) == 2
    assert samples[0]["messages"] == seen[0], "the rebuilt context is the one the env showed"
    assert samples[1]["messages"] == seen[1]


def test_eval_scores_an_oracle_backend() -> None:
    """Eval end to end with a scripted 'backend' that answers right: EM 1, every step well formed."""
    from l0_env.policies import OraclePolicy
    from l0_learner.backends import Generation

    tasks = load_eval_tasks("hotpotqa-dev", 2)

    class OracleBackend:
        def __init__(self) -> None:
            self.policies: dict[str, OraclePolicy] = {}

        def generate(self, conversations):
            out = []
            for conv in conversations:
                question = conv[1]["content"].split("\n")[0].removeprefix("Question: ")
                task = next(t for t in tasks if t["question"] == question)
                n_steps = sum(m["role"] == "assistant" for m in conv)
                policy = self.policies.setdefault(task["id"], OraclePolicy("gold", read_steps=1))
                out.append(Generation(text=policy(conv, {"step": n_steps, "task": task})))
            return out

    summary, _ = evaluate(OracleBackend(), tasks, max_steps=3, num_envs=2)
    assert summary["n"] == 2 and summary["em"] == 1.0 and summary["well_formed_rate"] == 1.0
    assert summary["code_error_rate"] == 0.0 and summary["steps_per_episode"] == 2.0
    assert "| hotpotqa |" in markdown_table([{"dataset": "hotpotqa", **summary}])


@pytest.mark.slow
def test_smollm2_real_episode_in_the_sandbox() -> None:
    """SmolLM2-135M (the embedded GGUF) plays a real episode in the bwrap-sandboxed notebook env."""
    from l0_env.kernel.sandbox import check_bwrap
    from l0_learner.backends.hf import HFBackend
    from l0_learner.envs import TokenCounter, make_vector_env
    from l0_learner.models import load_policy

    reason = check_bwrap()
    if reason is not None:
        pytest.skip(f"bubblewrap cannot run here: {reason}")
    model, tok = load_policy("smollm2", device="cpu")
    backend = HFBackend(model, tok, max_new_tokens=64, batch_size=1)
    venv = make_vector_env(
        1,
        split="train",
        sandbox="bwrap",
        max_steps=2,
        max_context_tokens=3072,
        count_tokens=TokenCounter(tok),
    )
    try:
        (episode,), timings = run_episodes(backend, venv, [Job(0, 0)], num_envs=1, keep_logs=1)
    finally:
        venv.close()
    assert 1 <= len(episode.steps) <= 2 and timings.gen_tokens > 0
    assert all(len(s.response_ids) == len(s.logprobs) > 0 for s in episode.steps)
    assert "qa" in episode.final and episode.log is not None and episode.log.steps


def test_eval_and_sft_command_lines(tiny_path, tmp_path, capsys) -> None:
    from l0_learner import eval as eval_cli
    from l0_learner import sft as sft_cli

    out = tmp_path / "eval"
    rows = eval_cli.main(
        [
            "--model",
            tiny_path,
            "--data",
            "hotpotqa-dev[3:]",
            "--n",
            "2",
            "--max-steps",
            "1",
            "--max-new-tokens",
            "8",
            "--output-dir",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert len(rows) == 1 and rows[0]["n"] == 2 and rows[0]["dataset"] == "hotpotqa-dev[3:]"
    assert json.loads((out / "results.json").read_text())["results"][0]["em"] == 0.0
    predictions = [json.loads(line) for line in (out / "predictions-hotpotqa-dev_3-end.jsonl").open()]
    dev = load_eval_tasks("hotpotqa-dev", 5)
    assert [p["id"] for p in predictions] == [dev[3]["id"], dev[4]["id"]]
    assert "| hotpotqa-dev[3:] | 2 |" in capsys.readouterr().out
    data = tmp_path / "samples.jsonl"
    sample = {
        "messages": [{"role": "user", "content": "Question: capital?"}],
        "action": "<think>It is Paris.</think><code>submit_final_answer('Paris')</code>",
    }
    data.write_text(json.dumps(sample) + "\n")
    model_dir = sft_cli.main(
        [
            "--model",
            tiny_path,
            "--data",
            str(data),
            "--output-dir",
            str(tmp_path / "sft"),
            "--epochs",
            "1",
            "--device",
            "cpu",
        ]
    )
    assert (model_dir / "config.json").exists() and (model_dir / "tokenizer.json").exists()


def test_the_main_pipeline_evaluates_fine_tunes_trains_and_resumes_further(tiny_path, tmp_path) -> None:
    """cpu-demo's stages on the tiny model: eval → demos → SFT → eval → RL → eval, then more RL."""
    from l0_learner.run import main

    out = tmp_path / "pipeline"
    args = cli_args(
        tiny_path, out, "--no-tensorboard", "--sft-demos", "4", "--sft-epochs", "1", env="notebook"
    )
    args += ["--tasks", "hotpotqa-dev[400:]", "--eval-questions", "2", "--eval-max-steps", "2"]
    args += ["--iterations", "1"]
    result = main(args)
    assert [e["stage"] for e in result["evals"]] == ["before SFT", "after SFT", "after RL"]
    assert all(e["n"] == 2 for e in result["evals"])
    # Each stage's questions are recorded, and no question is in two stages.
    data = json.loads((out / "data.json").read_text())
    assert data["eval"]["ids"] == [t["id"] for t in load_eval_tasks("hotpotqa-dev[:2]")]
    assert data["rl"]["n"] == 1245 - 400 and data["sft"]["n"] == 100
    ids = {stage: set(d["ids"]) for stage, d in data.items()}
    assert not (ids["eval"] & ids["rl"] or ids["eval"] & ids["sft"] or ids["rl"] & ids["sft"])
    demo_ids = {json.loads(line)["task_id"] for line in (out / "demonstrations.jsonl").open()}
    assert demo_ids <= ids["sft"], "demonstrations come from the SFT questions only"
    # Every evaluation after the first is compared, paired, with the one before.
    assert "vs" not in result["evals"][0]
    assert [e["vs"]["stage"] for e in result["evals"][1:]] == ["before SFT", "after SFT"]
    assert all(e["vs"]["n"] == 2 for e in result["evals"][1:])
    assert (out / "eval" / "after-RL.jsonl").exists() and (out / "curves.png").stat().st_size > 10_000
    stages = json.loads((out / "stages.json").read_text())
    assert (stages["final"], stages["eval_after_rl"]) == (1, 1)
    assert (out / "sft" / "config.json").exists() and (out / "final" / "config.json").exists()
    assert len((out / "demonstrations.jsonl").read_text().splitlines()) == 4
    results = (out / "results.md").read_text()
    assert "after RL = after 1 policy updates" in results
    assert "- after RL vs after SFT: EM" in results and "McNemar" in results
    # Training further on resume re-evaluates after RL; the earlier stages are not redone.
    result = main([*args[:-1], "2", "--resume"])
    assert [e["stage"] for e in result["evals"]] == ["before SFT", "after SFT", "after RL"]
    assert result["evals"][-1]["iterations"] == 2 and result["iterations"] == 2
    assert json.loads((out / "stages.json").read_text())["eval_after_rl"] == 2
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3  # SFT line + 2 iterations


def test_stages_that_share_questions_are_refused_before_anything_runs(tiny_path, tmp_path) -> None:
    from l0_learner.run import main

    out = tmp_path / "overlap"
    args = cli_args(tiny_path, out, "--no-tensorboard", "--sft-demos", "4", env="notebook")
    with pytest.raises(ValueError, match="'rl' and 'sft' questions overlap in 100"):
        main(args)  # RL on the bundled train questions, which the demonstrations use
    args = cli_args(tiny_path, out, "--tasks", "hotpotqa-dev[:50]", "--eval-questions", "8", env="notebook")
    with pytest.raises(ValueError, match="'rl' and 'eval' questions overlap in 8"):
        main(args)
    assert not out.exists() or not any(out.iterdir()), "nothing was written"
