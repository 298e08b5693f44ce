//! `/api/broadcast` and `/api/drip-campaigns`: rollout priorities 4 and 5, both cached
//! 5 minutes under the `campaigns` preset. Creating either invalidates `campaigns`
//! (both lists, and the dashboard's campaign counts, which are tagged with it). The
//! broadcast list shows its template's name, so it is tagged `templates` too: a template
//! rename or delete must show there.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use cache_runtime::{cached, invalidates, presets};
use serde::{Deserialize, Serialize};

use crate::auth::Auth;
use crate::db::{DbError, Row, Sql};
use crate::error::ApiError;
use crate::extract::{now, optional, required, timestamp, Body, PageParams, Pagination, Params};
use crate::params;
use crate::AppState;

/// A broadcast campaign: one template sent to every contact with a tag.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Broadcast {
    /// Id.
    pub id: i64,
    /// Owning organization.
    pub organization_id: i64,
    /// Name.
    pub name: String,
    /// The template sent.
    pub template_id: Option<i64>,
    /// That template's name.
    pub template_name: Option<String>,
    /// Contacts with this tag receive it (all contacts when absent).
    pub audience_tag: Option<String>,
    /// `draft`, `scheduled` or `sent`.
    pub status: String,
    /// RFC 3339.
    pub scheduled_at: Option<String>,
    /// Messages sent.
    pub sent_count: i64,
    /// RFC 3339.
    pub created_at: String,
}

const BROADCAST_SELECT: &str = "SELECT b.id, b.organization_id, b.name, b.template_id, t.name, b.audience_tag,
        b.status, b.scheduled_at, b.sent_count, b.created_at
     FROM broadcasts b LEFT JOIN templates t ON t.id = b.template_id AND t.organization_id = b.organization_id";

fn broadcast_from_row(row: &Row<'_>) -> Result<Broadcast, DbError> {
    Ok(Broadcast {
        id: row.get(0)?,
        organization_id: row.get(1)?,
        name: row.get(2)?,
        template_id: row.get(3)?,
        template_name: row.get(4)?,
        audience_tag: row.get(5)?,
        status: row.get(6)?,
        scheduled_at: row.get::<Option<i64>>(7)?.map(timestamp),
        sent_count: row.get(8)?,
        created_at: timestamp(row.get(9)?),
    })
}

/// Query of the campaign lists.
#[derive(Debug, Deserialize)]
pub struct CampaignQuery {
    /// Only this status.
    pub status: Option<String>,
    /// `page`, `limit`.
    #[serde(flatten)]
    pub page: PageParams,
}

/// Body of `GET /api/broadcast`.
#[derive(Debug, Serialize, Deserialize)]
pub struct BroadcastPage {
    /// The caller's organization.
    pub organization_id: i64,
    /// Newest first.
    pub broadcasts: Vec<Broadcast>,
    /// Page, limit, total, hasMore.
    pub pagination: Pagination,
}

fn status_filter(raw: Option<String>, allowed: &[&str]) -> Result<Option<String>, ApiError> {
    match raw.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) if allowed.contains(&s.as_str()) => Ok(Some(s)),
        Some(s) => Err(ApiError::field(
            "status",
            format!("must be one of {}, got {s:?}", allowed.join(", ")),
        )),
    }
}

/// `GET /api/broadcast?status=&page=&limit=`
#[cached(resource = "campaigns", ttl = presets::CAMPAIGNS, tags = ["templates"])]
pub async fn list_broadcasts(
    State(app): State<AppState>,
    auth: Auth,
    Params(query): Params<CampaignQuery>,
) -> Result<Json<BroadcastPage>, ApiError> {
    let page = query.page.validate()?;
    let status = status_filter(query.status, &["draft", "scheduled", "sent"])?;
    let org = auth.org_id;
    let (broadcasts, total) = app
        .db
        .read(move |sql| {
            let total = sql.one(
                "SELECT COUNT(*) FROM broadcasts WHERE organization_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR status = ?2)",
                params![org, status],
                |r| r.get(0),
            )?;
            let rows = sql.all(
                &format!(
                    "{BROADCAST_SELECT} WHERE b.organization_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR b.status = ?2)
                     ORDER BY b.id DESC LIMIT ?3 OFFSET ?4"
                ),
                params![org, status, page.limit, page.offset()],
                broadcast_from_row,
            )?;
            Ok((rows, total))
        })
        .await?;
    Ok(Json(BroadcastPage {
        organization_id: org,
        broadcasts,
        pagination: page.describe(total),
    }))
}

/// Body of `POST /api/broadcast`.
#[derive(Debug, Deserialize)]
pub struct NewBroadcast {
    /// Required.
    pub name: Option<String>,
    /// A template of the caller's organization.
    pub template_id: Option<i64>,
    /// A contact tag.
    pub audience_tag: Option<String>,
    /// Unix seconds; makes the broadcast `scheduled` (else `draft`).
    pub scheduled_at: Option<i64>,
}

fn template_exists(sql: &Sql<'_>, org: i64, template: i64) -> Result<bool, DbError> {
    Ok(sql
        .optional(
            "SELECT 1 FROM templates WHERE id = ?1 AND organization_id = ?2",
            params![template, org],
            |_| Ok(()),
        )?
        .is_some())
}

/// `POST /api/broadcast`: 201 with the new broadcast.
///
/// Invalidates `campaigns`: both lists and the dashboard's campaign counts. The template
/// it uses is only read.
#[invalidates("campaigns")]
pub async fn create_broadcast(
    State(app): State<AppState>,
    auth: Auth,
    Body(input): Body<NewBroadcast>,
) -> Result<(StatusCode, Json<Broadcast>), ApiError> {
    let name = required("name", input.name, 200)?;
    let audience_tag = optional("audience_tag", input.audience_tag, 32)?;
    if let Some(at) = input.scheduled_at {
        if at <= 0 {
            return Err(ApiError::field("scheduled_at", "must be unix seconds"));
        }
    }
    let status = if input.scheduled_at.is_some() {
        "scheduled"
    } else {
        "draft"
    };
    let (org, at, template) = (auth.org_id, now(), input.template_id);
    let created = app
        .db
        .write(move |sql| {
            if let Some(template) = template {
                if !template_exists(sql, org, template)? {
                    return Ok(None);
                }
            }
            let id = sql.insert(
                "INSERT INTO broadcasts (organization_id, name, template_id, audience_tag, status, scheduled_at, sent_count, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7)",
                params![org, name, template, audience_tag, status, input.scheduled_at, at],
            )?;
            sql.one(
                &format!("{BROADCAST_SELECT} WHERE b.id = ?1"),
                params![id],
                broadcast_from_row,
            )
            .map(Some)
        })
        .await?;
    match created {
        Some(broadcast) => Ok((StatusCode::CREATED, Json(broadcast))),
        None => Err(ApiError::field(
            "template_id",
            "no such template in your organization",
        )),
    }
}

/// A drip campaign: a sequence of templates sent after a trigger.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DripCampaign {
    /// Id.
    pub id: i64,
    /// Owning organization.
    pub organization_id: i64,
    /// Name.
    pub name: String,
    /// `contact_created`, `tag_added` or `conversation_closed`.
    pub trigger: String,
    /// `active` or `paused`.
    pub status: String,
    /// The sequence.
    pub steps: Vec<DripStep>,
    /// Contacts enrolled.
    pub enrolled_count: i64,
    /// RFC 3339.
    pub created_at: String,
}

/// One step of a drip campaign.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DripStep {
    /// Hours after the trigger.
    pub delay_hours: u32,
    /// Template sent.
    pub template_id: i64,
}

const DRIP_COLUMNS: &str =
    "id, organization_id, name, trigger_event, status, steps, enrolled_count, created_at";

fn drip_from_row(row: &Row<'_>) -> Result<DripCampaign, DbError> {
    Ok(DripCampaign {
        id: row.get(0)?,
        organization_id: row.get(1)?,
        name: row.get(2)?,
        trigger: row.get(3)?,
        status: row.get(4)?,
        steps: serde_json::from_str(&row.get::<String>(5)?).unwrap_or_default(),
        enrolled_count: row.get(6)?,
        created_at: timestamp(row.get(7)?),
    })
}

/// Body of `GET /api/drip-campaigns`.
#[derive(Debug, Serialize, Deserialize)]
pub struct DripPage {
    /// The caller's organization.
    pub organization_id: i64,
    /// Newest first.
    pub drip_campaigns: Vec<DripCampaign>,
    /// Page, limit, total, hasMore.
    pub pagination: Pagination,
}

/// `GET /api/drip-campaigns?status=&page=&limit=`
#[cached(resource = "campaigns", ttl = presets::CAMPAIGNS)]
pub async fn list_drips(
    State(app): State<AppState>,
    auth: Auth,
    Params(query): Params<CampaignQuery>,
) -> Result<Json<DripPage>, ApiError> {
    let page = query.page.validate()?;
    let status = status_filter(query.status, &["active", "paused"])?;
    let org = auth.org_id;
    let (drip_campaigns, total) = app
        .db
        .read(move |sql| {
            let total = sql.one(
                "SELECT COUNT(*) FROM drip_campaigns WHERE organization_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR status = ?2)",
                params![org, status],
                |r| r.get(0),
            )?;
            let rows = sql.all(
                &format!(
                    "SELECT {DRIP_COLUMNS} FROM drip_campaigns WHERE organization_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR status = ?2)
                     ORDER BY id DESC LIMIT ?3 OFFSET ?4"
                ),
                params![org, status, page.limit, page.offset()],
                drip_from_row,
            )?;
            Ok((rows, total))
        })
        .await?;
    Ok(Json(DripPage {
        organization_id: org,
        drip_campaigns,
        pagination: page.describe(total),
    }))
}

/// Body of `POST /api/drip-campaigns`.
#[derive(Debug, Deserialize)]
pub struct NewDrip {
    /// Required.
    pub name: Option<String>,
    /// Default `contact_created`.
    pub trigger: Option<String>,
    /// At most 10 steps, templates of the caller's organization.
    pub steps: Option<Vec<DripStep>>,
}

const TRIGGERS: [&str; 3] = ["contact_created", "tag_added", "conversation_closed"];

/// `POST /api/drip-campaigns`: 201 with the new campaign (active).
///
/// Invalidates `campaigns`: both lists and the dashboard's campaign counts. Its steps'
/// templates are only read.
#[invalidates("campaigns")]
pub async fn create_drip(
    State(app): State<AppState>,
    auth: Auth,
    Body(input): Body<NewDrip>,
) -> Result<(StatusCode, Json<DripCampaign>), ApiError> {
    let name = required("name", input.name, 200)?;
    let trigger = match optional("trigger", input.trigger, 32)? {
        None => TRIGGERS[0].to_owned(),
        Some(t) if TRIGGERS.contains(&t.as_str()) => t,
        Some(t) => {
            return Err(ApiError::field(
                "trigger",
                format!("must be one of {}, got {t:?}", TRIGGERS.join(", ")),
            ))
        }
    };
    let steps = input.steps.unwrap_or_default();
    if steps.len() > 10 {
        return Err(ApiError::field("steps", "at most 10 steps"));
    }
    let steps_json =
        serde_json::to_string(&steps).map_err(|e| ApiError::field("steps", e.to_string()))?;
    let (org, at) = (auth.org_id, now());
    let created = app
        .db
        .write(move |sql| {
            for step in &steps {
                if !template_exists(sql, org, step.template_id)? {
                    return Ok(None);
                }
            }
            sql.one(
                &format!(
                    "INSERT INTO drip_campaigns (organization_id, name, trigger_event, status, steps, enrolled_count, created_at)
                     VALUES (?1, ?2, ?3, 'active', ?4, 0, ?5) RETURNING {DRIP_COLUMNS}"
                ),
                params![org, name, trigger, steps_json, at],
                drip_from_row,
            )
            .map(Some)
        })
        .await?;
    match created {
        Some(drip) => Ok((StatusCode::CREATED, Json(drip))),
        None => Err(ApiError::field(
            "steps",
            "a step names no template of your organization",
        )),
    }
}
