import torch

from distillset.config import load_config
from distillset.data.prepared import prepare


def test_zca_pipeline_fits_on_train_and_inverts():
    cfg = load_config("random-digits", ["data.zca=true"])
    data = prepare(cfg.data, torch.device("cpu"))
    manifest = data.prep.to_manifest()
    assert manifest["zca"] is True and manifest["zca_fingerprint"]
    # The training split is whitened (near-identity covariance on its strong directions), and the
    # inverse takes every split back to the [0, 1] images.
    flat = data.train_x.flatten(1).double()
    assert flat.mean(0).abs().max() < 1e-4
    for x, raw in ((data.train_x, data.dataset.train.x), (data.test_x, data.dataset.test.x)):
        torch.testing.assert_close(data.prep.inverse(x), raw, atol=1e-4, rtol=0)
    assert data.dsa_strategy == "color_crop_cutout_scale_rotate"  # no flip for handwritten digits


def test_default_preprocessing_is_mean_std():
    data = prepare(load_config("random-digits").data, torch.device("cpu"))
    ds = data.dataset
    torch.testing.assert_close(data.train_x, (ds.train.x - ds.mean[0]) / ds.std[0])
    assert abs(float(data.train_x.mean())) < 1e-4
