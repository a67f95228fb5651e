"""The HTTP edge: the error envelope for every kind of bad request, body
limits, content types, paths with and without the trailing slash, CORS."""
from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.support.accounts import assert_envelope, assert_field_error, auth, login, register, registration_body

ENDPOINTS = ["/api/auth/registration/", "/api/users/login/", "/api/auth/token/refresh/",
             "/api/users/check-email/"]  # anonymous ones: the others answer 401 before reading the body


async def raw_request(url: str, request: bytes) -> bytes:
    """Send bytes as they are (httpx would fix what we want broken)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return response


@pytest.mark.parametrize("method, path", [("GET", "/nope"), ("POST", "/api/nope/"), ("GET", "/api/users/"),
                                          ("DELETE", "/api/users/profile/x"), ("GET", "/api/users/profile//")])
async def test_unknown_routes_are_json_404(client, method, path):
    response = await client.request(method, path)
    body = assert_envelope(response, 404)
    assert body["error"] == "Not found"


@pytest.mark.parametrize("method, path", [("GET", "/api/users/login/"), ("PUT", "/api/users/profile/"),
                                          ("DELETE", "/api/auth/registration/"), ("GET", "/api/auth/token/refresh"),
                                          ("POST", "/health")])
async def test_wrong_methods_are_json_405_with_allow(client, method, path):
    response = await client.request(method, path)
    assert_envelope(response, 405)
    assert "OPTIONS" in response.headers["allow"]


async def test_unknown_http_method_is_json_405(server):
    response = await raw_request(server.url, b"BREW /api/users/login/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405"), head
    assert b'"error"' in body


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("content", [b"{", b"{'email': 1}", b"[1,", b"\xff\xfe{}", b"nul", b'{"a":1}x'])
async def test_malformed_json_is_400(client, path, content):
    response = await client.post(path, content=content, headers={"Content-Type": "application/json"})
    body = assert_envelope(response, 400)
    assert body["error"] == "Malformed JSON"


@pytest.mark.parametrize("content", [b"[]", b"1", b'"text"', b"null", b"[{}]"])
async def test_json_that_is_not_an_object_is_400(client, content):
    response = await client.post("/api/users/login/", content=content, headers={"Content-Type": "application/json"})
    assert_field_error(response, "non_field_errors")


async def test_deeply_nested_json_is_400_not_500(client):
    for content in (b"[" * 100_000 + b"]" * 100_000, b'{"email":' * 50_000 + b"1" + b"}" * 50_000):
        response = await client.post("/api/users/login/", content=content,
                                     headers={"Content-Type": "application/json"})
        assert response.status_code == 400, response.text[:200]
        assert_envelope(response, 400)


async def test_lone_surrogates_in_strings_are_400_not_500(client):
    """JSON may escape half a UTF-16 pair ("\\ud800"); such a string cannot be
    stored or hashed, so it is refused up front."""
    for body in (b'{"email": "\\ud800@example.com", "password": "x", "role": "student"}',
                 b'{"email": "a@example.com", "password": "Pass\\udfffword1", "role": "student"}'):
        response = await client.post("/api/users/login/", content=body, headers={"Content-Type": "application/json"})
        assert_envelope(response, 400)
    body = registration_body(password1="Abc-\ud800-defgh", password2="Abc-\ud800-defgh")
    import json
    response = await client.post("/api/auth/registration/", content=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    assert_envelope(response, 400)
    response = await client.post("/api/users/check-email/", content=b'{"email": "\\udc00x@example.com"}',
                                 headers={"Content-Type": "application/json"})
    assert_envelope(response, 400)


async def test_control_characters_in_email_are_refused(client):
    for email in ("a\x00b@example.com", "a\x07@example.com", "ab@exa\x1bmple.com"):
        assert_field_error(await client.post("/api/auth/registration/", json=registration_body(email=email)),
                           "email")


async def test_body_over_one_mebibyte_is_413(client, server):
    big = b'{"email": "' + b"a" * (1024 * 1024) + b'"}'
    response = await client.post("/api/users/check-email/", content=big, headers={"Content-Type": "application/json"})
    body = assert_envelope(response, 413)
    assert "1048576" in body["message"]

    async def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(20):
            yield b"x" * 65536

    response = await client.post("/api/users/check-email/", content=chunks(),
                                 headers={"Content-Type": "application/json"})
    assert_envelope(response, 413)
    # Exactly at the limit is fine (and then simply a validation question).
    exact = b'{"email": "' + b"a" * (1024 * 1024 - 13) + b'"}'
    assert len(exact) == 1024 * 1024
    response = await client.post("/api/users/check-email/", content=exact, headers={"Content-Type": "application/json"})
    assert_field_error(response, "email")
    # The server is still fine afterwards.
    assert (await client.get("/health")).json() == {"status": "healthy"}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          "application/xml", "", "application/jsonx", "text/json"])
async def test_non_json_content_type_is_415(server, content_type):
    async with httpx.AsyncClient(base_url=server.url) as client:
        headers = {"Content-Type": content_type} if content_type else {}
        response = await client.post("/api/users/login/", content=b'{"email": "a@example.com"}', headers=headers)
    body = assert_envelope(response, 415)
    assert "application/json" in body["message"]


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "APPLICATION/JSON", "application/vnd.api+json"])
async def test_json_content_types_are_accepted(client, content_type):
    data = await register(client)
    response = await client.post("/api/users/login/", headers={"Content-Type": content_type},
                                 content=f'{{"email": "{data["user"]["email"]}", "password": "{data["password"]}", '
                                         f'"role": "student"}}'.encode())
    assert response.status_code == 200, response.text


async def test_paths_work_with_and_without_the_trailing_slash(client):
    data = await register(client)
    for path in ("/api/users/profile", "/api/users/profile/"):
        assert (await client.get(path, headers=auth(data))).status_code == 200
    response = await client.post("/api/users/login", json={"email": data["user"]["email"],
                                                           "password": data["password"], "role": "student"})
    assert response.status_code == 200
    response = await client.post("/api/auth/registration", json=registration_body())
    assert response.status_code == 201


async def test_responses_are_json_with_request_ids_and_no_banner(client):
    response = await client.get("/api/users/profile/", headers={"X-Request-Id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert "server" not in response.headers
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    evil = await client.get("/health", headers={"X-Request-Id": "a\tb<script>"})
    assert evil.headers["x-request-id"] != "a\tb<script>" and len(evil.headers["x-request-id"]) == 32


async def test_a_failed_request_changes_nothing(server, client):
    data = await register(client, name="Original")
    before = await server.db.users.find_one({"_id": data["user"]["id"]})
    attempts = [
        client.patch("/api/users/profile/", headers={**auth(data), "Content-Type": "text/plain"}, content=b"name=x"),
        client.patch("/api/users/profile/", headers={**auth(data), "Content-Type": "application/json"},
                     content=b'{"name": "x"'),
        client.patch("/api/users/profile/", headers=auth(data), json={"name": {"$set": {"role": "admin"}}}),
        client.patch("/api/users/profile/", headers=auth(data), json={"name": "ok", "track": "nope"}),
    ]
    for response in await asyncio.gather(*attempts):
        assert 400 <= response.status_code < 500
    after = await server.db.users.find_one({"_id": data["user"]["id"]})
    assert after == before


# -- CORS ----------------------------------------------------------------------------------------

ALLOWED = "http://localhost:3000"


async def test_cors_allowed_origin_gets_headers(client):
    data = await register(client)
    response = await client.get("/api/users/profile/", headers={**auth(data), "Origin": ALLOWED})
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "origin" in response.headers["vary"].lower()
    exposed = response.headers["access-control-expose-headers"]
    for header in ("X-RateLimit-Limit", "Retry-After", "X-Request-Id"):
        assert header in exposed
    # Error responses carry them too, so a browser can read the envelope.
    response = await login(client, "nobody@example.com", "Wrong-Password-1", Origin=ALLOWED)
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == ALLOWED


async def test_cors_preflight(client):
    response = await client.options("/api/users/login/", headers={
        "Origin": ALLOWED, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, authorization"})
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed_headers = response.headers["access-control-allow-headers"].lower()
    assert "content-type" in allowed_headers and "authorization" in allowed_headers
    assert int(response.headers["access-control-max-age"]) > 0
    response = await client.options("/api/users/profile", headers={"Origin": ALLOWED,
                                                                   "Access-Control-Request-Method": "PATCH"})
    assert response.status_code == 204 and "PATCH" in response.headers["access-control-allow-methods"]


async def test_cors_disallowed_origin_gets_no_headers(client):
    for origin in ("http://evil.example", "http://localhost:3000.evil.example", "null"):
        response = await client.options("/api/users/login/", headers={"Origin": origin,
                                                                      "Access-Control-Request-Method": "POST"})
        assert not any(name.startswith("access-control-") for name in response.headers), response.headers
        response = await client.post("/api/users/check-email/", json={"email": "a@example.com"},
                                     headers={"Origin": origin})
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers


async def test_cors_origins_come_from_settings(start_server):
    server = await start_server(cors_origins="https://app.example.org")
    async with httpx.AsyncClient(base_url=server.url) as client:
        ok = await client.options("/api/users/login/", headers={"Origin": "https://app.example.org",
                                                                "Access-Control-Request-Method": "POST"})
        assert ok.headers["access-control-allow-origin"] == "https://app.example.org"
        default = await client.options("/api/users/login/", headers={"Origin": ALLOWED,
                                                                     "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in default.headers


@pytest.mark.parametrize("method, headers, status", [
    ("GET", {}, 400),  # no upgrade
    ("GET", {"Upgrade": "websocket", "Connection": "Upgrade"}, 426),  # no version
    ("GET", {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}, 400),  # no key
    ("GET", {"Upgrade": "websocket", "Connection": "Upgrade", "Origin": "http://evil.example"}, 403),
    ("POST", {}, 405),
    ("DELETE", {}, 405),
])
async def test_plain_http_on_the_status_websocket_is_the_envelope(client, method, headers, status):
    response = await client.request(method, "/api/users/workspace/status/", headers=headers)
    body = assert_envelope(response, status)
    assert "WebSocket" in body["message"]
    if status == 405:
        assert response.headers["allow"] == "GET"


async def test_openapi_describes_the_status_websocket(client):
    document = (await client.get("/api/openapi.json")).json()
    operation = document["paths"]["/api/users/workspace/status/"]["get"]
    assert operation["x-websocket"] is True and "101" in operation["responses"]
    for text in ('"type": "snapshot"', '"type": "event"', '"type": "auth"', "after=<seq>", "4401", "4403",
                 "4404"):
        assert text in operation["description"], text
    assert {p["name"] for p in operation["parameters"]} == {"after", "user_id"}


# Values that break naive parsing: NUL, a superscript digit ("²".isdigit() is
# True), invalid UTF-8, a lone surrogate, beyond int64, traversal, very long.
JUNK = ["%00", "a%00b", "%C2%B2", "%FF", "%ED%A0%80", "9223372036854775808", "-1", "%0A", "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e", "%5C", "x" * 3000]
# Every path segment and query parameter the server reads itself (the
# workspace `user_id`/`after` ones are swept in the workspace tests).
JUNK_TARGETS = ["/static/{}", "/static/v-000000000000/{}", "/static/js/{}", "/{}", "/api/{}",
                "/api/users/profile/{}", "/api/payments/my-payments/?limit={}",
                "/api/auth/google/authorize-url/?redirect_uri={}", "/api/auth/github/authorize-url/?redirect_uri={}",
                "/api/users/workspace/?purge={}", "/login?x={}", "/api/docs?{}={}", "/metrics?{}",
                "/api/openapi.json?{}"]


async def test_junk_in_every_path_segment_and_query_parameter_is_4xx(start_server, caplog):
    server = await start_server(google_client_id="id", google_client_secret="secret", github_client_id="id",
                                github_client_secret="secret", docker_host="unix:///nonexistent/edge.sock")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        tokens = await register(client)
        failures = []
        for junk in JUNK:
            for target in JUNK_TARGETS:
                path = target.replace("{}", junk)
                for method, headers in (("GET", {}), ("GET", auth(tokens)), ("HEAD", {}), ("DELETE", auth(tokens))):
                    response = await client.request(method, path, headers=headers)
                    no_docker = response.status_code == 503 and path.startswith("/api/users/workspace/")
                    if response.status_code >= 500 and not no_docker:
                        failures.append((method, path[:60], response.status_code))
    assert not failures, failures
    assert "Traceback" not in caplog.text and "unhandled error" not in caplog.text


async def test_static_path_with_a_nul_byte_is_404(client):
    for method in ("GET", "HEAD"):
        response = await client.request(method, "/static/a%00b")
        assert response.status_code == 404, response.text
    assert (await client.get("/static/a%00b")).json()["error"] == "Not found"
