"""How an audio fetch fails: one exception class per FAILED code, so playback maps them in one table."""

from __future__ import annotations

__all__ = [
    "BadStatusError",
    "FetchBusyError",
    "FetchError",
    "FetchFailedError",
    "FetchTimeoutError",
    "HostNotAllowedError",
    "ResponseTooLargeError",
    "UnsupportedEncodingError",
]


class FetchError(Exception):
    """An audio fetch failed; the subclass says why, the message says it for the cloud."""


class HostNotAllowedError(FetchError):
    """The URL's host (or an address it resolves to) is refused by the fetch policy."""


class FetchBusyError(FetchError):
    """The process or the session already runs as many fetches (or name lookups) as it may."""


class FetchTimeoutError(FetchError):
    """The server was too slow: connect, a read, a name lookup, or the total wait budget."""


class ResponseTooLargeError(FetchError):
    """The body is (or says it is) larger than ``BRIDGE_FETCH_MAX_BYTES``."""


class UnsupportedEncodingError(FetchError):
    """The server applied a Content-Encoding although the bridge asked for ``identity``."""


class BadStatusError(FetchError):
    """The server answered with an HTTP error status."""


class FetchFailedError(FetchError):
    """Anything else: connection errors, a body cut short, bad redirects, protocol errors."""
