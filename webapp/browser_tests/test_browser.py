"""Headless Chromium clicks through the real pages of a real `mask-web` server on 127.0.0.1:
log in, create a user, change the password, upload a photo, see the result, open every history
tab. Screenshots go to target/screenshots/."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("MASK_WEB_BIN", ROOT / "target" / "debug" / "mask-web"))
PHOTO = (ROOT / "fixtures" / "photos" / "maksssksksss0.png").resolve()
SHOTS = ROOT / "target" / "screenshots"
ADMIN_PASSWORD = "browser-admin-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    if not BINARY.exists():
        pytest.fail(f"{BINARY} missing: build it with `cargo build -p webapp` (make test does)")
    port = free_port()
    data = tempfile.mkdtemp(prefix="mask-web-browser-")
    env = dict(os.environ, MASK_WEB_ADDR=f"127.0.0.1:{port}", MASK_WEB_DATA_DIR=data,
               MASK_WEB_MODELS_DIR=str(ROOT / "models"), MASK_WEB_ADMIN_PASSWORD=ADMIN_PASSWORD)
    proc = subprocess.Popen([str(BINARY)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"mask-web exited: {proc.stdout.read().decode()}")
            time.sleep(0.1)
    yield base, Path(data)
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
                 "--window-size=1200,900", f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(60)
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
