"""Browser journeys of the billing page (docs/billing-page.md), in Debian's Chromium driven by
Playwright for Python.

The Rust test `tests/tests/billing_page.rs` starts the app (local host, localstripe), sets a
workspace up through the API, then runs one journey here:

    python3 tests/browser/billing_page.py JOURNEY CONFIG_JSON

CONFIG_JSON carries `app` (the app's base URL), `embed_port` (where this script serves the
embedding product's page, an origin the app lists in `billing_embed_origins`), `workspace` and
its `token`, `stripe` (localstripe's base URL and secret key), `screenshots` (a folder) and
journey values. The
embedding page is the README's example: it loads `/billing/embed.js` and sets the token on
`<voice-billing>` from script (`how: element`), or frames `/billing/` and posts the token itself
(`how: iframe`).

A journey asserts what the user sees; it prints one JSON line of what it observed for the Rust
side, which checks the ledger. Any failed expectation exits non-zero with the reason.

Stripe.js is localstripe's stand-in, with one thing Stripe.js does added by the tests: paying
with the card typed into its card Element (STRIPE_JS_GLUE, Session._emulate_stripe_js).
"""

import json
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from playwright.sync_api import expect, sync_playwright

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
# Without these Chromium reaches for Google's services, which this machine's network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# How long any wait and any expectation may take: CI runs two journeys at once on 2 cores.
TIMEOUT_MS = 20_000
expect.set_options(timeout=TIMEOUT_MS)

EMBED_ELEMENT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Acme Voice: billing</title></head>
<body>
<h1>Acme Voice</h1>
<script src="{app}/billing/embed.js"></script>
<voice-billing id="billing"></voice-billing>
</body></html>
"""

# The element before its script: the product sets the token first, then loads embed.js.
EMBED_EARLY = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Acme Voice: billing</title></head>
<body>
<h1>Acme Voice</h1>
<voice-billing id="billing"></voice-billing>
</body></html>
"""

# The README's second way: the product frames the page and posts the token itself.
EMBED_IFRAME = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Acme Voice: billing</title></head>
<body>
<h1>Acme Voice</h1>
<iframe id="billing" title="Billing" src="{app}/billing/" width="100%" height="900"></iframe>
<script>
  const billing = document.getElementById("billing");
  window.addEventListener("message", (event) => {{
    if (event.origin !== "{app}" || event.source !== billing.contentWindow) return;
    if (event.data.type === "voice-billing:ready")
      billing.contentWindow.postMessage({{ type: "voice-billing:token", token: window.userToken }}, "{app}");
  }});
</script>
</body></html>
"""


# Appended to localstripe's stand-in Stripe.js (Session._emulate_stripe_js). Stripe.js's
# `confirmCardPayment(secret, {payment_method: {card: element}})` charges the card typed into the
# Element: it confirms the PaymentIntent with that card, runs 3-D Secure if the bank asks, and
# answers `{paymentIntent}` once the intent succeeded or `{error}` (a decline, a failed
# authentication). The stand-in ignores the Element: it always opens its 3-D Secure box and
# reports success whatever the intent's status. Here the confirm goes to the PaymentIntent's
# confirm URL with the card, as Stripe.js sends it, where the test's route answers as Stripe
# would (Stripe.confirm_card_payment); the stand-in's box is used only when the answer asks for
# authentication, and a failed authentication is an error, as Stripe.js reports it.
STRIPE_JS_GLUE = r"""
;(() => {
  const standIn = Stripe;
  const settled = (intent) =>
    ["succeeded", "processing", "requires_capture"].includes(intent.status)
      ? { paymentIntent: intent }
      : { error: { type: "card_error",
                   code: intent.last_payment_error?.code || "payment_intent_unexpected_state",
                   message: intent.last_payment_error?.message || `The payment is ${intent.status}.`,
                   payment_intent: intent } };
  Stripe = (key) => {
    const stripe = standIn(key);
    const authenticate = stripe.confirmCardPayment;
    stripe.confirmCardPayment = async (clientSecret, data) => {
      const element = data?.payment_method?.card;
      if (element) {
        if (!element.value)
          return { error: { type: "validation_error", code: "incomplete_number",
                            message: "Your card number is incomplete." } };
        const intent = clientSecret.match(/^(pi_\w+)_secret_/)[1];
        const response = await fetch(`${LOCALSTRIPE_BASE_API}/v1/payment_intents/${intent}/confirm`, {
          method: "POST",
          body: JSON.stringify({ key, client_secret: clientSecret,
                                 payment_method_data: { type: "card", card: element.value.card } }),
        });
        const body = await response.json().catch(() => ({}));
        if (!response.ok || body.error)
          return { error: body.error || { message: `HTTP ${response.status}` } };
        if (body.status !== "requires_action") return settled(body);
      }
      const result = await authenticate(clientSecret);
      return result.error ? result : settled(result.paymentIntent);
    };
    return stripe;
  };
})();
"""


class Failed(Exception):
    pass


NETWORK_LOG = []
# The sessions of the journey, so that a failure can say what their pages showed at that moment.
SESSIONS = []

# Installed in every frame: each click and form submission goes to the console, where the session
# adds it to NETWORK_LOG (a click that lands on the wrong element is then visible in the log).
TRACE_INPUT = r"""
addEventListener("click", (e) => console.debug(`trace: click on ${e.target.id || e.target.tagName} at ${e.clientX},${e.clientY}`), true);
addEventListener("submit", (e) => console.debug(`trace: submit of ${e.target.id || e.target.tagName}`), true);
"""

# Resolves once the document has drawn twice: the first requestAnimationFrame runs before a frame
# is drawn, the second once it has been.
TWO_FRAMES = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"

# What a failure prints of each page: the messages a person would read there.
MESSAGES = ("#page-status", "#buy-status", "#buy-error", "#card-error", "#buy-amount-error")


def check(condition, message):
    if not condition:
        raise Failed(message)


def serve_embedder(port, app):
    pages = {
        "/element": EMBED_ELEMENT.format(app=app).encode(),
        "/iframe": EMBED_IFRAME.format(app=app).encode(),
        "/early": EMBED_EARLY.encode(),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            path = self.path.split("?")[0]
            body = pages.get(path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class Stripe:
    """localstripe, for what Stripe itself would do and localstripe does not."""

    def __init__(self, config):
        self.base = config["base"]
        self.key = config["secret_key"]

    def call(self, method, path, form=None):
        """(status, JSON) of a call with the secret key, errors included."""
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"authorization": f"Bearer {self.key}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def confirm_card_payment(self, intent, body):
        """What Stripe does when Stripe.js confirms PaymentIntent `intent` with the card typed
        into its Element: it checks the client secret, makes the card a PaymentMethod and
        confirms the intent with it. (localstripe takes a PaymentMethod on confirm only with the
        secret key, and makes one from card details only with it.)"""
        status, found = self.call("GET", f"/v1/payment_intents/{intent}")
        if status != 200:
            return status, found
        if body.get("client_secret") != found.get("client_secret"):
            error = {"type": "invalid_request_error", "message": "No such client secret."}
            return 401, {"error": error}
        card = body["payment_method_data"]["card"]
        form = {"type": "card"}
        for field in ("number", "exp_month", "exp_year", "cvc"):
            form[f"card[{field}]"] = card[field]
        status, method = self.call("POST", "/v1/payment_methods", form)
        if status != 200:
            return status, method
        confirm = {"payment_method": method["id"]}
        status, answer = self.call("POST", f"/v1/payment_intents/{intent}/confirm", confirm)
        if status == 402:
            answer["error"]["type"] = "card_error"  # Stripe's type for a declined card
        return status, answer


class Session:
    """One browser page on the embedding product, with the billing frame inside it."""

    def __init__(
        self,
        playwright,
        config,
        *,
        how="element",
        color_scheme="light",
        viewport=None,
        before_token=None,
    ):
        self.config = config
        self.browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        self.context = self.browser.new_context(
            viewport=viewport or {"width": 1200, "height": 900},
            color_scheme=color_scheme,
            accept_downloads=True,
        )
        self.context.set_default_timeout(TIMEOUT_MS)
        # Routes are set on the context before any page exists: the billing page runs in a
        # cross-origin frame (its own process), and a route added once that frame is up can
        # miss its first requests.
        self._emulate_stripe_js()
        self.held_topups = None
        self.context.route("**/topups", self._topups)
        self.page = self.context.new_page()
        self.console_errors = []
        self.context.add_init_script(script=TRACE_INPUT)
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: NETWORK_LOG.append(f"page error: {error}"))
        SESSIONS.append(self)
        self.requests = []
        self.page.on("request", lambda r: self.requests.append((r.method, r.url)))
        # What the page asked and got, printed if the journey fails.
        self.page.on("response", lambda r: NETWORK_LOG.append(f"{r.status} {r.request.method} {r.url}"))
        embed = f"http://localhost:{config['embed_port']}/{how}"
        self.page.goto(embed)
        if before_token:
            self.page.evaluate(before_token)
        if how == "element":
            self.page.evaluate(
                "token => { document.getElementById('billing').token = token; }", config["token"]
            )
            self.frame = self.page.frame_locator("voice-billing iframe")
        elif how == "early":
            self.page.evaluate(
                """([token, app]) => {
                    document.getElementById('billing').token = token;
                    const script = document.createElement('script');
                    script.src = app + '/billing/embed.js';
                    document.head.append(script);
                }""",
                [config["token"], config["app"]],
            )
            self.frame = self.page.frame_locator("voice-billing iframe")
        else:
            self.page.evaluate("token => { window.userToken = token; }", config["token"])
            # The page announced itself before the token was set: reload the frame.
            self.page.evaluate("() => { const f = document.getElementById('billing'); f.src = f.src; }")
            self.frame = self.page.frame_locator("#billing")

    def _console(self, message):
        if message.type == "error":
            self.console_errors.append(message.text)
            NETWORK_LOG.append(f"console error: {message.text}")
        elif message.text.startswith("trace: "):
            NETWORK_LOG.append(message.text)

    def messages(self):
        """The page's status and error lines as shown now (for a failure's report)."""
        shown = []
        for selector in MESSAGES:
            try:
                text = self.el(selector).inner_text(timeout=1_000)
            except Exception as error:  # noqa: BLE001 - a report of a failure, not a check
                text = f"<unreadable: {type(error).__name__}>"
            shown.append(f"{selector}: {text!r}")
        return shown

    def _topups(self, route):
        if self.held_topups is None:
            route.continue_()
        else:
            self.held_topups.append(route)

    def hold_topups(self):
        """From now on, top-up requests wait in the returned list until the journey lets them go."""
        self.held_topups = []
        return self.held_topups

    def _emulate_stripe_js(self):
        """Stripe.js's confirmCardPayment with a card Element, which the stand-in lacks (see
        STRIPE_JS_GLUE): the stand-in script is served with the glue appended, and the confirm
        it sends is answered here as Stripe answers it."""
        stripe = Stripe(self.config["stripe"])
        base = self.config["stripe"]["base"]

        def script(route):
            response = route.fetch()
            route.fulfill(response=response, body=response.text() + STRIPE_JS_GLUE)

        def confirm(route):
            intent = urllib.parse.urlsplit(route.request.url).path.split("/")[3]
            try:
                sent = json.loads(route.request.post_data or "{}")
                status, answer = stripe.confirm_card_payment(intent, sent)
            except Exception as error:  # noqa: BLE001 - reported to the page and with the journey
                status, answer = 500, {"error": {"message": f"test glue: {error!r}"}}
            outcome = answer.get("status") or answer.get("error", {}).get("code")
            NETWORK_LOG.append(f"glue: confirmed {intent} with the typed card: {status} {outcome}")
            route.fulfill(status=status, json=answer, headers={"access-control-allow-origin": "*"})

        self.context.route(f"{base}/js.stripe.com/v3/", script)
        self.context.route(f"{base}/v1/payment_intents/*/confirm", confirm)

    def el(self, selector):
        return self.frame.locator(selector)

    def wait_loaded(self):
        expect(self.el("#page-status")).to_have_text(re.compile(r"^Updated \d{1,2}:\d{2}"))

    def screenshot(self, name, *selectors):
        """The whole page, or only the part that `selectors` (in the billing frame) cover."""
        folder = self.config["screenshots"]
        os.makedirs(folder, exist_ok=True)
        # Chromium paints a cross-origin frame only where the viewport is: make the viewport
        # as tall as the page for the picture, then put it back.
        size = self.page.viewport_size
        height = self.page.evaluate("() => document.documentElement.scrollHeight")
        self.page.set_viewport_size({"width": size["width"], "height": min(height, 10_000)})
        self.rendered()
        clip = None
        if selectors:
            boxes = [self.el(selector).bounding_box() for selector in selectors]
            left, top = min(b["x"] for b in boxes), min(b["y"] for b in boxes)
            right = max(b["x"] + b["width"] for b in boxes)
            bottom = max(b["y"] + b["height"] for b in boxes)
            clip = {"x": left - 8, "y": top - 8}
            clip.update(width=right - left + 16, height=bottom - top + 16)
        self.page.screenshot(path=os.path.join(folder, f"{name}.png"), full_page=True, clip=clip)
        self.page.set_viewport_size(size)
        # Chromium routes a click to the billing frame (its own process) by where the frame was
        # last drawn: a click sent before the frame is drawn at the restored size can land on the
        # embedding page instead (seen in CI: "click on IFRAME", and no top-up sent).
        self.rendered()

    def rendered(self):
        """Returns once the embedding page and the billing frame have each drawn a new frame."""
        self.page.evaluate(TWO_FRAMES)
        self.el("body").evaluate(TWO_FRAMES)

    def api_requests(self, method, suffix):
        return [u for m, u in self.requests if m == method and u.split("?")[0].endswith(suffix)]

    def close(self):
        csp = [e for e in self.console_errors if "Content Security Policy" in e]
        self.browser.close()
        check(not csp, f"the page broke its Content-Security-Policy: {csp}")


# Text and background pairs of the page's palette (CSS variables) that must reach WCAG AA.
CONTRAST_PAIRS = [
    ("--text", "--card"),
    ("--text", "--bg"),
    ("--muted", "--card"),
    ("--muted", "--bg"),
    ("--accent", "--card"),
    ("--accent-text", "--accent"),
    ("--red", "--card"),
    ("--amber-text", "--amber-bg"),
    ("#ffffff", "--red-bg"),
]


def contrast_ratio(a, b):
    def luminance(color):
        channels = [int(c) / 255 for c in color.split("(")[1].rstrip(")").split(",")[:3]]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def check_accessibility(s, theme):
    """Every pair of the palette reads at 4.5:1 or better, and every control has a name."""
    # Each colour as the page resolves it (light-dark() included), read through a probe element.
    palette = s.el("body").evaluate(
        """(b, names) => Object.fromEntries(names.map(n => {
            const probe = document.createElement("span");
            probe.style.color = n.startsWith("--") ? `var(${n})` : n;
            b.append(probe);
            const color = getComputedStyle(probe).color;
            probe.remove();
            return [n, color];
        }))""",
        sorted({n for pair in CONTRAST_PAIRS for n in pair}),
    )
    for fg, bg in CONTRAST_PAIRS:
        a, b = palette[fg], palette[bg]
        ratio = contrast_ratio(a, b)
        check(ratio >= 4.5, f"{theme}: {fg} {a} on {bg} {b} reads at {ratio:.2f}:1, under 4.5:1")
    unnamed = s.el("body").evaluate(
        """b => [...document.querySelectorAll('input, select, button')]
            .filter(e => e.offsetParent !== null)
            .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                         && !e.getAttribute('aria-labelledby') && !(e.tagName === 'BUTTON' && e.textContent.trim()))
            .map(e => e.outerHTML.slice(0, 80))"""
    )
    check(not unnamed, f"{theme}: controls without a name: {unnamed}")


def value(locator):
    return locator.get_attribute("data-value")


def owner_api(config, method, path, body=None):
    """The JSON of `method /v1/workspaces/{ws}{path}` with the journey's token: what the API
    itself says, beside what the page shows."""
    request = urllib.request.Request(
        f"{config['app']}/v1/workspaces/{config['workspace']}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"authorization": f"Bearer {config['token']}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def fill_card(s, number):
    card = s.el("#card-element")
    expect(card.locator("input").first).to_be_visible()
    card.get_by_placeholder("number").fill(number)
    card.get_by_placeholder("exp_month").fill("12")
    card.get_by_placeholder("exp_year").fill("30")
    card.get_by_placeholder("cvc").fill("123")
    card.get_by_placeholder("postal_code").fill("10001")


def is_topup_created(response):
    return response.request.method == "POST" and response.url.endswith("/topups")


def wait_for_topup(config, topup_id, status):
    """Reads the top-up from the API until it is `status` (the webhook settles it); answers it."""
    for _ in range(TIMEOUT_MS // 100):
        topup = owner_api(config, "GET", f"/topups/{topup_id}")
        if topup["status"] == status:
            return topup
        time.sleep(0.1)  # the next read of the API; nothing in the page waits on it
    raise Failed(f"top-up {topup_id} is still {topup['status']}, not {status}")


def expect_saved_card(s, config, last4):
    """The card on file, as the wallet, "Pay with" and the API each say it."""
    expect(s.el("#wallet-card")).to_have_attribute("data-last4", last4)
    expect(s.el("#wallet-card")).to_contain_text(f"•••• {last4}")
    expect(s.el("#buy-saved-label")).to_contain_text(f"•••• {last4}")
    saved = owner_api(config, "GET", "/billing")["payment_method"]
    check(saved and saved["last4"] == last4, f"the API's card on file: {saved}, not {last4}")


# ---- journeys ----------------------------------------------------------------------------------


def buy_credits(p, config):
    """An owner buys credits with a new test card (replacing the saved one if there is one). The
    form says what the amount buys; the balance changes only once paid; the new card is then
    the saved one, and the payment's receipt is listed."""
    s = Session(p, config)
    s.wait_loaded()
    before = config["wallet_before"]
    expect(s.el("#wallet-balance")).to_have_attribute("data-value", before)
    # No grants: no grants card, not even an empty one.
    expect(s.el("#grants")).to_be_hidden()
    saved = config.get("saved_last4")
    if saved:
        expect(s.el("#buy-use-saved")).to_be_checked()
        expect_saved_card(s, config, saved)
        s.el("#buy-use-new").check()
    else:
        expect(s.el("#buy-use-new")).to_be_checked()
    s.screenshot("owner-overview")
    # Below the catalog's minimum: refused on the page, nothing sent.
    s.el("#buy-amount").fill("5")
    s.el("#buy-submit").click()
    expect(s.el("#buy-amount-error")).to_have_text("The minimum is $10.00.")
    expect(s.el("#buy-amount")).to_have_attribute("aria-invalid", "true")
    s.el("#buy-amount").fill("6000")
    s.el("#buy-submit").click()
    expect(s.el("#buy-amount-error")).to_have_text("The maximum is $5,000.00.")
    check(not s.api_requests("POST", "/topups"), "an out-of-bounds amount reached the API")
    # Dollars in, credits out: the preview as the amount is typed.
    s.el("#buy-amount").fill(config["amount"])
    expect(s.el("#buy-preview")).to_have_text(config["preview"])
    expect(s.el("#buy-preview")).to_have_attribute("data-credits", config["credits"])
    # The card through Stripe.js (localstripe's stand-in), then the charge, held on its way back
    # so that the page can be looked at while the payment is not yet confirmed.
    fill_card(s, config["card"])
    s.screenshot("buy-preview", "#buy")
    held = s.hold_topups()
    with s.page.expect_request("**/topups"):
        s.el("#buy-submit").click()
    expect(s.el("#buy-status")).to_have_text(f"Charging ${config['amount']}.00…")
    expect(s.el("#wallet-balance")).to_have_attribute("data-value", before)
    check(held, "the top-up request was not held")
    s.screenshot("buy-processing")
    route = held[0]
    route.fulfill(response=route.fetch())
    expect(s.el("#buy-status")).to_contain_text("Payment succeeded")
    expect(s.el("#wallet-balance")).to_have_attribute("data-value", config["wallet_after"])
    new_last4 = config["card"][-4:]
    expect_saved_card(s, config, new_last4)
    expect(s.el("#buy-use-saved")).to_be_checked()
    expect(s.el("#card-box")).to_be_hidden()
    expect(s.el("#tx-table tbody tr").first).to_contain_text("Top-up")
    s.screenshot("buy-succeeded")
    # The payment's receipt: listed, and readable in the page.
    receipt = config["receipt"]
    rows = s.el("#rcpt-table tbody tr")
    expect(rows).to_have_count(1)
    shown = ("number", "amount_text", "credits_text")
    for text in [receipt[k] for k in shown] + [f"•••• {new_last4}", "Credits bought (top-up)"]:
        expect(rows.first).to_contain_text(text)
    expect(s.el("#inv-empty")).to_have_text(
        "No invoices yet: Stripe invoices paid plans, and each invoice appears here."
    )
    rows.first.get_by_role("button", name=f"Open receipt {receipt['number']}").click()
    view = s.el("#receipt-view")
    expect(view).to_be_focused()
    expect(view.locator("h3")).to_have_text(f"Receipt {receipt['number']}")
    line = view.locator("tbody tr")
    expect(line.locator("td").nth(1)).to_have_attribute("data-value", receipt["credits"])
    expect(line).to_contain_text(receipt["credits_text"])
    expect(line).to_contain_text(receipt["price_text"])
    expect(line).to_contain_text(receipt["amount_text"])
    expect(view.locator("tfoot td").first).to_have_text("$0.00")
    expect(view.locator("tfoot tr.total td")).to_have_text(receipt["amount_text"])
    expect(view).to_contain_text(f"Visa •••• {new_last4}")
    expect(view).to_contain_text("Credits bought (top-up)")
    expect(view.get_by_role("button", name="Print")).to_be_visible()
    s.screenshot("receipt", "#invoices")
    view.get_by_role("button", name="Close").click()
    expect(view).to_be_hidden()
    expect(rows.first.get_by_role("button")).to_be_focused()
    s.close()
    return {"card_saved": True}


def buy_with_authentication(p, config):
    """A saved card that needs the bank's confirmation: nothing lands until it is confirmed."""
    s = Session(p, config)
    s.wait_loaded()
    before = config["wallet_before"]
    expect(s.el("#buy-use-saved")).to_be_checked()
    s.el("#buy-amount").fill(config["amount"])
    s.el("#buy-submit").click()
    # localstripe's stand-in shows its 3-D Secure box inside the page.
    confirm = s.el("text=Complete authentication")
    expect(confirm).to_be_visible()
    expect(s.el("#pending-topups")).to_contain_text(f"Top-up of ${config['amount']}.00")
    expect(s.el("#wallet-balance")).to_have_attribute("data-value", before)
    s.screenshot("buy-3ds")
    confirm.click()
    expect(s.el("#buy-status")).to_contain_text("Payment succeeded", timeout=60_000)
    expect(s.el("#wallet-balance")).to_have_attribute("data-value", config["wallet_after"])
    s.close()
    return {}


def declined_card(p, config):
    """A new card the bank declines, on a workspace without one: Stripe's words next to the
    button, nothing credited, no card saved. (The product set the token before embed.js
    defined the element.)"""
    s = Session(p, config, how="early")
    s.wait_loaded()
    before = value(s.el("#wallet-balance"))
    fill_card(s, config["card"])
    s.el("#buy-amount").fill("30")
    s.el("#buy-submit").click()
    expect(s.el("#buy-error")).to_have_text(config["message"])
    expect(s.el("#buy-status")).to_have_text("")
    expect(s.el("#wallet-balance")).to_have_attribute("data-value", before)
    expect(s.el("#wallet-card")).to_have_text("No card saved")
    check(owner_api(config, "GET", "/billing")["payment_method"] is None, "the declined card was saved")
    s.screenshot("buy-declined")
    s.close()
    return {}


def declined_new_card_keeps_the_saved_one(p, config):
    """Issue 21: an owner with a working saved card pays with a new card that attaches but is
    declined on charge. The decline is shown; the card on file, the wallet and auto-recharge are
    as they were, and the saved card still pays."""
    s = Session(p, config)
    s.wait_loaded()
    saved, wallet = config["saved_last4"], config["wallet"]
    auto = config["auto_recharge"]
    expect(s.el("#wallet-balance")).to_have_attribute("data-value", wallet)
    expect(s.el("#buy-use-saved")).to_be_checked()
    expect_saved_card(s, config, saved)
    s.el("#buy-use-new").check()
    fill_card(s, config["card"])
    s.el("#buy-amount").fill(config["amount"])
    with s.page.expect_response(is_topup_created) as created:
        s.el("#buy-submit").click()
    declined = created.value.json()
    check(declined["status"] == "pending" and declined.get("client_secret"), f"top-up: {declined}")
    kept = f"Your saved card, Visa •••• {saved}, stays on file."
    expect(s.el("#buy-error")).to_have_text(f"{config['message']} {kept}")
    expect(s.el("#buy-status")).to_have_text("")
    # Stripe's webhook settles the top-up failed, and the page does not list it as waiting.
    wait_for_topup(config, declined["id"], "failed")
    expect(s.el("#pending-topups li")).to_have_count(0)
    # Nothing changed: on screen, and in the API.
    expect(s.el("#wallet-balance")).to_have_attribute("data-value", wallet)
    expect_saved_card(s, config, saved)
    expect(s.el("#ar-enabled")).to_be_checked()
    expect(s.el("#ar-threshold")).to_have_value(auto["threshold"])
    expect(s.el("#ar-amount")).to_have_value(auto["amount"])
    summary = owner_api(config, "GET", "/billing")
    check(summary["wallet_balance"] == wallet, f"the wallet moved: {summary['wallet_balance']}")
    shown = {k: summary["auto_recharge"][k] for k in ("enabled", "threshold", "amount")}
    check(shown == auto, f"auto-recharge changed: {summary['auto_recharge']}")
    s.screenshot("declined-new-card", "#balances", "#buy")
    # The saved card still pays.
    s.el("#buy-use-saved").check()
    expect(s.el("#card-box")).to_be_hidden()
    s.el("#buy-amount").fill(config["amount"])
    s.el("#buy-submit").click()
    expect(s.el("#buy-status")).to_contain_text("Payment succeeded")
    expect(s.el("#buy-error")).to_be_hidden()
    expect(s.el("#wallet-balance")).to_have_attribute("data-value", config["wallet_after"])
    expect_saved_card(s, config, saved)
    s.close()
    return {"declined": declined["id"]}


def new_card_authentication(p, config):
    """A new card whose bank asks for 3-D Secure. Abandoned at the bank's step: nothing saved,
    nothing credited, the card on file stays. Completed on a second try: the credits land and
    the new card is the one on file."""
    s = Session(p, config)
    s.wait_loaded()
    saved, card = config["saved_last4"], config["card"]
    expect_saved_card(s, config, saved)
    s.el("#buy-use-new").check()
    fill_card(s, card)
    s.el("#buy-amount").fill(config["amount"])
    with s.page.expect_response(is_topup_created) as created:
        s.el("#buy-submit").click()
    abandoned = created.value.json()["id"]
    s.el("text=Fail authentication").click()
    kept = f"Your saved card, Visa •••• {saved}, stays on file."
    expect(s.el("#buy-error")).to_have_text(f"{config['message']} {kept}")
    expect(s.el("#wallet-balance")).to_have_attribute("data-value", "0")
    expect_saved_card(s, config, saved)
    summary = owner_api(config, "GET", "/billing")
    check(summary["wallet_balance"] == "0", f"credited after a failed authentication: {summary}")
    s.screenshot("new-card-3ds-abandoned", "#balances", "#buy")
    # Again, and this time the bank's step is completed.
    s.el("#buy-submit").click()
    s.el("text=Complete authentication").click()
    expect(s.el("#buy-status")).to_contain_text("Payment succeeded")
    expect(s.el("#buy-error")).to_be_hidden()
    expect(s.el("#wallet-balance")).to_have_attribute("data-value", config["wallet_after"])
    expect_saved_card(s, config, card[-4:])
    s.close()
    return {"abandoned": abandoned}


def red_bar(p, config):
    """At zero the red bar shows the contract's message; a top-up clears it."""
    s = Session(p, config)
    s.wait_loaded()
    banner = s.el("#banner")
    expect(banner).to_be_visible()
    expect(banner).to_have_class("banner banner-red")
    expect(banner).to_have_attribute("role", "alert")
    expect(s.el("#banner-message")).to_have_text(config["message"])
    s.screenshot("red-bar")
    # By keyboard only: the bar's button, then the amount, then Enter.
    s.el("#banner-action").focus()
    s.page.keyboard.press("Enter")
    expect(s.el("#buy-amount")).to_be_focused()
    s.page.keyboard.type(config["amount"])
    s.page.keyboard.press("Enter")
    expect(s.el("#buy-status")).to_contain_text("Payment succeeded")
    expect(banner).to_be_hidden()
    expect(s.el("#wallet-balance")).to_have_attribute("data-value", config["wallet_after"])
    s.close()
    return {}


def upgrade(p, config):
    """An upgrade shows its prorated credits before it is confirmed, then grants them."""
    s = Session(p, config)
    s.wait_loaded()
    # A downgrade waits for the period's end, and can be called off.
    s.el('#plan-list li[data-plan="free"]').get_by_role("button").click()
    expect(s.el("#plan-confirm-text")).to_have_attribute("data-change", "downgrade")
    expect(s.el("#plan-confirm-text")).to_contain_text("Downgrade to Free on May 1, 2027")
    s.el("#plan-confirm-yes").click()
    expect(s.el("#pending-change")).to_be_visible()
    expect(s.el("#pending-change-text")).to_contain_text("Changes to Free on May 1, 2027")
    s.el("#pending-change-cancel").click()
    expect(s.el("#pending-change")).to_be_hidden()
    plan = s.el(f'#plan-list li[data-plan="{config["plan"]}"]')
    plan.get_by_role("button").click()
    text = s.el("#plan-confirm-text")
    expect(text).to_be_visible()
    expect(text).to_have_attribute("data-change", "upgrade")
    shown = text.get_attribute("data-credits")
    expect(text).to_contain_text(f"{config['credits_text']} prorated credits")
    check(
        len(s.api_requests("POST", "/subscription")) == 1,
        "the upgrade was sent before it was confirmed",
    )
    s.screenshot("upgrade-preview")
    s.el("#plan-confirm-yes").click()
    expect(s.el("#plans-status")).to_contain_text(f"You are now on {config['plan_name']}.")
    expect(s.el("#plan-name")).to_have_text(config["plan_name"])
    expect(s.el("#plan-remaining")).to_have_attribute("data-value", config["plan_after"])
    s.close()
    return {"preview_credits": shown}


def agent_limits(p, config):
    """An owner edits an agent's limits; bad values are refused next to the form."""
    s = Session(p, config)
    s.wait_loaded()
    row = s.el('#agent-table tr[data-agent="agent-a"]')
    expect(row).to_contain_text("Continue on the wallet")
    row.get_by_role("button", name="Edit limits of agent-a").click()
    editor = s.el('#agent-table tr.editing[data-agent="agent-a"]')
    editor.get_by_label("Calls per day").fill("ten")
    editor.get_by_role("button", name="Save limits").click()
    expect(editor.locator(".error")).to_contain_text("whole numbers")
    check(not s.api_requests("PUT", "/limits"), "a bad value reached the API")
    # A value the API refuses: its message appears next to the form.
    editor.get_by_label("Calls per day").fill("")
    editor.get_by_label("Monthly spending limit (credits)").fill("-5")
    editor.get_by_role("button", name="Save limits").click()
    expect(editor.locator(".error")).to_contain_text("monthly_spend_limit")
    editor.get_by_label("When plan credits run out").select_option("stop")
    editor.get_by_label("Monthly spending limit (credits)").fill("50")
    editor.get_by_label("Calls per day").fill("100")
    editor.get_by_label("Calls at once").fill("3")
    s.screenshot("agent-edit")
    editor.get_by_role("button", name="Save limits").click()
    row = s.el('#agent-table tr[data-agent="agent-a"]:not(.editing)')
    expect(row).to_contain_text("Stop")
    expect(row).to_contain_text("of 50.00")
    expect(row).to_contain_text("of 100")
    expect(row).to_contain_text("of 3")
    s.close()
    return {}


def csv_export(p, config):
    """The history pages through every row, and the CSV carries all of them."""
    s = Session(p, config)
    s.wait_loaded()
    rows = s.el("#tx-table tbody tr")
    expect(rows).to_have_count(25)
    first_page = rows.first.get_attribute("data-id")
    s.el("#tx-older").click()
    expect(s.el("#tx-page")).to_have_text("Page 2")
    expect(rows.first).not_to_have_attribute("data-id", first_page)
    s.el("#tx-newer").click()
    expect(rows.first).to_have_attribute("data-id", first_page)
    with s.page.expect_download() as download:
        s.el("#tx-csv").click()
    path = download.value.path()
    name = download.value.suggested_filename
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    check(name.endswith(".csv"), f"download named {name}")
    check(lines and lines[0].startswith("id,type,"), f"CSV header: {lines[:1]}")
    ids = [line.split(",")[0] for line in lines[1:]]
    s.close()
    return {"csv_ids": ids}


def member(p, config):
    """A member sees the banner and nothing else (the page framed by the product itself)."""
    s = Session(p, config, how="iframe")
    expect(s.el("#banner")).to_be_visible()
    expect(s.el("#banner-message")).to_have_text(config["message"])
    expect(s.el("#banner-action")).to_be_hidden()
    expect(s.el("#member-note")).to_be_visible()
    expect(s.el("#owner-view")).to_be_hidden()
    amounts = s.el("[data-value]:visible")
    expect(amounts).to_have_count(0)
    s.screenshot("member")
    refused = [u for _, u in s.requests if "/v1/" in u and not u.split("?")[0].endswith("/billing")]
    check(not refused, f"a member's page asked for more than the banner: {refused}")
    s.close()
    return {}


def token_refresh(p, config):
    """An expired token: the page says so and the element fires `token-expired`; the product
    sets a fresh token and the page loads, without reloading anything."""
    config = dict(config, token=config["expired_token"])
    listen = """() => { window.expiredEvents = 0;
        document.getElementById('billing')
            .addEventListener('token-expired', () => { window.expiredEvents += 1; }); }"""
    s = Session(p, config, before_token=listen)
    expect(s.el("#page-status")).to_have_text("Your session has expired. Signing you in again…")
    s.page.wait_for_function("() => window.expiredEvents > 0")
    s.page.evaluate(
        "token => { document.getElementById('billing').token = token; }", config["fresh_token"]
    )
    s.wait_loaded()
    expect(s.el("#owner-view")).to_be_visible()
    s.close()
    return {}


# What a reader's eye and finger meet, measured in the billing frame: the smallest visible text
# (SVG text at the size it is drawn, its font size times the drawing's scale), the smallest
# visible control (links, buttons, inputs, selects, summaries), and each visible table's width
# against the content box of the card it sits in.
MEASURE = """() => {
    const shown = (el) => {
        if (!el.checkVisibility({ visibilityProperty: true, opacityProperty: true })) return false;
        const box = el.getBoundingClientRect();
        return box.width > 1 && box.height > 1; // the 1 px boxes of text for screen readers only
    };
    const round = (x) => Math.round(x * 100) / 100;
    let text = null;
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const el = node.parentElement;
        if (!node.data.trim() || !el || el.closest("title, option, script, style")) continue;
        if (!shown(el)) continue;
        let px = parseFloat(getComputedStyle(el).fontSize);
        if (el instanceof SVGElement) {
            const m = el.getScreenCTM();
            px *= Math.hypot(m.a, m.b);
        }
        if (!text || px < text.px) text = { px: round(px), text: node.data.trim().slice(0, 40) };
    }
    let control = null;
    for (const el of document.querySelectorAll("a[href], button, input, select, textarea, summary")) {
        if (!shown(el)) continue;
        const px = el.getBoundingClientRect().height;
        if (!control || px < control.px) control = { px: round(px), what: el.outerHTML.slice(0, 80) };
    }
    const tables = [];
    for (const table of document.querySelectorAll("table")) {
        if (!shown(table)) continue;
        const card = table.closest(".card");
        const style = getComputedStyle(card);
        const outer = card.getBoundingClientRect();
        const left = outer.left + parseFloat(style.borderLeftWidth) + parseFloat(style.paddingLeft);
        const right = outer.right - parseFloat(style.borderRightWidth) - parseFloat(style.paddingRight);
        const box = table.getBoundingClientRect();
        tables.push({ table: table.id || table.className, width: round(box.width),
                      card: round(right - left),
                      beyond: round(Math.max(box.right - right, left - box.left, 0)) });
    }
    // What reaches past the window's right edge, innermost first (named when the page is too wide).
    const beyond = [...document.querySelectorAll("body *")]
        .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 0.5 && shown(el))
        .reverse().slice(0, 3).map((el) => el.outerHTML.slice(0, 120));
    return { text, control, tables, beyond };
}"""


def measure(s, where):
    """Checks the page as `where` shows it: no text under 11 CSS px, no control under 24 px, no
    table wider than its card, nothing wider than the window. Returns the figures."""
    found = s.el("body").evaluate(MEASURE)
    check(found["text"]["px"] >= 11, f"{where}: text of {found['text']['px']} px: {found['text']}")
    control = found["control"]
    check(control["px"] >= 24, f"{where}: a control {control['px']} px tall: {control['what']}")
    for t in found["tables"]:
        check(t["beyond"] <= 0.5, f"{where}: table {t['table']} is {t['width']} px in {t['card']} px")
    overflow = s.el("body").evaluate("b => document.documentElement.scrollWidth - window.innerWidth")
    check(overflow <= 0, f"{where}: the page is {overflow}px wider than the window: {found['beyond']}")
    del found["beyond"]
    found["where"] = where
    return found


def show_everything(s):
    """Opens what the page folds away, so that it is measured too: the daily table, a receipt."""
    s.el("#usage details summary").click()
    expect(s.el("#usage-by-day")).to_be_visible()
    s.el("#rcpt-table tbody tr button").first.click()
    expect(s.el("#receipt-view")).to_be_visible()


def expect_one_line(s, selector):
    lines = s.el(selector).evaluate("e => e.getClientRects().length")
    check(lines == 1, f"{selector} wraps onto {lines} lines")


def looks(p, config):
    """The main states for the README and reviewers: light, dark, a phone's width, and what a
    reader meets there (text sizes, control sizes, tables within their cards)."""
    figures = []
    s = Session(p, config)
    s.wait_loaded()
    check_accessibility(s, "light")
    expect(s.el("#usage-chart svg rect.bar")).not_to_have_count(0)
    spikes = s.el("#usage-chart svg rect.bar.spike")
    expect(spikes).to_have_count(1)
    expect(spikes).to_have_attribute("data-date", config["spike_date"])
    expect(s.el("#usage-chart svg text.spike-mark")).to_have_count(1)
    expect(s.el("#runway-text")).to_contain_text("your credits last about")
    # The grants' card is there to be measured, with its longest note.
    expect(s.el("#grant-list li")).to_have_count(2)
    expect(s.el("#grant-list li").first.locator(".grant-note").first).to_have_text(
        "Calls and AI tasks of agent support-bot only"
    )
    # A call is shown as what was billed, in minutes, at its rate.
    call = s.el("#tx-table tbody tr").filter(has_text=config["call_reference"])
    expect(call.locator("td.usage")).to_have_text(config["call_usage"])
    expect(s.el('#plan-list li[data-plan="free"] .price')).to_have_text("$0.00 / month")
    expect_one_line(s, "#wallet-card .nowrap >> nth=1")
    folder = config["screenshots"]
    os.makedirs(folder, exist_ok=True)
    s.page.screenshot(path=os.path.join(folder, "readme.png"))
    show_everything(s)
    figures.append(measure(s, "light, 1200 px"))
    # localstripe has no billing portal: the refusal shows under the button.
    with s.context.expect_page() as opened:
        s.el("#portal").click()
    expect(s.el("#portal-error")).to_be_visible()
    # The empty tab opened for the portal (a click's popup) is closed again.
    popup = opened.value
    for _ in range(TIMEOUT_MS // 50):
        if popup.is_closed():
            break
        s.page.wait_for_timeout(50)
    check(popup.is_closed(), "the portal's empty tab was left open")
    s.close()
    s = Session(p, config, color_scheme="dark", viewport={"width": 1280, "height": 900})
    s.wait_loaded()
    background = s.el("body").evaluate("b => getComputedStyle(b).backgroundColor")
    check(background == "rgb(17, 20, 24)", f"dark background: {background}")
    check_accessibility(s, "dark")
    s.screenshot("owner-dark")
    show_everything(s)
    figures.append(measure(s, "dark, 1280 px"))
    s.close()
    for scheme in ("light", "dark"):
        s = Session(p, config, color_scheme=scheme, viewport={"width": 390, "height": 844})
        s.wait_loaded()
        edit = s.el('#agent-table tr[data-agent="sales-agent"] button')
        edge = edit.evaluate("b => b.getBoundingClientRect().right - window.innerWidth")
        check(edge <= 0, f"an agent's Edit button is {edge}px beyond a phone's width")
        expect_one_line(s, "#wallet-card .nowrap >> nth=1")
        if scheme == "light":
            # The keyboard reaches the first control after the skip link.
            s.el("#main").focus()
            s.page.keyboard.press("Tab")
            focused = s.el(":focus").get_attribute("href")
            check(focused == "#balances", f"first tab stop: {focused}")
            s.screenshot("owner-phone")
            s.screenshot("transactions-phone", "#tx-title", "#tx-table tbody tr >> nth=4")
            s.screenshot("plans-phone", "#plans")
        show_everything(s)
        figures.append(measure(s, f"{scheme}, 390 px"))
        if scheme == "dark":
            s.screenshot("owner-phone-dark")
            # An origin that is not in billing_embed_origins cannot frame the page (127.0.0.1
            # is not localhost, to the browser).
            stranger = s.context.new_page()
            with stranger.expect_console_message(lambda m: "frame-ancestors" in m.text):
                stranger.goto(f"http://127.0.0.1:{config['embed_port']}/iframe")
            expect(stranger.frame_locator("#billing").locator("#main")).to_have_count(0)
        s.close()
    return {"figures": figures}


def grants(p, config):
    """Credit grants: each with its credits left of its amount, its category, what it pays for,
    when it starts and expires, in the order they are spent, and their total in force; in the
    history, what grants paid of each row. Then the same at a phone's width, measured."""
    s = Session(p, config)
    s.wait_loaded()
    card = s.el("#grants")
    expect(card).to_be_visible()
    expect(card.get_by_role("heading", name="Credit grants", exact=True)).to_be_visible()
    expect(s.el("#grants-total")).to_have_attribute("data-value", config["total"])
    expect(s.el("#grants-total")).to_have_text(config["total"])
    expected = config["grants"]
    items = card.get_by_role("list", name="Credit grants", exact=True).get_by_role("listitem")
    expect(items).to_have_count(len(expected))
    for i, grant in enumerate(expected):
        item = items.nth(i)
        expect(item).to_have_attribute("data-grant", grant["id"])
        expect(item.get_by_role("heading")).to_have_text(f"{grant['name']} {grant['category']}")
        expect(item.locator(".grant-remaining")).to_have_attribute("data-value", grant["remaining"])
        expect(item.locator(".grant-remaining")).to_have_text(grant["remaining_text"])
        expect(item.locator(".grant-amount")).to_have_attribute("data-value", grant["amount"])
        expect(item.locator(".grant-left .unit")).to_have_text(grant["amount_text"])
        expect(item.locator(".grant-note")).to_have_text(grant["notes"])
    s.screenshot("grants", "#balances")
    # The history: what grants paid, beside the plan and the wallet.
    headers = s.el("#tx-table thead th")
    expect(headers.nth(5)).to_have_text("From plan")
    expect(headers.nth(6)).to_have_text("From grants")
    expect(headers.nth(7)).to_have_text("From wallet")
    for row in config["history"]:
        cell = s.el("#tx-table tbody tr").filter(has_text=row["reference"]).locator("td").nth(6)
        expect(cell).to_have_attribute("data-label", "From grants")
        expect(cell).to_have_attribute("data-value", row["grant_amount"])
        expect(cell).to_have_text(row["text"])
    figures = [measure(s, "grants, 1200 px")]
    s.close()
    # At a phone's width: one grant a row, nothing sideways, and the history's cells named.
    s = Session(p, config, viewport={"width": 390, "height": 844})
    s.wait_loaded()
    expect(s.el("#grant-list li")).to_have_count(len(expected))
    boxes = s.el("#grant-list li").evaluate_all("items => items.map(i => i.getBoundingClientRect().left)")
    check(len(set(boxes)) == 1, f"the grants are not one a row at 390 px: {boxes}")
    call = s.el("#tx-table tbody tr").filter(has_text=config["history"][0]["reference"])
    cell = call.locator("td").nth(6)
    expect(cell).to_be_visible()
    expect(cell).to_have_attribute("data-label", "From grants")
    figures.append(measure(s, "grants, 390 px"))
    s.screenshot("grants-phone", "#grants")
    s.screenshot("transactions-grants-phone", "#tx-title", "#tx-table tbody tr >> nth=2")
    s.close()
    return {"figures": figures}


def auto_recharge(p, config):
    """Auto-recharge is refused without a card, in the seeds' words; with one, the runway's
    suggested setting is taken as it is."""
    s = Session(p, config)
    s.wait_loaded()
    suggestion = config["suggestion"]
    expect(s.el("#ar-suggestion")).to_be_visible()
    s.el("#ar-use-suggestion").click()
    expect(s.el("#ar-threshold")).to_have_value(suggestion["threshold"])
    expect(s.el("#ar-amount")).to_have_value(suggestion["amount"])
    s.el("#ar-enabled").check()
    s.el("#ar-save").click()
    expect(s.el("#ar-error")).to_have_text(
        "Payment method must be configured before enabling auto-recharge."
    )
    # A card, saved while buying credits; then the same setting is accepted.
    fill_card(s, config["card"])
    s.el("#buy-amount").fill("15")
    s.el("#buy-submit").click()
    expect(s.el("#buy-status")).to_contain_text("Payment succeeded")
    expect(s.el("#ar-threshold")).to_have_value(suggestion["threshold"])
    s.el("#ar-save").click()
    expect(s.el("#ar-status")).to_have_text("Auto-recharge is on.")
    expect(s.el("#ar-error")).to_be_hidden()
    s.screenshot("auto-recharge")
    s.close()
    return {}


def invoices(p, config):
    """A paid plan's invoice: its number, amount, status and documents."""
    s = Session(p, config)
    s.wait_loaded()
    invoice = config["invoice"]
    rows = s.el("#inv-table tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(invoice["number"] or invoice["id"])
    expect(rows.first).to_contain_text(config["amount_text"])
    expect(rows.first).to_contain_text(invoice["status"])
    for name, key in (("View", "hosted_invoice_url"), ("PDF", "invoice_pdf")):
        link = rows.first.get_by_role("link", name=name)
        if invoice.get(key):
            expect(link).to_have_attribute("href", invoice[key])
            expect(link).to_have_attribute("rel", "noopener noreferrer")
        else:
            expect(link).to_have_count(0)
    expect(s.el("#inv-empty")).to_be_hidden()
    # A plan's invoice is not a card payment of credits: no receipt, and the page says so.
    expect(s.el("#rcpt-empty")).to_have_text(
        "No receipts yet: every card payment, a top-up or an automatic recharge, gets one here."
    )
    s.close()
    return {}


def receipts(p, config):
    """Every card payment has a receipt, newest first: a top-up and an automatic recharge."""
    s = Session(p, config)
    s.wait_loaded()
    rows = s.el("#rcpt-table tbody tr")
    expected = config["receipts"]
    expect(rows).to_have_count(len(expected))
    for i, receipt in enumerate(expected):
        row = rows.nth(i)
        expect(row).to_have_attribute("data-receipt", receipt["id"])
        texts = [receipt[k] for k in ("number", "kind_text", "amount_text", "credits_text")]
        for text in texts + ["•••• 4242"]:
            expect(row).to_contain_text(text)
    newest = expected[0]
    rows.first.get_by_role("button", name=f"Open receipt {newest['number']}").click()
    view = s.el("#receipt-view")
    expect(view.locator("h3")).to_have_text(f"Receipt {newest['number']}")
    expect(view).to_contain_text(newest["kind_text"])
    expect(view.locator("tfoot tr.total td")).to_have_text(newest["amount_text"])
    s.screenshot("receipts", "#invoices")
    s.close()
    return {}


JOURNEYS = {
    "declined_new_card_keeps_the_saved_one": declined_new_card_keeps_the_saved_one,
    "new_card_authentication": new_card_authentication,
    "receipts": receipts,
    "token_refresh": token_refresh,
    "invoices": invoices,
    "auto_recharge": auto_recharge,
    "buy_credits": buy_credits,
    "buy_with_authentication": buy_with_authentication,
    "declined_card": declined_card,
    "red_bar": red_bar,
    "upgrade": upgrade,
    "agent_limits": agent_limits,
    "csv_export": csv_export,
    "member": member,
    "looks": looks,
    "grants": grants,
}


def main():
    name, config = sys.argv[1], json.loads(sys.argv[2])
    server = serve_embedder(config["embed_port"], config["app"])
    try:
        with sync_playwright() as p:
            try:
                observed = JOURNEYS[name](p, config)
            except BaseException:
                for session in SESSIONS:
                    if session.browser.is_connected():
                        print("the page shows:", *session.messages(), sep="\n  ", file=sys.stderr)
                raise
    except BaseException as failure:
        print("network and glue, in order:", *NETWORK_LOG, sep="\n  ", file=sys.stderr)
        if isinstance(failure, Failed):
            print(f"journey {name} failed: {failure}", file=sys.stderr)
            sys.exit(1)
        raise
    finally:
        server.shutdown()
    print(json.dumps(observed))


if __name__ == "__main__":
    main()
