"""Host resolution: deploy.host, else OLLAMA_HOST (read the way Ollama reads it), else the default."""

from __future__ import annotations

import pytest

from trainer.errors import UserError
from trainer.ollama_client import DEFAULT_HOST, normalize_host, resolve_host


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("127.0.0.1:11434", "http://127.0.0.1:11434"),
        ("0.0.0.0", "http://127.0.0.1:11434"),  # a bind address: reach it on loopback
        ("0.0.0.0:11500", "http://127.0.0.1:11500"),
        ("[::]:11434", "http://[::1]:11434"),
        (":8080", "http://127.0.0.1:8080"),
        ("localhost", "http://localhost:11434"),
        ("http://example.com", "http://example.com:80"),
        ("https://example.com", "https://example.com:443"),
        ("https://example.com:8443/ollama/", "https://example.com:8443/ollama"),
        ("[::1]", "http://[::1]:11434"),
        ("[::1]:9999", "http://[::1]:9999"),
        ('"127.0.0.1:11434"', "http://127.0.0.1:11434"),
    ],
)
def test_normalize_like_ollama(value: str, url: str) -> None:
    assert normalize_host(value) == url


def test_config_then_environment_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "10.0.0.5")
    assert resolve_host("") == "http://10.0.0.5:11434"
    assert resolve_host("127.0.0.1:1234") == "http://127.0.0.1:1234"
    monkeypatch.delenv("OLLAMA_HOST")
    assert resolve_host("") == DEFAULT_HOST == "http://127.0.0.1:11434"


@pytest.mark.parametrize("value", ["ftp://host", "host:99999", "host:abc"])
def test_bad_hosts_are_user_errors(value: str) -> None:
    with pytest.raises(UserError):
        normalize_host(value)
