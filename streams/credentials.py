"""Kafka credentials for the worker (Faust) from the settings; kafka-python clients take
``Settings.kafka_options()`` directly. In Kubernetes the values come from a Secret."""

from __future__ import annotations

import ssl

import faust
from faust.types.auth import CredentialsT

from streams.settings import Settings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """None for PLAINTEXT; SSL or SASL credentials otherwise (TLS verified against the CA
    file when one is given, else the system's CAs)."""
    proto = settings.security_protocol
    if proto not in PROTOCOLS:
        raise ValueError(f"SESSIONREC_KAFKA_SECURITY_PROTOCOL={proto!r}: expected one of {PROTOCOLS}")
    if proto == "PLAINTEXT":
        return None
    ctx = ssl.create_default_context(cafile=settings.kafka_ca_file or None) if proto.endswith("SSL") else None
    if proto.startswith("SASL"):
        if not settings.kafka_sasl_username:
            raise ValueError(f"{proto} needs SESSIONREC_KAFKA_SASL_USERNAME")
        return faust.SASLCredentials(username=settings.kafka_sasl_username,
                                     password=settings.kafka_sasl_password,
                                     ssl_context=ctx, mechanism=settings.kafka_sasl_mechanism)
    assert ctx is not None
    return faust.SSLCredentials(ctx)
