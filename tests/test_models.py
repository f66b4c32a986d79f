import pytest
import torch

from trainer.config import make_config
from trainer.models import MODELS, build_model, count_parameters


@pytest.mark.parametrize("name", [n for n in MODELS if not MODELS[n].trainer])  # gbdt: tests/test_gbdt.py
def test_per_frame_logits_shape(name):
    cfg = make_config(overrides=[f"model_type={name}", "hidden_dim=32", "num_heads=2", "num_layers=1",
                                 "conv_channels=[8,8]", "lstm_hidden=8"])
    model = build_model(cfg, input_dim=20, num_classes=4)
    x = torch.randn(3, 50, 20)
    valid = torch.ones(3, 50, dtype=torch.bool)
    valid[0, 40:] = False
    out = model(x, valid)
    assert out.shape == (3, 50, 4) and torch.isfinite(out).all()
    out.sum().backward()


def test_seed_conv_bilstm_parameter_count():
    # the seed's stated architecture (conv 64-128-256, BiLSTM 256 x 2, 4 classes, 28 inputs)
    cfg = make_config("configs/v4_conv_bilstm_a10g.yaml")
    assert count_parameters(build_model(cfg, input_dim=28, num_classes=4)) == 2_761_284


def test_transformer_ignores_padding():
    cfg = make_config(overrides=["model_type=transformer", "hidden_dim=32", "num_heads=2", "num_layers=1", "dropout=0"])
    model = build_model(cfg, input_dim=6, num_classes=3).eval()
    x = torch.randn(1, 20, 6)
    valid = torch.ones(1, 20, dtype=torch.bool)
    valid[:, 15:] = False
    y = x.clone()
    y[:, 15:] = 100.0  # garbage in padded frames must not change real frames
    with torch.no_grad():
        assert torch.allclose(model(x, valid)[:, :15], model(y, valid)[:, :15], atol=1e-5)
