"""Headless Chromium clicks through the real pages of a real `mask-web` server on 127.0.0.1:
log in, create a user, change the password, upload a photo, see the result, open every history
tab. Screenshots go to target/screenshots/."""

from __future__ import annotations

import http.server
import sys
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test_support"))
from chromium import start_chromium  # noqa: E402
from mask_web_process import PHOTOS, ROOT, MaskWebProcess, base_env, free_port  # noqa: E402

PHOTO = (PHOTOS / "maksssksksss0.png").resolve()
SHOTS = ROOT / "target" / "screenshots"
ADMIN_PASSWORD = "browser-admin-password"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base_dir = tmp_path_factory.mktemp("browser")
    port = free_port()
    env = base_env(base_dir / "data", port, ADMIN_PASSWORD)
    proc = MaskWebProcess(base_dir / "data", base_dir / "server.log", env, base_dir, port)

    def ready():
        with urllib.request.urlopen(proc.url + "/healthz", timeout=1) as r:
            return r.status == 200

    proc.wait_until(ready, 60, 0.1)
    yield proc.url, proc.data_dir
    proc.stop()


@pytest.fixture(scope="module")
def browser():
    driver = start_chromium("1200,900")
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def shot(driver, name: str) -> None:
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 1000


def fill(driver, field_id: str, value: str) -> None:
    el = driver.find_element(By.ID, field_id)
    el.clear()
    el.send_keys(value)


def wait_text(driver, text: str, timeout: float = 60) -> None:
    WebDriverWait(driver, timeout).until(lambda d: text in d.page_source)


def test_log_in_manage_users_change_password_upload_and_browse_history(server, browser):
    base, data = server
    d = browser
    d.get(base + "/")
    assert "/login" in d.current_url
    shot(d, "01-login")
    fill(d, "username", "admin")
    fill(d, "password", ADMIN_PASSWORD)
    d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_text(d, "Welcome, admin")
    shot(d, "02-home")

    d.find_element(By.LINK_TEXT, "User management").click()
    d.find_element(By.LINK_TEXT, "New user").click()
    fill(d, "username", "browser-user")
    fill(d, "email", "browser-user@example.com")
    d.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    wait_text(d, "User created; the invitation is on its way.")
    assert "browser-user@example.com" in d.page_source
    shot(d, "03-users")
    outbox = list((data / "outbox").glob("*.eml"))
    assert outbox, "the invitation was written to the outbox"

    d.get(base + "/password/change")
    fill(d, "old_password", ADMIN_PASSWORD)
    fill(d, "new_password", "a-brand-new-admin-password")
    fill(d, "confirm_password", "a-brand-new-admin-password")
    d.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    wait_text(d, "Your password has been changed.")
    shot(d, "04-password-changed")

    d.get(base + "/upload")
    d.find_element(By.ID, "file").send_keys(str(PHOTO))
    shot(d, "05-upload")
    d.find_element(By.CSS_SELECTOR, "#upload-form button[type=submit]").click()
    WebDriverWait(d, 120).until(ec.presence_of_element_located((By.ID, "verdict")))
    assert "/results/" in d.current_url
    verdict = d.find_element(By.ID, "verdict").text
    assert verdict in ("some faces wearing masks", "all wearing masks", "no one wears mask", "no face detected")
    assert len(d.find_elements(By.CSS_SELECTOR, "#faces tbody tr")) >= 2
    # Both images load (naturalWidth > 0 means the browser decoded them).
    for img in d.find_elements(By.CSS_SELECTOR, ".pair img"):
        assert d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0
    shot(d, "06-result")

    d.get(base + "/history")
    for key in ["all", "no_face", "all_masked", "none_masked", "some_masked"]:
        d.find_element(By.ID, f"tab-{key}").click()
        WebDriverWait(d, 30).until(lambda drv: f"tab={key}" in drv.current_url)
        active = d.find_element(By.CSS_SELECTOR, ".tabs a.active")
        assert active.get_attribute("id") == f"tab-{key}"
        shot(d, f"07-history-{key}")
    d.find_element(By.ID, "tab-all").click()
    assert len(d.find_elements(By.CSS_SELECTOR, "#entries li")) == 1


class _Elsewhere(http.server.BaseHTTPRequestHandler):
    """A page on a second loopback address that must never be reached."""

    hits = 0

    def do_GET(self):  # noqa: N802 (the handler's API)
        type(self).hits += 1
        body = b"<html><body><h1 id=elsewhere>elsewhere</h1></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("trick", ["/\t/", "/\n/", "/\r/", "/\\", "\\\\", "//", "/%09/"])
def test_login_next_never_leaves_the_site(server, browser, trick):
    """`/login?next=/<TAB>/other-host/` must not send the browser to the other host after
    login: browsers strip tabs and newlines from a Location, and read a backslash as a slash."""
    base, _ = server
    other = http.server.HTTPServer(("127.0.0.2", 0), _Elsewhere)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        target = f"{trick}127.0.0.2:{other.server_address[1]}/"
        d = browser
        d.delete_all_cookies()
        d.get(base + "/login?next=" + urllib.parse.quote(target, safe=""))
        fill(d, "username", "admin")
        fill(d, "password", "a-brand-new-admin-password")
        d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        WebDriverWait(d, 30).until(lambda drv: "/login" not in drv.current_url)
        assert d.current_url.startswith(base + "/"), d.current_url
        assert _Elsewhere.hits == 0, f"the browser reached the other host via {trick!r}"
    finally:
        other.shutdown()
        other.server_close()
