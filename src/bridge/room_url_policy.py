"""Which room servers a JoinRoom may send the bridge to (``BRIDGE_LIVEKIT_URL_ALLOW``).

A JoinRoom carries its own ``livekit_url``; the bridge connects there with the token it was given.
Whoever can call JoinRoom can therefore make the bridge open WebSocket and WebRTC connections to any
address it reaches. The older bridge's clouds rely on sending their own URL, so by default any URL is
allowed; a deployment that knows its LiveKit servers lists them and every other URL is refused.

Entries (comma-separated):

- ``lk.example.com``: that host, on any port, ws/wss/http/https;
- ``lk.example.com:7880``: that host on that port only;
- ``*.example.com``: any subdomain of example.com (not example.com itself);
- ``wss://lk.example.com/`` (anything with ``://``): URLs that start with this prefix, compared after
  normalising scheme and host case.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["RoomUrlPolicy", "parse_url_allow_list"]

_DEFAULT_PORTS = {"ws": 80, "http": 80, "wss": 443, "https": 443}


@dataclass(frozen=True)
class _HostRule:
    host: str
    """Lower-case host, or ``*.suffix`` for subdomains."""
    port: int | None

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host


@dataclass(frozen=True)
class RoomUrlPolicy:
    hosts: tuple[_HostRule, ...] = ()
    prefixes: tuple[str, ...] = ()
    always: tuple[str, ...] = ()
    """URLs allowed whatever the list says (the bridge's own ``LIVEKIT_URL``)."""

    @classmethod
    def parse(cls, spec: str, *, always: tuple[str, ...] = ()) -> RoomUrlPolicy:
        hosts, prefixes = parse_url_allow_list(spec)
        return cls(hosts, prefixes, tuple(_normalise(url) for url in always if url))

    @property
    def allows_any(self) -> bool:
        return not self.hosts and not self.prefixes

    def allows(self, url: str) -> bool:
        if self.allows_any:
            return True
        normalised = _normalise(url)
        if normalised in self.always or any(normalised.startswith(p) for p in self.prefixes):
            return True
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
        try:
            port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 0)
        except ValueError:
            return False
        return any(rule.matches(host, port) for rule in self.hosts)


def parse_url_allow_list(spec: str) -> tuple[tuple[_HostRule, ...], tuple[str, ...]]:
    """Host rules and URL prefixes of ``spec``; ValueError names an entry that is neither."""
    hosts: list[_HostRule] = []
    prefixes: list[str] = []
    for entry in (part.strip() for part in spec.split(",")):
        if not entry:
            continue
        if "://" in entry:
            parts = urlsplit(entry)
            if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname:
                raise ValueError(f"{entry!r} is not a ws://, wss://, http:// or https:// URL")
            prefixes.append(_normalise(entry))
            continue
        host, port_text = _split_host_port(entry)
        if not host or any(char in host for char in "/?#@ ") or (port_text and not port_text.isdigit()):
            raise ValueError(f"{entry!r} is not a host, host:port, *.domain or URL prefix")
        hosts.append(_HostRule(host.lower().rstrip("."), int(port_text) if port_text else None))
    return tuple(hosts), tuple(prefixes)


def _split_host_port(entry: str) -> tuple[str, str]:
    if entry.startswith("["):  # [v6] or [v6]:port
        host, _, rest = entry[1:].partition("]")
        return host, rest.removeprefix(":")
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, port
    return entry, ""  # a bare name, or a bare IPv6 address


def _normalise(url: str) -> str:
    """Scheme and authority in lower case, and a path that starts with "/": so the prefix
    ``wss://lk.example.com/`` cannot match ``wss://lk.example.com.evil.test/``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, _, path = rest.partition("/")
    return f"{scheme.lower()}://{authority.lower()}/{path}"
