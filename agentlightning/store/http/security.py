"""Who may talk to a store server, and over what: the shared token and TLS.

Token. A server with a token answers only requests carrying ``Authorization: Bearer <token>`` (exactly
one such header). A token is at least ``MIN_TOKEN_LENGTH`` printable characters
(``agentlightning.env.check_token``); an empty or short one is refused with an error naming where it
came from (the parameter, or ``AGL_SERVER_TOKEN``), never silently treated as "no token". The ``cs``
strategy always has one: with none given it makes a random one per run (``generate_token``) and hands it
to its own runner processes. A token never appears in logs, errors or reprs.

TLS (optional). The server presents a PEM certificate and key (``tls_cert`` / ``tls_key``, or
``AGL_SERVER_TLS_CERT`` / ``AGL_SERVER_TLS_KEY``); clients verify it against a PEM CA bundle
(``tls_ca`` / ``AGL_SERVER_TLS_CA``) or the system's CAs, and the host they connect to must be named in
the certificate. Files are loaded when the server or client is built, so a bad one fails at once with
an error naming the parameter or variable.

Unix socket (optional). A server may also listen on a Unix domain socket (``unix_socket``), under the
same token, and a client on the same machine may connect through it instead of TCP; its path is checked
alike on both sides (``check_unix_socket``). Who may reach it is the mode of its directory.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import ssl
from dataclasses import dataclass

from agentlightning.env import (
    AGL_SERVER_TLS_CA,
    AGL_SERVER_TLS_CERT,
    AGL_SERVER_TLS_KEY,
    AGL_SERVER_TOKEN,
    MIN_TOKEN_LENGTH,
    check_token,
)

__all__ = [
    "MIN_TOKEN_LENGTH",
    "SERVER_CIPHERS",
    "ServerTLS",
    "check_unix_socket",
    "client_ssl_context",
    "generate_token",
    "resolve_ca",
    "resolve_server_tls",
    "resolve_token",
]

SERVER_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
"""TLS 1.2 suites the server offers (forward secret, authenticated encryption); TLS 1.3 is preferred."""


def resolve_token(token: str | None, parameter: str = "token") -> str | None:
    """The token to use: ``token`` if given (checked, errors name ``parameter``), else
    ``AGL_SERVER_TOKEN`` (checked, errors name the variable), else ``None``."""
    if token is not None:
        return check_token(token, parameter)
    return AGL_SERVER_TOKEN.get(None)  # type: ignore[arg-type]


def generate_token() -> str:
    """A fresh random token (256 bits) for one run."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ServerTLS:
    """The PEM certificate (chain) and private key a server presents."""

    cert: str
    key: str


def _no_password() -> str:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key's passphrase.
    raise ValueError("the key is encrypted; give an unencrypted PEM key")


def resolve_server_tls(
    cert: str | None, key: str | None, cert_parameter: str = "tls_cert", key_parameter: str = "tls_key"
) -> ServerTLS | None:
    """The server's certificate and key from the parameters or the environment (``None``: no TLS).

    Both or neither; each must load (``ValueError`` naming the parameter or variable otherwise).
    """
    cert_name, key_name = cert_parameter, key_parameter
    if cert is None:
        cert, cert_name = AGL_SERVER_TLS_CERT.get(None), AGL_SERVER_TLS_CERT.name  # type: ignore[arg-type]
    if key is None:
        key, key_name = AGL_SERVER_TLS_KEY.get(None), AGL_SERVER_TLS_KEY.name  # type: ignore[arg-type]
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given, missing = (cert_name, key_parameter) if key is None else (key_name, cert_parameter)
        raise ValueError(
            f"{missing} is missing: TLS needs both a certificate ({cert_parameter}) and its key "
            f"({key_parameter}); only {given} was given"
        )
    for name, path in ((cert_name, cert), (key_name, key)):
        if not isinstance(path, str) or not path:
            raise ValueError(f"{name} must be the path of a PEM file, got {path!r}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ValueError(
            f"{cert_name}={cert!r} and {key_name}={key!r} do not load as a PEM certificate and its "
            f"private key: {exc}"
        ) from None
    return ServerTLS(cert, key)


def resolve_ca(ca: str | None, parameter: str = "tls_ca") -> str | None:
    """The CA bundle to verify a server with: ``ca`` if given, else ``AGL_SERVER_TLS_CA``, else ``None``
    (the system's CAs). It must load (``ValueError`` naming the parameter or variable)."""
    name = parameter
    if ca is None:
        ca, name = AGL_SERVER_TLS_CA.get(None), AGL_SERVER_TLS_CA.name  # type: ignore[arg-type]
        if ca is None:
            return None
    if not isinstance(ca, str) or not ca:
        raise ValueError(f"{name} must be the path of a PEM CA bundle, got {ca!r}")
    try:
        ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"{name}={ca!r} does not load as a PEM CA bundle: {exc}") from None
    return ca


def client_ssl_context(ca: str | None) -> ssl.SSLContext:
    """A client context that verifies the server's certificate and host name (TLS 1.2 at least)."""
    context = ssl.create_default_context(cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback address."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def check_unix_socket(path: object) -> str | None:
    """A ``unix_socket`` argument: ``None`` (TCP only) or a non-empty path, else ``ValueError`` naming it."""
    if path is not None and (not isinstance(path, str) or not path):
        raise ValueError(f"unix_socket must be a non-empty path, got {path!r}")
    return path
