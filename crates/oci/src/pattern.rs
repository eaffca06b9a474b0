//! Name patterns for configuration rules (access policy, immutable tags,
//! and later retention): `*` matches any run of characters without `/`,
//! `**` any run with `/`, every other character itself.

/// One element of a repository pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Byte(u8),
    /// `*`: any run of characters without `/`.
    Star,
    /// `**`: any run of characters, `/` included.
    DoubleStar,
}

/// A pattern over repository names (or tags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern(Vec<Tok>);

impl Pattern {
    pub fn parse(p: &str) -> Result<Pattern, String> {
        if p.is_empty() {
            return Err("empty repository pattern".into());
        }
        let b = p.as_bytes();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'*' {
                let run = b[i..].iter().take_while(|c| **c == b'*').count();
                if run > 2 {
                    return Err(format!("repository pattern {p:?}: at most two * in a row"));
                }
                toks.push(if run == 2 { Tok::DoubleStar } else { Tok::Star });
                i += run;
            } else {
                toks.push(Tok::Byte(b[i]));
                i += 1;
            }
        }
        Ok(Pattern(toks))
    }

    /// Does the whole `name` match? O(pattern × name).
    pub fn matches(&self, name: &str) -> bool {
        let name = name.as_bytes();
        let n = name.len();
        // reach[j]: the pattern so far matches name[..j].
        let mut reach = vec![false; n + 1];
        reach[0] = true;
        for tok in &self.0 {
            let mut next = vec![false; n + 1];
            for j in 0..=n {
                next[j] = match tok {
                    Tok::Byte(c) => j > 0 && reach[j - 1] && name[j - 1] == *c,
                    Tok::Star => reach[j] || (j > 0 && next[j - 1] && name[j - 1] != b'/'),
                    Tok::DoubleStar => reach[j] || (j > 0 && next[j - 1]),
                };
            }
            reach = next;
        }
        reach[n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> bool {
        Pattern::parse(p).unwrap().matches(n)
    }

    #[test]
    fn patterns() {
        assert!(m("team-a/*", "team-a/app"));
        assert!(!m("team-a/*", "team-a/app/sub"));
        assert!(!m("team-a/*", "team-a"));
        assert!(!m("team-a/*", "team-ab/app"));
        assert!(m("public/**", "public/a"));
        assert!(m("public/**", "public/a/b/c"));
        assert!(!m("public/**", "public"));
        assert!(!m("public/**", "publicx/a"));
        assert!(m("**", "a/b/c"));
        assert!(m("*", "abc"));
        assert!(!m("*", "a/b"));
        assert!(m("exact/name", "exact/name"));
        assert!(!m("exact/name", "exact/name2"));
        assert!(m("a/*/c", "a/b/c"));
        assert!(!m("a/*/c", "a/b/x/c"));
        assert!(m("a/**/c", "a/b/x/c"));
        assert!(m("*-dev/**", "team-dev/x/y"));
        assert!(m("x*y*z", "xaaybbz"));
        assert!(!m("x*y*z", "xaaybb/z"));
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("a/***").is_err());
    }
}
