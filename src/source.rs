//! The Miro log sources and the facts every part of mirotrail knows them by: the
//! config section and checkpoint name, the store (and Log Analytics) table, the Sentinel
//! stream, what one Miro call costs, and which item time the API's window filters on. A neutral module, so `config`, `miro`, `store`
//! and `sink` share it without importing each other (`config::SourceKind` re-exports it).

/// The Miro log sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    AuditLogs,
    ContentLogs,
    /// AI interaction logs (beta, Enterprise Guard): `docs/miro-api.md`.
    AiInteractionLogs,
}

impl SourceKind {
    pub const ALL: [SourceKind; 3] = [
        SourceKind::AuditLogs,
        SourceKind::ContentLogs,
        SourceKind::AiInteractionLogs,
    ];

    /// The name used in config sections, checkpoints, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::AuditLogs => "audit_logs",
            SourceKind::ContentLogs => "content_logs",
            SourceKind::AiInteractionLogs => "ai_interaction_logs",
        }
    }

    /// Parses `audit_logs` / `content_logs` / `ai_interaction_logs`.
    pub fn from_name(name: &str) -> Option<Self> {
        SourceKind::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The store table (and Log Analytics table) this source fills.
    pub fn table(self) -> &'static str {
        match self {
            SourceKind::AuditLogs => "MiroAuditLogs_CL",
            SourceKind::ContentLogs => "MiroContentLogs_CL",
            SourceKind::AiInteractionLogs => "MiroAiInteractionLogs_CL",
        }
    }

    /// The Sentinel DCR stream this source's records are sent to.
    pub fn stream(self) -> &'static str {
        match self {
            SourceKind::AuditLogs => "Custom-MiroAuditLogs_CL",
            SourceKind::ContentLogs => "Custom-MiroContentLogs_CL",
            SourceKind::AiInteractionLogs => "Custom-MiroAiInteractionLogs_CL",
        }
    }

    /// Credits one call costs (audit logs: Level 2, content and AI interaction logs:
    /// Level 4).
    pub fn credits_per_call(self) -> u64 {
        match self {
            SourceKind::AuditLogs => 100,
            SourceKind::ContentLogs | SourceKind::AiInteractionLogs => 2000,
        }
    }

    /// The item field the API's time window filters on, which is also the time the
    /// collector's windows and watermark follow. Audit and content logs filter on when
    /// the event happened, so an event that reaches the API late lands behind the
    /// watermark; AI interaction logs filter on `storedAt`, when Miro stored the entry,
    /// so an entry can never appear behind a window already read (README, "Late events").
    pub fn window_field(self) -> &'static str {
        match self {
            SourceKind::AuditLogs => "createdAt",
            SourceKind::ContentLogs => "actionTime",
            SourceKind::AiInteractionLogs => "storedAt",
        }
    }

    /// Whether the API filters this source on the storage time (see [`Self::window_field`]).
    pub fn windowed_on_storage_time(self) -> bool {
        matches!(self, SourceKind::AiInteractionLogs)
    }

    /// Whether the source's endpoint is under `/v2/orgs/{org_id}` (needs `miro.org_id`).
    pub fn needs_org_id(self) -> bool {
        matches!(
            self,
            SourceKind::ContentLogs | SourceKind::AiInteractionLogs
        )
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
