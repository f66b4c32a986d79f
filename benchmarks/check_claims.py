"""Check the seeds' claims and the project's targets against measured results.

    python benchmarks/check_claims.py                       # claims.yaml vs benchmarks/results/*.json
    python benchmarks/check_claims.py --markdown            # the same table in Markdown (docs, README)
    python benchmarks/check_claims.py --results my.json --claims other.yaml

Prints `claim | measured | device | verdict`, verdict one of: holds, off by xN (higher/lower),
misses (xN short), not measured on that device, not measurable here. It reports and always
exits 0: benchmarks are evidence, not a CI gate.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
CLAIMS = HERE / "claims.yaml"
RESULTS = HERE / "results"


# ============================================================================ loading


def load_claims(path: str | Path = CLAIMS) -> list[dict]:
    data = yaml.safe_load(Path(path).read_text()) or {}
    claims = data.get("claims", [])
    for i, c in enumerate(claims):
        if "what" not in c:
            raise ValueError(f"{path}: claim {i + 1} has no 'what'")
    return claims


def load_records(paths: list[str | Path] | None = None) -> list[dict]:
    """All records of the given result files (default: benchmarks/results/*.json)."""
    files = [Path(p) for p in paths] if paths else sorted(RESULTS.glob("*.json"))
    records = []
    for f in files:
        try:
            data = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as e:
            print(f"warning: skipping {f}: {e}", file=sys.stderr)
            continue
        # harness files are lists of records; other result files (e.g. the tune sweep summary) are not
        if isinstance(data, list):
            records += [r for r in data if isinstance(r, dict)]
    return records


# ============================================================================ matching


def on_device(record: dict, device: str) -> bool:
    """any | cpu | cuda | a GPU name matched as a word in the record's device_name (T4 != ...T40)."""
    device = str(device or "any")
    if device == "any":
        return True
    if device in ("cpu", "cuda"):
        return record.get("device") == device
    return record.get("device") == "cuda" and re.search(rf"\b{re.escape(device)}\b", record.get("device_name", ""), re.I) is not None


def matches(records: list[dict], device: str, select: dict, metric: str) -> tuple[list[dict], bool]:
    """(matching records, best first: non-quick, then newest; whether the device has any record)."""
    here = [r for r in records if on_device(r, device)]
    hits = [
        r for r in here
        if r.get("status", "ok") == "ok" and r.get(metric) is not None
        and all(r.get(k) == v for k, v in (select or {}).items())
    ]
    hits.sort(key=lambda r: (not r.get("quick"), r.get("timestamp", "")), reverse=True)  # quick only as a last resort
    return hits, bool(here)


def pick(records: list[dict], device: str, select: dict, metric: str) -> tuple[dict | None, bool]:
    """(best matching record or None, whether the device has any record at all)."""
    hits, seen = matches(records, device, select, metric)
    return (hits[0] if hits else None), seen


def measure(claim: dict, records: list[dict]) -> tuple[float | None, str, str]:
    """(value or None, device label, reason when None)."""
    if "ratio" in claim:
        num, den = claim["ratio"]["numerator"], claim["ratio"]["denominator"]
        a, a_any = pick(records, num.get("device"), num.get("select"), num["metric"])
        b, b_any = pick(records, den.get("device"), den.get("select"), den["metric"])
        if claim.get("same_run"):  # both sides from one run: same machine state, threads, versions
            nums, _ = matches(records, num.get("device"), num.get("select"), num["metric"])
            dens, _ = matches(records, den.get("device"), den.get("select"), den["metric"])
            pairs = [(x, y) for x in nums for y in dens if x.get("run_id") == y.get("run_id")]
            a, b = pairs[0] if pairs else (a, None)
        label = " / ".join(_device_label(r, s.get("device")) for r, s in ((a, num), (b, den)))
        if a is None or b is None:
            missing, seen = (num, a_any) if a is None else (den, b_any)
            return None, label, _missing(missing.get("device"), seen)
        return a[num["metric"]] / b[den["metric"]], label, ""
    if claim.get("metric") is None:
        return None, str(claim.get("device", "any")), "not measurable here" + (f": {claim['note']}" if claim.get("note") else "")
    r, seen = pick(records, claim.get("device"), claim.get("select"), claim["metric"])
    if r is None:
        return None, str(claim.get("device", "any")), _missing(claim.get("device"), seen)
    return r[claim["metric"]], _device_label(r, claim.get("device")), ""


def _device_label(record: dict | None, wanted) -> str:
    if record is None:
        return str(wanted or "any")
    threads = record.get("env", {}).get("torch_threads")
    if record.get("device") == "cpu" and threads:
        return f"{record.get('device_name', '?')} ({threads} thread{'s' if threads > 1 else ''})"
    return record.get("device_name", "?")


def _missing(device, seen: bool) -> str:
    if not seen:
        return "not measured on that device" if device not in (None, "any") else "not measured"
    return "not measured (no matching record)" if device in (None, "any") else "not measured (no matching record on that device)"


# ============================================================================ verdicts


def verdict(claim: dict, value: float) -> str:
    if "range" in claim:
        lo, hi = claim["range"]
        if lo <= value <= hi:
            return "holds"
        return f"off by x{value / hi:.2f} (higher)" if value > hi else f"off by x{lo / value:.2f} (lower)"
    if "approx" in claim:
        target, tol = claim["approx"], claim.get("tolerance", 0.1)
        if abs(value / target - 1) <= tol:
            return "holds"
        return f"off by x{value / target:.2f} (higher)" if value > target else f"off by x{target / value:.2f} (lower)"
    if "at_least" in claim:
        return "holds" if value >= claim["at_least"] else f"misses (x{claim['at_least'] / value:.2f} short)"
    if "at_most" in claim:
        return "holds" if value <= claim["at_most"] else f"misses (x{value / claim['at_most']:.2f} over)"
    return "no criterion"


def fmt(value: float, unit: str = "") -> str:
    if unit == "params" or (isinstance(value, int) and abs(value) >= 1000):
        return f"{value:,.0f}" + ("" if unit == "params" else f" {unit}")
    if unit == "x":
        return f"x{value:.3g}"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text} {unit}".strip()


def check(claims: list[dict], records: list[dict]) -> list[dict]:
    """One row per claim: {claim, measured, device, verdict}."""
    rows = []
    for c in claims:
        try:
            value, device, why = measure(c, records)
            rows.append({"claim": c["what"], "measured": "-" if value is None else fmt(value, c.get("unit", "")),
                         "device": device, "verdict": why if value is None else verdict(c, value), "value": value})
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:  # a malformed claim or record
            rows.append({"claim": c.get("what", "?"), "measured": "-", "device": "-", "verdict": f"error: {e!r}",
                         "value": None})
    return rows


def render(rows: list[dict], markdown: bool = False) -> str:
    cols = ["claim", "measured", "device", "verdict"]
    if markdown:
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(str(r[c]).replace("|", "/") for c in cols) + " |" for r in rows]
        return "\n".join(lines)
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) if rows else len(c) for c in cols}
    widths["claim"] = min(widths["claim"], 90)
    line = " | ".join(f"{{{c}:<{widths[c]}}}" for c in cols)
    out = [line.format(**{c: c for c in cols}), "-+-".join("-" * widths[c] for c in cols)]
    out += [line.format(**{c: str(r[c]) for c in cols}) for r in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/check_claims.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--claims", default=str(CLAIMS), help="claims YAML (default benchmarks/claims.yaml)")
    p.add_argument("--results", nargs="*", help="result JSON files (default benchmarks/results/*.json)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = p.parse_args(argv)
    try:
        claims = load_claims(args.claims)
    except (OSError, ValueError, yaml.YAMLError) as e:
        print(f"error: cannot read claims: {e}", file=sys.stderr)
        return 0
    print(render(check(claims, load_records(args.results)), markdown=args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
