//! The claims of ARCHITECTURE.md that a test can hold: which crate may depend on which, and what
//! the components and the ledger must not contain. A new crate, or a dependency the map does not
//! allow, fails here until the map (this table and ARCHITECTURE.md) says it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

/// The workspace's crates by manifest folder, with the workspace crates each may depend on
/// (normal dependencies; tests and build scripts aside). The direction is one way: components
/// over the adapter over the ledger and the Stripe client; the host and the test tools beside.
const MAP: &[(&str, &[&str])] = &[
    ("shared/ledger", &[]),
    ("shared/stripe", &[]),
    ("shared/spin-cron", &[]),
    (
        "shared/spin-adapter",
        &["ledger", "stripe-client", "spin-cron"],
    ),
    (
        "components/*",
        &["ledger", "stripe-client", "spin-adapter", "spin-cron"],
    ),
    ("host", &[]),
    ("tests/local-run", &["ledger"]),
    ("tests", &["ledger", "local-run"]),
    (
        "tests/components/*",
        &["ledger", "stripe-client", "spin-cron"],
    ),
    ("bench", &["ledger", "local-run"]),
    ("sim", &["ledger"]),
];

/// What the domain must not depend on: the runtime, HTTP and the host.
const LEDGER_MUST_NOT_USE: &[&str] = &["spin-sdk", "wit-bindgen", "http", "hyper", "wasmtime"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

struct Package {
    name: String,
    folder: String,
    dependencies: Vec<String>,
}

fn packages() -> Result<Vec<Package>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .context("cargo metadata")?;
    ensure!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let root = root();
    let mut packages = Vec::new();
    for package in metadata["packages"].as_array().context("packages")? {
        let manifest = Path::new(package["manifest_path"].as_str().context("manifest_path")?);
        let folder = manifest
            .parent()
            .and_then(|dir| dir.strip_prefix(&root).ok())
            .context("a package outside the repository")?
            .to_string_lossy()
            .into_owned();
        let dependencies = package["dependencies"]
            .as_array()
            .context("dependencies")?
            .iter()
            .filter(|dep| dep["kind"].is_null())
            .filter_map(|dep| dep["name"].as_str().map(str::to_owned))
            .collect();
        packages.push(Package {
            name: package["name"].as_str().context("name")?.to_owned(),
            folder,
            dependencies,
        });
    }
    Ok(packages)
}

/// The map's entry for a folder: an exact folder, or `parent/*` for the crates directly in it.
fn allowed(folder: &str) -> Option<&'static [&'static str]> {
    MAP.iter().find_map(|(pattern, allowed)| {
        let matches = match pattern.strip_suffix("/*") {
            Some(parent) => Path::new(folder).parent() == Some(Path::new(parent)),
            None => folder == *pattern,
        };
        matches.then_some(*allowed)
    })
}

#[test]
fn every_crate_depends_only_on_what_the_map_allows() -> Result<()> {
    let packages = packages()?;
    let workspace: BTreeMap<&str, &str> = packages
        .iter()
        .map(|p| (p.name.as_str(), p.folder.as_str()))
        .collect();
    ensure!(workspace.len() >= 10, "{workspace:?}");
    let mut wrong = Vec::new();
    for package in &packages {
        let Some(allowed) = allowed(&package.folder) else {
            bail!(
                "{} ({}) is not in the map: add it here and to ARCHITECTURE.md",
                package.name,
                package.folder
            );
        };
        for dependency in &package.dependencies {
            if workspace.contains_key(dependency.as_str())
                && !allowed.contains(&dependency.as_str())
            {
                wrong.push(format!("{} -> {dependency}", package.name));
            }
        }
        if package.name == "ledger" {
            for dependency in &package.dependencies {
                if LEDGER_MUST_NOT_USE.contains(&dependency.as_str()) {
                    wrong.push(format!("ledger -> {dependency}"));
                }
            }
        }
    }
    ensure!(wrong.is_empty(), "dependencies the map forbids: {wrong:?}");
    Ok(())
}

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let mut files = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).with_context(|| folder.display().to_string())? {
            let path = entry?.path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let text = std::fs::read_to_string(&path)?;
                files.push((path, text));
            }
        }
    }
    Ok(files)
}

/// The code of a source file without its `#[cfg(test)]` module (at the end, by our layout).
fn code(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or(text)
}

fn component_sources() -> Result<Vec<(PathBuf, String)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root().join("components"))? {
        let src = entry?.path().join("src");
        if src.is_dir() {
            files.extend(sources(&src)?);
        }
    }
    ensure!(files.len() >= 7, "component sources: {}", files.len());
    Ok(files)
}

/// Whether `code` has a statement that writes: INSERT INTO, DELETE FROM or UPDATE <table> SET.
fn writes_sql(code: &str) -> bool {
    if code.contains("INSERT INTO") || code.contains("DELETE FROM") {
        return true;
    }
    code.match_indices("UPDATE ").any(|(at, _)| {
        let rest = &code[at + "UPDATE ".len()..];
        let table_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        table_end > 0 && rest[table_end..].trim_start().starts_with("SET")
    })
}

#[test]
fn components_write_no_sql() -> Result<()> {
    assert!(writes_sql("UPDATE payments SET status = 'x'"));
    assert!(!writes_sql("// an UPDATE of the page"));
    let offenders: Vec<_> = component_sources()?
        .iter()
        .filter(|(_, text)| writes_sql(code(text)))
        .map(|(path, _)| path.display().to_string())
        .collect();
    ensure!(
        offenders.is_empty(),
        "money moves only through the ledger: {offenders:?}"
    );
    Ok(())
}

#[test]
fn the_ledger_never_reads_the_clock() -> Result<()> {
    const CLOCKS: &[&str] = &[
        "SystemTime::now",
        "Instant::now",
        "Timestamp::now",
        "Zoned::now",
        "Utc::now",
    ];
    let offenders: Vec<_> = sources(&root().join("shared/ledger/src"))?
        .iter()
        .filter(|(_, text)| CLOCKS.iter().any(|clock| code(text).contains(clock)))
        .map(|(path, _)| path.display().to_string())
        .collect();
    ensure!(
        offenders.is_empty(),
        "every ledger operation takes the time as an argument: {offenders:?}"
    );
    Ok(())
}

#[test]
fn every_path_the_architecture_names_exists() -> Result<()> {
    const TOP: &[&str] = &[
        "shared/",
        "components/",
        "host/",
        "tests/",
        "docs/",
        "scripts/",
        "deploy/",
        "fuzz/",
        "bench/",
        "sim/",
    ];
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md"))?;
    let named: Vec<&str> = text
        .split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|quoted| quoted.split_whitespace().next()) // `scripts/bench.sh cluster`
        .filter(|path| TOP.iter().any(|top| path.starts_with(top)) && !path.contains('*'))
        .collect();
    ensure!(named.len() >= 20, "{named:?}");
    let missing: Vec<_> = named
        .iter()
        .filter(|path| !root().join(path).exists())
        .collect();
    ensure!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that do not exist: {missing:?}"
    );
    Ok(())
}

/// Whether a line compares a status: `SomeStatus::Variant` in a match arm, an (in)equality, a
/// `matches!` or an or-pattern. Naming one to build a report for the ledger is not comparing.
fn compares_a_status(line: &str) -> bool {
    let names_a_status = line.match_indices("Status::").any(|(at, _)| {
        let variant = &line[at + "Status::".len()..];
        variant.starts_with(|c: char| c.is_ascii_uppercase())
    });
    names_a_status
        && ["=>", "==", "!=", "matches!", "| "]
            .iter()
            .any(|sign| line.contains(sign))
}

#[test]
fn components_compare_no_status() -> Result<()> {
    assert!(compares_a_status(
        "PaymentStatus::Succeeded => Outcome::Succeeded,"
    ));
    assert!(compares_a_status(
        "if payment.status != PaymentStatus::Failed {"
    ));
    assert!(!compares_a_status("status: SubscriptionStatus::PastDue,"));
    assert!(!compares_a_status(
        "SubscriptionStatus::parse(&s.status) => x"
    ));
    let mut offenders = Vec::new();
    for (path, text) in component_sources()? {
        for (number, line) in code(&text).lines().enumerate() {
            if compares_a_status(line) {
                offenders.push(format!(
                    "{}:{}: {}",
                    path.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    ensure!(
        offenders.is_empty(),
        "what a status means is the ledger's decision: {offenders:#?}"
    );
    Ok(())
}

#[test]
fn one_path_settles_a_payment() -> Result<()> {
    const SETS_STATUS: &str = "UPDATE payments SET status";
    let mut writers = Vec::new();
    for (path, text) in sources(&root().join("shared/ledger/src"))? {
        let code = code(&text);
        for (at, _) in code.match_indices(SETS_STATUS) {
            // The function the statement is written in: the last `fn` before it.
            let head = &code[..at];
            let fn_at = head
                .rfind("fn ")
                .context("a statement outside a function")?;
            let line_start = head[..fn_at].rfind('\n').map_or(0, |n| n + 1);
            let signature = head[line_start..].lines().next().unwrap_or("").trim();
            writers.push((
                path.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                signature.to_owned(),
            ));
        }
    }
    ensure!(writers.len() >= 2, "{writers:?}");
    // Only payments.rs writes a payment's status, from functions private to it: what calls them
    // is `payments::settle`, the one settlement path for every observer of an outcome.
    let elsewhere: Vec<_> = writers
        .iter()
        .filter(|(file, signature)| file != "payments.rs" || signature.starts_with("pub"))
        .collect();
    ensure!(elsewhere.is_empty(), "{elsewhere:?}");
    let payments = std::fs::read_to_string(root().join("shared/ledger/src/payments.rs"))?;
    for (_, signature) in &writers {
        let name = signature
            .split("fn ")
            .nth(1)
            .and_then(|rest| rest.split(['<', '(']).next())
            .context("a function name")?;
        let callers = payments.matches(&format!("{name}(")).count()
            - payments.matches(&format!("fn {name}(")).count();
        let in_settle = payments
            .split("pub async fn settle<")
            .nth(1)
            .and_then(|body| body.split("\n}\n").next())
            .is_some_and(|body| body.contains(&format!("{name}(")));
        ensure!(
            callers == 1 && in_settle,
            "{name} must be called once, by settle ({callers} calls)"
        );
    }
    Ok(())
}

/// Names declared in Rust code (`code` of a source file), each with the item it is declared in:
/// a field, parameter or struct literal's field (`name:`), a `let`, a `fn`, a `const` or a
/// `static`. The item is the last `struct`, `enum`, `fn`, `const` or `static` named before it, or
/// the type of the last `Type {` (a struct literal). Comments, strings and characters are skipped.
fn declarations(code: &str) -> Vec<(String, String)> {
    let chars: Vec<char> = code.chars().collect();
    let at = |n: usize| chars.get(n).copied().unwrap_or(' ');
    let (mut found, mut item, mut previous) = (Vec::new(), String::new(), String::new());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '\'' {
            // A character ('x', '\n'), else a lifetime or label, whose name is read next.
            i += match (at(i + 1), at(i + 2)) {
                ('\\', _) => {
                    let rest = chars.get(i + 3..).unwrap_or_default();
                    3 + rest.iter().position(|&c| c == '\'').unwrap_or(rest.len()) + 1
                }
                (_, '\'') => 3,
                _ => 1,
            };
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let name: String = chars[start..i].iter().collect();
            if (name == "r" || name == "br") && matches!(at(i), '"' | '#') {
                let hashes = chars[i..].iter().take_while(|&&c| c == '#').count();
                let close: String = std::iter::once('"')
                    .chain("#".repeat(hashes).chars())
                    .collect();
                let rest: String = chars
                    .get(i + hashes + 1..)
                    .unwrap_or_default()
                    .iter()
                    .collect();
                i += hashes + 1 + rest.find(&close).map_or(rest.len(), |n| n + close.len());
                continue;
            }
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let introduced =
                ["struct", "enum", "fn", "const", "static"].contains(&previous.as_str());
            if introduced || (name.starts_with(char::is_uppercase) && at(next) == '{') {
                item.clone_from(&name);
            }
            let typed = at(next) == ':' && at(next + 1) != ':';
            if typed || introduced || ["let", "mut"].contains(&previous.as_str()) {
                found.push((item.clone(), name.clone()));
            }
            previous = name;
            continue;
        } else {
            i += 1;
        }
    }
    found
}

/// Names of amounts that must say their unit (`shared/ledger/src/money.rs`, "Units").
const UNIT_WORDS: &[&str] = &["price", "amount", "topup_min", "topup_max", "threshold"];

/// `(item, name, why)`: names with a unit word ending in `_micros` alone that are micro-credits.
const CREDIT_NAMES: &[(&str, &str, &str)] = &[
    (
        "RateTerms",
        "price_micros",
        "a rate's price per unit of usage is in credits",
    ),
    (
        "fund",
        "amount_micros",
        "the charge a debit or a call funds from plan credits and the wallet",
    ),
    (
        "grant_credits",
        "amount_micros",
        "the plan credits a grant posts",
    ),
    (
        "Catalog",
        "low_balance_threshold_micros",
        "the low-balance banner's threshold, on the credit balance",
    ),
    (
        "validate",
        "low_balance_threshold_micros",
        "the catalog's low-balance threshold, read in credits",
    ),
    (
        "AMOUNT_MAX_MICROS",
        "AMOUNT_MAX_MICROS",
        "the bound of any amount input, credits or money alike",
    ),
];

/// Whether a declared name breaks the units rule: it names a price, an amount, a top-up bound
/// or a threshold, ends in `_micros` alone, and is not a known credit quantity.
fn unit_unclear(item: &str, name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    UNIT_WORDS.iter().any(|word| lower.contains(word))
        && lower.ends_with("_micros")
        && !lower.ends_with("_money_micros")
        && !lower.ends_with("_credits_micros")
        && !CREDIT_NAMES
            .iter()
            .any(|(credit_item, credit_name, _)| (*credit_item, *credit_name) == (item, name))
}

#[test]
fn money_names_end_in_money_micros() -> Result<()> {
    let flagged = |code: &str| -> Vec<String> {
        declarations(code)
            .into_iter()
            .filter(|(item, name)| unit_unclear(item, name))
            .map(|(item, name)| format!("{item}::{name}"))
            .collect()
    };
    assert_eq!(
        flagged(
            "pub struct Payment {\n    /// amount_micros: the money\n    pub amount_micros: i64,\n}\n\
             fn f(ws: &W, amount_micros: i64) { let top_up_amount_micros = \"amount_micros: x\"; }"
        ),
        [
            "Payment::amount_micros",
            "f::amount_micros",
            "f::top_up_amount_micros"
        ]
    );
    assert!(
        flagged("struct RateTerms { price_micros: i64, credit_price_money_micros: i64 }")
            .is_empty()
    );
    assert!(
        flagged("let c = '\"'; let s = r#\"price_micros: 1\"#; let x: &'static str = b;")
            .is_empty()
    );
    assert_eq!(
        flagged("let c = '\\''; let d = 'x'; fn g() { let price_micros = 1; }"),
        ["g::price_micros"]
    );
    let mut files = component_sources()?;
    for folder in [
        "shared/ledger/src",
        "shared/stripe/src",
        "shared/spin-adapter/src",
    ] {
        files.extend(sources(&root().join(folder))?);
    }
    let mut offenders = Vec::new();
    let mut declared = Vec::new();
    for (path, text) in &files {
        let code = code(text);
        declared.extend(declarations(code));
        for name in flagged(code) {
            offenders.push(format!("{}: {name}", path.display()));
        }
    }
    ensure!(declared.len() > 1_000, "{} declarations", declared.len());
    // Each exception still names a declaration: none is left over from a rename.
    let stale: Vec<_> = CREDIT_NAMES
        .iter()
        .filter(|(item, name, _)| {
            !declared
                .iter()
                .any(|(i, n)| (i.as_str(), n.as_str()) == (*item, *name))
        })
        .collect();
    ensure!(stale.is_empty(), "CREDIT_NAMES not declared: {stale:?}");
    ensure!(
        offenders.is_empty(),
        "money (micro-units of the currency) ends in `_money_micros`, micro-credits in `_micros` \
         (add a credit quantity to CREDIT_NAMES, with why): {offenders:#?}"
    );
    Ok(())
}
