//! Domain events of the registry: what changed in a repository (a
//! manifest pushed, a tag set, a manifest or tag deleted, a manifest
//! pulled), told to an [`EventSink`] after the change is in the store and
//! before the registry's call returns.
//!
//! The registry decides what happened; the sink decides who is told and
//! how (the server's webhook outbox, docs/events.md). A sink's error fails
//! the registry's call (the change itself stays made): a caller that is
//! told "done" knows its event was recorded.

use async_trait::async_trait;
use oci::{Digest, RepoName, Tag};
use std::io;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A manifest was stored in a repository (pushed, or pushed again).
    ManifestPushed,
    /// A tag was set to a manifest (created, moved, or set again).
    TagSet,
    /// A manifest was deleted from a repository (with the tags naming it,
    /// each of which also has its [`EventKind::TagDeleted`]).
    ManifestDeleted,
    /// A tag was deleted.
    TagDeleted,
    /// A manifest was read (GET, not HEAD).
    ManifestPulled,
}

impl EventKind {
    /// Which of the configured groups the kind belongs to.
    pub fn group(self) -> EventGroup {
        match self {
            EventKind::ManifestPushed | EventKind::TagSet => EventGroup::Push,
            EventKind::ManifestDeleted | EventKind::TagDeleted => EventGroup::Delete,
            EventKind::ManifestPulled => EventGroup::Pull,
        }
    }
}

/// The groups an endpoint subscribes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventGroup {
    Push,
    Delete,
    Pull,
}

/// One domain event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub repository: RepoName,
    /// The manifest (for tag events: the manifest the tag names or named,
    /// when known).
    pub digest: Option<Digest>,
    pub media_type: Option<String>,
    /// The manifest's size in bytes.
    pub size: Option<u64>,
    /// The tag, for tag events (and a pull by tag).
    pub tag: Option<Tag>,
}

/// Where the registry sends its events.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Does anyone want events of `kind` in `repository`? Lets the
    /// registry skip the reads an event needs (a tag's digest before it is
    /// deleted) when nobody does.
    fn wants(&self, kind: EventKind, repository: &RepoName) -> bool;

    /// Record `events` (of one registry operation, in order) durably.
    /// Returns once they are recorded; an error means some were not.
    async fn emit(&self, events: Vec<Event>) -> io::Result<()>;
}
