"""The bundled file tasks (``l0_env/data/file_tasks/``): layout, reproducibility, oracles.

Host-side and fast. The oracle code is executed here, on the host, which is fine only because
these are our own generated files and our own code; the env runs the same code inside the sandbox.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from l0_env.answers import exact_match, numbers_match, parse_number
from l0_env.tasks import Task

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "l0_env" / "data" / "file_tasks"
SCRIPT = REPO / "scripts" / "build_file_tasks.py"
REGENERATE = f"python {SCRIPT.relative_to(REPO)}"
HAND_WRITTEN = {"NOTICE.md"}
KEYS = ("task_id", "Question", "Level", "Final answer", "file_name")


def load_rows() -> list[dict[str, Any]]:
    with (DATA / "metadata.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


ROWS = load_rows()
BY_ID = {row["task_id"]: row for row in ROWS}

# A plausible wrong way to solve each task. Each must run and submit something that does NOT
# score, which shows the question needs more than the obvious first look at the file.
NAIVE = {
    "ft01-invoices-total": """
import csv
with open("invoices.csv", newline="") as f:
    submit_final_answer(next(csv.DictReader(f))["amount"])  # the first row, not the sum
""",
    "ft02-orders-top-customer": """
import csv
from collections import Counter
units = Counter()
with open("orders.csv", newline="") as f:
    for row in csv.DictReader(f):
        units[row["customer"]] += int(row["quantity"])  # most units, not most orders
submit_final_answer(units.most_common(1)[0][0])
""",
    "ft03-sales-north-2024": """
from openpyxl import load_workbook
for row in load_workbook("sales.xlsx").active.iter_rows(values_only=True):  # the first sheet: 2023
    if row[0] == "North":
        submit_final_answer(sum(row[1:5]))
""",
    "ft04-report-km-replaced": """
import re
from pypdf import PdfReader
text = PdfReader("report.pdf").pages[0].extract_text()  # page 1 only: the target, not the result
submit_final_answer(re.search(r"([0-9.]+) km", text).group(1))
""",
    "ft05-memo-logistics-owner": """
import docx
table = docx.Document("memo.docx").tables[0]
submit_final_answer(table.rows[1].cells[2].text)  # the first budget line's owner
""",
    "ft06-config-replica-pool": """
import json
config = json.load(open("config.json"))
submit_final_answer(config["database"]["primary"]["pool"]["max_size"])  # the wrong database
""",
    "ft07-page-price": """
import re
html = open("page.html").read()  # a regex over the raw page finds the script's price first
submit_final_answer(re.search(r"Trail Runner X2\\D*?([0-9]+\\.[0-9]+)", html).group(1))
""",
    "ft08-notes-due-date": """
import re
text = open("meeting_notes.md").read()
submit_final_answer(re.search(r"\\d{4}-\\d{2}-\\d{2}", text).group())  # the meeting's date
""",
    "ft09-log-error-count": """
submit_final_answer(open("server.log").read().count("ERROR"))  # counts messages quoting ERROR too
""",
    "ft10-chart-width": """
import struct
with open("chart.png", "rb") as f:
    width, height = struct.unpack(">II", f.read(24)[16:24])
submit_final_answer(height)  # the other dimension
""",
    "ft11-no-file-bottles": """
submit_final_answer(17 * 24 + 9)  # forgets the shipment
""",
}


def run_cell(code: str, row: dict[str, Any], workdir: Path, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Run ``code`` as the kernel would (one cell, cwd = a directory holding a read-only copy of
    the task's file) and return what it passed to ``submit_final_answer``."""
    if row["file_name"]:
        copy = workdir / row["file_name"]
        shutil.copyfile(DATA / row["file_name"], copy)
        copy.chmod(0o444)
    submitted: list[Any] = []
    namespace = {"__name__": "__main__", "submit_final_answer": submitted.append}
    monkeypatch.chdir(workdir)
    exec(compile(code, f"<cell {row['task_id']}>", "exec"), namespace)
    return submitted


def env_score(row: dict[str, Any], value: Any) -> float:
    """The env's answer score: numbers within the default tolerance, text by exact match."""
    if row.get("answer_type") == "number":
        return numbers_match(str(value), [row["Final answer"]])
    return exact_match(str(value), [row["Final answer"]])


def test_metadata_is_gaia_layout_and_loads_as_tasks() -> None:
    assert 8 <= len(ROWS) <= 12
    assert len(BY_ID) == len(ROWS), "task ids must be unique"
    for row in ROWS:
        assert all(key in row for key in KEYS), f"{row.get('task_id')}: missing one of {KEYS}"
        assert set(row) <= {*KEYS, "answer_type", "tolerance", "oracle_code"}, row["task_id"]
        assert row["Level"] in (1, 2), row["task_id"]
        assert isinstance(row["Final answer"], str) and row["Final answer"].strip(), row["task_id"]
        assert isinstance(row["file_name"], str), row["task_id"]
        assert row.get("answer_type", "number") == "number", row["task_id"]
        assert isinstance(row["oracle_code"], str) and "submit_final_answer(" in row["oracle_code"]
        # Task validates a numeric gold (it refuses answer_type "number" on a non-number).
        metadata = {k: row[k] for k in ("answer_type", "tolerance") if k in row}
        task = Task(row["task_id"], row["Question"], (row["Final answer"],), metadata=metadata)
        assert (task.numeric_tolerance is not None) == ("answer_type" in row)
    suffixes = {Path(row["file_name"]).suffix for row in ROWS}
    assert {".csv", ".xlsx", ".pdf", ".docx", ".json", ".html", ".md", ".png", ""} <= suffixes
    assert {row["Level"] for row in ROWS} == {1, 2}


def test_every_file_name_is_plain_and_present_and_nothing_else_is() -> None:
    names = [row["file_name"] for row in ROWS if row["file_name"]]
    for name in names:
        assert "/" not in name and "\\" not in name and not name.startswith("."), name
        assert (DATA / name).is_file() and not (DATA / name).is_symlink(), name
    on_disk = {p.name for p in DATA.iterdir()}
    expected = {*names, "metadata.jsonl", *HAND_WRITTEN}
    assert on_disk == expected, f"stray or missing files: {on_disk ^ expected}; rerun {REGENERATE}"
    total = sum((DATA / name).stat().st_size for name in on_disk)
    assert total < 200 * 1024, f"the bundled file tasks take {total} bytes; keep them small"


def test_the_generator_reproduces_the_committed_bytes(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], check=True, capture_output=True)
    built = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    committed = {p.name: p.read_bytes() for p in DATA.iterdir() if p.name not in HAND_WRITTEN}
    assert set(built) == set(committed)
    differ = sorted(name for name in built if built[name] != committed[name])
    assert not differ, (
        f"{differ} differ from a fresh build: the generator changed without `{REGENERATE}` being run, "
        f"or it is not deterministic (zlib here: {zlib.ZLIB_RUNTIME_VERSION}; zlib-ng deflates differently)"
    )


@pytest.mark.parametrize("task_id", list(BY_ID))
def test_the_oracle_code_computes_the_final_answer_from_the_file(
    task_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = BY_ID[task_id]
    code, gold = row["oracle_code"], row["Final answer"]
    # The oracle must read the answer, not state it: the gold must not be written in the code.
    assert not re.search(rf"(?<![\w.]){re.escape(gold)}(?![\w.])", code), (
        f"{task_id}: oracle hard-codes {gold!r}"
    )
    submitted = run_cell(code, row, tmp_path, monkeypatch)
    assert len(submitted) == 1, f"{task_id}: submit_final_answer called {len(submitted)} times"
    value = submitted[0]
    assert isinstance(value, (str, int, float)) and not isinstance(value, bool)
    if row.get("answer_type") == "number":
        assert math.isclose(parse_number(str(value)), float(gold), rel_tol=1e-9), (task_id, value, gold)
    else:
        assert value == gold, (task_id, value, gold)
    assert env_score(row, value) == 1.0


def test_every_task_has_a_naive_wrong_solution() -> None:
    assert set(NAIVE) == set(BY_ID)


@pytest.mark.parametrize("task_id", list(NAIVE))
def test_a_naive_reading_does_not_score(
    task_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = BY_ID[task_id]
    submitted = run_cell(NAIVE[task_id], row, tmp_path, monkeypatch)
    assert len(submitted) == 1, f"{task_id}: the naive code should run and submit once"
    assert env_score(row, submitted[0]) == 0.0, f"{task_id}: {submitted[0]!r} scores; the task is trivial"


def test_the_hand_written_pdf_has_an_exact_xref_and_the_answer_only_on_page_2() -> None:
    from pypdf import PdfReader

    data = (DATA / "report.pdf").read_bytes()
    startxref = int(re.search(rb"startxref\n(\d+)\n%%EOF\n$", data).group(1))
    table = data[startxref:]
    assert table.startswith(b"xref\n0 ")
    count = int(table.split(b"\n")[1].split()[1])
    entries = table.split(b"\n")[2 : 2 + count]
    assert entries[0] == b"0000000000 65535 f "
    for number, entry in enumerate(entries[1:], 1):
        offset = int(entry[:10])
        assert data[offset:].startswith(b"%d 0 obj\n" % number), f"xref entry {number} points to {offset}"
    for length, stream in re.findall(rb"/Length (\d+) >>\nstream\n(.*?)\nendstream", data, re.S):
        assert int(length) == len(stream)
    reader = PdfReader(DATA / "report.pdf", strict=True)
    assert len(reader.pages) == 2
    pages = [page.extract_text() for page in reader.pages]
    assert "Water main replaced in 2023: 14.6 km" in pages[1]
    assert "14.6" not in pages[0] and "Harbor Valley Water Cooperative" in pages[0]


def test_the_hand_written_png_has_valid_chunks_and_pixels() -> None:
    data = (DATA / "chart.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), f"bad CRC in {kind!r}"
        chunks.append((kind, body))
        pos += 12 + length
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, colour, *_ = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour) == (8, 2)
    assert str(width) == BY_ID["ft10-chart-width"]["Final answer"]
    raw = zlib.decompress(chunks[1][1])
    assert len(raw) == height * (1 + 3 * width)
    assert all(raw[y * (1 + 3 * width)] == 0 for y in range(height))


def test_pillow_reads_the_png_when_installed() -> None:
    image_module = pytest.importorskip("PIL.Image")
    with image_module.open(DATA / "chart.png") as image:
        image.load()
        assert image.size == (437, 163) and image.mode == "RGB"
