"""Number types for job params that read JSON the way the OpenAPI document (JSON Schema) does.

pydantic's lax mode takes ``"20"`` and ``true`` as numbers, which the document calls invalid;
its strict mode refuses ``20.0``, which JSON Schema calls an integer. These take JSON numbers
only, then convert as lax mode does (``20.0`` → 20; ``20.5`` is not an integer). Constraints on
an optional field go before the validator (``Annotated[int, Field(ge=1), BeforeValidator(
json_number)] | None``), or the JSON schema gets ``ge`` instead of ``minimum``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator

__all__ = ["JsonFloat", "JsonInt", "json_number"]


def json_number(value: object) -> object:
    """Before-validator: JSON numbers pass, anything else (bool, str, …) is refused."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("Input should be a JSON number")
    return value


JsonInt = Annotated[int, BeforeValidator(json_number)]
JsonFloat = Annotated[float, BeforeValidator(json_number)]
