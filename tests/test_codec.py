"""The click decoder: every bad payload gets a precise reason, every good one is accepted."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.session import Click
from streams.codec import REASONS, Limits, Rejection, decode_click, derived_event_id

NOW = 1.75e9
LIM = Limits(max_payload_bytes=4096, max_id_len=64, future_tolerance_s=300.0)


def dec(obj: object, key: bytes | None = b"v1") -> Click | Rejection:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return decode_click(raw, key, NOW, LIM)


def reason(obj: object, key: bytes | None = b"v1") -> str:
    r = dec(obj, key)
    assert isinstance(r, Rejection), r
    return r.reason


GOOD = {"visitor_id": "v1", "item_id": "i9", "ts": NOW - 10}


def test_good_click_with_number_and_iso_times() -> None:
    c = dec(GOOD)
    assert c == Click("v1", "i9", NOW - 10, "")
    c = dec({**GOOD, "ts": "2025-06-15T10:00:00+02:00", "event_id": "e1", "extra": [1, 2]})
    assert isinstance(c, Click) and c.event_id == "e1" and c.ts == 1749974400.0
    assert isinstance(dec({**GOOD, "ts": "2025-06-15T08:00:00Z"}), Click)


def test_each_defect_has_its_reason() -> None:
    assert decode_click(b"", b"v1", NOW, LIM).reason == "empty_payload"  # type: ignore[union-attr]
    assert decode_click(None, b"v1", NOW, LIM).reason == "empty_payload"  # type: ignore[union-attr]
    big = json.dumps({**GOOD, "pad": "x" * 5000}).encode()
    assert reason(big) == "payload_too_large"
    assert reason(b'{"visitor_id": "v1",') == "invalid_json"
    assert reason(b"\xff\xfe{}") == "invalid_json"
    assert reason([1, 2]) == "not_an_object"
    assert reason({"item_id": "i", "ts": NOW}) == "missing_field"
    assert reason({**GOOD, "ts": None}) == "missing_field"
    assert reason({**GOOD, "item_id": 5}) == "wrong_type"
    assert reason({**GOOD, "ts": True}) == "wrong_type"
    assert reason({**GOOD, "ts": [NOW]}) == "wrong_type"
    assert reason({**GOOD, "event_id": 7}) == "wrong_type"
    assert reason({**GOOD, "item_id": ""}) == "invalid_id"
    assert reason({**GOOD, "item_id": "   "}) == "invalid_id"
    assert reason({**GOOD, "item_id": "x" * 65}) == "invalid_id"
    assert reason(GOOD, key=b"someone-else") == "key_mismatch"
    assert reason(GOOD, key=None) == "key_mismatch"
    assert reason({**GOOD, "ts": "yesterday"}) == "invalid_timestamp"
    assert reason({**GOOD, "ts": "2025-06-15T10:00:00"}) == "invalid_timestamp"
    assert reason(b'{"visitor_id":"v1","item_id":"i","ts":1e999}') in ("invalid_timestamp",
                                                                        "invalid_json")
    assert reason({**GOOD, "ts": 12.0}) == "timestamp_too_old"
    assert reason({**GOOD, "ts": "1999-12-31T23:59:59Z"}) == "timestamp_too_old"
    assert reason({**GOOD, "ts": NOW + 301}) == "timestamp_in_future"
    assert isinstance(dec({**GOOD, "ts": NOW + 299}), Click)


def test_derived_event_ids_are_stable_and_distinct() -> None:
    assert derived_event_id("clicks", 1, 5) == derived_event_id("clicks", 1, 5)
    assert derived_event_id("clicks", 1, 5) != derived_event_id("clicks", 1, 6)
    assert derived_event_id("clicks", 1, 5) != derived_event_id("clicks", 2, 5)


# -- fuzzing -------------------------------------------------------------------------------
ids = st.text(min_size=1, max_size=64).filter(lambda s: s.strip() != "")
good_clicks = st.fixed_dictionaries(
    {"visitor_id": ids, "item_id": ids, "ts": st.floats(946684800.0, NOW + 299.0)},
    optional={"event_id": ids, "other": st.integers()},
)


@settings(max_examples=2000, deadline=None)
@given(good_clicks)
def test_fuzz_every_good_click_is_accepted(obj: dict[str, Any]) -> None:
    raw = json.dumps(obj).encode("utf-8", "surrogatepass")
    if len(raw) > LIM.max_payload_bytes:
        return
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return  # lone surrogates are not valid UTF-8 JSON; covered by the mutation fuzz
    c = decode_click(raw, obj["visitor_id"].encode(), NOW, LIM)
    assert isinstance(c, Click), c
    assert (c.visitor_id, c.item_id, c.ts) == (obj["visitor_id"], obj["item_id"], obj["ts"])


def _mutate(rng: random.Random, raw: bytes) -> bytes:
    b = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        pos = rng.randrange(len(b) + 1)
        if op < 0.3 and b:
            del b[min(pos, len(b) - 1)]
        elif op < 0.6:
            b.insert(pos, rng.randrange(256))
        elif b:
            b[min(pos, len(b) - 1)] = rng.randrange(256)
    return bytes(b)


def _oracle(raw: bytes, key: bytes) -> bool:
    """Independent check, with the standard library, of whether ``raw`` is a valid click."""
    if not raw or len(raw) > LIM.max_payload_bytes:
        return False
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=lambda _: None)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    if not isinstance(obj, dict):
        return False
    for name in ("visitor_id", "item_id"):
        v = obj.get(name)
        if not isinstance(v, str) or not v.strip() or len(v) > LIM.max_id_len:
            return False
    e = obj.get("event_id")
    if e is not None and (not isinstance(e, str) or not e.strip() or len(e) > LIM.max_id_len):
        return False
    ts = obj.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        return False  # the mutations never produce a valid ISO string from a number
    if not (946684800.0 <= ts <= NOW + LIM.future_tolerance_s):
        return False
    return key == obj["visitor_id"].encode("utf-8")


def test_mutation_fuzz_20000_payloads_never_escape() -> None:
    rng = random.Random(1234)
    accepted = rejected = 0
    seeds = [
        json.dumps({"visitor_id": f"v{i}", "item_id": f"item-{i * 7}", "ts": NOW - i,
                    **({"event_id": f"e{i}"} if i % 2 else {})}).encode()
        for i in range(50)
    ]
    for n in range(20_000):
        base = seeds[n % len(seeds)]
        raw = base if n % 10 == 0 else _mutate(rng, base)
        key = json.loads(base)["visitor_id"].encode()
        out = decode_click(raw, key, NOW, LIM)  # must not raise
        if isinstance(out, Rejection):
            assert out.reason in REASONS and out.detail
            rejected += 1
            assert not _oracle(raw, key), (raw, out)
        else:
            accepted += 1
            assert _oracle(raw, key), raw
    assert accepted >= 2000 and rejected >= 5000


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300), st.one_of(st.none(), st.binary(max_size=10)))
def test_random_bytes_never_raise(raw: bytes, key: bytes | None) -> None:
    out = decode_click(raw, key, NOW, LIM)
    assert isinstance(out, Click | Rejection)
    if isinstance(out, Rejection):
        assert out.reason in REASONS


def test_a_model_delta_survives_the_wire_and_bad_ones_say_why() -> None:
    from models.item2vec import VectorDelta
    from streams.codec import decode_delta, encode_delta

    rng = np.random.default_rng(0)
    delta = VectorDelta(["a", "é", "x" * 200], rng.standard_normal((3, 4), dtype=np.float32),
                        rng.standard_normal((3, 4), dtype=np.float32), np.array([1, 0, 2], np.float32))
    raw = encode_delta("w1", 7, delta)
    msg = decode_delta(raw, 4)
    assert (msg.worker, msg.seq, msg.delta.ids) == ("w1", 7, delta.ids)
    for got, want in ((msg.delta.d_in, delta.d_in), (msg.delta.d_out, delta.d_out),
                      (msg.delta.d_counts, delta.d_counts)):
        np.testing.assert_array_equal(got, want)
    bad = {
        b"": "empty", b"{}": "header line", b"nope\n": "not JSON", raw.replace(b'"v":1', b'"v":9'): "format",
        raw[:-4]: "bytes", raw.replace(b'"seq":7', b'"seq":"7"'): "seq",
    }
    for value, why in bad.items():
        with pytest.raises(ValueError, match=why):
            decode_delta(value, 4)
    with pytest.raises(ValueError, match="dim"):
        decode_delta(raw, 8)


def test_kafka_python_checks_record_crcs_in_compiled_code() -> None:
    """Every worker reads every model delta through kafka-python, which checks each record
    batch's CRC-32C. Its pure-Python fallback ran at ~2 MB/s and took half a worker's CPU
    (py-spy, bench e2e); the compiled ``crc32c`` package must be the one in use, and agree."""
    from kafka.record import util
    from kafka.record._crc32c import crc as pure_python_crc

    assert util.crc32c_c is not None, "pip install crc32c (a pinned dependency)"
    data = memoryview(np.random.default_rng(0).bytes(4096))
    assert util.calc_crc32c(data) == pure_python_crc(data)
