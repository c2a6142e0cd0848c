"""The file viewer, run INSIDE the sandboxed kernel: ``view_file(name, page=1)``.

Sent into the kernel as source text (like ``in_kernel.py``) and exec'd into a fresh module, so it
imports only the standard library at the top; the optional parsers (pypdf, python-docx, openpyxl)
are imported by the functions that need them. Task files are untrusted, so they are parsed here,
with the agent's own privileges under the sandbox's limits, never on the host.

``make_view_file(files_dir)`` returns ``view_file``. Its output is paginated like ``open_page``
(``l0_env/tools/pages.py``): at most `PAGE_CHARS` characters of text per page, cut at whitespace,
under a header line ``# <name> (<kind>, <size>)``, with a footer naming the next page when there
is more than one.

Defences against hostile files (each ends in a clear error or a marked cut):
- only regular files are opened (a FIFO would block forever); at most `MAX_TEXT_BYTES` of a text
  file is read and at most `MAX_DOCUMENT_BYTES` of a PDF or Office file;
- zip containers (docx, xlsx, pptx) are vetted from their central directory before any member is
  inflated: member count, total declared size and per-member compression ratio (zipfile never
  inflates past a member's declared size, so the declared sizes bound the work);
- PDFs are extracted lazily, PDF page by PDF page, only as far as the asked view page needs (the
  first `PDF_EAGER_PAGES` eagerly, so a short PDF's page count is exact), and at most
  `MAX_PDF_PAGES`; pypdf's own limits bound each stream's inflation;
- HTML goes through a linear pre-pass that defuses html.parser's quadratic cases (unterminated
  comments, tags and marked sections) before Python 3.13.4;
- rendered text is capped at `MAX_TEXT_CHARS`, table rows and columns, cells, JSON depth and
  container sizes have caps of their own, and nothing recurses deeper than `MAX_JSON_DEPTH`.

It is one file, longer than most, because it travels into the kernel as one source text.

What it does not protect against: a PDF page whose content stream takes minutes to interpret, or
a parser bug that allocates without bound. The cell timeout interrupts the first (the text
extracted so far is kept, so the next call resumes) and the kernel's memory limit stops the
second; neither harms the host.
"""

import codecs
import collections
import contextlib
import csv
import html.parser
import importlib
import io
import json
import logging
import os
import re
import stat
import struct
import warnings
import zipfile
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

PAGE_CHARS = 2000  # as open_page
MAX_NAME_CHARS = 200
MAX_TEXT_BYTES = 2 << 20  # read of a text, csv, json or html file
MAX_DOCUMENT_BYTES = 100 << 20  # size of a PDF or zip container that is parsed at all
MAX_TEXT_CHARS = 2_500_000  # rendered text kept per file (1,250 view pages; > MAX_TEXT_BYTES of ASCII)
MAX_UNZIPPED_BYTES = 100 << 20
MAX_ZIP_RATIO = 200  # deflate tops out near 1,030; real Office XML stays under ~50
MAX_ZIP_MEMBERS = 20_000
MAX_ZIP_DIRECTORY_BYTES = 16 << 20
MAX_PDF_PAGES = 2_000
PDF_EAGER_PAGES = 50
MAX_SHEETS = 50
MAX_SHEET_ROWS = 1_000
MAX_COLUMNS = 50
MAX_CELL_CHARS = 300
MAX_CSV_LINE_CHARS = 1 << 16
MAX_JSON_DEPTH = 30
MAX_JSON_ITEMS = 500
MAX_JSON_STRING_CHARS = 2_000
MAX_LISTED = 200  # zip members, directory entries
CACHE_ENTRIES = 4

_HEAD_BYTES = 64 << 10
_RATIO_MIN_BYTES = 1 << 20  # tiny members may compress absurdly well (a run of spaces) harmlessly
_HEX_BYTES = 64
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_WHITESPACE_RUN = re.compile(r"[ \n]*")
_SPACE_RUN = re.compile(r"\s+")
_STRAY_LT = re.compile(r"<(?![A-Za-z/!?])")
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_TEXT_EXTS = frozenset(
    ("txt", "text", "md", "markdown", "rst", "log", "ini", "cfg", "conf", "toml", "yaml", "yml", "xml")
)
_CSV_EXTS = frozenset({"csv", "tsv", "tab"})
_JSON_EXTS = frozenset({"json", "geojson"})
_HTML_EXTS = frozenset({"html", "htm", "xhtml"})
# What a sniffed kind is expected to be called; a name that says otherwise gets a note.
_KIND_EXTS = {
    "pdf": {"pdf"},
    "docx": {"docx", "docm"},
    "xlsx": {"xlsx", "xlsm"},
    "pptx": {"pptx", "pptm"},
    "zip": {"zip"},
    "PNG": {"png"},
    "JPEG": {"jpg", "jpeg", "jpe", "jfif"},
    "GIF": {"gif"},
    "WebP": {"webp"},
    "BMP": {"bmp", "dib"},
}
_CLAIMED_EXTS = frozenset().union(*_KIND_EXTS.values())
_BINARY_MAGIC = (
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Microsoft Office file (.doc/.xls/.ppt); not readable here"),
    (b"\x1f\x8b", "gzip data"),
    (b"BZh", "bzip2 data"),
    (b"\xfd7zXZ\x00", "xz data"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\x7fELF", "an ELF executable"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"PAR1", "a Parquet file"),
    (b"\x93NUMPY", "a NumPy array"),
)


class FileViewError(ValueError):
    """The file cannot be shown as asked; the message says why and what to do instead."""


class MissingParserError(FileViewError, ImportError):
    """The parser package for this format is not installed in the kernel's environment."""


class _Text:
    """Text built from parts, cut at ``limit`` characters (``full`` then says so)."""

    def __init__(self, limit: int = MAX_TEXT_CHARS) -> None:
        self.limit = limit
        self.size = 0
        self.full = False
        self._parts: list[str] = []
        self._joined: str | None = ""
        self._noted = False

    def add(self, part: str) -> bool:
        if self.full:
            return False
        if self.size + len(part) > self.limit:
            part = part[: self.limit - self.size]
            self.full = True
        self._parts.append(part)
        self.size += len(part)
        self._joined = None
        return not self.full

    def mark_cut(self) -> None:
        """End the text with a note saying it was cut (once, past the limit), if it was."""
        if self.full and not self._noted:
            self._noted = True
            self._parts.append(_CUT_NOTE)
            self.size += len(_CUT_NOTE)
            self._joined = None

    def value(self) -> str:
        if self._joined is None:
            self._joined = "".join(self._parts)
            self._parts = [self._joined]
        return self._joined


_CUT_NOTE = f"\n[… cut: view_file keeps at most {MAX_TEXT_CHARS:,} characters of a file; read it with Python for the rest]"


class _Doc:
    """A rendered file: its kind, its text so far and, while text remains, how to render more."""

    def __init__(self, kind: str, out: _Text, more: "Callable[[int], None] | None" = None) -> None:
        self.kind = kind
        self.out = out
        self.more = more  # more(target_chars): render until the text is that long or complete


def make_view_file(files_dir: str) -> Callable[..., str]:
    """Build the agent's ``view_file`` function.

    Args:
        files_dir: The directory holding the task's attached files (read-only in the sandbox). A
            bare file name that is not found in the working directory is looked up here, and a
            missing file's error lists this directory's files.

    Returns:
        ``view_file(name, page=1) -> str`` with a small cache of rendered files.
    """
    if not isinstance(files_dir, str):
        raise TypeError(f"files_dir must be a str, got {type(files_dir).__name__}")
    cache: collections.OrderedDict[tuple[Any, ...], _Doc] = collections.OrderedDict()

    def view_file(name: str, page: int = 1) -> str:
        """Show one page of a file (the task's attached files, or any file you can open) as text.

        Reads csv/tsv, xlsx, docx, pptx, pdf, json, html and plain text; describes images
        (format, width x height in pixels: their content cannot be shown) and other binary files.
        Each page holds at most 2000 characters under a header line '# name (kind, size)'; when
        there are more pages, the last line says which call shows the next one.

        Args:
            name: The file's name as the task lists it, or a path.
            page: Which page of the text to show, from 1.

        Returns:
            The page as text.

        Raises:
            FileNotFoundError: No such file; the message lists the attached files.
            ValueError: ``page`` is out of range, or the file cannot be read (corrupt, encrypted,
                too large, a zip bomb, a parser not installed); the message says which.
        """
        path = _resolve(name, files_dir)
        shown = os.fspath(name)
        with _open_regular(path, shown) as (f, st):
            ext = os.path.splitext(shown)[1].lower().lstrip(".")
            key = (ext, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            doc = cache.get(key)
            if doc is None:
                doc = _render(f, st.st_size, shown, ext)
                cache[key] = doc
                while len(cache) > CACHE_ENTRIES:
                    cache.popitem(last=False)
            else:
                cache.move_to_end(key)
        return _show_page(doc, shown, st.st_size, page)

    return view_file


def split_pages(text: str, page_chars: int = PAGE_CHARS) -> list[str]:
    """Cut ``text`` into chunks of at most ``page_chars`` characters, at a space or newline where possible.

    open_page's rule (``l0_env.tools.pages.split_pages``), with newlines as cut points too.
    """
    pages: list[str] = []
    start, n = 0, len(text)
    while n - start > page_chars:
        low, high = start + page_chars // 2, start + page_chars + 1
        cut = max(text.rfind(" ", low, high), text.rfind("\n", low, high))
        if cut < 0:
            cut = start + page_chars
        pages.append(text[start:cut])
        match = _WHITESPACE_RUN.match(text, cut)
        start = match.end() if match else cut
    pages.append(text[start:])
    return pages


def _show_page(doc: _Doc, name: str, size: int, page: int) -> str:
    valid = isinstance(page, int) and not isinstance(page, bool) and page >= 1
    pages = split_pages(doc.out.value())
    # Page N is final once page N+1 has begun: each cut looks at most PAGE_CHARS + 1 ahead.
    target = (page + 1) * PAGE_CHARS + 1 if valid else 0
    while valid and doc.more is not None and len(pages) <= page:
        doc.more(target)
        pages = split_pages(doc.out.value())
        target = doc.out.size + PAGE_CHARS * (page + 1 - len(pages)) + 1
    n = len(pages)
    if not valid or page > n:
        more = "" if doc.more is None else " so far (more once earlier pages are read)"
        raise ValueError(f"page {page!r} is out of range: {name!r} has {n} page(s) (1..{n}){more}")
    title = _clean(name)
    if len(title) > MAX_NAME_CHARS:
        title = title[: MAX_NAME_CHARS - 1] + "…"
    out = f"# {title} ({doc.kind}, {_human_size(size)})\n{pages[page - 1]}"
    total = f"at least {n}" if doc.more is not None else str(n)
    if page < n:
        out += f"\n[page {page} of {total} — call view_file({name!r}, page={page + 1}) for more]"
    elif n > 1:
        out += f"\n[page {page} of {n}]"
    return out


# ---------------------------------------------------------------------------------------------
# Finding and opening the file


def _resolve(name: Any, files_dir: str) -> str:
    if not isinstance(name, (str, os.PathLike)) or not isinstance(os.fspath(name), str):
        raise TypeError(f"name must be a str (a file name or path), got {type(name).__name__}")
    path = os.path.expanduser(os.fspath(name))
    candidates = [path] if path else []
    if path and os.path.basename(path) == path and path not in (".", ".."):
        candidates.append(os.path.join(files_dir, path))
    for candidate in candidates:
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(f"no file named {os.fspath(name)!r}; {_attached(files_dir)}")


def _attached(files_dir: str) -> str:
    try:
        names = sorted(os.listdir(files_dir))
    except OSError:
        names = []
    if not names:
        return "no files are attached to this task"
    shown = ", ".join(repr(n) for n in names[:MAX_LISTED])
    more = f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
    return f"the attached files are: {shown}{more}"


@contextlib.contextmanager
def _open_regular(path: str, name: str) -> Iterator[tuple[BinaryIO, os.stat_result]]:
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except PermissionError:
        raise PermissionError(f"cannot read {name!r}: permission denied") from None
    except IsADirectoryError:
        fd = -1
    st = os.fstat(fd) if fd >= 0 else os.stat(path)
    if stat.S_ISDIR(st.st_mode):
        if fd >= 0:
            os.close(fd)
        try:
            entries = sorted(os.listdir(path))
        except OSError:
            entries = []
        listing = ", ".join(repr(e) for e in entries[:MAX_LISTED]) or "nothing"
        raise IsADirectoryError(f"{name!r} is a directory, not a file; it holds: {listing}")
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise OSError(f"{name!r} is not a regular file (a device, pipe or socket); view_file reads files")
    with os.fdopen(fd, "rb") as f:
        yield f, st


# ---------------------------------------------------------------------------------------------
# Telling formats apart


def _render(f: BinaryIO, size: int, name: str, ext: str) -> _Doc:
    head = f.read(_HEAD_BYTES)
    f.seek(0)
    if size == 0 and not head:
        return _Doc("empty file", _filled("(the file is empty)"))
    kind = _sniff(f, size, head, ext)
    out = _Text()
    if ext in _CLAIMED_EXTS and ext not in _KIND_EXTS.get(kind, ()):
        what = _KIND_LABELS.get(kind) or f"a {kind} image"
        out.add(f"(note: the name says .{ext}, but the content is {what})\n")
    if kind == "pdf":
        return _render_pdf(f, size, name, out)
    if kind in ("docx", "xlsx", "pptx", "zip"):
        return _render_zip(f, size, name, kind, out)
    if kind in _IMAGE_KINDS:
        return _render_image(f, size, kind, out)
    if kind == "binary":
        return _render_binary(head, size, out)
    text, encoding, cut = _read_text(f, size)
    if cut:
        out.add(f"[only the first {_human_size(MAX_TEXT_BYTES)} of the file are read]\n")
    if ext in _CSV_EXTS:
        return _Doc(_render_csv(text, ext, cut, out), out)
    if ext in _JSON_EXTS:
        return _Doc(_render_json(text, out), out)
    if ext in _HTML_EXTS or (ext not in _TEXT_EXTS and _looks_html(text)):
        return _Doc(_render_html(text, out), out)
    _add_capped(out, text)
    return _Doc("text" if encoding == "utf-8" else f"text, {encoding}", out)


_IMAGE_KINDS = frozenset({"PNG", "JPEG", "GIF", "WebP", "BMP"})
_KIND_LABELS = {
    "pdf": "a PDF",
    "docx": "a Word document",
    "xlsx": "an Excel workbook",
    "pptx": "a PowerPoint file",
    "zip": "a zip archive",
    "text": "text",
    "binary": "binary data",
}


def _sniff(f: BinaryIO, size: int, head: bytes, ext: str) -> str:
    at = head.find(b"%PDF-", 0, 1024)
    if at == 0 or (at > 0 and ext == "pdf"):  # readers tolerate junk before the header; text may quote it
        return "pdf"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _zip_kind(f, size)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[:2] == b"BM" and len(head) >= 26 and struct.unpack("<I", head[14:18])[0] in _BMP_HEADERS:
        return "BMP"
    if any(head.startswith(magic) for magic, _ in _BINARY_MAGIC) or not _looks_text(head):
        return "binary"
    return "text"


_BMP_HEADERS = frozenset({12, 40, 52, 56, 64, 108, 124})


def _zip_kind(f: BinaryIO, size: int) -> str:
    try:
        _check_zip_directory(f, size)
        f.seek(0)
        with zipfile.ZipFile(f) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error):
        return "zip"  # _render_zip says what is wrong (FileViewError is a ValueError)
    finally:
        f.seek(0)
    if "word/document.xml" in names:
        return "docx"
    if "xl/workbook.xml" in names:
        return "xlsx"
    if "ppt/presentation.xml" in names:
        return "pptx"
    return "zip"


def _looks_text(head: bytes) -> bool:
    if head.startswith(tuple(bom for bom, _ in _BOMS)):
        return True
    sample = head[:8192]
    if b"\x00" in sample:
        return False
    controls = sum(sample.count(bytes([c])) for c in range(32) if c not in (9, 10, 12, 13, 27))
    return controls <= len(sample) // 100


def _looks_html(text: str) -> bool:
    start = text.lstrip()[:200].lower()
    return start.startswith(("<!doctype html", "<html"))


def _read_text(f: BinaryIO, size: int) -> tuple[str, str, bool]:
    """The first `MAX_TEXT_BYTES` decoded: (text, encoding, whether the file was cut)."""
    data = f.read(MAX_TEXT_BYTES + 1)
    cut = len(data) > MAX_TEXT_BYTES
    data = data[:MAX_TEXT_BYTES]
    encoding = "utf-8"
    for bom, enc in _BOMS:
        if data.startswith(bom):
            data, encoding = data[len(bom) :], enc
            break
    else:
        try:
            codecs.getincrementaldecoder("utf-8")().decode(data[:65536], final=False)
        except UnicodeDecodeError:
            encoding = "cp1252"  # the usual non-UTF-8 text in the wild (its 5 unmapped bytes: replaced)
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    return _clean(decoder.decode(data, final=not cut)), encoding, cut


def _clean(text: str) -> str:
    """Newlines normalised and control characters (which can garble a terminal) removed."""
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def _filled(text: str) -> _Text:
    out = _Text()
    out.add(text)
    return out


def _add_capped(out: _Text, text: str) -> None:
    out.add(text)
    out.mark_cut()


def _human_size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} TiB"


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(_clean(str(text)).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _detail(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "it needs more memory than this sandbox allows"
    if isinstance(exc, RecursionError):
        return "it is nested too deeply"
    return f"{type(exc).__name__}: {_short(str(exc)) or 'no detail'}"


def _unreadable(name: str, what: str, exc: BaseException) -> FileViewError:
    return FileViewError(
        f"cannot read {name!r} as {what} ({_detail(exc)}); it may be corrupt. Inspect its raw bytes with open()"
    )


def _need(module: str, package: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingParserError(
            f"view_file needs the Python package {package!r} to read {what}, and it is not installed "
            f"in this environment ({_short(str(exc), 120)}); install it with `pip install {package}`"
        ) from None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the parsers' warnings and log lines: they would land in the agent's cell output."""
    logger = logging.getLogger("pypdf")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


# ---------------------------------------------------------------------------------------------
# Text formats


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    text = text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n")
    return text if len(text) <= MAX_CELL_CHARS else text[: MAX_CELL_CHARS - 1] + "…"


def _row_line(values: "list[Any] | tuple[Any, ...]", total: int) -> str:
    line = " | ".join(_cell(v) for v in values[:MAX_COLUMNS])
    if total > MAX_COLUMNS:
        line += f" | … (+{total - MAX_COLUMNS} columns)"
    return line + "\n"


def _render_csv(text: str, ext: str, cut: bool, out: _Text) -> str:
    if cut and "\n" in text:
        text = text[: text.rfind("\n") + 1]  # the last line is partial
    first = text[: text.find("\n")] if "\n" in text else text
    if ext in ("tsv", "tab"):
        delimiter = "\t"
    else:
        counts = {d: first[:MAX_CSV_LINE_CHARS].count(d) for d in ",;\t|"}
        best = max(counts, key=lambda d: counts[d])
        delimiter = "," if counts[","] or not counts[best] else best
    long_lines = [0]

    def lines() -> Iterator[str]:
        # A row is built whole before its columns are capped: cap the line so one row stays small.
        for line in io.StringIO(text, newline=""):
            if len(line) > MAX_CSV_LINE_CHARS:
                long_lines[0] += 1
                line = line[:MAX_CSV_LINE_CHARS] + "\n"
            yield line

    source = lines()
    reader = csv.reader(source, delimiter=delimiter)
    rows, widths = 0, set[int]()
    try:
        for row in reader:
            if not row:
                continue
            rows += 1
            if len(widths) < 1000:
                widths.add(len(row))
            if not out.full:
                out.add(_row_line(row, len(row)))
    except csv.Error as exc:
        out.add(f"[CSV parse error at line {reader.line_num}: {exc}; the rest follows as raw text]\n")
        out.add("".join(source))
    if long_lines[0]:
        out.add(f"[{long_lines[0]} line(s) longer than {MAX_CSV_LINE_CHARS:,} characters were cut]\n")
    out.mark_cut()
    cols = "0" if not widths else str(max(widths)) if len(widths) == 1 else f"{min(widths)}-{max(widths)}"
    where = " in the part read" if cut else ""
    sep = {"\t": "tab", ";": "semicolon", "|": "pipe"}.get(delimiter, "")
    return f"{'TSV' if sep == 'tab' else 'CSV'}, {rows:,} rows{where} x {cols} columns" + (
        f", {sep}-separated" if sep and sep != "tab" else ""
    )


def _render_json(text: str, out: _Text) -> str:
    try:
        value = json.loads(text)
    except RecursionError:
        out.add("[nested deeper than the JSON parser allows; shown as raw text]\n")
        _add_capped(out, text)
        return "JSON (too deep to parse)"
    except ValueError as exc:
        out.add(f"[not valid JSON ({_short(str(exc), 200)}); shown as raw text]\n")
        _add_capped(out, text)
        return "JSON (invalid)"
    _emit_json(value, out, 0, "")
    out.add("\n")
    out.mark_cut()
    return "JSON"


def _emit_json(value: Any, out: _Text, depth: int, pad: str) -> None:
    """Pretty-print like ``json.dumps(indent=2)`` with caps; recursion stops at `MAX_JSON_DEPTH`."""
    if isinstance(value, (dict, list)):
        is_dict = isinstance(value, dict)
        opener, closer, noun = ("{", "}", "keys") if is_dict else ("[", "]", "items")
        if not value:
            out.add(opener + closer)
            return
        if depth >= MAX_JSON_DEPTH:
            out.add(f"{opener}… {len(value)} {noun}, nested too deep to show{closer}")
            return
        out.add(opener + "\n")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for i, (key, item) in enumerate(items):
            if i == MAX_JSON_ITEMS:
                out.add(f"{pad}  … {len(value) - i} more {noun}\n")
                break
            out.add(pad + "  " + (_json_scalar(str(key)) + ": " if is_dict else ""))
            _emit_json(item, out, depth + 1, pad + "  ")
            out.add(",\n" if i < len(value) - 1 else "\n")
            if out.full:
                return
        out.add(pad + closer)
    else:
        out.add(_json_scalar(value))


def _json_scalar(value: Any) -> str:
    if isinstance(value, str) and len(value) > MAX_JSON_STRING_CHARS:
        more = len(value) - MAX_JSON_STRING_CHARS
        return json.dumps(value[:MAX_JSON_STRING_CHARS], ensure_ascii=False) + f"…(+{more:,} characters)"
    try:
        return json.dumps(value, ensure_ascii=False)
    except ValueError:  # an int too long to print
        return f"<a number of {value.bit_length():,} bits>" if isinstance(value, int) else "<unprintable>"


class _HtmlText(html.parser.HTMLParser):
    """Visible text: script/style dropped, the title kept, block elements as line breaks."""

    _SKIP = frozenset({"script", "style", "noscript", "template", "svg", "iframe", "object"})
    _BLOCK = frozenset(
        """p div br hr tr table thead tbody tfoot ul ol dl dt dd section article header footer nav aside
        main blockquote pre figure figcaption form fieldset address details summary caption li h1 h2 h3
        h4 h5 h6""".split()  # noqa: SIM905  (a word list reads better than 38 quoted lines)
    )

    _LINE = frozenset({"li", "tr", "dt", "dd", "br"})  # a line of its own, no blank line after

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self._size = 0
        self._skip = 0
        self._in_title = False
        self._cells = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self._SKIP:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag in self._BLOCK:
            self._add("\n")
            if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
                self._add("#" * int(tag[1]) + " ")
            elif tag == "li":
                self._add("- ")
            elif tag == "tr":
                self._cells = 0
        elif tag in ("td", "th"):
            self._add(" | " if self._cells else "")
            self._cells += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
        elif tag in self._BLOCK and tag not in self._LINE:
            self._add("\n")

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._in_title:
            if sum(map(len, self.title)) < MAX_NAME_CHARS * 5:
                self.title.append(data)
            return
        self._add(_SPACE_RUN.sub(" ", data))

    def _add(self, text: str) -> None:
        if self._size <= MAX_TEXT_CHARS:  # past the cap the parser still runs, but keeps nothing
            self.parts.append(text)
            self._size += len(text)


def _defuse_html(text: str) -> str:
    """Rewrite, in linear time, what makes html.parser slow: an unterminated construct.

    html.parser before Python 3.13.4 rescans to the end of the input for every ``<!--``,
    ``<![`` or ``<`` whose terminator never comes (quadratic: minutes for a 2 MiB file). So
    comments are removed here, by one left-to-right scan (an unclosed one hides the rest, as in a
    browser), marked sections are made text, and so is every ``<`` after the last ``>`` and every
    ``<`` that cannot start a tag.
    """
    parts, pos = [], 0
    while True:
        start = text.find("<!--", pos)
        if start < 0:
            parts.append(text[pos:])
            break
        parts.append(text[pos:start])
        end = text.find("-->", start + 4)
        if end < 0:
            break
        pos = end + 3
    # A "<" that starts no tag is text anyway; escaped, a run of them is one chunk, not one call each.
    text = _STRAY_LT.sub("&lt;", "".join(parts).replace("<![", "&lt;!["))
    last = text.rfind(">")
    return text[: last + 1] + text[last + 1 :].replace("<", "&lt;")


def _render_html(text: str, out: _Text) -> str:
    parser = _HtmlText()
    try:
        parser.feed(_defuse_html(text))
        parser.close()
    except Exception as exc:  # HTMLParser is lenient; a failure is a bug to report, not a crash
        out.add(f"[the HTML parser stopped early: {_short(str(exc), 200)}]\n")
    title = " ".join("".join(parser.title).split())
    if title:
        out.add(f"Title: {title}\n\n")
    lines = (" ".join(line.split()) for line in "".join(parser.parts).split("\n"))
    body = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    _add_capped(out, body)
    return "HTML"


# ---------------------------------------------------------------------------------------------
# PDF


def _render_pdf(f: BinaryIO, size: int, name: str, out: _Text) -> _Doc:
    if size > MAX_DOCUMENT_BYTES:
        raise FileViewError(
            f"{name!r} is a {_human_size(size)} PDF; view_file reads PDFs up to "
            f"{_human_size(MAX_DOCUMENT_BYTES)}"
        )
    pypdf = _need("pypdf", "pypdf", "PDF files")
    data = f.read(MAX_DOCUMENT_BYTES + 1)
    try:
        with _quiet():
            reader = pypdf.PdfReader(io.BytesIO(data))
            n = len(reader.pages)
    except Exception as exc:
        raise _pdf_error(name, exc) from None
    pages = _PdfPages(reader, n, name, out)
    doc = _Doc(f"PDF, {n} page{'s' if n != 1 else ''}", out, pages.extend)
    pages.doc = doc
    pages.extend(0)
    return doc


def _pdf_error(name: str, exc: BaseException) -> FileViewError:
    if type(exc).__name__ == "FileNotDecryptedError":
        return FileViewError(f"{name!r} is an encrypted (password-protected) PDF; view_file cannot open it")
    if type(exc).__name__ == "DependencyError":
        return MissingParserError(f"reading {name!r} needs an extra package: {_short(str(exc), 200)}")
    return _unreadable(name, "a PDF", exc)


class _PdfPages:
    """Extracts a PDF's text page by page, as far as asked; what is done stays done."""

    def __init__(self, reader: Any, n: int, name: str, out: _Text) -> None:
        self.reader = reader
        self.n = n
        self.name = name
        self.out = out
        self.next = 0
        self.doc: _Doc | None = None

    def extend(self, target_chars: int) -> None:
        stop = min(self.n, MAX_PDF_PAGES)
        with _quiet():
            while self.next < stop and not self.out.full:
                if self.next >= PDF_EAGER_PAGES and self.out.size >= target_chars:
                    return
                try:
                    text = _clean(self.reader.pages[self.next].extract_text() or "").strip()
                except Exception as exc:
                    if self.next == 0 and type(exc).__name__ == "FileNotDecryptedError":
                        raise _pdf_error(self.name, exc) from None
                    text = f"[the text of this page could not be extracted: {_detail(exc)}]"
                self.out.add(f"--- PDF page {self.next + 1} ---\n{text or '[no text on this page]'}\n\n")
                self.next += 1  # after the add: an interrupted page is redone, never skipped
        if self.n == 0:
            self.out.add("[the PDF has no pages]\n")
        if self.out.full:
            self.out.mark_cut()
        elif self.n > MAX_PDF_PAGES:
            self.out.add(f"[… stopped after {MAX_PDF_PAGES:,} of the PDF's {self.n:,} pages]")
        self.reader = None  # complete: free the file's bytes
        if self.doc is not None:
            self.doc.more = None


# ---------------------------------------------------------------------------------------------
# Zip containers: docx, xlsx, pptx, plain zip


def _check_zip_directory(f: BinaryIO, size: int) -> None:
    """Refuse a central directory too big for zipfile to parse (read from its end record).

    zipfile builds an object per member before anything can be checked: a million-member
    directory would take seconds and hundreds of MiB. Raises FileViewError when it is too big.
    """
    tail_len = min(size, 22 + 65535)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return  # not found: zipfile will say the file is not a zip
    entries, directory = struct.unpack("<HI", tail[at + 10 : at + 16])
    if entries == 0xFFFF or directory == 0xFFFFFFFF:  # ZIP64: the real values are in another record
        locator = size - tail_len + at - 20
        if locator >= 0:
            f.seek(locator)
            record = f.read(20)
            if record[:4] == b"PK\x06\x07":
                f.seek(struct.unpack("<Q", record[8:16])[0])
                end64 = f.read(56)
                if end64[:4] == b"PK\x06\x06" and len(end64) == 56:
                    entries, directory = struct.unpack("<QQ", end64[32:48])
    if entries > MAX_ZIP_MEMBERS or directory > MAX_ZIP_DIRECTORY_BYTES:
        raise FileViewError(
            f"the zip directory lists {entries:,} members in {_human_size(directory)}; view_file opens "
            f"zip files of up to {MAX_ZIP_MEMBERS:,} members"
        )


def _check_inflation(infos: list[zipfile.ZipInfo], name: str) -> None:
    """Refuse a zip bomb from its declared sizes, before any member is inflated."""
    total = 0
    for info in infos:
        total += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > _RATIO_MIN_BYTES and ratio > MAX_ZIP_RATIO:
            raise FileViewError(
                f"{name!r} looks like a zip bomb: member {_short(info.filename, 100)!r} would inflate "
                f"{_human_size(info.compress_size)} to {_human_size(info.file_size)} (ratio {ratio:,.0f}, "
                f"limit {MAX_ZIP_RATIO}); not opened"
            )
    if total > MAX_UNZIPPED_BYTES:
        raise FileViewError(
            f"{name!r} would inflate to {_human_size(total)} in total (limit "
            f"{_human_size(MAX_UNZIPPED_BYTES)}); not opened"
        )


def _render_zip(f: BinaryIO, size: int, name: str, kind: str, out: _Text) -> _Doc:
    if size > MAX_DOCUMENT_BYTES:
        raise FileViewError(
            f"{name!r} is {_human_size(size)}; view_file opens zip-based files up to "
            f"{_human_size(MAX_DOCUMENT_BYTES)}"
        )
    try:
        _check_zip_directory(f, size)
        f.seek(0)
        with zipfile.ZipFile(f) as zf:
            infos = zf.infolist()
            if kind == "zip":
                return _Doc(_render_zip_listing(infos, out), out)
            _check_inflation(infos, name)
            if kind == "pptx":
                return _Doc(_render_pptx(zf, name, out), out)
    except FileViewError:
        raise
    except Exception as exc:
        raise _unreadable(name, _KIND_LABELS[kind], exc) from None
    f.seek(0)
    if kind == "docx":
        return _Doc(_render_docx(f, name, out), out)
    return _Doc(_render_xlsx(f, name, out), out)


def _render_zip_listing(infos: list[zipfile.ZipInfo], out: _Text) -> str:
    out.add(f"A zip archive of {len(infos):,} members (name, size when extracted):\n")
    for info in infos[:MAX_LISTED]:
        out.add(f"{_short(info.filename, 200)}  ({_human_size(info.file_size)})\n")
    if len(infos) > MAX_LISTED:
        out.add(f"… and {len(infos) - MAX_LISTED:,} more\n")
    out.add("view_file does not extract archives; use the zipfile module to read a member.\n")
    return f"zip archive, {len(infos):,} members"


def _render_docx(f: BinaryIO, name: str, out: _Text) -> str:
    docx = _need("docx", "python-docx", "Word (.docx) files")
    try:
        with _quiet():
            document = docx.Document(f)
            tables = 0
            for block in document.iter_inner_content():
                if hasattr(block, "rows"):  # a table
                    tables += 1
                    out.add(f"[table {tables}]\n")
                    for row in block.rows:
                        cells = row.cells
                        if not out.add(_row_line([c.text for c in cells[: MAX_COLUMNS + 1]], len(cells))):
                            break
                    out.add("\n")
                else:
                    style = getattr(getattr(block, "style", None), "name", "") or ""
                    level = style[8:].strip() if style.startswith("Heading ") else ""
                    prefix = "#" * int(level) + " " if level.isdigit() and 0 < int(level) < 10 else ""
                    out.add(prefix + _clean(block.text) + "\n")
                if out.full:
                    out.mark_cut()
                    break
    except Exception as exc:
        raise _unreadable(name, "a Word document", exc) from None
    return "Word document" + (f", {tables} tables" if tables else "")


def _render_xlsx(f: BinaryIO, name: str, out: _Text) -> str:
    openpyxl = _need("openpyxl", "openpyxl", "Excel (.xlsx) files")
    try:
        with _quiet():
            workbook = openpyxl.load_workbook(f, read_only=True, data_only=True)
            try:
                names = list(workbook.sheetnames)
                for sheet_name in names[:MAX_SHEETS]:
                    _render_sheet(workbook[sheet_name], sheet_name, out)
                    if out.full:
                        out.mark_cut()
                        break
                if len(names) > MAX_SHEETS:
                    out.add(f"[… {len(names) - MAX_SHEETS} more sheets not shown]\n")
            finally:
                workbook.close()
    except Exception as exc:
        raise _unreadable(name, "an Excel workbook", exc) from None
    return f"Excel workbook, {len(names)} sheet{'s' if len(names) != 1 else ''}"


def _render_sheet(sheet: Any, sheet_name: str, out: _Text) -> None:
    if not hasattr(sheet, "iter_rows"):
        out.add(f"--- sheet {sheet_name!r} (a chart; no cells) ---\n\n")
        return
    declared = (sheet.max_row, sheet.max_column)  # from the file's own dimension tag: may lie
    out.add(f"--- sheet {sheet_name!r} ---\n")
    sheet.reset_dimensions()  # read the rows that are there, not the ones the tag claims
    rows = wide = 0
    for values in sheet.iter_rows(max_row=MAX_SHEET_ROWS + 1, max_col=MAX_COLUMNS + 1, values_only=True):
        rows += 1
        if rows > MAX_SHEET_ROWS:
            break
        cells = list(values)
        wide = wide or (len(cells) > MAX_COLUMNS and cells[MAX_COLUMNS] is not None)
        cells = cells[:MAX_COLUMNS]
        while cells and cells[-1] is None:
            cells.pop()
        if cells and not out.add(_row_line(cells, len(cells))):
            return
    cut = []
    if rows > MAX_SHEET_ROWS:
        total = (
            f" of {declared[0]:,}" if isinstance(declared[0], int) and declared[0] > MAX_SHEET_ROWS else ""
        )
        cut.append(f"only the first {MAX_SHEET_ROWS:,}{total} rows are shown")
    if wide or (isinstance(declared[1], int) and declared[1] > MAX_COLUMNS):
        cut.append(f"only the first {MAX_COLUMNS} columns are shown")
    if cut:
        out.add(f"[… {'; '.join(cut)}: use openpyxl to read the rest]\n")
    out.add("\n")


def _render_pptx(zf: zipfile.ZipFile, name: str, out: _Text) -> str:
    import xml.etree.ElementTree as ElementTree

    slides = []
    for info in zf.infolist():
        match = re.fullmatch(r"ppt/slides/slide(\d+)\.xml", info.filename)
        if match:
            slides.append((int(match.group(1)), info.filename))
    slides.sort()
    ns = "{http://schemas.openxmlformats.org/drawingml/2006/main}"
    for number, member in slides:
        data = zf.read(member)
        if b"<!DOCTYPE" in data or b"<!ENTITY" in data:  # no Office file needs entities
            raise FileViewError(f"{name!r}: {member} declares XML entities; refused")
        root = ElementTree.fromstring(data)
        out.add(f"--- slide {number} ---\n")
        for paragraph in root.iter(ns + "p"):
            text = "".join(t.text or "" for t in paragraph.iter(ns + "t"))
            if text.strip():
                out.add(_clean(text) + "\n")
        out.add("\n")
        if out.full:
            out.mark_cut()
            break
    return f"PowerPoint presentation, {len(slides)} slides"


# ---------------------------------------------------------------------------------------------
# Images and other binary files


def _render_image(f: BinaryIO, size: int, kind: str, out: _Text) -> _Doc:
    head = f.read(_HEAD_BYTES)
    try:
        dims = _jpeg_size(f) if kind == "JPEG" else _image_size(kind, head)
    except (struct.error, OSError, ValueError):
        dims = None
    if dims is None:
        out.add(f"A {kind} image whose header is truncated or corrupt: its size cannot be read.\n")
        return _Doc(f"{kind} image", out)
    width, height = dims
    out.add(
        f"A {kind} image, {width} x {height} pixels, {size:,} bytes.\n"
        "view_file cannot show what an image depicts: only its format and size are known here.\n"
    )
    return _Doc(f"{kind} image, {width} x {height}", out)


def _image_size(kind: str, head: bytes) -> "tuple[int, int] | None":
    if kind == "PNG":
        if head[12:16] != b"IHDR":
            return None
        width, height = struct.unpack(">II", head[16:24])
        return width, height
    if kind == "GIF":
        width, height = struct.unpack("<HH", head[6:10])
        return width, height
    if kind == "BMP":
        if struct.unpack("<I", head[14:18])[0] == 12:
            width, height = struct.unpack("<HH", head[18:22])
            return width, height
        width, height = struct.unpack("<ii", head[18:26])
        return abs(width), abs(height)  # a negative height means rows stored top-down
    if kind == "WebP":
        chunk = head[12:16]
        if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
            width, height = struct.unpack("<HH", head[26:30])
            return width & 0x3FFF, height & 0x3FFF
        if chunk == b"VP8L" and head[20:21] == b"\x2f":
            bits = struct.unpack("<I", head[21:25])[0]
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X":
            return (int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1)
    return None


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(f: BinaryIO) -> "tuple[int, int] | None":
    """Walk the JPEG's segments to the frame header (after EXIF and the like, which may be large)."""
    pos = 2
    for _ in range(10_000):
        f.seek(pos)
        marker = f.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        code = marker[1]
        if code == 0xFF:  # fill byte
            pos += 1
            continue
        if code in (0x01, 0xD8) or 0xD0 <= code <= 0xD7:
            pos += 2
            continue
        if code in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        header = f.read(7)
        if len(header) < 7:
            return None
        length = struct.unpack(">H", header[:2])[0]
        if code in _SOF_MARKERS:
            height, width = struct.unpack(">HH", header[3:7])
            return width, height
        if length < 2:
            return None
        pos += 2 + length
    return None


def _render_binary(head: bytes, size: int, out: _Text) -> _Doc:
    label = next((what for magic, what in _BINARY_MAGIC if head.startswith(magic)), "binary data")
    sample = head[:_HEX_BYTES]
    hex_lines = []
    for offset in range(0, len(sample), 16):
        chunk = sample[offset : offset + 16]
        printable = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        hex_lines.append(f"{offset:08x}  {chunk.hex(' '):<47}  |{printable}|")
    out.add(
        f"A binary file ({label}), {size:,} bytes; view_file cannot show its contents. "
        f"The first {len(sample)} bytes in hex:\n" + "\n".join(hex_lines) + "\n"
    )
    return _Doc(f"binary, {label}", out)
