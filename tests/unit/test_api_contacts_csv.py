"""services/api/contacts_csv.py: CSV contact lists, validated row by row."""

from __future__ import annotations

import pytest

from services.api.contacts_csv import CsvError, parse_contacts


def test_good_rows_are_kept_normalised_and_bad_ones_reported_with_their_line() -> None:
    # Given a file with a header, good rows and bad ones
    data = (
        b"Recipient,first_name,code\n"
        b"+44 7911 123456,Ada,1\n"
        b"not-a-number,Bob,2\n"
        b"+447911123456,Ada again,3\n"
        b"+15551234567,Cy\n"
        b"\n"
        b"0033612345678,Dee,4\n"
    )
    # When it is parsed for SMS
    parsed = parse_contacts(data, "sms", max_contacts=100)
    # Then the good rows are there, normalised, with their variables
    assert parsed.columns == ["first_name", "code"]
    assert [(c.row, c.recipient, c.variables) for c in parsed.contacts] == [
        (2, "+447911123456", {"first_name": "Ada", "code": "1"}),
        (7, "+33612345678", {"first_name": "Dee", "code": "4"}),
    ]
    # ... and each bad one is reported with its line number and why
    reasons = {r.row: r.reason for r in parsed.rejected}
    assert set(reasons) == {3, 4, 5}
    assert "E.164" in reasons[3]
    assert "duplicate" in reasons[4] and "row 2" in reasons[4]
    assert "expected 3 cells" in reasons[5]


def test_emails_and_a_utf8_bom() -> None:
    parsed = parse_contacts("\ufeffrecipient\nA.B@Example.COM\n".encode(), "email", 10)
    assert [c.recipient for c in parsed.contacts] == ["A.B@example.com"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"phone,name\n+15551234567,x\n", "recipient"),
        (b"recipient,bad-name\n", "column name"),
        (b"recipient,a,a\n", "unique"),
        (b"recipient\n\xff\xfe\n", "UTF-8"),
        (b"recipient\n+1555\x00\n", "NUL"),
    ],
)
def test_unusable_files_are_refused_as_a_whole(data: bytes, message: str) -> None:
    with pytest.raises(CsvError, match=message):
        parse_contacts(data, "sms", 10)


def test_the_number_of_contacts_is_bounded() -> None:
    data = "recipient\n" + "".join(f"+1555000{i:04d}\n" for i in range(11))
    with pytest.raises(CsvError, match="more than 10"):
        parse_contacts(data.encode(), "sms", 10)
