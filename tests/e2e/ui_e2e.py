#!/usr/bin/env python3
"""The web UI in headless Chromium over WebDriver (Selenium); run by
tests/e2e/ui.sh, which seeds the registry and passes what it pushed.

Prints "ok - ui-NAME" or "FAIL - ui-NAME: reason" per scenario and then
"ui: N passed, M failed"; exits 1 when a scenario failed.
"""
import argparse
import base64
import json
import os
import sys
import time
import traceback
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

WAIT = 60  # seconds: generous limits, never timing assertions


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Browser:
    """One headless Chromium session; `auth` = (user, password) sends
    Basic credentials with every request (as a browser does once logged in)."""

    def __init__(self, work, name, auth=None, size=(1280, 1000)):
        self.work = work
        self.name = name
        self.downloads = os.path.join(work, "downloads", name)
        os.makedirs(self.downloads, exist_ok=True)
        opts = webdriver.ChromeOptions()
        opts.binary_location = os.environ.get("WHARF_UI_CHROMIUM", "/usr/bin/chromium")
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                  "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                  "--disable-extensions", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  f"--window-size={size[0]},{size[1]}",
                  f"--user-data-dir={os.path.join(work, 'chrome-' + name)}"):
            opts.add_argument(a)
        opts.add_experimental_option("prefs", {
            "download.default_directory": self.downloads,
            "download.prompt_for_download": False,
            "safebrowsing.enabled": False,
        })
        service = Service(executable_path=os.environ.get("WHARF_UI_CHROMEDRIVER", "/usr/bin/chromedriver"),
                          log_output=os.path.join(work, f"chromedriver-{name}.log"))
        self.d = webdriver.Chrome(options=opts, service=service)
        self.d.set_page_load_timeout(WAIT)
        self.d.execute_cdp_cmd("Browser.setDownloadBehavior",
                               {"behavior": "allow", "downloadPath": self.downloads})
        if auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            self.d.execute_cdp_cmd("Network.enable", {})
            self.d.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                                   {"headers": {"Authorization": "Basic " + token}})

    def get(self, url):
        self.d.get(url)

    def text(self):
        return self.d.find_element(By.TAG_NAME, "body").text

    def source(self):
        return self.d.page_source

    def shot(self, name):
        path = os.path.join(self.work, "shots", name + ".png")
        # The whole page (at most 4000 px high), not only the viewport.
        m = self.d.execute_cdp_cmd("Page.getLayoutMetrics", {})
        size = m.get("cssContentSize") or m["contentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"],
                "height": min(size["height"], 4000), "scale": 1}
        shot = self.d.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True, "clip": clip})
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        return path

    def links(self, css):
        return [e.text for e in self.d.find_elements(By.CSS_SELECTOR, css)]

    def wait_for(self, cond, what):
        deadline = time.time() + WAIT
        while time.time() < deadline:
            try:
                v = cond()
                if v:
                    return v
            except Exception:  # the page may be changing under us
                pass
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    def quit(self):
        try:
            self.d.quit()
        except Exception:
            pass


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def api(base, path, auth):
    """GET base+path with Basic auth; (status, body text)."""
    req = urllib.request.Request(base + path)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", "Basic " + token)
    try:
        with urllib.request.urlopen(req, timeout=WAIT) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--index", required=True)
    p.add_argument("--sig", required=True)
    p.add_argument("--tool", required=True)
    a = p.parse_args()
    base, work = a.base, a.work
    host = base.split("://", 1)[1]
    alice = ("alice", "alice-pw")
    bob = ("bob", "bob-pw")
    browsers = {}

    def browser(name, auth=None, size=(1280, 1000)):
        if name not in browsers:
            browsers[name] = Browser(work, name, auth, size)
        return browsers[name]

    def sc_catalog_to_manifest_to_referrers():
        b = browser("alice", alice)
        b.get(base + "/")
        b.wait_for(lambda: "Repositories" in b.d.title, "the catalog")
        expect(b.d.current_url == base + "/ui/", f"/ redirects to /ui/: {b.d.current_url}")
        repos = b.links("#repositories a")
        expect(repos == ["secret/db", "team/app", "team/tools"], f"catalog: {repos}")
        expect("Logged in as alice" in b.text(), "the user is shown")
        b.shot("catalog")
        b.d.find_element(By.LINK_TEXT, "team/app").click()
        b.wait_for(lambda: b.d.find_elements(By.ID, "tags"), "the tag table")
        tags = b.links("a.tag")
        expect(tags == ["old", "v1", "v2"], f"tags: {tags}")
        expect(a.index[:19] in b.source(), "the index digest is on the repository page")
        b.shot("repository")
        b.d.find_element(By.LINK_TEXT, "v1").click()
        b.wait_for(lambda: b.d.find_elements(By.ID, "platforms"), "the platform tree")
        expect(b.d.find_element(By.ID, "digest").text == a.index, "the index digest")
        expect(b.d.find_element(By.ID, "media-type").text == "application/vnd.oci.image.index.v1+json",
               "media type")
        plats = [e.text for e in b.d.find_elements(By.CSS_SELECTOR, "#platforms .platform")]
        expect(plats == ["linux/amd64", "linux/arm64"], f"platforms: {plats}")
        cmds = [e.text for e in b.d.find_elements(By.CSS_SELECTOR, "code.cmd")]
        expect(f"docker pull {host}/team/app@{a.index}" in cmds, f"docker pull command: {cmds}")
        expect(f"podman pull {host}/team/app@{a.index}" in cmds, f"podman pull command: {cmds}")
        # The copy button (the page's one script) puts the command on the clipboard.
        b.d.execute_cdp_cmd("Browser.grantPermissions", {
            "origin": base, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
        btn = b.d.find_element(By.CSS_SELECTOR, "button.copy")
        btn.click()
        b.wait_for(lambda: btn.text == "Copied", "the copy button to say Copied")
        refs = b.d.find_element(By.ID, "referrers").text
        expect("application/vnd.dev.cosign.signature.v1+json" in refs, f"referrer type: {refs}")
        expect(a.sig[:19] in refs, f"referrer digest: {refs}")
        b.shot("manifest-index")
        # down the tree to a platform manifest: layers and config highlights
        b.d.find_element(By.CSS_SELECTOR, "#platforms li a").click()
        b.wait_for(lambda: "Configuration" in b.text(), "the config highlights")
        t = b.text()
        expect("linux/amd64" in t and "layer 1" in t, "platform image tree")
        b.shot("manifest-image")
        # back, then to the referrer: its page names its subject
        b.d.back()
        b.wait_for(lambda: b.d.find_elements(By.ID, "referrers"), "the index page again")
        b.d.find_element(By.CSS_SELECTOR, "#referrers a").click()
        b.wait_for(lambda: "Subject" in b.text(), "the referrer's page")
        expect(a.index in b.text(), "the referrer names its subject")
        b.shot("referrer")

    def sc_search_with_the_keyboard():
        b = browser("alice", alice)
        b.get(base + "/ui/")
        box = b.d.find_element(By.ID, "q")
        # The label names the box (accessible name).
        label = b.d.find_element(By.CSS_SELECTOR, "label[for=q]").text
        expect(label == "Search repositories", f"label: {label}")
        box.send_keys("tool", Keys.ENTER)
        b.wait_for(lambda: "q=tool" in b.d.current_url, "the search results")
        found = b.links("#repositories a")
        expect(found == ["team/tools"], f"search 'tool': {found}")
        b.shot("search")
        b.get(base + "/ui/?q=team&match=prefix")
        found = b.links("#repositories a")
        expect(found == ["team/app", "team/tools"], f"prefix 'team': {found}")
        # Tab from the top reaches the skip link first.
        b.d.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
        active = b.d.switch_to.active_element.text
        expect(active == "Skip to content", f"first tab stop: {active!r}")

    def sc_download_a_file_of_a_package():
        b = browser("alice", alice)
        b.get(base + "/ui/r/team/tools/-/manifest/1.0")
        cmds = [e.text for e in b.d.find_elements(By.CSS_SELECTOR, "code.cmd")]
        expect(any(c.startswith(f"wharf pull {host}/team/tools@sha256:") for c in cmds), f"wharf pull: {cmds}")
        b.d.find_element(By.CSS_SELECTOR, "a.list-files").click()
        b.wait_for(lambda: b.d.find_elements(By.ID, "file-list"), "the file list")
        listed = b.d.find_element(By.ID, "file-list").text
        expect("bin/tool" in listed and "docs/README.md" in listed, f"files: {listed}")
        b.shot("files")
        b.d.find_element(By.CSS_SELECTOR, "a[aria-label='Download bin/tool']").click()
        path = os.path.join(b.downloads, "tool")
        b.wait_for(lambda: os.path.exists(path) and not os.path.exists(path + ".crdownload"), "the download")
        with open(path, "rb") as f, open(a.tool, "rb") as g:
            expect(f.read() == g.read(), "downloaded bytes differ from the pushed file")

    def sc_delete_a_tag_after_confirming():
        b = browser("alice", alice)
        b.get(base + "/ui/r/team/app")
        b.d.find_element(By.CSS_SELECTOR, "a[aria-label='Delete tag old']").click()
        b.wait_for(lambda: b.d.find_elements(By.ID, "confirm-delete"), "the confirmation page")
        expect("Delete tag old from team/app?" in b.text(), "confirmation question")
        # Nothing is deleted until confirmed.
        st, body = api(base, "/v2/team/app/tags/list", alice)
        expect("old" in json.loads(body)["tags"], "old went before the confirmation")
        b.shot("delete-confirm")
        b.d.find_element(By.ID, "confirm-delete").click()
        b.wait_for(lambda: b.d.find_elements(By.ID, "deleted"), "the notice after the delete")
        tags = b.links("a.tag")
        expect(tags == ["v1", "v2"], f"tags after the delete: {tags}")
        st, body = api(base, "/v2/team/app/tags/list", alice)
        expect(st == 200 and json.loads(body)["tags"] == ["v1", "v2"], f"API after the delete: {body}")

    def sc_no_pull_permission_sees_nothing():
        b = browser("bob", bob)
        b.get(base + "/ui/")
        repos = b.links("#repositories a")
        expect(repos == ["team/app", "team/tools"], f"bob's catalog: {repos}")
        expect("secret" not in b.source(), "secret/db named on bob's catalog")
        b.shot("catalog-bob")
        b.get(base + "/ui/?q=secret")
        expect(b.links("#repositories a") == [], "search finds secret/db for bob")
        b.get(base + "/ui/r/secret/db")
        expect("Not allowed" in b.text(), f"bob on secret/db: {b.text()[:200]}")
        expect("s1-hidden" not in b.source(), "a tag of secret/db shown to bob")
        b.get(base + "/ui/r/secret/db/-/manifest/s1-hidden")
        expect("s1-hidden" not in b.text().replace("/ui/r/secret/db/-/manifest/s1-hidden", ""), "manifest page")
        expect("Not allowed" in b.text(), "bob on a secret manifest")
        # not through the JSON either, fetched by the browser with bob's login
        b.get(base + "/v2/_catalog")
        expect("secret" not in b.text() and "team/app" in b.text(), f"/v2/_catalog for bob: {b.text()}")
        b.get(base + "/v2/secret/db/tags/list")
        expect("s1-hidden" not in b.text() and "DENIED" in b.text(), f"tags list for bob: {b.text()}")
        # bob may pull team/app but not delete: no delete links
        b.get(base + "/ui/r/team/app")
        expect(b.d.find_elements(By.CSS_SELECTOR, "a.danger") == [], "delete links shown to bob")

    def sc_login_with_url_credentials():
        # A person's login: the browser answers the UI's Basic challenge.
        b = browser("login")
        user_base = base.replace("://", "://bob:bob-pw@")
        b.get(user_base + "/ui/login")
        b.wait_for(lambda: "Repositories" in b.d.title, "the catalog after logging in")
        expect("Logged in as bob" in b.text(), f"after login: {b.text()[:200]}")

    def sc_readable_on_a_phone():
        b = browser("phone", alice, size=(390, 844))
        b.d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
        b.get(base + f"/ui/r/team/app/-/manifest/{a.index}")
        overflow = b.d.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        expect(overflow <= 1, f"the page scrolls sideways by {overflow}px on a phone")
        b.d.save_screenshot(os.path.join(work, "shots", "phone-manifest.png"))
        b.get(base + "/ui/r/team/app")
        overflow = b.d.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        expect(overflow <= 1, f"the repository page scrolls sideways by {overflow}px on a phone")
        b.d.save_screenshot(os.path.join(work, "shots", "phone-repository.png"))

    scenarios = [
        sc_catalog_to_manifest_to_referrers,
        sc_search_with_the_keyboard,
        sc_download_a_file_of_a_package,
        sc_delete_a_tag_after_confirming,
        sc_no_pull_permission_sees_nothing,
        sc_login_with_url_credentials,
        sc_readable_on_a_phone,
    ]
    passed = failed = 0
    for sc in scenarios:
        name = "ui-" + sc.__name__[3:].replace("_", "-")
        try:
            sc()
            print(f"ok - {name}", flush=True)
            passed += 1
        except Exception as e:  # report and go on with the next scenario
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            print(f"FAIL - {name}: {reason}", flush=True)
            log(traceback.format_exc())
            for n, br in browsers.items():
                try:
                    br.d.save_screenshot(os.path.join(work, "shots", f"failed-{name}-{n}.png"))
                except Exception:
                    pass
            failed += 1
    for br in browsers.values():
        br.quit()
    print(f"ui: {passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
