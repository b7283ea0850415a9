//! The two Miro log sources and the facts every part of mirotrail knows them by: the
//! config section and checkpoint name, the store (and Log Analytics) table, the Sentinel
//! stream, and what one Miro call costs. A neutral module, so `config`, `miro`, `store`
//! and `sink` share it without importing each other (`config::SourceKind` re-exports it).

/// The two Miro log sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    AuditLogs,
    ContentLogs,
}

impl SourceKind {
    pub const ALL: [SourceKind; 2] = [SourceKind::AuditLogs, SourceKind::ContentLogs];

    /// The name used in config sections, checkpoints, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::AuditLogs => "audit_logs",
            SourceKind::ContentLogs => "content_logs",
        }
    }

    /// Parses `audit_logs` / `content_logs`.
    pub fn from_name(name: &str) -> Option<Self> {
        SourceKind::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The store table (and Log Analytics table) this source fills.
    pub fn table(self) -> &'static str {
        match self {
            SourceKind::AuditLogs => "MiroAuditLogs_CL",
            SourceKind::ContentLogs => "MiroContentLogs_CL",
        }
    }

    /// The Sentinel DCR stream this source's records are sent to.
    pub fn stream(self) -> &'static str {
        match self {
            SourceKind::AuditLogs => "Custom-MiroAuditLogs_CL",
            SourceKind::ContentLogs => "Custom-MiroContentLogs_CL",
        }
    }

    /// Credits one call costs (audit logs: Level 2, content logs: Level 4).
    pub fn credits_per_call(self) -> u64 {
        match self {
            SourceKind::AuditLogs => 100,
            SourceKind::ContentLogs => 2000,
        }
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
