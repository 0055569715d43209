//! Reliability: the HTTP API fuzzed from its OpenAPI document with schemathesis (PyPI, installed
//! by `scripts/env.sh`), against the real app in the local host.
//!
//! Every documented operation gets generated valid and invalid requests (examples, coverage
//! and fuzzing phases) with the right credential for its security scheme and the workspace of
//! the token, Stripe played by localstripe. Checks: never a 5xx, and every answer conforms to
//! the document (status, content type, body schema), and requests the document calls invalid
//! are refused. (Not the converse: the document is looser than the app, which refuses unknown
//! fields, over-long ids and out-of-range numbers the document does not mention.) Afterwards
//! the ledger's invariants hold.
//! `RELIABILITY_SCHEMATHESIS_EXAMPLES` sets the examples per operation (default 25; 200 under
//! `RELIABILITY_SOAK=1`).

use std::process::Command;

use anyhow::{Context as _, Result, ensure};
use e2e::HostOptions;
use e2e::api::{App, Role, SERVICE_KEY, expect, now_secs, token};
use e2e::reliability::{Scenario, soak};
use e2e::stripe::{Localstripe, SECRET_KEY};
use e2e::workspace_root;
use serde_json::json;

fn examples() -> u32 {
    std::env::var("RELIABILITY_SCHEMATHESIS_EXAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if soak() { 200 } else { 25 })
}

#[test]
fn the_api_survives_schemathesis_and_conforms_to_its_document() -> Result<()> {
    let scenario = Scenario::new("schemathesis (OpenAPI fuzzing)");
    let ls = Localstripe::start()?;
    let app = App::start_with(
        HostOptions::default()
            .env("SPIN_VARIABLE_STRIPE_API_BASE", ls.base_url())
            .env("SPIN_VARIABLE_STRIPE_SECRET_KEY", SECRET_KEY)
            .env("SPIN_VARIABLE_STRIPE_WEBHOOK_SECRET", "whsec_schemathesis"),
    )?;
    app.provision("ws-a")?;
    let reply = app.user(
        "ws-a",
        Role::Owner,
        "POST",
        "/v1/workspaces/ws-a/subscription",
        Some(&json!({"plan_id": "free"})),
    )?;
    expect(&reply, 200, "subscribe")?;

    let dir = tempfile::tempdir()?;
    let owner = token("ws-a", Role::Owner, now_secs() + 6 * 3600);
    let config = format!(
        r#"
base-url = "{base}"
workers = 2
request-timeout = 20
max-failures = 20
continue-on-failure = true

[checks]
not_a_server_error.enabled = true
status_code_conformance.enabled = true
content_type_conformance.enabled = true
response_schema_conformance.enabled = true
negative_data_rejection.enabled = true
positive_data_acceptance.enabled = false
missing_required_header.enabled = false
unsupported_method.enabled = false
ignored_auth.enabled = false

[generation]
max-examples = {examples}
database = "none"

[phases.stateful]
enabled = false

[parameters]
"path.ws" = "ws-a"

# localstripe has no billing-portal endpoint: the app answers 502 payment_processing_error (the
# session request is checked against a stub in tests/tests/stripe_subscriptions.rs).
[[operations]]
include-path-regex = "/billing-portal$"
headers = {{ Authorization = "Bearer {owner}" }}
checks.not_a_server_error.enabled = false

[[operations]]
include-path-regex = "^/v1/(workspaces/[{{]ws[}}]/|plans$|rates$)"
headers = {{ Authorization = "Bearer {owner}" }}

[[operations]]
include-path-regex = "^/(v1/(workspaces/[{{]ws[}}]$|catalog|calls|usage|test-clocks)|internal/)"
headers = {{ Authorization = "Bearer {SERVICE_KEY}" }}
"#,
        base = app.host.base_url(),
        examples = examples(),
    );
    let config_path = dir.path().join("schemathesis.toml");
    std::fs::write(&config_path, config)?;
    let output = Command::new("python3")
        .arg("-c")
        .arg("import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())")
        .arg("--config-file")
        .arg(&config_path)
        .arg("run")
        .arg(workspace_root().join("docs/openapi.json"))
        .args([
            "--seed",
            "7",
            "--no-color",
            "--suppress-health-check",
            "all",
        ])
        .arg("--report")
        .arg("junit")
        .arg("--report-dir")
        .arg(dir.path())
        .current_dir(dir.path())
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .context("cannot run schemathesis (source scripts/env.sh)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let requests = test_cases(&stdout);
    scenario.requests(requests);
    scenario.faults(requests);
    eprintln!("{stdout}");
    ensure!(
        output.status.success(),
        "schemathesis found failures ({}):\n{stderr}",
        output.status
    );
    app.check_invariants()?;
    scenario.invariants_checked();
    scenario.passed();
    Ok(())
}

/// The number of generated test cases schemathesis reports ("N generated").
fn test_cases(report: &str) -> u64 {
    report
        .lines()
        .filter_map(|line| {
            let (before, _) = line.split_once(" generated")?;
            before.split_whitespace().last()?.parse::<u64>().ok()
        })
        .sum()
}

#[test]
fn openapi_lists_422_for_an_invalid_agent_id() -> Result<()> {
    let text = std::fs::read_to_string(workspace_root().join("docs/openapi.json"))?;
    let doc: serde_json::Value = serde_json::from_str(&text)?;
    let operation = &doc["paths"]["/v1/workspaces/{ws}/agents/{agent}/limits"]["get"];
    ensure!(
        operation["responses"].get("422").is_some(),
        "GET agent limits does not document 422: {}",
        operation["responses"]
    );
    Ok(())
}
