"""The billing page's main journeys on real Spin (what production runs), not the local host.

    SPIN_BIN=/path/to/spin python3 tests/browser/on_spin.py

Starts localstripe and `spin up` on this checkout's spin.toml (components built:
scripts/build-components.sh), sets workspaces up through the API as the Rust tests do, and runs
the journeys of billing_page.py against it: buying credits with a new card, a declined card, the
red bar and a member's view. Exits non-zero if any journey fails. Not part of scripts/test.sh:
CI has no Spin binary (Spin 4.1 builds from source in about 40 minutes).
"""

import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
JWT_SECRET = "on-spin-jwt-secret-of-reasonable-length"
SERVICE_KEY = "on-spin-service-key"
STRIPE_KEY = "sk_test_localstripe"
WEBHOOK_SECRET = "whsec_on_spin"
CARD_OK = "4242424242424242"
CARD_DECLINED_ON_CHARGE = "4000000000000341"
# Stripe.js's words for a declined new card (the page shows them; the webhook then settles it).
STRIPE_DECLINED = "Your card was declined."

CATALOG = {
    "settings": {
        "currency": "USD",
        "credit_price": "1",
        "topup_min": "10",
        "topup_max": "5000",
        "inbound_grace_secs": 900,
        "hold_timeout_secs": 120,
        "low_balance_threshold": "5",
        "auto_recharge_max_per_day": 5,
    },
    "plans": [{"id": "free", "name": "Free", "price": "0", "monthly_credits": "10"}],
    "rates": [{"kind": "message", "price": "0.01"}],
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dev_token():
    path = os.path.join(ROOT, "scripts", "dev-token.py")
    spec = importlib.util.spec_from_file_location("dev_token", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DEV_TOKEN = _dev_token()


def token(workspace, role):
    return DEV_TOKEN.token(JWT_SECRET, workspace, role, 3600)


def call(method, url, bearer, body=None, form=None):
    headers = {"authorization": f"Bearer {bearer}"}
    data = None
    if body is not None:
        headers["content-type"] = "application/json"
        data = json.dumps(body).encode()
    elif form is not None:
        headers["content-type"] = "application/x-www-form-urlencoded"
        data = form.encode()
    request = urllib.request.Request(url, method=method, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as reply:
            text = reply.read().decode()
            return reply.status, json.loads(text) if text.startswith("{") else text
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_until_up(url, process, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            sys.exit(f"{url}: the process exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"{url} did not answer within {seconds} s")


def main():
    spin = os.environ.get("SPIN_BIN")
    if not spin:
        sys.exit("set SPIN_BIN to a Spin 4.1 binary")
    work = tempfile.mkdtemp(prefix="billing-page-on-spin-")
    ls_port, app_port, embed_port = free_port(), free_port(), free_port()
    ls_base, app = f"http://127.0.0.1:{ls_port}", f"http://127.0.0.1:{app_port}"
    log = open(os.path.join(work, "log"), "w")
    # The tests' localstripe: pay-and-save and a failed 3-D Secure reported as Stripe does.
    wrapper = os.path.join(ROOT, "tests", "src", "localstripe_wrapper.py")
    localstripe = subprocess.Popen(
        [sys.executable, wrapper, os.path.join(work, "localstripe.pickle"), "--port", str(ls_port),
         "--from-scratch"],
        stdout=log,
        stderr=log,
    )
    env = dict(
        os.environ,
        SPIN_VARIABLE_AUTH_JWT_SECRET=JWT_SECRET,
        SPIN_VARIABLE_SERVICE_API_KEY=SERVICE_KEY,
        SPIN_VARIABLE_STRIPE_API_BASE=ls_base,
        SPIN_VARIABLE_STRIPE_SECRET_KEY=STRIPE_KEY,
        SPIN_VARIABLE_STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        SPIN_VARIABLE_STRIPE_PUBLISHABLE_KEY="pk_test_localstripe",
        SPIN_VARIABLE_STRIPE_JS_URL=f"{ls_base}/js.stripe.com/v3/",
        SPIN_VARIABLE_BILLING_EMBED_ORIGINS=f"http://localhost:{embed_port}",
    )
    spin_up = subprocess.Popen(
        [spin, "up", "--listen", f"127.0.0.1:{app_port}", "--state-dir", os.path.join(work, "state")],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=log,
    )
    failures = []
    try:
        wait_until_up(f"{ls_base}/v1/balance", localstripe)
        wait_until_up(f"{app}/billing/", spin_up)
        call("POST", f"{ls_base}/_config/webhooks/spin", STRIPE_KEY,
             form=f"url={app}/webhooks/stripe&secret={WEBHOOK_SECRET}")
        status, reply = call("PUT", f"{app}/v1/catalog", SERVICE_KEY, CATALOG)
        assert status == 200, reply
        for ws in ("buy", "declined", "red", "member"):
            call("PUT", f"{app}/v1/workspaces/{ws}", SERVICE_KEY, {"name": ws, "email": f"{ws}@example.com"})
            status, reply = call("POST", f"{app}/v1/workspaces/{ws}/subscription", token(ws, "owner"), {"plan_id": "free"})
            assert status == 200, reply

        def journey(name, ws, role, extra):
            config = {
                "app": app,
                "embed_port": embed_port,
                "token": token(ws, role),
                "workspace": ws,
                "stripe": {"base": ls_base, "secret_key": STRIPE_KEY},
                "screenshots": os.path.join(work, "screenshots"),
                **extra,
            }
            run = subprocess.run(
                [sys.executable, os.path.join(HERE, "billing_page.py"), name, json.dumps(config)],
                capture_output=True,
                text=True,
            )
            print(f"{name} ({ws}): {'ok' if run.returncode == 0 else 'FAILED'}")
            if run.returncode != 0:
                failures.append(name)
                print(run.stderr[-2000:])

        def debit(ws, event_id, quantity):
            status, reply = call("POST", f"{app}/v1/usage", SERVICE_KEY, {
                "id": event_id, "workspace_id": ws, "agent_id": "agent-a", "kind": "message", "quantity": quantity})
            assert status == 200, reply

        def summary(ws):
            return call("GET", f"{app}/v1/workspaces/{ws}/billing", token(ws, "owner"))[1]

        journey("buy_credits", "buy", "owner",
                {"card": CARD_OK, "amount": "25", "wallet_before": "0", "wallet_after": "25",
                 "credits": "25", "preview": "$25.00 buys 25 credits at $1.00 per credit.",
                 "receipt": {"number": "R-0001", "amount_text": "$25.00", "credits": "25",
                             "credits_text": "25.00", "price_text": "$1.00"}})
        journey("declined_card", "declined", "owner",
                {"card": CARD_DECLINED_ON_CHARGE, "message": STRIPE_DECLINED})
        # A card bought through the page, then every credit used: the red bar.
        journey("buy_credits", "red", "owner",
                {"card": CARD_OK, "amount": "10", "wallet_before": "0", "wallet_after": "10",
                 "credits": "10", "preview": "$10.00 buys 10 credits at $1.00 per credit.",
                 "receipt": {"number": "R-0001", "amount_text": "$10.00", "credits": "10",
                             "credits_text": "10.00", "price_text": "$1.00"}})
        debit("red", "red-1", 2000)
        journey("red_bar", "red", "owner",
                {"message": summary("red")["message"], "amount": "20", "wallet_after": "20"})
        debit("member", "member-1", 800)
        member = call("GET", f"{app}/v1/workspaces/member/billing", token("member", "member"))[1]
        journey("member", "member", "member", {"message": member["message"]})
    finally:
        spin_up.terminate()
        localstripe.terminate()
        spin_up.wait(10)
        localstripe.wait(10)
    print(f"logs and screenshots: {work}")
    if failures:
        sys.exit(f"failed on Spin: {', '.join(failures)}")


if __name__ == "__main__":
    main()
