"""Attacks through attached files (issue 14): hostile names and paths in task data, pseudo-files
that would leak host state, and hostile file contents parsed by ``view_file`` inside the sandbox
(a zip bomb disguised as a spreadsheet, a huge PDF, a corrupt one). Each attack fails with a clear
message, the host is untouched, and the env goes on.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import pytest

from l0_env.tasks import load_tasks, task_from_mapping
from l0_env.tasks.files import MAX_FILE_BYTES

from .conftest import TASK, assert_env_works, cell_text, make_env, step


def gaia(tmp_path: Path, file_name: str) -> Path:
    root = tmp_path / "gaia"
    root.mkdir(exist_ok=True)
    row = {"task_id": "t", "Question": "Q?", "Final answer": "x", "file_name": file_name}
    (root / "metadata.jsonl").write_text(json.dumps(row) + "\n")
    return root


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "../metadata.jsonl", "sub/../../x"])
def test_dataset_paths_that_leave_the_dataset_directory_are_refused(tmp_path, name) -> None:
    (tmp_path / "x").write_text("outside")
    with pytest.raises(ValueError, match="outside the task file's directory"):
        load_tasks(gaia(tmp_path, name))


def test_a_symlink_in_the_dataset_pointing_out_is_refused(tmp_path) -> None:
    root = gaia(tmp_path, "notes.txt")
    (root / "notes.txt").symlink_to("/etc/passwd")
    with pytest.raises(ValueError, match="outside the task file's directory"):
        load_tasks(root)


@pytest.mark.parametrize("path", ["/proc/self/environ", "/proc/1/cmdline", "/dev/zero", "/sys/kernel/notes"])
def test_pseudo_files_holding_host_state_are_never_attached(path) -> None:
    if not os.path.exists(path):
        pytest.skip(f"{path} does not exist here")
    with pytest.raises(ValueError, match=r"pseudo-file|not a regular file"):
        task_from_mapping({"question": "Q?", "answer": "a", "files": [path]}, default_id="t")


def test_a_file_over_the_cap_is_refused_at_load(tmp_path) -> None:
    huge = tmp_path / "huge.pdf"
    with open(huge, "wb") as f:
        f.write(b"%PDF-1.4\n")
        f.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(ValueError, match="MiB"):
        task_from_mapping({"question": "Q?", "answer": "a", "files": [str(huge)]}, default_id="t")


def zip_bomb(kind: str) -> bytes:
    """A valid-looking xlsx/docx whose main part inflates to 1 GiB of zeros (about 1 MiB on disk)."""
    part = "xl/worksheets/sheet1.xml" if kind == "xlsx" else "word/document.xml"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        if kind == "xlsx":  # what makes it a workbook to a sniffer
            z.writestr("xl/workbook.xml", "<workbook/>")
        info = zipfile.ZipInfo(part)
        info.compress_type = zipfile.ZIP_DEFLATED  # a bare ZipInfo would store the gigabyte
        with z.open(info, "w", force_zip64=True) as f:
            chunk = b"\0" * (1 << 20)
            for _ in range(1024):
                f.write(chunk)
    return buf.getvalue()


def many_page_pdf(pages: int) -> bytes:
    """A valid PDF with ``pages`` pages sharing one content stream."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{5 + i} 0 R" for i in range(pages)).encode()
    objs.append(b"<< /Type /Pages /Kids [" + kids + b"] /Count " + str(pages).encode() + b" >>")
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    content = b"BT /F1 12 Tf 72 720 Td (Page text here) Tj ET"
    objs.append(b"<< /Length " + str(len(content)).encode() + b" >>\nstream\n" + content + b"\nendstream")
    for _ in range(pages):
        objs.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 3 0 R >> >> >>"
        )
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, start=1):
        offsets.append(out.tell())
        out.write(f"{i} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode())
    for off in offsets:
        out.write(f"{off:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


@pytest.fixture
def hostile_files(tmp_path) -> list[str]:
    files = {
        "bomb.xlsx": zip_bomb("xlsx"),
        "bomb.docx": zip_bomb("docx"),
        "long.pdf": many_page_pdf(20_000),
        "corrupt.pdf": b"%PDF-1.7\n" + os.urandom(4096),
        "deep.json": b"[" * 200_000 + b"]" * 200_000,
        "liar.png": b"\x89PNG\r\n\x1a\n" + b"\xff" * 64,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return [str(tmp_path / name) for name in files]


def test_hostile_files_give_clear_errors_in_the_sandbox_and_the_env_goes_on(hostile_files) -> None:
    env = make_env(tasks=[{**TASK, "files": hostile_files}])
    try:
        env.reset(seed=0)
        code = (
            "for name in ['bomb.xlsx', 'bomb.docx', 'corrupt.pdf', 'deep.json', 'liar.png']:\n"
            "    try:\n"
            "        out = view_file(name)\n"
            "        print(name, 'OK', len(out), out[:200].replace(chr(10), ' '))\n"
            "    except Exception as e:\n"
            "        print(name, 'ERR', type(e).__name__, str(e)[:200])\n"
        )
        _, _, info = step(env, code)
        text = cell_text(info)
        assert info["cell_status"] == "ok" and not info["kernel_restarted"], text
        for name in ("bomb.xlsx", "bomb.docx"):
            line = next(x for x in text.splitlines() if x.startswith(name))
            assert " ERR " in line, line  # refused before inflating, not parsed
        assert "corrupt.pdf ERR" in text, text
        _, _, info = step(env, "out = view_file('long.pdf')\nprint(len(out) < 4000, out.splitlines()[-1])")
        text = cell_text(info)
        assert info["cell_status"] == "ok" and "True" in text and "view_file('long.pdf', page=2)" in text, (
            text
        )
        assert_env_works(env)
    finally:
        env.close()
