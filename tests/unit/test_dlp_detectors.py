"""DLP detectors: what each one finds, what it must not find, and how overlaps resolve."""

from __future__ import annotations

import ipaddress
import itertools
import re

import pytest

from services.proxy.dlp.detectors import (
    DETECTORS,
    Scanner,
    detection_view,
    iban_valid,
    ipv4_valid,
    luhn_valid,
)

ALL = Scanner(DETECTORS)

OPENAI_KEY = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"
ANTHROPIC_KEY = "sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe"
GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
GITHUB_PAT = "github_pat_11ABCDEFG0" + "x1Y2z3W4v5" * 7
SLACK_TOKEN = "xoxb-2048102400-4096204800123-AbCdEfGhIjKlMnOpQrStUvWx"
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."
       "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq9\nq2Xh4Rk0pL8s\n-----END RSA PRIVATE KEY-----"


def found(text: str, scanner: Scanner = ALL) -> list[tuple[str, str]]:
    return [(name, text[start:end]) for start, end, name in scanner.find(text)]


@pytest.mark.parametrize(("text", "expected"), [
    # email
    ("write to bob.smith+tag@example.co.uk today", [("email", "bob.smith+tag@example.co.uk")]),
    ("<jane_doe@sub.mail.example.com>.", [("email", "jane_doe@sub.mail.example.com")]),
    # phone, international and national formats
    ("call +1 415 555 0132 now", [("phone", "+1 415 555 0132")]),
    ("London: +44 20 7946 0958.", [("phone", "+44 20 7946 0958")]),
    ("US (415) 555-0132 office", [("phone", "(415) 555-0132")]),
    ("Paris +33 1 42 68 53 00", [("phone", "+33 1 42 68 53 00")]),
    ("sms +14155550132", [("phone", "+14155550132")]),
    ("desk 415-555-0132 or 415.555.0133", [("phone", "415-555-0132"), ("phone", "415.555.0133")]),
    ("+1 (415) 555-0132", [("phone", "+1 (415) 555-0132")]),
    ("+44 (0)20 7946 0958", [("phone", "+44 (0)20 7946 0958")]),
    ("tel 01 42 68 53 00", [("phone", "01 42 68 53 00")]),
    ("toll-free 1-800-555-0199", [("phone", "1-800-555-0199")]),
    # card: 13-19 digits passing Luhn, spaces or dashes allowed
    ("card 4111 1111 1111 1111 exp 12/27", [("card", "4111 1111 1111 1111")]),
    ("4111-1111-1111-1111", [("card", "4111-1111-1111-1111")]),
    ("mc 5555555555554444, amex 378282246310005", [("card", "5555555555554444"), ("card", "378282246310005")]),
    ("ref 12 4111 1111 1111 1111", [("card", "4111 1111 1111 1111")]),
    # iban: mod-97 checked, spaces allowed
    ("IBAN GB82 WEST 1234 5698 7654 32, thanks", [("iban", "GB82 WEST 1234 5698 7654 32")]),
    ("GB82WEST12345698765432", [("iban", "GB82WEST12345698765432")]),
    ("DE89 3704 0044 0532 0130 00", [("iban", "DE89 3704 0044 0532 0130 00")]),
    ("to FR14 2004 1010 0505 0001 3M02 606", [("iban", "FR14 2004 1010 0505 0001 3M02 606")]),
    ("NL91ABNA0417164300", [("iban", "NL91ABNA0417164300")]),
    ("KZ86125KZT5004100100 and KZ86 125K ZT50 0410 0100", [("iban", "KZ86125KZT5004100100"),
                                                           ("iban", "KZ86 125K ZT50 0410 0100")]),
    ("RO49 AAAA 1B31 0075 9384 0000", [("iban", "RO49 AAAA 1B31 0075 9384 0000")]),
    ("MT84MALT011000012345MTLCAST001S", [("iban", "MT84MALT011000012345MTLCAST001S")]),
    # ssn
    ("SSN 078-05-1120.", [("ssn", "078-05-1120")]),
    ("id 123-45-6789", [("ssn", "123-45-6789")]),
    # ip
    ("host 192.168.1.10 is up", [("ip", "192.168.1.10")]),
    ("ping 10.0.0.1.", [("ip", "10.0.0.1")]),
    ("v6 2001:db8::1 and fe80::1ff:fe23:4567:890a", [("ip", "2001:db8::1"), ("ip", "fe80::1ff:fe23:4567:890a")]),
    ("2001:0db8:85a3:0000:0000:8a2e:0370:7334", [("ip", "2001:0db8:85a3:0000:0000:8a2e:0370:7334")]),
    ("url http://[2001:db8::8a2e:370:7334]:443/", [("ip", "2001:db8::8a2e:370:7334")]),
    ("mapped ::ffff:192.0.2.128 here", [("ip", "::ffff:192.0.2.128")]),
    # secrets
    (f"key={OPENAI_KEY}", [("openai_key", OPENAI_KEY)]),
    ("legacy sk-" + "A1b2C3d4E5" * 4 + "F6g7H8i9", [("openai_key", "sk-" + "A1b2C3d4E5" * 4 + "F6g7H8i9")]),
    (f"ANTHROPIC_API_KEY={ANTHROPIC_KEY}", [("anthropic_key", ANTHROPIC_KEY)]),
    ("aws AKIAIOSFODNN7EXAMPLE and ASIAY34FZKBOKMUTVV7A", [("aws_access_key", "AKIAIOSFODNN7EXAMPLE"),
                                                          ("aws_access_key", "ASIAY34FZKBOKMUTVV7A")]),
    (f"token {GITHUB_TOKEN}", [("github_token", GITHUB_TOKEN)]),
    (f"pat {GITHUB_PAT}", [("github_token", GITHUB_PAT)]),
    (f"SLACK={SLACK_TOKEN}", [("slack_token", SLACK_TOKEN)]),
    (f"Authorization: Bearer {JWT}", [("jwt", JWT)]),
    (f"key:\n{PEM}\nend", [("private_key", PEM)]),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----",
     [("private_key", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----")]),
    ("truncated -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n",
     [("private_key", "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC")]),
])
def test_true_positives(text: str, expected: list[tuple[str, str]]) -> None:
    assert found(text) == expected


@pytest.mark.parametrize("text", [
    # not emails
    "user@localhost", "follow @routeur on the feed", "a @ b.com",
    # not phone numbers: dates, times, versions, short numbers, long digit runs, sums
    "released 2024-01-15", "at 2024-01-15T10:30:00+01:00 sharp", "2024-01-15 10:30:00", "version 1.2.3.4.5",
    "build 20240115", "call 12345", "order 1234567890123456789012", "pi is 3.14159265", "2 + 2 = 4 and 10 + 20 = 30",
    "+1 2 3", "room 4.12 at 10:30", "id 123e4567-e89b-12d3-a456-426614174000", "tel. 555-0132",
    # not cards: Luhn fails, leading zero, wrong length
    "4111111111111112", "4111 1111 1111 1112", "0000 0000 0000 0000", "12345678901",
    '"ts": 1700000000004',  # a Luhn-valid epoch-millisecond timestamp
    # not IBANs: wrong check digits, unknown country, too short
    "GB83 WEST 1234 5698 7654 32", "GB82WEST12345698765433", "XX82 WEST 1234 5698 7654 32", "GB82 WEST 1234 5698 7654",
    # not SSNs: invalid area, group or serial
    "000-12-3456", "666-12-3456", "900-12-3456", "123-00-4567", "123-45-0000", "123-45-67890",
    # not IPs
    "999.1.1.1", "256.1.1.1", "01.2.3.4", "v1.2.3.4", "1.2.3.4.5", "10:30:45", "std::vector<int>", "a[1::2]",
    "x[10::20]", "mac 00:1A:2B:3C:4D:5E", "dead::beef", "Foo::Bar::baz",
    # not secrets
    "a task-based approach", "use sk-learn-is-a-great-library-for-ml", "sk-short", "disk-0123456789abcdefghij",
    "AKIAIOSFODNN7EXAMPL", "AKIAIOSFODNN7EXAMPLEX", "ghp_short", "ghx_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "xoxo-hugs-and-kisses", "xoxb-onlylowercaseletters", "eyJhbGciOiJIUzI1NiJ9 alone", "heyJude.fooBarBaz1.bazQux234",
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQY\n-----END PUBLIC KEY-----",
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgI\n-----END CERTIFICATE-----",
])
def test_false_positives(text: str) -> None:
    assert found(text) == []


def test_a_card_is_not_also_a_phone_and_iban_digits_are_not_a_card() -> None:
    assert found("4111 1111 1111 1111") == [("card", "4111 1111 1111 1111")]
    assert found("4111-1111-1111-1111") == [("card", "4111-1111-1111-1111")]
    assert found("DE89370400440532013000") == [("iban", "DE89370400440532013000")]
    assert found("DE89 3704 0044 0532 0130 00") == [("iban", "DE89 3704 0044 0532 0130 00")]


def test_secrets_win_over_what_they_contain() -> None:
    key = "sk-abc4111111111111111DEFghiJKLmnoPQR"  # a Luhn-valid card number inside a key
    assert found(f"key {key}") == [("openai_key", key)]
    assert found(f"{ANTHROPIC_KEY}") == [("anthropic_key", ANTHROPIC_KEY)]  # never also an openai_key


def test_overlaps_resolve_deterministically() -> None:
    text = "mail +14155550132@sms.example.com or +1 415 555 0132"
    assert found(text) == [("email", "+14155550132@sms.example.com"), ("phone", "+1 415 555 0132")]
    assert found(text) == found(text)
    rules = Scanner(DETECTORS, [("ticket", re.compile(r"T-\d+-\d+")), ("long_ticket", re.compile(r"T-\d+-\d+-\d+"))])
    # within a tier, the earliest then the longest wins
    assert found("T-1-2-3 and T-4-5", rules) == [("long_ticket", "T-1-2-3"), ("ticket", "T-4-5")]


def test_json_escaped_text_never_splits_an_escape() -> None:
    raw = (r'{"to": "a\nbob@x.com", "q": "say \"jane@y.org\"", '
           r'"k": "-----BEGIN PRIVATE KEY-----\nMIIE\nxyz\n-----END PRIVATE KEY-----"}')
    names = found(raw)
    assert names[0] == ("email", "bob@x.com")
    assert names[1] == ("email", "jane@y.org")
    assert names[2] == ("private_key", r"-----BEGIN PRIVATE KEY-----\nMIIE\nxyz\n-----END PRIVATE KEY-----")
    view = detection_view(raw)
    assert len(view) == len(raw) and "\\" not in view


def test_custom_rules_and_detector_subsets() -> None:
    scanner = Scanner(["email"], [("employee_id", re.compile(r"EMP-[0-9]{6}")), ("empty", re.compile(r"q*"))])
    text = "EMP-123456 bob@x.com 4111 1111 1111 1111 AKIAIOSFODNN7EXAMPLE"
    assert found(text, scanner) == [("employee_id", "EMP-123456"), ("email", "bob@x.com")]
    with pytest.raises(ValueError, match="emial"):
        Scanner(["emial"])


def test_validators() -> None:
    assert luhn_valid("4111111111111111") and luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112") and not luhn_valid("79927398710")
    assert iban_valid("GB82WEST12345698765432") and iban_valid("NO9386011117947")
    assert not iban_valid("GB82WEST1234569876543") and not iban_valid("GB00WEST12345698765432")


def test_ipv4_check_agrees_with_ipaddress() -> None:
    octets = ["0", "1", "00", "01", "9", "10", "99", "100", "199", "249", "250", "255", "256", "300", "010", "1000",
              "", "a", "\u0663", " 1", "+1"]
    for a, b in itertools.product(octets, repeat=2):
        for dotted in (f"{a}.{b}.1.1", f"1.{a}.{b}.1", f"{a}.{b}", f"1.1.1.{a}.{b}"):
            try:
                ipaddress.IPv4Address(dotted)
                expected = True
            except ValueError:
                expected = False
            assert ipv4_valid(dotted) == expected, dotted


def test_a_partial_overlap_widens_the_winner_instead_of_leaving_the_rest_visible() -> None:
    text = "sk-sk-sk-sk-sk-sk-sk--" + "-----BEGIN PRIVATE KEY-----\nMIIEvQ\n-----END PRIVATE KEY-----"
    # the key pattern runs into the PEM header; the PEM body must still be covered
    assert found(text) == [("openai_key", text)]
    rules = Scanner([], [("a", re.compile("abc")), ("b", re.compile("cde")), ("c", re.compile("efg"))])
    assert found("xabcdefgx", rules) == [("a", "abcdefg")]


def test_adversarial_inputs_stay_linear() -> None:
    # each of these backtracks badly in a naive pattern; pytest-timeout fails the test if one does here
    text = ("1" * 5000 + " " + "+1 " * 2000 + "@" * 2000 + "a:" * 2000 + "GB82 " * 1000 + "sk-a" * 1000 + " "
            + "1-" * 2000 + "eyJ" + "a" * 3000 + "." * 2000 + "-----BEGIN PRIVATE KEY-----" + "A" * 5000)
    assert [name for _, _, name in ALL.find(text)] == ["private_key"]
