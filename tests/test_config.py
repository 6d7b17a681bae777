import pytest

from distillset.config import Config, list_presets, load_config
from distillset.errors import ConfigError


def test_presets_listed_and_resolve():
    names = list_presets()
    assert "random-digits" in names and not any(n.startswith("base/") for n in names)
    for name in names:
        assert isinstance(load_config(name), Config)


def test_overrides_are_typed_and_applied():
    cfg = load_config("random-digits", ["data.ipc=10", "eval.models=convnet,mlp", "experts.lr_teacher=0.02"])
    assert cfg.data.ipc == 10
    assert cfg.eval.models == ["convnet", "mlp"]
    assert cfg.experts.lr_teacher == pytest.approx(0.02)
    assert cfg.model.depth == 2  # from the digits base preset


@pytest.mark.parametrize(
    "override, fragment",
    [
        (["data.ipcc=3"], "did you mean data.ipc"),
        (["experts.num_expert=3"], "did you mean experts.num_experts"),
        (["dat.ipc=3"], "did you mean data"),
        (["data.ipc=0"], "data.ipc"),
        (["eval.runs=abc"], "eval.runs"),
        (["model.norm=weird"], "model.norm"),
        (["data"], "section.key=value"),
        (["model.name=resnet19"], "did you mean 'resnet18'"),
        (["eval.models=convnet,vgg"], "eval.models"),
    ],
)
def test_bad_keys_and_values_fail_clearly(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config("random-digits", override)


def test_unknown_preset_suggests(tmp_path):
    with pytest.raises(ConfigError, match="random-digits"):
        load_config("random-digit")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"))


def test_yaml_file_with_base_and_round_trip(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: random-digits\ndata:\n  ipc: 5\n")
    cfg = load_config(str(path), ["seed=3"])
    assert (cfg.data.ipc, cfg.seed, cfg.data.name) == (5, 3, "digits")
    # The resolved config written into a run directory reloads to the same config.
    again = tmp_path / "resolved.yaml"
    again.write_text(cfg.to_yaml())
    assert load_config(str(again)) == cfg


def test_bad_yaml_is_reported(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(path))
