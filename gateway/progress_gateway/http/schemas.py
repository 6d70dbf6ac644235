"""The bodies of the HTTP API as pydantic models, and their JSON Schemas for the OpenAPI document.

Responses reuse the core's models (``Job``, ``HistoryEvent``); the models here describe what the
handlers build around them. ``component_schemas`` generates every schema in one pass, so a model
used by two bodies (``Job``) is one component that both reference.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, WithJsonSchema, create_model

from progress_core.codes import ERROR_RULES, ErrorCode
from progress_core.models import HistoryEvent, Job
from progress_workers.kinds import JobKind

__all__ = ["REF", "component_schemas", "ref"]

Doc = dict[str, Any]

REF = "#/components/schemas/{model}"
SEQ_PATTERN = "^[0-9]{1,18}$"


def ref(name: str) -> Doc:
    return {"$ref": REF.format(model=name)}


def problem_codes() -> list[str]:
    """Every ``code`` a problem body can carry: each error code with an HTTP answer."""
    return [code.value for code in ErrorCode]


class Problem(BaseModel):
    """RFC 9457 problem details, with a machine-readable ``code`` (``progress_core.codes``)."""

    type: Literal["about:blank"]
    title: str
    status: int
    detail: str
    # Inline rather than a reference: a reader sees every code where the field is.
    code: Annotated[ErrorCode, WithJsonSchema({"type": "string", "enum": problem_codes()})]


class Status(BaseModel):
    """``/healthz`` and ``/readyz``; ``problems`` says why the gateway is not ready, ``degraded``
    what it cannot do while ready (an executor whose service has not answered yet)."""

    status: Literal["ok", "ready", "unavailable"]
    problems: list[str] = Field(default_factory=list)
    degraded: list[str] = Field(default_factory=list)


class ActiveExports(BaseModel):
    """Non-terminal jobs, and jobs finished within ``recent_s``, newest first."""

    active: list[Job]
    recent: list[Job]


class History(BaseModel):
    """The job's bounded timeline, oldest first."""

    events: list[HistoryEvent]


class Event(BaseModel):
    """One event of ``/exports/{id}/events`` (keep-alive comments are not events): ``reset``
    when the store's ``seq`` went below what the stream sent before."""

    id: Annotated[str, Field(pattern=SEQ_PATTERN, description="The snapshot's seq.")]
    event: Literal["update", "reset"]
    data: Annotated[
        str,
        Field(
            description="The snapshot as JSON.",
            json_schema_extra={"contentMediaType": "application/json", "contentSchema": ref("Job")},
        ),
    ]


def create_model_name(kind: JobKind) -> str:
    return f"Create_{kind.name}"


def _create_body(kind: JobKind) -> type[BaseModel]:
    """``POST /exports`` for one kind: its name, and params of that kind's own model."""
    kind_schema = {"type": "string", "const": kind.name}
    return create_model(
        create_model_name(kind),
        __config__=ConfigDict(extra="forbid", title=f"Create a {kind.name} job"),
        kind=(Annotated[str, WithJsonSchema(kind_schema)], ...),
        params=(kind.params, Field(default_factory=kind.params)),
    )


def create_export_schema(kinds: Iterable[JobKind]) -> Doc:
    """One alternative per kind this gateway runs: an unknown kind, or params its kind refuses,
    are outside the document (and answer 422)."""
    names = {kind.name: create_model_name(kind) for kind in kinds}
    return {
        "oneOf": [ref(name) for name in names.values()],
        "discriminator": {
            "propertyName": "kind",
            "mapping": {kind: REF.format(model=name) for kind, name in names.items()},
        },
    }


def component_schemas(kinds: Iterable[JobKind]) -> Doc:
    """``components.schemas``: every body model, the create body per kind, what they reference.

    Validation mode: the wire form is what each model accepts (serialization mode would lose the
    ``date-time`` format of the snapshot's times to their ``str`` serializer).
    """
    kinds = list(kinds)
    models: dict[str, Any] = {
        "Job": Job,
        "ActiveExports": ActiveExports,
        "History": History,
        "Event": Event,
        "Status": Status,
        "Problem": Problem,
        **{create_model_name(kind): _create_body(kind) for kind in kinds},
    }
    inputs = [(name, "validation", TypeAdapter(model)) for name, model in models.items()]
    _, definitions = TypeAdapter.json_schemas(inputs, ref_template=REF)  # type: ignore[arg-type]
    schemas: Doc = dict(definitions.get("$defs", {}))
    missing = set(models) - set(schemas)
    if missing:
        raise LookupError(f"no schema generated for {sorted(missing)}")
    schemas["CreateExport"] = create_export_schema(kinds)
    return dict(sorted(schemas.items()))


def error_status(code: ErrorCode) -> int:
    status = ERROR_RULES[code].status
    if status is None:
        raise LookupError(f"error code {code} has no fixed HTTP status")
    return status
