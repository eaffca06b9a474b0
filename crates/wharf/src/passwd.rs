//! `wharf passwd [USER]`: print an htpasswd line with a bcrypt hash.

use clap::Args;
use std::io::{BufRead as _, IsTerminal as _};
use std::process::ExitCode;

#[derive(Args)]
pub struct PasswdArgs {
    /// The user name (prompted for on a terminal when left out).
    pub user: Option<String>,
    /// bcrypt cost (4-31); each step doubles the time to check a password.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(4..=31))]
    pub cost: u32,
}

/// The password: prompted for twice without echo on a terminal, else one
/// line of standard input.
fn read_password() -> Result<String, String> {
    if std::io::stdin().is_terminal() {
        let a = rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?;
        let b = rpassword::prompt_password("Again: ").map_err(|e| e.to_string())?;
        if a != b {
            return Err("the passwords differ".into());
        }
        return Ok(a);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

fn read_user() -> Result<String, String> {
    if !std::io::stdin().is_terminal() {
        return Err("give the user name as an argument".into());
    }
    eprint!("User: ");
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    Ok(line.trim().to_owned())
}

pub fn run(args: PasswdArgs) -> ExitCode {
    let result = (|| -> Result<String, String> {
        let user = match args.user {
            Some(u) => u,
            None => read_user()?,
        };
        if user.is_empty() || user.contains(':') || user.chars().any(char::is_whitespace) {
            return Err(format!("invalid user name {user:?}"));
        }
        let password = read_password()?;
        if password.is_empty() {
            return Err("empty password".into());
        }
        // $2y$, as Apache's `htpasswd -B` writes it, so either tool reads it.
        let hash = bcrypt::hash_with_result(password, args.cost)
            .map_err(|e| e.to_string())?
            .format_for_version(bcrypt::Version::TwoY);
        Ok(format!("{user}:{hash}"))
    })();
    match result {
        Ok(line) => {
            outln!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wharf passwd: {e}");
            ExitCode::from(2)
        }
    }
}
