//! The generated organisation: fixed-size pools (users, teams, boards) plus three event
//! streams (audit, content, AI interaction) whose items are computed from `(seed, index)`
//! on demand, as the structs of `items.rs` that the server writes straight into a page
//! (the public `audit_event`, `content_item` and `ai_entry` give them as `Value`s).

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::LazyLock;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::config::{LateArrival, MARKUP_NAME_SUFFIX, MiroEmulatorConfig, StreamShape, TimeForm};
use super::hash::{self, chance, hash, hash_str, index, pick, unit, weighted};
use super::items::{
    AiEntry, AiObject, AuditContext, AuditEvent, ContentItem, CreatedBy, Fields, Geometry, Item,
    Named, Person, Position, Principal, Relationship, Scalar, State, Style, Typed, WidgetData,
};
use super::scenario::{ATTACKER_IP, Scenario};
use super::vocab::{
    APPLICATIONS, AUDIT_KINDS, BOARD_PREFIXES, BOARD_TOPICS, FIRST_NAMES, LAST_NAMES, ObjectKind,
    STICKY_TEXTS, TEAM_NAMES, WIDGET_TYPES,
};
use crate::time::UnixMs;

#[cfg(test)]
mod oracle;

const USER_COUNT: usize = 200;
/// The last users of the pool have left: the benign organisation deactivates and
/// reactivates only them, and they never act, so "activity after deactivation" is an attack.
const LEAVERS: usize = 10;
/// Users who act.
const ACTIVE_USERS: usize = USER_COUNT - LEAVERS;
const TEAM_COUNT: usize = 10;
const BOARD_COUNT: usize = 500;

// Hash salts: one per generated property, so properties are independent.
const TAG_AUDIT: u64 = 0xA0D1_7000;
const TAG_CONTENT: u64 = 0xC047_E470;
const TAG_AI: u64 = 0xA1_1065;
const TAG_POOL: u64 = 0x9001;
const SALT_LATE: u64 = 0x1A7E;
const SALT_DELAY: u64 = 0xDE1A;

/// Which of the three event streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stream {
    Audit,
    Content,
    /// AI interaction logs: indexed (and windowed) by `storedAt`.
    Ai,
}

impl Stream {
    fn tag(self) -> u64 {
        match self {
            Stream::Audit => TAG_AUDIT,
            Stream::Content => TAG_CONTENT,
            Stream::Ai => TAG_AI,
        }
    }
}

/// AI features named in AI interaction log entries: an open list; only
/// `ai_generate_sticky_notes` is confirmed by Miro's documentation.
const AI_FEATURES: &[&str] = &[
    "ai_generate_sticky_notes",
    "ai_generate_diagram",
    "ai_generate_mindmap",
    "ai_summarize_board",
    "ai_chat",
];

/// A UUID-shaped text (version 4 layout) whose last 48 bits are `unique`.
fn uuid(h: u64, unique: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        0x8000 | ((h >> 20) & 0x3fff),
        unique & 0xffff_ffff_ffff
    )
}

const SALT_HOSTILE: u64 = 0x0405_711E;
const SALT_TIME_FORM: u64 = 0x7F02;

/// `t` written in `form`; `h` picks the sub-millisecond digits and, for `Mixed`, the form.
pub(super) fn format_time(t: UnixMs, form: TimeForm, h: u64) -> String {
    format_iso(t, t.to_iso(), form, h)
}

/// [`format_time`] with `iso = t.to_iso()` already computed (it is the slow part).
fn format_iso(t: UnixMs, iso: String, form: TimeForm, h: u64) -> String {
    // iso: 2023-09-01T09:30:10.840Z
    let base = &iso[..iso.len() - 1]; // without the Z
    let micros = h % 1000;
    let nanos = (h >> 10) % 1_000_000;
    match form {
        TimeForm::MillisPlus0000 => format!("{base}+0000"),
        TimeForm::MillisZ => iso,
        TimeForm::MillisColonOffset => format!("{base}+00:00"),
        TimeForm::NoFraction if t.0.rem_euclid(1000) == 0 => format!("{}Z", &iso[..19]),
        TimeForm::NoFraction => iso,
        TimeForm::MicrosZ => format!("{base}{micros:03}Z"),
        TimeForm::NanosAtOffset => {
            let local = UnixMs(t.0 + 330 * 60_000).to_iso();
            format!("{}{nanos:06}+05:30", &local[..local.len() - 1])
        }
        TimeForm::Mixed => {
            let forms = [
                TimeForm::MillisPlus0000,
                TimeForm::MillisZ,
                TimeForm::MillisColonOffset,
                TimeForm::NoFraction,
                TimeForm::MicrosZ,
                TimeForm::NanosAtOffset,
            ];
            format_iso(t, iso, forms[(h >> 32) as usize % forms.len()], h)
        }
    }
}
/// How deep the hostile value nests: beyond serde_json's default limit of 128.
const HOSTILE_DEPTH: usize = 200;

/// A free-form value no reader should choke on, yet some do: nested `HOSTILE_DEPTH`
/// levels, a float beyond f64 (`1e400`) and an integer beyond 2^64. Built once.
pub(super) fn hostile_value() -> &'static Value {
    static HOSTILE: LazyLock<Value> = LazyLock::new(|| {
        let mut deep = json!(1);
        for _ in 0..HOSTILE_DEPTH {
            deep = Value::Array(vec![deep]);
        }
        let huge: Value = serde_json::from_str("1e400").expect("arbitrary precision numbers");
        let big: Value = serde_json::from_str("30744573469876543210123").expect("a big integer");
        json!({"deep": deep, "huge": huge, "big": big})
    });
    &HOSTILE
}

#[derive(Debug)]
struct User {
    id: String,
    name: String,
    email: String,
    ip: String,
    team: usize,
}

#[derive(Debug)]
struct Team {
    id: String,
    name: String,
}

#[derive(Debug)]
struct Board {
    id: String,
    name: String,
    team: usize,
}

/// The pool's objects as items name them, written once by serde_json (from the structs of
/// `items.rs`, so with the same bytes) and copied into every item that names them: an
/// item's strings are mostly these, and escaping them per item was most of the cost.
#[derive(Debug)]
struct Fragments {
    /// A user as an audit event's `createdBy`: `{"email","id","name","type":"user"}`.
    user_created_by: Vec<Box<RawValue>>,
    /// A user as an audit event's `object`: `{"id","name"}`.
    user_named: Vec<Box<RawValue>>,
    /// A user as a content or AI interaction `actor`: `{"email","id","name"}`.
    user_person: Vec<Box<RawValue>>,
    /// A team as an audit event's `context.team`: `{"id","name","type":"team"}`.
    team_typed: Vec<Box<RawValue>>,
    team_named: Vec<Box<RawValue>>,
    board_named: Vec<Box<RawValue>>,
    /// A board as an AI interaction entry's `object`: `{"id","type":"board"}`.
    board_ai_object: Vec<Box<RawValue>>,
    /// `context.organization`: `{"id","name","type":"organization"}`.
    org_typed: Box<RawValue>,
    org_named: Box<RawValue>,
    org_ai_object: Box<RawValue>,
}

/// `value` as served (serde_json's text).
fn written(value: &impl Serialize) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("a pool object serialises")
}

impl Fragments {
    fn new(org_id: &str, org_name: &str, users: &[User], teams: &[Team], boards: &[Board]) -> Self {
        Fragments {
            user_created_by: users
                .iter()
                .map(|u| {
                    written(&Principal {
                        email: Some(&u.email),
                        id: Cow::Borrowed(&u.id),
                        name: &u.name,
                        kind: "user",
                    })
                })
                .collect(),
            user_named: users
                .iter()
                .map(|u| {
                    written(&Named {
                        id: &u.id,
                        name: &u.name,
                    })
                })
                .collect(),
            user_person: users
                .iter()
                .map(|u| {
                    written(&Person {
                        email: &u.email,
                        id: &u.id,
                        name: &u.name,
                    })
                })
                .collect(),
            team_typed: teams
                .iter()
                .map(|t| {
                    written(&Typed {
                        id: &t.id,
                        name: &t.name,
                        kind: "team",
                    })
                })
                .collect(),
            team_named: teams
                .iter()
                .map(|t| {
                    written(&Named {
                        id: &t.id,
                        name: &t.name,
                    })
                })
                .collect(),
            board_named: boards
                .iter()
                .map(|b| {
                    written(&Named {
                        id: &b.id,
                        name: &b.name,
                    })
                })
                .collect(),
            board_ai_object: boards
                .iter()
                .map(|b| {
                    written(&AiObject {
                        id: &b.id,
                        kind: "board",
                    })
                })
                .collect(),
            org_typed: written(&Typed {
                id: org_id,
                name: org_name,
                kind: "organization",
            }),
            org_named: written(&Named {
                id: org_id,
                name: org_name,
            }),
            org_ai_object: written(&AiObject {
                id: org_id,
                kind: "organization",
            }),
        }
    }
}

/// What an item is filtered on (`object_ids`/`board_ids`, `emails`): its board (`None`:
/// the organization is the object) and actor, computed without building the item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FilterFacts {
    pub board: Option<usize>,
    pub actor: Option<usize>,
}

/// What a content item is filtered on, computed without building the item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ContentFacts {
    pub board: usize,
    pub actor: Option<usize>,
}

/// The deterministic generated organisation. Holds no per-event data.
#[derive(Debug)]
pub struct MiroOrg {
    seed: u64,
    org_id: String,
    org_name: String,
    audit: StreamShape,
    content: StreamShape,
    ai: StreamShape,
    late: LateArrival,
    audit_time_form: TimeForm,
    content_time_form: TimeForm,
    users: Vec<User>,
    teams: Vec<Team>,
    boards: Vec<Board>,
    board_by_id: HashMap<String, usize>,
    /// Injected attacks and the index their burst starts at in its stream.
    scenarios: Vec<(Scenario, u64)>,
    user_by_email: HashMap<String, usize>,
    fragments: Fragments,
}

/// `prefix` followed by `digits` decimal digits of `n` (zero padded).
fn decimal_id(prefix: &str, n: u64, digits: usize) -> String {
    format!("{prefix}{n:0digits$}")
}

/// A bijection of `[0, modulus)` (for `multiplier` coprime with `modulus`), so ids built from
/// it are unique per index and still look random.
fn scramble(index: u64, multiplier: u64, offset: u64, modulus: u64) -> u64 {
    u64::try_from(
        (u128::from(index) * u128::from(multiplier) + u128::from(offset)) % u128::from(modulus),
    )
    .expect("below the modulus")
}

const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A Miro-looking board id (`uXjV` + 8 characters + `=`), unique per pool index.
fn board_id(index: usize, h: u64) -> String {
    let mut id = String::from("uXjV");
    id.push(B64[index / 64 % 64] as char);
    id.push(B64[index % 64] as char);
    for k in 0..6 {
        id.push(B64[((h >> (k * 6)) & 63) as usize] as char);
    }
    id.push('=');
    id
}

fn domain_of(org_name: &str) -> String {
    let slug: String = org_name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if slug.is_empty() {
        "org.example".to_owned()
    } else {
        format!("{slug}.example")
    }
}

/// Index into a pool of `n`, skewed towards the low indices (a few busy users and boards).
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "`u * u` is in [0, 1), so the product is in [0, n) and capped at n - 1"
)]
fn skewed(h: u64, n: usize) -> usize {
    let u = unit(h);
    ((u * u * n as f64) as usize).min(n - 1)
}

impl MiroOrg {
    pub fn new(config: &MiroEmulatorConfig) -> Self {
        let seed = config.seed;
        let p = |kind: u64, i: usize, salt: u64| hash(&[seed, TAG_POOL, kind, i as u64, salt]);
        let domain = domain_of(&config.org_name);
        let markup = config.faults.markup_in_names;
        let with_markup = |name: String, i: usize| {
            if markup && i.is_multiple_of(10) {
                name + MARKUP_NAME_SUFFIX
            } else {
                name
            }
        };

        let id_offset = p(0, 0, 0) % 100_000_000_000;
        let teams: Vec<Team> = (0..TEAM_COUNT)
            .map(|i| Team {
                id: if i == 0 {
                    config.team_id.clone()
                } else {
                    decimal_id(
                        "30744573",
                        scramble(i as u64, 104_729, id_offset, 100_000_000_000),
                        11,
                    )
                },
                name: TEAM_NAMES[(i + index(p(1, 0, 0), TEAM_NAMES.len())) % TEAM_NAMES.len()]
                    .to_owned(),
            })
            .collect();

        let first_off = index(p(2, 0, 0), FIRST_NAMES.len());
        let last_off = index(p(2, 0, 1), LAST_NAMES.len());
        let user_offset = p(2, 0, 2) % 100_000_000_000;
        let users: Vec<User> = (0..USER_COUNT)
            .map(|i| {
                let first = FIRST_NAMES[(i + first_off) % FIRST_NAMES.len()];
                let last = LAST_NAMES[(i / FIRST_NAMES.len() + last_off) % LAST_NAMES.len()];
                let ip_h = p(3, i, 0);
                let ip = match ip_h % 3 {
                    0 => format!("203.0.113.{}", 1 + (ip_h >> 8) % 254),
                    1 => format!("198.51.100.{}", 1 + (ip_h >> 8) % 254),
                    _ => format!("192.0.2.{}", 1 + (ip_h >> 8) % 254),
                };
                User {
                    id: decimal_id(
                        "30744573",
                        scramble(i as u64, 7_919, user_offset, 100_000_000_000),
                        11,
                    ),
                    name: with_markup(format!("{first} {last}"), i),
                    email: format!("{}.{}@{domain}", first.to_lowercase(), last.to_lowercase()),
                    ip,
                    team: index(p(3, i, 1), TEAM_COUNT),
                }
            })
            .collect();

        let boards: Vec<Board> = (0..BOARD_COUNT)
            .map(|i| {
                let h = p(4, i, 0);
                Board {
                    id: board_id(i, p(4, i, 1)),
                    name: with_markup(
                        format!(
                            "{} {}",
                            pick(h, BOARD_PREFIXES),
                            pick(h >> 16, BOARD_TOPICS)
                        ),
                        i,
                    ),
                    team: skewed(p(4, i, 2), TEAM_COUNT),
                }
            })
            .collect();

        let board_by_id = boards
            .iter()
            .enumerate()
            .map(|(i, b)| (b.id.clone(), i))
            .collect();
        let user_by_email = users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.email.to_lowercase(), i))
            .collect();
        let fragments = Fragments::new(&config.org_id, &config.org_name, &users, &teams, &boards);
        let mut org = MiroOrg {
            seed,
            org_id: config.org_id.clone(),
            org_name: config.org_name.clone(),
            audit: config.audit,
            content: config.content,
            ai: config.ai,
            late: config.late,
            audit_time_form: config.audit_time_form,
            content_time_form: config.content_time_form,
            users,
            teams,
            boards,
            board_by_id,
            scenarios: Vec::new(),
            user_by_email,
            fragments,
        };
        org.scenarios = config
            .scenarios
            .iter()
            .enumerate()
            .map(|(j, &sc)| {
                let stream = if sc.in_content() {
                    Stream::Content
                } else {
                    Stream::Audit
                };
                let shape = org.shape(stream);
                let mid = shape.start.0 / 2 + shape.end.0 / 2;
                let day = mid.div_euclid(86_400_000) * 86_400_000;
                let j = i64::try_from(j).expect("a few scenarios");
                let at = UnixMs(day + (j + 1) * 3_600_000 + 60_000);
                (sc, org.first_at_or_after(stream, at))
            })
            .collect();
        org
    }

    /// The scenario whose burst holds item `index` of `stream`, and the item's place in it.
    fn scenario_at(&self, stream: Stream, index: u64) -> Option<(Scenario, u64)> {
        self.scenarios.iter().find_map(|&(sc, base)| {
            let here = if sc.in_content() {
                Stream::Content
            } else {
                Stream::Audit
            };
            (here == stream && (base..base + sc.len()).contains(&index)).then(|| (sc, index - base))
        })
    }

    /// The injected scenarios with the index range of each burst (audit or content).
    pub fn scenario_ranges(&self) -> Vec<(Scenario, Range<u64>)> {
        self.scenarios
            .iter()
            .map(|&(sc, base)| (sc, base..base + sc.len()))
            .collect()
    }

    pub fn audit_count(&self) -> u64 {
        self.audit.count
    }

    pub fn content_count(&self) -> u64 {
        self.content.count
    }

    pub fn ai_count(&self) -> u64 {
        self.ai.count
    }

    /// When AI interaction entry `index` was stored (`storedAt`), and served from.
    pub fn ai_stored_at(&self, index: u64) -> UnixMs {
        self.time(Stream::Ai, index)
    }

    /// When AI interaction entry `index` happened (`createdAt`): a second or two before it
    /// was stored, and a late entry its late delay more.
    pub fn ai_created_at(&self, index: u64) -> UnixMs {
        let latency = i64::try_from(hash(&[self.seed, TAG_AI, index, 1]) % 2000).expect("small");
        UnixMs(
            self.ai_stored_at(index)
                .0
                .saturating_sub(latency)
                .saturating_sub(self.delay_ms(Stream::Ai, index)),
        )
    }

    /// The AI interaction indices with `from <= storedAt < to`.
    pub fn ai_range(&self, from: UnixMs, to: UnixMs) -> Range<u64> {
        self.range(Stream::Ai, from, to)
    }

    pub fn audit_time(&self, index: u64) -> UnixMs {
        self.time(Stream::Audit, index)
    }

    pub fn content_time(&self, index: u64) -> UnixMs {
        self.time(Stream::Content, index)
    }

    /// When audit event `index` starts being served: its time plus its late delay, if late.
    pub fn audit_visible_at(&self, index: u64) -> UnixMs {
        self.visible_at(Stream::Audit, index)
    }

    /// When content item `index` starts being served: its time plus its late delay, if late.
    pub fn content_visible_at(&self, index: u64) -> UnixMs {
        self.visible_at(Stream::Content, index)
    }

    /// The audit indices with `from <= time < to`.
    pub fn audit_range(&self, from: UnixMs, to: UnixMs) -> Range<u64> {
        self.range(Stream::Audit, from, to)
    }

    /// The content indices with `from <= time < to`.
    pub fn content_range(&self, from: UnixMs, to: UnixMs) -> Range<u64> {
        self.range(Stream::Content, from, to)
    }

    fn shape(&self, stream: Stream) -> &StreamShape {
        match stream {
            Stream::Audit => &self.audit,
            Stream::Content => &self.content,
            Stream::Ai => &self.ai,
        }
    }

    pub(super) fn org_id(&self) -> &str {
        &self.org_id
    }

    /// `start + floor(index * (end - start) / count)`.
    pub(super) fn time(&self, stream: Stream, index: u64) -> UnixMs {
        let s = self.shape(stream);
        if s.count == 0 {
            return s.start;
        }
        let span = i128::from(s.end.0.saturating_sub(s.start.0).max(0));
        let offset = i128::from(index) * span / i128::from(s.count);
        UnixMs(
            s.start
                .0
                .saturating_add(i64::try_from(offset).unwrap_or(i64::MAX)),
        )
    }

    /// The first index whose time is `>= t` (`count` if none).
    pub(super) fn first_at_or_after(&self, stream: Stream, t: UnixMs) -> u64 {
        let s = self.shape(stream);
        let count = i128::from(s.count);
        let f = i128::from(t.0) - i128::from(s.start.0);
        if count == 0 || f <= 0 {
            return 0;
        }
        let span = i128::from(s.end.0) - i128::from(s.start.0);
        if span <= 0 {
            return s.count; // every event sits at `start`, before `t`
        }
        // floor(i * span / count) >= f  <=>  i * span >= f * count  (f is an integer)
        let i = (f * count + span - 1) / span;
        u64::try_from(i.min(count)).expect("between 1 and the count")
    }

    pub(super) fn range(&self, stream: Stream, from: UnixMs, to: UnixMs) -> Range<u64> {
        let a = self.first_at_or_after(stream, from);
        let b = self.first_at_or_after(stream, to);
        a..b.max(a)
    }

    /// The late delay of an event in milliseconds (0 when it is on time).
    fn delay_ms(&self, stream: Stream, index: u64) -> i64 {
        let max = i64::try_from(self.late.max_delay.as_millis())
            .unwrap_or(i64::MAX)
            .unsigned_abs();
        if max == 0
            || !chance(
                hash(&[self.seed, stream.tag(), index, SALT_LATE]),
                self.late.share,
            )
        {
            return 0;
        }
        i64::try_from(1 + hash(&[self.seed, stream.tag(), index, SALT_DELAY]) % max)
            .expect("at most i64::MAX")
    }

    /// When item `index` starts being served. An AI interaction entry is served from
    /// its `storedAt` (the time its stream is indexed by): its lateness is in `createdAt`.
    pub(super) fn visible_at(&self, stream: Stream, index: u64) -> UnixMs {
        let t = self.time(stream, index);
        match stream {
            Stream::Ai => t,
            Stream::Audit | Stream::Content => {
                UnixMs(t.0.saturating_add(self.delay_ms(stream, index)))
            }
        }
    }

    /// What item `index` is filtered on (content and AI interaction logs).
    pub(super) fn filter_facts(&self, stream: Stream, index: u64) -> FilterFacts {
        match stream {
            Stream::Ai => self.ai_facts(index),
            Stream::Audit | Stream::Content => {
                let c = self.content_facts(index);
                FilterFacts {
                    board: Some(c.board),
                    actor: c.actor,
                }
            }
        }
    }

    /// The object and actor of AI interaction entry `index`: shared by the entries of
    /// one session (four entries, two request/response pairs).
    fn ai_facts(&self, index: u64) -> FilterFacts {
        let h = |salt: u64| hash(&[self.seed, TAG_AI, index / 4, salt, 0x5E55]);
        FilterFacts {
            board: (!chance(h(1), 0.1)).then(|| skewed(h(2), BOARD_COUNT)),
            actor: Some(skewed(h(3), USER_COUNT)),
        }
    }

    /// Whether item `index` is served hostile under the `hostile_item_share` fault: a fixed
    /// property of the item, so a re-read serves the same text.
    pub(super) fn is_hostile(&self, stream: Stream, index: u64, share: f64) -> bool {
        share > 0.0 && chance(hash(&[self.seed, stream.tag(), index, SALT_HOSTILE]), share)
    }

    /// Whether audit event `index` is served hostile with `hostile_item_share = share`.
    pub fn audit_event_is_hostile(&self, index: u64, share: f64) -> bool {
        self.is_hostile(Stream::Audit, index, share)
    }

    /// The index of a board id of the pool, if it is one.
    pub(super) fn board_index(&self, board_id: &str) -> Option<usize> {
        self.board_by_id.get(board_id).copied()
    }

    /// The index of a user of the pool by email (case-insensitive), if it is one.
    pub(super) fn user_index(&self, email: &str) -> Option<usize> {
        self.user_by_email.get(&email.to_lowercase()).copied()
    }

    /// The user the emulated tokens belong to (a Company Admin).
    pub(super) fn token_owner(&self) -> Value {
        let u = &self.users[0];
        json!({"type": "user", "name": u.name, "id": u.id})
    }

    pub(super) fn token_team(&self) -> Value {
        let t = &self.teams[0];
        json!({"type": "team", "name": t.name, "id": t.id})
    }

    pub(super) fn organization(&self) -> Value {
        json!({"type": "organization", "name": self.org_name, "id": self.org_id})
    }

    /// The filterable facts of content item `index` (board, actor).
    pub(super) fn content_facts(&self, index: u64) -> ContentFacts {
        if let Some((Scenario::MassDeletion, _)) = self.scenario_at(Stream::Content, index) {
            return ContentFacts {
                board: 2,
                actor: Some(4),
            };
        }
        let h = |salt: u64| hash(&[self.seed, TAG_CONTENT, index, salt]);
        let actor = if chance(h(2), 0.01) {
            None
        } else {
            Some(skewed(h(3), ACTIVE_USERS))
        };
        ContentFacts {
            board: skewed(h(1), BOARD_COUNT),
            actor,
        }
    }

    /// A widget-level item id on a board (stable across events on the same item).
    fn board_item_id(&self, board: usize, kind: u64, slot: u64) -> (String, u64) {
        let h = hash(&[self.seed, TAG_CONTENT, 0xB0A2D, board as u64, kind, slot]);
        (decimal_id("3458764", h % 1_000_000_000_000, 12), h)
    }

    /// Item `index` of `stream` exactly as the API serves it (not hostile).
    pub(super) fn record(&self, stream: Stream, index: u64) -> Item<'_> {
        match stream {
            Stream::Audit => Item::Audit(match self.scenario_at(Stream::Audit, index) {
                Some((sc, k)) => self.scenario_audit_event(sc, k, index),
                None => self.benign_audit_event(index),
            }),
            Stream::Content => Item::Content(self.content_record(index)),
            Stream::Ai => Item::Ai(self.ai_record(index)),
        }
    }

    /// Item `index` as served: with `hostile`, its free-form object (`details`, or a
    /// content item's `state`) is the hostile value (see [`hostile_value`]).
    pub(super) fn served_record(&self, stream: Stream, index: u64, hostile: bool) -> Item<'_> {
        let mut item = self.record(stream, index);
        if hostile {
            match &mut item {
                Item::Audit(e) => e.details = Fields::Hostile(hostile_value()),
                Item::Ai(e) => e.details = Fields::Hostile(hostile_value()),
                Item::Content(c) => c.state = State::Hostile(hostile_value()),
            }
        }
        item
    }

    /// Audit event `index` exactly as the API serves it.
    pub fn audit_event(&self, index: u64) -> Value {
        self.record(Stream::Audit, index).to_value()
    }

    /// Content log item `index` exactly as the API serves it.
    pub fn content_item(&self, index: u64) -> Value {
        self.record(Stream::Content, index).to_value()
    }

    /// AI interaction log entry `index` exactly as the API serves it (`docs/miro-api.md`:
    /// a UUID id, `createdAt` and `storedAt` in ISO 8601 with `Z`).
    pub fn ai_entry(&self, index: u64) -> Value {
        self.record(Stream::Ai, index).to_value()
    }

    /// Audit event `index` as served with `hostile_item_share = share`.
    pub fn audit_event_served(&self, index: u64, share: f64) -> Value {
        let hostile = self.is_hostile(Stream::Audit, index, share);
        self.served_record(Stream::Audit, index, hostile).to_value()
    }

    /// Content item `index` as served with `hostile_item_share = share`.
    pub fn content_item_served(&self, index: u64, share: f64) -> Value {
        let hostile = self.is_hostile(Stream::Content, index, share);
        self.served_record(Stream::Content, index, hostile)
            .to_value()
    }

    fn principal(&self, u: usize) -> CreatedBy<'_> {
        CreatedBy::Pool(&self.fragments.user_created_by[u])
    }

    fn named_user(&self, u: usize) -> &RawValue {
        &self.fragments.user_named[u]
    }

    fn named_board(&self, b: usize) -> &RawValue {
        &self.fragments.board_named[b]
    }

    fn named_org(&self) -> &RawValue {
        &self.fragments.org_named
    }

    fn person(&self, u: usize) -> &RawValue {
        &self.fragments.user_person[u]
    }

    /// A scenario's sign-in by `user` from `ip`.
    fn scenario_sign_in<'a>(
        &'a self,
        e: &mut AuditEvent<'a>,
        user: usize,
        event: &'static str,
        ip: &'a str,
    ) {
        e.event = event;
        e.category = "authentication";
        e.created_by = Some(self.principal(user));
        e.object = Some(self.named_user(user));
        e.context.ip = Cow::Borrowed(ip);
        e.details = if event == "sign_in_failed" {
            Fields::of(&[("reason", Scalar::Str("INVALID_PASSWORD"))])
        } else {
            Fields::of(&[
                ("authenticationMethod", Scalar::Str("PASSWORD")),
                ("userAgent", Scalar::Str("python-requests/2.31")),
            ])
        };
    }

    /// A scenario's change of the organisation's settings by `admin`.
    fn scenario_admin_change<'a>(
        &'a self,
        e: &mut AuditEvent<'a>,
        admin: usize,
        event: &'static str,
        category: &'static str,
        details: Fields<'a>,
    ) {
        e.event = event;
        e.category = category;
        e.created_by = Some(self.principal(admin));
        e.object = Some(self.named_org());
        e.context.ip = Cow::Borrowed(&self.users[admin].ip);
        e.details = details;
    }

    /// A scenario's change of a board by `user` from their own address.
    fn scenario_board_event<'a>(&'a self, e: &mut AuditEvent<'a>, user: usize) {
        e.category = "boards";
        e.created_by = Some(self.principal(user));
        e.context.ip = Cow::Borrowed(&self.users[user].ip);
    }

    /// Audit event `index` of a scenario burst: the benign event's id, time and context,
    /// with the attack's actor, event, object and details.
    fn scenario_audit_event(&self, sc: Scenario, k: u64, index: u64) -> AuditEvent<'_> {
        use Scalar::{Bool, Str, StrList};
        let mut e = self.benign_audit_event(index);
        // Fixed cast: the attacker's victim, an admin, another member.
        let (victim, admin, member) = (3, 1, 7);
        let k_usize = usize::try_from(k).expect("a short burst");
        match sc {
            Scenario::BruteForce => {
                self.scenario_sign_in(&mut e, victim, "sign_in_failed", ATTACKER_IP);
            }
            Scenario::PasswordSpray => {
                self.scenario_sign_in(&mut e, 10 + k_usize, "sign_in_failed", ATTACKER_IP);
            }
            Scenario::GuessedPassword => {
                let event = if k + 1 < sc.len() {
                    "sign_in_failed"
                } else {
                    "sign_in_succeeded"
                };
                self.scenario_sign_in(&mut e, victim, event, ATTACKER_IP);
            }
            Scenario::AdminGrant => {
                let details = Fields::of(&[("oldRole", Str("MEMBER")), ("newRole", Str("ADMIN"))]);
                self.scenario_admin_change(&mut e, admin, "user_role_changed", "users", details);
                e.object = Some(self.named_user(member));
            }
            Scenario::SsoDisabled => {
                let details = Fields::of(&[("ssoEnabled", Bool(false)), ("provider", Str("Okta"))]);
                self.scenario_admin_change(
                    &mut e,
                    admin,
                    "sso_settings_changed",
                    "security",
                    details,
                );
            }
            Scenario::ScimToken => {
                let details = Fields::of(&[]);
                self.scenario_admin_change(
                    &mut e,
                    admin,
                    "scim_token_generated",
                    "security",
                    details,
                );
            }
            Scenario::DomainAllowlist => {
                let details = Fields::of(&[
                    ("domains", StrList(&["files-share.example"])),
                    ("change", Str("ADDED")),
                ]);
                self.scenario_admin_change(
                    &mut e,
                    admin,
                    "domain_allowlist_changed",
                    "organization",
                    details,
                );
            }
            Scenario::GuestSharing => {
                let details = Fields::of(&[("setting", Str("guestAccess")), ("value", Str("ON"))]);
                self.scenario_admin_change(
                    &mut e,
                    admin,
                    "organization_settings_changed",
                    "organization",
                    details,
                );
            }
            Scenario::PublicBoard => {
                self.scenario_board_event(&mut e, victim);
                e.event = "board_sharing_changed";
                e.object = Some(self.named_board(0));
                e.details = Fields::of(&[
                    ("access", Str("VIEW")),
                    ("previousAccess", Str("PRIVATE")),
                    ("scope", Str("ANYONE_WITH_LINK")),
                ]);
            }
            Scenario::MassExport => {
                self.scenario_board_event(&mut e, victim);
                e.event = "board_exported";
                e.object = Some(self.named_board(k_usize));
                e.details = Fields::of(&[("format", Str("BACKUP"))]);
            }
            Scenario::ActiveAfterDeactivation => {
                let deactivated = 5;
                if k == 0 {
                    let details = Fields::of(&[("email", Str(&self.users[deactivated].email))]);
                    self.scenario_admin_change(&mut e, admin, "user_deactivated", "users", details);
                    e.object = Some(self.named_user(deactivated));
                } else {
                    e.event = "board_opened";
                    e.category = "boards";
                    e.created_by = Some(self.principal(deactivated));
                    e.object = Some(self.named_board(1));
                    e.context.ip = Cow::Borrowed(ATTACKER_IP);
                    e.details = Fields::of(&[("role", Str("OWNER"))]);
                }
            }
            Scenario::AppAdmin => {
                e.event = "user_role_changed";
                e.category = "users";
                e.created_by = Some(CreatedBy::Other(Principal {
                    email: None,
                    id: Cow::Owned(decimal_id("34587645", 4_242_424, 11)),
                    name: "Unknown API client",
                    kind: "application",
                }));
                e.object = Some(self.named_user(member));
                e.context.ip = Cow::Borrowed("52.18.23.45");
                e.details = Fields::of(&[("oldRole", Str("MEMBER")), ("newRole", Str("GUEST"))]);
            }
            Scenario::MassDeletion => unreachable!("a content scenario"),
        }
        e
    }

    /// Audit event `index` of the benign organisation.
    fn benign_audit_event(&self, index: u64) -> AuditEvent<'_> {
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
        let target_idx = if matches!(kind.event, "user_deactivated" | "user_reactivated") {
            ACTIVE_USERS + hash::index(h(5), LEAVERS)
        } else {
            hash::index(h(5), ACTIVE_USERS)
        };
        let target = &self.users[target_idx];

        // Miro's shape: the event time with microseconds, `#`, a decimal number, `-DDB`.
        let number = scramble(
            index,
            7_777_777_777,
            hash(&[self.seed, TAG_AUDIT]) % 100_000_000_000,
            100_000_000_000,
        );
        let time = self.audit_time(index);
        let iso = time.to_iso();
        // The stamp is `format_iso(time, iso, TimeForm::MicrosZ, h(20))`, written in place.
        let micros = h(20) % 1000;
        let id = format!(
            "{}{micros:03}Z#30744573{number:011}-DDB",
            &iso[..iso.len() - 1]
        );
        let created_at = format_iso(
            time,
            iso,
            self.audit_time_form,
            hash(&[self.seed, TAG_AUDIT, index, SALT_TIME_FORM]),
        );

        let created_by = (!chance(h(7), 0.02)).then(|| match actor_type {
            "user" => self.principal(actor_idx),
            "application" => {
                let app = hash::index(h(8), APPLICATIONS.len());
                CreatedBy::Other(Principal {
                    email: None,
                    id: Cow::Owned(decimal_id("34587645", 1_000_000 + app as u64 * 7_331, 11)),
                    name: APPLICATIONS[app],
                    kind: "application",
                })
            }
            "scim_provisioner" => CreatedBy::Other(Principal {
                email: None,
                id: Cow::Owned(decimal_id("30744573", 99_000_000_001, 11)),
                name: "SCIM provisioning",
                kind: "scim_provisioner",
            }),
            other => CreatedBy::Other(Principal {
                email: None,
                id: Cow::Owned(decimal_id("30744573", 99_000_000_002, 11)),
                name: "Miro automation",
                kind: other,
            }),
        });

        let object = (!chance(h(9), 0.05)).then(|| match kind.object {
            ObjectKind::Actor => self.named_user(actor_idx),
            ObjectKind::Board => self.named_board(board_idx),
            ObjectKind::User => self.named_user(target_idx),
            ObjectKind::Team => &*self.fragments.team_named[hash::index(h(10), TEAM_COUNT)],
            ObjectKind::Organization => self.named_org(),
        });

        let ip = if actor_type == "user" {
            Cow::Borrowed(actor.ip.as_str())
        } else {
            Cow::Owned(format!(
                "52.{}.{}.{}",
                1 + h(11) % 200,
                h(11) >> 8 & 255,
                1 + (h(11) >> 16) % 254
            ))
        };
        let team = (!chance(h(12), 0.05)).then(|| {
            let team = if kind.object == ObjectKind::Board {
                board.team
            } else {
                actor.team
            };
            &*self.fragments.team_typed[team]
        });
        AuditEvent {
            category: kind.category,
            context: AuditContext {
                ip,
                organization: &self.fragments.org_typed,
                team,
            },
            created_at,
            created_by,
            details: self.audit_details(kind.event, h(6), board, target),
            event: kind.event,
            id,
            object,
            kind: "event",
        }
    }

    fn audit_details<'a>(
        &'a self,
        event: &str,
        h: u64,
        board: &'a Board,
        target: &'a User,
    ) -> Fields<'a> {
        use Scalar::Str;
        const ROLES: &[&str] = &["OWNER", "EDITOR", "COMMENTER", "VIEWER"];
        const ORG_ROLES: &[&str] = &["MEMBER", "ADMIN", "GUEST"];
        const BENIGN_ROLES: &[&str] = &["MEMBER", "GUEST"];
        const ACCESS: &[&str] = &["PRIVATE", "VIEW", "COMMENT", "EDIT"];
        let p = |h: u64, items: &[&'static str]| Str(pick::<&str>(h, items));
        match event {
            "sign_in_succeeded" => Fields::of(&[
                ("authType", p(h, &["SSO", "PASSWORD", "GOOGLE"])),
                (
                    "userAgent",
                    p(
                        h >> 8,
                        &["Chrome/126", "Firefox/127", "Safari/17", "MiroDesktop/0.8"],
                    ),
                ),
            ]),
            "sign_in_failed" => Fields::of(&[(
                "reason",
                p(
                    h,
                    &[
                        "INVALID_PASSWORD",
                        "SSO_ERROR",
                        "ACCOUNT_LOCKED",
                        "MFA_FAILED",
                    ],
                ),
            )]),
            "board_opened" => Fields::of(&[("role", p(h, ROLES))]),
            "board_created" => Fields::of(&[
                ("boardName", Str(&board.name)),
                ("teamId", Str(&self.teams[board.team].id)),
            ]),
            "board_exported" => Fields::of(&[("format", p(h, &["PDF", "IMAGE", "CSV", "BACKUP"]))]),
            "board_shared" => {
                Fields::of(&[("sharedWith", Str(&target.email)), ("role", p(h, ROLES))])
            }
            "board_sharing_changed" => Fields::of(&[
                ("access", p(h, ACCESS)),
                ("previousAccess", p(h >> 8, ACCESS)),
                ("scope", p(h >> 16, &["ORGANIZATION", "TEAM"])),
            ]),
            "board_deleted" => Fields::of(&[("boardName", Str(&board.name))]),
            "user_invited" => Fields::of(&[
                ("invitedEmail", Str(&target.email)),
                ("role", p(h, ORG_ROLES)),
            ]),
            "user_deactivated" | "user_reactivated" => Fields::of(&[("email", Str(&target.email))]),
            // Admin grants are attacks here (scenario `admin-grant`): the benign org only
            // moves people between member and guest.
            "user_role_changed" => Fields::of(&[
                ("oldRole", p(h, BENIGN_ROLES)),
                ("newRole", p(h >> 8, BENIGN_ROLES)),
            ]),
            "sign_out_succeeded" | "team_created" | "team_deleted" => Fields::of(&[]),
            _ => Fields::of(&[
                (
                    "setting",
                    p(
                        h,
                        &["dataClassification", "retention", "boardDefaultAccess"],
                    ),
                ),
                ("value", p(h >> 8, &["ON", "OFF"])),
            ]),
        }
    }

    /// Content log item `index` as served (not hostile).
    fn content_record(&self, index: u64) -> ContentItem<'_> {
        let mut item = self.benign_content_item(index);
        if let Some((Scenario::MassDeletion, k)) = self.scenario_at(Stream::Content, index) {
            // One person deleting a board's items one after another.
            let facts = self.content_facts(index);
            item.content_id = &self.boards[facts.board].id;
            item.action_type = "delete";
            item.actor = Some(self.person(facts.actor.expect("the scenario has an actor")));
            item.item_type = "widget";
            item.item_id = self.board_item_id(facts.board, 1, 1000 + k).0;
            item.state = State::Null(());
            item.relationships = None;
        }
        item
    }

    /// Content log item `index` of the benign organisation (its facts may be a scenario's).
    fn benign_content_item(&self, index: u64) -> ContentItem<'_> {
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
        let thread_id = || self.board_item_id(facts.board, 2, slot % 8).0;
        #[expect(clippy::cast_precision_loss, reason = "below 4000: exact in an f64")]
        let position = Position {
            origin: "center",
            x: (h(7) % 4000) as f64 - 2000.0,
            y: (h(8) % 3000) as f64 - 1500.0,
        };
        let state = match (action, item_type) {
            ("delete", _) => State::Null(()),
            ("widget", _) | (_, "widget") => State::Widget {
                data: WidgetData {
                    content: format!("<p>{}</p>", pick::<&str>(h(9), STICKY_TEXTS)),
                },
                geometry: Geometry {
                    height: 100 + (h(10) >> 16) % 200,
                    width: 100 + h(10) % 300,
                },
                position,
                style: Style {
                    fill_color: pick::<&str>(
                        h(11),
                        &["light_yellow", "light_green", "light_blue", "pink", "gray"],
                    ),
                },
                kind: pick::<&str>(item_h, WIDGET_TYPES),
            },
            (_, "comment_thread") => State::Thread {
                position,
                resolved: h(9) & 3 == 0,
            },
            _ => State::Message {
                content: pick::<&str>(h(9), STICKY_TEXTS),
                thread_id: thread_id(),
            },
        };
        let relationships = match item_type {
            "comment_message" => Some(Relationship {
                item_id: thread_id(),
                item_type: "comment_thread",
                kind: "parent",
            }),
            "widget" if chance(h(12), 0.2) => {
                let frame_id = self.board_item_id(facts.board, 1, slot % 4).0;
                (frame_id != item_id).then_some(Relationship {
                    item_id: frame_id,
                    item_type: "widget",
                    kind: "parent",
                })
            }
            "comment_thread" if chance(h(12), 0.5) => Some(Relationship {
                item_id: self.board_item_id(facts.board, 1, h(13) % 48).0,
                item_type: "widget",
                kind: "attached_to",
            }),
            _ => None,
        };
        ContentItem {
            action_time: format_time(
                self.content_time(index),
                self.content_time_form,
                hash(&[self.seed, TAG_CONTENT, index, SALT_TIME_FORM]),
            ),
            action_type: action,
            actor: facts.actor.map(|a| self.person(a)),
            content_id: &board.id,
            id: decimal_id(
                "3458764",
                scramble(
                    index,
                    9_876_543_211,
                    hash(&[self.seed, TAG_CONTENT]) % 1_000_000_000_000,
                    1_000_000_000_000,
                ),
                12,
            ),
            item_id,
            item_type,
            relationships,
            state,
        }
    }

    /// AI interaction log entry `index` as served (not hostile).
    fn ai_record(&self, index: u64) -> AiEntry<'_> {
        use Scalar::{Str, U64};
        let h = |salt: u64| hash(&[self.seed, TAG_AI, index, salt]);
        let session = index / 4;
        let message = index / 2;
        let sh = |salt: u64| hash(&[self.seed, TAG_AI, session, salt, 0x5E55]);
        let facts = self.ai_facts(index);
        let request = index.is_multiple_of(2);
        let unique = scramble(index, 0x9E37_79B9, h(0) % (1 << 48), 1 << 48);
        let object = match facts.board {
            Some(b) => &*self.fragments.board_ai_object[b],
            None => &*self.fragments.org_ai_object,
        };
        let details = if request {
            Fields::of(&[
                ("prompt", Str(pick::<&str>(h(6), STICKY_TEXTS))),
                ("promptCharacters", U64(20 + h(7) % 400)),
                ("locale", Str(pick::<&str>(h(8), &["en", "de", "fr", "ja"]))),
            ])
        } else {
            Fields::of(&[
                (
                    "status",
                    Str(pick::<&str>(
                        h(6),
                        &["success", "success", "success", "filtered", "error"],
                    )),
                ),
                ("outputItems", U64(h(7) % 12)),
                ("durationMs", U64(300 + h(8) % 9000)),
            ])
        };
        AiEntry {
            actor: facts.actor.map(|a| self.person(a)),
            ai_feature_name: pick::<&str>(sh(4), AI_FEATURES),
            created_at: self.ai_created_at(index).to_iso(),
            details,
            id: uuid(h(2), unique),
            log_type: if request { "request" } else { "response" },
            message_id: uuid(hash(&[self.seed, TAG_AI, message, 0x3E55]), message),
            object,
            session_id: uuid(sh(5), session),
            stored_at: self.ai_stored_at(index).to_iso(),
        }
    }
}

/// A stable fingerprint of a string list (order-insensitive), for cursors.
pub(super) fn fingerprint_strings(values: &[String]) -> u64 {
    let mut hs: Vec<u64> = values.iter().map(|v| hash_str(v)).collect();
    hs.sort_unstable();
    hash(&hs)
}

#[cfg(test)]
mod tests {
    use super::super::config::{Faults, LastPageCursor};
    use super::*;
    use std::time::Duration;

    pub(crate) fn config(seed: u64, count: u64, start: i64, end: i64) -> MiroEmulatorConfig {
        MiroEmulatorConfig {
            seed,
            org_id: "3074457345821141000".into(),
            org_name: "Test Org".into(),
            team_id: "3074457345821141001".into(),
            enterprise_guard: true,
            tokens: vec![],
            audit: StreamShape {
                count,
                start: UnixMs(start),
                end: UnixMs(end),
            },
            content: StreamShape {
                count,
                start: UnixMs(start),
                end: UnixMs(end),
            },
            ai: StreamShape {
                count,
                start: UnixMs(start),
                end: UnixMs(end),
            },
            late: LateArrival {
                share: 0.1,
                max_delay: Duration::from_secs(30),
            },
            rate_limit: None,
            audit_max_limit: 500,
            last_page_cursor: LastPageCursor::Omit,
            audit_time_form: super::super::config::TimeForm::MillisPlus0000,
            content_time_form: super::super::config::TimeForm::MillisZ,
            faults: Faults::default(),
            scenarios: Vec::new(),
        }
    }

    #[test]
    fn same_seed_same_items_different_seed_different_items() {
        let a = MiroOrg::new(&config(1, 1000, 0, 1_000_000));
        let b = MiroOrg::new(&config(1, 1000, 0, 1_000_000));
        let c = MiroOrg::new(&config(2, 1000, 0, 1_000_000));
        for i in [0, 1, 17, 999] {
            assert_eq!(a.audit_event(i), b.audit_event(i));
            assert_eq!(a.content_item(i), b.content_item(i));
            assert_eq!(a.audit_visible_at(i), b.audit_visible_at(i));
        }
        let differ = (0..50)
            .filter(|&i| a.audit_event(i) != c.audit_event(i))
            .count();
        assert_eq!(differ, 50);
        let differ = (0..50)
            .filter(|&i| a.content_item(i) != c.content_item(i))
            .count();
        assert_eq!(differ, 50);
    }

    #[test]
    fn ids_are_unique_and_decimal_strings() {
        let org = MiroOrg::new(&config(7, 20_000, 0, 1_000_000));
        let mut audit = std::collections::HashSet::new();
        let mut content = std::collections::HashSet::new();
        for i in 0..20_000 {
            let id = org.audit_event(i)["id"].as_str().unwrap().to_owned();
            // `2023-09-01T09:30:10.840687Z#3074457312345678901-DDB`
            let (stamp, rest) = id.split_once('#').unwrap();
            assert_eq!(UnixMs::parse(stamp), Some(org.audit_time(i)), "{id}");
            assert_eq!(stamp.len(), 27, "{id}");
            let number = rest.strip_suffix("-DDB").unwrap();
            assert!(
                number.len() == 19 && number.bytes().all(|b| b.is_ascii_digit()),
                "{id}"
            );
            assert!(audit.insert(id));
            assert!(content.insert(org.content_item(i)["id"].as_str().unwrap().to_owned()));
        }
    }

    #[test]
    fn every_time_form_names_the_item_time() {
        let forms = [
            (TimeForm::MillisPlus0000, "+0000"),
            (TimeForm::MillisZ, "Z"),
            (TimeForm::MillisColonOffset, "+00:00"),
            (TimeForm::NoFraction, "Z"),
            (TimeForm::MicrosZ, "Z"),
            (TimeForm::NanosAtOffset, "+05:30"),
            (TimeForm::Mixed, ""),
        ];
        for (form, suffix) in forms {
            let mut c = config(3, 2_000, 1_700_000_000_000, 1_700_000_100_000);
            c.audit_time_form = form;
            c.content_time_form = form;
            let org = MiroOrg::new(&c);
            let mut seen = std::collections::HashSet::new();
            for i in 0..2_000 {
                let text = org.audit_event(i)["createdAt"].as_str().unwrap().to_owned();
                assert_eq!(
                    UnixMs::parse(&text),
                    Some(org.audit_time(i)),
                    "{form:?} {text}"
                );
                assert!(text.ends_with(suffix), "{form:?} {text}");
                let text = org.content_item(i)["actionTime"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                assert_eq!(UnixMs::parse(&text), Some(org.content_time(i)), "{text}");
                seen.insert(text.len());
            }
            if form == TimeForm::Mixed {
                assert!(seen.len() >= 4, "mixed forms: {seen:?}");
            }
        }
        let t = UnixMs(1_700_000_000_000);
        assert_eq!(
            format_time(t, TimeForm::NoFraction, 0),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            format_time(t, TimeForm::MillisPlus0000, 0),
            "2023-11-14T22:13:20.000+0000"
        );
    }

    #[test]
    fn items_have_the_documented_fields() {
        let org = MiroOrg::new(&config(3, 5_000, 1_700_000_000_000, 1_700_100_000_000));
        let mut missing_created_by = 0;
        let mut missing_object = 0;
        let mut missing_team = 0;
        let mut board_opened = 0;
        for i in 0..5_000 {
            let e = org.audit_event(i);
            assert_eq!(e["type"], "event");
            assert_eq!(
                UnixMs::parse(e["createdAt"].as_str().unwrap()),
                Some(org.audit_time(i))
            );
            assert!(e["details"].is_object());
            assert_eq!(e["context"]["organization"]["id"], "3074457345821141000");
            match e.get("createdBy") {
                None => missing_created_by += 1,
                Some(by) if by["type"] == "user" => assert!(by["email"].is_string()),
                Some(by) => assert!(by.get("email").is_none()),
            }
            missing_object += usize::from(e.get("object").is_none());
            missing_team += usize::from(e["context"].get("team").is_none());
            board_opened += usize::from(e["event"] == "board_opened");
            let c = org.content_item(i);
            assert_eq!(
                UnixMs::parse(c["actionTime"].as_str().unwrap()),
                Some(org.content_time(i))
            );
            assert!(c["relationships"].is_array());
            let action = c["actionType"].as_str().unwrap();
            assert!(["create", "update", "delete"].contains(&action));
            assert_eq!(action == "delete", c["state"].is_null());
            let board = c["contentId"].as_str().unwrap();
            assert_eq!(org.board_index(board), Some(org.content_facts(i).board));
        }
        assert!(
            (40..=200).contains(&missing_created_by),
            "{missing_created_by}"
        );
        assert!((150..=400).contains(&missing_object), "{missing_object}");
        assert!((150..=400).contains(&missing_team), "{missing_team}");
        assert!(board_opened > 1000, "{board_opened}");
    }

    #[test]
    fn times_are_spread_evenly_and_ranges_are_exact() {
        let org = MiroOrg::new(&config(1, 1000, 10_000, 13_333));
        assert_eq!(org.audit_time(0), UnixMs(10_000));
        assert_eq!(org.audit_time(999), UnixMs(10_000 + 999 * 3_333 / 1000));
        let t = |i: u64| org.audit_time(i);
        for (from, to) in [
            (10_000, 13_333),
            (10_001, 10_002),
            (11_111, 12_222),
            (13_332, 20_000),
        ] {
            let r = org.audit_range(UnixMs(from), UnixMs(to));
            let expected: Vec<u64> = (0..1000)
                .filter(|&i| t(i).0 >= from && t(i).0 < to)
                .collect();
            assert_eq!(r.clone().collect::<Vec<_>>(), expected, "[{from}, {to})");
        }
        // Boundaries: the range starts at the first event at `from`, ends before `to`.
        let r = org.audit_range(t(500), t(600));
        assert!(
            r.start <= 500 && t(r.start) == t(500) && (r.start == 0 || t(r.start - 1) < t(500))
        );
        assert!(t(r.end - 1) < t(600) && t(r.end) == t(600));
        // Empty and outside windows.
        assert!(org.audit_range(UnixMs(12_000), UnixMs(12_000)).is_empty());
        assert!(org.audit_range(UnixMs(12_000), UnixMs(11_000)).is_empty());
        assert_eq!(org.audit_range(UnixMs(0), UnixMs(10_000)), 0..0);
        assert_eq!(org.audit_range(UnixMs(13_333), UnixMs(99_999)), 1000..1000);
        assert_eq!(org.audit_range(UnixMs(0), UnixMs(99_999)), 0..1000);
    }

    #[test]
    fn dense_streams_share_milliseconds_and_ranges_stay_exact() {
        let org = MiroOrg::new(&config(1, 1000, 0, 7));
        let t = |i: u64| org.content_time(i).0;
        for from in -1..9 {
            for to in -1..9 {
                let r = org.content_range(UnixMs(from), UnixMs(to));
                let n = (0..1000).filter(|&i| t(i) >= from && t(i) < to).count() as u64;
                assert_eq!(r.end - r.start, n, "[{from}, {to})");
                assert!(r.is_empty() || (t(r.start) >= from && t(r.end - 1) < to));
            }
        }
        let zero = MiroOrg::new(&config(1, 0, 0, 7));
        assert!(zero.audit_range(UnixMs(-100), UnixMs(100)).is_empty());
        let point = MiroOrg::new(&config(1, 10, 5, 5));
        assert_eq!(point.audit_range(UnixMs(5), UnixMs(6)), 0..10);
        assert_eq!(point.audit_range(UnixMs(6), UnixMs(7)), 10..10);
    }

    #[test]
    fn late_share_and_delays_follow_the_config() {
        let org = MiroOrg::new(&config(9, 10_000, 0, 10_000_000));
        let late: Vec<i64> = (0..10_000)
            .map(|i| org.audit_visible_at(i).0 - org.audit_time(i).0)
            .filter(|&d| d != 0)
            .collect();
        assert!((800..=1200).contains(&late.len()), "{}", late.len());
        assert!(late.iter().all(|&d| d > 0 && d <= 30_000));
    }
}
