"""Results back to PACS: a DICOM SR with the measurements and a Secondary Capture of the report.

Per assessable study, two new series in the input's study (PS3.3; in the spirit of the IHE
AI Results profile):

* a Comprehensive 3D SR (highdicom) holding a TID 1500 *Measurement Report*: the
  probability of the positive class (DCM 122157 *Probability*), the MC-dropout interval
  limits, the class at the operating point as a qualitative evaluation and the
  top regional ratios; (0040,A493) *Verification Flag* UNVERIFIED; the model named in
  (0018,A001) *Contributing Equipment Sequence* with (0018,1002) *Device UID* = the
  package's release UID (new with every federated release);
* a Secondary Capture image of the one-glance report (highdicom ``SCImage``);
* when the package holds the federation's normative model (:mod:`fedmi.client.anomaly`): a
  second measurement group in the SR (the anomaly score and the z of each region below
  z = −2, private codes of :data:`SCHEME`) and a Secondary Capture of the z-map figure in
  a third new series, its (0020,4000) *Image Comments* holding the same score and regions;
* the one-page PDF report (:mod:`fedmi.client.report_pdf`) as an Encapsulated PDF
  (PS3.3 A.45.1; SOP Class 1.2.840.10008.5.1.4.1.1.104.1, Modality DOC) in a fourth new
  series: what PACS viewers show as a document. highdicom has no constructor for it, so
  it is built with pydicom here, its patient and study attributes copied from the input as
  highdicom's ``SCImage.from_ref_dataset`` copies them.

Patient and study attributes are copied from the input series only (highdicom copies
them from the evidence / reference dataset): (0020,000D) *Study Instance UID* is kept,
(0020,000E) *Series Instance UID* and (0008,0018) *SOP Instance UID* are new.
"""

from __future__ import annotations

import logging
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from fedmi.shared.package import ModelPackage

# highdicom logs every attribute module it copies at INFO: keep the site's log readable
logging.getLogger("highdicom").setLevel(logging.WARNING)

MANUFACTURER = "fedmi (federated research model)"
#: Private coding scheme for concepts DICOM has no code for.
SCHEME = "99FEDMI"
SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902
ZMAP_SERIES_NUMBER = 9903
PDF_SERIES_NUMBER = 9904
#: (0008,0016) of an Encapsulated PDF Storage object.
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
#: Patient and study attributes copied from the input (those ``SCImage.from_ref_dataset``
#: copies); the Type 2 ones are written empty when the input has none.
_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def _code(value: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value, SCHEME, meaning)


def _equipment(pkg: ModelPackage) -> hd.ContributingEquipment:
    eq = hd.ContributingEquipment(
        manufacturer=MANUFACTURER,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=str(pkg.card.get("task")),
        software_versions=pkg.version,
        contribution_description="research use only: not verified by a physician",
    )
    return eq


def _mark_device(ds: pydicom.Dataset, pkg: ModelPackage) -> None:
    """(0018,1002) *Device UID* of our Contributing Equipment item: new with every release."""
    for item in ds.ContributingEquipmentSequence:
        if item.get("Manufacturer") == MANUFACTURER:
            item.DeviceUID = pkg.device_uid


def structured_report(
    record: dict, source: pydicom.Dataset, pkg: ModelPackage
) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 measurement report of one assessable study."""
    algorithm = hd.sr.AlgorithmIdentification(name="fedmi", version=pkg.version)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=pkg.device_uid, name="fedmi", model_name=pkg.version
        ),
    )
    unit = codes.UCUM.NoUnits
    measurements = [
        hd.sr.Measurement(
            name=codes.DCM.Probability,
            value=record["probability"],
            unit=unit,
            algorithm_id=algorithm,
        ),
        hd.sr.Measurement(
            name=_code("F002", "Probability, lower limit of 95% interval"),
            value=record["interval"]["low"],
            unit=unit,
            algorithm_id=algorithm,
        ),
        hd.sr.Measurement(
            name=_code("F003", "Probability, upper limit of 95% interval"),
            value=record["interval"]["high"],
            unit=unit,
            algorithm_id=algorithm,
        ),
        hd.sr.Measurement(
            name=_code("F004", "Operating point"), value=record["threshold"], unit=unit
        ),
    ]
    for i, region in enumerate(record.get("regions", [])):
        measurements.append(
            hd.sr.Measurement(
                name=_code(f"R{i + 1:03d}", f"Ratio to reference region: {region['region']}"[:64]),
                value=region["suvr"],
                unit=unit,
                algorithm_id=algorithm,
            )
        )
    evaluation = hd.sr.QualitativeEvaluation(
        name=codes.DCM.Finding,
        value=_code("F001", f"{record['class']} at the operating point"[:64]),
    )
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="fedmi result"),
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=[evaluation],
    )
    groups = [group]
    if record.get("normative"):
        groups.append(_normative_group(record["normative"], algorithm))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[source],
        content=report,
        series_instance_uid=hd.UID(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_verified=False,  # (0040,A493) Verification Flag UNVERIFIED
        contributing_equipment=[_equipment(pkg)],
        series_description="fedmi result (research use)",
    )
    _mark_device(sr, pkg)
    return sr


def _normative_group(
    normative: dict, algorithm: hd.sr.AlgorithmIdentification
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """The normative comparison as a TID 1501 group: anomaly score, z per named region."""
    unit = codes.UCUM.NoUnits
    measurements = [
        hd.sr.Measurement(
            name=_code("N001", "Normative anomaly score"),
            value=normative["anomaly_score"],
            unit=unit,
            algorithm_id=algorithm,
        )
    ]
    for i, region in enumerate(normative["regions_below"]):
        measurements.append(
            hd.sr.Measurement(
                name=_code(f"Z{i + 1:03d}", f"Regional z-score: {region['region']}"[:64]),
                value=region["z"],
                unit=unit,
                algorithm_id=algorithm,
            )
        )
    n = len(normative["regions_below"])
    finding = (
        f"{n} region(s) below z = {normative['threshold']:g}"
        if n
        else f"no region below z = {normative['threshold']:g}"
    )
    evaluations = [
        hd.sr.QualitativeEvaluation(name=codes.DCM.Finding, value=_code("N002", finding[:64]))
    ]
    if normative.get("age_unknown"):
        evaluations.append(
            hd.sr.QualitativeEvaluation(
                name=_code("N003", "Normative comparison age"),
                value=_code("N004", "age unknown: compared with 70-year-olds"),
            )
        )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=hd.UID(), identifier="fedmi normative comparison"
        ),
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=evaluations,
    )


def report_image(lines: list[str], size: tuple[int, int] = (640, 900)) -> np.ndarray:
    """The report's text rendered as an RGB ``uint8`` array (rows, cols, 3)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows, cols = size
    fig = Figure(figsize=(cols / 100, rows / 100), dpi=100)
    canvas = FigureCanvasAgg(fig)
    for i, line in enumerate(lines):
        fig.text(
            0.03,
            0.95 - i * 0.055,
            line,
            fontsize=13 if i else 15,
            family="monospace",
            color="#b00000" if i == 0 else "black",
        )
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()


def report_lines(record: dict, pkg: ModelPackage) -> list[str]:
    """The lines of the Secondary Capture report."""
    lines = ["RESEARCH USE ONLY - not for diagnosis", f"task {pkg.card.get('task')}"]
    iv = record["interval"]
    lines += [
        f"result: {record['class']}",
        f"probability {record['probability']:.3f} (95% {iv['low']:.3f}-{iv['high']:.3f})",
        f"operating point {record['threshold']:.3f} ({record['threshold_source']})",
    ]
    if iv["crosses_threshold"]:
        lines.append("UNCERTAIN: interval crosses the operating point")
    for r in record.get("regions", []):
        lines.append(f"  {r['region'][:28]:28s} ratio {r['suvr']:.3f} z {r['z']:+.2f}")
    nv = record.get("normative")
    if nv:
        lines.append(
            f"normal aging model: anomaly score {nv['anomaly_score']:.2f}, "
            f"{len(nv['regions_below'])} region(s) z < {nv['threshold']:g}"
        )
    lines.append(f"model {pkg.version}")
    return lines


def secondary_capture(record: dict, source: pydicom.Dataset, pkg: ModelPackage) -> hd.sc.SCImage:
    """The report as a Secondary Capture image in a new series of the input's study."""
    return _sc_image(
        report_image(report_lines(record, pkg)),
        source,
        pkg,
        SC_SERIES_NUMBER,
        "fedmi report (research use)",
    )


def zmap_capture(
    record: dict, figure: np.ndarray, source: pydicom.Dataset, pkg: ModelPackage
) -> hd.sc.SCImage:
    """The z-map figure (:func:`fedmi.client.anomaly.zmap_figure`) as a Secondary Capture
    in a third new series; (0020,4000) *Image Comments* holds the score and named regions."""
    from fedmi.client.anomaly import summary_line

    sc = _sc_image(
        np.ascontiguousarray(figure, dtype=np.uint8),
        source,
        pkg,
        ZMAP_SERIES_NUMBER,
        "fedmi anomaly map (research use)",
    )
    sc.ImageComments = (
        f"RESEARCH USE ONLY - not a diagnosis. {summary_line(record['normative'])}"
    )[:10240]
    return sc


def _sc_image(
    pixels: np.ndarray,
    source: pydicom.Dataset,
    pkg: ModelPackage,
    series_number: int,
    description: str,
) -> hd.sc.SCImage:
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=("L", "P"),
        contributing_equipment=[_equipment(pkg)],
        series_description=description,
    )
    _mark_device(sc, pkg)
    return sc


def encapsulated_pdf(pdf: bytes, source: pydicom.Dataset, pkg: ModelPackage) -> pydicom.Dataset:
    """The PDF report as an Encapsulated PDF Storage object in a new series of the input's
    study (patient and study attributes copied from ``source``, nothing else)."""
    import datetime

    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ENCAPSULATED_PDF
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    if "SpecificCharacterSet" in source:
        ds.SpecificCharacterSet = source.SpecificCharacterSet
    # SOP Common
    ds.SOPClassUID = ENCAPSULATED_PDF
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    # Patient and General Study: the input's own values only (Type 2: empty if absent)
    for key in _COPIED:
        setattr(ds, key, source.get(key, ""))
    # Encapsulated Document Series, General Equipment, SC Equipment
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = PDF_SERIES_NUMBER
    ds.SeriesDescription = "fedmi PDF report (research use)"
    ds.Manufacturer = MANUFACTURER
    ds.ConversionType = "WSD"  # workstation
    ds.ContributingEquipmentSequence = [_equipment(pkg)]
    _mark_device(ds, pkg)
    # Encapsulated Document
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = date, time
    ds.AcquisitionDateTime = date + time
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = "fedmi result (research use only)"
    title = pydicom.Dataset()
    title.CodeValue = "18748-4"
    title.CodingSchemeDesignator = "LN"
    title.CodeMeaning = "Diagnostic imaging report"
    ds.ConceptNameCodeSequence = [title]
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(pdf)
    # OB value: even length (PS3.5 7.1.1); the pad byte follows the PDF's %%EOF
    ds.EncapsulatedDocument = pdf + (b"\x00" if len(pdf) % 2 else b"")
    return ds


def write_results(
    record: dict,
    source_file: Path,
    pkg: ModelPackage,
    out_dir: Path,
    *,
    anomaly_figure: np.ndarray | None = None,
    report_pdf: bytes | None = None,
) -> list[Path]:
    """Write the SR and the Secondary Capture of an assessable study; their paths.

    With ``anomaly_figure`` (and a ``normative`` entry in the record) a Secondary Capture
    of the z-map is written too (``zmap-<SOP Instance UID>.dcm``); with ``report_pdf`` the
    PDF report as an Encapsulated PDF (``pdf-<SOP Instance UID>.dcm``).
    """
    source = pydicom.dcmread(source_file, stop_before_pixels=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    objects = [
        ("sr", structured_report(record, source, pkg)),
        ("sc", secondary_capture(record, source, pkg)),
    ]
    if anomaly_figure is not None and record.get("normative"):
        objects.append(("zmap", zmap_capture(record, anomaly_figure, source, pkg)))
    if report_pdf is not None:
        objects.append(("pdf", encapsulated_pdf(report_pdf, source, pkg)))
    for kind, ds in objects:
        path = out_dir / f"{kind}-{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
