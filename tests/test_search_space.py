"""trainer/search_space.py: tune.py's search-space language, parsed and checked without Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trainer import search_space
from trainer.config import ConfigError, make_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", sorted((ROOT / "search_spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_every_search_space_loads_and_validates(path):
    text = path.read_text()
    assert text.startswith("# python tune.py ") and f"--space search_spaces/{path.name}" in text.splitlines()[0]
    space = search_space.load_space(path)
    assert space.params
    search_space.check_space(space, make_config(ROOT / "configs" / "default.yaml").to_dict())
    search_space.check_space(space, make_config(ROOT / "configs" / "default.yaml").to_dict(), search="optuna")
    for key in yaml.safe_load(text):  # each key has a one-line comment
        line = next(ln for ln in text.splitlines() if ln.startswith(f"{key}:"))
        assert "#" in line, f"{path.name}: {key} has no comment"


def test_default_space_sweeps_per_class_weights_with_fixed_background():
    space = search_space.load_space(ROOT / "search_spaces" / "default.yaml")
    assert space.params["learning_rate"].kind == "loguniform"
    assert space.params["batch_size"].kind == "choice"
    over = space.overrides({"learning_rate": 1e-3, "batch_size": 32, "class_weights.investigation": 2.0,
                            "class_weights.mount": 3.0, "class_weights.attack": 4.0})
    assert over == {"learning_rate": 1e-3, "batch_size": 32, "class_weights": [1.0, 2.0, 3.0, 4.0]}


def test_list_choices_travel_as_strings_and_come_back_as_lists():
    space = search_space.parse_space({"class_weights": {"choice": [[1, 2, 4, 4], [1, 1, 1, 1]]},
                              "features": {"grid": [["coords", "mask"]]}})
    assert space.params["class_weights"].encoded() == ["[1, 2, 4, 4]", "[1, 1, 1, 1]"]
    assert space.overrides({"class_weights": "[1, 2, 4, 4]", "features": "[coords, mask]"}) == {
        "class_weights": [1, 2, 4, 4], "features": ["coords", "mask"]}


def test_the_base_config_is_the_first_trial_when_the_space_contains_it():
    base = make_config(ROOT / "configs" / "default.yaml").to_dict()
    point = search_space.base_point(search_space.load_space(ROOT / "search_spaces" / "default.yaml"), base)
    assert point == {"learning_rate": base["learning_rate"], "batch_size": base["batch_size"],
                     "class_weights.investigation": 1.0, "class_weights.mount": 1.0, "class_weights.attack": 1.0}
    wide = search_space.base_point(search_space.load_space(ROOT / "search_spaces" / "wide.yaml"), base)
    assert wide["class_weights"] == "[1, 1, 1, 1]" and wide["model_type"] == base["model_type"]
    assert search_space.base_point(search_space.parse_space({"learning_rate": {"loguniform": [1e-2, 1e-1]}}), base) is None
    assert search_space.base_point(search_space.parse_space({"batch_size": {"choice": [16, 64]}}), base) is None


def test_bounds_written_without_a_dot_are_numbers():
    space = search_space.parse_space(yaml.safe_load("learning_rate: {loguniform: [1e-4, 1e-2]}"))  # YAML: strings
    assert space.params["learning_rate"].args == [1e-4, 1e-2]


@pytest.mark.parametrize("raw, message", [
    ({"lerning_rate": {"loguniform": [1e-4, 1e-2]}}, "unknown config key 'lerning_rate'; did you mean 'learning_rate'"),
    ({"data": {"synthetic": {"num_video": {"choice": [4]}}}}, "did you mean 'data.synthetic.num_videos'"),
    ({"learning_rate": {"log_uniform": [1e-4, 1e-2]}}, "did you mean 'loguniform'"),
    ({"learning_rate": {"loguniform": [0, 1e-2]}}, "low > 0"),
    ({"learning_rate": {"uniform": [1e-2, 1e-4]}}, "low < high"),
    ({"batch_size": {"loguniform": [8, 64]}}, "integer key; use randint or choice"),
    ({"batch_size": {"choice": [16, "big"]}}, "batch_size' expects int"),
    ({"model_type": {"choice": ["conv_bilstm", "transfomer"]}}, "did you mean 'transformer'"),
    ({"class_weights": {"classes": ["other", "attack"], "each": {"uniform": [1, 5]}}}, "differ from the synthetic"),
    ({"learning_rate": {"grid": [1e-3, 1e-2]}}, "grid works with --search random only"),
])
def test_bad_spaces_fail_before_anything_runs(raw, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        space = search_space.parse_space(raw)
        search_space.check_space(space, make_config().to_dict(), search="optuna" if "grid" in str(raw) else "random")


def test_the_language_imports_neither_ray_nor_torch():
    code = "import sys, trainer.search_space; print([m for m in ('ray', 'torch') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
