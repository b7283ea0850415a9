//! Fixed word lists for the generated organisation: names, boards, audit event kinds.

pub(super) const FIRST_NAMES: &[&str] = &[
    "Ada", "Bruno", "Chloe", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemal",
    "Lena", "Mateo", "Nadia", "Oskar", "Priya", "Quentin", "Rosa", "Samir", "Tara", "Umar", "Vera",
    "Wen", "Ximena", "Yusuf", "Zoe", "Anouk", "Bilal", "Carmen", "Dario",
];

pub(super) const LAST_NAMES: &[&str] = &[
    "Almeida", "Berg", "Castillo", "Dubois", "Eriksen", "Fischer", "Garcia", "Hansen", "Ito",
    "Jansen", "Kowalski", "Larsen", "Moreau", "Nakamura", "Okafor", "Petrov", "Quinn", "Rossi",
    "Schmidt", "Tanaka", "Uysal", "Vargas", "Weber", "Xu", "Yilmaz", "Zimmer", "Novak", "Silva",
    "Horvat", "Costa",
];

pub(super) const TEAM_NAMES: &[&str] = &[
    "Platform",
    "Marketing",
    "Design",
    "Sales",
    "Customer Success",
    "Finance",
    "People Ops",
    "Product",
    "Security",
    "Data",
];

pub(super) const BOARD_TOPICS: &[&str] = &[
    "Roadmap",
    "Sprint Retro",
    "User Journey",
    "Brainstorm",
    "Architecture",
    "OKRs",
    "Onboarding Flow",
    "Incident Review",
    "Kanban",
    "Customer Interviews",
    "Launch Plan",
    "Wireframes",
    "Org Chart",
    "Budget Planning",
    "Competitive Analysis",
    "Team Offsite",
];

pub(super) const BOARD_PREFIXES: &[&str] = &[
    "Q1", "Q2", "Q3", "Q4", "2024", "2025", "Draft", "Team", "Mobile", "Web", "EMEA", "APAC",
];

pub(super) const STICKY_TEXTS: &[&str] = &[
    "Ship the MVP",
    "Talk to 5 customers",
    "Why is churn up?",
    "Reduce onboarding steps",
    "Blocked on legal review",
    "Great idea!",
    "Needs owner",
    "Follow up next week",
    "Customer data stays in EU",
    "Add SSO for partners",
    "Fix flaky tests",
    "Q3 goal",
];

pub(super) const WIDGET_TYPES: &[&str] = &[
    "sticky_note",
    "shape",
    "text",
    "card",
    "frame",
    "image",
    "connector",
    "app_card",
];

pub(super) const APPLICATIONS: &[&str] = &[
    "Jira Cloud",
    "Slack",
    "Confluence",
    "Acme SIEM Connector",
    "Microsoft Teams",
];

/// What an audit event is about: decides the `object` and the `details`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ObjectKind {
    /// The acting user themself (sign-ins).
    Actor,
    Board,
    /// Another user of the org.
    User,
    Team,
    Organization,
}

/// One kind of audit event (open strings at Miro; these are plausible members).
#[derive(Debug, Clone, Copy)]
pub(super) struct AuditKind {
    pub event: &'static str,
    pub category: &'static str,
    pub weight: u32,
    pub object: ObjectKind,
}

const fn kind(
    event: &'static str,
    category: &'static str,
    weight: u32,
    object: ObjectKind,
) -> AuditKind {
    AuditKind {
        event,
        category,
        weight,
        object,
    }
}

/// The benign organisation's events. Security settings (SSO, SCIM, the domain allow-list)
/// and admin grants change rarely in a stable organisation, and every such change is
/// something mirotrail's rules report: they come only from the attack scenarios
/// (`scenario.rs`), so a benign week raises no alert.
pub(super) const AUDIT_KINDS: &[AuditKind] = &[
    kind(
        "sign_in_succeeded",
        "authentication",
        300,
        ObjectKind::Actor,
    ),
    kind("sign_in_failed", "authentication", 40, ObjectKind::Actor),
    kind(
        "sign_out_succeeded",
        "authentication",
        30,
        ObjectKind::Actor,
    ),
    kind("board_opened", "boards", 350, ObjectKind::Board),
    kind("board_created", "boards", 60, ObjectKind::Board),
    kind("board_exported", "boards", 20, ObjectKind::Board),
    kind("board_shared", "boards", 30, ObjectKind::Board),
    kind("board_sharing_changed", "boards", 15, ObjectKind::Board),
    kind("board_deleted", "boards", 10, ObjectKind::Board),
    kind("user_invited", "users", 20, ObjectKind::User),
    kind("user_deactivated", "users", 8, ObjectKind::User),
    kind("user_reactivated", "users", 4, ObjectKind::User),
    kind("user_role_changed", "users", 8, ObjectKind::User),
    kind("team_created", "teams", 4, ObjectKind::Team),
    kind("team_deleted", "teams", 2, ObjectKind::Team),
    kind(
        "organization_settings_changed",
        "organization",
        3,
        ObjectKind::Organization,
    ),
];
