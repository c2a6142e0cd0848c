"""``NotebookEnv``: L0's NB-Agent episode (Think → Code → Observe) as a gymnasium environment.

Each action is text with one ``<think>`` and one ``<code>`` block. The code runs as a cell in a
persistent, sandboxed IPython kernel where the tools are Python objects. The observation is the
chat context for the policy's next turn. The episode ends when the agent calls
``submit_final_answer`` (terminated) or runs out of steps or context (truncated).

Rewards follow L0: the per-step rewards sum to ``0.8·qa + 0.1·mean(format) + 0.1·mean(code)``
(see ``rewards.online_step_reward``); the raw per-step components are in
``info["reward_components"]`` so a learner can re-allocate them as L0 does.

The public surface that wrappers use (the vector env, the PettingZoo env, benchmarks, tests):
the read-only properties ``task``, ``kernel``, ``kernel_pool``, ``notepad``, ``tool_counts``,
``final_answer`` and ``episode``, the ``actor`` attribute (multi-agent envs), and ``context()``
(the chat context, optionally from another agent's point of view). Nothing outside this module
reads the private attributes.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from . import rewards as R
from .actions import ParsedAction, format_help, parse_action
from .builtin_tools import VIEW_FILE_DOC, AnswerSlot, builtin_tools
from .context import (
    MESSAGE_OVERHEAD_TOKENS,
    RenderedContext,
    StepRecord,
    approx_token_count,
    build_system_prompt,
    render_context,
    task_message,
)
from .env_args import check_dataclass_arg, check_int, check_record_dir, check_seconds
from .kernel.pool import KernelPool
from .kernel.sandbox import SandboxLimits
from .kernel.session import CellResult, KernelConfig, SandboxedKernel
from .mcp_tools import MCPServerConnection, check_mcp_servers
from .recording import EpisodeLog, StepLog, record_episode, save_notebook
from .spaces import ChatSpace, TextSpace
from .tasks import Task, load_tasks, task_from_mapping
from .tool import Tool, as_tools
from .tool_service import ToolService
from .tools import make_search_backend
from .tools.search import SearchBackend

log = logging.getLogger(__name__)


class NotebookEnv(gym.Env[list, str]):
    """The NB-Agent notebook environment.

    Args:
        tasks: None for the bundled HotpotQA sample (``split``), a JSONL/Parquet path, or a list of
            dicts with ``question`` and ``answers``.
        split: which bundled split when ``tasks`` is None ("dev" or "train").
        corpus: passage file for the default BM25 search (None: the bundled HotpotQA passages).
        search: which search backs ``web_search``/``open_page``: None or "bm25" (embedded BM25
            over ``corpus``), "dense", "hybrid", "http://host:port" (our search server or any
            Search-R1 retrieval server), "serper" (needs ``$SERPER_API_KEY``), a mapping with
            options, or a ``SearchBackend`` instance (see ``l0_env.tools.make_search_backend``).
        max_steps: steps per episode before truncation.
        cell_timeout: seconds a cell may run (finite, > 0).
        sandbox: "auto", "bwrap" or "none" (see ``KernelConfig``).
        kernel_start: "auto" (default: "zygote" on a sandboxed root host, else "spawn"), "spawn"
            or "zygote": kernels forked from a warm interpreter into the same sandbox, about a
            fifth of the CPU per start (root hosts; elsewhere a warning and "spawn"). See
            ``KernelConfig`` and ``l0_env.kernel.zygote``.
        max_context_tokens: budget of the rendered context; older steps are dropped past it. Must
            exceed the system prompt's tokens.
        max_action_chars: longer actions are cut (the agent is told).
        max_output_chars: characters of a cell's output shown to the agent (>= 100).
        tools: more tools for the agent, next to the built-in ``web_search``, ``open_page`` and
            ``submit_final_answer``: plain functions with type hints and a docstring, or
            :class:`l0_env.tool.Tool` s (budget, timeout). See :mod:`l0_env.tool`.
        mcp_servers: ``{name: URL or {"command", "args", "env", "cwd"}}``: MCP servers whose tools
            the kernel gets as ``name.<tool>(...)`` (stdio ones are started here and stopped at
            ``close``). See :mod:`l0_env.mcp_tools`.
        tool_budgets: per-episode call limits by tool name, over each tool's own (the built-ins':
            ``{"web_search": 20, "open_page": 40}``); ``None`` lifts one; an unknown tool name is
            an error. Whatever the budgets, the kernel's requests of any kind are limited per
            step and per episode (see ``l0_env.tool_requests``).
        tool_timeout: seconds a tool call may take before the agent gets a ToolError (for tools
            without their own timeout).
        reward_weights: L0's by default; a ``RewardWeights``, a dict of its fields (``{"preset":
            "paper", ...}`` starts from a preset) or a preset name (``"l0"``, ``"paper"``).
        limits: sandbox resource limits; a ``SandboxLimits`` or a dict of its fields.
        pool_size: warm kernels kept ready (0: start at reset).
        kernel_pool: share a pool between envs (the env then does not close it).
        count_tokens: token counter for the context budget (default: ~4 characters per token).
        record_dir: when set, every finished episode is appended to ``record_dir/episodes.jsonl``
            and saved as ``record_dir/<episode>.ipynb`` (works in every vectorized flavour). It is
            created and test-written here: one that cannot be written is a ValueError now.
        render_mode: None or "ansi".

    Raises:
        ValueError: An argument out of range or of the wrong type; the message names it.

    Under gymnasium's standard wrappers:

    * ``RecordEpisodeStatistics`` (``gymnasium.wrappers`` and ``gymnasium.wrappers.vector``) adds
      ``info["episode"]`` (``r``, ``l``, ``t``) at an episode's end; the env's own end-of-episode
      metrics are ``info["episode_metrics"]``, so the two never clash.
    * ``TimeLimit`` (also what ``gym.make(..., max_episode_steps=N)`` adds) sets ``truncated``
      after this env's ``step`` has returned, and the env cannot see it. Where the wrapper cuts
      an episode before ``max_steps``, that step is an ordinary step for the env: its
      ``reward_components["qa"]`` is ``None`` (no ``em``/``f1``/``has_answer``), there is no
      ``info["episode_metrics"]``, the episode is not written to ``record_dir``, and ``episode``
      stays unfinished (``terminated`` and ``truncated`` False, no ``metrics``) until the next
      ``reset`` or ``close`` releases its kernel. The system prompt and the budget notice keep
      counting down to ``max_steps``. The rewards are still the env's own: an episode the wrapper
      cuts has no answer (``submit_final_answer`` terminates the episode inside the env), and no
      answer scores ``qa = 0`` under any weights, so the rewards sum to L0's trajectory reward of
      the steps taken. To have the env score, record and announce the limit, set it with
      ``max_steps=N`` instead.
    """

    metadata = {"render_modes": ["ansi"]}  # noqa: RUF012 - gymnasium's convention
    action_space: TextSpace
    observation_space: ChatSpace

    def __init__(
        self,
        *,
        tasks: str | Sequence[Mapping[str, Any]] | None = None,
        split: str = "dev",
        corpus: str | None = None,
        search: str | Mapping[str, Any] | SearchBackend | None = None,
        max_steps: int = 12,
        cell_timeout: float = 30.0,
        sandbox: str = "auto",
        kernel_start: str = "auto",
        max_context_tokens: int = 16_000,
        max_action_chars: int = 32_000,
        max_output_chars: int = 4_000,
        tools: Sequence[Tool | Callable[..., Any]] | None = None,
        mcp_servers: Mapping[str, Any] | None = None,
        tool_budgets: Mapping[str, int | None] | None = None,
        tool_timeout: float = 20.0,
        reward_weights: R.RewardWeights | Mapping[str, Any] | str | None = None,
        limits: SandboxLimits | Mapping[str, Any] | None = None,
        pool_size: int = 1,
        kernel_pool: KernelPool | None = None,
        count_tokens: Callable[[str], int] | None = None,
        record_dir: str | os.PathLike[str] | None = None,
        render_mode: str | None = None,
    ) -> None:
        check_int("max_steps", max_steps, 1)
        check_int("max_action_chars", max_action_chars, 1)
        check_int("max_output_chars", max_output_chars, 100)
        check_int("pool_size", pool_size, 0)
        check_int("max_context_tokens", max_context_tokens, 1)
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        if count_tokens is not None and not callable(count_tokens):
            raise ValueError(f"count_tokens must be a callable str -> int, got {type(count_tokens).__name__}")
        if kernel_pool is not None and not isinstance(kernel_pool, KernelPool):
            raise ValueError(f"kernel_pool must be a KernelPool or None, got {type(kernel_pool).__name__}")
        self.tasks: list[Task] = load_tasks(tasks, split=split)
        if not self.tasks:
            raise ValueError("no tasks: the task source is empty")
        self.tool_timeout = check_seconds("tool_timeout", tool_timeout)
        self._answer_slot = AnswerSlot()
        user_tools = as_tools(tools)
        servers = check_mcp_servers(mcp_servers)
        self.mcp_servers: dict[str, MCPServerConnection] = {}
        try:  # the MCP servers started here must not outlive a constructor that fails
            for name, spec in servers.items():
                self.mcp_servers[name] = MCPServerConnection(name, spec, timeout=self.tool_timeout)
            mcp_tools = [t for server in self.mcp_servers.values() for t in server.tools()]
            self.tool_service = ToolService(
                [*builtin_tools(lambda: self.search, self._answer_slot), *user_tools, *mcp_tools],
                budgets=tool_budgets,
                timeout=self.tool_timeout,
            )
            self.tool_budgets = self.tool_service.budgets
            self.kernel_config = KernelConfig(
                sandbox=sandbox,  # type: ignore[arg-type]  # any str: KernelConfig refuses all but the 3 modes
                limits=check_dataclass_arg(
                    "limits", SandboxLimits() if limits is None else limits, SandboxLimits
                ),
                cell_timeout=check_seconds("cell_timeout", cell_timeout),
                max_output_chars=max_output_chars,
                tools=self.tool_service.stubs,
                kernel_start=kernel_start,  # type: ignore[arg-type]  # KernelConfig refuses other values
            )
            if kernel_pool is not None and kernel_pool.config.tools != self.kernel_config.tools:
                raise ValueError(
                    "kernel_pool: its kernels define other tools than this env's "
                    f"({[t.name for t in kernel_pool.config.tools]} vs {[t.name for t in self.kernel_config.tools]}); "
                    "build the pool with this env's kernel_config"
                )
            self.max_steps = max_steps
            self.max_context_tokens = max_context_tokens
            self.max_action_chars = max_action_chars
            try:
                weights = R.as_reward_weights(reward_weights)
            except ValueError as exc:
                raise ValueError(f"reward_weights: {exc}") from None
            self.reward_weights = check_dataclass_arg("reward_weights", weights, R.RewardWeights)
            self.count_tokens = count_tokens or approx_token_count
            self.render_mode = render_mode
            self.record_dir = check_record_dir(record_dir) if record_dir is not None else None
            self._episodes_done = 0
            self._corpus = corpus
            self._search_spec = search
            self._search: SearchBackend | None = search if isinstance(search, SearchBackend) else None
            self._pool = kernel_pool
            self._owns_pool = kernel_pool is None
            self._pool_size = pool_size
            self.action_space = TextSpace(max_length=max_action_chars * 4)
            self.observation_space = ChatSpace()
            docs = self.tool_service.docs()
            if any(task.files for task in self.tasks):
                docs = [*docs, VIEW_FILE_DOC]
            self.system_prompt = build_system_prompt(docs, max_steps=max_steps)
            floor = self.count_tokens(self.system_prompt) + 2 * MESSAGE_OVERHEAD_TOKENS
            if max_context_tokens <= floor:
                raise ValueError(
                    f"max_context_tokens={max_context_tokens} does not exceed the system prompt alone "
                    f"({floor} tokens): every episode would end at its first step"
                )
            self._kernel: SandboxedKernel | None = None
            self._episode: EpisodeLog | None = None
            self._task: Task | None = None
            self._done = True
            self._closed = False
            self._history: list[StepRecord] = []
            self.actor: str | None = None  # who acts, recorded with each step (multi-agent envs set it)
        except BaseException:
            self._close_mcp_servers()
            raise

    # -- the search backend and kernels start lazily: gymnasium builds throwaway envs to read spaces

    @property
    def search(self) -> SearchBackend:
        if self._search is None:  # one shared instance per setting per process (thread-safe)
            self._search = make_search_backend(self._search_spec, corpus=self._corpus)
        return self._search

    @property
    def kernel_pool(self) -> KernelPool:
        """The pool this env takes its kernels from (its own, started on first use, or the shared
        ``kernel_pool`` it was given)."""
        if self._pool is None:
            self._pool = KernelPool(self.kernel_config, size=self._pool_size)
        return self._pool

    def _acquire_kernel(self) -> SandboxedKernel:
        return self.kernel_pool.acquire()

    # -- the running episode, read-only (for wrappers, monitors and tests) ----------------------

    @property
    def task(self) -> Task | None:
        """The current (or last) episode's task; ``None`` before the first ``reset``."""
        return self._task

    @property
    def kernel(self) -> SandboxedKernel | None:
        """The running episode's sandboxed kernel, ``None`` between episodes.

        For monitoring and fault injection (its ``pid``, ``cgroup``); running cells on it
        bypasses the episode's records and rewards.
        """
        return self._kernel

    @property
    def notepad(self) -> dict[str, Any]:
        """A copy of the notepad's last state (empty between episodes)."""
        return copy.deepcopy(self._kernel.notepad_state) if self._kernel is not None else {}

    @property
    def tool_counts(self) -> dict[str, int]:
        """A copy of this episode's tool calls so far (those that passed the argument checks), ``{tool name: calls}``."""
        return dict(self.tool_service.counts)

    @property
    def final_answer(self) -> str | None:
        """The answer submitted in the current (or last) episode, ``None`` if none yet."""
        return self._answer_slot.answer

    def context(
        self,
        *,
        system: str | None = None,
        history: Sequence[StepRecord] | None = None,
        task_note: str = "",
        steps_left: int | None = None,
    ) -> RenderedContext:
        """The chat context for the next step, trimmed to ``max_context_tokens``.

        With no arguments it is the observation ``step`` returned last. A multi-agent wrapper
        passes its agent's point of view: its own system prompt, the history as that agent saw
        it, a note after the task (e.g. what others did before the agent's first step) and the
        agent's own steps left; the task, notepad, budget and token counting stay the env's.

        Args:
            system: The system prompt (default: ``system_prompt``).
            history: Past steps, oldest first (default: this episode's steps).
            task_note: Text appended to the task message.
            steps_left: Steps left, shown in the budget notice (default: ``max_steps`` minus the
                steps taken).

        Raises:
            RuntimeError: Before the first ``reset``.
        """
        if self._task is None:
            raise RuntimeError("no task yet: call reset() first")
        history = self._history if history is None else history
        task = task_message(self._task.question, [os.path.basename(f) for f in self._task.files])
        return render_context(
            system=self.system_prompt if system is None else system,
            task=f"{task}\n\n{task_note}" if task_note else task,
            history=history,
            notepad=self._kernel.notepad_state if self._kernel else {},
            steps_left=self.max_steps - len(history) if steps_left is None else steps_left,
            max_context_tokens=self.max_context_tokens,
            count_tokens=self.count_tokens,
        )

    # -- gymnasium API -----------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[list, dict[str, Any]]:
        """Start an episode on a fresh kernel.

        A reset in the middle of an episode ends that episode unscored and unrecorded (see the
        class docstring on ``TimeLimit``).

        Args:
            seed: Seeds ``np_random``, which picks the task.
            options: ``{"task": Task | mapping}`` or ``{"task_index": int}`` choose the task.

        Returns:
            ``(observation, info)``: the chat messages ``[system, user (task, notepad, budget)]``
            and a fresh dict with these keys:

            ====================  ===========================================================
            ``task``              the task as a dict: ``id``, ``question``, ``answers``,
                                  ``supporting_titles``, ``metadata``
            ``step``              ``0``
            ``n_context_tokens``  tokens of the observation (the env's ``count_tokens``)
            ====================  ===========================================================

        Raises:
            ValueError: Bad options, or the task's attached files changed since they were loaded
                (gone, or over the size caps). A reset that raises ends the previous episode and holds no
                kernel: ``step`` then asks for a reset, and the next reset starts clean.
        """
        if self._closed:
            raise RuntimeError("the environment is closed")
        # First end the running episode: whatever fails below, no half-reset episode goes on (one
        # whose task changed under its kernel, scored against the wrong answers).
        self._done = True
        self._release_kernel()
        super().reset(seed=seed)
        task = self._choose_task(options or {})
        _ = self.search  # build/load the index before the first tool call, not during it
        kernel = self._acquire_kernel()
        self._task, self._kernel = task, kernel
        if task.files:
            try:
                kernel.attach_files(task.files)
            except (ValueError, RuntimeError):
                self._release_kernel()
                raise
        self._history = []
        self.tool_service.start_episode()
        self._answer_slot.answer = None
        self._episode = EpisodeLog(task=task.to_dict(), system_prompt=self.system_prompt)
        kernel.tool_handler = self.tool_service.handle
        self._done = False
        rendered = self.context()
        info = {"task": self._task.to_dict(), "step": 0, "n_context_tokens": rendered.n_tokens}
        return rendered.messages, info

    def step(self, action: Any) -> tuple[list, float, bool, bool, dict[str, Any]]:
        """Run the action's code as one cell; never raises for anything in the action or the cell.

        Args:
            action: The completion text (bytes are decoded; other objects go through ``str()``,
                and one whose ``str()`` raises is an empty action the agent is told about).

        Returns:
            ``(observation, reward, terminated, truncated, info)``. ``terminated``: the agent
            submitted an answer. ``truncated``: ``max_steps`` reached, or even the trimmed context
            no longer fits ``max_context_tokens``. ``reward``: this step's share of L0's
            trajectory reward (``rewards.online_step_reward``; with ``actor`` set, the format and
            code terms are averaged over that actor's own steps). ``info`` is a fresh dict:

            ========================  =====================================================
            ``step``                  this step's number, 1-based
            ``reward_components``     ``format`` (0/1, well-formed reply), ``code`` (the
                                      cell's execution reward), ``qa`` (``None`` before the
                                      end; at the end the answer reward, plus ``em``,
                                      ``f1`` and ``has_answer``)
            ``think``, ``code``       the parsed blocks (``None`` where missing)
            ``format_problems``       what was wrong with the reply's format (list of str)
            ``cell_status``           ``"ok"``, ``"error"`` (the code raised), ``"timeout"``,
                                      ``"died"`` (the kernel died), ``"output_limit"``
                                      (stopped for flooding); ``None`` when no code ran
            ``cell_outputs``          the cell's outputs, ``{"kind", "name", "text"}`` each
            ``kernel_restarted``      the kernel died or hung and was restarted this step
                                      (variables lost, notepad restored)
            ``notepad``               the notepad after the cell: ``plan``, ``facts``,
                                      ``draft``
            ``final_answer``          the submitted answer, ``None`` until there is one
            ``tool_calls``            bounded records of this step's tool requests: ``tool``,
                                      ``args`` (preview), ``ok``, ``error``, ``elapsed_s``
            ``tool_calls_dropped``    requests of this step left out of ``tool_calls``
            ``timings``               ``step_s`` (the whole step), ``cell_s`` (the cell)
            ``n_context_tokens``      tokens of the observation
            ``n_dropped_steps``       oldest steps trimmed out of the observation
            ``task``                  the task as a dict (as in ``reset``)
            ``episode_metrics``       at an episode's end only: ``return``, ``length``,
                                      ``em``, ``f1``, ``has_answer``, ``format_mean``,
                                      ``code_mean``, ``tool_calls`` (budgeted calls per
                                      tool). Not ``"episode"``: gymnasium's
                                      ``RecordEpisodeStatistics`` owns that key.
            ``record_error``          only when writing the episode to ``record_dir`` failed:
                                      why (the step's result is unaffected)
            ========================  =====================================================

        Raises:
            RuntimeError: No episode is running (call ``reset`` first).
        """
        if self._done or self._kernel is None or self._episode is None or self._task is None:
            raise RuntimeError("call reset() first: the episode has not started or has ended")
        started = time.monotonic()
        text, cut_note = self._coerce_action(action)
        parsed = parse_action(text)
        self.tool_service.ledger.start_step()
        cell: CellResult | None = None
        if parsed.code is not None and parsed.code.strip():
            cell = self._kernel.execute(parsed.code)
        t = len(self._episode.steps) + 1
        fmt = R.format_reward(parsed)
        # The host-known outcome (execute_reply status, timeout, death), not the outputs the cell controls.
        code_r = (
            self.reward_weights.code_reward(cell.n_outputs, cell.n_errors, failed=cell.status != "ok")
            if cell
            else 0.0
        )
        observation = self._observation(parsed, cell, cut_note)
        terminated = self._answer_slot.answer is not None
        truncated = not terminated and t >= self.max_steps
        # Each actor's steps are its own trajectory (one actor, None, in a single-agent episode).
        mine = [s.reward_components for s in self._episode.steps if s.actor == self.actor]
        formats = [c["format"] for c in mine] + [fmt]
        codes = [c["code"] for c in mine] + [code_r]
        components: dict[str, Any] = {"format": fmt, "code": code_r, "qa": None}
        self._history.append(StepRecord(action=text, observation=observation))
        rendered = self.context()
        if not (terminated or truncated) and rendered.n_tokens >= self.max_context_tokens:
            truncated = True  # even the trimmed context no longer fits: stop rather than loop
        qa = None
        if terminated or truncated:
            answer, golds, tol = self._answer_slot.answer, self._task.answers, self._task.numeric_tolerance
            qa = self.reward_weights.qa_reward(answer, golds, tolerance=tol)
            if tol is None:
                em, f1 = R.exact_match(answer, golds), R.f1_score(answer, golds)
            else:  # a number: within the tolerance or not (no partial credit)
                em = f1 = R.numbers_match(answer, golds, tolerance=tol)
            components.update(qa=qa, em=em, f1=f1, has_answer=R.has_answer(answer))
        reward = R.online_step_reward(len(formats), formats, codes, qa, self.reward_weights)
        notepad = copy.deepcopy(self._kernel.notepad_state)
        tool_calls, calls_dropped = self.tool_service.ledger.take_step()
        step_log = StepLog(
            index=t,
            action=text,
            think=parsed.think,
            code=parsed.code,
            problems=list(parsed.problems),
            observation=observation,
            outputs=list(cell.outputs) if cell else [],
            cell_status=cell.status if cell else None,
            reward=reward,
            reward_components=components,
            tool_calls=tool_calls,
            notepad=notepad,
            duration_s=time.monotonic() - started,
            actor=self.actor,
            tool_calls_dropped=calls_dropped,
        )
        self._episode.steps.append(step_log)
        self._episode.total_reward += reward
        record_error = (
            self._finish_episode(terminated, truncated, components) if terminated or truncated else None
        )
        info = {
            "step": t,
            "reward_components": dict(components),
            "think": parsed.think,
            "code": parsed.code,
            "format_problems": list(parsed.problems),
            "cell_status": cell.status if cell else None,
            "cell_outputs": [o.to_dict() for o in cell.outputs] if cell else [],
            "kernel_restarted": bool(cell and cell.restarted),
            "notepad": copy.deepcopy(notepad),
            "final_answer": self._answer_slot.answer,
            "tool_calls": copy.deepcopy(tool_calls),
            "tool_calls_dropped": step_log.tool_calls_dropped,
            "timings": {"step_s": step_log.duration_s, "cell_s": cell.duration_s if cell else 0.0},
            "n_context_tokens": rendered.n_tokens,
            "n_dropped_steps": rendered.n_dropped_steps,
            "task": self._task.to_dict(),
        }
        if terminated or truncated:
            info["episode_metrics"] = dict(self._episode.metrics)
        if record_error is not None:
            info["record_error"] = record_error
        return rendered.messages, float(reward), bool(terminated), bool(truncated), info

    def render(self) -> str | None:
        if self.render_mode != "ansi" or self._episode is None:
            return None
        if not self._episode.steps:
            return f"Task: {self._episode.task['question']}"
        last = self._episode.steps[-1]
        return f"Step {last.index}\n{last.action}\n--- observation ---\n{last.observation}"

    def close(self) -> None:
        """Kill this env's kernels (and its pool's warm ones). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._done = True
        self._release_kernel()
        if self._pool is not None and self._owns_pool:
            self._pool.close()
        self._close_mcp_servers()
        super().close()

    def _close_mcp_servers(self) -> None:
        for server in self.mcp_servers.values():
            try:
                server.close()
            except Exception as exc:  # one stuck server must not keep the others running
                log.warning("closing MCP server %r failed: %r", server.name, exc)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # -- recording -----------------------------------------------------------------------------

    @property
    def episode(self) -> EpisodeLog | None:
        """The current (or last) episode's full record."""
        return self._episode

    def save_notebook(self, path: str) -> str:
        """Write the current (or last) episode as an ``.ipynb`` notebook; returns the path."""
        if self._episode is None:
            raise RuntimeError("no episode to save: call reset() and step() first")
        return str(save_notebook(self._episode, path))

    # -- internals -----------------------------------------------------------------------------

    def _release_kernel(self) -> None:
        if self._kernel is not None:
            self._kernel.tool_handler = None
            self._kernel.close()
            self._kernel = None

    def _choose_task(self, options: Mapping[str, Any]) -> Task:
        if not isinstance(options, Mapping):
            raise ValueError(f"options must be a dict, got {type(options).__name__}")
        if "task" in options:
            task = options["task"]
            return task if isinstance(task, Task) else task_from_mapping(task, default_id="task-option")
        if "task_index" in options:
            index = options["task_index"]
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
                raise ValueError(f"options['task_index'] must be an int, got {index!r}")
            return self.tasks[int(index) % len(self.tasks)]
        return self.tasks[int(self.np_random.integers(len(self.tasks)))]

    def _coerce_action(self, action: Any) -> tuple[str, str | None]:
        if isinstance(action, (bytes, bytearray)):
            action = bytes(action).decode("utf-8", errors="replace")
        elif action is None:
            action = ""
        else:
            # str.__str__ makes a plain str: a str subclass could override the methods used below.
            try:
                action = str.__str__(action if isinstance(action, str) else str(action))
            except Exception as exc:  # a hostile __str__: the step goes on, the agent is told
                return "", f"Your reply could not be read as text (str() raised {type(exc).__name__})."
        # Lone surrogates (from bytes decoded with surrogateescape, or fuzzers) cannot be encoded to
        # the kernel or the records: replace them rather than fail the step.
        action = action.replace("\x00", "").encode("utf-8", errors="replace").decode("utf-8")
        if len(action) > self.max_action_chars:
            note = (
                f"Your reply was {len(action)} characters; only the first {self.max_action_chars} were read."
            )
            return action[: self.max_action_chars], note
        return action, None

    def _observation(self, parsed: ParsedAction, cell: CellResult | None, cut_note: str | None) -> str:
        notes = [cut_note] if cut_note else []
        if parsed.problems:
            notes.append("Format problems: " + "; ".join(parsed.problems) + ".")
        if cell is None:
            notes.append("No code was run. " + format_help())
            return "\n".join(notes)
        text = cell.text
        if self._answer_slot.answer is not None:
            text += f"\n\nFinal answer submitted: {self._answer_slot.answer!r}. The episode is over."
        return "\n".join([*notes, text]) if notes else text

    def _finish_episode(self, terminated: bool, truncated: bool, components: dict[str, Any]) -> str | None:
        """Close the episode's books; returns why recording failed, if it did (never raises)."""
        assert self._episode is not None
        self._done = True
        ep = self._episode
        ep.final_answer, ep.terminated, ep.truncated = self._answer_slot.answer, terminated, truncated
        n = len(ep.steps)
        ep.metrics = {
            "return": ep.total_reward,
            "length": n,
            "em": components["em"],
            "f1": components["f1"],
            "has_answer": components["has_answer"],
            "format_mean": sum(s.reward_components["format"] for s in ep.steps) / n,
            "code_mean": sum(s.reward_components["code"] for s in ep.steps) / n,
            "tool_calls": dict(self.tool_service.counts),
        }
        if self._kernel is not None:
            self._kernel.tool_handler = None  # no tool calls after the episode
        self._episodes_done += 1
        if self.record_dir is None:
            return None
        return record_episode(self.record_dir, f"{os.getpid()}-{id(self):x}-{self._episodes_done:05d}", ep)
