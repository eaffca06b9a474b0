//! Every TOML example in the README and docs/ is a configuration Wharf
//! accepts as written: it parses (no unknown keys), passes the checks made
//! before serving, its policy parses, and every group its policy grants to
//! has a member (groups come only from `[[auth.users]]`).

use server::Config;
use server::auth::empty_groups;
use server::auth::policy::Policy;
use std::path::{Path, PathBuf};

/// The ```toml blocks of a Markdown file, with the line each starts on.
fn toml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start();
        match &mut current {
            None if fence.starts_with("```toml") => current = Some((i + 1, String::new())),
            Some(_) if fence.starts_with("```") => out.extend(current.take()),
            Some((_, block)) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "an unclosed ```toml block");
    out
}

fn docs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

#[test]
fn every_toml_example_in_the_docs_is_a_working_config() {
    let mut checked = 0;
    let mut problems = Vec::new();
    for file in docs() {
        let text = std::fs::read_to_string(&file).expect("read a doc");
        for (line, block) in toml_blocks(&text) {
            let at = format!("{}:{line}", file.display());
            checked += 1;
            let config: Config = match toml::from_str(&block) {
                Ok(c) => c,
                Err(e) => {
                    problems.push(format!("{at}: does not parse: {e}"));
                    continue;
                }
            };
            if let Err(e) = config.validate() {
                problems.push(format!("{at}: refused: {e}"));
            }
            match Policy::new(&config.auth.policy) {
                Ok(policy) => {
                    for g in empty_groups(&policy, &config.auth.users) {
                        problems.push(format!(
                            "{at}: the policy grants to group:{g}, which no [[auth.users]] entry is in"
                        ));
                    }
                }
                Err(e) => problems.push(format!("{at}: policy refused: {e}")),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked >= 10, "only {checked} TOML examples found");
}

#[test]
fn a_group_nobody_is_in_is_found() {
    let config: Config = toml::from_str(
        r#"
[auth]
htpasswd = "/etc/wharf/htpasswd"
[[auth.users]]
name = "carol"
password_hash = "$2y$10$x"
groups = ["devs"]
[[auth.policy]]
repos = ["**"]
pull = ["group:devs", "group:ci"]
push = ["group:ci"]
"#,
    )
    .expect("parses");
    let policy = Policy::new(&config.auth.policy).expect("policy");
    assert_eq!(empty_groups(&policy, &config.auth.users), vec!["ci"]);
}

/// `wharf.example.toml` loads, and every setting it leaves active is the
/// default it claims to be.
#[test]
fn the_example_config_is_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wharf.example.toml");
    let text = std::fs::read_to_string(&path).expect("wharf.example.toml");
    let config: Config = toml::from_str(&text).expect("wharf.example.toml parses");
    config
        .validate()
        .expect("wharf.example.toml passes the checks");
    assert_eq!(
        format!("{config:#?}"),
        format!("{:#?}", Config::default()),
        "wharf.example.toml's active settings must be the defaults"
    );
    // Its commented-out sections are valid settings too, once uncommented.
    let uncommented: String = text
        .lines()
        .map(|l| {
            // A commented setting (`# key = ...`) or table header (`# [x]`).
            let setting = |r: &&str| {
                r.starts_with('[')
                    || r.split_once(" = ").is_some_and(|(k, _)| {
                        !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    })
            };
            l.strip_prefix("# ").filter(setting).unwrap_or(l)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let full: Config = toml::from_str(&uncommented).expect("uncommented example parses");
    full.validate()
        .expect("uncommented example passes the checks");
    assert!(full.tls_enabled() && full.auth.enabled() && !full.sources.is_empty());
}
