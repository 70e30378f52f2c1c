"""The payers of the demo network and their habits: wording, abbreviations, generic codes, typos.

All payer names are invented. Habits are what makes real remittance text hard: one
payer abbreviates everything, another shouts in capitals, a third sends CO-16 with no
remark code and lets the portal note carry the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Payer", "PAYERS", "NETWORK_B_PAYERS", "ABBREVIATIONS", "abbreviate"]


@dataclass(frozen=True)
class Payer:
    name: str
    weight: float
    kind: str  # commercial | medicaid | medicare | tpa
    abbreviate: int = 0  # 0 none, 1 some, 2 heavy
    upper: bool = False
    typo_rate: float = 0.04
    generic_code_rate: float = 0.05  # sends CO-16/A1/96 without the specific code
    generic_remark_rate: float = 0.08  # remark says nothing useful
    family_code_rate: float = 0.25  # sends a code of a sibling category (same group)
    drop_rarc_rate: float = 0.1
    quote_carc_rate: float = 0.3  # remark starts with the CARC's X12 text
    phrasings: int = 3  # how many of a category's phrasings this payer uses
    prefixes: tuple[str, ...] = ("",)
    suffixes: tuple[str, ...] = ("",)
    telehealth_modifier: str = "95"
    claim_level: bool = False  # puts CAS/MOA at claim level on single-line claims
    start_month: int = 1
    # Template rewrite: from this month the payer uses new wording and habits.
    rewrite_month: int | None = None
    rewrite_prefixes: tuple[str, ...] = ("",)
    rewrite_suffixes: tuple[str, ...] = ("",)
    rewrite_generic_code_rate: float = 0.0
    rewrite_family_code_rate: float = 0.0


PAYERS: tuple[Payer, ...] = (
    Payer(
        "Keystone Health Plan", 0.18, "commercial", abbreviate=1, typo_rate=0.03,
        generic_code_rate=0.06, generic_remark_rate=0.06, phrasings=4,
        prefixes=("", "Claim denied: ", "Line {line}: "), suffixes=("", " Ref {ref}."),
        rewrite_month=13,
        rewrite_prefixes=("Dear Provider, ", "Important: ", "Notice of adverse determination. "),
        rewrite_suffixes=(" You may request a reconsideration within 180 days.", " Questions? Call Provider Services.", ""),
        rewrite_generic_code_rate=0.15, rewrite_family_code_rate=0.4,
    ),
    Payer(
        "Cascade Medicaid MCO", 0.13, "medicaid", abbreviate=2, typo_rate=0.08,
        generic_code_rate=0.22, generic_remark_rate=0.10, drop_rarc_rate=0.3, quote_carc_rate=0.15,
        phrasings=3, prefixes=("", "DENY - ", "EXPL: "), telehealth_modifier="GT", claim_level=True,
    ),
    Payer(
        "Medicare Part B (MAC J-L)", 0.11, "medicare", abbreviate=0, upper=True, typo_rate=0.0,
        generic_code_rate=0.02, generic_remark_rate=0.15, drop_rarc_rate=0.02, quote_carc_rate=0.7,
        phrasings=2, suffixes=("", " THIS IS NOT A BILL."), claim_level=True,
    ),
    Payer(
        "Northwind Behavioral Health", 0.10, "commercial", abbreviate=1, typo_rate=0.05,
        generic_code_rate=0.08, generic_remark_rate=0.05, phrasings=4,
        prefixes=("", "BH UM: ", "Per review, "),
    ),
    Payer(
        "Summit Commercial", 0.07, "commercial", abbreviate=0, typo_rate=0.02,
        generic_code_rate=0.04, generic_remark_rate=0.07, quote_carc_rate=0.45, phrasings=3,
        suffixes=("", " See provider manual section 7.", " Appeal rights apply."),
    ),
    Payer(
        "State Medicaid FFS", 0.08, "medicaid", abbreviate=2, upper=True, typo_rate=0.06,
        generic_code_rate=0.25, generic_remark_rate=0.12, drop_rarc_rate=0.35, quote_carc_rate=0.2,
        phrasings=2, prefixes=("", "EOB {ref}: "), telehealth_modifier="GT", claim_level=True,
    ),
    Payer(
        "Lakeshore HMO", 0.07, "commercial", abbreviate=1, typo_rate=0.05,
        generic_code_rate=0.10, generic_remark_rate=0.09, phrasings=3, prefixes=("", "HMO: "),
    ),
    Payer(
        "Evergreen Health", 0.06, "commercial", abbreviate=2, typo_rate=0.10,
        generic_code_rate=0.12, generic_remark_rate=0.06, phrasings=5,
        prefixes=("", "pls note ", "FYI "),
    ),
    Payer(
        "Harborview Advantage", 0.06, "medicare", abbreviate=0, typo_rate=0.02,
        generic_code_rate=0.05, generic_remark_rate=0.08, quote_carc_rate=0.5, phrasings=3,
    ),
    Payer(
        "Pioneer Employer Plan (TPA)", 0.05, "tpa", abbreviate=2, typo_rate=0.09,
        generic_code_rate=0.20, generic_remark_rate=0.14, drop_rarc_rate=0.4, quote_carc_rate=0.1,
        phrasings=2, prefixes=("", "TPA note - "),
    ),
    Payer(
        "Tri-County Medicaid Managed Care", 0.05, "medicaid", abbreviate=1, typo_rate=0.05,
        generic_code_rate=0.15, generic_remark_rate=0.08, phrasings=3, telehealth_modifier="GT",
        start_month=13,
        prefixes=("", "Tri-County: ", "MCO review: "),
    ),
    Payer(
        "Union Benefits Trust", 0.04, "tpa", abbreviate=1, typo_rate=0.04,
        generic_code_rate=0.10, generic_remark_rate=0.10, phrasings=3,
        suffixes=("", " Member notified."),
    ),
)

#: The second network's payers: some shared with ours, some regional.
NETWORK_B_PAYERS: tuple[Payer, ...] = (
    PAYERS[0], PAYERS[2], PAYERS[4],
    Payer(
        "Great Plains Medicaid", 0.25, "medicaid", abbreviate=2, typo_rate=0.07,
        generic_code_rate=0.2, generic_remark_rate=0.1, drop_rarc_rate=0.3, phrasings=3,
        prefixes=("", "GPM: "), telehealth_modifier="GT",
    ),
    Payer(
        "Prairie Mutual", 0.2, "commercial", abbreviate=1, typo_rate=0.04,
        generic_code_rate=0.08, generic_remark_rate=0.07, phrasings=3,
    ),
    Payer(
        "Heartland Care Plan", 0.15, "commercial", abbreviate=0, typo_rate=0.03,
        generic_code_rate=0.06, generic_remark_rate=0.08, quote_carc_rate=0.5, phrasings=2,
    ),
)

#: Word → (light, heavy) abbreviation habits of billing staff and payer portals.
ABBREVIATIONS: dict[str, tuple[str, str]] = {
    "authorization": ("auth", "auth"),
    "Authorization": ("Auth", "Auth"),
    "authorized": ("auth'd", "auth"),
    "patient": ("patient", "pt"),
    "Patient": ("Patient", "Pt"),
    "member": ("mbr", "mbr"),
    "Member": ("Mbr", "Mbr"),
    "service": ("service", "svc"),
    "services": ("services", "svcs"),
    "provider": ("provider", "prov"),
    "with": ("w/", "w/"),
    "without": ("w/o", "w/o"),
    "required": ("req'd", "req"),
    "information": ("info", "info"),
    "please": ("pls", "pls"),
    "Please": ("Pls", "Pls"),
    "date of service": ("DOS", "DOS"),
    "coverage": ("coverage", "cov"),
    "diagnosis": ("dx", "dx"),
    "received": ("rec'd", "recd"),
    "documentation": ("documentation", "docs"),
    "medical necessity": ("med nec", "MN"),
    "insurance": ("ins", "ins"),
    "number": ("#", "#"),
    "because": ("b/c", "b/c"),
    "psychotherapy": ("psychotherapy", "psytx"),
    "therapy": ("therapy", "tx"),
    "outpatient": ("OP", "OP"),
    "and": ("and", "&"),
    "primary care provider": ("PCP", "PCP"),
    "explanation of benefits": ("EOB", "EOB"),
    "resubmit": ("resubmit", "resub"),
    "telehealth": ("telehealth", "TH"),
}

_ABBR_RE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, ABBREVIATIONS), key=len, reverse=True)) + r")\b")


def abbreviate(text: str, level: int) -> str:
    """Apply a payer's abbreviation habit to a phrasing (before slots are filled)."""
    if level <= 0:
        return text
    return _ABBR_RE.sub(lambda m: ABBREVIATIONS[m.group(1)][level - 1], text)
