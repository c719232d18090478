"""How handsoff's programs connect to the region's NATS, with TLS or without.

One settings object, `NatsTls` (the region's CA; this client's certificate and key where
the servers require one; the name in the servers' certificates when the URLs use another),
and one function, `connect`, used by every client: the node's relay and `node checkpoint`,
`region streams`, the aggregator and the auditor. The command-line flags are the same
everywhere (`add_tls_options`): `--nats-ca FILE`, `--nats-cert FILE --nats-key FILE`,
`--nats-tls-name NAME`; a node keeps them in node.json (`node join`).

TLS is on when `NatsTls` is given or a URL is `tls://`. Then:

- the client starts TLS before reading anything from the server (`tls_handshake_first`;
  the generated server configurations ask for exactly that, natsconf.ServerTls). nats-py
  otherwise waits for the server's greeting and upgrades only if the greeting asks for TLS,
  even for a `tls://` URL: a server (or anyone in the middle) that does not ask would
  receive the password in clear. Starting with TLS, nothing is sent before the server has
  shown a certificate the CA signed;
- with a CA file, only that CA is trusted (not the system's CAs);
- before handing over to nats-py, `connect` completes one TLS handshake with each server
  itself. A handshake nats-py's first connection fails (an untrusted certificate, a wrong
  name, a server without TLS) makes nats-py 2.16 wait forever (it waits for the plain
  socket to close, which start_tls has already handed over: nats-io/nats.py#718); the
  probe turns it into a `NatsTlsError` that says what is wrong, and costs one handshake
  per connection.

TLS errors are converted here, at the edge, into `NatsTlsError` messages that name the
problem and the flag that fixes it, also those nats-py reports later through `error_cb`
(a reconnection to a server whose certificate has changed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import msgspec

from handsoff.services.errors import ServiceError

if TYPE_CHECKING:  # nats is imported when connecting: node.json's settings do not need it
    from nats.aio.client import Client

DEFAULT_PORT: Final = 4222
DEFAULT_CONNECT_TIMEOUT: Final = 2.0  # nats-py's own default, seconds

log = logging.getLogger("handsoff.nats")

ErrorCallback = Callable[[Exception], Awaitable[None]]


class NatsTlsError(ServiceError):
    """TLS to the region's NATS cannot be set up: files, certificates, or the server."""


class NatsTls(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """TLS settings of a client of the region's NATS (files as this machine reads them)."""

    ca_file: str | None = None  # the region's CA (PEM); None: the system's trusted CAs
    cert_file: str | None = None  # this client's certificate (PEM), for mutual TLS
    key_file: str | None = None  # its private key (PEM, not encrypted)
    server_name: str | None = None  # the name in the servers' certificates, if not the URL's

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise NatsTlsError("a client certificate needs its key (--nats-cert with --nats-key)")


# ---------------------------------------------------------------------------------------
# Connection options


def _no_passphrase() -> bytes:
    raise NatsTlsError(
        "the client key file is encrypted: give an unencrypted key, readable by this "
        "service only (a prompt cannot be answered by a service)"
    )


def ssl_context(tls: NatsTls) -> ssl.SSLContext:
    """A client context: server certificates checked against `ca_file` (or the system's
    CAs) and their names; `cert_file` shown to servers that ask for one."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
        if tls.cert_file is not None:
            context.load_cert_chain(tls.cert_file, tls.key_file, password=_no_passphrase)
    except OSError as e:
        if isinstance(e, ssl.SSLError):
            raise NatsTlsError(
                f"TLS: the certificate or key files cannot be used ({e.reason or e}): "
                "--nats-ca, --nats-cert and --nats-key take PEM files, the key the "
                "certificate's"
            ) from None
        raise NatsTlsError(
            f"TLS: cannot read {e.filename or 'a certificate file'}: {e.strerror or e}"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def tls_enabled(servers: list[str], tls: NatsTls | None) -> bool:
    return tls is not None or any(u.startswith("tls://") for u in servers)


def _tls_url(url: str) -> str:
    if url.startswith("tls://"):
        return url
    if url.startswith("nats://"):
        return "tls://" + url.removeprefix("nats://")
    if "://" in url:
        raise NatsTlsError(f"{url!r}: TLS to NATS takes nats:// or tls:// URLs")
    return "tls://" + url


def connect_options(servers: list[str], tls: NatsTls | None) -> dict[str, Any]:
    """nats.connect's keyword arguments for `servers` (`server_urls`) and `tls`: the servers,
    and with TLS the SSL context, `tls://` URLs, TLS first and the certificates' name."""
    if not tls_enabled(servers, tls):
        return {"servers": servers}
    tls = tls or NatsTls()
    options: dict[str, Any] = {
        "servers": [_tls_url(u) for u in servers],
        "tls": ssl_context(tls),
        "tls_handshake_first": True,
    }
    if tls.server_name is not None:
        options["tls_hostname"] = tls.server_name
    return options


# ---------------------------------------------------------------------------------------
# Errors


# X509_V_ERR_* codes (OpenSSL's x509_vfy.h)
_EXPIRED: Final = 10
_NOT_YET_VALID: Final = 9
_HOSTNAME_MISMATCH: Final = 62
_NO_CLIENT_CERTIFICATE: Final = frozenset({"TLSV13_ALERT_CERTIFICATE_REQUIRED"})
_CLIENT_CERTIFICATE_REFUSED: Final = frozenset(
    {
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV1_ALERT_ACCESS_DENIED",
    }
)
_NOT_TLS: Final = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"}
)


def describe_tls_error(e: BaseException, server: str | None = None) -> str | None:
    """What a TLS failure means, in words that say what to fix; None if `e` is not one."""
    if not isinstance(e, ssl.SSLError):
        return None
    of = f" of {server}" if server else ""
    at = f" at {server}" if server else ""
    if isinstance(e, ssl.SSLCertVerificationError):
        why = e.verify_message or e.reason or str(e)
        if e.verify_code == _HOSTNAME_MISMATCH:
            return (
                f"TLS: the server certificate{of} is not for that name ({why}): use a name "
                "the certificate carries, or give it with --nats-tls-name"
            )
        if e.verify_code in (_EXPIRED, _NOT_YET_VALID):
            return f"TLS: the server certificate{of} is not valid now ({why}): renew it"
        return (
            f"TLS: the server certificate{of} is not trusted ({why}): give the CA that "
            "signed it, the region's, with --nats-ca"
        )
    reason = e.reason or ""
    if reason in _NO_CLIENT_CERTIFICATE:
        return (
            f"TLS: the server{at} requires a client certificate (mutual TLS): give one the "
            "region's CA signed with --nats-cert and --nats-key"
        )
    if reason in _CLIENT_CERTIFICATE_REFUSED:
        return (
            f"TLS: the server{at} refused this client's certificate ({reason.lower()}): it "
            "must be signed by the region's CA and valid now"
        )
    if reason in _NOT_TLS:
        return (
            f"TLS: the server{at} does not start TLS ({reason.lower()}): it has no TLS, or "
            "is not configured for TLS first (handshake_first); nothing was sent to it"
        )
    return f"TLS: the connection to the server{at} failed: {reason or e}"


def _no_greeting(e: BaseException) -> bool:
    return "expecting INFO" in str(e)


# ---------------------------------------------------------------------------------------
# Connecting


async def _probe(url: str, context: ssl.SSLContext, name: str | None, timeout: float) -> None:
    """One TLS handshake with the server at `url` and its greeting. Raises NatsTlsError
    on a TLS failure; a server that cannot be reached at all is nats-py's business."""
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or DEFAULT_PORT
    if host is None:
        return
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host, port, ssl=context, server_hostname=name or host, ssl_handshake_timeout=timeout
            ),
            timeout,
        )
    except ssl.SSLError as e:
        raise NatsTlsError(describe_tls_error(e, url)) from None
    except (OSError, TimeoutError):
        return
    try:
        # a server that checks client certificates says no here (TLS 1.3)
        await asyncio.wait_for(reader.readline(), timeout)
    except ssl.SSLError as e:
        raise NatsTlsError(describe_tls_error(e, url)) from None
    except (OSError, TimeoutError):
        return
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), timeout)


async def connect(nats_url: str | list[str], tls: NatsTls | None, **options: Any) -> Client:
    """`nats.connect` to the servers of `nats_url` (one URL, or several comma-separated or
    listed) with `tls`, and the other nats.connect `options`. TLS failures raise
    NatsTlsError; other failures are nats-py's, as they were."""
    import nats
    import nats.errors

    from handsoff.federation.natsconf import server_urls

    servers = server_urls(nats_url) if isinstance(nats_url, str) else list(nats_url)
    settings = connect_options(servers, tls)
    secure = "tls" in settings
    if secure:
        timeout = float(options.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT))
        probes = await asyncio.gather(
            *(
                _probe(url, settings["tls"], settings.get("tls_hostname"), timeout)
                for url in settings["servers"]
            ),
            return_exceptions=True,
        )
        for failure in probes:
            if isinstance(failure, BaseException):
                raise failure
    seen: list[Exception] = []
    callback: ErrorCallback | None = options.pop("error_cb", None)

    async def on_error(e: Exception) -> None:
        seen.append(e)
        described = describe_tls_error(e)
        reported = NatsTlsError(described) if described is not None else e
        if callback is not None:
            await callback(reported)
        else:  # what nats-py does without a callback
            log.error("nats: encountered error", exc_info=reported)

    try:
        return await nats.connect(**settings, error_cb=on_error, **options)
    except (nats.errors.Error, OSError, TimeoutError) as e:
        where = ", ".join(settings["servers"])
        for cause in reversed([*seen, e]):
            described = describe_tls_error(cause, where)
            if described is not None:
                raise NatsTlsError(described) from None
        if not secure and any(_no_greeting(x) for x in [*seen, e]):
            raise NatsTlsError(
                f"the server at {where} sent no greeting: it probably requires TLS; give the "
                "region's CA with --nats-ca (or use a tls:// URL)"
            ) from None
        raise


# ---------------------------------------------------------------------------------------
# Command line


def add_tls_options(parser: argparse.ArgumentParser) -> None:
    """--nats-ca, --nats-cert, --nats-key, --nats-tls-name (`tls_from_args`)."""
    group = parser.add_argument_group("TLS to the region's NATS (docs/operations.md, section 8)")
    group.add_argument(
        "--nats-ca",
        type=Path,
        metavar="FILE",
        help="the region's CA certificate (PEM): connect with TLS, trusting only this CA "
        "(a tls:// URL alone trusts the system's CAs)",
    )
    group.add_argument(
        "--nats-cert",
        type=Path,
        metavar="FILE",
        help="this client's certificate (PEM), for servers that require one (mutual TLS)",
    )
    group.add_argument("--nats-key", type=Path, metavar="FILE", help="its key (PEM)")
    group.add_argument(
        "--nats-tls-name",
        metavar="NAME",
        help="the name the servers' certificates carry, if the URLs reach them by another "
        "(an IP address, a tunnel)",
    )


def tls_from_args(args: argparse.Namespace) -> NatsTls | None:
    """The `add_tls_options` flags as settings (absolute paths), or None if none is given."""

    def path(value: Path | None) -> str | None:
        return None if value is None else str(value.absolute())

    ca, cert, key = args.nats_ca, args.nats_cert, args.nats_key
    if ca is None and cert is None and key is None and args.nats_tls_name is None:
        return None
    return NatsTls(
        ca_file=path(ca), cert_file=path(cert), key_file=path(key), server_name=args.nats_tls_name
    )
