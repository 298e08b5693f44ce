//! `/api/organizations/current` (rollout priority 7, cached 15 minutes under the
//! `organization` preset) and `/api/profiles/me`: the caller's own profile, which is
//! different for every user of an organization and so is cached with the user in the
//! key (`vary = user`). The profile shows the organization's name, so changing the
//! organization invalidates `organization` and `profiles`.

use axum::extract::State;
use axum::Json;
use cache_runtime::{cached, invalidates, presets};
use serde::{Deserialize, Serialize};

use crate::auth::Auth;
use crate::db::{DbError, Row};
use crate::error::ApiError;
use crate::extract::{now, optional, timestamp, Body};
use crate::params;
use crate::AppState;

/// An organization's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Organization {
    /// Same as `id`: every tenant response carries it.
    pub organization_id: i64,
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// URL slug.
    pub slug: String,
    /// `starter`, `business` or `enterprise`.
    pub plan: String,
    /// IANA time zone.
    pub timezone: String,
    /// Free-form settings object.
    pub settings: serde_json::Value,
    /// Incremented by every change.
    pub version: i64,
    /// Number of users.
    pub members: i64,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

const SELECT: &str = "SELECT o.id, o.name, o.slug, o.plan, o.timezone, o.settings, o.version,
        (SELECT COUNT(*) FROM users u WHERE u.organization_id = o.id), o.created_at, o.updated_at
     FROM organizations o WHERE o.id = ?1";

fn organization_from_row(row: &Row<'_>) -> Result<Organization, DbError> {
    let id = row.get(0)?;
    Ok(Organization {
        organization_id: id,
        id,
        name: row.get(1)?,
        slug: row.get(2)?,
        plan: row.get(3)?,
        timezone: row.get(4)?,
        settings: serde_json::from_str(&row.get::<String>(5)?).unwrap_or_default(),
        version: row.get(6)?,
        members: row.get(7)?,
        created_at: timestamp(row.get(8)?),
        updated_at: timestamp(row.get(9)?),
    })
}

/// `GET /api/organizations/current`
#[cached(resource = "organization", ttl = presets::ORGANIZATION)]
pub async fn current_organization(
    State(app): State<AppState>,
    auth: Auth,
) -> Result<Json<Organization>, ApiError> {
    let org = auth.org_id;
    app.db
        .read(move |sql| sql.optional(SELECT, params![org], organization_from_row))
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound {
            resource: "organization",
            id: org,
        })
}

/// Body of `PUT /api/organizations/current`.
#[derive(Debug, Deserialize)]
pub struct OrganizationInput {
    /// New name.
    pub name: Option<String>,
    /// New IANA time zone.
    pub timezone: Option<String>,
    /// Replaces the settings object.
    pub settings: Option<serde_json::Value>,
}

/// `PUT /api/organizations/current`: changes the given fields, bumps `version`.
///
/// Invalidates `organization` and `profiles` (every profile shows the organization's
/// name and version). No other response shows organization fields.
#[invalidates("organization", "profiles")]
pub async fn update_organization(
    State(app): State<AppState>,
    auth: Auth,
    Body(input): Body<OrganizationInput>,
) -> Result<Json<Organization>, ApiError> {
    let name = optional("name", input.name, 200)?;
    let timezone = optional("timezone", input.timezone, 64)?;
    let settings = match input.settings {
        None => None,
        Some(value @ serde_json::Value::Object(_)) => Some(value.to_string()),
        Some(_) => return Err(ApiError::field("settings", "must be a JSON object")),
    };
    if name.is_none() && timezone.is_none() && settings.is_none() {
        return Err(ApiError::field(
            "name",
            "nothing to update: give name, timezone or settings",
        ));
    }
    let (org, at) = (auth.org_id, now());
    app.db
        .write(move |sql| {
            let changed = sql.execute(
                "UPDATE organizations SET name = COALESCE(?2, name), timezone = COALESCE(?3, timezone),
                    settings = COALESCE(?4, settings), version = version + 1, updated_at = ?5
                 WHERE id = ?1",
                params![org, name, timezone, settings, at],
            )?;
            if changed == 0 {
                return Ok(None);
            }
            sql.optional(SELECT, params![org], organization_from_row)
        })
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound {
            resource: "organization",
            id: org,
        })
}

/// Body of `GET /api/profiles/me`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Profile {
    /// The caller's organization.
    pub organization_id: i64,
    /// The caller.
    pub user: ProfileUser,
    /// The caller's organization, briefly.
    pub organization: ProfileOrganization,
}

/// The user part of a profile.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProfileUser {
    /// User id.
    pub id: i64,
    /// Full name.
    pub name: String,
    /// Email.
    pub email: String,
    /// `admin` or `agent`.
    pub role: String,
    /// Preferred language.
    pub locale: String,
}

/// The organization part of a profile.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProfileOrganization {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// The organization's `version`.
    pub version: i64,
}

/// `GET /api/profiles/me`: user-specific, so the user is part of the cache key.
#[cached(resource = "profiles", ttl = 300, vary = user)]
pub async fn my_profile(
    State(app): State<AppState>,
    auth: Auth,
) -> Result<Json<Profile>, ApiError> {
    let Auth { org_id, user_id } = auth;
    app.db
        .read(move |sql| {
            sql.optional(
                "SELECT u.id, u.name, u.email, u.role, u.locale, o.id, o.name, o.version
                 FROM users u JOIN organizations o ON o.id = u.organization_id
                 WHERE u.id = ?1 AND u.organization_id = ?2",
                params![user_id, org_id],
                |r| {
                    Ok(Profile {
                        organization_id: r.get(5)?,
                        user: ProfileUser {
                            id: r.get(0)?,
                            name: r.get(1)?,
                            email: r.get(2)?,
                            role: r.get(3)?,
                            locale: r.get(4)?,
                        },
                        organization: ProfileOrganization {
                            id: r.get(5)?,
                            name: r.get(6)?,
                            version: r.get(7)?,
                        },
                    })
                },
            )
        })
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound {
            resource: "user",
            id: user_id,
        })
}
