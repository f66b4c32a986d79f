"""benchmarks/: the harness runs (tiny, CPU) and writes valid JSON; the claims checker and the plot
read it. No speed is asserted here: targets are measured by the harness, not by unit tests."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from benchmarks import bench_train, check_claims, plot
from trainer.data.windows import Sequence, WindowDataset

TINY_MODEL = ["--suite", "model", "--models", "per_frame_mlp,conv_bilstm", "--model-size", "default",
              "--batch-sizes", "2", "--seq-len", "8", "--input-dim", "12", "--warmup", "1", "--windows", "5",
              "--min-window-s", "0", "--device", "cpu", "--threads", "1"]
TINY_DATA = ["data.synthetic.num_videos=3", "data.synthetic.frames_per_video=240", "sequence_length=16",
             "batch_size=8", "conv_channels=[8]", "lstm_hidden=8"]
MODEL_KEYS = {"suite", "model", "batch_size", "seq_len", "precision_requested", "precision_used", "status",
              "it_per_s", "it_per_s_windows", "samples_per_s", "frames_per_s", "peak_cpu_rss_mb", "parameters",
              "optimizer_state_mb", "device", "device_name", "device_slug", "env", "timestamp", "run_id"}


@pytest.fixture(scope="module")
def model_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "cpu.json"
    records = bench_train.run_benchmarks([*TINY_MODEL, "--precision", "fp32,fp16", "--out", str(out)])
    return out, records


@pytest.mark.slow  # the module's tiny benchmark run (model_results)
def test_model_suite_writes_valid_json(model_results):
    out, records = model_results
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(records))  # everything it returned, JSON-clean
    timed = [r for r in saved if r["suite"] == "model" and r["status"] == "ok"]
    assert {r["model"] for r in timed} == {"per_frame_mlp", "conv_bilstm"}
    for r in timed:
        assert MODEL_KEYS <= r.keys(), MODEL_KEYS - r.keys()
        assert len(r["it_per_s_windows"]) == 5 and r["it_per_s"] > 0
        assert r["samples_per_s"] == pytest.approx(r["it_per_s"] * 2)
        assert r["frames_per_s"] == pytest.approx(r["it_per_s"] * 2 * 8)
        assert r["env"]["torch"] == torch.__version__ and r["device"] == "cpu"
        assert r["device_slug"].startswith("cpu-")


@pytest.mark.slow  # the module's tiny benchmark run (model_results)
def test_fp16_on_cpu_is_recorded_as_fp32_fallback(model_results):
    _, records = model_results
    fp16 = [r for r in records if r["suite"] == "model" and r["precision_requested"] == "fp16"]
    assert fp16 and all(r["precision_used"] == "fp32" and r["status"] == "fallback" for r in fp16)
    assert all("it_per_s" not in r for r in fp16)  # not timed twice, not passed off as fp16


@pytest.mark.slow  # the module's tiny benchmark run (model_results)
def test_seed_parameter_count_is_measured(model_results):
    _, records = model_results
    params = {r["model"]: r for r in records if r["suite"] == "params"}
    # the seed V4 architecture at input 28: 2,761,284, not the note's "~2.1M"
    assert params["conv_bilstm"]["parameters"] == 2_761_284 and params["conv_bilstm"]["input_dim"] == 28


def test_results_append_atomically(tmp_path):
    out = tmp_path / "r.json"
    bench_train.append_results([{"suite": "x", "device_slug": "cpu-test"}], out)
    bench_train.append_results([{"suite": "y", "device_slug": "cpu-test"}], out)
    assert [r["suite"] for r in json.loads(out.read_text())] == ["x", "y"]
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind


@pytest.mark.slow  # five benchmark suites
def test_pipeline_suites_run_on_tiny_data(tmp_path):
    out = tmp_path / "pipe.json"
    records = bench_train.run_benchmarks([
        "--suite", "pipeline", "--device", "cpu", "--threads", "1", "--windows", "2", "--warmup", "1", "--overhead-pairs", "2",
        "--no-epochs-check", "--min-window-s", "0", "--predict-frames", "400", "--scaling-repeats", "1",
        "--out", str(out), "--set", *TINY_DATA,
    ])
    by_suite = {}
    for r in records:
        by_suite.setdefault(r["suite"], []).append(r)
    assert set(by_suite) == {"overhead", "features", "loader", "predict", "scaling"}
    ov = by_suite["overhead"][0]
    assert ov["overhead_ratio"] > 0 and len(ov["overhead_ratio_windows"]) == 2 and ov["target"] == ">= 0.95"
    assert by_suite["loader"][0]["loader_ratio"] > 0
    assert by_suite["features"][0]["frames_per_s"] > 0
    long, short = by_suite["predict"]
    assert (long["video_frames"], short["video_frames"]) == (400, 200) and long["scaling_ratio"] > 0
    assert by_suite["scaling"][0]["scaling_ratio"] > 0
    assert len(json.loads(out.read_text())) == len(records)


def test_harness_leaves_global_state_alone():
    before = torch.get_num_threads(), logging.getLogger("trainer").level
    bench_train.run_benchmarks([*TINY_MODEL, "--models", "per_frame_mlp", "--threads", "1", "--no-save"])
    assert (torch.get_num_threads(), logging.getLogger("trainer").level) == before


# ---------------------------------------------------------------------------- claims and plot


def fake_records(model_results) -> list[dict]:
    _, records = model_results
    cpu = dict(next(r for r in records if r["suite"] == "model" and r["status"] == "ok"))
    a10g = dict(cpu, device="cuda", device_name="NVIDIA A10G", model="conv_bilstm", model_size="seed",
                batch_size=64, seq_len=100, precision_used="fp32", it_per_s=90.0, peak_gpu_mem_reserved_mb=5000.0,
                quick=False, timestamp="2099-01-01T00:00:00+00:00")
    return records + [a10g]


@pytest.mark.slow  # the module's tiny benchmark run (model_results)
def test_check_claims_table(model_results):
    claims = check_claims.load_claims()
    assert len(claims) >= 10 and all("what" in c for c in claims)
    rows = {r["claim"]: r for r in check_claims.check(claims, fake_records(model_results))}
    params = rows[next(c for c in rows if c.startswith("Conv1D-BiLSTM"))]
    assert params["measured"] == "2,761,284" and params["verdict"] == "off by x1.31 (higher)"
    its = rows["A10G, conv_bilstm batch 64, seq 100, fp32: 80-100 it/s"]
    assert its["verdict"] == "holds" and its["device"] == "NVIDIA A10G"
    mem = rows["A10G, conv_bilstm batch 64, seq 100: ~3-4 GB of 24 GB (peak reserved)"]
    assert mem["verdict"] == "off by x1.22 (higher)"
    t4 = rows["T4, transformer batch 16, seq 64, fp32: 30-40 it/s"]
    assert t4["verdict"] == "not measured on that device" and t4["measured"] == "-"
    text = check_claims.render(list(rows.values()))
    assert text.splitlines()[0].split(" | ")[0].strip() == "claim" and "not measured on that device" in text
    md = check_claims.render(list(rows.values()), markdown=True)
    assert md.startswith("| claim | measured | device | verdict |")


def test_check_claims_main_always_exits_0(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert check_claims.main(["--results", str(bad)]) == 0
    assert check_claims.main(["--claims", str(tmp_path / "missing.yaml")]) == 0
    assert "not measured" in capsys.readouterr().out


@pytest.mark.parametrize("claim,value,expected", [
    ({"range": [80, 100]}, 90, "holds"),
    ({"range": [80, 100]}, 40, "off by x2.00 (lower)"),
    ({"approx": 10, "tolerance": 0.3}, 12, "holds"),
    ({"approx": 2.1e6}, 2_761_284, "off by x1.31 (higher)"),
    ({"at_least": 0.95}, 0.9, "misses (x1.06 short)"),
    ({"at_most": 2.1}, 2.0, "holds"),
])
def test_verdicts(claim, value, expected):
    assert check_claims.verdict(claim, value) == expected


def test_gpu_names_match_as_words():
    rec = {"device": "cuda", "device_name": "Tesla T4"}
    assert check_claims.on_device(rec, "T4") and check_claims.on_device(rec, "cuda")
    assert not check_claims.on_device({"device": "cuda", "device_name": "NVIDIA RTX A4000"}, "T4")
    assert not check_claims.on_device(rec, "cpu") and check_claims.on_device(rec, "any")


@pytest.mark.slow  # the module's tiny benchmark run (model_results)
def test_plot_draws_a_column_per_model_and_a_line_per_series(model_results, tmp_path):
    """The tiny CPU run's figure: it/s over memory per model, one line per measured series with its numbers."""
    import matplotlib.image

    _, records = model_results
    ok = {r["model"]: r for r in records if r["suite"] == "model" and r["status"] == "ok"}
    fig = plot.figure(records, include_quick=True)
    assert len(fig.axes) == 2 * len(ok) == 4  # top row it/s, bottom row memory
    for j, model in enumerate(sorted(ok)):
        top, bottom = fig.axes[j], fig.axes[len(ok) + j]
        assert top.get_title() == model and top.get_ylabel() == "training it/s (median)"
        assert bottom.get_ylabel() == "peak memory, MB (CPU peak RSS, dashed)"  # CPU only: no GPU curve
        (speed,), (memory,) = top.get_lines(), bottom.get_lines()  # one series: cpu, fp32, batch 2
        assert list(speed.get_xdata()) == [2] and list(speed.get_ydata()) == [ok[model]["it_per_s"]]
        assert list(memory.get_ydata()) == [ok[model]["peak_cpu_rss_mb"]] and memory.get_linestyle() == "--"
        assert [t.get_text() for t in top.get_legend().get_texts()] == [speed.get_label()]
        assert "fp32" in speed.get_label() and "T=8" in speed.get_label()
    plot.plt.close(fig)
    out = plot.plot(records, tmp_path / "t.png", include_quick=True)
    height, width, _ = matplotlib.image.imread(out).shape  # the file is that figure at 110 dpi
    assert (width, height) == (round(5.5 * len(ok) * 110), round(7.5 * 110))


# ---------------------------------------------------------------------------- the loader fix


def test_training_windows_are_a_function_of_seed_epoch_index():
    rng = np.random.default_rng(0)
    seqs = [Sequence("v", 0, rng.normal(size=(50, 3)).astype(np.float32), rng.integers(0, 2, 50), np.ones(2, bool))]
    ds = WindowDataset(seqs, length=10, train=True, jitter=2, noise_std=0.1, seed=7)
    again = WindowDataset(seqs, length=10, train=True, jitter=2, noise_std=0.1, seed=7)
    assert torch.equal(ds[3]["x"], again[3]["x"]) and torch.equal(ds[3]["index"], again[3]["index"])
    ds.set_epoch(1)
    assert not torch.equal(ds[3]["x"], again[3]["x"])  # new epoch, new noise
    noise = ds[3]["x"] - torch.from_numpy(seqs[0].x[ds[3]["index"][2] + np.arange(10)])
    assert 0.03 < float(noise.std()) < 0.3  # Gaussian noise of std ~noise_std on the window's own frames


def test_evaluation_windows_pad_with_zeros_and_unlabelled():
    x = np.ones((13, 2), np.float32)
    ds = WindowDataset([Sequence("v", 0, x, np.zeros(13, np.int64), np.ones(2, bool))], length=10)
    last = ds[len(ds) - 1]
    assert bool(last["valid"].all()) and ds[0]["x"].dtype == torch.float32
    short = WindowDataset([Sequence("v", 0, x[:6], np.zeros(6, np.int64), np.ones(2, bool))], length=10)[0]
    assert short["valid"].tolist() == [True] * 6 + [False] * 4
    assert short["x"][6:].abs().sum() == 0 and short["y"][6:].tolist() == [-1] * 4


# ---------------------------------------------------------------------------- GPU paths


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_model_suite_records_memory_and_precision(tmp_path):
    tiny = [a if a != "cpu" else "cuda" for a in TINY_MODEL]
    records = bench_train.run_benchmarks([*tiny, "--precision", "fp32,fp16", "--out", str(tmp_path / "g.json")])
    timed = [r for r in records if r["suite"] == "model" and r["status"] == "ok"]
    assert {r["precision_used"] for r in timed} == {"fp32", "fp16"}
    for r in timed:
        assert r["peak_gpu_mem_allocated_mb"] > 0 and r["peak_gpu_mem_reserved_mb"] >= r["peak_gpu_mem_allocated_mb"]
        assert r["env"]["cuda"] and r["device_slug"].startswith("cuda-")


def test_throughput_figure_reads_plainly():
    """The committed results: ticks at the measured batch sizes in plain numbers, a legend on every panel,
    and a memory label that names only the kinds of curve drawn."""
    records = check_claims.load_records(None)
    fig = plot.figure(records)
    assert fig is not None
    fig.canvas.draw()
    data = plot.series(records)
    for j, model in enumerate(sorted(data)):
        batches = sorted({b for pts in data[model].values() for b in pts})
        top, bottom = fig.axes[j], fig.axes[len(data) + j]
        for ax in (top, bottom):
            assert [t.get_text() for t in ax.get_xticklabels()] == [str(b) for b in batches]
            assert ax.get_legend() is not None and ax.get_legend().get_texts()
            assert not ax.xaxis.get_minor_ticks()
        for t in top.get_yticklabels():  # 0.5, 1, 2, 5, ... not 6x10^0 or 2^5
            assert t.get_text() == "" or float(t.get_text()) > 0, t.get_text()
        gpu = any("peak_gpu_mem_allocated_mb" in r for pts in data[model].values() for r in pts.values())
        cpu = any("peak_gpu_mem_allocated_mb" not in r for pts in data[model].values() for r in pts.values())
        assert ("GPU" in bottom.get_ylabel()) == gpu and ("CPU" in bottom.get_ylabel()) == cpu
