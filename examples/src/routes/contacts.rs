//! `/api/contacts`: contacts with search, tags and pagination. Rollout priority 2,
//! cached 5 minutes (the `contacts` preset). Each mutation invalidates what it changes,
//! no more: `contacts` always; `conversations` when conversations show the change (the
//! inbox shows contact names); `messages` when messages go. The dashboard and its parts
//! are tagged with what they read, so they need no `analytics` here: naming it would
//! drop every part of the dashboard, the message scans among them, on each contact write.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use cache_runtime::{cached, invalidates, presets};
use serde::{Deserialize, Serialize};

use crate::auth::Auth;
use crate::db::{DbError, Row, Sql, Value};
use crate::error::ApiError;
use crate::extract::{
    now, optional, required, timestamp, Body, Id, PageParams, Pagination, Params,
};
use crate::params;
use crate::routes::Deleted;
use crate::AppState;

/// A contact.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Contact {
    /// Id.
    pub id: i64,
    /// Owning organization.
    pub organization_id: i64,
    /// Full name.
    pub name: String,
    /// Phone number, `+` and digits.
    pub phone_number: String,
    /// Email, if known.
    pub email: Option<String>,
    /// Tags such as `vip` or `lead`.
    pub tags: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

const COLUMNS: &str =
    "c.id, c.organization_id, c.name, c.phone_number, c.email, c.tags, c.created_at, c.updated_at";
const RETURNING: &str =
    "id, organization_id, name, phone_number, email, tags, created_at, updated_at";

fn contact_from_row(row: &Row<'_>) -> Result<Contact, DbError> {
    Ok(Contact {
        id: row.get(0)?,
        organization_id: row.get(1)?,
        name: row.get(2)?,
        phone_number: row.get(3)?,
        email: row.get(4)?,
        tags: serde_json::from_str(&row.get::<String>(5)?).unwrap_or_default(),
        created_at: timestamp(row.get(6)?),
        updated_at: timestamp(row.get(7)?),
    })
}

/// Query of `GET /api/contacts`.
#[derive(Debug, Deserialize)]
pub struct ContactQuery {
    /// Substring of the name or phone number (case-insensitive).
    pub search: Option<String>,
    /// Comma-separated tags: contacts with any of them.
    pub tags: Option<String>,
    /// `page`, `limit`.
    #[serde(flatten)]
    pub page: PageParams,
}

/// Body of `GET /api/contacts`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ContactPage {
    /// The caller's organization.
    pub organization_id: i64,
    /// Newest first.
    pub contacts: Vec<Contact>,
    /// Page, limit, total, hasMore.
    pub pagination: Pagination,
}

const MAX_TAGS: usize = 10;

fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 32
        && tag
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn parse_tag_list(raw: Option<String>) -> Result<Vec<String>, ApiError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let tags: Vec<String> = raw
        .split(',')
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    check_tags(tags)
}

fn check_tags(tags: Vec<String>) -> Result<Vec<String>, ApiError> {
    if tags.len() > MAX_TAGS || !tags.iter().all(|t| valid_tag(t)) {
        return Err(ApiError::field(
            "tags",
            format!("at most {MAX_TAGS} tags of 1-32 characters a-z, 0-9, '_' or '-'"),
        ));
    }
    Ok(tags)
}

fn like_pattern(search: &str) -> String {
    let mut pattern = String::with_capacity(search.len() + 2);
    pattern.push('%');
    for c in search.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// `GET /api/contacts?search=&tags=a,b&page=&limit=`
#[cached(resource = "contacts", ttl = presets::CONTACTS)]
pub async fn list_contacts(
    State(app): State<AppState>,
    auth: Auth,
    Params(query): Params<ContactQuery>,
) -> Result<Json<ContactPage>, ApiError> {
    let page = query.page.validate()?;
    let search = match query.search.map(|s| s.trim().to_owned()) {
        Some(s) if s.chars().count() > 100 => {
            return Err(ApiError::field("search", "must be at most 100 characters"))
        }
        Some(s) if !s.is_empty() => Some(s),
        _ => None,
    };
    let tags = parse_tag_list(query.tags)?;
    let org = auth.org_id;

    let mut filter = String::from("c.organization_id = ?1");
    let mut args: Vec<Value> = vec![Value::Integer(org)];
    if let Some(search) = &search {
        args.push(Value::Text(like_pattern(search)));
        let n = args.len();
        filter.push_str(&format!(
            " AND (LOWER(c.name) LIKE LOWER(?{n}) ESCAPE '\\' OR c.phone_number LIKE ?{n} ESCAPE '\\')"
        ));
    }
    if !tags.is_empty() {
        let mut slots = Vec::new();
        for tag in tags {
            args.push(Value::Text(tag));
            slots.push(format!("?{}", args.len()));
        }
        filter.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM contact_tags t WHERE t.organization_id = ?1
               AND t.contact_id = c.id AND t.tag IN ({}))",
            slots.join(", ")
        ));
    }
    let (contacts, total) = app
        .db
        .read(move |sql| {
            let total: i64 = sql.one(
                &format!("SELECT COUNT(*) FROM contacts c WHERE {filter}"),
                &args,
                |row| row.get(0),
            )?;
            let n = args.len();
            let mut page_args = args;
            page_args.push(Value::Integer(i64::from(page.limit)));
            page_args.push(Value::Integer(page.offset()));
            let contacts = sql.all(
                &format!(
                    "SELECT {COLUMNS} FROM contacts c WHERE {filter}
                     ORDER BY c.id DESC LIMIT ?{} OFFSET ?{}",
                    n + 1,
                    n + 2
                ),
                &page_args,
                contact_from_row,
            )?;
            Ok((contacts, total))
        })
        .await?;
    Ok(Json(ContactPage {
        organization_id: org,
        contacts,
        pagination: page.describe(total),
    }))
}

/// Body of `POST /api/contacts` and `PUT /api/contacts/{id}`.
#[derive(Debug, Default, Deserialize)]
pub struct ContactInput {
    /// Required on POST.
    pub name: Option<String>,
    /// Required on POST.
    pub phone_number: Option<String>,
    /// Optional.
    pub email: Option<String>,
    /// Replaces the contact's tags.
    pub tags: Option<Vec<String>>,
}

fn check_phone(phone: &str) -> Result<(), ApiError> {
    let digits = phone.chars().filter(char::is_ascii_digit).count();
    let allowed = phone.chars().enumerate().all(|(i, c)| {
        c.is_ascii_digit() || matches!(c, ' ' | '-' | '(' | ')') || (i == 0 && c == '+')
    });
    if allowed && (6..=15).contains(&digits) {
        Ok(())
    } else {
        Err(ApiError::field(
            "phone_number",
            "must be 6-15 digits, optionally with a leading '+'",
        ))
    }
}

fn check_email(email: &Option<String>) -> Result<(), ApiError> {
    match email {
        Some(e) if !e.contains('@') => Err(ApiError::field("email", "must contain '@'")),
        _ => Ok(()),
    }
}

fn replace_tags(sql: &Sql<'_>, org: i64, contact: i64, tags: &[String]) -> Result<(), DbError> {
    sql.execute(
        "DELETE FROM contact_tags WHERE organization_id = ?1 AND contact_id = ?2",
        params![org, contact],
    )?;
    for tag in tags {
        sql.execute(
            "INSERT INTO contact_tags (organization_id, tag, contact_id) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
            params![org, tag, contact],
        )?;
    }
    Ok(())
}

/// `POST /api/contacts`: 201 with the new contact.
///
/// Invalidates `contacts` only: the lists, and the dashboard's contact count (tagged
/// `contacts`, as is the dashboard route). A new contact has no conversation and no
/// message yet, so the inbox, the conversation totals and the message aggregates cannot
/// change. (The busiest contacts' names, one lookup by id, are re-read because they are
/// tagged `contacts`, though a new contact cannot be among them.)
#[invalidates("contacts")]
pub async fn create_contact(
    State(app): State<AppState>,
    auth: Auth,
    Body(input): Body<ContactInput>,
) -> Result<(StatusCode, Json<Contact>), ApiError> {
    apply_contact_create(app, auth, input).await
}

/// `POST /api/contacts` with the demo's deliberate bug (`--incomplete-invalidation`):
/// the annotation names `conversations` instead of `contacts`, so the contact lists
/// keep showing the list without the new contact. Shadow mode and sampled verification
/// report it as mismatches on `contacts`.
#[invalidates("conversations")]
pub async fn create_contact_forgetting_contacts(
    State(app): State<AppState>,
    auth: Auth,
    Body(input): Body<ContactInput>,
) -> Result<(StatusCode, Json<Contact>), ApiError> {
    apply_contact_create(app, auth, input).await
}

async fn apply_contact_create(
    app: AppState,
    auth: Auth,
    input: ContactInput,
) -> Result<(StatusCode, Json<Contact>), ApiError> {
    let name = required("name", input.name, 200)?;
    let phone = required("phone_number", input.phone_number, 32)?;
    check_phone(&phone)?;
    let email = optional("email", input.email, 200)?;
    check_email(&email)?;
    let tags = check_tags(input.tags.unwrap_or_default())?;
    let tags_json =
        serde_json::to_string(&tags).map_err(|e| ApiError::field("tags", e.to_string()))?;
    let (org, at) = (auth.org_id, now());
    let contact = app
        .db
        .write(move |sql| {
            let contact = sql.one(
                &format!(
                    "INSERT INTO contacts (organization_id, name, phone_number, email, tags, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) RETURNING {RETURNING}"
                ),
                params![org, name, phone, email, tags_json, at],
                contact_from_row,
            )?;
            replace_tags(sql, org, contact.id, &tags)?;
            Ok(contact)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(contact)))
}

/// `PUT /api/contacts/{id}`: changes the given fields.
///
/// Invalidates `contacts` (the lists; the dashboard's busiest contacts' names) and
/// `conversations` (the inbox shows each conversation's contact name). It adds or
/// removes no conversation or message, so the message aggregates stay (`messages`).
#[invalidates("contacts", "conversations")]
pub async fn update_contact(
    State(app): State<AppState>,
    auth: Auth,
    Id(id): Id,
    Body(input): Body<ContactInput>,
) -> Result<Json<Contact>, ApiError> {
    let name = optional("name", input.name, 200)?;
    let phone = optional("phone_number", input.phone_number, 32)?;
    if let Some(phone) = &phone {
        check_phone(phone)?;
    }
    let email = optional("email", input.email, 200)?;
    check_email(&email)?;
    let tags = input.tags.map(check_tags).transpose()?;
    if name.is_none() && phone.is_none() && email.is_none() && tags.is_none() {
        return Err(ApiError::field(
            "name",
            "nothing to update: give name, phone_number, email or tags",
        ));
    }
    let tags_json = tags
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| ApiError::field("tags", e.to_string()))?;
    let (org, at) = (auth.org_id, now());
    app.db
        .write(move |sql| {
            let contact = sql.optional(
                &format!(
                    "UPDATE contacts SET name = COALESCE(?3, name), phone_number = COALESCE(?4, phone_number),
                        email = COALESCE(?5, email), tags = COALESCE(?6, tags), updated_at = ?7
                     WHERE id = ?1 AND organization_id = ?2 RETURNING {RETURNING}"
                ),
                params![id, org, name, phone, email, tags_json, at],
                contact_from_row,
            )?;
            if let (Some(contact), Some(tags)) = (&contact, &tags) {
                replace_tags(sql, org, contact.id, tags)?;
            }
            Ok(contact)
        })
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound {
            resource: "contact",
            id,
        })
}

/// `DELETE /api/contacts/{id}`: removes the contact with its conversations and messages.
///
/// Invalidates all three: `contacts` (lists, count, names), `conversations` (the inbox
/// and conversation totals lose its conversations) and `messages` (its messages leave
/// the dashboard's message aggregates).
#[invalidates("contacts", "conversations", "messages")]
pub async fn delete_contact(
    State(app): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> Result<Json<Deleted>, ApiError> {
    let org = auth.org_id;
    let deleted = app
        .db
        .write(move |sql| {
            let deleted = sql.execute(
                "DELETE FROM contacts WHERE id = ?1 AND organization_id = ?2",
                params![id, org],
            )?;
            if deleted > 0 {
                sql.execute(
                    "DELETE FROM contact_tags WHERE organization_id = ?1 AND contact_id = ?2",
                    params![org, id],
                )?;
                sql.execute(
                    "DELETE FROM messages WHERE conversation_id IN
                       (SELECT id FROM conversations WHERE contact_id = ?1 AND organization_id = ?2)",
                    params![id, org],
                )?;
                sql.execute(
                    "DELETE FROM conversations WHERE contact_id = ?1 AND organization_id = ?2",
                    params![id, org],
                )?;
            }
            Ok(deleted)
        })
        .await?;
    if deleted == 0 {
        return Err(ApiError::NotFound {
            resource: "contact",
            id,
        });
    }
    Ok(Json(Deleted::new(org, id)))
}
