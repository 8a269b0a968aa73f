"""MFU: datasheet peaks on GPUs, a measured peak on CPU that the model's own rate can never exceed,
and the logged figure equal to its formula. No test times anything: clocks and rates are stubbed."""

import json
import math

import pytest
import torch

from llmlab.model import Transformer
from llmlab.train import mfu as M
from llmlab.train.loop import train
from llmlab.train.losses import lm_loss

from .conftest import batches, tiny_model_config, token_stream, train_cfg


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch):
    monkeypatch.setattr(M, "_MEASURED", {}, raising=False)


def test_gpu_peaks_from_the_datasheet_table():
    never = lambda: pytest.fail("a GPU peak is not measured")  # noqa: E731
    assert M.PeakFlops("cuda", "NVIDIA H200", "bfloat16", measure=never).value == 989e12
    assert M.PeakFlops("cuda", "NVIDIA A100-SXM4-80GB", "bfloat16").value == 312e12
    assert M.PeakFlops("cuda", "NVIDIA A10G", "bfloat16").value == 70e12  # not the A10's 125e12
    assert M.PeakFlops("cuda", "NVIDIA H100 80GB HBM3", "float32").value == 989e12 / 2  # TF32
    assert M.PeakFlops("cuda", "NVIDIA H100 80GB HBM3", "bfloat16").mfu(494.5e12) == 0.5


def test_matmul_rate_is_flops_over_the_clock():
    """4 matmuls of 2n³ FLOPs per timed round; a fake clock ticking 0.1 s per read times one round."""
    ticks = iter(0.1 * i for i in range(100))
    rate = M.measure_matmul_flops(n=8, seconds=0.25, clock=lambda: next(ticks))
    assert rate == pytest.approx(4 * 2 * 8**3 / 0.1)


def test_cpu_peak_is_raised_by_a_faster_remeasure_and_never_below_the_achieved_rate():
    rates = iter([1e9, 4e9, 2e9])
    peak = M.PeakFlops("cpu", measure=lambda: next(rates))
    assert peak.value == 1e9
    assert peak.mfu(5e8) == 0.5  # below the peak: no new measurement
    assert peak.mfu(3e9) == 0.75 and peak.value == 4e9  # a quieter machine measured 4e9
    assert peak.mfu(6e9) == 1.0 and peak.value == 6e9  # the model itself did 6e9 (re-measure: 2e9)
    assert M.PeakFlops("cpu", measure=lambda: 1.0).value == 6e9  # the best seen is kept


def test_cpu_peak_is_per_thread_count(monkeypatch):
    """A peak measured on 1 thread must not serve a run on 2 (its MFU could read 200%)."""
    measure = lambda: torch.get_num_threads() * 1e9  # noqa: E731
    assert M.PeakFlops("cpu", measure=measure).value == 1e9  # the conftest runs on one thread
    torch.set_num_threads(2)
    assert M.PeakFlops("cpu", measure=measure).value == 2e9


def _logged(tmp_path, **kw) -> tuple[list[dict], Transformer]:
    cfg = train_cfg(steps=6, **kw)
    torch.manual_seed(0)
    model = Transformer(tiny_model_config())
    train(model, cfg, tmp_path, batches(token_stream(), cfg), lm_loss, verbose=False)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "mfu" in r], model


def test_logged_cpu_mfu_cannot_exceed_one_when_the_start_measurement_was_slow(tmp_path, monkeypatch):
    """A busy machine at the start: the measured matmul rate is far below what training achieves."""
    monkeypatch.setattr(M, "measure_matmul_flops", lambda **kw: 1e3)
    records, _ = _logged(tmp_path)
    mfus = [r["mfu"] for r in records]
    assert len(mfus) == 6 and all(0 < m <= 1.0 for m in mfus), mfus  # the old code logged ~1e5
    assert mfus[0] == 1.0  # the first log raised the peak to the model's own rate


def test_logged_mfu_is_model_flops_rate_over_the_peak(tmp_path, monkeypatch):
    peak = 1e18  # far above anything a CPU does: never re-measured
    monkeypatch.setattr(M, "measure_matmul_flops", lambda **kw: peak)
    records, model = _logged(tmp_path)
    fpt = model.cfg.flops_per_token()
    for r in records:
        assert r["mfu"] == pytest.approx(fpt * r["tok_per_s"] / peak, rel=1e-12)
        assert math.isfinite(r["mfu"]) and r["mfu"] > 0


@pytest.mark.timeout(180)
def test_ddp_mfu_divides_the_global_rate_by_every_device(tmp_path, monkeypatch):
    """tok_per_s counts all ranks' tokens; two devices have twice one device's peak."""
    import torch.multiprocessing as mp

    from .test_distributed import _free_port, _worker

    peak = 1e18
    monkeypatch.setattr(M, "measure_matmul_flops", lambda **kw: peak)  # the forked ranks inherit it
    mp.start_processes(
        _worker, args=(2, _free_port(), str(tmp_path), ["ddp"]), nprocs=2, join=True, start_method="fork"
    )
    records = [r for r in map(json.loads, (tmp_path / "ddp" / "metrics.jsonl").open()) if "mfu" in r]
    fpt = tiny_model_config().flops_per_token()
    assert records and all(r["mfu"] == pytest.approx(fpt * r["tok_per_s"] / (2 * peak)) for r in records)
