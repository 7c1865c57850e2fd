"""Who may reach `distilrt serve`'s tritonserver, and which of Triton's APIs they may call.

A text client needs health, metadata, inference and statistics. Triton opens more by default, on every
interface: system shared memory (a client registered the Python backend stub's own /dev/shm region as an
output buffer, and the next request crashed tritonserver), logging (anyone changes the log level), trace,
model repository control and model config (the model's parameters). So the server binds 127.0.0.1 unless told
otherwise, and those APIs are restricted with Triton's own options (--http-restricted-api and
--grpc-restricted-protocol) to requests carrying the header ``distilrt-admin-key``; the key is a random secret
per start unless one is given, so by default nobody has it. An API can be opened to everyone deliberately.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass, field

from distilrt.errors import UserInputError

# Triton's names for the APIs (HTTP) and protocols (gRPC) that a text client never needs.
RESTRICTED_APIS = ("shared-memory", "logging", "trace", "model-repository", "model-config")
ADMIN_HEADER = "distilrt-admin-key"  # lower case: gRPC metadata keys are
# Triton looks for the gRPC metadata under its own prefix (its refusal names it).
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"
MIN_KEY_LENGTH = 16
# Triton parses the option as APIS:KEY=VALUE and sends the value as a header: no separators, no spaces.
_KEY_PATTERN = re.compile(r"[A-Za-z0-9._~+/-]+")


def random_key() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Access:
    host: str = "127.0.0.1"  # HTTP, gRPC and metrics bind here; 0.0.0.0 for every interface
    admin_key: str = field(default_factory=random_key, repr=False)
    open_apis: tuple[str, ...] = ()  # restricted APIs opened to every client

    def __post_init__(self):
        try:
            address = ipaddress.ip_address(self.host)
        except ValueError:
            raise UserInputError(f"--host {self.host!r} is not an IP address; give 127.0.0.1 (this machine only, the "
                                 "default), 0.0.0.0 (every interface) or one interface's IPv4 address") from None
        if address.version != 4:
            raise UserInputError(f"--host {self.host!r}: distilrt serve binds IPv4 addresses (0.0.0.0 for every "
                                 "interface); put an IPv6 front end before it")
        unknown = [api for api in self.open_apis if api not in RESTRICTED_APIS]
        if unknown:
            raise UserInputError(f"--open-api {unknown}: the APIs that can be opened are {list(RESTRICTED_APIS)}")
        if len(self.admin_key) < MIN_KEY_LENGTH or not _KEY_PATTERN.fullmatch(self.admin_key):
            raise UserInputError(f"--admin-key must be at least {MIN_KEY_LENGTH} characters of letters, digits and "
                                 "._~+/- (it is sent as a header); e.g. python -c 'import secrets; "
                                 "print(secrets.token_urlsafe(24))'")

    @property
    def restricted(self) -> tuple[str, ...]:
        return tuple(api for api in RESTRICTED_APIS if api not in self.open_apis)

    @property
    def client_host(self) -> str:
        """Where a client on this machine reaches the server."""
        return "127.0.0.1" if self.host == "0.0.0.0" else self.host

    def arguments(self) -> list[str]:
        """tritonserver's options for this access."""
        args = [f"--http-address={self.host}", f"--grpc-address={self.host}", f"--metrics-address={self.host}"]
        if self.restricted:
            group = f"{','.join(self.restricted)}:{ADMIN_HEADER}={self.admin_key}"
            args += [f"--http-restricted-api={group}", f"--grpc-restricted-protocol={group}"]
        return args

    def summary(self) -> str:
        if not self.restricted:
            return "every Triton API open (--open-api)"
        opened = f"; opened: {', '.join(self.open_apis)}" if self.open_apis else ""
        return (f"{', '.join(self.restricted)} need header {ADMIN_HEADER} (gRPC: {GRPC_ADMIN_HEADER}) "
                f"with the admin key{opened}")
