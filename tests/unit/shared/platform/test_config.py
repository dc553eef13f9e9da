from pathlib import Path

import pytest

from twinray.shared.platform.config import Settings


def test_defaults_are_absolute_and_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    assert settings.store_root == tmp_path / ".twinray" / "store"
    assert settings.store_endpoint == ""


def test_environment_overrides_and_types():
    settings = Settings.from_env({"TWINRAY_GRPC_PORT": "9100", "TWINRAY_STORE_SECURE": "yes", "TWINRAY_HOME": "/tmp/x"})
    assert settings.grpc_port == 9100
    assert settings.store_secure is True
    assert settings.store_root == Path("/tmp/x/store")


def test_round_trip_through_environment():
    settings = Settings.from_env({"TWINRAY_STORE_ENDPOINT": "127.0.0.1:9999", "TWINRAY_OTEL_EXPORTER": "console"})
    assert Settings.from_env(settings.as_env()) == settings


@pytest.mark.parametrize(
    "env, message",
    [
        ({"TWINRAY_GRPC_PORT": "nine"}, "TWINRAY_GRPC_PORT must be an integer"),
        ({"TWINRAY_OTEL_EXPORTER": "jaeger"}, "none, console or otlp"),
    ],
)
def test_bad_values_are_named(env, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)
