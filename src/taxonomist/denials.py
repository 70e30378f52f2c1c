"""The denial domain's record text: how a remittance line becomes the text engines classify.

One rendering for every path a denial comes in by: the demo generator writes
it, and the X12 835 reader renders imported lines the same way (without the
remark, which an 835 does not carry), so a model trained on one reads the other.
"""

from __future__ import annotations

__all__ = ["render_text"]


def render_text(group_code: str, carc: str, rarcs: str, cpt: str, modifiers: str, pos: str, payer: str, remark: str) -> str:
    """`CO-197 N/A | CPT 90837-95 POS 02 | Payer: Keystone Health Plan | remark`: codes, service, payer, remark."""
    mods = "".join("-" + m for m in modifiers.split()) if modifiers else ""
    head = f"{group_code}-{carc} {rarcs or 'N/A'} | CPT {cpt}{mods} POS {pos} | Payer: {payer}"
    return f"{head} | {remark}" if remark else head
