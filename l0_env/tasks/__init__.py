"""Task sources: the bundled HotpotQA sample, JSONL/Parquet files, GAIA's layout, in-memory rows."""

from l0_env.tasks.files import StagedFile, resolve_task_files, stage_files
from l0_env.tasks.sources import FILE_TASKS_DIR, Task, load_tasks, task_from_mapping

__all__ = [
    "FILE_TASKS_DIR",
    "StagedFile",
    "Task",
    "load_tasks",
    "resolve_task_files",
    "stage_files",
    "task_from_mapping",
]
