//! Schema and deterministic seed data.
//!
//! The same [`SeedConfig`] always produces the same rows (ids, names, tags, message
//! counts), with timestamps relative to the moment of seeding. Organization sizes follow
//! a power law: organization 1 is the largest (about 40 000 contacts and 300 000 messages
//! at scale 1), the smallest have a few dozen contacts. Every organization has at least
//! two users, so `tok_org{N}_user1` and `tok_org{N}_user2` exist for every N.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

use crate::db::{DbError, Value};
use crate::params;

/// What to seed.
#[derive(Debug, Clone)]
pub struct SeedConfig {
    /// The random seed: the same seed gives the same data.
    pub seed: u64,
    /// Multiplies every volume (1.0: the largest organization has ~40k contacts and
    /// ~300k messages; tests use ~0.02 for a sub-second start in debug builds).
    pub scale: f64,
    /// Number of organizations (at least 1; the demo uses 24).
    pub organizations: u32,
}

impl Default for SeedConfig {
    fn default() -> Self {
        SeedConfig {
            seed: 42,
            scale: 1.0,
            organizations: 24,
        }
    }
}

/// What was seeded, per organization: served on `/debug/seed` and used by the report
/// to pick tokens.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SeedSummary {
    /// One row per organization, in id order.
    pub organizations: Vec<OrgSummary>,
    /// Total rows per table.
    pub totals: Totals,
    /// Wall-clock seconds the seeding took.
    pub seconds: f64,
}

/// The seeded volumes of one organization.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct OrgSummary {
    /// The organization id (`N` in `tok_org{N}_user{M}`).
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Number of users (`M` runs from 1 to this).
    pub users: u32,
    /// Id of user 1; user M has id `first_user_id + M - 1`.
    pub first_user_id: i64,
    /// Contacts.
    pub contacts: u32,
    /// Conversations.
    pub conversations: u32,
    /// Messages.
    pub messages: u32,
}

/// Row counts over all organizations.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Totals {
    /// Users.
    pub users: u64,
    /// Templates.
    pub templates: u64,
    /// Contacts.
    pub contacts: u64,
    /// Conversations.
    pub conversations: u64,
    /// Messages.
    pub messages: u64,
    /// Broadcast campaigns.
    pub broadcasts: u64,
    /// Drip campaigns.
    pub drip_campaigns: u64,
}

/// The bearer token of user `user_no` of organization `org_id`.
pub fn token(org_id: i64, user_no: u32) -> String {
    format!("tok_org{org_id}_user{user_no}")
}

// `AUTOINCREMENT`: an id is never given again once its row is deleted. SQLite's plain
// rowid is the largest one plus one, so deleting the newest contact and creating another
// reused its id, and the report's read-your-writes check then saw "the deleted id" shown
// again (another user's new contact). PostgreSQL's identity columns never reuse either.
const SCHEMA: &str = "
CREATE TABLE organizations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, slug TEXT NOT NULL, plan TEXT NOT NULL,
    timezone TEXT NOT NULL, settings TEXT NOT NULL, version INTEGER NOT NULL,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT, organization_id INTEGER NOT NULL, user_no INTEGER NOT NULL,
    name TEXT NOT NULL, email TEXT NOT NULL, role TEXT NOT NULL, token TEXT NOT NULL UNIQUE,
    locale TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE templates (
    id INTEGER PRIMARY KEY AUTOINCREMENT, organization_id INTEGER NOT NULL, name TEXT NOT NULL,
    category TEXT NOT NULL, content TEXT NOT NULL, variables TEXT NOT NULL,
    created_by INTEGER NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE contacts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, organization_id INTEGER NOT NULL, name TEXT NOT NULL,
    phone_number TEXT NOT NULL, email TEXT, tags TEXT NOT NULL,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE contact_tags (
    organization_id INTEGER NOT NULL, tag TEXT NOT NULL, contact_id INTEGER NOT NULL,
    PRIMARY KEY (organization_id, tag, contact_id)) WITHOUT ROWID;
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, organization_id INTEGER NOT NULL, contact_id INTEGER NOT NULL,
    status TEXT NOT NULL, assigned_to INTEGER, message_count INTEGER NOT NULL,
    last_message_at INTEGER NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, organization_id INTEGER NOT NULL, conversation_id INTEGER NOT NULL,
    direction TEXT NOT NULL, status TEXT NOT NULL, body TEXT NOT NULL,
    created_at INTEGER NOT NULL);
CREATE TABLE broadcasts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, organization_id INTEGER NOT NULL, name TEXT NOT NULL,
    template_id INTEGER, audience_tag TEXT, status TEXT NOT NULL, scheduled_at INTEGER,
    sent_count INTEGER NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE drip_campaigns (
    id INTEGER PRIMARY KEY AUTOINCREMENT, organization_id INTEGER NOT NULL, name TEXT NOT NULL,
    trigger_event TEXT NOT NULL, status TEXT NOT NULL, steps TEXT NOT NULL,
    enrolled_count INTEGER NOT NULL, created_at INTEGER NOT NULL);
";

// Created after the bulk load: building an index once is much faster than maintaining it
// row by row.
const INDEXES: &str = "
CREATE INDEX users_org ON users (organization_id, user_no);
CREATE INDEX templates_org ON templates (organization_id, category, id);
CREATE INDEX contacts_org ON contacts (organization_id, id);
CREATE INDEX conversations_org ON conversations (organization_id, id);
CREATE INDEX conversations_org_status ON conversations (organization_id, status, id);
CREATE INDEX conversations_contact ON conversations (contact_id);
CREATE INDEX messages_org_time ON messages (organization_id, created_at);
CREATE INDEX messages_conversation ON messages (conversation_id);
CREATE INDEX broadcasts_org ON broadcasts (organization_id, id);
CREATE INDEX drips_org ON drip_campaigns (organization_id, id);
ANALYZE;
";

/// Contact tags; earlier ones are more common.
pub const TAGS: [&str; 8] = [
    "customer",
    "lead",
    "vip",
    "newsletter",
    "churned",
    "wholesale",
    "beta",
    "partner",
];

/// Template categories; earlier ones are more common.
pub const CATEGORIES: [&str; 4] = ["marketing", "utility", "support", "authentication"];

/// First names of seeded contacts (also the report's search terms).
pub const FIRST_NAMES: [&str; 32] = [
    "Maria", "James", "Ana", "John", "Sofia", "David", "Lucia", "Michael", "Emma", "Daniel",
    "Olivia", "Carlos", "Mia", "Luis", "Chloe", "Ahmed", "Fatima", "Wei", "Yuki", "Priya", "Omar",
    "Elena", "Ivan", "Grace", "Noah", "Leila", "Pedro", "Hana", "Tom", "Zara", "Ravi", "Nina",
];

const LAST_NAMES: [&str; 24] = [
    "Garcia", "Smith", "Silva", "Johnson", "Rossi", "Brown", "Muller", "Kim", "Nguyen", "Lopez",
    "Martin", "Khan", "Chen", "Sato", "Patel", "Ali", "Costa", "Novak", "Wilson", "Haddad",
    "Santos", "Moreau", "Ivanova", "Okafor",
];

const COMPANY_A: [&str; 12] = [
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wonka",
    "Tyrell",
    "Vandelay",
    "Soylent",
    "Cyberdyne",
    "Gringotts",
];
const COMPANY_B: [&str; 6] = [
    "Dental",
    "Retail",
    "Logistics",
    "Travel",
    "Fitness",
    "Realty",
];

const PHRASES: [&str; 16] = [
    "Hi, is my order on its way?",
    "Thanks, that works for me.",
    "Your appointment is confirmed for tomorrow.",
    "Can I change the delivery address?",
    "We have a new offer for you this week.",
    "Please reply YES to confirm.",
    "The item is back in stock.",
    "What are your opening hours?",
    "Your verification code is 482913.",
    "I'd like to cancel my subscription.",
    "Sure, I'll send the invoice today.",
    "Could you call me back later?",
    "Your payment was received, thank you!",
    "Is there parking near the store?",
    "We're sorry for the delay.",
    "Great, see you on Friday.",
];

/// Size weight of organization `k` (1-based): a power law, so a few are large.
fn weight(k: u32) -> f64 {
    1.0 / f64::from(k).powf(1.5)
}

fn scaled(base: f64, scale: f64, min: u32) -> u32 {
    ((base * scale).round() as u32).max(min)
}

/// Number of users seeded in organization `k`: 12 in the largest, 2 in the smallest.
pub fn users_in_org(k: u32) -> u32 {
    ((12.0 / f64::from(k).sqrt()).round() as u32).clamp(2, 12)
}

const DAY: i64 = 86_400;

/// Creates the schema and seeds it. `now` is the reference time (unix seconds).
pub fn seed(conn: &mut Connection, config: &SeedConfig, now: i64) -> Result<SeedSummary, DbError> {
    let started = std::time::Instant::now();
    conn.execute_batch(SCHEMA)?;
    let tx = conn.transaction()?;
    let mut summary = {
        let mut sink = SqliteSink {
            statements: Table::ALL
                .iter()
                .map(|table| tx.prepare(&table.insert_sql()))
                .collect::<Result<_, _>>()?,
        };
        generate(config, now, &mut sink)?
    };
    tx.commit()?;
    conn.execute_batch(INDEXES)?;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Where [`generate`] puts each row.
trait RowSink {
    fn row(&mut self, table: Table, values: &[Value]) -> Result<(), DbError>;
}

struct SqliteSink<'c> {
    /// One prepared INSERT per table, in [`Table::ALL`] order.
    statements: Vec<rusqlite::Statement<'c>>,
}

impl RowSink for SqliteSink<'_> {
    fn row(&mut self, table: Table, values: &[Value]) -> Result<(), DbError> {
        self.statements[table as usize].execute(rusqlite::params_from_iter(values))?;
        Ok(())
    }
}

/// The seeded tables, in load order, with the columns seeding fills (ids not named are
/// assigned in insertion order, 1, 2, ..., which [`generate`] counts on).
#[derive(Debug, Clone, Copy)]
enum Table {
    Organizations,
    Users,
    Templates,
    Contacts,
    ContactTags,
    Conversations,
    Messages,
    Broadcasts,
    DripCampaigns,
}

impl Table {
    const ALL: [Table; 9] = [
        Table::Organizations,
        Table::Users,
        Table::Templates,
        Table::Contacts,
        Table::ContactTags,
        Table::Conversations,
        Table::Messages,
        Table::Broadcasts,
        Table::DripCampaigns,
    ];

    fn name(self) -> &'static str {
        match self {
            Table::Organizations => "organizations",
            Table::Users => "users",
            Table::Templates => "templates",
            Table::Contacts => "contacts",
            Table::ContactTags => "contact_tags",
            Table::Conversations => "conversations",
            Table::Messages => "messages",
            Table::Broadcasts => "broadcasts",
            Table::DripCampaigns => "drip_campaigns",
        }
    }

    fn columns(self) -> &'static str {
        match self {
            Table::Organizations => {
                "id, name, slug, plan, timezone, settings, version, created_at, updated_at"
            }
            Table::Users => {
                "organization_id, user_no, name, email, role, token, locale, created_at"
            }
            Table::Templates => {
                "organization_id, name, category, content, variables, created_by, created_at, updated_at"
            }
            Table::Contacts => {
                "organization_id, name, phone_number, email, tags, created_at, updated_at"
            }
            Table::ContactTags => "organization_id, tag, contact_id",
            Table::Conversations => {
                "organization_id, contact_id, status, assigned_to, message_count, last_message_at, created_at"
            }
            Table::Messages => {
                "organization_id, conversation_id, direction, status, body, created_at"
            }
            Table::Broadcasts => {
                "organization_id, name, template_id, audience_tag, status, scheduled_at, sent_count, created_at"
            }
            Table::DripCampaigns => {
                "organization_id, name, trigger_event, status, steps, enrolled_count, created_at"
            }
        }
    }

    fn insert_sql(self) -> String {
        let placeholders: Vec<String> = (1..=self.columns().split(',').count())
            .map(|n| format!("?{n}"))
            .collect();
        format!(
            "INSERT INTO {} ({}) VALUES ({})",
            self.name(),
            self.columns(),
            placeholders.join(", ")
        )
    }
}

/// Produces the seed data for `config` into `sink`, table by table in the order the ids
/// are counted here.
fn generate(config: &SeedConfig, now: i64, sink: &mut dyn RowSink) -> Result<SeedSummary, DbError> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut summary = SeedSummary {
        organizations: Vec::new(),
        totals: Totals::default(),
        seconds: 0.0,
    };
    let mut next_user_id = 1_i64;
    let mut next_template_id = 1_i64;
    let mut next_contact_id = 1_i64;
    let mut next_conversation_id = 1_i64;
    for k in 1..=config.organizations.max(1) {
        let org_id = i64::from(k);
        let w = weight(k);
        let name = format!(
            "{} {}",
            COMPANY_A[(k as usize - 1) % COMPANY_A.len()],
            COMPANY_B[((k as usize - 1) + (k as usize - 1) / COMPANY_A.len()) % COMPANY_B.len()]
        );
        let slug = name.to_lowercase().replace(' ', "-");
        let plan = match k {
            1..=3 => "enterprise",
            4..=10 => "business",
            _ => "starter",
        };
        let timezone = [
            "America/New_York",
            "Europe/Berlin",
            "Asia/Tokyo",
            "America/Sao_Paulo",
        ][(k as usize) % 4];
        let settings = serde_json::json!({
            "business_hours": {"start": "09:00", "end": "18:00"},
            "auto_reply": k % 2 == 0,
            "locale": "en",
        })
        .to_string();
        let org_created = now - 400 * DAY + i64::from(k) * DAY;
        sink.row(
            Table::Organizations,
            params![
                org_id,
                name,
                slug,
                plan,
                timezone,
                settings,
                1,
                org_created,
                org_created
            ],
        )?;

        // Users.
        let users = users_in_org(k);
        let first_user_id = next_user_id;
        for m in 1..=users {
            let first = FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())];
            let last = LAST_NAMES[rng.random_range(0..LAST_NAMES.len())];
            let role = if m == 1 { "admin" } else { "agent" };
            sink.row(
                Table::Users,
                params![
                    org_id,
                    m,
                    format!("{first} {last}"),
                    format!(
                        "{}.{}{m}@{slug}.example",
                        first.to_lowercase(),
                        last.to_lowercase()
                    ),
                    role,
                    token(org_id, m),
                    ["en", "es", "pt", "de"][rng.random_range(0..4)],
                    org_created,
                ],
            )?;
            next_user_id += 1;
        }
        let pick_user = |rng: &mut StdRng| first_user_id + rng.random_range(0..i64::from(users));

        // Templates.
        let templates = scaled(15.0 + 120.0 * w.sqrt(), config.scale.sqrt(), 8);
        let first_template_id = next_template_id;
        for t in 0..templates {
            let category = CATEGORIES[skewed_index(&mut rng, CATEGORIES.len())];
            let created = now - rng.random_range(0..365 * DAY);
            sink.row(
                Table::Templates,
                params![
                    org_id,
                    format!("{category} template {}", t + 1),
                    category,
                    format!(
                        "Hello {{{{name}}}}, {}",
                        PHRASES[rng.random_range(0..PHRASES.len())]
                    ),
                    r#"["name"]"#,
                    pick_user(&mut rng),
                    created,
                    created,
                ],
            )?;
            next_template_id += 1;
        }

        // Contacts and their tags.
        let contacts = scaled(40_000.0 * w, config.scale, 25);
        let first_contact_id = next_contact_id;
        for _ in 0..contacts {
            let contact_id = next_contact_id;
            let first = FIRST_NAMES[zipf_index(&mut rng, FIRST_NAMES.len())];
            let last = LAST_NAMES[rng.random_range(0..LAST_NAMES.len())];
            let mut tags: Vec<&str> = Vec::new();
            for (i, tag) in TAGS.iter().enumerate() {
                if rng.random_bool(0.45 / (i as f64 + 1.0)) {
                    tags.push(tag);
                }
            }
            let email = if rng.random_bool(0.7) {
                Some(format!(
                    "{}.{}{}@mail.example",
                    first.to_lowercase(),
                    last.to_lowercase(),
                    contact_id
                ))
            } else {
                None
            };
            let phone_number = format!("+1555{:07}", rng.random_range(0..10_000_000));
            let created = now - rng.random_range(DAY..365 * DAY);
            sink.row(
                Table::Contacts,
                params![
                    org_id,
                    format!("{first} {last}"),
                    phone_number,
                    email,
                    serde_json::to_string(&tags).map_err(|e| DbError::Task(e.to_string()))?,
                    created,
                    created,
                ],
            )?;
            for tag in &tags {
                sink.row(Table::ContactTags, params![org_id, tag, contact_id])?;
            }
            next_contact_id += 1;
        }

        // Conversations and messages, spread over the last 120 days.
        let conversations = contacts / 2;
        let mut messages = 0_u32;
        // Larger organizations have longer threads.
        let mean_thread = 6.0 + 9.0 * w.powf(0.25);
        for _ in 0..conversations {
            let conversation_id = next_conversation_id;
            let contact_id = first_contact_id + rng.random_range(0..i64::from(contacts));
            let created = now - rng.random_range(60..120 * DAY);
            let thread = rng.random_range(1..=(2.0 * mean_thread) as u32);
            let mut at = created;
            for i in 0..thread {
                let direction = if i % 2 == 0 || rng.random_bool(0.2) {
                    "inbound"
                } else {
                    "outbound"
                };
                let status = match rng.random_range(0..100) {
                    0..=3 => "failed",
                    4..=40 => "delivered",
                    41..=85 => "read",
                    _ => "sent",
                };
                sink.row(
                    Table::Messages,
                    params![
                        org_id,
                        conversation_id,
                        direction,
                        status,
                        PHRASES[rng.random_range(0..PHRASES.len())],
                        at,
                    ],
                )?;
                at = (at + rng.random_range(30..6 * 3600)).min(now);
            }
            messages += thread;
            let status = match rng.random_range(0..10) {
                0..=5 => "closed",
                6..=8 => "open",
                _ => "pending",
            };
            sink.row(
                Table::Conversations,
                params![
                    org_id,
                    contact_id,
                    status,
                    pick_user(&mut rng),
                    thread,
                    at,
                    created,
                ],
            )?;
            next_conversation_id += 1;
        }

        // Campaigns.
        let broadcasts = scaled(10.0 + 60.0 * w.sqrt(), config.scale.sqrt(), 5);
        for b in 0..broadcasts {
            let status = ["sent", "sent", "scheduled", "draft"][rng.random_range(0..4)];
            let created = now - rng.random_range(DAY..180 * DAY);
            let scheduled = (status != "draft").then(|| created + rng.random_range(0..7 * DAY));
            let sent = if status == "sent" {
                rng.random_range(0..contacts.max(1))
            } else {
                0
            };
            sink.row(
                Table::Broadcasts,
                params![
                    org_id,
                    format!("Broadcast {}", b + 1),
                    first_template_id + rng.random_range(0..i64::from(templates)),
                    TAGS[skewed_index(&mut rng, TAGS.len())],
                    status,
                    scheduled,
                    sent,
                    created,
                ],
            )?;
        }
        let drips = scaled(5.0 + 20.0 * w.sqrt(), config.scale.sqrt(), 3);
        for d in 0..drips {
            let steps: Vec<serde_json::Value> = (0..rng.random_range(2..6))
                .map(|s| {
                    serde_json::json!({
                        "delay_hours": 24 * (s + 1),
                        "template_id": first_template_id + rng.random_range(0..i64::from(templates)),
                    })
                })
                .collect();
            sink.row(
                Table::DripCampaigns,
                params![
                    org_id,
                    format!("Drip {}", d + 1),
                    ["contact_created", "tag_added", "conversation_closed"][rng.random_range(0..3)],
                    ["active", "active", "paused"][rng.random_range(0..3)],
                    serde_json::Value::Array(steps).to_string(),
                    rng.random_range(0..contacts.max(1)),
                    now - rng.random_range(DAY..200 * DAY),
                ],
            )?;
        }

        summary.organizations.push(OrgSummary {
            id: org_id,
            name,
            users,
            first_user_id,
            contacts,
            conversations,
            messages,
        });
        let t = &mut summary.totals;
        t.users += u64::from(users);
        t.templates += u64::from(templates);
        t.contacts += u64::from(contacts);
        t.conversations += u64::from(conversations);
        t.messages += u64::from(messages);
        t.broadcasts += u64::from(broadcasts);
        t.drip_campaigns += u64::from(drips);
    }
    Ok(summary)
}

/// An index in `0..n` where index i has weight 1/(i+1) (Zipf, exponent 1): a few values
/// dominate.
pub fn zipf_index(rng: &mut impl Rng, n: usize) -> usize {
    use rand_distr::{Distribution, Zipf};
    match Zipf::new(n as f64, 1.0) {
        // Samples are 1..=n.
        Ok(zipf) => (zipf.sample(rng) as usize).clamp(1, n) - 1,
        // n == 0: there is nothing to choose.
        Err(_) => 0,
    }
}

/// An index in `0..n` with gently decreasing weights (n, n-1, ..., 1).
fn skewed_index(rng: &mut impl Rng, n: usize) -> usize {
    let total = n * (n + 1) / 2;
    let mut x = rng.random_range(0..total);
    for i in 0..n {
        let w = n - i;
        if x < w {
            return i;
        }
        x -= w;
    }
    n - 1
}

/// Seeds a database shared by several instances once: the first instance to claim it
/// seeds and records the summary; the others wait for that summary and use it. Claiming
/// is one `BEGIN IMMEDIATE` transaction, so two instances started together cannot both
/// seed. A claim whose seeding never finished (the instance died) is reported after
/// `wait`, with what to do.
pub fn seed_shared(
    conn: &mut Connection,
    config: &SeedConfig,
    now: i64,
    wait: std::time::Duration,
) -> Result<SeedSummary, DbError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS demo_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    )?;
    let wanted = format!(
        "seed={} scale={} organizations={}",
        config.seed, config.scale, config.organizations
    );
    let claimed = {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let existing: Option<String> = tx
            .query_row(
                "SELECT value FROM demo_meta WHERE key = 'seeding'",
                [],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(existing) = &existing {
            if *existing != wanted {
                return Err(DbError::Shared(format!(
                    "the shared database was seeded with {existing}, this instance wants {wanted}"
                )));
            }
        } else {
            tx.execute(
                "INSERT INTO demo_meta (key, value) VALUES ('seeding', ?1)",
                [&wanted],
            )?;
        }
        tx.commit()?;
        existing.is_none()
    };
    if claimed {
        let summary = seed(conn, config, now)?;
        let json = serde_json::to_string(&summary)
            .map_err(|err| DbError::Shared(format!("cannot record the seed summary: {err}")))?;
        conn.execute(
            "INSERT INTO demo_meta (key, value) VALUES ('summary', ?1)",
            [&json],
        )?;
        return Ok(summary);
    }
    let deadline = std::time::Instant::now() + wait;
    loop {
        let summary: Option<String> = conn
            .query_row(
                "SELECT value FROM demo_meta WHERE key = 'summary'",
                [],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(json) = summary {
            return serde_json::from_str(&json).map_err(|err| {
                DbError::Shared(format!("the recorded seed summary does not parse: {err}"))
            });
        }
        if std::time::Instant::now() >= deadline {
            return Err(DbError::Shared(format!(
                "another instance claimed the shared database for seeding and has not \
                 finished after {} s; if it died, delete the database file and start again",
                wait.as_secs()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// [`SCHEMA`] in PostgreSQL's types: 64-bit integers throughout, ids from identity
/// columns (assigned 1, 2, ... in load order, as SQLite's rowids are).
fn postgres_schema() -> String {
    SCHEMA
        .replace(" AUTOINCREMENT", "")
        .replace(
            "INTEGER PRIMARY KEY",
            "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        )
        .replace(" WITHOUT ROWID", "")
        .replace("INTEGER", "BIGINT")
}

/// Rows in COPY's text format, one buffer per table: PostgreSQL loads a table sent this
/// way many times faster than row-by-row INSERTs over the socket.
struct CopySink {
    buffers: Vec<Vec<u8>>,
}

impl RowSink for CopySink {
    fn row(&mut self, table: Table, values: &[Value]) -> Result<(), DbError> {
        use std::io::Write;
        let out = &mut self.buffers[table as usize];
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                out.push(b'\t');
            }
            // Writing into a Vec cannot fail.
            let _ = match value {
                Value::Null => out.write_all(b"\\N"),
                Value::Integer(v) => write!(out, "{v}"),
                Value::Real(v) => write!(out, "{v}"),
                Value::Text(text) => {
                    for byte in text.bytes() {
                        match byte {
                            b'\\' => out.extend_from_slice(b"\\\\"),
                            b'\t' => out.extend_from_slice(b"\\t"),
                            b'\n' => out.extend_from_slice(b"\\n"),
                            b'\r' => out.extend_from_slice(b"\\r"),
                            other => out.push(other),
                        }
                    }
                    Ok(())
                }
            };
        }
        out.push(b'\n');
        Ok(())
    }
}

/// [`seed`] on PostgreSQL: the schema, the same rows (generated on the blocking pool,
/// then loaded with COPY) in one transaction, then the indexes. The database must not
/// have the demo's tables yet.
pub(crate) async fn seed_postgres(
    client: &tokio_postgres::Client,
    config: &SeedConfig,
    now: i64,
) -> Result<SeedSummary, DbError> {
    let started = std::time::Instant::now();
    let config = config.clone();
    let (mut summary, buffers) = tokio::task::spawn_blocking(move || {
        let mut sink = CopySink {
            buffers: vec![Vec::new(); Table::ALL.len()],
        };
        generate(&config, now, &mut sink).map(|summary| (summary, sink.buffers))
    })
    .await
    .map_err(|e| DbError::Task(e.to_string()))??;
    client.batch_execute("BEGIN").await?;
    if let Err(err) = load_postgres(client, buffers).await {
        // Leave the session usable (and the database as it was) for whoever reports it.
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(err);
    }
    client.batch_execute("COMMIT").await?;
    client.batch_execute(INDEXES).await?;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The schema and the rows, inside the caller's transaction.
async fn load_postgres(
    client: &tokio_postgres::Client,
    buffers: Vec<Vec<u8>>,
) -> Result<(), DbError> {
    use futures_util::SinkExt;

    client.batch_execute(&postgres_schema()).await?;
    for (table, buffer) in Table::ALL.iter().zip(buffers) {
        let copy = client
            .copy_in(&format!(
                "COPY {} ({}) FROM STDIN",
                table.name(),
                table.columns()
            ))
            .await?;
        let mut copy = std::pin::pin!(copy);
        let mut buffer = bytes::Bytes::from(buffer);
        while !buffer.is_empty() {
            let chunk = buffer.split_to(buffer.len().min(1 << 20));
            copy.send(chunk).await?;
        }
        copy.as_mut().finish().await?;
    }
    // Organizations were given their ids; later inserts must continue after them.
    client
        .batch_execute(
            "SELECT setval(pg_get_serial_sequence('organizations', 'id'), \
             (SELECT MAX(id) FROM organizations))",
        )
        .await?;
    Ok(())
}

/// [`seed_shared`] on PostgreSQL: the claim is made under a transaction-scoped advisory
/// lock, so of several instances started together exactly one seeds; the others poll
/// for its summary for up to `wait`.
pub(crate) async fn seed_shared_postgres(
    client: &tokio_postgres::Client,
    config: &SeedConfig,
    now: i64,
    wait: std::time::Duration,
) -> Result<SeedSummary, DbError> {
    /// Any constant the demo alone uses (`api-cache` in ASCII).
    const CLAIM_LOCK: i64 = 0x6170_692d_6361_6368;
    let wanted = format!(
        "seed={} scale={} organizations={}",
        config.seed, config.scale, config.organizations
    );
    client.batch_execute("BEGIN").await?;
    client
        .execute("SELECT pg_advisory_xact_lock($1)", &[&CLAIM_LOCK])
        .await?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS demo_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        )
        .await?;
    let existing: Option<String> = client
        .query_opt("SELECT value FROM demo_meta WHERE key = 'seeding'", &[])
        .await?
        .map(|row| row.try_get(0))
        .transpose()?;
    match &existing {
        Some(existing) if *existing != wanted => {
            client.batch_execute("ROLLBACK").await?;
            return Err(DbError::Shared(format!(
                "the shared database was seeded with {existing}, this instance wants {wanted}"
            )));
        }
        Some(_) => {}
        None => {
            client
                .execute(
                    "INSERT INTO demo_meta (key, value) VALUES ('seeding', $1)",
                    &[&wanted],
                )
                .await?;
        }
    }
    client.batch_execute("COMMIT").await?;
    if existing.is_none() {
        let summary = match seed_postgres(client, config, now).await {
            Ok(summary) => summary,
            Err(err) => {
                // Release the claim, so that the next instance tries again rather than
                // waiting for a summary that will never come.
                let _ = client
                    .batch_execute("DELETE FROM demo_meta WHERE key = 'seeding'")
                    .await;
                return Err(err);
            }
        };
        let json = serde_json::to_string(&summary)
            .map_err(|err| DbError::Shared(format!("cannot record the seed summary: {err}")))?;
        client
            .execute(
                "INSERT INTO demo_meta (key, value) VALUES ('summary', $1)",
                &[&json],
            )
            .await?;
        return Ok(summary);
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let summary: Option<String> = client
            .query_opt("SELECT value FROM demo_meta WHERE key = 'summary'", &[])
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
        if let Some(json) = summary {
            return serde_json::from_str(&json).map_err(|err| {
                DbError::Shared(format!("the recorded seed summary does not parse: {err}"))
            });
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(DbError::Shared(format!(
                "another instance claimed the shared database for seeding and has not \
                 finished after {} s; if it died, drop the database and start again",
                wait.as_secs()
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The report's read-your-writes check names rows by id: a deleted row's id must not
    /// come back on the next insert, as SQLite's plain rowid would give it.
    #[test]
    fn a_deleted_rows_id_is_never_given_again() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let insert = || {
            conn.execute(
                "INSERT INTO contacts (organization_id, name, phone_number, email, tags, created_at, updated_at)
                 VALUES (1, 'a', '1', NULL, '', 0, 0)",
                [],
            )
            .unwrap();
            conn.last_insert_rowid()
        };
        let first = insert();
        conn.execute("DELETE FROM contacts WHERE id = ?1", [first])
            .unwrap();
        assert_eq!(insert(), first + 1);
        assert!(!postgres_schema().contains("AUTOINCREMENT"));
    }
}
