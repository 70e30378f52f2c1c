"""X12 835 (5010, 005010X221A1) remittance advice: write denial records as 835 files and read 835 files into records.

Why a small reader of our own rather than a library: pyx12 (BSD, maintained, on
PyPI) is a validator and XML converter. It walks the whole 5010 implementation
guide and reports errors as 999 acknowledgements, but it neither yields one row
per service line nor lets a caller keep the valid lines of a transaction that
holds a malformed segment, which is exactly what import needs; it also requires
Python >= 3.11 while taxonomist supports 3.10. So `parse_835` reads the segments
an import needs (ISA/GS/ST, N1 payer/payee, CLP, CAS, NM1, MOA, DTM, SVC, LQ,
REF, SE/GE/IEA) and skips the rest; the tests use pyx12, when installed, to
check that `write_835` produces a valid 835.

Reading
    - Separators come from the ISA segment (element separator at byte 4,
      repetition at 83, component at 105, segment terminator at 106).
    - `parse_835` yields a `Remit835Row` per service line (SVC loop 2110): claim,
      line number, payer, service date (DTM*472, else the claim's DTM*232), CPT and
      modifiers, billed and paid amounts, adjustments (group, CARC, amount) and
      RARCs (LQ*HE at the line, MOA at the claim). A claim-level CAS (loop 2100)
      applies to a claim's only line when that line carries no CAS itself.
    - A malformed segment (a CAS without a complete reason/amount, an amount
      that is not a number, a segment out of order, an SE count that disagrees)
      yields a `Reject835` naming the segment's position in the file and the
      ISA13/ST02 control numbers. Only what the segment affects is dropped (its
      service line, or its claim for a bad CLP); every other line is kept.
    - `read_835` adapts that to `taxonomist.records`' format registry: it yields
      (segment position, row dict) with `text` rendered as the demo generator
      renders it (codes, service and payer; an 835 carries no free-text remark)
      and no label.

Writing
    `write_835(records, dest, ...)` writes one interchange (ISA/GS ... GE/IEA)
    with one transaction (ST ... SE) per payer and one CLP per claim (CLP02 = 4
    for a denial, 1 when something was paid, 22 for a reversal, recognised by a
    negative billed amount), with CAS, DTM*472, SVC (HC:code:modifiers), REF*6R
    (the record id), LQ*HE and segment counts and control numbers that agree.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any, Union

from .errors import RecordError

__all__ = [
    "Adjustment",
    "Remit835Row",
    "Reject835",
    "parse_835",
    "read_835",
    "write_835",
]


# ----- data ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Adjustment:
    """One CAS triplet: group code (CO, PR, OA, PI), CARC, amount."""

    group: str
    reason: str
    amount: float
    quantity: float | None = None


@dataclass(frozen=True)
class Remit835Row:
    """One service line of an 835, with what its claim says about it."""

    interchange: str  # ISA13
    transaction: str  # ST02
    segment: int  # position of the SVC segment (or CLP for a claim with no line) in the file, 1-based
    payer: str
    payee: str
    claim_id: str
    claim_status: str
    line: int
    line_id: str  # REF*6R (line item control number), '' when absent
    date: str  # ISO
    cpt: str
    modifiers: tuple[str, ...]
    pos: str  # CLP08 (place of service for professional claims)
    billed_amount: float
    paid_amount: float
    adjustments: tuple[Adjustment, ...]
    rarcs: tuple[str, ...]

    @property
    def group_code(self) -> str:
        return self.adjustments[0].group if self.adjustments else ""

    @property
    def carc(self) -> str:
        return self.adjustments[0].reason if self.adjustments else ""

    @property
    def adjustment_amount(self) -> float:
        return self.adjustments[0].amount if self.adjustments else 0.0

    @property
    def id(self) -> str:
        return self.line_id or f"{self.claim_id}-{self.line}"

    def text(self) -> str:
        """The line engines classify, rendered exactly as the demo generator renders its `text`."""
        from .denials import render_text

        return render_text(
            self.group_code, self.carc, " ".join(self.rarcs), self.cpt, " ".join(self.modifiers), self.pos,
            self.payer, "",
        )

    def to_row(self) -> dict[str, Any]:
        """A row for `taxonomist.records` (id, text, date and structured fields; no label)."""
        return {
            "id": self.id,
            "text": self.text(),
            "date": self.date,
            "payer": self.payer,
            "payee": self.payee,
            "claim_id": self.claim_id,
            "claim_status": self.claim_status,
            "line": self.line,
            "cpt": self.cpt,
            "modifiers": " ".join(self.modifiers),
            "pos": self.pos,
            "billed_amount": self.billed_amount,
            "paid_amount": self.paid_amount,
            "adjustment_amount": self.adjustment_amount,
            "group_code": self.group_code,
            "carc": self.carc,
            "rarcs": " ".join(self.rarcs),
            "adjustments": [[a.group, a.reason, a.amount] for a in self.adjustments],
            "x12_interchange": self.interchange,
            "x12_transaction": self.transaction,
            "x12_segment": self.segment,
        }


@dataclass(frozen=True)
class Reject835:
    """A malformed segment: where it is and what was not imported because of it."""

    segment: int  # position in the file, 1-based
    segment_id: str
    interchange: str
    transaction: str
    reason: str
    claim_id: str = ""

    def message(self) -> str:
        # Only names, positions and control numbers: a segment's elements hold patient names and member ids.
        where = f"segment {self.segment} ({_name(self.segment_id)}) of interchange {_name(self.interchange, _CONTROL_NUMBER)}"
        if self.transaction:
            where += f", transaction {_name(self.transaction, _CONTROL_NUMBER)}"
        return f"{where}: {self.reason}"


# ----- reading ------------------------------------------------------------------------------
_SEGMENT_NAME = re.compile(r"^[A-Z][A-Z0-9]{1,2}$")
_CONTROL_NUMBER = re.compile(r"^[A-Za-z0-9]{1,14}$")


def _name(value: str, pattern: re.Pattern[str] = _SEGMENT_NAME) -> str:
    """A segment name or control number as reported; anything else (a misread segment's text) is '?'."""
    return value if pattern.match(value or "") else "?"


@dataclass
class _Separators:
    element: str
    component: str
    repetition: str
    segment: str


def _separators(text: str, source: str) -> tuple[_Separators, int]:
    start = text.find("ISA")
    if start < 0 or text[:start].strip("\ufeff \r\n\t"):
        raise RecordError(f"'{source}' is not an X12 file: it must start with an ISA segment")
    isa = text[start : start + 106]
    if len(isa) < 106:
        raise RecordError(f"'{source}': the ISA segment is truncated (an ISA is 106 characters); check the file")
    element = isa[3]
    if isa.count(element) != 16:
        raise RecordError(
            f"'{source}': the ISA segment has {isa.count(element)} element separators '{element}', expected 16; "
            "the file is not a valid X12 interchange"
        )
    return _Separators(element=element, repetition=isa[82], component=isa[104], segment=isa[105]), start


_KNOWN = {
    "ISA", "IEA", "GS", "GE", "ST", "SE", "BPR", "TRN", "CUR", "REF", "DTM", "N1", "N2", "N3", "N4", "PER",
    "RDM", "LX", "TS3", "TS2", "CLP", "CAS", "NM1", "MIA", "MOA", "AMT", "QTY", "SVC", "LQ", "PLB",
}


def _amount(value: str, element: str = "amount") -> float:
    """A decimal amount; the ValueError names the element (e.g. "CLP03 (charge)"), never the value."""
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise ValueError(element) from None
    if not d.is_finite():
        raise ValueError(element)
    return float(round(d, 2))


def _date(value: str) -> str:
    return dt.datetime.strptime(value, "%Y%m%d").date().isoformat()


@dataclass
class _Line:
    segment: int
    cpt: str
    modifiers: tuple[str, ...]
    billed: float
    paid: float
    date: str = ""
    line_id: str = ""
    adjustments: list[Adjustment] = field(default_factory=list)
    rarcs: list[str] = field(default_factory=list)
    bad: Reject835 | None = None


@dataclass
class _Claim:
    segment: int
    claim_id: str
    status: str
    billed: float
    paid: float
    pos: str
    date: str = ""
    adjustments: list[Adjustment] = field(default_factory=list)
    rarcs: list[str] = field(default_factory=list)
    lines: list[_Line] = field(default_factory=list)
    bad: Reject835 | None = None


def _parse_cas(el: Sequence[str]) -> list[Adjustment]:
    """CAS*group*reason*amount[*qty*reason*amount*qty...]; raises ValueError naming the problem."""
    if len(el) < 4 or not el[1]:
        raise ValueError("CAS is truncated: it needs a group code and at least one reason code and amount")
    group = el[1]
    if group not in ("CO", "PR", "OA", "PI", "CR"):
        raise ValueError("CAS01 (group code) is not one of CO, PR, OA, PI")
    out = []
    for k in range(2, len(el), 3):
        reason = el[k] if k < len(el) else ""
        amount = el[k + 1] if k + 1 < len(el) else ""
        qty = el[k + 2] if k + 2 < len(el) else ""
        if not reason and not amount:
            continue
        if not reason or not amount:
            raise ValueError(f"CAS triplet {k // 3 + 1} is incomplete: it needs both a reason code and an amount")
        try:
            value = _amount(amount)
        except ValueError:
            raise ValueError(f"CAS{k + 1:02d} (amount of triplet {k // 3 + 1}) is not a number") from None
        try:
            quantity = _amount(qty) if qty else None
        except ValueError:
            raise ValueError(f"CAS{k + 2:02d} (quantity of triplet {k // 3 + 1}) is not a number") from None
        out.append(Adjustment(group=group, reason=reason, amount=value, quantity=quantity))
    if not out:
        raise ValueError("CAS is truncated: it has no reason code and amount")
    return out


def parse_835(source: str | Path | IO[str] | IO[bytes]) -> Iterator[Remit835Row | Reject835]:
    """Read an 835 file (path or stream): one `Remit835Row` per service line, a `Reject835` per bad segment."""
    name, text = _read_text(source)
    seps, start = _separators(text, name)
    raw_segments = text[start:].split(seps.segment)
    isa13 = st02 = ""
    payer = payee = ""
    claim: _Claim | None = None
    line: _Line | None = None
    st_start = 0
    damaged = -1  # position of the last segment that does not start with a segment name
    in_st = False
    n1_role = ""

    def reject(pos: int, seg_id: str, reason: str, claim_id: str = "") -> Reject835:
        return Reject835(segment=pos, segment_id=seg_id, interchange=isa13, transaction=st02, reason=reason, claim_id=claim_id)

    def finish_claim(c: _Claim | None) -> Iterator[Remit835Row | Reject835]:
        if c is None:
            return
        if c.bad is not None:
            yield c.bad
            return
        lines = c.lines
        if not lines:
            lines = [_Line(segment=c.segment, cpt="", modifiers=(), billed=c.billed, paid=c.paid)]
        for k, ln in enumerate(lines, 1):
            if ln.bad is not None:
                yield ln.bad
                continue
            adjustments = list(ln.adjustments)
            if not adjustments and len(lines) == 1:
                adjustments = list(c.adjustments)
            yield Remit835Row(
                interchange=isa13, transaction=st02, segment=ln.segment, payer=payer, payee=payee,
                claim_id=c.claim_id, claim_status=c.status, line=k, line_id=ln.line_id,
                date=ln.date or c.date, cpt=ln.cpt, modifiers=ln.modifiers, pos=c.pos,
                billed_amount=ln.billed, paid_amount=ln.paid, adjustments=tuple(adjustments),
                rarcs=tuple(dict.fromkeys([*ln.rarcs, *c.rarcs])),
            )

    _check_body_separators(raw_segments, seps, name)
    pos = 0
    for raw in raw_segments:
        seg = raw.strip("\r\n\t ")
        if not seg:
            continue
        pos += 1
        el = seg.split(seps.element)
        sid = el[0] if _SEGMENT_NAME.match(el[0]) else "?"
        if not in_st and sid in _KNOWN and sid not in ("ISA", "IEA", "GS", "GE", "ST", "SE"):
            # Transaction content with no ST before it: the ST is damaged. Read on rather than drop the
            # transaction's claims silently; its SE count will disagree and say so too.
            yield reject(pos, sid, "segment outside a transaction: the ST before it is missing or damaged; "
                                   "read as part of a transaction with an unknown control number")
            st02, st_start, in_st, payer, payee = "", pos, True, "", ""
        if sid == "NM1" and in_st and damaged == pos - 1 and el[1:2] == ["QC"]:
            # A patient NM1 right after a damaged segment: that segment was the claim's CLP. Its lines
            # must not be filed under the claim before it.
            yield from finish_claim(claim)
            line = None
            claim = _Claim(pos - 1, "", "", 0, 0, "")
            claim.bad = reject(pos - 1, "?", "a damaged segment where a claim's CLP should be; the claim is not imported")
        if sid == "?":
            damaged = pos
        try:
            if sid == "ISA":
                isa13 = _name(el[13].strip() if len(el) > 13 else "", _CONTROL_NUMBER)
            elif sid == "ST":
                yield from finish_claim(claim)
                claim, line = None, None
                st02 = _name(el[2] if len(el) > 2 else "", _CONTROL_NUMBER)
                st_start, in_st, payer, payee = pos, True, "", ""
                if len(el) < 2 or el[1] != "835":
                    yield reject(pos, sid, "the transaction set (ST01) is not an 835; it is skipped")
                    in_st = False
            elif sid == "SE":
                yield from finish_claim(claim)
                claim, line = None, None
                count = pos - st_start + 1
                if len(el) < 3 or el[1] != str(count):
                    yield reject(pos, sid, f"SE01 (segment count) does not say {count}, the segments the transaction has; lines read are kept")
                elif el[2] != st02:
                    yield reject(pos, sid, f"SE02 (control number) does not match ST02 '{st02}'")
                in_st = False
                st02 = ""
            elif sid in ("GS", "GE", "IEA"):
                pass
            elif not in_st:
                if sid not in _KNOWN:
                    yield reject(pos, sid, f"unknown segment '{sid}' outside a transaction; skipped")
            elif sid == "N1":
                n1_role = el[1] if len(el) > 1 else ""
                if n1_role == "PR":
                    payer = el[2] if len(el) > 2 else ""
                elif n1_role == "PE":
                    payee = el[2] if len(el) > 2 else ""
            elif sid == "CLP":
                yield from finish_claim(claim)
                line = None
                if len(el) < 5 or not el[1]:
                    claim = _Claim(pos, "", "", 0, 0, "")
                    claim.bad = reject(pos, sid, "CLP is truncated (needs claim id, status, charge and payment); the claim is not imported")
                    continue
                try:
                    billed, paid = _amount(el[3], "CLP03 (charge)"), _amount(el[4], "CLP04 (payment)")
                except ValueError as exc:
                    claim = _Claim(pos, el[1], el[2], 0, 0, "")
                    claim.bad = reject(pos, sid, f"CLP {exc} is not a number; the claim is not imported", el[1])
                    continue
                claim = _Claim(pos, el[1], el[2], billed, paid, el[8] if len(el) > 8 else "")
            elif sid == "SVC":
                if claim is None:
                    yield reject(pos, sid, "SVC before any CLP (segment out of order); the line is skipped")
                    line = None
                    continue
                comp = el[1].split(seps.component) if len(el) > 1 else [""]
                line = _Line(pos, comp[1] if len(comp) > 1 else "", tuple(m for m in comp[2:6] if m), 0.0, 0.0)
                claim.lines.append(line)
                if len(el) < 4 or len(comp) < 2 or not comp[1]:
                    line.bad = reject(pos, sid, "SVC is truncated (needs procedure, charge and payment); the line is not imported", claim.claim_id)
                    continue
                try:
                    line.billed, line.paid = _amount(el[2], "SVC02 (charge)"), _amount(el[3], "SVC03 (payment)")
                except ValueError as exc:
                    line.bad = reject(pos, sid, f"SVC {exc} is not a number; the line is not imported", claim.claim_id)
            elif sid == "CAS":
                if claim is None:
                    yield reject(pos, sid, "CAS before any CLP (segment out of order); skipped")
                    continue
                target = line if line is not None else claim
                try:
                    target.adjustments.extend(_parse_cas(el))
                except ValueError as exc:
                    what = "the line is not imported" if line is not None else "the claim is not imported"
                    if target.bad is None:
                        target.bad = reject(pos, sid, f"{exc}; {what}", claim.claim_id)
            elif sid == "MOA":
                if claim is None or line is not None:
                    yield reject(pos, sid, "MOA outside a claim's header (segment out of order); skipped")
                    continue
                claim.rarcs.extend(x for x in el[3:8] if x)
            elif sid == "LQ":
                if line is None:
                    yield reject(pos, sid, "LQ outside a service line (segment out of order); skipped")
                    continue
                if len(el) > 2 and el[1] == "HE" and el[2]:
                    line.rarcs.append(el[2])
            elif sid == "DTM":
                qual, value = (el[1] if len(el) > 1 else ""), (el[2] if len(el) > 2 else "")
                try:
                    if qual in ("472", "150") and line is not None:
                        line.date = line.date or _date(value)
                    elif qual in ("232", "050") and claim is not None and line is None:
                        claim.date = claim.date or _date(value)
                except ValueError:
                    target = line if (qual in ("472", "150") and line is not None) else claim
                    if target is not None and target.bad is None:
                        target.bad = reject(pos, sid, "DTM02 (date) is not a CCYYMMDD date", claim.claim_id if claim else "")
            elif sid == "REF":
                if line is not None and len(el) > 2 and el[1] == "6R":
                    line.line_id = el[2]
            elif sid not in _KNOWN:
                yield reject(pos, sid, f"unknown segment '{sid}'; skipped")
        except IndexError:  # pragma: no cover - every branch checks lengths; keep reading regardless
            yield reject(pos, sid, "segment is truncated; skipped")
    yield from finish_claim(claim)
    if in_st:
        yield reject(pos, "SE", "the file ends inside a transaction (no SE); lines read are kept")


def _check_body_separators(raw_segments: Sequence[str], seps: _Separators, source: str) -> None:
    """Refuse a file whose body does not use the separators its ISA declares (one line, not a reject per segment)."""
    body = [seg.strip("\r\n\t ") for seg in raw_segments[1:3]]
    body = [seg for seg in body if seg]
    first = body[0].split(seps.element) if body else ["GS"]
    # A GS has 8 elements: more means the segment terminator is not the one declared either.
    if raw_segments[0].count(seps.element) != 16 or not _SEGMENT_NAME.match(first[0]) or first[0] == "GS" and len(first) > 9:
        raise RecordError(
            f"'{source}': the segment after the ISA does not start with a segment name followed by the element "
            f"separator {seps.element!r} that the ISA declares (segment terminator {seps.segment!r}); the body uses "
            "other separators than its ISA: export the file again from the system that wrote it"
        )


def read_835(path: str | Path) -> Iterator[tuple[int, Union[Mapping[str, Any], str]]]:
    """Reader for the records format registry: (segment position, row) or (segment position, reason)."""
    for item in parse_835(path):
        if isinstance(item, Reject835):
            yield item.segment, item.message()
        else:
            yield item.segment, item.to_row()


def _read_text(source: str | Path | IO[str] | IO[bytes]) -> tuple[str, str]:
    if isinstance(source, (str, Path)):
        p = Path(source)
        if not p.is_file():
            raise RecordError(f"835 file '{p}' does not exist")
        data: str | bytes = p.read_bytes()
        name = str(p)
    else:
        data = source.read()
        name = getattr(source, "name", "<stream>")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            data = data.decode("latin-1")  # X12 basic/extended character sets fit in Latin-1
    return name, data


# ----- writing ------------------------------------------------------------------------------
def _fmt(amount: float) -> str:
    """X12 decimal: no trailing zeros, no leading '+', '-' for negatives."""
    d = Decimal(str(round(float(amount), 2))).quantize(Decimal("0.01"))
    text = format(d.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def _ymd(iso: str) -> str:
    return dt.date.fromisoformat(str(iso)[:10]).strftime("%Y%m%d")


def _get(rec: Mapping[str, Any], key: str, default: Any = "") -> Any:
    value = rec.get(key, default)
    return default if value is None else value


def write_835(
    records: Iterable[Mapping[str, Any]],
    dest: str | Path | IO[str],
    *,
    payer: str | None = None,
    payee: str = "DEMO BEHAVIORAL HEALTH NETWORK",
    payee_npi: str = "1999999984",
    sender_id: str = "DEMOPAYER",
    receiver_id: str = "DEMOPROVIDER",
    control_seed: int = 1,
    claim_level_payers: Iterable[str] = (),
) -> int:
    """Write records (the demo generator's columns) as one 835 interchange; returns the segment count.

    Needed per record: claim_id, date, cpt, billed_amount, paid_amount, group_code,
    carc; optional: id (written as REF*6R), line, payer, modifiers, pos, rarcs,
    adjustment_amount (the main CAS amount; the rest of billed - paid becomes CO-45).
    Records of one claim must share payer and date. For payers in
    `claim_level_payers`, single-line claims carry their CAS and RARCs (MOA) at
    claim level, as some payers do.
    """
    recs = list(records)
    if not recs:
        raise RecordError("write_835: no records to write")
    by_payer: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for k, rec in enumerate(recs, 1):
        for need in ("claim_id", "date", "cpt", "billed_amount", "paid_amount", "group_code", "carc"):
            if _get(rec, need, None) in (None, ""):
                raise RecordError(f"write_835: record #{k} has no '{need}'; every record needs it for an 835")
        name = payer or str(_get(rec, "payer", "UNKNOWN PAYER"))
        by_payer.setdefault(name, {}).setdefault(str(rec["claim_id"]), []).append(rec)
    claim_level = set(claim_level_payers)
    last = max(_ymd(r["date"]) for r in recs)
    isa13 = f"{control_seed % 1_000_000_000:09d}"
    gs06 = str(control_seed % 1_000_000_000 or 1)
    E, C, T = "*", ":", "~"
    out: list[str] = []
    isa = (
        f"ISA{E}00{E}{'':10}{E}00{E}{'':10}{E}ZZ{E}{sender_id[:15]:15}{E}ZZ{E}{receiver_id[:15]:15}"
        f"{E}{last[2:]}{E}1200{E}^{E}00501{E}{isa13}{E}0{E}P{E}{C}"
    )
    out.append(isa)
    out.append(f"GS{E}HP{E}{sender_id}{E}{receiver_id}{E}{last}{E}1200{E}{gs06}{E}X{E}005010X221A1")
    for st_no, (payer_name, claims) in enumerate(by_payer.items(), 1):
        st02 = f"{st_no:04d}"
        seg: list[str] = [f"ST{E}835{E}{st02}"]
        total = sum(float(r["paid_amount"]) for lines in claims.values() for r in lines)
        bpr_amount = max(round(total, 2), 0.0)
        if bpr_amount > 0:
            seg.append(f"BPR{E}I{E}{_fmt(bpr_amount)}{E}C{E}CHK{E * 12}{last}")
        else:
            seg.append(f"BPR{E}H{E}0{E}C{E}NON{E * 12}{last}")
        seg.append(f"TRN{E}1{E}{control_seed:05d}{st02}{E}1{sender_id[:9].ljust(9, '0')}")
        seg.append(f"DTM{E}405{E}{last}")
        seg.append(f"N1{E}PR{E}{payer_name}")
        seg.append(f"N3{E}100 DEMO PLAZA")
        seg.append(f"N4{E}SPRINGFIELD{E}IL{E}62701")
        seg.append(f"PER{E}BL{E}PROVIDER SERVICES{E}TE{E}8005550142")
        seg.append(f"N1{E}PE{E}{payee}{E}XX{E}{payee_npi}")
        seg.append(f"LX{E}1")
        for claim_id, lines in claims.items():
            status = "22" if any(float(r["billed_amount"]) < 0 for r in lines) else (
                "1" if any(float(r["paid_amount"]) > 0 for r in lines) else "4"
            )
            billed = round(sum(float(r["billed_amount"]) for r in lines), 2)
            paid = round(sum(float(r["paid_amount"]) for r in lines), 2)
            per_line = [_adjustments(r) for r in lines]
            patient = round(sum(a.amount for adj in per_line for a in adj if a.group == "PR"), 2)
            pos = str(_get(lines[0], "pos", "11")) or "11"
            at_claim = payer_name in claim_level and len(lines) == 1
            seg.append(
                f"CLP{E}{claim_id}{E}{status}{E}{_fmt(billed)}{E}{_fmt(paid)}{E}{_fmt(patient) if patient else ''}"
                f"{E}12{E}{claim_id[-10:]}PCN{E}{pos}{E}1"
            )
            if at_claim:
                seg.extend(_cas_segments(per_line[0], E))
            seg.append(f"NM1{E}QC{E}1{E}DEMO{E}PATIENT{E * 4}MI{E}M{_stable_number(claim_id):09d}")
            if at_claim:
                rarcs = str(_get(lines[0], "rarcs", "")).split()
                if rarcs:
                    seg.append(f"MOA{E}{E}{E}" + E.join(rarcs[:5]))
            seg.append(f"DTM{E}232{E}{_ymd(lines[0]['date'])}")
            for rec, adj in zip(lines, per_line):
                mods = str(_get(rec, "modifiers", "")).split()
                proc = C.join(["HC", str(rec["cpt"]), *mods[:4]])
                seg.append(f"SVC{E}{proc}{E}{_fmt(float(rec['billed_amount']))}{E}{_fmt(float(rec['paid_amount']))}{E}{E}1")
                seg.append(f"DTM{E}472{E}{_ymd(rec['date'])}")
                if not at_claim:
                    seg.extend(_cas_segments(adj, E))
                if _get(rec, "id", ""):
                    seg.append(f"REF{E}6R{E}{rec['id']}")
                if not at_claim:
                    for r in str(_get(rec, "rarcs", "")).split():
                        seg.append(f"LQ{E}HE{E}{r}")
        if total < 0:
            # Recoupments larger than payments: a provider-level adjustment brings BPR02 to zero.
            seg.append(f"PLB{E}{payee_npi}{E}{last[:4]}1231{E}WO{C}{control_seed:05d}{st02}{E}{_fmt(round(total, 2))}")
        seg.append(f"SE{E}{len(seg) + 1}{E}{st02}")
        out.extend(seg)
    out.append(f"GE{E}{len(by_payer)}{E}{gs06}")
    out.append(f"IEA{E}1{E}{isa13}")
    body = (T + "\n").join(out) + T + "\n"
    if isinstance(dest, (str, Path)):
        Path(dest).write_text(body, encoding="utf-8")
    else:
        dest.write(body)
    return len(out)


def _stable_number(text: str) -> int:
    """A stable small number from a string (Python's hash() is salted per process)."""
    import zlib

    return zlib.crc32(text.encode("utf-8")) % 1_000_000_000


def _adjustments(rec: Mapping[str, Any]) -> list[Adjustment]:
    billed = float(rec["billed_amount"])
    paid = float(rec["paid_amount"])
    main_amount = _get(rec, "adjustment_amount", None)
    main = round(float(main_amount) if main_amount not in (None, "") else billed - paid, 2)
    out = [Adjustment(str(rec["group_code"]), str(rec["carc"]), main)]
    rest = round(billed - paid - main, 2)
    if abs(rest) >= 0.005:
        out.append(Adjustment("CO", "45", rest))
    return out


def _cas_segments(adjustments: Sequence[Adjustment], E: str) -> list[str]:
    segs: list[str] = []
    by_group: dict[str, list[Adjustment]] = {}
    for a in adjustments:
        by_group.setdefault(a.group, []).append(a)
    for group, items in by_group.items():
        for k in range(0, len(items), 6):
            parts = [f"{a.reason}{E}{_fmt(a.amount)}" for a in items[k : k + 6]]
            segs.append(f"CAS{E}{group}{E}" + f"{E}{E}".join(parts))
    return segs
