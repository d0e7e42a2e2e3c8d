"""One error hierarchy for every outside system (Slack, Stripe, QuickBooks, HubSpot, OpenAI,
SMTP); vendor exceptions are translated here with `raise ... from exc`.

    ConnectorError            something outside went wrong; `system` names it
    ├── AuthError             credentials missing, revoked or lacking a scope: a person must act
    ├── RateLimitedError      too many requests; `retry_after` seconds, when the vendor said
    ├── UnavailableError      timeouts, connection failures, 5xx: try again later
    └── DataError             the vendor refused the request as invalid (bad id, bad field)
"""

from __future__ import annotations


class ConnectorError(Exception):
    def __init__(self, system: str, message: str) -> None:
        self.system = system
        super().__init__(f"{system}: {message}")


class AuthError(ConnectorError):
    pass


class RateLimitedError(ConnectorError):
    def __init__(self, system: str, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(system, message)


class UnavailableError(ConnectorError):
    pass


class DataError(ConnectorError):
    pass
