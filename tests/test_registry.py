"""The registries: torch-free validation, declared model keys and facts, declared feature
parameters, and docs/contributing.md's worked example performed as written."""

from __future__ import annotations

import importlib.util
import inspect
import math
import re
import subprocess
import sys
from pathlib import Path

import conftest
import numpy as np
import pytest

from trainer.config import ConfigError, make_config
from trainer.features import FEATURES, Feature, PairPose
from trainer.models import MODELS, ModelSpec, build_model, model_class

ROOT = Path(__file__).resolve().parents[1]


def test_config_validation_imports_no_torch():
    code = ("import sys, trainer.config as c\n"
            "cfg = c.make_config(None, ['model_type=tcn_bigru', 'features=[coords,rolling_stats]'])\n"
            "c.validate(cfg); cfg.feature_params()\n"
            "try:\n    c.make_config(None, ['model_type=transfomer'])\nexcept c.ConfigError as e:\n    print(e)\n"
            "import trainer.models as m; assert m.MODELS['tcn_bigru'].recurrent\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "unknown model 'transfomer'; did you mean 'transformer'?" in out.stdout


def test_unknown_model_and_feature_messages():
    with pytest.raises(ConfigError, match=r"unknown model 'zzz'; valid: conv_bilstm, transformer"):
        make_config(overrides=["model_type=zzz"])
    with pytest.raises(ConfigError, match=r"unknown feature 'sped'; did you mean 'speed'\?"):
        make_config(overrides=["features=[coords,sped]"])


@pytest.mark.parametrize("name", list(MODELS))
def test_every_constructor_parameter_is_a_declared_config_key(name):
    # an undeclared parameter would silently keep its default whatever the config says
    params = set(inspect.signature(model_class(name).__init__).parameters) - {"self", "input_dim", "num_classes"}
    assert params == set(MODELS[name].keys), f"{name}: constructor takes {sorted(params)}"


@pytest.mark.parametrize("name", list(MODELS))
def test_recurrent_fact_matches_the_built_model(name):
    from torch import nn

    cfg = make_config(overrides=[f"model_type={name}", *conftest.TINY])
    model = build_model(cfg, input_dim=8, num_classes=3)
    assert any(isinstance(m, nn.RNNBase) for m in model.modules()) == MODELS[name].recurrent


def test_build_model_passes_the_config_values():
    cfg = make_config(overrides=["model_type=transformer", "hidden_dim=24", "num_heads=3", "num_layers=1"])
    model = build_model(cfg, input_dim=5, num_classes=2)
    assert model.proj.out_features == 24 and len(model.encoder.layers) == 1


def test_a_declared_key_that_is_no_config_field_fails_at_registration():
    with pytest.raises(ValueError, match=r"config key 'hiden_dim'.*did you mean 'hidden_dim'\?"):
        ModelSpec("trainer.models.per_frame_mlp:PerFrameMLP", keys=("hiden_dim", "num_layers", "dropout"))
    with pytest.raises(ValueError, match=r"config key 'pca_component'.*did you mean 'pca_components'\?"):
        Feature("trainer.features:pca_input", params=("pca_component",))
    with pytest.raises(ValueError, match=r"feature .pca_input. declares config key .pca_component."):
        Feature(FEATURES["pca"].fn, params=("pca_component",))


def test_feature_params_are_what_the_features_declare():
    cfg = make_config(overrides=["pca_components=5", "temporal_windows=[0.5]"])
    # the feature store keys entries by these: same keys and values as before the registry declared them
    assert cfg.feature_params() == {"pca_components": 5, "temporal_windows": [0.5],
                                    "rolling_windows": list(cfg.rolling_windows)}
    T, B = 40, 7
    xy = np.random.default_rng(0).normal(100, 20, (T, 2, B, 2))
    pose = PairPose(xy=xy, missing=np.zeros((T, 2, B), bool), fps=30.0,
                    bodyparts=["nose", "ear_left", "ear_right", "neck", "hip_left", "hip_right", "tail_base"])
    for name, feat in FEATURES.items():  # a feature reading an undeclared key fails here (KeyError)
        declared = {k: v for k, v in cfg.feature_params().items() if k in feat.params}
        assert feat.fn(pose=pose, fps=30.0, params=declared, stats={}).shape[0] == T, name


# ----------------------------------------------------------------------- the worked example


def doc_blocks() -> list[tuple[str, str]]:
    """(first comment line, code) of every python block of docs/contributing.md."""
    text = (ROOT / "docs" / "contributing.md").read_text()
    out = []
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        head, _, body = block.partition("\n")
        out.append((head.removeprefix("# ").strip(), body))
    return out


def add_module(path: str, code: str, tmp_path: Path, monkeypatch) -> None:
    """Create `path` (e.g. trainer/models/tiny_conv.py) as a file in tmp and import it under its module name."""
    name = path.removesuffix(".py").replace("/", ".")
    file = tmp_path / Path(path).name
    file.write_text(code)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)


def add_registry_line(head: str, line: str, monkeypatch) -> None:
    """'MODELS in trainer/models/__init__.py' + its entry line -> that entry in that registry."""
    table, _, path = head.partition(" in ")
    module = importlib.import_module(path.removesuffix("/__init__.py").removesuffix(".py").replace("/", "."))
    (key, value), = eval("{" + line + "}", vars(module)).items()  # the line exactly as the page shows it
    monkeypatch.setitem(getattr(module, table), key, value)


def test_contributing_worked_example(tmp_path, monkeypatch):
    from trainer.data.synthetic import generate_recording
    from trainer.run import train

    blocks = doc_blocks()
    files = [(h, c) for h, c in blocks if h.endswith(".py") and " in " not in h]
    lines = [(h, c) for h, c in blocks if " in " in h]
    assert [h for h, _ in files] == ["trainer/models/tiny_conv.py", "trainer/features_nose.py",
                                     "trainer/data/npz_pose.py"]
    assert all(not (ROOT / h).exists() for h, _ in files)  # an example, not a shipped module
    for head, code in files:  # one new file each ...
        add_module(head, code, tmp_path, monkeypatch)
    for head, code in lines:  # ... plus one registry line each
        assert len(code.strip().splitlines()) == 1, head
        add_registry_line(head, code.strip(), monkeypatch)

    data = tmp_path / "npz"
    data.mkdir()
    for i in range(4):
        rec = generate_recording(f"v{i}", frames=600, seed=i)
        np.savez(data / f"v{i}.npz", keypoints=rec.keypoints, bodyparts=rec.bodyparts,
                 class_names=rec.class_names, labels=rec.labels[:, 0])
    cfg = make_config(overrides=[*conftest.TINY, f"output_dir={tmp_path / 'runs'}", "epochs=1",
                                 "model_type=tiny_conv", "features=[coords,nose_gap,mask]",
                                 "data.format=npz_pose", f"data.path={data}"])
    final = train(cfg)
    assert final["epochs_run"] == 1 and math.isfinite(final["val_macro_f1"])
    assert type(build_model(cfg, input_dim=4, num_classes=2)).__name__ == "TinyConv"
