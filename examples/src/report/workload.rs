//! The workload the report replays: what each virtual user asks for, and what it must
//! then see.
//!
//! Each virtual user works in sessions of about 40 requests as one seeded user: the
//! organization is drawn with Zipf popularity (organization k with weight 1/k, so the
//! largest tenants are also the busiest), the user uniformly among its users. Between
//! requests it thinks for an exponentially distributed time. Each request is a read with
//! probability 1 - `write_share`, drawn from [`READ_MIX`]; otherwise a write drawn from
//! [`WRITE_MIX`]. A successful write is followed at once by a verifying read of the list
//! or page that must show it (read-your-writes), as a user looks at what they saved.

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};

use crate::seed::{zipf_index, OrgSummary, CATEGORIES, FIRST_NAMES, TAGS};

/// A route of the API, for sampling and per-route rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Route {
    /// `/api/templates`
    Templates,
    /// `/api/contacts`
    Contacts,
    /// `/api/analytics/dashboard`
    Analytics,
    /// `/api/broadcast`
    Broadcast,
    /// `/api/drip-campaigns`
    DripCampaigns,
    /// `/api/conversations`
    Conversations,
    /// `/api/organizations/current`
    Organization,
    /// `/api/profiles/me`
    Profiles,
}

impl Route {
    /// Every route, in rollout order.
    pub const ALL: [Route; 8] = [
        Route::Templates,
        Route::Contacts,
        Route::Analytics,
        Route::Broadcast,
        Route::DripCampaigns,
        Route::Conversations,
        Route::Organization,
        Route::Profiles,
    ];

    /// The path of its GET.
    pub fn path(self) -> &'static str {
        match self {
            Route::Templates => "/api/templates",
            Route::Contacts => "/api/contacts",
            Route::Analytics => "/api/analytics/dashboard",
            Route::Broadcast => "/api/broadcast",
            Route::DripCampaigns => "/api/drip-campaigns",
            Route::Conversations => "/api/conversations",
            Route::Organization => "/api/organizations/current",
            Route::Profiles => "/api/profiles/me",
        }
    }
}

/// Read weights, in percent of reads, following the reference's rollout priorities.
pub const READ_MIX: [(Route, u32); 8] = [
    (Route::Templates, 24),
    (Route::Contacts, 20),
    (Route::Analytics, 14),
    (Route::Broadcast, 10),
    (Route::DripCampaigns, 8),
    (Route::Conversations, 12),
    (Route::Organization, 6),
    (Route::Profiles, 6),
];

/// A mutation of the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteKind {
    /// `POST /api/conversations`
    CreateConversation,
    /// `POST /api/contacts`
    CreateContact,
    /// `PUT /api/contacts/{id}` (a contact this virtual user created)
    UpdateContact,
    /// `DELETE /api/contacts/{id}` (a contact this virtual user created)
    DeleteContact,
    /// `POST /api/templates`
    CreateTemplate,
    /// `PUT /api/templates/{id}` (a template this virtual user created)
    UpdateTemplate,
    /// `DELETE /api/templates/{id}` (a template this virtual user created)
    DeleteTemplate,
    /// `POST /api/broadcast`
    CreateBroadcast,
    /// `POST /api/drip-campaigns`
    CreateDrip,
    /// `PUT /api/organizations/current`
    UpdateOrganization,
}

/// Write weights, in percent of writes. Updates and deletes touch only rows the virtual
/// user created itself (and become creates while it has none).
pub const WRITE_MIX: [(WriteKind, u32); 10] = [
    (WriteKind::CreateConversation, 25),
    (WriteKind::CreateContact, 15),
    (WriteKind::UpdateContact, 12),
    (WriteKind::DeleteContact, 5),
    (WriteKind::CreateTemplate, 12),
    (WriteKind::UpdateTemplate, 10),
    (WriteKind::DeleteTemplate, 5),
    (WriteKind::CreateBroadcast, 8),
    (WriteKind::CreateDrip, 5),
    (WriteKind::UpdateOrganization, 3),
];

/// HTTP methods the workload uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Method {
    /// Read.
    Get,
    /// Create.
    Post,
    /// Update.
    Put,
    /// Delete.
    Delete,
}

/// Why a request was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// A read of the mix.
    Read,
    /// A write of the mix.
    Write(WriteKind),
    /// The read right after a write, checked for read-your-writes.
    Verify,
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method.
    pub method: Method,
    /// Route (for per-route figures).
    pub route: Route,
    /// Path and query.
    pub path: String,
    /// JSON body of writes.
    pub body: Option<Value>,
    /// Why.
    pub purpose: Purpose,
}

impl Request {
    fn get(route: Route, path: String, purpose: Purpose) -> Request {
        Request {
            method: Method::Get,
            route,
            path,
            body: None,
            purpose,
        }
    }
}

/// What the verifying read after a write must show.
#[derive(Debug, Clone)]
pub enum Expectation {
    /// `list[]` has the item `id`, or `limit` newer items (ids above `id`) pushed it off
    /// the first page.
    ListShows {
        /// The array field of the list body.
        list: &'static str,
        /// The created item.
        id: i64,
    },
    /// If `list[]` has item `id`, its `name` is `name`.
    ListNamed {
        /// The array field of the list body.
        list: &'static str,
        /// The updated item.
        id: i64,
        /// Its new name.
        name: String,
    },
    /// `list[]` does not have item `id`.
    ListLacks {
        /// The array field of the list body.
        list: &'static str,
        /// The deleted item.
        id: i64,
    },
    /// The dashboard's `latest_conversation_id` is at least `id`.
    DashboardSees {
        /// The created conversation.
        id: i64,
    },
    /// The organization's `version` (or the profile's `organization.version`) is at
    /// least `version`.
    OrgVersion {
        /// The version the update returned.
        version: i64,
        /// Checking `/api/profiles/me` rather than the organization.
        in_profile: bool,
    },
}

impl Expectation {
    /// Checks a verifying read's body; `Err` describes the violation.
    pub fn check(&self, body: &Value) -> Result<(), String> {
        let items = |list: &str| -> Result<Vec<Value>, String> {
            body.get(list)
                .and_then(Value::as_array)
                .cloned()
                .ok_or_else(|| format!("body has no `{list}` array"))
        };
        let id_of = |item: &Value| item.get("id").and_then(Value::as_i64).unwrap_or(0);
        match self {
            Expectation::ListShows { list, id } => {
                let items = items(list)?;
                let limit = body
                    .pointer("/pagination/limit")
                    .and_then(Value::as_u64)
                    .unwrap_or(0) as usize;
                let present = items.iter().any(|i| id_of(i) == *id);
                let pushed_off = items.len() >= limit && items.iter().all(|i| id_of(i) > *id);
                if present || pushed_off {
                    Ok(())
                } else {
                    Err(format!("{list} lacks the created id {id}"))
                }
            }
            Expectation::ListNamed { list, id, name } => {
                match items(list)?.iter().find(|i| id_of(i) == *id) {
                    Some(item) if item.get("name").and_then(Value::as_str) != Some(name) => {
                        Err(format!(
                            "{list} shows id {id} named {} instead of {name:?}",
                            item["name"]
                        ))
                    }
                    _ => Ok(()),
                }
            }
            Expectation::ListLacks { list, id } => {
                if items(list)?.iter().any(|i| id_of(i) == *id) {
                    Err(format!("{list} still shows the deleted id {id}"))
                } else {
                    Ok(())
                }
            }
            Expectation::DashboardSees { id } => {
                let latest = body
                    .get("latest_conversation_id")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if latest >= *id {
                    Ok(())
                } else {
                    Err(format!(
                        "dashboard's latest_conversation_id {latest} predates the created {id}"
                    ))
                }
            }
            Expectation::OrgVersion {
                version,
                in_profile,
            } => {
                let pointer = if *in_profile {
                    "/organization/version"
                } else {
                    "/version"
                };
                let seen = body.pointer(pointer).and_then(Value::as_i64).unwrap_or(0);
                if seen >= *version {
                    Ok(())
                } else {
                    Err(format!(
                        "organization version {seen} is older than the written {version}"
                    ))
                }
            }
        }
    }
}

/// One virtual user's state.
pub struct VirtualUser {
    /// Its index (names its rows).
    pub index: usize,
    rng: StdRng,
    /// Current organization.
    pub org: i64,
    /// Current user's id (for the profile check).
    pub user_id: i64,
    /// Current bearer token.
    pub token: String,
    session_left: u32,
    own_templates: Vec<i64>,
    own_contacts: Vec<i64>,
    known_contacts: Vec<i64>,
    max_seeded_contact: i64,
    serial: u64,
}

/// Requests per session (one user of one organization).
const SESSION_REQUESTS: u32 = 40;

impl VirtualUser {
    /// A virtual user drawing from `rng`; contact ids up to `max_seeded_contact` are
    /// seeded ones.
    pub fn new(index: usize, rng: StdRng, max_seeded_contact: i64) -> VirtualUser {
        VirtualUser {
            index,
            rng,
            org: 0,
            user_id: 0,
            token: String::new(),
            session_left: 0,
            own_templates: Vec::new(),
            own_contacts: Vec::new(),
            known_contacts: Vec::new(),
            max_seeded_contact,
            serial: 0,
        }
    }

    /// Its random source (think times).
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    fn start_session_if_due(&mut self, orgs: &[OrgSummary]) {
        if self.session_left > 0 && self.org != 0 {
            self.session_left -= 1;
            return;
        }
        // No organizations (a server that seeded none): requests go out unauthenticated
        // and are reported as unexpected answers.
        let Some(org) = orgs.get(zipf_index(&mut self.rng, orgs.len())) else {
            return;
        };
        let user_no = self.rng.random_range(1..=org.users.max(1));
        self.org = org.id;
        self.user_id = org.first_user_id + i64::from(user_no) - 1;
        self.token = crate::seed::token(org.id, user_no);
        self.session_left = SESSION_REQUESTS;
        self.own_templates.clear();
        self.own_contacts.clear();
        self.known_contacts.clear();
    }

    /// The next request of the mix.
    pub fn next_request(&mut self, orgs: &[OrgSummary], write_share: f64) -> Request {
        self.start_session_if_due(orgs);
        if self.rng.random_bool(write_share.clamp(0.0, 1.0)) {
            let kind = pick(&mut self.rng, &WRITE_MIX);
            self.write(kind)
        } else {
            let route = pick(&mut self.rng, &READ_MIX);
            let path = self.read_path(route);
            Request::get(route, path, Purpose::Read)
        }
    }

    fn read_path(&mut self, route: Route) -> String {
        let rng = &mut self.rng;
        let mut query: Vec<String> = Vec::new();
        let page = |rng: &mut StdRng, p2: f64, p3: f64| {
            let x: f64 = rng.random();
            if x < p3 {
                Some("page=3")
            } else if x < p3 + p2 {
                Some("page=2")
            } else {
                None
            }
        };
        match route {
            Route::Templates => {
                if rng.random_bool(0.2) {
                    query.push(format!(
                        "category={}",
                        CATEGORIES[zipf_index(rng, CATEGORIES.len())]
                    ));
                }
                query.extend(page(rng, 0.08, 0.02).map(str::to_owned));
                if rng.random_bool(0.05) {
                    query.push("limit=50".into());
                }
            }
            Route::Contacts => {
                let x: f64 = rng.random();
                if x < 0.22 {
                    query.push(format!(
                        "search={}",
                        FIRST_NAMES[zipf_index(rng, 12)].to_lowercase()
                    ));
                } else if x < 0.25 {
                    query.push(format!("search=555{}", rng.random_range(0..10)));
                }
                let x: f64 = rng.random();
                if x < 0.1 {
                    query.push(format!("tags={}", TAGS[zipf_index(rng, 5)]));
                } else if x < 0.12 {
                    query.push("tags=vip,customer".into());
                }
                query.extend(page(rng, 0.1, 0.02).map(str::to_owned));
            }
            Route::Analytics => {
                let x: f64 = rng.random();
                let range = if x < 0.7 {
                    "7d"
                } else if x < 0.93 {
                    "30d"
                } else {
                    "90d"
                };
                query.push(format!("range={range}"));
            }
            Route::Broadcast => {
                if rng.random_bool(0.15) {
                    query.push(format!(
                        "status={}",
                        ["sent", "scheduled", "draft"][zipf_index(rng, 3)]
                    ));
                }
                query.extend(page(rng, 0.08, 0.0).map(str::to_owned));
            }
            Route::DripCampaigns => {
                if rng.random_bool(0.1) {
                    query.push(format!(
                        "status={}",
                        ["active", "paused"][zipf_index(rng, 2)]
                    ));
                }
            }
            Route::Conversations => {
                let x: f64 = rng.random();
                if x < 0.3 {
                    query.push("status=open".into());
                } else if x < 0.35 {
                    query.push("status=pending".into());
                } else if x < 0.38 {
                    query.push("status=closed".into());
                }
                query.extend(page(rng, 0.1, 0.02).map(str::to_owned));
            }
            Route::Organization | Route::Profiles => {}
        }
        if query.is_empty() {
            route.path().to_owned()
        } else {
            format!("{}?{}", route.path(), query.join("&"))
        }
    }

    fn write(&mut self, kind: WriteKind) -> Request {
        self.serial += 1;
        let tag = format!("u{}-{}", self.index, self.serial);
        let request = |method, route: Route, path: String, body: Value| Request {
            method,
            route,
            path,
            body: Some(body),
            purpose: Purpose::Write(kind),
        };
        let new_contact = |rng: &mut StdRng| {
            json!({
                "name": format!("{} Report {tag}", FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())]),
                "phone_number": format!("+1555{:07}", rng.random_range(0..10_000_000)),
                "tags": [TAGS[zipf_index(rng, TAGS.len())]],
            })
        };
        let new_template = |rng: &mut StdRng| {
            json!({
                "name": format!("Report template {tag}"),
                "category": CATEGORIES[zipf_index(rng, CATEGORIES.len())],
                "content": "Hi {{name}}, thanks for your message!",
                "variables": ["name"],
            })
        };
        match kind {
            WriteKind::CreateConversation => match self.known_contacts.last().copied() {
                Some(contact) => request(
                    Method::Post,
                    Route::Conversations,
                    Route::Conversations.path().into(),
                    json!({ "contact_id": contact, "message": "Hello from the report" }),
                ),
                None => self.write(WriteKind::CreateContact),
            },
            WriteKind::CreateContact => {
                let body = new_contact(&mut self.rng);
                request(
                    Method::Post,
                    Route::Contacts,
                    Route::Contacts.path().into(),
                    body,
                )
            }
            WriteKind::UpdateContact => match self.own_contacts.last() {
                Some(id) => request(
                    Method::Put,
                    Route::Contacts,
                    format!("/api/contacts/{id}"),
                    json!({ "name": format!("Renamed contact {tag}") }),
                ),
                None => self.write(WriteKind::CreateContact),
            },
            WriteKind::DeleteContact => match self.own_contacts.first() {
                Some(id) => request(
                    Method::Delete,
                    Route::Contacts,
                    format!("/api/contacts/{id}"),
                    Value::Null,
                ),
                None => self.write(WriteKind::CreateContact),
            },
            WriteKind::CreateTemplate => {
                let body = new_template(&mut self.rng);
                request(
                    Method::Post,
                    Route::Templates,
                    Route::Templates.path().into(),
                    body,
                )
            }
            WriteKind::UpdateTemplate => match self.own_templates.last() {
                Some(id) => request(
                    Method::Put,
                    Route::Templates,
                    format!("/api/templates/{id}"),
                    json!({ "name": format!("Renamed template {tag}") }),
                ),
                None => self.write(WriteKind::CreateTemplate),
            },
            WriteKind::DeleteTemplate => match self.own_templates.first() {
                Some(id) => request(
                    Method::Delete,
                    Route::Templates,
                    format!("/api/templates/{id}"),
                    Value::Null,
                ),
                None => self.write(WriteKind::CreateTemplate),
            },
            WriteKind::CreateBroadcast => request(
                Method::Post,
                Route::Broadcast,
                Route::Broadcast.path().into(),
                json!({ "name": format!("Report broadcast {tag}"), "audience_tag": "vip" }),
            ),
            WriteKind::CreateDrip => request(
                Method::Post,
                Route::DripCampaigns,
                Route::DripCampaigns.path().into(),
                json!({ "name": format!("Report drip {tag}"), "trigger": "tag_added" }),
            ),
            WriteKind::UpdateOrganization => request(
                Method::Put,
                Route::Organization,
                Route::Organization.path().into(),
                json!({ "settings": { "auto_reply": self.serial.is_multiple_of(2), "changed_by": tag } }),
            ),
        }
    }

    /// Learns from a successful response (ids it can use later) and, for a write,
    /// returns the verifying read and what it must show.
    pub fn after_success(
        &mut self,
        request: &Request,
        body: &Value,
    ) -> Option<(Request, Expectation)> {
        let id = body.get("id").and_then(Value::as_i64).unwrap_or(0);
        let kind = match request.purpose {
            Purpose::Write(kind) => kind,
            Purpose::Read | Purpose::Verify => {
                if request.route == Route::Contacts && request.method == Method::Get {
                    self.learn_contacts(body);
                }
                return None;
            }
        };
        let verify = |route: Route| Request::get(route, route.path().to_owned(), Purpose::Verify);
        let name = || {
            request
                .body
                .as_ref()
                .and_then(|b| b.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Some(match kind {
            WriteKind::CreateConversation => {
                if self.rng.random_bool(0.5) {
                    (
                        verify(Route::Conversations),
                        Expectation::ListShows {
                            list: "conversations",
                            id,
                        },
                    )
                } else {
                    let path = "/api/analytics/dashboard?range=7d".to_owned();
                    (
                        Request::get(Route::Analytics, path, Purpose::Verify),
                        Expectation::DashboardSees { id },
                    )
                }
            }
            WriteKind::CreateContact => {
                self.own_contacts.push(id);
                (
                    verify(Route::Contacts),
                    Expectation::ListShows {
                        list: "contacts",
                        id,
                    },
                )
            }
            WriteKind::UpdateContact => (
                verify(Route::Contacts),
                Expectation::ListNamed {
                    list: "contacts",
                    id,
                    name: name(),
                },
            ),
            WriteKind::DeleteContact => {
                let id = path_id(&request.path);
                self.own_contacts.retain(|c| *c != id);
                (
                    verify(Route::Contacts),
                    Expectation::ListLacks {
                        list: "contacts",
                        id,
                    },
                )
            }
            WriteKind::CreateTemplate => {
                self.own_templates.push(id);
                (
                    verify(Route::Templates),
                    Expectation::ListShows {
                        list: "templates",
                        id,
                    },
                )
            }
            WriteKind::UpdateTemplate => (
                verify(Route::Templates),
                Expectation::ListNamed {
                    list: "templates",
                    id,
                    name: name(),
                },
            ),
            WriteKind::DeleteTemplate => {
                let id = path_id(&request.path);
                self.own_templates.retain(|t| *t != id);
                (
                    verify(Route::Templates),
                    Expectation::ListLacks {
                        list: "templates",
                        id,
                    },
                )
            }
            WriteKind::CreateBroadcast => (
                verify(Route::Broadcast),
                Expectation::ListShows {
                    list: "broadcasts",
                    id,
                },
            ),
            WriteKind::CreateDrip => (
                verify(Route::DripCampaigns),
                Expectation::ListShows {
                    list: "drip_campaigns",
                    id,
                },
            ),
            WriteKind::UpdateOrganization => {
                let version = body.get("version").and_then(Value::as_i64).unwrap_or(0);
                let in_profile = self.rng.random_bool(0.5);
                let route = if in_profile {
                    Route::Profiles
                } else {
                    Route::Organization
                };
                (
                    verify(route),
                    Expectation::OrgVersion {
                        version,
                        in_profile,
                    },
                )
            }
        })
    }

    /// Forgets a row that answered 404 (deleted by someone else is impossible here, but
    /// a failed create leaves nothing to update).
    pub fn forget(&mut self, request: &Request) {
        let id = path_id(&request.path);
        self.own_contacts.retain(|c| *c != id);
        self.own_templates.retain(|t| *t != id);
    }

    fn learn_contacts(&mut self, body: &Value) {
        let Some(contacts) = body.get("contacts").and_then(Value::as_array) else {
            return;
        };
        for contact in contacts.iter().take(3) {
            if let Some(id) = contact.get("id").and_then(Value::as_i64) {
                // Only seeded contacts: the report deletes only contacts it created, so
                // a seeded one can always take a new conversation.
                if !self.own_contacts.contains(&id) && id <= self.max_seeded_contact {
                    self.known_contacts.push(id);
                }
            }
        }
        let excess = self.known_contacts.len().saturating_sub(16);
        self.known_contacts.drain(..excess);
    }
}

fn path_id(path: &str) -> i64 {
    path.rsplit('/')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn pick<T: Copy>(rng: &mut impl Rng, mix: &[(T, u32)]) -> T {
    let total: u32 = mix.iter().map(|(_, w)| w).sum();
    let mut x = rng.random_range(0..total.max(1));
    for (item, weight) in mix {
        if x < *weight {
            return *item;
        }
        x -= weight;
    }
    mix[mix.len() - 1].0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn page(ids: &[i64], limit: u64) -> Value {
        let items: Vec<Value> = ids
            .iter()
            .map(|id| json!({ "id": id, "name": format!("n{id}") }))
            .collect();
        json!({ "templates": items, "pagination": { "limit": limit } })
    }

    #[test]
    fn a_created_item_must_be_listed_unless_newer_items_filled_the_page() {
        let shows = Expectation::ListShows {
            list: "templates",
            id: 10,
        };
        assert!(shows.check(&page(&[10, 9, 8], 3)).is_ok());
        assert!(
            shows.check(&page(&[13, 12, 11], 3)).is_ok(),
            "pushed off by newer items"
        );
        assert!(shows.check(&page(&[9, 8, 7], 3)).is_err(), "a stale page");
        assert!(
            shows.check(&page(&[12, 9], 3)).is_err(),
            "room left on the page"
        );
    }

    #[test]
    fn updates_and_deletes_must_show() {
        let named = Expectation::ListNamed {
            list: "templates",
            id: 9,
            name: "n9".into(),
        };
        assert!(named.check(&page(&[10, 9], 20)).is_ok());
        let renamed = Expectation::ListNamed {
            list: "templates",
            id: 9,
            name: "new".into(),
        };
        assert!(renamed.check(&page(&[10, 9], 20)).is_err());
        let lacks = Expectation::ListLacks {
            list: "templates",
            id: 9,
        };
        assert!(lacks.check(&page(&[10, 8], 20)).is_ok());
        assert!(lacks.check(&page(&[10, 9], 20)).is_err());
    }

    #[test]
    fn organization_versions_only_move_forward() {
        let check = Expectation::OrgVersion {
            version: 5,
            in_profile: true,
        };
        assert!(check
            .check(&json!({ "organization": { "version": 6 } }))
            .is_ok());
        assert!(check
            .check(&json!({ "organization": { "version": 4 } }))
            .is_err());
    }
}
