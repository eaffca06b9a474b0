//! Token scopes (`repository:team/app:pull,push`, `registry:catalog:*`) and
//! the `access` claim entries they become.

use serde::{Deserialize, Serialize};

/// One scope: a resource and the actions asked for or granted on it. Also
/// the shape of one entry of a token's `access` claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub actions: Vec<String>,
}

impl Scope {
    /// Parse one scope, `type[(class)]:name:action[,action...]`. The name may
    /// itself contain `:`, so the actions are what follows the last one.
    pub fn parse(s: &str) -> Result<Scope, String> {
        let bad = || {
            format!(
                "invalid scope {:?}",
                s.chars().take(200).collect::<String>()
            )
        };
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        let (name, actions) = rest.rsplit_once(':').ok_or_else(bad)?;
        // A resource class (`repository(plugin)`) does not change what is
        // asked for.
        let kind = kind.split_once('(').map_or(kind, |(k, _)| k);
        if kind.is_empty() || name.is_empty() {
            return Err(bad());
        }
        Ok(Scope {
            kind: kind.to_owned(),
            name: name.to_owned(),
            actions: actions
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }

    /// Every scope in a list of `scope` values, each of which may hold
    /// several space-separated scopes.
    pub fn parse_all<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Vec<Scope>, String> {
        values
            .into_iter()
            .flat_map(str::split_whitespace)
            .map(Scope::parse)
            .collect()
    }

    pub fn is_catalog(&self) -> bool {
        self.kind == "registry" && self.name == "catalog"
    }

    /// The scope as written in a challenge.
    pub fn to_scope_string(&self) -> String {
        format!("{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        let s = Scope::parse("repository:team/app:pull,push").unwrap();
        assert_eq!(s.kind, "repository");
        assert_eq!(s.name, "team/app");
        assert_eq!(s.actions, vec!["pull", "push"]);
        assert_eq!(s.to_scope_string(), "repository:team/app:pull,push");
        let s = Scope::parse("repository(plugin):host:5000/app:pull").unwrap();
        assert_eq!(s.kind, "repository");
        assert_eq!(s.name, "host:5000/app");
        let s = Scope::parse("registry:catalog:*").unwrap();
        assert!(s.is_catalog());
        assert_eq!(s.actions, vec!["*"]);
        assert_eq!(Scope::parse("repository:a:").unwrap().actions.len(), 0);
        assert!(Scope::parse("repository").is_err());
        assert!(Scope::parse("repository:a").is_err());
        assert!(Scope::parse(":a:pull").is_err());
        let all = Scope::parse_all(["repository:a:pull repository:b:push", "registry:catalog:*"])
            .unwrap();
        assert_eq!(all.len(), 3);
        assert!(Scope::parse_all(["repository:a:pull nonsense"]).is_err());
    }
}
