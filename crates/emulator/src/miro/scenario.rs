//! Attack scenarios injected into the emulated organisation (`--scenario brute-force,…`),
//! one per detection rule of mirotrail's pack, so each rule can be shown to fire on its
//! attack and the benign organisation shown to raise nothing.
//!
//! A scenario replaces a short run of consecutive items of one stream (an attack is a
//! burst) with its own items: the run keeps its indices and times, so the organisation
//! stays a pure function of the config and time windows stay index ranges. Scenario `j`
//! (in the order given) starts one minute past hour `j + 1` of the day in the middle of
//! the stream's span, so each burst sits inside any window of 10 minutes to a day that is
//! aligned on the hour. Field names and values follow the rest of the organisation
//! (`vocab.rs`); the event names are the same unconfirmed guesses the rules list.

use std::str::FromStr;

/// One attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// 8 sign-in failures for one account from one address.
    BruteForce,
    /// 12 sign-in failures for 12 accounts from one address.
    PasswordSpray,
    /// 5 failures, then a successful sign-in, for one account.
    GuessedPassword,
    /// A member made company admin.
    AdminGrant,
    /// SSO turned off.
    SsoDisabled,
    /// A SCIM token generated.
    ScimToken,
    /// A domain added to the allow-list.
    DomainAllowlist,
    /// A board opened to anyone with the link.
    PublicBoard,
    /// Guest access turned on for the organisation.
    GuestSharing,
    /// 12 boards exported by one account.
    MassExport,
    /// 60 board items deleted by one account (content logs).
    MassDeletion,
    /// An account deactivated, then opening a board.
    ActiveAfterDeactivation,
    /// An application changing a user's role.
    AppAdmin,
}

impl Scenario {
    pub const ALL: [Scenario; 13] = [
        Scenario::BruteForce,
        Scenario::PasswordSpray,
        Scenario::GuessedPassword,
        Scenario::AdminGrant,
        Scenario::SsoDisabled,
        Scenario::ScimToken,
        Scenario::DomainAllowlist,
        Scenario::PublicBoard,
        Scenario::GuestSharing,
        Scenario::MassExport,
        Scenario::MassDeletion,
        Scenario::ActiveAfterDeactivation,
        Scenario::AppAdmin,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::BruteForce => "brute-force",
            Scenario::PasswordSpray => "password-spray",
            Scenario::GuessedPassword => "guessed-password",
            Scenario::AdminGrant => "admin-grant",
            Scenario::SsoDisabled => "sso-disabled",
            Scenario::ScimToken => "scim-token",
            Scenario::DomainAllowlist => "domain-allowlist",
            Scenario::PublicBoard => "public-board",
            Scenario::GuestSharing => "guest-sharing",
            Scenario::MassExport => "mass-export",
            Scenario::MassDeletion => "mass-deletion",
            Scenario::ActiveAfterDeactivation => "active-after-deactivation",
            Scenario::AppAdmin => "app-admin",
        }
    }

    /// Items the burst takes.
    pub(super) fn len(self) -> u64 {
        match self {
            Scenario::BruteForce => 8,
            Scenario::PasswordSpray | Scenario::MassExport => 12,
            Scenario::GuessedPassword => 6,
            Scenario::MassDeletion => 60,
            Scenario::ActiveAfterDeactivation => 2,
            _ => 1,
        }
    }

    /// Whether the burst is in the content logs (else the audit logs).
    pub(super) fn in_content(self) -> bool {
        self == Scenario::MassDeletion
    }

    /// Parses a comma-separated list (`all` for every scenario).
    pub fn parse_list(text: &str) -> Result<Vec<Scenario>, String> {
        if text.trim() == "all" {
            return Ok(Scenario::ALL.to_vec());
        }
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let s: Scenario = part.parse()?;
            if !out.contains(&s) {
                out.push(s);
            }
        }
        Ok(out)
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Scenario::ALL
            .into_iter()
            .find(|s| s.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                format!(
                    "`{text}` is not a scenario; use `all` or some of {}",
                    names.join(", ")
                )
            })
    }
}

/// Where an attacker signs in from (the benign users sign in from the three TEST-NET
/// ranges; this is the benchmarking range, never a real host).
pub(super) const ATTACKER_IP: &str = "198.18.23.45";
