"""Kafka security settings reach both the worker (Faust) and the kafka-python tools."""

from __future__ import annotations

import faust
import pytest
from faust.types.auth import AuthProtocol, SASLMechanism

from streams.credentials import faust_credentials
from streams.settings import Settings


def test_plaintext_unless_asked_even_with_credentials_mounted() -> None:
    for env in ({}, {"SESSIONREC_KAFKA_SASL_USERNAME": "u", "SESSIONREC_KAFKA_CA_FILE": "/ca.crt"}):
        s = Settings.from_env(env)
        assert s.kafka_options() == {"security_protocol": "PLAINTEXT"}
        assert faust_credentials(s) is None


def test_sasl_scram_over_tls_from_the_environment() -> None:
    env = {"SESSIONREC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "SESSIONREC_KAFKA_SASL_USERNAME": "sessionrec",
           "SESSIONREC_KAFKA_SASL_PASSWORD": "s3cret"}
    s = Settings.from_env(env)
    assert s.kafka_options() == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                                 "sasl_plain_username": "sessionrec", "sasl_plain_password": "s3cret"}
    creds = faust_credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol == AuthProtocol.SASL_SSL and creds.ssl_context is not None
    assert creds.mechanism == SASLMechanism.SCRAM_SHA_512
    assert (creds.username, creds.password) == ("sessionrec", "s3cret")
    assert "s3cret" not in repr(s) and "s3cret" not in repr(creds)  # never in logs


def test_explicit_protocols_and_ca_file() -> None:
    tls = Settings.from_env({"SESSIONREC_KAFKA_SECURITY_PROTOCOL": "SSL",
                             "SESSIONREC_KAFKA_CA_FILE": "/etc/kafka/ca.crt"})
    assert tls.kafka_options() == {"security_protocol": "SSL", "ssl_cafile": "/etc/kafka/ca.crt"}
    plain_sasl = Settings.from_env({"SESSIONREC_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
                                    "SESSIONREC_KAFKA_SASL_MECHANISM": "PLAIN",
                                    "SESSIONREC_KAFKA_SASL_USERNAME": "u"})
    creds = faust_credentials(plain_sasl)
    assert isinstance(creds, faust.SASLCredentials) and creds.ssl_context is None
    assert plain_sasl.kafka_options()["security_protocol"] == "SASL_PLAINTEXT"
    assert isinstance(faust_credentials(Settings.from_env({"SESSIONREC_KAFKA_SECURITY_PROTOCOL": "SSL"})),
                      faust.SSLCredentials)


@pytest.mark.parametrize("env", [
    {"SESSIONREC_KAFKA_SECURITY_PROTOCOL": "TLS"},
    {"SESSIONREC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},  # no username
    {"SESSIONREC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "SESSIONREC_KAFKA_SASL_USERNAME": "u",
     "SESSIONREC_KAFKA_SASL_MECHANISM": "MD5"},
])
def test_bad_security_settings_fail_at_start(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        faust_credentials(Settings.from_env(env))
