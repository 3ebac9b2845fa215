"""Dates and times in a PET header: DA/TM/DT parsing, acquisition times and the scan start.

All times are taken as local, naive datetimes (time-zone offsets are dropped). The scan
start follows QIBA: (0008,0021/0031) *Series Date/Time* when it is not later than the
earliest (0008,0022/0032) *Acquisition Date/Time*; otherwise the GE private (0009,100D)
scan datetime if present, else the earliest acquisition time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from pydicom.dataset import Dataset
from pydicom.valuerep import DA, DT, TM

GE_PRIVATE_CREATOR = "GEMS_PETD_01"


def value_text(value: object) -> str:
    """A header value as stripped text (bytes decoded as ASCII); empty for ``None``."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip("\x00 ")
    return str(value).strip()


def value_float(value: object) -> float | None:
    """The first number of a DS/IS value (``None`` when absent or not a number)."""
    s = value_text(value)
    if not s:
        return None
    try:
        return float(s.split("\\")[0])
    except ValueError:
        return None


def _naive(d: dt.datetime) -> dt.datetime:
    """``d`` without its time zone."""
    return d.replace(tzinfo=None)


def parse_datetime(date: object, time: object) -> dt.datetime | None:
    """Combine a DA and a TM value (either may be ``None``) into a naive datetime."""
    ds, ts = value_text(date), value_text(time)
    if not ds or not ts:
        return None
    try:
        return dt.datetime.combine(DA(ds), TM(ts))
    except (ValueError, TypeError):
        return None


def parse_dt(value: object) -> dt.datetime | None:
    """Parse a DT value into a naive datetime (time-zone offsets dropped: all times are local)."""
    s = value_text(value)
    if len(s) < 8:
        return None
    try:
        return _naive(DT(s))
    except (ValueError, TypeError):
        return None


def private_value(ds: Dataset, group: int, creator: str, offset: int) -> object | None:
    """Value of the private element ``(group, creator block + offset)``, or ``None``."""
    try:
        return ds.private_block(group, creator)[offset].value
    except KeyError:
        return None


def acquisition_datetime(ds: Dataset) -> dt.datetime | None:
    """(0008,002A) *Acquisition DateTime*, else (0008,0022)/(0008,0032) *Acquisition Date/Time*."""
    adt = parse_dt(ds.get("AcquisitionDateTime"))
    return adt or parse_datetime(ds.get("AcquisitionDate"), ds.get("AcquisitionTime"))


def scan_datetime(
    first: Dataset, acquisition_times: Sequence[dt.datetime | None]
) -> tuple[dt.datetime | None, str]:
    """The QIBA scan start: Series, GE private or earliest Acquisition datetime.

    (0008,0021/0031) *Series Date/Time* when not later than the earliest of
    ``acquisition_times``; else the GE private (0009,100D) scan datetime under creator
    :data:`GE_PRIVATE_CREATOR`; else the earliest acquisition time.

    Returns
    -------
    tuple
        ``(datetime or None, source)`` with source ``series``, ``ge_private`` or ``acquisition``.
    """
    series_dt = parse_datetime(first.get("SeriesDate"), first.get("SeriesTime"))
    acq = [a for a in acquisition_times if a is not None]
    earliest = min(acq) if acq else None
    if series_dt is not None and (earliest is None or series_dt <= earliest):
        return series_dt, "series"
    ge = parse_dt(private_value(first, 0x0009, GE_PRIVATE_CREATOR, 0x0D))
    if ge is not None:
        return ge, "ge_private"
    return earliest, "acquisition"
