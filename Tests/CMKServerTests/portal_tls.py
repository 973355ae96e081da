"""The portal over HTTPS on a real host name, in headless Chromium (Debian's, through Selenium).

Run by PortalTests against a `cmk serve` with TLS whose certificate a CA made by the test
issued to cmk.example.test:

    portal_tls.py --base https://cmk.example.test:PORT --ca CA.pem --home DIR

The browser resolves the name to 127.0.0.1 (a host resolver rule) and trusts the CA through
the NSS database in DIR/.pki/nssdb, as a person's browser trusts a company CA: no certificate
error is ignored. It logs in, checks the session cookie (Secure, HttpOnly, SameSite=Strict,
host-only on the name), reloads (the cookie brings the session back) and makes a change (the
cookie and the CSRF header together). PORTAL_USERNAME, PORTAL_PASSWORD and PORTAL_TOTP_CODE
come from the environment, never from arguments.
"""
import argparse, json, os, subprocess, urllib.parse
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

parser = argparse.ArgumentParser()
parser.add_argument("--base", required=True)
parser.add_argument("--ca", required=True)
parser.add_argument("--home", required=True)
args = parser.parse_args()
host = urllib.parse.urlparse(args.base).hostname

database = "sql:" + os.path.join(args.home, ".pki", "nssdb")
os.makedirs(os.path.join(args.home, ".pki", "nssdb"), exist_ok=True)
subprocess.run(["certutil", "-d", database, "-N", "--empty-password"], check=True)
subprocess.run(["certutil", "-d", database, "-A", "-t", "C,,", "-n", "OpenKCM test CA", "-i", args.ca], check=True)
os.environ["HOME"] = args.home   # Chromium reads the NSS database from $HOME

options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for argument in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
                 "--host-resolver-rules=MAP %s 127.0.0.1" % host, "--user-data-dir=" + os.path.join(args.home, "profile")]:
    options.add_argument(argument)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
try:
    wait = WebDriverWait(driver, 20)
    driver.get(args.base + "/")
    try:
        wait.until(lambda d: d.find_element(By.ID, "login").is_displayed())
    except Exception:
        raise SystemExit("no login form at %s (a certificate error page?): %s" % (args.base, driver.title))
    assert driver.execute_script("return window.isSecureContext && location.protocol") == "https:"
    print("login page over https on", host)
    for name, value in (("username", os.environ["PORTAL_USERNAME"]), ("password", os.environ["PORTAL_PASSWORD"]),
                        ("totp", os.environ["PORTAL_TOTP_CODE"])):
        driver.find_element(By.ID, name).send_keys(value)
    driver.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
    wait.until(lambda d: d.find_element(By.ID, "dashboard").is_displayed())
    print("dashboard:", driver.find_element(By.ID, "who-name").text)

    cookies = [c for c in driver.get_cookies() if c["name"] == "cmk_session"]
    assert len(cookies) == 1, driver.get_cookies()
    cookie = cookies[0]
    assert cookie["secure"] and cookie["httpOnly"] and cookie.get("sameSite") == "Strict", cookie
    assert cookie["domain"] == host and cookie["path"] == "/", cookie
    assert driver.execute_script("return document.cookie").find("cmk_session") < 0, "HttpOnly: not readable by scripts"
    print("cookie: Secure HttpOnly SameSite=Strict, host-only on", cookie["domain"])

    driver.refresh()
    wait.until(lambda d: d.find_element(By.ID, "dashboard").is_displayed())
    print("session kept across a reload")

    created = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch("/api/v1/tenants", {method: "POST", credentials: "same-origin",
              headers: {"Content-Type": "application/json", "X-CSRF-Token": sessionStorage.getItem("cmk-csrf")},
              body: JSON.stringify({id: "tls-tenant", name: "Over TLS"})})
          .then(r => done(r.status)).catch(e => done(String(e)));
    """)
    assert created == 201, created
    print("a change made with the cookie and the CSRF header:", created)
    print("portal over TLS: passed")
finally:
    driver.quit()
