"""SUVbw scale factor of a PET series, following the QIBA vendor-neutral pseudo-code.

``SUVbw = (stored · RescaleSlope + RescaleIntercept) · suv_factor`` with ``suv_factor`` in
g/Bq (≙ mL/Bq for tissue of unit density)::

    require (0028,0051) Corrected Image ⊇ {ATTN, DECY}
    (0054,1102) Decay Correction: START (decay to scan start) or ADMIN (to injection: no decay)
    (0054,1001) Units:
      BQML  → weight[kg] · 1000 / (dose[Bq] · 2^(−Δt / half-life))
      CNTS  → Philips (7053,1000) SUV scale factor, or (7053,1009) Bq/mL factor · BQML factor
      GML   → 1 (already SUVbw)

Δt is scan start − injection. The scan start is (0008,0021/0031) *Series Date/Time* when it
is not later than the earliest (0008,0022/0032) *Acquisition Date/Time*; otherwise (the
series was post-processed and re-timed) the GE private (0009,100D) scan datetime if present,
else the earliest acquisition time. The injection is (0018,1078) *Radiopharmaceutical Start
DateTime*, or *Series Date* + (0018,1072) *Radiopharmaceutical Start Time*, moved back one
day when that falls after the scan (injection before midnight, scan after).
(0018,1074) *Radionuclide Total Dose* is in Bq for PT.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.valuerep import DA, DT, TM

from fedmi.client.ingest.errors import IngestError

GE_PRIVATE_CREATOR = "GEMS_PETD_01"
PHILIPS_PRIVATE_CREATOR = "Philips PET Private Group"

#: Plausible ranges; outside them the header is more likely wrong than the patient.
WEIGHT_RANGE_KG = (1.0, 400.0)
DOSE_RANGE_BQ = (1.0e6, 5.0e10)
MAX_UPTAKE_S = 24 * 3600.0


@dataclass(frozen=True)
class SuvResult:
    """The SUVbw factor and how it was obtained.

    Attributes
    ----------
    factor
        g/Bq; multiply rescaled pixel values (Bq/mL) by it to get SUVbw.
    units
        (0054,1001) *Units* of the stored values.
    uptake_s
        Injection-to-scan-start time in s (``None`` when not needed, e.g. GML).
    notes
        Non-fatal remarks (midnight crossing, GE private time used, ...).
    """

    factor: float
    units: str
    uptake_s: float | None
    notes: tuple[str, ...] = ()


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip("\x00 ")
    return str(value).strip()


def _float(value: object) -> float | None:
    s = _text(value)
    if not s:
        return None
    try:
        return float(s.split("\\")[0])
    except ValueError:
        return None


def _naive(d: dt.datetime) -> dt.datetime:
    return d.replace(tzinfo=None)


def parse_datetime(date: object, time: object) -> dt.datetime | None:
    """Combine a DA and a TM value (either may be ``None``) into a naive datetime."""
    ds, ts = _text(date), _text(time)
    if not ds or not ts:
        return None
    try:
        return dt.datetime.combine(DA(ds), TM(ts))
    except (ValueError, TypeError):
        return None


def parse_dt(value: object) -> dt.datetime | None:
    """Parse a DT value into a naive datetime (time-zone offsets dropped: all times are local)."""
    s = _text(value)
    if len(s) < 8:
        return None
    try:
        return _naive(DT(s))
    except (ValueError, TypeError):
        return None


def _private(ds: Dataset, group: int, creator: str, offset: int) -> object | None:
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
    ge = parse_dt(_private(first, 0x0009, GE_PRIVATE_CREATOR, 0x0D))
    if ge is not None:
        return ge, "ge_private"
    return earliest, "acquisition"


def _radiopharm_item(ds: Dataset) -> Dataset | None:
    seq = ds.get("RadiopharmaceuticalInformationSequence")
    return seq[0] if seq else None


def _bqml_factor(
    datasets: Sequence[Dataset], series: str, acquisition_times: Sequence[dt.datetime | None]
) -> tuple[float, float, list[str]]:
    first = datasets[0]
    notes: list[str] = []
    fix = "Fill the tag at the scanner/PACS or re-export the series with its patient module."
    weight = _float(first.get("PatientWeight"))
    if weight is None or weight <= 0:
        raise IngestError(
            "missing_suv_tags",
            f"{series}: (0010,1030) Patient Weight is missing or zero, so SUVbw cannot be "
            f"computed. {fix}",
        )
    if not WEIGHT_RANGE_KG[0] <= weight <= WEIGHT_RANGE_KG[1]:
        raise IngestError(
            "implausible_suv_tags",
            f"{series}: (0010,1030) Patient Weight = {weight:g} kg is implausible "
            "(expected kilograms). Correct the weight in the header.",
        )
    item = _radiopharm_item(first)
    if item is None:
        raise IngestError(
            "missing_suv_tags",
            f"{series}: no (0054,0016) Radiopharmaceutical Information Sequence (dose, "
            f"half-life, injection time). {fix}",
        )
    dose = _float(item.get("RadionuclideTotalDose"))
    if dose is None or dose <= 0:
        raise IngestError(
            "missing_suv_tags",
            f"{series}: (0018,1074) Radionuclide Total Dose is missing or zero. {fix}",
        )
    if not DOSE_RANGE_BQ[0] <= dose <= DOSE_RANGE_BQ[1]:
        raise IngestError(
            "implausible_suv_tags",
            f"{series}: (0018,1074) Radionuclide Total Dose = {dose:g} Bq is implausible for PET "
            "(the standard requires Bq; was it written in MBq?). Correct the dose in the header.",
        )
    half_life = _float(item.get("RadionuclideHalfLife"))
    if half_life is None or half_life <= 0:
        raise IngestError(
            "missing_suv_tags",
            f"{series}: (0018,1075) Radionuclide Half Life is missing or zero. {fix}",
        )
    decay = _text(first.get("DecayCorrection")).upper()
    if decay == "ADMIN":
        notes.append("decay_correction_admin")
        return weight * 1000.0 / dose, 0.0, notes

    scan, source = scan_datetime(first, acquisition_times)
    if source != "series":
        notes.append(f"scan_time_from_{source}")
    if scan is None:
        raise IngestError(
            "missing_suv_tags",
            f"{series}: neither (0008,0021/0031) Series Date/Time nor (0008,0022/0032) "
            f"Acquisition Date/Time is present, so the decay time is unknown. {fix}",
        )
    inj = parse_dt(item.get("RadiopharmaceuticalStartDateTime"))
    if inj is None:
        start = _text(item.get("RadiopharmaceuticalStartTime"))
        date = _text(first.get("SeriesDate")) or scan.strftime("%Y%m%d")
        inj = parse_datetime(date, start)
        if inj is None:
            raise IngestError(
                "missing_suv_tags",
                f"{series}: neither (0018,1078) Radiopharmaceutical Start DateTime nor "
                f"(0018,1072) Radiopharmaceutical Start Time is present. {fix}",
            )
        if inj > scan:
            inj -= dt.timedelta(days=1)
            notes.append("injection_before_midnight")
    uptake = (scan - inj).total_seconds()
    if not 0.0 <= uptake <= MAX_UPTAKE_S:
        raise IngestError(
            "implausible_suv_tags",
            f"{series}: injection-to-scan time is {uptake / 60:.1f} min (injection "
            f"{inj:%Y-%m-%d %H:%M:%S}, scan {scan:%Y-%m-%d %H:%M:%S}). Check "
            "(0018,1078)/(0018,1072) Radiopharmaceutical Start DateTime/Time and the series "
            "and acquisition times.",
        )
    decayed = dose * 2.0 ** (-uptake / half_life)
    return weight * 1000.0 / decayed, uptake, notes


def suv_factor(
    datasets: Sequence[Dataset],
    series: str = "series",
    acquisition_times: Sequence[dt.datetime | None] | None = None,
) -> SuvResult:
    """QIBA SUVbw factor (g/Bq) of a PET series.

    Parameters
    ----------
    datasets
        The series' slices (headers); the first supplies series-level attributes.
    series
        Series description for error messages.
    acquisition_times
        Per-slice acquisition datetimes, when the caller already parsed them.

    Raises
    ------
    IngestError
        ``not_corrected``, ``unsupported_decay_correction``, ``unsupported_units``,
        ``missing_suv_tags`` or ``implausible_suv_tags``.
    """
    first = datasets[0]
    corrected = {_text(v).upper() for v in (first.get("CorrectedImage") or [])}
    if not {"ATTN", "DECY"} <= corrected:
        lacking = sorted({"ATTN", "DECY"} - corrected)
        raise IngestError(
            "not_corrected",
            f"{series}: (0028,0051) Corrected Image lacks {'/'.join(lacking)}, so the values are "
            "not attenuation- and decay-corrected activity. Export the AC, decay-corrected "
            "reconstruction.",
        )
    decay = _text(first.get("DecayCorrection")).upper()
    if decay not in ("START", "ADMIN"):
        raise IngestError(
            "unsupported_decay_correction",
            f"{series}: (0054,1102) Decay Correction is {decay or 'absent'!r}; SUV needs START "
            "(or ADMIN). Export the series decay-corrected to the scan start.",
        )
    units = _text(first.get("Units")).upper()
    if acquisition_times is None:
        acquisition_times = [acquisition_datetime(d) for d in datasets]
    if units == "GML":
        return SuvResult(1.0, units, None, ("units_gml",))
    if units == "BQML":
        f, uptake, notes = _bqml_factor(datasets, series, acquisition_times)
        return SuvResult(f, units, uptake, tuple(notes))
    if units == "CNTS":
        suv = _float(_private(first, 0x7053, PHILIPS_PRIVATE_CREATOR, 0x00))
        if suv is not None and suv > 0:
            return SuvResult(suv, units, None, ("philips_suv_factor",))
        bqml = _float(_private(first, 0x7053, PHILIPS_PRIVATE_CREATOR, 0x09))
        if bqml is not None and bqml > 0:
            f, uptake, notes = _bqml_factor(datasets, series, acquisition_times)
            return SuvResult(bqml * f, units, uptake, (*notes, "philips_bqml_factor"))
    raise IngestError(
        "unsupported_units",
        f"{series}: (0054,1001) Units is {units or 'absent'!r}; ingest needs BQML, GML, or CNTS "
        "with the Philips (7053,1000)/(7053,1009) scale factors. Export the series in Bq/mL.",
    )
