"""/metrics (Prometheus) and the request log, over HTTP against real servers."""
from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from tests.support.app import auth, docker_available, register, require_or_skip
from tests.support.processes import ServerProcess
from tests.support.workspaces import cleanup_instance, ensure_test_image, TEST_IMAGE

NO_DOCKER = "unix:///nonexistent/apranova-metrics.sock"


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} of an exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


async def scrape(client: httpx.AsyncClient) -> dict:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return samples(response.text)


# -- metrics ---------------------------------------------------------------------------------

async def test_requests_are_counted_by_route_pattern_and_status(start_server):
    server = await start_server(docker_host=NO_DOCKER)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        tokens = await register(client)
        for path in ("/api/users/profile", "/api/users/profile/", "/api/users/profile/"):
            assert (await client.get(path)).status_code == 401
        assert (await client.get("/api/users/profile/", headers=auth(tokens))).status_code == 200
        secret_path = f"/api/no-such-thing/{uuid.uuid4().hex}"
        assert (await client.get(secret_path)).status_code == 404
        assert (await client.delete("/api/users/profile/", headers=auth(tokens))).status_code == 405
        text = (await client.get("/metrics")).text
    found = samples(text)
    assert value(found, "apranova_http_requests_total", method="GET", route="/api/users/profile/", status="401") == 3
    assert value(found, "apranova_http_requests_total", method="GET", route="/api/users/profile/", status="200") == 1
    assert value(found, "apranova_http_requests_total", method="POST", route="/api/auth/registration/",
                 status="201") == 1
    assert value(found, "apranova_http_requests_total", method="DELETE", route="/api/users/profile/",
                 status="405") == 1
    assert value(found, "apranova_http_requests_total", method="GET", route="(unmatched)", status="404") == 1
    # Latency histogram: one observation per request of the route, in buckets.
    assert value(found, "apranova_http_request_duration_seconds_count", method="GET",
                 route="/api/users/profile/") == 4
    assert value(found, "apranova_http_request_duration_seconds_bucket", method="GET",
                 route="/api/users/profile/", le="+Inf") == 4
    assert value(found, "apranova_http_request_duration_seconds_sum", method="GET", route="/api/users/profile/") > 0
    # Raw paths never become labels (unbounded cardinality, and they may carry ids).
    assert secret_path not in text and "/api/users/profile\"" not in text
    assert value(found, "apranova_http_requests_in_flight") == 1  # the scrape itself
    assert value(found, "process_resident_memory_bytes") > 0


async def test_workspaces_by_state_sockets_and_docker_errors(start_server):
    server = await start_server(docker_host=NO_DOCKER)
    await server.db.workspaces.insert_many([
        {"_id": uuid.uuid4().hex, "owner_id": 900001 + i, "state": state, "progress": 0, "version": 1}
        for i, state in enumerate(["running", "running", "failed", "stopped"])])
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        tokens = await register(client)
        found = await scrape(client)
        assert value(found, "apranova_workspaces", state="running") == 2
        assert value(found, "apranova_workspaces", state="failed") == 1
        assert value(found, "apranova_workspaces", state="stopped") == 1
        assert value(found, "apranova_workspaces", state="provisioning") == 0
        assert value(found, "apranova_websockets_open") == 0
        docker_errors = value(found, "apranova_dependency_errors_total", dependency="docker")
        assert value(found, "apranova_dependency_errors_total", dependency="database") == 0

        # Docker is unreachable: creating a workspace is a 503, and counted.
        response = await client.post("/api/users/workspace/create/", headers=auth(tokens), json={})
        assert response.status_code == 503, response.text
        found = await scrape(client)
        assert value(found, "apranova_dependency_errors_total", dependency="docker") > docker_errors

        # An open status WebSocket is counted while it is open (this one has
        # not sent its auth message yet, so the server keeps it open a while).
        url = server.ws_url + "/api/users/workspace/status/"
        socket = await websocket_connect(HTTPRequest(url, headers={"Origin": server.url}, connect_timeout=10))
        try:
            found = await scrape(client)
            assert value(found, "apranova_websockets_open") == 1
        finally:
            socket.close()
        for _ in range(50):
            found = await scrape(client)
            if value(found, "apranova_websockets_open") == 0:
                break
            await asyncio.sleep(0.05)
        assert value(found, "apranova_websockets_open") == 0


@pytest.mark.docker
async def test_provisioning_duration_is_observed(start_server):
    require_or_skip(docker_available(), "Docker engine")
    ensure_test_image()
    instance = f"t6metrics{uuid.uuid4().hex[:6]}"
    server = await start_server(instance_name=instance, workspace_image=TEST_IMAGE,
                                workspace_pull_policy="never", workspace_port_range="23100-23199")
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        tokens = await register(client)
        before = await scrape(client)
        assert value(before, "apranova_workspace_provisioning_seconds_count") == 0
        response = await client.post("/api/users/workspace/create/", headers=auth(tokens), json={"wait": True})
        try:
            assert response.status_code == 201, response.text
            found = await scrape(client)
            assert value(found, "apranova_workspace_provisioning_seconds_count") == 1
            assert value(found, "apranova_workspace_provisioning_seconds_sum") > 0
            assert value(found, "apranova_workspaces", state="running") == 1
            # A second scrape does not count the same run again.
            assert value(await scrape(client), "apranova_workspace_provisioning_seconds_count") == 1
        finally:
            await client.delete("/api/users/workspace/?purge=true", headers=auth(tokens))
            cleanup_instance(instance)  # and its workspace network


async def test_metrics_restricted_to_allowed_networks(start_server):
    closed = await start_server(metrics_allowed_networks="10.0.0.0/8", trusted_proxies="", docker_host=NO_DOCKER)
    opened = await start_server(metrics_allowed_networks="10.0.0.0/8,127.0.0.0/8", docker_host=NO_DOCKER)
    async with httpx.AsyncClient(timeout=30) as client:
        denied = await client.get(closed.url + "/metrics")
        assert denied.status_code == 403
        assert denied.headers["Content-Type"].startswith("application/json")
        assert denied.json()["error"] == "Forbidden" and "apranova_" not in denied.text
        # A forged X-Forwarded-For from an untrusted peer changes nothing.
        forged = await client.get(closed.url + "/metrics", headers={"X-Forwarded-For": "10.1.2.3"})
        assert forged.status_code == 403
        assert (await client.get(opened.url + "/metrics")).status_code == 200


async def test_metrics_behind_a_trusted_proxy_use_the_client_address(start_server):
    server = await start_server(metrics_allowed_networks="10.0.0.0/8", trusted_proxies="127.0.0.0/8",
                                docker_host=NO_DOCKER)
    async with httpx.AsyncClient(timeout=30) as client:
        inside = await client.get(server.url + "/metrics", headers={"X-Forwarded-For": "10.1.2.3"})
        outside = await client.get(server.url + "/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert inside.status_code == 200
    assert outside.status_code == 403


async def test_docs_openapi_and_metrics_are_not_rate_limited(start_server):
    server = await start_server(rate_limit_anon="3/hour", docker_host=NO_DOCKER)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        for _ in range(6):
            for path in ("/metrics", "/api/openapi.json", "/api/docs"):
                response = await client.get(path)
                assert response.status_code == 200, (path, response.text)
        statuses = [(await client.post("/api/users/check-email/", json={"email": "a@example.com"})).status_code
                    for _ in range(4)]
    assert statuses[-1] == 429  # the limit is live for the API itself


# -- logs ----------------------------------------------------------------------------------------

def access_lines(text: str) -> list[dict]:
    return [entry for entry in (json.loads(line) for line in text.splitlines() if line.startswith("{"))
            if entry.get("logger") == "apranova.access"]


@pytest.fixture
def json_log_server(mongo, tmp_path):
    server = ServerProcess(tmp_path / "data", LOG_FORMAT="json", MONGODB_URI=mongo.uri,
                           MONGODB_DB=f"logs_{uuid.uuid4().hex[:8]}", DOCKER_HOST=NO_DOCKER,
                           JWT_SECRET="log-test-secret-" + "y" * 32)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_json_log_one_line_per_request_with_request_id(json_log_server):
    url = json_log_server.url
    password = "Correct-Horse-42"
    email = f"logs-{uuid.uuid4().hex[:6]}@example.com"
    with httpx.Client(base_url=url, timeout=30) as client:
        registered = client.post("/api/auth/registration/", json={
            "name": "Log", "email": email, "password1": password, "password2": password})
        assert registered.status_code == 201
        access = registered.json()["access"]
        mine = client.get("/api/users/profile/?token=query-secret-123", headers={
            "Authorization": f"Bearer {access}", "X-Request-Id": "trace-abc.123"})
        assert mine.headers["X-Request-Id"] == "trace-abc.123"
        bad_id = client.get("/api/users/profile/", headers={"X-Request-Id": "<script>" + "x" * 80})
        generated = bad_id.headers["X-Request-Id"]
        assert len(generated) == 32 and generated.isalnum()
        missing = client.get("/api/nothing-here")
        assert missing.status_code == 404 and len(missing.headers["X-Request-Id"]) == 32
        client.post("/api/users/login/", json={"email": email, "password": "Wrong-password-1", "role": "student"})
    json_log_server.stop()
    output = json_log_server.output()
    lines = access_lines(output)
    by_id = {entry["request_id"]: entry for entry in lines}
    assert len(by_id) == len(lines)  # one line per request
    entry = by_id["trace-abc.123"]
    assert entry["method"] == "GET" and entry["path"] == "/api/users/profile/" and entry["status"] == 200
    assert entry["user_id"] == registered.json()["user"]["id"] and entry["ms"] >= 0
    assert by_id[generated]["status"] == 401 and by_id[generated]["user_id"] is None
    assert by_id[missing.headers["X-Request-Id"]]["path"] == "/api/nothing-here"
    assert [e["status"] for e in lines if e["path"] == "/api/users/login/"] == [401]
    # Never a secret: query strings, tokens and passwords stay out of the log.
    for secret in ("query-secret-123", access, password, "Wrong-password-1", "log-test-secret"):
        assert secret not in output
    # Every line of the process's log is JSON.
    for line in output.splitlines():
        json.loads(line)


def test_text_log_one_line_per_request(mongo, tmp_path):
    server = ServerProcess(tmp_path / "data", MONGODB_URI=mongo.uri, MONGODB_DB=f"logs_{uuid.uuid4().hex[:8]}",
                           DOCKER_HOST=NO_DOCKER)
    try:
        server.wait_ready()
        for _ in range(3):
            assert httpx.get(server.url + "/health", headers={"X-Request-Id": "health-check-1"}).status_code == 200
    finally:
        server.stop()
    lines = [line for line in server.output().splitlines() if "apranova.access" in line and "/health " in line]
    assert len(lines) == 3
    assert all("GET /health 200" in line and "rid=health-check-1" in line for line in lines)


# -- found while testing the log: errors answered before the body is read --------------------

async def test_errors_before_the_body_is_read_announce_connection_close(start_server):
    """Tornado closes the connection after an answer given before the body
    was read (unknown path, 413, 415, 429). Without `Connection: close` a
    keep-alive client reuses the dying connection and gets a reset."""
    server = await start_server(docker_host=NO_DOCKER)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        for _ in range(20):
            missing = await client.get("/api/nothing-here")
            assert missing.status_code == 404 and missing.headers["Connection"] == "close"
            # the next request on the same client must not be reset
            assert (await client.post("/api/users/check-email/", json={"email": "a@example.com"})).status_code == 200
        wrong_type = await client.post("/api/users/check-email/", content=b"email=x",
                                       headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert wrong_type.status_code == 415 and wrong_type.headers["Connection"] == "close"
        assert (await client.get("/health")).status_code == 200
        # An error raised after the body was read keeps the connection.
        unauthorized = await client.get("/api/users/profile/")
        assert unauthorized.status_code == 401 and unauthorized.headers.get("Connection") != "close"


async def test_metrics_default_to_loopback_only(start_server):
    """By default only this host reads /metrics; an empty
    METRICS_ALLOWED_NETWORKS opens it to anyone (an explicit choice)."""
    default = await start_server(trusted_proxies="127.0.0.0/8", docker_host=NO_DOCKER)
    assert [str(n) for n in default.services.settings.metrics_allowed_networks] == ["127.0.0.0/8", "::1/128"]
    anyone = await start_server(metrics_allowed_networks="", trusted_proxies="127.0.0.0/8", docker_host=NO_DOCKER)
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await client.get(default.url + "/metrics")).status_code == 200
        remote = {"X-Forwarded-For": "203.0.113.9"}
        assert (await client.get(default.url + "/metrics", headers=remote)).status_code == 403
        mapped = {"X-Forwarded-For": "::ffff:203.0.113.9"}
        assert (await client.get(default.url + "/metrics", headers=mapped)).status_code == 403
        assert (await client.get(anyone.url + "/metrics", headers=remote)).status_code == 200
