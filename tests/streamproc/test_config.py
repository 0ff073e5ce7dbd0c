"""Settings: the Faust fetch wait follows the broker unless set."""

from streamproc.config import Settings


def test_the_faust_fetch_wait_is_short_on_the_embedded_broker_and_fausts_own_on_kafka():
    assert Settings(broker_flavour="tansu").effective_faust_fetch_wait_ms() == 10
    assert Settings(broker_flavour="kafka").effective_faust_fetch_wait_ms() == 1_500
    assert Settings(broker_flavour="tansu", faust_fetch_wait_ms=250).effective_faust_fetch_wait_ms() == 250


def test_the_fetch_wait_reaches_a_child_process_through_the_environment(monkeypatch):
    from streamproc.demo import settings_env

    env = settings_env(Settings(broker_flavour="tansu", faust_fetch_wait_ms=40))
    assert env["STREAMPROC_FAUST_FETCH_WAIT_MS"] == "40"
    for name, value in env.items():
        if name.startswith("STREAMPROC_"):
            monkeypatch.setenv(name, value)
    assert Settings().effective_faust_fetch_wait_ms() == 40
