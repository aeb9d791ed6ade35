"""General English the vocabulary adds to what the database names: abbreviations and everyday words for common
measures, attribute values and verbs. Nothing here is specific to one data set: each entry only counts where a
schema, kind or relation type of the database has the word it leads to."""

from __future__ import annotations

import re


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# everyday word or abbreviation → the words a label, schema or kind might use for it
SYNONYMS: dict[str, tuple[str, ...]] = {
    "temp": ("temperature",),
    "temps": ("temperature",),
    "fever": ("temperature",),
    "body temperature": ("temperature",),
    "pulse": ("heart rate",),
    "hr": ("heart rate",),
    "bpm": ("heart rate",),
    "heartbeat": ("heart rate",),
    "heart beat": ("heart rate",),
    "bp": ("blood pressure",),
    "sats": ("spo2",),
    "sat": ("spo2",),
    "o2": ("spo2",),
    "o2 sat": ("spo2",),
    "o2 sats": ("spo2",),
    "oxygen": ("spo2",),
    "oxygen saturation": ("spo2",),
    "oxygen level": ("spo2",),
    "oxygen levels": ("spo2",),
    "saturation": ("spo2",),
    "rr": ("respiratory rate",),
    "resp rate": ("respiratory rate",),
    "breathing rate": ("respiratory rate",),
    "breathing": ("respiratory rate",),
    "respiration": ("respiratory rate",),
    "body mass index": ("bmi",),
    "sugar": ("glucose",),
    "blood sugar": ("glucose",),
    "a1c": ("hba1c",),
    "cholesterol": ("cholesterol total",),
    "white blood cells": ("leukocytes",),
    "white cell count": ("leukocytes",),
    "wbc": ("leukocytes",),
    "red blood cells": ("erythrocytes",),
    "rbc": ("erythrocytes",),
    "haemoglobin": ("hemoglobin",),
    "hb": ("hemoglobin",),
    "bun": ("urea nitrogen",),
    "kidney function": ("egfr",),
    "stock": ("on hand",),
    "stocks": ("on hand",),
    "stock level": ("on hand",),
    "stock levels": ("on hand",),
    "inventory": ("on hand",),
    "inventory level": ("on hand",),
    "units on hand": ("on hand",),
    "onhand": ("on hand",),
    "shipped": ("out",),
    "sold": ("out",),
    "sell": ("out",),
    "sells": ("out",),
    "sales": ("out",),
    "shipments": ("out",),
    "outflow": ("out",),
    "outbound": ("out",),
    "sent out": ("out",),
    "received": ("in",),
    "receipts": ("in",),
    "inflow": ("in",),
    "inbound": ("in",),
    "deliveries": ("in",),
    "closing balance": ("new",),
    "current balance": ("new",),
    "new balance": ("new",),
    "opening balance": ("old",),
    "previous balance": ("old",),
    "old balance": ("old",),
    "money": ("balance",),
    "funds": ("balance",),
    "serves": ("supplies",),
    "serve": ("supply",),
    "served by": ("supplied by",),
    "delivers to": ("ships to",),
    "deliver to": ("ship to",),
    "delivered to": ("shipped to",),
    "clinician": ("practitioner",),
    "clinicians": ("practitioner",),
    "carer": ("practitioner",),
    "carers": ("practitioner",),
    "client": ("customer",),
    "clients": ("customer",),
    "shop": ("merchant", "retailer"),
    "shops": ("merchant", "retailer"),
    "store": ("retailer",),
    "stores": ("retailer",),
    "hospital": ("organization",),
    "hospitals": ("organization",),
    "clinic": ("organization",),
    "clinics": ("organization",),
    "organisation": ("organization",),
    "organisations": ("organization",),
    "sku": ("product",),
    "skus": ("product",),
    "item": ("product",),
    "items": ("product",),
    "vendor": ("supplier",),
    "vendors": ("supplier",),
    "plant": ("factory",),
    "plants": ("factory",),
    "depot": ("warehouse",),
    "depots": ("warehouse",),
    "dc": ("warehouse",),
}
# everyday words for attribute values (as they are stored, lower-cased)
VALUE_WORDS: dict[str, tuple[str, ...]] = {
    "f": ("female", "females", "woman", "women", "girl", "girls"),
    "female": ("females", "woman", "women", "girl", "girls"),
    "m": ("male", "males", "man", "men", "boy", "boys"),
    "male": ("males", "man", "men", "boy", "boys"),
}
IRREGULAR_PAST = {"pay": "paid", "hold": "held", "send": "sent", "sell": "sold", "buy": "bought", "make": "made"}
# words a label may share with everyday speech: they name the label only through SYNONYMS
COMMON = _words(
    """
    in out old new on off up down high low max min all any one value values total level levels count rate
    """
)
STOP = _words(
    """
    a an the of for on at in to by from with and or but is are was were be been being am do does did has have
    had what whats what's which who whom whose when where how show me tell give get find list display plot chart
    graph see look please can could would you i we my our us it its this that these those there their them they
    as about was recorded measured reading readings value values level levels data number numbers record records
    is any all every each whole entire much many currently current now latest recent most last first so far
    during within since until till up down per time times day days week weeks month months year years hour hours
    yesterday today date dates between through thru over under above below than more less then also just only
    higher lower greater bigger smaller better worse normal high low elevated okay fine healthy anything
    something everything nothing anyone someone running run runs doing getting looking look kg c f cm mg dl mmol
    celsius fahrenheit mmhg percent across among amongst throughout unit units amount quantity fraud fraudulent
    overall everyone everybody some ever seen happen happened happening go going got thing things ok kindly hey
    hi pls plz
    """
)
ORDINAL = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5,
}  # fmt: skip
_VOWEL = re.compile(r"[aeiou]")


def plural(word: str) -> str:
    if word.endswith("y") and len(word) > 2 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    return word + "s"


def verb_base(word: str) -> str:
    """The base form of a relation type's verb: treats → treat, supplies → supply, referred → refer."""
    for past, base in ((v, k) for k, v in IRREGULAR_PAST.items()):
        if word == past:
            return base
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "ches", "shes", "xes")):
        return word[:-2]
    if word.endswith("ed") and len(word) > 4:
        stem = word[:-2]
        return stem[:-1] if len(stem) > 2 and stem[-1] == stem[-2] else stem
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def verb_forms(base: str) -> dict[str, str]:
    """Forms of a verb by use: present (treat, treats), past (treated), ing, agent (treater)."""
    doubled = base + base[-1] if _short_cvc(base) else base
    if base in IRREGULAR_PAST:
        past = IRREGULAR_PAST[base]
    elif base.endswith("e"):
        past = base + "d"
    elif base.endswith("y") and base[-2:-1] not in ("a", "e", "o", "u"):
        past = base[:-1] + "ied"
    else:
        past = doubled + "ed"
    ing = (base[:-1] if base.endswith("e") and not base.endswith("ee") else doubled) + "ing"
    if base.endswith("e"):
        agent = base + "r"
    elif base.endswith("y") and base[-2:-1] not in ("a", "e", "o", "u"):
        agent = base[:-1] + "ier"
    else:
        agent = doubled + "er"
    third = plural(base) if not base.endswith("y") or base[-2:-1] in ("a", "e", "o", "u") else base[:-1] + "ies"
    return {"base": base, "third": third, "past": past, "ing": ing, "agent": agent}


def _short_cvc(word: str) -> bool:
    """ship → shipp(ed): a short verb ending consonant-vowel-consonant doubles its last letter."""
    if len(word) < 3 or word[-1] in "aeiouwxy":
        return False
    return bool(_VOWEL.match(word[-2])) and not _VOWEL.match(word[-3]) and len(word) <= 4
