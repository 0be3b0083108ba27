"""End to end: a user adds a Custom Token connection in the Airflow UI, tests it, breaks it, reopens it.

Runs headless Debian Chromium (Playwright) against a real ``airflow api-server`` on 127.0.0.1 with a
SQLite metadata database, and the bundled demo API as the service the connection authenticates to.
The Test button makes the api-server run ``CustomTokenHook.test_connection()``, which fetches a token
from the demo API and GETs the test endpoint with it.
"""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

import pytest

from .conftest import ARTIFACTS, CHROMIUM

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: run scripts/install-browser (as root) first"
    ),
]

CONN_ID = "demo_api"
PLACEHOLDER_HOST = "https://{serverName}.example.com/api"
FORM_SCREENSHOT = ARTIFACTS / "connection-form.png"
TOAST_TIMEOUT = 60_000  # ms; the api-server imports the hook on the first Test
FIRST_PAGE_TIMEOUT = 120_000  # ms; the first page load makes a cold api-server build its caches


# --- How a user finds things on the page -----------------------------------------------------------


def field(scope: Any, label: str) -> Any:
    """The form field (label, input, description) whose label reads ``label`` (a trailing ``*`` aside).

    The extra fields' labels are not tied to their inputs (``for`` and ``id`` differ), so the field is
    found as the group that holds the label.
    """
    label_text = re.compile(rf"^\s*{re.escape(label)}\s*\*?\s*$")
    return scope.get_by_role("group").filter(has=scope.page.locator("label").filter(has_text=label_text))


def text_of(scope: Any, label: str) -> str:
    return str(field(scope, label).get_by_role("textbox").input_value())


def fill_text(scope: Any, label: str, value: str) -> None:
    field(scope, label).get_by_role("textbox").fill(value)


def fill_json(scope: Any, label: str, value: Any, wait_for: str | None = None) -> None:
    """Paste JSON into a JSON-editor field, as a user would (typing fights the editor's auto-format).

    Waits until the editor shows ``wait_for`` (by default the first key of an object ``value``).
    """
    editor = field(scope, label).locator(".view-lines")
    scope.page.evaluate("text => navigator.clipboard.writeText(text)", json.dumps(value))
    editor.click()
    scope.page.keyboard.press("ControlOrMeta+A")
    scope.page.keyboard.press("ControlOrMeta+V")
    editor.filter(has_text=next(iter(value)) if wait_for is None else wait_for).wait_for()


def json_editor_text(scope: Any, label: str) -> str:
    return str(field(scope, label).locator(".view-lines").inner_text()).replace("\u00a0", " ")


def open_section(dialog: Any, name: str) -> Any:
    """Expand a section of the connection dialog and return it (opening one closes the others)."""
    trigger = dialog.get_by_role("button", name=name, exact=True)
    if trigger.get_attribute("aria-expanded") != "true":
        trigger.click()
    # The section is the region the trigger controls. (Not found by name: the "Extra Fields" trigger's
    # id holds a space, which breaks the region's aria-labelledby.)
    section = dialog.locator(f'[id="{trigger.get_attribute("aria-controls")}"]')
    section.wait_for()
    return section


def connection_row(page: Any, conn_id: str = CONN_ID) -> Any:
    return page.get_by_role("row").filter(has=page.get_by_role("cell", name=conn_id, exact=True))


def edit_dialog(page: Any, conn_id: str = CONN_ID) -> Any:
    connection_row(page, conn_id).get_by_role("button", name="Edit Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for()
    return dialog


def save(dialog: Any) -> None:
    dialog.get_by_role("button", name="Save").click()
    dialog.wait_for(state="hidden")


def press_test(page: Any, expected_title: str, artefact: str, conn_id: str = CONN_ID) -> str:
    """Press the row's Test button; return the text of the toast titled ``expected_title`` and close it."""
    connection_row(page, conn_id).get_by_role("button", name="Test Connection").click()
    toast = page.get_by_role("status").filter(has_text=expected_title).last
    toast.wait_for(timeout=TOAST_TIMEOUT)
    toast.screenshot(path=str(ARTIFACTS / artefact), animations="disabled")
    text = str(toast.inner_text())
    close = toast.get_by_role("button")
    if close.count():
        close.first.click()
        toast.wait_for(state="detached")
    return text


def screenshot_whole(dialog: Any, name: str) -> None:
    """Save a screenshot of the whole dialog (a tall viewport shows it without scrolling)."""
    page = dialog.page
    viewport = page.viewport_size
    page.set_viewport_size({"width": 1400, "height": 4200})
    dialog.screenshot(path=str(ARTIFACTS / name), animations="disabled")
    page.set_viewport_size(viewport)


def masked_inputs(section: Any) -> list[str]:
    """Names (or ids) of the section's inputs and text areas whose value is ``***``."""
    script = """s => [...s.querySelectorAll('input, textarea')]
        .filter(e => e.value === '***').map(e => e.name || e.id)"""
    return list(section.evaluate(script))


def saved_connection(api_url: str, conn_id: str = CONN_ID) -> dict[str, Any]:
    """The connection as the REST API returns it (redacted the way the UI shows it)."""
    with urllib.request.urlopen(f"{api_url}/api/v2/connections/{conn_id}", timeout=30) as response:
        return dict(json.load(response))


def work_around_port_zero(page: Any) -> None:
    """Send ``port: null`` instead of ``0`` when the UI tests a connection that has no port.

    Airflow 3.3.1 and 3.3.2 reject the Test button for every connection without a port: the UI sends
    ``port: Number(null)``, i.e. 0, the API compares it with the stored NULL, sees "another destination"
    and answers 400 Bad Request without running the hook (apache/airflow#73298, fixed upstream in the
    API). This provider hides the port field, so its connections have none. Rewriting that one value
    keeps the rest of the Test button's path real; with a fixed Airflow it changes nothing.
    """

    def rewrite(route: Any) -> None:
        body = route.request.post_data_json
        if isinstance(body, dict) and body.get("port") == 0:
            route.continue_(post_data=json.dumps({**body, "port": None}))
        else:
            route.continue_()

    page.route("**/api/v2/connections/test", rewrite)


# --- The story ---------------------------------------------------------------------------------------


def test_add_test_break_and_reopen_a_custom_token_connection(page: Any, api_server: Any, demo: Any) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    work_around_port_zero(page)

    # The all-admins simple auth manager signs the browser in on the first visit: no login form.
    page.goto(f"{api_server.url}/connections", timeout=FIRST_PAGE_TIMEOUT)
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")

    # Choose the type, then fill the labelled fields the way a user would.
    dialog.get_by_label("Connection ID").fill(CONN_ID)
    dialog.get_by_label("Connection Type").click()
    page.keyboard.type("Custom Token")
    page.keyboard.press("Enter")
    standard = open_section(dialog, "Standard Fields")
    standard.get_by_label("Base URL").fill(demo.url)
    standard.get_by_label("Login").fill("demo")
    standard.get_by_label("Password").fill("demo-secret")
    assert standard.get_by_label("Base URL").get_attribute("placeholder") == PLACEHOLDER_HOST
    assert "{login}" in str(standard.get_by_label("Login").get_attribute("placeholder"))
    assert "{password}" in str(standard.get_by_label("Password").get_attribute("placeholder"))
    assert standard.get_by_text("Port", exact=True).count() == 0
    assert standard.get_by_text("Schema", exact=True).count() == 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    dialog.screenshot(path=str(ARTIFACTS / "connection-form-standard.png"))

    extras = open_section(dialog, "Extra Fields")
    fill_text(extras, "Key", "demo")
    fill_text(extras, "Access Token Endpoint", f"{demo.url}/oauth2/v1/token")
    fill_json(extras, "Access Token Parameters", {"client_id": "{login}", "client_secret": "{password}"})
    fill_text(extras, "Test Endpoint", "/api/v1/whoami")

    # The rest keeps its defaults, pre-filled: selects show their value, inputs theirs.
    assert "POST" in field(extras, "Access Token Verb").inner_text()
    assert "form" in field(extras, "Access Token Body Format").inner_text()
    assert "header" in field(extras, "Token Parameter Type").inner_text()
    realm = field(extras, "Realm").inner_text()
    for region in ("us", "eu", "ap"):
        assert f"https://{region}.api.prod.airkit.com/internal/sessions/v1/auth/callback" in realm
    assert text_of(extras, "Token Parameter Name") == "Authorization"
    assert text_of(extras, "Token Parameter Value Template") == "Bearer {token}"
    assert text_of(extras, "Token Location") == "access_token"
    assert text_of(extras, "Expiry Location") == "expires_in"
    assert field(extras, "Default Lifetime (s)").get_by_role("spinbutton").input_value() == "3600"
    assert field(extras, "Verify TLS").get_by_role("checkbox").is_checked()
    assert "401" in json_editor_text(extras, "Refresh On Status")

    screenshot_whole(dialog, FORM_SCREENSHOT.name)  # the artefact: the filled form

    save(dialog)
    connection_row(page).wait_for()

    # The form saved typed, unprefixed extras, which is what the hook reads.
    stored = saved_connection(api_server.url)
    extra = json.loads(stored["extra"])
    assert (stored["conn_type"], stored["host"], stored["login"]) == ("custom_token", demo.url, "demo")
    assert not [key for key in extra if key.startswith("extra__")]
    assert extra["integration_key"] == "demo"
    assert extra["access_verb"] == "POST"
    assert extra["access_parameters"] == {"client_id": "{login}", "client_secret": "***"}  # API redacts
    assert extra["refresh_on"] == [401]
    assert extra["access_lifetime"] == 3600
    assert extra["verify"] is True

    # Test: the api-server runs the hook, which gets a token from the demo API and calls /api/v1/whoami.
    token_requests, api_requests = len(demo.token_log), len(demo.api_log)
    success = press_test(page, "Test Connection Successful", "test-button-success.png")
    assert "Token obtained" in success, success
    assert "/api/v1/whoami answered 200" in success, success
    token_request = demo.token_log[token_requests:][-1]
    assert token_request["form"] == {"client_id": "demo", "client_secret": "demo-secret"}
    assert [r["path"] for r in demo.api_log[api_requests:]] == ["/api/v1/whoami"]

    # Break the password and test again: the message names the failing step and the HTTP status.
    dialog = edit_dialog(page)
    open_section(dialog, "Standard Fields").get_by_label("Password").fill("wrong-secret")
    save(dialog)
    failure = press_test(page, "Test Connection Failed", "test-button-failure.png")
    assert "Token request failed" in failure, failure
    assert "401" in failure, failure
    assert "wrong-secret" not in failure, failure
    assert demo.token_log[-1]["form"]["client_secret"] == "wrong-secret"

    # Reopen the saved connection: only the password and secret-named parameters are shown as ***.
    dialog = edit_dialog(page)
    standard = open_section(dialog, "Standard Fields")
    assert standard.get_by_label("Base URL").input_value() == demo.url
    assert masked_inputs(standard) == ["password"]

    extras = open_section(dialog, "Extra Fields")
    assert text_of(extras, "Key") == "demo"
    assert masked_inputs(extras) == []
    parameters = json_editor_text(extras, "Access Token Parameters")
    assert [line.strip() for line in parameters.splitlines() if "***" in line] == ['"client_secret": "***"']
    assert '"client_id": "{login}"' in parameters, parameters
    assert text_of(extras, "Token Parameter Value Template") == "Bearer {token}"
    screenshot_whole(dialog, "connection-reopened.png")


LOGIN_CONN_ID = "demo_login"
LOGIN_STEPS = [
    {"endpoint": "/login/v1/page", "verb": "GET", "outputs": {"nonce": "nonce"}},
    {
        "endpoint": "/login/v1/sign-in",
        "verb": "POST",
        "parameters": {"username": "{login}", "password": "{password}", "nonce": "{nonce}"},
    },
]


def test_add_a_login_steps_and_refresh_token_connection_with_the_new_fields(
    page: Any, api_server: Any, demo: Any
) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    work_around_port_zero(page)

    page.goto(f"{api_server.url}/connections", timeout=FIRST_PAGE_TIMEOUT)
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")

    dialog.get_by_label("Connection ID").fill(LOGIN_CONN_ID)
    dialog.get_by_label("Connection Type").click()
    page.keyboard.type("Custom Token")
    page.keyboard.press("Enter")
    standard = open_section(dialog, "Standard Fields")
    standard.get_by_label("Base URL").fill(demo.url)
    standard.get_by_label("Login").fill("qa")
    standard.get_by_label("Password").fill("qa-secret")

    # A login in two steps (a login page with a nonce, then a sign-in), then the token for its session.
    extras = open_section(dialog, "Extra Fields")
    fill_text(extras, "Key", "acmelogin")
    fill_text(extras, "Access Token Endpoint", f"{demo.url}/login/v1/token")
    # The steps are a list of objects: a JSON editor, not the text area of a list of strings.
    steps = field(extras, "Login Steps")
    assert steps.get_by_placeholder("Enter each string on a new line").count() == 0, steps.inner_text()
    fill_json(extras, "Login Steps", LOGIN_STEPS, wait_for="/login/v1/sign-in")
    fill_text(extras, "Refresh Token Location", "refresh_token")
    fill_text(extras, "Test Endpoint", "/api/v1/whoami")

    # The refresh token fields: the initial one is a secret (a password input, left empty here: set, the
    # first token would come from a refresh request), the others keep their defaults.
    initial = field(extras, "Initial Refresh Token").locator("input")
    assert initial.get_attribute("type") == "password"
    assert initial.input_value() == ""
    assert "{refresh_token}" in json_editor_text(extras, "Refresh Token Parameters")
    assert "POST" in field(extras, "Refresh Token Verb").inner_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot_whole(dialog, "connection-form-login-steps.png")

    save(dialog)
    connection_row(page, LOGIN_CONN_ID).wait_for()

    stored = saved_connection(api_server.url, LOGIN_CONN_ID)
    extra = json.loads(stored["extra"])
    assert (stored["conn_type"], stored["host"], stored["login"]) == ("custom_token", demo.url, "qa")
    assert extra["integration_key"] == "acmelogin"
    assert extra["access_endpoint"] == f"{demo.url}/login/v1/token"
    redacted_sign_in = {**LOGIN_STEPS[1], "parameters": {**LOGIN_STEPS[1]["parameters"], "password": "***"}}
    assert extra["access_steps"] == [LOGIN_STEPS[0], redacted_sign_in]  # the API redacts "password"
    assert extra["refresh_path"] == "refresh_token"
    assert extra["initial_refresh_token"] is None

    # Test: the hook opens the login page, signs in, gets the token for the session, calls whoami.
    before = demo.stats()
    success = press_test(page, "Test Connection Successful", "test-button-login-steps.png", LOGIN_CONN_ID)
    assert "Token obtained" in success, success
    after = demo.stats()
    assert after["login_pages"] - before["login_pages"] == 1
    assert after["logins"] - before["logins"] == 1

    # Reopen it: the steps are shown in their JSON editor, the password is masked.
    dialog = edit_dialog(page, LOGIN_CONN_ID)
    standard = open_section(dialog, "Standard Fields")
    assert masked_inputs(standard) == ["password"]
    extras = open_section(dialog, "Extra Fields")
    steps = json_editor_text(extras, "Login Steps")
    assert "/login/v1/sign-in" in steps, steps
    assert "/login/v1/page" in steps, steps
    screenshot_whole(dialog, "connection-reopened-login-steps.png")
