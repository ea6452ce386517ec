"""The route table: built-in routes and those plugins add through ``register_routes``.

Every route, whoever registered it, is a :class:`LabelledRoute` (so metrics
name it by its path template), sits behind the gateway's API-key check and
error handling, and is described in ``/openapi.json``. Plugin routes use the
same ``register`` callable::

    @hookimpl
    def register_routes(register, context):
        register("/v1/alerts", list_alerts, methods=["GET"], response_model=AlertList)
        register("/v1/alerts", create_alert, methods=["POST"], request_model=AlertIn, status_code=201)

Endpoints read their body with :func:`read_json` (400 with ``param`` on bad
input) and raise :class:`~framelens.plugins.http.errors.ApiError` for failures.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from framelens.web import json_response, read_json, validation_error

from .openapi import RouteDoc

__all__ = ["ROUTE_KEY", "LabelledRoute", "RouteTable", "json_response", "read_json", "validation_error"]

ROUTE_KEY = "framelens.route"
M = TypeVar("M", bound=BaseModel)


class LabelledRoute(Route):
    """A Starlette route that records its path template in the scope for metrics and logs."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[ROUTE_KEY] = self.path
        await super().handle(scope, receive, send)


class RouteTable:
    """Collects routes and their OpenAPI descriptions; refuses two handlers for one path and method."""

    def __init__(self) -> None:
        self.routes: list[Route] = []
        self.docs: list[RouteDoc] = []
        self._taken: dict[tuple[str, str], str] = {}
        self._public: set[str] = set()

    def register(
        self,
        path: str,
        endpoint: Callable[..., Any],
        methods: Sequence[str] = ("GET",),
        name: str | None = None,
        *,
        summary: str | None = None,
        description: str | None = None,
        request_model: type[BaseModel] | None = None,
        response_model: type[BaseModel] | None = None,
        status_code: int = 200,
        response_types: Sequence[str] = ("application/json",),
        tags: Sequence[str] = (),
        public: bool = False,
        include_in_schema: bool = True,
        extra_responses: dict[str, str] | None = None,
    ) -> None:
        """Add a route. ``public`` routes skip the API-key check (health probes)."""
        if not path.startswith("/"):
            raise ValueError(f"route path must start with '/': {path!r}")
        wanted = tuple(m.upper() for m in methods)
        for method in wanted:
            owner = self._taken.get((path, method))
            if owner is not None:
                raise ValueError(f"{method} {path} is already registered by {owner}")
            self._taken[(path, method)] = getattr(endpoint, "__qualname__", repr(endpoint))
        if public:
            self._public.add(path)
        self.routes.append(LabelledRoute(path, endpoint, methods=list(wanted), name=name,
                                         include_in_schema=include_in_schema))
        if include_in_schema:
            doc = inspect.getdoc(endpoint) or ""
            first, _, rest = doc.partition("\n\n")
            self.docs.append(RouteDoc(
                path=path, methods=wanted, summary=summary or first.replace("\n", " "),
                description=description if description is not None else rest.strip(),
                request_model=request_model, response_model=response_model, status_code=status_code,
                response_types=tuple(response_types), tags=tuple(tags), public=public,
                extra_responses=dict(extra_responses or {}),
            ))

    def public_paths(self) -> frozenset[str]:
        return frozenset(self._public)


