"""The deploy model (sparse convolutions over the kept weights) computes the masked model's logits."""
from __future__ import annotations

import warnings

import pytest
import timm
import torch
import torch.nn as nn

import robin_plugin  # noqa: F401  (registers the models)
from robin_plugin.export.deploy import DEPLOY_ATOL, DEPLOY_RTOL, DeployError, deploy_model, kept_macs
from robin_plugin.export.deploy import DeployFormatError, load_deploy, save_deploy
from robin_plugin.models import robinify

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")


def _calibrated(model: nn.Module, shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics, then switch to eval mode."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, *shape, generator=g))
    return model.eval()


def _assert_close(deploy: nn.Module, model: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        want, got = model(x), deploy(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=DEPLOY_RTOL, atol=DEPLOY_ATOL)


FAMILIES = [
    ("robin_resnet18", dict(width=8, keep_ratio=0.05), (3, 16, 16)),
    ("robin_resnet50", dict(width=4, keep_ratio=0.05), (3, 16, 16)),
    ("robin_wrn28_10", dict(widen_factor=1, depth=10, keep_ratio=0.05), (3, 16, 16)),
    ("robin_resnet18", dict(width=8, in_chans=1, keep_ratio=0.2, last_bn=False), (1, 28, 28)),
]


@pytest.mark.parametrize("name,kwargs,shape", FAMILIES, ids=[f[0] + str(i) for i, f in enumerate(FAMILIES)])
@pytest.mark.parametrize("sparse_below", [0.0, 0.05, 1.0], ids=["all-dense", "default", "all-sparse"])
def test_deploy_logits_equal_masked_model(name, kwargs, shape, sparse_below):
    model = _calibrated(timm.create_model(name, **kwargs), shape)
    # default: dense layers keep a sparse form for inputs of at most 1000 positions (the 1-image batch)
    small = dict(sparse_below_small=0.0) if sparse_below in (0.0, 1.0) else dict(sparse_below_small=0.5, small_positions=1000)
    deploy = deploy_model(model, sparse_below=sparse_below, **small)
    x = torch.rand(5, *shape, generator=torch.Generator().manual_seed(1))
    _assert_close(deploy, model, x)
    _assert_close(deploy, model, x[:1])  # batch 1, and a second shape through the cached masks
    kinds = deploy.kinds()
    n_convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert kinds.get("sparse_conv", 0) + kinds.get("dense_conv", 0) == n_convs
    if sparse_below == 0.0:
        assert "sparse_conv" not in kinds
    if sparse_below == 1.0:  # every convolution of these models is a "same" one
        assert kinds["sparse_conv"] == n_convs
    assert "batch_norm" not in kinds and kinds.get("affine2d", 0) <= n_convs  # BatchNorms after convs are folded


def test_deploy_keeps_only_the_kept_weights():
    model = _calibrated(timm.create_model("robin_resnet18", width=8, keep_ratio=0.03), (3, 16, 16))
    deploy = deploy_model(model, sparse_below=1.0)
    kept_conv = sum(m.kept for m in model.modules() if isinstance(m, nn.Conv2d))
    assert deploy.nnz == kept_conv
    kept, dense = kept_macs(model, (3, 16, 16))
    assert 0 < kept < 0.25 * dense


def test_each_intermediate_value_is_freed_right_after_its_last_reader():
    """Holding every activation to the end of forward made the heap grow and shrink on every call."""
    model = timm.create_model("robin_resnet18", num_classes=10, width=8, keep_ratio=0.05).eval()
    dep = deploy_model(model)
    readers = {}
    for j, op in enumerate(dep.program):
        for a in op.args:
            readers.setdefault(a, []).append(j)
    released = [v for done in dep._release for v in done]
    assert len(released) == len(set(released))  # each value once
    assert dep.output not in released
    made = {0} | {op.out for op in dep.program}
    assert set(released) == made - {dep.output}  # every other value, none kept to the end
    for j, done in enumerate(dep._release):
        for v in done:
            assert all(r <= j for r in readers.get(v, [])), f"value {v} freed after op {j} but read later"
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(dep(x), dep(x))  # the release does not touch what later ops read


def test_deploy_does_not_follow_later_training():
    model = _calibrated(timm.create_model("robin_resnet18", width=8, keep_ratio=0.1), (3, 16, 16))
    x = torch.rand(3, 3, 16, 16)
    deploy = deploy_model(model)
    with torch.no_grad():
        before = deploy(x).clone()
        for m in model.modules():
            if hasattr(m, "scores"):
                m.scores.mul_(-1).add_(torch.rand_like(m.scores))  # another mask
        assert not torch.allclose(model(x), before, rtol=DEPLOY_RTOL, atol=DEPLOY_ATOL)
        torch.testing.assert_close(deploy(x), before)
    assert model.training is False


def test_deploy_of_a_robinified_model_with_unknown_ops():
    """Max-pool, a 7x7 stride-2 stem and 1x1 stride-2 shortcuts: unknown ops run in the ordinary layout."""
    base = timm.create_model("resnet18", num_classes=7, pretrained=False)
    model = _calibrated(robinify(base, keep_ratio=0.1), (3, 32, 32))
    deploy = deploy_model(model, sparse_below=1.0)
    assert any("maxpool" in f for f in deploy.fallbacks)
    _assert_close(deploy, model, torch.rand(2, 3, 32, 32))


def test_deploy_model_is_inference_only():
    deploy = deploy_model(_calibrated(timm.create_model("robin_resnet18", width=4), (3, 8, 8)))
    assert not deploy.training
    with pytest.raises(DeployError, match="inference-only"):
        deploy.train()
    assert list(deploy.parameters()) == []


def test_deploy_refuses_batchnorm_without_statistics():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(DeployError, match="running statistics"):
        deploy_model(model)


def test_deploy_file_round_trip(tmp_path):
    model = _calibrated(timm.create_model("robin_wrn28_10", widen_factor=1, depth=10, keep_ratio=0.05), (3, 16, 16))
    deploy = deploy_model(model)
    path = save_deploy(deploy, tmp_path / "model.deploy.safetensors")
    loaded = load_deploy(path)
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), deploy(x), rtol=0, atol=0)
    assert loaded.nnz == deploy.nnz and loaded.kinds() == deploy.kinds()
    assert save_deploy(loaded, tmp_path / "again.safetensors").read_bytes() == path.read_bytes()


def test_a_program_that_runs_python_modules_cannot_be_saved(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GELU()).eval()
    deploy = deploy_model(model)
    _assert_close(deploy, model, torch.rand(2, 3, 8, 8))
    with pytest.raises(DeployError, match="cannot be saved"):
        save_deploy(deploy, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def _tamper(path, tmp_path, edit):
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    program = json.loads(meta["program"])
    edit(program, tensors, meta)
    meta["program"] = json.dumps(program)
    out = tmp_path / "tampered.safetensors"
    save_file(tensors, str(out), metadata=meta)
    return out


def _set_first(kind, key, value):
    def edit(program, tensors, meta):
        op = next(o for o in program if o["kind"] == kind)
        op["params"][key] = value
    return edit


@pytest.mark.parametrize("edit,match", [
    (lambda p, t, m: p[0].update(kind="exec"), "unknown kind 'exec'"),
    (lambda p, t, m: p[3].update(args=[99]), "earlier value"),
    (lambda p, t, m: p[3].update(out=7), "out must be"),
    (_set_first("sparse_conv", "cout", 1 << 20), "cout must be an integer"),
    (_set_first("sparse_conv", "taps", [[5, 5]]), "taps must be"),
    (_set_first("dense_conv", "relu", "yes"), "relu must be true or false"),
    (lambda p, t, m: t.__setitem__(next(k for k in t if k.endswith(".col")), torch.full_like(t[next(k for k in t if k.endswith(".col"))], 10**6)), "valid"),
    (lambda p, t, m: t.__setitem__("999.extra", torch.zeros(1)), "no operation uses"),
    (lambda p, t, m: m.update(format="robin-compact"), "not a robin deploy file"),
    (lambda p, t, m: m.update(version="9"), "version '9'"),
])
def test_malformed_deploy_files_are_refused(tmp_path, edit, match):
    model = _calibrated(timm.create_model("robin_resnet18", width=4, keep_ratio=0.05), (3, 16, 16))
    path = save_deploy(deploy_model(model, sparse_below=0.05), tmp_path / "ok.safetensors")
    with pytest.raises(DeployFormatError, match=match):
        load_deploy(_tamper(path, tmp_path, edit))


def test_robin_export_format_deploy(tmp_path, capsys):
    from robin_plugin.cli import main

    model = _calibrated(timm.create_model("robin_resnet18", width=4, keep_ratio=0.05), (3, 16, 16))
    torch.save(model.state_dict(), tmp_path / "sd.pt")  # loaded with weights_only=True
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "sd.safetensors"))
    out = tmp_path / "model.deploy.safetensors"
    code = main(["export", "--model", "robin_resnet18", "--model-kwargs", '{"width": 4, "keep_ratio": 0.05}',
                 "--checkpoint", str(tmp_path / "sd.safetensors"), "--format", "deploy", "--out", str(out)])
    assert code == 0 and "deploy model" in capsys.readouterr().out
    x = torch.rand(3, 3, 16, 16)
    _assert_close(load_deploy(out), model, x)
