"""Reader and writer of ServeGen's released data directory format.

A model directory (``data/<category>/<model>/``) holds, per client ``i``:
``chunk-i-trace.csv`` (``timestamp,rate,cv,pattern,param1,param2`` every window; an empty
pattern marks an idle window) and ``chunk-i-dataset.json`` (per length window: field ->
a Python dict literal ``{value: probability}``). Nothing here evaluates Python source: the
literals are scanned by a compiled byte parser.

Semantics kept from ServeGen's loader: a length window whose literal for any field is
empty (``{}``) is skipped, and each arrival window uses the latest length window that
starts at or before it. Windows before a client's first length window (where ServeGen's
generator would raise) use that first window.
"""
from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import numpy as np

from . import pool_cache
from .atomic import write_text
from ..model.distributions import DistTableBuilder
from ..kernels import textparse as tp
from ..kernels.textparse_aot import parsers
from ..model.fields import CATEGORIES, LAW_IDLE, LAW_NAMES, NO_DIST
from ..model.pool import ClientPool, regular_grid

_TRACE_RE = re.compile(r"^chunk-(\d+)-trace\.csv$")
_DATASET_RE = re.compile(r"^chunk-(\d+)-dataset\.json$")
PDF_ATOL = 1e-6  # ServeGen's Client.validate tolerance on a PDF's sum (servegen_fast.compat uses it too)


class ServeGenFormatError(ValueError):
    """A ServeGen data file does not have the expected content."""


def resolve_model_dir(data_dir: str | os.PathLike | None, pool: str | None) -> Path:
    """``(data_dir, "language/m-large")`` or a model directory itself -> the model directory."""
    if data_dir is None:
        data_dir = os.environ.get("SERVEGEN_DATA_DIR") or "data"
    base = Path(data_dir)
    return base / pool if pool else base


def read_servegen(data_dir: str | os.PathLike | None, pool: str | None = None, *,
                  category: str | None = None, cache: bool = True) -> ClientPool:
    """Load a ServeGen model directory as a `ClientPool`.

    `data_dir` is ServeGen's ``data/`` directory and `pool` is ``"<category>/<model>"``;
    or `data_dir` is the model directory and `pool` is None. With data_dir None the
    ``SERVEGEN_DATA_DIR`` environment variable, else ``./data``, is used. `cache`: read the
    directory's parsed pool from, and keep it in, the pool cache (io/pool_cache.py).
    """
    path = resolve_model_dir(data_dir, pool)
    if not path.is_dir():
        raise FileNotFoundError(f"ServeGen data directory not found: {path} "
                                f"(expected <data>/<category>/<model> with chunk-*-trace.csv files)")
    category = category or path.parent.name
    if category not in CATEGORIES:
        raise ValueError(f"cannot tell the category of {path}: its parent folder is {path.parent.name!r}; "
                         f"pass category= one of {CATEGORIES}")
    names = os.listdir(path)
    traces = {int(m.group(1)): n for n in names if (m := _TRACE_RE.match(n))}
    datasets = {int(m.group(1)): n for n in names if (m := _DATASET_RE.match(n))}
    if not traces:
        raise ServeGenFormatError(f"{path}: no chunk-<id>-trace.csv files (is this a ServeGen model directory?)")
    orphan = sorted(set(datasets) - set(traces))
    if orphan:
        raise ServeGenFormatError(f"{path / datasets[orphan[0]]}: dataset without a trace file "
                                  f"chunk-{orphan[0]}-trace.csv")
    missing = sorted(set(traces) - set(datasets))
    if missing:
        warnings.warn(f"{path}: {len(missing)} of {len(traces)} clients have no dataset file and are left out "
                      f"(client ids {missing[:5]}{' ...' if len(missing) > 5 else ''})", stacklevel=2)
    ids = sorted(datasets)
    if not ids:
        raise ServeGenFormatError(f"{path}: no client has both a trace and a dataset file")
    if cache and (kept := pool_cache.load(path, category)) is not None:
        return kept
    pool = _parse(path, category, ids, traces, datasets)
    if cache:
        pool_cache.store(path, category, pool)
    return pool


def _parse(path: Path, category: str, ids: list, traces: dict, datasets: dict) -> ClientPool:

    cols = [_read_trace(path / traces[i]) for i in ids]
    ts0 = cols[0][0]
    for i, c in zip(ids, cols):
        if len(c[0]) != len(ts0) or not np.array_equal(c[0], ts0):
            raise ServeGenFormatError(f"{path / traces[i]}: timestamps differ from those of "
                                      f"{traces[ids[0]]} ({len(c[0])} rows vs {len(ts0)})")
    window_size = _grid_step(ts0, path / traces[ids[0]])
    rate, cv, law, p1, p2 = (np.stack([c[k] for c in cols]) for k in range(1, 6))
    law = law.astype(np.uint8)
    idle = law == LAW_IDLE
    for arr in (rate, cv, p1, p2):
        arr[idle] = 0.0

    fields, dist_id, table, lws = _read_datasets(path, [datasets[i] for i in ids], int(ts0[0]), len(ts0),
                                                 window_size, category)
    start, wlen, widx, lidx = regular_grid(len(ts0), window_size, lws)
    return ClientPool(category=category, model=path.name, client_ids=np.asarray(ids, dtype=np.int64),
                      window_start=start, window_len=wlen, window_index=widx, length_index=lidx,
                      rate=rate, cv=cv, law=law, shape=p1, scale=p2, fields=fields, dist_id=dist_id,
                      dists=table, window_size=window_size, length_window_size=lws, origin=int(ts0[0]))


def _read_trace(file: Path):
    buf = np.fromfile(file, dtype=np.uint8)
    buf.flags.writeable = False  # the dataset text is read-only too: one compiled specialization of the parsers
    ts, rate, cv, law, p1, p2, err, line, field = parsers().parse_trace_csv(buf)
    if err != tp.OK:
        text = _line_text(buf, line)
        # (field is 6 for a line with too many fields: index the names only when it is a number error)
        what = {tp.ERR_NUMBER: f"field {field + 1} ({_TRACE_FIELDS[min(field, 5)]}) is not a number",
                tp.ERR_FIELDS: f"expected 6 comma-separated fields ({','.join(_TRACE_FIELDS)}), found {field}"
                               if field < 6 else "more than 6 fields",
                tp.ERR_PATTERN: "unknown arrival pattern; expected one of '', 'Gamma', 'Weibull', 'Exponential'",
                }[err]
        raise ServeGenFormatError(f"{file}, line {line}: {what}: {text!r}")
    if len(ts) == 0:
        raise ServeGenFormatError(f"{file}: no trace rows")
    active = law != LAW_IDLE
    for name, arr, bad in (("rate", rate, ~(rate >= 0)), ("cv", cv, ~(cv >= 0)),
                           ("param1 (shape)", p1, active & ~(p1 > 0) & (rate > 0)),
                           ("param2 (scale)", p2, active & ~(p2 > 0) & (rate > 0))):
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            need = "a non-negative number" if name in ("rate", "cv") else "a positive number in an active window"
            raise ServeGenFormatError(f"{file}, line {_row_line(buf, row)}: {name} is {float(arr[row])!r}; expected {need}")
    if not np.all(np.isfinite(rate) & np.isfinite(cv)):
        row = int(np.flatnonzero(~(np.isfinite(rate) & np.isfinite(cv)))[0])
        raise ServeGenFormatError(f"{file}, line {_row_line(buf, row)}: rate and cv must be finite")
    return ts, rate, cv, law, p1, p2


_TRACE_FIELDS = ("timestamp", "rate", "cv", "pattern", "param1", "param2")


def _line_text(buf: np.ndarray, line: int) -> str:
    lines = buf.tobytes().split(b"\n")
    return lines[line - 1].decode("utf-8", "replace") if 0 < line <= len(lines) else ""


def _row_line(buf: np.ndarray, row: int) -> int:
    """1-based line number of the row-th non-blank line."""
    lines = buf.tobytes().split(b"\n")
    k = -1
    for n, text in enumerate(lines, 1):
        if text.strip():
            k += 1
            if k == row:
                return n
    return row + 1


def _grid_step(ts: np.ndarray, file: Path) -> int:
    if len(ts) == 1:
        return 600
    step = np.diff(ts)
    if not (np.all(step == step[0]) and step[0] > 0 and float(step[0]).is_integer()):
        bad = int(np.flatnonzero(step != step[0])[0]) + 2 if np.any(step != step[0]) else 2
        raise ServeGenFormatError(f"{file}, row {bad}: timestamps must ascend in equal integer steps "
                                  f"(first step {float(step[0])!r})")
    return int(step[0])


def _read_datasets(path: Path, files: list[str], t0: int, n_windows: int, window_size: int, category: str):
    """Parse every dataset file; returns (fields, dist_id[C, D, F], table, length_window_size)."""
    raw = []  # per client: {ts: {field: literal}}
    fields: list[str] = []
    for name in files:
        try:
            with open(path / name, "rb") as f:
                doc = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ServeGenFormatError(f"{path / name}: not valid JSON ({e})") from None
        if not isinstance(doc, dict):
            raise ServeGenFormatError(f"{path / name}: expected a JSON object of length windows")
        windows = {}
        for key, flds in doc.items():
            try:
                ts = int(key)
            except ValueError:
                raise ServeGenFormatError(f"{path / name}: window key {key!r} is not an integer timestamp") from None
            if not isinstance(flds, dict) or not all(isinstance(v, str) for v in flds.values()):
                raise ServeGenFormatError(f"{path / name}, window {key}: expected an object of field -> "
                                          f"dict-literal string")
            windows[ts] = flds
            for fname in flds:
                if fname not in fields:
                    fields.append(fname)
        raw.append(windows)
    all_ts = sorted({ts for w in raw for ts in w})
    lws = int(np.min(np.diff(all_ts))) if len(all_ts) > 1 else 21600
    if lws <= 0 or lws % window_size:
        raise ServeGenFormatError(f"{path}: length windows every {lws} s are not a multiple of the "
                                  f"{window_size} s arrival window")
    n_len = -(-n_windows * window_size // lws)
    builder = DistTableBuilder()
    dist_id = np.full((len(files), n_len, len(fields)), NO_DIST, dtype=np.int32)
    for c, (name, windows) in enumerate(zip(files, raw)):
        seg_where = [(ts, fn) for ts in sorted(windows) for fn in windows[ts]]
        text = "\n".join(windows[ts][fn] for ts, fn in seg_where).encode()
        buf = np.frombuffer(text, np.uint8)
        keys, probs, counts, err, pos, seg = parsers().parse_dict_literals(buf, len(seg_where))
        if err != tp.OK:
            ts, fn = seg_where[seg]
            what = "a number" if err == tp.ERR_NUMBER else "a dict literal {value: probability, ...}"
            raise ServeGenFormatError(f"{path / name}, window {ts}, field {fn!r}: expected {what} "
                                      f"near {text[max(pos - 20, 0):pos + 20].decode(errors='replace')!r}")
        vals, cdf, new_counts, sums, bad, kind = parsers().segment_cdfs(keys, probs, counts)
        if bad >= 0:
            ts, fn = seg_where[bad]
            what = {1: "a negative probability", 2: "values not in ascending order", 3: "NaN"}[kind]
            raise ServeGenFormatError(f"{path / name}, window {ts}, field {fn!r}: the PDF has {what}")
        nonempty = counts > 0
        off_sum = nonempty & (np.abs(sums - 1.0) > PDF_ATOL)
        if off_sum.any():
            s = int(np.flatnonzero(off_sum)[0])
            ts, fn = seg_where[s]
            raise ServeGenFormatError(f"{path / name}, window {ts}, field {fn!r}: the PDF sums to {float(sums[s])!r}; "
                                      f"expected 1 (within {PDF_ATOL})")
        offs = np.concatenate(([0], np.cumsum(new_counts)))
        # A window with any empty field is skipped whole, as ServeGen does.
        seg = 0
        for ts in sorted(windows):
            nf = len(windows[ts])
            segs = range(seg, seg + nf)
            seg += nf
            if not all(nonempty[s] for s in segs):
                continue
            if (ts - t0) % lws:
                raise ServeGenFormatError(f"{path / name}, window {ts}: not on the {lws} s length-window grid")
            d = (ts - t0) // lws
            if not 0 <= d < n_len:
                continue
            for s in segs:
                f = fields.index(seg_where[s][1])
                dist_id[c, d, f] = builder.add_normalised(vals[offs[s]:offs[s + 1]], cdf[offs[s]:offs[s + 1]])
    _fill_gaps(dist_id)
    return tuple(fields), dist_id, builder.build(), lws


def _fill_gaps(dist_id: np.ndarray) -> None:
    """Forward-fill missing length windows along axis 1, then back-fill the leading gap."""
    c, d, f = dist_id.shape
    idx = np.where(dist_id >= 0, np.arange(d)[None, :, None], -1)
    np.maximum.accumulate(idx, axis=1, out=idx)
    first = np.argmax(dist_id >= 0, axis=1)  # [C, F] first defined window (0 if none)
    idx = np.where(idx < 0, first[:, None, :], idx)
    filled = np.take_along_axis(dist_id, idx, axis=1)
    dist_id[...] = filled


# --------------------------------------------------------------------------- writer
def write_servegen(pool: ClientPool, out_dir: str | os.PathLike) -> Path:
    """Write `pool` as a ServeGen model directory (readable by ServeGen and `read_servegen`).

    Files are written under temporary names and renamed, so an interrupted write never
    leaves a file that looks complete.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for c, cid in enumerate(pool.client_ids):
        rows = []
        for w in range(pool.n_windows):
            ts = int(pool.window_start[w])
            code = int(pool.law[c, w])
            if code == LAW_IDLE:
                rows.append(f"{ts},0,0,,0,0")
            else:
                # float(): NumPy 2 scalars repr as 'np.float64(...)'
                rows.append(f"{ts},{float(pool.rate[c, w])!r},{float(pool.cv[c, w])!r},{LAW_NAMES[code]},"
                            f"{float(pool.shape[c, w])!r},{float(pool.scale[c, w])!r}")
        write_text(out / f"chunk-{cid}-trace.csv", "\n".join(rows) + "\n")
        doc = {}
        # one dataset entry per length window in use, keyed by the first window it covers
        first_w = np.flatnonzero(np.diff(pool.length_index, prepend=-1) != 0)
        for w0 in first_w:
            d = int(pool.length_index[w0])
            flds = {}
            for f, fname in enumerate(pool.fields):
                k = int(pool.dist_id[c, d, f])
                if k == NO_DIST:
                    flds = None
                    break
                values, probs = pool.dists.get(k)
                flds[fname] = _dict_literal(values, probs, integer=fname != "reason_ratio")
            if flds is not None:
                doc[str(int(pool.window_start[w0]))] = flds
        write_text(out / f"chunk-{cid}-dataset.json", json.dumps(doc, indent=2))
    return out


def _dict_literal(values: np.ndarray, probs: np.ndarray, integer: bool) -> str:
    if integer and np.all(values == np.round(values)):
        items = (f"{int(v)}: {p!r}" for v, p in zip(values.tolist(), probs.tolist()))
    else:
        items = (f"{v!r}: {p!r}" for v, p in zip(values.tolist(), probs.tolist()))
    return "{" + ", ".join(items) + "}"
