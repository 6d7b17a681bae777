"""The README's Python quickstart, on a tiny config."""

import distillset as ds
from tests.conftest import TINY


def test_readme_quickstart(tmp_path):
    cfg = ds.load_config("random-digits", [*TINY, "data.ipc=10", "eval.runs=1"])
    data = ds.prepare(cfg.data, ds.resolve_device(cfg.device))
    store = ds.train_experts(cfg, tmp_path / "experts", data, progress=False)
    assert store.load(0).shape[0] == cfg.experts.train_epochs + 1
    art = ds.random_subset(cfg, data)
    art.save(tmp_path / "random10")
    report = ds.evaluate(ds.DistilledSet.load(tmp_path / "random10"), cfg, data, progress=False)
    assert report["ipc"] == 10 and "convnet" in report["random_baseline"]
    assert "IPC 10" in ds.format_report(report)
