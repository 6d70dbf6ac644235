"""Job kinds, configured in one place: ``kind`` → parameter model, function, executor.

``POST /exports`` validates against this table; executors look functions up in it. A function
takes ``(reporter, params)`` and returns the job's result (small JSON).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from progress_core.errors import Unprocessable
from progress_workers.demo import DemoParams


@dataclass(frozen=True, slots=True)
class JobKind:
    name: str
    params: type[BaseModel]
    function: str  # "module:attribute"
    executor: str = "local"
    modal_function: str | None = None  # the deployed function's name, for the modal executor

    def validate(self, raw: object) -> BaseModel:
        try:
            return self.params.model_validate(raw if raw is not None else {})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'params'}: {error['msg']}"
                for error in exc.errors(include_url=False)
            )
            raise Unprocessable(f"invalid params for kind {self.name!r}: {problems}") from None

    def load(self) -> Callable[..., object]:
        module_name, _, attribute = self.function.partition(":")
        function: Callable[..., object] = getattr(importlib.import_module(module_name), attribute)
        return function


KINDS: dict[str, JobKind] = {
    kind.name: kind
    for kind in [
        JobKind(name="demo", params=DemoParams, function="progress_workers.demo:run_demo"),
        JobKind(
            name="demo_modal",
            params=DemoParams,
            function="progress_workers.demo:run_demo",
            executor="modal",
            modal_function="demo",
        ),
    ]
}


def get_kind(name: object, kinds: dict[str, JobKind] | None = None) -> JobKind:
    table = KINDS if kinds is None else kinds
    if not isinstance(name, str) or name not in table:
        raise Unprocessable(f"unknown kind {name!r}; known kinds: {sorted(table)}")
    return table[name]
