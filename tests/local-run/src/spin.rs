//! Real Spin for the tests that can use it: `spin up` from the binary `SPIN_BIN` names (Spin 4.1
//! built from spinframework/spin; CI has none, and such tests print one line saying they were
//! skipped).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

/// The `spin` binary named by `SPIN_BIN`, if it is a file.
pub fn spin_bin() -> Option<PathBuf> {
    std::env::var_os("SPIN_BIN")
        .map(PathBuf::from)
        .filter(|bin| bin.is_file())
}

/// A copy of `manifest` in `dir` without its `[[trigger.cron]]` tables (real Spin needs the
/// trigger-cron plugin for them) and with absolute component sources: the HTTP app alone.
pub fn http_only_manifest(manifest: &Path, dir: &Path) -> Result<PathBuf> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("read {}", manifest.display()))?;
    let base = manifest.parent().unwrap_or(Path::new("."));
    let mut out = String::new();
    let mut in_cron = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            in_cron = trimmed.starts_with("[[trigger.cron]]");
        }
        if in_cron {
            continue;
        }
        match trimmed
            .strip_prefix("source = \"")
            .and_then(|rest| rest.strip_suffix('"'))
        {
            Some(source) if Path::new(source).is_relative() => {
                let absolute = std::path::absolute(base.join(source))?;
                out.push_str(&format!("source = \"{}\"\n", absolute.display()));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    std::fs::create_dir_all(dir)?;
    let path = dir.join("spin-http.toml");
    std::fs::write(&path, out)?;
    Ok(path)
}
