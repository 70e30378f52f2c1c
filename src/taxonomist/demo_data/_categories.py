"""What each denial category looks like on a remittance: its codes, services and the payers' wording.

Every category has the adjustment codes payers send for it (group code, CARC, RARCs,
weight), a service profile, and remark phrasings: `v1` is how payers word it through
the period, `v2` is the wording of the payer that rewrites its templates mid-way.
Phrasings are written in full; payer habits (abbreviations, casing, typos) are applied
on top. Slots: {dos} {eff} {end} {cpt} {n} {m} {auth} {amt} {days} {mod} {pos} {ref}.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CategorySpec", "SPECS", "GENERIC_REMARKS", "GENERIC_CODES", "AUDIO_ONLY", "RANKS", "RARE"]


@dataclass(frozen=True)
class CategorySpec:
    codes: tuple[tuple[str, str, str, float], ...]  # group, CARC, RARCs (space-separated), weight
    services: str
    v1: tuple[str, ...]
    v2: tuple[str, ...]


def _s(codes, services, v1, v2) -> CategorySpec:
    return CategorySpec(tuple(codes), services, tuple(v1), tuple(v2))


SPECS: dict[str, CategorySpec] = {
    # ---- A eligibility ------------------------------------------------------------
    "A1": _s(
        [("CO", "27", "", 6), ("CO", "26", "", 3), ("CO", "200", "", 1), ("CO", "27", "N30", 1)],
        "outpatient",
        [
            "Expenses incurred after coverage terminated. Member termed {eff}, date of service {dos}.",
            "Coverage not in effect on date of service. Policy effective date {eff}.",
            "Member coverage retro terminated by employer group effective {eff}. Verify new coverage.",
            "Patient's policy lapsed, premium grace period expired prior to {dos}.",
            "No active coverage on DOS per eligibility file. Term date {eff}.",
        ],
        [
            "Our records show this member was not enrolled with us on {dos}. Please check current insurance.",
            "Enrollment ended {eff}; services after that date are the member's responsibility or another plan's.",
        ],
    ),
    "A2": _s(
        [("CO", "31", "", 8), ("CO", "31", "MA61", 1)],
        "outpatient",
        [
            "Patient cannot be identified as our insured.",
            "Unable to locate member with ID and date of birth submitted. Please verify and resubmit.",
            "Subscriber ID invalid, name on claim does not match member file.",
            "Member ID not on file. Check card and submit with correct ID.",
            "Insured not found, DOB mismatch.",
        ],
        [
            "We could not match the person on this claim to anyone enrolled in our plans.",
            "No match for the member identifier provided; confirm ID with the patient's card.",
        ],
    ),
    "A3": _s(
        [("CO", "32", "", 5), ("CO", "33", "", 3)],
        "outpatient",
        [
            "Our records indicate the patient is not an eligible dependent.",
            "Dependent aged out of plan at 26, DOS after birthday.",
            "Patient not enrolled as dependent under subscriber policy. Add dependent with employer.",
            "Full time student verification not on file for dependent.",
            "Insured has no dependent coverage.",
        ],
        [
            "This patient is not listed as a covered dependent on the subscriber's account.",
            "Dependent eligibility could not be confirmed (age or student status).",
        ],
    ),
    "A4": _s(
        [("CO", "178", "", 4), ("CO", "177", "", 3), ("CO", "179", "", 1), ("CO", "180", "", 1)],
        "community",
        [
            "Patient has not met the required spend down requirements for the month.",
            "Medicaid spend-down not satisfied for DOS month, bill patient up to spend-down amount {amt}.",
            "Patient has not met the required eligibility requirements, residency not verified.",
            "Waiting period not satisfied for new enrollee.",
            "Spend down of {amt} outstanding for {dos}.",
        ],
        [
            "Medicaid eligibility is conditional on spend-down; the patient's obligation for this month is not met.",
            "Program eligibility requirements (residency/waiting period) not met on date of service.",
        ],
    ),
    "A5": _s(
        [("CO", "109", "", 8), ("CO", "109", "N418", 1)],
        "outpatient",
        [
            "Claim not covered by this payer/contractor. Behavioral health benefits carved out, send to BH vendor.",
            "Behavioral health services are administered by another carrier for this group, resubmit there.",
            "Wrong payer, member's mental health benefit managed by carve-out, see back of ID card.",
            "Bill the behavioral health administrator listed on the member card.",
            "MH/SUD services for this plan processed by MBHO. Not our liability.",
        ],
        [
            "This plan's mental health and substance use benefits are handled by a separate behavioral health company.",
            "Please redirect this claim to the behavioral health plan administrator for this employer.",
        ],
    ),
    # ---- B coordination of benefits -----------------------------------------------
    "B1": _s(
        [("CO", "22", "", 8), ("OA", "22", "", 2), ("CO", "22", "N479", 1)],
        "outpatient",
        [
            "This care may be covered by another payer per coordination of benefits.",
            "Other insurance primary on file (spouse plan). Bill primary first, then submit with EOB.",
            "COB: member has other coverage, please send COB questionnaire.",
            "Medicare is primary for this member, submit to Medicare first.",
            "Other carrier primary per COB update {eff}.",
        ],
        [
            "Another health plan pays first for this member. Send the claim to that plan before us.",
            "We are the secondary plan; the primary carrier on file must adjudicate first.",
        ],
    ),
    "B2": _s(
        [("CO", "16", "N4", 7), ("CO", "16", "N4 MA04", 2), ("CO", "16", "", 1)],
        "outpatient",
        [
            "Missing/incomplete/invalid prior insurance carrier EOB. Resubmit with primary EOB.",
            "Secondary claim received without primary payer EOB, please attach and resend.",
            "Need primary explanation of benefits to process as secondary.",
            "Primary payment information incomplete, COB loop missing.",
            "Attach other carrier EOB for DOS {dos}.",
        ],
        [
            "To process as secondary we need the primary plan's remittance (amounts paid and adjusted).",
            "Primary payer adjudication details were not included on this secondary claim.",
        ],
    ),
    "B3": _s(
        [("CO", "19", "", 4), ("CO", "21", "", 3), ("CO", "20", "", 2)],
        "outpatient",
        [
            "This is a work-related injury/illness and thus the liability of the Worker's Compensation Carrier.",
            "Accident questionnaire not returned; claim denied pending liability carrier info.",
            "Diagnosis indicates MVA related, bill auto carrier first (no-fault).",
            "Liability of no-fault carrier. Submit to auto insurer.",
            "Work comp claim on file for this condition. Denied.",
        ],
        [
            "Treatment appears related to an accident or work injury; the responsible liability insurer must be billed.",
            "Please return the accident/injury form so we can determine if another carrier is liable.",
        ],
    ),
    "B4": _s(
        [("OA", "23", "", 8), ("CO", "23", "", 2)],
        "outpatient",
        [
            "The impact of prior payer(s) adjudication including payments and/or adjustments.",
            "Primary paid in excess of our allowable, no secondary liability.",
            "Secondary benefit reduced by primary carrier payment, COB calc applied.",
            "Prior payer payment exceeds plan allowance. Nothing further due.",
            "COB adjustment: primary paid {amt}.",
        ],
        [
            "After applying the primary plan's payment, no additional benefit is payable by us.",
            "Coordination calculation: other plan's payment meets our allowed amount.",
        ],
    ),
    # ---- C authorisation ---------------------------------------------------------
    "C1": _s(
        [("CO", "197", "", 8), ("CO", "197", "N54", 1), ("CO", "15", "", 1)],
        "auth",
        [
            "Precertification/authorization/notification absent. No auth on file for {cpt}.",
            "No PA found for services billed, authorization required per plan.",
            "Prior authorization required and not obtained.",
            "Services require precert. None on file for member/provider.",
            "Auth not requested for {cpt} on {dos}, required after visit {n}.",
        ],
        [
            "Approval was needed before this service and we have no request on record.",
            "This service needs advance approval from our utilization team; none was requested.",
        ],
    ),
    "C2": _s(
        [("CO", "15", "", 4), ("CO", "16", "M62", 3), ("CO", "197", "", 3), ("CO", "198", "", 1)],
        "auth",
        [
            "The authorization number is missing, invalid, or does not apply to the billed services or provider.",
            "Missing/incomplete/invalid treatment authorization code. Add auth # to claim.",
            "Auth on file is for different rendering provider, please correct and resubmit.",
            "Auth {auth} on file eff {eff}-{end}, DOS {dos} outside auth period.",
            "Authorization expired prior to date of service, request extension.",
            "Auth # on claim does not match auth on file ({auth}).",
        ],
        [
            "An approval exists but it does not match this claim (number, provider or dates). Correct the claim.",
            "Approval {auth} covers {eff} to {end}; the date billed is not within it.",
        ],
    ),
    "C3": _s(
        [("CO", "198", "N362", 5), ("CO", "198", "", 3), ("CO", "198", "N640", 1)],
        "auth",
        [
            "Precertification/authorization exceeded.",
            "Auth approved {n} sessions, this is visit {m}. Request additional units.",
            "Units billed exceed authorized units for {cpt}.",
            "The number of Days or Units of Service exceeds our acceptable maximum.",
            "Authorized visits exhausted on {eff}.",
        ],
        [
            "All approved sessions have been used ({n} of {n}). Submit a concurrent review for more.",
            "Billed quantity is greater than the quantity approved on the authorization.",
        ],
    ),
    "C4": _s(
        [("CO", "39", "", 8), ("CO", "39", "N54", 1)],
        "auth",
        [
            "Services denied at the time authorization/pre-certification was requested.",
            "Auth request denied by UM {eff}, claim denied accordingly.",
            "Precert denied, does not meet criteria; appeal UR decision, not claim.",
            "Peer to peer upheld auth denial.",
            "Request for {cpt} not approved by utilization review.",
        ],
        [
            "The prior approval request for this service was reviewed and not approved.",
            "Utilization management declined the request; the claim follows that decision.",
        ],
    ),
    "C5": _s(
        [("CO", "210", "", 8), ("CO", "197", "", 1)],
        "auth",
        [
            "Payment adjusted because pre-certification/authorization not received in a timely fashion.",
            "Late notification of admit, retro auth not allowed per policy.",
            "Auth request received {days} days after start of care; DOS prior to request not covered.",
            "Retro authorization request denied, must be obtained within 48 hours.",
            "Notification not timely for {cpt}.",
        ],
        [
            "The approval request came in after the deadline for the first date of service.",
            "Requests must be submitted before care starts; this one arrived {days} days late.",
        ],
    ),
    "C6": _s(
        [("CO", "288", "", 5), ("CO", "243", "", 2), ("CO", "197", "", 1)],
        "outpatient",
        [
            "Referral absent. PCP referral required for behavioral health specialist visits.",
            "No valid referral on file from PCP for DOS.",
            "HMO plan: referral required, none received. Obtain referral and resubmit.",
            "Referral expired {eff}.",
            "Referral on file is for a different specialty.",
        ],
        [
            "The member's primary care doctor must refer for this visit; no referral was found.",
            "A current referral from the assigned primary care provider is needed.",
        ],
    ),
    # ---- D medical necessity -----------------------------------------------------
    "D1": _s(
        [("CO", "50", "N115", 4), ("CO", "50", "", 4), ("CO", "50", "N386", 1)],
        "outpatient",
        [
            "These are non-covered services because this is not deemed a medical necessity by the payer.",
            "Medical necessity not supported by records submitted for {cpt}.",
            "Service does not meet clinical criteria for medical necessity.",
            "Documentation does not support medical necessity of continued treatment.",
            "Not medically necessary per clinical review {dos}.",
        ],
        [
            "Our clinical reviewer found the service was not needed based on the information provided.",
            "Clinical documentation does not show the treatment was necessary for the condition.",
        ],
    ),
    "D2": _s(
        [("CO", "50", "", 5), ("CO", "186", "", 2), ("CO", "50", "N115", 1)],
        "iop",
        [
            "PHP level of care not supported, IOP appropriate per UR.",
            "Continued stay at residential level of care not medically necessary; step down to IOP.",
            "Level of care change adjustment.",
            "Criteria for intensive outpatient not met, outpatient therapy appropriate.",
            "Inpatient days {eff}-{end} denied, lower level of care indicated.",
        ],
        [
            "Treatment is supported but at a less intensive setting than billed.",
            "Reviewer approved outpatient care only; the higher level of care billed is not covered.",
        ],
    ),
    "D3": _s(
        [("CO", "151", "", 6), ("CO", "151", "N640", 2), ("CO", "119", "", 1)],
        "outpatient",
        [
            "Payment adjusted because the payer deems the information submitted does not support this many/frequency of services.",
            "Frequency of psychotherapy exceeds policy (2x per week).",
            "Only one psychotherapy service per day allowed per policy, second line denied.",
            "Services exceed frequency guidelines for {cpt}.",
            "More than {n} sessions in {days} days not supported.",
        ],
        [
            "The number of sessions in this period is above what our clinical policy allows.",
            "Frequency limit: {cpt} allowed once per day / twice per week.",
        ],
    ),
    "D4": _s(
        [("CO", "167", "", 5), ("CO", "11", "", 3), ("CO", "167", "N29", 1)],
        "outpatient",
        [
            "This (these) diagnosis(es) is (are) not covered.",
            "Primary dx Z63.0 not payable for {cpt}, submit covered mental health diagnosis.",
            "The diagnosis is inconsistent with the procedure. Review ICD-10 coding.",
            "Diagnosis code not covered for psychotherapy.",
            "V/Z code billed as primary dx.",
        ],
        [
            "The diagnosis on the claim is not one we cover for this kind of service.",
            "Please bill a covered behavioral health diagnosis as primary.",
        ],
    ),
    "D5": _s(
        [("CO", "55", "", 4), ("CO", "56", "", 3)],
        "tms",
        [
            "Procedure/treatment is deemed experimental/investigational by the payer.",
            "Neurofeedback considered unproven per medical policy.",
            "TMS for diagnosis billed is investigational; not covered.",
            "Treatment not proven effective for this indication.",
            "Experimental service per policy.",
        ],
        [
            "Our medical policy lists this treatment as investigational for the condition billed.",
            "Evidence does not yet support this therapy; it is not a covered treatment.",
        ],
    ),
    "D6": _s(
        [("CO", "252", "", 4), ("CO", "226", "", 3), ("CO", "16", "", 1), ("CO", "252", "N179", 1)],
        "testing",
        [
            "An attachment/other documentation is required to adjudicate this claim. Medical records requested {eff} not received.",
            "Records submitted insufficient: treatment plan missing signature.",
            "Information requested from provider not provided or insufficient/incomplete.",
            "Please attach treatment plan to claim for {cpt}.",
            "Progress notes for {dos} requested, no response.",
            "Claim requires attachment (PWK), none received.",
        ],
        [
            "We asked for clinical records to review this claim and have not received them.",
            "Please upload the notes and signed treatment plan for this date through the portal.",
        ],
    ),
    # ---- E benefits ---------------------------------------------------------------
    "E1": _s(
        [("CO", "96", "N130", 4), ("CO", "204", "", 3), ("PR", "96", "N130", 1), ("PR", "204", "", 1)],
        "outpatient",
        [
            "Non-covered charge(s). Consult plan benefit documents.",
            "This service is not covered under the patient's current benefit plan.",
            "Service not a covered benefit under member's plan.",
            "{cpt} not a covered benefit in this setting.",
            "Not covered for this provider type under the plan.",
        ],
        [
            "The member's benefits do not include this service.",
            "This service is outside the benefits purchased by the member's group.",
        ],
    ),
    "E2": _s(
        [("PR", "119", "", 5), ("CO", "119", "", 3)],
        "outpatient",
        [
            "Benefit maximum for this time period or occurrence has been reached.",
            "Member has exhausted {n} outpatient therapy visits for calendar year.",
            "Annual visit limit met, patient responsible unless plan exception approved.",
            "Visit max reached for benefit period.",
            "Lifetime benefit maximum met.",
        ],
        [
            "The member has used all outpatient mental health visits available this plan year.",
            "Session limit for this benefit period has been reached ({n} visits).",
        ],
    ),
    "E3": _s(
        [("CO", "96", "N130", 5), ("PR", "96", "N130", 2), ("CO", "204", "", 1)],
        "family",
        [
            "Marriage counseling is excluded under this plan.",
            "Family therapy without patient ({cpt}) excluded per plan, see EOC exclusions.",
            "Court ordered evaluation is a plan exclusion.",
            "Couples therapy not covered, plan exclusion.",
            "Educational/vocational testing excluded.",
        ],
        [
            "The plan document lists this service under exclusions and limitations.",
            "Relationship counseling is specifically excluded by the member's plan.",
        ],
    ),
    "E4": _s(
        [("CO", "122", "", 5), ("PR", "122", "", 2)],
        "outpatient",
        [
            "Psychiatric reduction.",
            "Payment reduced per psych reduction in benefit plan, 50% of allowed.",
            "Psychiatric benefit limitation applied.",
            "Mental health reduction applied to allowed amount {amt}.",
        ],
        [
            "A reduced benefit level applies to psychiatric services under this plan.",
            "Payment lowered under the plan's mental health benefit reduction.",
        ],
    ),
    "E5": _s(
        [("CO", "242", "", 6), ("PR", "242", "", 2), ("CO", "B9", "", 1)],
        "outpatient",
        [
            "Services not provided by network/primary care providers.",
            "Member's plan has no out of network benefits, rendering provider non-par.",
            "OON provider, EPO plan, denied.",
            "Provider not participating in member's network.",
            "Out of network services not covered w/o referral.",
        ],
        [
            "The clinician is not in this member's network and the plan has no out-of-network benefit.",
            "Non-participating provider; member's plan covers in-network care only.",
        ],
    ),
    # ---- F credentialing -----------------------------------------------------------
    "F1": _s(
        [("CO", "B7", "", 5), ("CO", "185", "", 3), ("CO", "B7", "N290", 1)],
        "outpatient",
        [
            "This provider was not certified/eligible to be paid for this procedure/service on this date of service.",
            "Rendering clinician not credentialed with plan as of DOS, effective date {eff}.",
            "The rendering provider is not eligible to perform the service billed. Provider not linked to group TIN.",
            "Provider enrollment pending on {dos}.",
            "Clinician not active in provider file for DOS.",
        ],
        [
            "The treating clinician's participation with us had not started on the date of service.",
            "Provider's credentialing was not complete for this date; resubmit after effective date {eff}.",
        ],
    ),
    "F2": _s(
        [("CO", "170", "N95", 4), ("CO", "185", "N95", 3), ("CO", "170", "", 2)],
        "outpatient",
        [
            "Payment is denied when performed/billed by this type of provider.",
            "LMFT not an eligible provider type for this plan, bill under supervising psychologist.",
            "Associate level clinician cannot bill independently.",
            "LPC services not reimbursable under this plan.",
            "Provider license type not eligible for {cpt}.",
        ],
        [
            "We do not pay for services from this license type (e.g. counselor or marriage and family therapist).",
            "Pre-licensed clinicians must bill under their supervisor.",
        ],
    ),
    "F3": _s(
        [("CO", "8", "N95", 4), ("CO", "8", "", 4)],
        "outpatient",
        [
            "The procedure code is inconsistent with the provider type/specialty (taxonomy).",
            "Taxonomy code 101YM0800X on claim not on file for rendering NPI.",
            "Specialty on file (counselor) cannot bill 90792.",
            "Provider taxonomy does not match enrollment.",
            "Billing taxonomy invalid for service.",
        ],
        [
            "The specialty we have on file for this provider cannot bill this procedure.",
            "Taxonomy on claim differs from the one registered with us.",
        ],
    ),
    "F4": _s(
        [("CO", "206", "N290", 3), ("CO", "207", "", 2), ("CO", "208", "N257", 2), ("CO", "16", "N290", 1)],
        "outpatient",
        [
            "National Provider Identifier - missing. Missing/incomplete/invalid rendering provider primary identifier.",
            "Billing NPI not on file with payer, update enrollment.",
            "NPI not matched to provider file.",
            "Individual NPI billed in group loop.",
            "Rendering NPI invalid.",
        ],
        [
            "The provider identifier on the claim does not match our records.",
            "Please correct the billing or rendering NPI and resubmit.",
        ],
    ),
    "F5": _s(
        [("CO", "183", "N286", 4), ("CO", "184", "", 3), ("CO", "16", "N286", 1)],
        "testing",
        [
            "The referring provider is not eligible to refer the service billed.",
            "Ordering provider not enrolled with Medicaid.",
            "The prescribing/ordering provider is not eligible to prescribe/order the service billed.",
            "Referring provider NPI missing.",
            "Ordering NPI not found.",
        ],
        [
            "The doctor who ordered or referred this service is not enrolled with us.",
            "Referring/ordering provider information is missing or not eligible.",
        ],
    ),
    "F6": _s(
        [("CO", "222", "", 8)],
        "community",
        [
            "Exceeds the contracted maximum number of hours/days/units by this provider for this period.",
            "Rendering provider billed more than 12 hrs on DOS, lines over cap denied.",
            "Provider daily unit max exceeded for {cpt} across all members.",
            "Provider hours cap reached.",
        ],
        [
            "This clinician's total billed time for the day is above the allowed maximum.",
            "Daily limit per practitioner exceeded.",
        ],
    ),
    # ---- G coding --------------------------------------------------------------------
    "G1": _s(
        [("CO", "4", "", 6), ("CO", "182", "", 2), ("CO", "4", "N519", 1)],
        "tele",
        [
            "The procedure code is inconsistent with the modifier used or a required modifier is missing.",
            "Telehealth service billed without modifier 95, resubmit with correct modifier.",
            "Modifier GT not accepted by plan, use 95.",
            "HO/HN modifier required for Medicaid billing of {cpt}.",
            "Invalid modifier {mod} for {cpt}.",
        ],
        [
            "A modifier is missing or not valid for this procedure code.",
            "Please add the correct telehealth or license-level modifier and resubmit.",
        ],
    ),
    "G2": _s(
        [("CO", "5", "", 5), ("CO", "58", "", 3)],
        "tele",
        [
            "The procedure code/bill type is inconsistent with the place of service.",
            "POS {pos} billed but patient at home, use correct place of service per payer policy.",
            "Treatment was deemed by the payer to have been rendered in an inappropriate or invalid place of service.",
            "Telehealth billed with POS 11, use POS 02.",
            "Invalid place of service for {cpt}.",
        ],
        [
            "The place of service does not fit this service; check the telehealth place of service codes.",
            "Place of service {pos} is not accepted for this procedure.",
        ],
    ),
    "G3": _s(
        [("CO", "181", "", 5), ("CO", "189", "", 2), ("CO", "16", "M51", 1)],
        "outpatient",
        [
            "Procedure code was invalid on the date of service.",
            "CPT 90806 deleted, use 90834. Invalid procedure code.",
            "'Not otherwise classified' or 'unlisted' procedure code was billed when there is a specific code.",
            "HCPCS not valid for this payer.",
            "Invalid procedure code {cpt}.",
        ],
        [
            "The procedure code billed is not valid for this date or this plan.",
            "Unlisted code used where a specific code exists; rebill with the specific code.",
        ],
    ),
    "G4": _s(
        [("CO", "16", "M53", 6), ("CO", "16", "", 2), ("CO", "150", "", 1)],
        "outpatient",
        [
            "Missing/incomplete/invalid days or units of service.",
            "Documented time {m} min does not support {cpt}.",
            "Units billed do not match start/stop times on claim.",
            "Session length does not support code billed.",
            "Units field invalid for {cpt}.",
        ],
        [
            "The time or units on the claim do not match the procedure's time requirements.",
            "Minutes documented ({m}) are below the threshold for the code billed.",
        ],
    ),
    "G5": _s(
        [("CO", "97", "M15", 4), ("CO", "234", "M80", 2), ("CO", "B15", "", 2), ("CO", "97", "", 2)],
        "addon",
        [
            "The benefit for this service is included in the payment/allowance for another service/procedure that has already been adjudicated.",
            "{cpt} add-on billed without E/M primary code.",
            "This procedure is not paid separately.",
            "Interactive complexity not allowed with code billed.",
            "NCCI edit: bundled with {cpt}.",
        ],
        [
            "This code is part of another service paid on the same day and is not paid on its own.",
            "Add-on codes must be billed with their primary service.",
        ],
    ),
    "G6": _s(
        [("CO", "6", "", 4), ("CO", "7", "", 1), ("CO", "9", "", 1), ("CO", "11", "", 1)],
        "community",
        [
            "The procedure/revenue code is inconsistent with the patient's age.",
            "The procedure/revenue code is inconsistent with the patient's gender.",
            "{cpt} billed for patient age 23, service limited to under 21.",
            "Procedure inconsistent with patient age.",
            "Age edit failed for {cpt}.",
        ],
        [
            "This procedure is not valid for a patient of this age or sex.",
            "Age restriction on the service billed.",
        ],
    ),
    # ---- H claim data ----------------------------------------------------------------
    "H1": _s(
        [("CO", "16", "MA130", 6), ("CO", "16", "", 2), ("CO", "16", "MA130 N382", 1)],
        "outpatient",
        [
            "Your claim contains incomplete and/or invalid information, and no appeal rights are afforded. Submit a new claim.",
            "Claim lacks information needed for adjudication: patient address missing. Resubmit corrected claim.",
            "Unprocessable claim, invalid subscriber DOB.",
            "Claim/service lacks information which is needed for adjudication.",
            "Missing billing provider address.",
        ],
        [
            "We could not process this claim because required fields are blank or invalid. Send a corrected claim.",
            "Claim returned as unprocessable; fix the data and file again (not an appeal).",
        ],
    ),
    "H3": _s(
        [("OA", "18", "", 7), ("CO", "18", "", 3)],
        "outpatient",
        [
            "Exact duplicate claim/service.",
            "Duplicate of claim {ref} already in process.",
            "Duplicate submission, original claim paid {eff}.",
            "Same claim previously received.",
            "Dup of {ref}.",
        ],
        [
            "We already have this exact claim on file; do not resubmit.",
            "This submission repeats claim {ref}.",
        ],
    ),
    "H4": _s(
        [("CO", "18", "M86", 4), ("CO", "97", "M86", 3), ("CO", "B13", "", 1)],
        "outpatient",
        [
            "Service denied because payment already made for same/similar procedure within set time frame.",
            "Similar service already paid to another provider for same DOS.",
            "Same/similar service paid to different provider this DOS.",
            "Psychotherapy already paid for member on {dos}.",
            "Service previously paid on another claim.",
        ],
        [
            "Another claim for a similar service on the same day has already been paid.",
            "A comparable service for this member and date was paid earlier.",
        ],
    ),
    # ---- I administrative ----------------------------------------------------------
    "I1": _s(
        [("CO", "29", "", 9)],
        "outpatient",
        [
            "The time limit for filing has expired.",
            "Claim received past {days} day filing limit from DOS, proof of timely filing required to appeal.",
            "Timely filing limit exceeded. Provide clearinghouse acceptance report.",
            "Filed after deadline.",
            "TFL exceeded for DOS {dos}.",
        ],
        [
            "This claim arrived after the filing deadline in your contract ({days} days).",
            "Late claim: outside the submission window.",
        ],
    ),
    "I2": _s(
        [("CO", "193", "", 8)],
        "outpatient",
        [
            "Original payment decision is being maintained. Upon review, it was determined that this claim was processed properly.",
            "Appeal reviewed, denial upheld. Further appeal rights: external review.",
            "Reconsideration request: original determination maintained.",
            "Second level appeal upheld.",
            "Upon review claim processed correctly.",
        ],
        [
            "We reviewed your appeal and the original decision stands.",
            "Your request for reconsideration has been denied; see appeal rights.",
        ],
    ),
    "I3": _s(
        [("CO", "129", "", 4), ("OA", "129", "", 2), ("CO", "45", "", 1), ("CO", "B13", "", 1)],
        "outpatient",
        [
            "Claim reversed. Payment recouped via offset.",
            "Reversal of previously processed claim due to reprocessing; see corrected claim.",
            "Overpayment recovery: recoupment applied to future remit.",
            "Prior processing information appears incorrect. Claim reversed.",
            "Recoupment of {amt}.",
        ],
        [
            "This claim was reprocessed; the earlier payment is taken back on this remittance.",
            "Payment reversal: amount offset against current payments.",
        ],
    ),
    # ---- J not a denial -------------------------------------------------------------
    "J1": _s(
        [("CO", "45", "", 9)],
        "outpatient",
        [
            "Charge exceeds fee schedule/maximum allowable or contracted/legislated fee arrangement.",
            "Contractual adjustment per fee schedule, allowed {amt}.",
            "Billed over contracted rate, write off difference.",
            "Contractual obligation.",
            "Allowed per contract.",
        ],
        [
            "Amount above your contracted rate; provider write-off.",
            "Paid at contracted allowance.",
        ],
    ),
    "J2": _s(
        [("PR", "1", "", 4), ("PR", "2", "", 3), ("PR", "3", "", 3)],
        "outpatient",
        [
            "Deductible amount.",
            "Applied to member deductible; patient responsibility {amt}.",
            "Copay {amt}, balance paid.",
            "Coinsurance amount.",
            "Co-payment amount.",
        ],
        [
            "Member cost share applied: {amt}.",
            "Patient owes deductible/coinsurance shown.",
        ],
    ),
    "J3": _s(
        [("CO", "24", "", 8)],
        "outpatient",
        [
            "Charges are covered under a capitation agreement/managed care plan.",
            "Capitated service, no FFS payment. Encounter recorded.",
            "Service included in capitation payment to provider group.",
            "Capitation.",
        ],
        [
            "Covered by your capitation agreement; no separate payment.",
            "Encounter only: capitated.",
        ],
    ),
}

#: Audio-only telehealth (modifier FQ): labelled G1 until the 48th category G7 exists.
AUDIO_ONLY = _s(
    [("CO", "4", "", 6), ("CO", "182", "", 2), ("CO", "5", "", 1)],
    "audio",
    [
        "Audio-only service billed without modifier FQ.",
        "Telephone only visit requires FQ modifier, 95 not valid for audio-only.",
        "Audio only telehealth: use modifier FQ and POS {pos}.",
        "FQ modifier missing for audio-only {cpt}.",
        "Service rendered via telephone, modifier FQ required.",
    ],
    [
        "Audio-only (telephone) visits must carry modifier FQ.",
        "For audio-only care, bill modifier FQ instead of 95.",
    ],
)

#: Remarks that say nothing about the reason: the codes (or nothing) must decide.
GENERIC_REMARKS = (
    "Claim denied.",
    "Denied per plan provisions.",
    "See remark codes.",
    "Not payable as billed.",
    "Refer to EOB for details.",
    "Service not reimbursable.",
    "Contact provider services with questions.",
    "Claim/service denied.",
    "Line denied.",
    "Please review and resubmit if appropriate.",
)

#: Generic codes some payers send instead of the specific one (CO-16 with no RARC, A1...).
GENERIC_CODES = (("CO", "16", "", 5), ("CO", "A1", "", 2), ("CO", "96", "", 2), ("OA", "A1", "", 1))

#: Frequency order of the 47 categories (most common first); the long tail is at the end.
RANKS = (
    "C1", "J2", "H1", "A1", "J1", "I1", "F1", "D1", "G1", "C3", "B1", "C2", "H3", "E1", "G5",
    "G2", "D6", "A2", "H4", "G4", "F4", "B2", "C4", "E2", "D3", "F2", "I2", "E5", "D4", "A5",
    "C5", "G3", "C6", "B4", "F3", "D2", "E3", "I3", "A3", "F5", "J3", "G6", "B3",
    "D5", "E4", "F6", "A4",
)

#: The rarest categories get explicit tiny weights (fewer than 50 records in 80,000).
RARE = {"D5": 0.0006, "E4": 0.0005, "F6": 0.00045, "A4": 0.00035}
