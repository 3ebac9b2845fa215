"""Send result objects to a PACS by DICOM C-STORE (pynetdicom), ``--send AE@host:port``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CALLING_AE = "FEDMI"
_ADDRESS = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>[^:@]+):(?P<port>\d{1,5})$")


class SendError(RuntimeError):
    """The PACS could not be reached or refused an object (the message says which)."""


@dataclass(frozen=True)
class PacsAddress:
    """A DICOM peer: its AE title, host and port."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> PacsAddress:
        """``AE@host:port`` (AE title at most 16 characters).

        Raises
        ------
        ValueError
            With the expected form.
        """
        m = _ADDRESS.match(text.strip())
        if not m or not 0 < int(m["port"]) < 65536:
            raise ValueError(
                f"--send {text!r}: give the PACS as AE@host:port, e.g. ORTHANC@127.0.0.1:4242 "
                "(AE title up to 16 characters)"
            )
        return cls(m["ae"], m["host"], int(m["port"]))


def send(files: list[Path], address: PacsAddress, calling_ae: str = CALLING_AE) -> int:
    """C-STORE every file to ``address`` in one association; how many were stored.

    Raises
    ------
    SendError
        The association was refused or an object was not stored (status named).
    """
    import pydicom
    from pynetdicom import AE

    if not files:
        return 0
    datasets = [pydicom.dcmread(f) for f in files]
    ae = AE(ae_title=calling_ae)
    # one presentation context per (SOP class, transfer syntax): SR, Secondary Capture,
    # Encapsulated PDF Storage (an association offers at most 128)
    for pair in dict.fromkeys((ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in datasets):
        ae.add_requested_context(*pair)
    assoc = ae.associate(address.host, address.port, ae_title=address.ae_title)
    if not assoc.is_established:
        raise SendError(
            f"the PACS {address.ae_title}@{address.host}:{address.port} did not accept an "
            f"association from {calling_ae}: check the address, and that the PACS knows the "
            f"AE title {calling_ae}"
        )
    stored = 0
    try:
        for f, ds in zip(files, datasets, strict=True):
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code != 0x0000:
                raise SendError(
                    f"the PACS did not store {Path(f).name} (C-STORE status "
                    f"{'none' if code is None else hex(code)})"
                )
            stored += 1
    finally:
        assoc.release()
    return stored
