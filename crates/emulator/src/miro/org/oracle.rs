//! The test oracle: each item built as a `serde_json::Value` (an object's keys come out
//! sorted), exactly as the emulator built them before it wrote items straight to the
//! page body (`items.rs`). Tests compare the served bytes with these, page for page.

use serde_json::{Map, Value, json};

use super::super::config::TimeForm;
use super::super::hash::{self, chance, hash, pick, unit, weighted};
use super::super::scenario::{ATTACKER_IP, Scenario};
use super::super::vocab::{APPLICATIONS, AUDIT_KINDS, ObjectKind, STICKY_TEXTS, WIDGET_TYPES};
use super::{
    ACTIVE_USERS, AI_FEATURES, BOARD_COUNT, Board, LEAVERS, MiroOrg, SALT_TIME_FORM, Stream,
    TAG_AI, TAG_AUDIT, TAG_CONTENT, TEAM_COUNT, User, decimal_id, format_iso, format_time,
    scramble, skewed, uuid,
};

const HOSTILE_DEPTH: usize = 200;

/// A free-form value no reader should choke on, yet some do: nested `HOSTILE_DEPTH`
/// levels, a float beyond f64 (`1e400`) and an integer beyond 2^64.
fn hostile_value() -> Value {
    let mut deep = json!(1);
    for _ in 0..HOSTILE_DEPTH {
        deep = Value::Array(vec![deep]);
    }
    let huge: Value = serde_json::from_str("1e400").expect("arbitrary precision numbers");
    let big: Value = serde_json::from_str("30744573469876543210123").expect("a big integer");
    json!({"deep": deep, "huge": huge, "big": big})
}

impl MiroOrg {
    fn value_user_json(&self, u: usize) -> Value {
        let u = &self.users[u];
        json!({"type": "user", "id": u.id, "name": u.name, "email": u.email})
    }

    /// Audit event `index` of a scenario burst: the benign event's id, time and context,
    /// with the attack's actor, event, object and details.
    fn value_scenario_audit_event(&self, sc: Scenario, k: u64, index: u64) -> Value {
        let mut e = self.value_benign_audit_event(index);
        // Fixed cast: the attacker's victim, an admin, another member.
        let (victim, admin, member) = (3, 1, 7);
        let k_usize = usize::try_from(k).expect("a short burst");
        let auth = |e: &mut Value, user: usize, event: &str, ip: &str| {
            e["event"] = json!(event);
            e["category"] = json!("authentication");
            e["createdBy"] = self.value_user_json(user);
            let u = &self.users[user];
            e["object"] = json!({"id": u.id, "name": u.name});
            e["context"]["ip"] = json!(ip);
            e["details"] = if event == "sign_in_failed" {
                json!({"reason": "INVALID_PASSWORD"})
            } else {
                json!({"authenticationMethod": "PASSWORD", "userAgent": "python-requests/2.31"})
            };
        };
        let admin_change = |e: &mut Value, event: &str, category: &str, details: Value| {
            e["event"] = json!(event);
            e["category"] = json!(category);
            e["createdBy"] = self.value_user_json(admin);
            e["object"] = json!({"id": self.org_id, "name": self.org_name});
            e["context"]["ip"] = json!(self.users[admin].ip);
            e["details"] = details;
        };
        match sc {
            Scenario::BruteForce => auth(&mut e, victim, "sign_in_failed", ATTACKER_IP),
            Scenario::PasswordSpray => auth(&mut e, 10 + k_usize, "sign_in_failed", ATTACKER_IP),
            Scenario::GuessedPassword => {
                let event = if k + 1 < sc.len() {
                    "sign_in_failed"
                } else {
                    "sign_in_succeeded"
                };
                auth(&mut e, victim, event, ATTACKER_IP);
            }
            Scenario::AdminGrant => {
                admin_change(
                    &mut e,
                    "user_role_changed",
                    "users",
                    json!({"oldRole": "MEMBER", "newRole": "ADMIN"}),
                );
                let u = &self.users[member];
                e["object"] = json!({"id": u.id, "name": u.name});
            }
            Scenario::SsoDisabled => admin_change(
                &mut e,
                "sso_settings_changed",
                "security",
                json!({"ssoEnabled": false, "provider": "Okta"}),
            ),
            Scenario::ScimToken => {
                admin_change(&mut e, "scim_token_generated", "security", json!({}))
            }
            Scenario::DomainAllowlist => admin_change(
                &mut e,
                "domain_allowlist_changed",
                "organization",
                json!({"domains": ["files-share.example"], "change": "ADDED"}),
            ),
            Scenario::GuestSharing => admin_change(
                &mut e,
                "organization_settings_changed",
                "organization",
                json!({"setting": "guestAccess", "value": "ON"}),
            ),
            Scenario::PublicBoard => {
                let b = &self.boards[0];
                e["event"] = json!("board_sharing_changed");
                e["category"] = json!("boards");
                e["createdBy"] = self.value_user_json(victim);
                e["object"] = json!({"id": b.id, "name": b.name});
                e["context"]["ip"] = json!(self.users[victim].ip);
                e["details"] = json!({"access": "VIEW", "previousAccess": "PRIVATE", "scope": "ANYONE_WITH_LINK"});
            }
            Scenario::MassExport => {
                let b = &self.boards[k_usize];
                e["event"] = json!("board_exported");
                e["category"] = json!("boards");
                e["createdBy"] = self.value_user_json(victim);
                e["object"] = json!({"id": b.id, "name": b.name});
                e["context"]["ip"] = json!(self.users[victim].ip);
                e["details"] = json!({"format": "BACKUP"});
            }
            Scenario::ActiveAfterDeactivation => {
                let deactivated = 5;
                let u = &self.users[deactivated];
                if k == 0 {
                    admin_change(
                        &mut e,
                        "user_deactivated",
                        "users",
                        json!({"email": u.email}),
                    );
                    e["object"] = json!({"id": u.id, "name": u.name});
                } else {
                    let b = &self.boards[1];
                    e["event"] = json!("board_opened");
                    e["category"] = json!("boards");
                    e["createdBy"] = self.value_user_json(deactivated);
                    e["object"] = json!({"id": b.id, "name": b.name});
                    e["context"]["ip"] = json!(ATTACKER_IP);
                    e["details"] = json!({"role": "OWNER"});
                }
            }
            Scenario::AppAdmin => {
                let u = &self.users[member];
                e["event"] = json!("user_role_changed");
                e["category"] = json!("users");
                e["createdBy"] = json!({"type": "application", "id": decimal_id("34587645", 4_242_424, 11), "name": "Unknown API client"});
                e["object"] = json!({"id": u.id, "name": u.name});
                e["context"]["ip"] = json!("52.18.23.45");
                e["details"] = json!({"oldRole": "MEMBER", "newRole": "GUEST"});
            }
            Scenario::MassDeletion => unreachable!("a content scenario"),
        }
        e
    }

    pub(in crate::miro) fn value_item(&self, stream: Stream, index: u64) -> Value {
        match stream {
            Stream::Audit => self.value_audit_event(index),
            Stream::Content => self.value_content_item(index),
            Stream::Ai => self.value_ai_entry(index),
        }
    }

    /// AI interaction log entry `index`.
    fn value_ai_entry(&self, index: u64) -> Value {
        let h = |salt: u64| hash(&[self.seed, TAG_AI, index, salt]);
        let session = index / 4;
        let message = index / 2;
        let sh = |salt: u64| hash(&[self.seed, TAG_AI, session, salt, 0x5E55]);
        let facts = self.ai_facts(index);
        let request = index.is_multiple_of(2);
        let feature = pick(sh(4), AI_FEATURES);
        let unique = scramble(index, 0x9E37_79B9, h(0) % (1 << 48), 1 << 48);
        let mut entry = Map::new();
        entry.insert("id".into(), json!(uuid(h(2), unique)));
        entry.insert(
            "createdAt".into(),
            json!(self.ai_created_at(index).to_iso()),
        );
        entry.insert("storedAt".into(), json!(self.ai_stored_at(index).to_iso()));
        entry.insert("sessionId".into(), json!(uuid(sh(5), session)));
        entry.insert(
            "messageId".into(),
            json!(uuid(hash(&[self.seed, TAG_AI, message, 0x3E55]), message)),
        );
        entry.insert("aiFeatureName".into(), json!(feature));
        entry.insert(
            "logType".into(),
            json!(if request { "request" } else { "response" }),
        );
        let object = match facts.board {
            Some(b) => json!({"id": self.boards[b].id, "type": "board"}),
            None => json!({"id": self.org_id, "type": "organization"}),
        };
        entry.insert("object".into(), object);
        if let Some(a) = facts.actor {
            let u = &self.users[a];
            entry.insert(
                "actor".into(),
                json!({"id": u.id, "email": u.email, "name": u.name}),
            );
        }
        let details = if request {
            json!({"prompt": pick(h(6), STICKY_TEXTS), "promptCharacters": 20 + h(7) % 400, "locale": pick(h(8), &["en", "de", "fr", "ja"])})
        } else {
            json!({"status": pick(h(6), &["success", "success", "success", "filtered", "error"]), "outputItems": h(7) % 12, "durationMs": 300 + h(8) % 9000})
        };
        entry.insert("details".into(), details);
        Value::Object(entry)
    }

    /// The item as served: hostile or plain.
    pub(in crate::miro) fn value_served_item(
        &self,
        stream: Stream,
        index: u64,
        hostile_share: f64,
    ) -> Value {
        let mut item = self.value_item(stream, index);
        if self.is_hostile(stream, index, hostile_share) {
            let key = match stream {
                Stream::Audit | Stream::Ai => "details",
                Stream::Content => "state",
            };
            item[key] = hostile_value();
        }
        item
    }

    fn value_team_json(&self, team: usize) -> Value {
        let t = &self.teams[team];
        json!({"type": "team", "id": t.id, "name": t.name})
    }

    /// Audit event `index` exactly as the API serves it.
    fn value_audit_event(&self, index: u64) -> Value {
        match self.scenario_at(Stream::Audit, index) {
            Some((sc, k)) => self.value_scenario_audit_event(sc, k, index),
            None => self.value_benign_audit_event(index),
        }
    }

    /// Audit event `index` of the benign organisation.
    fn value_benign_audit_event(&self, index: u64) -> Value {
        let h = |salt: u64| hash(&[self.seed, TAG_AUDIT, index, salt]);
        let kind = &AUDIT_KINDS[weighted(h(1), AUDIT_KINDS.iter().map(|k| k.weight))];
        let actor_idx = skewed(h(2), ACTIVE_USERS);
        let actor = &self.users[actor_idx];
        let actor_type = if kind.category == "authentication" {
            "user"
        } else {
            match unit(h(3)) {
                u if u < 0.90 => "user",
                // Integrations work on boards; user and settings changes are people's,
                // SCIM's or Miro's own.
                u if u < 0.95 && kind.category == "boards" => "application",
                u if u < 0.95 => "user",
                u if u < 0.98 => "scim_provisioner",
                _ => "miro_automation",
            }
        };
        let board_idx = skewed(h(4), BOARD_COUNT);
        let board = &self.boards[board_idx];
        // Deactivations and reactivations are of people who left; other changes of people
        // who work here.
        let target = if matches!(kind.event, "user_deactivated" | "user_reactivated") {
            &self.users[ACTIVE_USERS + hash::index(h(5), LEAVERS)]
        } else {
            &self.users[hash::index(h(5), ACTIVE_USERS)]
        };

        let mut event = Map::new();
        event.insert("type".into(), json!("event"));
        // Miro's shape: the event time with microseconds, `#`, a decimal number, `-DDB`.
        let number = decimal_id(
            "30744573",
            scramble(
                index,
                7_777_777_777,
                hash(&[self.seed, TAG_AUDIT]) % 100_000_000_000,
                100_000_000_000,
            ),
            11,
        );
        let time = self.audit_time(index);
        let iso = time.to_iso();
        let stamp = format_iso(time, iso.clone(), TimeForm::MicrosZ, h(20));
        event.insert("id".into(), json!(format!("{stamp}#{number}-DDB")));
        event.insert("event".into(), json!(kind.event));
        event.insert("category".into(), json!(kind.category));
        event.insert(
            "createdAt".into(),
            json!(format_iso(
                time,
                iso,
                self.audit_time_form,
                hash(&[self.seed, TAG_AUDIT, index, SALT_TIME_FORM])
            )),
        );
        event.insert(
            "details".into(),
            self.value_audit_details(kind.event, h(6), board, target),
        );

        if !chance(h(7), 0.02) {
            let created_by = match actor_type {
                "user" => {
                    json!({"type": "user", "id": actor.id, "name": actor.name, "email": actor.email})
                }
                "application" => {
                    let app = hash::index(h(8), APPLICATIONS.len());
                    json!({"type": "application", "id": decimal_id("34587645", 1_000_000 + app as u64 * 7_331, 11), "name": APPLICATIONS[app]})
                }
                "scim_provisioner" => {
                    json!({"type": "scim_provisioner", "id": decimal_id("30744573", 99_000_000_001, 11), "name": "SCIM provisioning"})
                }
                other => {
                    json!({"type": other, "id": decimal_id("30744573", 99_000_000_002, 11), "name": "Miro automation"})
                }
            };
            event.insert("createdBy".into(), created_by);
        }

        if !chance(h(9), 0.05) {
            let object = match kind.object {
                ObjectKind::Actor => json!({"id": actor.id, "name": actor.name}),
                ObjectKind::Board => json!({"id": board.id, "name": board.name}),
                ObjectKind::User => json!({"id": target.id, "name": target.name}),
                ObjectKind::Team => {
                    let t = &self.teams[hash::index(h(10), TEAM_COUNT)];
                    json!({"id": t.id, "name": t.name})
                }
                ObjectKind::Organization => json!({"id": self.org_id, "name": self.org_name}),
            };
            event.insert("object".into(), object);
        }

        let ip = if actor_type == "user" {
            actor.ip.clone()
        } else {
            format!(
                "52.{}.{}.{}",
                1 + h(11) % 200,
                h(11) >> 8 & 255,
                1 + (h(11) >> 16) % 254
            )
        };
        let mut context = Map::new();
        context.insert("ip".into(), json!(ip));
        if !chance(h(12), 0.05) {
            let team = if kind.object == ObjectKind::Board {
                board.team
            } else {
                actor.team
            };
            context.insert("team".into(), self.value_team_json(team));
        }
        context.insert(
            "organization".into(),
            json!({"type": "organization", "id": self.org_id, "name": self.org_name}),
        );
        event.insert("context".into(), Value::Object(context));
        Value::Object(event)
    }

    fn value_audit_details(&self, event: &str, h: u64, board: &Board, target: &User) -> Value {
        const ROLES: &[&str] = &["OWNER", "EDITOR", "COMMENTER", "VIEWER"];
        const ORG_ROLES: &[&str] = &["MEMBER", "ADMIN", "GUEST"];
        const BENIGN_ROLES: &[&str] = &["MEMBER", "GUEST"];
        match event {
            "sign_in_succeeded" => {
                json!({"authType": pick(h, &["SSO", "PASSWORD", "GOOGLE"]), "userAgent": pick(h >> 8, &["Chrome/126", "Firefox/127", "Safari/17", "MiroDesktop/0.8"])})
            }
            "sign_in_failed" => {
                json!({"reason": pick(h, &["INVALID_PASSWORD", "SSO_ERROR", "ACCOUNT_LOCKED", "MFA_FAILED"])})
            }
            "sign_out_succeeded" => json!({}),
            "board_opened" => json!({"role": pick(h, ROLES)}),
            "board_created" => {
                json!({"boardName": board.name, "teamId": self.teams[board.team].id})
            }
            "board_exported" => json!({"format": pick(h, &["PDF", "IMAGE", "CSV", "BACKUP"])}),
            "board_shared" => {
                json!({"sharedWith": target.email, "role": pick(h, ROLES)})
            }
            "board_sharing_changed" => json!({
                "access": pick(h, &["PRIVATE", "VIEW", "COMMENT", "EDIT"]),
                "previousAccess": pick(h >> 8, &["PRIVATE", "VIEW", "COMMENT", "EDIT"]),
                "scope": pick(h >> 16, &["ORGANIZATION", "TEAM"]),
            }),
            "board_deleted" => json!({"boardName": board.name}),
            "user_invited" => json!({"invitedEmail": target.email, "role": pick(h, ORG_ROLES)}),
            "user_deactivated" | "user_reactivated" => json!({"email": target.email}),
            // Admin grants are attacks here (scenario `admin-grant`): the benign org only
            // moves people between member and guest.
            "user_role_changed" => {
                json!({"oldRole": pick(h, BENIGN_ROLES), "newRole": pick(h >> 8, BENIGN_ROLES)})
            }
            "team_created" | "team_deleted" => json!({}),
            _ => {
                json!({"setting": pick(h, &["dataClassification", "retention", "boardDefaultAccess"]), "value": pick(h >> 8, &["ON", "OFF"])})
            }
        }
    }

    /// Content log item `index` exactly as the API serves it.
    fn value_content_item(&self, index: u64) -> Value {
        let mut item = self.value_benign_content_item(index);
        if let Some((Scenario::MassDeletion, k)) = self.scenario_at(Stream::Content, index) {
            // One person deleting a board's items one after another.
            let facts = self.content_facts(index);
            let u = &self.users[facts.actor.expect("the scenario has an actor")];
            item["contentId"] = json!(self.boards[facts.board].id);
            item["actionType"] = json!("delete");
            item["actor"] = json!({"id": u.id, "email": u.email, "name": u.name});
            item["itemType"] = json!("widget");
            item["itemId"] = json!(self.board_item_id(facts.board, 1, 1000 + k).0);
            item["state"] = Value::Null;
            item["relationships"] = json!([]);
        }
        item
    }

    /// Content log item `index` of the benign organisation (its facts may be a scenario's).
    fn value_benign_content_item(&self, index: u64) -> Value {
        let h = |salt: u64| hash(&[self.seed, TAG_CONTENT, index, salt]);
        let facts = self.content_facts(index);
        let board = &self.boards[facts.board];
        let action = ["create", "update", "delete"][weighted(h(4), [45u32, 45, 10].into_iter())];
        let item_type = ["widget", "comment_thread", "comment_message"]
            [weighted(h(5), [80u32, 8, 12].into_iter())];
        let slot = h(6) % 48;
        let (item_id, item_h) = match item_type {
            "widget" => self.board_item_id(facts.board, 1, slot),
            "comment_thread" => self.board_item_id(facts.board, 2, slot % 8),
            _ => self.board_item_id(facts.board, 3, slot),
        };
        let thread_id = self.board_item_id(facts.board, 2, slot % 8).0;
        let frame_id = self.board_item_id(facts.board, 1, slot % 4).0;
        let position = json!({"x": (h(7) % 4000) as f64 - 2000.0, "y": (h(8) % 3000) as f64 - 1500.0, "origin": "center"});
        let state = match (action, item_type) {
            ("delete", _) => Value::Null,
            ("widget", _) | (_, "widget") => json!({
                "type": pick(item_h, WIDGET_TYPES),
                "data": {"content": format!("<p>{}</p>", pick(h(9), STICKY_TEXTS))},
                "position": position,
                "geometry": {"width": 100 + h(10) % 300, "height": 100 + (h(10) >> 16) % 200},
                "style": {"fillColor": pick(h(11), &["light_yellow", "light_green", "light_blue", "pink", "gray"])},
            }),
            (_, "comment_thread") => json!({"position": position, "resolved": h(9) & 3 == 0}),
            _ => json!({"content": pick(h(9), STICKY_TEXTS), "threadId": thread_id}),
        };
        let relationships = match item_type {
            "comment_message" => {
                json!([{"type": "parent", "itemType": "comment_thread", "itemId": thread_id}])
            }
            "widget" if chance(h(12), 0.2) && frame_id != item_id => {
                json!([{"type": "parent", "itemType": "widget", "itemId": frame_id}])
            }
            "comment_thread" if chance(h(12), 0.5) => {
                let target = self.board_item_id(facts.board, 1, h(13) % 48).0;
                json!([{"type": "attached_to", "itemType": "widget", "itemId": target}])
            }
            _ => json!([]),
        };

        let mut item = Map::new();
        item.insert(
            "id".into(),
            json!(decimal_id(
                "3458764",
                scramble(
                    index,
                    9_876_543_211,
                    hash(&[self.seed, TAG_CONTENT]) % 1_000_000_000_000,
                    1_000_000_000_000
                ),
                12
            )),
        );
        item.insert("contentId".into(), json!(board.id));
        item.insert("actionType".into(), json!(action));
        item.insert(
            "actionTime".into(),
            json!(format_time(
                self.content_time(index),
                self.content_time_form,
                hash(&[self.seed, TAG_CONTENT, index, SALT_TIME_FORM])
            )),
        );
        if let Some(a) = facts.actor {
            let u = &self.users[a];
            item.insert(
                "actor".into(),
                json!({"id": u.id, "email": u.email, "name": u.name}),
            );
        }
        item.insert("itemType".into(), json!(item_type));
        item.insert("itemId".into(), json!(item_id));
        item.insert("state".into(), state);
        item.insert("relationships".into(), relationships);
        Value::Object(item)
    }
}
