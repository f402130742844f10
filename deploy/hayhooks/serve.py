# SPDX-FileCopyrightText: 2026-present grit-components developers
#
# SPDX-License-Identifier: Apache-2.0
"""Serve the pipelines of this folder (the GRIT RAG pipeline, `grit_rag/`) with hayhooks, safe by default.

    python deploy/hayhooks/serve.py [--host 127.0.0.1] [--port 1416]

A plain `hayhooks run` serves admin routes that deploy request-supplied code and delete files, to anyone
who reaches the port, and allows every CORS origin. This launcher builds the same hayhooks app with:

- a fixed pipeline set: hayhooks' own switch for it (`HAYHOOKS_DURABLE_MODE`) loads the folder once at
  startup and leaves out `/deploy_files`, `/deploy-yaml`, `/undeploy/...` (durable execution itself is not
  used: no wrapper here is durable);
- `GRIT_API_KEY`: when set, every route but `GET /status` needs `Authorization: Bearer <key>` (what
  OpenAI clients send) or `X-API-Key: <key>`, compared in constant time; otherwise 401;
- localhost: it binds to hayhooks' host setting (`localhost` unless `--host` or `HAYHOOKS_HOST` says
  otherwise) and refuses a non-loopback address without `GRIT_API_KEY` (set `GRIT_ALLOW_UNAUTHENTICATED=1`
  only behind a proxy that authenticates); a loopback server answers only requests whose Host header
  names it (`GRIT_ALLOWED_HOSTS` to change), so a web page cannot reach it through DNS rebinding;
- CORS: no cross-origin access unless `HAYHOOKS_CORS_ALLOW_ORIGINS` lists origins (JSON list);
- errors: a client error is a 4xx with a short message; a server error is a 500 saying only
  "Internal server error" (hayhooks logs the details).

Every other hayhooks setting (`HAYHOOKS_*`) works as usual; one set explicitly wins over these defaults.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from hayhooks.server.app import create_app as create_hayhooks_app
from hayhooks.server.app import run_app
from hayhooks.settings import settings
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

HERE = Path(__file__).resolve().parent
ENV_API_KEY = "GRIT_API_KEY"
ENV_ALLOWED_HOSTS = "GRIT_ALLOWED_HOSTS"  # comma-separated Host header names; "*" for any
ENV_ALLOW_UNAUTHENTICATED = "GRIT_ALLOW_UNAUTHENTICATED"
OPEN_PATHS = frozenset({"/status"})  # health checks need no key; it lists pipeline names only
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")

# hayhooks settings this launcher changes, unless the operator set the HAYHOOKS_* variable.
SAFE_DEFAULTS = {
    "pipelines_dir": str(HERE),
    "durable_mode": True,  # fixed pipeline set: no deploy/undeploy routes
    "cors_allow_origins": [],
    "cors_allow_methods": ["GET", "POST"],
    "cors_allow_headers": ["Authorization", "Content-Type", "X-API-Key"],
    "show_tracebacks": False,
}


class UnsafeConfigurationError(RuntimeError):
    """The server would be reachable without authentication where that is not safe."""


class APIKeyMiddleware:
    """Requires the API key on every request but `OPEN_PATHS` and CORS preflights (which carry no credentials)."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.expected = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):  # behind HAYHOOKS_ROOT_PATH, match the route, not the prefix
            path = path[len(root):]
        if scope["type"] not in ("http", "websocket") or path in OPEN_PATHS or scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value for key, value in scope["headers"]}
        given = headers.get("x-api-key", b"")
        scheme, _, token = headers.get("authorization", b"").partition(b" ")
        if scheme.lower() == b"bearer":
            given = token.strip()
        if given and hmac.compare_digest(given, self.expected):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":  # a websocket is refused with a close frame, not an HTTP response
            await WebSocketClose(code=1008, reason="missing or invalid API key")(scope, receive, send)
            return
        response = JSONResponse({"detail": "missing or invalid API key"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


async def _short_server_errors(request: Request, error: StarletteHTTPException):
    # hayhooks reports a failed run as 500 "Pipeline execution failed: <internal message>"; the log keeps it.
    if error.status_code >= 500:
        return JSONResponse({"detail": "Internal server error"}, status_code=error.status_code)
    return await http_exception_handler(request, error)


def is_loopback(host: str) -> bool:
    if host.strip("[]") in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _set_by_operator(name: str) -> bool:
    variable = f"HAYHOOKS_{name}".upper()
    return any(key.upper() == variable for key in os.environ)


def apply_safe_defaults() -> None:
    """Set `SAFE_DEFAULTS` on hayhooks' settings, except those the operator set through the environment."""
    for name, value in SAFE_DEFAULTS.items():
        if not _set_by_operator(name):
            setattr(settings, name, value)


def check_exposure(host: str, api_key: str | None) -> None:
    """Refuse to serve without a key where anyone could reach the server or deploy code on it."""
    if api_key:
        return
    if not settings.durable_mode:
        raise UnsafeConfigurationError(
            "HAYHOOKS_DURABLE_MODE=false serves the deploy/undeploy routes (they run uploaded code): set "
            f"{ENV_API_KEY} to protect them")
    if not is_loopback(host) and os.environ.get(ENV_ALLOW_UNAUTHENTICATED, "") in ("", "0"):
        raise UnsafeConfigurationError(
            f"host {host!r} is reachable from other machines: set {ENV_API_KEY}, or "
            f"{ENV_ALLOW_UNAUTHENTICATED}=1 if a proxy in front authenticates")


def create_app(*, api_key: str | None = None, allowed_hosts: Sequence[str] | None = None) -> FastAPI:
    """The hayhooks app for this folder with the safe defaults of the module docstring.

    :param api_key: the key every request needs (default: `GRIT_API_KEY`; empty or unset = no key).
    :param allowed_hosts: Host header names to answer (default: `GRIT_ALLOWED_HOSTS`, else the loopback
        names when bound to a loopback address, else any).
    :raises UnsafeConfigurationError: no key where one is needed (see `check_exposure`).
    """
    api_key = os.environ.get(ENV_API_KEY) if api_key is None else api_key
    apply_safe_defaults()
    check_exposure(settings.host, api_key)
    if allowed_hosts is None and os.environ.get(ENV_ALLOWED_HOSTS):
        allowed_hosts = [name.strip() for name in os.environ[ENV_ALLOWED_HOSTS].split(",") if name.strip()]
    if allowed_hosts is None and is_loopback(settings.host):
        allowed_hosts = LOOPBACK_NAMES

    app = create_hayhooks_app()
    app.add_exception_handler(StarletteHTTPException, _short_server_errors)
    if api_key:
        app.add_middleware(APIKeyMiddleware, api_key=api_key)
    if allowed_hosts:  # added last, so it runs first
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", help=f"address to bind (default: hayhooks' host setting, {settings.host!r})")
    parser.add_argument("--port", type=int, help=f"port (default: hayhooks' port setting, {settings.port})")
    args = parser.parse_args(argv)
    if args.host:
        settings.host = args.host
    try:
        app = create_app()
    except UnsafeConfigurationError as error:
        parser.exit(2, f"error: {error}\n")
    run_app(app, host=settings.host, port=args.port or settings.port)


if __name__ == "__main__":
    main()
