"""The fast properties codec writes the bytes pamqp writes and reads what pamqp reads (pure logic)."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp.header import ContentHeader

from amphora.amqp import Properties
from amphora.amqp.properties import decode_properties, encode_properties

pytestmark = pytest.mark.timeout(60)

short_strings = st.text(max_size=40).filter(lambda text: len(text.encode()) <= 255)
table_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=30)
    | st.floats(width=32, allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(min_size=1, max_size=10), inner, max_size=3),
    max_leaves=8,
)
properties = st.builds(
    Properties,
    content_type=st.none() | short_strings,
    content_encoding=st.none() | short_strings,
    headers=st.none() | st.dictionaries(st.text(min_size=1, max_size=20), table_values, max_size=6),
    delivery_mode=st.none() | st.sampled_from([1, 2]),
    priority=st.none() | st.integers(0, 255),
    correlation_id=st.none() | short_strings,
    reply_to=st.none() | short_strings,
    expiration=st.none() | short_strings,
    message_id=st.none() | short_strings,
    timestamp=st.none()
    | st.datetimes(
        min_value=datetime.datetime(1970, 1, 2),
        max_value=datetime.datetime(2100, 1, 1),
        timezones=st.just(datetime.UTC),
    ).map(lambda moment: moment.replace(microsecond=0)),
    message_type=st.none() | short_strings,
    user_id=st.none() | short_strings,
    app_id=st.none() | short_strings,
)


@settings(max_examples=300, deadline=None)
@given(properties)
def test_encoding_matches_pamqp_and_decodes_back(value):
    encoded = encode_properties(value)
    assert encoded == value.marshal()
    header = ContentHeader()
    header.unmarshal(ContentHeader(0, 0, value).marshal())
    assert decode_properties(encoded) == header.properties
