"""The checkpoint metadata schema: the fields the app reads, each with its type, and nothing else.

A checkpoint can come from a stranger, and its metadata is shown to people, sorted, and used to rebuild the model, so
every field is checked here once; an unknown field is dropped, a known one of the wrong type refuses the file."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from .data import CLASS_NAMES
from .errors import UserError

TEXT_MAX = 100  # characters in any text field (an architecture, a dataset's name, a device's description)
N_CLASSES = len(CLASS_NAMES["mnist"])  # every registry model answers ten classes
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_SETTING = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
CONFIG_MAX = 40  # settings in a config (a training has 17, a teaching 12)


class MetadataError(UserError, ValueError):
    """A checkpoint's metadata is missing a field the app needs, or a field has the wrong type."""


def _text(value) -> str:
    if not isinstance(value, str) or len(value) > TEXT_MAX:
        raise TypeError(f"text of at most {TEXT_MAX} characters")
    return value


def _optional(check: Callable) -> Callable:
    return lambda value: None if value is None else check(value)


def _number(low: float = -math.inf, high: float = math.inf) -> Callable:
    def check(value) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise TypeError(f"a number from {low:g} to {high:g}")
        return float(value)
    return check


def _count(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError("a whole number of at least 0")
    return value


def _flag(value) -> bool:
    if not isinstance(value, bool):
        raise TypeError("true or false")
    return value


def _fraction_list(value) -> list[float]:
    if not isinstance(value, list) or len(value) != N_CLASSES:
        raise TypeError(f"a list of {N_CLASSES} numbers")
    return [_number(0, 1)(v) for v in value]


def _classes(value) -> list[str]:
    if not isinstance(value, list) or len(value) != N_CLASSES:
        raise TypeError(f"a list of {N_CLASSES} class names")
    return [_text(v) for v in value]


def _normalisation(value) -> list[float]:
    if not isinstance(value, list) or len(value) != 2:
        raise TypeError("[mean, standard deviation]")
    mean, std = _number(-10, 10)(value[0]), _number(1e-6, 10)(value[1])
    return [mean, std]


def _date(value) -> str:
    if not isinstance(value, str) or not _DATE.match(value):
        raise TypeError("a date such as 2026-01-31T12:00:00Z")
    return value


def _scalar(value):
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and math.isfinite(value):
        return value
    return _text(value)


def _config(value) -> dict:
    """A training's or a teaching's settings: a few named plain values."""
    if not isinstance(value, dict) or len(value) > CONFIG_MAX or not all(map(_SETTING.match, map(str, value))):
        raise TypeError(f"a dictionary of at most {CONFIG_MAX} settings with plain names")
    config = _checked(value, dict.fromkeys(value, _scalar), "config.")
    if "label_smoothing" in config:  # teaching trains with it
        config.update(_checked(config, {"label_smoothing": _number(0, 0.99)}, "config."))
    return config


def _turned(value) -> dict:
    if not isinstance(value, dict) or len(value) > N_CLASSES:
        raise TypeError("a dictionary from digit to turn")
    return {_text(k): _text(v) for k, v in value.items()}


METRICS: dict[str, Callable] = {
    "test_accuracy": _optional(_number(0, 1)), "test_loss": _optional(_number(0)),
    "val_accuracy": _optional(_number(0, 1)), "per_class_accuracy": _fraction_list,
    "epochs_completed": _count, "stopped_early": _flag,
    # a taught model's: before and after teaching, and on the person's own examples
    "test_accuracy_before": _optional(_number(0, 1)), "per_class_accuracy_before": _fraction_list,
    "examples": _count, "examples_accuracy_before": _optional(_number(0, 1)),
    "examples_accuracy_after": _optional(_number(0, 1)),
}


def _metrics(value) -> dict:
    if not isinstance(value, dict):
        raise TypeError("a dictionary of metrics")
    return _checked(value, METRICS, "metrics.")


FIELDS: dict[str, Callable] = {
    "format": _text, "arch": _text, "dataset": _text, "normalisation": _normalisation, "classes": _classes,
    "config": _config, "metrics": _metrics, "params": _count, "train_time_s": _optional(_number(0)),
    "device": _optional(_text), "torch_version": _optional(_text), "created": _date,
    "base": _text, "examples": _count, "turned": _turned,  # a taught model's
}
REQUIRED = ("format", "arch", "normalisation")


def _checked(raw: dict, schema: dict[str, Callable], prefix: str = "") -> dict:
    meta = {}
    for name, check in schema.items():
        if name in raw:
            try:
                meta[name] = check(raw[name])
            except TypeError as exc:
                raise MetadataError(f"metadata field {prefix}{name} must be {exc}") from None
    return meta


def checked_metadata(raw: dict) -> dict:
    """The known fields of a checkpoint's parsed metadata, each checked; a missing required field or a wrong type
    raises MetadataError naming it."""
    meta = _checked(raw, FIELDS)
    missing = [name for name in REQUIRED if name not in meta]
    if missing:
        raise MetadataError(f"metadata field {missing[0]} is missing")
    return meta
