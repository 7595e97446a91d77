"""Secret values never reach MLflow or the console: run names, tags, params,
the logged config, the summary, and credentials inside a tracking URI."""

from __future__ import annotations

import base64
import http.server
import threading
from pathlib import Path

import pytest

from sweeplab import redact
from sweeplab.record import tracking

from conftest import cli, runs_of

SECRETS = ("S3CRET-tag", "S3CRET-root", "S3CRET-env")


@pytest.mark.slow
def test_secret_overrides_are_masked_in_name_tags_params_config_and_console(tmp_path: Path) -> None:
    args = [
        "+tags.api_key=S3CRET-tag",
        "+tags.owner=ana",
        "+api_key=S3CRET-root",
        "+db_password=${oc.env:MY_SECRET}",
        "trainer.max_epochs=1",
        "callbacks=none",
    ]
    result = cli(args, cwd=tmp_path, env={"MY_SECRET": "S3CRET-env"})
    assert result.returncode == 0, result.stderr[-2000:]
    for secret in SECRETS:
        assert secret not in result.stdout + result.stderr
    run = runs_of(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}").iloc[0]
    assert "api_key=***" in run["tags.mlflow.runName"] and "api_key=***" in run["tags.sweeplab.overrides"]
    assert run["tags.api_key"] == "***" and run["tags.owner"] == "ana"  # only secret-looking keys
    store_bytes = b"".join(p.read_bytes() for p in (tmp_path / "outputs").glob("mlflow.db*"))
    run_files = b"".join(
        p.read_bytes()
        for p in (tmp_path / "outputs").rglob("*")
        if p.is_file() and ".hydra" not in p.parts and not p.name.startswith("mlflow.db")
    )
    for secret in SECRETS:
        assert secret.encode() not in store_bytes and secret.encode() not in run_files


def test_credentials_in_a_tracking_uri_are_never_printed() -> None:
    uri = "http://ana:pa55word@mlflow.example:5000"
    assert redact.redact_uri(uri) == "http://ana:***@mlflow.example:5000"
    assert "pa55word" not in tracking.ui_command(uri)
    assert redact.redact_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
    with pytest.raises(ValueError) as refused:
        tracking.check_server("http://ana:pa55word@127.0.0.1:9", timeout=2)
    assert "pa55word" not in str(refused.value) and "ana:***@127.0.0.1:9" in str(refused.value)
    with pytest.raises(ValueError, match=r"^--store http://127.0.0.1:9: no MLflow server answers there"):
        tracking.existing_store("http://127.0.0.1:9")  # named by the option that carried it


class _Health(http.server.BaseHTTPRequestHandler):
    """A server that answers /health only to the right basic-auth credentials."""

    expected = "Basic " + base64.b64encode(b"ana:pa55word").decode()

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        ok = self.path == "/health" and self.headers.get("Authorization") == self.expected
        self.send_response(200 if ok else 401)
        self.end_headers()
        self.wfile.write(b"OK" if ok else b"")

    def log_message(self, *args) -> None:
        pass


def test_a_server_behind_basic_auth_passes_the_health_probe() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        tracking.check_server(f"http://ana:pa55word@127.0.0.1:{port}", timeout=5)  # credentials from the URI
        with pytest.raises(ValueError, match=r"HTTP 401"):
            tracking.check_server(f"http://ana:wrong@127.0.0.1:{port}", timeout=5)
    finally:
        server.shutdown()


def test_a_tokenizer_is_not_a_secret_but_a_token_is() -> None:
    from sweeplab.redact import mask_override, mask_secrets

    assert mask_secrets({"data": {"tokenizer": "wordpiece", "hf_token": "abc", "auth_token": "x"}}) == {
        "data": {"tokenizer": "wordpiece", "hf_token": "***", "auth_token": "***"}
    }
    assert mask_override("data.tokenizer=bpe") == "data.tokenizer=bpe"
    assert mask_override("+hub.token=abc") == "+hub.token=***"
