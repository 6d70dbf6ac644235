"""progress_gateway.settings: environment names, defaults, validation and the store it selects."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from progress_core.store import StoreOptions
from progress_core.store.sqlite import path_from_url
from progress_gateway.settings import Settings
from tests.support.tls import make_tls_files

SECRET = "k" * 40


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Start from no configuration at all, in an empty working directory."""
    for name in list(os.environ):
        if name.upper().startswith("GATEWAY_") or name.upper() == "REDIS_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults() -> None:
    settings = Settings()
    assert settings.redis_url is None
    assert settings.sqlite_path == Path("progress-gateway.db")
    assert settings.secret is None
    assert settings.key_prefix == "pgw"
    assert settings.retention_s == 7 * 24 * 3600
    assert settings.history_maxlen == 500
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)


def test_every_field_reads_its_gateway_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "GATEWAY_REDIS_URL": "redis://cache:6380/2",
        "GATEWAY_SQLITE_PATH": "/var/lib/pgw/jobs.db",
        "GATEWAY_SECRET": SECRET,
        "GATEWAY_KEY_PREFIX": "tenant-a",
        "GATEWAY_RETENTION_S": "3600",
        "GATEWAY_HISTORY_MAXLEN": "50",
        "GATEWAY_HOST": "0.0.0.0",
        "GATEWAY_PORT": "9000",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.redis_url == "redis://cache:6380/2"
    assert settings.sqlite_path == Path("/var/lib/pgw/jobs.db")
    assert settings.secret is not None
    assert settings.secret.get_secret_value() == SECRET
    assert settings.key_prefix == "tenant-a"
    assert (settings.retention_s, settings.history_maxlen) == (3600, 50)
    assert (settings.host, settings.port) == ("0.0.0.0", 9000)


def test_plain_redis_url_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://plain:6379/0")
    assert Settings().redis_url == "redis://plain:6379/0"
    monkeypatch.setenv("GATEWAY_REDIS_URL", "redis://ours:6379/1")
    assert Settings().redis_url == "redis://ours:6379/1"


def test_empty_gateway_redis_url_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_REDIS_URL", "")
    assert Settings().redis_url is None
    monkeypatch.setenv("REDIS_URL", "redis://plain:6379/0")
    assert Settings().redis_url == "redis://plain:6379/0"


def test_keyword_arguments_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "9000")
    monkeypatch.setenv("REDIS_URL", "redis://env:6379/0")
    settings = Settings(port=9100, redis_url="redis://flag:6379/0")
    assert (settings.port, settings.redis_url) == (9100, "redis://flag:6379/0")


def test_secret_and_redis_password_stay_out_of_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_SECRET", SECRET)
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2-password@cache:6379/0")
    text = repr(Settings())
    assert SECRET not in text
    assert "hunter2" not in text


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_PORT", "0"),
        ("GATEWAY_PORT", "65536"),
        ("GATEWAY_PORT", "http"),
        ("GATEWAY_RETENTION_S", "59"),
        ("GATEWAY_HISTORY_MAXLEN", "0"),
        ("GATEWAY_KEY_PREFIX", "a{b}"),
        ("GATEWAY_KEY_PREFIX", "has space"),
        ("GATEWAY_REDIS_URL", "http://cache:6379"),
        ("REDIS_URL", "cache:6379"),
        ("GATEWAY_REDIS_URL", "rediss://cache:6380/0?ssl_cert_reqs=sometimes"),
        ("GATEWAY_REDIS_URL", "rediss://cache:6380/0?ssl_ca_certs=/nonexistent/redis-ca.pem"),
        ("GATEWAY_SECRET", "x" * 31),
    ],
)
def test_out_of_range_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert len(info.value.errors()) == 1


def test_valid_tls_options_are_accepted_and_a_non_certificate_is_not(tmp_path: Path) -> None:
    ca = make_tls_files(tmp_path / "tls").ca_cert
    for mode in ("required", "Optional", "none"):
        url = f"rediss://cache:6380/0?ssl_ca_certs={ca}&ssl_cert_reqs={mode}"
        assert Settings(redis_url=url).redis_url == url
    garbage = tmp_path / "not-a-ca.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ValidationError, match="TLS options"):
        Settings(redis_url=f"rediss://cache:6380/0?ssl_ca_certs={garbage}")


def test_boundaries_are_accepted() -> None:
    settings = Settings(port=65535, retention_s=60, history_maxlen=1, secret="x" * 32)
    assert (settings.port, settings.retention_s, settings.history_maxlen) == (65535, 60, 1)
    assert Settings(port=1).port == 1


def test_validation_errors_do_not_echo_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_SECRET", "too-short-but-private")
    with pytest.raises(ValidationError) as info:
        Settings()
    assert "too-short-but-private" not in str(info.value)


def test_store_url_is_redis_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_REDIS_URL", "rediss://cache:6380/0")
    assert Settings().store_url() == "rediss://cache:6380/0"


def test_store_url_is_an_absolute_sqlite_url_otherwise(tmp_path: Path) -> None:
    url = Settings().store_url()
    assert url == f"sqlite:///{tmp_path / 'progress-gateway.db'}"
    assert path_from_url(url) == tmp_path / "progress-gateway.db"


def test_store_url_survives_awkward_file_names(tmp_path: Path) -> None:
    path = tmp_path / "my jobs?#%.db"
    url = Settings(sqlite_path=path).store_url()
    assert "?" not in url
    assert "#" not in url
    assert path_from_url(url) == path


def test_store_url_resolves_a_relative_path_against_the_working_directory(
    tmp_path: Path,
) -> None:
    url = Settings(sqlite_path=Path("data/jobs.db")).store_url()
    assert path_from_url(url) == tmp_path / "data" / "jobs.db"


def test_store_options_carry_the_tuning() -> None:
    settings = Settings(key_prefix="tenant-a", retention_s=120, history_maxlen=7)
    assert settings.store_options() == StoreOptions(
        prefix="tenant-a", retention_s=120, history_maxlen=7
    )
    assert Settings().store_options() == StoreOptions()


def test_orphan_time_defaults_to_five_minutes_and_is_never_below_the_stale_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert (Settings().stale_after_s, Settings().orphan_after_s) == (60.0, 300.0)
    monkeypatch.setenv("GATEWAY_ORPHAN_AFTER_S", "30")
    with pytest.raises(ValidationError, match=r"GATEWAY_ORPHAN_AFTER_S .* GATEWAY_STALE_AFTER_S"):
        Settings()
    monkeypatch.setenv("GATEWAY_STALE_AFTER_S", "30")
    assert Settings().orphan_after_s == 30.0
