"""Hypothesis fuzzing of every parser that reads user input: malformed input gives our errors only.

Covered here: the config / preset parser (``parse_override``, ``apply_overrides``,
``TrainConfig.from_dict``, ``load_config_file``), the training checkpoint loader and the
result-JSON reader of ``robin leaderboard`` (``robin_plugin.eval.load_result``). Fuzzed
elsewhere: the compact-file loader (``tests/export/test_export.py``: truncations, bit flips, random
bytes) and the dataset readers (``tests/data/test_data.py``: IDX bytes and mutations, gzip
garbage, CIFAR pickle mutations).

Every test asserts that an input is either accepted (and then round-trips / validates) or
refused with a :class:`robin_plugin.errors.RobinError` subclass; anything else (TypeError,
AttributeError, OverflowError, RecursionError ... from deep inside) fails the test.
"""
from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path

import pytest
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robin_plugin.errors import ConfigError, InputError, RobinError, UnknownNameError
from robin_plugin.training import CheckpointError, TrainConfig, apply_overrides, load_checkpoint, save_checkpoint
from robin_plugin.formats.checkpoint import CHECKPOINT_FORMAT
from robin_plugin.training.config import PRESETS, get_preset, load_config_file, parse_override

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])
KEYS = [f.name for f in fields(TrainConfig)]

# JSON/YAML-like values of every type, including the awkward ones
scalars = (st.none() | st.booleans() | st.integers() | st.integers(-10**400, 10**400)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8)
           | st.sampled_from(["1e-3", "nan", "inf", "-inf", "1e999", "0x10", "cosine", "pgd", "", "null"]))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5) | st.integers(), c, max_size=3),
                      max_leaves=6)
keys = st.sampled_from(KEYS) | st.text(max_size=12) | st.integers() | st.none() | st.booleans() | st.floats()


def _ours(fn, *args):
    """Call ``fn``; a RobinError is a valid answer, anything else propagates and fails the test."""
    try:
        return fn(*args)
    except RobinError as e:
        assert str(e), "errors must say what is wrong"
        return e


# --- config parser ---------------------------------------------------------------------------
@FUZZ
@given(text=st.text(max_size=40) | st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), st.text(max_size=30)))
def test_parse_override_accepts_or_refuses_with_config_error(text):
    out = _ours(parse_override, text)
    if not isinstance(out, RobinError):
        key, _value = out
        assert isinstance(key, str) and "=" not in key


@pytest.mark.parametrize("text", ["lr=!!float ;", "lr=!!float", "lr=!!int 0x", "lr=!!binary ?", "x=!!timestamp 2001-13-99"])
def test_parse_override_bad_explicit_tags(text):
    """Found by the fuzzer: PyYAML's constructors raise ValueError / IndexError on these."""
    with pytest.raises(ConfigError, match="cannot parse the value"):
        parse_override(text)


@pytest.mark.parametrize("nest", [50, 3000])
@pytest.mark.parametrize("bracket", ["[", "{a: ", "- "])
def test_parse_override_survives_deep_nesting(nest, bracket):
    out = _ours(parse_override, "model_kwargs=" + bracket * nest)
    assert isinstance(out, (tuple, ConfigError))


@FUZZ
@given(overrides=st.dictionaries(keys, values, max_size=4), preset=st.sampled_from(sorted(PRESETS)))
def test_apply_overrides_random_types_give_our_errors(overrides, preset):
    out = _ours(apply_overrides, get_preset(preset), overrides)
    if isinstance(out, TrainConfig):
        assert TrainConfig.from_dict(out.to_dict()) == out  # an accepted config round-trips
    elif any(not isinstance(k, str) or k not in KEYS for k in overrides):
        assert isinstance(out, (UnknownNameError, ConfigError))


@FUZZ
@given(key=st.sampled_from(KEYS), value=values)
def test_each_key_with_any_value(key, value):
    out = _ours(apply_overrides, {}, {key: value})
    assert isinstance(out, (TrainConfig, ConfigError, UnknownNameError))


@FUZZ
@given(d=st.dictionaries(keys, values, max_size=4) | values)
def test_train_config_from_dict_random_input(d):
    out = _ours(TrainConfig.from_dict, d)
    assert isinstance(out, (TrainConfig, ConfigError, UnknownNameError))


yaml_docs = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), values, max_size=5).map(json.dumps),
    st.dictionaries(st.sampled_from(KEYS), values, max_size=5).map(
        lambda d: "\n".join(f"{k}: {json.dumps(v)}" for k, v in d.items())),
    st.sampled_from(["!!python/object/apply:os.system ['touch /tmp/robin_fuzz_pwned']", "&a [*a]", "a: &x 1\nb: *y",
                     "- 1\n- 2", "key: [1, 2", "\t", "%YAML 9.9\n---\na: 1", "epochs: 3\nepochs: 4",
                     "? [1, 2]\n: x", "{1: 2}", "!!binary AAAA", "!!timestamp 2001-12-14", "x: !!float abc",
                     "0: !!float ;", "0: !!float", "x: !!int 0x", "!!timestamp 2001-13-99"]),
)


@FUZZ
@given(doc=yaml_docs, raw=st.binary(max_size=64), use_raw=st.booleans(), suffix=st.sampled_from([".yaml", ".json", ".txt"]))
def test_load_config_file_then_apply(tmp_path_factory, doc, raw, use_raw, suffix):
    path = tmp_path_factory.mktemp("cfg") / f"c{suffix}"
    path.write_bytes(raw if use_raw else doc.encode())
    data = _ours(load_config_file, path)
    if isinstance(data, RobinError):
        assert isinstance(data, ConfigError) and str(path) in str(data)
        return
    assert isinstance(data, dict)
    _ours(apply_overrides, get_preset("fmnist-fast"), data)
    assert not Path("/tmp/robin_fuzz_pwned").exists()  # safe loader: no python/object tags


def test_load_config_file_refuses_folders_and_missing_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config_file(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config_file(tmp_path)


# --- training checkpoint loader --------------------------------------------------------------
@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> bytes:
    lin = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9)
    lin(torch.ones(1, 3)).sum().backward()
    opt.step()
    path = tmp_path_factory.mktemp("ck") / "c.safetensors"
    save_checkpoint(path, lin.state_dict(), {"epoch": 1, "optimizer": opt.state_dict(), "best": {"a": 1.0}})
    return path.read_bytes()


def _load(tmp_path_factory, data: bytes):
    path = tmp_path_factory.mktemp("c") / "checkpoint.safetensors"
    path.write_bytes(data)
    return load_checkpoint(path)


@FUZZ
@given(blob=st.binary(max_size=600))
def test_checkpoint_random_bytes(tmp_path_factory, blob):
    with pytest.raises(CheckpointError):
        _load(tmp_path_factory, blob)


@FUZZ
@given(cut=st.floats(0.0, 0.9999))
def test_checkpoint_truncated(tmp_path_factory, good_checkpoint, cut):
    with pytest.raises(CheckpointError):
        _load(tmp_path_factory, good_checkpoint[: int(cut * len(good_checkpoint))])


@FUZZ
@given(data=st.data())
def test_checkpoint_bit_flips(tmp_path_factory, good_checkpoint, data):
    """A flipped bit is refused, or lands in tensor data / JSON whitespace and loads as plain values."""
    bad = bytearray(good_checkpoint)
    for _ in range(data.draw(st.integers(1, 3))):
        bad[data.draw(st.integers(0, len(bad) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    out = _ours(_load, tmp_path_factory, bytes(bad))
    assert isinstance(out, (tuple, CheckpointError))


json_meta = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["__tensor__", "__dict__", "__tuple__", "x"]), c, max_size=2),
    max_leaves=8,
)


@FUZZ
@given(meta=json_meta | st.text(max_size=30).map(lambda s: {"raw": s}), fmt=st.sampled_from([CHECKPOINT_FORMAT, "other", None]),
       tensors=st.dictionaries(st.sampled_from(["model/w", "state.0", "x"]), st.integers(0, 3), max_size=3))
def test_checkpoint_with_foreign_metadata(tmp_path_factory, meta, fmt, tensors):
    """A valid safetensors file whose metadata is someone else's (or hand-edited)."""
    metadata = {}
    if fmt is not None:
        metadata["format"] = fmt
    if isinstance(meta, dict) and set(meta) == {"raw"}:
        metadata["robin_checkpoint"] = meta["raw"]  # possibly not JSON at all
    else:
        metadata["robin_checkpoint"] = json.dumps(meta)
    path = tmp_path_factory.mktemp("m") / "checkpoint.safetensors"
    safetensors.torch.save_file({k: torch.zeros(n) for k, n in tensors.items()}, path, metadata=metadata)
    out = _ours(load_checkpoint, path)
    if fmt != CHECKPOINT_FORMAT:
        assert isinstance(out, CheckpointError) and "not a robin_plugin training checkpoint" in str(out)
    else:
        assert isinstance(out, (tuple, CheckpointError))


# --- result JSON reader (robin leaderboard) --------------------------------------------------
GOOD_RESULT = {"name": "robin", "architecture": "ResNet-34", "eps": "8/255", "clean_acc": "77.30",
               "autoattack_acc": "45.06", "storage_bytes": {"sign_mask_bytes": 266000}}


result_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**400, 10**400) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8) | st.sampled_from(["8/255", "1/0", "0/0", "nan", "45.06", "-1", "100.0001", "1e999"]),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=6)


@FUZZ
@given(info=st.dictionaries(st.sampled_from(sorted(GOOD_RESULT)) | st.text(max_size=5), result_values, max_size=6)
       .map(lambda d: {**GOOD_RESULT, **d}) | result_values,
       drop=st.sets(st.sampled_from(sorted(GOOD_RESULT)), max_size=2))
def test_load_result_random_json(tmp_path_factory, info, drop):
    from robin_plugin.eval import load_result

    if isinstance(info, dict):
        info = {k: v for k, v in info.items() if k not in drop}
    path = tmp_path_factory.mktemp("r") / "RESULT.json"
    try:
        path.write_text(json.dumps(info))
    except ValueError:  # not JSON-able (cannot happen for these strategies; kept for clarity)
        return
    out = _ours(load_result, path)
    if isinstance(out, RobinError):
        assert isinstance(out, InputError)
    else:
        assert 0 <= float(out["clean_acc"]) <= 100 and 0 <= float(out["autoattack_acc"]) <= 100


@FUZZ
@given(blob=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_load_result_random_bytes(tmp_path_factory, blob):
    from robin_plugin.eval import load_result

    path = tmp_path_factory.mktemp("r") / "RESULT.json"
    path.write_bytes(blob)
    out = _ours(load_result, path)
    assert isinstance(out, (dict, InputError))


@pytest.mark.parametrize("text,exc", [
    ("[" * 100000 + "]" * 100000, RecursionError),                                   # json.loads
    (json.dumps({**GOOD_RESULT, "eps": 10**400}), OverflowError),                    # parse_eps: float(int)
    (json.dumps({**GOOD_RESULT, "clean_acc": 10**400}), OverflowError),              # _percent_field
])
def test_load_result_known_crashes(tmp_path, text, exc):
    """Found by the fuzzer: load_result let these escape as ``exc``; now they are InputError."""
    from robin_plugin.eval import load_result

    path = tmp_path / "RESULT.json"
    path.write_text(text)
    with pytest.raises(InputError):
        load_result(path)


@pytest.mark.parametrize("key,value,match", [
    ("lr", 10**400, "lr must be a finite number"),            # OverflowError before the fix
    ("lr", "1e999", "lr must be a finite number"),
    ("seed", -1, "seed must be an integer >= 0"),
    ("lr_milestones", [0.5, 10**400], "lr_milestones must be fractions"),
    (0, 1, "config keys must be strings"),                   # TypeError inside difflib before the fix
    (None, 1, "config keys must be strings"),
])
def test_inputs_the_fuzzer_found(key, value, match):
    with pytest.raises((ConfigError, UnknownNameError), match=match):
        apply_overrides({}, {key: value})


def test_found_config_file_and_checkpoint_inputs(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_bytes(b"\x80epochs: 3")  # UnicodeDecodeError before the fix
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config_file(bad)
    with pytest.raises(ConfigError, match="must be a mapping"):
        TrainConfig.from_dict(None)
    path = tmp_path / "checkpoint.safetensors"
    for meta in ({"__dict__": None}, {"__dict__": [[{"a": 1}, 2]]}, {"__dict__": [[1]]}, {"__tensor__": []}, [1, 2], "[" * 100000):
        text = meta if isinstance(meta, str) else json.dumps(meta)
        safetensors.torch.save_file({}, path, metadata={"format": CHECKPOINT_FORMAT, "robin_checkpoint": text})
        with pytest.raises(CheckpointError, match="corrupt checkpoint metadata"):
            load_checkpoint(path)
