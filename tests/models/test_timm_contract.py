"""timm's model contract for every robin family and its dense twin, on tiny models.

Mirrors what timm's own ``tests/test_models.py`` checks (``.ci/timm_model_tests.sh`` runs that
file itself): feature_info / features_only, forward_intermediates, prune_intermediate_layers,
grad checkpointing, drop_path_rate / drop_rate, global_pool, group_matcher / no_weight_decay,
device / dtype, and ``torch.compile(fullgraph=True)``. Models here are tiny (width 4 or widen
factor 1, one input channel, 16x16 inputs): about 20 s on 2 CPU cores, plus the slow inductor test.
"""
from __future__ import annotations

import copy

import pytest
import timm
import torch
import torch.nn as nn
import torch.utils.checkpoint
from timm.layers import DropPath
from timm.models import group_parameters

import robin_plugin  # noqa: F401  (registers the models)
from robin_plugin.errors import ConfigError
from robin_plugin.models import RobinResNet, RobinWideResNet
from robin_plugin.models.base import RobinNetBase
from robin_plugin.models.robin_resnet import BasicBlock

SIZE = 16
ALL_MODELS = timm.list_models("robin_*")
# one masked and one dense model per block type: BasicBlock, Bottleneck, pre-activation WRN block
FAMILIES = ["robin_resnet18", "robin_resnet18_dense", "robin_resnet50", "robin_resnet50_dense",
            "robin_wrn28_10", "robin_wrn28_10_dense"]


def tiny_kwargs(name: str) -> dict:
    """Constructor arguments that make ``name`` tiny: 1 input channel, few channels, few blocks."""
    kw = dict(in_chans=1, num_classes=5)
    kw.update(dict(widen_factor=1, depth=10) if "wrn" in name else dict(width=4))
    if "dense" not in name:
        kw["keep_ratio"] = 0.2
    return kw


def build(name: str, **kwargs) -> RobinNetBase:
    return timm.create_model(name, **{**tiny_kwargs(name), **kwargs})


def images(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def tensors(model: nn.Module) -> list[torch.Tensor]:
    """Parameters and buffers (a masked layer's keep ratio is a Python float, stored as a CPU scalar)."""
    return [*model.parameters(), *model.buffers()]


def calibrated(model: nn.Module) -> nn.Module:
    """``model`` in eval mode after one train-mode pass: BatchNorm statistics of real activations,
    so eval outputs are of moderate size (fresh binary networks blow up by orders of magnitude)."""
    with torch.no_grad():
        model.train()(images(8, seed=1))
    return model.eval()


# --- feature_info and features_only ------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_MODELS)
def test_features_only_matches_feature_info(name: str) -> None:
    model = build(name)
    info = model.feature_info
    assert [i["reduction"] for i in info] == sorted(i["reduction"] for i in info)
    assert all(isinstance(model.get_submodule(i["module"]), nn.Module) for i in info)
    assert info[-1]["num_chs"] == model.num_features
    feats = build(name, features_only=True).eval()
    assert feats.feature_info.channels() == [i["num_chs"] for i in info]
    assert feats.feature_info.reduction() == [i["reduction"] for i in info]
    with torch.no_grad():
        outs = feats(images())
    assert [o.shape[1] for o in outs] == feats.feature_info.channels()
    # each stride-2 layer (3x3 or 7x7 convolution, max-pool; all padded) rounds up
    assert [tuple(o.shape[-2:]) for o in outs] == [(-(-SIZE // r), -(-SIZE // r)) for r in feats.feature_info.reduction()]


@pytest.mark.parametrize("name", FAMILIES)
def test_features_only_out_indices(name: str) -> None:
    model = build(name).eval()  # the same seed gives the wrapped model the same weights
    n = len(model.feature_info)
    feats = build(name, features_only=True, out_indices=(1, -1)).eval()
    with torch.no_grad():
        outs = feats(images())
        expected = model.forward_intermediates(images(), indices=[1, n - 1], intermediates_only=True)
    assert feats.feature_info.channels() == [model.feature_info[1]["num_chs"], model.feature_info[-1]["num_chs"]]
    assert len(outs) == 2
    for o, e in zip(outs, expected):
        torch.testing.assert_close(o, e)


@pytest.mark.parametrize("feature_cls", ["list", "hook", "fx"])
@pytest.mark.parametrize("name", ["robin_resnet18", "robin_wrn28_10_dense"])
def test_other_feature_classes_agree(name: str, feature_cls: str) -> None:
    """timm's module-walking, hook and FX extractors give the same features as the default getter."""
    with torch.no_grad():
        expected = build(name, features_only=True).eval()(images())
        got = build(name, features_only=True, feature_cls=feature_cls).eval()(images())
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


# --- forward_intermediates -----------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_forward_intermediates(name: str) -> None:
    model = calibrated(build(name))
    x = images()
    n = len(model.feature_info)
    with torch.no_grad():
        final, taps = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0)
        assert [t.shape[1] for t in taps] == [i["num_chs"] for i in model.feature_info]
        # an int takes the last n levels; negative indices count from the end
        last2 = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert len(last2) == 2 and torch.equal(last2[0], taps[-2]) and torch.equal(last2[1], taps[-1])
        (neg,) = model.forward_intermediates(x, indices=[-n], intermediates_only=True)
        assert torch.equal(neg, taps[0])
        for i in range(n):
            early, (tap,) = model.forward_intermediates(x, indices=[i], stop_early=True)
            assert torch.equal(tap, taps[i])
            if i < n - 1:
                assert torch.equal(early, taps[i])  # stopped at the tap: no later stage, no final norm
        # norm=True applies the final norm (WideResNet: BN + ReLU, ResNet: none) to the last level
        (normed,) = model.forward_intermediates(x, indices=[n - 1], norm=True, intermediates_only=True)
        torch.testing.assert_close(normed, final, rtol=0, atol=0)
        if model.norm_names:
            assert not torch.equal(normed, taps[-1])
    with pytest.raises(ConfigError, match="NCHW"):
        model.forward_intermediates(x, output_fmt="NHWC")


@pytest.mark.parametrize("name", FAMILIES)
def test_prune_intermediate_layers(name: str) -> None:
    model = calibrated(build(name))
    x = images()
    n = len(model.feature_info)
    with torch.no_grad():
        expected = model(x)
        taps = model.forward_intermediates(x, intermediates_only=True)
        kept = copy.deepcopy(model)
        assert kept.prune_intermediate_layers([n - 1], prune_head=False) == [n - 1]
        torch.testing.assert_close(kept(x), expected, rtol=0, atol=0)  # nothing after the last level to prune
    for i in range(n):
        pruned = copy.deepcopy(model)
        take = pruned.prune_intermediate_layers([i], prune_norm=True)
        with torch.no_grad():
            (tap,) = pruned.forward_intermediates(x, indices=take, intermediates_only=True)
            torch.testing.assert_close(tap, taps[i], rtol=0, atol=0)
            assert pruned.num_classes == 0 and isinstance(pruned.get_classifier(), nn.Identity)
            if i < n - 1:
                torch.testing.assert_close(pruned.forward_features(x), taps[i], rtol=0, atol=0)
                assert pruned.num_features == pruned.head_hidden_size == model.feature_info[i]["num_chs"]
                assert not any(k.startswith(model.stage_names[-1] + ".") for k in pruned.state_dict())
        # the head can be rebuilt on the pruned features, and everything left trains
        pruned.reset_classifier(3, "avg")
        pruned.train()
        pruned(x).sum().backward()
        assert [k for k, p in pruned.named_parameters() if p.grad is None] == []


# --- grad checkpointing --------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_grad_checkpointing_checkpoints_and_changes_nothing(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    checkpoint = torch.utils.checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return checkpoint(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    base = build(name).train()
    x = images(4)
    results = []
    for enable in (False, True):
        model = copy.deepcopy(base)
        model.set_grad_checkpointing(enable)
        assert model.grad_checkpointing is enable
        calls.clear()
        out = model(x)
        out.square().mean().backward()
        num_blocks = sum(len(getattr(model, s)) for s in model.stage_names)
        assert len(calls) == (num_blocks if enable else 0)  # one checkpoint per residual block
        results.append((out.detach(), {k: p.grad for k, p in model.named_parameters()}))
        calls.clear()
        model.forward_intermediates(x)
        assert len(calls) == (num_blocks if enable else 0)
    (out0, grads0), (out1, grads1) = results
    torch.testing.assert_close(out1, out0)
    assert grads0.keys() == grads1.keys()
    for k in grads0:
        torch.testing.assert_close(grads1[k], grads0[k], msg=k)


# --- regularisation: drop_path_rate, drop_rate ---------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_drop_path_rate(name: str) -> None:
    model = build(name, drop_path_rate=0.4)
    plain = build(name)
    drops = [b.drop_path for s in model.stage_names for b in getattr(model, s)]
    rates = [d.drop_prob if isinstance(d, DropPath) else 0.0 for d in drops]
    assert rates == pytest.approx(RobinNetBase.drop_path_rates(len(drops), 0.4))
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.4)
    assert model.state_dict().keys() == plain.state_dict().keys()  # DropPath holds no state
    x = images(4)
    torch.manual_seed(0)
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(x), model(x))  # train: stochastic depth
        model.eval()
        plain.load_state_dict(model.state_dict())
        plain.eval()
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)  # eval: deterministic
        torch.testing.assert_close(model(x), plain(x), rtol=0, atol=0)  # and the same network


@pytest.mark.parametrize("name", ["robin_resnet18", "robin_wrn28_10_dense"])
def test_drop_rate(name: str) -> None:
    model = calibrated(build(name, drop_rate=0.5))
    assert isinstance(model.head.drop, nn.Dropout) and model.head.drop.p == 0.5
    feats = model.forward_features(images()).detach()
    torch.manual_seed(0)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(feats), model.forward_head(feats), rtol=0, atol=0)
        model.head.train()
        assert not torch.equal(model.forward_head(feats, pre_logits=True), model.forward_head(feats, pre_logits=True))
        model.reset_classifier(3)  # the new head keeps the dropout
        assert isinstance(model.head.drop, nn.Dropout) and model.head.drop.p == 0.5


@pytest.mark.parametrize("key", ["drop_rate", "drop_path_rate"])
@pytest.mark.parametrize("value", [-0.1, 1.0, True, "0.1"])
def test_rates_are_validated(key: str, value) -> None:
    with pytest.raises(ConfigError, match=key):
        build("robin_resnet18", **{key: value})


# --- global_pool and the head --------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_global_pool(name: str) -> None:
    x = images()
    model = calibrated(build(name))
    assert model.global_pool == "avg" and model.head_hidden_size == model.num_features
    with torch.no_grad():
        feats = model.forward_features(x)  # (N, C, h, w)
        assert feats.dim() == 4 and feats.shape[1] == model.num_features
        torch.testing.assert_close(model.forward_head(feats, pre_logits=True), feats.mean((2, 3)))
        # no classifier and no pooling: the features themselves, as timm's ResNet
        unpooled = build(name, num_classes=0, global_pool="")
        unpooled.load_state_dict(model.state_dict(), strict=False)
        unpooled.eval()
        torch.testing.assert_close(unpooled(x), feats, rtol=0, atol=0)
        model.reset_classifier(0, "")
        torch.testing.assert_close(model(x), feats, rtol=0, atol=0)
        model.reset_classifier(0)  # None keeps the current pooling
        assert model.global_pool == "" and model(x).dim() == 4
        model.reset_classifier(0, "avg")
        torch.testing.assert_close(model(x), feats.mean((2, 3)))


def test_global_pool_without_pooling_gives_logit_maps() -> None:
    """With a classifier and no pooling, the classifier acts on each position (a 1x1 convolution):
    for a linear classifier without last BN, the mean of the maps is the pooled model's logits."""
    x = images()
    pooled = calibrated(build("robin_resnet18_dense"))
    maps = build("robin_resnet18_dense", global_pool="")
    maps.load_state_dict(pooled.state_dict())
    maps.eval()
    with torch.no_grad():
        out = maps(x)
        assert out.shape == (2, 5, SIZE // 8, SIZE // 8)
        torch.testing.assert_close(out.mean((2, 3)), pooled(x), rtol=1e-5, atol=1e-5)
        masked = calibrated(build("robin_resnet18", global_pool=""))  # masked classifier and last BN
        assert masked(x).shape == (2, 5, SIZE // 8, SIZE // 8)


def test_unknown_global_pool_is_refused() -> None:
    with pytest.raises(ConfigError, match="global_pool='avg'"):
        build("robin_wrn28_10", global_pool="max")
    model = build("robin_resnet18_dense")
    with pytest.raises(ConfigError, match="got 'catavgmax'"):
        model.reset_classifier(3, "catavgmax")
    assert model.num_classes == 5  # nothing changed


# --- optimiser helpers, device / dtype -----------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_group_matcher_and_no_weight_decay(name: str) -> None:
    model = build(name)
    names = [n for n, _ in model.named_parameters()]
    for coarse in (False, True):
        groups = group_parameters(model, model.group_matcher(coarse=coarse), reverse=True)
        assert sorted(groups) == sorted(names)
        assert len(set(groups.values())) > 1
        assert groups["conv1." + ("scores" if model.masked else "weight")] == 0  # the stem comes first
        assert groups["head.fc." + ("scores" if model.masked else "weight")] == max(groups.values())
    fine = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    coarse = group_parameters(model, model.group_matcher(coarse=True), reverse=True)
    assert len(set(fine.values())) >= len(set(coarse.values()))  # fine: one group per block
    nwd = model.no_weight_decay()
    assert isinstance(nwd, set) and all(n in names for n in nwd)


def test_timm_factory_kwargs_reach_aliases() -> None:
    model = timm.create_model("robin_resnet18_cifar100_linf", width=4, drop_rate=0.2, drop_path_rate=0.3,
                              num_classes=0, global_pool="")
    assert (model.drop_rate, model.drop_path_rate, model.global_pool) == (0.2, 0.3, "")
    assert model.eval()(torch.rand(1, 3, 16, 16)).shape == (1, model.num_features, 2, 2)
    with pytest.raises(TypeError):
        timm.create_model("robin_resnet18", width=4, not_a_model_arg=1)


def test_device_and_dtype() -> None:
    ref = build("robin_resnet18")
    model = build("robin_resnet18", dtype=torch.float64)
    assert {t.dtype for t in model.state_dict().values() if t.is_floating_point()} == {torch.float64}
    for k, v in ref.state_dict().items():  # same draws whatever the dtype
        torch.testing.assert_close(model.state_dict()[k], v.to(model.state_dict()[k].dtype), rtol=0, atol=0)
    # a new head follows the model's device and dtype
    model.reset_classifier(3)
    assert model.head.fc.scores.dtype == torch.float64
    assert model(images().double()).dtype == torch.float64


def test_meta_device() -> None:
    """Built on ``meta`` (no memory, no draws), by argument or by device context."""
    meta = RobinWideResNet(depth=10, widen_factor=1, in_chans=1, device="meta")
    assert {t.device.type for t in tensors(meta)} == {"meta"}
    with torch.device("meta"):
        in_context = RobinResNet(BasicBlock, (1, 1, 1, 1), width=4, in_chans=1, masked=False)
    assert {t.device.type for t in tensors(in_context)} == {"meta"}
    assert in_context(torch.empty(2, 1, SIZE, SIZE, device="meta")).shape == (2, 10)
    in_context.reset_classifier(3)
    assert in_context.head.fc.weight.device.type == "meta"


def test_meta_device_through_timm() -> None:
    meta = build("robin_wrn28_10_dense", device="meta")
    assert {t.device.type for t in tensors(meta)} == {"meta"}
    assert meta.pretrained_cfg["mean"] == (0.0,) * meta.in_chans


# --- torch.compile ---------------------------------------------------------------------------------


def _compile_check(backend: str) -> None:
    torch._dynamo.reset()
    model = calibrated(timm.create_model("robin_resnet18", in_chans=1, width=4, keep_ratio=0.1))
    x = images()
    with torch.no_grad():
        expected = model(x)
        compiled = torch.compile(model, fullgraph=True, backend=backend)  # raises on any graph break
        out = compiled(x)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_masked_model_compiles_fullgraph() -> None:
    """Mask selection is capturable by dynamo in one graph (AOT autograd, no code generation)."""
    _compile_check("aot_eager")


@pytest.mark.slow
def test_masked_model_compiles_fullgraph_inductor() -> None:
    """The same with inductor's code generation (about a minute on 2 CPU cores)."""
    _compile_check("inductor")


def test_dense_twin_scripts_with_torchscript() -> None:
    """timm's torchscript test: the dense twins script (the debug input check is skipped when scripting)."""
    import warnings

    model = timm.create_model("robin_resnet18_dense", in_chans=1, width=4).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in torch 2.x
        scripted = torch.jit.script(model)
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))
