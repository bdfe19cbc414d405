"""Headless Debian Chromium for the browser suite, through chromedriver, with the flags this
machine needs: no sandbox as root, and no background networking (the network is closed, and
Chromium's own connections would be refused many at a time)."""

import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]


def start_chromium(window="1200,900", flags=(), prefs=None):
    """A new Chromium with its own empty profile; `flags` are added to the common ones, `prefs`
    set as Chromium preferences. The caller quits it."""
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in [*FLAGS, f"--window-size={window}", f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}", *flags]:
        options.add_argument(flag)
    if prefs:
        options.add_experimental_option("prefs", prefs)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(60)
    return driver
