"""Drives the dashboard for tests/tests/e2e/dashboard.rs.

`browser` mode: headless Chromium through chromedriver's W3C WebDriver API
(plain HTTP from the standard library, no client package), logging in with
tokens, reading the DOM, pressing "Dump now", saving screenshots. `forge`
mode: POSTs a browser would never send (no or a wrong CSRF token, a viewer
session). `scale` mode: times the catalog and messages pages. Every mode
prints one JSON object of what it saw; the Rust test asserts on it.
Usage: dashboard_browser.py MODE CONFIG_JSON
"""

import base64
import concurrent.futures
import http.cookiejar
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Driver:
    """The few WebDriver commands the test needs."""

    def __init__(self, cfg):
        port = free_port()
        self.log = open(os.path.join(cfg["out"], "chromedriver.log"), "wb")
        self.proc = subprocess.Popen(
            [cfg["chromedriver"], f"--port={port}"], stdout=self.log, stderr=self.log
        )
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                if self.call("GET", "/status").get("ready"):
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("chromedriver not ready after 60s")
            time.sleep(0.2)
        self.profile = tempfile.mkdtemp(prefix="pgsnapman-chromium-")
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    # The coordinator's own CA signed the dashboard's certificate.
                    "acceptInsecureCerts": True,
                    "goog:chromeOptions": {
                        "binary": cfg["chromium"],
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-dev-shm-usage",
                            "--disable-gpu",
                            "--window-size=1400,1000",
                            f"--user-data-dir={self.profile}",
                        ],
                    },
                }
            }
        }
        self.sid = self.call("POST", "/session", caps)["sessionId"]

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path,
            method=method,
            data=data,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return json.load(resp)["value"]
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"webdriver {method} {path}: {e.read()[:500]!r}") from None

    def s(self, method, path, body=None):
        return self.call(method, f"/session/{self.sid}{path}", body)

    def go(self, url):
        self.s("POST", "/url", {"url": url})

    def url(self):
        return self.s("GET", "/url")

    def all(self, css):
        found = self.s("POST", "/elements", {"using": "css selector", "value": css})
        return [e[ELEMENT] for e in found]

    def one(self, css):
        """The first element `css` finds, waiting up to 10 s for it."""
        deadline = time.time() + 10
        while True:
            found = self.all(css)
            if found:
                return found[0]
            if time.time() > deadline:
                raise RuntimeError(f"no element {css} on {self.url()}")
            time.sleep(0.2)

    def text(self, el):
        return self.s("GET", f"/element/{el}/text")

    def attr(self, el, name):
        return self.s("GET", f"/element/{el}/attribute/{name}")

    def click(self, el):
        self.s("POST", f"/element/{el}/click", {})

    def type(self, el, text):
        self.s("POST", f"/element/{el}/value", {"text": text})

    def body(self):
        return self.text(self.one("body"))

    def shot(self, out, name):
        png = base64.b64decode(self.s("GET", "/screenshot"))
        with open(os.path.join(out, name), "wb") as f:
            f.write(png)

    def quit(self):
        try:
            self.s("DELETE", "")
        finally:
            self.proc.terminate()
            self.proc.wait(30)
            self.log.close()


def login(d, url, token):
    d.go(url + "/login")
    d.type(d.one("#token"), token)
    d.click(d.one("#login-submit"))


def wait_task(d, seconds=240):
    """Reloads a task page until the task ends; its last state."""
    deadline = time.time() + seconds
    d.one("#task-state")  # the form's answer has arrived
    state = ""
    while time.time() < deadline:
        try:
            state = d.text(d.one("#task-state"))
        except RuntimeError:
            # The page's own refresh replaced the document under us.
            state = ""
        if state in ("SUCCEEDED", "FAILED", "CANCELLED"):
            break
        time.sleep(1)
        d.go(d.url())
    return state


def restore_form(d, database, policy, confirm):
    """Fills the dump page's restore form and sends it."""
    d.type(d.one("form.restore input[name=database]"), database)
    d.click(d.one(f"form.restore select[name=existing] option[value={policy}]"))
    if confirm is not None:
        d.type(d.one("form.restore input[name=confirm]"), confirm)
    d.click(d.one("#restore-now"))


def browser(cfg):
    url, out, seen = cfg["url"], cfg["out"], {}
    d = Driver(cfg)
    try:
        d.go(url + "/jobs")
        seen["unauthenticated_lands_on"] = urllib.parse.urlparse(d.url()).path
        login(d, url, "psm_" + "x" * 43)
        seen["bad_token_error"] = [d.text(d.one("#login-error"))]

        login(d, url, cfg["operator"])
        seen["operator_role"] = d.attr(d.one("#me"), "data-role")
        d.go(url + "/catalog")
        seen["catalog_statuses"] = sorted(
            {d.attr(e, "data-status") for e in d.all("tr.dump")}
        )
        d.shot(out, "catalog.png")
        d.go(url + "/jobs")
        seen["stale_jobs"] = [int(d.attr(e, "data-job")) for e in d.all("tr.stale")]
        seen["jobs_text"] = d.body()
        # Names are text: nothing in them became an element.
        seen["injected_elements"] = len(d.all("main b")) + len(d.all("main script"))
        seen["operator_actions_on_jobs"] = len(d.all(".action"))
        d.shot(out, "jobs.png")

        d.click(d.one(f"#dump-now-{cfg['good_job']}"))
        seen["task_state"] = wait_task(d)
        seen["after_dump_now"] = urllib.parse.urlparse(d.url()).path
        d.shot(out, "task.png")
        d.click(d.one("#task-dump"))
        seen["new_dump_status"] = d.text(d.one("#dump-status"))
        dump_path = urllib.parse.urlparse(d.url()).path
        seen["new_dump_path"] = dump_path
        seen["operator_actions_on_dump"] = len(d.all(".action"))
        d.shot(out, "dump.png")

        d.click(d.one("#verify-now"))
        seen["verify_state"] = wait_task(d)
        # A destructive policy without the typed confirmation, then with it
        # (an operator: the Admin handler wants admin for it).
        d.go(url + dump_path)
        restore_form(d, "sample", "DROP", None)
        seen["drop_unconfirmed"] = [d.text(d.one("#error"))]
        d.go(url + dump_path)
        restore_form(d, "sample", "DROP", "sample")
        seen["drop_confirmed"] = [d.text(d.one("#error"))]
        d.go(url + dump_path)
        restore_form(d, "sample_copy", "RENAME", None)
        seen["restore_state"] = wait_task(d)
        d.shot(out, "restore-task.png")

        for page in ["/", "/restores", "/restore-jobs", "/unprotected", "/messages?level=ERROR"]:
            d.go(url + page)
            seen[f"page {page}"] = {
                "error": [d.text(e) for e in d.all("#error")],
                "text": d.body(),
            }
            name = page.strip("/").split("?")[0] or "fleet"
            d.shot(out, f"{name}.png")

        d.click(d.one("form.logout button"))
        d.one("#login")
        seen["after_logout"] = urllib.parse.urlparse(d.url()).path

        login(d, url, cfg["viewer"])
        seen["viewer_role"] = d.attr(d.one("#me"), "data-role")
        d.go(url + "/jobs")
        seen["viewer_actions_on_jobs"] = len(d.all(".action"))
        seen["viewer_post_forms_on_jobs"] = len(d.all("form[method=post]:not(.logout)"))
        d.shot(out, "viewer-jobs.png")
        d.go(url + seen["new_dump_path"])
        seen["viewer_actions_on_dump"] = len(d.all(".action"))
        d.shot(out, "viewer-dump.png")
    finally:
        d.quit()
    return seen


class Client:
    """A cookie-keeping HTTPS client that does not follow redirects."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    def __init__(self, url):
        self.url = url
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
            urllib.request.HTTPSHandler(context=tls),
            self.NoRedirect,
        )

    def request(self, path, form=None, headers=None):
        data = None if form is None else urllib.parse.urlencode(form).encode()
        req = urllib.request.Request(self.url + path, data=data, headers=headers or {})
        started = time.monotonic()
        try:
            with self.opener.open(req, timeout=120) as r:
                body = r.read().decode()
                return r.status, body, time.monotonic() - started
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), time.monotonic() - started

    def login(self, token):
        status, _, _ = self.request("/login", {"token": token})
        return status

    def csrf(self):
        _, body, _ = self.request("/jobs")
        m = re.search(r'name="csrf" value="([^"]+)"', body)
        return m.group(1) if m else ""


def forge(cfg):
    url, job, seen = cfg["url"], cfg["good_job"], {}
    path = f"/jobs/{job}/dump"
    anonymous = Client(url)
    seen["no_session"] = anonymous.request(path, {"csrf": "x"})[0]
    op = Client(url)
    seen["operator_login"] = op.login(cfg["operator"])
    seen["operator_no_csrf"] = op.request(path, {})[0]
    seen["operator_wrong_csrf"] = op.request(path, {"csrf": "A" * 43})[0]
    viewer = Client(url)
    seen["viewer_login"] = viewer.login(cfg["viewer"])
    status, body, _ = viewer.request(path, {"csrf": viewer.csrf()})
    seen["viewer_with_csrf"] = status
    seen["viewer_refusal"] = re.findall(r'id="error">([^<]*)<', body)
    seen["oversized_form"] = op.request(path, {"csrf": "x" * 20000})[0]
    evil = {"Origin": "https://evil.example"}
    seen["cross_origin_login"] = Client(url).request(
        "/login", {"token": cfg["operator"]}, evil
    )[0]
    seen["cross_origin_action"] = op.request(path, {"csrf": op.csrf()}, evil)[0]
    # Last: spend this address's allowance of failed logins (the gRPC
    # path's admin.unauthenticated_burst, 20 by default).
    # 100 guesses, 20 at a time: far faster than the 5/s refill.
    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        guesses = list(
            pool.map(lambda _: Client(url).login("psm_" + "y" * 43), range(100))
        )
    seen["guess_statuses"] = sorted(set(guesses))
    seen["guesses_refused"] = guesses.count(401)
    return seen


def scale(cfg):
    c, seen = Client(cfg["url"]), {}
    # The forge step spent this address's failed-login allowance; it refills.
    deadline = time.time() + 60
    while (status := c.login(cfg["operator"])) == 429 and time.time() < deadline:
        time.sleep(1)
    seen["login"] = status
    for name, path in [
        ("catalog_first", "/catalog"),
        ("catalog_middle", "/catalog?before=50000"),
        ("jobs", "/jobs"),
        ("messages_first", "/messages"),
        ("messages_errors", "/messages?level=ERROR"),
        ("messages_worker", "/messages?level=ERROR&worker=w-dash"),
        ("messages_other_worker", "/messages?level=ERROR&worker=nobody"),
        ("messages_job", f"/messages?level=ERROR&job={cfg['bad_job']}"),
        ("messages_other_job", f"/messages?level=ERROR&job={cfg['good_job']}"),
        ("bad_level", "/messages?level=LOUD"),
        ("bad_before", "/catalog?before=%3Cb%3E"),
        ("missing_dump", "/dumps/999999999"),
    ]:
        status, body, secs = c.request(path)
        rows = len(re.findall(r'<tr class="(?:dump|level-)', body))
        error = re.findall(r'id="error">([^<]*)<', body)
        seen[name] = {
            "status": status,
            "seconds": round(secs, 3),
            "rows": rows,
            "error": error,
        }
    return seen


if __name__ == "__main__":
    mode, cfg = sys.argv[1], json.loads(sys.argv[2])
    result = {"browser": browser, "forge": forge, "scale": scale}[mode](cfg)
    print(json.dumps(result))
