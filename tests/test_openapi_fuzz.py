"""Schemathesis against the running server, over HTTP.

The server runs in-process (start_server) on the test's event loop; the
schemathesis CLI runs as a child process, so the loop keeps serving while it
fuzzes. Bounded for CI: a fixed seed and a few dozen examples per operation
(about half a minute on 2 cores).

Checks: all of schemathesis' checks except ``positive_data_acceptance`` (it
expects 2xx for any schema-valid body, but a schema-valid login with unknown
credentials is rightly a 401, and a schema-valid registration with a weak
password a 400). So: no 5xx, every response matches its documented status,
content type, headers and schema, schema-violating requests are rejected
(negative mode), undocumented methods answer 405 with Allow, and operations
that declare bearer auth refuse requests without it.

A second test proves the harness bites: an endpoint that breaks its own
schema in each of those ways makes the same run fail.
"""
from __future__ import annotations


import httpx
from pydantic import Field

from handlers.base import APIHandler, Operation
from models.base import RequestModel, ResponseModel
from models.common import ErrorOut
from tests.support.app import app_settings, auth, register, serve
from tests.support.fake_smtp import FakeSMTP
from tests.support.fuzz import DEPENDENT_TAGS, fuzzed_operations, NO_DOCKER, operations_of, run_schemathesis


async def test_schemathesis_finds_no_failure(start_server, tmp_path):
    smtp = FakeSMTP().start()  # a real SMTP server on loopback: the email endpoints are fuzzed for real
    try:
        await fuzz_everything(await start_server(docker_host=NO_DOCKER, **smtp.settings()), tmp_path)
    finally:
        smtp.stop()


async def fuzz_everything(server, tmp_path) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        tokens = await register(client, email="fuzzer@example.com")
        document = (await client.get("/api/openapi.json")).json()
    bearer = ["--header", f"Authorization: {auth(tokens)['Authorization']}"]
    # WebSocket upgrades are left out (schemathesis speaks HTTP only).
    no_websockets: list[str] = []
    websocket_paths = [path for path, item in document["paths"].items()
                       if any(op.get("x-websocket") for op in item.values())]
    for path in websocket_paths:
        no_websockets += ["--exclude-path", path]

    # 1. Everything that needs no outside dependency: not a single 5xx.
    skip_dependent = [arg for tag in DEPENDENT_TAGS for arg in ("--exclude-tag", tag)]
    code, output = await run_schemathesis(server.url, *bearer, *no_websockets, *skip_dependent, report="core")
    assert code == 0, output[-6000:]
    assert fuzzed_operations("core") == operations_of(document, DEPENDENT_TAGS, tagged=False)

    # 2. Workspaces, payments, sign-in without their dependency: the same
    # checks, except that their documented 503 (envelope, Retry-After) is
    # the expected answer; any other 5xx still fails.
    config = tmp_path / "schemathesis.toml"
    config.write_text('[checks.not_a_server_error]\nexpected-statuses = ["2xx", "3xx", "4xx", "503"]\n')
    only_dependent = [arg for tag in DEPENDENT_TAGS for arg in ("--include-tag", tag)]
    dependent = operations_of(document, DEPENDENT_TAGS, tagged=True)
    if dependent:
        code, output = await run_schemathesis(server.url, *bearer, *no_websockets, *only_dependent,
                                              report="dependencies", config=config)
        assert code == 0, output[-6000:]
        assert fuzzed_operations("dependencies") == dependent

    # The token stayed valid throughout (nothing the fuzzer sent logged it out).
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        assert (await client.get("/api/users/profile/", headers=auth(tokens))).status_code == 200


# -- the harness bites ---------------------------------------------------------------------------

class CountIn(RequestModel):
    count: int = Field(ge=0, le=100)


class CountOut(ResponseModel):
    count: int


class BrokenHandler(APIHandler):
    """Breaks its own schema three ways: accepts a negative count (the schema
    forbids it), answers a string where an integer is promised, and fails
    with a 500 on one value."""
    operations = {"post": Operation("A deliberately broken endpoint", body=CountIn,
                                    responses={200: CountOut, 400: ErrorOut}, tags=("broken",))}

    async def post(self) -> None:
        data = self.json_body()
        count = data.get("count") if isinstance(data, dict) else None
        if not isinstance(count, int) or isinstance(count, bool):
            self.send({"error": "Validation error", "message": "Some fields are invalid."}, 400)
        elif count == 0:  # the lower boundary: always probed
            raise RuntimeError("boom")
        elif count > 50:
            self.send({"count": str(count)})
        else:
            self.send({"count": count})  # negative counts accepted: the schema says minimum 0


async def test_schemathesis_catches_a_broken_endpoint(mongo, tmp_path):
    server = await serve(app_settings(mongo, tmp_path, docker_host=NO_DOCKER),
                                  extra_routes=[(r"/api/broken/?", BrokenHandler)])
    try:
        code, output = await run_schemathesis(server.url, "--include-path", "/api/broken/",
                                              "--continue-on-failure", report="broken")
    finally:
        await server.stop()
    assert code != 0, output[-3000:]
    assert "ST101 Server error" in output, output[-3000:]
    assert "ST108 Response violates schema" in output, output[-3000:]
    assert "ST201 Schema-violating request accepted" in output, output[-3000:]
