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

from fedmi.client.ingest.errors import IngestError
from fedmi.client.ingest.times import (
    acquisition_datetime,
    parse_datetime,
    parse_dt,
    private_value,
    scan_datetime,
    value_float,
    value_text,
)

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


def _radiopharm_item(ds: Dataset) -> Dataset | None:
    """First item of (0054,0016) *Radiopharmaceutical Information Sequence*, or ``None``."""
    seq = ds.get("RadiopharmaceuticalInformationSequence")
    return seq[0] if seq else None


#: How to fix a missing SUV attribute (the end of every ``missing_suv_tags`` message).
_FIX = "Fill the tag at the scanner/PACS or re-export the series with its patient module."


def _bqml_factor(
    datasets: Sequence[Dataset], series: str, acquisition_times: Sequence[dt.datetime | None]
) -> tuple[float, float, list[str]]:
    """SUVbw factor of Bq/mL values: ``weight · 1000 / decayed dose``.

    Reads (0010,1030) *Patient Weight*, the dose and half-life of (0054,0016)
    *Radiopharmaceutical Information Sequence* and (0054,1102) *Decay Correction*; for
    ``START`` also the scan start (:func:`scan_datetime`) and the injection time
    (:func:`_injection_datetime`), for ``ADMIN`` no decay at all.

    Returns
    -------
    tuple
        ``(factor in g/Bq, uptake in s, notes)``; uptake is 0 for ``ADMIN``.

    Raises
    ------
    IngestError
        ``missing_suv_tags`` or ``implausible_suv_tags``.
    """
    first = datasets[0]
    notes: list[str] = []
    weight = _patient_weight(first, series)
    item, dose, half_life = _dose_and_half_life(first, series)
    decay = value_text(first.get("DecayCorrection")).upper()
    if decay == "ADMIN":
        notes.append("decay_correction_admin")
        return weight * 1000.0 / dose, 0.0, notes
    scan = _scan_start(first, acquisition_times, series, notes)
    inj = _injection_datetime(item, first, scan, series, notes)
    uptake = _uptake_s(scan, inj, series)
    decayed = dose * 2.0 ** (-uptake / half_life)
    return weight * 1000.0 / decayed, uptake, notes


def _patient_weight(first: Dataset, series: str) -> float:
    """(0010,1030) *Patient Weight* in kg.

    Raises
    ------
    IngestError
        ``missing_suv_tags`` when absent or not positive, ``implausible_suv_tags`` outside
        :data:`WEIGHT_RANGE_KG`.
    """
    weight = value_float(first.get("PatientWeight"))
    if weight is None or weight <= 0:
        raise IngestError(
            "missing_suv_tags",
            f"{series}: (0010,1030) Patient Weight is missing or zero, so SUVbw cannot be "
            f"computed. {_FIX}",
        )
    if not WEIGHT_RANGE_KG[0] <= weight <= WEIGHT_RANGE_KG[1]:
        raise IngestError(
            "implausible_suv_tags",
            f"{series}: (0010,1030) Patient Weight = {weight:g} kg is implausible "
            "(expected kilograms). Correct the weight in the header.",
        )
    return weight


def _dose_and_half_life(first: Dataset, series: str) -> tuple[Dataset, float, float]:
    """The injected activity and the nuclide's half-life.

    Reads the first item of (0054,0016) *Radiopharmaceutical Information Sequence*, its
    (0018,1074) *Radionuclide Total Dose* (Bq) and (0018,1075) *Radionuclide Half Life* (s).

    Returns
    -------
    tuple
        ``(item, dose in Bq, half-life in s)``.

    Raises
    ------
    IngestError
        ``missing_suv_tags`` for a missing sequence, dose or half-life;
        ``implausible_suv_tags`` for a dose outside :data:`DOSE_RANGE_BQ` (e.g. in MBq).
    """
    item = _radiopharm_item(first)
    if item is None:
        raise IngestError(
            "missing_suv_tags",
            f"{series}: no (0054,0016) Radiopharmaceutical Information Sequence (dose, "
            f"half-life, injection time). {_FIX}",
        )
    dose = value_float(item.get("RadionuclideTotalDose"))
    if dose is None or dose <= 0:
        raise IngestError(
            "missing_suv_tags",
            f"{series}: (0018,1074) Radionuclide Total Dose is missing or zero. {_FIX}",
        )
    if not DOSE_RANGE_BQ[0] <= dose <= DOSE_RANGE_BQ[1]:
        raise IngestError(
            "implausible_suv_tags",
            f"{series}: (0018,1074) Radionuclide Total Dose = {dose:g} Bq is implausible for PET "
            "(the standard requires Bq; was it written in MBq?). Correct the dose in the header.",
        )
    half_life = value_float(item.get("RadionuclideHalfLife"))
    if half_life is None or half_life <= 0:
        raise IngestError(
            "missing_suv_tags",
            f"{series}: (0018,1075) Radionuclide Half Life is missing or zero. {_FIX}",
        )
    return item, dose, half_life


def _scan_start(
    first: Dataset,
    acquisition_times: Sequence[dt.datetime | None],
    series: str,
    notes: list[str],
) -> dt.datetime:
    """The QIBA scan start of :func:`scan_datetime`, noting when it is not the series time.

    Reads (0008,0021/0031) *Series Date/Time*, the GE private (0009,100D) scan datetime
    and the (0008,0022/0032) *Acquisition Date/Time* of every slice.

    Raises
    ------
    IngestError
        ``missing_suv_tags`` when none of them gives a time.
    """
    scan, source = scan_datetime(first, acquisition_times)
    if source != "series":
        notes.append(f"scan_time_from_{source}")
    if scan is None:
        raise IngestError(
            "missing_suv_tags",
            f"{series}: neither (0008,0021/0031) Series Date/Time nor (0008,0022/0032) "
            f"Acquisition Date/Time is present, so the decay time is unknown. {_FIX}",
        )
    return scan


def _injection_datetime(
    item: Dataset, first: Dataset, scan: dt.datetime, series: str, notes: list[str]
) -> dt.datetime:
    """When the radiopharmaceutical was injected.

    (0018,1078) *Radiopharmaceutical Start DateTime*, else (0008,0021) *Series Date* (or
    the scan date) with (0018,1072) *Radiopharmaceutical Start Time*, moved back a day
    (noted as ``injection_before_midnight``) when that falls after the scan start.

    Raises
    ------
    IngestError
        ``missing_suv_tags`` when neither injection attribute is present.
    """
    inj = parse_dt(item.get("RadiopharmaceuticalStartDateTime"))
    if inj is not None:
        return inj
    start = value_text(item.get("RadiopharmaceuticalStartTime"))
    date = value_text(first.get("SeriesDate")) or scan.strftime("%Y%m%d")
    inj = parse_datetime(date, start)
    if inj is None:
        raise IngestError(
            "missing_suv_tags",
            f"{series}: neither (0018,1078) Radiopharmaceutical Start DateTime nor "
            f"(0018,1072) Radiopharmaceutical Start Time is present. {_FIX}",
        )
    if inj > scan:
        inj -= dt.timedelta(days=1)
        notes.append("injection_before_midnight")
    return inj


def _uptake_s(scan: dt.datetime, inj: dt.datetime, series: str) -> float:
    """Injection-to-scan time (s), between 0 and :data:`MAX_UPTAKE_S`.

    Raises
    ------
    IngestError
        ``implausible_suv_tags`` outside that range (names (0018,1078)/(0018,1072)
        *Radiopharmaceutical Start DateTime/Time* and the series and acquisition times).
    """
    uptake = (scan - inj).total_seconds()
    if not 0.0 <= uptake <= MAX_UPTAKE_S:
        raise IngestError(
            "implausible_suv_tags",
            f"{series}: injection-to-scan time is {uptake / 60:.1f} min (injection "
            f"{inj:%Y-%m-%d %H:%M:%S}, scan {scan:%Y-%m-%d %H:%M:%S}). Check "
            "(0018,1078)/(0018,1072) Radiopharmaceutical Start DateTime/Time and the series "
            "and acquisition times.",
        )
    return uptake


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
    _check_corrections(first, series)
    units = value_text(first.get("Units")).upper()
    if acquisition_times is None:
        acquisition_times = [acquisition_datetime(d) for d in datasets]
    if units == "GML":
        return SuvResult(1.0, units, None, ("units_gml",))
    if units == "BQML":
        f, uptake, notes = _bqml_factor(datasets, series, acquisition_times)
        return SuvResult(f, units, uptake, tuple(notes))
    if units == "CNTS":
        result = _philips_factor(datasets, series, acquisition_times)
        if result is not None:
            return result
    raise IngestError(
        "unsupported_units",
        f"{series}: (0054,1001) Units is {units or 'absent'!r}; ingest needs BQML, GML, or CNTS "
        "with the Philips (7053,1000)/(7053,1009) scale factors. Export the series in Bq/mL.",
    )


def _check_corrections(first: Dataset, series: str) -> None:
    """Require attenuation- and decay-corrected activity, decay-corrected to START or ADMIN.

    Reads (0028,0051) *Corrected Image* and (0054,1102) *Decay Correction*.

    Raises
    ------
    IngestError
        ``not_corrected`` when Corrected Image lacks ATTN or DECY,
        ``unsupported_decay_correction`` for a Decay Correction other than START or ADMIN.
    """
    corrected = {value_text(v).upper() for v in (first.get("CorrectedImage") or [])}
    if not {"ATTN", "DECY"} <= corrected:
        lacking = sorted({"ATTN", "DECY"} - corrected)
        raise IngestError(
            "not_corrected",
            f"{series}: (0028,0051) Corrected Image lacks {'/'.join(lacking)}, so the values are "
            "not attenuation- and decay-corrected activity. Export the AC, decay-corrected "
            "reconstruction.",
        )
    decay = value_text(first.get("DecayCorrection")).upper()
    if decay not in ("START", "ADMIN"):
        raise IngestError(
            "unsupported_decay_correction",
            f"{series}: (0054,1102) Decay Correction is {decay or 'absent'!r}; SUV needs START "
            "(or ADMIN). Export the series decay-corrected to the scan start.",
        )


def _philips_factor(
    datasets: Sequence[Dataset],
    series: str,
    acquisition_times: Sequence[dt.datetime | None],
) -> SuvResult | None:
    """SUVbw factor of Philips ``CNTS`` values from the private group 7053.

    (7053,1000) *SUV scale factor* when positive; else (7053,1009) *Bq/mL scale factor*
    times the BQML factor (:func:`_bqml_factor`); ``None`` when neither is present.
    """
    first = datasets[0]
    suv = value_float(private_value(first, 0x7053, PHILIPS_PRIVATE_CREATOR, 0x00))
    if suv is not None and suv > 0:
        return SuvResult(suv, "CNTS", None, ("philips_suv_factor",))
    bqml = value_float(private_value(first, 0x7053, PHILIPS_PRIVATE_CREATOR, 0x09))
    if bqml is not None and bqml > 0:
        f, uptake, notes = _bqml_factor(datasets, series, acquisition_times)
        return SuvResult(bqml * f, "CNTS", uptake, (*notes, "philips_bqml_factor"))
    return None
