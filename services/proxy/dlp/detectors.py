"""Detectors (pure): the spans of a text that hold personal data or secrets, validated and non-overlapping."""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence

# Speed: Python's regex engine costs ~5 µs per KB for each pattern that can start at many positions, and a
# Python-level call costs ~0.5 µs, so:
# - secrets are patterns starting with a literal (found about as fast as `in` finds it), all gated by one
#   search for those literals;
# - emails are anchored on '@', IPv6 addresses on two nearby colons;
# - cards, SSNs, IPv4 addresses and phone numbers are looked for only inside "numeric clusters" (a digit,
#   '+' or '(' then 5+ digits/separators, ending in a digit), found by one cheap scan of the text, and only in
#   clusters whose shape could hold one (dates and amounts need no regex), with one combined pattern per
#   policy; IBANs in a window around clusters of 10+ digits and spaces;
# - validators (Luhn, mod-97, IPv4 octet rules, ipaddress for IPv6) run only on candidates.
# Patterns that need a boundary put their lookbehind after the first literal or character class, which keeps
# the regex engine's fast first-character search.

Span = tuple[int, int, str]  # start, end, detector (or custom rule) name
_Spans = Sequence[tuple[int, int]]
_Finder = Callable[[str], _Spans]

# Overlaps are resolved tier by tier (lower first), then earliest, then longest: secrets win over
# everything, custom rules over built-in PII, cards/IBANs/SSNs over emails/IPs, and phone numbers last.
SECRET_TIER, RULE_TIER, NUMBER_TIER, ADDRESS_TIER, PHONE_TIER = range(5)

_NONE: _Spans = ()

_ESCAPE = re.compile(r"\\(?:u[0-9A-Fa-f]{4}|.)", re.S)
_FILLER = "\x00"  # stands in for an escape sequence: breaks every detector except a PEM body


def _blank(match: re.Match[str]) -> str:
    return _FILLER * (match.end() - match.start())


def detection_view(text: str) -> str:
    """`text` with each backslash escape (`\\n`, `\\"`, `\\u00e9`) replaced by filler of the same length, so a
    match never starts or ends inside an escape (`\\nbob@x.com` finds `bob@x.com`) and spans map 1:1."""
    return _ESCAPE.sub(_blank, text) if "\\" in text else text


# --- secrets -------------------------------------------------------------------------------------------

_PRIVATE_KEY = re.compile(
    r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY-----"
    r"(?:.*?-----END[A-Z0-9 ]{0,40}PRIVATE KEY-----|[A-Za-z0-9+/=\s\\\x00:,-]*)", re.S)
_OPENAI_KEY = re.compile(r"sk-(?<![A-Za-z0-9_-]sk-)(?!ant-)[A-Za-z0-9_-]{20,}")
_ANTHROPIC_KEY = re.compile(r"sk-ant-(?<![A-Za-z0-9_-]sk-ant-)[A-Za-z0-9_-]{20,}")
_AWS_ACCESS_KEY = re.compile(r"A[KS]IA(?<![A-Za-z0-9]A[KS]IA)[A-Z0-9]{16}(?![A-Za-z0-9])")
_GITHUB_TOKEN = re.compile(
    r"g(?<![A-Za-z0-9_]g)(?:h[pousr]_[A-Za-z0-9]{36,251}|ithub_pat_[A-Za-z0-9_]{22,255})(?![A-Za-z0-9_])")
_SLACK_TOKEN = re.compile(r"xox[bpars]-(?<![A-Za-z0-9]xox[bpars]-)[A-Za-z0-9-]{10,}")
_JWT = re.compile(r"eyJ(?<![A-Za-z0-9_-]eyJ)[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_TRAILING_BLANK = " \t\r\n" + _FILLER


def _looks_random(token: str) -> bool:
    """A key body has a digit or mixed case; prose after a prefix (`sk-learn-is-great`) does not."""
    return any(map(str.isdigit, token)) or (token.lower() != token and token.upper() != token)


def _private_keys(view: str) -> _Spans:
    if _PRIVATE_KEY.search(view) is None:
        return _NONE
    spans = []
    for m in _PRIVATE_KEY.finditer(view):
        end = m.end()
        while end > m.start() and view[end - 1] in _TRAILING_BLANK:
            end -= 1
        spans.append((m.start(), end))
    return spans


def _tokens(pattern: re.Pattern[str], random_after: int | None = None) -> _Finder:
    """Matches of `pattern`; with `random_after`, only those whose text after that many characters looks random."""
    def find(view: str) -> _Spans:
        first = pattern.search(view)
        if first is None:
            return _NONE
        return [m.span() for m in pattern.finditer(view, first.start())
                if random_after is None or _looks_random(view[m.start() + random_after:m.end()])]
    return find


# --- email and IPv6 (anchored on '@' and on two nearby colons) -----------------------------------------

_LOCAL_TAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}+\Z")  # possessive: no backtracking
_DOMAIN = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])")


def _emails(view: str) -> _Spans:
    at = view.find("@")
    if at < 0:
        return _NONE
    spans = []
    while at >= 0:
        resume = at + 1
        local = _LOCAL_TAIL.search(view, max(0, at - 64), at)
        domain = _DOMAIN.match(view, at + 1) if local else None
        if local and domain:
            start = local.start()
            while start < at and view[start] in ".%-":
                start += 1
            if start < at:
                spans.append((start, domain.end()))
                resume = domain.end()
        at = view.find("@", resume)
    return spans


_IPV6_ANCHOR = re.compile(r":[0-9A-Fa-f]{0,4}:")
_IPV6_RUN = re.compile(r"[0-9A-Fa-f:.]*")
_HEX_COLON = frozenset("0123456789abcdefABCDEF:")
_WORDISH = re.compile(r"[\w.]")


def _ipv6_ok(candidate: str) -> bool:
    colons = candidate.count(":")
    if colons < 2 or colons > 7 or ("::" not in candidate and colons != 7 and not (colons == 6 and "." in candidate)):
        return False  # `10:30:00`, MAC addresses: cheaper than letting ipaddress raise
    if not any(map(str.isdigit, candidate)):
        return False  # `dead::beef`, `add::` are words, not addresses
    if "::" in candidate and all(len(g) <= 2 for g in candidate.split(":")):
        return False  # `a[1::2]`, `x[10::20]` are slices
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def _ipv6(view: str) -> _Spans:
    anchor = _IPV6_ANCHOR.search(view)
    if anchor is None:
        return _NONE
    spans = []
    while anchor is not None:
        start = anchor.start()
        floor = max(0, start - 40)
        while start > floor and view[start - 1] in _HEX_COLON:
            start -= 1
        run = _IPV6_RUN.match(view, anchor.start())
        run_end = run.end() if run else anchor.end()
        candidate = view[start:run_end].rstrip(".")
        if candidate.endswith(":") and not candidate.endswith("::") and not _ipv6_ok(candidate):
            candidate = candidate[:-1]
        end = start + len(candidate)
        before_ok = start == 0 or not _WORDISH.match(view, start - 1)
        after_ok = end >= len(view) or not (view[end].isalnum() or view[end] in "_:")
        if before_ok and after_ok and _ipv6_ok(candidate):
            spans.append((start, end))
        anchor = _IPV6_ANCHOR.search(view, max(run_end, anchor.end()))
    return spans


# --- numbers: IBAN, card, SSN, IPv4 and phone, in and around numeric clusters ---------------------------

_CLUSTER = re.compile(r"[+(0-9](?<![0-9][0-9])[0-9 ().+-]{5,}[0-9]")  # never restarts inside a digit run
_IBAN = re.compile(r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z][0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?")
# Every IBAN's account part holds a cluster of 10+ digits and spaces starting at most ~15 characters after
# the country code ("RO49 AAAA 1B31 0075 9384 0000", "NL91ABNA0417164300"): IBANs are looked for from 20
# characters before such a cluster to 16 after (dates, amounts and phone numbers have other characters).
_IBAN_BEFORE, _IBAN_AFTER = 20, 16
_NUMBER_AFTER = 2  # the number patterns' lookaheads see 2 characters past a cluster


def _could_be_iban(cluster: str) -> bool:
    return len(cluster) >= 10 and cluster.replace(" ", "").isdigit()


def _could_be_number(cluster: str) -> bool:
    """Whether a cluster can hold a card (13+ characters), an SSN (11+, a dash), an IPv4 address (a dot) or
    a phone number (12+, or a '+' or '('): dates, times, amounts and versions are skipped without a regex."""
    size = len(cluster)
    return size >= 12 or "." in cluster or "+" in cluster or "(" in cluster or (size == 11 and "-" in cluster)


# One alternation per policy (the engine tries every branch at every position, so only inside clusters)
_NUMBER_PATTERNS = {
    "card": r"[0-9](?<![0-9-][0-9])(?:[ -]?[0-9]){12,18}(?![0-9])",
    "ssn": r"[0-9](?<![0-9-][0-9])[0-9]{2}-[0-9]{2}-[0-9]{4}(?![0-9]|-[0-9])",
    "ip": r"[0-9](?<![0-9A-Za-z_.][0-9])[0-9]{0,2}(?:\.[0-9]{1,3}){3}(?![0-9A-Za-z_]|\.[0-9])",
    "phone": (
        # +CC then groups (a separator before each; "(0)20" style area codes), or +CC and digits run together
        r"\+(?<![0-9A-Za-z+]\+)[1-9]"
        r"(?:[0-9]{7,14}|[0-9]{0,3}(?:[ .-]?\([0-9]{1,4}\)[0-9]{0,4}|[ .-][0-9]{1,5}){1,7})(?![0-9])"
        # (415) 555-0132
        r"|\((?<![0-9A-Za-z(]\()[0-9]{3}\)[ .-]?[0-9]{3}[ .-][0-9]{4}(?![0-9]|[.-][0-9])"
        # 415-555-0132, 415.555.0132, 415 555 0132, 1-800-555-0199 (one separator throughout)
        r"|[0-9](?<![0-9A-Za-z_.+-][0-9])(?:(?<=1)(?P<one>[ .-])[2-9][0-9]{2}(?P=one)[0-9]{3}(?P=one)|[0-9]{2}"
        r"(?P<nanp>[ .-])[0-9]{3}(?P=nanp))[0-9]{4}(?![0-9]|[.-][0-9])"
        # 01 42 68 53 00 (French national form)
        r"|0(?<![0-9A-Za-z_.+-]0)[1-9](?P<fr>[ .-])[0-9]{2}(?:(?P=fr)[0-9]{2}){3}(?![0-9]|[.-][0-9])"),
}
_NUMBER_REGEXES = {name: re.compile(source) for name, source in _NUMBER_PATTERNS.items()}
_CARD_GROUP = re.compile(r"[0-9]+")
_PHONE_GROUP_END = re.compile(r"[0-9)](?=[ .-]|$)")
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25,
    "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18,
    "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}
_LETTER_VALUES = {ord(c): str(value) for value, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ", start=10)}
_DIGIT = {str(d): d for d in range(10)}
_DOUBLED = {str(d): 2 * d - 9 if d > 4 else 2 * d for d in range(10)}


def iban_valid(compact: str) -> bool:
    """ISO 13616 check: the country's length, and the rearranged number mod 97 equal to 1."""
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact.isalnum():
        return False
    return int((compact[4:] + compact[:4]).translate(_LETTER_VALUES)) % 97 == 1


def luhn_valid(digits: str) -> bool:
    """The payment-card check digit (ISO/IEC 7812); `digits` holds only ASCII digits."""
    total = sum(map(_DIGIT.__getitem__, digits[-1::-2])) + sum(map(_DOUBLED.__getitem__, digits[-2::-2]))
    return total % 10 == 0


def _iban(view: str, start: int, end: int) -> _Spans:
    raw = view[start:end]
    length = _IBAN_LENGTHS.get(raw[:2])
    compact = raw.replace(" ", "")
    if length is None or len(compact) < length:
        return _NONE
    if len(compact) > length:  # cut after the country's length; only taken when the cut is at a space
        end, kept = start, 0
        for char in raw:
            if kept == length:
                break
            end += 1
            kept += char != " "
        compact = compact[:length]
    if (end < len(view) and view[end].isalnum()) or not iban_valid(compact):
        return _NONE
    return [(start, end)]


def _is_card(raw: str) -> bool:
    # Issuer numbers start with 2-9 (1 is UATP airline accounts, rare in prompts; 0 is unassigned): this keeps
    # 13-digit epoch-millisecond timestamps ("ts": 1700000000004, Luhn-valid) from reading as cards.
    digits = raw.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and digits[0] not in "01" and luhn_valid(digits)


def _card(view: str, start: int, end: int) -> _Spans:
    raw = view[start:end]
    if _is_card(raw):
        return [(start, end)]
    # "ref 12 4111 1111 1111 1111": the card may be a run of the candidate's groups; earliest, then longest.
    # Not worth a look unless dropping the shorter end group still leaves 13 digits.
    digits = sum(map(str.isdigit, raw))
    head, tail = len(raw) - len(raw.lstrip("0123456789")), len(raw) - len(raw.rstrip("0123456789"))
    if head == len(raw) or digits - min(head, tail) < 13:
        return _NONE
    groups = [g.span() for g in _CARD_GROUP.finditer(raw)]
    before = [0]  # digits before each group
    for group_start, group_end in groups:
        before.append(before[-1] + group_end - group_start)
    spans, first = [], 0
    while first < len(groups):
        for last in range(len(groups) - 1, first - 1, -1):
            if (first, last) != (0, len(groups) - 1) and 13 <= before[last + 1] - before[first] <= 19:
                if _is_card(raw[groups[first][0]:groups[last][1]]):
                    spans.append((start + groups[first][0], start + groups[last][1]))
                    first = last
                    break
        first += 1
    return spans


def _ssn(view: str, start: int, end: int) -> _Spans:
    raw = view[start:end]
    if raw[:3] in ("000", "666") or raw[0] == "9" or raw[4:6] == "00" or raw[7:] == "0000":
        return _NONE
    return [(start, end)]


def ipv4_valid(dotted: str) -> bool:
    """`ipaddress.IPv4Address`'s rules for four dotted decimal octets (0-255, no leading zero) at a tenth of
    its cost, which matters for pasted logs full of addresses; a unit test checks the two agree."""
    octets = dotted.split(".")
    return len(octets) == 4 and all(
        o.isascii() and o.isdigit() and len(o) <= 3 and (o == "0" or o[0] != "0") and int(o) <= 255 for o in octets)


def _ipv4(view: str, start: int, end: int) -> _Spans:
    return [(start, end)] if ipv4_valid(view[start:end]) else _NONE


def _phone(view: str, start: int, end: int) -> _Spans:
    raw = view[start:end]
    digits = sum(map(str.isdigit, raw))
    if digits > 15 and raw[0] == "+":  # "+1 415 555 0132 2024 1234": keep the longest E.164-sized prefix
        for cut in reversed(list(_PHONE_GROUP_END.finditer(raw))):
            digits = sum(map(str.isdigit, raw[:cut.end()]))
            if digits <= 15:
                end = start + cut.end()
                break
    return [(start, end)] if 8 <= digits <= 15 else _NONE


_NUMBER_CHECKS: dict[str, Callable[[str, int, int], _Spans]] = {
    "card": _card, "ssn": _ssn, "ip": _ipv4, "phone": _phone}
_NUMBER_TIERS = {"card": NUMBER_TIER, "ssn": NUMBER_TIER, "ip": ADDRESS_TIER, "phone": PHONE_TIER}
_COULD_HOLD: dict[str, Callable[[str], bool]] = {  # cheap tests before a retry
    "card": lambda window: len(window) >= 13,
    "ssn": lambda window: "-" in window,
    "ip": lambda window: "." in window,
    "phone": lambda window: len(window) >= 9,
}


# --- the scanner ---------------------------------------------------------------------------------------

# name -> (finder, the literal start every match has). One search for all the policy's starts gates the
# secret finders: a short chat turn then costs one regex call instead of seven.
_SECRETS: dict[str, tuple[_Finder, str]] = {
    "private_key": (_private_keys, "-----BEGIN"),
    "anthropic_key": (_tokens(_ANTHROPIC_KEY, len("sk-ant-")), "sk-ant-"),
    "openai_key": (_tokens(_OPENAI_KEY, len("sk-")), "sk-"),
    "aws_access_key": (_tokens(_AWS_ACCESS_KEY), "A[KS]IA"),
    "github_token": (_tokens(_GITHUB_TOKEN), "g(?:h[pousr]_|ithub_pat_)"),
    "slack_token": (_tokens(_SLACK_TOKEN, len("xoxb-")), "xox[bpars]-"),
    "jwt": (_tokens(_JWT), "eyJ"),
}
# name -> (finder, a character every match has); IPv4 addresses are found in numeric clusters, IPv6 ones here
_ADDRESSES: dict[str, tuple[_Finder, str]] = {
    "email": (_emails, "@"),
    "ip": (_ipv6, ":"),
}

DETECTORS: tuple[str, ...] = ("email", "phone", "card", "iban", "ssn", "ip", "openai_key", "anthropic_key",
                              "aws_access_key", "github_token", "slack_token", "jwt", "private_key")
assert set(DETECTORS) == set(_SECRETS) | set(_ADDRESSES) | set(_NUMBER_PATTERNS) | {"iban"}


class Scanner:
    """Finds the spans of one policy's detectors and custom rules in a text."""

    __slots__ = ("_secret_gate", "_secrets", "_addresses", "_numbers", "_number_names", "_iban", "_rules")

    def __init__(self, detectors: Iterable[str], rules: Sequence[tuple[str, re.Pattern[str]]] = ()) -> None:
        enabled = set(detectors)
        unknown = enabled - set(DETECTORS)
        if unknown:
            raise ValueError(f"unknown detectors: {', '.join(sorted(unknown))}")
        self._secrets = [(name, find) for name, (find, _) in _SECRETS.items() if name in enabled]
        starts = [start for name, (_, start) in _SECRETS.items() if name in enabled]
        self._secret_gate = re.compile("|".join(starts)) if starts else None
        self._addresses = [(name, find, needle) for name, (find, needle) in _ADDRESSES.items() if name in enabled]
        self._number_names = [name for name in _NUMBER_PATTERNS if name in enabled]
        self._numbers = re.compile("|".join(f"(?P<{name}>{_NUMBER_PATTERNS[name]})" for name in self._number_names)
                                   ) if self._number_names else None
        self._iban = "iban" in enabled
        self._rules = tuple(rules)

    def find(self, text: str) -> list[Span]:
        """Non-overlapping (start, end, name) spans sorted by start."""
        view = detection_view(text)
        found: list[tuple[int, int, int, str]] = []
        if self._secret_gate is not None and self._secret_gate.search(view) is not None:
            for name, find in self._secrets:
                for start, end in find(view):
                    found.append((SECRET_TIER, start, end, name))
        for name, find, needle in self._addresses:
            if needle in view:
                for start, end in find(view):
                    found.append((ADDRESS_TIER, start, end, name))
        if self._numbers is not None or self._iban:
            first = _CLUSTER.search(view)
            if first is not None:
                self._numbers_in(view, first.start(), found)
        for name, pattern in self._rules:
            found.extend((RULE_TIER, m.start(), m.end(), name) for m in pattern.finditer(view) if m.end() > m.start())
        if len(found) < 2:
            return [(start, end, name) for _, start, end, name in found]
        return _resolve(found)

    def _numbers_in(self, view: str, first: int, found: list[tuple[int, int, int, str]]) -> None:
        size = len(view)
        iban_windows: list[list[int]] = []  # [low, high], overlapping windows merged: no text searched twice
        number_windows: list[list[int]] = []
        for cluster in _CLUSTER.finditer(view, first):
            start, end = cluster.span()
            text = cluster.group()
            if self._iban and _could_be_iban(text):
                low = max(0, start - _IBAN_BEFORE)
                if iban_windows and low <= iban_windows[-1][1]:
                    iban_windows[-1][1] = min(size, end + _IBAN_AFTER)
                else:
                    iban_windows.append([low, min(size, end + _IBAN_AFTER)])
            if self._numbers is not None and _could_be_number(text):
                if number_windows and start <= number_windows[-1][1]:
                    number_windows[-1][1] = min(size, end + _NUMBER_AFTER)
                else:
                    number_windows.append([start, min(size, end + _NUMBER_AFTER)])
        ibans: list[tuple[int, int]] = []
        for low, high in iban_windows:  # first, so an IBAN's account digits are not looked at again as a card
            for m in _IBAN.finditer(view, low, high):
                for start, end in _iban(view, m.start(), m.end()):
                    ibans.append((start, end))
                    found.append((NUMBER_TIER, start, end, "iban"))
        if self._numbers is None:
            return
        for low, high in number_windows:
            if ibans and any(start <= low and high - _NUMBER_AFTER <= end for start, end in ibans):
                continue
            for m in self._numbers.finditer(view, low, high):
                name = m.lastgroup
                assert name is not None
                spans = _NUMBER_CHECKS[name](view, m.start(), m.end())
                if spans:
                    tier = _NUMBER_TIERS[name]
                    for start, end in spans:
                        found.append((tier, start, end, name))
                else:  # the first pattern that matched here failed its check: give the others their chance
                    self._retry(view, m.start(), min(size, m.end() + _NUMBER_AFTER), name, found)

    def _retry(self, view: str, low: int, high: int, failed: str, found: list[tuple[int, int, int, str]]) -> None:
        window = view[low:high]
        for name in self._number_names:
            if name != failed and _COULD_HOLD[name](window):
                check, tier = _NUMBER_CHECKS[name], _NUMBER_TIERS[name]
                for m in _NUMBER_REGEXES[name].finditer(view, low, high):
                    found.extend((tier, s, e, name) for s, e in check(view, m.start(), m.end()))


def _resolve(found: list[tuple[int, int, int, str]]) -> list[Span]:
    """Take candidates tier by tier, earliest then longest first. One that overlaps taken spans is not a match
    of its own: it widens them (merged into one, named after the first taken), so no detected character is
    ever left out of a redaction."""
    found.sort(key=lambda c: (c[0], c[1], c[1] - c[2]))
    starts: list[int] = []
    kept: list[tuple[int, int, str, int]] = []  # start, end, name, rank (lower was taken first)
    for rank, (_, start, end, name) in enumerate(found):
        low = high = bisect.bisect_right(starts, start)
        if low and kept[low - 1][1] > start:
            low -= 1
        while high < len(kept) and kept[high][0] < end:
            high += 1
        if low < high:
            first = min(kept[low:high], key=lambda span: span[3])
            start, end, name, rank = min(start, kept[low][0]), max(end, kept[high - 1][1]), first[2], first[3]
        starts[low:high] = [start]
        kept[low:high] = [(start, end, name, rank)]
    return [(start, end, name) for start, end, name, _ in kept]
