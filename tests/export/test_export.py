"""Compact export round trips, hostile files, dense export, channel shrinking, timm loading."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from timm.models import build_model_with_cfg, load_checkpoint

import robin_plugin
from robin_plugin.errors import RobinError
from robin_plugin.export import (
    ExportFormatError,
    checkpoint_filter_fn,
    compact_load_pre_hook,
    compact_size_report,
    dense_model,
    dense_state_dict,
    export_compact,
    export_dense,
    load_compact,
    pruned_channels,
)
from robin_plugin.export.compact import compact_tensors
from robin_plugin.export.dense import load_dense
from robin_plugin.export.shrink import shrink_model, shrink_plan
from robin_plugin.io import FileExistsRobinError
from robin_plugin.models.robin_resnet import BasicBlock, RobinResNet


def _prepare(model: torch.nn.Module, seed: int, in_chans: int = 3) -> torch.Tensor:
    """Random scores (non-trivial masks), BN stats moved by train-mode passes; returns a test batch."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, m in robin_plugin.masked_layers(model):
            m.scores.copy_(torch.rand(m.scores.shape, generator=g) * 2 - 1)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(6, in_chans, 32, 32, generator=g))
    model.eval()
    return torch.rand(3, in_chans, 32, 32, generator=g)


def _masks(model):
    return {n: m.mask().clone() for n, m in robin_plugin.masked_layers(model)}


def _assert_same(a, b, x):
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    ma, mb = _masks(a), _masks(b)
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
    sa = {k: v for k, v in a.state_dict().items() if not k.endswith("scores")}
    sb = {k: v for k, v in b.state_dict().items() if not k.endswith("scores")}
    assert sa.keys() == sb.keys()


ARCHS = st.sampled_from([
    ("robin_resnet18", dict(width=4, in_chans=1)),
    ("robin_resnet18", dict(width=8, in_chans=3)),
    ("robin_resnet18", dict(width=4, in_chans=3, last_bn=False, num_classes=7)),
    ("robin_resnet50", dict(width=4)),
    ("robin_wrn28_10", dict(widen_factor=1)),
])


@settings(max_examples=12)
@given(arch=ARCHS, keep_ratio=st.sampled_from([0.003, 0.01, 0.05, 0.2, 0.6, 1.0]),
       p=st.floats(0.0, 1.0), seed=st.integers(0, 10_000))
def test_compact_round_trip_robin_models(tmp_path_factory, arch, keep_ratio, p, seed):
    name, kw = arch
    model = timm.create_model(name, keep_ratio=keep_ratio, p=p, seed=seed, **kw)
    x = _prepare(model, seed, kw.get("in_chans", 3))
    path = tmp_path_factory.mktemp("c") / "m.safetensors"
    export_compact(model, path)
    loaded = load_compact(path)
    _assert_same(model, loaded, x)
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd if not k.endswith("scores"))
    for (n1, m1), (n2, m2) in zip(robin_plugin.masked_layers(model), robin_plugin.masked_layers(loaded)):
        assert torch.equal(m1.weight, m2.weight) and m1.keep_ratio == m2.keep_ratio
    header = json.loads(safetensors.torch.load_file(path)["robin.header"].numpy().tobytes())
    assert header["weights"] == "recipe"  # registered models never need stored weights


def _robinified(seed: int, keep_ratio: float, p: float, init: str = "binary"):
    base = timm.create_model("test_resnet", num_classes=5)
    return robin_plugin.robinify(base, keep_ratio=keep_ratio, p=p, seed=seed, init=init)


@settings(max_examples=6)
@given(keep_ratio=st.sampled_from([0.01, 0.1, 0.5]), p=st.floats(0.0, 1.0), seed=st.integers(0, 100),
       init=st.sampled_from(["binary", "signed_kaiming_constant", "kaiming_normal", "uniform_pm1"]))
def test_compact_round_trip_robinified(tmp_path_factory, keep_ratio, p, seed, init):
    model = _robinified(seed, keep_ratio, p, init)
    x = _prepare(model, seed)
    path = tmp_path_factory.mktemp("r") / "m.safetensors"
    export_compact(model, path)
    with pytest.raises(ExportFormatError, match="skeleton"):
        load_compact(path)
    # the skeleton may even come from another seed: weights are stored (signs, or kept values)
    skeleton = _robinified(seed + 1, 0.5, 1.0, init)
    loaded = load_compact(path, model=skeleton)
    assert loaded is skeleton
    _assert_same(model, loaded, x)


def test_seeded_model_stores_no_weights_and_edited_weights_fall_back(tmp_path):
    model = timm.create_model("robin_resnet18", width=4, keep_ratio=0.05)
    x = _prepare(model, 0)
    tensors, header = compact_tensors(model)
    assert header["weights"] == "recipe" and "robin.signs" not in tensors
    with torch.no_grad():
        robin_plugin.masked_layers(model)[3][1].weight[0].neg_()  # no longer the seed's weights
    tensors, header = compact_tensors(model)
    assert header["weights"] == "stored" and "robin.signs" in tensors
    export_compact(model, tmp_path / "m.safetensors")
    _assert_same(model, load_compact(tmp_path / "m.safetensors"), x)


@pytest.mark.slow
def test_resnet34_at_one_percent_is_near_the_bound(tmp_path):
    model = timm.create_model("robin_resnet34", keep_ratio=0.01, p=0.1)
    x = _prepare(model, 1)
    path = export_compact(model, tmp_path / "r34.safetensors")
    report = compact_size_report(model)
    size = path.stat().st_size
    assert size == report["file_bytes"] and report["weights"] == "recipe"
    assert size <= 1.5 * report["bound_bytes"]
    assert 100_000 < size < 1_000_000 and report["fp32_bytes"] > 80_000_000
    _assert_same(model, load_compact(path), x)


def test_export_never_overwrites(tmp_path):
    model = timm.create_model("robin_resnet18", width=4)
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"precious")
    for call in (lambda: export_compact(model, path), lambda: export_dense(model, path)):
        with pytest.raises(FileExistsRobinError):
            call()
        assert path.read_bytes() == b"precious"
    x = _prepare(model, 4)
    export_compact(model, path, overwrite=True)
    _assert_same(model, load_compact(path), x)  # the file now holds this model
    export_dense(model, path, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary files left


# --- hostile and foreign files ---------------------------------------------------------------


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    model = timm.create_model("robin_resnet18", width=4, keep_ratio=0.1)
    _prepare(model, 3)
    path = tmp_path_factory.mktemp("good") / "m.safetensors"
    export_compact(model, path)
    return path.read_bytes()


def _load_bytes(tmp_path: Path, data: bytes, name: str = "x.safetensors"):
    p = tmp_path / name
    p.write_bytes(data)
    return load_compact(p)


@settings(max_examples=25)
@given(cut=st.floats(0.0, 0.9999))
def test_truncated_files_are_refused(tmp_path_factory, good_file, cut):
    with pytest.raises(ExportFormatError):
        _load_bytes(tmp_path_factory.mktemp("t"), good_file[: int(cut * len(good_file))])


@settings(max_examples=40)
@given(data=st.data())
def test_bit_flips_are_refused(tmp_path_factory, good_file, data):
    pos = data.draw(st.integers(0, len(good_file) - 1))
    bit = data.draw(st.integers(0, 7))
    bad = bytearray(good_file)
    bad[pos] ^= 1 << bit
    with pytest.raises(RobinError):
        _load_bytes(tmp_path_factory.mktemp("f"), bytes(bad))


@settings(max_examples=15)
@given(blob=st.binary(max_size=2000))
def test_random_bytes_are_refused(tmp_path_factory, blob):
    with pytest.raises(ExportFormatError):
        _load_bytes(tmp_path_factory.mktemp("b"), blob)


def test_foreign_files_are_refused(tmp_path):
    model = timm.create_model("robin_resnet18", width=4)
    plain = tmp_path / "plain.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, plain)
    with pytest.raises(ExportFormatError, match="not a robin compact export"):
        load_compact(plain)
    text = tmp_path / "notes.safetensors"
    text.write_text("hello, not a model\n" * 10)
    with pytest.raises(ExportFormatError):
        load_compact(text)
    with pytest.raises(ExportFormatError, match="no compact file"):
        load_compact(tmp_path / "missing.safetensors")
    torch.save(model.state_dict(), tmp_path / "ts.pt")
    with pytest.raises(ExportFormatError, match="pickle"):
        load_compact(tmp_path / "ts.pt")


class _Payload:
    """Unpickling this would create a file: proof of code execution."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickle_payload_never_runs(tmp_path):
    sentinel = tmp_path / "pwned"
    evil = pickle.dumps({"robin.header": _Payload(str(sentinel))})
    for name in ("evil.safetensors", "evil.pt", "evil.pkl"):
        (tmp_path / name).write_bytes(evil)
        with pytest.raises(ExportFormatError):
            load_compact(tmp_path / name)
    # the same payload behind a safetensors-looking length prefix
    (tmp_path / "evil2.safetensors").write_bytes(len(evil).to_bytes(8, "little") + evil)
    with pytest.raises(ExportFormatError):
        load_compact(tmp_path / "evil2.safetensors")
    from robin_plugin.loading import read_state_dict

    with pytest.raises(ExportFormatError):
        read_state_dict(tmp_path / "evil.pt")
    assert not sentinel.exists()
    pickle.loads(evil)["robin.header"].close()  # the payload is real: unpickling does create the file
    assert sentinel.exists()


def test_mismatched_skeleton_is_refused(tmp_path):
    model = timm.create_model("robin_resnet18", width=4)
    export_compact(model, tmp_path / "m.safetensors")
    with pytest.raises(ExportFormatError, match="shape|layers"):
        load_compact(tmp_path / "m.safetensors", model=timm.create_model("robin_resnet18", width=8))


# --- dense export and shrinking --------------------------------------------------------------


@pytest.mark.parametrize("name,kw", [
    ("robin_resnet18", dict(width=8)),
    ("robin_resnet50", dict(width=4, in_chans=1)),
    ("robin_wrn28_10", dict(widen_factor=1, last_bn=False)),
])
@pytest.mark.parametrize("keep_ratio", [0.01, 0.2])
def test_dense_and_shrunk_exports_match(tmp_path, name, kw, keep_ratio):
    model = timm.create_model(name, keep_ratio=keep_ratio, p=0.1, seed=2, **kw)
    x = _prepare(model, 2, kw.get("in_chans", 3))
    with torch.no_grad():
        y = model(x)
        twin = timm.create_model(name + "_dense", **dict(dict(last_bn=True), **kw))  # last_bn as the masked model
        twin.load_state_dict(dense_state_dict(model), strict=True)  # plain timm twin, strict
        assert torch.equal(twin.eval()(x), y)
        dense = dense_model(model)
        small = dense_model(model, shrink=True)
        # removed channels contribute exact zeros: identical in exact arithmetic; in float32
        # only the summation order of the narrower convolutions differs
        assert torch.allclose(small(x), y, rtol=1e-4, atol=1e-5 * y.abs().max().item())
        assert torch.equal(small.double()(x.double()).argmax(1), dense.double()(x.double()).argmax(1))
        ref = dense.double()(x.double())
        assert torch.allclose(small(x.double()), ref, rtol=1e-9, atol=1e-12 * ref.abs().max().item())
    if keep_ratio == 0.01:
        assert sum(pruned_channels(model).values()) > 0
        assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in dense.parameters())
    export_dense(model, tmp_path / "d.safetensors")
    export_dense(model, tmp_path / "s.safetensors", shrink=True)
    with torch.no_grad():
        assert torch.equal(load_dense(tmp_path / "d.safetensors")(x), y)
        assert torch.equal(load_dense(tmp_path / "s.safetensors")(x), small.float()(x))


def test_shrinking_keeps_channels_with_nonzero_constant_output():
    """A dead conv channel whose BatchNorm turns 0 into a positive constant must stay."""
    model = timm.create_model("robin_resnet18", width=8, keep_ratio=1.0, seed=0)
    conv, bn = model.layer1[0].conv1, model.layer1[0].bn1
    with torch.no_grad():
        conv.scores[:2] = 0.0  # the lowest scores go first: channels 0 and 1 are all pruned
        conv.keep_ratio = 1 - 2 * conv.weight[0].numel() / conv.weight.numel()
        bn.running_mean[0] = -0.5  # relu((0 - (-0.5)) / sqrt(var + eps)) > 0: not zero
        bn.running_mean[1] = 0.3  # relu(negative) == 0: exactly zero
    model.eval()
    assert (conv.mask()[:2] == 0).all() and conv.mask()[2:].all()
    dense = dense_model(model)
    plan = shrink_plan(dense)
    internal = next(g for g in plan if g["producers"] == ["layer1.0.conv1"])
    assert 0 in internal["keep"] and 1 not in internal["keep"] and len(internal["keep"]) == 7
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(shrink_model(dense).double()(x.double()), dense.double()(x.double()), rtol=1e-9)


# --- timm loading ----------------------------------------------------------------------------


def test_timm_pretrained_route_loads_compact_and_plain(tmp_path):
    src = timm.create_model("robin_resnet18", width=8, keep_ratio=0.05, seed=11)
    x = _prepare(src, 5)
    path = export_compact(src, tmp_path / "m.safetensors")
    # a different seed: the filter regenerates the weights from the file's recipe
    model = build_model_with_cfg(
        RobinResNet, "robin_resnet18", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
        pretrained_filter_fn=checkpoint_filter_fn, block=BasicBlock, layers=(2, 2, 2, 2), width=8, seed=3,
    )
    _assert_same(src, model.eval(), x)
    # a plain training checkpoint passes through unchanged
    plain = tmp_path / "plain.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in src.state_dict().items()}, plain)
    sd = safetensors.torch.load_file(plain)
    assert checkpoint_filter_fn(sd, model) is sd
    model2 = build_model_with_cfg(
        RobinResNet, "robin_resnet18", pretrained=True, pretrained_cfg_overlay=dict(file=str(plain)),
        pretrained_filter_fn=checkpoint_filter_fn, block=BasicBlock, layers=(2, 2, 2, 2), width=8,
        keep_ratio=0.05, seed=11,
    )
    with torch.no_grad():
        assert torch.equal(model2.eval()(x), src(x))


def test_checkpoint_path_route_with_pre_hook(tmp_path):
    src = timm.create_model("robin_wrn28_10", widen_factor=1, keep_ratio=0.02)
    x = _prepare(src, 6)
    path = export_compact(src, tmp_path / "w.safetensors")
    model = timm.create_model("robin_wrn28_10", widen_factor=1)
    model.register_load_state_dict_pre_hook(compact_load_pre_hook)
    load_checkpoint(model, str(path))  # what timm.create_model(checkpoint_path=...) calls
    _assert_same(src, model.eval(), x)
    fresh = timm.create_model("robin_wrn28_10", widen_factor=1)
    fresh.register_load_state_dict_pre_hook(compact_load_pre_hook)
    fresh.load_state_dict(safetensors.torch.load_file(path))
    _assert_same(src, fresh.eval(), x)
    other = timm.create_model("robin_wrn28_10", widen_factor=1)
    load_checkpoint(other, str(path), filter_fn=checkpoint_filter_fn)  # the explicit-filter form
    _assert_same(src, other.eval(), x)
    with pytest.raises(ExportFormatError, match="do not match"):  # another architecture
        checkpoint_filter_fn(safetensors.torch.load_file(path), timm.create_model("robin_resnet18", width=4))


def test_shrinking_reads_the_models_channel_graph():
    """A block that declares no channel flow is refused, not guessed; robinified models too."""
    dense = dense_model(timm.create_model("robin_resnet18", width=4, keep_ratio=0.1))

    class Opaque(torch.nn.Module):
        def forward(self, x):
            return x

    dense.layer2[1] = Opaque()
    with pytest.raises(robin_plugin.export.ExportError, match="Opaque declares no channel flow"):
        shrink_plan(dense)
    plain = dense_model(robin_plugin.robinify(timm.create_model("resnet18", num_classes=10), keep_ratio=0.1))
    with pytest.raises(robin_plugin.export.ExportError, match="dense twins of robin models"):
        shrink_plan(plain)


def test_compact_decoding_without_regenerate_refuses_a_foreign_seed(tmp_path):
    """The format layer never builds a model: another seed needs the models' regenerate function."""
    from robin_plugin.formats.compact import decode_compact, read_compact_file
    from robin_plugin.models.timm_loading import compact_state_dict

    src = timm.create_model("robin_resnet18", width=4, keep_ratio=0.1, seed=1)
    tensors = read_compact_file(export_compact(src, tmp_path / "m.safetensors"))
    other = timm.create_model("robin_resnet18", width=4, keep_ratio=0.1, seed=2)
    assert decode_compact(tensors, timm.create_model("robin_resnet18", width=4, keep_ratio=0.1, seed=1))
    with pytest.raises(ExportFormatError, match="no regenerate function"):
        decode_compact(tensors, other)
    other.load_state_dict(compact_state_dict(tensors, other))
    assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(), load_compact(tmp_path / "m.safetensors").state_dict().values()))
