"""C-STORE of the result objects: to pynetdicom's storage SCP and to a real Orthanc."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pydicom
import pytest

from fedmi.client.dicom_out import ENCAPSULATED_PDF
from fedmi.client.pacs import PacsAddress, SendError, send
from tests.client.test_predict import setup  # noqa: F401 - the module fixture


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _result_files(setup) -> list[Path]:  # noqa: F811
    *_, out, records = setup
    return [out / "dicom" / n for r in records for n in r.get("dicom", [])]


def test_address_parsing() -> None:
    assert PacsAddress.parse("ORTHANC@127.0.0.1:4242") == PacsAddress("ORTHANC", "127.0.0.1", 4242)
    for bad in ("127.0.0.1:4242", "A@host", "A@host:99999", "WAY_TOO_LONG_AE_TITLE@h:1"):
        with pytest.raises(ValueError, match="AE@host:port"):
            PacsAddress.parse(bad)


def test_store_to_a_storage_scp(setup) -> None:  # noqa: F811
    from pynetdicom import AE, AllStoragePresentationContexts, evt

    received: list[pydicom.Dataset] = []

    def on_store(event):
        received.append(event.dataset)
        return 0x0000

    ae = AE(ae_title="TESTPACS")
    ae.supported_contexts = AllStoragePresentationContexts
    port = _free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        files = _result_files(setup)
        assert send(files, PacsAddress("TESTPACS", "127.0.0.1", port)) == len(files) == 6
    finally:
        server.shutdown()
    sent = {pydicom.dcmread(f).SOPInstanceUID for f in files}
    assert {ds.SOPInstanceUID for ds in received} == sent
    # the Encapsulated PDF goes too (its presentation context requested and accepted)
    assert ENCAPSULATED_PDF in {ds.SOPClassUID for ds in received}

    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:  # many studies' objects: one presentation context per SOP class, under the 128 limit
        assert send(files * 30, PacsAddress("TESTPACS", "127.0.0.1", port)) == len(files) * 30
    finally:
        server.shutdown()


def test_unreachable_pacs_is_named(setup) -> None:  # noqa: F811
    assert send([], PacsAddress("NOPE", "127.0.0.1", 1)) == 0
    with pytest.raises(SendError, match="did not accept an association"):
        send(_result_files(setup), PacsAddress("NOPE", "127.0.0.1", _free_port()))


def _orthanc() -> str | None:
    return shutil.which("Orthanc")


@pytest.mark.skipif(_orthanc() is None, reason="Orthanc is not installed (apt-get install orthanc)")
def test_round_trip_through_orthanc(setup, tmp_path) -> None:  # noqa: F811
    dicom_port, http_port = _free_port(), _free_port()
    config = {
        "Name": "fedmi-test",
        "StorageDirectory": str(tmp_path / "storage"),
        "IndexDirectory": str(tmp_path / "storage"),
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": True,
        "Plugins": [],
    }
    cfg = tmp_path / "orthanc.json"
    cfg.write_text(json.dumps(config))
    log = open(tmp_path / "orthanc.log", "wb")
    proc = subprocess.Popen([_orthanc(), str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http_port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/system", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        files = _result_files(setup)
        assert send(files, PacsAddress("ORTHANC", "127.0.0.1", dicom_port)) == len(files)
        study_uids = {pydicom.dcmread(f).StudyInstanceUID for f in files}
        found = set()
        for sid in json.load(urllib.request.urlopen(base + "/studies", timeout=5)):
            info = json.load(urllib.request.urlopen(f"{base}/studies/{sid}", timeout=5))
            found.add(info["MainDicomTags"]["StudyInstanceUID"])
        assert study_uids <= found
        n_instances = len(json.load(urllib.request.urlopen(base + "/instances", timeout=5)))
        assert n_instances == len(files)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
