"""The synthetic multi-site federation (phantoms written as real DICOM) and the one-machine runner."""
