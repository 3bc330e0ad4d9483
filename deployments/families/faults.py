"""Model deployments answer errors as data: every public method of a family deployment returns a
`models.types.ModelFault` instead of raising, and the typed client (`client.py`) raises it again as
`ModelInputError` / `ModelInternalError` in the caller's process.

A bad-input error is one the project's own code raised to refuse an argument: a `ValueError` or
`KeyError` raised in `models.*`, `infra.*` or a family deployment itself (the wrappers' and the
deployments' argument checks, `infra.audio`'s validation), or an
error that carries a `code` (the typed domain errors, and a `ModelInputError` from a model this
deployment called). Its message is the model's own and goes to the client. Anything else (a torch
error, an out-of-memory, a bug) is an internal fault: logged here with its traceback, answered with a
generic message. Ray's own errors (a replica that died, backpressure) are not answers of the method
and still reach the caller as Ray raises them.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from models.types import INTERNAL_FAULT_CODE, INTERNAL_FAULT_MESSAGE, ModelCallError, ModelFault

logger = logging.getLogger(__name__)
C = TypeVar("C", bound=type)

# ModelHost's and Serve's own hooks: their errors mean something to Serve (a failed health check).
_NOT_WRAPPED = {"check_health", "reconfigure", "load_model", "info"}
_OWN_CODE = ("models.", "infra.", "deployments.families.")
MAX_MESSAGE_CHARS = 500


def fault_of(error: BaseException) -> ModelFault:
    """The fault a method's exception is answered with (see the module docstring)."""
    if isinstance(error, ModelCallError):
        return ModelFault(error.code, error.message, error.field, internal=not isinstance(error, ValueError))
    code = getattr(error, "code", None)
    if isinstance(code, str) or (isinstance(error, ValueError | KeyError) and _raised_by_us(error)):
        message = str(error)[:MAX_MESSAGE_CHARS] or "the model refused this input"
        field = getattr(error, "field", None)
        return ModelFault(code if isinstance(code, str) else "invalid_input", message, field)
    return ModelFault(INTERNAL_FAULT_CODE, INTERNAL_FAULT_MESSAGE, internal=True)


def _raised_by_us(error: BaseException) -> bool:
    """Whether the frame that raised `error` is the project's own (`_OWN_CODE`), not a library's."""
    tb: TracebackType | None = error.__traceback__
    module = ""
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        tb = tb.tb_next
    return module.startswith(_OWN_CODE)


def answers_faults(cls: C) -> C:
    """Class decorator (under `@serve.deployment`): each public method returns a `ModelFault` instead
    of raising (a streaming method yields it as its last piece)."""
    for name, member in inspect.getmembers(cls, callable):
        if name.startswith("_") or name in _NOT_WRAPPED or getattr(member, "_answers_faults", False):
            continue
        setattr(cls, name, _wrapped(cls.__name__, name, member))
    return cls


def _wrapped(owner: str, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    def answer(error: Exception) -> ModelFault:
        fault = fault_of(error)
        if fault.internal:
            logger.exception("%s.%s failed", owner, name)
        else:
            logger.info("%s.%s refused its input: %s", owner, name, fault.code)
        return fault

    if inspect.isasyncgenfunction(method):  # a streamed answer: the fault is its last piece

        @functools.wraps(method)
        async def stream(*args: Any, **kwargs: Any) -> Any:
            try:
                async for piece in method(*args, **kwargs):
                    yield piece
            except Exception as e:
                yield answer(e)

        stream._answers_faults = True  # type: ignore[attr-defined]
        return stream

    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def call_async(*args: Any, **kwargs: Any) -> Any:
            try:
                return await method(*args, **kwargs)
            except Exception as e:
                return answer(e)

        call_async._answers_faults = True  # type: ignore[attr-defined]
        return call_async

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception as e:
            return answer(e)

    call._answers_faults = True  # type: ignore[attr-defined]
    return call
