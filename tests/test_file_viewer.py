"""view_file (l0_env/kernel/in_kernel_files.py): every format, pagination, hostile files, and a real sandbox.

The module is kernel-side source; here it is loaded from its path, as plain Python, and run on
files the tests build themselves (trusted, so parsing them on the host is fine).
"""

from __future__ import annotations

import base64
import csv
import importlib.util
import io
import json
import os
import struct
import zipfile
import zlib
from pathlib import Path
from types import ModuleType

import pytest

SOURCE = Path(__file__).resolve().parent.parent / "l0_env" / "kernel" / "in_kernel_files.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("l0_in_kernel_files_under_test", SOURCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def fv() -> ModuleType:
    return _load()  # fresh per test: tests patch its limits


@pytest.fixture()
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The attached-files directory; the working directory is a sibling, as in the sandbox."""
    attached = tmp_path / "files"
    attached.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return attached


# ---------------------------------------------------------------------------------------------
# Files built here


def make_pdf(pages: list[list[str]]) -> bytes:
    """A valid PDF with one text line per string, written by hand (pypdf cannot add text)."""
    n = len(pages)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    for i, lines in enumerate(pages):
        escaped = [s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for s in lines]
        content = "BT /F1 10 Tf 14 TL 50 750 Td " + " ".join(f"({s}) Tj T*" for s in escaped) + " ET"
        data = content.encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(data) + data + b"\nendstream")
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return out


def make_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\x00\x00\x00" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def make_jpeg_header(width: int, height: int) -> bytes:
    """SOI, a large APP1 (as EXIF data is) before the frame header, then SOF0 with the size."""
    app1 = b"Exif\x00\x00" + b"\x00" * 70_000
    app1 = app1[:65_000]
    sof0 = struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return (
        b"\xff\xd8"
        + b"\xff\xe1"
        + struct.pack(">H", len(app1) + 2)
        + app1
        + b"\xff\xc0"
        + sof0
        + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00\xff\xd9"
    )


def make_zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


# ---------------------------------------------------------------------------------------------
# Text formats and pagination


def test_text_file_is_one_page_with_a_header(fv, files):
    (files / "notes.txt").write_text("first line\nsecond line\n")
    out = fv.make_view_file(str(files))("notes.txt")
    assert out == "# notes.txt (text, 23 bytes)\nfirst line\nsecond line\n"


def test_pages_are_bounded_cut_at_whitespace_and_complete(fv, files):
    words = [f"word{i}" for i in range(3000)]
    (files / "long.txt").write_text(" ".join(words))
    view = fv.make_view_file(str(files))
    first = view("long.txt")
    header, *_, footer = first.split("\n")
    assert header.startswith("# long.txt (text, ")
    n = int(footer.split(" of ")[1].split(" ")[0])
    assert footer == f"[page 1 of {n} — call view_file('long.txt', page=2) for more]"
    texts = []
    for page in range(1, n + 1):
        lines = view("long.txt", page).split("\n")
        text = "\n".join(lines[1:-1])
        assert len(text) <= fv.PAGE_CHARS
        texts.append(text)
        assert lines[-1].startswith(f"[page {page} of {n}")
    assert lines[-1] == f"[page {n} of {n}]"
    assert " ".join(texts).split() == words  # nothing lost, no word cut in two
    for bad in (0, -1, n + 1, "2", 1.0, True, None):
        with pytest.raises(ValueError, match=rf"out of range: 'long.txt' has {n} page\(s\) \(1\.\.{n}\)"):
            view("long.txt", bad)


def test_split_pages_matches_open_page_on_spaces(fv):
    from l0_env.tools.pages import split_pages

    text = " ".join(f"w{i % 97}" * (i % 7 + 1) for i in range(4000))
    assert fv.split_pages(text, 300) == split_pages(text, 300)


def test_utf16_with_bom_and_cp1252_are_decoded(fv, files):
    (files / "u16.txt").write_bytes("\ufeffgrüße, 世界\n".encode("utf-16-le"))
    (files / "latin.txt").write_bytes("café crème brûlée".encode("cp1252"))
    view = fv.make_view_file(str(files))
    assert view("u16.txt") == "# u16.txt (text, utf-16-le, 22 bytes)\ngrüße, 世界\n"
    assert view("latin.txt").endswith("\ncafé crème brûlée")
    assert "(text, cp1252," in view("latin.txt")


def test_huge_single_line_is_read_in_part_and_paged(fv, files):
    (files / "line.log").write_bytes(b"x" * (3 << 20))
    view = fv.make_view_file(str(files))
    first = view("line.log")
    assert first.startswith("# line.log (text, 3.0 MiB)\n[only the first 2.0 MiB of the file are read]\n")
    n = int(first.rsplit(" of ", 1)[1].split(" ")[0])
    assert n == -(-(len("[only the first 2.0 MiB of the file are read]\n") + (2 << 20)) // fv.PAGE_CHARS)
    assert len(view("line.log", 2).split("\n")[1]) == fv.PAGE_CHARS  # no whitespace: a hard cut


def test_csv_rows_as_a_table(fv, files):
    with open(files / "people.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "city", "score"])
        writer.writerow(["Ada", "London, UK", 36])
        writer.writerow(["Grace", "New York\nNY", 85])
        writer.writerow(["Alan", "Wilmslow", 41])
    out = fv.make_view_file(str(files))("people.csv")
    assert out.split("\n") == [
        f"# people.csv (CSV, 4 rows x 3 columns, {(files / 'people.csv').stat().st_size} bytes)",
        "name | city | score",
        "Ada | London, UK | 36",
        "Grace | New York\\nNY | 85",
        "Alan | Wilmslow | 41",
        "",
    ]


def test_tsv_and_semicolon_csv(fv, files):
    (files / "t.tsv").write_text("a\tb\n1\t2\n")
    (files / "s.csv").write_text("a;b;c\n1;2;3\n")
    view = fv.make_view_file(str(files))
    assert view("t.tsv").split("\n")[:3] == ["# t.tsv (TSV, 2 rows x 2 columns, 8 bytes)", "a | b", "1 | 2"]
    assert view("s.csv").split("\n")[:2] == [
        "# s.csv (CSV, 2 rows x 3 columns, semicolon-separated, 12 bytes)",
        "a | b | c",
    ]


def test_csv_with_a_million_columns_is_bounded(fv, files):
    (files / "wide.csv").write_text("," * 1_000_000 + "\nx,y\n")
    view = fv.make_view_file(str(files))
    out = view("wide.csv")
    assert out.startswith("# wide.csv (CSV, 2 rows x 2-65537 columns")
    first_row = out.split("\n")[1]
    assert first_row.endswith(f"| … (+{65537 - fv.MAX_COLUMNS} columns)")
    assert "x | y" in out
    assert "1 line(s) longer than 65,536 characters were cut" in out


def test_json_pretty_and_bounded(fv, files):
    data = {"name": "x", "items": list(range(1000)), "long": "y" * 5000, "nested": {"a": [1, {"b": None}]}}
    (files / "d.json").write_text(json.dumps(data))
    view = fv.make_view_file(str(files))
    text = "".join("\n".join(view("d.json", p).split("\n")[1:-1]) + "\n" for p in (1, 2, 3, 4))
    assert text.startswith('{\n  "name": "x",\n  "items": [\n    0,\n    1,\n')
    assert f"… {1000 - fv.MAX_JSON_ITEMS} more items" in text
    assert '"y' + "y" * 1999 + '"…(+3,000 characters)' in text.replace("\n", "")


def test_deep_json_gives_text_not_recursion_error(fv, files):
    (files / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (files / "deep50.json").write_text("[" * 50 + "1" + "]" * 50)
    view = fv.make_view_file(str(files))
    out = view("deep.json")
    assert "(JSON (too deep to parse)," in out.split("\n")[0]
    assert "[nested deeper than the JSON parser allows; shown as raw text]\n[[[[" in out
    out = view("deep50.json")
    assert "[… 1 items, nested too deep to show]" in out
    assert out.count("[\n") == fv.MAX_JSON_DEPTH


def test_invalid_json_shown_as_text(fv, files):
    (files / "bad.json").write_text('{"a": 1,,}')
    out = fv.make_view_file(str(files))("bad.json")
    assert "(JSON (invalid)," in out and "[not valid JSON (" in out and '{"a": 1,,}' in out


def test_html_visible_text(fv, files):
    (files / "page.html").write_text(
        "<html><head><title>My  page</title><style>p {color: red}</style>"
        "<script>var secret = 1;</script></head><body><!-- hidden --><h2>Intro</h2>"
        "<p>Some <b>bold</b> text&amp;more.</p><ul><li>one</li><li>two</li></ul>"
        "<table><tr><th>k</th><th>v</th></tr><tr><td>a</td><td>1</td></tr></table></body></html>"
    )
    out = fv.make_view_file(str(files))("page.html")
    assert out.split("\n")[1:] == [
        "Title: My page",
        "",
        "## Intro",
        "",
        "Some bold text&more.",
        "",
        "- one",
        "- two",
        "",
        "k | v",
        "a | 1",
    ]


@pytest.mark.parametrize(
    "body",
    ["<!--" + "a" * 500_000, "<a " * 200_000, "<![" * 200_000, "<!-- >" * 100_000, "<" * 600_000 + ">"],
)
def test_html_that_stalls_html_parser_renders(fv, files, body):
    # Quadratic in html.parser before 3.13.4 (minutes at this size); the pre-pass makes it linear.
    (files / "bad.html").write_text(body)
    out = fv.make_view_file(str(files))("bad.html")
    assert out.startswith("# bad.html (HTML, ")


# ---------------------------------------------------------------------------------------------
# PDF


def test_pdf_text_by_pdf_page(fv, files):
    (files / "report.pdf").write_bytes(
        make_pdf([["Annual report", "Revenue (2023) rose."], ["Page two text"]])
    )
    out = fv.make_view_file(str(files))("report.pdf")
    assert out.startswith("# report.pdf (PDF, 2 pages, ")
    body = out.split("\n", 1)[1]
    assert body.index("--- PDF page 1 ---") < body.index("Annual report") < body.index("Revenue (2023) rose.")
    assert body.index("Revenue") < body.index("--- PDF page 2 ---") < body.index("Page two text")


def test_pdf_is_extracted_lazily(fv, files, monkeypatch):
    monkeypatch.setattr(fv, "PDF_EAGER_PAGES", 2)
    pages = [[f"pdf page {p} line {i} " + "lorem ipsum dolor " * 4 for i in range(25)] for p in range(30)]
    (files / "big.pdf").write_bytes(make_pdf(pages))
    extracted: list[int] = []
    real = fv._PdfPages.extend

    def spy(self, target):
        before = self.next
        real(self, target)
        extracted.append(self.next - before)

    monkeypatch.setattr(fv._PdfPages, "extend", spy)
    view = fv.make_view_file(str(files))
    first = view("big.pdf")
    assert first.startswith("# big.pdf (PDF, 30 pages, ")
    assert "— call view_file('big.pdf', page=2) for more]" in first
    assert "of at least" in first.split("\n")[-1]
    assert sum(extracted) < 6  # the first view page needs 2-3 PDF pages, not 30
    tenth = view("big.pdf", 10)
    assert "pdf page" in tenth and sum(extracted) < 30
    last_known = int(tenth.split("\n")[-1].split(" of at least ")[1].split(" ")[0])
    with pytest.raises(ValueError, match="out of range"):
        view("big.pdf", 10_000)  # runs to the end, then knows the range
    assert sum(extracted) == 30
    n = int(view("big.pdf").split("\n")[-1].split(" of ")[1].split(" ")[0])
    assert n >= last_known
    assert view("big.pdf", n).endswith(f"[page {n} of {n}]")
    assert "pdf page 29 line 24" in view("big.pdf", n)


def test_corrupt_pdf_is_a_clear_error(fv, files):
    (files / "bad.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage \x00\xff")
    with pytest.raises(fv.FileViewError, match=r"cannot read 'bad.pdf' as a PDF \(.*\); it may be corrupt"):
        fv.make_view_file(str(files))("bad.pdf")


def test_pdf_or_office_file_over_the_size_cap_is_refused_unread(fv, files):
    for name, magic in (("huge.pdf", b"%PDF-1.4\n"), ("huge.docx", b"PK\x03\x04")):
        with open(files / name, "wb") as f:
            f.write(magic)
            f.truncate(fv.MAX_DOCUMENT_BYTES + 1)  # sparse: nothing is written
    view = fv.make_view_file(str(files))
    with pytest.raises(
        fv.FileViewError, match=r"'huge.pdf' is a 100.0 MiB PDF; view_file reads PDFs up to 100.0 MiB"
    ):
        view("huge.pdf")
    with pytest.raises(
        fv.FileViewError, match=r"'huge.docx' is 100.0 MiB; view_file opens zip-based files up to"
    ):
        view("huge.docx")


def test_encrypted_pdf_is_a_clear_error(fv, files):
    pypdf = pytest.importorskip("pypdf")
    writer = pypdf.PdfWriter(clone_from=io.BytesIO(make_pdf([["secret"]])))
    writer.encrypt(user_password="pw", algorithm="RC4-128")
    writer.write(str(files / "locked.pdf"))
    with pytest.raises(ValueError, match=r"'locked.pdf' is an encrypted \(password-protected\) PDF"):
        fv.make_view_file(str(files))("locked.pdf")


def test_missing_parser_names_the_package(fv, files, monkeypatch):
    (files / "report.pdf").write_bytes(make_pdf([["x"]]))
    monkeypatch.setitem(__import__("sys").modules, "pypdf", None)  # import pypdf now fails
    with pytest.raises(fv.MissingParserError, match=r"needs the Python package 'pypdf'.*pip install pypdf"):
        fv.make_view_file(str(files))("report.pdf")
    assert issubclass(fv.MissingParserError, ValueError) and issubclass(fv.MissingParserError, ImportError)


# ---------------------------------------------------------------------------------------------
# Office files and zips


def test_docx_paragraphs_headings_and_tables(fv, files):
    docx = pytest.importorskip("docx")
    document = docx.Document()
    document.add_heading("Quarterly notes", level=1)
    document.add_paragraph("Sales went up.")
    table = document.add_table(rows=2, cols=2)
    for r, row in enumerate([("region", "total"), ("north", "12")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    document.add_paragraph("After the table.")
    document.save(str(files / "notes.docx"))
    out = fv.make_view_file(str(files))("notes.docx")
    assert out.startswith("# notes.docx (Word document, 1 tables, ")
    body = out.split("\n")[1:]
    assert body[:2] == ["# Quarterly notes", "Sales went up."]
    assert body[2:5] == ["[table 1]", "region | total", "north | 12"]
    assert "After the table." in body


def test_xlsx_sheets_rows_and_cuts(fv, files, monkeypatch):
    openpyxl = pytest.importorskip("openpyxl")
    monkeypatch.setattr(fv, "MAX_SHEET_ROWS", 10)
    monkeypatch.setattr(fv, "MAX_COLUMNS", 4)
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Data"
    sheet.append(["id", "name", "value"])
    sheet.append([1, "a", 2.5])
    sheet.append([2, None, "=1+1"])
    wide = workbook.create_sheet("Wide")
    for r in range(20):
        wide.append([f"r{r}c{c}" for c in range(6)])
    workbook.save(str(files / "book.xlsx"))
    out = fv.make_view_file(str(files))("book.xlsx")
    assert out.startswith("# book.xlsx (Excel workbook, 2 sheets, ")
    lines = out.split("\n")
    start = lines.index("--- sheet 'Data' ---")
    # data_only: a formula the file holds no computed value for shows as empty
    assert lines[start + 1 : start + 4] == ["id | name | value", "1 | a | 2.5", "2"]
    start = lines.index("--- sheet 'Wide' ---")
    assert lines[start + 1] == "r0c0 | r0c1 | r0c2 | r0c3"
    assert lines[start + 10] == "r9c0 | r9c1 | r9c2 | r9c3"
    assert lines[start + 11] == (
        "[… only the first 10 of 20 rows are shown; only the first 4 columns are shown: use openpyxl to read the rest]"
    )


def test_pptx_slides_text(fv, files):
    ns = 'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main"'
    slide = '<p:sld xmlns:p="p" {ns}><a:p><a:r><a:t>{text}</a:t></a:r><a:r><a:t>!</a:t></a:r></a:p></p:sld>'
    make_zip(
        files / "deck.pptx",
        {
            "ppt/presentation.xml": b"<p/>",
            "ppt/slides/slide2.xml": slide.format(ns=ns, text="Second").encode(),
            "ppt/slides/slide10.xml": slide.format(ns=ns, text="Tenth").encode(),
            "ppt/slides/slide1.xml": slide.format(ns=ns, text="Hello").encode(),
        },
    )
    out = fv.make_view_file(str(files))("deck.pptx")
    assert out.split("\n")[1:] == [
        "--- slide 1 ---", "Hello!", "", "--- slide 2 ---", "Second!", "",
        "--- slide 10 ---", "Tenth!", "", "",
    ]  # fmt: skip


def test_plain_zip_is_listed_not_extracted(fv, files):
    make_zip(files / "bundle.zip", {"a.txt": b"hello", "dir/b.bin": b"\x00" * 3000})
    out = fv.make_view_file(str(files))("bundle.zip")
    assert out.split("\n")[:4] == [
        f"# bundle.zip (zip archive, 2 members, {(files / 'bundle.zip').stat().st_size} bytes)",
        "A zip archive of 2 members (name, size when extracted):",
        "a.txt  (5 bytes)",
        "dir/b.bin  (2.9 KiB)",
    ]


def _forbid_inflation(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args, **_kwargs):
        raise AssertionError("a member was opened: the zip bomb check came too late")

    monkeypatch.setattr(zipfile.ZipFile, "open", refuse)


def test_docx_zip_bomb_refused_before_inflating(fv, files, monkeypatch):
    # 200 MiB of zeros in word/document.xml: ~200 KiB on disk.
    with zipfile.ZipFile(files / "bomb.docx", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", b"<Types/>")
        with zf.open("word/document.xml", "w") as member:
            block = b"\x00" * (1 << 20)
            for _ in range(200):
                member.write(block)
    assert (files / "bomb.docx").stat().st_size < 1 << 20
    _forbid_inflation(monkeypatch)
    with pytest.raises(
        fv.FileViewError, match=r"'bomb.docx' looks like a zip bomb: member 'word/document.xml'"
    ):
        fv.make_view_file(str(files))("bomb.docx")


def test_xlsx_too_large_in_total_refused(fv, files, monkeypatch):
    # Each member is under the ratio check's floor; together they pass the total cap.
    members = {"xl/workbook.xml": b"<workbook/>"}
    members.update({f"xl/worksheets/sheet{i}.xml": b"\x00" * (1 << 20) for i in range(101)})
    make_zip(files / "big.xlsx", members)
    _forbid_inflation(monkeypatch)
    with pytest.raises(fv.FileViewError, match=r"'big.xlsx' would inflate to 101.0 MiB in total"):
        fv.make_view_file(str(files))("big.xlsx")


def test_zip_with_too_many_members_refused_from_its_end_record(fv, files, monkeypatch):
    monkeypatch.setattr(fv, "MAX_ZIP_MEMBERS", 10)
    make_zip(files / "many.zip", {f"m{i}": b"" for i in range(11)})

    def refuse(*_args, **_kwargs):
        raise AssertionError("zipfile parsed the directory before the member count was checked")

    monkeypatch.setattr(zipfile.ZipFile, "__init__", refuse)
    with pytest.raises(fv.FileViewError, match="the zip directory lists 11 members"):
        fv.make_view_file(str(files))("many.zip")


def test_corrupt_docx_is_a_clear_error(fv, files):
    good = io.BytesIO()
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("word/document.xml", b"<not-a-document/>")
    (files / "broken.docx").write_bytes(good.getvalue())
    with pytest.raises(fv.FileViewError, match=r"cannot read 'broken.docx' as a Word document \("):
        fv.make_view_file(str(files))("broken.docx")


# ---------------------------------------------------------------------------------------------
# Images, binary files, lying names


def _gif(w: int, h: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", w, h) + b"\x00\x00\x00" + b";"


def _bmp(w: int, h: int) -> bytes:
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack("<IiiHH", 40, w, -h, 1, 24) + b"\x00" * 24


def _webp_vp8x(w: int, h: int) -> bytes:
    return (
        b"RIFF\x00\x00\x00\x00WEBPVP8X"
        + struct.pack("<I", 10)
        + b"\x00" * 4
        + (w - 1).to_bytes(3, "little")
        + (h - 1).to_bytes(3, "little")
    )


def _webp_vp8l(w: int, h: int) -> bytes:
    bits = (w - 1) | ((h - 1) << 14)
    return b"RIFF\x00\x00\x00\x00WEBPVP8L" + struct.pack("<I", 5) + b"\x2f" + struct.pack("<I", bits)


@pytest.mark.parametrize(
    ("name", "data", "kind", "size"),
    [
        ("photo.png", make_png(640, 48), "PNG", "640 x 48"),
        ("photo.jpg", make_jpeg_header(1024, 768), "JPEG", "1024 x 768"),
        ("anim.gif", _gif(320, 200), "GIF", "320 x 200"),
        ("pic.bmp", _bmp(33, 17), "BMP", "33 x 17"),
        ("a.webp", _webp_vp8x(4000, 3000), "WebP", "4000 x 3000"),
        ("b.webp", _webp_vp8l(17, 9), "WebP", "17 x 9"),
    ],
)
def test_images_are_described_from_their_headers(fv, files, name, data, kind, size):
    (files / name).write_bytes(data)
    out = fv.make_view_file(str(files))(name)
    w, h = size.split(" x ")
    assert out.split("\n")[:3] == [
        f"# {name} ({kind} image, {size}, {fv._human_size(len(data))})",
        f"A {kind} image, {w} x {h} pixels, {len(data):,} bytes.",
        "view_file cannot show what an image depicts: only its format and size are known here.",
    ]


def test_truncated_image_header(fv, files):
    (files / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    out = fv.make_view_file(str(files))("cut.png")
    assert "A PNG image whose header is truncated or corrupt" in out


def test_extension_that_lies_is_sniffed(fv, files):
    (files / "report.pdf").write_bytes(make_png(2, 3))
    (files / "table.xlsx").write_text("a,b\n1,2\n")
    docx_bytes = io.BytesIO()
    with zipfile.ZipFile(docx_bytes, "w") as zf:
        zf.writestr("readme.txt", b"hi")
    (files / "scan.jpg").write_bytes(docx_bytes.getvalue())
    view = fv.make_view_file(str(files))
    out = view("report.pdf")
    assert out.split("\n")[1] == "(note: the name says .pdf, but the content is a PNG image)"
    assert "A PNG image, 2 x 3 pixels" in out
    out = view("table.xlsx")
    assert out.split("\n")[1:3] == ["(note: the name says .xlsx, but the content is text)", "a,b"]
    assert "(note: the name says .jpg, but the content is a zip archive)" in view("scan.jpg")
    (files / "about.txt").write_text("A PDF file starts with %PDF-1.7 and ends with %%EOF.")
    assert view("about.txt").endswith(
        "(text, 52 bytes)\nA PDF file starts with %PDF-1.7 and ends with %%EOF."
    )


def test_binary_file_shows_hex(fv, files):
    data = bytes(range(256)) * 4
    (files / "blob.dat").write_bytes(data)
    (files / "x.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 20)
    view = fv.make_view_file(str(files))
    out = view("blob.dat")
    assert out.split("\n")[:3] == [
        "# blob.dat (binary, binary data, 1.0 KiB)",
        "A binary file (binary data), 1,024 bytes; view_file cannot show its contents. The first 64 bytes in hex:",
        "00000000  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f  |................|",
    ]
    assert "A binary file (gzip data), 24 bytes" in view("x.gz")


def test_empty_file(fv, files):
    (files / "empty.csv").write_bytes(b"")
    assert (
        fv.make_view_file(str(files))("empty.csv") == "# empty.csv (empty file, 0 bytes)\n(the file is empty)"
    )


# ---------------------------------------------------------------------------------------------
# Names, special files, the cache


def test_name_resolution_and_missing_files(fv, files):
    (files / "data.csv").write_text("a\n1\n")
    (files / "other.txt").write_text("x")
    Path("local.txt").write_text("in the working directory")
    Path("sub").mkdir()
    view = fv.make_view_file(str(files))
    assert view("data.csv").startswith("# data.csv (CSV")  # from files_dir
    assert view("local.txt").endswith("in the working directory")  # from the cwd
    assert view(str(files / "other.txt")).endswith("\nx")  # any path
    with pytest.raises(
        FileNotFoundError, match=r"no file named 'nope.csv'; the attached files are: 'data.csv', 'other.txt'"
    ):
        view("nope.csv")
    with pytest.raises(FileNotFoundError, match=r"no file named 'sub/data\.csv'"):
        view("sub/data.csv")  # a path is not looked up in files_dir
    with pytest.raises(FileNotFoundError, match="no files are attached to this task"):
        fv.make_view_file("/nonexistent")("data.csv")
    with pytest.raises(IsADirectoryError, match="'sub' is a directory, not a file"):
        view("sub")
    with pytest.raises(TypeError, match="name must be a str"):
        view(3)


def test_fifo_is_refused_not_waited_on(fv, files):
    os.mkfifo(files / "pipe.txt")
    with pytest.raises(OSError, match=r"'pipe\.txt' is not a regular file"):
        fv.make_view_file(str(files))("pipe.txt")


def test_rendering_is_cached_until_the_file_changes(fv, files, monkeypatch):
    renders: list[str] = []
    real = fv._render

    def spy(f, size, name, ext):
        renders.append(name)
        return real(f, size, name, ext)

    monkeypatch.setattr(fv, "_render", spy)
    (files / "a.txt").write_text("one " * 2000)
    view = fv.make_view_file(str(files))
    view("a.txt")
    view("a.txt", 2)
    assert renders == ["a.txt"]
    (files / "a.txt").write_text("changed")
    assert view("a.txt").endswith("\nchanged")
    assert renders == ["a.txt", "a.txt"]


# ---------------------------------------------------------------------------------------------
# Inside a real sandbox


def test_view_file_inside_the_sandboxed_kernel(tmp_path):
    from l0_env.kernel.sandbox import check_bwrap
    from l0_env.kernel.session import KernelConfig, SandboxedKernel

    if check_bwrap() is not None:
        pytest.skip(f"bubblewrap unavailable: {check_bwrap()}")
    pytest.importorskip("pypdf")
    docx = pytest.importorskip("docx")
    openpyxl = pytest.importorskip("openpyxl")
    workbook = openpyxl.Workbook()
    workbook.active.append(["k", "v"])
    workbook.active.append(["pi", 3.14])
    xlsx = io.BytesIO()
    workbook.save(xlsx)
    document = docx.Document()
    document.add_paragraph("Sandboxed Word text")
    word = io.BytesIO()
    document.save(word)
    blobs = {
        "report.pdf": make_pdf([["Sandboxed PDF text"]]),
        "book.xlsx": xlsx.getvalue(),
        "memo.docx": word.getvalue(),
    }
    csv_text = "city,population\nParis,2102650\nLyon,522250\n"
    kernel = SandboxedKernel(KernelConfig(sandbox="bwrap", cell_timeout=120.0))
    try:
        assert kernel.sandboxed
        write = f"open('data.csv', 'w').write({csv_text!r})\n" + "".join(
            f"open({n!r}, 'wb').write(__import__('base64').b64decode({base64.b64encode(b).decode()!r}))\n"
            for n, b in blobs.items()
        )
        result = kernel.execute(write)
        assert result.status == "ok", result.text
        load = (
            "_ns = {}\n"
            f"exec(compile({SOURCE.read_text()!r}, 'l0_files', 'exec'), _ns)\n"
            "view_file = _ns['make_view_file']('/nonexistent')\n"
            "print(view_file('data.csv'))"
        )
        result = kernel.execute(load)
        assert result.status == "ok", result.text
        assert result.text.split("\n") == [
            f"# data.csv (CSV, 3 rows x 2 columns, {len(csv_text)} bytes)",
            "city | population",
            "Paris | 2102650",
            "Lyon | 522250",
        ]
        result = kernel.execute("for n in ('report.pdf', 'book.xlsx', 'memo.docx'):\n    print(view_file(n))")
        assert result.status == "ok", result.text
        assert "# memo.docx (Word document, " in result.text and "\nSandboxed Word text" in result.text
        assert "--- PDF page 1 ---\nSandboxed PDF text" in result.text
        assert "--- sheet 'Sheet' ---\nk | v\npi | 3.14" in result.text
        result = kernel.execute("view_file('missing.txt')")
        assert result.status == "error"
        assert (
            "FileNotFoundError: no file named 'missing.txt'; no files are attached to this task"
            in result.text
        )
    finally:
        kernel.close()
