"""Deployment ids: ULID's layout in lowercase Crockford base32."""

from datetime import datetime, timedelta, timezone
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployapi import ids

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
MOMENT = datetime(2026, 11, 26, 16, 30, 15, 123456, tzinfo=timezone.utc)


def decode(deployment_id: str) -> int:
    """The 128-bit value behind an id, read one character (5 bits) at a time."""
    value = 0
    for char in deployment_id:
        value = value * 32 + ALPHABET.index(char)
    return value


@given(random_bits=st.integers(min_value=0, max_value=(1 << 80) - 1))
def test_an_id_is_the_milliseconds_then_the_random_bits(random_bits):
    deployment_id = id_with_random_bits(random_bits)
    assert len(deployment_id) == 26
    assert set(deployment_id) <= set(ALPHABET)
    value = decode(deployment_id)
    assert value >> 80 == int(MOMENT.timestamp() * 1000)
    assert value & ((1 << 80) - 1) == random_bits


@pytest.mark.parametrize("random_bits", [0, (1 << 80) - 1])
def test_the_extremes_of_the_random_part_keep_26_characters(random_bits):
    deployment_id = id_with_random_bits(random_bits)
    assert len(deployment_id) == 26
    assert decode(deployment_id) & ((1 << 80) - 1) == random_bits


def test_later_ids_sort_after_earlier_ones():
    earlier = ids.new_deployment_id(MOMENT)
    later = ids.new_deployment_id(MOMENT + timedelta(milliseconds=1))
    assert earlier < later


def test_ids_made_at_the_same_moment_differ():
    assert len({ids.new_deployment_id(MOMENT) for _ in range(1000)}) == 1000


def id_with_random_bits(bits: int) -> str:
    with mock.patch.object(ids.secrets, "randbits", return_value=bits):
        return ids.new_deployment_id(MOMENT)
