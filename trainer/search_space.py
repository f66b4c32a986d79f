"""The search-space language of tune.py: a YAML mapping of config keys to distributions -> Space.

    learning_rate: {loguniform: [1.0e-4, 1.0e-2]}   # a distribution (choice, grid, uniform, loguniform, randint)
    batch_size: {choice: [16, 32, 64]}
    epochs: 6                                       # a plain value: fixed in every trial
    class_weights: {classes: [other, attack, ...], background: 1.0, each: {loguniform: [1.0, 20.0]}}

Parsing and checking need no Ray (and no torch until `check_space` tries values on the config):
unknown keys, malformed distributions and values the config rejects fail here, before a sweep
starts. tune.py turns a Space into Ray Tune domains (tune.RAY_DOMAINS). See docs/tune.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import yaml

from trainer.config import ConfigError, all_keys, flat_dict, load_yaml, make_config
from trainer.hints import did_you_mean

# distribution names; bounds are inclusive ("randint: [16, 64]" can give 64)
KINDS = ("choice", "grid", "uniform", "loguniform", "randint")


@dataclasses.dataclass(frozen=True)
class Dist:
    """One sampled value: `kind` is one of KINDS, `args` its bounds or options."""

    kind: str
    args: list

    def encoded(self) -> list:
        """The arguments as Ray Tune takes them: list options travel as YAML strings ("[1, 5, 5, 5]"),
        because Optuna and Tune's result tables only take scalars."""
        if self.kind in ("choice", "grid"):
            return [_encode(v) for v in self.args]
        return list(self.args)

    def probes(self) -> list:
        """Values checked against the config before the sweep starts (bounds, every option)."""
        return list(self.args)


def _encode(v):
    return yaml.safe_dump(v, default_flow_style=True, width=1000).strip() if isinstance(v, list | dict) else v


def _decode(v):
    return yaml.safe_load(v) if isinstance(v, str) and v[:1] in "[{" else v


def _number(x):
    """YAML 1.1 reads 1e-4 (no dot) as a string: take it as the number it is meant to be."""
    if isinstance(x, str):
        with contextlib.suppress(ValueError):
            return float(x)
    return x


def _parse_dist(where: str, spec: dict) -> Dist:
    """{loguniform: [1e-4, 1e-2]} -> Dist, with one-line errors for malformed specs."""
    if len(spec) != 1:
        raise ConfigError(f"{where}: a distribution is one of {', '.join(KINDS)} with its arguments, "
                          f"got {spec!r}")
    (kind, args), = spec.items()
    if kind not in KINDS:
        raise ConfigError(f"{where}: unknown distribution '{kind}'{did_you_mean(str(kind), KINDS)}")
    if kind in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}: {kind} needs a non-empty list of options, got {args!r}")
        return Dist(kind, args)
    if isinstance(args, list):
        args = [_number(x) for x in args]
    numeric = isinstance(args, list) and len(args) == 2 and all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in args)
    if not numeric or not args[0] < args[1]:
        raise ConfigError(f"{where}: {kind} needs [low, high] with low < high, got {args!r}")
    if kind == "loguniform" and args[0] <= 0:
        raise ConfigError(f"{where}: loguniform needs low > 0, got {args!r}")
    if kind == "randint" and not all(isinstance(x, int) for x in args):
        raise ConfigError(f"{where}: randint needs integer bounds, got {args!r}")
    return Dist(kind, list(args))


@dataclasses.dataclass
class Space:
    """A search space: Ray parameters, fixed values, and how they become config overrides."""

    params: dict[str, Dist]  # Ray parameter name (a config key, or class_weights.<class>) -> distribution
    fixed: dict  # config key -> the value of every trial
    class_weights: list | None = None  # per-class form: a parameter name or a fixed number per class
    class_names: list | None = None  # class names of the per-class form, in the data's order

    def overrides(self, params: dict) -> dict:
        """Ray's sampled `params` -> {dotted config key: value} for make_config."""
        out = dict(self.fixed)
        for name in self.params:
            if not name.startswith("class_weights."):
                out[name] = _decode(params[name])
        if self.class_weights is not None:
            out["class_weights"] = [float(params[w]) if isinstance(w, str) else w for w in self.class_weights]
        return out

    def swept_keys(self) -> list[str]:
        """Config keys that differ between trials (class_weights once for its per-class parameters)."""
        keys = [name for name in self.params if not name.startswith("class_weights.")]
        if any(isinstance(w, str) for w in self.class_weights or []):
            keys.append("class_weights")
        return keys


def _section_keys(keys: list[str]) -> set[str]:
    return {k.rsplit(".", i)[0] for k in keys for i in range(1, k.count(".") + 1)}


def _flatten_space(raw: dict, where: str, keys: list[str], prefix: str = "") -> dict:
    """Nested sections (`data: {synthetic: {difficulty: ...}}`) -> dotted keys; unknown keys fail."""
    out = {}
    sections = _section_keys(keys)
    for key, value in raw.items():
        full = f"{prefix}{key}"
        if full in sections and isinstance(value, dict):
            out.update(_flatten_space(value, where, keys, f"{full}."))
        elif full not in keys:
            raise ConfigError(f"{where}: unknown config key '{full}'{did_you_mean(full, keys)}")
        else:
            out[full] = value
    return out


def parse_space(raw: dict, where: str = "search space") -> Space:
    """Search-space mapping (a YAML file's content) -> Space; unknown keys and bad specs raise ConfigError.

    Values: a distribution `{choice|grid|uniform|loguniform|randint: ...}`, a plain value (fixed in
    every trial), or for `class_weights` the per-class form `{classes: [...], background: 1.0,
    each: {loguniform: [1, 20]}}` (background: a number keeps it fixed, a distribution sweeps it).
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping of config key: distribution")
    keys = all_keys()
    space = Space(params={}, fixed={})
    for key, value in _flatten_space(raw, where, keys).items():
        here = f"{where}: {key}"
        if key == "class_weights" and isinstance(value, dict) and "each" in value:
            _parse_class_weights(space, value, here)
        elif isinstance(value, dict):
            space.params[key] = _parse_dist(here, value)
        else:
            space.fixed[key] = value
    return space


def _parse_class_weights(space: Space, spec: dict, where: str) -> None:
    unknown = set(spec) - {"classes", "background", "each"}
    if unknown:
        raise ConfigError(f"{where}: unknown entry '{sorted(unknown)[0]}' (per-class weights take classes, "
                          "background, each)")
    classes = spec.get("classes")
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise ConfigError(f"{where}: 'classes' must list the class names in the data's order, background first")
    if not isinstance(spec["each"], dict):
        raise ConfigError(f"{where}: 'each' must be a distribution such as {{loguniform: [1.0, 20.0]}}")
    background = spec.get("background", 1.0)
    weights: list = []
    if isinstance(background, dict):
        space.params[f"class_weights.{classes[0]}"] = _parse_dist(f"{where}.background", background)
        weights.append(f"class_weights.{classes[0]}")
    elif isinstance(background, int | float) and not isinstance(background, bool) and background >= 0:
        weights.append(float(background))
    else:
        raise ConfigError(f"{where}: 'background' must be a number >= 0 or a distribution, got {background!r}")
    each = _parse_dist(f"{where}.each", spec["each"])
    if each.kind not in ("uniform", "loguniform", "choice"):
        raise ConfigError(f"{where}.each: per-class weights take uniform, loguniform or choice, not {each.kind}")
    for c in classes[1:]:
        space.params[f"class_weights.{c}"] = each
        weights.append(f"class_weights.{c}")
    space.class_weights, space.class_names = weights, list(classes)


def read_space(path: str | Path) -> dict:
    """A search-space YAML as a mapping with dotted keys; one-line errors for missing/broken files."""
    raw = load_yaml(path, kind="search space", hint=" (see search_spaces/)")
    return _flatten_space(raw, f"search space {Path(path)}", all_keys())


def load_space(path: str | Path) -> Space:
    return parse_space(read_space(path), where=f"search space {path}")


def check_space(space: Space, base: dict, *, search: str = "random", where: str = "search space") -> None:
    """Try every bound and option of `space` on the base config, so a bad space fails before any trial."""
    flat = flat_dict(base)
    if search == "optuna" and any(d.kind == "grid" for d in space.params.values()):
        raise ConfigError(f"{where}: grid works with --search random only (Optuna samples; use choice)")
    probes: list[dict] = [dict(space.fixed)]
    for name, dist in space.params.items():
        if name.startswith("class_weights."):
            continue
        if isinstance(flat.get(name), int) and not isinstance(flat.get(name), bool) and \
                dist.kind in ("uniform", "loguniform"):
            raise ConfigError(f"{where}: {name} is an integer key; use randint or choice, not {dist.kind}")
        probes += [{name: v} for v in dist.probes()]
    if space.class_weights is not None:
        for i in (0, -1):
            probes.append({"class_weights": [w if not isinstance(w, str) else float(space.params[w].probes()[i])
                                             for w in space.class_weights]})
        if flat.get("data.format") == "synthetic":
            from trainer.data.synthetic import CLASS_NAMES

            if space.class_names != list(CLASS_NAMES):
                raise ConfigError(f"{where}: class_weights classes {space.class_names} differ from the synthetic "
                                  f"data's classes {list(CLASS_NAMES)}")
    for overrides in probes:
        try:
            make_config(None, overrides, base=base)
        except ConfigError as e:
            raise ConfigError(f"{where}: {str(e).removeprefix('override: ')}") from None


def base_point(space: Space, base: dict) -> dict | None:
    """The base config's own values as a point of `space` (the sweep's first trial), or None when the base
    config lies outside the space (a value that is not an option, out of bounds) or the space has grids."""
    flat = flat_dict(base)
    point = {}
    for name, dist in space.params.items():
        if dist.kind == "grid":
            return None
        if name.startswith("class_weights."):
            continue
        value = flat[name]
        if name == "class_weights" and value == []:  # [] = all 1: the all-ones option, if there is one
            value = next((o for o in dist.args if isinstance(o, list) and set(o) == {1}), value)
        if dist.kind == "choice":
            if value not in dist.args:
                return None
            point[name] = _encode(value)
        elif not dist.args[0] <= value <= dist.args[1]:
            return None
        else:
            point[name] = value
    if space.class_weights is not None:
        weights = flat["class_weights"] or [1.0] * len(space.class_weights)
        if len(weights) != len(space.class_weights):
            return None
        for w, value in zip(space.class_weights, weights):
            if not isinstance(w, str):
                if w != value:
                    return None
                continue
            dist = space.params[w]
            if not (value in dist.args if dist.kind == "choice" else dist.args[0] <= value <= dist.args[1]):
                return None
            point[w] = float(value)
    return point
