"""Every registered backend, built-in or plug-in, passes the same checks on its declaration.

Parametrized over the built-ins and the example plug-in's entry points (read from its
dist-info, so the list is known at collection time). Declarations are checked for all;
fingerprints are computed for all on cheap specs (files on disk, no weights loaded: hf:
and vllm: on the micro zoo's teacher directory, zoo: on the micro zoo, openai: from its
URL); models are *loaded* only where that is cheap: the micro zoo and the plug-in's echo.
"""

from __future__ import annotations

import importlib.util
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from bbi.backends.base import Backend, Generation, GenerationConfig
from bbi.errors import BbiError
from bbi.fingerprint import spec_fingerprint
from bbi.model_args import check_model_args
from bbi.specs import BACKENDS, CAPABILITIES, BackendKind, parse_spec

PLUGIN = Path(__file__).parent / "plugin" / "bbi_example_plugin-0.1.dist-info"
PLUGIN_BACKENDS = [
    ep.name for ep in metadata.Distribution.at(PLUGIN).entry_points if ep.group == "bbi.backends"
]
NAMES = [*BACKENDS.names(), *(n for n in PLUGIN_BACKENDS if n not in BACKENDS.names())]
# Loading these is cheap (a tiny zoo model, run by transformers or bbi's fast decoder, its
# CTranslate2 conversion where CTranslate2 is installed, a weightless plug-in); the others need a checkpoint, a vLLM engine or a server.
CHEAP_TO_LOAD = {
    "zoo",
    "fast",
    *PLUGIN_BACKENDS,
    *(["ct2"] if importlib.util.find_spec("ctranslate2") is not None else []),
}


@pytest.fixture
def kind(request: pytest.FixtureRequest, example_plugin: Any) -> BackendKind:
    return BACKENDS.get(request.param)


def _cheap_spec(decl: BackendKind, micro_zoo: Path) -> str:
    """A spec of this backend whose fingerprint needs no download and no weights loaded."""
    if decl.name in ("hf", "vllm"):
        return f"{decl.name}:{micro_zoo / 'teacher'}"
    if decl.name == "zoo":
        return "zoo:teacher"
    return decl.examples[0]


@pytest.mark.parametrize("kind", NAMES, indirect=True)
def test_declaration_and_grammar_round_trip(kind: BackendKind):
    assert isinstance(kind, BackendKind)
    assert set(kind.capabilities) <= set(CAPABILITIES) and "generate" in kind.capabilities
    assert "weights" not in kind.capabilities or kind.load_parts is not None
    assert callable(kind.loader())
    assert kind.examples, "a backend declares example specs"
    for text in kind.examples:
        ms = parse_spec(text)
        assert ms.kind == kind.name
        assert str(ms) == text  # examples are canonical
        assert parse_spec(str(ms)) == ms
    with pytest.raises(BbiError):
        parse_spec(f"{kind.name}:")


@pytest.mark.parametrize("kind", NAMES, indirect=True)
def test_args_are_typed_and_unknown_keys_refused(kind: BackendKind):
    assert all(t in (str, int, float, bool) for t in kind.args.values())
    spec = kind.examples[0]
    with pytest.raises(BbiError, match=f"{kind.name}: models take no 'no_such_argument'"):
        check_model_args(spec, {"no_such_argument": 1}, "x")
    for key, typ in kind.args.items():
        wrong: Any = [1] if typ is not str else 1
        with pytest.raises(BbiError, match=f"{key} must be a {typ.__name__}"):
            check_model_args(spec, {key: wrong}, "x")


@pytest.mark.parametrize("kind", NAMES, indirect=True)
def test_numbers_are_finite_and_in_their_declared_range(kind: BackendKind):
    spec = kind.examples[0]
    for key, (lo, hi) in kind.ranges.items():
        assert kind.args[key] in (int, float), key  # ranges bound numeric arguments
        for bad in ([lo - 1] if lo is not None else []) + ([hi + 1] if hi is not None else []):
            bad = kind.args[key](bad) if kind.args[key] is int else float(bad)
            with pytest.raises(BbiError, match=f"{key} must be in"):
                check_model_args(spec, {key: bad}, "x")
        inside = lo if lo is not None else hi
        if inside is not None:
            assert check_model_args(spec, {key: kind.args[key](inside)}, "x") == {
                key: kind.args[key](inside)
            }
    for key, typ in kind.args.items():
        if typ is float:  # never Infinity or NaN (not JSON, overflows in libraries)
            for bad in (float("inf"), float("nan")):
                with pytest.raises(BbiError, match=f"{key} must be a finite number"):
                    check_model_args(spec, {key: bad}, "x")


@pytest.mark.parametrize("kind", NAMES, indirect=True)
def test_fingerprint_is_stable(kind: BackendKind, micro_zoo: Path):
    spec = _cheap_spec(kind, micro_zoo)
    first = spec_fingerprint(spec)
    assert isinstance(first, str) and first
    assert spec_fingerprint(spec) == first == spec_fingerprint(parse_spec(spec))


@pytest.mark.parametrize("kind", sorted(CHEAP_TO_LOAD), indirect=True)
def test_cheap_backends_load_and_keep_their_word(kind: BackendKind, micro_zoo: Path):
    from bbi.backends import load_backend

    spec = _cheap_spec(kind, micro_zoo)
    backend = load_backend(spec, device="cpu", dtype="float32")
    try:
        assert isinstance(backend, Backend)
        assert backend.fingerprint == spec_fingerprint(spec)  # declared == reported
        gens = backend.generate(
            ["Hi", "What is 1 plus 1?"], GenerationConfig(max_new_tokens=4), [0, 1]
        )
        assert len(gens) == 2 and all(isinstance(g, Generation) for g in gens)
        assert all(g.finish_reason in ("stop", "length") for g in gens)
        if kind.can("score"):
            assert len(backend.score(["Hi"], [gens[0].text])) == 1
        else:
            with pytest.raises(BbiError):
                backend.score(["Hi"], [gens[0].text])
        if kind.can("weights"):
            _, _, _, fp = kind.parts_loader()(parse_spec(spec), device="cpu", dtype="float32")
            assert fp == backend.fingerprint
    finally:
        backend.close()
