"""Parsing names the first wrong field as a dotted path, with a reason a person reads, and never
raises anything but FormatError (the verifier turns it into exit 2 naming that field)."""

from __future__ import annotations

from typing import Any

import pytest

from aicert.certificate import (
    DigestSet,
    Evidence,
    FormatError,
    LogEntry,
    NetworkRecord,
    QuoteRecord,
    convert,
)

HEX = "ab" * 32
QUOTE = {"attest": "AAAA", "signature": "AAAA", "pcrs": {"23": HEX}}


def problem(data: Any, model: type[Any], prefix: str = "") -> tuple[str, str]:
    with pytest.raises(FormatError) as err:
        convert(data, model, prefix=prefix)
    return err.value.field, err.value.reason


def test_a_well_formed_part_parses() -> None:
    assert convert(QUOTE, QuoteRecord).pcrs == {"23": HEX}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({**QUOTE, "attest": "AAA"}, ("q.attest", "must be valid base64")),
        ({**QUOTE, "attest": "AAAA\n"}, ("q.attest", "must be valid base64")),
        ({**QUOTE, "pcrs": {"23": HEX + "\n"}}, ("q.pcrs[...]", "must be 64 lowercase hexadecimal digits")),
        (
            {**QUOTE, "pcrs": {"24": HEX}},
            ("q.pcrs", "a key: must be a PCR index, a decimal number from 0 to 23"),
        ),
        (
            {**QUOTE, "pcrs": {"07": HEX}},
            ("q.pcrs", "a key: must be a PCR index, a decimal number from 0 to 23"),
        ),
        ({"attest": "AAAA", "pcrs": {}}, ("q.signature", "is required")),
        ({**QUOTE, "extra": 1}, ("q.extra", "is not a field of this format")),
        ({**QUOTE, "attest": 1}, ("q.attest", "expected `str`, got `int`")),
    ],
)
def test_each_wrong_field_is_named(data: dict[str, Any], expected: tuple[str, str]) -> None:
    assert problem(data, QuoteRecord, prefix="q.") == expected


def test_a_boolean_is_not_a_number() -> None:
    entry = {"seq": True, "digest": HEX, "type": "aicert.run"}
    assert problem(entry, LogEntry) == ("seq", "expected `int`, got `bool`")


def test_a_rule_across_fields_names_its_field() -> None:
    evidence = {
        "type": "tpm2-quote",
        "pcrBank": "sha256",
        "pcr": 8,
        "assurance": "dev",
        "quote": QUOTE,
        "eventLog": [{"seq": 0, "digest": HEX, "type": "aicert.run"}],
        "ak": {"public": "-----BEGIN PUBLIC KEY-----", "certificateChain": ["-----BEGIN CERTIFICATE-----"]},
    }
    assert convert({**evidence, "pcr": 23}, Evidence).pcr == 23
    field, reason = problem(evidence, Evidence, prefix="evidence.")
    assert field == "evidence.pcr" and reason.startswith("PCR 8 and 14 are extended by firmware")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"egress": "\ud800", "policies": []}, "egress"),  # an enumeration value
        ({"egress": "none", "policies": [], "\ud800": 1}, "\\ud800"),  # a field name, shown escaped
    ],
)
def test_a_lone_surrogate_is_a_format_error(data: dict[str, Any], field: str) -> None:
    """Found by the property tests: msgspec encodes names and enumeration values to compare them,
    and a lone surrogate raised UnicodeEncodeError out of parsing."""
    assert problem(data, NetworkRecord, prefix="net.") == (
        f"net.{field}",
        "is not valid Unicode (a lone surrogate)",
    )


def test_a_digest_set_takes_only_sha256() -> None:
    assert problem({"sha256": HEX, "sha512": HEX}, DigestSet) == ("sha512", "is not a field of this format")
