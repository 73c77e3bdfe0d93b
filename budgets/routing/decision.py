"""How much model a *decision* deserves: its complexity and stakes, scored from 0 to 1.

The request scorer (:mod:`~budgetgraph.budgets.routing.complexity`) reads one
prompt; every specialist prompt the graph assembles reads as complex
(objective, questions, assumptions), so routing on it never moves a decision
off the default tier. This scorer reads the decision itself, as the user gave
it: the task, its constraints and a re-plan note, in two ways.

**Its wording**, through the local sentence embedder
(:class:`~budgetgraph.budgets.cache.embedders.LocalEmbedder`: all-MiniLM-L6-v2
on ONNX Runtime, 384 dimensions, no torch): the whole decision on one line
(:func:`decision_subject`), embedded once (about 8 ms on two cores; the
cache's lookups for the run reuse the vector). The
embedding carries what no list of words does: that a cooler left warm
overnight is a food-safety call and a badge for a supply closet is not.

**Keyword features** that measure what makes a wrong answer expensive:

- **money**: the largest amount named (``$180k``, ``$2.4M a year``), on a log scale;
- **scale**: how many people, customers, sites or records it touches;
- **irreversibility**: migrations, rewrites, replacing or consolidating
  platforms, shutting down, layoffs and reorganisations, acquisitions,
  multi-year or exclusive contracts, records, files or evidence destroyed
  (shredded, purged, wiped);
- **commitment**: leases, loans, guarantees and long fixed terms (a 20-year
  PPA, an offtake or supply agreement, a fixed price, committing to a
  programme over years);
- **regulation** (PCI, HIPAA, GDPR, SOX, SOC 2, COPPA, audits, lawsuits; card
  numbers kept in notes or a spreadsheet; building in a national park or
  nature reserve) and **security** (vulnerabilities, software without updates);
- **emergency**: what is happening now (a breach, credentials found in public,
  an account nobody recognises, a recall, an injury, fuel or chemicals
  leaking into a drain or river);
- **critical systems**: production, payments, checkout, login, patient safety,
  uptime and recovery targets;
- **a small team taking on a heavy system** (a 3-person team self-hosting);
- what is at stake whatever the wording of the rest, with or without
  constraints: people's **safety** and health (hazards, contamination, a
  positive test, allergens, medicines, aircraft, dangerous goods such as
  ``UN1789``, banned pesticides, drivers' hours and fatigue, one nurse on
  nights), **minors**, **personal data** handed on (special categories
  such as mental health or sexual orientation among them; health or
  immigration status; cameras that identify people, such as face or
  number-plate recognition),
  **legal exposure** (lawyers, regulators, sanctions and export rules, prices agreed with a competitor,
  disclosure, gambling mechanics such as paid loot boxes, leaked documents,
  open-sourcing code, a licence nobody can find, a repatriation claim), **headcount**
  (people let go), company-wide **scope**, and a **safeguard gap** (a check,
  inspection or control skipped; an inspection, certificate, permit or badge
  overdue or lapsed; a sampling, patrol or survey dropped; going without the
  ranger, guard, second check or second keyholder that keeps people or
  money safe; food without its allergen labels; an uncalibrated instrument;
  a legal limit exceeded; no DPA, BAA, contract or
  dangerous-goods paperwork; an alarm silenced; acting before, or until, the
  approval, permit, report, result or background check it needs arrives);
- and what pulls down: look-up questions (``What is our office address?``),
  routine office matters (snacks, offsites, room bookings, the lobby TV, a
  drill or a meeting moved, a site closing an hour early, a payment falling
  on a holiday, which folder or file format, the copyright year in a footer),
  small purchases, and what is **derisked**: a sandbox or synthetic data,
  something already signed, countersigned, paid, received, serviced or
  accepted, what a policy, lease
  or licence already allows, a setting that can be reverted. No keyword
  counts shouting (``URGENT``, capitals).

Two measured features weigh nothing in the fitted models: the number of
constraints and the length. They track how a writer writes, not what is at
stake (the fit script's ``EXCLUDED`` says how the labelled files differ).

The model is a proportional-odds (ordinal logistic) regression over the tiers
of the hand-labelled decisions in ``bench/data/decisions/`` (4,281 decisions by
fifty writers, one file each: economy, standard, premium), on the keyword
features and the embedding, with L2 penalties chosen by leave-one-writer-out
cross-validation. It is
fitted offline by ``bench/fit_decision_router.py`` (scikit-learn and SciPy,
never imported here), which writes its weights to ``decision_weights.json``
beside this module; here they are applied with numpy. The score is the
model's expected grade on a 0-1 scale (0: surely economy, 0.5: standard, 1:
premium). The embedding's part of the linear predictor shows among the
drivers as ``embedding``, the keyword features under their own names.

Which tier each node runs at for each band of scores is the
``router.decision`` section of ``budgets.yaml``
(:class:`~budgetgraph.budgets.routing.settings.DecisionRouting`); the fit
script prints the thresholds it chose on the spent holdouts' first scorings (and, beside
them, the ones leaving one writer out would choose).

When the embedding model cannot be had (its ONNX file is missing and cannot
be exported, or ONNX Runtime is not installed), the scorer says so once in a
warning and scores with the keyword features alone, with weights fitted for
that case on the same decisions (``keyword_only`` in the weights file).
Nothing is read or loaded at import: the weights file on the first score,
the embedding model on the first embedding, one per process.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from budgetgraph.budgets.routing.complexity import Complexity, capped, scored

if TYPE_CHECKING:
    from budgetgraph.budgets.cache.base import Embedder

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- features

_AMOUNT = re.compile(
    r"(?:[$€£]\s?(?P<a>\d[\d,]*(?:\.\d+)?)\s?(?P<au>k|m|mm|b|bn|million|billion|thousand)?\b)"
    r"|(?:\b(?P<b>\d[\d,]*(?:\.\d+)?)\s?(?P<bu>k|m|mm|b|bn|million|billion|thousand)?\s?"
    r"(?:usd|dollars|eur|euros|gbp|pounds)\b)",
    re.I,
)
_UNITS = {"k": 1e3, "thousand": 1e3, "m": 1e6, "mm": 1e6, "million": 1e6, "b": 1e9, "bn": 1e9, "billion": 1e9}
_MONTHLY = re.compile(r"^\s*(?:/\s?mo(?:nth)?|a month|per month|monthly)\b", re.I)
_COUNT = re.compile(
    r"\b(?<![$€£\d.,])(?P<n>\d[\d,.]*)\s?(?P<u>k|m|million|thousand)?\+?\s"
    r"(?:\w+\s){0,2}?(?:employees|staff|people|users|customers|clients|patients|members|accounts|"
    r"stores|sites|locations|clinics|restaurants|warehouses|plants|factories|offices|countries|"
    r"records|devices|servers|services|microservices|drivers|agents|students|subscribers|tenants)\b",
    re.I,
)
_TEAM = re.compile(
    r"\b(?:(?P<a>\d{1,2}|one|two|three|four|five)[- ](?:person|people|engineer|member)s?\b"
    r"|team of (?P<b>\d{1,2}|one|two|three|four|five)\b"
    r"|(?P<c>\d{1,2}|one|two|three|four|five) (?:\w+ )?(?:engineers|devs|developers|sres|admins|ops staff|"
    r"analysts|people)\b|(?:a |our )?(?P<d>one|single|solo)[- ](?:engineer|admin|person|developer)\b)",
    re.I,
)
_NUMBER_WORDS = {"one": 1, "single": 1, "solo": 1, "two": 2, "three": 3, "four": 4, "five": 5}
# The keyword patterns below are written in lower case and matched against the lowercased text
# (features() lowercases it once): without re.I they match about 3.5 times faster.
_BURDEN = re.compile(
    r"\b(?:self-?host\w*|run (?:it|our own|the)|operat\w*|maintain\w*|on-?call|in-?house|build our own|"
    r"migrat\w*|rewrit\w*|own (?:the|it)|manage (?:it|our own))\b",
)
_IRREVERSIBLE = re.compile(
    r"\b(?:migrat\w*|move (?:all|everything|our|the|manufacturing|production)\b|rewrit\w*|re-?platform\w*|"
    r"replac\w*|consolidat\w*|switch(?:ing)? (?:our |the )?(?:\w+ )?(?:vendor|provider|platform|"
    r"stack|erp|crm|ehr)|"
    r"self-?host\w*|shut(?:ting)? down|sunset\w*|decommission\w*|acqui\w*|merg(?:e|er|ing)|divest\w*|"
    r"lay(?:ing)? off|layoffs?|reorg\w*|restructur\w*|outsourc\w*|offshor\w*|multi-?year|exclusiv\w*|"
    r"cut-?over|cutting over|relocat\w*|close (?:the|our|a|\d+) (?:\w+ )?(?:office|site|plant|store|factory|"
    r"warehouse|clinic)s?|"
    r"open (?:a|an|our|\d+) (?:new )?(?:office|plant|site|store|factory|region|warehouse|market)s?|"
    r"expand\w* into|enter(?:ing)? (?:the )?\w+ market|raise prices|price increase|pricing model|"
    r"drop (?:our|the) \w+|discontinu\w*|remove (?:all|password|the)|delete (?:all|the|our) (?:\w+ )?"
    r"(?:data|logs|records|backups)|"
    r"(?:shred\w*|destroy\w*|purg\w*|wip(?:e|ing) (?:out )?|incinerat\w*|dispos\w* of|"
    r"delet\w*|bin(?:ning)?|burn\w*|erase\w*|overwrit\w*) (?:[\w'-]+ ){0,4}?"
    r"(?:files|records|data|logs|backups|evidence|archives?|documents|papers|footage|recordings|"
    r"samples|specimens|minutes|ledgers|registers|case notes))\b",
)
_REGULATED = re.compile(
    r"\b(?:pci(?:[- ]dss)?|hipaa|gdpr|ccpa|sox|soc ?2|coppa|ferpa|baa|dpa|data processing agreement|"
    r"caa|easa|outside the (?:eu|eea|uk)|sub-?processors?|"
    r"fda|ema|mhra|ind|510\(?k\)?|ce mark\w*|marketing authori[sz]ation|"
    r"dea|osha|fedramp|iso ?27001|export control\w*|sanction\w*|regulat\w*|complian\w*|audit\w*|"
    r"legal|lawsuit\w*|litigat\w*|subpoena\w*|attorney|counsel|license\w*|liabilit\w*|"
    r"fined|fines|(?:a|the|any|regulatory|possible|heavy|big) fine\b|(?<!no )(?<!without )(?<!any )penalt\w*|"
    r"data residency|personal data|phi|pii|consent|background checks?|union\w*|labor law|tax\w*|"
    # card data kept where it should not be (PCI DSS)
    r"(?:stor|keep|kept|writ|wrote|record|sav|log|email|text|jot|not)\w* (?:[\w'-]+ ){0,4}?"
    r"(?:card numbers?|card details|cvvs?|cvcs?|security codes?)|"
    # building in or near protected land or heritage
    r"national parks?|protected (?:areas?|sites?|habitats?|species|landscapes?)|nature reserves?|sssi|"
    r"(?:park|reserve) boundary|wetlands?|(?:world )?heritage sites?|listed buildings?|conservation areas?|"
    r"scheduled monuments?)\b",
)
_SECURITY = re.compile(
    r"\b(?:breach\w*|attacker\w*|foothold|compromis\w*|leak\w*|ransomware|malware|vulnerab\w*|cves?|"
    r"zero-?day|exploit\w*|credentials?|secrets?|phish\w*|intrusion|incident\w*|mfa|2fa|encrypt\w*|"
    r"unencrypted|access control|admin access|root access|security|pentest\w*|sso|passwords?|"
    r"end[- ]of[- ]li(?:fe|fed)|unsupported|unpatched|out of support|"
    r"no (?:more )?(?:security )?(?:updates|patches)|"
    r"full (?:admin )?permissions)\b",
)
_CRITICAL = re.compile(
    r"\b(?:production|prod|checkout|payments?|payroll|billing|login|authentication|auth|customer data|"
    r"patients?|safety|clinical|core (?:api|product|system|platform|database)|outages?|downtime|uptime|"
    r"sla|rto|rpo|disaster recovery|data loss|live|revenue|arr|runway|cash)\b",
)
_STRATEGIC = re.compile(
    r"\b(?:strateg\w*|fundrais\w*|series [a-e]\b|investors?|board|ipo|valuation|market share|"
    r"competitor\w*|go-?to-?market|new market|headcount|hiring plan|hire (?:\d+|a team|ten|twenty)|"
    r"vendor lock-?in|lock-?in|single point of failure|roadmap)\b",
)
_LOOKUP = re.compile(
    r"^\W*(?:what(?:'s| is| are| was)\b(?! (?:the )?(?:best|right|risks?|trade-?offs?|impact|cost of))|"
    r"where(?:'s| is| are| do| can)\b|when(?:'s| is| are| does| do)\b|who(?:'s| is| are)\b|"
    r"which (?:day|date|room|floor|time)|what time\b|how many\b(?!.*\bshould\b)|remind me\b|"
    r"do we have\b|is there\b|can you (?:find|look up|tell me))",
)
_ROUTINE = re.compile(
    r"\b(?:snacks?|coffee|tea|offsite|party|parties|swag|lunch(?:es)?|pizza|catering|"
    r"(?:office|potted|desk) plants?|"
    r"parking|(?<!front[- ])(?<!help[- ])(?<!service[- ])(?<!reception[- ])desks?|"
    # a rehearsal moved or a site opening or closing a little early or late: scheduling
    r"(?:(?:fire|evacuation|tabletop|emergency|safety)[- ])+(?:drills?|exercises?)|"
    r"(?:an?|one|half an|two) (?:hours?|days?) (?:early|earlier|late|later)|(?:bank|public) holidays?|"
    r"falls (?:due )?on (?:a |the )?(?:sunday|saturday|weekend)|"
    r"\d+ min(?:ute)?s (?:early|earlier|late|later)|"
    r"chairs?|mugs?|t-?shirts?|hoodies?|stickers?|fonts?|wallpaper|meeting rooms?|conference rooms?|"
    r"office kitchen|kitchenette|fridge|birthday|holiday cards?|newsletter|emoji|channel names?|"
    r"(?:lobby|waiting[- ]room|office|break[- ]room) (?:tvs?|televisions?|magazines?|music)|"
    r"stale (?:\w+ )?branch\w*|"
    # a meeting moved: "move Thursday's standup to 10:30"
    r"(?:move|moving|reschedul\w*|push|pushing|shift|shifting|bring forward) (?:[\w'-]+ ){0,4}?"
    r"(?:stand-?ups?|briefings?|meetings?|syncs?|retros?|huddles?|webinars?|training videos?|workshops?|"
    r"catch-?ups?|1:1s?|one-to-ones?)|"
    r"(?:stand-?ups?|briefings?|meetings?|syncs?|retros?|huddles?|webinars?|training videos?|workshops?|"
    r"catch-?ups?) (?:[\w'-]+ ){0,6}?(?:(?:be )?moved?|rescheduled|pushed|shift(?:ed)?|brought forward) "
    r"(?:to|from|back|forward|by|a |an |one |two |\d)|"
    # where a file goes or what format it takes
    r"shared[- ]drive folders?|(?:file|filed|save|saved|put|go|goes) (?:[\w'-]+ ){0,3}?(?:on|in|into|to) "
    r"(?:the |our |a |\w+'s )?shared[- ]drive|which (?:folder|drive|directory|format)|file ?names?|"
    r"naming convention|"
    r"(?:jpe?g|tiff?|png|pdf|docx?|word|csv|excel|xlsx?) or (?:a |an )?(?:jpe?g|tiff?|png|pdf|docx?|word|"
    r"csv|excel|xlsx?)|footers?|copyright (?:year|date|line|notice)|"
    r"typos?|rename\w*|dark mode|logo color|office address|wifi password|team photo|bulletin|"
    r"whiteboards?|printer paper|light bulbs?|calendar invite|all-hands room|dress code|playlist)\b",
)
_EMERGENCY = re.compile(
    r"\b(?:recall\w*|ransom\w*|caught fire|wildfires?|overheat\w*|injur\w*|deaths?|fatal\w*|contaminat\w*|"
    r"fires?\b(?![- ](?:extinguisher|door|exit|drill|evacuation|marshal|code|alarm|suppression|inspect|"
    r"officer|service|brigade|department|station|warden|safety))|"
    # credentials exposed: "an AWS access key found in a public GitHub repo"
    r"(?:(?:access|api|secret|private|root|ssh|signing) )?(?:keys?|credentials?|tokens?|passwords?|secrets?) "
    r"(?:[\w'-]+ ){0,6}?(?:public|pastebin|gist|leaked|exposed|posted)|"
    r"(?:public|exposed|leaked) (?:[\w-]+ ){0,3}?(?:keys?|credentials?|tokens?|passwords?)|"
    r"unrecogni[sz]ed|(?:nobody|no one) (?:here )?recogni[sz]es|"
    r"unknown (?:admin|account|user|login|device)s?|"
    r"outbreak|attackers?|breach\w*|exfiltrat\w*|foothold|whistleblow\w*|regulators? (?:is|are|has|have)|"
    r"investigation|class action|data loss|lost data|emergency|tonight|this morning|last night|"
    # pollution reaching water: "diesel is leaking into the storm drain"
    r"(?:leak|spill|discharg|seep|pour|run|drain)\w* (?:[\w'-]+ ){0,3}?into (?:the |a |our )?(?:[\w-]+ )?"
    r"(?:drains?|rivers?|streams?|brooks?|becks?|burns?|sewers?|watercourses?|groundwater|sea|harbou?r|"
    r"lakes?|canals?|culverts?|estuary|aquifer)|(?:oil|fuel|diesel|chemical|slurry|sewage) spill\w*|"
    r"pollution incident)\b",
)
_COMMITMENT = re.compile(
    r"\b(?:(?:\d+|two|three|five|ten|fifteen|twenty)[- ]year (?:[\w-]+ ){0,2}?(?:lease|contract|deal|"
    r"commitment|term|agreement|ppa|offtake|supply|renewal|extension)|"
    r"sign (?:a|the|an) (?:[\w-]+ ){0,4}(?:lease|contract|agreement|term sheet|ppa)|"
    r"leases?|mortgage|loans?|debt|"
    r"ppas?|power purchase agreements?|offtake\w*|take-or-pay|fixed[- ]price|price (?:fixed|locked) for|"
    r"credit (?:line|facility)|term sheet|guarantee\w*|penetration test|pen ?test\w*|"
    r"commit(?:ting)? (?:now |ourselves |us )?to|(?:over|for) (?:the next )?(?:\d+|two|three|four|five|six|"
    r"seven|eight|ten|fifteen|twenty) years)\b",
)
_DERISKED = re.compile(
    r"\b(?:staging|sandbox|test (?:environment|account|data)|synthetic|read-only|no (?:customer|"
    r"pii|personal)|"
    r"already (?:signed|agreed|approved|says|paid|in place|budgeted|covers?|covered|serviced|inspected|"
    r"accepted|filed|reviewed|licensed|purchased|done|completed|settled|confirmed|allows?|lets|permits?|"
    r"set up|scheduled|on autopay|landed|received)|countersigned|(?:sent|came) back (?:the )?signed|"
    r"signed (?:and )?returned|"
    r"(?:payment|payout|proceeds|remittance|funds|money|transfer|deposit|wire)s? (?:[\w'-]+ ){0,3}?"
    r"(?:(?:has|have) (?:already )?)?"
    r"(?:landed|arrived|cleared|come in|been received|been paid)|"
    r"(?:lease|licen[cs]e|policy|contract|clause \d+|rules|terms)s? (?:\w+ ){0,2}(?:allows?|lets|permits?)"
    r"\b(?! no)|(?:in|per|under) (?:our|the) (?:\w+ )?(?:licen[cs]e|lease|policy)|"
    r"can (?:be )?(?:revert\w*|flipped|switched back|changed back)|unchanged|"
    r"same (?:price|terms|seat|"
    r"plan|vendor)|no (?:seat |price )?changes?|team agreed|reversible|can be undone|roll(?:ed)? back|"
    r"internal only|dev only|dry run|free (?:tier|plan|public)|no cost|at no charge|still happens|"
    # a payment on autopay, done the way it always is
    r"autopay|direct debit|"
    r"(?:like|as) (?:we (?:normally|usually|always) do|we do every (?:year|month)|usual|last (?:time|year))|"
    r"supports? (?:early|it)|as (?:the|our) (?:\w+ )?suggests?|matches|agreed|available)\b",
)
_SAFETY = re.compile(
    r"\b(?:asbestos|lead (?:paint|pipes?|exposure)|mold|radon|silica|toxic\w*|hazardous|hazards?|hazmat|"
    r"dangerous goods|flammable|combustible|explosi\w*|lithium|"
    r"fire[- ](?:marshal|exits?|codes?|alarms?|doors?|suppression|hazards?|risks?|safety|inspect\w*)"
    r"(?![- ]drills?)|"
    r"sprinklers?|smoke detectors?|carbon monoxide|gas leaks?|"
    r"arc flash|structural|load-bearing|collaps\w*|scaffold\w*|fall protection|confined spaces?|"
    r"machine guards?|guarding|light curtains?|interlocks?|emergency stops?|lockout|tagout|respirators?|"
    r"accidents?|hospitali[sz]\w*|overdos\w*|poison\w*|allergens?|allerg(?:y|ies|ic)|anaphyla\w*|"
    r"(?:tested|tests?|came back|swabs?) positive|positive (?:test|result|swab|sample)s?|"
    r"may contain|traces of|(?:nut|peanut|gluten|sesame|dairy)[- ]free|"
    r"food safety|foodborne|listeria|salmonella|e\.? ?coli|norovirus|botulism|spoil\w*|temperature abuse|"
    r"cold chain|undercooked|controlled[- ]substances?|opioids?|narcotics?|fentanyl|dosage|doses?|dosing|"
    # chilled food held warm: "the walk-in fridge sat at 11°C overnight"
    r"(?:fridges?|freezers?|coolers?|chillers?|cold ?rooms?|cold stores?|walk-ins?)\b[^.?!]{0,30}?"
    r"\b(?:sat at|was at|were at|hit|reached|rose to|went up to|got to|read|showing|running at) "
    r"\d+\s?°\s?[cf]|"
    r"temperature (?:excursions?|breach\w*|alarms?)|"
    r"insulin|medications?|prescriptions?|drugs?|clinical trials?|phase (?:i|ii|iii|1|2|3)\b|gmp|steril\w*|"
    r"vaccines?|transfusions?|surg(?:ery|eries|ical|eons?)|icu|patient safety|medical devices?|airworth\w*|"
    r"aircraft|aviation|faa|pilots?|brakes?|911|emergency (?:services|dispatch|rooms?|calls?)|ambulances?|"
    r"paramedics?|evacuat\w*(?![- ]drills?)|quarantin\w*|radiation|pathogens?|biohazard\w*|infections?|"
    r"elevators?|boilers?|pressure vessels?|drinking water|water supply|power grid|"
    r"life[- ]safety|safety[- ]critical|"
    r"safety (?:incidents?|violations?|risks?|defects?|hazards?)|"
    # dangerous goods: UN numbers, road (ADR) and sea (IMDG) rules, drums of chemicals, acids
    r"un ?\d{4}|adr[- ](?:certificat\w*|rules|regulations?|licen[cs]es?|training)|imdg|drums? of|chemicals?|"
    r"acids?\b(?![- ](?:complian\w*|transactions?|guarantees?))|corrosive\w*|caustic|solvents?|"
    # banned or restricted substances and pesticides
    r"pesticides?|herbicides?|insecticides?|fungicides?|chlorpyrifos|paraquat|ddt|neonicotinoids?|"
    r"banned (?:substances?|chemicals?|products?|ingredients?)|restricted substances?|"
    # drivers' and workers' hours, fatigue
    r"hours[- ]of[- ]service|drivers'? hours|tachographs?|(?:driver|pilot|crew|operator) fatigue|"
    r"working[- ]time (?:limits?|rules|directive|regulations?)|rest (?:breaks?|periods?|requirements?)|"
    # staffing below a safe ratio: "leave one carer on shift for 28 residents"
    r"(?:down to|only|just|leave) (?:one|a single|1) (?:\w+ )?(?:carers?|nurses?|rns?|lifeguards?|guards?|"
    r"pharmacists?|doctors?|medics?|paramedics?) (?:on|at|per|for|covering)\b|"
    r"(?:one|a single|1|two|2) (?:\w+ )?(?:carers?|nurses?|lifeguards?|guards?|staff|supervisors?|"
    r"pharmacists?|teachers?|attendants?)(?: on (?:shift|duty|site))? "
    r"(?:for|covering|to cover|with) (?:all )?\d+|"
    # falls and restraints in care; fatigue from long shifts; a batch that failed its tests
    r"(?:had|two|three|several|repeated|recent|multiple) falls|bed rails|restraints?|safeguarding|"
    r"1[2-9][- ]hour (?:shifts?|days?)|back-to-back shifts|"
    r"out[- ]of[- ]spec\w*|endotoxin|sterility|batch release|release (?:the|a|it|this) batch)\b",
)
_MINORS = re.compile(
    r"\b(?:child(?:ren)?|children's|kids?|minors?|under (?:1[3-8])\b(?!\s*(?:min|hour|second|%|percent))|"
    r"k-?(?:5|8|12)\b|kindergarten|preschool\w*|daycare|childcare|pupils?|teen\w*|adolescents?|youth|"
    r"juveniles?|parental consent|students?'? names|years? [1-9]\d?\s?(?:-|–|to)\s?1?\d\b|"
    r"pediatric\w*|under-1[0-8]s?|\d(?:st|nd|rd|th)[- ]grade\w*|"
    r"(?:[1-9]|1[0-7])(?:-?\s?(?:to|-|–|and)\s?(?:[1-9]|1[0-7]))?[- ]years?[- ]olds?|"
    r"grade[- ]?school\w*|elementary|middle school\w*|high school\w*)\b",
)
_PERSONAL_DATA = re.compile(
    r"\b(?:personal (?:data|information|details)|pii|phi|sensitive data|ssns?|social security(?: numbers?)?|"
    r"passport numbers?|dates? of birth|card ?numbers?|cardholder|credit card (?:numbers?|data)|"
    # special categories of personal data (GDPR art. 9) and the like
    r"mental health|counsell?ing (?:notes|sessions|records)|therapy (?:notes|sessions)|"
    r"(?:sexual )?orientation|"
    r"religio(?:n|us) (?:beliefs?|affiliation)|ethnicity|political (?:views|opinions)|immigration status|"
    r"criminal (?:records?|convictions?)|"
    r"bank account numbers?|biometric\w*|fingerprints?|fac(?:e|ial)[- ]recognition|"
    r"face (?:scans?|matching|id)|genetic|dna|"
    # cameras that identify the public: number plates, faces
    r"anpr|(?:licen[cs]e|number)[- ]plate (?:readers?|recognition|cameras?)|surveillance(?! audits?)|"
    r"body[- ]?cams?|"
    r"(?:health|insurance|health-insurance|immigration|hiv|disability) status|"
    r"(?:medical|health|patient|claims?|employee|customer|user|consumer|member|subscriber|client|student|"
    r"tenant|personnel|pupil|resident|prisoner|children's)s?'?[- ](?:level |phone |video )?(?:data|records?|"
    r"lists?|information|details|profiles?|emails?|files?|calls?|conversations?|recordings?|notes|messages|"
    r"photos|images|scans|accounts)|"
    r"(?:email|mailing|newsletter|contact|subscriber) lists?|contacts|location data|geolocation|"
    r"browsing (?:history|data)|data brokers?|third[- ]part(?:y|ies)|research partners?|patient-level|"
    r"(?:sell|share) (?:our |the )?(?:\w+ )?data|lab results|test results|diagnos\w*|"
    r"(?:medical|health) (?:history|results|records|information|info|conditions?)|"
    r"another (?:company|customer|client|tenant|user|patient|family|account|member)'s|"
    r"(?:customers?|clients?|patients?|members?|students?|guests?|tenants?|employees?|staff|donors?|"
    r"users?|children|kids?|pupils?|parents?)'?s? "
    r"(?:\w+ ){0,2}?(?:names|emails|e-mail addresses|home addresses|phone numbers|photos|photographs)|"
    r"other (?:companies|customers|clients|tenants|users|patients|members)'?s? "
    r"(?:data|invoices|records|orders|files|accounts|details|messages))\b",
)
_LEGAL_EXPOSURE = re.compile(
    r"\b(?:lawyers?|sue|suing|sued|settle(?:ment)?s?|courts?|judges?|arbitration|cease and desist|"
    r"leaked (?:\w+ )?(?:emails|documents|files|memos|recordings|messages)|open-?sourc\w*|"
    r"(?:can't|cannot|can not|couldn't|could not) find (?:the |its |a |any )?"
    r"(?:licen[cs]e|contract|consent|permit)|"
    r"demand letters?|(?:litigation |legal )?hold letters?|legal hold|regulators?|inspectors?|whistleblow\w*|"
    r"antitrust|price-fixing|collusion|"
    r"(?:competitors?|rivals?)\b.{0,60}?\b(?:hold|fix|set|keep|raise|align|match)\w* (?:\w+ ){0,2}prices?|"
    r"brib\w*|kickbacks?|fcpa|corruption|fraud\w*|discriminat\w*|harass\w*|"
    r"retaliat\w*|wrongful\w*|misclassif\w*|injunction\w*|patents?|infring\w*|"
    r"copyright\w*(?! (?:year|date|line|notice|symbol|footer|(?:to |for )?(?:19|20)\d\d\b))|defamat\w*|"
    r"repatriat\w* (?:claim|request|demand)s?|looted|cultural property|"
    r"embargo\w*|ofac|itar|dual[- ]use|end[- ]users?|end[- ]use|final destination|freight forwarders?|"
    r"transship\w*|customs|gambling|loot ?box\w*|lotter(?:y|ies)|sweepstakes|betting|gacha|raffles?|"
    r"casinos?|wager\w*|(?:paid|random|mystery) (?:rewards?|packs?|boxes|drops)|credit[- ]based|"
    r"credit scores?|underwriting|fair lending|consumer protection|false advertising|deceptive|"
    r"deposit insurance|fdic|fiduciary|securities|insider trading|restat\w*|misstat\w*|disclos\w*|"
    r"notif(?:y|ied|ication) (?:the )?(?:regulators?|authorities|customers|fire marshal|police))\b",
)
_HEADCOUNT = re.compile(
    r"\b(?:let (?!it go)(?:\w+ ){0,3}go|laid off|redundanc\w*|severance|furlough\w*|reduction in force|"
    r"eliminat\w* (?:about |around )?(?:\d+ )?(?:roles|positions|jobs)|"
    r"(?:cut|reduce|cutting|reducing) (?:\w+ ){0,3}(?:staff|headcount|jobs|roles|workforce)|"
    r"terminat\w* (?:\w+ ){0,2}(?:employees|staff|workers)|"
    r"restructur\w* (?:about |around )?(?:\d+ |\w+ )?(?:\w+ )?(?:roles|positions|jobs|posts)|"
    r"hiring freeze|works councils?|unioni[sz]ed|"
    r"strikes?|collective bargaining)\b",
)
_SCOPE = re.compile(
    r"\b(?:company-?wide|organi[sz]ation-?wide|org-?wide|"
    r"across the (?:company|organi[sz]ation|business|board|firm)|nationwide|statewide|city-?wide|worldwide|"
    r"(?:all|every) (?:\d[\d,]* |(?:three|four|five|six|seven|eight|nine|ten|twelve|twenty|fifty|hundred) )?"
    r"(?:of our )?(?:customers?|hotels?|buses|vehicles|trucks|schools?|depots?|branches|homes|"
    r"users?|employees?|staff|stores?|sites?|locations?|patients?|accounts?|plans?|products?|regions?|orders?|"
    r"offices?|markets?|clients?|players?|members?|transactions?)|entire (?:\w+ )?(?:company|customer base|"
    r"fleet|business|platform|org\w*|workforce)|whole (?:company|business|org\w*)|"
    r"public (?:safety|services?|health)|(?:two|three|four|five|\d+) (?:states|countries))\b",
)
_SAFEGUARD_GAP = re.compile(
    r"\b(?:(?:skip|bypass|defer|waiv|disabl|turn(?:ing)? off|switch(?:ing)? off|"
    # "so it stops clashing with design review" stops no review
    r"stop(?!s? (?:clash|overlap|conflict))|drop|cut|remov|paus|"
    r"suspend|ignor|overrid|circumvent|delay|postpon|relax|loosen|silenc|mut(?=e|ing)|snooz|deactivat|"
    r"disconnect|shut(?:ting)? off)\w*\s(?:[\w'-]+\s){0,4}?"
    r"(?:checks?|inspections?|audits?|tests?|testing|reviews?|counts?|guards?|curtains?|alarms?|controls?|"
    r"sampling|samples|patrols?|surveys?|rounds|watch(?:es)?|escorts?|supervision|"
    r"allergen (?:info\w*|labels?|labelling|warnings?|notices?)|"
    r"safeguards?|screening|verification|mfa|2fa|encryption|backups?|holds?|compliance|monitoring|"
    r"certification|approvals?|sign-?offs?|qa|rest (?:breaks?|periods?))|(?:bypass|overrid)\w* (?:it|them)|"
    r"(?<!needs )(?<!need )(?<!requires )(?<!require )"
    r"(?:no|without|hasn't|has not|haven't|not|won't|will not|never|refuses? to) (?:\w+ ){0,2}"
    r"(?:signed|sign|a|any|written)?\s?(?:dpa|baa|contract|agreement|nda|consent|licen[cs]e|permit|approval|"
    r"paperwork|documentation|declarations?|certificates?|certification|manifests?)|"
    r"without (?:[\w'-]+ ){0,4}?(?:certificates?|permits?|licen[cs]es?|approvals?|sign-?offs?)|"
    # the person or gear that keeps people safe left out: "walking safaris without an armed ranger"
    r"without (?:an? |the |any |their )?(?:[\w-]+ ){0,2}?(?:rangers?|guards?|guides?|escorts?|supervisors?|"
    r"supervision|lifeguards?|chaperones?|spotters?|lookouts?|first[- ]aiders?|instructors?|"
    r"(?:second|other) (?:person|nurse|pharmacist|signature|signatory|signer|approver|key-?holder|check)|"
    r"harness\w*|helmets?|ppe|protective (?:gear|equipment|clothing))|"
    r"without (?:[\w'-]+ ){0,2}?(?:allergen|ingredient|warning|hazard|safety|dosage) (?:labels?|labelling|"
    r"information|info|warnings?)|uncalibrated|not (?:been )?calibrated|out of calibration|"
    # an inspection, certificate or permit overdue or lapsed; a legal limit exceeded
    r"(?:inspections?|certificat\w*|permits?|licen[cs]es?|calibrations?|servicing|registrations?|badges?|"
    r"accreditations?|qualifications?|insurance|cover|training|checks?)\s"
    r"(?:[\w'-]+\s){0,3}?(?:overdue|lapsed|expired|past due|out of date|ran out)|"
    r"(?:overdue|lapsed|expired|past-due) (?:\w+ ){0,2}(?:inspections?|certificat\w*|permits?|licen[cs]es?|"
    r"calibrations?|servicing)|"
    # acting ahead of the approval it needs: "start recruiting before the ethics letter arrives"
    r"(?:before|ahead of|without waiting for) (?:the |our |an? |any |their |his |her )?(?:[\w'-]+ ){0,2}?"
    r"(?:approvals?|approval letter|letter|sign-?off|permits?|licen[cs]es?|clearance|certificat\w*|consent|"
    r"vetting|(?:background|dbs|criminal[- ]record|police|reference|right[- ]to[- ]work|id) checks?|"
    r"(?:inspection|test|lab|survey|safety|structural|geotech\w*) (?:reports?|results?)|results?|"
    r"(?:structural|safety|risk|fire|ground|environmental|impact) (?:assessments?|surveys?))|"
    r"until (?:it|(?:the|his|her|their|our|its) (?:[\w'-]+ ){0,2}?\w+) "
    r"(?:arrives|comes through|is (?:issued|renewed|approved|granted))|"
    # ... or while it is still pending: "the licence variation hasn't come back", "the survey is due"
    r"(?:approvals?|letter|sign-?off|permits?|licen[cs]es?|variation|clearance|certificat\w*|consent|results?|"
    r"survey|assessment|(?:test|lab|inspection|geotech\w*|borehole|structural|safety) reports?) "
    r"(?:[\w',-]+ ){0,6}?(?:(?:hasn't|has not|haven't|have not|"
    r"isn't|is not|aren't|are not|not) (?:yet )?(?:come (?:back|through)|arrived|been (?:granted|issued|"
    r"approved|signed|received))|(?:is|are) (?:still )?(?:due|expected|pending|awaited)|should come through)|"
    r"(?:not|isn't|is not|aren't|are not) (?:yet )?(?:on )?(?:the |our )?(?:\w+ )?"
    r"(?:approved|licensed|authori[sz]ed) "
    r"(?:\w+ )?(?:list|suppliers?|vendors?|wholesalers?|tools?|apps?)|unapproved|unvetted|unlicensed|"
    # an approval, consent or cover that does not reach what is planned
    r"(?:approval|consent|licen[cs]e|permit|insurance|policy|cover) (?:\w+ ){0,2}?"
    r"(?:did not|does not|doesn't|didn't|won't|will not) (?:cover|include|extend to)|not covered by|"
    r"(?:past|over|beyond|exceed\w*|above|break\w*) (?:the |their |our )?(?:legal |statutory )?"
    r"(?:(?:hours-of-service|driving|duty|working|flight)(?:[- ]time)?|weight|speed|exposure|occupancy|"
    r"emissions?) limits?|"
    r"handshake|verbal agreement|unsigned|off the books|left blank|unclear|not (?:yet )?(?:been )?notified|"
    r"auto-?delet\w*|declared as|mislabel\w*|misdeclar\w*|falsif\w*|backdat\w*|cover(?:ing)? up|"
    r"under-?report\w*|(?:free|personal|consumer|private) (?:gmail|dropbox|whatsapp|email|e-mail|"
    r"phones?|cell ?phones?|devices?|laptops?|accounts?)|"
    r"gmail|whatsapp|personal (?:google|dropbox|icloud))\b",
)
_SMALL_SPEND = re.compile(r"[$€£]\s?\d{1,3}(?:\.\d+)?\b(?!\s?(?:k|m|b|million|billion|thousand|,\d))")
_DECISION = re.compile(
    r"\b(?:should (?:we|our|i)|is it worth|whether to|go/no-go|build or buy|do we need|"
    r"or (?:should|keep|stay))\b",
)
_WORD = re.compile(r"[^\W\d_][\w'-]*|\d[\d,.:%]*")

FEATURES: tuple[str, ...] = (
    "money",
    "scale",
    "small_team_burden",
    "irreversible",
    "regulated",
    "security",
    "critical",
    "strategic",
    "emergency",
    "commitment",
    "lookup",
    "routine",
    "derisked",
    "small_spend",
    "safety",
    "minors",
    "personal_data",
    "legal_exposure",
    "headcount",
    "scope",
    "safeguard_gap",
    "constraints",
    "decision",
    "words",
)
"""The keyword features measured, in this order (the fitted models may weigh some at 0)."""


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def largest_amount(text: str) -> float:
    """The largest money amount named in ``text`` (its unit applied; monthly amounts times 12), or 0."""
    largest = 0.0
    for match in _AMOUNT.finditer(text):
        raw = match.group("a") or match.group("b")
        unit = (match.group("au") or match.group("bu") or "").lower()
        value = _number(raw or "")
        if value is None:
            continue
        value *= _UNITS.get(unit, 1.0)
        if _MONTHLY.match(text[match.end() :]):
            value *= 12
        largest = max(largest, value)
    return largest


def _scale(text: str) -> float:
    largest = 0.0
    for match in _COUNT.finditer(text):
        value = _number(match.group("n"))
        if value is None:
            continue
        unit = (match.group("u") or "").lower()
        largest = max(largest, value * _UNITS.get(unit, 1.0))
    return largest


def _small_team(text: str) -> bool:
    for match in _TEAM.finditer(text):
        raw = next(g for g in match.groups() if g)
        size = _NUMBER_WORDS.get(raw.lower()) or (int(raw) if raw.isdigit() else 99)
        if size <= 5:
            return True
    return False


def decision_text(task: str, constraints: Sequence[str] = (), note: str | None = None) -> str:
    """The text the scorer reads: the task, each constraint and a re-plan note, one per line."""
    return "\n".join([task, *constraints, *([note] if note else [])])


def features(task: str, constraints: Sequence[str] = (), note: str | None = None) -> dict[str, float]:
    """Measure a decision: one value per name in :data:`FEATURES`, each between 0 and about 4.

    Counts are capped and magnitudes logarithmic: ``money`` is log10 of the
    largest amount in USD (``$180k`` a year is 5.3) less 2, at least 0;
    ``scale`` is log10 of the most people or things named, less 1.
    """
    raw = decision_text(task, constraints, note)
    text, first = raw.lower(), task.strip().lower()
    amount = largest_amount(raw)
    scale = _scale(raw)
    return {
        "money": max(math.log10(amount) - 2.0, 0.0) if amount > 0 else 0.0,
        "scale": max(math.log10(scale) - 1.0, 0.0) if scale > 0 else 0.0,
        "small_team_burden": 1.0 if _small_team(raw) and _BURDEN.search(text) else 0.0,
        "irreversible": capped(_IRREVERSIBLE, text, 3),
        "regulated": capped(_REGULATED, text, 3),
        "security": capped(_SECURITY, text, 3),
        "critical": capped(_CRITICAL, text, 3),
        "strategic": capped(_STRATEGIC, text, 2),
        "emergency": capped(_EMERGENCY, text, 2),
        "commitment": capped(_COMMITMENT, text, 2),
        "lookup": 1.0 if _LOOKUP.match(first) and not _DECISION.search(first) else 0.0,
        "routine": capped(_ROUTINE, text, 2),
        "derisked": capped(_DERISKED, text, 2),
        "small_spend": 1.0 if _SMALL_SPEND.search(text) and amount < 1000 else 0.0,
        "safety": capped(_SAFETY, text, 3),
        "minors": capped(_MINORS, text, 2),
        "personal_data": capped(_PERSONAL_DATA, text, 3),
        "legal_exposure": capped(_LEGAL_EXPOSURE, text, 3),
        "headcount": capped(_HEADCOUNT, text, 2),
        "scope": capped(_SCOPE, text, 2),
        "safeguard_gap": capped(_SAFEGUARD_GAP, text, 2),
        "constraints": float(min(len([c for c in constraints if c.strip()]), 4)),
        "decision": 1.0 if _DECISION.search(text) else 0.0,
        "words": math.log1p(len(_WORD.findall(raw))),
    }


# --------------------------------------------------------------------------- the texts embedded


def decision_subject(task: str, constraints: Sequence[str] = (), note: str | None = None) -> str:
    """The whole decision on one line: what the scorer embeds and the cache compares.

    The task, then the non-blank constraints and the re-plan note joined with
    ``"; "``, with every run of whitespace made one space; with no constraint
    and no note it is the task itself. A graph passes it as its calls'
    :attr:`~budgetgraph.budgets.request.CallRequest.subject`, and the cache
    embeds the subject as :func:`~budgetgraph.budgets.cache.text.normalize`
    gives it back, which for text already in NFKC form is this very string:
    the embedder then hands the cache the vector it computed for the scorer.
    """
    context = [c.strip() for c in [*constraints, note or ""] if c.strip()]
    return " ".join(" ".join([task, "; ".join(context)]).split())


# --------------------------------------------------------------------------- the fitted model

WEIGHTS_FILE = "decision_weights.json"
"""The fitted model's file, inside ``budgets.routing`` (written by ``bench/fit_decision_router.py``)."""

EMBEDDING = "embedding"
"""The name of the embedding's part of the linear predictor among the features and drivers."""


@dataclass(frozen=True)
class DecisionModel:
    """The fitted scorer: keyword weights, an embedding direction and cut points.

    The linear predictor of a decision is ``sum(weights[f] * x[f]) + embedding``
    where ``embedding = direction . d - embedding_offset`` (``d``: the
    L2-normalised 384-dimension vector of the whole decision,
    :func:`decision_subject`; the offset centres the term on the fitted
    decisions). ``P(grade >= standard) = sigmoid(linear - cuts[0])`` and
    ``P(grade >= premium) = sigmoid(linear - cuts[1])``.

    Attributes:
        embedder: The embedder's name the direction was fitted with (``local:all-MiniLM-L6-v2``).
        weights: Keyword feature -> weight (log-odds per unit), the embedding model's.
        direction: float64 ``(384,)``, log-odds per unit of the decision's vector.
        embedding_offset: Subtracted from the projection (log-odds).
        cuts: economy|standard and standard|premium cut points (log-odds).
        keyword_weights: Keyword feature -> weight of the keyword-only model (the fallback).
        keyword_cuts: Cut points of the keyword-only model (log-odds).
    """

    embedder: str
    weights: Mapping[str, float]
    direction: np.ndarray
    embedding_offset: float
    cuts: tuple[float, float]
    keyword_weights: Mapping[str, float]
    keyword_cuts: tuple[float, float]

    @property
    def dims(self) -> int:
        """Dimensions of the embedding (384)."""
        return int(self.direction.shape[0])

    def projection(self, vector: np.ndarray) -> float:
        """The embedding's part of the linear predictor (log-odds) for a ``(dims,)`` vector."""
        return float(self.direction @ vector - self.embedding_offset)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "<weights>") -> DecisionModel:
        """Read the model from the weights file's JSON object.

        Raises:
            ValueError: A key is missing (a file written before the scorer embedded
                the whole decision alone has ``task_direction`` and ``decision_direction``,
                not ``direction``), a keyword weight is not one of :data:`FEATURES`, or
                the direction is not one-dimensional; the message names ``source``.
        """
        try:
            weights = {str(k): float(v) for k, v in data["weights"].items()}
            keyword = data["keyword_only"]
            model = cls(
                embedder=str(data["embedder"]),
                weights=weights,
                direction=np.asarray(data["direction"], dtype=np.float64),
                embedding_offset=float(data["embedding_offset"]),
                cuts=(float(data["cuts"][0]), float(data["cuts"][1])),
                keyword_weights={str(k): float(v) for k, v in keyword["weights"].items()},
                keyword_cuts=(float(keyword["cuts"][0]), float(keyword["cuts"][1])),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"`{source}` is not a decision scorer's weights file: {exc!r}") from exc
        unknown = (set(model.weights) | set(model.keyword_weights)) - set(FEATURES)
        if unknown:
            raise ValueError(f"`{source}` weighs features this scorer does not measure: {sorted(unknown)}")
        if model.direction.ndim != 1:
            raise ValueError(f"`{source}`: the embedding direction is not one-dimensional")
        return model


def load_model(path: str | Path | None = None) -> DecisionModel:
    """Read a weights file (default: the packaged :data:`WEIGHTS_FILE`, read once per process).

    Raises:
        OSError: The file cannot be read.
        ValueError: It is not a weights file (see :meth:`DecisionModel.from_json`).
    """
    if path is None:
        return _packaged_model()
    return DecisionModel.from_json(json.loads(Path(path).read_text(encoding="utf-8")), str(path))


@cache
def _packaged_model() -> DecisionModel:
    text = resources.files("budgetgraph.budgets.routing").joinpath(WEIGHTS_FILE).read_text(encoding="utf-8")
    return DecisionModel.from_json(json.loads(text), f"<packaged {WEIGHTS_FILE}>")


# --------------------------------------------------------------------------- the embedder


class DecisionEmbedding:
    """Embeds decisions for the scorer: one embedder per process, loaded on first use, or none.

    The embedder is built on the first :meth:`vector` (by default a
    :class:`~budgetgraph.budgets.cache.embedders.LocalEmbedder`, which exports
    its ONNX file in a child process the first time on a machine, about 8 s).
    If it cannot embed - the model files are missing, the export fails, ONNX
    Runtime or tokenizers is not installed - a warning says so once and every
    later call returns ``None`` at once, so the scorer falls back to the
    keyword features without retrying the export on every decision. The
    planner scores one decision once per node; the latest :data:`MEMO`
    decisions' vectors are kept, so a plan embeds its decision once (and the
    local embedder keeps the vector for the cache's lookups of the same text).

    Args:
        make: Builds the embedder (default: ``LocalEmbedder()``); called once, on first use.
    """

    MEMO = 64
    """Decisions whose vectors are kept (1.5 KB each)."""

    def __init__(self, make: Callable[[], Embedder] | None = None) -> None:
        self._make = make
        self._embedder: Embedder | None = None
        self._failed: str | None = None
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def unavailable(self) -> str | None:
        """Why embedding failed (the first error), or ``None`` while it works or was not tried."""
        return self._failed

    def vector(self, text: str) -> np.ndarray | None:
        """The vector of ``text`` (a :func:`decision_subject`): float32 ``(dims,)``, L2-normalised.

        Returns ``None`` when the embedder cannot be had (logged once).
        """
        with self._lock:
            if text in self._memo:
                self._memo.move_to_end(text)
                return self._memo[text]
            if self._failed is not None:
                return None
            try:
                if self._embedder is None:
                    self._embedder = self._build()
                found = np.asarray(self._embedder.embed([text])[0], dtype=np.float32)
            except (ImportError, OSError, RuntimeError) as exc:  # ExportError is a RuntimeError
                self._failed = f"{type(exc).__name__}: {exc}"
                logger.warning(
                    "The decision scorer cannot embed (%s); it scores decisions with its keyword "
                    "features alone from now on. `python -m budgetgraph.budgets.cache.onnx_export` "
                    "exports the embedding model.",
                    self._failed,
                )
                return None
            self._memo[text] = found
            if len(self._memo) > self.MEMO:
                self._memo.popitem(last=False)
            return found

    def _build(self) -> Embedder:
        if self._make is not None:
            return self._make()
        from budgetgraph.budgets.cache.embedders import LocalEmbedder

        return LocalEmbedder()


EMBEDDING_STATE = DecisionEmbedding()
"""The process's decision embedder (tests swap it with ``monkeypatch.setattr``)."""


# --------------------------------------------------------------------------- scoring

DecisionScore: TypeAlias = Complexity
"""A decision's score: the request scorer's record (score 0-1, features, contributions, drivers)."""


def score_decision(
    task: str,
    constraints: Sequence[str] = (),
    note: str | None = None,
    *,
    weights: Mapping[str, float] | None = None,
    cuts: tuple[float, float] | None = None,
) -> DecisionScore:
    """Score a decision (its task, constraints and re-plan note).

    One embedding call per new decision (about 7 ms on two cores once the
    model is open; about 0.2 s to open it, once per process); the keyword
    features take microseconds.

    Args:
        task: The decision as the user gave it.
        constraints: Its constraints' texts.
        note: A reviewer's re-plan note, if any.
        weights: Weights by feature name to use instead of the fitted ones
            (the embedding's projection is the feature :data:`EMBEDDING`;
            leave it out to score on the keyword features alone).
        cuts: The ordinal model's cut points to use instead of the fitted ones (log-odds).

    Returns:
        The score (0-1), with the features and their contributions (log-odds)
        for the reason; ``features`` has :data:`EMBEDDING` only when the
        decision was embedded.

    Raises:
        ValueError: The packaged weights file is not one (a broken install).
    """
    model = _packaged_model()
    measured = features(task, constraints, note)
    vector = EMBEDDING_STATE.vector(decision_subject(task, constraints, note))
    if vector is not None and vector.shape[0] == model.dims:
        measured[EMBEDDING] = model.projection(vector)
        fitted, fitted_cuts = {**model.weights, EMBEDDING: 1.0}, model.cuts
    else:
        fitted, fitted_cuts = dict(model.keyword_weights), model.keyword_cuts
    return scored(measured, fitted if weights is None else weights, fitted_cuts if cuts is None else cuts)


__all__ = [
    "EMBEDDING",
    "EMBEDDING_STATE",
    "FEATURES",
    "WEIGHTS_FILE",
    "DecisionEmbedding",
    "DecisionModel",
    "DecisionScore",
    "decision_subject",
    "decision_text",
    "features",
    "largest_amount",
    "load_model",
    "score_decision",
]
