"""Every patch of a third-party internal installs once, only on the versions it was written for, and
fails loudly when what it replaces is gone."""

from __future__ import annotations

import pytest

from streamproc.compat import patching
from streamproc.config import Settings


class Target:
    def greet(self) -> str:
        return "hello"


def test_a_method_is_replaced_once_per_process_and_keeps_its_original() -> None:
    class Fresh(Target):
        pass

    wrap = lambda original: lambda self: original(self) + "!"  # noqa: E731
    assert patching.replace_method(Fresh, "greet", wrap, "test") is True
    assert patching.replace_method(Fresh, "greet", wrap, "test") is False  # a second install changes nothing
    assert Fresh().greet() == "hello!"
    assert Target().greet() == "hello"  # the marker of a subclass does not leak to its base, nor the patch


def test_a_missing_method_stops_the_patch_with_its_name() -> None:
    with pytest.raises(RuntimeError, match=r"has no vanished: the-patch cannot install"):
        patching.replace_method(Target, "vanished", lambda original: original, "the-patch")


def test_an_unsupported_version_stops_the_patches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(patching, "version", lambda distribution: "0.16.0")
    with pytest.raises(RuntimeError, match=r"faust-streaming 0.16.0 is installed.*0\.15\.x"):
        patching.check_supported("faust-streaming")


def test_the_installed_faust_and_aiokafka_are_the_supported_ones_and_every_patch_is_in_place() -> None:
    from faust.transport import consumer as faust_consumer
    from faust.transport.drivers import aiokafka as faust_aiokafka

    from streamproc.compat import install_faust_patches

    install_faust_patches(Settings(faust_fetch_wait_ms=123))
    install_faust_patches(Settings(faust_fetch_wait_ms=123))  # twice: still one layer of each patch
    for cls, name in (
        (faust_consumer.Consumer, "perform_seek"),
        (faust_consumer.Consumer, "getmany"),
        (faust_consumer.Consumer, "_new_offset"),
        (faust_consumer.Consumer, "_add_gap"),
        (faust_consumer.Consumer, "_commit_offsets"),
        (faust_consumer.ThreadDelegateConsumer, "seek_to_committed"),
        (faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer"),
    ):
        assert cls.__dict__.get(f"_streamproc_replaced_{name}") is True, name
        assert getattr(cls, name).__module__.startswith("streamproc.compat."), name
