"""Small HTTP helpers shared by fixtures, probes and the load generator."""

from __future__ import annotations

import re

import httpx

_BEARER = re.compile(r"(Bearer\s+)[^\s'\"]+", re.IGNORECASE)


def auth_headers(api_key: str | None) -> dict[str, str]:
    """Authorization header for an OpenAI-compatible server, or none when no key is configured."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def redact(text: str, secrets: list[str | None] | None = None) -> str:
    """Remove API keys from text that may end up in a log, a report or an error message."""
    text = _BEARER.sub(r"\1***", text)
    for secret in secrets or []:
        if secret:
            text = text.replace(secret, "***")
    return text


def timeout(request_timeout_s: float) -> httpx.Timeout:
    """A timeout for every phase of a request: connecting fails fast, reading waits for generation."""
    return httpx.Timeout(request_timeout_s, connect=min(5.0, request_timeout_s))


def join(base_url: str, path: str) -> str:
    """Join a server root and an API path without doubling slashes."""
    return base_url.rstrip("/") + "/" + path.lstrip("/")
