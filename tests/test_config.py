from pathlib import Path

import pytest

from trainer.config import ConfigError, all_keys, make_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_loads_and_starts_with_its_command(path):
    cfg = make_config(path)
    assert cfg.epochs >= 1
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and "trainer/run.py" in first and path.name in first


def test_seed_yamls_keep_their_values():
    v4 = make_config(ROOT / "configs/v4_conv_bilstm_a10g.yaml")
    assert v4.conv_channels == [64, 128, 256] and v4.lstm_hidden == 256 and v4.class_weights == [0.5, 10.0, 15.0, 15.0]
    assert v4.modal_gpu == "A10G" and v4.modal_timeout == 14400 and v4.scheduler == "plateau"
    v3 = make_config(ROOT / "configs/v3_transformer_t4.yaml")
    assert v3.model_type == "transformer" and v3.hidden_dim == 256 and v3.num_heads == 8 and v3.device == "cuda"


def test_overrides_parse_types_and_nested_keys():
    cfg = make_config(overrides=["epochs=3", "model_type=transformer", "class_weights=[1,5,5,5]",
                                 "data.synthetic.num_mice=4", "mixed_precision=no", "learning_rate=1e-3"])
    assert cfg.epochs == 3 and cfg.model_type == "transformer" and cfg.class_weights == [1, 5, 5, 5]
    assert cfg.data.synthetic.num_mice == 4 and cfg.mixed_precision == "no" and cfg.learning_rate == 1e-3


@pytest.mark.parametrize(
    "override, expected",
    [
        ("epochz=3", "unknown config key 'epochz'; did you mean 'epochs'?"),
        ("data.formatt=x", "did you mean 'data.format'?"),
        ("lstm_hiden=3", "did you mean 'lstm_hidden'?"),
        ("epochs=abc", "config key 'epochs' expects int, got 'abc'"),
        ("epochs=2.5", "config key 'epochs' expects int"),
        ("class_weights=5", "config key 'class_weights' expects list"),
        ("mixed_precision=fp8", "must be one of no, fp16, bf16"),
        ("model_type=lstm", "unknown model 'lstm'"),
        ("features=[coords,sped]", "unknown feature 'sped'; did you mean 'speed'?"),
        ("class_weights=[1,-1,1,1]", "class_weights"),
        ("epochs", "not of the form key=value"),
    ],
)
def test_bad_overrides_are_one_line_errors(override, expected):
    with pytest.raises(ConfigError) as e:
        make_config(overrides=[override])
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_bad_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        make_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        make_config(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("learning_rat: 0.1\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown config key 'learning_rat'; did you mean 'learning_rate'"):
        make_config(typo)


def test_config_is_frozen_and_keys_listed():
    cfg = make_config()
    with pytest.raises(AttributeError):
        cfg.epochs = 5
    keys = all_keys()
    assert "data.synthetic.num_videos" in keys and "class_weights" in keys


def test_seed_switches_select_features():
    cfg = make_config(overrides=["include_pca=false", "include_temporal_stats=false"])
    assert "pca" not in cfg.feature_names() and "temporal_stats" not in cfg.feature_names()
    raw = make_config(overrides=["use_feature_engineering=false"])
    assert raw.feature_names() == ["coords", "mask"]
