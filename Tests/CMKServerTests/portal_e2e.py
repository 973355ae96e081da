"""The portal end to end in headless Chromium (Debian's chromium and chromedriver, Selenium).

Run by PortalTests (and by Scripts/screenshots, which adds --screenshots DIR) against a real
`cmk serve` on a SoftHSM token with one `cmk node` enrolled:

    portal_e2e.py --base URL --node URL [--screenshots DIR]

Secrets come from the environment, never from arguments: PORTAL_USERNAME, PORTAL_PASSWORD,
PORTAL_TOTP_SECRET (base32) and PORTAL_TOKEN (an automation token, to make changes "elsewhere");
PORTAL_BOB_PASSWORD and PORTAL_BOB_TOTP_SECRET for "bob", a second security administrator who
approves in a second browser; PORTAL_OPERATOR_PASSWORD and PORTAL_OPERATOR_TOTP_SECRET for
"olga", a platform operator. None of them may have logged in during the current 30-second step
or later.
"""
import argparse, base64, hmac, json, os, re, signal, struct, time, urllib.error, urllib.request
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

parser = argparse.ArgumentParser()
parser.add_argument("--base", required=True)
parser.add_argument("--node", required=True)
parser.add_argument("--screenshots")
parser.add_argument("--aws-key", help="an AWS KMS key ARN on the gateway's keystore `aws`: linked to tenant globex with the wizard")
parser.add_argument("--node-pid", type=int, help="the node's process id: stopped at the end to show a node going offline")
args = parser.parse_args()
username, password = os.environ["PORTAL_USERNAME"], os.environ["PORTAL_PASSWORD"]
secret, token = os.environ["PORTAL_TOTP_SECRET"], os.environ["PORTAL_TOKEN"]
bob_password, bob_secret = os.environ["PORTAL_BOB_PASSWORD"], os.environ["PORTAL_BOB_TOTP_SECRET"]
operator_password, operator_secret = os.environ["PORTAL_OPERATOR_PASSWORD"], os.environ["PORTAL_OPERATOR_TOTP_SECRET"]
TENANT = "acme"


def totp(key_base32, step):
    key = base64.b32decode(key_base32 + "=" * (-len(key_base32) % 8))
    digest = hmac.new(key, struct.pack(">Q", step), "sha1").digest()
    o = digest[-1] & 15
    return "%06d" % ((struct.unpack(">I", digest[o:o + 4])[0] & 0x7FFFFFFF) % 1000000)


def code(offset=0, key=None):
    return totp(key or secret, int(time.time()) // 30 + offset)


# The administrator's TOTP steps used so far: the gateway accepts each step once, and only
# steps later than the last one used (see `fresh_code`).
used_steps = []


def fresh_code():
    """A code of a step the administrator has not used: waits into the next step when the
    current one was used already (a condition on the clock, not a guess)."""
    while used_steps and int(time.time()) // 30 <= max(used_steps):
        time.sleep(30 - time.time() % 30 + 0.2)
    step = int(time.time()) // 30
    used_steps.append(step)
    return totp(secret, step)


def step_margin(seconds=5):
    """Waits into the next 30-second step when this one ends within `seconds`: the previous
    step's code is accepted only until the current step ends, and typing takes time."""
    left = 30 - time.time() % 30
    if left < seconds:
        time.sleep(left + 0.2)


def http(method, url, body=None, bearer=None):
    headers = {"Content-Type": "application/json"}
    if bearer:
        headers["Authorization"] = "Bearer " + bearer
    request = urllib.request.Request(url, json.dumps(body).encode() if body is not None else None, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


APP_CREDENTIAL = None   # the application's credential for the node (issued once the tenant exists)


def node_encrypt():
    return http("POST", args.node + "/v1/tenants/%s/encrypt" % TENANT, {"plaintext": base64.b64encode(b"customer data").decode()},
                bearer=APP_CREDENTIAL)


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
                     "--force-device-scale-factor=1", "--lang=en-GB"]:
        options.add_argument(argument)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


driver = browser()
second = None   # bob's browser, once he logs in
# Live updates replace table rows under the test's feet: a stale element means "look again".
wait = WebDriverWait(driver, 20, ignored_exceptions=(StaleElementReferenceException,))
by_id = lambda name: driver.find_element(By.ID, name)
css = lambda selector: driver.find_element(By.CSS_SELECTOR, selector)


def shot(name, element=None, d=None):
    """A PNG of the page (or of one element, such as the modal dialog) for Docs/screenshots."""
    if not args.screenshots:
        return
    d = d or driver
    os.makedirs(args.screenshots, exist_ok=True)
    d.execute_script("document.activeElement && document.activeElement.blur && document.activeElement.blur(); window.scrollTo(0, 0)")
    # The whole page: the window is the page's height plus the browser's own (headless Chromium
    # keeps about 100 px of the window for itself), again if the new size reflowed the page.
    for _ in range(3):
        page = d.execute_script("return Math.max(document.body.scrollHeight, 800)")
        size = d.get_window_size()
        inner = d.execute_script("return window.innerHeight")
        if inner == min(page, 2400):
            break
        d.set_window_size(size["width"], min(page, 2400) + size["height"] - inner)
    path = os.path.join(args.screenshots, name + ".png")
    if element:
        element.screenshot(path)
    else:
        d.save_screenshot(path)
    print("screenshot:", path)


def click(selector, d=None):
    """Clicks what `selector` finds, again if a live update replaced it in the meantime."""
    def attempt(d):
        try:
            d.find_element(By.CSS_SELECTOR, selector).click()
            return True
        except StaleElementReferenceException:
            return False
    (WebDriverWait(d, 20, ignored_exceptions=(StaleElementReferenceException,)) if d else wait).until(attempt)


def read(selector, expression="e.innerText", d=None):
    """Reads from every element `selector` finds in one step inside the page: a live update
    cannot replace a row between finding it and reading it (as with find_element, then .text)."""
    return (d or driver).execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => " + expression + ")", selector)


def erase(name):
    """Empties a field the way a person does, so that the page's input handlers run."""
    element = by_id(name)
    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.BACKSPACE)
    return element


def type_into(name, value):
    erase(name).send_keys(value)


def unlabelled_controls(d=None):
    """Visible form controls without a label: each must have one (screen readers, voice control)."""
    return (d or driver).execute_script("""
        return [...document.querySelectorAll('input, select, button')].filter(e => e.offsetParent !== null)
          .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !(e.tagName === 'BUTTON' && e.textContent.trim()))
          .map(e => e.id || e.outerHTML.slice(0, 60));""")


def low_contrast(d=None):
    """Visible text below WCAG AA contrast against its effective background (4.5:1, 3:1 for large text)."""
    return (d or driver).execute_script("""
        const parse = (s) => { const p = s.match(/rgba?\\(([^)]+)\\)/)[1].split(',').map(parseFloat); return { rgb: p.slice(0, 3), a: p.length > 3 ? p[3] : 1 }; };
        const lum = (rgb) => { const [r, g, b] = rgb.map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
        const background = (e) => { for (; e; e = e.parentElement) { const c = parse(getComputedStyle(e).backgroundColor); if (c.a > 0.5) return c.rgb; } return [255, 255, 255]; };
        const bad = [];
        for (const e of document.querySelectorAll('body *')) {
          if (!e.getClientRects().length || !e.checkVisibility()) continue;
          if (![...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())) continue;
          if (e.closest('button:disabled')) continue;   // WCAG exempts inactive controls
          const style = getComputedStyle(e), size = parseFloat(style.fontSize);
          const [a, b] = [lum(parse(style.color).rgb), lum(background(e))];
          const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
          const large = size >= 24 || (size >= 18.66 && parseInt(style.fontWeight) >= 700);
          if (ratio < (large ? 3 : 4.5)) bad.push((e.id || e.tagName) + ' "' + e.textContent.trim().slice(0, 30) + '" ' + ratio.toFixed(2));
        }
        return bad;""")


try:
    # 1. Log in: a wrong code is refused with a clear error; password and the right code open the portal.
    driver.get(args.base + "/")
    wait.until(lambda d: by_id("login").is_displayed())
    near = {code(-1), code(0), code(1)}
    wrong = next(c for c in ("%06d" % n for n in range(0, 1000000, 137)) if c not in near)

    def log_in(one_time_code, user=None, passphrase=None, d=None):
        d = d or driver
        for name, value in (("username", user or username), ("password", passphrase or password), ("totp", one_time_code)):
            field = d.find_element(By.ID, name)
            field.send_keys(Keys.CONTROL, "a")
            field.send_keys(Keys.BACKSPACE)
            field.send_keys(value)
        d.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()

    log_in(wrong)
    wait.until(lambda d: by_id("login-error").is_displayed())
    print("wrong code:", by_id("login-error").text)
    assert by_id("login").is_displayed() and not by_id("dashboard").is_displayed()
    type_into("username", username)
    shot("01-login-wrong-code")
    # The previous step is within the skew window; it leaves the current step for the kill-switch.
    step_margin()
    used_steps.append(int(time.time()) // 30 - 1)
    log_in(totp(secret, used_steps[-1]))
    wait.until(lambda d: by_id("dashboard").is_displayed())
    wait.until(lambda d: by_id("links-empty").is_displayed())
    wait.until(lambda d: by_id("live").text == "live")
    assert unlabelled_controls() == [], unlabelled_controls()
    print("dashboard:", by_id("who-name").text)
    shot("02-dashboard-empty")

    # 2. The onboarding wizard: new tenant, the token's keys, a failing probe, then a passing one.
    css("nav a[data-view=onboard]").click()
    wait.until(lambda d: by_id("wiz-provider").is_displayed())
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "input[name=wiz-keystore]")) > 0)
    Select(by_id("wiz-tenant")).select_by_value("")
    type_into("wiz-tenant-id", TENANT)
    type_into("wiz-tenant-name", "ACME Corp.")
    css("input[name=wiz-keystore][value=hsm]").click()
    assert css("input[name=wiz-keystore][value=hsm]").is_selected()
    assert unlabelled_controls() == [], unlabelled_controls()
    shot("03-wizard-provider")
    css("#wiz-provider button[type=submit]").click()
    wait.until(lambda d: by_id("wiz-key").is_displayed() and by_id("wiz-keys").is_displayed())
    rows = driver.find_elements(By.CSS_SELECTOR, "#wiz-keys tbody tr")
    l1_row = next(r for r in rows if r.find_elements(By.TAG_NAME, "td")[1].text == "l1")
    shot("04-wizard-keys")

    type_into("wiz-uri", "pkcs11:object=no-such-key")
    css("#wiz-key button[type=submit]").click()
    wait.until(lambda d: "error" in by_id("wiz-probe-summary").get_attribute("class"))
    failed = css("#wiz-checks li[data-check=key_found]")
    assert "fail" in failed.get_attribute("class"), failed.get_attribute("class")
    assert not by_id("wiz-confirm").is_enabled(), "a failed probe cannot be confirmed"
    print("failing probe:", by_id("wiz-probe-summary").text)
    assert low_contrast() == [], low_contrast()
    shot("05-wizard-probe-failed")

    css("#wiz-validate button[data-back=key]").click()
    wait.until(lambda d: by_id("wiz-key").is_displayed())
    erase("wiz-uri")
    l1_row.find_element(By.CSS_SELECTOR, "input[type=radio]").click()
    css("#wiz-key button[type=submit]").click()
    wait.until(lambda d: "ok" in by_id("wiz-probe-summary").get_attribute("class"))
    # One step at a time: the earlier steps are out of sight (and out of the focus order).
    assert not by_id("wiz-provider").is_displayed() and not by_id("wiz-key").is_displayed()
    checks = driver.find_elements(By.CSS_SELECTOR, "#wiz-checks li")
    assert checks and all("pass" in c.get_attribute("class") for c in checks)
    print("probe checks:", [c.get_attribute("data-check") for c in checks])
    shot("06-wizard-probe-passed")
    by_id("wiz-confirm").click()
    wait.until(lambda d: by_id("wiz-done").is_displayed())
    l2ref = css("#wiz-result .l2ref").text
    assert re.fullmatch(r"[0-9a-f-]{36}", l2ref), l2ref
    print("linked, L2Ref", l2ref)
    shot("07-wizard-linked")

    # 3. The dashboard shows the link; changes made elsewhere arrive without a reload.
    css("#wiz-done a[href='#status']").click()
    wait.until(lambda d: TENANT in by_id("links").text and "LINKED" in by_id("links").text)
    driver.execute_script("window.__notReloaded = true")
    # An application's credential for the node, issued by the administrator (fresh code from the login).
    issued = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch('/api/v1/app-credentials', {method: 'POST', headers: {'Content-Type': 'application/json', 'X-CSRF-Token': sessionStorage.getItem('cmk-csrf')},
                                          body: JSON.stringify({name: 'e2e-application', tenants: [arguments[0]]})})
          .then(async r => done({status: r.status, body: await r.json()})).catch(e => done({status: 0, body: String(e)}));""", TENANT)
    assert issued["status"] == 201, issued
    APP_CREDENTIAL = issued["body"]["credential"]
    status, _ = http("POST", args.node + "/v1/tenants/%s/encrypt" % TENANT, {"plaintext": "eA=="})
    assert status == 401, "no credential, no crypto"
    status, body = node_encrypt()
    assert status == 200, (status, body)
    before_revocation = body["ciphertext"]   # decrypted again after the restore
    # The node's next heartbeat reports the key it now holds.
    wait.until(lambda d: css("#nodes tbody tr td:nth-child(5)").text == "1")
    status, _ = http("POST", args.base + "/api/v1/tenants", {"id": "globex", "name": "Globex"}, bearer=token)
    assert status == 201
    wait.until(lambda d: "globex" in by_id("links").text)
    assert driver.execute_script("return window.__notReloaded === true"), "the page reloaded"
    print("live changes arrived without a reload")
    assert low_contrast() == [], low_contrast()
    shot("08-dashboard")

    # 4. The kill-switch: the name must be typed and a fresh code given; a wrong code revokes nothing.
    # Keyboard focus survives the live re-rendering (a heartbeat every second here).
    driver.execute_script("document.querySelector('#links tbody tr[data-tenant=%s] button.danger').focus()" % TENANT)
    # Wait for the table to be re-rendered by a live update (not for a time that usually
    # holds one): the observer's callback runs after `fill` has put the focus back.
    driver.execute_script("""window.__linkRenders = 0;
        new MutationObserver(() => { window.__linkRenders += 1; }).observe(document.querySelector('#links tbody'), {childList: true});""")
    wait.until(lambda d: d.execute_script("return window.__linkRenders") >= 1)
    assert driver.execute_script("return document.activeElement.dataset.focusKey || ''").startswith("revoke:"), "focus lost on a live update"
    click("#links tbody tr[data-tenant=%s] button.danger" % TENANT)
    wait.until(lambda d: by_id("killswitch").is_displayed())
    assert driver.execute_script("return document.activeElement.id") == "ks-name", "focus starts on the name"
    expected = by_id("ks-expected").text
    type_into("ks-name", TENANT + "/wrong")
    type_into("ks-totp", code(0))
    assert not by_id("ks-submit").is_enabled(), "a wrong name keeps the button disabled"
    type_into("ks-name", expected)
    erase("ks-totp")
    assert not by_id("ks-submit").is_enabled()
    assert low_contrast() == [], low_contrast()
    shot("09-killswitch-confirm", by_id("killswitch"))
    type_into("ks-totp", wrong)
    by_id("ks-submit").click()
    wait.until(lambda d: by_id("ks-error").is_displayed())
    print("wrong code at the kill-switch:", by_id("ks-error").text)
    status, link = http("GET", args.base + "/api/v1/tenants/%s/l1-links?limit=5" % TENANT, bearer=token)
    assert link["items"][0]["state"] == "LINKED", "a refused code revokes nothing"
    type_into("ks-totp", fresh_code())
    by_id("ks-submit").click()
    wait.until(lambda d: by_id("ks-progress").is_displayed())
    wait.until(lambda d: by_id("ks-state").get_attribute("data-state") == "LOCKED")
    assert not by_id("ks-form").is_displayed(), "the confirmation is gone once the revocation is under way"
    rows_text = lambda selector: driver.execute_script("return [...document.querySelectorAll(arguments[0])].map(r => r.innerText)", selector)
    wait.until(lambda d: any("verified" in r for r in rows_text("#ks-nodes tbody tr")))
    proofs = rows_text("#ks-nodes tbody tr")
    assert len(proofs) == 1 and "DOES NOT" not in proofs[0], proofs
    assert "exposure" in by_id("ks-exposure").text.lower()
    print("locked:", by_id("ks-state").text)
    print("proof:", proofs[0].replace("\n", " | ").replace("\t", " | "))
    shot("10-killswitch-locked", by_id("killswitch"))
    status, body = node_encrypt()
    assert status == 409 and body["error"]["code"] == "key_revoked", (status, body)
    by_id("ks-close").click()
    wait.until(lambda d: "LOCKED" in css("#links tbody tr[data-tenant=%s]" % TENANT).text)

    # 4b. Past the kill-switch: the revoked link offers restore and shred; both take two people here.
    acme_row = "#links tbody tr[data-tenant=%s]" % TENANT
    wait.until(lambda d: css(acme_row).get_attribute("data-state") == "REVOKED")
    actions = lambda d=None: [b.get_attribute("data-action") for b in (d or driver).find_elements(By.CSS_SELECTOR, acme_row + " button")]
    wait.until(lambda d: actions() == ["restore", "shred", "proof"])
    print("revoked link actions:", read(acme_row + " button"))
    assert low_contrast() == [], low_contrast()
    shot("16-dashboard-revoked-link")

    def in_dialog(d=None):
        """The lifecycle dialog is open and idle (not waiting for the gateway)."""
        d = d or driver
        dialog = d.find_element(By.ID, "lifecycle")
        return dialog.is_displayed() and not d.find_element(By.ID, "lc-submit").get_attribute("disabled")

    def submit_dialog():
        """Presses the dialog's button; gives a fresh code first when the portal asks for one
        (the last step-up is older than 5 minutes on a slow run)."""
        if by_id("lc-code-box").is_displayed():
            type_into("lc-totp", fresh_code())
        by_id("lc-submit").click()

    # The second security administrator, in a browser of his own.
    second = browser()
    second_wait = WebDriverWait(second, 20, ignored_exceptions=(StaleElementReferenceException,))
    second.get(args.base + "/")
    second_wait.until(lambda d: d.find_element(By.ID, "login").is_displayed())
    log_in(code(0, bob_secret), "bob", bob_password, d=second)
    second_wait.until(lambda d: d.find_element(By.ID, "dashboard").is_displayed() and d.find_element(By.ID, "live").text == "live")

    def bob_votes(operation, decision="approve"):
        """Bob finds the request under Approvals and decides in the dialog (fresh from his login, no second code)."""
        row = "#approvals tbody tr[data-operation='%s'][data-state=PENDING]" % operation
        second_wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, row + " button[data-action=%s]" % decision))
        click(row + " button[data-action=%s]" % decision, d=second)
        second_wait.until(lambda d: in_dialog(d) and d.find_element(By.ID, "lc-submit").text == decision.capitalize())
        assert not second.find_element(By.ID, "lc-code-box").is_displayed(), "a fresh login needs no second code"
        second.find_element(By.ID, "lc-submit").click()
        second_wait.until(lambda d: d.find_element(By.ID, "lc-done").is_displayed())
        result = second.find_element(By.ID, "lc-done").text
        second.find_element(By.ID, "lc-close").click()
        return result

    # Schedule a shred: the request, bob's approval, then "Schedule shred now" with the approval.
    click(acme_row + " button[data-action=shred]")
    wait.until(lambda d: in_dialog() and by_id("lc-submit").text == "Request approval")
    assert by_id("lc-hours-box").is_displayed() and int(by_id("lc-hours").get_attribute("value")) >= 24
    submit_dialog()
    wait.until(lambda d: by_id("lc-request").get_attribute("data-state") == "PENDING")
    by_id("lc-close").click()
    print("bob approved the shred:", bob_votes("link.shred"))
    wait.until(lambda d: css(acme_row + " button[data-action=shred]").text == "Schedule shred now…")
    click(acme_row + " button[data-action=shred]")
    wait.until(lambda d: in_dialog() and by_id("lc-submit").text == "Schedule shred now")
    submit_dialog()
    wait.until(lambda d: by_id("lc-done").is_displayed())
    by_id("lc-close").click()
    wait.until(lambda d: css(acme_row).get_attribute("data-state") == "SHRED_SCHEDULED" and actions() == ["cancel-shred", "proof"])
    print("shred scheduled:", read(acme_row + " td:nth-child(3)")[0].replace("\n", " | "))
    assert low_contrast() == [], low_contrast()

    # The wizard will not link a new key beside a restorable one (409 link_restorable): it says so
    # and leads to the link, here to cancel the shred first.
    css("nav a[data-view=onboard]").click()
    wait.until(lambda d: by_id("wiz-provider").is_displayed() and d.find_elements(By.CSS_SELECTOR, "#wiz-tenant option[value=%s]" % TENANT))
    Select(by_id("wiz-tenant")).select_by_value(TENANT)
    css("input[name=wiz-keystore][value=hsm]").click()
    css("#wiz-provider button[type=submit]").click()
    wait.until(lambda d: by_id("wiz-restorable").is_displayed())
    assert "can still come back" in by_id("wiz-restorable-text").text, by_id("wiz-restorable-text").text
    print("wizard: link_restorable:", by_id("wiz-restorable-text").text)
    by_id("wiz-restorable-go").click()
    wait.until(lambda d: by_id("dashboard").is_displayed() and in_dialog() and by_id("lc-submit").text == "Cancel the shred")
    submit_dialog()
    wait.until(lambda d: by_id("lc-done").is_displayed())
    by_id("lc-close").click()
    wait.until(lambda d: css(acme_row).get_attribute("data-state") == "REVOKED" and actions() == ["restore", "shred", "proof"])
    print("shred cancelled: the link is REVOKED again")

    # Restore: asked for by the administrator, who cannot approve it himself; bob rejects the
    # first request and approves the second.
    click(acme_row + " button[data-action=restore]")
    wait.until(lambda d: in_dialog() and by_id("lc-submit").text == "Request approval")
    type_into("lc-reason", "The key custodian confirmed the L1 key is back under our control")
    submit_dialog()
    wait.until(lambda d: by_id("lc-request").get_attribute("data-state") == "PENDING")
    assert not by_id("lc-submit").is_displayed() and by_id("lc-withdraw").is_displayed(), "the requester waits, and may withdraw"
    print("restore requested:", by_id("lc-request-state").text)
    assert low_contrast() == [], low_contrast()
    assert unlabelled_controls() == [], unlabelled_controls()
    shot("17-restore-requested", by_id("lifecycle"))
    by_id("lc-close").click()
    request_row = "#approvals tbody tr[data-operation='link.restore'][data-state=PENDING]"
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, request_row))
    request_id = read(request_row, "e.dataset.approval")[0]
    own = read(request_row + " button", "e.dataset.action")
    assert own == ["withdraw"], own   # no Approve or Reject on one's own request
    refused = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch('/api/v1/approvals/' + arguments[0] + '/approve', {method: 'POST', headers: {'X-CSRF-Token': sessionStorage.getItem('cmk-csrf')}})
          .then(async r => done(r.status + ' ' + (await r.json()).error.code)).catch(e => done(String(e)));""", request_id)
    assert refused == "403 self_approval", refused
    print("self-approval refused:", refused)
    print("bob rejected the first request:", bob_votes("link.restore", "reject"))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#approvals-history tbody tr[data-approval='%s'][data-state=REJECTED]" % request_id))
    click(acme_row + " button[data-action=restore]")
    wait.until(lambda d: in_dialog() and by_id("lc-request").get_attribute("data-state") == "REJECTED" and by_id("lc-submit").text == "Request approval")
    submit_dialog()
    wait.until(lambda d: by_id("lc-request").get_attribute("data-state") == "PENDING")
    by_id("lc-close").click()
    wait.until(lambda d: read(request_row, "e.dataset.approval") not in ([], [request_id]))
    request_id = read(request_row, "e.dataset.approval")[0]
    print("restore requested again after the rejection")
    second_wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, request_row + " button[data-action=approve]"))
    assert low_contrast(second) == [], low_contrast(second)
    assert unlabelled_controls(second) == [], unlabelled_controls(second)
    shot("18-approvals-second-administrator", d=second)
    print("bob approved the restore:", bob_votes("link.restore"))

    # Live, the requester gets "Restore now", which carries the approval's id.
    wait.until(lambda d: css(acme_row + " button[data-action=restore]").text == "Restore now…")
    click(acme_row + " button[data-action=restore]")
    wait.until(lambda d: in_dialog() and by_id("lc-submit").text == "Restore now")
    assert by_id("lc-request").get_attribute("data-state") == "APPROVED"
    submit_dialog()
    wait.until(lambda d: by_id("lc-done").is_displayed() or by_id("lc-error").is_displayed())
    assert by_id("lc-done").is_displayed(), by_id("lc-error").text
    print("restored:", by_id("lc-done").text)
    shot("19-restored", by_id("lifecycle"))
    by_id("lc-close").click()
    wait.until(lambda d: css(acme_row).get_attribute("data-state") == "LINKED" and "epoch 2" in css(acme_row).text)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#approvals-history tbody tr[data-approval='%s'][data-state=EXECUTED]" % request_id))
    # The node, told by the l1.restored event, unseals the same L2: data from before the kill-switch opens.
    def decrypted(_):
        status, body = http("POST", args.node + "/v1/tenants/%s/decrypt" % TENANT, {"ciphertext": before_revocation}, bearer=APP_CREDENTIAL)
        return status == 200 and base64.b64decode(body["plaintext"]) == b"customer data"
    WebDriverWait(driver, 20).until(decrypted)
    print("node decrypts data from before the revocation: the same L2 key is back")
    second.quit()
    second = None

    # 5. The audit viewer: find the revocation, check its inclusion proof, verify the whole log.
    css("nav a[data-view=audit]").click()
    wait.until(lambda d: "openkcm" in by_id("audit-checkpoint").text)
    type_into("af-operation", "link.revoke")
    css("#audit-filter button[type=submit]").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#audit-records tbody tr")) == 1
               and "link.revoke" in by_id("audit-records").text)
    row = css("#audit-records tbody tr")
    assert "admin" in row.text and "password+totp" in row.text, row.text
    row.find_element(By.TAG_NAME, "button").click()
    wait.until(lambda d: "verdict" in by_id("audit-detail-proof").get_attribute("class"))
    assert "ok" in by_id("audit-detail-proof").get_attribute("class"), by_id("audit-detail-proof").text
    print("record:", by_id("audit-detail-proof").text)
    assert unlabelled_controls() == [], unlabelled_controls()
    shot("11-audit-record")
    by_id("audit-verify").click()
    wait.until(lambda d: "verdict" in by_id("audit-verify-result").get_attribute("class"))
    verdict = by_id("audit-verify-result").text
    assert "The log verifies" in verdict, verdict
    print("verify:", verdict)
    assert low_contrast() == [], low_contrast()
    shot("12-audit-verified")
    # The verifier is not a rubber stamp: a changed and a removed record are reported.
    tampering = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch('/api/v1/audit/export').then(r => r.text()).then(async text => {
          const lines = text.split('\\n');
          const at = lines.findIndex(l => l.includes('"operation":"link.revoke"'));
          const changed = lines.slice(); changed[at] = changed[at].replace('"outcome":"success"', '"outcome":"failure"');
          const removed = lines.slice(); removed.splice(at, 1);
          done({changed: await AuditVerify.verifyExport(changed.join('\\n')), removed: await AuditVerify.verifyExport(removed.join('\\n')),
                intact: await AuditVerify.verifyExport(text)});
        }).catch(e => done({error: String(e)}));""")
    assert tampering["intact"]["ok"], tampering
    assert not tampering["changed"]["ok"] and "changed" in tampering["changed"]["message"], tampering
    assert not tampering["removed"]["ok"] and "missing" in tampering["removed"]["message"], tampering
    print("tampering detected:", tampering["changed"]["message"], "/", tampering["removed"]["message"])
    # The browser's verifier against the golden vectors the server's verifier is held to.
    vectors_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "AuditTests", "Vectors")
    vectors = {name: json.load(open(os.path.join(vectors_dir, name + ".json"))) for name in ("merkle", "canonical", "records", "checkpoints")}
    problems = driver.execute_async_script("""
        const [v, done] = [arguments[0], arguments[arguments.length - 1]];
        const P = AuditVerify.primitives, problems = [], enc = new TextEncoder();
        (async () => {
          const leaves = [];
          const frontier = new P.Frontier(0, []);
          for (let n = 0; n <= v.merkle.leaves.length; n++) {
            if (P.hex(await frontier.root()) !== v.merkle.roots[n]) problems.push('root of ' + n);
            if (n === v.merkle.leaves.length) break;
            const leaf = await P.leafHash(P.fromHex(v.merkle.leaves[n]));
            if (P.hex(leaf) !== v.merkle.leafHashes[n]) problems.push('leaf hash ' + n);
            leaves.push(leaf); await frontier.append(leaf);
          }
          for (const c of v.merkle.inclusion) {
            const proof = c.proof.map(P.fromHex), root = P.fromHex(v.merkle.roots[c.size]);
            if (!await P.verifyInclusion(c.index, c.size, leaves[c.index], proof, root)) problems.push('inclusion ' + c.index + '/' + c.size);
            const wrong = P.fromHex(v.merkle.roots[c.size]); wrong[0] ^= 1;
            if (await P.verifyInclusion(c.index, c.size, leaves[c.index], proof, wrong)) problems.push('accepted a wrong root ' + c.index + '/' + c.size);
          }
          for (const c of v.canonical.valid) if (AuditVerify.jcs(JSON.parse(c.input)) !== c.canonical) problems.push('canonical ' + c.input);
          for (const c of v.canonical.invalid) {
            let accepted; try { accepted = AuditVerify.jcs(JSON.parse(c.input)) === c.input; } catch (_) { accepted = false; }
            if (accepted) problems.push('accepted non-canonical ' + c.input);
          }
          let chain = new Uint8Array(32);
          for (const r of v.records.records) {
            if (AuditVerify.jcs(r.record) !== r.canonical) problems.push('record ' + r.record.seq);
            const leaf = await P.leafHash(enc.encode(r.canonical));
            if (P.hex(leaf) !== r.leafHash) problems.push('record leaf ' + r.record.seq);
            chain = await P.chainHash(chain, leaf);
          }
          if (P.hex(chain) !== v.records.chain) problems.push('chain');
          const key = await P.importVerifierKey(v.checkpoints.verifierKey);
          for (const c of v.checkpoints.checkpoints) {
            const note = await P.checkNote(c.note, key);
            if (note.size !== c.size || P.hex(note.root) !== c.root) problems.push('checkpoint ' + c.size);
            try { await P.checkNote(c.note.replace('time 2026', 'time 2027'), key); problems.push('accepted an altered checkpoint ' + c.size); } catch (_) {}
          }
          return problems;
        })().then(done, e => done(['error: ' + e]));""", vectors)
    assert problems == [], problems
    print("golden vectors: the browser's verifier agrees (%d inclusion proofs)" % len(vectors["merkle"]["inclusion"]))
    export = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(document.getElementById('audit-export').href).then(r => done(r.status + ' ' + r.headers.get('content-type')));""")
    assert export.startswith("200"), export

    # 5b. A cloud key with the same wizard: AWS KMS, chosen from the keys it lists.
    if args.aws_key:
        css("nav a[data-view=onboard]").click()
        wait.until(lambda d: by_id("wiz-provider").is_displayed()
                   and len(d.find_elements(By.CSS_SELECTOR, "input[name=wiz-keystore][value=aws]")) == 1)
        Select(by_id("wiz-tenant")).select_by_value("globex")
        css("input[name=wiz-keystore][value=aws]").click()
        css("#wiz-provider button[type=submit]").click()
        wait.until(lambda d: by_id("wiz-key").is_displayed())
        assert "ARN" in by_id("wiz-uri-label").text
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#wiz-keys tbody tr")) > 0)
        assert "AWS KMS" in by_id("wiz-keys-legend").text
        rows = driver.find_elements(By.CSS_SELECTOR, "#wiz-keys tbody tr")
        # Keys the probe would refuse say why and cannot be chosen (the disabled and signing keys).
        refused = [r for r in rows if r.find_element(By.CSS_SELECTOR, "input[name=wiz-key]").get_attribute("disabled")]
        assert refused and all("no — " in r.text for r in refused), [r.text for r in refused]
        css(f"input[name=wiz-key][value='{args.aws_key}']").click()
        css("#wiz-key button[type=submit]").click()
        wait.until(lambda d: "ok" in by_id("wiz-probe-summary").get_attribute("class") or "error" in by_id("wiz-probe-summary").get_attribute("class"))
        assert "ok" in by_id("wiz-probe-summary").get_attribute("class"), by_id("wiz-probe-summary").text
        names = [c.get_attribute("data-check") for c in driver.find_elements(By.CSS_SELECTOR, "#wiz-checks li")]
        assert "context" in names and "key_state" in names, names
        shot("15-wizard-aws-kms")
        by_id("wiz-confirm").click()
        wait.until(lambda d: by_id("wiz-done").is_displayed())
        print("aws kms linked with the wizard, L2Ref", css("#wiz-result .l2ref").text)

    # 6. A tablet in portrait: nothing overflows sideways; tables stack with labelled values.
    driver.set_window_size(820, 1180)
    css("nav a[data-view=dashboard]").click()
    wait.until(lambda d: by_id("dashboard").is_displayed() and TENANT in by_id("links").text)
    overflow = driver.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, "the page scrolls sideways by %dpx on a tablet" % overflow
    assert read("#links tbody td[data-label]", "e.dataset.label")[0] == "Tenant"
    print("tablet layout: no horizontal overflow")
    shot("13-dashboard-tablet")
    print("contrast: WCAG AA on every screen checked")

    # 7. A platform operator: nodes and its approvals, enrolment tokens; never a tenant, link,
    # keystore or the audit log (the gateway refuses those to it, and the portal does not ask).
    driver.set_window_size(1280, 900)
    # People are made by people: the administrator's session makes the auditor for step 8.
    auditor = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch('/api/v1/users', {method: 'POST', headers: {'Content-Type': 'application/json', 'X-CSRF-Token': sessionStorage.getItem('cmk-csrf')},
                                body: JSON.stringify({username: 'auditor-ana', password: "an auditor's passphrase", role: 'auditor'})})
          .then(async r => done({status: r.status, body: await r.json()})).catch(e => done({status: 0, body: String(e)}));""")
    assert auditor["status"] == 201, auditor
    css("#logout").click()
    wait.until(lambda d: by_id("login").is_displayed())
    asked = lambda: driver.execute_script("return performance.getEntriesByType('resource').map(e => new URL(e.name).pathname)")
    driver.execute_script("performance.clearResourceTimings()")
    log_in(code(0, operator_secret), "olga", operator_password)
    wait.until(lambda d: by_id("dashboard").is_displayed() and by_id("nodes").is_displayed() and by_id("live").text == "live")
    wait.until(lambda d: "/api/v1/approvals" in asked())
    assert not by_id("links-section").is_displayed() and not by_id("keystores-section").is_displayed()
    assert not css("nav a[data-view=onboard]").is_displayed() and not css("nav a[data-view=audit]").is_displayed()
    assert by_id("approvals-section").is_displayed() and by_id("enrol").is_displayed()
    not_its_duty = lambda: [p for p in asked() if re.match(r"/api/v1/(tenants|keystores|audit)", p)]
    assert not_its_duty() == [], not_its_duty()
    type_into("enrol-region", "eu-west-1")
    by_id("enrol-submit").click()
    wait.until(lambda d: by_id("enrol-result").is_displayed())
    assert by_id("enrol-token").get_attribute("value").startswith("okne_"), "a one-time enrolment token"
    assert low_contrast() == [], low_contrast()
    assert unlabelled_controls() == [], unlabelled_controls()
    shot("20-platform-operator")
    # Asked for the audit view, even on a fresh load, the operator gets the status page.
    driver.get(args.base + "/#audit")
    driver.refresh()
    wait.until(lambda d: by_id("dashboard").is_displayed() and by_id("nodes").is_displayed() and "/api/v1/approvals" in asked())
    assert not by_id("audit").is_displayed()
    assert not_its_duty() == [], not_its_duty()
    assert not by_id("dashboard-error").is_displayed(), by_id("dashboard-error").text
    print("platform operator: nodes, approvals and enrolment; asked for", sorted(set(p for p in asked() if p.startswith("/api/"))))
    driver.get(args.base + "/#status")

    # 8. An auditor reads everything and changes nothing: no wizard, no kill-switch, no vote, but proofs and the log.
    css("#logout").click()
    wait.until(lambda d: by_id("login").is_displayed())
    log_in(code(0, auditor["body"]["totpSecret"]), "auditor-ana", "an auditor's passphrase")
    wait.until(lambda d: by_id("dashboard").is_displayed() and TENANT in by_id("links").text)
    assert not css("nav a[data-view=onboard]").is_displayed(), "auditors have no wizard"
    assert driver.find_elements(By.CSS_SELECTOR, "#links button.danger") == [], "auditors have no kill-switch"
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#approvals-history tbody tr[data-state=EXECUTED]")) == 2)
    assert driver.find_elements(By.CSS_SELECTOR, "#approvals button, #approvals-history button") == [], "auditors do not vote"
    click("#links tbody tr[data-tenant=%s] button" % TENANT)
    wait.until(lambda d: by_id("ks-state").get_attribute("data-state") == "LOCKED")
    by_id("ks-close").click()
    driver.get(args.base + "/#onboard")
    wait.until(lambda d: by_id("dashboard").is_displayed())
    assert not by_id("onboard").is_displayed()
    print("auditor: reads the status, the approvals, the proofs and the log; no wizard, no kill-switch, no vote")

    # 9. A node that goes away shows as offline, with what that means and what to do.
    if args.node_pid:
        os.kill(args.node_pid, signal.SIGKILL)
        # The gateway notices at its next write to the node's stream (a heartbeat, every 15 s).
        WebDriverWait(driver, 40, ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: by_id("nodes-offline").is_displayed() and "offline" in css("#nodes tbody tr").text)
        print("node offline:", by_id("nodes-offline").text)
        shot("14-dashboard-node-offline")
    print("portal end to end: passed")
except Exception:
    # What the page showed when it failed: the visible errors and the hash, for the test log.
    print("failed at", driver.current_url)
    print(driver.execute_script("""return [...document.querySelectorAll('.error, [role=alert], [role=status], .verdict')]
        .filter(e => e.offsetParent !== null && e.textContent.trim()).map(e => e.id + ': ' + e.textContent.trim()).join('\\n')"""))
    raise
finally:
    if second:
        second.quit()
    driver.quit()
