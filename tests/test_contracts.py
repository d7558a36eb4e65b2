"""The JSON Schemas in streams/schemas describe what the code reads and writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from models.session import Closed, Session
from streams.codec import (
    REASONS,
    Limits,
    decode_click,
    dlq_headers,
    encode_recommendation,
    encode_session,
)
from streams.settings import Settings

SCHEMAS = Path(__file__).resolve().parent.parent / "streams" / "schemas"


def schema(name: str) -> Draft202012Validator:
    s = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    Draft202012Validator.check_schema(s)
    return Draft202012Validator(s, format_checker=Draft202012Validator.FORMAT_CHECKER)


def test_dlq_reasons_in_schema_are_exactly_the_code_reasons() -> None:
    s = json.loads((SCHEMAS / "clicks-dlq.schema.json").read_text())
    assert s["properties"]["sessionrec.reason"]["enum"] == list(REASONS)


@pytest.mark.parametrize("payload", [
    {"visitor_id": "v", "item_id": "i", "ts": 1.7e9},
    {"visitor_id": "v", "item_id": "i", "ts": "2024-01-01T00:00:00Z", "event_id": "e", "x": 1},
])
def test_valid_clicks_match_the_schema_and_the_decoder(payload: dict[str, Any]) -> None:
    schema("clicks").validate(payload)
    out = decode_click(json.dumps(payload).encode(), b"v", 1.75e9, Limits())
    assert not hasattr(out, "reason"), out


def test_outputs_match_their_schemas() -> None:
    schema("recommendations").validate(json.loads(encode_recommendation(
        "v", "v@1", "e1", [("a", 0.5), ("b", 0.25)], "model", 3, 1.7e9)))
    sess = Session("v@1000", 1.0, 5.0, ["a", "b"], [1.0, 5.0], 2)
    schema("sessions").validate(json.loads(encode_session(Closed("v", sess, "idle"))))
    headers = dlq_headers("late", "too old", "clicks", 2, 17)
    schema("clicks-dlq").validate({k: v.decode() for k, v in headers})


def test_settings_come_from_the_environment() -> None:
    s = Settings.from_env({"SESSIONREC_SESSION_GAP_S": "60", "SESSIONREC_EXCLUDE_SEEN": "yes",
                           "SESSIONREC_K": "7", "SESSIONREC_BROKER": "kafka://h:1"})
    assert (s.session_gap_s, s.exclude_seen, s.k, s.broker_address) == (60.0, True, 7, "h:1")
    assert s.session_config().gap_s == 60.0
    assert s.recommender_config().exclude_seen is True
    with pytest.raises(ValueError, match="SESSIONREC_DIM"):
        Settings.from_env({"SESSIONREC_DIM": "big"})


def test_readme_documents_every_setting() -> None:
    from dataclasses import fields

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing = [f"SESSIONREC_{f.name.upper()}" for f in fields(Settings)
               if f"`SESSIONREC_{f.name.upper()}`" not in readme]
    assert not missing, missing
