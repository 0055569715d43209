//! The OpenAPI document (docs/openapi.json) against the running app: every documented operation
//! answers one of its documented statuses with the documented content type, and every secured
//! operation refuses a request without credentials with 401.

use anyhow::{Context, Result, ensure};
use e2e::api::{App, Role, SERVICE_KEY, json_of, now_secs, token};
use e2e::workspace_root;
use serde_json::Value;

const WORKSPACE: &str = "acme";

fn document() -> Result<Value> {
    let text = std::fs::read_to_string(workspace_root().join("docs/openapi.json"))
        .context("read docs/openapi.json")?;
    serde_json::from_str(&text).context("parse docs/openapi.json")
}

/// Every (path, method, operation) of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, operation) in item.as_object().into_iter().flatten() {
            out.push((path.clone(), method.to_uppercase(), operation.clone()));
        }
    }
    out
}

fn concrete(path: &str) -> String {
    path.replace("{ws}", WORKSPACE)
        .replace("{agent}", "agent-1")
        .replace("{call_id}", "call-unknown")
        .replace("{id}", "tp-unknown")
}

fn credentials(operation: &Value) -> Option<String> {
    let scheme = operation["security"]
        .as_array()?
        .first()?
        .as_object()?
        .keys()
        .next()?
        .clone();
    match scheme.as_str() {
        "userToken" => Some(format!(
            "Bearer {}",
            token(WORKSPACE, Role::Owner, now_secs() + 600)
        )),
        "serviceKey" => Some(format!("Bearer {SERVICE_KEY}")),
        _ => None,
    }
}

fn example(app: &App, path: &str, method: &str, operation: &Value) -> Result<Option<Value>> {
    if path == "/v1/catalog" && method == "PUT" {
        // Round-trip the current catalog (without its version number).
        let mut current = json_of(&app.service("GET", "/v1/catalog", None)?);
        if let Some(map) = current.as_object_mut() {
            map.remove("version");
        }
        return Ok(Some(current));
    }
    Ok(operation["requestBody"]["content"]["application/json"]
        .get("example")
        .cloned())
}

#[test]
fn every_documented_operation_answers_as_documented() -> Result<()> {
    let doc = document()?;
    let app = App::start()?;
    app.provision(WORKSPACE)?;
    let mut failures = Vec::new();
    for (path, method, operation) in operations(&doc) {
        let url_path = concrete(&path);
        let body = example(&app, &path, &method, &operation)?;
        let auth = credentials(&operation);
        let headers: Vec<(&str, &str)> = auth
            .iter()
            .map(|value| ("authorization", value.as_str()))
            .collect();
        let reply = app.request(&method, &url_path, body.as_ref(), &headers)?;
        let documented = &operation["responses"][reply.status.to_string()];
        if documented.is_null() {
            failures.push(format!(
                "{method} {path}: undocumented status {} {}",
                reply.status, reply.body
            ));
            continue;
        }
        if let Some(content) = documented["content"].as_object() {
            let content_type = reply.header("content-type").unwrap_or("");
            if !content
                .keys()
                .any(|kind| content_type.starts_with(kind.as_str()))
            {
                failures.push(format!(
                    "{method} {path}: content-type {content_type:?} not in {:?}",
                    content.keys().collect::<Vec<_>>()
                ));
            }
            if reply.status >= 400 && json_of(&reply)["error"]["code"].as_str().is_none() {
                failures.push(format!(
                    "{method} {path}: error without a code: {}",
                    reply.body
                ));
            }
        }
        if auth.is_some() {
            let anonymous = app.request(&method, &url_path, body.as_ref(), &[])?;
            if anonymous.status != 401 {
                failures.push(format!(
                    "{method} {path}: {} without credentials, expected 401",
                    anonymous.status
                ));
            }
        }
    }
    ensure!(
        failures.is_empty(),
        "{} operations do not answer as documented:\n{}",
        failures.len(),
        failures.join("\n")
    );
    app.check_invariants()
}

#[test]
fn undocumented_paths_are_json_404s() -> Result<()> {
    let app = App::start()?;
    for path in ["/", "/v2/anything", "/v1/workspaces/acme/unknown"] {
        let reply = app.request(
            "GET",
            path,
            None,
            &[("authorization", &format!("Bearer {SERVICE_KEY}"))],
        )?;
        ensure!(
            reply.status == 404 || reply.status == 401,
            "{path}: {}",
            reply.status
        );
        ensure!(
            json_of(&reply)["error"]["code"].is_string(),
            "{path}: {}",
            reply.body
        );
    }
    Ok(())
}
