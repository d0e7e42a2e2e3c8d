"""Prompt-injection screening of customer replies, by rules, in EN/DE/FR/ES.

A customer reply is untrusted text that may later reach a language model (drafting, the
LLM classifier) or a person in Slack. The screen flags text that talks to the machine
instead of to the AR team: instructions to an AI/assistant/bot, "ignore previous
instructions", chat role markers, requests to change dunning state (tiers, reminders,
paid status) or to reveal other customers, and text hidden from the human reader
(zero-width characters, HTML/markdown comments, base64 blobs).

Why two strengths: "please stop the reminders, we paid" is an ordinary sentence from a real
customer, so requests to change state only count once the reply also shows a strong sign
(addressing a model, overriding instructions, role markers, hidden text). `spans` lists
the character ranges that carry the attempt so the classifier can ignore them and an
attempt never changes what the genuine content says.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import re
from dataclasses import dataclass

_F = re.IGNORECASE | re.MULTILINE


@dataclass(frozen=True)
class Screening:
    suspected: bool
    reasons: tuple[str, ...]
    spans: tuple[tuple[int, int], ...] = ()  # [start, end) offsets of the suspicious text


@dataclass(frozen=True)
class _Rule:
    reason: str
    pattern: re.Pattern[str]
    strong: bool = True
    whole: bool = False  # the match itself is the span (not its sentence)


_AI = (r"(?:a\.?i\.?|k\.?i\.?|i\.?a\.?|llm|gpt|chat\s?gpt|chatbot|bot|language\s+model|model|"
       r"sprachmodell|modell|modèle(?:\s+de\s+langage)?|modelo(?:\s+de\s+lenguaje)?|"
       r"assistant|assistent(?:in)?|asistente|agent|agente)")

_RULES: tuple[_Rule, ...] = (
    # Overriding the instructions a model was given.
    _Rule("instruction override", re.compile(
        r"\b(?:ignore|disregard|forget|override|bypass)\b[^.!?\n]{0,40}?"
        r"(?:\b(?:previous|prior|above|earlier|preceding|original|all|any|your|its|system)\s+"
        r"(?:instructions?|prompts?|rules|guidelines|directives?|policies|programming)|"
        r"\bthe\s+(?:instructions?|(?:system\s+)?prompt))\b", _F)),
    _Rule("instruction override", re.compile(
        r"\b(?:ignorier(?:e|en\s+sie)?|vergiss|vergessen\s+sie|missachte(?:n\s+sie)?)\b"
        r"[^.!?\n]{0,40}?\b(?:anweisungen|instruktionen|regeln|befehle|vorgaben|prompts?)\b",
        _F)),
    _Rule("instruction override", re.compile(
        r"\b(?:ignore[zs]?|oublie[zs]?|ne\s+tiens\s+pas\s+compte)\b[^.!?\n]{0,40}?"
        r"\b(?:instructions|consignes|règles|directives)\b", _F)),
    _Rule("instruction override", re.compile(
        r"\b(?:ignora|ignore|ignoren|olvida|olvide|olviden)\b[^.!?\n]{0,40}?"
        r"\b(?:instrucciones|reglas|indicaciones|directrices)\b", _F)),
    _Rule("instruction override", re.compile(
        r"\b(?:new\s+instructions|system\s+prompt|systemprompt|prompt\s+système|"
        r"prompt\s+del\s+sistema|developer\s+mode|admin(?:istrator)?\s+mode|jailbreak|"
        r"do\s+anything\s+now)\b", _F)),
    # Re-assigning the model's role.
    _Rule("role reassignment", re.compile(
        r"\b(?:you\s+are\s+now|from\s+now\s+on\s+you\s+are|act\s+as|pretend\s+(?:to\s+be|you)|"
        r"you\s+are\s+(?:an?|the)\s+[^.!?\n]{0,30}?\b(?:assistant|bot|ai|model|agent)\b|"
        r"du\s+bist\s+(?:jetzt|nun|ab\s+sofort)|tu\s+es\s+(?:maintenant|désormais)|"
        r"vous\s+êtes\s+(?:maintenant|désormais)|en\s+tant\s+qu['’]\s?(?:assistant|ia)|"
        r"ahora\s+eres|actúa\s+como|como\s+asistente)\b", _F)),
    # Chat-template and role markers.
    _Rule("role marker", re.compile(
        r"<\|\s*(?:im_start|im_end|system|assistant|user|endoftext)\s*\|>|\[/?INST\]|"
        r"<</?SYS>>|^\s*#{2,}\s*(?:system|instruction|assistant)\b", _F)),
    _Rule("role marker", re.compile(
        r"(?:^|(?<=[\u200b-\u200f\u2060\ufeff])|(?<=[.!?]\s))[ \t\u200b-\u200f\u2060\ufeff]*"
        r"[\[(]?(?:system|système|systeme|sistema|assistant|assistent|asistente|developer)"
        r"[\])]?\s*:", _F)),
    # Talking to the machine rather than to people.
    _Rule("addresses an AI", re.compile(
        r"\b(?:note|message|instructions?|hint|reminder|memo)\s+(?:to|for)\s+(?:the\s+|any\s+)?"
        + _AI + r"\b|\b(?:dear|hey|attention)\s+" + _AI + r"\b|"
        r"\b(?:the|any)\s+" + _AI + r"\s+(?:reading|processing|parsing|summari[sz]ing)\b|"
        r"\bif\s+you\s+are\s+an?\s+" + _AI + r"\b|\bAI\s+assistant\b|"
        r"\b(?:your|the)\s+(?:dunning|collections?|billing)\s+(?:bot|ai|assistant|system)\s+"
        r"(?:should|must|will|needs?\s+to)\b|"
        r"\b(?:hinweis|nachricht|anweisung)\s+(?:an|für)\s+(?:die|den|das)\s+" + _AI + r"\b|"
        r"\bliebe[rs]?\s+" + _AI + r"\b|"
        r"\b(?:note|message|instruction|consigne)\s+(?:pour|à)\s+(?:l['’]\s?|le\s+|la\s+)"
        + _AI + r"\b|\bcher\s+" + _AI + r"\b|"
        r"\b(?:nota|mensaje|instrucción)\s+(?:para|a)\s+(?:la|el)\s+" + _AI + r"\b|"
        r"^\s*" + _AI + r"\s*[,:]", _F)),
    # Reaching for other customers' data or the configuration.
    _Rule("asks to reveal other customers or internals", re.compile(
        r"\b(?:list|show|reveal|output|give|send|tell|print|share|disclose)\b[^.!?\n]{0,60}?"
        r"\b(?:other|all|every)\s+(?:customers?|clients?|debtors?)\b|"
        r"\b(?:other|all)\s+(?:customers?|clients?)['’]?\s+(?:balances?|emails?|data|details)|"
        r"\b(?:andere[nr]?|alle[nr]?)\s+kunden\b[^.!?\n]{0,40}?\b(?:zeige|nenne|liste|gib)|"
        r"\b(?:zeige|nenne|liste|gib)\b[^.!?\n]{0,40}?\b(?:andere[nr]?|alle[nr]?)\s+kunden\b|"
        r"\b(?:révéle[zr]?|montre[zr]?|liste[zr]?|donne[zr]?|envoie[zr]?|indique[zr]?)\b"
        r"[^.!?\n]{0,40}?\b(?:autres|tous\s+les)\s+clients\b|"
        r"\b(?:muestr[ae]n?|list[ae]n?|d[ae]n?|env[ií][ae]n?|revel[ae]n?|indic[ae]n?)\b"
        r"[^.!?\n]{0,40}?\b(?:otros|todos\s+los)\s+clientes\b|"
        r"\b(?:reply|respond|answer)\s+with\s+(?:your|the)\s+(?:prompt|instructions|rules)",
        _F)),
    _Rule("asks to change the dunning tier or classification", re.compile(
        r"\b(?:set|change|move|lower|downgrade|put|reset)\b[^.!?\n]{0,40}?"
        r"\b(?:dunning|collections?|escalation|reminder)\s+(?:tier|level|stage|status)\b|"
        r"\b(?:tier|level)\s+(?:to\s+)?0\b|"
        r"\b(?:classify|label|categori[sz]e|tag)\s+(?:this|it|the\s+(?:reply|email|message))\s+"
        r"as\b|"
        r"\bsetze?\b[^.!?\n]{0,40}?\bmahnstufe\b|\bniedrigste\s+mahnstufe\b|"
        r"\bniveau\s+de\s+relance\b|\bnivel\s+de\s+(?:cobro|recordatorio)", _F)),
    # Requests to change state: ordinary on their own, part of an attempt beside a strong sign.
    _Rule("asks to mark invoices paid", re.compile(
        r"\bmark\b[^.!?\n]{0,50}?\bas\s+(?:paid|settled|closed)\b|"
        r"\b(?:markiere|markieren)\b[^.!?\n]{0,40}?\bals\s+(?:bezahlt|erledigt)|"
        r"\bals\s+(?:bezahlt|erledigt)\s+markieren\b|"
        r"\bmarque[zr]?\b[^.!?\n]{0,40}?\bcomme\s+(?:payée?s?|réglée?s?)|"
        r"\bindiquer\s+que\s+la\s+facture\s+est\s+payée|"
        r"\bmarca(?:r|d)?\b[^.!?\n]{0,40}?\bcomo\s+pagad[ao]s?|"
        r"\bclose\s+the\s+(?:case|ticket|account)\b", _F), strong=False),
    _Rule("asks to stop reminders", re.compile(
        r"\b(?:stop|pause|disable|cancel|suppress)\b[^.!?\n]{0,20}?\b(?:reminders?|dunning|"
        r"collections?|escalations?)\b|"
        r"\bdo\s+not\s+send\s+(?:any\s+)?(?:more|further)?\s*reminders\b|"
        r"\bkeine\s+(?:weiteren\s+)?mahnungen\b|\bmahnungen\s+(?:stoppen|einstellen)\b|"
        r"\barrête[rz]?\b[^.!?\n]{0,20}?\brelances\b|"
        r"\b(?:dejen?|deje|detén|detener)\b[^.!?\n]{0,20}?\brecordatorios\b", _F),
        strong=False),
    _Rule("asks to waive fees or approve an extension", re.compile(
        r"\bwaive\b[^.!?\n]{0,30}?\bfees?\b|"
        r"\bapprove\b[^.!?\n]{0,30}?\bextension\b|\breply\s+['\"‘“]?confirmed", _F),
        strong=False),
)

_HIDDEN_CHARS = re.compile(r"[\u200b-\u200f\u2060-\u2064\u202a-\u202e\u2066-\u2069\u180e]|"
                           r"(?<!^)\ufeff")
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.DOTALL)
_MD_COMMENT = re.compile(r"^\s*\[(?://|comment|_|#)\]:\s*(?:#|<>)\s*(?:\(.*?\)|\".*?\"|'.*?')",
                         re.MULTILINE | re.DOTALL)
_HIDDEN_HTML = re.compile(r"<[^>]{0,200}?style\s*=\s*['\"][^'\"]*(?:display\s*:\s*none|"
                          r"font-size\s*:\s*0|visibility\s*:\s*hidden|color\s*:\s*"
                          r"(?:#fff(?:fff)?|white))[^>]*>.*?(?:</[a-z]+>|$)",
                          re.IGNORECASE | re.DOTALL)
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/]{24,}={0,2}(?![A-Za-z0-9+/=_-])")
_SENTENCE_END = re.compile(r"[.!?](?=[\s\u200b-\u200f\u2060\ufeff])|\n|[\u200b-\u200f\u2060\ufeff]")


def _decoded_text(blob: str) -> str | None:
    """The blob's text if it is base64 of something a person (or a model) could read."""
    if not (re.search(r"[a-z]", blob) and re.search(r"[A-Z]", blob)):
        return None  # references and hashes are usually one case
    try:
        raw = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True)
        decoded = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    if not decoded or not all(ch.isprintable() or ch in "\n\t" for ch in decoded):
        return None
    return decoded if " " in decoded else None


def _sentence_span(text: str, start: int, end: int,
                   bounds: list[int] | None = None) -> tuple[int, int]:
    """Widen [start, end) to the sentence (or line) around it; `bounds` are the sentence
    ends of `text`, computed once by the caller when there are many spans."""
    if bounds is None:
        bounds = [m.end() for m in _SENTENCE_END.finditer(text)]
    i = bisect.bisect_right(bounds, start)
    left = bounds[i - 1] if i else 0
    j = bisect.bisect_left(bounds, end + 1)
    right = bounds[j] if j < len(bounds) else len(text)
    return left, max(right, end)


def _hidden(text: str) -> tuple[list[str], list[tuple[int, int]], list[str]]:
    """Reasons, spans and revealed texts of the tricks that hide text from the reader."""
    reasons: list[str] = []
    spans: list[tuple[int, int]] = []
    revealed: list[str] = []
    if _HIDDEN_CHARS.search(text):
        reasons.append("hidden characters (zero-width or direction control)")
    for pattern, reason in ((_HTML_COMMENT, "hidden HTML comment"),
                            (_MD_COMMENT, "hidden markdown comment"),
                            (_HIDDEN_HTML, "text hidden by HTML styling")):
        for m in pattern.finditer(text):
            if re.search(r"\w", m.group(0)):
                reasons.append(reason)
                spans.append((m.start(), m.end()))
                revealed.append(m.group(0))
    for m in _BASE64.finditer(text):
        decoded = _decoded_text(m.group(0))
        if decoded is not None:
            reasons.append("base64-encoded text")
            spans.append((m.start(), m.end()))
            revealed.append(decoded)
    return reasons, spans, revealed


def _rule_hits(text: str) -> tuple[list[tuple[_Rule, int, int]], bool]:
    hits: list[tuple[_Rule, int, int]] = []
    for rule in _RULES:
        for m in rule.pattern.finditer(text):
            hits.append((rule, m.start(), m.end()))
    return hits, any(rule.strong for rule, _, _ in hits)


def screen(text: str) -> Screening:
    """Flag a reply that tries to instruct the machine; no I/O, never raises on text."""
    reasons, spans, revealed = _hidden(text)
    hits, strong = _rule_hits(text)
    found = {rule.reason for rule, _, _ in hits}
    # Zero-width characters can split words ("ig\u200bnore"): read the text without them,
    # and whatever the sender hid inside them (comments, base64), too.
    visible = _HIDDEN_CHARS.sub("", text)
    for other in ([visible] if visible != text else []) + revealed:
        more, more_strong = _rule_hits(other)
        found.update(rule.reason for rule, _, _ in more)
        strong = strong or more_strong
    if not (reasons or strong):
        return Screening(False, ())
    bounds = [m.end() for m in _SENTENCE_END.finditer(text)]
    for rule, start, end in hits:
        spans.append((start, end) if rule.whole else _sentence_span(text, start, end, bounds))
    marks = [m.start() for m in _HIDDEN_CHARS.finditer(text)]
    if marks:
        # The text between zero-width characters is what the sender hid from the reader.
        spans.append((marks[0], marks[-1] + 1))
    ordered = list(reasons) + [rule.reason for rule in _RULES if rule.reason in found]
    return Screening(True, tuple(dict.fromkeys(ordered)), tuple(_merge(spans)))


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out
