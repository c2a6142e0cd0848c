"""Build the bundled tasks with attached files (``l0_env/data/file_tasks/``), in GAIA's layout.

Writes ``metadata.jsonl`` (one task per line: ``task_id``, ``Question``, ``Level``,
``Final answer``, ``file_name`` ("" when the task has no file), ``answer_type`` ("number" for
numeric answers) and ``oracle_code``) and the attached files beside it. Every file is synthetic:
made up here from fixed seeds, no real person, company or data behind it.

``oracle_code`` is one notebook cell that computes the answer from the file (with the stdlib,
pypdf, python-docx and openpyxl, as the sandboxed kernel has them) and calls
``submit_final_answer``; the scripted oracle policy sends it as its action, and
``tests/test_file_tasks_data.py`` runs it against ``Final answer``.

One builder function per task holds its file's content, its question and its oracle cell, so a
task reads top to bottom in one place (which is why this file is long).

The output is byte-for-byte reproducible: seeded ``random.Random`` per file, no clock read.
openpyxl and python-docx stamp the current time into ``docProps/core.xml`` and the zip entries,
so both archives are rewritten afterwards with fixed timestamps (:func:`normalize_zip`). The PDF
and the PNG are written by hand. Compressed members (xlsx, docx, PNG) depend on zlib's deflate
output, which is stable across zlib releases but not across other implementations (zlib-ng).

Usage::

    python scripts/build_file_tasks.py [--out l0_env/data/file_tasks]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import io
import json
import random
import re
import struct
import textwrap
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "l0_env" / "data" / "file_tasks"
FIXED_TIME = dt.datetime(2024, 1, 1, 0, 0, 0)
_FIXED_ISO = FIXED_TIME.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
_CORE_XML = "docProps/core.xml"

Built = tuple[bytes, dict[str, Any]]
"""A task builder's result: the attached file's bytes (b"" for none) and its metadata row."""


def task_row(
    task_id: str, question: str, level: int, answer: str, file_name: str, oracle: str, *, number: bool
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "task_id": task_id,
        "Question": question,
        "Level": level,
        "Final answer": answer,
        "file_name": file_name,
    }
    if number:
        row["answer_type"] = "number"
    row["oracle_code"] = textwrap.dedent(oracle).strip() + "\n"
    return row


def csv_bytes(header: list[str], rows: list[list[Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def normalize_zip(data: bytes) -> bytes:
    """Rewrite an OOXML zip with fixed entry times and a fixed ``docProps/core.xml`` created/
    modified stamp (writers put the current time in both); entry order and content are kept."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            content = src.read(info)
            if info.filename == _CORE_XML:
                content = re.sub(
                    rb"(<dcterms:(created|modified)\b[^>]*>)[^<]*(</dcterms:\2>)",
                    rb"\g<1>" + _FIXED_ISO + rb"\g<3>",
                    content,
                )
            entry = zipfile.ZipInfo(info.filename, date_time=FIXED_TIME.timetuple()[:6])
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.create_system = 3  # the default depends on the platform building the file
            entry.external_attr = 0o644 << 16
            dst.writestr(entry, content, compresslevel=9)
    return out.getvalue()


# --- CSV -----------------------------------------------------------------------------------------

CUSTOMERS = [
    "Birchwood Bakery",
    "Cobalt Cycles",
    "Delta Dental Clinic",
    "Fernhill Farms",
    "Granite Gym",
    "Lumen Optics",
]


def invoices() -> Built:
    rng = random.Random(101)
    rows, total_cents = [], 0
    for i in range(24):
        cents = rng.randint(12_000, 480_000)
        total_cents += cents
        day = dt.date(2024, 1, 3) + dt.timedelta(days=3 * i + rng.randint(0, 2))
        status = rng.choice(["paid", "paid", "open"])
        rows.append(
            [f"INV-2024-{i + 1:04d}", day.isoformat(), rng.choice(CUSTOMERS), f"{cents / 100:.2f}", status]
        )
    answer = f"{total_cents // 100}.{total_cents % 100:02d}"
    oracle = """
        import csv

        with open("invoices.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        print(len(rows), "invoices; first row:", rows[0])
        total = round(sum(float(row["amount"]) for row in rows), 2)
        print("total of the amount column:", total)
        submit_final_answer(total)
    """
    question = (
        "The attached file invoices.csv lists invoices. What is the total of its amount column over "
        "all invoices (paid and open)? Give the number rounded to 2 decimal places."
    )
    row = task_row("ft01-invoices-total", question, 1, answer, "invoices.csv", oracle, number=True)
    return csv_bytes(["invoice_id", "date", "customer", "amount", "status"], rows), row


def orders() -> Built:
    rng = random.Random(202)
    # Fixed order counts: one clear winner, and a different customer who buys the most units (a
    # reader who sums `quantity` instead of counting rows gets Cobalt Cycles).
    counts = {
        "Fernhill Farms": 9,
        "Cobalt Cycles": 6,
        "Birchwood Bakery": 7,
        "Granite Gym": 5,
        "Lumen Optics": 4,
    }
    buyers = [name for name, n in counts.items() for _ in range(n)]
    rng.shuffle(buyers)
    if buyers[0] == "Fernhill Farms":  # the first row must not give the answer away
        buyers.append(buyers.pop(0))
    products = ["paper towels", "printer toner", "coffee beans", "safety gloves", "LED bulbs"]
    rows = []
    for i, customer in enumerate(buyers):
        qty = rng.randint(20, 40) if customer == "Cobalt Cycles" else rng.randint(1, 4)
        day = dt.date(2024, 2, 1) + dt.timedelta(days=i)
        rows.append([f"ORD-{5001 + i}", day.isoformat(), customer, rng.choice(products), qty])
    answer = Counter(buyers).most_common(1)[0][0]
    oracle = """
        import csv
        from collections import Counter

        with open("orders.csv", newline="", encoding="utf-8") as f:
            counts = Counter(row["customer"] for row in csv.DictReader(f))
        print(counts.most_common())
        submit_final_answer(counts.most_common(1)[0][0])
    """
    question = (
        "The attached file orders.csv has one row per order. Which customer placed the most orders "
        "(the most rows)? Answer with the customer's name."
    )
    row = task_row("ft02-orders-top-customer", question, 2, answer, "orders.csv", oracle, number=False)
    return csv_bytes(["order_id", "date", "customer", "product", "quantity"], rows), row


# --- XLSX ----------------------------------------------------------------------------------------


def sales() -> Built:
    from openpyxl import Workbook

    rng = random.Random(303)
    regions = ["North", "South", "East", "West", "Central"]
    wb = Workbook()
    totals = {}
    for index, year in enumerate(("2023", "2024")):
        ws = wb.active if index == 0 else wb.create_sheet()
        ws.title = year
        ws.append([f"Regional sales {year} (EUR)"])
        ws.append(["Region", "Q1", "Q2", "Q3", "Q4"])
        for region in regions:
            values = [rng.randint(80, 260) * 100 for _ in range(4)]
            ws.append([region, *values])
            totals[year, region] = sum(values)
    wb.active = 0  # a reader who takes the active sheet reads 2023
    assert totals["2024", "North"] != totals["2023", "North"]
    wb.properties.creator = "L0 Gym build_file_tasks.py"
    wb.properties.created = wb.properties.modified = FIXED_TIME
    buf = io.BytesIO()
    wb.save(buf)
    oracle = """
        from openpyxl import load_workbook

        wb = load_workbook("sales.xlsx")
        print("sheets:", wb.sheetnames)
        for row in wb["2024"].iter_rows(values_only=True):
            print(row)
            if row[0] == "North":
                total = sum(row[1:5])
        print("North, 2024:", total)
        submit_final_answer(total)
    """
    question = (
        "The attached workbook sales.xlsx has one sheet per year of regional quarterly sales. What "
        "were the North region's total sales in 2024 (the sum of its four quarters), in EUR?"
    )
    answer = str(totals["2024", "North"])
    row = task_row("ft03-sales-north-2024", question, 2, answer, "sales.xlsx", oracle, number=True)
    return normalize_zip(buf.getvalue()), row


# --- PDF (by hand) -------------------------------------------------------------------------------


def _pdf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _pdf_page_stream(title: str, lines: list[str]) -> bytes:
    ops = ["BT", "/F1 16 Tf", "20 TL", "72 740 Td", f"({_pdf_escape(title)}) Tj", "T*", "/F1 11 Tf", "16 TL"]
    for line in lines:
        ops += [f"({_pdf_escape(line)}) Tj", "T*"]
    ops.append("ET")
    return "\n".join(ops).encode("latin-1")


def pdf_document(pages: list[tuple[str, list[str]]]) -> bytes:
    """A minimal PDF 1.4: catalog, page tree, one page + content stream per page, Helvetica
    (a standard font, nothing embedded), and a classic xref table with exact byte offsets."""
    n_pages = len(pages)
    font_id = 3 + 2 * n_pages
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n_pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode(),
    ]
    for i, (title, lines) in enumerate(pages):
        stream = _pdf_page_stream(title, lines)
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> /Contents {4 + 2 * i} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")  # the binary comment marks the file as binary
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref_at)
    return bytes(out)


def report() -> Built:
    page1 = [
        "Annual Operations Report 2023",
        "",
        "1. Overview",
        "The cooperative supplied drinking water to 12,400 households in 2023 from three",
        "treatment plants. Average daily production was 9.8 million litres.",
        "The 2023 capital plan set a target of 20 km of water main replacement.",
        "Results against that target are reported in section 3 (page 2).",
        "",
        "2. Water quality",
        "All 1,460 routine samples met the national drinking water standard.",
        "",
        "Page 1 of 2",
    ]
    page2 = [
        "",
        "3. Network renewal",
        "Water main replaced in 2023: 14.6 km (73% of the 20 km target).",
        "Service connections renewed: 318.",
        "Leaks repaired: 97, down from 131 in 2022.",
        "",
        "4. Outlook for 2024",
        "The 2024 plan targets 22 km of water main replacement.",
        "",
        "Page 2 of 2",
    ]
    data = pdf_document(
        [("Harbor Valley Water Cooperative", page1), ("Harbor Valley Water Cooperative (continued)", page2)]
    )
    oracle = """
        import re
        from pypdf import PdfReader

        reader = PdfReader("report.pdf")
        for number, page in enumerate(reader.pages, 1):
            text = page.extract_text()
            print(f"--- page {number} ---")
            print(text)
            found = re.search(r"Water main replaced in 2023: ([0-9.]+) km", text)
            if found:
                km = found.group(1)
        submit_final_answer(km)
    """
    question = (
        "According to the attached report.pdf, how many kilometres of water main did the cooperative "
        "actually replace in 2023? Answer with the number of km."
    )
    row = task_row("ft04-report-km-replaced", question, 2, "14.6", "report.pdf", oracle, number=True)
    return data, row


# --- DOCX ----------------------------------------------------------------------------------------


def memo() -> Built:
    import docx

    budget = [
        ("Facilities", "182,000", "Marta Kowalski"),
        ("Logistics", "96,500", "Daniel Okafor"),
        ("Marketing", "140,250", "Ines Carvalho"),
        ("IT services", "210,000", "Samuel Lindqvist"),
        ("Training", "38,750", "Aiko Tanaka"),
    ]
    doc = docx.Document()
    doc.add_heading("Memorandum", level=1)
    for line in (
        "To: Department heads",
        "From: Finance office (questions to Priya Raman)",
        "Date: 12 March 2024",
        "Subject: Owners of the 2024 budget lines",
    ):
        doc.add_paragraph(line)
    doc.add_paragraph(
        "The board approved the 2024 budget on 8 March. The table below lists each budget line, "
        "its approved amount and the person accountable for spending against it."
    )
    table = doc.add_table(rows=1, cols=3)
    table.style = "Table Grid"
    for cell, text in zip(table.rows[0].cells, ("Budget line", "Approved (EUR)", "Owner"), strict=True):
        cell.text = text
    for line in budget:
        for cell, text in zip(table.add_row().cells, line, strict=True):
            cell.text = text
    doc.add_paragraph("Please confirm your line with the finance office by 22 March 2024.")
    props = doc.core_properties
    props.author = props.last_modified_by = "L0 Gym build_file_tasks.py"
    props.title = "Owners of the 2024 budget lines"
    props.comments = "Synthetic memo made by scripts/build_file_tasks.py"
    props.revision = 1
    props.created = props.modified = props.last_printed = FIXED_TIME
    buf = io.BytesIO()
    doc.save(buf)
    oracle = """
        import docx

        doc = docx.Document("memo.docx")
        for paragraph in doc.paragraphs:
            print(paragraph.text)
        rows = [[cell.text.strip() for cell in row.cells] for row in doc.tables[0].rows]
        for row in rows:
            print(row)
        owner_column = rows[0].index("Owner")
        owner = next(row[owner_column] for row in rows[1:] if row[0] == "Logistics")
        submit_final_answer(owner)
    """
    question = (
        "According to the table in the attached memo.docx, who is the owner of the Logistics budget "
        "line? Answer with the person's full name."
    )
    row = task_row(
        "ft05-memo-logistics-owner", question, 1, "Daniel Okafor", "memo.docx", oracle, number=False
    )
    return normalize_zip(buf.getvalue()), row


# --- JSON, HTML, Markdown, log -------------------------------------------------------------------


def config() -> Built:
    data = {
        "service": {"name": "ledger-api", "version": "2.7.1", "http": {"port": 8080, "workers": 4}},
        "database": {
            "primary": {"host": "db-1.internal", "port": 5432, "pool": {"min_size": 2, "max_size": 20}},
            "replica": {"host": "db-2.internal", "port": 5433, "pool": {"min_size": 1, "max_size": 12}},
        },
        "cache": {"backend": "memory", "ttl_seconds": 300, "max_entries": 50000},
        "logging": {"level": "info", "format": "json"},
    }
    oracle = """
        import json

        with open("config.json", encoding="utf-8") as f:
            config = json.load(f)
        print(json.dumps(config["database"], indent=2))
        submit_final_answer(config["database"]["replica"]["pool"]["max_size"])
    """
    question = (
        "In the attached config.json, what is the maximum connection-pool size (max_size) configured "
        "for the replica database?"
    )
    row = task_row("ft06-config-replica-pool", question, 1, "12", "config.json", oracle, number=True)
    return (json.dumps(data, indent=2) + "\n").encode("utf-8"), row


def page() -> Built:
    html = """\
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <title>Northwind Outfitters - Spring catalogue</title>
        <style>
          body { font-family: sans-serif; margin: 2em; }
          table.products td.price::before { content: "$"; }
          .sold-out { color: #999; text-decoration: line-through; }
        </style>
        <script>
          window.dataLayer = window.dataLayer || [];
          dataLayer.push({"event": "view", "product": "Trail Runner X2", "listPrice": 149.00, "currency": "USD"});
          function track(id) { dataLayer.push({"event": "click", "id": id, "price": 0}); }
        </script>
        </head>
        <body>
        <nav><ul><li><a href="/">Home</a></li><li><a href="/sale">Sale</a></li><li><a href="/help">Help</a></li></ul></nav>
        <h1>Spring catalogue</h1>
        <p>Prices include the spring discount and are valid until 30 April 2024.</p>
        <table class="products">
          <tr><th>Product</th><th>SKU</th><th>Price (USD)</th><th>In stock</th></tr>
          <tr><td>Trail Runner X2 GTX</td><td>TR-X2-G</td><td class="price">164.50</td><td>yes</td></tr>
          <tr><td>Trail Runner X2</td><td>TR-X2</td><td class="price">119.95</td><td>yes</td></tr>
          <tr><td>Summit Pack 30L</td><td>SP-30</td><td class="price">89.00</td><td>no</td></tr>
          <tr><td>Ridge Fleece</td><td>RF-01</td><td class="price">64.00</td><td>yes</td></tr>
        </table>
        <script>document.querySelectorAll("tr").forEach(function (r, i) { r.onclick = function () { track(i); }; });</script>
        </body>
        </html>
    """
    oracle = """
        from html.parser import HTMLParser

        class TableCells(HTMLParser):
            def __init__(self):
                super().__init__()
                self.rows, self.cell = [], None

            def handle_starttag(self, tag, attrs):
                if tag == "tr":
                    self.rows.append([])
                elif tag in ("td", "th"):
                    self.cell = ""

            def handle_endtag(self, tag):
                if tag in ("td", "th") and self.cell is not None:
                    self.rows[-1].append(self.cell.strip())
                    self.cell = None

            def handle_data(self, data):
                if self.cell is not None:
                    self.cell += data

        parser = TableCells()
        with open("page.html", encoding="utf-8") as f:
            parser.feed(f.read())
        for row in parser.rows:
            print(row)
        price_column = parser.rows[0].index("Price (USD)")
        price = next(row[price_column] for row in parser.rows if row[0] == "Trail Runner X2")
        submit_final_answer(price)
    """
    question = (
        "In the attached page.html, what price in USD does the product table list for the Trail "
        "Runner X2 (not the Trail Runner X2 GTX)?"
    )
    row = task_row("ft07-page-price", question, 2, "119.95", "page.html", oracle, number=True)
    return textwrap.dedent(html).encode("utf-8"), row


def notes() -> Built:
    text = """\
        # Project Kestrel: weekly sync, 2024-04-08

        Attendees: Ana Souza, Tomas Berg, Lena Fischer, Kofi Mensah

        ## Decisions

        - The billing reports move to the new data warehouse before the quarter closes.
        - Tomas Berg is on leave from 2024-04-22; Kofi Mensah covers his reviews.

        ## Action items

        - [x] Lena Fischer: archive the old dashboards (done 2024-04-05)
        - [ ] Ana Souza: draft the data-retention policy (due 2024-04-15)
        - [ ] Tomas Berg: migrate the billing reports to the new warehouse (due 2024-04-19)
        - [ ] Kofi Mensah: update the on-call rota (due 2024-04-26)

        ## Next meeting

        2024-04-15, same room.
    """
    oracle = """
        import re

        lines = open("meeting_notes.md", encoding="utf-8").read().splitlines()
        start = lines.index("## Action items")
        for line in lines[start + 1 :]:
            if line.startswith("## "):
                break
            if "Tomas Berg" in line:
                print(line)
                due = re.search(r"due (\\d{4}-\\d{2}-\\d{2})", line).group(1)
        submit_final_answer(due)
    """
    question = (
        "In the attached meeting_notes.md, what is the due date of Tomas Berg's action item? "
        "Answer in the form YYYY-MM-DD."
    )
    row = task_row("ft08-notes-due-date", question, 1, "2024-04-19", "meeting_notes.md", oracle, number=False)
    return textwrap.dedent(text).encode("utf-8"), row


def server_log() -> Built:
    rng = random.Random(404)
    messages = {
        "DEBUG": ["cache hit ratio 0.{:02d}", "gc pause {} ms"],
        "INFO": ["GET /api/orders 200 in {} ms", "alert rule 'ERROR rate above 5%' evaluated: ok ({}%)"],
        "WARN": ["slow query took {} ms", "retrying after upstream error (attempt {})"],
        "ERROR": ["payment gateway timeout after {} ms", "failed to write audit record #{}"],
    }
    levels = ["DEBUG"] * 3 + ["INFO"] * 8 + ["WARN"] * 3 + ["ERROR"] * 2
    start = dt.datetime(2024, 5, 2, 10, 0, 0)
    lines, errors = [], 0
    for i in range(120):
        level = rng.choice(levels)
        errors += level == "ERROR"
        when = start + dt.timedelta(seconds=7 * i + rng.randint(0, 6))
        message = rng.choice(messages[level]).format(rng.randint(2, 99))
        lines.append(f"{when.isoformat()}Z {level:<5} [worker-{rng.randint(1, 4)}] {message}")
    text = "\n".join(lines) + "\n"
    # Enough errors to need counting, and messages that quote "ERROR" so a plain text count is wrong.
    assert errors >= 5 and text.count("ERROR") != errors and text.lower().count("error") != errors
    oracle = """
        errors = 0
        with open("server.log", encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 1 and fields[1] == "ERROR":
                    errors += 1
                    print(line.rstrip())
        print(errors, "lines at level ERROR")
        submit_final_answer(errors)
    """
    question = (
        "The attached server.log has one log line per row: timestamp, level, worker, message. How "
        "many lines have the level ERROR?"
    )
    row = task_row("ft09-log-error-count", question, 2, str(errors), "server.log", oracle, number=True)
    return text.encode("utf-8"), row


# --- PNG (by hand) -------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_image(width: int, height: int, pixel: Callable[[int, int], tuple[int, int, int]]) -> bytes:
    """An 8-bit RGB PNG: signature, IHDR, one IDAT (filter 0 on every row), IEND."""
    raw = b"".join(b"\x00" + b"".join(bytes(pixel(x, y)) for x in range(width)) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw, 9))
        + _png_chunk(b"IEND", b"")
    )


def chart() -> Built:
    width, height = 437, 163
    bars = [
        (40, 60, (66, 133, 244)),
        (130, 100, (219, 68, 55)),
        (220, 35, (244, 180, 0)),
        (310, 120, (15, 157, 88)),
    ]

    def pixel(x: int, y: int) -> tuple[int, int, int]:
        if y == height - 20:
            return (0, 0, 0)  # the axis
        for left, bar_height, colour in bars:
            if left <= x < left + 60 and height - 20 - bar_height <= y < height - 20:
                return colour
        return (255, 255, 255)

    oracle = """
        import struct

        with open("chart.png", "rb") as f:
            head = f.read(24)
        assert head[:8] == b"\\x89PNG\\r\\n\\x1a\\n" and head[12:16] == b"IHDR", "not a PNG"
        width, height = struct.unpack(">II", head[16:24])
        print(f"chart.png is {width} x {height} pixels")
        submit_final_answer(width)
    """
    question = "What is the width, in pixels, of the attached image chart.png?"
    row = task_row("ft10-chart-width", question, 1, str(width), "chart.png", oracle, number=True)
    return png_image(width, height, pixel), row


def no_file() -> Built:
    oracle = """
        crates, per_crate, loose, shipped = 17, 24, 9, 5
        bottles = (crates - shipped) * per_crate + loose
        print(bottles, "bottles remain")
        submit_final_answer(bottles)
    """
    question = (
        "A warehouse stores 17 full crates of 24 bottles each plus 9 loose bottles. After 5 full "
        "crates are shipped out, how many bottles remain in the warehouse?"
    )
    row = task_row("ft11-no-file-bottles", question, 1, str((17 - 5) * 24 + 9), "", oracle, number=True)
    return b"", row


BUILDERS: tuple[Callable[[], Built], ...] = (
    invoices,
    orders,
    sales,
    report,
    memo,
    config,
    page,
    notes,
    server_log,
    chart,
    no_file,
)


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def build(out: Path) -> dict[str, Any]:
    """Write ``metadata.jsonl`` and every attached file into ``out``; return name -> size/sha256."""
    out.mkdir(parents=True, exist_ok=True)
    rows, files = [], {}
    for builder in BUILDERS:
        data, row = builder()
        name = row["file_name"]
        assert bool(name) == bool(data), f"{row['task_id']}: a file name needs a file, and back"
        assert name not in files, f"{name} is built twice"
        if name:
            files[name] = data
        rows.append(row)
    assert len({row["task_id"] for row in rows}) == len(rows)
    files["metadata.jsonl"] = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    for name, data in files.items():
        _write(out / name, data)
    return {
        name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()[:16]}
        for name, data in sorted(files.items())
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory to write (created)")
    args = parser.parse_args()
    print(json.dumps(build(args.out), indent=2))


if __name__ == "__main__":
    main()
