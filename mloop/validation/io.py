"""Data in, as Arrow record batches: CSV (optionally gzipped), Parquet, pandas DataFrames, Arrow tables.

Files are streamed batch by batch, so statistics and validation work on files larger than memory.
Every reading problem becomes a :class:`~mloop.errors.DataError` that names the file and the problem.
"""

from __future__ import annotations

import codecs
import gzip
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mloop.errors import DataError

__all__ = ["Progress", "Source", "describe", "read_batches", "read_table", "scan"]

Source = Any  # str | os.PathLike | pandas.DataFrame | pyarrow.Table
Progress = Callable[[int, int], None]  # (done, total) in bytes for CSV, rows for Parquet

_CSV_BLOCK = 32 << 20
_PARQUET_BATCH = 32_768  # rows per batch: per-column intermediates scale with it
_PARQUET_PASS_BYTES = 16 << 20
_COLUMN_ERROR = re.compile(r"In CSV column #(\d+)")


class _TypeChangedMidStream(Exception):
    def __init__(self, column: int) -> None:
        self.column = column


def describe(source: Source) -> str:
    """How a source is named in messages and reports."""
    if isinstance(source, str | os.PathLike):
        return str(source)
    named = getattr(source, "attrs", None)  # a DataFrame says where it came from in df.attrs["source"]
    if isinstance(named, dict) and isinstance(named.get("source"), str):
        return str(named["source"])
    return f"<{type(source).__name__}>"


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def read_batches(
    source: Source,
    *,
    encoding: str = "utf-8",
    progress: Progress | None = None,
    _strings: frozenset[str] = frozenset(),
) -> Iterator[pa.RecordBatch]:
    """Record batches of ``source``; column types are inferred from the data.

    Consumers must accept batches that hold only some of the columns (wide Parquet files are read a
    group of columns at a time); every row of every column is delivered exactly once.
    """
    if isinstance(source, pa.Table):
        yield from source.to_batches(max_chunksize=_PARQUET_BATCH)
        return
    if not isinstance(source, str | os.PathLike):
        yield from _from_pandas(source).to_batches(max_chunksize=_PARQUET_BATCH)
        return
    path = Path(source)
    if not path.is_file():
        raise DataError(f"{path}: no such file", field="path")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty", field="path")
    if _is_parquet(path):
        yield from _parquet_batches(path, progress)
    else:
        _check_encoding(encoding, path)
        yield from _csv_batches(path, encoding, progress, _strings)


_NOT_FOR_FILES = {"punycode", "undefined"}  # text codecs that cannot decode a file's bytes as a stream


def _check_encoding(encoding: str, path: Path | None = None) -> None:
    """A known codec that decodes bytes to text (``base64`` and ``rot13`` are codecs, not text), and
    that decodes the start of ``path``. Checked here, before pyarrow decodes in its own threads: a
    codec failing there surfaced as an AttributeError, and now and then aborted the process at exit
    after the error was printed (``undefined``; ``utf-16`` on a UTF-8 file)."""
    try:
        info = codecs.lookup(encoding)
    except (LookupError, TypeError, ValueError):
        raise DataError(f"unknown text encoding {encoding!r}", field="encoding") from None
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_FOR_FILES:
        raise DataError(f"{encoding!r} is not a text encoding (e.g. utf-8, latin-1)", field="encoding")
    if path is None or info.name == "utf-8":  # pyarrow reads UTF-8 itself, with its own errors
        return
    try:
        opener: Any = gzip.open if path.suffix.lower() in (".gz", ".gzip") else open
        with opener(path, "rb") as fh:
            head = fh.read(1 << 16)
    except (OSError, EOFError):
        return  # reading the file proper reports what is wrong with it
    try:
        codecs.getincrementaldecoder(encoding)().decode(head, final=False)
    except UnicodeError as exc:
        raise _csv_error(path, encoding, exc) from None


def scan(
    source: Source, consume: Callable[[pa.RecordBatch], None], reset: Callable[[], None], **kw: Any
) -> None:
    """Feed every batch to ``consume``; if a CSV column turns out mixed-type mid-file, start again
    with that column read as text (``reset`` clears what was consumed)."""
    strings: set[str] = set()
    while True:
        try:
            for batch in read_batches(source, _strings=frozenset(strings), **kw):
                consume(batch)
            return
        except _TypeChangedMidStream as exc:
            names = _csv_header(Path(source), kw.get("encoding", "utf-8"))
            strings.add(names[exc.column])
            reset()


def read_table(source: Source, *, encoding: str = "utf-8", progress: Progress | None = None) -> pa.Table:
    """The whole source as one Arrow table (for data that fits in memory)."""
    if isinstance(source, str | os.PathLike) and Path(source).is_file() and _is_parquet(Path(source)):
        try:
            return pq.read_table(source)
        except (pa.ArrowInvalid, OSError) as exc:  # truncated, or not Parquet inside
            raise DataError(
                f"{source}: not a readable Parquet file ({str(exc)[:120]})", field="data"
            ) from None
    batches: list[pa.RecordBatch] = []
    schema: list[pa.Schema] = []

    def consume(batch: pa.RecordBatch) -> None:
        batches.append(batch)
        schema[:] = [batch.schema]

    scan(source, consume, batches.clear, encoding=encoding, progress=progress)
    if not batches:
        return _empty_table(source, encoding)
    return pa.Table.from_batches(batches, schema=schema[0])


def _empty_table(source: Source, encoding: str) -> pa.Table:
    if isinstance(source, pa.Table):
        return source
    if isinstance(source, str | os.PathLike) and not _is_parquet(Path(source)):
        names = _csv_header(Path(source), encoding)
        return pa.table({name: pa.array([], pa.null()) for name in names})
    if isinstance(source, str | os.PathLike):
        return pq.read_table(source)
    return _from_pandas(source)


def _from_pandas(df: Any) -> pa.Table:
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - pandas is a dependency
        raise DataError("reading DataFrames needs pandas") from exc
    if not isinstance(df, pd.DataFrame):
        raise DataError(
            f"cannot read data from a {type(df).__name__}: "
            "pass a file path, a pandas DataFrame or an Arrow table",
            field="data",
        )
    df = df.rename(columns=str)
    if df.columns.duplicated().any():
        dup = df.columns[df.columns.duplicated()][0]
        raise DataError(f"column {dup!r} appears twice", field=dup)
    columns = {}
    for name in df.columns:
        try:
            columns[name] = pa.array(df[name], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # a mixed-type object column: keep it, as text, so validation can report the mix
            col = df[name]
            columns[name] = pa.array(
                col.where(col.isna(), col.astype(str)), from_pandas=True, type=pa.string()
            )
    return pa.table(columns)


def _parquet_batches(path: Path, progress: Progress | None) -> Iterator[pa.RecordBatch]:
    """Batches of a Parquet file, a group of columns at a time.

    A Parquet reader holds a whole row group's column chunks in memory; reading a few columns per
    pass (as many as fit in ``_PARQUET_PASS_BYTES``, from the file's metadata) keeps memory bounded
    however wide the file is. Batches therefore may hold only some of the columns.
    """
    try:
        file = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})", field="path") from exc
    meta = file.metadata
    names = file.schema_arrow.names
    _check_unique(path, names)
    widest = 1
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        chunk = max((group.column(j).total_uncompressed_size for j in range(group.num_columns)), default=1)
        widest = max(widest, chunk)
    per_pass = max(1, _PARQUET_PASS_BYTES // widest)
    passes = [names[i : i + per_pass] for i in range(0, len(names), per_pass)] or [names]
    total, done = meta.num_rows * len(passes), 0
    for columns in passes:
        for batch in file.iter_batches(batch_size=_PARQUET_BATCH, columns=columns):
            done += batch.num_rows
            if progress:
                progress(done, total)
            yield batch


class _CountingReader:
    """A file object that reports how many bytes were read (for the progress bar)."""

    def __init__(self, path: Path, progress: Progress) -> None:
        self._fh = path.open("rb")
        self._total = path.stat().st_size
        self._progress = progress
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        self._progress(self._fh.tell(), self._total)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self._fh.close()
        self.closed = True


def _csv_input(path: Path, progress: Progress | None) -> Any:
    if progress is None:
        return str(path)
    stream: Any = pa.PythonFile(_CountingReader(path, progress), mode="r")
    if path.suffix.lower() in (".gz", ".gzip"):
        stream = pa.CompressedInputStream(stream, "gzip")
    return stream


def _check_unique(path: Path, names: list[str]) -> None:
    """Column names are keys: two columns under one name were counted as one (twice the rows)."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(f"{path}: column {name!r} appears twice: name each column once", field=name)
        seen.add(name)


def _csv_header(path: Path, encoding: str) -> list[str]:
    options = pacsv.ReadOptions(encoding=encoding, block_size=1 << 20)
    try:
        with pacsv.open_csv(str(path), read_options=options) as reader:
            return list(reader.schema.names)
    except pa.ArrowInvalid as exc:
        raise _csv_error(path, encoding, exc) from exc


def _csv_error(path: Path, encoding: str, exc: Exception) -> DataError:
    message = str(exc).strip().splitlines()[0]
    if "Empty CSV file" in message:
        try:
            size = path.stat().st_size
        except OSError:
            size = 0
        if size:  # bytes, but no line: blank lines, or bytes that decode to no line break
            return DataError(
                f"{path}: no CSV header line in its {size:,} bytes read as {encoding} "
                "(blank lines only, or text in another encoding?)",
                field="encoding" if encoding.lower().replace("_", "-") not in ("utf-8", "utf8") else "path",
            )
        return DataError(f"{path}: the file is empty", field="path")
    if (
        isinstance(exc, UnicodeError)
        or "UTF8" in message
        or "UTF-8" in message
        or "decode" in message.lower()
    ):
        return DataError(
            f"{path}: not valid {encoding} text ({message}); "
            "pass the file's encoding, e.g. --encoding latin-1",
            field="encoding",
        )
    hint = _sniffed(path)
    if hint.startswith("; the file is "):  # compressed or archived: the parse error quotes its bytes
        return DataError(f"{path}: not CSV text{hint}", field="path")
    return DataError(f"{path}: cannot parse CSV ({message}){hint}", field="path")


def _sniffed(path: Path) -> str:
    """A hint from the file's first bytes when a CSV cannot be parsed: a UTF-16/32 byte-order mark
    (read without --encoding), or a first line separated by ';', tabs or '|' rather than commas."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return ""
    if head.startswith(b"\x1f\x8b"):
        return "; the file is gzip-compressed: name it with .gz at the end (data.csv.gz) or decompress it"
    if head.startswith(b"PK\x03\x04"):
        return "; the file is a ZIP archive (an Excel workbook?): save the sheet as CSV or Parquet"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "; the file starts with a UTF-16/32 byte-order mark: pass --encoding utf-16 (or utf-32)"
    return separator_hint(head.split(b"\n", 1)[0].decode("utf-8", "replace"))


def separator_hint(line: str) -> str:
    """``"; the file seems separated by ';' …"`` when ``line`` (a CSV's first line, or the one column
    name a comma-separated read found) holds more ';', tabs or '|' than commas; else ``""``."""
    sep, n = max(((s, line.count(s)) for s in (";", "\t", "|")), key=lambda kv: kv[1])
    if n and n >= line.count(","):
        return f"; the file seems separated by {sep!r}: save it comma-separated or as Parquet"
    return ""


def _csv_batches(
    path: Path, encoding: str, progress: Progress | None, strings: frozenset[str]
) -> Iterator[pa.RecordBatch]:
    read_options = pacsv.ReadOptions(encoding=encoding, block_size=_CSV_BLOCK)
    convert = pacsv.ConvertOptions(
        column_types={name: pa.string() for name in strings}, strings_can_be_null=True, check_utf8=True
    )
    try:
        reader = pacsv.open_csv(
            _csv_input(path, progress), read_options=read_options, convert_options=convert
        )
    except (pa.ArrowInvalid, UnicodeError, LookupError) as exc:
        if isinstance(exc, LookupError):
            raise DataError(f"unknown text encoding {encoding!r}", field="encoding") from exc
        raise _csv_error(path, encoding, exc) from exc
    with reader:
        try:  # column names are decoded on first use
            reader.schema.names  # noqa: B018 (decodes them: a header in another encoding fails here)
            binary = [
                f.name
                for f in reader.schema
                if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)
            ]
        except UnicodeError as exc:
            raise _csv_error(path, encoding, exc) from exc
        _check_unique(path, reader.schema.names)
        if binary:  # pyarrow infers text it cannot decode as raw bytes instead of failing
            raise DataError(
                f"{path}: column {binary[0]!r} is not valid {encoding} text; "
                "pass the file's encoding, e.g. --encoding latin-1",
                field="encoding",
            )
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowInvalid as exc:
                column = _COLUMN_ERROR.search(str(exc))
                if column and "conversion error" in str(exc).lower():
                    raise _TypeChangedMidStream(int(column.group(1))) from exc
                raise _csv_error(path, encoding, exc) from exc
            except UnicodeError as exc:  # a decode error, or a UTF-16/32 stream without its BOM
                raise _csv_error(path, encoding, exc) from exc
            yield batch
