"""Weight EMA: the average is what validation and predict see; resume continues it exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from trainer.config import make_config
from trainer.ema import FILE, WeightEMA
from trainer.predict import Predictor
from trainer.run import train


def test_ema_update_and_applied_restores_raw_weights():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = WeightEMA(model, decay=0.5)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(2.0)
    ema.update(model)
    assert torch.allclose(ema.shadow["0.weight"], start["0.weight"] + 1.0)  # halfway
    raw = model[0].weight.clone()
    with ema.applied(model):
        assert torch.allclose(model[0].weight, start["0.weight"] + 1.0)
    assert torch.equal(model[0].weight, raw)


@pytest.mark.slow  # train, resume and predict
def test_ema_run_resume_and_predict(tiny, tmp_path):
    over = [*tiny, "epochs=3", "ema_decay=0.9"]
    full = train(make_config(overrides=[*over, "name=full"]))

    class Kill(Exception):
        pass

    def kill_after_2(row):
        if row["epoch"] == 2:
            raise Kill

    with pytest.raises(Kill):
        train(make_config(overrides=[*over, "name=cut"]), on_epoch_end=kill_after_2)
    resumed = train(make_config(overrides=[*over, "name=cut", "resume=auto"]))
    assert resumed["val_macro_f1"] == pytest.approx(full["val_macro_f1"], abs=1e-9)
    last = tmp_path / "runs" / "full" / "checkpoints" / "last"
    a, b = load_file(str(last / FILE)), load_file(str(tmp_path / "runs/cut/checkpoints/last" / FILE))
    assert all(np.allclose(a[k].numpy(), b[k].numpy(), atol=1e-6) for k in a)
    raw = load_file(str(last / "model.safetensors"))
    assert any(not torch.equal(raw[k], a[k]) for k in a if a[k].is_floating_point())  # really an average
    loaded = Predictor.load(last).model.state_dict()
    assert all(torch.equal(loaded[k], a[k]) for k in a)  # predict uses the averaged weights
