"""The pipeline suites' shared setup: one training config with its synthetic data prepared the
trainer's way, and the trainer's own training step.

The names the suites take from the trainer (`trainer.build`, `trainer.run`) are imported here, once; the other suite modules
import them from this module.
"""

from __future__ import annotations

import dataclasses

import torch

from benchmarks.measure import bare_step
from trainer.build import EpochSampler, build_training, make_accelerator, prepare_data
from trainer.config import Config, make_config
from trainer.data import load_splits
from trainer.models import build_model
from trainer.run import train

__all__ = ["Batches", "EpochSampler", "Pipeline", "QUICK_DATA", "bare_for", "derived", "make_accelerator",
           "make_pipeline", "real_step_setup", "train"]

QUICK_DATA = ["data.synthetic.num_videos=5", "data.synthetic.frames_per_video=900"]


@dataclasses.dataclass
class Pipeline:
    """One training config with its synthetic data prepared the trainer's way."""

    cfg: Config
    recordings: tuple[list, list]
    data: object  # trainer.build.Data
    device: torch.device
    precision: str
    config_name: str
    bare_samples_per_s: float | None = None

    def describe(self) -> dict:
        c = self.cfg
        return {"model": c.model_type, "batch_size": c.batch_size, "seq_len": self.data.length,
                "input_dim": self.data.pipeline.dim, "num_workers": c.num_workers, "precision_used": self.precision,
                "videos": sum(map(len, self.recordings)), "frames_per_video": c.data.synthetic.frames_per_video,
                "config": self.config_name}


def make_pipeline(opts, device: torch.device) -> Pipeline:
    overrides = (QUICK_DATA if opts.quick else []) + [f"device={device.type}", *opts.set]
    cfg = make_config(opts.config, overrides)
    recordings = load_splits(cfg)
    data = prepare_data(cfg, recordings)
    _, precision = make_accelerator(cfg, None)
    name = " ".join([opts.config or "defaults", *(QUICK_DATA if opts.quick else []), *opts.set])
    return Pipeline(cfg, recordings, data, device, precision, name)


def derived(cfg: Config, overrides: list[str]) -> Config:
    """`cfg` with a few keys changed, through the config machinery (validated)."""
    return make_config(None, overrides, base=cfg.to_dict())


def bare_for(pipe: Pipeline, n_batches: int = 4):
    """A bare step on the pipeline's model/batch, fed with real training windows kept on the device."""
    cfg, ds, dev = pipe.cfg, pipe.data.train_ds, pipe.device
    C = len(pipe.data.class_names)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, input_dim=pipe.data.pipeline.dim, num_classes=C).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    batches = []
    for b in range(n_batches):
        items = [ds[(b * cfg.batch_size + i) % len(ds)] for i in range(cfg.batch_size)]
        batches.append((torch.stack([it["x"] for it in items]).to(dev), torch.stack([it["y"] for it in items]).to(dev)))
    weight = torch.tensor(cfg.class_weights or [1.0] * C, dtype=torch.float32, device=dev)
    return bare_step(model, optimizer, batches, device=dev, precision=pipe.precision, grad_clip=cfg.grad_clip,
                     weight=weight)


class Batches:
    """Endless batches from the real (Accelerate-prepared) training loader, epoch after epoch, handed
    out k at a time: `train_one_epoch(model, batches.take(k), ...)` runs k real steps."""

    def __init__(self, loader, sampler, dataset):
        self.loader, self.sampler, self.dataset, self.epoch, self.it = loader, sampler, dataset, 0, iter(())

    def next(self):
        try:
            return next(self.it)
        except StopIteration:
            self.epoch += 1
            for obj in (self.loader, self.sampler, self.dataset):
                obj.set_epoch(self.epoch)
            self.it = iter(self.loader)
            return next(self.it)

    def take(self, k: int):
        source = self

        class Chunk:
            def __len__(self):
                return k

            def __iter__(self):
                return (source.next() for _ in range(k))

        return Chunk()


def real_step_setup(pipe: Pipeline):
    """Model, optimizer, loader and loss arguments from `trainer.build.build_training`: the setup `trainer.run.train` runs."""
    accelerator, precision = make_accelerator(pipe.cfg, None)
    s = build_training(pipe.cfg, accelerator, precision, data=pipe.data)
    return accelerator, s.model, s.optimizer, Batches(s.train_loader, s.sampler, s.data.train_ds), s.loss_kwargs
