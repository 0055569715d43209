//! A fault-injecting proxy in front of localstripe: the app's `stripe_api_base` points at it,
//! and a test switches what Stripe does: answer normally, be down, be slow, answer 500 or 429
//! without doing anything, or do the work and lose the answer.
//!
//! localstripe ignores `Idempotency-Key`; Stripe honours it (the same key within 24 h gets the
//! first answer and does nothing again; while the first is still running, another gets a 409
//! `idempotency_key_in_use`). The proxy adds exactly that, keyed by method, path and key, so
//! that counting PaymentIntents in localstripe counts what Stripe would have charged.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;

/// What the proxy does with the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwards to localstripe.
    None,
    /// Closes every connection without an answer (Stripe unreachable).
    Down,
    /// Waits this long, then forwards.
    Slow(Duration),
    /// Answers this status (500 `api_error`, 429 `rate_limit`) without forwarding.
    Status(u16),
    /// Forwards (Stripe does the work), then closes without the answer.
    LoseResponse,
}

#[derive(Default)]
struct State {
    fault: Option<Fault>,
    requests: u64,
    faults_injected: u64,
    forwarded: u64,
    /// Whether `Idempotency-Key` is honoured as Stripe does (true unless turned off).
    ignore_idempotency_keys: bool,
    /// (method path, Idempotency-Key) -> the first raw answer.
    answers: HashMap<String, Vec<u8>>,
    /// Keys whose first request is still being answered.
    in_flight: std::collections::HashSet<String>,
}

/// The running proxy.
pub struct StripeProxy {
    url: String,
    state: Arc<Mutex<State>>,
}

impl StripeProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}", listener.local_addr()?);
        let upstream = upstream
            .strip_prefix("http://")
            .unwrap_or(upstream)
            .to_owned();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (state, upstream) = (shared.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &upstream, &state);
                });
            }
        });
        Ok(Self { url, state })
    }

    /// The base URL to give the app as `stripe_api_base`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sets what happens to the next requests.
    pub fn set(&self, fault: Fault) {
        if let Ok(mut state) = self.state.lock() {
            state.fault = Some(fault);
        }
    }

    /// From now on ignores `Idempotency-Key` as localstripe does: a retried POST acts again, as
    /// Stripe would after its 24 h window (for code that must not rely on the keys alone).
    pub fn ignore_idempotency_keys(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.ignore_idempotency_keys = true;
        }
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.state.lock().map_or(0, |s| s.requests)
    }

    /// Requests localstripe has answered so far (answered by it, whatever the app then got).
    pub fn forwarded(&self) -> u64 {
        self.state.lock().map_or(0, |s| s.forwarded)
    }

    /// Requests a fault was injected into so far.
    pub fn faults_injected(&self) -> u64 {
        self.state.lock().map_or(0, |s| s.faults_injected)
    }
}

fn serve(stream: TcpStream, upstream: &str, state: &Mutex<State>) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(());
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let chunked =
        header_of(&headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        crate::stripe::read_chunked(&mut reader)?
    } else {
        let length: usize = header_of(&headers, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        body
    };
    // Forwarded with a Content-Length instead.
    headers.retain(|(name, _)| name != "transfer-encoding" && name != "content-length");
    headers.push(("content-length".to_owned(), body.len().to_string()));

    let (fault, cached, cache_key) = {
        let mut state = state.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        state.requests += 1;
        let fault = state.fault.unwrap_or(Fault::None);
        if fault != Fault::None {
            state.faults_injected += 1;
        }
        let method_path = request_line
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let cache_key = header_of(&headers, "idempotency-key")
            .filter(|_| !state.ignore_idempotency_keys)
            .map(|key| format!("{method_path} {key}"));
        let cached = cache_key
            .as_ref()
            .and_then(|key| state.answers.get(key).cloned());
        // As Stripe: a second request with a key whose first is still running gets a 409.
        if cached.is_none()
            && let Some(key) = &cache_key
            && !matches!(fault, Fault::Down | Fault::Status(_))
            && !state.in_flight.insert(key.clone())
        {
            drop(state);
            let body = r#"{"error":{"type":"idempotency_error","code":"idempotency_key_in_use","message":"There is currently another in-progress request using this Idempotent Key."}}"#;
            let answer = format!(
                "HTTP/1.1 409 Conflict\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            writer.write_all(answer.as_bytes())?;
            return Ok(());
        }
        (fault, cached, cache_key)
    };
    match fault {
        Fault::Down => return Ok(()),
        Fault::Status(status) => {
            let body = if status == 429 {
                r#"{"error":{"type":"invalid_request_error","code":"rate_limit","message":"Too many requests hit the API too quickly."}}"#
            } else {
                r#"{"error":{"type":"api_error","message":"An unknown error occurred (injected)."}}"#
            };
            let answer = format!(
                "HTTP/1.1 {status} Injected\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            writer.write_all(answer.as_bytes())?;
            return Ok(());
        }
        Fault::Slow(delay) => std::thread::sleep(delay),
        Fault::None | Fault::LoseResponse => {}
    }
    let answer = match cached {
        Some(answer) => answer,
        None => {
            let answer = forward(upstream, &request_line, &headers, &body);
            if let Ok(mut state) = state.lock() {
                state.forwarded += 1;
            }
            if let (Some(key), Ok(mut state)) = (cache_key, state.lock()) {
                state.in_flight.remove(&key);
                if let Ok(answer) = &answer {
                    state.answers.entry(key).or_insert_with(|| answer.clone());
                }
            }
            answer?
        }
    };
    if fault == Fault::LoseResponse {
        return Ok(());
    }
    writer.write_all(&answer)?;
    writer.flush()?;
    Ok(())
}

fn header_of(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// Sends the request to localstripe on a fresh connection and returns its whole raw answer.
fn forward(
    upstream: &str,
    request_line: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = request_line.trim_end().to_owned();
    request.push_str("\r\n");
    for (name, value) in headers {
        if name == "connection" || name == "keep-alive" || name == "host" {
            continue;
        }
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("host: {upstream}\r\nconnection: close\r\n\r\n"));
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    // The client connection is closed after one answer, whatever localstripe said about it.
    Ok(answer)
}
