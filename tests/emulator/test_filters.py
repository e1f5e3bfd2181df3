"""The emulator's reading of `$filter` and `$skiptoken`."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.emulator.filters import (
    FilterError,
    decode_skiptoken,
    encode_skiptoken,
    parse_filter,
    parse_time,
)


class TestTimes:
    @pytest.mark.parametrize(
        ("text", "hour"),
        [
            ("2026-11-25 12:00:00 AM", 0),
            ("2026-11-25 00:00:00 AM", 0),
            ("2026-11-25 01:38:04 PM", 13),
            ("2026-11-25 12:30:00 PM", 12),
            ("2026-11-25 11:59:59 pm", 23),
        ],
    )
    def test_twelve_hour_forms(self, text: str, hour: int) -> None:
        """Both midnight spellings and PM hours read as UTC."""
        assert parse_time(text).hour == hour
        assert parse_time(text).tzinfo is UTC

    @pytest.mark.parametrize(
        "text",
        ["2026-11-25T10:00:00Z", "2026-11-25 13:00:00 PM", "2026-02-30 01:00:00 AM", "yesterday"],
    )
    def test_other_forms_are_refused(self, text: str) -> None:
        """ISO 8601, 24-hour values and impossible dates are input errors."""
        with pytest.raises(FilterError):
            parse_time(text)

    @given(st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2099, 1, 1)))  # noqa: DTZ001 - hypothesis bounds are naive
    def test_strftime_round_trip(self, dt: datetime) -> None:
        """What the Azure CLI sends (`%Y-%m-%d %I:%M:%S %p`) reads back to the same second."""
        dt = dt.replace(microsecond=0, tzinfo=UTC)
        assert parse_time(dt.strftime("%Y-%m-%d %I:%M:%S %p")) == dt


class TestFilter:
    def test_all_supported_clauses(self) -> None:
        """The spec example with every supported clause parses."""
        query = parse_filter(
            "startTime eq '2016-01-01 00:00:00 AM' and endTime eq '2017-11-29 00:00:00 AM' "
            "and operation eq 'Backup' and backupManagementType eq 'AzureIaasVM' "
            "and status eq 'InProgress'"
        )
        assert query.start_at == datetime(2016, 1, 1, tzinfo=UTC)
        assert query.end_at == datetime(2017, 11, 29, tzinfo=UTC)
        assert (query.operation, query.backup_management_type, query.status) == (
            "backup",
            "azureiaasvm",
            "inprogress",
        )

    def test_empty_means_everything(self) -> None:
        """No filter, no condition."""
        assert parse_filter(None) == parse_filter("  ")

    @pytest.mark.parametrize(
        "text",
        [
            "startTime gt '2016-01-01 00:00:00 AM'",
            "color eq 'blue'",
            "status eq 'Failed' or status eq 'Completed'",
            "startTime eq '2017-01-01 00:00:00 AM' and endTime eq '2016-01-01 00:00:00 AM'",
            "status eq Failed",
        ],
    )
    def test_bad_filters(self, text: str) -> None:
        """Operators other than eq, unknown properties, `or`, reversed windows are refused."""
        with pytest.raises(FilterError):
            parse_filter(text)


class TestSkiptoken:
    @given(st.integers(min_value=0, max_value=10**12), st.text(min_size=1, max_size=30))
    def test_round_trip_plain_and_encoded(self, ordinal: int, vault: str) -> None:
        """A token reads back as sent, and also when a client percent-encoded it once more."""
        token = encode_skiptoken(vault, ordinal)
        assert decode_skiptoken(token) == ordinal
        assert decode_skiptoken(quote(token, safe="")) == ordinal

    def test_foreign_tokens_are_refused(self) -> None:
        """A token that is not ours is an input error; none means the first page."""
        assert decode_skiptoken(None) is None
        with pytest.raises(FilterError):
            decode_skiptoken("garbage")
