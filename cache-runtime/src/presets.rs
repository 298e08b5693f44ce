//! The reference rollout's TTLs, in seconds, to write as `ttl = presets::CONTACTS`.
//!
//! A resource never gets one of these by its name: any app may have a resource called
//! `contacts` whose data lives longer or shorter. Naming the constant is the choice.
//!
//! ```
//! use cache_runtime::{cached, presets};
//!
//! #[cached(resource = "contacts", ttl = presets::CONTACTS)]
//! async fn list_contacts() -> &'static str {
//!     "[]"
//! }
//! # let _ = list_contacts;
//! ```

/// Conversations: 30 s (they change all the time).
pub const CONVERSATIONS: u32 = 30;
/// Contacts: 5 min.
pub const CONTACTS: u32 = 300;
/// Message templates: 30 min.
pub const TEMPLATES: u32 = 1800;
/// The analytics dashboard: 10 min.
pub const ANALYTICS: u32 = 600;
/// Broadcast and drip campaigns: 5 min.
pub const CAMPAIGNS: u32 = 300;
/// The current organization's settings: 15 min.
pub const ORGANIZATION: u32 = 900;
