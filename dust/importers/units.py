"""Unit conversion for imported readings: a value in a UCUM unit other than the schema's, into the schema's.

A small explicit table rather than a library: no UCUM library is installed here (pint is not, and does not read
UCUM codes such as ``mm[Hg]``, ``[degF]`` or ``10*3/uL`` without a UCUM front end), and the readings that need
converting are few and known. Each unit is a factor to the base unit of what it measures; two units convert
when they measure the same thing. Mass and amount-of-substance concentrations (mg/dL ↔ mmol/L) convert for the
analytes whose molar mass is listed, and only those. Annotations in curly braces are unity in UCUM
(``mL/min/{1.73_m2}`` is ``mL/min``), so they are ignored when comparing units.
"""

from __future__ import annotations

import re

# UCUM code → (what it measures, factor to that quantity's base unit)
_SCALE: dict[str, tuple[str, float]] = {
    "kg": ("mass", 1.0),
    "g": ("mass", 1e-3),
    "[lb_av]": ("mass", 0.45359237),
    "[oz_av]": ("mass", 0.028349523125),
    "m": ("length", 1.0),
    "cm": ("length", 1e-2),
    "mm": ("length", 1e-3),
    "[in_i]": ("length", 0.0254),
    "[ft_i]": ("length", 0.3048),
    "mm[Hg]": ("pressure", 1.0),
    "kPa": ("pressure", 7.500615758),  # mm[Hg] in a kilopascal
    "/min": ("rate", 1.0),
    "/s": ("rate", 60.0),
    "/h": ("rate", 1 / 60),
    "%": ("fraction", 1.0),
    "1": ("fraction", 100.0),
    "g/L": ("mass concentration", 1.0),
    "g/dL": ("mass concentration", 10.0),
    "mg/dL": ("mass concentration", 1e-2),
    "mg/L": ("mass concentration", 1e-3),
    "mol/L": ("amount concentration", 1.0),
    "mmol/L": ("amount concentration", 1e-3),
    "umol/L": ("amount concentration", 1e-6),
    "10*3/uL": ("number concentration", 1e9),  # per litre
    "10*9/L": ("number concentration", 1e9),
    "10*6/uL": ("number concentration", 1e12),
    "10*12/L": ("number concentration", 1e12),
    "kg/m2": ("areal mass", 1.0),
    "mL/min": ("flow", 1.0),
    "L/min": ("flow", 1e3),
}
# Temperatures are affine: (scale, offset) to Cel, so value in Cel = value × scale + offset.
_TEMPERATURE = {"Cel": (1.0, 0.0), "[degF]": (5 / 9, -32 * 5 / 9), "K": (1.0, -273.15)}
# g/mol of analytes, by the schema label that holds them: mass ↔ amount concentration.
MOLAR_MASS = {
    "glucose": 180.156,
    "creatinine": 113.12,
    "urea_nitrogen": 28.014,  # as nitrogen: the two N of urea
    "calcium": 40.078,
    "cholesterol_total": 386.65,
    "ldl": 386.65,
    "hdl": 386.65,
    "triglycerides": 885.7,  # as triolein, the laboratory convention
    "sodium": 22.990,
    "potassium": 39.098,
    "chloride": 35.453,
}
_ANNOTATION = re.compile(r"\{[^{}]*\}")


def same(unit: str, other: str) -> bool:
    """Whether two UCUM codes name one unit, annotations aside."""
    return _plain(unit) == _plain(other)


def convert(value: float, unit: str, to: str, label: str | None = None) -> float | None:
    """``value`` in ``unit`` expressed in ``to`` (for the analyte ``label``, if a molar mass is needed), or None
    when the two do not convert."""
    unit, to = _plain(unit), _plain(to)
    if unit == to:
        return value
    if unit in _TEMPERATURE and to in _TEMPERATURE:
        (a, b), (c, d) = _TEMPERATURE[unit], _TEMPERATURE[to]
        return (value * a + b - d) / c
    if unit not in _SCALE or to not in _SCALE:
        return None
    (quantity, factor), (target, target_factor) = _SCALE[unit], _SCALE[to]
    if quantity == target:
        return value * factor / target_factor
    molar = MOLAR_MASS.get(label or "")
    if molar is None or {quantity, target} != {"mass concentration", "amount concentration"}:
        return None
    base = value * factor  # g/L or mol/L
    return (base * molar if quantity == "amount concentration" else base / molar) / target_factor


def _plain(unit: str) -> str:
    """The unit without annotations, and without the "/" or "." left dangling by removing one."""
    stripped = _ANNOTATION.sub("", unit.strip())
    return stripped.rstrip("/.") or ("1" if unit.strip() else "")
