//! What ships beside the binary: shell completions and manual pages made by
//! `wharf completions` / `wharf man`, and the systemd unit in dist/.

use std::path::Path;
use std::process::Command;

const WHARF: &str = env!("CARGO_BIN_EXE_wharf");

fn wharf(args: &[&str]) -> String {
    let o = Command::new(WHARF).args(args).output().expect("run wharf");
    assert!(
        o.status.success(),
        "wharf {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("UTF-8")
}

#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = wharf(&["completions", shell]);
        for sub in ["serve", "push", "pull", "cp", "login"] {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    // The bash script is valid bash.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("wharf.bash");
    std::fs::write(&f, wharf(&["completions", "bash"])).unwrap();
    let o = Command::new("bash").arg("-n").arg(&f).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(WHARF)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn man_pages_for_the_binary_and_each_command() {
    let page = wharf(&["man"]);
    assert!(
        page.starts_with(".ie") || page.contains(".TH wharf 1"),
        "{page}"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    wharf(&["man", "--dir", out.to_str().unwrap()]);
    for name in [
        "wharf",
        "wharf-serve",
        "wharf-push",
        "wharf-cp",
        "wharf-login",
    ] {
        let text = std::fs::read_to_string(out.join(format!("{name}.1")))
            .unwrap_or_else(|e| panic!("{name}.1: {e}"));
        assert!(text.contains(&format!(".TH {name} 1")), "{name}.1: {text}");
    }
    let serve = std::fs::read_to_string(out.join("wharf-serve.1")).unwrap();
    assert!(
        serve.contains("wharf serve") && serve.contains("data\\-dir"),
        "{serve}"
    );
}

/// dist/wharf.service passes `systemd-analyze verify` with ExecStart
/// pointing at this build (the shipped path need not exist here).
#[test]
fn systemd_unit_verifies() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/wharf.service");
    let text = std::fs::read_to_string(&unit).expect("dist/wharf.service");
    assert!(text.contains("ExecStart=/usr/local/bin/wharf serve"));
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("wharf.service");
    std::fs::write(&local, text.replace("/usr/local/bin/wharf", WHARF)).unwrap();
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&local)
        .output()
        .expect("systemd-analyze (systemd) is needed to check the unit");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success() && said.trim().is_empty(), "{said}");
}
