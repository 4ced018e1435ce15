"""Headless Chromium for the views' browser tests (test_vis_browser.py) and the documentation's
screenshots (docs/img/pictures/screenshots.py): Debian's chromium and chromedriver driven by
selenium, which never downloads anything (the driver's path is given, SE_OFFLINE is set).
CIRCUITS_CHROMIUM / CIRCUITS_CHROMEDRIVER override /usr/bin/chromium and /usr/bin/chromedriver."""

from __future__ import annotations

import os
from typing import List

CHROMIUM = os.environ.get("CIRCUITS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CIRCUITS_CHROMEDRIVER", "/usr/bin/chromedriver")


def missing() -> List[str]:
    """What is not installed, each with how to install it."""
    out = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        out.append("the Python package selenium (pip install selenium; bindings/python/run_tests.sh installs it)")
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            out.append(f"{path} (apt-get install --no-install-recommends {pkg} fonts-dejavu-core; .ci/install-deps "
                       f"installs it)")
    return out


def chrome(scale: float = 1.0, width: int = 1300, height: int = 1100):
    """A headless Chromium at a device scale factor, with the page's console captured (level ALL:
    driver.get_log("browser")). RuntimeError saying what to install when something is missing."""
    lack = missing()
    if lack:
        raise RuntimeError("the browser needs " + " and ".join(lack))
    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must not fetch anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={width},{height}",
              f"--force-device-scale-factor={scale}", "--hide-scrollbars", "--disable-extensions",
              "--disable-background-networking", "--no-first-run", "--lang=en-US"):
        opts.add_argument(a)
    opts.binary_location = CHROMIUM
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # a sanitizer build's runtime (run_tests.sh preloads it into Python) is not Chromium's
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")}
    return webdriver.Chrome(service=Service(CHROMEDRIVER, env=env), options=opts)
