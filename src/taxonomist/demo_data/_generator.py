"""Draw denial records: months, payers, categories, codes, services, amounts and remarks.

Structured choices are drawn with numpy in bulk; the remark text is assembled per
record in plain Python from templates prepared once per payer (fast enough: about a
second for 80,000 records). Everything comes from one seed, so a seed gives the same
records on every run.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..denials import render_text
from ._categories import AUDIO_ONLY, GENERIC_CODES, GENERIC_REMARKS, RANKS, RARE, SPECS
from ._codes import carc_text
from ._payers import Payer, abbreviate

__all__ = ["Events", "Knobs", "draw_records", "month_start", "render_text", "COLUMNS"]

START = dt.date(2024, 1, 1)

#: Columns of denials.parquet/.csv, in order.
COLUMNS = (
    "id", "date", "month", "payer", "network", "claim_id", "line", "cpt", "modifiers", "pos",
    "billed_amount", "paid_amount", "adjustment_amount", "group_code", "carc", "rarcs", "remark",
    "text", "label", "label_is_noise", "near_duplicate_of", "text_determines",
)


@dataclass(frozen=True)
class Events:
    """When the things a model must survive happen (month numbers, 1-based)."""

    wording_drift_month: int = 13  # CARC 197 text, POS 10, template rewrite, new payer
    new_category_month: int = 19  # G7 split out of G1
    new_category: str = "G7"
    new_category_parent: str = "G1"


@dataclass(frozen=True)
class Knobs:
    """Difficulty settings; the defaults are calibrated by benchmarks/drift_baseline.py."""

    zipf_s: float = 1.05
    noise_rate: float = 0.03
    near_duplicate_rate: float = 0.025
    vague_remark_rate: float = 0.38  # remark names only the family of problem ("auth issue")
    generic_scale: float = 1.0  # multiplies every payer's generic-code and generic-remark rate
    multi_line_rate: float = 0.12  # share of lines that join the previous line's claim
    tail_rate: float = 0.2  # remark gets boilerplate appended
    audio_only_share: float = 0.35  # of G1-family records, the audio-only (FQ) ones, late months
    family_scale: float = 2.0  # multiplies every payer's family-code rate
    v2_adoption: float = 0.8  # share of other payers' remarks in the new wording by the last month
    v2_jump: float = 0.35  # fraction of that share reached at once in the drift month


def month_start(month: int) -> dt.date:
    y, m = divmod(START.month - 1 + month - 1, 12)
    return dt.date(START.year + y, m + 1, 1)


# ---- services ---------------------------------------------------------------------------
CPT_RATES = {
    "90791": 210, "90792": 250, "90832": 85, "90834": 120, "90837": 165, "90846": 115, "90847": 125,
    "90853": 45, "90839": 190, "90840": 90, "90785": 20, "90833": 80, "90836": 100, "99213": 95,
    "99214": 140, "H0031": 60, "H0032": 70, "H2019": 30, "H2014": 25, "H0004": 28, "H0015": 180,
    "S9480": 300, "H0035": 450, "96130": 170, "96131": 130, "96136": 60, "90867": 400, "90868": 250,
    "90901": 70, "H2011": 35,
}

_OUTPATIENT = (("90834", 25), ("90837", 25), ("90791", 10), ("90832", 8), ("90847", 7), ("90853", 5),
               ("99214", 5), ("99213", 4), ("90792", 4), ("90846", 2), ("H0004", 3), ("H0031", 2))
PROFILES: dict[str, tuple[tuple[tuple[str, int], ...], float]] = {
    "outpatient": (_OUTPATIENT, 0.3),
    "community": ((("H2019", 30), ("H2014", 20), ("H0031", 15), ("H0032", 10), ("H2011", 10), ("H0004", 15)), 0.15),
    "auth": ((("90837", 20), ("90834", 15), ("S9480", 15), ("H0035", 10), ("H0015", 10), ("96130", 10),
              ("90791", 10), ("H2019", 10)), 0.2),
    "iop": ((("S9480", 45), ("H0035", 30), ("H0015", 25)), 0.1),
    "testing": ((("96130", 35), ("96131", 30), ("96136", 20), ("90791", 15)), 0.05),
    "tms": ((("90867", 40), ("90868", 30), ("90901", 30)), 0.0),
    "family": ((("90847", 45), ("90846", 35), ("90853", 10), ("90834", 10)), 0.3),
    "addon": ((("90785", 30), ("90833", 30), ("90836", 20), ("90840", 20)), 0.3),
    "tele": (_OUTPATIENT[:9], 1.0),
    "audio": ((("90834", 35), ("90837", 25), ("90832", 25), ("99213", 15)), 1.0),
}

#: Remarks that only name the family of the problem; the codes must decide within it.
VAGUE = {
    "A": ("Eligibility issue.", "Member not eligible.", "Check eligibility."),
    "B": ("COB issue.", "Other insurance.", "Coordination of benefits."),
    "C": ("Authorization issue.", "Auth problem, see UM.", "Prior auth."),
    "D": ("Clinical review denial.", "Medical necessity review.", "Per clinical policy."),
    "E": ("Benefit denial.", "Not covered.", "Benefit limitation."),
    "F": ("Provider not eligible.", "Provider file issue.", "Credentialing."),
    "G": ("Coding error.", "Billing error, correct and resubmit.", "Code edit."),
    "H": ("Claim error.", "Resubmission issue.", "Claim data."),
    "I": ("Administrative denial.", "See notice.", "Processing note."),
    "J": ("Adjusted.", "Processed per contract.", "Balance adjusted."),
}

#: The same family-level remarks in the new wording (rewritten payer, and adopters after the drift month).
VAGUE_V2 = {
    "A": ("Enrollment could not be verified for this date.", "Member eligibility problem - see portal."),
    "B": ("Other coverage on file affects this claim.", "Benefits coordinated with another plan."),
    "C": ("Utilization management requirement not met.", "See UM letter for approval details."),
    "D": ("Clinical policy review outcome - see letter.", "Reviewer determination attached."),
    "E": ("Plan benefits do not allow payment.", "Benefit rules applied."),
    "F": ("Practitioner record problem.", "Network participation record issue."),
    "G": ("Claim coding does not pass our edits.", "Correct the coding and send a replacement claim."),
    "H": ("Submission problem - see details.", "Claim record issue."),
    "I": ("Administrative outcome - see notice.", "Processing decision."),
    "J": ("Amount adjusted per agreement.", "Member portion applied."),
}

GENERIC_V2 = (
    "We are unable to pay this line.", "Payment cannot be made for this service.",
    "This line was not approved for payment.", "See your remittance for next steps.",
)

TAILS = (
    " Appeal within {days} days.", " Claim #{ref}.", " Call 1-800-555-0142.", " DOS {dos}.",
    " Reprocessed {eff}.", " See attached letter.", " No further action.",
    " Ref {ref}, line {line}.",
)

_NEW_197 = "Precertification/authorization/notification/pre-treatment absent"
_OLD_197 = "Precertification/authorization/notification absent"


def _weights_to_p(pairs: Sequence[tuple[str, float]]) -> tuple[list[str], np.ndarray]:
    keys = [k for k, _ in pairs]
    w = np.array([float(v) for _, v in pairs])
    return keys, w / w.sum()


def category_priors(knobs: Knobs, late: bool) -> tuple[list[str], np.ndarray]:
    """Zipf-like priors over the 47 categories; after the drift month volumes shift."""
    ranks = np.arange(1, len(RANKS) + 1, dtype=float)
    w = 1.0 / ranks**knobs.zipf_s
    w = w / w.sum()
    codes = list(RANKS)
    for code, share in RARE.items():
        w[codes.index(code)] = share
    if late:
        # Telehealth coding problems and authorisation rules grow after the policy year changes.
        for code, factor in {"G1": 1.6, "G2": 1.8, "C1": 1.3, "C3": 1.3, "E2": 0.7, "I1": 0.8, "H3": 0.8}.items():
            w[codes.index(code)] *= factor
    return codes, w / w.sum()


# ---- text helpers ---------------------------------------------------------------------
_KEYS = "qwertyuiopasdfghjklzxcvbnm"


def _typo(text: str, r: random.Random) -> str:
    words = text.split(" ")
    idx = [i for i, w in enumerate(words) if len(w) >= 4 and w.rstrip(".,:;").isalpha()]
    if not idx:
        return text
    i = r.choice(idx)
    w = words[i]
    j = r.randrange(1, len(w.rstrip(".,:;")) - 1)
    op = r.random()
    if op < 0.3:
        w = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    elif op < 0.55:
        w = w[:j] + w[j + 1 :]
    elif op < 0.75:
        w = w[:j] + w[j] + w[j:]
    else:
        w = w[:j] + r.choice(_KEYS) + w[j + 1 :]
    words[i] = w
    return " ".join(words)


@dataclass
class _PayerTemplates:
    v1: dict[str, list[str]]
    v2: dict[str, list[str]]
    vague: dict[str, list[str]]
    generic: list[str]


def _prepare(payer: Payer, seed: int, index: int) -> _PayerTemplates:
    r = random.Random(seed * 1009 + index)
    v1, v2, vague = {}, {}, {}
    specs = dict(SPECS)
    specs["AUDIO"] = AUDIO_ONLY
    for code, spec in specs.items():
        k = min(payer.phrasings, len(spec.v1))
        chosen = r.sample(list(spec.v1), k)
        v1[code] = [abbreviate(t, payer.abbreviate) for t in chosen]
        v2[code] = [abbreviate(t, max(payer.abbreviate - 1, 0)) for t in spec.v2]
    for g, phrases in VAGUE.items():
        vague[g] = [abbreviate(t, payer.abbreviate) for t in r.sample(list(phrases), 2)]
    generic = [abbreviate(t, payer.abbreviate) for t in r.sample(list(GENERIC_REMARKS), 5)]
    return _PayerTemplates(v1, v2, vague, generic)


def _choice_by_weight(rng: np.random.Generator, options: Sequence, weights: Sequence[float], n: int) -> np.ndarray:
    w = np.asarray(weights, dtype=float)
    return rng.choice(len(options), size=n, p=w / w.sum())


# ---- the draw ---------------------------------------------------------------------------
def draw_records(
    *,
    n: int,
    seed: int,
    months: int,
    payers: Sequence[Payer],
    events: Events,
    knobs: Knobs,
    network: str = "A",
    id_prefix: str = "DN",
    stream: int = 0,
    on_progress=None,
) -> dict[str, list]:
    """Draw `n` records as a dict of column lists (see COLUMNS) plus hidden `concept`."""
    rng = np.random.default_rng([seed, stream])
    pyr = random.Random(seed * 7919 + stream)

    # Month and date: volume grows ~1.5% a month.
    mw = 1.015 ** np.arange(months)
    month = rng.choice(months, size=n, p=mw / mw.sum()) + 1
    day = rng.integers(1, 29, size=n)
    order = np.lexsort((day, month))  # records in date order, as a billing system lists them
    month, day = month[order], day[order]

    # Payer, respecting each payer's start month.
    pw = np.array([p.weight for p in payers])
    payer_idx = np.empty(n, dtype=int)
    for m in range(1, months + 1):
        sel = np.nonzero(month == m)[0]
        w = np.where([p.start_month <= m for p in payers], pw, 0.0)
        payer_idx[sel] = rng.choice(len(payers), size=len(sel), p=w / w.sum())

    # Multi-line claims: a line joins the previous record's claim (same payer and date).
    join = rng.random(n) < knobs.multi_line_rate
    join[0] = False
    claim_no = np.cumsum(~join)
    line_no = np.ones(n, dtype=int)
    for i in np.nonzero(join)[0]:
        payer_idx[i] = payer_idx[i - 1]
        day[i] = day[i - 1]
        month[i] = month[i - 1]
        line_no[i] = line_no[i - 1] + 1

    # Category (concept) per record, with volumes shifting after the drift month.
    late = month >= events.wording_drift_month
    concept = np.empty(n, dtype=object)
    for is_late in (False, True):
        sel = np.nonzero(late == is_late)[0]
        codes, p = category_priors(knobs, is_late)
        concept[sel] = np.array(codes, dtype=object)[rng.choice(len(codes), size=len(sel), p=p)]
    # Audio-only telehealth grows through the period: a share of the G1 family.
    g1 = np.nonzero(concept == events.new_category_parent)[0]
    audio_p = knobs.audio_only_share * np.clip((month[g1] - 1) / max(months - 1, 1) * 1.6, 0.15, 1.0)
    concept[g1[rng.random(len(g1)) < audio_p]] = "AUDIO"
    label = concept.copy()
    label[(concept == "AUDIO") & (month < events.new_category_month)] = events.new_category_parent
    label[(concept == "AUDIO") & (month >= events.new_category_month)] = events.new_category

    # Uniform draws used below, drawn in bulk for speed.
    u_generic_code, u_drop_rarc, u_generic_remark, u_vague, u_quote, u_typo, u_tail, u_tele, u_mod = rng.random((9, n))
    u_pos, u_amount, u_paid = rng.random((3, n))

    spec_of = {**SPECS, "AUDIO": AUDIO_ONLY}
    prepared = [_prepare(p, seed, i) for i, p in enumerate(payers)]

    # Codes per record.
    group_code = np.empty(n, dtype=object)
    carc = np.empty(n, dtype=object)
    rarcs = np.empty(n, dtype=object)
    for code, spec in spec_of.items():
        sel = np.nonzero(concept == code)[0]
        if not len(sel):
            continue
        pick = _choice_by_weight(rng, spec.codes, [c[3] for c in spec.codes], len(sel))
        opts = np.array([c[:3] for c in spec.codes], dtype=object)
        group_code[sel], carc[sel], rarcs[sel] = opts[pick, 0], opts[pick, 1], opts[pick, 2]
    gpick = _choice_by_weight(rng, GENERIC_CODES, [c[3] for c in GENERIC_CODES], n)
    # Family codes: payers often send a sibling category's code (same group, not I or J).
    family: dict[str, list[tuple[str, str, str]]] = {}
    for code, spec in SPECS.items():
        if code[0] not in "IJ" and code != "B4":
            family.setdefault(code[0], [])
            family[code[0]].extend(c[:3] for c in spec.codes if c[:3] not in family[code[0]])
    u_family, u_family_pick, u_v2 = rng.random((3, n))

    # CPT per record by service profile.
    cpt = np.empty(n, dtype=object)
    tele = np.zeros(n, dtype=bool)
    for code, spec in spec_of.items():
        sel = np.nonzero(concept == code)[0]
        if not len(sel):
            continue
        choices, tele_share = PROFILES[spec.services]
        k = _choice_by_weight(rng, choices, [w for _, w in choices], len(sel))
        cpt[sel] = np.array([c for c, _ in choices], dtype=object)[k]
        tele[sel] = u_tele[sel] < tele_share

    ids = [f"{id_prefix}{i + 1:06d}" for i in range(n)]
    out: dict[str, list] = {c: [None] * n for c in COLUMNS}
    out["concept"] = list(concept)
    drift = events.wording_drift_month
    step = max(n // 50, 1)
    for i in range(n):
        p = payers[payer_idx[i]]
        tpl = prepared[payer_idx[i]]
        m = int(month[i])
        c = concept[i]
        rewritten = p.rewrite_month is not None and m >= p.rewrite_month
        gscale = knobs.generic_scale
        gc_rate = (p.rewrite_generic_code_rate if rewritten else p.generic_code_rate) * gscale
        fam_rate = (p.rewrite_family_code_rate if rewritten else p.family_code_rate) * knobs.family_scale
        fam = family.get("G" if c == "AUDIO" else c[0])
        # -- codes
        grp, reason, rem = group_code[i], carc[i], rarcs[i]
        # Codes that name only "some denial" (generic) or only the family say nothing about the category.
        vague_codes = False
        if c not in ("J1", "J2", "J3", "I3", "B4") and u_generic_code[i] < gc_rate:
            grp, reason, rem = GENERIC_CODES[gpick[i]][:3]
            vague_codes = True
        elif fam and u_family[i] < fam_rate:
            grp, reason, rem = fam[int(u_family_pick[i] * len(fam))]
            vague_codes = True
        elif rem and u_drop_rarc[i] < p.drop_rarc_rate:
            rem = ""
        # -- service
        is_tele = bool(tele[i])
        mods: list[str] = []
        if c == "AUDIO":
            mods = [("95", "", p.telehealth_modifier, "FQ 95")[int(u_mod[i] * 4)]]
            pos = "10" if (m >= drift and u_pos[i] < 0.6) else "02"
        elif is_tele:
            missing = c == "G1" and u_mod[i] < 0.6
            if not missing:
                mods.append(p.telehealth_modifier if u_mod[i] < 0.9 else ("GT" if p.telehealth_modifier == "95" else "95"))
            if c == "G2":
                pos = ("11", "02", "10")[int(u_pos[i] * 3)] if m >= drift else ("11", "02")[int(u_pos[i] * 2)]
            else:
                pos = "10" if (m >= drift and u_pos[i] < 0.55) else "02"
        else:
            pos = "11" if u_pos[i] < 0.85 else ("53" if spec_of[c].services == "community" else "22")
            if spec_of[c].services == "iop":
                pos = "52" if u_pos[i] < 0.5 else "11"
        if line_no[i] > 1:
            pos = out["pos"][i - 1]  # one claim, one place of service (CLP08 in the 835)
        if p.kind == "medicaid" and u_mod[i] < 0.6 and not (c == "G1" and u_mod[i] < 0.3):
            mods.append(("HO", "HN", "AJ")[int(u_mod[i] * 5) % 3])
        modifiers = " ".join(x for x in " ".join(mods).split())
        # -- amounts
        rate = CPT_RATES[cpt[i]]
        billed = round(rate * (1.0 + 0.8 * float(u_amount[i])), 2)
        allowed = round(rate * (0.65 + 0.25 * float(u_paid[i])), 2)
        paid, adj = 0.0, billed
        if c == "J1":
            paid, adj = allowed, round(billed - allowed, 2)
        elif c == "J2":
            share = round(min(allowed, (20.0, 30.0, 45.0, allowed * 0.2)[line_no[i] % 4]), 2)
            paid, adj = round(allowed - share, 2), share
        elif c == "E4":
            reduction = round(allowed * 0.5, 2)
            paid, adj = round(allowed - reduction, 2), reduction
        elif c == "I3":
            billed, paid = -billed, -allowed
            adj = round(billed - paid, 2)
        # -- remark
        slots = {
            "dos": f"{month_start(m).month:02d}/{int(day[i]):02d}",
            "eff": f"{(m + 9) % 12 + 1:02d}/{int(day[i] * 7) % 28 + 1:02d}",
            "end": f"{(m + 1) % 12 + 1:02d}/{int(day[i] * 3) % 28 + 1:02d}",
            "cpt": cpt[i],
            "n": 6 + int(u_amount[i] * 20),
            "m": 20 + int(u_paid[i] * 35),
            "auth": f"PA{int(u_amount[i] * 1e7):07d}",
            "amt": f"{abs(adj):.2f}",
            "days": (90, 180, 365, 120, 45)[int(u_paid[i] * 5)],
            "mod": modifiers.split()[0] if modifiers else "none",
            "pos": pos,
            "ref": f"{int(u_tail[i] * 1e9):09d}",
            "line": int(line_no[i]),
        }
        # Others adopt the new wording after the drift month: many with the new plan year, more later.
        ramp = knobs.v2_jump + (1.0 - knobs.v2_jump) * (m - drift + 1) / max(months - drift + 1, 1)
        adopted = m >= drift and u_v2[i] < knobs.v2_adoption * ramp
        not_denial = c[0] == "J"
        new_wording = rewritten or adopted
        family_code = (events.new_category_parent if c == "AUDIO" else c)[0]
        specific_remark = False
        if u_generic_remark[i] < p.generic_remark_rate * gscale and not not_denial:
            remark = pyr.choice(GENERIC_V2) if new_wording else pyr.choice(tpl.generic)
        elif u_vague[i] < knobs.vague_remark_rate:
            remark = pyr.choice(VAGUE_V2[family_code]) if new_wording else pyr.choice(tpl.vague[family_code])
        else:
            specific_remark = True
            phrasings = tpl.v2[c] if (rewritten or adopted) else tpl.v1[c]
            remark = pyr.choice(phrasings)
        prefixes = p.rewrite_prefixes if rewritten and not not_denial else p.prefixes
        suffixes = p.rewrite_suffixes if rewritten else p.suffixes
        prefix, suffix = pyr.choice(prefixes), pyr.choice(suffixes)
        if not_denial:
            prefix = ""  # "DENY - Deductible amount." is not how a cost-share line reads
        remark = prefix + remark + suffix
        if u_tail[i] < knobs.tail_rate:
            remark += pyr.choice(TAILS)
        if u_quote[i] < p.quote_carc_rate and not rewritten:
            text = carc_text(reason)
            if text and text[:15].lower() not in remark.lower():  # don't quote what the remark already says
                remark = text + " " + remark
        try:
            remark = remark.format(**slots)
        except (KeyError, IndexError, ValueError):  # a template bug must not go unnoticed
            raise AssertionError(f"bad slot in demo template for {c}") from None
        if m >= drift:
            remark = remark.replace(_OLD_197, _NEW_197)
        if u_typo[i] < p.typo_rate:
            remark = _typo(remark, pyr)
            if u_typo[i] < p.typo_rate / 3:
                remark = _typo(remark, pyr)
        if p.upper:
            remark = remark.upper()
        date = month_start(m).replace(day=int(day[i])).isoformat()
        row = out
        row["id"][i] = ids[i]
        row["date"][i] = date
        row["month"][i] = m
        row["payer"][i] = p.name
        row["network"][i] = network
        row["claim_id"][i] = f"{network}{seed % 1000:03d}{int(claim_no[i]):07d}"
        row["line"][i] = int(line_no[i])
        row["cpt"][i] = cpt[i]
        row["modifiers"][i] = modifiers
        row["pos"][i] = pos
        row["billed_amount"][i] = billed
        row["paid_amount"][i] = round(paid, 2)
        row["adjustment_amount"][i] = round(adj, 2)
        row["group_code"][i] = grp
        row["carc"][i] = reason
        row["rarcs"][i] = rem
        row["remark"][i] = remark
        row["label"][i] = label[i]
        row["label_is_noise"][i] = False
        row["near_duplicate_of"][i] = ""
        # The rendered text determines the category unless both its codes and its remark are generic or family-level
        # (the same pattern then comes from several categories); label noise is decided after this.
        row["text_determines"][i] = (not vague_codes) or specific_remark
        if on_progress is not None and i % step == step - 1:
            on_progress(step)

    _near_duplicates(out, rng, pyr, knobs, events)
    _label_noise(out, rng, knobs)
    for i in range(n):
        out["text"][i] = render_text(
            out["group_code"][i], out["carc"][i], out["rarcs"][i], out["cpt"][i], out["modifiers"][i],
            out["pos"][i], out["payer"][i], out["remark"][i],
        )
    return out


def _near_duplicates(
    out: dict[str, list], rng: np.random.Generator, pyr: random.Random, knobs: Knobs, events: Events
) -> None:
    """Re-sent claims: a record repeats an earlier one days later with small edits (same label)."""
    n = len(out["id"])
    dups = np.nonzero(rng.random(n) < knobs.near_duplicate_rate)[0]
    copy = ("payer", "cpt", "modifiers", "pos", "billed_amount", "paid_amount", "adjustment_amount",
            "group_code", "carc", "rarcs", "remark", "label", "concept", "text_determines")
    for i in dups:
        if i < 5 or out["line"][i] != 1:
            continue
        j = int(i - 1 - rng.integers(0, min(i, 400)))
        if out["near_duplicate_of"][j] or out["line"][j] != 1 or (i + 1 < n and out["line"][i + 1] != 1):
            continue
        for col in copy:
            out[col][i] = out[col][j]
        remark = out["remark"][i]
        r = pyr.random()
        if r < 0.4:
            remark = _typo(remark, pyr)
        elif r < 0.7:
            remark = remark.rstrip(".") + f". Resubmitted claim ref {int(r * 1e8):08d}."
        else:
            remark = "  ".join(remark.split(" ", 1)) if " " in remark else remark
        if remark == out["remark"][j]:
            remark += " Resubmitted."
        out["remark"][i] = remark
        out["near_duplicate_of"][i] = out["id"][j]
        if out["concept"][i] == "AUDIO":  # the copy may fall after the new category exists
            late = out["month"][i] >= events.new_category_month
            out["label"][i] = events.new_category if late else events.new_category_parent


def accuracy_ceiling(text_determines: list, labels: list, patterns: list) -> float:
    """The best accuracy any reader of the text can reach: every record whose text determines its category, plus,
    among the others, those whose label is the most common one of their pattern (the best guess)."""
    from collections import Counter

    groups: dict = {}
    for ok, lab, pat in zip(text_determines, labels, patterns):
        if not ok:
            groups.setdefault(pat, Counter())[lab] += 1
    guessed = sum(c.most_common(1)[0][1] for c in groups.values())
    return (sum(bool(x) for x in text_determines) + guessed) / max(len(labels), 1)


def confusable(code: str) -> list[str]:
    """Categories a tired analyst mixes up with `code`: those sharing a CARC, else the same group."""
    mine = {c[1] for c in SPECS[code].codes} if code in SPECS else set()
    shared = [k for k, s in SPECS.items() if k != code and mine & {c[1] for c in s.codes}]
    if shared:
        return sorted(shared)
    return sorted(k for k in SPECS if k != code and k[0] == code[0])


def _label_noise(out: dict[str, list], rng: np.random.Generator, knobs: Knobs) -> None:
    n = len(out["id"])
    noisy = np.nonzero(rng.random(n) < knobs.noise_rate)[0]
    pick = rng.random(len(noisy))
    cache: dict[str, list[str]] = {}
    for i, u in zip(noisy, pick):
        true = out["label"][i]
        options = cache.setdefault(true, confusable(true) or [k for k in SPECS if k != true])
        out["label"][i] = options[int(u * len(options))]
        out["label_is_noise"][i] = True
        out["text_determines"][i] = False  # a mislabelled record: its text points at the other category
