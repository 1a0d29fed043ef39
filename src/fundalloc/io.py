"""Reading the day's tables at the edge: originations, portfolio positions, obligor exposures.

Tables are read column-wise (only the columns the terms need), validated once with vectorised
checks, and every problem is reported in one :class:`~fundalloc.errors.InputError` that names the
file, the rows and what is wrong. Row numbers count data rows from 1 (the header is not a row).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .errors import Collector, InputError, Problem

REQUIRED_LOAN_COLUMNS = ("loan_id", "principal", "tenor_months", "apr")
OPTIONAL_NUMERIC = ("expected_life_years", "score")
MAX_LISTED_ROWS = 10

CSV_SUFFIXES = (".csv", ".csv.gz", ".txt")

# Spreadsheet formula neutralisation (OWASP "CSV injection"): in every CSV fundalloc writes, a
# text value that begins with = + - @ tab or CR -- after any run of leading quotes -- gets one more
# leading ``'``, so a spreadsheet shows it as text instead of running it; every CSV fundalloc reads
# has that one quote taken off again. The pair is a bijection: ids survive any round trip, and
# JSON and Parquet always carry them unchanged.
_FORMULA = r"'*[=+\-@\t\r]"


def _text_columns(table: pa.Table, fn) -> pa.Table:
    for i, f in enumerate(table.schema):
        t = f.type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            col = table.column(i)
            if pa.types.is_dictionary(f.type):
                col = col.cast(t)
            table = table.set_column(i, f.name, fn(col))
    return table


def neutralise_csv_text(table: pa.Table) -> pa.Table:
    """Every text column of ``table`` made safe to open in a spreadsheet (see :data:`_FORMULA`)."""
    return _text_columns(table, lambda c: pa.compute.replace_substring_regex(
        c, pattern=f"^({_FORMULA})", replacement="'\\1", max_replacements=1))


def restore_csv_text(table: pa.Table) -> pa.Table:
    """The inverse of :func:`neutralise_csv_text` on a table read from CSV."""
    return _text_columns(table, lambda c: pa.compute.replace_substring_regex(
        c, pattern=f"^'({_FORMULA})", replacement="\\1", max_replacements=1))


def csv_bytes(df: pd.DataFrame) -> bytes:
    """A frame as neutralised CSV bytes, in pandas' dialect (the API's download: quotes only
    where a value needs them)."""
    table = neutralise_csv_text(pa.Table.from_pandas(df, preserve_index=False))
    return table.to_pandas(types_mapper=_types_mapper).to_csv(index=False).encode()


def write_csv(df: pd.DataFrame, path: str | Path) -> None:
    """Write a frame as neutralised CSV (see :func:`csv_bytes`)."""
    table = neutralise_csv_text(pa.Table.from_pandas(df, preserve_index=False))
    pacsv.write_csv(table, str(path), write_options=pacsv.WriteOptions(quoting_style="needed"))
PARQUET_SUFFIXES = (".parquet", ".pq")


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    raise InputError(
        Problem(str(path), "", "unknown file type; expected .csv or .parquet (chosen by extension)")
    )


def table_columns(path: str | Path) -> list[str]:
    """The column names of a CSV or Parquet file, without reading its rows."""
    p = Path(path)
    kind = _kind(p)
    try:
        if kind == "parquet":
            names = list(pq.read_schema(p).names)
        else:
            with pacsv.open_csv(p) as reader:
                names = list(reader.schema.names)
    except (OSError, pa.ArrowInvalid) as exc:
        if isinstance(exc, pa.ArrowInvalid) and "Empty CSV file" in str(exc):
            return []
        raise InputError(Problem(str(p), "", f"cannot read the file: {exc}")) from None
    seen: set[str] = set()
    repeated = sorted({n for n in names if n in seen or seen.add(n)})
    if repeated:
        # a reader would silently take the first of two columns with one name
        raise InputError(Problem(str(p), "header", f"column names repeat: {repeated}; each column must be named once"))
    return names


def count_rows(path: str | Path) -> int:
    """The data rows of a CSV or Parquet file without decoding it: a Parquet file's metadata, a
    CSV's records counted batch by batch as text (memory bounded by one block)."""
    p = Path(path)
    kind = _kind(p)
    try:
        if kind == "parquet":
            return int(pq.read_metadata(p).num_rows)
        if p.stat().st_size == 0:
            return 0
        names = table_columns(p)
        if not names:
            return 0
        convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in names})
        n = 0
        with pacsv.open_csv(p, convert_options=convert) as reader:
            for batch in reader:
                n += batch.num_rows
        return n
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(Problem(str(p), "", f"cannot read the file: {exc}")) from None


def read_table(path: str | Path, columns: Iterable[str] | None = None,
               string_columns: Iterable[str] = ()) -> pd.DataFrame:
    """Read the named columns of a CSV or Parquet file into Arrow-backed pandas columns.

    ``string_columns`` are read as text whatever they look like (ids such as ``00042``).
    """
    p = Path(path)
    kind = _kind(p)
    table_columns(p)  # refuses a header that names a column twice
    cols = list(dict.fromkeys(columns)) if columns is not None else None
    strings = set(string_columns)
    try:
        if kind == "parquet":
            table = pq.read_table(p, columns=cols)
        else:
            if p.stat().st_size == 0:
                return pd.DataFrame({c: pd.Series([], dtype="string[pyarrow]") for c in (cols or [])})
            convert = pacsv.ConvertOptions(
                include_columns=cols,
                column_types={c: pa.string() for c in strings if cols is None or c in cols},
                strings_can_be_null=True,
                null_values=["", "NA", "NaN", "nan", "null", "NULL", "None"],
            )
            table = restore_csv_text(pacsv.read_csv(p, convert_options=convert))
    except (OSError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InputError(Problem(str(p), "", f"cannot read the file: {exc}")) from None
    for c in strings:
        if c in table.column_names and not pa.types.is_string(table.schema.field(c).type):
            idx = table.column_names.index(c)
            table = table.set_column(idx, c, table.column(c).cast(pa.string()))
    return table.to_pandas(types_mapper=_types_mapper, split_blocks=True, self_destruct=True)


def _types_mapper(t: pa.DataType):
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pd.StringDtype("pyarrow")
    if pa.types.is_dictionary(t):
        return pd.StringDtype("pyarrow")
    return None


def _rows(mask: np.ndarray, ids: pd.Series | None = None) -> str:
    idx = np.flatnonzero(mask)
    shown = []
    for i in idx[:MAX_LISTED_ROWS]:
        label = f"{i + 1}"
        if ids is not None:
            v = ids.iloc[i]
            if isinstance(v, str) and v:
                label += f" (loan_id {v})"
        shown.append(label)
    more = f" and {len(idx) - MAX_LISTED_ROWS} more" if len(idx) > MAX_LISTED_ROWS else ""
    word = "row" if len(idx) == 1 else "rows"
    return f"{word} {', '.join(shown)}{more}"


def _numeric(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Values as float64 and a mask of entries that are present but not numbers."""
    if pd.api.types.is_bool_dtype(series.dtype):
        vals = series.astype("float64").to_numpy()
        return vals, np.zeros(len(series), dtype=bool)
    if pd.api.types.is_numeric_dtype(series.dtype):
        return series.to_numpy(dtype="float64", na_value=np.nan), np.zeros(len(series), dtype=bool)
    num = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    bad = np.isnan(num) & series.notna().to_numpy()
    return num, bad


def validate_originations(df: pd.DataFrame, source: str, numeric_fields: Iterable[str] = ()) -> pd.DataFrame:
    """Check the originations table; return it with canonical dtypes.

    ``numeric_fields`` are columns that weighted-average tests read: they must be numeric.
    """
    problems = Collector()
    missing = [c for c in REQUIRED_LOAN_COLUMNS if c not in df.columns]
    for c in missing:
        problems.add(source, f"column '{c}'", "required column is missing")
    if missing:
        problems.raise_if_any()

    ids = df["loan_id"].astype("string[pyarrow]")
    id_missing = ids.isna().to_numpy() | (ids.str.strip() == "").fillna(True).to_numpy()
    if id_missing.any():
        problems.add(source, _rows(id_missing), "loan_id is empty")
    # fast path: one hash pass counts distinct ids (``unique`` is several times faster than
    # ``count_distinct`` on millions of strings); the row-level detail only when needed
    n_distinct = 0
    if len(ids):
        distinct = pa.compute.unique(pa.array(ids.array))
        n_distinct = len(distinct) - distinct.null_count
    dup = np.zeros(len(ids), dtype=bool)
    if n_distinct < int((~id_missing).sum()):
        dup = ids.duplicated(keep=False).to_numpy() & ~id_missing
    if dup.any():
        problems.add(source, _rows(dup, ids), "loan_id repeats; each loan_id must be unique in the file")

    out = {"loan_id": ids}
    principal, bad = _numeric(df["principal"])
    if bad.any():
        problems.add(source, _rows(bad, ids), "principal is not a number")
    nan = np.isnan(principal) & ~bad
    if nan.any():
        problems.add(source, _rows(nan, ids), "principal is empty (required)")
    nonpos = principal <= 0
    if nonpos.any():
        problems.add(source, _rows(nonpos, ids), "principal must be > 0")
    infinite = np.isinf(principal)
    if infinite.any():
        problems.add(source, _rows(infinite, ids), "principal must be a finite number")
    out["principal"] = principal

    tenor, bad = _numeric(df["tenor_months"])
    nan = np.isnan(tenor) & ~bad
    if nan.any():
        problems.add(source, _rows(nan, ids), "tenor_months is empty (required)")
    finite = np.isfinite(tenor)
    notint = bad | (finite & ((tenor < 1) | (np.floor(tenor) != tenor))) | (~finite & ~np.isnan(tenor))
    if notint.any():
        problems.add(source, _rows(notint, ids), "tenor_months must be a whole number of months >= 1")
    out["tenor_months"] = np.where(finite, tenor, 0).astype("int64")

    apr, bad = _numeric(df["apr"])
    if bad.any():
        problems.add(source, _rows(bad, ids), "apr is not a number")
    nan = np.isnan(apr) & ~bad
    if nan.any():
        problems.add(source, _rows(nan, ids), "apr is empty (required)")
    notfrac = (apr < 0) | (apr > 1)
    if notfrac.any():
        problems.add(source, _rows(notfrac, ids),
                     "apr must be a fraction in [0, 1] (0.18 means 18%); it looks like a percentage")
    out["apr"] = apr

    if "expected_life_years" in df.columns:
        life, bad = _numeric(df["expected_life_years"])
        badlife = bad | (life <= 0) | np.isinf(life)
        if badlife.any():
            problems.add(source, _rows(badlife, ids), "expected_life_years must be a number > 0")
        out["expected_life_years"] = life

    for field in numeric_fields:
        if field in out or field not in df.columns:
            continue
        vals, bad = _numeric(df[field])
        if bad.any() and np.isnan(vals).all():
            continue  # a text column: the terms check names the test that reads it
        if bad.any():
            problems.add(source, f"column '{field}', {_rows(bad, ids)}",
                         "a weighted-average test reads this column, so it must be numeric")
        infinite = np.isinf(vals)
        if infinite.any():
            problems.add(source, f"column '{field}', {_rows(infinite, ids)}",
                         "a weighted-average test reads this column, so it must be finite")
        out[field] = vals

    problems.raise_if_any()
    rest = {c: df[c] for c in df.columns if c not in out}
    result = pd.DataFrame({**out, **rest}, index=pd.RangeIndex(len(df)))
    return result


def read_originations(path: str | Path, needed: Iterable[str] | None = None,
                      numeric_fields: Iterable[str] = ()) -> pd.DataFrame:
    """Read and validate originations, keeping only the required and the ``needed`` columns.

    A ``needed`` column that the file lacks is not an error here: the terms check reports it
    with the key that names it.
    """
    p = Path(path)
    available = table_columns(p)
    if needed is None:
        cols = available
    else:
        wanted = list(REQUIRED_LOAN_COLUMNS) + ["expected_life_years", "borrower_id"] + list(needed)
        cols = [c for c in dict.fromkeys(wanted) if c in available]
    df = read_table(p, cols, string_columns=("loan_id", "borrower_id"))
    return validate_originations(df, str(p), numeric_fields)


def validate_portfolio(df: pd.DataFrame, source: str) -> pd.DataFrame:
    problems = Collector()
    for c in ("funder_id", "outstanding"):
        if c not in df.columns:
            problems.add(source, f"column '{c}'", "required column is missing")
    problems.raise_if_any()
    fid = df["funder_id"].astype("string[pyarrow]")
    if fid.isna().any():
        problems.add(source, _rows(fid.isna().to_numpy()), "funder_id is empty")
    out, bad = _numeric(df["outstanding"])
    badv = bad | ~np.isfinite(out) | (out < 0)
    if badv.any():
        problems.add(source, _rows(badv), "outstanding must be a finite number >= 0")
    problems.raise_if_any()
    result = df.copy()
    result["funder_id"] = fid
    result["outstanding"] = out
    return result


def _keyed(df: pd.DataFrame, source: str, keys: tuple[str, str], value: str,
           problems: Collector) -> tuple[pd.Series, pd.Series, np.ndarray]:
    """A table of two id columns and a value: checks the columns are there (raising at once when
    not), reports empty ids; returns the ids as text and the rows with an empty one."""
    for c in (*keys, value):
        if c not in df.columns:
            problems.add(source, f"column '{c}'", "required column is missing")
    problems.raise_if_any()
    a, b = (df[k].astype("string[pyarrow]") for k in keys)
    empty = a.isna().to_numpy() | b.isna().to_numpy()
    if empty.any():
        problems.add(source, _rows(empty), f"{keys[0]} and {keys[1]} must not be empty")
    return a, b, empty


def validate_exposures(df: pd.DataFrame, source: str) -> pd.DataFrame:
    problems = Collector()
    fid, bid, _ = _keyed(df, source, ("funder_id", "borrower_id"), "outstanding", problems)
    out, bad = _numeric(df["outstanding"])
    badv = bad | ~np.isfinite(out) | (out < 0)
    if badv.any():
        problems.add(source, _rows(badv), "outstanding must be a finite number >= 0")
    problems.raise_if_any()
    return pd.DataFrame({"funder_id": fid, "borrower_id": bid, "outstanding": out})


def read_portfolio(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    return validate_portfolio(read_table(p, string_columns=("funder_id",)), str(p))


def read_exposures(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    return validate_exposures(read_table(p, string_columns=("funder_id", "borrower_id")), str(p))


def validate_bids(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Bids: one price per (loan, funder) a buyer quotes, per unit of principal (1.0 is par)."""
    problems = Collector()
    lid, fid, empty = _keyed(df, source, ("loan_id", "funder_id"), "price", problems)
    price, bad = _numeric(df["price"])
    badv = bad | ~np.isfinite(price) | (price < 0)
    if badv.any():
        problems.add(source, _rows(badv), "price must be a finite number >= 0 (per unit of principal, 1.0 is par)")
    dup = pd.DataFrame({"l": lid, "f": fid}).duplicated(keep="first").to_numpy() & ~empty
    if dup.any():
        problems.add(source, _rows(dup), "a second bid for the same loan and funder; keep one")
    problems.raise_if_any()
    return pd.DataFrame({"loan_id": lid, "funder_id": fid, "price": price})


def read_bids(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    return validate_bids(read_table(p, string_columns=("loan_id", "funder_id")), str(p))
