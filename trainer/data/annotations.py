"""Behaviour annotation files that accompany DeepLabCut tracking: BORIS and Caltech annotator.

Both parsers return an `Annotation`: bouts as (subject, behaviour, start_frame,
stop_frame) with 0-based frames and an exclusive stop, plus the file's fps when it has
one. Clipping to the tracking length happens in the reader that pairs them (it knows T).

BORIS "tabular events" / "aggregated events" CSV: metadata lines, then a header row with
`Behavior` and either `Time` (+ `Status` or `Behavior type` = START/STOP/POINT) or
`Start (s)`/`Stop (s)` (aggregated, `Behavior type` = STATE/POINT). Times are seconds:
frame = round(time x FPS); a state bout covers [round(start x FPS), round(stop x FPS)),
at least one frame; a point event covers one frame. `Subject` names the animal.

Caltech Behavior Annotator (`*.annot`, `*_annot.txt`): a header (optionally with
"framerate: N"), a key-binding table (`name<TAB>key`) after "Configuration file:", then
streams `S1:`, `S2:`, ... each a table `start end type` with 1-based inclusive frames.
Streams are independent label tracks; the user picks one (`data.annotation_stream`).
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from trainer.data.common import check_fps
from trainer.data.recording import DataError

log = logging.getLogger(__name__)

NO_SUBJECT = ("", "no focal subject", "none", "nan")  # BORIS writes these when no animal was chosen


@dataclass
class Annotation:
    """Bouts of one annotation file, in frames.

    Attributes:
        source: the file.
        bouts: (subject or None, behaviour, start_frame, stop_frame) with 0-based frames,
            stop exclusive (not yet clipped to the tracking length).
        fps: frame rate stated by the file, or None.
        behaviours: every behaviour name the bouts use, in file order.
        kind: "boris" or "caltech".
    """

    source: Path
    bouts: list[tuple[str | None, str, int, int]]
    fps: float | None
    behaviours: list[str] = field(default_factory=list)
    kind: str = "boris"


def annotation_format(file: Path) -> str:
    """'caltech' or 'boris' from the file name, else from the first lines of the file."""
    name = file.name.lower()
    if name.endswith((".annot", "_annot.txt")):
        return "caltech"
    head = _head(file, 40)
    if any(re.match(r"^\s*S\d+\s*:", line) for line in head) or "caltech" in "".join(head[:3]).lower():
        return "caltech"
    if any("behavior" in line.lower() and ("time" in line.lower() or "start (s)" in line.lower()) for line in head):
        return "boris"
    raise DataError(
        f"{file}: cannot tell whether this is a BORIS CSV or a Caltech annotator file; "
        "set data.annotation_format=boris|caltech"
    )


def read_annotation(file: Path, *, fmt: str, stream: str, fallback_fps: float) -> Annotation:
    """Parse `file` as `fmt` ('auto' | 'boris' | 'caltech'); see the module docstring."""
    fmt = annotation_format(file) if fmt == "auto" else fmt
    if fmt == "caltech":
        return read_caltech(file, stream=stream)
    if fmt == "boris":
        return read_boris(file, fallback_fps=fallback_fps)
    raise DataError(f"{file}: unknown annotation format '{fmt}' (use boris or caltech)")


def _head(file: Path, n: int) -> list[str]:
    try:
        with open(file, encoding="utf-8", errors="replace") as fh:
            return [line for _, line in zip(range(n), fh, strict=False)]
    except OSError as e:
        raise DataError(f"{file}: cannot read ({e.strerror})") from None


# --------------------------------------------------------------------------- BORIS


def _col(header: list[str], *names: str) -> int | None:
    low = [h.strip().lower() for h in header]
    for n in names:
        for i, h in enumerate(low):
            if h == n or (n.endswith("*") and h.startswith(n[:-1])):
                return i
    return None


def read_boris(file: Path, *, fallback_fps: float) -> Annotation:
    """Parse a BORIS tabular or aggregated events CSV (metadata lines are skipped).

    Args:
        file: the CSV export of one observation.
        fallback_fps: frame rate used (with a warning) when the file has no FPS column/value.
    """
    with open(file, newline="", encoding="utf-8-sig", errors="replace") as fh:
        rows = list(csv.reader(fh))
    hdr_i = next(
        (i for i, r in enumerate(rows) if "behavior" in [c.strip().lower() for c in r]
         and ({"time", "start (s)"} & {c.strip().lower() for c in r})),
        None,
    )
    if hdr_i is None:
        raise DataError(f"{file}: no BORIS header row with 'Behavior' and 'Time' (or 'Start (s)') columns found")
    header = rows[hdr_i]
    c_beh = _col(header, "behavior")
    c_subj = _col(header, "subject")
    c_fps = _col(header, "fps", "fps*")
    c_time = _col(header, "time")
    c_start, c_stop = _col(header, "start (s)"), _col(header, "stop (s)")
    c_status = _col(header, "status", "behavior type")
    aggregated = c_time is None
    if c_status is None and not aggregated:
        raise DataError(f"{file}: line {hdr_i + 1}: missing column 'Status' (or 'Behavior type') with START/STOP/POINT")
    if aggregated and c_stop is None:
        raise DataError(f"{file}: line {hdr_i + 1}: aggregated events need 'Start (s)' and 'Stop (s)' columns")
    fps_vals: set[float] = set()
    events = []  # (line, subject, behaviour, kind, t0, t1)
    for i, r in enumerate(rows[hdr_i + 1:], start=hdr_i + 2):
        if not any(c.strip() for c in r):
            continue
        if len(r) < len(header):
            r = r + [""] * (len(header) - len(r))
        subj = r[c_subj].strip() if c_subj is not None else ""
        beh = r[c_beh].strip()
        if not beh:
            raise DataError(f"{file}: line {i}: empty Behavior")
        if c_fps is not None and r[c_fps].strip():
            try:
                fps_vals.add(float(r[c_fps]))
            except ValueError:
                raise DataError(f"{file}: line {i}: FPS '{r[c_fps]}' is not a number") from None
        kind = r[c_status].strip().upper() if c_status is not None else "STATE"
        try:
            if aggregated:
                t0 = float(r[c_start])
                t1 = float(r[c_stop]) if r[c_stop].strip() else t0
            else:
                t0 = t1 = float(r[c_time])
        except ValueError:
            raise DataError(f"{file}: line {i}: time is not a number") from None
        if kind not in ("START", "STOP", "POINT", "STATE"):
            raise DataError(f"{file}: line {i}: status '{kind}' is not START, STOP, POINT or STATE")
        events.append((i, subj, beh, kind, t0, t1))
    fps_vals = {f for f in fps_vals if f > 0}
    if len(fps_vals) > 1:
        raise DataError(f"{file}: several FPS values {sorted(fps_vals)}; export one media file per observation")
    if fps_vals:
        fps = check_fps(fps_vals.pop(), source=file)
        stated = fps
    else:
        fps, stated = float(fallback_fps), None
        log.warning("%s: no FPS in the file; converting seconds to frames with fps=%g from the config", file, fps)

    def frame(t: float) -> int:
        return int(round(t * fps))

    bouts: list[tuple[str | None, str, int, int]] = []
    open_: dict[tuple[str, str], tuple[int, float]] = {}
    for line, subj, beh, kind, t0, t1 in sorted(events, key=lambda e: (e[4], e[0])):
        key = (subj, beh)
        if kind == "POINT":
            bouts.append((subj, beh, frame(t0), frame(t0) + 1))
        elif kind == "STATE":
            s = frame(t0)
            bouts.append((subj, beh, s, max(frame(t1), s + 1)))
        elif kind == "START":
            if key in open_:
                raise DataError(f"{file}: line {line}: START of '{beh}' while the one from line {open_[key][0]} is not stopped")
            open_[key] = (line, t0)
        else:
            if key not in open_:
                raise DataError(f"{file}: line {line}: STOP of '{beh}' without a START")
            _, ts = open_.pop(key)
            s = frame(ts)
            bouts.append((subj, beh, s, max(frame(t0), s + 1)))
    if open_:
        (subj, beh), (line, _) = next(iter(open_.items()))
        raise DataError(f"{file}: line {line}: START of '{beh}' has no matching STOP")
    names = list(dict.fromkeys(e[2] for e in events))
    subjects = [None if s.lower() in NO_SUBJECT else s for s, _, _, _ in bouts]
    bouts = [(sub, b, s, e) for sub, (_, b, s, e) in zip(subjects, bouts, strict=True)]
    return Annotation(source=file, bouts=bouts, fps=stated, behaviours=names, kind="boris")


# --------------------------------------------------------------------------- Caltech annotator

_STREAM = re.compile(r"^\s*(S\d+)\s*:(.*)$")
_ROW = re.compile(r"^\s*(-?\d+)\s+(-?\d+)\s+(\S+)\s*$")
_FPS = re.compile(r"frame\s*rate\s*[:=]?\s*([0-9]*\.?[0-9]+)", re.IGNORECASE)


def read_caltech(file: Path, *, stream: str) -> Annotation:
    """Parse one stream of a Caltech Behavior Annotator file.

    Args:
        file: `*.annot` / `*_annot.txt` file.
        stream: stream name, e.g. "S1" (1-based inclusive frames in the file become
            0-based [start, stop) here).
    """
    try:
        lines = Path(file).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise DataError(f"{file}: cannot read ({e.strerror})") from None
    fps = None
    keys: list[str] = []
    streams: dict[str, list[tuple[int, str, int, int]]] = {}
    section = "header"
    cur = None
    for n, raw in enumerate(lines, start=1):
        line = raw.strip()
        m = _STREAM.match(raw)
        if m:
            cur, section = m.group(1), "stream"
            streams.setdefault(cur, [])
            continue
        if section == "header":
            fm = _FPS.search(line)
            if fm:
                fps = check_fps(float(fm.group(1)), source=file)
            if line.lower().startswith("configuration file"):
                section = "keys"
            continue
        if section == "keys":
            if line:
                keys.append(line.split()[0])
            continue
        if not line or set(line) <= {"-"} or line.lower().split() == ["start", "end", "type"]:
            continue
        r = _ROW.match(raw)
        if not r:
            raise DataError(f"{file}: line {n}: expected 'start end type' in stream {cur}, got '{line[:40]}'")
        s, e = int(r.group(1)), int(r.group(2))
        if s < 1 or e < s:
            raise DataError(f"{file}: line {n}: interval {s}-{e} is not 1-based with start <= end")
        streams[cur].append((n, r.group(3), s, e))
    if not streams:
        raise DataError(f"{file}: no annotation streams (S1:, S2:, ...) found; is this a Caltech annotator file?")
    if stream not in streams:
        raise DataError(
            f"{file}: stream '{stream}' not found (streams: {', '.join(streams)}); set data.annotation_stream"
        )
    rows = streams[stream]
    if keys:
        undeclared = [(n, b) for n, b, _, _ in rows if b not in keys]
        if undeclared:
            n, b = undeclared[0]
            raise DataError(f"{file}: line {n}: behaviour '{b}' is not in the file's key-binding table ({', '.join(keys)})")
    bouts = [(None, b, s - 1, e) for _, b, s, e in rows]  # 1-based inclusive -> 0-based [start, stop)
    names = list(dict.fromkeys(b for _, b, _, _ in rows))  # the class list uses what the stream holds
    return Annotation(source=file, bouts=bouts, fps=fps, behaviours=names, kind="caltech")
