//! Which OCSF class and activity each Miro record becomes: the per-event table for audit
//! events, the fallbacks by category for names the table does not know, and the content
//! log actions. `docs/ocsf.md` is this table in prose (a test keeps the two in step).
//!
//! Invariant: every record gets a class. A name the table does not know falls back on its
//! category, and a record with neither a known name nor a known category becomes a Base
//! Event with activity Other; nothing is dropped for being unknown.

/// An OCSF 1.1 event class mirotrail writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Base Event (0), category Uncategorized (0): what no other class fits.
    BaseEvent,
    /// Account Change (3001), Identity & Access Management.
    AccountChange,
    /// Authentication (3002), Identity & Access Management.
    Authentication,
    /// Entity Management (3004), Identity & Access Management.
    EntityManagement,
    /// User Access Management (3005), Identity & Access Management.
    UserAccess,
    /// Web Resources Activity (6001), Application Activity.
    WebResourcesActivity,
}

impl Class {
    pub fn uid(self) -> u32 {
        match self {
            Class::BaseEvent => 0,
            Class::AccountChange => 3001,
            Class::Authentication => 3002,
            Class::EntityManagement => 3004,
            Class::UserAccess => 3005,
            Class::WebResourcesActivity => 6001,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Class::BaseEvent => "Base Event",
            Class::AccountChange => "Account Change",
            Class::Authentication => "Authentication",
            Class::EntityManagement => "Entity Management",
            Class::UserAccess => "User Access Management",
            Class::WebResourcesActivity => "Web Resources Activity",
        }
    }

    pub fn category_uid(self) -> u32 {
        self.uid() / 1000
    }

    pub fn category_name(self) -> &'static str {
        match self.category_uid() {
            3 => "Identity & Access Management",
            6 => "Application Activity",
            _ => "Uncategorized",
        }
    }

    /// The classes that have no `actor` of their own in OCSF 1.1: an event of one of them
    /// declares the `host` profile, which adds `actor` (and `device`).
    pub fn needs_host_profile(self) -> bool {
        matches!(
            self,
            Class::EntityManagement | Class::UserAccess | Class::WebResourcesActivity
        )
    }

    /// Whether an event of the class can name its actor: Base Event has no `actor` in
    /// OCSF 1.1, not even with the `host` profile (the Miro actor then stays in
    /// `unmapped`).
    pub fn has_actor(self) -> bool {
        self != Class::BaseEvent
    }

    /// Whether the class has `src_endpoint` in OCSF 1.1 (where the Miro client's address
    /// goes).
    pub fn has_src_endpoint(self) -> bool {
        matches!(
            self,
            Class::AccountChange | Class::Authentication | Class::WebResourcesActivity
        )
    }

    /// The caption of an activity of this class (OCSF 1.1), `Other` for 99.
    pub fn activity_name(self, activity_id: u8) -> &'static str {
        let names: &[(u8, &str)] = match self {
            Class::BaseEvent => &[],
            Class::AccountChange => &[
                (1, "Create"),
                (2, "Enable"),
                (3, "Password Change"),
                (4, "Password Reset"),
                (5, "Disable"),
                (6, "Delete"),
                (7, "Attach Policy"),
                (8, "Detach Policy"),
                (9, "Lock"),
            ],
            Class::Authentication => &[(1, "Logon"), (2, "Logoff")],
            Class::EntityManagement => &[(1, "Create"), (2, "Read"), (3, "Update"), (4, "Delete")],
            Class::UserAccess => &[(1, "Assign Privileges"), (2, "Revoke Privileges")],
            Class::WebResourcesActivity => &[
                (1, "Create"),
                (2, "Read"),
                (3, "Update"),
                (4, "Delete"),
                (5, "Search"),
                (6, "Import"),
                (7, "Export"),
                (8, "Share"),
            ],
        };
        names
            .iter()
            .find(|(id, _)| *id == activity_id)
            .map_or("Other", |(_, name)| name)
    }
}

/// OCSF `activity_id` 99: an activity the class has no value for.
pub(super) const OTHER: u8 = 99;

/// OCSF `status_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Unknown,
    Success,
    Failure,
}

impl Status {
    pub fn id(self) -> u8 {
        match self {
            Status::Unknown => 0,
            Status::Success => 1,
            Status::Failure => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Status::Unknown => "Unknown",
            Status::Success => "Success",
            Status::Failure => "Failure",
        }
    }
}

/// What an audit event is about, which decides the class's main object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The user who signs in or out (Authentication's `user`).
    SignIn,
    /// Another account, `object` (Account Change and User Access Management's `user`).
    Account,
    /// A board, `object` (Web Resources Activity's `web_resources`).
    Board,
    /// A team, a setting or a token of the organisation (Entity Management's `entity`,
    /// whose `type` this names).
    Entity(&'static str),
    /// Nothing mirotrail can name (Base Event).
    None,
}

/// How one audit event is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditMapping {
    pub class: Class,
    pub activity_id: u8,
    pub status: Status,
    pub target: Target,
}

const fn m(class: Class, activity_id: u8, target: Target) -> AuditMapping {
    AuditMapping {
        class,
        activity_id,
        status: Status::Success,
        target,
    }
}

/// The audit event names mirotrail maps one by one. Miro confirms only the sign-in and
/// sign-out names and `board_opened` (`docs/miro-api.md`); the rest are the names the
/// emulator and the detection rules use, unconfirmed. `docs/ocsf.md` gives each one's
/// reason.
pub const AUDIT_EVENTS: &[(&str, AuditMapping)] = &[
    (
        "sign_in_succeeded",
        m(Class::Authentication, 1, Target::SignIn),
    ),
    (
        "sign_in_failed",
        AuditMapping {
            status: Status::Failure,
            ..m(Class::Authentication, 1, Target::SignIn)
        },
    ),
    (
        "sign_out_succeeded",
        m(Class::Authentication, 2, Target::SignIn),
    ),
    ("user_invited", m(Class::AccountChange, 1, Target::Account)),
    (
        "user_reactivated",
        m(Class::AccountChange, 2, Target::Account),
    ),
    (
        "user_deactivated",
        m(Class::AccountChange, 5, Target::Account),
    ),
    (
        "account_deactivated",
        m(Class::AccountChange, 5, Target::Account),
    ),
    (
        "user_suspended",
        m(Class::AccountChange, 5, Target::Account),
    ),
    (
        "user_role_changed",
        m(Class::UserAccess, 1, Target::Account),
    ),
    (
        "admin_role_changed",
        m(Class::UserAccess, 1, Target::Account),
    ),
    (
        "organization_role_changed",
        m(Class::UserAccess, 1, Target::Account),
    ),
    (
        "board_created",
        m(Class::WebResourcesActivity, 1, Target::Board),
    ),
    (
        "board_opened",
        m(Class::WebResourcesActivity, 2, Target::Board),
    ),
    (
        "board_deleted",
        m(Class::WebResourcesActivity, 4, Target::Board),
    ),
    (
        "board_exported",
        m(Class::WebResourcesActivity, 7, Target::Board),
    ),
    (
        "board_export",
        m(Class::WebResourcesActivity, 7, Target::Board),
    ),
    (
        "board_backup_exported",
        m(Class::WebResourcesActivity, 7, Target::Board),
    ),
    (
        "board_shared",
        m(Class::WebResourcesActivity, 8, Target::Board),
    ),
    (
        "board_sharing_changed",
        m(Class::WebResourcesActivity, 8, Target::Board),
    ),
    (
        "board_link_sharing_changed",
        m(Class::WebResourcesActivity, 8, Target::Board),
    ),
    (
        "board_sharing_settings_changed",
        m(Class::WebResourcesActivity, 8, Target::Board),
    ),
    (
        "team_created",
        m(Class::EntityManagement, 1, Target::Entity("team")),
    ),
    (
        "team_deleted",
        m(Class::EntityManagement, 4, Target::Entity("team")),
    ),
    (
        "organization_settings_changed",
        m(
            Class::EntityManagement,
            3,
            Target::Entity("organization_settings"),
        ),
    ),
    (
        "sharing_policy_changed",
        m(Class::EntityManagement, 3, Target::Entity("sharing_policy")),
    ),
    (
        "sso_settings_changed",
        m(Class::EntityManagement, 3, Target::Entity("sso_settings")),
    ),
    (
        "sso_configuration_changed",
        m(Class::EntityManagement, 3, Target::Entity("sso_settings")),
    ),
    (
        "saml_settings_changed",
        m(Class::EntityManagement, 3, Target::Entity("sso_settings")),
    ),
    (
        "sso_enabled",
        m(Class::EntityManagement, 3, Target::Entity("sso_settings")),
    ),
    (
        "sso_disabled",
        m(Class::EntityManagement, 3, Target::Entity("sso_settings")),
    ),
    (
        "scim_settings_changed",
        m(Class::EntityManagement, 3, Target::Entity("scim_settings")),
    ),
    (
        "scim_enabled",
        m(Class::EntityManagement, 3, Target::Entity("scim_settings")),
    ),
    (
        "scim_disabled",
        m(Class::EntityManagement, 3, Target::Entity("scim_settings")),
    ),
    (
        "scim_token_generated",
        m(Class::EntityManagement, 1, Target::Entity("scim_token")),
    ),
    (
        "domain_allowlist_changed",
        m(
            Class::EntityManagement,
            3,
            Target::Entity("domain_allowlist"),
        ),
    ),
    (
        "allowed_domains_changed",
        m(
            Class::EntityManagement,
            3,
            Target::Entity("domain_allowlist"),
        ),
    ),
    (
        "domain_added",
        m(
            Class::EntityManagement,
            3,
            Target::Entity("domain_allowlist"),
        ),
    ),
    (
        "domain_removed",
        m(
            Class::EntityManagement,
            3,
            Target::Entity("domain_allowlist"),
        ),
    ),
];

/// The mapping of an audit event: its name's row of [`AUDIT_EVENTS`], else the fallback of
/// its category, else a Base Event.
pub(super) fn audit(event: Option<&str>, category: Option<&str>) -> AuditMapping {
    if let Some((_, mapping)) = event.and_then(|e| AUDIT_EVENTS.iter().find(|(n, _)| *n == e)) {
        return *mapping;
    }
    // A name that says how it ended keeps that, whatever its class.
    let status = match event {
        Some(e) if e.ends_with("_failed") => Status::Failure,
        Some(e) if e.ends_with("_succeeded") => Status::Success,
        _ => Status::Unknown,
    };
    let (class, target) = match category {
        Some("authentication") => (Class::Authentication, Target::SignIn),
        Some("boards") => (Class::WebResourcesActivity, Target::Board),
        Some("users") => (Class::AccountChange, Target::Account),
        Some("teams") => (Class::EntityManagement, Target::Entity("team")),
        Some("organization" | "security" | "administration") => (
            Class::EntityManagement,
            Target::Entity("organization_settings"),
        ),
        _ => (Class::BaseEvent, Target::None),
    };
    AuditMapping {
        class,
        activity_id: OTHER,
        status,
        target,
    }
}

/// The Web Resources Activity of a content log `actionType`.
pub(super) fn content_activity(action: Option<&str>) -> u8 {
    match action {
        Some("create") => 1,
        Some("update") => 3,
        Some("delete") => 4,
        _ => OTHER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mapped_name_is_unique_and_its_activity_exists_in_its_class() {
        let mut names: Vec<&str> = AUDIT_EVENTS.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a name is mapped twice");
        for (name, mapping) in AUDIT_EVENTS {
            assert_ne!(
                mapping.class.activity_name(mapping.activity_id),
                "Other",
                "{name}: activity {} is not one of {}",
                mapping.activity_id,
                mapping.class.name()
            );
        }
    }

    #[test]
    fn unknown_names_fall_back_on_their_category_then_on_base_event() {
        let boards = audit(Some("board_copied"), Some("boards"));
        assert_eq!(boards.class, Class::WebResourcesActivity);
        assert_eq!(boards.activity_id, OTHER);
        assert_eq!(
            audit(Some("mfa_failed"), Some("authentication")).status,
            Status::Failure
        );
        assert_eq!(audit(Some("x"), Some("users")).class, Class::AccountChange);
        let unknown = audit(Some("something_new"), Some("brand_new_category"));
        assert_eq!(unknown.class, Class::BaseEvent);
        assert_eq!(unknown.status, Status::Unknown);
        assert_eq!(audit(None, None).class, Class::BaseEvent);
        // A known name wins over its category.
        assert_eq!(
            audit(Some("board_opened"), Some("users")).class,
            Class::WebResourcesActivity
        );
    }

    /// `docs/ocsf.md` names every mapped event, so the document and the table agree.
    #[test]
    fn the_document_lists_every_mapped_event() {
        let doc = include_str!("../../docs/ocsf.md");
        for (name, mapping) in AUDIT_EVENTS {
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| `{name}` |")))
                .unwrap_or_else(|| panic!("docs/ocsf.md has no row for `{name}`"));
            let uid = mapping.class.uid().to_string();
            assert!(
                row.contains(&uid),
                "docs/ocsf.md's row for `{name}` does not name class {uid}: {row}"
            );
            let activity = mapping.class.activity_name(mapping.activity_id);
            assert!(
                row.contains(activity),
                "docs/ocsf.md's row for `{name}` does not name activity {activity}: {row}"
            );
        }
    }
}
