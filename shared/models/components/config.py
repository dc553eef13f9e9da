"""One way for model configs to travel through the registry's config.json and back."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

Config = TypeVar("Config", bound="ModelConfig")


class ModelConfig:
    """Mixin for frozen dataclass configs: JSON lists come back as tuples, unknown keys are ignored
    (a newer trainer may record more than an older server knows)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[Config], data: dict[str, Any]) -> Config:
        values = {
            field.name: tuple(data[field.name]) if isinstance(data[field.name], list) else data[field.name]
            for field in dataclasses.fields(cls)  # type: ignore[arg-type]
            if field.name in data
        }
        return cls(**values)
