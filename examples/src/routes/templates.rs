//! `/api/templates`: message templates. Rollout priority 1, cached 30 minutes (the
//! `templates` preset); every mutation invalidates `templates` for the caller's tenant.
//! The broadcast list shows template names and is tagged `templates` for it, so no
//! mutation here needs to name `campaigns` (which would drop the drip list and the
//! dashboard's campaign counts too, neither of which reads templates).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use cache_runtime::{cached, invalidates, presets};
use serde::{Deserialize, Serialize};

use crate::auth::Auth;
use crate::db::{DbError, Row};
use crate::error::ApiError;
use crate::extract::{
    now, optional, required, timestamp, Body, Id, PageParams, Pagination, Params,
};
use crate::params;
use crate::routes::Deleted;
use crate::AppState;

/// A message template.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Template {
    /// Id.
    pub id: i64,
    /// Owning organization.
    pub organization_id: i64,
    /// Display name.
    pub name: String,
    /// `marketing`, `utility`, `support`, `authentication`, or a custom one.
    pub category: String,
    /// Text with `{{variables}}`.
    pub content: String,
    /// Variable names used in `content`.
    pub variables: Vec<String>,
    /// User who created it.
    pub created_by: i64,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

const COLUMNS: &str =
    "id, organization_id, name, category, content, variables, created_by, created_at, updated_at";

fn template_from_row(row: &Row<'_>) -> Result<Template, DbError> {
    Ok(Template {
        id: row.get(0)?,
        organization_id: row.get(1)?,
        name: row.get(2)?,
        category: row.get(3)?,
        content: row.get(4)?,
        variables: serde_json::from_str(&row.get::<String>(5)?).unwrap_or_default(),
        created_by: row.get(6)?,
        created_at: timestamp(row.get(7)?),
        updated_at: timestamp(row.get(8)?),
    })
}

/// Query of `GET /api/templates`.
#[derive(Debug, Deserialize)]
pub struct TemplateQuery {
    /// Only this category.
    pub category: Option<String>,
    /// `page`, `limit`.
    #[serde(flatten)]
    pub page: PageParams,
}

/// Body of `GET /api/templates`.
#[derive(Debug, Serialize, Deserialize)]
pub struct TemplatePage {
    /// The caller's organization.
    pub organization_id: i64,
    /// Newest first.
    pub templates: Vec<Template>,
    /// Page, limit, total, hasMore.
    pub pagination: Pagination,
}

fn category_filter(raw: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(category) = raw.map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    let valid = category.len() <= 32
        && category
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '_' || c == '-');
    if valid {
        Ok(Some(category))
    } else {
        Err(ApiError::field(
            "category",
            "must be 1-32 characters of a-z, '_' or '-'",
        ))
    }
}

/// `GET /api/templates?category=&page=&limit=`
#[cached(resource = "templates", ttl = presets::TEMPLATES)]
pub async fn list_templates(
    State(app): State<AppState>,
    auth: Auth,
    Params(query): Params<TemplateQuery>,
) -> Result<Json<TemplatePage>, ApiError> {
    let page = query.page.validate()?;
    let category = category_filter(query.category)?;
    let org = auth.org_id;
    let (templates, total) = app
        .db
        .read(move |sql| {
            let total = sql.one(
                "SELECT COUNT(*) FROM templates WHERE organization_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR category = ?2)",
                params![org, category],
                |row| row.get(0),
            )?;
            let templates = sql.all(
                &format!(
                    "SELECT {COLUMNS} FROM templates WHERE organization_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR category = ?2)
                     ORDER BY id DESC LIMIT ?3 OFFSET ?4"
                ),
                params![org, category, page.limit, page.offset()],
                template_from_row,
            )?;
            Ok((templates, total))
        })
        .await?;
    Ok(Json(TemplatePage {
        organization_id: org,
        templates,
        pagination: page.describe(total),
    }))
}

/// Body of `POST /api/templates` and `PUT /api/templates/{id}`.
#[derive(Debug, Default, Deserialize)]
pub struct TemplateInput {
    /// Required on POST.
    pub name: Option<String>,
    /// Defaults to `utility` on POST.
    pub category: Option<String>,
    /// Required on POST.
    pub content: Option<String>,
    /// Variable names.
    pub variables: Option<Vec<String>>,
}

fn variables_json(variables: Option<Vec<String>>) -> Result<Option<String>, ApiError> {
    let Some(variables) = variables else {
        return Ok(None);
    };
    if variables.len() > 20 || variables.iter().any(|v| v.is_empty() || v.len() > 64) {
        return Err(ApiError::field(
            "variables",
            "at most 20 names of 1-64 characters",
        ));
    }
    serde_json::to_string(&variables)
        .map(Some)
        .map_err(|e| ApiError::field("variables", e.to_string()))
}

/// `POST /api/templates`: 201 with the new template.
///
/// Invalidates `templates` (the lists; the broadcast list is tagged with it). Nothing
/// else reads templates.
#[invalidates("templates")]
pub async fn create_template(
    State(app): State<AppState>,
    auth: Auth,
    Body(input): Body<TemplateInput>,
) -> Result<(StatusCode, Json<Template>), ApiError> {
    let name = required("name", input.name, 200)?;
    let content = required("content", input.content, 4000)?;
    let category = category_filter(input.category)?.unwrap_or_else(|| "utility".to_owned());
    let variables = variables_json(input.variables)?.unwrap_or_else(|| "[]".to_owned());
    let (org, user, at) = (auth.org_id, auth.user_id, now());
    let template = app
        .db
        .write(move |sql| {
            sql.one(
                &format!(
                    "INSERT INTO templates (organization_id, name, category, content, variables, created_by, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) RETURNING {COLUMNS}"
                ),
                params![org, name, category, content, variables, user, at],
                template_from_row,
            )
        })
        .await?;
    Ok((StatusCode::CREATED, Json(template)))
}

/// `PUT /api/templates/{id}`: changes the given fields.
///
/// Invalidates `templates`: the lists, and the broadcast list (tagged `templates`),
/// which shows a broadcast's template name.
#[invalidates("templates")]
pub async fn update_template(
    State(app): State<AppState>,
    auth: Auth,
    Id(id): Id,
    Body(input): Body<TemplateInput>,
) -> Result<Json<Template>, ApiError> {
    let name = optional("name", input.name, 200)?;
    let content = optional("content", input.content, 4000)?;
    let category = category_filter(input.category)?;
    let variables = variables_json(input.variables)?;
    if name.is_none() && content.is_none() && category.is_none() && variables.is_none() {
        return Err(ApiError::field(
            "name",
            "nothing to update: give name, category, content or variables",
        ));
    }
    let (org, at) = (auth.org_id, now());
    app.db
        .write(move |sql| {
            sql.optional(
                &format!(
                    "UPDATE templates SET name = COALESCE(?3, name), category = COALESCE(?4, category),
                        content = COALESCE(?5, content), variables = COALESCE(?6, variables), updated_at = ?7
                     WHERE id = ?1 AND organization_id = ?2 RETURNING {COLUMNS}"
                ),
                params![id, org, name, category, content, variables, at],
                template_from_row,
            )
        })
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound {
            resource: "template",
            id,
        })
}

/// `DELETE /api/templates/{id}`.
///
/// Invalidates `templates`: the lists, and the broadcast list (tagged `templates`),
/// where a broadcast of this template loses its template name.
#[invalidates("templates")]
pub async fn delete_template(
    State(app): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> Result<Json<Deleted>, ApiError> {
    let org = auth.org_id;
    let deleted = app
        .db
        .write(move |sql| {
            sql.execute(
                "DELETE FROM templates WHERE id = ?1 AND organization_id = ?2",
                params![id, org],
            )
        })
        .await?;
    if deleted == 0 {
        return Err(ApiError::NotFound {
            resource: "template",
            id,
        });
    }
    Ok(Json(Deleted::new(org, id)))
}
