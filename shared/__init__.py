"""Code that both a hospital site and the coordinator import.

Nothing in this package touches a site's files, reads DICOM or imports ``client``
or ``server``: it holds the model family, the task definitions, the wire contract
and the statistics both sides compute on.
"""
