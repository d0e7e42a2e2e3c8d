"""Money as Decimal in the domain and integer minor units in storage; never float."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

# ISO 4217 currencies whose minor unit is not 2 decimals; every other code uses 2.
_EXPONENTS = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0,
    "XPF": 0, "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
}


class MoneyError(ValueError):
    """An amount that cannot be represented exactly in its currency."""


def exponent(currency: str) -> int:
    return _EXPONENTS.get(currency.upper(), 2)


def is_currency_code(code: str) -> bool:
    return len(code) == 3 and code.isascii() and code.isalpha() and code.isupper()


def parse_amount(text: str, currency: str) -> Decimal:
    """Parse a decimal string exactly; refuse more decimals than the currency has."""
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, AttributeError) as exc:
        raise MoneyError(f"not a decimal amount: {text!r}") from exc
    if not value.is_finite():
        raise MoneyError(f"not a decimal amount: {text!r}")
    places = exponent(currency)
    if value != value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN):
        raise MoneyError(f"{text!r} has more than {places} decimal places, too many for {currency}")
    return quantize(value, currency)


def quantize(value: Decimal, currency: str) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-exponent(currency)), rounding=ROUND_HALF_EVEN)


def to_minor(value: Decimal, currency: str) -> int:
    return int(quantize(value, currency).scaleb(exponent(currency)))


def from_minor(minor: int, currency: str) -> Decimal:
    return quantize(Decimal(minor).scaleb(-exponent(currency)), currency)


def format_money(value: Decimal, currency: str) -> str:
    """`1,234.50 USD`: how cards and the CLI show an amount."""
    return f"{quantize(value, currency):,} {currency}"
