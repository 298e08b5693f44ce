//! `/api/analytics/dashboard`: the organization's messaging dashboard, a real
//! aggregation over messages, conversations, contacts and campaigns (eleven queries
//! uncached, five of them scanning every message in the range: hundreds of milliseconds
//! for the largest organization, as in production). Rollout priority 3, cached 10
//! minutes (the `analytics` preset).
//!
//! The route is composed of cached parts, each a plain `#[cached]` function (resource
//! `analytics`) tagged with exactly the data it reads, so that a write whose
//! `#[invalidates]` names only the data it changed (not `analytics`, which would drop
//! every part) recomputes only that: a new contact costs a `COUNT` and the busiest
//! contacts' names (one lookup by id) on the next dashboard miss, a new broadcast two
//! campaign counts, and only message writes (a new
//! conversation's first message, a deleted contact's history) rescan the messages. The
//! route itself is tagged with the union of its parts' tags, so the first read after any
//! of those writes composes a fresh dashboard (read-your-writes); its miss costs only the
//! queries of the parts that were invalidated. The parts run in the request's cache (the
//! one `#[cached]` runs its handler in, `Cache::current`), so a report run with the cache
//! off computes them uncached too, and each run's invalidations reach its own parts.

use axum::extract::State;
use axum::Json;
use cache_runtime::{cached, presets};
use serde::{Deserialize, Serialize};

use crate::auth::Auth;
use crate::db::{Db, DbError, Value};
use crate::error::ApiError;
use crate::extract::{civil_from_days, now, timestamp, Params};
use crate::params;
use crate::AppState;

/// Query of the dashboard.
#[derive(Debug, Deserialize)]
pub struct DashboardQuery {
    /// `7d` (default), `30d` or `90d`.
    pub range: Option<String>,
}

/// The dashboard.
#[derive(Debug, Serialize, Deserialize)]
pub struct Dashboard {
    /// The caller's organization.
    pub organization_id: i64,
    /// The range asked for.
    pub range: String,
    /// When it was computed (RFC 3339).
    pub generated_at: String,
    /// Message totals over the range.
    pub messages: MessageTotals,
    /// Conversations started in the range, by status.
    pub conversations: ConversationTotals,
    /// Contacts.
    pub contacts: ContactTotals,
    /// Campaigns.
    pub campaigns: CampaignTotals,
    /// Messages per day.
    pub daily: Vec<DailyPoint>,
    /// The three busiest hours of the day (UTC) in the range.
    pub busiest_hours: Vec<HourCount>,
    /// The five contacts with the most messages in the range.
    pub top_contacts: Vec<TopContact>,
    /// Id of the newest conversation (a cheap freshness marker).
    pub latest_conversation_id: Option<i64>,
}

/// Message totals.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct MessageTotals {
    /// All messages.
    pub total: i64,
    /// Received.
    pub inbound: i64,
    /// Sent.
    pub outbound: i64,
    /// Read by the contact.
    pub read: i64,
    /// Failed to deliver.
    pub failed: i64,
    /// Share of conversations with inbound messages that got a reply, 0-1.
    pub response_rate: f64,
}

/// Conversation totals.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ConversationTotals {
    /// Started in the range.
    pub started: i64,
    /// Of which open.
    pub open: i64,
    /// Of which pending.
    pub pending: i64,
    /// Of which closed.
    pub closed: i64,
}

/// Contact totals.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ContactTotals {
    /// All contacts.
    pub total: i64,
    /// Created in the range.
    pub new_in_range: i64,
}

/// Campaign totals.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CampaignTotals {
    /// Broadcasts.
    pub broadcasts: i64,
    /// Broadcasts already sent.
    pub broadcasts_sent: i64,
    /// Messages sent by broadcasts.
    pub broadcast_recipients: i64,
    /// Drip campaigns.
    pub drip_campaigns: i64,
    /// Active drip campaigns.
    pub drips_active: i64,
}

/// Messages of one day.
#[derive(Debug, Serialize, Deserialize)]
pub struct DailyPoint {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Received.
    pub inbound: i64,
    /// Sent.
    pub outbound: i64,
}

/// Messages in one hour of the day.
#[derive(Debug, Serialize, Deserialize)]
pub struct HourCount {
    /// 0-23, UTC.
    pub hour: i64,
    /// Messages.
    pub messages: i64,
}

/// A contact with many messages.
#[derive(Debug, Serialize, Deserialize)]
pub struct TopContact {
    /// Contact id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Messages in the range.
    pub messages: i64,
}

fn range_days(raw: Option<&str>) -> Result<(String, i64), ApiError> {
    match raw.map(str::trim).filter(|r| !r.is_empty()).unwrap_or("7d") {
        "7d" => Ok(("7d".into(), 7)),
        "30d" => Ok(("30d".into(), 30)),
        "90d" => Ok(("90d".into(), 90)),
        other => Err(ApiError::field(
            "range",
            format!("must be 7d, 30d or 90d, got {other:?}"),
        )),
    }
}

/// The message-derived part of the dashboard: totals, response rate, messages per day,
/// busiest hours, and the busiest contacts by id (their names are a contact-derived part).
#[derive(Debug, Serialize, Deserialize)]
pub struct MessageActivity {
    /// Totals over the range.
    pub totals: MessageTotals,
    /// Messages per day.
    pub daily: Vec<DailyPoint>,
    /// The three busiest hours of the day (UTC).
    pub busiest_hours: Vec<HourCount>,
    /// The five contacts with the most messages: `(contact id, messages)`.
    pub top_contacts: Vec<(i64, i64)>,
}

/// The conversation-derived part of the dashboard.
#[derive(Debug, Serialize, Deserialize)]
pub struct ConversationActivity {
    /// Conversations started in the range, by status.
    pub totals: ConversationTotals,
    /// Id of the newest conversation.
    pub latest_conversation_id: Option<i64>,
}

/// Messages in the last `days` days: five queries, each scanning every message of the
/// range, the dashboard's expensive part. Tagged `messages` only: it reads the messages
/// table and, for the top contacts, `conversations.contact_id`, which no write changes
/// without also adding or deleting messages (a new conversation comes with its first
/// message, a deleted contact takes its conversations and messages with it), and both
/// writes invalidate `messages`. Contact names are not read here, so a rename keeps it.
#[cached(resource = "analytics", ttl = 600, key = (org_id, days), scope = org_id, tags = ["messages"])]
pub async fn message_activity(db: &Db, org_id: i64, days: i64) -> Result<MessageActivity, DbError> {
    let since = now() - days * 86_400;
    db.read(move |sql| {
        let mut totals = sql.one(
            "SELECT COUNT(*), COUNT(CASE WHEN direction = 'inbound' THEN 1 END), COUNT(CASE WHEN direction = 'outbound' THEN 1 END),
                    COUNT(CASE WHEN status = 'read' THEN 1 END), COUNT(CASE WHEN status = 'failed' THEN 1 END)
             FROM messages WHERE organization_id = ?1 AND created_at >= ?2",
            params![org_id, since],
            |r| {
                Ok(MessageTotals {
                    total: r.get(0)?,
                    inbound: r.get(1)?,
                    outbound: r.get(2)?,
                    read: r.get(3)?,
                    failed: r.get(4)?,
                    response_rate: 0.0,
                })
            },
        )?;
        let (asked, answered): (i64, i64) = sql.one(
            "SELECT COUNT(*), COALESCE(SUM(replied), 0) FROM (
               SELECT conversation_id, MAX(CASE WHEN direction = 'outbound' THEN 1 ELSE 0 END) AS replied
               FROM messages WHERE organization_id = ?1 AND created_at >= ?2
               GROUP BY conversation_id HAVING MAX(CASE WHEN direction = 'inbound' THEN 1 ELSE 0 END) = 1
             ) AS threads",
            params![org_id, since],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if asked > 0 {
            totals.response_rate = (answered as f64 / asked as f64 * 1000.0).round() / 1000.0;
        }
        let daily = sql.all(
            "SELECT created_at / 86400 AS day, COUNT(CASE WHEN direction = 'inbound' THEN 1 END), COUNT(CASE WHEN direction = 'outbound' THEN 1 END)
             FROM messages WHERE organization_id = ?1 AND created_at >= ?2
             GROUP BY day ORDER BY day",
            params![org_id, since],
            |r| {
                let (y, m, d) = civil_from_days(r.get(0)?);
                Ok(DailyPoint {
                    date: format!("{y:04}-{m:02}-{d:02}"),
                    inbound: r.get(1)?,
                    outbound: r.get(2)?,
                })
            },
        )?;
        let busiest_hours = sql.all(
            "SELECT (created_at / 3600) % 24 AS hour, COUNT(*) AS n
             FROM messages WHERE organization_id = ?1 AND created_at >= ?2
             GROUP BY hour ORDER BY n DESC, hour LIMIT 3",
            params![org_id, since],
            |r| {
                Ok(HourCount {
                    hour: r.get(0)?,
                    messages: r.get(1)?,
                })
            },
        )?;
        let top_contacts = sql.all(
            "SELECT cv.contact_id, COUNT(*) AS n
             FROM messages m JOIN conversations cv ON cv.id = m.conversation_id
             WHERE m.organization_id = ?1 AND m.created_at >= ?2
             GROUP BY cv.contact_id ORDER BY n DESC, cv.contact_id LIMIT 5",
            params![org_id, since],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(MessageActivity {
            totals,
            daily,
            busiest_hours,
            top_contacts,
        })
    })
    .await
}

/// Names of the busiest contacts: one lookup by primary key, tagged `contacts` (a rename
/// or a delete must show). Keyed by the ids, so new busiest contacts are a new entry.
#[cached(resource = "analytics", ttl = 600, key = (org_id, ids), scope = org_id, tags = ["contacts"])]
pub async fn contact_names(
    db: &Db,
    org_id: i64,
    ids: Vec<i64>,
) -> Result<Vec<(i64, String)>, DbError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders = vec!["?"; ids.len()].join(", ");
    let mut args = vec![Value::Integer(org_id)];
    args.extend(ids.into_iter().map(Value::Integer));
    db.read(move |sql| {
        sql.all(
            &format!(
                "SELECT id, name FROM contacts WHERE organization_id = ? AND id IN ({placeholders})"
            ),
            &args,
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    })
    .await
}

/// Conversations started in the last `days` days and the newest one: tagged
/// `conversations` (a new conversation must show, as its id is the report's freshness
/// check). It reads no contact data.
#[cached(resource = "analytics", ttl = 600, key = (org_id, days), scope = org_id, tags = ["conversations"])]
pub async fn conversation_activity(
    db: &Db,
    org_id: i64,
    days: i64,
) -> Result<ConversationActivity, DbError> {
    let since = now() - days * 86_400;
    db.read(move |sql| {
        let totals = sql.one(
            "SELECT COUNT(*), COUNT(CASE WHEN status = 'open' THEN 1 END), COUNT(CASE WHEN status = 'pending' THEN 1 END),
                    COUNT(CASE WHEN status = 'closed' THEN 1 END)
             FROM conversations WHERE organization_id = ?1 AND created_at >= ?2",
            params![org_id, since],
            |r| {
                Ok(ConversationTotals {
                    started: r.get(0)?,
                    open: r.get(1)?,
                    pending: r.get(2)?,
                    closed: r.get(3)?,
                })
            },
        )?;
        let latest_conversation_id = sql.one(
            "SELECT MAX(id) FROM conversations WHERE organization_id = ?1",
            params![org_id],
            |r| r.get(0),
        )?;
        Ok(ConversationActivity {
            totals,
            latest_conversation_id,
        })
    })
    .await
}

/// Contacts in all and created in the last `days` days: one `COUNT`, tagged `contacts`.
#[cached(resource = "analytics", ttl = 600, key = (org_id, days), scope = org_id, tags = ["contacts"])]
pub async fn contact_totals(db: &Db, org_id: i64, days: i64) -> Result<ContactTotals, DbError> {
    let since = now() - days * 86_400;
    db.read(move |sql| {
        sql.one(
            "SELECT COUNT(*), COUNT(CASE WHEN created_at >= ?2 THEN 1 END) FROM contacts WHERE organization_id = ?1",
            params![org_id, since],
            |r| {
                Ok(ContactTotals {
                    total: r.get(0)?,
                    new_in_range: r.get(1)?,
                })
            },
        )
    })
    .await
}

/// Broadcast and drip campaign counts (they do not depend on the range): tagged
/// `campaigns`.
#[cached(resource = "analytics", ttl = 600, key = (org_id), scope = org_id, tags = ["campaigns"])]
pub async fn campaign_totals(db: &Db, org_id: i64) -> Result<CampaignTotals, DbError> {
    db.read(move |sql| {
        let (broadcasts, broadcasts_sent, broadcast_recipients) = sql.one(
            "SELECT COUNT(*), COUNT(CASE WHEN status = 'sent' THEN 1 END), COALESCE(SUM(sent_count), 0)
             FROM broadcasts WHERE organization_id = ?1",
            params![org_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let (drip_campaigns, drips_active) = sql.one(
            "SELECT COUNT(*), COUNT(CASE WHEN status = 'active' THEN 1 END) FROM drip_campaigns WHERE organization_id = ?1",
            params![org_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(CampaignTotals {
            broadcasts,
            broadcasts_sent,
            broadcast_recipients,
            drip_campaigns,
            drips_active,
        })
    })
    .await
}

/// `GET /api/analytics/dashboard?range=7d|30d|90d`: composed from the cached parts
/// above. Tagged with every part's tags, so any write a part depends on also drops the
/// composed response. `generated_at` is the time of computing: shadow runs and
/// verification compare the rest.
///
/// It declares itself bounded (`stale_after_invalidation = 30`): after a write it may be
/// answered from the previous entry (`X-Cache: STALE`) for at most 30 seconds while one
/// request recomputes it. A dashboard of 7-, 30- and 90-day aggregates does not change
/// meaningfully with one new contact or message, and it is the one route that most
/// writes drop (contacts, conversations, messages and campaigns all feed it) and the
/// most expensive to recompute: strict, it is recomputed after nearly every write of its
/// organization; bounded, the writes of 15 seconds share one recomputation, and nobody
/// waits for it. A user who just created a conversation sees it counted within 30 s
/// (the report measures it). The lists stay strict: a user expects their own new row.
#[cached(
    resource = "analytics",
    ttl = presets::ANALYTICS,
    tags = ["contacts", "conversations", "messages", "campaigns"],
    verify_ignore = ["generated_at"],
    stale_after_invalidation = 30
)]
pub async fn dashboard(
    State(app): State<AppState>,
    auth: Auth,
    Params(query): Params<DashboardQuery>,
) -> Result<Json<Dashboard>, ApiError> {
    let (range, days) = range_days(query.range.as_deref())?;
    let org = auth.org_id;
    let at = now();
    let db = &app.db;
    let messages_and_names = async {
        let activity = Box::pin(message_activity(db, org, days)).await?;
        let ids = activity.top_contacts.iter().map(|(id, _)| *id).collect();
        let names = Box::pin(contact_names(db, org, ids)).await?;
        Ok::<_, DbError>((activity, names))
    };
    // The parts run concurrently. Each cached call is a large future (its lookup, single
    // flight and store); boxed, the handler's own future stays small enough for a
    // worker thread's stack in a debug build, where four of them inline overflow it.
    let ((activity, names), conversations, contacts, campaigns) = tokio::try_join!(
        Box::pin(messages_and_names),
        Box::pin(conversation_activity(db, org, days)),
        Box::pin(contact_totals(db, org, days)),
        Box::pin(campaign_totals(db, org)),
    )?;
    // A busiest contact missing from the names was deleted after the messages were
    // counted (its messages went with it): leave it out rather than show it nameless.
    let top_contacts = activity
        .top_contacts
        .iter()
        .filter_map(|&(id, messages)| {
            let (_, name) = names.iter().find(|(named, _)| *named == id)?;
            Some(TopContact {
                id,
                name: name.clone(),
                messages,
            })
        })
        .collect();
    Ok(Json(Dashboard {
        organization_id: org,
        range,
        generated_at: timestamp(at),
        messages: activity.totals,
        conversations: conversations.totals,
        contacts,
        campaigns,
        daily: activity.daily,
        busiest_hours: activity.busiest_hours,
        top_contacts,
        latest_conversation_id: conversations.latest_conversation_id,
    }))
}
