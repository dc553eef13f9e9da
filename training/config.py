"""Training configs travel to Ray Train workers as plain dicts and come back typed.

A trainer's config is a frozen dataclass with this mixin. `to_dict` is what the workers receive and
what training.json records; `from_dict` rebuilds it on a worker, and rejects keys it does not know:
a misspelt key must fail loudly, not train with a default. (Model configs stay lenient on purpose,
see ModelConfig: a server may read a config a newer trainer wrote.)
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Self

from twinray.shared.models.components.config import ModelConfig


class TrainConfig:
    """Mixin for frozen dataclass training configs: nested model configs, JSON lists back as tuples."""

    def to_dict(self) -> dict[str, Any]:
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}  # type: ignore[arg-type]
        return {
            **dataclasses.asdict(self),  # type: ignore[call-overload]
            **{name: value.to_dict() for name, value in values.items() if isinstance(value, ModelConfig)},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        _check_keys(cls, data)
        types = typing.get_type_hints(cls)
        return cls(**{name: _field_value(types[name], value) for name, value in data.items()})


def _check_keys(config_class: type, data: dict[str, Any]) -> None:
    """ValueError naming the keys of `data` that are no field of the dataclass `config_class`."""
    known = [field.name for field in dataclasses.fields(config_class)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{config_class.__name__} has no field {', '.join(map(repr, unknown))} (fields: {', '.join(known)})")


def _field_value(field_type: Any, value: Any) -> Any:
    """A nested model config rebuilt (strictly, as the training config is), a list as a tuple."""
    if isinstance(field_type, type) and issubclass(field_type, ModelConfig) and isinstance(value, dict):
        _check_keys(field_type, value)
        return field_type.from_dict(value)
    return tuple(value) if isinstance(value, list) else value
