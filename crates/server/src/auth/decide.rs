//! The authorization decision: one pure function over a typed [`Action`]
//! and who is asking, made before any handler runs. Because it never looks
//! at the store, its answer for a repository the caller may not pull is the
//! same whether the repository exists or not.

use super::policy::{Perms, Policy, Principal};
use super::scope::Scope;
use crate::action::{Access, Action};
use oci::RepoName;

/// What a request's credentials grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grants {
    /// Basic credentials, a client certificate or nothing: the policy decides.
    Policy,
    /// A bearer token: its `access` claims decide. `own`: issued by this
    /// registry's token service (else by an external issuer).
    Token { access: Vec<Scope>, own: bool },
}

/// Who is asking, and how they proved it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub principal: Principal,
    pub grants: Grants,
}

impl Identity {
    pub fn anonymous() -> Identity {
        Identity {
            principal: Principal::Anonymous,
            grants: Grants::Policy,
        }
    }
}

/// Why a request is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 401 with a challenge: log in (or get a token with more scope, when
    /// `insufficient_scope`).
    Unauthenticated { insufficient_scope: bool },
    /// 401: the credentials or token given are wrong.
    BadCredentials,
    /// 403: authenticated, but not allowed.
    Denied,
    /// 429: too many failed logins from this address.
    Throttled { retry_after: u64 },
}

/// What `id` may do in `repo`.
pub fn perms(policy: &Policy, id: &Identity, repo: &str) -> Perms {
    match &id.grants {
        Grants::Policy => policy.perms(&id.principal, repo),
        Grants::Token { access, .. } => access
            .iter()
            .filter(|s| s.kind == "repository" && s.name == repo)
            .fold(Perms::NONE, |p, s| {
                p.union(Perms::from_actions(s.actions.iter().map(String::as_str)))
            }),
    }
}

/// May `who` list the catalog at all (it sees only what it may pull)?
pub fn may_list_catalog(policy: &Policy, who: &Principal) -> bool {
    match who {
        Principal::User { .. } => true,
        Principal::Anonymous => policy.anonymous_pulls_anything(),
    }
}

/// Which catalog entries `id` sees: the repositories it may pull.
pub fn sees_in_catalog(policy: &Policy, id: &Identity, repo: &str) -> bool {
    match &id.grants {
        // Own tokens are short-lived stand-ins for their subject: the
        // subject's policy says what it may pull.
        Grants::Policy | Grants::Token { own: true, .. } => policy.perms(&id.principal, repo).pull,
        Grants::Token { own: false, .. } => perms(policy, id, repo).pull,
    }
}

fn has(p: Perms, need: Access) -> bool {
    match need {
        Access::Pull => p.pull,
        Access::Push => p.push,
        Access::Delete => p.delete,
        Access::None | Access::Catalog => true,
    }
}

/// Refuse `id` an access it lacks: anonymous callers are asked to log in;
/// a holder of one of our tokens whose subject would be allowed is asked to
/// get a token with that scope; everyone else is denied.
fn refuse(id: &Identity, allowed_by_policy: bool) -> Refusal {
    match (&id.principal, &id.grants) {
        (Principal::Anonymous, _) => Refusal::Unauthenticated {
            insufficient_scope: matches!(id.grants, Grants::Token { .. }),
        },
        (_, Grants::Token { own: true, .. }) if allowed_by_policy => Refusal::Unauthenticated {
            insufficient_scope: true,
        },
        _ => Refusal::Denied,
    }
}

/// Decide on `action`. Allowed actions come back, possibly changed: a
/// cross-repository mount whose source the caller may not pull (or that
/// names no source) becomes a plain upload, so no blob of another
/// repository is handed out.
pub fn decide(policy: &Policy, id: &Identity, action: Action) -> Result<Action, Refusal> {
    let need = action.access();
    match need {
        Access::None => {
            if id.principal == Principal::Anonymous && id.grants == Grants::Policy {
                return Err(Refusal::Unauthenticated {
                    insufficient_scope: false,
                });
            }
            Ok(action)
        }
        Access::Catalog => {
            let ok = match &id.grants {
                Grants::Policy => may_list_catalog(policy, &id.principal),
                Grants::Token { access, .. } => access.iter().any(Scope::is_catalog),
            };
            if ok {
                return Ok(action);
            }
            Err(refuse(id, may_list_catalog(policy, &id.principal)))
        }
        Access::Pull | Access::Push | Access::Delete => {
            let Some(repo) = action.repo() else {
                return Err(Refusal::Denied);
            };
            if !has(perms(policy, id, repo.as_str()), need) {
                let by_policy = has(policy.perms(&id.principal, repo.as_str()), need);
                return Err(refuse(id, by_policy));
            }
            Ok(strip_unreadable_mount(policy, id, action))
        }
    }
}

fn strip_unreadable_mount(policy: &Policy, id: &Identity, action: Action) -> Action {
    match action {
        Action::StartUpload {
            repo,
            digest,
            algorithm,
            mount: Some(m),
            from,
        } => {
            let readable = from
                .as_ref()
                .is_some_and(|f| perms(policy, id, f.as_str()).pull);
            Action::StartUpload {
                repo,
                digest,
                algorithm,
                mount: readable.then_some(m),
                from: if readable { from } else { None },
            }
        }
        other => other,
    }
}

/// The scopes a challenge for `action` names: the access it needs on its
/// repository and, for a cross-repository mount, pull on the source (as
/// Distribution asks), so a client that requests what the challenge names
/// gets a token with which the mount can happen.
pub fn challenge_scopes(action: &Action) -> Vec<Scope> {
    let actions: &[&str] = match action.access() {
        Access::None => return Vec::new(),
        Access::Catalog => {
            return vec![Scope {
                kind: "registry".into(),
                name: "catalog".into(),
                actions: vec!["*".into()],
            }];
        }
        Access::Pull => &["pull"],
        Access::Push => &["pull", "push"],
        Access::Delete => &["delete"],
    };
    let scope = |repo: &RepoName, actions: &[&str]| Scope {
        kind: "repository".into(),
        name: repo.as_str().to_owned(),
        actions: actions.iter().map(|a| (*a).to_owned()).collect(),
    };
    let mut scopes: Vec<Scope> = action
        .repo()
        .map(|r| scope(r, actions))
        .into_iter()
        .collect();
    if let Some(from) = action.mount_source()
        && Some(from) != action.repo()
    {
        scopes.push(scope(from, &["pull"]));
    }
    scopes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PolicyRule;
    use oci::{Algorithm, Digest, Reference, RepoName};

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn repo(n: &str) -> RepoName {
        RepoName::parse(n, 255).unwrap()
    }

    fn digest() -> Digest {
        D.parse().unwrap()
    }

    /// One action of every variant, on repository `team/app`.
    fn every_action() -> Vec<Action> {
        let r = repo("team/app");
        let all = vec![
            Action::Base,
            Action::Catalog {
                n: None,
                last: None,
            },
            Action::ListTags {
                repo: r.clone(),
                n: None,
                last: None,
            },
            Action::GetManifest {
                repo: r.clone(),
                reference: Reference::parse("v1").unwrap(),
                head: false,
            },
            Action::PutManifest {
                repo: r.clone(),
                reference: Reference::parse("v1").unwrap(),
                tags: vec![],
            },
            Action::DeleteManifest {
                repo: r.clone(),
                reference: Reference::parse(D).unwrap(),
            },
            Action::GetBlob {
                repo: r.clone(),
                digest: digest(),
                head: true,
            },
            Action::DeleteBlob {
                repo: r.clone(),
                digest: digest(),
            },
            Action::StartUpload {
                repo: r.clone(),
                digest: None,
                algorithm: Algorithm::Sha256,
                mount: None,
                from: None,
            },
            Action::PatchUpload {
                repo: r.clone(),
                id: "x".into(),
            },
            Action::PutUpload {
                repo: r.clone(),
                id: "x".into(),
                digest: digest(),
            },
            Action::GetUpload {
                repo: r.clone(),
                id: "x".into(),
            },
            Action::DeleteUpload {
                repo: r.clone(),
                id: "x".into(),
            },
            Action::Referrers {
                repo: r,
                subject: digest(),
                artifact_type: None,
            },
        ];
        // Every variant is here: adding one to Action breaks this match
        // (no wildcard), and the count below catches a missing sample.
        let mut seen = [false; 14];
        for a in &all {
            let i = match a {
                Action::Base => 0,
                Action::Catalog { .. } => 1,
                Action::ListTags { .. } => 2,
                Action::GetManifest { .. } => 3,
                Action::PutManifest { .. } => 4,
                Action::DeleteManifest { .. } => 5,
                Action::GetBlob { .. } => 6,
                Action::DeleteBlob { .. } => 7,
                Action::StartUpload { .. } => 8,
                Action::PatchUpload { .. } => 9,
                Action::PutUpload { .. } => 10,
                Action::GetUpload { .. } => 11,
                Action::DeleteUpload { .. } => 12,
                Action::Referrers { .. } => 13,
            };
            seen[i] = true;
        }
        assert!(seen.iter().all(|s| *s), "a variant of Action has no sample");
        all
    }

    /// The expected table row: what each caller gets for an action.
    /// `(anonymous, user without permission, user with permission, group member with pull)`
    fn expected(a: &Action) -> [Result<(), Refusal>; 4] {
        const UNAUTH: Result<(), Refusal> = Err(Refusal::Unauthenticated {
            insufficient_scope: false,
        });
        const DENIED: Result<(), Refusal> = Err(Refusal::Denied);
        match a {
            Action::Base | Action::Catalog { .. } => [UNAUTH, Ok(()), Ok(()), Ok(())],
            Action::ListTags { .. }
            | Action::GetManifest { .. }
            | Action::GetBlob { .. }
            | Action::Referrers { .. } => [UNAUTH, DENIED, Ok(()), Ok(())],
            Action::PutManifest { .. }
            | Action::StartUpload { .. }
            | Action::PatchUpload { .. }
            | Action::PutUpload { .. }
            | Action::GetUpload { .. }
            | Action::DeleteUpload { .. }
            | Action::DeleteManifest { .. }
            | Action::DeleteBlob { .. } => [UNAUTH, DENIED, Ok(()), DENIED],
        }
    }

    fn policy() -> Policy {
        Policy::new(&[
            PolicyRule {
                repos: vec!["team/*".into()],
                pull: vec!["user:alice".into(), "group:readers".into()],
                push: vec!["user:alice".into()],
                delete: vec!["user:alice".into()],
            },
            PolicyRule {
                repos: vec!["public/**".into()],
                pull: vec!["anonymous".into()],
                ..Default::default()
            },
        ])
        .unwrap()
    }

    fn user(name: &str, groups: &[&str]) -> Identity {
        Identity {
            principal: Principal::user(
                name,
                &groups.iter().map(|g| (*g).to_owned()).collect::<Vec<_>>(),
            ),
            grants: Grants::Policy,
        }
    }

    #[test]
    fn table_over_every_action() {
        let p = policy();
        // the catalog for anonymous depends on anonymous pull rules: none here
        let p_no_anon = Policy::new(&[PolicyRule {
            repos: vec!["team/*".into()],
            pull: vec!["user:alice".into(), "group:readers".into()],
            push: vec!["user:alice".into()],
            delete: vec!["user:alice".into()],
        }])
        .unwrap();
        let callers = [
            Identity::anonymous(),
            user("bob", &["others"]),
            user("alice", &[]),
            user("carol", &["readers"]),
        ];
        for a in every_action() {
            let want = expected(&a);
            for (who, want) in callers.iter().zip(want) {
                let pol = if matches!(a, Action::Catalog { .. }) {
                    &p_no_anon
                } else {
                    &p
                };
                let got = decide(pol, who, a.clone()).map(|_| ());
                assert_eq!(got, want, "{a:?} for {:?}", who.principal);
            }
        }
        // with an anonymous pull rule, anonymous callers may list (filtered)
        assert!(
            decide(
                &p,
                &Identity::anonymous(),
                Action::Catalog {
                    n: None,
                    last: None
                }
            )
            .is_ok()
        );
        assert!(sees_in_catalog(&p, &Identity::anonymous(), "public/x"));
        assert!(!sees_in_catalog(&p, &Identity::anonymous(), "team/app"));
        assert!(sees_in_catalog(
            &p,
            &user("carol", &["readers"]),
            "team/app"
        ));
    }

    #[test]
    fn tokens() {
        let p = policy();
        let token = |sub: &str, access: &str, own: bool| Identity {
            principal: if sub.is_empty() {
                Principal::Anonymous
            } else {
                Principal::user(sub, &[])
            },
            grants: Grants::Token {
                access: Scope::parse_all([access]).unwrap(),
                own,
            },
        };
        let push = every_action()
            .into_iter()
            .find(|a| matches!(a, Action::PutManifest { .. }))
            .unwrap();
        let pull = every_action()
            .into_iter()
            .find(|a| matches!(a, Action::GetManifest { .. }))
            .unwrap();
        let alice_pull = token("alice", "repository:team/app:pull", true);
        assert!(decide(&p, &alice_pull, pull.clone()).is_ok());
        // alice may push by policy: ask her client for a token with that scope
        assert_eq!(
            decide(&p, &alice_pull, push.clone()),
            Err(Refusal::Unauthenticated {
                insufficient_scope: true
            })
        );
        // bob may not: denied
        let bob = token("bob", "repository:team/app:pull", true);
        assert!(decide(&p, &bob, pull.clone()).is_ok(), "the token says so");
        assert_eq!(decide(&p, &bob, push.clone()), Err(Refusal::Denied));
        // external tokens are taken as they are
        let ext = token("bob", "repository:team/app:pull,push", false);
        assert!(decide(&p, &ext, push.clone()).is_ok());
        let ext = token("alice", "repository:team/other:*", false);
        assert_eq!(decide(&p, &ext, pull.clone()), Err(Refusal::Denied));
        // an anonymous token without the scope: log in
        let anon = token("", "repository:public/x:pull", true);
        assert_eq!(
            decide(&p, &anon, pull.clone()),
            Err(Refusal::Unauthenticated {
                insufficient_scope: true
            })
        );
        assert!(decide(&p, &anon, Action::Base).is_ok());
        // the catalog needs the catalog scope in a token
        let cat = Action::Catalog {
            n: None,
            last: None,
        };
        assert!(decide(&p, &alice_pull, cat.clone()).is_err());
        assert!(decide(&p, &token("alice", "registry:catalog:*", true), cat).is_ok());
    }

    #[test]
    fn mounts_need_pull_on_the_source() {
        let p = Policy::new(&[
            PolicyRule {
                repos: vec!["team/*".into()],
                pull: vec!["user:alice".into()],
                push: vec!["user:alice".into()],
                ..Default::default()
            },
            PolicyRule {
                repos: vec!["secret/*".into()],
                pull: vec!["user:root".into()],
                ..Default::default()
            },
        ])
        .unwrap();
        let alice = user("alice", &[]);
        let mount = |from: Option<&str>| Action::StartUpload {
            repo: repo("team/app"),
            digest: None,
            algorithm: Algorithm::Sha256,
            mount: Some(digest()),
            from: from.map(repo),
        };
        let is_mount = |a: &Action| matches!(a, Action::StartUpload { mount: Some(_), .. });
        assert!(is_mount(
            &decide(&p, &alice, mount(Some("team/base"))).unwrap()
        ));
        let a = decide(&p, &alice, mount(Some("secret/x"))).unwrap();
        assert!(!is_mount(&a));
        assert!(a.mount_source().is_none());
        assert!(!is_mount(&decide(&p, &alice, mount(None)).unwrap()));
    }

    fn scope_strings(a: &Action) -> Vec<String> {
        challenge_scopes(a)
            .iter()
            .map(Scope::to_scope_string)
            .collect()
    }

    #[test]
    fn challenge_scopes_of_actions() {
        let scopes: Vec<Vec<String>> = every_action().iter().map(scope_strings).collect();
        assert!(scopes[0].is_empty());
        assert_eq!(scopes[1], ["registry:catalog:*"]);
        assert_eq!(scopes[3], ["repository:team/app:pull"]);
        assert_eq!(scopes[4], ["repository:team/app:pull,push"]);
        assert_eq!(scopes[5], ["repository:team/app:delete"]);
        assert_eq!(scopes[8], ["repository:team/app:pull,push"]);
    }

    #[test]
    fn mount_challenges_ask_for_the_source() {
        let mount = |m: Option<Digest>, from: Option<&str>| Action::StartUpload {
            repo: repo("team/app"),
            digest: None,
            algorithm: Algorithm::Sha256,
            mount: m,
            from: from.map(repo),
        };
        assert_eq!(
            scope_strings(&mount(Some(digest()), Some("team/base"))),
            ["repository:team/app:pull,push", "repository:team/base:pull"]
        );
        // no source, the target itself, or no mount: only the target
        for a in [
            mount(Some(digest()), None),
            mount(Some(digest()), Some("team/app")),
            mount(None, Some("team/base")),
        ] {
            assert_eq!(
                scope_strings(&a),
                ["repository:team/app:pull,push"],
                "{a:?}"
            );
        }
    }
}
