"""How a family deployment's exceptions become `ModelFault` answers (no Ray: the decorator on a plain
class; tests/deployments/test_model_faults.py checks the same through real handles)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from deployments.families.faults import answers_faults, fault_of
from infra.audio import Audio, validate
from models.types import INTERNAL_FAULT_MESSAGE, ModelFault, ModelInputError, ModelInternalError


@answers_faults
class Replica:
    def info(self) -> dict[str, str]:
        raise RuntimeError("info is Serve's: not wrapped")

    async def refuse(self) -> None:
        validate(Audio(np.zeros((1, 0), np.float32), 16000))  # infra's own check: bad input

    async def crash(self) -> None:
        np.zeros(3).reshape(2)  # numpy's ValueError: a bug, not the caller's input

    def count(self, n: int) -> int:
        if n < 0:
            raise ValueError(f"n must be at least 0, got {n}")  # not the project's models/infra/families
        return n

    async def relay(self) -> None:
        raise ModelInputError("VAD", "invalid_input", "threshold must be within [0, 1]", "threshold")

    async def stream(self, fail: bool) -> AsyncIterator[int]:
        yield 1
        if fail:
            np.zeros(3).reshape(2)
        yield 2


def test_bad_input_is_the_models_words_and_a_bug_is_generic() -> None:
    replica = Replica()
    refused = asyncio.run(replica.refuse())
    assert isinstance(refused, ModelFault) and not refused.internal and refused.code == "audio_empty"
    crashed = asyncio.run(replica.crash())
    assert crashed == ModelFault("model_error", INTERNAL_FAULT_MESSAGE, internal=True)
    assert replica.count(-1) == crashed  # a ValueError of code outside models, infra and the families
    assert replica.count(2) == 2
    relayed = asyncio.run(replica.relay())  # a model this one called refused: passed on as it was
    assert relayed == ModelFault("invalid_input", "threshold must be within [0, 1]", "threshold")
    with pytest.raises(RuntimeError):
        replica.info()


def test_a_fault_is_raised_typed_in_the_caller() -> None:
    bad = ModelFault("invalid_input", "text 0 is empty", "text").error("TTS")
    assert isinstance(bad, ModelInputError) and isinstance(bad, ValueError)
    assert (bad.deployment, bad.code, bad.field, str(bad)) == (
        "TTS",
        "invalid_input",
        "text",
        "text 0 is empty",
    )
    internal = ModelFault("model_error", INTERNAL_FAULT_MESSAGE, internal=True).error("TTS")
    assert isinstance(internal, ModelInternalError) and not isinstance(internal, ValueError)
    assert fault_of(internal) == ModelFault("model_error", INTERNAL_FAULT_MESSAGE, internal=True)
    assert fault_of(KeyError("library key")).internal  # raised here, not by models/infra code


def test_a_streaming_method_stays_a_stream_and_its_fault_is_the_last_piece() -> None:
    async def pieces(fail: bool) -> list[object]:
        return [piece async for piece in Replica().stream(fail)]

    assert asyncio.run(pieces(False)) == [1, 2]
    *head, last = asyncio.run(pieces(True))
    assert head == [1] and isinstance(last, ModelFault) and last.internal


def test_every_family_deployment_answers_faults() -> None:
    """A family added without `@answers_faults` would send Ray's wrapped exception text to its callers."""
    import importlib
    import pkgutil

    from ray import serve

    import deployments.families as families
    from deployments.families.faults import _NOT_WRAPPED  # Serve's own hooks

    checked = []
    for info in pkgutil.iter_modules(families.__path__):
        module = importlib.import_module(f"deployments.families.{info.name}")
        for value in vars(module).values():
            if isinstance(value, serve.Deployment) and value.func_or_class.__module__ == module.__name__:
                cls = value.func_or_class
                public = [n for n in vars(cls) if not n.startswith("_") and callable(getattr(cls, n))]
                unwrapped = [
                    n
                    for n in public
                    if n not in _NOT_WRAPPED and not getattr(getattr(cls, n), "_answers_faults", False)
                ]
                assert not unwrapped, f"{value.name}: {unwrapped} not under @answers_faults"
                checked.append(value.name)
    assert {"SVC", "ASR", "TTS", "MusicGen"} <= set(checked), checked
