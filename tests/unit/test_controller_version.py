"""/v1/health: the controller's version and API major version, for the CLI to compare
with its own; and the CLI's warning when they differ, against a stand-in farm on
loopback."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from farm_fakes import make_api

from crossfarm.client.cli import main
from crossfarm.client.preflight import version_warning
from crossfarm.shared.arch import supported_targets
from crossfarm.shared.wire import API_VERSION, Health, crossfarm_version


@pytest.mark.parametrize(
    "settings", [{}, {"worker_token": "w-secret", "operator_token": "op-secret"}],
    ids=["open", "with-tokens"])
def test_health_reports_the_version_the_api_and_the_targets_without_a_token(
        tmp_path, settings):
    api = make_api(tmp_path, **settings)
    try:
        response = api.get("/v1/health")
    finally:
        api.farm.store.close()
    assert response.status_code == 200
    assert response.json() == {"ok": True, "version": crossfarm_version(), "api": API_VERSION,
                               "targets": supported_targets()}
    assert version_warning(Health.model_validate(response.json()), "http://farm") is None


def test_the_openapi_document_carries_the_controllers_version(tmp_path):
    api = make_api(tmp_path)
    try:
        assert api.get("/openapi.json").json()["info"]["version"] == crossfarm_version()
    finally:
        api.farm.store.close()


@pytest.fixture
def farm_of_api():
    """A stand-in farm on loopback whose health reports the API version it is given, and
    which lists no git credentials."""
    served = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = {"/v1/health": {"ok": True, "version": "9.9.9", "api": served.get("api"),
                                   "targets": []},
                    "/v1/git-credentials": []}.get(self.path)
            data = json.dumps(body).encode()
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def url(api):
        served["api"] = api
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield url
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_the_cli_warns_on_stderr_when_the_farm_speaks_another_api_and_still_answers(
        farm_of_api, capsys):
    url = farm_of_api(API_VERSION + 1)
    assert main(["--json", "git-credential", "list", "--url", url]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == []
    assert f"crossfarm: warning: the farm at {url} speaks API {API_VERSION + 1}" in err


def test_the_cli_says_nothing_of_versions_to_a_farm_of_its_own_api(farm_of_api, capsys):
    assert main(["git-credential", "list", "--url", farm_of_api(API_VERSION)]) == 0
    assert "warning" not in capsys.readouterr().err
