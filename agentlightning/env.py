"""Environment overrides, read and validated in one place.

Every ``AGL_*`` variable the runtime honours is declared here with its parser, so an invalid value fails
with an error naming the variable and the value instead of surfacing later as a confusing behaviour.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = [
    "AGL_CURRENT_ROLE",
    "AGL_EVENT_LOOP",
    "AGL_MANAGED_STORE",
    "AGL_SERVER_HOST",
    "AGL_SERVER_PORT",
    "AGL_SERVER_TLS_CA",
    "AGL_SERVER_TLS_CERT",
    "AGL_SERVER_TLS_KEY",
    "AGL_SERVER_TOKEN",
    "MIN_TOKEN_LENGTH",
    "EnvVar",
    "check_token",
    "managed_store_default",
    "managed_store_setting",
]

T = TypeVar("T")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}")


def _parse_port(raw: str) -> int:
    try:
        port = int(raw.strip())
    except ValueError:
        raise ValueError("expected an integer port from 0 to 65535") from None
    if not 0 <= port <= 65535:
        raise ValueError("expected an integer port from 0 to 65535")
    return port


def _parse_role(raw: str) -> str:
    role = raw.strip().lower()
    if role not in ("algorithm", "runner", "both"):
        raise ValueError("expected 'algorithm', 'runner' or 'both'")
    return role


def _parse_loop(raw: str) -> str:
    kind = raw.strip().lower()
    if kind not in ("uvloop", "asyncio"):
        raise ValueError("expected 'uvloop' or 'asyncio'")
    return kind


def _parse_nonempty(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ValueError("expected a non-empty string")
    return value


MIN_TOKEN_LENGTH = 16
"""Shortest shared token the store server accepts (characters): long enough not to be guessed online."""


def check_token(token: object, name: str) -> str:
    """``token`` if it can be the store server's shared token, else ``ValueError`` naming ``name``.

    A token is at least ``MIN_TOKEN_LENGTH`` printable ASCII characters without spaces (it travels in an
    HTTP header). The message never repeats the token, only its length.
    """
    if not isinstance(token, str):
        raise ValueError(f"{name} must be a string, got {type(token).__name__}")
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(
            f"{name} must be at least {MIN_TOKEN_LENGTH} characters (got {len(token)}): an empty or short "
            f"token would let others guess their way into the store"
        )
    if not all("!" <= char <= "~" for char in token):
        raise ValueError(f"{name} must be printable ASCII without spaces (it is sent as an HTTP header)")
    return token


def _parse_token(raw: str) -> str:
    return check_token(raw.strip(), "the token")


def _parse_file(raw: str) -> str:
    path = raw.strip()
    if not os.path.isfile(path):
        raise ValueError("expected the path of an existing file")
    return path


@dataclass(frozen=True)
class EnvVar(Generic[T]):
    """One environment override: its name, its parser, and what it means.

    A ``secret`` variable's value never appears in an error message (only its length does).
    """

    name: str
    parse: Callable[[str], T]
    help: str
    secret: bool = False

    def get(self, default: T, environ: Mapping[str, str] | None = None) -> T:
        """The parsed value, or ``default`` when unset or empty; ``ValueError`` naming the variable."""
        raw = (os.environ if environ is None else environ).get(self.name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return self.parse(raw)
        except ValueError as exc:
            shown = f" (value hidden, {len(raw)} characters)" if self.secret else f"={raw!r}"
            raise ValueError(f"invalid environment variable {self.name}{shown}: {exc}") from None

    def is_set(self, environ: Mapping[str, str] | None = None) -> bool:
        raw = (os.environ if environ is None else environ).get(self.name)
        return raw is not None and raw.strip() != ""


AGL_MANAGED_STORE: EnvVar[bool] = EnvVar(
    "AGL_MANAGED_STORE", _parse_bool, "wrap the store for the strategy's workers (true) or pass it through"
)
AGL_CURRENT_ROLE: EnvVar[str] = EnvVar(
    "AGL_CURRENT_ROLE", _parse_role, "cs strategy role on this machine: algorithm, runner or both"
)
AGL_EVENT_LOOP: EnvVar[str] = EnvVar(
    "AGL_EVENT_LOOP",
    _parse_loop,
    "event loop of cs and ray runner processes: uvloop (default where installed) or asyncio",
)
AGL_SERVER_HOST: EnvVar[str] = EnvVar("AGL_SERVER_HOST", _parse_nonempty, "cs store server host")
AGL_SERVER_PORT: EnvVar[int] = EnvVar("AGL_SERVER_PORT", _parse_port, "cs store server port (0: ephemeral)")
AGL_SERVER_TOKEN: EnvVar[str] = EnvVar(
    "AGL_SERVER_TOKEN",
    _parse_token,
    f"shared token (>= {MIN_TOKEN_LENGTH} characters) the cs store server requires from clients",
    secret=True,
)
AGL_SERVER_TLS_CERT: EnvVar[str] = EnvVar(
    "AGL_SERVER_TLS_CERT", _parse_file, "PEM certificate (chain) the cs store server presents (enables TLS)"
)
AGL_SERVER_TLS_KEY: EnvVar[str] = EnvVar(
    "AGL_SERVER_TLS_KEY", _parse_file, "PEM private key of AGL_SERVER_TLS_CERT"
)
AGL_SERVER_TLS_CA: EnvVar[str] = EnvVar(
    "AGL_SERVER_TLS_CA", _parse_file, "PEM CA bundle cs runners verify the store server's certificate with"
)


def managed_store_default(environ: Mapping[str, str] | None = None) -> bool:
    """Whether strategies wrap the caller's store by default (``AGL_MANAGED_STORE``, default true)."""
    return AGL_MANAGED_STORE.get(True, environ)


def managed_store_setting(value: object, environ: Mapping[str, str] | None = None) -> bool:
    """A strategy's ``managed_store`` argument: ``None`` is the default above; else it must be a bool."""
    if value is None:
        return managed_store_default(environ)
    if not isinstance(value, bool):
        raise ValueError(f"managed_store must be a bool or None; got {value!r}")
    return value
