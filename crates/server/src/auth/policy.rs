//! Per-repository policy: rules over repository name patterns granting
//! pull, push and delete to users, groups, any authenticated caller or
//! everyone. Rules add up; what no rule grants is denied.

use crate::config::PolicyRule;
pub use oci::pattern::Pattern;

/// A set of repository permissions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Perms {
    pub pull: bool,
    pub push: bool,
    pub delete: bool,
}

impl Perms {
    pub const NONE: Perms = Perms {
        pull: false,
        push: false,
        delete: false,
    };
    pub const ALL: Perms = Perms {
        pull: true,
        push: true,
        delete: true,
    };

    pub fn union(self, o: Perms) -> Perms {
        Perms {
            pull: self.pull || o.pull,
            push: self.push || o.push,
            delete: self.delete || o.delete,
        }
    }

    pub fn intersect(self, o: Perms) -> Perms {
        Perms {
            pull: self.pull && o.pull,
            push: self.push && o.push,
            delete: self.delete && o.delete,
        }
    }

    /// From token-scope action names (`pull`, `push`, `delete`, `*`);
    /// unknown names grant nothing.
    pub fn from_actions<'a>(actions: impl IntoIterator<Item = &'a str>) -> Perms {
        actions
            .into_iter()
            .fold(Perms::NONE, |p, a| match a.trim() {
                "pull" => p.union(Perms {
                    pull: true,
                    ..Perms::NONE
                }),
                "push" => p.union(Perms {
                    push: true,
                    ..Perms::NONE
                }),
                "delete" => p.union(Perms {
                    delete: true,
                    ..Perms::NONE
                }),
                "*" => Perms::ALL,
                _ => p,
            })
    }

    /// The scope action names of this set, in a fixed order.
    pub fn actions(self) -> Vec<String> {
        let mut out = Vec::new();
        for (on, name) in [
            (self.pull, "pull"),
            (self.push, "push"),
            (self.delete, "delete"),
        ] {
            if on {
                out.push(name.to_owned());
            }
        }
        out
    }

    pub fn is_empty(self) -> bool {
        self == Perms::NONE
    }
}

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
    User { name: String, groups: Vec<String> },
}

impl Principal {
    pub fn user(name: &str, groups: &[String]) -> Principal {
        Principal::User {
            name: name.to_owned(),
            groups: groups.to_vec(),
        }
    }

    pub fn name(&self) -> Option<&str> {
        match self {
            Principal::Anonymous => None,
            Principal::User { name, .. } => Some(name),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Subject {
    /// `anonymous`: everyone, logged in or not.
    Everyone,
    Authenticated,
    User(String),
    Group(String),
}

impl Subject {
    fn parse(s: &str) -> Result<Subject, String> {
        let s = s.trim();
        match s {
            "anonymous" | "*" => Ok(Subject::Everyone),
            "authenticated" => Ok(Subject::Authenticated),
            _ => match s.split_once(':') {
                Some(("user", n)) if !n.is_empty() => Ok(Subject::User(n.to_owned())),
                Some(("group", g)) if !g.is_empty() => Ok(Subject::Group(g.to_owned())),
                _ => Err(format!(
                    "unknown policy subject {s:?}: use user:NAME, group:NAME, authenticated or anonymous"
                )),
            },
        }
    }

    fn covers(&self, who: &Principal) -> bool {
        match (self, who) {
            (Subject::Everyone, _) => true,
            (_, Principal::Anonymous) => false,
            (Subject::Authenticated, _) => true,
            (Subject::User(u), Principal::User { name, .. }) => u == name,
            (Subject::Group(g), Principal::User { groups, .. }) => groups.contains(g),
        }
    }
}

#[derive(Clone, Debug)]
struct Rule {
    repos: Vec<Pattern>,
    pull: Vec<Subject>,
    push: Vec<Subject>,
    delete: Vec<Subject>,
}

/// The policy: rules from the config, default deny.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    /// The groups the rules grant something to, in order, each once.
    pub fn groups(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for r in &self.rules {
            for s in r.pull.iter().chain(&r.push).chain(&r.delete) {
                if let Subject::Group(g) = s
                    && !out.contains(&g.as_str())
                {
                    out.push(g);
                }
            }
        }
        out
    }

    pub fn new(rules: &[PolicyRule]) -> Result<Policy, String> {
        let subjects = |list: &[String]| -> Result<Vec<Subject>, String> {
            list.iter().map(|s| Subject::parse(s)).collect()
        };
        let mut out = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let ctx = |e: String| format!("auth.policy rule {}: {e}", i + 1);
            if r.repos.is_empty() {
                return Err(ctx("needs at least one pattern in repos".into()));
            }
            out.push(Rule {
                repos: r
                    .repos
                    .iter()
                    .map(|p| Pattern::parse(p))
                    .collect::<Result<_, _>>()
                    .map_err(ctx)?,
                pull: subjects(&r.pull).map_err(ctx)?,
                push: subjects(&r.push).map_err(ctx)?,
                delete: subjects(&r.delete).map_err(ctx)?,
            });
        }
        Ok(Policy { rules: out })
    }

    /// What `who` may do in repository `repo`.
    pub fn perms(&self, who: &Principal, repo: &str) -> Perms {
        let covered = |list: &[Subject]| list.iter().any(|s| s.covers(who));
        self.rules
            .iter()
            .filter(|r| r.repos.iter().any(|p| p.matches(repo)))
            .fold(Perms::NONE, |acc, r| {
                acc.union(Perms {
                    pull: covered(&r.pull),
                    push: covered(&r.push),
                    delete: covered(&r.delete),
                })
            })
    }

    /// Whether callers who are not logged in may pull anything at all.
    pub fn anonymous_pulls_anything(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.pull.contains(&Subject::Everyone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_union() {
        let p = Policy::new(&[
            PolicyRule {
                repos: vec!["team-a/*".into()],
                pull: vec!["group:devs".into(), "user:carol".into()],
                push: vec!["user:alice".into()],
                delete: vec![],
            },
            PolicyRule {
                repos: vec!["**".into()],
                pull: vec!["user:alice".into()],
                push: vec![],
                delete: vec!["user:alice".into()],
            },
            PolicyRule {
                repos: vec!["public/**".into()],
                pull: vec!["anonymous".into()],
                push: vec!["authenticated".into()],
                delete: vec![],
            },
        ])
        .unwrap();
        let alice = Principal::user("alice", &[]);
        let bob = Principal::user("bob", &["devs".into()]);
        let carol = Principal::user("carol", &[]);
        let anon = Principal::Anonymous;
        assert_eq!(p.perms(&alice, "team-a/x"), Perms::ALL);
        assert_eq!(
            p.perms(&bob, "team-a/x"),
            Perms {
                pull: true,
                ..Perms::NONE
            }
        );
        assert_eq!(p.perms(&bob, "team-b/x"), Perms::NONE);
        assert!(p.perms(&carol, "team-a/x").pull);
        assert_eq!(p.perms(&anon, "team-a/x"), Perms::NONE);
        assert_eq!(
            p.perms(&anon, "public/x"),
            Perms {
                pull: true,
                ..Perms::NONE
            }
        );
        assert!(p.perms(&bob, "public/x").push);
        assert!(p.anonymous_pulls_anything());
        assert!(!Policy::default().anonymous_pulls_anything());
        assert!(
            Policy::new(&[PolicyRule {
                repos: vec!["a".into()],
                pull: vec!["nobody".into()],
                ..Default::default()
            }])
            .is_err()
        );
        assert!(Policy::new(&[PolicyRule::default()]).is_err());
    }

    #[test]
    fn perms_from_actions() {
        assert_eq!(Perms::from_actions(["*"]), Perms::ALL);
        assert_eq!(
            Perms::from_actions(["pull", "bogus"]).actions(),
            vec!["pull".to_owned()]
        );
        assert_eq!(
            Perms::from_actions(["push", "pull"]).actions(),
            vec!["pull".to_owned(), "push".to_owned()]
        );
        assert!(Perms::from_actions(Vec::<&str>::new()).is_empty());
    }
}
