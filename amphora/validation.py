"""Checking and converting a handler's arguments (and, opt-in, its result) by its type hints, with msgspec.

A request's arguments arrive as the serializer's types (JSON: numbers, strings, lists, objects); each
annotated parameter's value is converted to its annotation (``msgspec.convert``: ``str`` to ``datetime``,
base64 text to ``bytes``, objects to dataclasses, Structs and TypedDicts...) or refused with a message that
names the function, the argument and what was expected. Annotations msgspec cannot convert to (a class of
its own that is none of those) are not checked.
"""

from __future__ import annotations

import inspect
import logging
import math
import typing
from collections.abc import Callable
from types import GenericAlias
from typing import Any

import msgspec

from .protocol import MalformedRequest

log = logging.getLogger(__name__)

P = inspect.Parameter
UNCHECKED: Any = P.empty
"""The annotation of a parameter that is not checked (none, or one msgspec cannot convert to)."""


class ArgumentMismatch(MalformedRequest):
    """A request's arguments do not fit the handler's signature; the server refuses it (WrongRequest)."""


def convertible(annotation: Any) -> bool:
    """Whether msgspec can convert to (and describe) ``annotation``."""
    try:
        msgspec.json.schema(annotation)
    except (TypeError, ValueError):
        return False
    return True


def type_hints(func: Callable[..., Any]) -> dict[str, Any]:
    """``func``'s resolved annotations (a callable object's: its ``__call__``'s); {} if it has none that
    Python can read, or if some cannot be resolved (names imported only for mypy: logged)."""
    target = func if inspect.isroutine(func) or isinstance(func, type) else type(func).__call__
    try:
        return typing.get_type_hints(target)
    except NameError as exc:
        log.warning("cannot resolve the type hints of %s (%s): its arguments are not checked", func, exc)
    except TypeError:  # not something annotations are read from (a functools.partial...)
        pass
    return {}


UNKNOWN_SIGNATURE = inspect.Signature([P("args", P.VAR_POSITIONAL), P("kwargs", P.VAR_KEYWORD)])
"""The signature of a callable whose own Python cannot tell (some builtins): it takes anything."""


def handler_signature(func: Callable[..., Any], context: bool) -> inspect.Signature:
    """The signature a caller sees: without the RequestContext of a handler registered with ``context=True``."""
    try:
        signature = inspect.signature(func)
    except (ValueError, TypeError):
        return UNKNOWN_SIGNATURE
    if context:
        signature = signature.replace(parameters=list(signature.parameters.values())[1:])
    return signature


def _converted(value: Any, annotation: Any) -> Any:
    """``value`` as ``annotation``; msgspec.ValidationError if it is not one."""
    return msgspec.convert(value, annotation, str_keys=True)


def _expected(error: msgspec.ValidationError) -> str:
    """msgspec's "Expected `int`, got `str` - at `$[1]`" as "expected int, got str (at $[1])"."""
    text, _, path = str(error).replace("`", "").partition(" - at ")
    text = text[:1].lower() + text[1:]
    return f"{text} (at {path})" if path else text


VARIADIC = (P.VAR_POSITIONAL, P.VAR_KEYWORD)


class Validator:
    """Converts the arguments of one function (``name``, as callers know it) to its annotations.

    ``annotations`` are those of the checked parameters, by name (of each element for ``*args`` and
    ``**kwargs``); ``result`` the annotation the result must fit, if it is checked. Arguments keep their
    place: positional ones stay positional.
    """

    def __init__(
        self, name: str, signature: inspect.Signature, annotations: dict[str, Any], result: Any = UNCHECKED
    ) -> None:
        self.name, self.signature, self.annotations, self.result = name, signature, annotations, result
        parameters = list(signature.parameters.values())
        self._positional = [p.name for p in parameters if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
        self._by_position = [(i, n, annotations[n]) for i, n in enumerate(self._positional) if n in annotations]
        self._keywords = {p.name for p in parameters if p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY)}
        self._by_name = {n: annotations[n] for n in self._keywords if n in annotations}
        self._required = {p.name for p in parameters if p.default is P.empty and p.kind not in VARIADIC}
        rest = [p.name for p in parameters if p.kind is P.VAR_POSITIONAL]
        self._rest = rest[0] if rest else None
        self._rest_annotation = GenericAlias(list, annotations[rest[0]]) if rest and rest[0] in annotations else None
        extra = [p.name for p in parameters if p.kind is P.VAR_KEYWORD]
        self._takes_extra = bool(extra)
        self._extra_annotation = annotations.get(extra[0]) if extra else None
        only_by_name = any(p.kind is P.KEYWORD_ONLY and p.default is P.empty for p in parameters)
        self._least_positional = math.inf if only_by_name else len(self._required)
        self._most_positional = math.inf if rest else len(self._positional)

    def arguments(self, args: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """The converted ``(args, kwargs)``; ArgumentMismatch if they do not fit."""
        if not self.annotations:
            return args, kwargs
        self._check_binding(args, kwargs)
        converted = list(args)
        for index, name, annotation in self._by_position:
            if index >= len(args):
                break
            converted[index] = self._converted(name, args[index], annotation)
        count = len(self._positional)
        if self._rest_annotation is not None and len(args) > count:
            converted[count:] = self._converted(self._rest, args[count:], self._rest_annotation)
        named = dict(kwargs)
        for key, value in kwargs.items():
            annotation = self._by_name.get(key) if key in self._keywords else self._extra_annotation
            if annotation is not None:
                named[key] = self._converted(key, value, annotation)
        return converted, named

    def _check_binding(self, args: list[Any], kwargs: dict[str, Any]) -> None:
        """ArgumentMismatch, with Python's message, if the handler cannot take these arguments."""
        if not kwargs and self._least_positional <= len(args) <= self._most_positional:
            return  # the common case, checked cheaply
        given = set(self._positional[: len(args)])
        fits = len(args) <= self._most_positional and self._required <= given | (kwargs.keys() & self._keywords)
        fits = fits and all(key not in given and (key in self._keywords or self._takes_extra) for key in kwargs)
        if not fits:
            try:
                self.signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise ArgumentMismatch(f"{self.name}: {exc}") from None

    def _converted(self, name: str | None, value: Any, annotation: Any) -> Any:
        try:
            return _converted(value, annotation)
        except msgspec.ValidationError as exc:
            raise ArgumentMismatch(f"{self.name}: argument {name!r}: {_expected(exc)}") from None

    def check_result(self, result: Any) -> None:
        """TypeError if ``result``, as it travels (JSON's types), does not fit the result's annotation."""
        if self.result is UNCHECKED:
            return
        try:
            _converted(msgspec.to_builtins(result), self.result)
        except (msgspec.ValidationError, TypeError) as exc:
            detail = _expected(exc) if isinstance(exc, msgspec.ValidationError) else str(exc)
            raise TypeError(f"{self.name}: result: {detail}") from None


def parameter_annotations(signature: inspect.Signature, hints: dict[str, Any]) -> dict[str, Any]:
    """The annotations of the parameters that can be checked, by name (not ``Any``: nothing to check)."""
    return {
        name: hints[name]
        for name in signature.parameters
        if name in hints and hints[name] is not Any and convertible(hints[name])
    }


def result_annotation(hints: dict[str, Any]) -> Any:
    """The return annotation among ``hints`` if it can be checked, else UNCHECKED."""
    result = hints.get("return", UNCHECKED)
    return result if result is not UNCHECKED and result is not Any and convertible(result) else UNCHECKED


def build_validator(
    name: str, func: Callable[..., Any], context: bool, arguments: bool = True, check_result: bool = False
) -> Validator | None:
    """The validator of ``func`` registered as ``name``, converting its ``arguments`` and checking its
    result as asked; None if it has nothing to check."""
    signature = handler_signature(func, context)
    hints = type_hints(func)
    annotations = parameter_annotations(signature, hints) if arguments else {}
    result = result_annotation(hints) if check_result else UNCHECKED
    if not annotations and result is UNCHECKED:
        return None
    return Validator(name, signature, annotations, result)
