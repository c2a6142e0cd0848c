"""Task sources: the bundled HotpotQA sample, JSONL/Parquet files, in-memory rows."""

from l0_env.tasks.sources import Task, load_tasks, task_from_mapping

__all__ = ["Task", "load_tasks", "task_from_mapping"]
