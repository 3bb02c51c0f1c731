"""Identities: one normalisation for requester, actor and the trusted header (deployapi/identities.py)."""

from __future__ import annotations

import unicodedata

import pytest
from builders import START

from deployapi import identities, lifecycle
from deployapi.identities import IdentityRefused
from deployapi.lifecycle import SelfApproval, ValidationFailed

ALICE = "alice@example.com"


@pytest.mark.parametrize("text", [
    pytest.param("alice\u200b@example.com", id="zero-width space"),
    pytest.param("al\u00adice@example.com", id="soft hyphen"),
    pytest.param("\ufeffalice@example.com", id="byte order mark U+FEFF"),
    pytest.param("alice\u2060@example.com", id="word joiner"),
    pytest.param("\u202emoc.elpmaxe@ecila", id="right-to-left override U+202E"),
    pytest.param("alice\u2066@example.com\u2069", id="bidi isolates"),
    pytest.param("alice\u200d@example.com", id="zero-width joiner"),
    pytest.param("alice\u034f@example.com", id="combining grapheme joiner (default ignorable, Mn)"),
    pytest.param("alice\ufe0f@example.com", id="variation selector"),
    pytest.param("alice\u3164@example.com", id="Hangul filler"),
    pytest.param("alice\U000e0041@example.com", id="tag character"),
    pytest.param("alice\u2028@example.com", id="line separator"),
    pytest.param("alice\u1680smith", id="ogham space mark (a space NFKC keeps)"),
    pytest.param("al\x07ice", id="control character"),
])
def test_identities_with_invisible_or_formatting_characters_are_refused(text):
    with pytest.raises(ValidationFailed) as caught:
        lifecycle.validate_action("approve", {"actor": text})
    assert [p.field for p in caught.value.problems] == ["actor"]
    with pytest.raises(IdentityRefused):
        lifecycle.trusted_identity(text)


@pytest.mark.parametrize("text", [
    pytest.param("ａｌｉｃｅ@ｅｘａｍｐｌｅ.ｃｏｍ", id="fullwidth letters"),
    pytest.param("𝐚𝐥𝐢𝐜𝐞@𝐞𝐱𝐚𝐦𝐩𝐥𝐞.𝐜𝐨𝐦", id="mathematical bold letters"),
    pytest.param("𝒶𝓁𝒾𝒸𝑒@example.com", id="mathematical script letters"),
    pytest.param("ALICE@EXAMPLE.COM", id="upper case"),
    pytest.param("  alice@example.com\u00a0", id="padded with spaces and a no-break space"),
    pytest.param("alice@example.com.", id="a trailing dot (the fully-qualified domain)"),
])
def test_spellings_that_look_like_alice_are_alice(text):
    with pytest.raises(SelfApproval):
        approve_as(text, requested_by=ALICE)


def test_compatibility_forms_are_stored_as_the_characters_they_stand_for():
    assert identities.canonical("ａｌｉｃｅ") == "alice"
    assert identities.canonical(" ﬁona ") == "fiona"
    assert identities.canonical("Alice\u00a0Smith") == "Alice Smith"


def test_a_decomposed_accent_is_the_same_person_as_the_composed_one_and_is_stored_composed():
    decomposed = "jose\u0301@example.com"
    assert identities.canonical(decomposed) == "jos\u00e9@example.com"
    assert identities.same_person(identities.canonical(decomposed), "JOSÉ@example.com")


@pytest.mark.parametrize("a, b", [
    pytest.param("jose@example.com", "josé@example.com", id="an accent makes another letter"),
    pytest.param("alice@example.com", "аlice@example.com", id="Cyrillic а is another letter (a confusable)"),
    pytest.param("alice", "alice2", id="another name"),
])
def test_different_letters_are_different_people(a, b):
    assert not identities.same_person(identities.canonical(a), identities.canonical(b))


def test_names_from_every_script_are_accepted_as_they_are():
    for name in ("Łukasz", "josé", "Zoë", "山田太郎", "Ἀλέξανδρος", "अनुष्का", "محمد", "🚀 release bot"):
        assert identities.canonical(name) == unicodedata.normalize("NFKC", name)


def test_the_length_limit_applies_to_the_normalised_name():
    assert identities.canonical("x" * 128) == "x" * 128
    with pytest.raises(IdentityRefused, match="at most 128"):
        identities.canonical("\ufdfa" * 8)  # one character that NFKC spells in 18


def test_the_refusal_names_the_character():
    with pytest.raises(IdentityRefused, match="U\\+200B ZERO WIDTH SPACE"):
        identities.canonical("alice\u200b")


@pytest.mark.parametrize("requester", ["ａｌｉｃｅ@example.com", "Alice@Example.com.", "alice@example.com"])
def test_a_requester_spelled_oddly_cannot_approve_either(requester):
    with pytest.raises(SelfApproval):
        approve_as("𝐚𝐥𝐢𝐜𝐞@example.com", requested_by=requester)


def test_someone_else_may_approve():
    approved = approve_as("bob@example.com", requested_by=ALICE)
    assert approved.reviewed_by == "bob@example.com"


def test_a_trusted_identity_follows_the_same_rules():
    assert lifecycle.trusted_identity(" ａｌｉｃｅ ") == "alice"
    for value in (None, "", "   ", "alice\u202e"):
        with pytest.raises(IdentityRefused):
            lifecycle.trusted_identity(value)


def approve_as(actor: str, *, requested_by: str) -> lifecycle.Deployment:
    """Create a deployment requested by ``requested_by`` and approve it as ``actor``, through the rules."""
    new = lifecycle.validate_new_deployment({
        "service": "billing", "environment": "staging", "version": "1.0", "requester": requested_by,
        "work_refs": ["JIRA-1"], "rollback_plan": "redeploy"})
    deployment, _ = lifecycle.new_deployment("d1", new, START)
    approve = lifecycle.validate_action("approve", {"actor": actor})
    return lifecycle.apply_action(deployment, approve, 2, START)[0]
