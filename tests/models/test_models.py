"""Registry-driven tests of the robin timm models (``robin_plugin.models``).

Every model that ``timm.list_models('robin_*')`` returns is tested, so a newly registered model
is covered the day it is registered. Models are built narrow (``width=8`` / ``widen_factor=1``)
for speed; the full-size parameter counts are checked once.
"""
from __future__ import annotations

import ast
import dataclasses
import warnings
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

import robin_plugin
from robin_plugin import ConfigError, InputError, UnknownNameError, adaptive_keep_ratios, masked_layers
from robin_plugin.layers.selection import topk_mask

from robin_plugin.models.args import MASKED_ARGS, ModelArgs
from robin_plugin.models.inputs import check_images
from robin_plugin.models.robustbench_names import robustbench_names
from robin_plugin.models.spec import ModelSpec, build_model, model_spec

# the architectures (and their dense twins); the RobustBench-named aliases of the same
# architectures have their own tests in test_robustbench_names.py
MODEL_NAMES = [n for n in timm.list_models("robin_*") if n not in set(robustbench_names())]
MASKED_NAMES = [n for n in MODEL_NAMES if not n.endswith("_dense")]
DENSE_NAMES = [n for n in MODEL_NAMES if n.endswith("_dense")]
INPUTS = [pytest.param(3, 32, id="3x32x32"), pytest.param(1, 28, id="1x28x28")]


def small_kwargs(name: str) -> dict:
    """Narrow-width constructor arguments for a fast build of ``name``."""
    if "wrn" in name:
        return dict(widen_factor=1)
    return dict(width=8)


def build(name: str, **kwargs) -> nn.Module:
    """A small model with 10 classes; masked ones keep 10% so that a tiny net still has signal in every layer."""
    kwargs.setdefault("num_classes", 10)  # the ImageNet-stem models default to ImageNet-100's 100
    if not name.endswith("_dense"):
        kwargs.setdefault("keep_ratio", 0.1)
    return timm.create_model(name, **{**small_kwargs(name), **kwargs})


def images(n: int, c: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    return timm.create_model("robin_resnet18", in_chans=1, width=4, num_classes=10, keep_ratio=0.1)


# --- registry --------------------------------------------------------------------------------
def test_registry_has_every_family_and_its_dense_twin() -> None:
    expected = {"robin_resnet18", "robin_resnet34", "robin_resnet50", "robin_wrn28_10", "robin_wrn34"}
    assert expected <= set(MASKED_NAMES)
    assert {f"{n}_dense" for n in MASKED_NAMES} == set(DENSE_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_masked_flag_matches_name(name: str) -> None:
    model = build(name)
    assert model.masked is (not name.endswith("_dense"))
    assert bool(masked_layers(model)) is model.masked


# --- forward and backward --------------------------------------------------------------------
@pytest.mark.parametrize("in_chans, size", INPUTS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_backward(name: str, in_chans: int, size: int) -> None:
    model = build(name, in_chans=in_chans)
    x = images(4, in_chans, size)
    y = torch.arange(4) % 10
    out = model(x)
    assert out.shape == (4, 10)
    assert torch.isfinite(out).all()
    F.cross_entropy(out, y).backward()
    params = list(model.parameters())
    assert params and all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)


@pytest.mark.parametrize("name", MASKED_NAMES)
def test_optimizer_step_trains_only_scores(name: str) -> None:
    model = build(name, in_chans=1)
    weights = {n: m.weight.clone() for n, m in masked_layers(model)}
    scores = {n: m.scores.detach().clone() for n, m in masked_layers(model)}

    # only scores are parameters; BatchNorm has none (non-affine)
    assert all(n.endswith(".scores") for n, _ in model.named_parameters())
    assert sum(p.numel() for p in model.parameters()) == sum(w.numel() for w in weights.values())
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(not m.affine and m.weight is None and m.bias is None for m in norms)
    assert isinstance(model.head.last_bn, nn.BatchNorm1d)  # last BN on the logits by default

    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    # 32x32 keeps a 4x4 map in the last stage: on 2x2 maps a corner tap sees one pixel per image,
    # which ReLU can zero in a small batch, legitimately giving a kept weight no gradient
    # ImageNet stems reduce 32x: 64 px leaves layer4 at 2x2, where every 3x3 tap sees a pixel
    x, y = images(8, 1, 64 if "_imagenet" in name else 32), torch.arange(8) % 10
    F.cross_entropy(model(x), y).backward()
    # A kept weight whose output channel no kept classifier weight reads does not matter and
    # rightly gets no gradient (at 10% kept a few such channels exist); all others must get one.
    kept_with_grad = kept_total = 0
    for name_, m in masked_layers(model):
        kept = m.mask().bool()
        nonzero = int((m.scores.grad[kept] != 0).sum())
        assert nonzero >= 0.9 * int(kept.sum()), f"{name_}: kept weights without gradient"
        kept_with_grad, kept_total = kept_with_grad + nonzero, kept_total + int(kept.sum())
        # straight through: pruned scores see the gradient too, so they can come back
        if not kept.all():
            assert (m.scores.grad[~kept] != 0).float().mean() > 0.5, name_
    assert kept_with_grad >= 0.99 * kept_total
    opt.step()
    for name_, m in masked_layers(model):
        assert torch.equal(m.weight, weights[name_]), f"{name_}: fixed weights moved"
        assert set(m.weight.unique().tolist()) == {-1.0, 1.0}
        assert not torch.equal(m.scores, scores[name_])
        # the cached mask follows the updated scores
        assert torch.equal(m.mask(), topk_mask(m.scores.detach().abs(), m.kept))


@pytest.mark.parametrize("name", DENSE_NAMES)
def test_dense_twin_trains_weights_and_affine_batchnorm(name: str) -> None:
    model = build(name)
    masked = build(name.removesuffix("_dense"))
    names = {n for n, _ in model.named_parameters()}
    assert "conv1.weight" in names and "head.fc.weight" in names and "head.fc.bias" in names
    assert not any(n.endswith("scores") for n in names)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert all(m.affine for m in norms)
    assert isinstance(model.head.last_bn, nn.Identity)  # no last BN on the dense baseline
    # same architecture: the dense conv / linear weights are exactly the masked model's weights
    dense_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert dense_weights == sum(m.weight.numel() for _, m in masked_layers(masked))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("robin_resnet18", 11_164_352),
        ("robin_resnet34", 21_265_088),
        ("robin_resnet50", 23_467_712),
        ("robin_wrn28_10", 36_461_232),
        ("robin_wrn34", 46_138_032),
    ],
)
def test_full_size_weight_counts(name: str, expected: int) -> None:
    model = timm.create_model(name)
    layers = masked_layers(model)
    total = sum(m.weight.numel() for _, m in layers)
    assert total == expected
    kept = sum(m.kept for _, m in layers)
    assert abs(kept - 0.01 * total) <= len(layers)  # default keep_ratio 0.01
    assert sum(p.numel() for p in model.parameters()) == total  # one score per weight, nothing else


def test_last_bn_option(tiny: nn.Module) -> None:
    assert isinstance(tiny.head.last_bn, nn.BatchNorm1d) and not tiny.head.last_bn.affine
    no_bn = timm.create_model("robin_resnet18", in_chans=1, width=4, keep_ratio=0.1, last_bn=False)
    assert isinstance(no_bn.head.last_bn, nn.Identity)
    assert no_bn(images(2, 1, 16)).shape == (2, 10)


@pytest.mark.parametrize("size", [16, 28, 64])
def test_other_input_sizes(tiny: nn.Module, size: int) -> None:
    assert tiny(images(2, 1, size)).shape == (2, 10)


# --- seeds -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["robin_resnet18", "robin_wrn34", "robin_resnet18_dense"])
def test_same_seed_same_model_different_seed_different_weights(name: str) -> None:
    a, b = build(name, seed=3), build(name, seed=3)
    c = build(name, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys() == sc.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["conv1.weight"], sc["conv1.weight"])
    if a.masked:
        assert not torch.equal(sa["conv1.scores"], sc["conv1.scores"])


def test_seed_does_not_depend_on_global_rng() -> None:
    torch.manual_seed(1)
    a = build("robin_resnet18")
    torch.manual_seed(2)
    b = build("robin_resnet18")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# --- input checks ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "x, match",
    [
        (torch.full((2, 1, 16, 16), 1.5), r"\[0, 1\].*1\.5"),
        (torch.full((2, 1, 16, 16), -0.5), r"\[0, 1\].*-0\.5"),
        (torch.full((2, 1, 16, 16), float("nan")), "NaN"),
        (torch.full((2, 1, 16, 16), float("inf")), "Inf"),
        (torch.rand(2, 3, 16, 16), r"expected 1 input channel\(s\), got 3.*in_chans=3"),
        (torch.rand(1, 16, 16), r"shape \(N, 1, H, W\), got shape \(1, 16, 16\)"),
        (torch.rand(2, 1, 16, 16, 1), "got shape"),
        (torch.ones(2, 1, 16, 16, dtype=torch.uint8), "floating-point.*uint8"),
        (torch.ones(2, 1, 16, 16, dtype=torch.int64), "floating-point.*int64"),
    ],
)
def test_bad_inputs_raise_input_error_in_strict_mode(x: torch.Tensor, match: str) -> None:
    strict = timm.create_model("robin_resnet18", in_chans=1, width=4, num_classes=10, keep_ratio=0.1, check_inputs=True)
    with pytest.raises(InputError, match=match):
        strict(x)
    with pytest.raises(InputError, match=match):  # the same check the boundaries (evaluate, CLI) call
        check_images(x, 1)


def test_input_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        check_images(torch.full((1, 1, 8, 8), 2.0), 1)


def test_forward_does_no_data_dependent_check_by_default(tiny: nn.Module) -> None:
    """timm's own tests feed torch.randn; a forward pass must not sync the host to check ranges."""
    assert tiny.normalize.check_inputs is False
    assert tiny(torch.randn(2, 1, 16, 16)).shape == (2, 10)
    assert tiny(torch.full((2, 1, 16, 16), 3.0)).shape == (2, 10)


def test_boundary_values_are_valid_images() -> None:
    x = torch.zeros(2, 1, 16, 16)
    x[1] = 1.0
    check_images(x, 1)
    strict = timm.create_model("robin_resnet18", in_chans=1, width=4, keep_ratio=0.1, check_inputs=True)
    assert strict(x).shape == (2, 10)


# --- the model arguments, defined once -------------------------------------------------------
# one value per ModelArgs field, none of them the default
ARG_VALUES = dict(num_classes=7, in_chans=1, seed=3, keep_ratio=0.2, p=0.3, init="signed_kaiming_constant",
                  score_init_scale=0.02, score_scale_by_fan_in=True, last_bn=False, mean=(0.4,), std=(0.3,),
                  check_inputs=True, drop_rate=0.1, drop_path_rate=0.1, global_pool="")


@pytest.mark.parametrize("name", timm.list_models("robin_*"))
def test_every_model_argument_reaches_every_registered_model_and_the_spec(name: str) -> None:
    """Each :class:`ModelArgs` field is taken by every robin model (the masked-only ones by the
    masked models) and by the model spec, and the spec of the built model rebuilds it."""
    assert set(ARG_VALUES) == {f.name for f in dataclasses.fields(ModelArgs)}
    kwargs = {k: v for k, v in ARG_VALUES.items() if not (name.endswith("_dense") and k in MASKED_ARGS)}
    model = timm.create_model(name, **small_kwargs(name), **kwargs)
    assert {k: getattr(model.args, k) for k in kwargs} == kwargs
    spec = ModelSpec.parse(name, {**small_kwargs(name), **kwargs})
    assert build_model(spec).args == model.args
    assert model_spec(model).name == name and model_spec(build_model(model_spec(model))) == model_spec(model)


#: Modules that may spell out several masked-model arguments together, with the reason.
MASKED_ARG_LISTS = {
    "models/args.py": "their one definition",
    "models/factory.py": "maps them onto the masked layers' keyword arguments",
    "layers/masked.py": "the masked layers' own parameters, below the models",
    "training/paper.py": "the official code's value of each, with its source",
}


def test_no_other_module_lists_the_masked_model_arguments() -> None:
    """A tuple, dict, call or signature naming three or more masked-model arguments outside
    :data:`MASKED_ARG_LISTS` is a second list of them: derive it from ``ModelArgs`` instead."""
    root = Path(robin_plugin.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                names = {k.arg for k in node.keywords}
            elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                names = {e.value for e in node.elts if isinstance(e, ast.Constant)}
            elif isinstance(node, ast.Dict):
                names = {e.value for e in node.keys if isinstance(e, ast.Constant)}
            elif isinstance(node, ast.FunctionDef):
                names = {a.arg for a in node.args.args + node.args.kwonlyargs}
            else:
                continue
            rel = path.relative_to(root).as_posix()
            if len(names & set(MASKED_ARGS)) >= 3 and rel not in MASKED_ARG_LISTS:
                found.append(f"{rel}:{node.lineno}")
    assert not found, f"masked-model arguments listed outside models/args.py: {found}"


# --- configuration errors --------------------------------------------------------------------
@pytest.mark.parametrize("keep_ratio", [0.0, -0.01, 1.5, float("nan")])
def test_bad_keep_ratio(keep_ratio: float) -> None:
    with pytest.raises(ConfigError, match=r"keep_ratio.*\(0, 1\]"):
        build("robin_resnet18", keep_ratio=keep_ratio)


@pytest.mark.parametrize("p", [-0.1, 1.1, float("nan")])
def test_bad_p(p: float) -> None:
    with pytest.raises(ConfigError, match=r"p must be in \[0, 1\]"):
        build("robin_wrn34", p=p)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_bad_score_scale(scale: float) -> None:
    with pytest.raises(ConfigError, match="score_init_scale.*> 0"):
        build("robin_resnet18", score_init_scale=scale)


def test_unknown_init_suggests_the_closest() -> None:
    with pytest.raises(UnknownNameError, match="'binar'.*did you mean 'binary'"):
        build("robin_resnet18", init="binar")


@pytest.mark.parametrize("name", DENSE_NAMES)
@pytest.mark.parametrize("kwarg", [dict(keep_ratio=0.1), dict(p=0.5), dict(init="binary")])
def test_dense_twin_refuses_masked_settings(name: str, kwarg: dict) -> None:
    with pytest.raises(ConfigError, match="only apply to masked robin models"):
        timm.create_model(name, **small_kwargs(name), **kwarg)


@pytest.mark.parametrize(
    "kwargs", [dict(width=0), dict(in_chans=0), dict(num_classes=-1), dict(seed=-1), dict(seed=1.5)]
)
def test_bad_architecture_settings(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        timm.create_model("robin_resnet18", **{**dict(width=4, keep_ratio=0.1), **kwargs})


@pytest.mark.parametrize("depth", [30, 4])
def test_bad_wrn_depth(depth: int) -> None:
    with pytest.raises(ConfigError, match="6n \\+ 4"):
        timm.create_model("robin_wrn34", depth=depth, widen_factor=1)


# --- timm model API --------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_timm_model_api(name: str) -> None:
    model = build(name, in_chans=1).eval()
    x = images(2, 1, 16)
    feats = model.forward_features(x)
    assert feats.dim() == 4 and feats.shape[:2] == (2, model.num_features)  # unpooled
    pooled = model.forward_head(feats, pre_logits=True)
    assert pooled.shape == (2, model.num_features)
    assert torch.allclose(model.forward_head(feats), model(x), atol=1e-5)
    assert model.get_classifier() is model.head.fc
    assert model.get_classifier(name_only=True) == "head.fc"
    fc = model.get_classifier()
    assert (fc.in_features, fc.out_features) == (model.num_features, 10) and model.num_classes == 10


@pytest.mark.parametrize("name", ["robin_resnet18", "robin_wrn34", "robin_resnet50_dense"])
def test_reset_classifier(name: str) -> None:
    model = build(name, in_chans=1)
    if model.masked:  # as ProgressivePruning would: the current ratios are no longer the construction-time ones
        robin_plugin.set_keep_ratio(model, 0.3, 0.5)
        before = [m.keep_ratio for _, m in masked_layers(model)]
    model.reset_classifier(num_classes=5)
    assert model.num_classes == 5
    out = model(images(3, 1, 16))
    assert out.shape == (3, 5)
    F.cross_entropy(out, torch.tensor([0, 1, 4])).backward()
    if model.masked:
        layers = masked_layers(model)
        assert layers[-1][0] == "head.fc" and layers[-1][1].weight.shape == (5, model.num_features)
        # nothing changes behind the user's back: every layer keeps its ratio, the new classifier the old one's
        assert [m.keep_ratio for _, m in layers] == before
        assert all(n.endswith(".scores") for n, _ in model.named_parameters())
    model.reset_classifier(0)
    assert model(images(2, 1, 16)).shape == (2, model.num_features)  # pooled features
    if model.masked:  # from no classifier back to one: the adaptive ratio of its size, the body untouched
        model.reset_classifier(7)
        layers = masked_layers(model)
        assert [m.keep_ratio for _, m in layers[:-1]] == before[:-1]
        expected = adaptive_keep_ratios([m.weight.numel() for _, m in layers], 0.1, 0.1)[-1]
        assert layers[-1][1].keep_ratio == expected


def test_reset_classifier_keeps_train_mode_and_rejects_other_pools() -> None:
    model = timm.create_model("robin_resnet18", in_chans=1, width=4, keep_ratio=0.1).eval()
    model.reset_classifier(7)
    assert not model.head.training
    with pytest.raises(ConfigError, match="global_pool='avg'"):
        model.reset_classifier(7, global_pool="max")


def expected_cfg(name: str) -> tuple[int, tuple[int, int, int]]:
    """(num_classes, input_size) a model's default cfg declares: ImageNet-100 at 224 px or CIFAR-10 at 32 px."""
    return (100, (3, 224, 224)) if "_imagenet" in name else (10, (3, 32, 32))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_default_cfg(name: str) -> None:
    model = build(name, num_classes=expected_cfg(name)[0])
    cfg = model.pretrained_cfg
    assert (cfg["num_classes"], tuple(cfg["input_size"])) == expected_cfg(name)
    assert len(cfg["mean"]) == len(cfg["std"]) == 3
    state = model.state_dict()
    assert f"{cfg['first_conv']}.weight" in state
    assert f"{cfg['classifier']}.weight" in state
    assert model.num_classes == expected_cfg(name)[0]


def test_pretrained_cfg_also_reachable_without_building() -> None:
    for name in MODEL_NAMES:
        cfg = timm.models.get_pretrained_cfg(name)
        assert cfg is not None and (cfg.num_classes, tuple(cfg.input_size)) == expected_cfg(name)


# --- behaviour -------------------------------------------------------------------------------
def test_eval_forward_is_deterministic_and_score_sign_free(tiny: nn.Module) -> None:
    tiny.eval()
    x = images(3, 1, 16)
    out = tiny(x)
    assert torch.equal(tiny(x), out)
    flipped = timm.create_model("robin_resnet18", in_chans=1, width=4, keep_ratio=0.1)
    flipped.load_state_dict({k: (-v if k.endswith("scores") else v) for k, v in tiny.state_dict().items()})
    assert torch.equal(flipped.eval()(x), out)
    tiny.train()


def test_package_import_registers_models() -> None:
    assert robin_plugin.__version__
    assert "robin_resnet18" in timm.list_models("robin_*")


# --- the design card's name -----------------------------------------------------------------
def test_robin_wrn34_is_a_registered_wideresnet_34_10_built_without_a_warning() -> None:
    """``timm.create_model('robin_wrn34')`` (the design card's line) is a listed model, not a timm deprecation."""
    from robin_plugin.models.spec import ModelSpec

    assert {"robin_wrn34", "robin_wrn34_dense"} <= set(timm.list_models("robin_*"))
    assert not any(k.startswith("robin_") or v.startswith("robin_") for k, v in timm.models.get_deprecated_models().items())
    assert not timm.is_model("robin_wrn34_10")  # one name for WideResNet-34-10
    for name in ("robin_wrn34", "robin_wrn34_dense", "robin_wrn34_cifar100_l2"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            m = timm.create_model(name, depth=10, widen_factor=1)
        assert m.pretrained_cfg["architecture"] == name
        assert ModelSpec.parse(name, {}).name == name


# --- channel graphs --------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_channel_graph_declares_every_conv_and_norm_with_consistent_groups(name: str) -> None:
    """The declaration must match the model: every convolution produces exactly one group, every
    BatchNorm2d acts on one, and every producer, norm and reader of a group has its width."""
    model = build(name)
    graph = model.channel_graph()
    groups = graph.groups()
    convs = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    norms = {n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    produced = [p for g in groups for p in g.producers]
    assert sorted(produced) == sorted(convs)  # each convolution once
    assert sorted(n for g in groups for n in g.norms) == sorted(norms)
    readers = {c for g in groups for c, _ in g.consumers}
    assert readers == (convs - {"conv1"}) | {"head.fc"}  # all but the stem read a group
    for g in groups:
        width = model.get_submodule(g.producers[0]).out_channels
        assert all(model.get_submodule(p).out_channels == width for p in g.producers)
        assert all(model.get_submodule(n).num_features == width for n in g.norms)
        for c, value in g.consumers:
            layer = model.get_submodule(c)
            assert (layer.in_channels if isinstance(layer, nn.Conv2d) else layer.in_features) == width
            assert graph.nodes[value].op in ("relu", "pool", "add")  # what the layer really reads


def test_channel_graph_ties_identity_shortcuts_and_separates_projections() -> None:
    model = build("robin_resnet18")
    by_producer = {p: g for g in model.channel_graph().groups() for p in g.producers}
    # stage 1 has identity shortcuts: the stem and both blocks' last convolutions share channels
    assert by_producer["conv1"].producers == ("conv1", "layer1.0.conv2", "layer1.1.conv2")
    # stage 2 starts with a projection: a new group, the shortcut's convolution first
    assert by_producer["layer2.0.conv2"].producers == ("layer2.0.downsample.0", "layer2.0.conv2", "layer2.1.conv2")
    assert by_producer["layer1.0.conv1"].consumers[0][0] == "layer1.0.conv2"  # a block's inner channels


def test_channel_graph_rejects_foreign_modules_and_unknown_values() -> None:
    from robin_plugin.models.channels import ChannelGraph

    g = ChannelGraph(build("robin_resnet18"))
    with pytest.raises(ValueError, match="not a module of the model"):
        g.conv(nn.Conv2d(1, 1, 1), g.input())
    with pytest.raises(ValueError, match="no earlier node"):
        g.relu(5)
