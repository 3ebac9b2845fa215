"""Who the synthetic patients are: names, physicians, birth dates and a site's identifiers.

Patient names, birth dates and referring physicians are drawn on the subject's generator
(:mod:`fedmi.simulations.subjects` decides when); PatientIDs, accession numbers and study
folder names come from the site's own stream (``[seed, SITE_STREAM, site]``); those of
subjects appended after them (the memory-clinic cohort, the unlabelled archive) from a
stream of their own (:func:`cohort_identifiers`).
"""

from __future__ import annotations

import datetime as _dt

import numpy as np

from fedmi.simulations.sites.profiles import SITE_STREAM, SiteProfile

#: SeedSequence tag of the memory-clinic cohort's identifiers (``[seed, tag, site]``).
COHORT_ID_STREAM = 1_000_007
#: SeedSequence tag of the unlabelled archive's identifiers (``[seed, tag, site]``).
ARCHIVE_ID_STREAM = 1_000_011

_GIVEN_F = (
    "Anna",
    "Maria",
    "Elena",
    "Sofia",
    "Ingrid",
    "Claire",
    "Joan",
    "Ruth",
    "Aiko",
    "Fatima",
    "Grace",
    "Helen",
    "Irene",
    "Lucia",
    "Marta",
    "Nora",
)
_GIVEN_M = (
    "John",
    "Peter",
    "Luca",
    "Karl",
    "Omar",
    "David",
    "Henri",
    "Jorge",
    "Kenji",
    "Liam",
    "Marco",
    "Nils",
    "Paul",
    "Samuel",
    "Tomas",
    "Victor",
)
_FAMILY = (
    "Smith",
    "Novak",
    "Rossi",
    "Muller",
    "Garcia",
    "Dubois",
    "Jansen",
    "Kowalski",
    "Silva",
    "Tanaka",
    "Okafor",
    "Larsen",
    "Moreau",
    "Bianchi",
    "Fischer",
    "Walsh",
    "Haddad",
    "Petrov",
    "Lindqvist",
    "Costa",
)
_PHYSICIANS = ("Brown^Alice^^Dr", "Keller^Max^^Dr", "Ferri^Paola^^Dr", "Ahmed^Sara^^Dr")


def site_identifiers(site: SiteProfile, seed: int) -> tuple[list[str], list[str], list[str]]:
    """Unique PatientIDs, accession numbers and study folder names of a site."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, SITE_STREAM, site.index]))
    n = site.n_subjects
    if site.id_style == "prefix":
        ids = [f"{site.id_prefix}-{j + 1:04d}" for j in range(n)]
    else:
        digits = 8 if site.id_style == "mrn" else 7
        pool = rng.choice(10**digits - 10 ** (digits - 1), size=n, replace=False) + 10 ** (
            digits - 1
        )
        ids = [str(int(v)) if site.id_style == "mrn" else f"H{int(v)}" for v in pool]
    acc = rng.choice(9 * 10**9, size=n, replace=False) + 10**9
    accessions = [str(int(a)) for a in acc]
    folders = []
    for j in range(n):
        if site.folder_style == "patient":
            folders.append(f"{ids[j]}/{accessions[j]}")
        elif site.folder_style == "opaque":
            folders.append(f"{int(rng.integers(16**8)):08X}/{int(rng.integers(16**8)):08X}")
        else:
            folders.append(f"study_{j + 1:04d}")
    return ids, accessions, folders


def cohort_identifiers(
    site: SiteProfile,
    seed: int,
    n_extra: int,
    ids: list[str],
    accessions: list[str],
    stream: int = COHORT_ID_STREAM,
) -> tuple[list[str], list[str], list[str]]:
    """PatientIDs, accession numbers and study folders of ``n_extra`` subjects appended
    after the site's ``ids``/``accessions`` (subject indices ``len(ids)`` on), unique
    against them, in the site's styles.

    ``stream`` tags the generator ``[seed, stream, site]`` the identifiers are drawn from:
    :data:`COHORT_ID_STREAM` for the memory-clinic cohort, :data:`ARCHIVE_ID_STREAM` for
    the unlabelled archive, so one group's identifiers never depend on the other's size.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, stream, site.index]))
    n = len(ids)
    taken_ids, taken_acc = set(ids), set(accessions)
    new_ids: list[str] = []
    for j in range(n, n + n_extra):
        if site.id_style == "prefix":
            pid = f"{site.id_prefix}-{j + 1:04d}"
        else:
            digits = 8 if site.id_style == "mrn" else 7
            while True:
                v = int(rng.integers(10 ** (digits - 1), 10**digits))
                pid = str(v) if site.id_style == "mrn" else f"H{v}"
                if pid not in taken_ids:
                    break
        taken_ids.add(pid)
        new_ids.append(pid)
    new_acc: list[str] = []
    for _ in range(n_extra):
        while True:
            a = str(int(rng.integers(10**9, 10**10)))
            if a not in taken_acc:
                break
        taken_acc.add(a)
        new_acc.append(a)
    folders = []
    for k, j in enumerate(range(n, n + n_extra)):
        if site.folder_style == "patient":
            folders.append(f"{new_ids[k]}/{new_acc[k]}")
        elif site.folder_style == "opaque":
            folders.append(f"{int(rng.integers(16**8)):08X}/{int(rng.integers(16**8)):08X}")
        else:
            folders.append(f"study_{j + 1:04d}")
    return new_ids, new_acc, folders


def birth_date(scan: _dt.datetime, age: float, rng: np.random.Generator) -> str:
    """DA birth date of someone ``age`` years old at ``scan`` (plus 0–364 random days)."""
    days = int(round(age * 365.25)) + int(rng.integers(0, 365))
    return (scan.date() - _dt.timedelta(days=days)).strftime("%Y%m%d")


def patient_name(sex: str, rng: np.random.Generator) -> str:
    """PN ``Family^Given`` (family name drawn first, then a given name matching ``sex``)."""
    given = _GIVEN_F if sex == "F" else _GIVEN_M
    return f"{_FAMILY[int(rng.integers(len(_FAMILY)))]}^{given[int(rng.integers(len(given)))]}"


def referring_physician(rng: np.random.Generator) -> str:
    """PN of one of the site's referring physicians."""
    return _PHYSICIANS[int(rng.integers(len(_PHYSICIANS)))]
