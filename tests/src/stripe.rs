//! The localstripe test harness: a stateful Stripe emulator on loopback, and helpers that act as
//! Stripe.js and as a webhook endpoint would.
//!
//! [`Localstripe::start`] runs PyPI `localstripe` 1.15.10 (installed by `scripts/env.sh`) on a
//! free loopback port, waits (bounded) until it answers, and kills it when dropped. localstripe
//! pickles its whole state to the fixed file `/tmp/localstripe.pickle` after every write; the
//! harness starts it through a small Python wrapper that moves that file into the instance's own
//! temporary directory, so parallel tests never share state and [`Localstripe::restart`] brings
//! back exactly this instance's objects. Webhook registrations live only in memory there:
//! the harness re-registers them after a restart.
//!
//! localstripe's quirks the helpers absorb (see also docs/billing-rules.md, "Stripe"):
//! - confirming a SetupIntent with a PaymentMethod does not attach it to the customer (Stripe
//!   does): [`Localstripe::save_card`] attaches it explicitly;
//! - a declined confirmed PaymentIntent answers 402 `{"error": {"code": "card_declined",
//!   "type": "invalid_request_error", "charge": "ch_..."}}` without naming the PaymentIntent and
//!   without `decline_code`;
//! - webhooks are sent about 1 s after the fact, signed `t=<event.created>,v1=<hex hmac>`;
//! - only Plans (no Prices): create one with [`Localstripe::create_plan`];
//! - an unknown parameter is a 400 "Unexpected ..." on create, but a bare 500 on some updates
//!   (`POST /v1/subscriptions/{id}` with `proration_behavior`);
//! - no billing-portal or Checkout endpoints (404, not JSON): [`StripeStub`] answers those
//!   with Stripe's example objects and records the requests;
//! - no idempotency keys: a retried POST creates a second object.
//!
//! `crate::faults::StripeProxy` sits between the app and localstripe and injects faults.

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::{Value, json};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// The secret key the tests use (localstripe accepts any `sk_...` longer than 5 characters).
pub const SECRET_KEY: &str = "sk_test_localstripe";

/// How long localstripe may take to answer after it is spawned.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A card that works (Stripe's and localstripe's `4242 4242 4242 4242`).
pub const CARD_OK: &str = "4242424242424242";
/// A card that attaches but is declined when charged (`card_declined`).
pub const CARD_DECLINED_ON_CHARGE: &str = "4000000000000341";
/// A card declined when saved (attach or SetupIntent confirm answer 402 `card_declined`).
pub const CARD_DECLINED_ON_ATTACH: &str = "4000000000000002";
/// A card that requires authentication (PaymentIntents answer `requires_action`).
pub const CARD_REQUIRES_AUTH: &str = "4000002500003155";

/// Runs localstripe with its state file moved to argv[1], with the Stripe behaviour it lacks
/// (`localstripe_wrapper.py`, also used by `tests/browser/on_spin.py`).
const WRAPPER: &str = include_str!("localstripe_wrapper.py");

/// A JSON answer from localstripe.
#[derive(Debug, Clone)]
pub struct StripeReply {
    /// HTTP status.
    pub status: u16,
    /// The body as JSON (`Value::Null` when it is not JSON).
    pub json: Value,
}

impl StripeReply {
    /// The body, or an error naming the status and body when the status is not 2xx.
    pub fn ok(self) -> Result<Value> {
        ensure!(
            (200..300).contains(&self.status),
            "localstripe answered {}: {}",
            self.status,
            self.json
        );
        Ok(self.json)
    }

    /// `error.code` of an error answer.
    pub fn error_code(&self) -> Option<&str> {
        self.json["error"]["code"].as_str()
    }
}

/// A running localstripe.
pub struct Localstripe {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    webhooks: Vec<(String, String, String)>,
}

impl Localstripe {
    /// Starts a fresh localstripe on a free loopback port and waits until it answers.
    pub fn start() -> Result<Self> {
        let mut errors = Vec::new();
        // The probed port may be taken before localstripe binds it: then try another.
        for _ in 0..3 {
            let mut this = Self {
                child: None,
                port: free_port()?,
                dir: tempfile::tempdir()?,
                webhooks: Vec::new(),
            };
            match this.spawn(true) {
                Ok(()) => return Ok(this),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        bail!("localstripe did not start: {}", errors.join("; "))
    }

    fn state_file(&self) -> PathBuf {
        self.dir.path().join("localstripe.pickle")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("localstripe.log")
    }

    fn spawn(&mut self, from_scratch: bool) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())?;
        let mut cmd = Command::new("python3");
        cmd.arg("-c")
            .arg(WRAPPER)
            .arg(self.state_file())
            .arg("--port")
            .arg(self.port.to_string());
        if from_scratch {
            cmd.arg("--from-scratch");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .env("PYTHONUNBUFFERED", "1");
        let child = cmd
            .spawn()
            .context("cannot run python3 (is localstripe installed? source scripts/env.sh)")?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!("localstripe exited with {status}: {}", self.log());
            }
            // Any HTTP answer (even 401) means it serves.
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self.get("/v1/balance").is_ok()
            {
                break;
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!(
                    "localstripe did not answer within {START_TIMEOUT:?}: {}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for (id, url, secret) in self.webhooks.clone() {
            self.post_config_webhook(&id, &url, &secret)?;
        }
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it (a Stripe outage); [`Localstripe::restart`] brings it back with its state.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Whether it is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts it again on the same port with the objects it had, and the same webhooks.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn(false)
    }

    /// `http://127.0.0.1:PORT` (what `stripe_api_base` should be).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What localstripe printed (its access log, webhook deliveries and tracebacks).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    fn post_config_webhook(&self, id: &str, url: &str, secret: &str) -> Result<()> {
        let reply = self.post_form(
            &format!("/_config/webhooks/{id}"),
            &[("url", url), ("secret", secret)],
        )?;
        ensure!(
            reply.status == 200,
            "webhook registration: {} {}",
            reply.status,
            reply.json
        );
        Ok(())
    }

    /// Registers a webhook endpoint: every event is POSTed to `url`, signed with `secret`.
    pub fn register_webhook(&mut self, url: &str, secret: &str) -> Result<()> {
        let id = format!("wh{}", self.webhooks.len());
        self.post_config_webhook(&id, url, secret)?;
        self.webhooks.push((id, url.to_owned(), secret.to_owned()));
        Ok(())
    }

    /// POSTs a form with the secret key.
    pub fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Result<StripeReply> {
        let res = agent()
            .post(self.url(path))
            .header("authorization", format!("Bearer {SECRET_KEY}"))
            .send_form(form.iter().copied())
            .with_context(|| format!("POST {path}"))?;
        reply(res)
    }

    /// GETs with the secret key.
    pub fn get(&self, path: &str) -> Result<StripeReply> {
        let res = agent()
            .get(self.url(path))
            .header("authorization", format!("Bearer {SECRET_KEY}"))
            .call()
            .with_context(|| format!("GET {path}"))?;
        reply(res)
    }

    /// DELETEs with the secret key.
    pub fn delete(&self, path: &str) -> Result<StripeReply> {
        let res = agent()
            .delete(self.url(path))
            .header("authorization", format!("Bearer {SECRET_KEY}"))
            .call()
            .with_context(|| format!("DELETE {path}"))?;
        reply(res)
    }

    /// Creates a customer; returns its id.
    pub fn create_customer(&self, email: &str) -> Result<String> {
        let customer = self.post_form("/v1/customers", &[("email", email)])?.ok()?;
        id(&customer)
    }

    /// As Stripe.js `createPaymentMethod`: a card PaymentMethod for a test number (expires
    /// 12/2034, CVC 123); returns its id.
    pub fn create_card(&self, number: &str) -> Result<String> {
        let pm = self
            .post_form(
                "/v1/payment_methods",
                &[
                    ("type", "card"),
                    ("card[number]", number),
                    ("card[exp_month]", "12"),
                    ("card[exp_year]", "2034"),
                    ("card[cvc]", "123"),
                ],
            )?
            .ok()?;
        id(&pm)
    }

    /// Attaches a PaymentMethod to a customer (the raw reply: 402 for declined cards).
    pub fn attach(&self, payment_method: &str, customer: &str) -> Result<StripeReply> {
        self.post_form(
            &format!("/v1/payment_methods/{payment_method}/attach"),
            &[("customer", customer)],
        )
    }

    /// As Stripe.js `confirmCardSetup`: confirms SetupIntent `setup_intent` with a new card
    /// (the raw reply: `status` `succeeded`, `requires_action`, or a 402 error).
    pub fn confirm_setup_intent(&self, setup_intent: &str, number: &str) -> Result<StripeReply> {
        let pm = self.create_card(number)?;
        self.post_form(
            &format!("/v1/setup_intents/{setup_intent}/confirm"),
            &[("payment_method", &pm)],
        )
    }

    /// The whole "save a card" flow as the frontend drives it: a SetupIntent for `customer`
    /// (`usage=off_session`), confirmed with a new card, then the card attached to the customer
    /// as Stripe does on confirm. Returns (SetupIntent id, PaymentMethod id).
    pub fn save_card(&self, customer: &str, number: &str) -> Result<(String, String)> {
        let seti = self
            .post_form(
                "/v1/setup_intents",
                &[("customer", customer), ("usage", "off_session")],
            )?
            .ok()?;
        let seti_id = id(&seti)?;
        let confirmed = self.confirm_setup_intent(&seti_id, number)?.ok()?;
        ensure!(
            confirmed["status"] == "succeeded",
            "SetupIntent not succeeded: {confirmed}"
        );
        let pm = confirmed["payment_method"]
            .as_str()
            .context("confirmed SetupIntent without payment_method")?
            .to_owned();
        self.attach(&pm, customer)?.ok()?;
        Ok((seti_id, pm))
    }

    /// As Stripe.js `confirmCardPayment(client_secret, {payment_method: {card}})` with a card
    /// typed into the page: the card becomes a PaymentMethod that confirms the PaymentIntent (a
    /// decline answers 402; a card that needs 3-D Secure leaves it `requires_action`). Returns
    /// the answer and the PaymentMethod's id.
    pub fn confirm_card_payment(
        &self,
        client_secret: &str,
        number: &str,
    ) -> Result<(StripeReply, String)> {
        let intent = client_secret
            .split("_secret_")
            .next()
            .filter(|id| id.starts_with("pi_"))
            .with_context(|| format!("not a PaymentIntent's client secret: {client_secret}"))?;
        let pm = self.create_card(number)?;
        let reply = self.post_form(
            &format!("/v1/payment_intents/{intent}/confirm"),
            &[("payment_method", &pm)],
        )?;
        Ok((reply, pm))
    }

    /// The customer answers the bank's 3-D Secure challenge of a PaymentIntent, as Stripe.js's
    /// modal does: `success` completes the payment, otherwise it is abandoned.
    pub fn authenticate(&self, client_secret: &str, success: bool) -> Result<StripeReply> {
        let intent = client_secret.split("_secret_").next().unwrap_or_default();
        self.post_form(
            &format!("/v1/payment_intents/{intent}/_authenticate"),
            &[
                ("client_secret", client_secret),
                ("success", if success { "true" } else { "false" }),
            ],
        )
    }

    /// Creates a monthly Plan `id` (the only way localstripe takes subscription items).
    pub fn create_plan(&self, id: &str, amount_minor: i64, currency: &str) -> Result<()> {
        let amount = amount_minor.to_string();
        self.post_form(
            "/v1/plans",
            &[
                ("id", id),
                ("amount", &amount),
                ("currency", currency),
                ("interval", "month"),
                ("product[name]", id),
            ],
        )?
        .ok()?;
        Ok(())
    }
}

impl Drop for Localstripe {
    fn drop(&mut self) {
        self.kill();
    }
}

pub use local_run::free_port;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

fn reply(mut res: ureq::http::Response<ureq::Body>) -> Result<StripeReply> {
    let status = res.status().as_u16();
    let mut body = String::new();
    res.body_mut().as_reader().read_to_string(&mut body)?;
    Ok(StripeReply {
        status,
        json: serde_json::from_str(&body).unwrap_or(Value::Null),
    })
}

fn id(object: &Value) -> Result<String> {
    object["id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no id in {object}"))
}

/// One HTTP request received by a [`WebhookReceiver`].
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The request method.
    pub method: String,
    /// The request target (path and query).
    pub path: String,
    /// Headers, names lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Delivery {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (an event), or `Null`.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The event type of the body.
    pub fn event_type(&self) -> Option<String> {
        self.json()["type"].as_str().map(str::to_owned)
    }
}

/// A tiny HTTP endpoint on loopback that answers 200 to every POST and records it: where
/// localstripe's webhooks go when a test wants to see them itself.
pub struct WebhookReceiver {
    url: String,
    deliveries: mpsc::Receiver<Delivery>,
    seen: Vec<Delivery>,
}

impl WebhookReceiver {
    /// Listens on a free loopback port.
    pub fn start() -> Result<Self> {
        let (url, deliveries) = listen(Arc::new(|_: &Delivery| Some((200, String::new()))))?;
        Ok(Self {
            url: format!("{url}/webhook"),
            deliveries,
            seen: Vec::new(),
        })
    }

    /// The URL to register.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Waits (bounded) for a delivery of event type `event_type`, keeping the others.
    pub fn wait_for_event(&mut self, event_type: &str, timeout: Duration) -> Option<Delivery> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self
                .seen
                .iter()
                .find(|d| d.event_type().as_deref() == Some(event_type))
            {
                return Some(found.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.deliveries.recv_timeout(left) {
                Ok(delivery) => self.seen.push(delivery),
                Err(_) => return None,
            }
        }
    }

    /// Everything received so far.
    pub fn received(&mut self) -> &[Delivery] {
        self.seen.extend(self.deliveries.try_iter());
        &self.seen
    }
}

/// How a loopback endpoint answers a request: status and JSON body, or `None` to close the
/// connection without answering.
type Responder = Arc<dyn Fn(&Delivery) -> Option<(u16, String)> + Send + Sync>;

/// Serves HTTP/1.1 on a free loopback port, answering with `respond` and recording every
/// request: the base URL and the recorded requests.
fn listen(respond: Responder) -> Result<(String, mpsc::Receiver<Delivery>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", listener.local_addr()?);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (tx, respond) = (tx.clone(), respond.clone());
            std::thread::spawn(move || serve(stream, &tx, &respond));
        }
    });
    Ok((url, rx))
}

fn serve(stream: TcpStream, tx: &mpsc::Sender<Delivery>, respond: &Responder) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        match reader.read_line(&mut request_line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
        let body = if chunked {
            read_chunked(&mut reader).ok()
        } else {
            let length = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.parse::<usize>().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            reader.read_exact(&mut body).ok().map(|()| body)
        };
        let Some(body) = body else {
            return;
        };
        let delivery = Delivery {
            method,
            path,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        let answer = respond(&delivery);
        // Recorded before the answer goes out: whoever got the answer finds the request.
        if tx.send(delivery).is_err() {
            return;
        }
        let Some((status, answer)) = answer else {
            return;
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            answer.len()
        );
        let _ = writer.write_all(head.as_bytes());
        let _ = writer.write_all(answer.as_bytes());
        let _ = writer.flush();
    }
}

/// Reads a `Transfer-Encoding: chunked` body (no trailers).
pub(crate) fn read_chunked(reader: &mut BufReader<TcpStream>) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line)?;
        let size_text = size_line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size_text, 16)?;
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk)?;
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(chunk.get(..size).context("short chunk")?);
    }
}

/// One of Stripe's example objects, copied into the repository (`shared/stripe/tests/fixtures`,
/// from Stripe's public OpenAPI fixtures) so a clone runs on its own.
pub fn fixture(name: &str) -> Result<Value> {
    let path = crate::workspace_root()
        .join("shared/stripe/tests/fixtures")
        .join(format!("{name}.json"));
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// A stand-in for the Stripe endpoints localstripe lacks (the billing portal, subscription
/// updates with `proration_behavior`): it answers with Stripe's own example objects
/// (`shared/stripe/tests/fixtures`) and records every request, so tests check the requests the
/// app sends. The subscription remembers its plan and `cancel_at_period_end`.
pub struct StripeStub {
    url: String,
    requests: mpsc::Receiver<Delivery>,
    seen: Vec<Delivery>,
}

impl StripeStub {
    /// Listens on a free loopback port.
    pub fn start() -> Result<Self> {
        let load = fixture;
        let list = |items: Vec<Value>| json!({"object": "list", "data": items}).to_string();
        let customer = load("customer")?.to_string();
        let setup_intent = load("setup_intent")?.to_string();
        let cards = list(vec![load("payment_method")?]);
        let invoices = list(vec![load("invoice")?]);
        let portal = load("billing_portal.session")?.to_string();
        let mut subscription = load("subscription")?;
        subscription["cancel_at_period_end"] = false.into();
        let subscription = Arc::new(Mutex::new(subscription));
        let respond: Responder = Arc::new(move |request: &Delivery| {
            let path = request.path.split('?').next().unwrap_or_default();
            let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
            let answer = match (request.method.as_str(), segments.as_slice()) {
                ("POST", ["v1", "customers"] | ["v1", "customers", _])
                | ("GET", ["v1", "customers", _]) => customer.clone(),
                ("POST", ["v1", "setup_intents"]) => setup_intent.clone(),
                ("GET", ["v1", "payment_methods"]) => cards.clone(),
                ("GET", ["v1", "subscriptions"]) => list(Vec::new()),
                ("GET" | "POST", ["v1", "subscriptions", ..]) => {
                    let mut sub = subscription.lock().unwrap_or_else(|e| e.into_inner());
                    for (key, value) in form_pairs(&request.body) {
                        match key.as_str() {
                            "items[0][plan]" => {
                                sub["items"]["data"][0]["plan"] =
                                    json!({"id": value, "object": "plan"})
                            }
                            "cancel_at_period_end" => {
                                sub["cancel_at_period_end"] = (value == "true").into()
                            }
                            _ => {}
                        }
                    }
                    sub.to_string()
                }
                ("GET", ["v1", "invoices"]) => invoices.clone(),
                ("POST", ["v1", "billing_portal", "sessions"]) => portal.clone(),
                _ => {
                    let error = json!({"error": {"type": "invalid_request_error",
                                                 "message": format!("stub: no route {path}")}});
                    return Some((404, error.to_string()));
                }
            };
            Some((200, answer))
        });
        let (url, requests) = listen(respond)?;
        Ok(Self {
            url,
            requests,
            seen: Vec::new(),
        })
    }

    /// The base URL (`stripe_api_base`).
    pub fn base_url(&self) -> &str {
        &self.url
    }

    /// The requests received so far.
    pub fn requests(&mut self) -> &[Delivery] {
        self.seen.extend(self.requests.try_iter());
        &self.seen
    }

    /// The form bodies of the requests `method path` received so far (query strings ignored).
    pub fn forms(&mut self, method: &str, path: &str) -> Vec<Vec<(String, String)>> {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path.split('?').next() == Some(path))
            .map(|r| form_pairs(&r.body))
            .collect()
    }
}

/// Decodes an `application/x-www-form-urlencoded` body.
pub fn form_pairs(body: &str) -> Vec<(String, String)> {
    let decode = |text: &str| -> String {
        let bytes = text.replace('+', " ").into_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (bytes[i], hex) {
                (b'%', Some(byte)) => {
                    out.push(byte);
                    i += 3;
                }
                (byte, _) => {
                    out.push(byte);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Checks a `Stripe-Signature` header (`t=..,v1=..`) against `payload` and `secret` as Stripe
/// signs: HMAC-SHA256 of `t.payload`, hex. Returns the timestamp when a `v1` matches.
pub fn verify_signature(header: &str, payload: &str, secret: &str) -> Option<i64> {
    use hmac::{KeyInit as _, Mac as _};
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1.push(value.to_owned()),
            _ => {}
        }
    }
    let t = t?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(format!("{t}.{payload}").as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    v1.contains(&expected).then_some(t)
}

/// Every PaymentIntent localstripe holds for `customer` (at most 100).
pub fn payment_intents(ls: &Localstripe, customer: &str) -> Result<Vec<serde_json::Value>> {
    let list = ls.get("/v1/payment_intents?limit=100")?.ok()?;
    Ok(list["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|pi| pi["customer"] == customer)
        .cloned()
        .collect())
}

/// Saves card `number` for workspace `ws` as the billing page does: the app's SetupIntent,
/// confirmed as Stripe.js would, then `POST .../payment-method/refresh`. Returns the refreshed
/// body and the Stripe customer.
pub fn save_card_through_app(
    app: &crate::api::App,
    ls: &Localstripe,
    ws: &str,
    number: &str,
) -> Result<(Value, String)> {
    use crate::api::expect;
    let owner = |method: &str, rest: &str, body: Option<&Value>| app.owner(ws, method, rest, body);
    let setup = expect(
        &owner("POST", "/payment-method/setup", Some(&json!({})))?,
        200,
        "setup",
    )?;
    let seti = setup["setup_intent_id"]
        .as_str()
        .context("no setup_intent_id")?;
    ensure!(
        setup["client_secret"]
            .as_str()
            .is_some_and(|s| s.starts_with(seti)),
        "client_secret: {setup}"
    );
    let confirmed = ls.confirm_setup_intent(seti, number)?.ok()?;
    ensure!(
        confirmed["status"] == "succeeded",
        "SetupIntent: {confirmed}"
    );
    let customer = confirmed["customer"]
        .as_str()
        .context("SetupIntent without customer")?
        .to_owned();
    let pm = confirmed["payment_method"]
        .as_str()
        .context("no payment_method")?;
    ls.attach(pm, &customer)?.ok()?;
    let refreshed = expect(
        &owner("POST", "/payment-method/refresh", None)?,
        200,
        "refresh",
    )?;
    ensure!(
        refreshed["payment_method"]["last4"] == number[number.len() - 4..],
        "refresh: {refreshed}"
    );
    Ok((refreshed, customer))
}
