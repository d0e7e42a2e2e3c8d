"""Build the configured connectors from settings (the only place that knows both).

A system is configured when its credential is set: STRIPE_API_KEY; QUICKBOOKS_CLIENT_ID +
QUICKBOOKS_CLIENT_SECRET + QUICKBOOKS_REALM_ID + QUICKBOOKS_REFRESH_TOKEN;
HUBSPOT_ACCESS_TOKEN.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from bot.settings import Settings
from connectors.base import BillingSource, CrmSource

BILLING_SYSTEMS = ("stripe", "quickbooks")
CRM_SYSTEMS = ("hubspot",)
ALL_SYSTEMS = BILLING_SYSTEMS + CRM_SYSTEMS


@dataclass(frozen=True)
class NotConfigured:
    system: str
    missing: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.system}: not configured (set {', '.join(self.missing)})"


def _missing(settings: Settings, system: str) -> tuple[str, ...]:
    if system == "stripe":
        return () if settings.stripe_api_key else ("STRIPE_API_KEY",)
    if system == "quickbooks":
        need = {"QUICKBOOKS_CLIENT_ID": settings.quickbooks_client_id,
                "QUICKBOOKS_CLIENT_SECRET": settings.quickbooks_client_secret,
                "QUICKBOOKS_REALM_ID": settings.quickbooks_realm_id,
                "QUICKBOOKS_REFRESH_TOKEN": settings.quickbooks_refresh_token}
        return tuple(k for k, v in need.items() if not v)
    if system == "hubspot":
        return () if settings.hubspot_access_token else ("HUBSPOT_ACCESS_TOKEN",)
    raise ValueError(f"unknown system {system!r}")


def configured(settings: Settings) -> list[str]:
    return [s for s in ALL_SYSTEMS if not _missing(settings, s)]


def billing_source(settings: Settings, system: str, engine: Engine
                   ) -> BillingSource | NotConfigured:
    missing = _missing(settings, system)
    if missing:
        return NotConfigured(system, missing)
    attempts = settings.connector_max_retries
    if system == "stripe":
        from connectors.stripe_billing import StripeBilling

        assert settings.stripe_api_key is not None
        return StripeBilling(api_key=settings.stripe_api_key.get_secret_value(),
                             api_base=settings.stripe_api_base,
                             company_timezone=settings.dunning_timezone,
                             company_country=settings.dunning_country, attempts=attempts,
                             paid_lookback_days=settings.connector_paid_lookback_days)
    from connectors.quickbooks_billing import QuickBooksBilling
    from services.credentials import DbTokenStore

    assert settings.quickbooks_client_secret is not None
    assert settings.quickbooks_refresh_token is not None
    return QuickBooksBilling(
        client_id=settings.quickbooks_client_id or "",
        client_secret=settings.quickbooks_client_secret.get_secret_value(),
        realm_id=settings.quickbooks_realm_id or "",
        refresh_token=settings.quickbooks_refresh_token.get_secret_value(),
        environment=settings.quickbooks_environment,
        api_url=settings.quickbooks_api_url, token_url=settings.quickbooks_token_url,
        token_store=DbTokenStore(engine, "quickbooks"),
        company_timezone=settings.dunning_timezone, company_country=settings.dunning_country,
        company_currency=settings.dunning_currency, timeout=settings.connector_timeout_seconds,
        attempts=attempts, paid_lookback_days=settings.connector_paid_lookback_days)


def crm_source(settings: Settings) -> CrmSource | NotConfigured:
    missing = _missing(settings, "hubspot")
    if missing:
        return NotConfigured("hubspot", missing)
    from connectors.hubspot_crm import HubSpotCrm

    assert settings.hubspot_access_token is not None
    return HubSpotCrm(access_token=settings.hubspot_access_token.get_secret_value(),
                      host=settings.hubspot_api_host,
                      id_properties={"stripe": settings.hubspot_stripe_id_property,
                                     "quickbooks": settings.hubspot_quickbooks_id_property},
                      attempts=settings.connector_max_retries,
                      timeout=settings.connector_timeout_seconds)
