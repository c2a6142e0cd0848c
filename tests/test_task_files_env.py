"""Tasks with attached files through the real sandbox: the files are read-only in the kernel's
working directory, named in the task message, readable with ``view_file`` (parsed inside the
sandbox), there again after a kernel restart, and gone with the kernel. The issue's example
(files, a user function and a real MCP server in one env) passes ``check_l0_env``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest

import l0_env
from l0_env.checker import check_l0_env
from l0_env.kernel.sandbox import check_bwrap

pytestmark = pytest.mark.skipif(check_bwrap() is not None, reason=f"bubblewrap unavailable: {check_bwrap()}")

CSV = "customer,amount\nacme,1000\ninit,234\n"


def make(tasks: list[dict[str, Any]], **kwargs: Any) -> gym.Env:
    return gym.make(
        l0_env.ENV_ID, tasks=tasks, sandbox="bwrap", pool_size=0, cell_timeout=120, max_steps=20, **kwargs
    )


def run(env: gym.Env, code: str) -> tuple[str, dict[str, Any]]:
    _obs, _r, _term, _trunc, info = env.step(f"<think>Work with the file.</think><code>{code}</code>")
    return "\n".join(o.get("text", "") for o in info["cell_outputs"]), info


@pytest.fixture
def invoices(tmp_path: Path) -> Path:
    path = tmp_path / "invoices.csv"
    path.write_text(CSV)
    return path


def test_files_are_in_the_working_directory_read_only_and_named_in_the_task(invoices: Path) -> None:
    task = {
        "question": "What is the total of the 'amount' column?",
        "answers": ["1234"],
        "files": [str(invoices)],
    }
    env = make([task])
    try:
        obs, info = env.reset(seed=0)
        assert "Attached files (read-only, in your working directory): 'invoices.csv'" in obs[1]["content"]
        assert "view_file(name, page=1)" in obs[0]["content"]  # the system prompt documents it
        assert info["task"]["files"] == [str(invoices)]
        text, info = run(
            env, "import csv\nprint(sum(int(r['amount']) for r in csv.DictReader(open('invoices.csv'))))"
        )
        assert info["cell_status"] == "ok" and "1234" in text, text
        # Read-only: neither the link's target nor the mounted directory can be changed.
        text, _ = run(
            env,
            "import os\n"
            "for attempt in (lambda: open('invoices.csv', 'a').write('x'),\n"
            "                lambda: open('/task_files/new.txt', 'w'),\n"
            "                lambda: os.remove('/task_files/invoices.csv'),\n"
            "                lambda: os.chmod('/task_files/invoices.csv', 0o666)):\n"
            "    try:\n"
            "        attempt(); print('CHANGED')\n"
            "    except OSError as e:\n"
            "        print('refused', e.errno)\n",
        )
        assert "CHANGED" not in text and text.count("refused") == 4, text
        text, _ = run(env, "print(view_file('invoices.csv'))")
        assert "acme" in text and "1000" in text, text
        # A restarted kernel (fresh home) gets the files again.
        run(env, "import os; os._exit(1)")
        text, info = run(env, "print(open('invoices.csv').read())")
        assert "init,234" in text, text
        assert invoices.read_text() == CSV  # the host's file never changed
        files_dir = env.unwrapped.kernel.files_dir
        assert sorted(os.listdir(files_dir)) == ["invoices.csv"]
    finally:
        env.close()
    assert not os.path.exists(files_dir)


def test_tasks_without_files_keep_their_prompt_and_view_file_still_works(invoices: Path) -> None:
    env = make([{"question": "What is 2+2?", "answers": ["4"]}])
    try:
        obs, _ = env.reset(seed=0)
        assert "view_file" not in obs[0]["content"] and "Attached files" not in obs[1]["content"]
        # A task given at reset may bring files; the task message then names them.
        obs, _ = env.reset(
            options={"task": {"question": "Total?", "answers": ["1234"], "files": [str(invoices)]}}
        )
        assert "'invoices.csv'" in obs[1]["content"]
        text, _ = run(env, "print(view_file('invoices.csv', page=1))")
        assert "acme" in text, text
    finally:
        env.close()


def test_a_file_changed_after_load_fails_the_reset_clearly_and_the_env_goes_on(invoices: Path) -> None:
    env = make([{"question": "Total?", "answers": ["1234"], "files": [str(invoices)]}])
    try:
        env.reset(seed=0)
        invoices.unlink()
        with pytest.raises(ValueError, match=r"invoices\.csv"):
            env.reset(seed=0)
        assert env.unwrapped.kernel is None  # the kernel was released, not leaked
        invoices.write_text(CSV)
        env.reset(seed=0)
        text, _ = run(env, "print(open('invoices.csv').read().count('\\n'))")
        assert "3" in text
    finally:
        env.close()


def test_the_issue_example_files_a_function_and_an_mcp_server_pass_check_l0_env(invoices: Path) -> None:
    pytest.importorskip("mcp")
    server = str(Path(__file__).parent / "mcp_servers" / "geo_server.py")

    def stock_price(ticker: str) -> float:
        """Last closing price of a ticker."""
        return {"ACME": 12.5}.get(ticker, 0.0)

    kwargs = dict(tools=[stock_price], mcp_servers={"geo": {"command": sys.executable, "args": [server]}})
    task = {
        "question": "What is the total of the 'amount' column?",
        "answers": ["1234"],
        "files": [str(invoices)],
    }
    env = make([task], **kwargs)
    try:
        obs, _ = env.reset(seed=0)
        system = obs[0]["content"]
        assert "stock_price(ticker)" in system and "geo." in system and "view_file" in system
        text, info = run(env, "print(stock_price('ACME'), view_file('invoices.csv').count('acme'))")
        assert info["cell_status"] == "ok" and "12.5 1" in text, text
    finally:
        env.close()
    check_l0_env(make([task], **kwargs))
