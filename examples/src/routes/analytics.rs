//! `/api/analytics/dashboard`: the organization's messaging dashboard, a real
//! aggregation over messages, conversations, contacts and campaigns (about ten queries,
//! scanning every message in the range: hundreds of milliseconds for the largest
//! organization, as in production). Rollout priority 3, cached 10 minutes (the
//! `analytics` preset). It is built from several resources, so it is tagged with them:
//! a change to contacts, conversations or campaigns drops it too.

use axum::extract::State;
use axum::Json;
use cache_runtime::cached;
use rusqlite::params;
use serde::{Deserialize, Serialize};

use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::{civil_from_days, now, timestamp, Params};
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

/// `GET /api/analytics/dashboard?range=7d|30d|90d`
#[cached(resource = "analytics", tags = ["contacts", "conversations", "campaigns"])]
pub async fn dashboard(
    State(app): State<AppState>,
    auth: Auth,
    Params(query): Params<DashboardQuery>,
) -> Result<Json<Dashboard>, ApiError> {
    let (range, days) = range_days(query.range.as_deref())?;
    let org = auth.org_id;
    let at = now();
    let since = at - days * 86_400;
    let dashboard = app
        .db
        .read(move |sql| {
            let mut messages = sql.one(
                "SELECT COUNT(*), COALESCE(SUM(direction = 'inbound'), 0), COALESCE(SUM(direction = 'outbound'), 0),
                        COALESCE(SUM(status = 'read'), 0), COALESCE(SUM(status = 'failed'), 0)
                 FROM messages WHERE organization_id = ?1 AND created_at >= ?2",
                params![org, since],
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
                   SELECT conversation_id, MAX(direction = 'outbound') AS replied
                   FROM messages WHERE organization_id = ?1 AND created_at >= ?2
                   GROUP BY conversation_id HAVING MAX(direction = 'inbound') = 1)",
                params![org, since],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if asked > 0 {
                messages.response_rate = (answered as f64 / asked as f64 * 1000.0).round() / 1000.0;
            }
            let daily = sql.all(
                "SELECT created_at / 86400 AS day, SUM(direction = 'inbound'), SUM(direction = 'outbound')
                 FROM messages WHERE organization_id = ?1 AND created_at >= ?2
                 GROUP BY day ORDER BY day",
                params![org, since],
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
                params![org, since],
                |r| {
                    Ok(HourCount {
                        hour: r.get(0)?,
                        messages: r.get(1)?,
                    })
                },
            )?;
            let top_contacts = sql.all(
                "SELECT c.id, c.name, COUNT(*) AS n
                 FROM messages m JOIN conversations cv ON cv.id = m.conversation_id
                 JOIN contacts c ON c.id = cv.contact_id
                 WHERE m.organization_id = ?1 AND m.created_at >= ?2
                 GROUP BY c.id ORDER BY n DESC, c.id LIMIT 5",
                params![org, since],
                |r| {
                    Ok(TopContact {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        messages: r.get(2)?,
                    })
                },
            )?;
            let conversations = sql.one(
                "SELECT COUNT(*), COALESCE(SUM(status = 'open'), 0), COALESCE(SUM(status = 'pending'), 0),
                        COALESCE(SUM(status = 'closed'), 0)
                 FROM conversations WHERE organization_id = ?1 AND created_at >= ?2",
                params![org, since],
                |r| {
                    Ok(ConversationTotals {
                        started: r.get(0)?,
                        open: r.get(1)?,
                        pending: r.get(2)?,
                        closed: r.get(3)?,
                    })
                },
            )?;
            let contacts = sql.one(
                "SELECT COUNT(*), COALESCE(SUM(created_at >= ?2), 0) FROM contacts WHERE organization_id = ?1",
                params![org, since],
                |r| {
                    Ok(ContactTotals {
                        total: r.get(0)?,
                        new_in_range: r.get(1)?,
                    })
                },
            )?;
            let (broadcasts, broadcasts_sent, broadcast_recipients) = sql.one(
                "SELECT COUNT(*), COALESCE(SUM(status = 'sent'), 0), COALESCE(SUM(sent_count), 0)
                 FROM broadcasts WHERE organization_id = ?1",
                params![org],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let (drip_campaigns, drips_active) = sql.one(
                "SELECT COUNT(*), COALESCE(SUM(status = 'active'), 0) FROM drip_campaigns WHERE organization_id = ?1",
                params![org],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let latest_conversation_id = sql.one(
                "SELECT MAX(id) FROM conversations WHERE organization_id = ?1",
                params![org],
                |r| r.get(0),
            )?;
            Ok(Dashboard {
                organization_id: org,
                range,
                generated_at: timestamp(at),
                messages,
                conversations,
                contacts,
                campaigns: CampaignTotals {
                    broadcasts,
                    broadcasts_sent,
                    broadcast_recipients,
                    drip_campaigns,
                    drips_active,
                },
                daily,
                busiest_hours,
                top_contacts,
                latest_conversation_id,
            })
        })
        .await?;
    Ok(Json(dashboard))
}
