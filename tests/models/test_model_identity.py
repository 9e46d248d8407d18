"""A robin model is self-describing: everything that decides its function is in its weights file.

Each family is built at keep ratio 0.05 with non-default input statistics, trained a few
steps, saved, and loaded back through every route a user meets (plain ``load_state_dict`` into a
default-built model or one built with another keep ratio, timm's ``pretrained_cfg_overlay`` and
``checkpoint_path``, a timm hub folder through ``local-dir:``); the logits must be identical.
"""
from __future__ import annotations

import warnings

import pytest
import safetensors.torch
import timm
import torch
import torch.nn.functional as F

import robin_plugin
from robin_plugin import ConfigError, masked_layers
from robin_plugin.export import export_hub

# (name, architecture kwargs: what the file's reader must know, tiny sizes)
FAMILIES = [
    ("robin_resnet18", dict(width=4)),
    ("robin_resnet50", dict(width=4)),
    ("robin_wrn28_10", dict(depth=10, widen_factor=1)),
    ("robin_resnet18_dense", dict(width=4)),
]
ARCH = dict(in_chans=1, num_classes=5)
STATS = dict(mean=(0.3,), std=(0.4,))


def _trained(name: str, arch: dict) -> torch.nn.Module:
    """keep 0.05, non-default statistics, a few SGD steps (scores move, BatchNorm statistics too)."""
    kw = dict(ARCH, **arch, **STATS, seed=1)
    if not name.endswith("_dense"):
        kw.update(keep_ratio=0.05, p=0.3)
    model = timm.create_model(name, **kw)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        x, y = torch.rand(16, 1, 16, 16, generator=g), torch.randint(0, 5, (16,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def _x() -> torch.Tensor:
    return torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(1))


def _same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    with torch.no_grad():
        assert torch.equal(a.eval()(_x()), b.eval()(_x()))


@pytest.fixture(scope="module", params=FAMILIES, ids=[f[0] for f in FAMILIES])
def trained(request, tmp_path_factory):
    name, arch = request.param
    model = _trained(name, arch)
    path = tmp_path_factory.mktemp(name) / "model.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return name, arch, model, path


def test_state_dict_carries_keep_ratios_and_statistics(trained):
    name, arch, model, _ = trained
    sd = model.state_dict()
    assert torch.equal(sd["normalize.mean"].flatten(), torch.tensor([0.3])) and torch.equal(sd["normalize.std"].flatten(), torch.tensor([0.4]))
    for lname, layer in masked_layers(model):
        assert sd[f"{lname}.keep_ratio"].dtype == torch.float64 and sd[f"{lname}.keep_ratio"].item() == layer.keep_ratio


@pytest.mark.parametrize("extra", [{}, {"keep_ratio": 0.5}], ids=["default-kwargs", "keep_ratio=0.5"])
def test_load_state_dict_into_default_model_gives_identical_logits(trained, extra):
    name, arch, model, path = trained
    if name.endswith("_dense") and extra:
        pytest.skip("dense twins have no keep ratio")
    fresh = timm.create_model(name, **ARCH, **arch, **extra)  # default seed, statistics and keep ratio
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a current file loads silently
        fresh.load_state_dict(safetensors.torch.load_file(str(path)))
    _same(model, fresh)
    assert [m.keep_ratio for _, m in masked_layers(fresh)] == [m.keep_ratio for _, m in masked_layers(model)]
    assert fresh.input_stats()[0] == pytest.approx((0.3,))


def test_timm_pretrained_cfg_overlay_file_gives_identical_logits(trained):
    name, arch, model, path = trained
    loaded = timm.create_model(name, **ARCH, **arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    _same(model, loaded)


def test_timm_checkpoint_path_gives_identical_logits(trained):
    name, arch, model, path = trained
    _same(model, timm.create_model(name, **ARCH, **arch, checkpoint_path=str(path)))


def test_hub_folder_through_local_dir_gives_identical_logits(trained, tmp_path):
    name, arch, model, _ = trained
    folder = export_hub(model, tmp_path / "hub")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = timm.create_model(f"local-dir:{folder}", pretrained=True)
    _same(model, loaded)
    if model.masked:  # the compact encoding: far below the fp32 state dict
        fp32 = sum(4 * v.numel() for v in model.state_dict().values())
        assert (folder / "model.safetensors").stat().st_size < fp32 / 4


def test_hub_folder_refuses_to_overwrite(tmp_path):
    model = _trained(*FAMILIES[0])
    export_hub(model, tmp_path / "hub")
    with pytest.raises(robin_plugin.RobinError, match="exists"):
        export_hub(model, tmp_path / "hub")
    export_hub(model, tmp_path / "hub", overwrite=True)
    assert not [p for p in tmp_path.iterdir() if p.name != "hub"]  # no temp or backup folder left


def test_incompatible_file_gets_an_error_naming_what_differs(trained):
    name, arch, model, path = trained
    if "width" not in arch:
        pytest.skip("width is a ResNet argument")
    wider = timm.create_model(name, **ARCH, width=8)
    with pytest.raises(RuntimeError, match=r"size mismatch for conv1\.weight"):
        wider.load_state_dict(safetensors.torch.load_file(str(path)))


def test_bad_keep_ratio_in_a_file_is_refused():
    model = _trained(*FAMILIES[0])
    sd = model.state_dict()
    sd["conv1.keep_ratio"] = torch.tensor(1.5, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"conv1\.keep_ratio.*\(0, 1\]"):
        timm.create_model("robin_resnet18", **ARCH, width=4).load_state_dict(sd)
    sd = model.state_dict()
    sd["normalize.std"] = torch.zeros(1, 1, 1, 1)
    with pytest.raises(RuntimeError, match="std values must be finite and > 0"):
        timm.create_model("robin_resnet18", **ARCH, width=4).load_state_dict(sd)


def test_a_state_dict_without_keep_ratios_or_statistics_is_refused():
    """Keep ratios and input statistics are state: a strict load names them as missing."""
    model = _trained(*FAMILIES[0])
    fresh = timm.create_model("robin_resnet18", **ARCH, width=4, keep_ratio=0.05, p=0.3, **STATS)
    no_ratios = {k: v for k, v in model.state_dict().items() if not k.endswith(("keep_ratio", "keep_ratio_bits"))}
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*conv1\.keep_ratio"):
        fresh.load_state_dict(no_ratios)
    no_stats = {k: v for k, v in model.state_dict().items() if not k.startswith("normalize.")}
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*normalize\.mean"):
        fresh.load_state_dict(no_stats)


def test_a_state_dict_with_the_float_keep_ratio_only_loads_exactly_and_silently():
    """A decoded compact file carries the keep ratio as a float64 only (no ``keep_ratio_bits`` buffer)."""
    model = _trained(*FAMILIES[0])
    old = {k: v for k, v in model.state_dict().items() if not k.endswith("keep_ratio_bits")}
    fresh = timm.create_model("robin_resnet18", **ARCH, width=4, keep_ratio=0.5, **STATS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh.load_state_dict(old)
    assert [m.keep_ratio for _, m in masked_layers(fresh)] == [m.keep_ratio for _, m in masked_layers(model)]
    _same(model, fresh)


def test_keep_ratio_bits_and_float_must_agree():
    model = _trained(*FAMILIES[0])
    sd = model.state_dict()
    sd["conv1.keep_ratio"] = sd["conv1.keep_ratio"] / 2
    with pytest.raises(RuntimeError, match=r"conv1\.keep_ratio_bits .* and conv1\.keep_ratio .* disagree"):
        timm.create_model("robin_resnet18", **ARCH, width=4).load_state_dict(sd)


def test_pretrained_cfg_tells_the_truth_for_timm_transforms():
    """timm's own preprocessing gives exactly the [0, 1] tensor the model normalises itself."""
    from PIL import Image
    from timm.data import create_transform, resolve_data_config
    from torchvision.transforms.functional import to_tensor

    for in_chans, mode in ((1, "L"), (3, "RGB")):
        model = timm.create_model("robin_resnet18", in_chans=in_chans, width=4, keep_ratio=0.1,
                                  mean=(0.2,) * in_chans, std=(0.3,) * in_chans).eval()
        cfg = resolve_data_config({}, model=model)
        assert cfg["input_size"] == (in_chans, 32, 32)
        assert cfg["mean"] == (0.0,) * in_chans and cfg["std"] == (1.0,) * in_chans
        g = torch.Generator().manual_seed(in_chans)
        pixels = torch.randint(0, 256, (32, 32, in_chans), dtype=torch.uint8, generator=g).squeeze(-1).numpy()
        image = Image.fromarray(pixels, mode=mode)
        x = create_transform(**cfg)(image).unsqueeze(0)
        assert torch.equal(x, to_tensor(image).unsqueeze(0))
        with torch.no_grad():
            assert torch.equal(model(x), model(to_tensor(image).unsqueeze(0)))


@pytest.mark.parametrize("name", ["robin_resnet18", "robin_resnet18_dense", "robin_wrn34_cifar10_linf"])
def test_pretrained_without_a_file_is_the_same_clear_error_for_every_name(name):
    """timm loads ``checkpoint_path=`` after the entry point returns, without telling it: until a state dict
    is loaded, the model refuses to run or switch mode."""
    kwargs = {} if "wrn" in name else {"width": 4}
    model = timm.create_model(name, pretrained=True, **kwargs)
    with pytest.raises(ConfigError, match="no hosted weights"):
        model.eval()
    with pytest.raises(ConfigError, match="no hosted weights"):
        model(torch.rand(1, 3, 32, 32))
    model.load_state_dict(timm.create_model(name, **kwargs).state_dict())  # weights given: it runs
    assert model.eval()(torch.rand(1, 3, 32, 32)).shape == (1, model.num_classes)


@pytest.mark.parametrize("overlay", [dict(url="http://127.0.0.1:9/x.pth"), dict(hf_hub_id="someone/robin")])
def test_a_hosted_weight_source_is_refused_before_anything_is_built(overlay):
    with pytest.raises(ConfigError, match="never download"):
        timm.create_model("robin_resnet18", pretrained=True, pretrained_cfg_overlay=overlay)
    with pytest.raises(ConfigError, match="never download"):  # even with pretrained=False
        timm.create_model("robin_resnet18", pretrained_cfg_overlay=overlay)


def test_robustbench_route_with_a_checkpoint_still_loads(tmp_path):
    """robustbench.utils.load_model calls create_model(..., pretrained=True, checkpoint_path=...)."""
    model = timm.create_model("robin_resnet18", in_chans=3, width=4, keep_ratio=0.05).eval()
    path = tmp_path / "w.safetensors"
    safetensors.torch.save_file(model.state_dict(), str(path))
    loaded = timm.create_model("robin_resnet18_cifar10_linf", num_classes=10, width=4, pretrained=True,
                               checkpoint_path=str(path)).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
