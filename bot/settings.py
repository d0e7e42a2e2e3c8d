"""One typed Settings object from the environment or `.env` (12-factor); secrets as SecretStr.

Nothing else in the project reads the environment. Slack secrets are optional here so that
the CLI works without Slack; the web app checks them when it starts (`require_slack`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dunning.calendar import is_supported_country, is_valid_timezone
from dunning.policy import DEFAULT_POLICY, Policy, PolicyError, policy_from_mapping


class SettingsError(RuntimeError):
    """Settings are missing or invalid; the message says which and how to fix it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8",
                                      extra="ignore", case_sensitive=False)

    database_url: str = Field(default="sqlite:///dunning.db",
                              description="SQLAlchemy URL; SQLite file by default")
    dunning_policy: Path | None = Field(default=None, description="path to dunning.toml")
    dunning_timezone: str = "UTC"
    dunning_country: str = "US"
    dunning_currency: str = "USD"

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str | None = None
    # Who may act: comma-separated Slack user ids (U...) or emails.
    dunning_finance_users: str = ""
    dunning_manager_users: str = ""
    # Where each owner's cards go: "dana@example.com=#ar-dana,sam@example.com=C0123"; an
    # owner without an entry gets a DM.
    dunning_owner_channels: str = ""
    dunning_digest_channel: str | None = None
    dunning_sender_name: str = "Accounts Receivable"
    # The worker: company-local times of the daily jobs (business days only).
    dunning_log_format: str = "json"  # json | text, for serve and worker
    # Threads of a web process that run Slack requests at once; the others wait their turn
    # in arrival order. Requests are CPU-bound Python (one core per process): a few threads
    # keep the queue first-come first-served instead of slicing the core between dozens.
    web_threads: int = Field(default=8, ge=1, le=200)
    dunning_cycle_time: str = "08:00"
    dunning_digest_time: str = "08:30"

    # Connectors (issue 4). Each is configured when its credential is set.
    stripe_api_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None  # a local Stripe (tests, sandbox) instead of Stripe's
    quickbooks_client_id: str | None = None
    quickbooks_client_secret: SecretStr | None = None
    quickbooks_realm_id: str | None = None
    quickbooks_refresh_token: SecretStr | None = None  # the first one; refreshed ones are stored
    quickbooks_environment: str = "production"  # production | sandbox
    quickbooks_api_url: str | None = None  # overrides the v3 API base (tests)
    quickbooks_token_url: str | None = None  # overrides Intuit's OAuth token endpoint (tests)
    quickbooks_send_invoices: bool = False  # deliver reminders with Invoice.send as well
    hubspot_access_token: SecretStr | None = None
    hubspot_api_host: str | None = None
    # Mapping billing customers to CRM companies: HubSpot company properties holding the
    # billing system's customer id, tried before the domain and then the normalized name.
    hubspot_stripe_id_property: str = "stripe_customer_id"
    hubspot_quickbooks_id_property: str = "quickbooks_customer_id"
    # A full backfill also reads the invoices paid in this many days (payment history).
    connector_paid_lookback_days: int = Field(default=365, ge=0, le=3650)
    connector_timeout_seconds: float = 30.0
    connector_max_retries: int = 5

    # Drafting and reply understanding (issue 5): any OpenAI-compatible server.
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    openai_timeout_seconds: float = 20.0
    # Prices for cost accounting, USD per million tokens, and the daily spend cap.
    openai_input_usd_per_mtok: str = "0.15"
    openai_output_usd_per_mtok: str = "0.60"
    llm_daily_budget_usd: str = "5.00"

    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str | None = None
    imap_host: str | None = None
    imap_port: int = 993
    imap_username: str | None = None
    imap_password: SecretStr | None = None
    imap_ssl: bool = True
    imap_folder: str = "INBOX"

    @field_validator("dunning_timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        if not is_valid_timezone(v):
            raise ValueError(f"{v!r} is not an IANA time zone such as 'America/New_York'")
        return v

    @field_validator("dunning_cycle_time", "dunning_digest_time")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        hour, sep, minute = v.partition(":")
        if not (sep and hour.isdigit() and minute.isdigit() and int(hour) < 24
                and int(minute) < 60):
            raise ValueError(f"{v!r} is not a time like 08:00")
        return f"{int(hour):02d}:{int(minute):02d}"

    @field_validator("dunning_country")
    @classmethod
    def _country(cls, v: str) -> str:
        if not is_supported_country(v.upper()):
            raise ValueError(f"{v!r} is not a supported ISO 3166-1 alpha-2 country code")
        return v.upper()

    def secret_values(self) -> list[str]:
        """Every secret's value, for log redaction."""
        values = [v.get_secret_value() for v in (
            self.slack_bot_token, self.slack_signing_secret, self.slack_app_token,
            self.stripe_api_key, self.stripe_webhook_secret, self.hubspot_access_token,
            self.quickbooks_client_secret, self.quickbooks_refresh_token,
            self.openai_api_key, self.smtp_password, self.imap_password) if v is not None]
        return [v for v in values if v]

    def owner_channels(self) -> dict[str, str]:
        """DUNNING_OWNER_CHANNELS parsed: owner email (lower case) -> channel id or name."""
        out: dict[str, str] = {}
        for item in filter(None, (x.strip() for x in self.dunning_owner_channels.split(","))):
            email, sep, channel = item.partition("=")
            if not sep or "@" not in email or not channel.strip():
                raise SettingsError(f"DUNNING_OWNER_CHANNELS: {item!r} is not "
                                    "'owner@example.com=#channel'")
            out[email.strip().lower()] = channel.strip()
        return out

    @staticmethod
    def _people(raw: str) -> frozenset[str]:
        return frozenset(x.strip().lower() if "@" in x else x.strip()
                         for x in raw.split(",") if x.strip())

    def finance_users(self) -> frozenset[str]:
        return self._people(self.dunning_finance_users)

    def manager_users(self) -> frozenset[str]:
        return self._people(self.dunning_manager_users)

    def load_policy(self) -> Policy:
        """The default policy, overridden by the TOML file named in DUNNING_POLICY."""
        if self.dunning_policy is None:
            return DEFAULT_POLICY
        return load_policy_file(self.dunning_policy)

    def require_slack(self) -> tuple[SecretStr, SecretStr]:
        missing = [name for name, value in (("SLACK_BOT_TOKEN", self.slack_bot_token),
                                            ("SLACK_SIGNING_SECRET", self.slack_signing_secret))
                   if value is None or not value.get_secret_value()]
        if missing:
            raise SettingsError(
                f"{' and '.join(missing)} not set: the Slack app needs them (see README "
                "'Slack app setup'); set them in the environment or in .env")
        assert self.slack_bot_token is not None and self.slack_signing_secret is not None
        return self.slack_bot_token, self.slack_signing_secret


def load_policy_file(path: Path) -> Policy:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SettingsError(f"policy file {path} not found (DUNNING_POLICY)") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"policy file {path} is not valid TOML: {exc}") from exc
    try:
        return policy_from_mapping(data)
    except PolicyError as exc:
        raise SettingsError(f"policy file {path}: {exc}") from exc


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
                 for e in exc.errors()]
        raise SettingsError("invalid settings:\n" + "\n".join(lines)) from exc
