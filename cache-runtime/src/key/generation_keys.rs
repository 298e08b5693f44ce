//! A key's generation keys in one buffer, and the lists of keys the backends take.

use super::tag_spread;
#[cfg(doc)]
use super::CacheKey;

/// The generation keys that guard an entry, `[all, resource, tags...]`, held in one
/// buffer (one allocation for all of them, none more for up to four keys).
///
/// ```
/// use cache_runtime::testing::Tenant;
/// use cache_runtime::{Cache, CacheConfig};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let cache = Cache::new(CacheConfig::default()).await.unwrap();
/// let key = cache
///     .key(Tenant::Scoped("org_1"), "templates")
///     .unwrap()
///     .tag("sales")
///     .unwrap()
///     .build();
/// let keys: Vec<&str> = key.generation_keys().iter().collect();
/// assert_eq!(
///     keys,
///     [
///         "api-cache:{t.org_1}:g:*",
///         "api-cache:{t.org_1}:g:templates",
///         "api-cache:{t.org_1}:g:sales",
///     ]
/// );
/// # });
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct GenerationKeys {
    /// The keys, one after the other.
    text: String,
    /// Where each of the first [`INLINE_KEYS`] keys ends in `text`.
    ends: [u32; INLINE_KEYS],
    /// Where each further key ends (a route with more than two tags).
    more_ends: Vec<u32>,
    /// How many keys (a `u32`, as the ends: the key is part of every miss's state).
    count: u32,
    /// The [`tag_spread`] of every key (its low 31 bits), when they all have the same
    /// one (a key's own always do: one tenant's tag), else [`NO_SHARED_SPREAD`]: kept as
    /// keys are added, so that a hit finds its shard of the memory backend's
    /// generations without reading a key.
    shared_spread: u32,
}

/// `shared_spread` when the keys have no spread in common (or there are none): no 31-bit
/// spread is this.
const NO_SHARED_SPREAD: u32 = u32::MAX;

/// The low 31 bits of a spread: a spread is only ever taken modulo a power of two no
/// larger than that (the shard count), which these bits decide alike.
const SPREAD_BITS: usize = (1 << 31) - 1;

/// What separates a generation key's scope from its name.
pub(crate) const GENERATION_INFIX: &str = ":g:";

/// The name of a scope's own generation key, which every entry of the scope carries
/// (`invalidate_all` bumps it).
pub(crate) const ALL: &str = "*";

/// The keys whose ends are kept inline: "all", the resource and two tags.
const INLINE_KEYS: usize = 4;

impl GenerationKeys {
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        GenerationKeys {
            text: String::with_capacity(bytes),
            ..GenerationKeys::default()
        }
    }

    /// Appends the generation key of `name` (a resource, a tag, or [`ALL`]) in the
    /// scope `<prefix>:<tenant tag>`, given in pieces so that no scope string is built:
    /// `<scope>:g:<name>`.
    pub(crate) fn push_generation(&mut self, scope: &[&str], name: &str) {
        for part in scope {
            self.text.push_str(part);
        }
        self.text.push_str(GENERATION_INFIX);
        self.text.push_str(name);
        self.end_key();
    }

    /// Appends one key.
    pub(crate) fn push(&mut self, key: &str) {
        self.text.push_str(key);
        self.end_key();
    }

    /// Ends the key written last at the end of `text`.
    fn end_key(&mut self) {
        let start = match self.len() {
            0 => 0,
            n => self.end(n - 1).unwrap_or(0),
        };
        let spread = tag_spread(self.text.as_bytes().get(start..).unwrap_or_default());
        // Fits: masked to 31 bits.
        let spread = (spread & SPREAD_BITS) as u32;
        if self.count == 0 {
            self.shared_spread = spread;
        } else if self.shared_spread != spread {
            self.shared_spread = NO_SHARED_SPREAD;
        }
        // Keys are short (a prefix of at most 64 bytes, a tag of at most 70, a name of
        // at most 64): `u32` overflows only past millions of them.
        let end = u32::try_from(self.text.len()).unwrap_or(u32::MAX);
        let index = self.len();
        match self.ends.get_mut(index) {
            Some(slot) => *slot = end,
            None => self.more_ends.push(end),
        }
        self.count += 1;
    }

    /// The keys, in order.
    pub fn iter(&self) -> GenerationKeyIter<'_> {
        GenerationKeyIter {
            keys: self,
            next: 0,
            start: 0,
        }
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True when there is no key.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The first key (the tenant's "all" generation, in a [`CacheKey`]).
    pub fn first(&self) -> Option<&str> {
        self.get(0)
    }

    /// The key at `index`.
    pub fn get(&self, index: usize) -> Option<&str> {
        let start = match index.checked_sub(1) {
            None => 0,
            Some(before) => self.end(before)?,
        };
        self.text.get(start..self.end(index)?)
    }

    /// Where key `index` ends in `text`.
    fn end(&self, index: usize) -> Option<usize> {
        if index >= self.len() {
            return None;
        }
        let end = match self.ends.get(index) {
            Some(end) => *end,
            None => *self.more_ends.get(index - INLINE_KEYS)?,
        };
        Some(end as usize)
    }

    /// The [`tag_spread`] all the keys share, if they share one.
    pub(crate) fn shared_spread(&self) -> Option<usize> {
        (self.shared_spread != NO_SHARED_SPREAD && self.count > 0)
            .then_some(self.shared_spread as usize)
    }

    /// The keys' bytes in all (what a command carries).
    pub(crate) fn bytes(&self) -> usize {
        self.text.len()
    }
}

impl std::fmt::Debug for GenerationKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Panics when `index` is out of range, as a slice's index does.
impl std::ops::Index<usize> for GenerationKeys {
    type Output = str;

    fn index(&self, index: usize) -> &str {
        match self.get(index) {
            Some(key) => key,
            None => panic!("generation key {index} of {}", self.len()),
        }
    }
}

impl<const N: usize> PartialEq<[&str; N]> for GenerationKeys {
    fn eq(&self, other: &[&str; N]) -> bool {
        self.len() == N && self.iter().eq(other.iter().copied())
    }
}

impl<'a> IntoIterator for &'a GenerationKeys {
    type Item = &'a str;
    type IntoIter = GenerationKeyIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a> FromIterator<&'a str> for GenerationKeys {
    fn from_iter<I: IntoIterator<Item = &'a str>>(keys: I) -> Self {
        let mut out = GenerationKeys::default();
        for key in keys {
            out.push(key);
        }
        out
    }
}

/// The keys of a [`GenerationKeys`], in order.
#[derive(Debug, Clone)]
pub struct GenerationKeyIter<'a> {
    keys: &'a GenerationKeys,
    next: usize,
    start: usize,
}

impl<'a> Iterator for GenerationKeyIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let end = self.keys.end(self.next)?;
        let key = self.keys.text.get(self.start..end)?;
        self.next += 1;
        self.start = end;
        Some(key)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.keys.len().saturating_sub(self.next);
        (left, Some(left))
    }
}

impl ExactSizeIterator for GenerationKeyIter<'_> {}

/// Generation keys as the backends and the pending set take them: a key's own
/// [`GenerationKeys`], or strings (an invalidation's, a redelivery's, the unit tests').
pub(crate) trait KeyList {
    /// The keys, in order.
    fn key_iter(&self) -> impl Iterator<Item = &str>;
}

impl KeyList for GenerationKeys {
    fn key_iter(&self) -> impl Iterator<Item = &str> {
        self.iter()
    }
}

impl<S: AsRef<str>> KeyList for [S] {
    fn key_iter(&self) -> impl Iterator<Item = &str> {
        self.iter().map(AsRef::as_ref)
    }
}

impl<S: AsRef<str>, const N: usize> KeyList for [S; N] {
    fn key_iter(&self) -> impl Iterator<Item = &str> {
        self.iter().map(AsRef::as_ref)
    }
}

impl<S: AsRef<str>> KeyList for Vec<S> {
    fn key_iter(&self) -> impl Iterator<Item = &str> {
        self.iter().map(AsRef::as_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_tag_share_its_spread_and_others_do_not() {
        let one = [
            "p:{t.org_1}:g:*",
            "p:{t.org_1}:g:contacts",
            "p:{t.org_1}:g:x",
        ];
        let keys: GenerationKeys = one.iter().copied().collect();
        let spread = tag_spread(b"p:{t.org_1}:g:*") & SPREAD_BITS;
        assert_eq!(keys.shared_spread(), Some(spread));
        let mixed: GenerationKeys = ["p:{t.org_1}:g:*", "p:{t.org_2}:g:contacts"]
            .into_iter()
            .collect();
        assert_eq!(mixed.shared_spread(), None);
        // Once lost, not found again by a later key of the first tag.
        let mut mixed = mixed;
        mixed.push("p:{t.org_1}:g:deals");
        assert_eq!(mixed.shared_spread(), None);
        assert_eq!(GenerationKeys::default().shared_spread(), None);
        // Five keys: past the inline ends.
        let many: GenerationKeys = (0..5)
            .map(|i| format!("p:{{t.org_1}}:g:r{i}"))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(many.shared_spread(), keys.shared_spread());
    }

    /// A tag whose spread's low 32 bits are all ones (what the "none shared" marker once
    /// took the place of): its keys still share it, modulo any shard count.
    #[test]
    fn a_spread_of_all_ones_is_still_shared() {
        // The fold is h * 31 + byte: write the target in base 31 with digits offset by
        // '0', so every byte is printable and neither brace.
        let target: u32 = u32::MAX;
        let digits = 8;
        let ones = (0..digits).fold(0u32, |h, _| h.wrapping_mul(31).wrapping_add(1));
        let mut rest = target.wrapping_sub(ones.wrapping_mul(u32::from(b'0')));
        let mut tag = vec![0u8; digits];
        for place in tag.iter_mut().rev() {
            *place = b'0' + (rest % 31) as u8;
            rest /= 31;
        }
        assert_eq!(rest, 0, "the target fits in {digits} digits");
        let tag = String::from_utf8(tag).unwrap();
        let key = format!("p:{{{tag}}}:g:*");
        assert_eq!(tag_spread(key.as_bytes()) as u32, u32::MAX);
        let keys: GenerationKeys = [key.as_str(), &format!("p:{{{tag}}}:g:contacts")]
            .into_iter()
            .collect();
        let spread = keys.shared_spread().expect("one tag, one spread");
        for shards in [1, 2, 16, 64] {
            assert_eq!(spread % shards, tag_spread(key.as_bytes()) % shards);
        }
    }
}
