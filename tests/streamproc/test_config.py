"""Settings: they reach child processes through the environment; the connection's security options."""

import pytest

from streamproc.config import Settings


def test_the_fetch_wait_reaches_a_child_process_through_the_environment(monkeypatch):
    from streamproc.demo.processes import settings_env

    assert Settings().faust_fetch_wait_ms == 100  # not Faust's 1,500 ms (docs/configuration.md)
    env = settings_env(Settings(faust_fetch_wait_ms=40))
    assert env["STREAMPROC_FAUST_FETCH_WAIT_MS"] == "40"
    for name, value in env.items():
        if name.startswith("STREAMPROC_"):
            monkeypatch.setenv(name, value)
    assert Settings().faust_fetch_wait_ms == 40


def test_plaintext_adds_no_security_options() -> None:
    assert Settings().kafka_security() == {}
    assert "security.protocol" not in Settings().kafka_common()


def test_tls_and_sasl_options_reach_librdkafka_and_faust_alike(tmp_path) -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from streamproc.demo.processes import settings_env
    from streamproc.stages.app import broker_credentials

    ca = tmp_path / "ca.pem"
    tls = Settings(security_protocol="SSL", ssl_ca_location=ca)
    assert tls.kafka_security() == {"security.protocol": "SSL", "ssl.ca.location": str(ca)}
    assert (
        credentials_to_aiokafka_auth(broker_credentials(Settings(security_protocol="SSL")))[
            "security_protocol"
        ]
        == "SSL"
    )

    sasl = Settings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="scorer",
        sasl_password="s3cret",
    )
    assert {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "scorer",
        "sasl.password": "s3cret",
    }.items() <= sasl.kafka_common().items()
    faust_auth = credentials_to_aiokafka_auth(broker_credentials(sasl))
    assert {
        k: faust_auth[k]
        for k in ("security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password")
    } == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "scorer",
        "sasl_plain_password": "s3cret",
    }
    assert faust_auth["ssl_context"] is not None
    plain_sasl = credentials_to_aiokafka_auth(
        broker_credentials(Settings(security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password="p"))
    )
    assert plain_sasl["security_protocol"] == "SASL_PLAINTEXT" and plain_sasl["ssl_context"] is None

    # the password is hidden when settings are printed, and still reaches the child processes
    assert "s3cret" not in repr(sasl) and "s3cret" not in str(sasl.model_dump())
    assert settings_env(sasl)["STREAMPROC_SASL_PASSWORD"] == "s3cret"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"security_protocol": "SASL_SSL", "sasl_username": "u"}, "needs sasl_username and sasl_password"),
        ({"security_protocol": "SSL", "ssl_certificate_location": "c.pem"}, "go together"),
        (
            {"ssl_certificate_location": "c.pem", "ssl_key_location": "k.pem"},
            "a client certificate needs TLS",
        ),
    ],
)
def test_incomplete_security_settings_are_refused_with_the_reason(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**fields)


def test_every_setting_is_documented() -> None:
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    # a row names the variable whole (`STREAMPROC_NAME`) or, after another on the same row, as `_NAME`
    named = {
        name
        for name in Settings.model_fields
        if f"`STREAMPROC_{name.upper()}`" in page or f"`_{name.upper()}`" in page
    }
    assert set(Settings.model_fields) - named == set()


def test_the_faust_commit_interval_follows_the_guarantee_unless_set() -> None:
    assert Settings().worker_commit_interval_ms() == 100  # each stage's outputs are visible at its commits
    assert Settings(processing_guarantee="at_least_once").worker_commit_interval_ms() == 1_000
    assert Settings(commit_interval_ms=250).worker_commit_interval_ms() == 250
    relaxed = Settings().with_overrides(processing_guarantee="at_least_once")
    assert relaxed.worker_commit_interval_ms() == 1_000  # a copy re-derives it
