"""The original platform's Next.js client on another origin (issue 12 §1):
Chromium loads a page from one loopback origin and calls the API on another
exactly as that client does: axios with `withCredentials: true` (an
XMLHttpRequest with its default headers) and `fetch` with
`credentials: "include"`. Chromium itself enforces CORS here, so a missing
`Access-Control-Allow-Credentials: true` fails these tests the way it
failed that client.
"""
from __future__ import annotations


import pytest

from tests.support.app import register, unique_email
from tests.support.browser import log_in, PASSWORD
from tests.support.browser import FETCH, open_page
from tests.support.browser import XHR_REQUEST

pytestmark = pytest.mark.browser


AXIOS_XHR = "([method, url, body, token]) => (" + XHR_REQUEST + ")(method, url, body, token)"


async def test_credentialed_calls_from_another_origin(browser, start_server, page_origin) -> None:  # noqa: F811
    server = await start_server(cors_origins=f"http://localhost:3000,{page_origin}")
    api = server.url
    page = await open_page(browser, page_origin)
    try:
        email = unique_email("cors")
        registration = {"name": "Cors Student", "email": email, "password1": PASSWORD, "password2": PASSWORD,
                        "role": "student", "track": "DP"}
        created = await page.evaluate(FETCH, ["POST", f"{api}/api/auth/registration/", registration, None, "include"])
        assert created["status"] == 201, created
        login = await page.evaluate(AXIOS_XHR, ["POST", f"{api}/api/users/login/",
                                                {"email": email, "password": PASSWORD, "role": "student"}, None])
        assert login["status"] == 200, login
        assert login["data"]["redirect_url"] == "/student/dashboard"
        assert login["requestId"]  # an exposed header is readable
        profile = await page.evaluate(AXIOS_XHR, ["GET", f"{api}/api/users/profile/", None, login["data"]["access"]])
        assert profile["status"] == 200 and profile["data"]["email"] == email, profile
        refreshed = await page.evaluate(FETCH, ["POST", f"{api}/api/auth/token/refresh/",
                                                {"refresh": login["data"]["refresh"]}, None, "include"])
        assert refreshed["status"] == 200 and refreshed["data"]["access"], refreshed
        # An error answer is readable too (the client shows its message).
        wrong = await page.evaluate(AXIOS_XHR, ["POST", f"{api}/api/users/login/",
                                                {"email": email, "password": "Wrong-Pass-1", "role": "student"}, None])
        assert wrong["status"] == 401 and wrong["data"]["error"] == "Invalid credentials", wrong
    finally:
        await page.context.close()


async def test_wildcard_origins_never_allow_credentials(browser, start_server, page_origin) -> None:  # noqa: F811
    server = await start_server(cors_origins="*")
    page = await open_page(browser, page_origin)
    try:
        body = {"email": "nobody@example.com"}
        url = f"{server.url}/api/users/check-email/"
        plain = await page.evaluate(FETCH, ["POST", url, body, None, "omit"])
        assert plain["status"] == 200 and plain["data"] == {"exists": False}, plain
        credentialed = await page.evaluate(FETCH, ["POST", url, body, None, "include"])
        assert credentialed["status"] == 0 and "Failed to fetch" in credentialed["error"], credentialed
        xhr = await page.evaluate(AXIOS_XHR, ["POST", url, body, None])
        assert xhr["status"] == 0, xhr
    finally:
        await page.context.close()


# The original client's axios response interceptor: on a 401, refresh with
# the stored refresh token (no single-flight: every failed request does it)
# on /api/users/refresh/, store the new pair, retry once.
INTERCEPTED_CALLS = """
async ([api, access, refresh, count]) => {
  const xhr = """ + XHR_REQUEST + """;
  const store = {access, refresh};
  const call = async () => {
    let answer = await xhr("GET", api + "/api/users/profile/", null, store.access);
    if (answer.status === 401) {
      const renewed = await xhr("POST", api + "/api/users/refresh/", {refresh: store.refresh}, null);
      if (renewed.status !== 200) return {status: renewed.status, refresh: renewed.status};
      store.access = renewed.data.access;
      store.refresh = renewed.data.refresh;
      answer = await xhr("GET", api + "/api/users/profile/", null, store.access);
      answer.refreshed = renewed.data;
    }
    return answer;
  };
  return Promise.all(Array.from({length: count}, call));
}
"""


async def test_concurrent_401s_refresh_without_logging_out(browser, start_server, page_origin) -> None:  # noqa: F811
    server = await start_server(cors_origins=page_origin)
    page = await open_page(browser, page_origin)
    try:
        email = unique_email("interceptor")
        registration = {"name": "Axios Student", "email": email, "password1": PASSWORD, "password2": PASSWORD,
                        "role": "student", "track": "DP"}
        created = await page.evaluate(FETCH, ["POST", f"{server.url}/api/auth/registration/", registration, None,
                                              "include"])
        assert created["status"] == 201, created
        # A stale access token: both requests fail together and both refresh
        # with the one stored refresh token.
        answers = await page.evaluate(INTERCEPTED_CALLS, [server.url, "stale", created["data"]["refresh"], 2])
        assert [a["status"] for a in answers] == [200, 200], answers
        assert all(a["data"]["email"] == email for a in answers)
        assert answers[0]["refreshed"] == answers[1]["refreshed"]  # the same successor pair
        # Still logged in: the pair goes on working and rotating.
        pair = answers[0]["refreshed"]
        again = await page.evaluate(INTERCEPTED_CALLS, [server.url, pair["access"], pair["refresh"], 1])
        assert again[0]["status"] == 200 and "refreshed" not in again[0]
        later = await page.evaluate(INTERCEPTED_CALLS, [server.url, "stale", pair["refresh"], 3])
        assert [a["status"] for a in later] == [200, 200, 200], later
    finally:
        await page.context.close()


async def test_the_profile_page_shows_a_students_trainer(app, api, open_tab) -> None:  # noqa: F811
    trainer = await register(api, role="trainer", track="FSD", name="Tina Trainer", email=unique_email("tr"))
    student = await register(api, track="FSD", email=unique_email("st"))
    alone = await register(api, track="DP", email=unique_email("alone"))
    assert trainer["user"]["role"] == "trainer"
    for user, shown in ((student, "Tina Trainer"), (alone, "—")):
        tab = await open_tab(app.url)
        await log_in(tab, user["user"]["email"])
        await tab.goto("/profile")
        details = tab.page.locator("#profile-details")
        await details.get_by_text(user["user"]["email"]).wait_for()
        row = details.locator("dt", has_text="Trainer")
        assert await row.count() == 1
        assert await row.locator("xpath=following-sibling::dd[1]").inner_text() == shown
