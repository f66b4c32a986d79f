"""One skeleton for every lab: map lab-specific body parts onto 8 canonical parts; pixels -> cm
or body lengths.

Labs track different body-part sets (MABe-2025: 4 to 18+ parts; CalMS21: 7; DLC/SimBA:
whatever the project defined). A feature pipeline needs one layout, so `to_canonical`
returns a new Recording whose body parts are `CANONICAL`:

    nose, ear_left, ear_right, neck, body_center, hip_left, hip_right, tail_base

Each canonical part takes the first body part whose normalised name (lower case,
non-alphanumerics removed) is in its alias list (`ALIASES`). Where that is missing — the
lab does not track it, or it is NaN on a frame — the documented fallback is used, frame by
frame, in this order:

    neck        <- midpoint of the two ears, else midpoint of nose and body_center
    body_center <- midpoint of neck and tail_base, else of the two hips, else the mean of
                   every tracked part of that mouse
    ear_left/right <- neck (keeps head features finite; the ear is simply not seen)
    hip_left/right <- lateral_left/right (flank) if tracked, else midpoint of body_center
                   and tail_base
    nose, tail_base <- no fallback (NaN): they define the body axis and are never invented

`meta["skeleton"]` records which source (or fallback) each canonical part came from.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import warnings

import numpy as np

from trainer.data.recording import DataError, Recording

log = logging.getLogger(__name__)

CANONICAL = ["nose", "ear_left", "ear_right", "neck", "body_center", "hip_left", "hip_right", "tail_base"]

# normalised alias names per canonical part, most specific first
ALIASES: dict[str, list[str]] = {
    "nose": ["nose", "snout", "nosetip"],
    "ear_left": ["earleft", "leftear", "earl", "lear"],
    "ear_right": ["earright", "rightear", "earr", "rear"],
    "neck": ["neck", "head", "headcenter", "headcentre", "headcentroid", "neckbase", "top", "headtop", "tophead"],
    "body_center": ["bodycenter", "bodycentre", "center", "centre", "centroid", "midbody", "body", "spinemid",
                    "spine2", "mid", "back"],
    "hip_left": ["hipleft", "lefthip", "hipl", "lhip"],
    "hip_right": ["hipright", "righthip", "hipr", "rhip"],
    "tail_base": ["tailbase", "tailroot", "basetail", "tailstart", "tail1", "tail"],
}
FLANKS = {"hip_left": ["lateralleft", "leftlateral", "flankleft", "leftflank", "sideleft", "leftside"],
          "hip_right": ["lateralright", "rightlateral", "flankright", "rightflank", "sideright", "rightside"]}


def norm_part(name: str) -> str:
    """Body-part name as matched against ALIASES: lower case, non-alphanumerics removed."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def find_part(bodyparts: list[str], aliases: list[str]) -> int | None:
    """Index of the first of `aliases` (normalised names) among `bodyparts`, or None."""
    normed = [norm_part(b) for b in bodyparts]
    for a in aliases:
        if a in normed:
            return normed.index(a)
    return None


def find_named_part(bodyparts: list[str], name: str) -> int | None:
    """Index of body part `name` or, for a canonical name, of its first alias present; else None."""
    return find_part(bodyparts, [norm_part(name), *ALIASES.get(name, [])])


def _mid(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a + b) / 2.0  # NaN if either is NaN: the next fallback then applies


def _fill(dst: np.ndarray, src: np.ndarray) -> np.ndarray:
    """dst where it has a point, else src; arrays (T, M, 2)."""
    missing = np.isnan(dst).any(-1, keepdims=True)
    return np.where(missing, src, dst)


def canonical_keypoints(
    keypoints: np.ndarray, bodyparts: list[str], mapping: dict[str, str] | None = None
) -> tuple[np.ndarray, dict[str, str]]:
    """Map (T, M, B, 2) keypoints with names `bodyparts` to (T, M, 8, 2) canonical keypoints.

    Args:
        keypoints: (T, M, B, 2) float, NaN = missing.
        bodyparts: B source names.
        mapping: optional {canonical part: source name} overriding the alias lookup.

    Returns:
        (canonical keypoints (T, M, 8, 2) float32, {canonical part: source or fallback}).
    """
    kp = np.asarray(keypoints, dtype=np.float32)
    T, M = kp.shape[:2]
    nan = np.full((T, M, 2), np.nan, dtype=np.float32)
    parts: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}
    mapping = dict(mapping or {})
    for name in CANONICAL:
        if name in mapping:
            if mapping[name] not in bodyparts:
                raise DataError(f"skeleton mapping: '{mapping[name]}' (for {name}) is not a body part of {bodyparts}")
            i = bodyparts.index(mapping[name])
        else:
            i = find_part(bodyparts, ALIASES[name])
        parts[name] = kp[:, :, i] if i is not None else nan
        source[name] = bodyparts[i] if i is not None else "missing"

    def fallback(name: str, value: np.ndarray, how: str) -> None:
        before = np.isnan(parts[name]).any(-1)
        parts[name] = _fill(parts[name], value)
        if (before & ~np.isnan(parts[name]).any(-1)).any():
            source[name] = how if source[name] == "missing" else f"{source[name]} | {how}"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN frames in nanmean
        everything = np.nanmean(kp, axis=2)
    fallback("neck", _mid(parts["ear_left"], parts["ear_right"]), "mid(ears)")
    fallback("body_center", _mid(parts["neck"], parts["tail_base"]), "mid(neck, tail_base)")
    fallback("body_center", _mid(parts["hip_left"], parts["hip_right"]), "mid(hips)")
    fallback("body_center", everything, "mean(all parts)")
    fallback("neck", _mid(parts["nose"], parts["body_center"]), "mid(nose, body_center)")
    for ear in ("ear_left", "ear_right"):
        fallback(ear, parts["neck"], "neck")
    for hip in ("hip_left", "hip_right"):
        i = find_part(bodyparts, FLANKS[hip])
        if i is not None:
            fallback(hip, kp[:, :, i], bodyparts[i])
        fallback(hip, _mid(parts["body_center"], parts["tail_base"]), "mid(body_center, tail_base)")
    out = np.stack([parts[n] for n in CANONICAL], axis=2).astype(np.float32)
    return out, source


def to_canonical(rec: Recording, mapping: dict[str, str] | None = None) -> Recording:
    """A new Recording with body parts `CANONICAL` (see the module docstring for fallbacks)."""
    kp, source = canonical_keypoints(rec.keypoints, list(rec.bodyparts), mapping)
    meta = dict(rec.meta, skeleton=source, source_bodyparts=list(rec.bodyparts))
    return dataclasses.replace(rec, keypoints=kp, bodyparts=list(CANONICAL), meta=meta)


def match_skeleton(rec: Recording, bodyparts: list[str]) -> Recording:
    """`rec` with exactly `bodyparts` (e.g. a checkpoint's): as is, canonicalised, or re-ordered.

    Raises DataError when `rec` lacks some of the requested parts.
    """
    if list(rec.bodyparts) == list(bodyparts):
        return rec
    if list(bodyparts) == CANONICAL:
        return to_canonical(rec)
    missing = [b for b in bodyparts if b not in rec.bodyparts]
    if missing:
        raise DataError(
            f"{rec.meta.get('source', rec.video_id)}: body part '{missing[0]}' of the model's skeleton is not "
            f"tracked in this video ({', '.join(rec.bodyparts)}); train with data.skeleton=canonical to mix skeletons"
        )
    idx = [rec.bodyparts.index(b) for b in bodyparts]
    return dataclasses.replace(rec, keypoints=rec.keypoints[:, :, idx], bodyparts=list(bodyparts))


def to_cm(rec: Recording) -> Recording:
    """A new Recording with coordinates divided by `meta["pix_per_cm"]` (meta["units"] = "cm")."""
    if rec.meta.get("units") == "cm":
        return rec
    pix = rec.meta.get("pix_per_cm")
    if not pix or not np.isfinite(pix) or pix <= 0:
        raise DataError(
            f"{rec.meta.get('source', rec.video_id)}: data.units=cm but this video has no pixels-per-cm; "
            "set data.pix_per_cm or use data.units=px"
        )
    return dataclasses.replace(rec, keypoints=rec.keypoints / np.float32(pix), meta=dict(rec.meta, units="cm"))


def body_length(rec: Recording) -> float:
    """Median front (nose, else neck/head) to tail-base length of `rec` (every mouse, every frame
    where both ends are tracked), in the Recording's units; NaN when no frame has both ends."""
    front = find_part(rec.bodyparts, ALIASES["nose"] + ALIASES["neck"])
    back = find_named_part(rec.bodyparts, "tail_base")
    if front is None or back is None:
        return float("nan")
    d = np.linalg.norm(rec.keypoints[:, :, front] - rec.keypoints[:, :, back], axis=-1)
    d = d[np.isfinite(d) & (d > 0)]
    return float(np.median(d)) if d.size else float("nan")


def to_body_lengths(rec: Recording) -> Recording:
    """A new Recording with coordinates divided by the video's own median body length
    (`body_length`; meta["units"] = "body", meta["body_length"] = the divisor in the old units).

    Needs no calibration and no labels, so new videos are scaled the same way at prediction:
    distances and speeds become body lengths (per second), comparable across cameras, zooms
    and animal sizes.
    """
    if rec.meta.get("units") == "body":
        return rec
    length = body_length(rec)
    if not np.isfinite(length) or length <= 0:
        raise DataError(
            f"{rec.meta.get('source', rec.video_id)}: data.units=body needs a tracked front (nose/neck/head) and "
            f"tail base on some frame; body parts: {', '.join(rec.bodyparts)}. Use data.units=px"
        )
    return dataclasses.replace(rec, keypoints=rec.keypoints / np.float32(length),
                               meta=dict(rec.meta, units="body", body_length=length))


UNITS = {"px": None, "cm": to_cm, "body": to_body_lengths}


def to_units(rec: Recording, units: str) -> Recording:
    """`rec` in `units` (px: unchanged; cm: /pix_per_cm; body: /median body length)."""
    convert = UNITS[units]
    return rec if convert is None else convert(rec)


@dataclasses.dataclass(frozen=True)
class Harmonisation:
    """What `harmonise` does to each video once the data set's layouts are known.

    canonical: map to `CANONICAL` body parts; units: "px" (unchanged), "cm" or "body".
    """

    canonical: bool
    units: str

    def apply(self, rec: Recording) -> Recording:
        """`rec` on the data set's skeleton and unit (a new Recording when anything changes)."""
        if self.canonical:
            rec = to_canonical(rec)
        return to_units(rec, self.units)


def harmonisation(layouts: set, *, skeleton: str = "auto", units: str = "px") -> Harmonisation:
    """The plan `harmonise` applies to every video, given the set of body-part lists (tuples)
    of the whole data set; only skeleton=auto looks at `layouts`."""
    if skeleton not in ("auto", "native", "canonical"):
        raise DataError(f"config key 'data.skeleton' must be auto, native or canonical; got {skeleton!r}")
    canonical = skeleton == "canonical" or (skeleton == "auto" and len(layouts) > 1)
    if skeleton == "auto" and canonical:
        log.info("videos track %d different body-part sets: mapping all to the canonical skeleton", len(layouts))
    if units not in UNITS:
        raise DataError(f"config key 'data.units' must be px, cm or body; got {units!r}")
    return Harmonisation(canonical, units)


def harmonise(recs: list[Recording], *, skeleton: str = "auto", units: str = "px") -> list[Recording]:
    """Put a whole data set (train + val together) on one skeleton and unit.

    Args:
        recs: recordings of every split, so that all sides get the same layout.
        skeleton: "native" (unchanged), "canonical" (always map), or "auto" (map only when
            the videos' body-part lists differ).
        units: "px" (unchanged), "cm" (divide by each video's pix_per_cm) or "body" (by each
            video's median body length).
    """
    plan = harmonisation({tuple(r.bodyparts) for r in recs}, skeleton=skeleton, units=units)
    return [plan.apply(r) for r in recs]


def conform(recs: list[Recording], *, bodyparts: list[str], units: str = "px") -> list[Recording]:
    """Recordings laid out like a model's training data: its body parts and units.

    Used by predict/evaluate on new files: `match_skeleton` to the checkpoint's body-part
    list (canonical mapping or re-ordering), then the model's units (`to_units`).
    """
    return [to_units(match_skeleton(r, bodyparts), units) for r in recs]
