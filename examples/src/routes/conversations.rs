//! `/api/conversations`: the inbox. Rollout priority 6; it changes all the time, so it
//! is cached only 30 seconds (the `conversations` preset). It shows each conversation's
//! contact name, so a contact rename invalidates it too.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use cache_runtime::{cached, invalidates, presets};
use serde::{Deserialize, Serialize};

use crate::auth::Auth;
use crate::db::{DbError, Row};
use crate::error::ApiError;
use crate::extract::{now, optional, timestamp, Body, PageParams, Pagination, Params};
use crate::params;
use crate::AppState;

/// A conversation with a contact.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Conversation {
    /// Id.
    pub id: i64,
    /// Owning organization.
    pub organization_id: i64,
    /// The contact.
    pub contact_id: i64,
    /// The contact's name.
    pub contact_name: String,
    /// `open`, `pending` or `closed`.
    pub status: String,
    /// The user handling it.
    pub assigned_to: Option<i64>,
    /// Messages so far.
    pub message_count: i64,
    /// RFC 3339.
    pub last_message_at: String,
    /// RFC 3339.
    pub created_at: String,
}

const SELECT: &str =
    "SELECT cv.id, cv.organization_id, cv.contact_id, c.name, cv.status, cv.assigned_to,
        cv.message_count, cv.last_message_at, cv.created_at
     FROM conversations cv JOIN contacts c ON c.id = cv.contact_id";

fn conversation_from_row(row: &Row<'_>) -> Result<Conversation, DbError> {
    Ok(Conversation {
        id: row.get(0)?,
        organization_id: row.get(1)?,
        contact_id: row.get(2)?,
        contact_name: row.get(3)?,
        status: row.get(4)?,
        assigned_to: row.get(5)?,
        message_count: row.get(6)?,
        last_message_at: timestamp(row.get(7)?),
        created_at: timestamp(row.get(8)?),
    })
}

/// Query of `GET /api/conversations`.
#[derive(Debug, Deserialize)]
pub struct ConversationQuery {
    /// `open`, `pending` or `closed`.
    pub status: Option<String>,
    /// `page`, `limit`.
    #[serde(flatten)]
    pub page: PageParams,
}

/// Body of `GET /api/conversations`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ConversationPage {
    /// The caller's organization.
    pub organization_id: i64,
    /// Newest first.
    pub conversations: Vec<Conversation>,
    /// Page, limit, total, hasMore.
    pub pagination: Pagination,
}

const STATUSES: [&str; 3] = ["open", "pending", "closed"];

/// `GET /api/conversations?status=&page=&limit=`
#[cached(resource = "conversations", ttl = presets::CONVERSATIONS)]
pub async fn list_conversations(
    State(app): State<AppState>,
    auth: Auth,
    Params(query): Params<ConversationQuery>,
) -> Result<Json<ConversationPage>, ApiError> {
    let page = query.page.validate()?;
    let status = match query
        .status
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
    {
        None => None,
        Some(s) if STATUSES.contains(&s.as_str()) => Some(s),
        Some(s) => {
            return Err(ApiError::field(
                "status",
                format!("must be open, pending or closed, got {s:?}"),
            ))
        }
    };
    let org = auth.org_id;
    let (conversations, total) = app
        .db
        .read(move |sql| {
            let total = sql.one(
                "SELECT COUNT(*) FROM conversations WHERE organization_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR status = ?2)",
                params![org, status],
                |r| r.get(0),
            )?;
            let rows = sql.all(
                &format!(
                    "{SELECT} WHERE cv.organization_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR cv.status = ?2)
                     ORDER BY cv.id DESC LIMIT ?3 OFFSET ?4"
                ),
                params![org, status, page.limit, page.offset()],
                conversation_from_row,
            )?;
            Ok((rows, total))
        })
        .await?;
    Ok(Json(ConversationPage {
        organization_id: org,
        conversations,
        pagination: page.describe(total),
    }))
}

/// Body of `POST /api/conversations`.
#[derive(Debug, Deserialize)]
pub struct NewConversation {
    /// Required: a contact of the caller's organization.
    pub contact_id: Option<i64>,
    /// A first outbound message.
    pub message: Option<String>,
}

/// `POST /api/conversations`: 201 with the new conversation, assigned to the caller.
///
/// Invalidates `conversations` (the inbox; the dashboard's conversation totals and
/// newest conversation) and `messages` (the first message enters the dashboard's message
/// aggregates). The contact is only read: contacts and their count stay cached.
#[invalidates("conversations", "messages")]
pub async fn create_conversation(
    State(app): State<AppState>,
    auth: Auth,
    Body(input): Body<NewConversation>,
) -> Result<(StatusCode, Json<Conversation>), ApiError> {
    let contact = input
        .contact_id
        .ok_or_else(|| ApiError::field("contact_id", "is required"))?;
    let message = optional("message", input.message, 1000)?;
    let (org, user, at) = (auth.org_id, auth.user_id, now());
    let created = app
        .db
        .write(move |sql| {
            let known = sql.optional(
                "SELECT 1 FROM contacts WHERE id = ?1 AND organization_id = ?2",
                params![contact, org],
                |_| Ok(()),
            )?;
            if known.is_none() {
                return Ok(None);
            }
            let id = sql.insert(
                "INSERT INTO conversations (organization_id, contact_id, status, assigned_to, message_count, last_message_at, created_at)
                 VALUES (?1, ?2, 'open', ?3, ?4, ?5, ?5)",
                params![org, contact, user, i64::from(message.is_some()), at],
            )?;
            if let Some(body) = &message {
                sql.execute(
                    "INSERT INTO messages (organization_id, conversation_id, direction, status, body, created_at)
                     VALUES (?1, ?2, 'outbound', 'sent', ?3, ?4)",
                    params![org, id, body, at],
                )?;
            }
            sql.one(
                &format!("{SELECT} WHERE cv.id = ?1"),
                params![id],
                conversation_from_row,
            )
            .map(Some)
        })
        .await?;
    match created {
        Some(conversation) => Ok((StatusCode::CREATED, Json(conversation))),
        None => Err(ApiError::field(
            "contact_id",
            "no such contact in your organization",
        )),
    }
}
