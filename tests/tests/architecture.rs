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
