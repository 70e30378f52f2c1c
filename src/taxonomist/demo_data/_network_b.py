"""The second network: its own ~30-code denial taxonomy and the crosswalk from its codes to ours.

Network B's billing team is coarser in some places and finer in others:
- finer: two of their codes land on one of ours (AU01/AU02 both mean our C1; AD01/AD02
  both our I1) — the crosswalk merges them, with no loss;
- coarser: one of their codes covers two or three of ours (EL01 = our A1 or A3). A
  crosswalk is many-to-one, so such a code maps to the dominant one of ours and the
  records it brings in are wrong for the minority; `AMBIGUOUS` lists them so the data
  card and the user can see which imported labels need review.
"""

from __future__ import annotations

from ..taxonomy import Category, ChangelogEntry, Crosswalk, Group, Taxonomy

__all__ = ["THEIR_GROUPS", "THEIR_CODES", "their_label", "network_b_taxonomy", "network_b_crosswalk", "AMBIGUOUS"]

THEIR_GROUPS = (
    ("ELIG", "Eligibility"), ("COB", "Other insurance"), ("AUTH", "Authorization"), ("CLIN", "Clinical"),
    ("BEN", "Benefits"), ("PROV", "Provider"), ("CODE", "Coding"), ("CLAIM", "Claim"),
    ("ADMIN", "Administrative"), ("ND", "Not a denial"),
)

#: their code -> (group, name, our codes it covers, the dominant one the crosswalk uses)
THEIR_CODES: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "EL01": ("ELIG", "Not eligible on date of service", ("A1", "A3"), "A1"),
    "EL02": ("ELIG", "Member not on file", ("A2",), "A2"),
    "EL03": ("ELIG", "Wrong payer or program rules", ("A5", "A4"), "A5"),
    "CB01": ("COB", "Other coverage primary or prior payment", ("B1", "B4"), "B1"),
    "CB02": ("COB", "Primary EOB needed", ("B2",), "B2"),
    "CB03": ("COB", "Accident or liability", ("B3",), "B3"),
    "AU01": ("AUTH", "No authorization - outpatient", ("C1",), "C1"),
    "AU02": ("AUTH", "No authorization - higher level of care or testing", ("C1",), "C1"),
    "AU03": ("AUTH", "Authorization mismatch or expired", ("C2",), "C2"),
    "AU04": ("AUTH", "Authorized units exhausted", ("C3",), "C3"),
    "AU05": ("AUTH", "Authorization denied or late", ("C4", "C5"), "C4"),
    "AU06": ("AUTH", "Referral missing", ("C6",), "C6"),
    "CL01": ("CLIN", "Medical necessity, level of care or frequency", ("D1", "D2", "D3"), "D1"),
    "CL02": ("CLIN", "Diagnosis", ("D4",), "D4"),
    "CL03": ("CLIN", "Records needed", ("D6",), "D6"),
    "BN01": ("BEN", "Not covered, excluded or experimental", ("E1", "E3", "D5"), "E1"),
    "BN02": ("BEN", "Benefit maximum", ("E2",), "E2"),
    "BN03": ("BEN", "Psychiatric reduction", ("E4",), "E4"),
    "BN04": ("BEN", "Out of network", ("E5",), "E5"),
    "PV01": ("PROV", "Credentialing, licence or provider cap", ("F1", "F2", "F6"), "F1"),
    "PV02": ("PROV", "Specialty or taxonomy", ("F3",), "F3"),
    "PV03": ("PROV", "NPI or referring provider", ("F4", "F5"), "F4"),
    "CD01": ("CODE", "Modifier (incl. telehealth)", ("G1", "G7"), "G1"),
    "CD05": ("CODE", "Place of service", ("G2",), "G2"),
    "CD02": ("CODE", "Invalid code or age edit", ("G3", "G6"), "G3"),
    "CD03": ("CODE", "Units or time", ("G4",), "G4"),
    "CD04": ("CODE", "Bundling", ("G5",), "G5"),
    "CM01": ("CLAIM", "Unprocessable claim", ("H1",), "H1"),
    "CM02": ("CLAIM", "Duplicate or already paid", ("H3", "H4"), "H3"),
    "AD01": ("ADMIN", "Timely filing - initial claim", ("I1",), "I1"),
    "AD02": ("ADMIN", "Timely filing - corrected claim", ("I1",), "I1"),
    "AD03": ("ADMIN", "Appeal upheld", ("I2",), "I2"),
    "AD04": ("ADMIN", "Reversal", ("I3",), "I3"),
    "ND01": ("ND", "Write-off or capitation", ("J1", "J3"), "J1"),
    "ND02": ("ND", "Patient responsibility", ("J2",), "J2"),
}

_OURS_TO_THEIRS = {ours: theirs for theirs, (_, _, covers, _) in THEIR_CODES.items() for ours in covers}

#: their code -> our codes that the crosswalk sends to the dominant one (labels needing review)
AMBIGUOUS = {
    theirs: tuple(c for c in covers if c != dominant)
    for theirs, (_, _, covers, dominant) in THEIR_CODES.items()
    if len(covers) > 1
}

_HIGHER_LEVEL = {"S9480", "H0035", "H0015", "96130", "96131", "96136"}


def their_label(ours: str, cpt: str, u: float) -> str:
    """How network B's team labels a record that our team would call `ours`."""
    theirs = _OURS_TO_THEIRS[ours]
    if theirs == "AU01" and cpt in _HIGHER_LEVEL:
        return "AU02"
    if theirs == "AD01" and u < 0.35:
        return "AD02"
    return theirs


def network_b_taxonomy(date: str) -> Taxonomy:
    cats = [
        Category(
            code=code, name=name, group=group,
            definition=f"Network B category '{name}'.",
        )
        for code, (group, name, _, _) in THEIR_CODES.items()
    ]
    return Taxonomy(
        name="Network B denial codes",
        description="The denial categories of the network we merged with (demo data).",
        groups=[Group(code=c, name=n) for c, n in THEIR_GROUPS],
        categories=cats,
        changelog=[ChangelogEntry(op="create", date=date, author="network-b-billing", summary="Network B codes as received")],
    )


def network_b_crosswalk() -> Crosswalk:
    return Crosswalk(source="network_b", mapping={theirs: dom for theirs, (_, _, _, dom) in THEIR_CODES.items()})
